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
                        max_frames: int = 50, return_sigma: bool = False):
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
    sigma : (B,) float64  only with ``return_sigma``: Poisson standard error of g (a pair
        of two centres is counted twice, so the variance is the sum of squared weights)
    """
    a = fr.spacing
    r_max = 3.0 * a if r_max is None else float(r_max)
    bin_width = a / 40.0 if bin_width is None else float(bin_width)
    edges = np.arange(0.0, r_max + 0.5 * bin_width, bin_width)
    counts = np.zeros(len(edges) - 1)
    var = np.zeros(len(edges) - 1)  # Poisson variance of the weighted counts: sum of w^2
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
        var += np.histogram(d, bins=edges, weights=w * w)[0]
        norm += centre.sum() * (e - s) / vol
    if norm == 0:
        raise ColloidcgError(f"field of view too small to measure g(r) out to r = {r_max:.3g} px "
                             f"(no particle that far from every edge); pass cutoff explicitly")
    if fr.dim == 2:
        shell = np.pi * np.diff(edges ** 2)
    else:
        shell = 4.0 / 3.0 * np.pi * np.diff(edges ** 3)
    r = 0.5 * (edges[1:] + edges[:-1])
    if return_sigma:
        return r, counts / (norm * shell), np.sqrt(np.maximum(var, 1.0)) / (norm * shell)
    return r, counts / (norm * shell)


def first_minimum(r: np.ndarray, g: np.ndarray, smooth_bins: float = 2.0,
                  flat_tol: float = 0.02, sigma: np.ndarray | None = None,
                  n_sigma: float = 4.0) -> float | None:
    """Position of the first minimum of g(r) after its first peak, or None.

    Rule: smooth g with a Gaussian of ``smooth_bins`` bins; the first peak is the
    highest point; the first minimum is the first local minimum after it where the
    smoothed g < 1. When the minimum is flat (a crystal, whose g is zero between
    shells), the middle of the contiguous stretch with g <= g_min + flat_tol * g_peak
    is returned.

    With ``sigma`` (standard errors of g per bin) the features must be real: the peak is
    the highest lower confidence bound g - n_sigma s (s the smoothed error), and a minimum
    counts only if it lies at least n_sigma combined errors below the peak. An ideal gas
    thus has no first minimum however noisy its g(r).
    """
    gs = gaussian_filter1d(np.asarray(g, float), smooth_bins, mode="nearest")
    if sigma is None:
        ss = np.zeros_like(gs)
    else:
        # error of a Gaussian-weighted mean of ~2 sqrt(pi) smooth_bins independent bins
        ss = np.sqrt(gaussian_filter1d(np.square(sigma), smooth_bins, mode="nearest")
                     / (2.0 * np.sqrt(np.pi) * smooth_bins))
    k0 = int(np.argmax(gs - n_sigma * ss))
    for k in range(k0 + 1, len(gs) - 1):
        if gs[k] <= gs[k - 1] and gs[k] <= gs[k + 1] and gs[k] < 1.0:
            if gs[k0] - gs[k] <= n_sigma * np.hypot(ss[k0], ss[k]):
                continue  # a wiggle of noise, not the shell boundary
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
    evenly spaced frames; see :func:`first_minimum` for the rule (with Poisson errors, 4
    sigma). When g(r) has no significant first minimum below 1 (a dilute gas), the
    fallback is 1.5 mean spacings (about 7 neighbours in 2D, 14 in 3D).

    Returns
    -------
    cutoff : float, px
    rule : str
        ``"first minimum of g(r)"`` or ``"1.5 x mean spacing (g(r) has no first minimum)"``.
    """
    r, g, sigma = radial_distribution(fr, max_frames=max_frames, return_sigma=True)
    rmin = first_minimum(r, g, sigma=sigma)
    if rmin is not None:
        return rmin, "first minimum of g(r)"
    return 1.5 * fr.spacing, "1.5 x mean spacing (g(r) has no first minimum)"
