"""Radial structure functions ("softness" features, Cubuk et al., PRL 114, 108001, 2015).

    G(i; r, delta) = sum_j exp( -(r_ij - r)^2 / (2 delta^2) )

a Gaussian-smeared count of the neighbours of particle i at distance r. Radii and width
are given in units of the mean interparticle spacing a, so that the same features mean
the same thing in every video. Gaussians are cut at ``TRUNCATE`` widths (they are below
exp(-TRUNCATE^2/2) = 2e-3 there), so only pairs closer than max(r) + TRUNCATE delta count.
"""

from __future__ import annotations

import numpy as np
import numba

#: Default radii, in units of the mean spacing a: the first and second neighbour shells.
DEFAULT_RADII = tuple(float(r) for r in np.round(np.arange(0.60, 2.401, 0.15), 2))
#: Default Gaussian width delta in units of a.
DEFAULT_WIDTH = 0.15
TRUNCATE = 3.5


def feature_names(radii=DEFAULT_RADII) -> list[str]:
    """Column names ``G_<r/a>`` of the radial structure functions, e.g. ``G_0.60``."""
    return [f"G_{r:.2f}" for r in radii]


def search_radius(spacing: float, radii=DEFAULT_RADII, width: float = DEFAULT_WIDTH) -> float:
    """Pair distance (px) beyond which no pair contributes to any G."""
    return (max(radii) + TRUNCATE * width) * spacing


@numba.njit(cache=True, nogil=True)
def _accumulate(i, j, dist, radii, width, truncate, out, offset):  # pragma: no cover - numba
    inv = 1.0 / (2.0 * width * width)
    cut2 = (truncate * width) ** 2
    for p in range(i.shape[0]):
        d = dist[p]
        a = i[p] - offset
        b = j[p] - offset
        for k in range(radii.shape[0]):
            x = d - radii[k]
            x2 = x * x
            if x2 < cut2:
                v = np.exp(-x2 * inv)
                out[a, k] += v
                out[b, k] += v


@numba.njit(cache=True, nogil=True)
def _accumulate_uniform(i, j, dist, r0, step, n_radii, width, truncate, out, offset):  # pragma: no cover
    # Radii r_k = r0 + k step. With x_k = d - r_k and g_k = exp(-x_k^2 / (2 w^2)):
    # g_{k+1} = g_k rho_k, rho_k = exp((2 step x_k - step^2) / (2 w^2)), rho_{k+1} = rho_k c,
    # c = exp(-step^2 / w^2): two exponentials per pair instead of one per radius.
    inv = 1.0 / (2.0 * width * width)
    cut = truncate * width
    c = np.exp(-step * step / (width * width))
    for p in range(i.shape[0]):
        d = dist[p]
        k0 = max(0, int(np.ceil((d - cut - r0) / step)))
        k1 = min(n_radii - 1, int(np.floor((d + cut - r0) / step)))
        if k1 < k0:
            continue
        a = i[p] - offset
        b = j[p] - offset
        x = d - (r0 + k0 * step)
        g = np.exp(-x * x * inv)
        rho = np.exp((2.0 * step * x - step * step) * inv)
        for k in range(k0, k1 + 1):
            out[a, k] += g
            out[b, k] += g
            g *= rho
            rho *= c


def accumulate(i: np.ndarray, j: np.ndarray, dist: np.ndarray, radii_px: np.ndarray,
               width_px: float, out: np.ndarray, offset: int = 0) -> None:
    """Add each unordered pair's Gaussians to both rows of ``out`` (in place).

    Parameters
    ----------
    i, j : (P,) int64 row indices; ``out`` row is ``i - offset``
    dist : (P,) float64 pair distance, px
    radii_px : (K,) float64, px
    width_px : float, px
    out : (R, K) float64, C-contiguous
    """
    i = np.ascontiguousarray(i, np.int64)
    j = np.ascontiguousarray(j, np.int64)
    dist = np.ascontiguousarray(dist, np.float64)
    r = np.ascontiguousarray(radii_px, np.float64)
    step = np.diff(r)
    if len(r) > 1 and step[0] > 0 and np.allclose(step, step[0], rtol=1e-9, atol=0):
        _accumulate_uniform(i, j, dist, float(r[0]), float(step[0]), len(r), float(width_px),
                            float(TRUNCATE), out, int(offset))
    else:
        _accumulate(i, j, dist, r, float(width_px), float(TRUNCATE), out, int(offset))
