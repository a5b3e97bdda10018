"""Voronoi cells in 2D from the Delaunay triangulation, with open boundaries.

The Voronoi cell of particle v is the polygon of the circumcentres c_k of its Delaunay
triangles. Its area is accumulated triangle by triangle: triangle (v, u, w) contributes
the signed quadrilateral (v, m_vu, c, m_vw), with m the edge midpoints. The midpoints lie
on the cell's edges (perpendicular bisectors), so the signed pieces add up to the exact
cell area for obtuse triangles too.

Open boundaries: a cell is exact only if particles outside the field of view (unseen)
cannot change it. That holds when every circumdisc of v's triangles lies inside the field
of view, because a Delaunay triangle stays Delaunay as long as no point enters its
circumdisc. Cells failing that test, and cells of convex-hull vertices (unbounded), are
reported as invalid (area NaN).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import Delaunay, QhullError


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _triangulate(points: np.ndarray):
    """Delaunay simplices (m, 3), hull vertex ids and CSR neighbours of one frame, or None."""
    if len(points) < 3:
        return None
    try:
        tri = Delaunay(points)
    except QhullError:  # all points collinear or coincident
        return None
    indptr, indices = tri.vertex_neighbor_vertices
    return tri.simplices, np.unique(tri.convex_hull), indptr, indices


def _cell_areas(points: np.ndarray, s: np.ndarray, hull: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Cell areas (NaN where not exact) of all vertices of the triangles ``s`` (indices
    into ``points``; triangles of several frames may be stacked)."""
    n = len(points)
    A, B, C = points[s[:, 0]], points[s[:, 1]], points[s[:, 2]]
    # circumcentre c = A + u, with u from the standard closed form for b = B - A, c = C - A
    b, c = B - A, C - A
    den = 2.0 * _cross(b, c)
    ok = den != 0
    den = np.where(ok, den, 1.0)
    bb, cc = (b * b).sum(1), (c * c).sum(1)
    u = np.stack([(c[:, 1] * bb - b[:, 1] * cc) / den, (b[:, 0] * cc - c[:, 0] * bb) / den], axis=1)
    rad = np.sqrt((u * u).sum(1))
    cen = A + u
    lo, hi = fov[:, 0], fov[:, 1]
    inside = ok & ((cen - rad[:, None] >= lo) & (cen + rad[:, None] <= hi)).all(axis=1)
    sign = np.sign(den)  # +1 for counter-clockwise triangles
    acc = np.zeros(n)
    P = (A, B, C)
    for k in range(3):
        pv, pu, pw = P[k], P[(k + 1) % 3], P[(k + 2) % 3]
        m_vu = 0.5 * (pu - pv)
        m_vw = 0.5 * (pw - pv)
        cv = cen - pv
        # signed area of the quadrilateral (v, m_vu, c, m_vw) of triangle (v, u, w)
        q = 0.5 * (_cross(m_vu, cv) + _cross(cv, m_vw)) * sign
        acc += np.bincount(s[:, k], weights=np.where(ok, q, 0.0), minlength=n)
    bad = np.zeros(n, bool)
    bad[s[~inside].ravel()] = True
    bad[hull] = True
    return np.where(bad, np.nan, acc)


def voronoi_2d(points: np.ndarray, fov: np.ndarray):
    """Voronoi cell areas and Voronoi (Delaunay) neighbours of one 2D frame.

    Parameters
    ----------
    points : (n, 2) float64, px
    fov : (2, 2) float64, ((xlo, xhi), (ylo, yhi)) px

    Returns
    -------
    area : (n,) float64
        Cell area in px^2; NaN where the cell is unbounded or may be changed by particles
        outside the field of view.
    indptr, indices : int64 arrays
        Voronoi neighbours in CSR form: neighbours of k are ``indices[indptr[k]:indptr[k+1]]``.
        Empty when the frame cannot be triangulated (fewer than 3 points, all collinear).
    """
    n = len(points)
    t = _triangulate(points)
    if t is None:
        return np.full(n, np.nan), np.zeros(n + 1, np.int64), np.empty(0, np.int64)
    s, hull, indptr, indices = t
    return _cell_areas(points, s, hull, fov), indptr.astype(np.int64), indices.astype(np.int64)


def voronoi_frames(pos: np.ndarray, starts: np.ndarray, fov: np.ndarray):
    """:func:`voronoi_2d` for many frames: rows ``starts[f]:starts[f+1]`` form frame f.

    One Delaunay triangulation per frame; the cell geometry is then computed for all
    frames at once.

    Returns
    -------
    area : (R,) float64 px^2 (NaN as in :func:`voronoi_2d`)
    src, dst : (B,) int64  directed Voronoi-neighbour bonds between rows (both directions)
    """
    simp, hull, src, dst = [], [], [], []
    for f in range(len(starts) - 1):
        s, e = int(starts[f]), int(starts[f + 1])
        t = _triangulate(pos[s:e])
        if t is None:
            hull.append(np.arange(s, e))
            continue
        tri, h, indptr, indices = t
        simp.append(tri + s)
        hull.append(h + s)
        src.append(np.repeat(np.arange(s, e), np.diff(indptr)))
        dst.append(indices + s)
    cat = (lambda xs, shape: np.concatenate(xs) if xs else np.empty(shape, np.int64))
    simp = cat(simp, (0, 3))
    area = _cell_areas(pos, simp, cat(hull, (0,)), fov)
    return area, cat(src, (0,)).astype(np.int64), cat(dst, (0,)).astype(np.int64)
