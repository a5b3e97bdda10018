"""Tracking parameters and how they are suggested from the data.

Every parameter can be given; any left as ``None`` is estimated from the first frame:

- ``invert``: from a scale-space blob scan (scale-normalised determinant of the Hessian,
  Lindeberg, Int. J. Comput. Vis. 30, 79 (1998), which answers to blobs and not to
  lines or rings) of both polarities: particles are dark when the strongest dark blobs
  are stronger than the strongest bright ones. Ring-shaped bright-field particles (dark
  edge, bright centre) are thus tracked by their compact bright centres.
- ``diameter``: from the spot width s: the median blob scale of the strong blobs, or
  the median width of Gaussians fitted jointly to the detected spots if larger (the
  scan is biased low by close neighbours in dense packings; the fit takes only the
  core of structured particles such as bright-field rings); the diameter is the
  smallest odd integer >= 3.5 s (trackpy's mask then just holds a spot). For z-stacks the axial width is
  scaled from the lateral one by the ratio of the autocorrelation widths.
- ``separation``: 0.6 x the median nearest-neighbour distance of the spots, capped at
  0.85 x diameter (about 3 spot sigmas; trackpy's diameter + 1 would merge touching
  particles), so touching neighbours are still resolved.
- ``minmass``: at least the mass that pure pixel noise reaches (the largest feature
  mass found in a white-noise image of the frame's noise level, measured with a
  second-difference estimator, Immerkaer, Comput. Vis. Image Underst. 64, 300 (1996)),
  or in a packing with particles just under that, the mass noise reaches among the
  frame's own fitted particles at 0.5 % false detections per particle
  (:func:`context_mass_floor`); above that, the middle of a clear break (a factor >= 3)
  in the sorted masses, if there is one (dim junk versus particles), else a quarter of
  the 5th percentile.
- ``search_range``: from the displacement distribution: the 99.5th percentile of the
  distance from each feature to its nearest feature in the next frame, pooled over up
  to 20 pairs of frames spread over the video (leaving out
  features near the edges, which may be entering or leaving the view), times 1.5,
  plus 0.5 px; capped at 0.45 x the neighbour spacing so that linking stays unambiguous.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from numba import njit
from scipy import ndimage

from ..errors import ParameterError


#: Particle contrasts :class:`TrackParams` knows.
CONTRASTS = ("bright", "dark", "both")
#: What is tracked: "spots" (particles: blobs, rings, Airy patterns) or "cells" (objects
#: that fill the plane between thin walls: foams, bubble rafts, concentrated emulsions;
#: :mod:`colloidcg.tracking.cells`).
OBJECTS = ("spots", "cells")
#: The spot models of 3D stacks (:data:`TrackParams.spot_model`).
SPOT_MODELS = ("gauss", "ball")


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
    #: "bright", "dark" or "both" (mixed contrast: both populations are tracked, each row
    #: gets a ``contrast`` of +1 or -1); None: estimate. ``invert=True`` means "dark".
    contrast: str | None = None
    #: "spots" or "cells" (segmented between walls; ``contrast`` is then the cells'
    #: interior: "bright" cells have dark walls); None: estimate (cells only where the
    #: first frame's blob scan is ambiguous and its segmentation shows cells)
    objects: str | None = None
    frames: tuple[int, int] | None = None      # [start, stop) frame range
    roi: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in px (x1, y1 exclusive)
    refine: bool = True                        # overlap-aware joint refinement
    #: measure the spots' non-Gaussian radial profile in every frame (rings, Airy
    #: patterns; colloidcg.tracking.locate._refine_with_profile); None: decided on the
    #: first, middle and last frames (colloidcg.tracking._decide_probes)
    spot_profile: bool | None = None
    #: test every frame's candidates for the lit gaps of a bright-field packing
    #: (colloidcg.tracking.gaps); None: decided on the first, middle and last frames
    gap_check: bool | None = None
    #: 3D stacks: the spot model of the joint fit (colloidcg.tracking.refine3d): "gauss"
    #: (an anisotropic Gaussian) or "ball" (a uniformly dyed sphere blurred by the PSF);
    #: None: decided on the first frame
    spot_model: str | None = None
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
        if self.contrast is not None and self.contrast not in CONTRASTS:
            raise ParameterError(f"contrast must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}")
        if self.objects is not None and self.objects not in OBJECTS:
            raise ParameterError(f"objects must be one of {', '.join(OBJECTS)}, got {self.objects!r}")
        if self.objects == "cells" and (self.contrast == "both" or ndim != 2):
            raise ParameterError("objects: 'cells' is available for 2D frames of one contrast "
                                 f"(got contrast={self.contrast!r}, {ndim}D frames)")
        if self.contrast is not None and self.invert is not None and \
                self.contrast != ("dark" if self.invert else "bright"):
            raise ParameterError(f"invert={self.invert} contradicts contrast={self.contrast!r}; "
                                 "give one of them")
        for name in ("spot_profile", "gap_check"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (bool, np.bool_)):
                raise ParameterError(f"{name} must be true, false or None (decide on the first "
                                     f"frame), got {v!r}")
        if self.spot_model is not None:
            if self.spot_model not in SPOT_MODELS:
                raise ParameterError(f"spot_model must be one of {', '.join(SPOT_MODELS)}, "
                                     f"got {self.spot_model!r}")
            if ndim != 3:
                raise ParameterError(f"spot_model ({self.spot_model!r}) is for 3D stacks; "
                                     f"these frames are {ndim}D")
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


def noise_level(img: np.ndarray) -> float:
    """Standard deviation of the pixel noise of a 2D image (robust to its structure).

    The image is filtered with the second-difference mask [[1,-2,1],[-2,4,-2],[1,-2,1]]
    (norm 6), which removes smooth structure such as spots and background (Immerkaer
    1996); the median absolute response, over 0.6745, gives the noise.
    """
    import cv2

    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    r = cv2.filter2D(np.asarray(img, np.float32), -1, k, borderType=cv2.BORDER_REFLECT)
    r = r[1:-1, 1:-1] if min(r.shape) > 2 else r
    r = r[::2, ::2] if r.size > 65536 else r     # a quarter of the pixels is plenty
    return float(1.4826 * np.median(np.abs(r)) / 6.0)


@njit(cache=True)
def _doh(g, v, u, norm):
    """Signed scale-normalised blob strength at (v, u): norm sqrt(det H), + for a bright
    blob (negative trace), - for a dark one; H by central differences, edges clamped."""
    ny, nx = g.shape
    vm, vp = max(v - 1, 0), min(v + 1, ny - 1)
    um, up = max(u - 1, 0), min(u + 1, nx - 1)
    c = g[v, u]
    lxx = g[v, up] - 2.0 * c + g[v, um]
    lyy = g[vp, u] - 2.0 * c + g[vm, u]
    lxy = 0.25 * (g[vp, up] - g[vp, um] - g[vm, up] + g[vm, um])
    det = lxx * lyy - lxy * lxy
    b = norm * math.sqrt(det) if det > 0.0 else 0.0
    return b if lxx + lyy < 0.0 else -b


@njit(cache=True)
def _doh_row(g, v, norm, out):
    """:func:`_doh` along row v of g, into ``out`` (float64, length X). (The interior
    is written out without clamped indices, a loop that compiles to vector code: 4x
    faster than calling :func:`_doh` per pixel, with the same values.)"""
    ny, nx = g.shape
    r0, r1, r2 = g[max(v - 1, 0)], g[v], g[min(v + 1, ny - 1)]
    for u in range(1, nx - 1):
        c = r1[u]
        lxx = r1[u + 1] - 2.0 * c + r1[u - 1]
        lyy = r2[u] - 2.0 * c + r0[u]
        lxy = 0.25 * (r2[u + 1] - r2[u - 1] - r0[u + 1] + r0[u - 1])
        b = norm * math.sqrt(max(lxx * lyy - lxy * lxy, 0.0))
        out[u] = b if lxx + lyy < 0.0 else -b
    out[0] = _doh(g, v, 0, norm)
    out[nx - 1] = _doh(g, v, nx - 1, norm)


@njit(cache=True)
def _doh_rms(g, norm):
    """Root mean square of the blob strength over the interior of g."""
    ny, nx = g.shape
    row = np.empty(nx, np.float64)
    acc = 0.0
    n = 0
    for v in range(2, ny - 2):
        _doh_row(g, v, norm, row)
        for u in range(2, nx - 2):
            acc += row[u] * row[u]
            n += 1
    return math.sqrt(acc / max(n, 1))


@njit(cache=True)
def _doh_track(g, norm, s, unit, best, scale, z):
    """Keep, per pixel and polarity (index 0 bright, 1 dark), the strongest blob strength
    over the scales seen so far, its scale and its strength in noise units."""
    ny, nx = g.shape
    row = np.empty(nx, np.float64)
    for v in range(ny):
        _doh_row(g, v, norm, row)
        for k in range(2):
            bk, sk, zk = best[k, v], scale[k, v], z[k, v]
            for u in range(nx):
                b = row[u] if k == 0 else -row[u]
                if b > bk[u]:
                    bk[u] = b
                    sk[u] = s
                    zk[u] = b / unit


@njit(cache=True)
def _merge_levels(best, scale, z, lb, ls, lz):
    """Fold one (upsampled) level's maps into the full-resolution ones."""
    _, ny, nx = best.shape
    for k in range(2):
        for v in range(ny):
            for u in range(nx):
                if lb[k, v, u] > best[k, v, u]:
                    best[k, v, u] = lb[k, v, u]
                    scale[k, v, u] = ls[k, v, u]
                    z[k, v, u] = lz[k, v, u]


