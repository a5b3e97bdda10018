"""Neighbour search: the one place in colloidcg that builds k-d trees.

Everything here wraps :class:`scipy.spatial.cKDTree`, so that the periodic-box rules are
written once. Points are (N, d) float arrays (d = 2 or 3) in any length unit; every
radius and distance is in the same unit.

Boundaries
----------
``box=None``
    Open: plain Euclidean distances.
``box=(L_1, ..., L_d)``
    Periodic box [0, L_1) x ... x [0, L_d), minimum-image distances. Points are wrapped
    into the box once (:func:`wrap`: ``np.mod`` and then the value L, which ``np.mod``
    returns for tiny negative inputs, set to 0, since cKDTree refuses it), and every
    search radius must be less than half the shortest side (beyond that a pair would
    have more than one image in range and the minimum image would not describe it):
    a larger one raises ``ValueError``.

Operations (module functions build a tree, use it once and drop it; build a
:class:`Tree` to ask several questions of the same points)
----------
:func:`pairs`
    Unordered pairs i < j at most ``r`` apart, an (P, 2) int64 array sorted by i then j
    (optionally their distances).
:func:`nearest`
    The k nearest neighbours of each point, itself excluded (or of other query points).
:func:`within` / :func:`count_within`
    Indices / numbers of the points within ``r`` of each point (itself excluded) or of
    each query point.
:func:`cross_distances`
    All pairs (i, j) with |a_i - b_j| <= r between two point sets, with their distances.

Distances are "at most r" (``<=``) throughout, as cKDTree defines them.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["Tree", "wrap", "check_radius", "pairs", "nearest", "within", "count_within",
           "cross_distances", "pair_distances"]


def _box(box, dim: int) -> np.ndarray | None:
    if box is None:
        return None
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.size == 1 and dim > 1:
        b = np.full(dim, float(b[0]))
    if b.size < dim:
        raise ValueError(f"box has {b.size} side lengths for {dim}-dimensional points")
    b = b[:dim]
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise ValueError(f"box side lengths must be positive and finite, got {b.tolist()}")
    return b


def wrap(points, box) -> np.ndarray:
    """``points`` (N, d) wrapped into the periodic box [0, L) (a new float64 array).

    ``np.mod`` can return exactly L for tiny negative inputs (-1e-17 mod L rounds to L);
    such values are set to 0, the same point of the torus, so that every coordinate is in
    [0, L) as cKDTree requires.
    """
    p = np.asarray(points, dtype=np.float64)
    b = _box(box, p.shape[-1])
    out = np.mod(p, b)
    out[out >= b] = 0.0
    return out


def check_radius(r: float, box) -> float:
    """``r`` as a float; ValueError when negative, not finite, or (periodic) not less than
    half the shortest side of ``box`` (the minimum-image limit)."""
    r = float(r)
    if not np.isfinite(r) or r < 0:
        raise ValueError(f"search radius must be finite and non-negative, got {r!r}")
    if box is not None:
        b = np.asarray(box, dtype=np.float64).reshape(-1)
        if r >= 0.5 * float(b.min()):
            raise ValueError(f"search radius {r:g} must be less than half the periodic box "
                             f"{b.tolist()} (minimum image)")
    return r


class Tree:
    """A k-d tree over ``points`` (N, d), open or in a periodic ``box``; see the module
    docstring for the boundary rules.

    Attributes
    ----------
    points : (N, d) float64, the points the tree holds (wrapped into the box when
        periodic; otherwise the input itself when it is already float64 and C-ordered,
        so building a tree copies nothing more than cKDTree does).
    box : (d,) float64 periodic side lengths, or None.
    n, dim : int
    """

    __slots__ = ("points", "box", "n", "dim", "_tree")

    def __init__(self, points, box=None, *, leafsize: int = 16):
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2:
            p = p.reshape(len(p), -1)
        self.dim = int(p.shape[1])
        self.box = _box(box, self.dim)
        self.points = wrap(p, self.box) if self.box is not None else p
        self.n = int(len(p))
        self._tree = cKDTree(self.points, leafsize=leafsize,
                             boxsize=None if self.box is None else self.box)

    # ------------------------------------------------------------------ helpers
    def _query_points(self, query) -> np.ndarray:
        q = np.asarray(query, dtype=np.float64)
        if self.box is not None:
            q = wrap(q, self.box)
        return q

    def separations(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Separation vectors points[j] - points[i] (minimum image when periodic), (P, d)."""
        dv = self.points[j] - self.points[i]
        if self.box is not None:
            dv -= self.box * np.round(dv / self.box)
        return dv

    # ------------------------------------------------------------------ queries
    def pairs(self, r: float, *, sort: bool = True, distances: bool = False):
        """Unordered pairs at most ``r`` apart.

        Returns
        -------
        pairs : (P, 2) int64 with pairs[:, 0] < pairs[:, 1]; sorted by i then j when
            ``sort`` (else in the k-d tree's order: deterministic for the same input, the
            order cKDTree.query_pairs gives, for callers whose floating-point sums over
            pairs must reproduce earlier results bit for bit).
        dist : (P,) float64 only with ``distances``: |r_j - r_i| (minimum image).
        """
        r = check_radius(r, self.box)
        p = self._tree.query_pairs(r, output_type="ndarray")
        p = p.reshape(-1, 2).astype(np.int64, copy=False)
        if sort and len(p) > 1:
            p = p[np.argsort(p[:, 0] * max(self.n, 1) + p[:, 1])]
        if not distances:
            return p
        dv = self.separations(p[:, 0], p[:, 1])
        return p, np.sqrt(np.square(dv).sum(axis=1))

    def nearest(self, k: int = 1, query=None, *, max_distance: float = np.inf):
        """The ``k`` nearest neighbours.

        Parameters
        ----------
        k : int
        query : (M, d), optional
            Points to find neighbours of. None: the tree's own points, each excluding
            itself (when coincident points tie, the point's own index is the one dropped).
        max_distance : float
            Neighbours further than this are not returned.

        Returns
        -------
        dist, idx : (M,) float64 and int64 when k == 1, else (M, k); a missing neighbour
            (fewer than k points, or none within ``max_distance``) has distance inf and
            index N, as in cKDTree.
        """
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if query is not None:
            d, i = self._tree.query(self._query_points(query), k=k,
                                    distance_upper_bound=max_distance)
            return d, np.asarray(i, dtype=np.int64)
        d, i = self._tree.query(self.points, k=k + 1, distance_upper_bound=max_distance)
        i = np.asarray(i, dtype=np.int64)
        own = np.arange(self.n)
        if np.array_equal(i[:, 0], own):      # the usual case: self first
            d, i = d[:, 1:], i[:, 1:]
        else:                                 # a coincident point ranked before self
            drop = i == own[:, None]
            drop[~drop.any(axis=1), -1] = True
            keep = ~drop
            d, i = d[keep].reshape(self.n, k), i[keep].reshape(self.n, k)
        if k == 1:
            return d[:, 0], i[:, 0]
        return d, i

    def within(self, r: float, query=None) -> list[np.ndarray]:
        """Indices (sorted int64 arrays) of the points within ``r`` of each query point;
        ``query`` None: of each of the tree's points, itself excluded."""
        r = check_radius(r, self.box)
        q = self.points if query is None else self._query_points(query)
        single = q.ndim == 1
        hits = self._tree.query_ball_point(q, r, return_sorted=True)
        if single:
            return np.asarray(hits, dtype=np.int64)
        out = [np.asarray(h, dtype=np.int64) for h in hits]
        if query is None:
            out = [h[h != n] for n, h in enumerate(out)]
        return out

    def count_within(self, r: float, query=None) -> np.ndarray:
        """(M,) int64 numbers of points within ``r`` of each query point; ``query`` None:
        of each of the tree's points, itself not counted."""
        r = check_radius(r, self.box)
        q = self.points if query is None else self._query_points(query)
        c = np.asarray(self._tree.query_ball_point(q, r, return_length=True), dtype=np.int64)
        return c - 1 if query is None else c

    def distances_to(self, other: "Tree", r: float):
        """All pairs (i, j), i a point of this tree and j of ``other``, at most ``r``
        apart: (i, j, dist) arrays (int64, int64, float64), in cKDTree's order. With
        ``other`` this tree itself every unordered pair appears twice and each point
        once with itself (distance 0)."""
        r = check_radius(r, self.box)
        if (self.box is None) != (other.box is None) or (
                self.box is not None and not np.array_equal(self.box, other.box)):
            raise ValueError("both trees must have the same boundaries")
        m = self._tree.sparse_distance_matrix(other._tree, r, output_type="ndarray")
        return (m["i"].astype(np.int64, copy=False), m["j"].astype(np.int64, copy=False),
                m["v"])


