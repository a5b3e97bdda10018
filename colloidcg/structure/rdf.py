"""Radial distribution function g(r) and its first minimum.

:func:`gr` is the one g(r) of colloidcg: it takes positions frame by frame (any length
unit) and treats the edges of the observed region in one of three ways, ``edge=``

``"periodic"``
    A periodic box (``box``, side lengths): pair distances by the minimum image, every
    particle a centre; the largest r must be below half the shortest side.
``"exclude"``
    An open field of view (``fov``, (d, 2) lo/hi bounds) whose edges are excluded: only
    particles at least r_max from every edge serve as centres, so each centre's shells lie
    wholly inside the field of view and need no correction.
``"random"``
    An open region normalised by random points: the pair counts are divided by those of
    the same number of uniform random points in the same region (``fov``, or each frame's
    bounding box of the particles), which corrects for the edges at every r (no particle
    is left out, at the price of the random points' own noise).

``"periodic"`` and ``"exclude"`` normalise by the ideal-gas count n_centres * rho * (shell
area or volume), rho = N / V the frame's number density; as freud's ``RDF`` (its default
"exact" normalisation) g then tends to (N - 1) / N rather than 1 for N particles.
:func:`radial_distribution` (structure stage, px, ``Frames``) and
:func:`colloidcg.evaluate.rdf` (tracks tables, um) are thin callers of :func:`gr`.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..errors import ColloidcgError
from ..neighbours import pairs as close_pairs
from .frames import Frames

#: The edge treatments of :func:`gr`.
EDGE_TREATMENTS = ("periodic", "exclude", "random")


def _shells(edges: np.ndarray, dim: int) -> np.ndarray:
    if dim == 2:
        return np.pi * np.diff(edges ** 2)
    if dim == 3:
        return 4.0 / 3.0 * np.pi * np.diff(edges ** 3)
    raise ValueError(f"g(r) needs 2D or 3D positions, got {dim}D")


def sheared_distances(p: np.ndarray, r_max: float, box: np.ndarray, offset: float) -> np.ndarray:
    """(P,) distances of the unordered pairs closer than ``r_max`` in a Lees-Edwards box
    (``box`` (d,) side lengths; the image across +y shifted along x by ``offset``), for
    positions ``p`` (N, d), by explicit images: the primary cell's particles against its 3^d
    neighbouring cells (the y neighbours shifted by -+offset). r_max must be below half the
    shortest side, so each pair has one image that close. (cKDTree's periodic boxes are
    rectangular only; freud's triclinic box asks r_max below half its plane spacing, which a
    tilt shortens: L_x / (2 sqrt(1 + (offset / L_y)^2)), 0.447 L_x at the largest tilt, where
    g(r) here reaches 0.4999 L.)"""
    from scipy.spatial import cKDTree

    dim = p.shape[1]
    offset = offset - box[0] * np.round(offset / box[0])      # the same images, offset in [-L_x/2, L_x/2]
    q = p.copy()
    ny = np.floor(q[:, 1] / box[1])
    q[:, 0] -= ny * offset                         # into the primary cell along y, sheared
    q[:, 1] -= ny * box[1]
    q[:, 0] = np.mod(q[:, 0], box[0])
    if dim == 3:
        q[:, 2] = np.mod(q[:, 2], box[2])
    shifts = []
    for j in (-1, 0, 1):
        for i in (-1, 0, 1):
            for k in ((-1, 0, 1) if dim == 3 else (0,)):
                v = np.zeros(dim)
                v[0] = i * box[0] + j * offset
                v[1] = j * box[1]
                if dim == 3:
                    v[2] = k * box[2]
                shifts.append(v)
    images = np.concatenate([q + v for v in shifts])
    n = len(q)
    centre = len(shifts) // 2                      # the shift (0, 0[, 0]) sits in the middle
    dm = cKDTree(q).sparse_distance_matrix(cKDTree(images), r_max, output_type="ndarray")
    keep = ~((dm["j"] // n == centre) & (dm["j"] % n == dm["i"]))       # not a particle with itself
    keep &= dm["i"] < dm["j"] % n                  # each unordered pair once
    return dm["v"][keep]


def gr(frames: Iterable[np.ndarray], edges, edge: str = "exclude", *, box=None, fov=None,
       n_random: int = 2, rng=None, shear=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """g(r) of point sets, averaged over frames, with the edge treatment ``edge``.

    Parameters
    ----------
    frames : iterable of (N_t, d) float arrays
        Positions of each frame, in one length unit L (px, um, ...); d = 2 or 3. Rows that
        are not finite are ignored.
    edges : (B + 1,) float
        Bin edges in L, ascending from 0 or more; r_max = edges[-1].
    edge : "periodic", "exclude" or "random"
        See the module docstring.
    box : (d,) float, L
        Periodic side lengths (``"periodic"`` only, required there); positions are wrapped
        into [0, L).
    fov : (d, 2) float, L
        Field of view, (lo, hi) per axis: required for ``"exclude"``; for ``"random"`` the
        region of the random points (default: each frame's bounding box of the particles).
    n_random : int
        ``"random"``: random point sets per frame (their pair counts are averaged).
    rng : numpy Generator or int seed, optional
        ``"random"``: the random points' generator (default seed 0).
    shear : iterable of float, L, optional
        ``"periodic"`` only: each frame's Lees-Edwards offset (the image across +y shifted
        along x by it, e.g. a sheared LAMMPS box's xy tilt), one per frame; pair distances
        then use the sheared minimum image (:func:`sheared_distances`).

    Returns
    -------
    r : (B,) float64, L: bin centres
    g : (B,) float64, dimensionless (NaN where nothing was counted)
    sigma : (B,) float64: Poisson standard error of g (a pair of two centres is counted
        twice, so the variance is the sum of squared weights; at least one count)

    Raises
    ------
    ColloidcgError
        ``"exclude"``: no particle lies r_max from every edge in any frame.
    """
    if edge not in EDGE_TREATMENTS:
        raise ValueError(f"edge must be one of {', '.join(EDGE_TREATMENTS)}, got {edge!r}")
    if shear is not None and edge != "periodic":
        raise ValueError(f"shear: a sheared box needs edge='periodic', got {edge!r}")
    edges = np.asarray(edges, float)
    r_max = float(edges[-1])
    nb = len(edges) - 1
    counts = np.zeros(nb)
    var = np.zeros(nb)          # Poisson variance of the weighted counts: sum of w^2
    norm = 0.0                  # periodic / exclude: sum over frames of n_centres * rho
    ideal = np.zeros(nb)        # random: mean pair counts of the random points
    dim = None
    b = None
    if edge == "periodic":
        if box is None:
            raise ValueError("edge='periodic' needs the periodic box")
    elif edge == "exclude":
        if fov is None:
            raise ValueError("edge='exclude' needs the field of view fov")
        fov = np.asarray(fov, float)
    elif fov is not None:
        fov = np.asarray(fov, float)
    if edge == "random" and not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(0 if rng is None else rng)
    offsets = iter(shear) if shear is not None else None
    for p in frames:
        offset = next(offsets) if offsets is not None else None
        p = np.asarray(p, float)
        p = p[np.isfinite(p).all(axis=1)]
        dim = p.shape[1]
        n = len(p)
        if edge == "periodic":
            b = np.asarray(box, float).reshape(-1)[:dim]
            if n < 1:
                continue
            if offset is not None and float(offset) != 0.0:
                d = sheared_distances(p, r_max, b, float(offset))
            else:
                d = close_pairs(p, r_max, b, sort=False, distances=True)[1]
            w = np.full(len(d), 2.0)
            norm += n * n / float(np.prod(b))
        elif edge == "exclude":
            lo, hi = fov[:dim, 0], fov[:dim, 1]
            centre = ((p - r_max >= lo) & (p + r_max <= hi)).all(axis=1)
            if not centre.any():
                continue
            ij, d = close_pairs(p, r_max, sort=False, distances=True)
            w = centre[ij[:, 0]].astype(float) + centre[ij[:, 1]]
            norm += centre.sum() * n / float(np.prod(hi - lo))
        else:
            if n < 2:
                continue
            lo, hi = (p.min(0), p.max(0)) if fov is None else (fov[:dim, 0], fov[:dim, 1])
            d = close_pairs(p, r_max, sort=False, distances=True)[1]
            w = np.full(len(d), 2.0)
            for _ in range(n_random):
                q = rng.uniform(lo, hi, p.shape)
                dq = close_pairs(q, r_max, sort=False, distances=True)[1]
                ideal += np.histogram(dq, bins=edges, weights=np.full(len(dq), 2.0))[0] / n_random
        counts += np.histogram(d, bins=edges, weights=w)[0]
        var += np.histogram(d, bins=edges, weights=w * w)[0]
    r = 0.5 * (edges[1:] + edges[:-1])
    if edge == "exclude" and norm == 0:
        raise ColloidcgError(f"field of view too small to measure g(r) out to r = {r_max:.3g} "
                             f"(no particle that far from every edge)")
    err = np.sqrt(np.maximum(var, 1.0))
    if edge == "random":
        ok = ideal > 0
        g = np.where(ok, counts / np.where(ok, ideal, 1.0), np.nan)
        return r, g, np.where(ok, err / np.where(ok, ideal, 1.0), np.nan)
    if norm == 0:
        nan = np.full(nb, np.nan)
        return r, nan, nan.copy()
    ideal_count = norm * _shells(edges, dim)
    return r, counts / ideal_count, err / ideal_count


def radial_distribution(fr: Frames, r_max: float | None = None, bin_width: float | None = None,
                        max_frames: int = 50, return_sigma: bool = False, edge: str = "exclude"):
    """g(r) of the tracks in px, averaged over up to ``max_frames`` evenly spaced frames.

    A thin caller of :func:`gr`: by default the field of view's edges are excluded
    (``edge="exclude"``: only particles at least ``r_max`` from every edge of ``fr.fov``
    are centres); ``"periodic"`` treats ``fr.fov`` as a periodic box, ``"random"``
    normalises by uniform random points in it.

    Parameters
    ----------
    fr : Frames
    r_max : float, optional
        Largest distance in px; default 3 mean spacings.
    bin_width : float, optional
        Histogram bin in px; default a/40 (a = mean spacing).
    max_frames : int
    edge : "exclude", "periodic" or "random"

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
    sel = np.unique(np.linspace(0, len(fr.frames) - 1, min(max_frames, len(fr.frames))).round().astype(int))
    lo = fr.fov[:, 0]
    box = np.diff(fr.fov, axis=1)[:, 0]
    pos = (fr.pos[fr.starts[f]:fr.starts[f + 1]] for f in sel)
    if edge == "periodic":
        pos = (p - lo for p in pos)
    try:
        r, g, sigma = gr(pos, edges, edge, box=box, fov=fr.fov)
    except ColloidcgError:
        raise ColloidcgError(f"field of view too small to measure g(r) out to r = {r_max:.3g} px "
                             f"(no particle that far from every edge); pass cutoff explicitly") from None
    if return_sigma:
        return r, g, sigma
    return r, g


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
