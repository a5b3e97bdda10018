"""From per-frame features to trajectories: linking, drift, velocities, stubs."""

from __future__ import annotations

import contextlib
import gc
import logging

import numpy as np
import pandas as pd

from ..errors import TrackingError


@contextlib.contextmanager
def gc_frozen():
    """Keep Python's cyclic garbage collector off the objects that exist on entry until
    exit (:func:`gc.freeze`); objects made inside are collected as usual.

    trackpy's linker (here only the fallback for groups too large, :func:`_link_adaptive`)
    makes one Python object per feature, and every full collection that the new objects
    trigger walks the whole heap (a quarter of a million objects once trackpy and pandas
    are loaded): on the dense benchmark this was half of trackpy's linking time. No-op when the collector is disabled or something is frozen already (nested
    use, or a caller's own freeze), so a caller's frozen objects are never unfrozen.
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def link(features: pd.DataFrame, search_range: float, memory: int) -> pd.DataFrame:
    """Link features into trajectories with trackpy; adds the ``particle`` column.

    Rows come back ordered by frame (stable). Particle ids are 0, 1, 2, ... in order
    of first appearance in that order, so the same features always get the same ids:
    trackpy numbers the tracks born inside one group of candidate links in the order
    in which it iterates a Python set of its point objects, which follows their memory
    addresses and changes from run to run (on the shared foam video, 4 % of the rows
    got other ids in a second run; the tracks themselves were the same). Where
    trackpy's numbering is reproducible it is this one (the dense benchmark: the same
    id in every row).

    Parameters
    ----------
    features : DataFrame
        frame, x, y [, z] (px) ...
    search_range : float
        Largest displacement between frames (px).
    memory : int
        Frames a particle may vanish for and keep its identity.
    """
    features = features.reset_index(drop=True)
    frame = features["frame"].to_numpy()
    order = np.argsort(frame, kind="stable")
    if np.any(np.diff(frame) < 0):
        features = features.iloc[order].reset_index(drop=True)
        frame = frame[order]
    linker = FrameLinker(search_range, memory)
    if not len(features):
        return linker.tracks()
    coords = features[["z", "y", "x"] if "z" in features else ["y", "x"]].to_numpy(np.float64)
    cuts = np.flatnonzero(np.diff(frame)) + 1
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(frame)]):
        linker._add_coords(int(frame[lo]), coords[lo:hi])
    return linker._with_ids(features)


class FrameLinker:
    """Crocker and Grier's linking, as trackpy's ``trackpy.link`` does it (same candidates,
    groups, cost and memory), fed one frame at a time, in frame order; :meth:`tracks`
    gives what :func:`link` gives for all the frames at once.

    The rules, those of ``trackpy.linking.Linker`` with its defaults (no predictor, no
    adaptive search): each feature's candidates are the at most MAX_CANDIDATES nearest
    sources within ``search_range`` (sources: the previous frame's features and those
    lost within the last ``memory`` frames, at their last position); features and sources
    joined by candidate links form groups, and each group takes the assignment of least
    summed squared displacement, a source left unlinked costing ``search_range`` squared;
    an unlinked feature starts a track, an unlinked source is remembered for ``memory``
    frames (from when it was first lost). Where a group has more than MAX_GROUP_SOURCES
    sources (trackpy refuses those), every frame is relinked at the end by trackpy with its
    adaptive search range (:func:`_link_adaptive`).

    Why not trackpy's ``Linker`` itself: it makes a Python object per feature and solves
    every group in Python; on the dense benchmark (1000 features a frame) that took 10 ms a
    frame, a sixth of tracking's time, serially after the parallel locating. Here a frame's
    candidates, groups and one-to-one links are array operations (scipy's cKDTree and
    connected components, as trackpy's KD-tree query), and the rest of the groups are
    solved exactly as assignment problems (``scipy.optimize.linear_sum_assignment``).
    tests/test_tracking_link.py checks the tracks against ``trackpy.link``'s.

    Parameters
    ----------
    search_range : float
        Largest displacement between frames (px).
    memory : int
        Frames a particle may vanish for and keep its identity.
    """

    #: trackpy's ``Linker.MAX_NEIGHBORS``: candidate sources per feature.
    MAX_CANDIDATES = 10
    #: trackpy's ``Linker.MAX_SUB_NET_SIZE``: larger groups make it raise.
    MAX_GROUP_SOURCES = 30

    def __init__(self, search_range: float, memory: int):
        self.search_range = float(search_range)
        self.memory = int(memory)
        self._parts: list[pd.DataFrame] = []
        self._ids: list[np.ndarray] = []
        self._oversize = False   # a group of candidate links too large: relink at the end
        self._last = None
        self._step = 0
        self._next_id = 0
        self._pos = None                       # (M, d) the previous frame's features
        self._track = None                     # (M,) their track ids
        self._mem_pos = None                   # (L, d) remembered (lost) sources
        self._mem_track = np.zeros(0, np.int64)
        self._mem_since = np.zeros(0, np.int64)   # step at which each was first lost

    def add(self, features: pd.DataFrame) -> None:
        """The next frame's features (one frame: frame, x, y [, z] (px) ...); frames
        must come in increasing order; an empty table is skipped."""
        if not len(features):
            return
        t = int(features["frame"].iloc[0])
        if self._last is not None and t <= self._last:
            raise ValueError(f"frames must come in increasing order: {t} after {self._last}")
        self._parts.append(features)
        pos = ["z", "y", "x"] if "z" in features else ["y", "x"]
        self._add_coords(t, features[pos].to_numpy(np.float64))

    def _add_coords(self, t: int, coords: np.ndarray) -> None:
        """Link frame ``t``'s positions ``coords`` (N >= 1, d) px, z y x order (frames in
        increasing order, as :meth:`add` checks)."""
        self._last = t
        if self._oversize:
            return
        if self._pos is None:
            ids = self._new_ids(len(coords))
            self._mem_pos = np.zeros((0, coords.shape[1]))
        else:
            ids = self._next_level(coords)
            if ids is None:
                self._oversize, self._ids = True, []
                return
        self._pos, self._track = coords, ids
        self._ids.append(ids)

    def _new_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return ids

    def _next_level(self, coords: np.ndarray) -> np.ndarray | None:
        """Track ids (N,) of this frame's features ``coords`` (N, d); None where a group is
        too large to solve."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
        from scipy.spatial import cKDTree

        self._step += 1
        n_prev = len(self._pos)
        src = np.concatenate([self._pos, self._mem_pos])
        src_track = np.concatenate([self._track, self._mem_track])
        n_src, n_dst = len(src), len(coords)
        ids = np.full(n_dst, -1, np.int64)
        linked_src = np.zeros(n_src, bool)
        if n_src:
            dist, idx = cKDTree(src).query(coords, self.MAX_CANDIDATES,
                                           distance_upper_bound=self.search_range + 1e-7)
            ok = np.isfinite(dist)
            d_of, s_of, dd = np.nonzero(ok)[0], idx[ok], dist[ok]
        else:
            d_of = s_of = np.zeros(0, np.int64)
            dd = np.zeros(0)
        if len(dd):
            # groups: connected components of the bipartite candidate graph (sources
            # first, then features)
            graph = coo_matrix((np.ones(len(dd)), (s_of, n_src + d_of)),
                               shape=(n_src + n_dst, n_src + n_dst))
            _, comp = connected_components(graph, directed=False)
            n_s = np.bincount(comp[:n_src][np.isin(np.arange(n_src), s_of)],
                              minlength=comp.max() + 1)
            n_d = np.bincount(comp[n_src + np.unique(d_of)], minlength=comp.max() + 1)
            if n_s.max() > self.MAX_GROUP_SOURCES:
                return None
            g = comp[n_src + d_of]                   # the group of each candidate link
            simple = (n_s[g] == 1) & (n_d[g] == 1)   # one source, one feature: linked
            ids[d_of[simple]] = src_track[s_of[simple]]
            linked_src[s_of[simple]] = True
            hard = ~simple
            if hard.any():
                self._solve_groups(g[hard], d_of[hard], s_of[hard], dd[hard], src_track,
                                   ids, linked_src)
        born = ids < 0
        ids[born] = self._new_ids(int(born.sum()))
        # memory: sources left unlinked (no candidate, or the null link) are remembered
        # for `memory` frames from when they were first lost; a remembered one that links
        # is forgotten
        keep_mem = ~linked_src[n_prev:] & (self._mem_since + self.memory > self._step)
        lost_now = ~linked_src[:n_prev] if self.memory > 0 else np.zeros(n_prev, bool)
        self._mem_pos = np.concatenate([self._mem_pos[keep_mem], self._pos[lost_now]])
        self._mem_track = np.concatenate([self._mem_track[keep_mem], self._track[lost_now]])
        self._mem_since = np.concatenate([self._mem_since[keep_mem],
                                          np.full(int(lost_now.sum()), self._step, np.int64)])
        return ids

    def _solve_groups(self, g, d_of, s_of, dd, src_track, ids, linked_src) -> None:
        """Least-cost links within each group that is not one source to one feature:
        ``g``, ``d_of``, ``s_of``, ``dd`` (L,) the candidate links' group, feature, source
        and distance (px); fills ``ids`` and ``linked_src``."""
        from scipy.optimize import linear_sum_assignment

        null = self.search_range ** 2
        order = np.argsort(g, kind="stable")
        g, d_of, s_of, dd = g[order], d_of[order], s_of[order], dd[order]
        cuts = np.flatnonzero(np.diff(g)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(g)]):
            srcs, s_local = np.unique(s_of[lo:hi], return_inverse=True)
            dsts, d_local = np.unique(d_of[lo:hi], return_inverse=True)
            ns, nd = len(srcs), len(dsts)
            # columns: the features, then one "unlinked" column per source
            big = 4.0 * null * (ns + 1) + 1.0
            cost = np.full((ns, nd + ns), big)
            cost[s_local, d_local] = dd[lo:hi] ** 2
            cost[np.arange(ns), nd + np.arange(ns)] = null
            rows, cols = linear_sum_assignment(cost)
            real = cols < nd
            ids[dsts[cols[real]]] = src_track[srcs[rows[real]]]
            linked_src[srcs[rows[real]]] = True

    @property
    def empty(self) -> bool:
        """No features were added."""
        return not self._parts

    def tracks(self) -> pd.DataFrame:
        """Every feature added, with its ``particle`` (ids by first appearance); rows in
        the order added."""
        if not self._parts:
            return pd.DataFrame(columns=["frame", "particle"])
        return self._with_ids(pd.concat(self._parts, ignore_index=True))

    def _with_ids(self, features: pd.DataFrame) -> pd.DataFrame:
        """``features`` (the rows linked so far, in order) with their ``particle``."""
        if not len(features):
            return pd.DataFrame(columns=["frame", "particle"])
        if self._oversize:
            ids = _link_adaptive(features, self.search_range, self.memory)
        else:
            ids = np.concatenate(self._ids)
        out = features.copy()
        out["particle"] = first_appearance_ids(ids)
        return out


