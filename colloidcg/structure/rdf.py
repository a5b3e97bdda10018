"""Radial distribution function g(r) of tracked particles and its first minimum.

g(r) is measured without periodic images: only particles at least ``r_max`` from every
edge of the field of view serve as centres, so each centre's shells lie wholly inside
the image and need no edge correction. Normalisation is by the ideal-gas count
rho * (shell area or volume), with rho the frame's number density.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial import cKDTree

from ..errors import ColloidcgError
from .frames import Frames


def radial_distribution(fr: Frames, r_max: float | None = None, bin_width: float | None = None,
                        max_frames: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """g(r) averaged over up to ``max_frames`` evenly spaced frames.

    Parameters
    ----------
    fr : Frames
    r_max : float, optional
        Largest distance in px; default 3 mean spacings.
    bin_width : float, optional
        Histogram bin in px; default a/40 (a = mean spacing).
    max_frames : int

    Returns
    -------
    r : (B,) float64  bin centres in px
    g : (B,) float64  g(r), dimensionless
    """
    a = fr.spacing
    r_max = 3.0 * a if r_max is None else float(r_max)
    bin_width = a / 40.0 if bin_width is None else float(bin_width)
    edges = np.arange(0.0, r_max + 0.5 * bin_width, bin_width)
    counts = np.zeros(len(edges) - 1)
    norm = 0.0  # sum over frames of n_centres * rho
    vol = float(np.prod(np.diff(fr.fov, axis=1)))
    lo, hi = fr.fov[:, 0], fr.fov[:, 1]
    sel = np.unique(np.linspace(0, len(fr.frames) - 1, min(max_frames, len(fr.frames))).round().astype(int))
    for f in sel:
        s, e = fr.starts[f], fr.starts[f + 1]
        p = fr.pos[s:e]
        centre = ((p - r_max >= lo) & (p + r_max <= hi)).all(axis=1)
        if not centre.any():
            continue
        pairs = cKDTree(p).query_pairs(r_max, output_type="ndarray")
        d = np.sqrt(np.square(p[pairs[:, 1]] - p[pairs[:, 0]]).sum(axis=1))
        w = centre[pairs[:, 0]].astype(float) + centre[pairs[:, 1]]
        counts += np.histogram(d, bins=edges, weights=w)[0]
        norm += centre.sum() * (e - s) / vol
    if norm == 0:
        raise ColloidcgError(f"field of view too small to measure g(r) out to r = {r_max:.3g} px "
                             f"(no particle that far from every edge); pass cutoff explicitly")
    if fr.dim == 2:
        shell = np.pi * np.diff(edges ** 2)
    else:
        shell = 4.0 / 3.0 * np.pi * np.diff(edges ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), counts / (norm * shell)


def first_minimum(r: np.ndarray, g: np.ndarray, smooth_bins: float = 2.0,
                  flat_tol: float = 0.02) -> float | None:
    """Position of the first minimum of g(r) after its first peak, or None.

    Rule: smooth g with a Gaussian of ``smooth_bins`` bins; the first peak is the
    highest point; the first minimum is the first local minimum after it where the
    smoothed g < 1. When the minimum is flat (a crystal, whose g is zero between
    shells), the middle of the contiguous stretch with g <= g_min + flat_tol * g_peak
    is returned.
    """
    gs = gaussian_filter1d(np.asarray(g, float), smooth_bins, mode="nearest")
    k0 = int(np.argmax(gs))
    for k in range(k0 + 1, len(gs) - 1):
        if gs[k] <= gs[k - 1] and gs[k] <= gs[k + 1] and gs[k] < 1.0:
            level = gs[k] + flat_tol * gs[k0]
            a = k
            while a - 1 > k0 and gs[a - 1] <= level:
                a -= 1
            b = k
            while b + 1 < len(gs) and gs[b + 1] <= level:
                b += 1
            return float(0.5 * (r[a] + r[b]))
    return None


def cutoff_from_gr(fr: Frames, max_frames: int = 50) -> tuple[float, str]:
    """Default neighbour cutoff: the first minimum of g(r) measured from the data (px).

    g(r) is measured out to 3 mean spacings with bins of a/40 on up to ``max_frames``
    evenly spaced frames; see :func:`first_minimum` for the rule. When g(r) has no first
    minimum below 1 (a dilute gas), the fallback is 1.5 times the position of its peak.

    Returns
    -------
    cutoff : float, px
    rule : str
        ``"first minimum of g(r)"`` or ``"1.5 x first peak of g(r) (no minimum found)"``.
    """
    r, g = radial_distribution(fr, max_frames=max_frames)
    rmin = first_minimum(r, g)
    if rmin is not None:
        return rmin, "first minimum of g(r)"
    gs = gaussian_filter1d(g, 2.0, mode="nearest")
    return float(1.5 * r[int(np.argmax(gs))]), "1.5 x first peak of g(r) (no minimum found)"
