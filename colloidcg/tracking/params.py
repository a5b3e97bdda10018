"""Tracking parameters and how they are suggested from the data.

Every parameter can be given; any left as ``None`` is estimated from the video:

- ``invert``: whether particles are dark on a bright background, from which tail of the
  (background-subtracted) intensity distribution is longer.
- ``diameter``: from the spot width s, first from a Laplacian-of-Gaussian scale search
  (scikit-image ``blob_log``, median over blobs), then corrected by the median width of
  Gaussians fitted to the detected spots; the diameter is the smallest odd integer
  >= 3.5 s (trackpy's mask should just hold a spot). For z-stacks the axial width is
  scaled from the lateral one by the ratio of the autocorrelation widths.
- ``separation``: 0.6 x the typical neighbour spacing (first side peak of the
  autocorrelation), capped at diameter + 1, so touching neighbours are still resolved.
- ``minmass``: from the distribution of feature masses found with no threshold: when it
  is bimodal (noise peaks versus particles, Otsu's threshold on log mass separating
  modes at least 4x apart) the threshold between the modes; otherwise a quarter of the
  5th percentile (keeping every particle-like feature).
- ``search_range``: from the displacement distribution: the 99.5th percentile of the
  distance from each feature to its nearest feature in the next frame, times 1.5, plus
  0.5 px; capped at 0.45 x the neighbour spacing so that linking stays unambiguous.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import ParameterError


@dataclass
class TrackParams:
    """Parameters of :func:`colloidcg.tracking.track`. ``None`` means "estimate".

    Lengths in px, times in frames.
    """

    diameter: int | tuple[int, ...] | None = None
    minmass: float | None = None
    separation: float | tuple[float, ...] | None = None
    search_range: float | None = None
    memory: int = 3
    invert: bool | None = None
    frames: tuple[int, int] | None = None      # [start, stop) frame range
    roi: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in px (x1, y1 exclusive)
    refine: bool = True                        # overlap-aware joint refinement (2D)
    subtract_drift: bool = False
    min_length: int = 3                        # drop tracks shorter than this (frames)
    processes: int | None = None               # worker processes (None: all cores)
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "parameters") -> "TrackParams":
        names = {f.name for f in fields(cls)} - {"sources"}
        unknown = set(values) - names
        if unknown:
            raise ParameterError(f"{where}: unknown tracking parameter(s) {', '.join(sorted(unknown))}; "
                                 f"expected some of {', '.join(sorted(names))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, ndim: int = 2) -> "TrackParams":
        """Check given values up front; errors name the parameter and what was expected."""
        if self.diameter is not None:
            ds = self.diameter if isinstance(self.diameter, (tuple, list)) else (self.diameter,)
            for d in ds:
                if isinstance(d, bool) or not float(d).is_integer() or d <= 0 or int(d) % 2 == 0:
                    raise ParameterError(
                        f"diameter must be a positive odd integer number of px, got {self.diameter}")
            if isinstance(self.diameter, (tuple, list)):
                if len(self.diameter) != ndim:
                    raise ParameterError(f"diameter must have {ndim} values for {ndim}D frames, "
                                         f"got {self.diameter}")
                self.diameter = tuple(int(d) for d in self.diameter)
            else:
                self.diameter = int(self.diameter)
        for name in ("minmass", "search_range"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v >= (0 if name == "minmass" else 1e-9)):
                raise ParameterError(f"{name} must be a {'non-negative' if name == 'minmass' else 'positive'} "
                                     f"number, got {v}")
        if self.separation is not None:
            seps = self.separation if isinstance(self.separation, (tuple, list)) else (self.separation,)
            if any(not (np.isfinite(s) and s > 0) for s in seps):
                raise ParameterError(f"separation must be positive (px), got {self.separation}")
        if not (isinstance(self.memory, int) and self.memory >= 0):
            raise ParameterError(f"memory must be a non-negative integer number of frames, got {self.memory}")
        if not (isinstance(self.min_length, int) and self.min_length >= 1):
            raise ParameterError(f"min_length must be a positive integer number of frames, got {self.min_length}")
        if self.processes is not None and self.processes < 1:
            raise ParameterError(f"processes must be >= 1, got {self.processes}")
        if self.roi is not None:
            if len(self.roi) != 4 or self.roi[2] <= self.roi[0] or self.roi[3] <= self.roi[1]:
                raise ParameterError(f"roi must be x0 y0 x1 y1 with x1 > x0 and y1 > y0, got {self.roi}")
        return self


# --------------------------------------------------------------------- estimation
def _flatten_background(img: np.ndarray) -> np.ndarray:
    """Subtract a heavily smoothed copy (scale: 1/16 of the frame) to remove uneven light."""
    scale = max(4.0, min(img.shape[-2:]) / 16)
    sig = [scale] * img.ndim
    return img - ndimage.gaussian_filter(img, sig, mode="nearest")


def suggest_invert(frame: np.ndarray) -> bool:
    """True when particles are dark on a bright background."""
    flat = _flatten_background(frame.astype(np.float64))
    lo, med, hi = np.percentile(flat, [0.5, 50, 99.5])
    return bool((med - lo) > (hi - med))


def _autocorr(img: np.ndarray) -> np.ndarray:
    f = np.fft.rfftn(img - img.mean())
    ac = np.fft.irfftn(f * np.conj(f), s=img.shape)
    ac = np.fft.fftshift(ac)
    return ac / ac.max()


def spot_scale(frame: np.ndarray, invert: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Spot width s and neighbour spacing a along each axis, from the autocorrelation.

    Parameters
    ----------
    frame : ndarray (Y, X) or (Z, Y, X)

    Returns
    -------
    sigma, spacing : ndarray (ndim,)
        Gaussian-equivalent spot width and typical neighbour distance, in px per axis
        (spacing is NaN along an axis where no side peak is found).
    """
    img = frame.astype(np.float64)
    if invert:
        img = img.max() - img
    img = _flatten_background(img)
    ac = _autocorr(img)
    centre = tuple(n // 2 for n in ac.shape)
    sig, spacing = [], []
    for axis in range(ac.ndim):
        idx = list(centre)
        idx[axis] = slice(centre[axis], None)
        prof = ac[tuple(idx)]
        below = np.nonzero(prof < 0.5)[0]
        if len(below) == 0:
            sig.append(np.nan)
            spacing.append(np.nan)
            continue
        k = below[0]
        # Linear interpolation of the half-maximum crossing.
        r_half = k - 1 + (prof[k - 1] - 0.5) / (prof[k - 1] - prof[k])
        sig.append(r_half / (2 * math.sqrt(math.log(2))))
        # First local maximum after the first minimum: the neighbour shell.
        d = np.diff(prof[k:])
        up = np.nonzero(d > 0)[0]
        if len(up) == 0:
            spacing.append(np.nan)
            continue
        start = k + up[0]
        down = np.nonzero(np.diff(prof[start:]) < 0)[0]
        spacing.append(float(start + down[0]) if len(down) else np.nan)
    sig = np.asarray(sig)
    if frame.ndim == 2:   # isotropic in the plane: average the two axes
        sig[:] = np.nanmean(sig)
        spacing = np.full(2, np.nanmean(spacing)) if np.isfinite(spacing).any() else np.full(2, np.nan)
    return sig, np.asarray(spacing, dtype=float)


def blob_sigma(frame: np.ndarray, invert: bool = False) -> float:
    """Median Laplacian-of-Gaussian blob width (px) of a 2D frame (a crop of <= 384 px).

    The frame is lightly smoothed, flattened and divided by its robust noise level, so
    only blobs at least 5 noise-sigmas strong count: pixel noise is never taken for spots.
    """
    from skimage.feature import blob_log

    img = frame.astype(np.float64)
    if invert:
        img = img.max() - img
    crop = img[:384, :384]
    img = _flatten_background(ndimage.gaussian_filter(crop, 1.0))
    # Pixel noise from the finest scale (robust even when spots fill the frame), scaled to
    # what remains of white noise after the 1 px smoothing (factor 1 / (2 sqrt(pi))).
    hf = crop - ndimage.gaussian_filter(crop, 1.0)
    noise = 1.4826 * np.median(np.abs(hf - np.median(hf))) / (2 * np.sqrt(np.pi))
    z = np.clip(img / max(noise, 1e-12), 0, None)
    max_sigma = max(2.0, min(img.shape) / 8)
    blobs = blob_log(z, min_sigma=1.0, max_sigma=max_sigma, num_sigma=int(4 * max_sigma),
                     threshold=5.0, overlap=1.0)
    # Undo the 1 px smoothing: widths add in quadrature.
    return float(np.sqrt(max(np.median(blobs[:, 2]) ** 2 - 1.0, 0.5))) if len(blobs) else float("nan")


def suggest_diameter(sigma: np.ndarray) -> tuple[int, ...]:
    """Smallest odd integer >= 3.5 sigma along each axis (at least 3)."""
    out = []
    for s in sigma:
        d = max(3, int(math.ceil(3.5 * s)))
        out.append(d if d % 2 else d + 1)
    return tuple(out)


def suggest_separation(diameter: tuple[int, ...], spacing: np.ndarray) -> tuple[float, ...]:
    """0.6 x the neighbour spacing, capped at diameter + 1 (trackpy's default)."""
    out = []
    for d, a in zip(diameter, spacing):
        sep = d + 1.0 if not np.isfinite(a) else min(d + 1.0, 0.6 * a)
        out.append(max(sep, 2.0))
    return tuple(out)


def suggest_minmass(mass: np.ndarray) -> float:
    """Threshold separating particles from noise in a distribution of feature masses."""
    from skimage.filters import threshold_otsu

    mass = np.asarray(mass, dtype=float)
    mass = mass[np.isfinite(mass) & (mass > 0)]
    if len(mass) < 4:
        return 0.0
    logm = np.log(mass)
    fallback = 0.25 * float(np.percentile(mass, 5))
    try:
        t = threshold_otsu(logm)
    except ValueError:
        return fallback
    lo, hi = logm[logm <= t], logm[logm > t]
    if len(lo) and len(hi) and np.median(hi) - np.median(lo) > math.log(4.0):
        return float(math.exp(t))
    return fallback


def suggest_search_range(pos0: np.ndarray, pos1: np.ndarray, spacing: float) -> float:
    """Search range from the nearest-feature distances between consecutive frames.

    Parameters
    ----------
    pos0, pos1 : ndarray (N, d), (M, d)
        Feature positions in px in two consecutive frames.
    spacing : float
        Typical neighbour spacing in px.
    """
    from scipy.spatial import cKDTree

    if len(pos0) == 0 or len(pos1) == 0:
        return max(1.0, 0.45 * spacing) if np.isfinite(spacing) else 5.0
    d, _ = cKDTree(pos1).query(pos0)
    guess = 1.5 * float(np.percentile(d, 99.5)) + 0.5
    if np.isfinite(spacing):
        guess = min(guess, 0.45 * spacing)
    return max(guess, 1.0)