def _link_adaptive(features: pd.DataFrame, search_range: float, memory: int) -> np.ndarray:
    """Track ids (N,) of ``features`` (ordered by frame) by trackpy with the search range
    shrunk where a group of candidate links is too large to solve (it costs a fifth more
    time everywhere, so it runs only after plain linking met such a group)."""
    import trackpy as tp

    pos = ["z", "y", "x"] if "z" in features else ["y", "x"]
    slim = features[["frame"] + pos]
    try:
        with _trackpy_quiet(), gc_frozen():
            linked = tp.link(slim, search_range, memory=memory, pos_columns=pos,
                             adaptive_stop=0.5, adaptive_step=0.9, link_strategy="auto")
    except tp.SubnetOversizeException:
        raise TrackingError(
            f"linking with search_range={search_range:.3g} px met an unsolvably large group of "
            "candidate links; pass a smaller --search-range") from None
    return linked["particle"].reindex(features.index).to_numpy()


@contextlib.contextmanager
def _trackpy_quiet():
    """trackpy's per-frame log lines held back (warnings still pass)."""
    log = logging.getLogger("trackpy")
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def first_appearance_ids(ids: np.ndarray) -> np.ndarray:
    """Relabel integer ids (N,) as 0, 1, 2, ... in order of their first occurrence."""
    ids = np.asarray(ids)
    if not len(ids):
        return ids.astype(np.int64)
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    return rank[inverse.ravel()]