def _level_of(s: float, shape: tuple[int, int]) -> int:
    """Coarsening factor (a power of 2) at which scale s is computed: s / f < 3."""
    f = 1
    while s / f >= 3.0 and min(shape) // (2 * f) >= 16:
        f *= 2
    return f


def blob_scan(frame: np.ndarray, z_min: float = 6.0, s_min: float = 0.8,
              s_max: float | None = None) -> dict[str, np.ndarray]:
    """Blobs of both polarities in a 2D frame, with their scale and strength.

    Parameters
    ----------
    frame : ndarray (Y, X)
    z_min : float
        A blob must be this many times stronger than pure pixel noise gives at its scale.
    s_min, s_max : float
        Range of blob scales (Gaussian sigma, px); s_max defaults to 1/16 of the frame.

    Returns
    -------
    dict
        ``"bright"``, ``"dark"``: ndarray (N, 4) of x, y (px), scale s (px) and strength
        (scale-normalised sqrt det Hessian, image units), strongest first, without the
        parts of larger blobs (:func:`drop_parts`) and the holes of blobs of the other
        polarity (HOLE_DEPTH); ``"hole_fraction"``: dict, per polarity the share of its
        blobs dropped as holes; ``"noise"``: the pixel noise level.
    """
    import cv2

    img = np.asarray(frame, np.float32)
    ny, nx = img.shape
    if s_max is None:
        s_max = max(2.0, min(ny, nx) / 16)
    scales = s_min * 2 ** (np.arange(int(np.floor(3 * np.log2(s_max / s_min))) + 1) / 3)
    flat = img - _smooth_large(img, 4 * s_max)
    noise = max(noise_level(img), 1e-12)
    white = np.random.default_rng(0).normal(0, 1.0, (128, 128)).astype(np.float32)
    # per coarsening level f: the strongest blob per pixel and polarity over that
    # level's scales, its scale, and its strength in units of what pixel noise gives
    # (the same filter on white noise of the frame's noise level)
    maps: dict[int, tuple] = {}
    levels: dict[int, tuple] = {}
    for s in scales:
        f = _level_of(s, (ny, nx))
        if f not in levels:
            shrink = (lambda a: cv2.resize(a, (-(-a.shape[1] // f), -(-a.shape[0] // f)),
                                           interpolation=cv2.INTER_AREA) * (f if a is white else 1))
            levels[f] = (flat, white) if f == 1 else (shrink(flat), shrink(white))
            shp = (2,) + levels[f][0].shape
            maps[f] = (np.zeros(shp, np.float32), np.zeros(shp, np.float32),
                       np.zeros(shp, np.float32))
        sl = s / f
        g = cv2.GaussianBlur(levels[f][0], (0, 0), sl, borderType=cv2.BORDER_REFLECT)
        gw = cv2.GaussianBlur(levels[f][1], (0, 0), sl, borderType=cv2.BORDER_REFLECT)
        unit = noise * max(_doh_rms(gw, sl * sl), 1e-12)
        _doh_track(g, sl * sl, s, unit, *maps[f])
    best = scale = z = None
    for f, (b, sc, zz) in maps.items():
        if f > 1:
            b, sc, zz = (np.stack([cv2.resize(a[k], (nx, ny), interpolation=how) for k in range(2)])
                         for a, how in ((b, cv2.INTER_LINEAR), (sc, cv2.INTER_NEAREST),
                                        (zz, cv2.INTER_LINEAR)))
        if best is None:
            best, scale, z = b.copy(), sc.copy(), zz.copy()
        else:
            _merge_levels(best, scale, z, b, sc, zz)
    out: dict[str, np.ndarray] = {"noise": np.float64(noise)}
    for k, name in ((0, "bright"), (1, "dark")):
        m = best[k]
        peak = (m == cv2.dilate(m, np.ones((3, 3), np.uint8))) & (z[k] > z_min)
        ys, xs = np.nonzero(peak)
        bl = np.c_[xs, ys, scale[k][ys, xs], m[ys, xs]].astype(np.float64)
        out[name] = drop_parts(bl[np.argsort(-bl[:, 3], kind="stable")])
    holes = {k: _enclosed_by_other(out[k], out[o]) for k, o in (("bright", "dark"), ("dark", "bright"))}
    out["hole_fraction"] = {"bright": 0.0, "dark": 0.0}
    if any(h.any() for h in holes.values()):
        level, n1, g1 = _background_level(img, noise)
        for name, enclosed in holes.items():
            b = out[name]
            value = g1[b[:, 1].astype(np.int64), b[:, 0].astype(np.int64)]
            depth = (value - level if name == "bright" else level - value) / max(n1, 1e-12)
            hole = enclosed & (depth < HOLE_DEPTH)
            out["hole_fraction"][name] = float(hole.mean()) if len(b) else 0.0
            out[name] = b[~hole]
    return out


#: A blob centred inside a blob of the other polarity at least PART_SCALE times its scale
#: is a hole of that one (the dark centre of a bright ring: a defocused fluorescent
#: particle) unless it lies more than HOLE_DEPTH noise levels (of a 1 px Gaussian
#: smoothing) beyond the background in its own direction. A dark particle's core is
#: darker than the background by 4-35 of them (the shared mixed-contrast video), the
#: centres of trackpy.artificial rings lie -1.3 to +1.5 (radius 8) and -21 to -14
#: (radius 5) from it; without this rule the holes of rings of radius 8 px were taken
#: for dark particles.
HOLE_DEPTH = 3.0


def _enclosed_by_other(blobs: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Mask of ``blobs`` (N, 4) centred inside a blob of ``other`` at least PART_SCALE
    times their scale (candidates for holes, HOLE_DEPTH)."""
    from ..neighbours import nearest

    if len(blobs) == 0 or len(other) == 0:
        return np.zeros(len(blobs), bool)
    d, j = nearest(other[:, :2], query=blobs[:, :2])
    return (other[j, 2] >= PART_SCALE * blobs[:, 2]) & (d < other[j, 2])


def _background_level(img: np.ndarray, noise: float) -> tuple[float, float, np.ndarray]:
    """The frame's background (the mode of its values after a 1 px Gaussian smoothing,
    taken on every second pixel of every second row), the noise level after that
    smoothing, and the smoothed frame."""
    import cv2

    g1 = cv2.GaussianBlur(img, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
    n1 = 0.28 * noise            # white noise after a 1 px Gaussian: 1 / (2 sqrt(pi))
    sample = g1[::2, ::2]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    bins = int(np.clip((hi - lo) / max(n1, 1e-12), 16, 512))
    counts, edges = np.histogram(sample, bins=bins, range=(float(lo), float(hi) + 1e-9))
    return 0.5 * (edges[counts.argmax()] + edges[counts.argmax() + 1]), n1, g1


#: A blob is part of a larger one of the same polarity (a flat-topped spot's rim, a
#: ring's arc) when it lies within PART_REACH of the larger blob's scales, its own scale
#: is at most 1 / PART_SCALE of it, and the larger blob is at least PART_STRENGTH as
#: strong; and of two blobs closer than the larger of their scales, the weaker is part
#: of the stronger (the several maxima inside one flat disc). Separate particles lie
#: further apart: touching Gaussian spots (sigma = d / 4) 4 scales, and a small particle
#: touching one 2.4 times its size is still outside 2 scales of the large one's flat
#: disc. Without this the rims of flat discs (trackpy.artificial's "step", radius 8 px)
#: and the arcs of rings ("ring", radius 5) set the diameter and spacing: diameter 11 and
#: separation 3 for 16 px discs, precision 0.22 (``benchmarks/tracking_artificial.py``).
PART_REACH, PART_SCALE, PART_STRENGTH = 2.0, 1.5, 0.5


def drop_parts(blobs: np.ndarray) -> np.ndarray:
    """The blobs (N, 4: x, y, scale, strength; strongest first) that are not parts of
    another blob of the same polarity (see PART_REACH); order kept."""
    from .refine import pairs_csr

    if len(blobs) < 2:
        return blobs
    b = np.ascontiguousarray(blobs, dtype=np.float64)
    ptr, nbr = pairs_csr(_part_pairs(b), len(b))
    by_scale = np.argsort(-b[:, 2], kind="stable")
    return blobs[_parts_kept(b, ptr, nbr, by_scale)]


def _part_pairs(b: np.ndarray) -> np.ndarray:
    """Unordered pairs (P, 2) of the blobs ``b`` (N, 4) that :func:`_parts_kept` must
    compare: at least those within PART_REACH of the larger of their two scales.

    Every rule of :func:`drop_parts` concerns a pair within PART_REACH of its larger
    scale, so one reach for all (PART_REACH x the largest scale) finds all of them, but
    with a few large blobs among many small ones nearly all of the pairs it finds are
    too far apart to matter (a dense frame's scan: 86 000 pairs, of which some 3 000
    are needed). So the blobs are cut at a scale c: pairs among those up to c within
    PART_REACH c, and pairs of each larger blob with every blob within PART_REACH x the
    largest scale; c is the scale that minimises the number of pairs this looks at
    (for uniformly spread blobs)."""
    from ..neighbours import Tree

    s = b[:, 2]
    n, s_max = len(b), float(s.max())
    cuts = np.unique(s)
    n_small = np.searchsorted(np.sort(s), cuts, side="right")
    cost = n_small.astype(np.float64) ** 2 * cuts ** 2 + 2.0 * (n - n_small) * n * s_max ** 2
    cut = float(cuts[int(np.argmin(cost))])
    small, large = np.flatnonzero(s <= cut), np.flatnonzero(s > cut)
    found = [small[Tree(b[small, :2]).pairs(PART_REACH * cut, sort=False)]]
    if len(large):
        i, j, _ = Tree(b[large, :2]).distances_to(Tree(b[:, :2]), PART_REACH * s_max)
        i = large[i]
        once = (s[j] <= cut) | (i < j)      # a pair of two large blobs: found from both
        found.append(np.c_[i[once], j[once]])
    return np.vstack(found).reshape(-1, 2)


@njit(cache=True)
def _parts_kept(b, ptr, nbr, by_scale):
    """For :func:`drop_parts`: the mask of blobs kept, from each blob's neighbours (CSR
    ``ptr``, ``nbr``) within PART_REACH of the largest scale; ``by_scale``: blob indices,
    the largest scale first. (A compiled loop: a dense frame's scan has thousands.)"""
    n = b.shape[0]
    keep = np.ones(n, np.bool_)
    for j in by_scale:            # parts of larger blobs
        if not keep[j]:
            continue
        for t in range(ptr[j], ptr[j + 1]):
            i = nbr[t]
            if (b[i, 2] * PART_SCALE <= b[j, 2] and b[j, 3] >= PART_STRENGTH * b[i, 3]
                    and math.hypot(b[i, 0] - b[j, 0], b[i, 1] - b[j, 1]) <= PART_REACH * b[j, 2]):
                keep[i] = False
    for j in range(n):            # the weaker of two close blobs (strongest first)
        if not keep[j]:
            continue
        for t in range(ptr[j], ptr[j + 1]):
            i = nbr[t]
            if (i > j and keep[i] and math.hypot(b[i, 0] - b[j, 0], b[i, 1] - b[j, 1])
                    < max(b[i, 2], b[j, 2])):
                keep[i] = False
    return keep


def _smooth_large(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing at a large scale, computed on a coarsened grid (float32)."""
    import cv2

    ny, nx = img.shape
    f = max(1, int(sigma // 4))
    small = cv2.resize(img, (-(-nx // f), -(-ny // f)), interpolation=cv2.INTER_AREA) if f > 1 else img
    small = cv2.GaussianBlur(small, (0, 0), sigma / f, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (nx, ny), interpolation=cv2.INTER_LINEAR) if f > 1 else small


def _reference_strength(blobs: np.ndarray) -> float:
    """Strength of the third strongest blob (robust to a dust speck or two)."""
    return float(blobs[min(2, len(blobs) - 1), 3]) if len(blobs) else 0.0


def strong_blobs(blobs: np.ndarray, fraction: float = 0.25) -> np.ndarray:
    """The blobs at least ``fraction`` as strong as the third strongest: the particles."""
    if len(blobs) == 0:
        return blobs
    return blobs[blobs[:, 3] >= fraction * _reference_strength(blobs)]


def representative_plane(stack: np.ndarray) -> np.ndarray:
    """The z-plane (Y, X) of a stack (Z, Y, X) whose intensities vary most: in a dense
    packing every plane cuts particles near their centres, and the maximum projection is
    bright nearly everywhere (spots of 2:1 near contact gave dark particles between
    bright gaps: the contrast came out inverted); in a sparse one it is the plane through
    the most particles."""
    a = np.asarray(stack)
    if a.ndim == 2:
        return a
    return a[int(np.argmax(a.reshape(a.shape[0], -1).astype(np.float64).std(axis=1)))]


def suggest_invert(frame: np.ndarray, scan: dict | None = None) -> bool:
    """True when particles are dark on a bright background (see the module docstring)."""
    plane = representative_plane(frame)
    scan = scan if scan is not None else blob_scan(plane.astype(np.float64))
    return bool(_reference_strength(scan["dark"]) > _reference_strength(scan["bright"]))


def suggest_contrast(scan: dict, fraction: float = 0.25, area: float | None = None) -> str:
    """"bright", "dark" or "both" from a :func:`blob_scan` of the raw frame.

    The strong blobs of each polarity are those at least ``fraction`` as strong as the
    third strongest blob of either. The polarity whose strong blobs are typically
    (median) stronger is the main one: the bright gaps of a dense packing of dark
    particles are many, but weaker. A blob of either polarity is discounted when it sits
    within 3.5 scales of a stronger blob of the other: the halo of a bright-field
    particle (a dark spot's bright ring, a bright spot's dark ring) is not a particle.
    The minor polarity is a population of its own ("both") when it keeps at least 5
    blobs, at least a fifth as many as the main one, and is not bound to the main
    population's structure (:func:`_bound`): ring fragments, the bright gaps between
    dark particles or the dark junctions between bright cells all sit close to the main
    blobs; an independent population does not.

    Mixed contrast is only answered for fields where the strong blobs of both
    polarities (as discs of the estimated diameter, 3.5 scales) cover under 30 % of
    ``area`` (the frame's, px^2): in a dense packing the holes between particles are
    blobs of the other polarity that no rule about positions separates reliably (wide,
    overlapping spots); a dense field of two contrasts needs ``contrast="both"`` given.
    Mixed-contrast bright-field videos cover about 1-2 %, dense packings over 80 %.

    Chosen on 14 cases (real: the mixed-contrast, stuck and bright-field files of the
    shared data; synthetic from two renderers: fluorescence, bright-field rings, dark
    spheres with bright gaps, mixed contrast, compressed backgrounds): all right, with
    the binding threshold in the middle of the range that gets them all.
    """
    from ..neighbours import nearest

    strong = _strong_by_polarity(scan, fraction)
    typical = {k: float(np.median(v[:, 3])) if len(v) else 0.0 for k, v in strong.items()}
    main = "dark" if typical["dark"] > typical["bright"] else "bright"
    minor = "bright" if main == "dark" else "dark"
    kept = {}
    for k, other in ((main, minor), (minor, main)):
        b, o = strong[k], strong[other]
        if len(b) and len(o):
            d, j = nearest(o[:, :2], query=b[:, :2])
            b = b[~((d < 3.5 * np.maximum(b[:, 2], o[j, 2])) & (o[j, 3] > b[:, 3]))]
        kept[k] = b
    a, b = kept[main], kept[minor]
    if len(b) < max(5, 0.2 * len(a)) or _bound(a, b):
        return main
    if area is not None:
        covered = sum(float(np.sum(math.pi * (1.75 * v[:, 2]) ** 2)) for v in strong.values())
        if covered > 0.3 * area:
            return main
    return "both"


def _strong_by_polarity(scan: dict, fraction: float = 0.25) -> dict[str, np.ndarray]:
    """The blobs of each polarity at least ``fraction`` as strong as the third strongest
    blob of either."""
    ref = max(_reference_strength(scan["bright"]), _reference_strength(scan["dark"]))
    return {k: scan[k][scan[k][:, 3] >= fraction * ref] if len(scan[k]) else scan[k]
            for k in ("bright", "dark")}


def contrast_ambiguity(scan: dict) -> float:
    """Typical (median) strength of the weaker polarity's strong blobs over the
    stronger's, 0..1: near 1 the frame has bright and dark blobs alike, as where wide
    spots overlap so much that the holes between them are blobs too, and the contrast
    estimate may take the holes for the particles."""
    typical = [float(np.median(v[:, 3])) if len(v) else 0.0
               for v in _strong_by_polarity(scan).values()]
    return min(typical) / max(typical) if max(typical) > 0 else 0.0


#: Above this :func:`contrast_ambiguity` the blob scan cannot tell particles from the
#: holes between them (wide spots that overlap: Gaussian or Airy spots with sigma/d 0.35
#: at area fraction 0.7 give 0.86-0.99, and the scan took the holes of the Airy case for
#: the particles: recall 0.01); the contrast is then decided by :func:`model_residual`.
#: Clear cases are 0.36-0.65 (bright-field rings, dark particles with bright gaps,
#: mixed contrast, fluorescence), 0.76-0.80 the dense bidisperse and clipped 8-bit ones.
AMBIGUOUS_CONTRAST = 0.75


def model_residual(img: np.ndarray, diameter: int, separation: float, minmass: float,
                   max_side: int = 256) -> float:
    """RMS (image units) of what the spot model leaves of a frame whose particles are
    bright: spots found as in tracking, fitted jointly (pixel-integrated Gaussians on a
    smooth background, :func:`colloidcg.tracking.refine.refine_jointly`), residual
    minus its smooth background, over a central crop of at most ``max_side`` px a side
    less one diameter at its edges.

    Particles of the right polarity are what the model describes (residual near the
    noise); the holes between particles, taken as particles, are not: the particles'
    light is then left over. On the frames behind :data:`AMBIGUOUS_CONTRAST` the right
    polarity left 7.4-7.7 grey levels (noise 7.2-7.4), the holes 8.5-9.6; the dark
    particles, dark dish and bright-field analogues came out right too.
    Returns inf when no spot passes ``minmass``.
    """
    from .locate import find_peaks
    from .refine import refine_jointly, render_spots, smooth_background

    h, w = img.shape
    y0, x0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    crop = np.ascontiguousarray(img[y0:y0 + max_side, x0:x0 + max_side], dtype=np.float64)
    sigma = diameter / 3.5
    x, y, mass, _ = find_peaks(crop, diameter, separation)
    keep = mass >= minmass
    if keep.sum() < 1:
        return math.inf
    r = refine_jointly(crop, x[keep], y[keep], sigma)
    spots = np.c_[r["x"], r["y"], r["amplitude"], r["sigma"]]
    res = crop - render_spots(crop.shape, spots)
    res -= smooth_background(res, 2 * int(math.ceil(2.5 * sigma)) + 1)
    m = int(diameter)
    core = res[m:-m, m:-m] if min(res.shape) > 4 * m else res
    return float(np.sqrt(np.mean(core ** 2)))


def _bound(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether blobs ``b`` (N, >=2: x, y, ...) belong to the structure of blobs ``a``:
    over 55 % of them closer to an ``a`` blob than 0.75 x the median neighbour spacing
    of ``a`` (randomly placed blobs: about 32 %)."""
    from ..neighbours import nearest

    if len(a) < 2 or len(b) == 0:
        return False
    spacing = nn_spacing(a[:, 0], a[:, 1])
    d, _ = nearest(a[:, :2], query=b[:, :2])
    return bool(np.mean(d < 0.75 * spacing) > 0.55)


def _autocorr(img: np.ndarray) -> np.ndarray:
    f = np.fft.rfftn(img - img.mean())
    ac = np.fft.irfftn(f * np.conj(f), s=img.shape, axes=tuple(range(img.ndim)))
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
    """Median scale (Gaussian sigma, px) of the strong blobs of a 2D frame (NaN if none)."""
    img = np.asarray(frame, dtype=np.float64)
    scan = blob_scan(-img if invert else img)
    strong = strong_blobs(scan["bright"])
    return float(np.median(strong[:, 2])) if len(strong) else float("nan")


def suggest_diameter(sigma: np.ndarray) -> tuple[int, ...]:
    """Smallest odd integer >= 3.5 sigma along each axis (at least 3)."""
    out = []
    for s in sigma:
        d = max(3, int(math.ceil(3.5 * s)))
        out.append(d if d % 2 else d + 1)
    return tuple(out)


def suggest_separation(diameter: tuple[int, ...], spacing: np.ndarray) -> tuple[float, ...]:
    """0.6 x the neighbour spacing, at most 0.85 x the diameter (about 3 spot sigmas).

    trackpy's default, diameter + 1, is about the centre distance of two touching
    particles, so touching pairs would merge; two Gaussian spots show two maxima down to
    2 sigma apart, and the joint fit separates them.
    """
    out = []
    for d, a in zip(diameter, spacing):
        sep = 0.85 * d if not np.isfinite(a) else min(0.85 * d, 0.6 * a)
        out.append(max(sep, 2.0))
    return tuple(out)


def suggest_minmass(mass: np.ndarray, floor: float = 0.0) -> float:
    """Threshold separating particles from noise in a distribution of feature masses.

    Parameters
    ----------
    mass : ndarray (N,)
        Masses of the features found with no threshold.
    floor : float
        The mass pure noise reaches (:func:`noise_mass_floor`); the threshold is never
        lower.

    Above the floor, the masses sorted in log scale are searched for a clear break: the
    widest gap between neighbouring values (at least a factor 3) that has at least three
    features above it; the threshold is its geometric middle. Without one the masses form
    one population, and the threshold is a quarter of its 5th percentile (keeping every
    particle-like feature). Unlike Otsu's method this holds when a few particles sit
    among many dim features.
    """
    mass = np.sort(np.asarray(mass, dtype=float))
    mass = mass[np.isfinite(mass) & (mass > max(floor, 0.0))]
    if len(mass) < 4:
        return float(floor)
    logm = np.log(mass)
    gaps = np.diff(logm)[:-2]          # a gap below at least three features
    if len(gaps):
        i = int(np.argmax(gaps))
        if gaps[i] > math.log(3.0):
            return max(float(math.exp(0.5 * (logm[i] + logm[i + 1]))), floor)
    return max(floor, 0.25 * float(np.percentile(mass, 5)))


def feature_masses(img: np.ndarray, diameter: int, separation: float, refine: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y (px) and mass of every candidate feature of a 2D frame (no mass threshold),
    as the locating step measures them: the peaks of
    :func:`colloidcg.tracking.locate.find_peaks` (``refine``), or ``trackpy.locate``."""
    if refine:
        from .locate import find_peaks

        x, y, mass, _ = find_peaks(img, diameter, separation)
        return x, y, mass
    import warnings

    import trackpy as tp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = tp.locate(np.asarray(img, dtype=np.float64), diameter, minmass=0,
                      separation=separation, engine="numba")
    return f["x"].to_numpy(), f["y"].to_numpy(), f["mass"].to_numpy()


def noise_mass_floor(shape: tuple[int, int], noise: float, diameter: int, separation: float,
                     refine: bool = True, seed: int = 0) -> float:
    """The largest feature mass found in white noise of std ``noise`` (px counts) on a
    frame of ``shape`` (at most 256 x 256), measured as :func:`feature_masses` does: a
    mass threshold that pure noise does not pass."""
    h, w = min(shape[0], 256), min(shape[1], 256)
    img = np.random.default_rng(seed).normal(0.0, noise, (h, w)) + 10 * noise
    _, _, mass = feature_masses(img, diameter, separation, refine)
    return float(mass.max()) if len(mass) else 0.0


#: Expected false detections per particle allowed by the minmass threshold (precision
#: 0.995 from noise alone).
FALSE_DETECTION_RATE = 0.005
#: Noise realisations drawn on the frame's context (:func:`context_mass_floor`).
NOISE_REALISATIONS = 16
#: Peaks with at least this share of the white-noise floor's mass make the model's spots.
CONTEXT_SPOTS = 0.25


def context_mass_floor(img: np.ndarray, noise: float, diameter: int, separation: float,
                       white_floor: float, seed: int = 0) -> tuple[float, int]:
    """The mass that white noise reaches among this frame's own particles, at
    :data:`FALSE_DETECTION_RATE` expected false detections per particle.

    White noise on an empty frame (:func:`noise_mass_floor`) overstates what noise
    reaches in a packing: the band-pass subtracts a boxcar mean that takes in the
    neighbouring particles' light, so noise between particles loses much of its mass
    (200 photons a particle at area fraction 0.7: the frame's background peaks reach
    11-13, white noise of the same level 29, the particles' 1st percentile 16). Here the
    noise is drawn on a noise-free model of the frame itself: in the central (at most)
    256 x 256 px, every peak with at least :data:`CONTEXT_SPOTS` of the white-noise
    floor's mass (faint particles included) is fitted jointly as a Gaussian spot on a smooth background
    (:func:`colloidcg.tracking.refine.refine_jointly`); white noise of the frame's level
    is added to that model :data:`NOISE_REALISATIONS` times, and the peaks found
    (:func:`feature_masses`) farther than ``separation`` from every fitted spot are noise
    peaks in the frame's context. The threshold is the mass that the allowed number of
    false detections a frame (the rate times the fitted spots, at least one; scaled to
    the crop's area) exceeds over the realisations: read off their sorted masses where
    at least 10 lie above it, else from an exponential fitted to the top 10 % of them.

    Parameters
    ----------
    img : ndarray (Y, X)
        Frame, particles bright.
    noise : float
        Pixel noise (grey levels, :func:`noise_level`).
    diameter, separation : float
        Feature diameter and separation (px).
    white_floor : float
        :func:`noise_mass_floor` of the frame (trackpy mass units).
    seed : int
        Seed of the noise realisations.

    Returns
    -------
    floor : float
        Mass threshold (trackpy mass units); NaN when fewer than 20 noise peaks were
        seen over the realisations (noise peaks do not survive among the particles;
        the white-noise floor is then the one to use).
    n_spots : int
        Spots of the model, scaled to the whole frame.
    """
    from ..neighbours import nearest
    from .locate import find_peaks
    from .refine import refine_jointly, render_spots

    h, w = img.shape
    ch, cw = min(h, 256), min(w, 256)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw], dtype=np.float64)
    x, y, m, _ = find_peaks(crop, diameter, separation)
    keep = m >= CONTEXT_SPOTS * white_floor
    if keep.sum() < 3:
        return float("nan"), 0
    r = refine_jointly(crop, x[keep], y[keep], diameter / 3.5, add_missed=False, n_sweeps=2,
                       stage1_sweeps=2, tol=1e-2, return_background=True)
    spots = np.c_[r["x"], r["y"], r["amplitude"], r["sigma"]]
    model = r["background_map"] + render_spots(crop.shape, spots)
    area = (h * w) / float(ch * cw)
    n_spots = int(round(len(spots) * area))
    rng = np.random.default_rng(seed)
    masses = []
    for _ in range(NOISE_REALISATIONS):
        xs, ys, ms = feature_masses(model + rng.normal(0.0, noise, model.shape), diameter,
                                    separation)
        masses.append(ms[nearest(spots[:, :2], query=np.c_[xs, ys])[0] > separation])
    m = np.sort(np.concatenate(masses))
    if len(m) < 20:
        return float("nan"), n_spots
    allowed = FALSE_DETECTION_RATE * max(n_spots, 1)       # false detections per frame
    k = int(allowed * NOISE_REALISATIONS / area)           # ... over the realisations
    if k >= 10:          # enough noise peaks above the threshold: read it off
        return float(m[len(m) - 1 - k]) if k < len(m) else 0.0, n_spots
    u = float(m[int(0.9 * len(m))])
    excess = m[m > u] - u
    beta = float(excess.mean()) if len(excess) else 0.0
    above_u = len(excess) / NOISE_REALISATIONS * area       # noise peaks above u, per frame
    return u + beta * math.log(max(above_u / allowed, 1.0)), n_spots


def nn_spacing(x: np.ndarray, y: np.ndarray) -> float:
    """Median nearest-neighbour distance (px) of points; NaN for fewer than two."""
    from ..neighbours import nearest

    if len(x) < 2:
        return float("nan")
    return float(np.median(nearest(np.c_[x, y])[0]))


def suggest_parameters_2d(img: np.ndarray, p: "TrackParams", scan: dict | None = None,
                          img_dark: np.ndarray | None = None) -> "TrackParams":
    """Fill ``diameter``, ``separation`` and ``minmass`` of ``p`` (in place) from a 2D
    frame ``img`` that is already cropped and oriented (particles bright). ``scan`` is
    :func:`blob_scan` of the frame before orientation, if already computed. For mixed
    contrast (``p.contrast == "both"``) ``img`` is the frame with bright particles and
    ``img_dark`` the inverted one: widths and masses of both populations are pooled.

    Raises :class:`TrackingError` when nothing particle-like is found.
    """
    from ..errors import TrackingError

    imgs = [img] if img_dark is None else [img, img_dark]
    if scan is None:
        scan = blob_scan(img)
        blobs = scan["bright"]
    elif img_dark is not None:
        blobs = np.vstack([scan["bright"], scan["dark"]])
        blobs = blobs[np.argsort(-blobs[:, 3])]
    else:
        blobs = scan["dark" if p.invert else "bright"]
    noise = float(scan["noise"])
    spacing = float("nan")
    if p.diameter is None:
        blobs = strong_blobs(blobs)
        if len(blobs) == 0:
            raise TrackingError("no particles found: nothing spot-like in the first frame; "
                                "check the video or give --diameter and --contrast")
        s = float(np.median(blobs[:, 2]))
        spacing = nn_spacing(blobs[:, 0], blobs[:, 1])
        d0 = suggest_diameter([s])[0]
        sep0 = suggest_separation((d0,), [spacing])[0]
        floor = noise_mass_floor(img.shape, noise, d0, sep0)
        found = _peaks(imgs, d0, sep0, floor)
        sig, xy = [], []
        for im, sign in zip(imgs, (1, -1)):
            x, y = found[found[:, 3] == sign, :2].T
            if len(x) < 3:
                continue
            r = _fit_widths(im, x, y, d0)
            ok = r["converged"]
            sig.append(r["sigma"][ok])
            xy.append(np.c_[r["x"][ok], r["y"][ok]])
        sig = np.concatenate(sig) if sig else np.zeros(0)
        if len(sig) >= 3:
            # the larger of the two: a Gaussian fitted to a structured particle (a
            # bright-field ring) takes only its core
            s = max(s, float(np.median(sig)))
            xy = np.vstack(xy)
            spacing = nn_spacing(xy[:, 0], xy[:, 1])
        p.diameter = suggest_diameter([s])[0]
    if p.separation is None:
        if not np.isfinite(spacing):
            floor = noise_mass_floor(img.shape, noise, p.diameter, p.diameter + 1.0)
            found = _peaks(imgs, p.diameter, p.diameter + 1.0, floor)
            spacing = nn_spacing(found[:, 0], found[:, 1])
        p.separation = suggest_separation((p.diameter,), [spacing])[0]
    if p.minmass is None:
        p.minmass = frame_minmass(imgs, p, noise, blobs)
        if p.minmass is None:
            raise TrackingError(f"no particles found in the first frame with diameter={p.diameter}; "
                                "check the video, --diameter and --contrast")
    return p


def frame_minmass(imgs: list[np.ndarray], p: "TrackParams", noise: float, blobs: np.ndarray
                  ) -> float | None:
    """The minmass of oriented 2D frames ``imgs`` (particles bright; two for mixed
    contrast) at ``p``'s diameter and separation: :func:`suggest_minmass` of their
    candidate masses above the noise floor (see the module docstring). ``noise`` and
    ``blobs`` are the frames' :func:`blob_scan` noise level and blobs of the particles'
    polarity. None when no candidate is found."""
    img = imgs[0]
    mass = np.concatenate([feature_masses(im, p.diameter, p.separation, p.refine)[2] for im in imgs])
    if len(mass) == 0:
        return None
    floor = noise_mass_floor(img.shape, noise, p.diameter, p.separation, p.refine)
    dim = np.sum((mass >= 0.5 * floor) & (mass < floor))
    packed = np.sum(mass >= 0.5 * floor) * math.pi * (p.diameter / 2) ** 2 / (len(imgs) * img.size)
    if p.refine and packed >= 0.3 and dim > FALSE_DETECTION_RATE * np.sum(mass >= floor):
        # a packing with particles just under the white-noise floor: the noise's own
        # peaks among them decide (context_mass_floor); they are weaker than on an
        # empty frame
        ctx = [context_mass_floor(im, noise, p.diameter, p.separation, floor)[0]
               for im in imgs]
        if np.all(np.isfinite(ctx)):
            floor = min(floor, max(ctx))
    strong = strong_blobs(blobs)
    covered = float(np.sum(math.pi * (1.75 * strong[:, 2]) ** 2)) if len(strong) else 0.0
    if covered < 0.3 * img.size:   # a background to measure (not a dense packing)
        bg = background_mass_floor(imgs, p.diameter, p.separation, floor)
        # at very low signal no particle is clear, and the "background" is the
        # particles: a floor that half the blobs of the scan cannot pass is not noise
        if np.sum(mass >= bg) >= 0.5 * len(strong):
            floor = max(floor, bg)
    return suggest_minmass(mass, floor)


def sample_mask(img: np.ndarray, diameter: int, peak: float) -> np.ndarray | None:
    """Where the frame shows the sample: False on black borders, walls and other areas
    in which no particle can be seen.

    ``img`` is oriented (particles bright) and ``peak`` is the typical height of a
    particle above its surroundings. The frame is averaged over windows of one
    diameter; an area that stays brighter or darker than the frame's median average by
    more than 0.6 ``peak`` over more than four particle areas is not made of particles
    (a packing of them averages about half their peak, with the gaps between them) and
    is masked (the window already reaches half a diameter past its edge). Returns None
    when all of the frame is sample.
    """
    import cv2

    if not np.isfinite(peak) or peak <= 0:
        return None
    k = int(diameter) | 1
    avg = cv2.blur(np.asarray(img, np.float32), (k, k), borderType=cv2.BORDER_REPLICATE)
    off = np.abs(avg - np.median(avg)) > 0.6 * peak
    if not off.any():
        return None
    n, labels, stats, _ = cv2.connectedComponentsWithStats(off.astype(np.uint8), connectivity=8)
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] > 4 * math.pi * (diameter / 2) ** 2)
    big = big[big > 0]
    if len(big) == 0:
        return None
    return ~np.isin(labels, big)


#: Noise peaks allowed above the background floor, per frame (all polarities together).
FALSE_PEAKS_PER_FRAME = 0.5


def background_mass_floor(imgs: list[np.ndarray], diameter: int, separation: float,
                          white_floor: float) -> float:
    """The mass that the frame's own background reaches, from its own peaks.

    The white-noise floor (:func:`noise_mass_floor`) models the noise as independent
    pixels of the level :func:`noise_level` measures. Compressed video (H.264, MJPEG),
    clipped or quantised backgrounds break that model: their noise is correlated or
    blocky, and its peaks are more massive than white noise of the same level gives.
    Here the band-passed peaks farther than 1.5 diameters from any clear particle (mass
    above 3 x ``white_floor`` and above 0.2 x the 99th percentile of all peak masses)
    are taken as the background's own; an exponential fitted
    to the top 10 % of their masses gives the mass that
    :data:`FALSE_PEAKS_PER_FRAME` background peaks exceed over the whole frame. Returns
    0 when the background is too small to measure (fewer than 50 peaks, or under a
    third of all peaks). The caller uses it only when the strong blobs cover under 30 %
    of the frame: in a dense packing there is no background, and at low photon counts no
    particle is "clear", so the particles themselves would be taken for background.

    Parameters
    ----------
    imgs : list of ndarray (Y, X)
        The frame oriented for each polarity tracked (particles bright).
    diameter, separation : float
        Feature diameter and separation (px).
    white_floor : float
        The white-noise floor (trackpy mass units).
    """
    from ..neighbours import nearest
    from .locate import find_peaks

    xy, mass = [], []
    for im in imgs:
        x, y, m, _ = find_peaks(im, diameter, separation, percentile=0)
        xy.append(np.c_[x, y])
        mass.append(m)
    xy, mass = np.vstack(xy), np.concatenate(mass)
    # clear particles: well above the white-noise floor and not far below the bright end
    # (a white-noise floor near 0, as on a flat compressed background, makes all "clear")
    strong = mass >= max(3 * white_floor, 0.2 * float(np.percentile(mass, 99)) if len(mass) else 0.0)
    if strong.any():
        far = nearest(xy[strong], query=xy)[0] > 1.5 * diameter
    else:
        far = np.ones(len(mass), bool)
    bg = np.sort(mass[far])
    if len(bg) < 50 or len(bg) < len(mass) / 3:
        return 0.0
    u = float(bg[int(0.9 * len(bg))])
    excess = bg[bg > u] - u
    if len(excess) < 10:
        return 0.0
    beta = float(excess.mean())
    expected = len(excess) * len(mass) / len(bg)        # peaks above u over the whole frame
    return u + beta * math.log(max(expected / FALSE_PEAKS_PER_FRAME, 1.0))


def _peaks(imgs: list[np.ndarray], diameter: int, separation: float, floor: float
           ) -> np.ndarray:
    """Peaks above the suggested minmass in each oriented image (bright, then dark), with
    mixed-contrast halos dropped: ndarray (N, 4) of x, y (px), mass, sign (+1, -1)."""
    from .locate import find_peaks, halos

    rows = []
    for im, sign in zip(imgs, (1, -1)):
        x, y, mass, _ = find_peaks(im, diameter, separation)
        keep = mass >= suggest_minmass(mass, floor)
        rows.append(np.c_[x[keep], y[keep], mass[keep], np.full(keep.sum(), sign)])
    found = np.vstack(rows)
    if len(imgs) > 1:
        found = found[~halos(found[:, 0], found[:, 1], found[:, 2], found[:, 3], float(diameter))]
    return found


def _fit_widths(img: np.ndarray, x: np.ndarray, y: np.ndarray, d0: int) -> dict:
    """Jointly fitted Gaussian widths of the spots at (x, y) (the blob scan is biased by
    close neighbours), in a central crop holding about 400 spots."""
    from .refine import refine_jointly

    h, w = img.shape
    cheb = np.maximum(np.abs(x - (w - 1) / 2), np.abs(y - (h - 1) / 2))
    half = np.sort(cheb)[min(len(cheb), 400) - 1] + 1.5 * d0
    x0, x1 = max(0, int((w - 1) / 2 - half)), min(w, int((w - 1) / 2 + half) + 1)
    y0, y1 = max(0, int((h - 1) / 2 - half)), min(h, int((h - 1) / 2 + half) + 1)
    inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
    r = refine_jointly(img[y0:y1, x0:x1], x[inside] - x0, y[inside] - y0, d0 / 3.5,
                       add_missed=False, n_sweeps=2, stage1_sweeps=2, tol=1e-2)
    r["x"] = r["x"] + x0
    r["y"] = r["y"] + y0
    return r


def displacement_excess(pos0, pos1, r_max: float, bin_px: float = 0.25
                        ) -> tuple[np.ndarray, np.ndarray, int]:
    """Distribution of frame-to-frame displacements without knowing identities.

    The number of features of frame t+1 at distance r from a feature of frame t, minus
    what the structure alone puts there (the same count within frame t, scaled by the
    feature counts), is the self part of the van Hove function: each particle's own
    displacement. Features that are unrelated between frames (noise, particles
    entering or leaving) cancel.

    Parameters
    ----------
    pos0, pos1 : lists of ndarray (N, d), (M, d)
        Feature positions (px) in pairs of consecutive frames.
    r_max : float
        Largest displacement considered (px).

    Returns
    -------
    edges : ndarray (B + 1,)
        Bin edges (px).
    excess : ndarray (B,)
        Excess pair count per bin, summed over the frame pairs.
    n0 : int
        Number of features of the first frames, summed.
    """
    from ..neighbours import Tree

    edges = np.arange(0.0, r_max + bin_px, bin_px)
    excess = np.zeros(len(edges) - 1)
    n0 = 0
    for a, b in zip(pos0, pos1):
        a, b = np.asarray(a, float), np.asarray(b, float)
        if len(a) < 2 or len(b) < 2:
            continue
        ta = Tree(a)
        cross = ta.distances_to(Tree(b), r_max)[2]
        i, j, same = ta.distances_to(ta, r_max)
        same = same[i != j]
        excess += np.histogram(cross, edges)[0] - np.histogram(same, edges)[0] * len(b) / len(a)
        n0 += len(a)
    return edges, excess, n0


def suggest_search_range(pos0, pos1, spacing: float, area: float | None = None) -> float:
    """Search range from the displacement distribution between consecutive frames.

    Parameters
    ----------
    pos0, pos1 : ndarray (N, d), (M, d), or lists of them
        Feature positions in px in two consecutive frames (lists: several pairs of
        frames, pooled).
    spacing : float
        Typical neighbour spacing in px (median nearest-neighbour distance).
    area : float, optional
        Area (px^2; volume in 3D) the features occupy; default: their bounding box.

    The displacements come from :func:`displacement_excess` (no linking needed, so
    noise detections and particles entering or leaving do not inflate it); the range is
    1.5 x their 99th percentile + 0.5 px, the percentile taken against the plateau of the
    cumulative excess over the outer half of the range, at most half the mean particle
    distance
    (density^(-1/d)) so that linking stays unambiguous in dense packings.
    """
    if not isinstance(pos0, (list, tuple)):
        pos0, pos1 = [pos0], [pos1]
    pos0 = [np.asarray(a, float) for a in pos0]
    pos1 = [np.asarray(b, float) for b in pos1]
    counts = [len(a) for a in pos0 if len(a)]
    if not counts:
        return max(1.0, 0.45 * spacing) if np.isfinite(spacing) else 5.0
    both = np.vstack([a for a in pos0 if len(a)])
    dim = both.shape[1]
    if area is None:
        area = float(np.prod(np.maximum(np.ptp(both, axis=0), 1.0)))
    cap = 0.5 * (area / float(np.median(counts))) ** (1.0 / dim)
    if np.isfinite(spacing):
        cap = max(cap, 0.45 * spacing)
    edges, excess, n0 = displacement_excess(pos0, pos1, cap)
    cum = np.cumsum(excess)
    if n0 == 0 or cum[-1] <= 0.05 * n0:
        return max(1.0, cap)          # no correlated motion found: the quality check says so
    # the plateau from the outer half of the range (noise makes the last bin wander); the
    # 99th percentile, not a lower one: rearrangements give the steps a heavy tail
    plateau = float(np.median(cum[len(cum) // 2:]))
    if plateau <= 0:
        return max(1.0, cap)
    r99 = float(edges[1:][np.argmax(cum >= 0.99 * plateau)])
    return float(max(1.0, min(1.5 * r99 + 0.5, cap)))