# ---------------------------------------------------------------------- one-shot functions
def pairs(points, r: float, box=None, *, sort: bool = True, distances: bool = False):
    """Unordered pairs i < j at most ``r`` apart: (P, 2) int64 sorted by i then j
    (``sort=False``: cKDTree's order), and with ``distances`` their (P,) distances.
    See :meth:`Tree.pairs`."""
    return Tree(points, box).pairs(r, sort=sort, distances=distances)


def pair_distances(points, r: float, box=None) -> np.ndarray:
    """(P,) distances of the unordered pairs at most ``r`` apart (each pair once)."""
    return pairs(points, r, box, sort=False, distances=True)[1]


def nearest(points, k: int = 1, query=None, box=None, *, max_distance: float = np.inf):
    """The ``k`` nearest neighbours among ``points`` of each point (itself excluded) or of
    each ``query`` point: (dist, idx), (M,) for k == 1 else (M, k); see :meth:`Tree.nearest`."""
    return Tree(points, box).nearest(k, query, max_distance=max_distance)


def within(points, r: float, query=None, box=None) -> list[np.ndarray]:
    """Indices of ``points`` within ``r`` of each point (itself excluded) or of each
    ``query`` point; see :meth:`Tree.within`."""
    return Tree(points, box).within(r, query)


def count_within(points, r: float, query=None, box=None) -> np.ndarray:
    """Numbers of ``points`` within ``r`` of each point (itself not counted) or of each
    ``query`` point; see :meth:`Tree.count_within`."""
    return Tree(points, box).count_within(r, query)


def cross_distances(a, b, r: float, box=None):
    """All pairs (i, j) with |a_i - b_j| <= r: (i, j, dist); see :meth:`Tree.distances_to`."""
    return Tree(a, box).distances_to(Tree(b, box), r)