def estimate_drift(tracks: pd.DataFrame) -> pd.DataFrame:
    """Cumulative collective drift per frame (px), indexed by frame: columns y, x [, z]."""
    import trackpy as tp

    pos = ["z", "y", "x"] if "z" in tracks else ["y", "x"]
    return tp.compute_drift(tracks, pos_columns=pos)


def subtract_drift(tracks: pd.DataFrame, drift: pd.DataFrame) -> pd.DataFrame:
    """New table with the drift removed from x, y [, z]; image positions kept as x_image, y_image."""
    out = tracks.copy()
    d = drift.reindex(out["frame"].to_numpy()).fillna(0.0)
    for c in drift.columns:
        out[f"{c}_image"] = out[c]
        out[c] = out[c].to_numpy() - d[c].to_numpy()
    return out


def add_velocities(tracks: pd.DataFrame) -> pd.DataFrame:
    """New table with vx, vy [, vz] in px/frame from finite differences along each track.

    Central differences where a particle is present in the frames before and after,
    one-sided differences at track ends and gaps, NaN for single-frame tracks.
    """
    pos = [c for c in ("x", "y", "z") if c in tracks]
    t = tracks.sort_values(["particle", "frame"], kind="stable")
    same = t["particle"].to_numpy()
    fr = t["frame"].to_numpy()
    has_next = np.r_[(same[1:] == same[:-1]) & (fr[1:] - fr[:-1] == 1), False]
    has_prev = np.r_[False, has_next[:-1]]
    out = t.copy()
    for c in pos:
        v = t[c].to_numpy()
        fwd = np.r_[v[1:] - v[:-1], np.nan]
        bwd = np.r_[np.nan, v[1:] - v[:-1]]
        vel = np.where(has_next & has_prev, 0.5 * (fwd + bwd),
                       np.where(has_next, fwd, np.where(has_prev, bwd, np.nan)))
        out[f"v{c}"] = vel
    return out.sort_values(["frame", "particle"], kind="stable").reset_index(drop=True)


def filter_stubs(tracks: pd.DataFrame, min_length: int) -> pd.DataFrame:
    """Drop trajectories present in fewer than ``min_length`` frames."""
    if min_length <= 1:
        return tracks
    counts = tracks.groupby("particle")["frame"].transform("size")
    return tracks[counts >= min_length].reset_index(drop=True)
