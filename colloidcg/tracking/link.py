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

    trackpy links with one Python object per feature, and every full collection that
    the new objects trigger walks the whole heap (a quarter of a million objects once
    trackpy and pandas are loaded): on the dense benchmark this was half of the linking
    time. No-op when the collector is disabled or something is frozen already (nested
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
    cuts = np.flatnonzero(np.diff(frame)) + 1
    with gc_frozen():
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(frame)]):
            linker.add(features.iloc[lo:hi])
        return linker.tracks()


class FrameLinker:
    """trackpy's linking (Crocker and Grier's, ``trackpy.linking.Linker``) fed one frame at
    a time, in frame order, so that it can run while later frames are still being located;
    :meth:`tracks` gives what :func:`link` gives for all the frames at once.

    Parameters
    ----------
    search_range : float
        Largest displacement between frames (px).
    memory : int
        Frames a particle may vanish for and keep its identity.
    """

    def __init__(self, search_range: float, memory: int):
        self.search_range = float(search_range)
        self.memory = int(memory)
        self._linker = None
        self._parts: list[pd.DataFrame] = []
        self._ids: list[np.ndarray] = []
        self._oversize = False   # a group of candidate links too large: relink at the end
        self._last = None

    def add(self, features: pd.DataFrame) -> None:
        """The next frame's features (one frame: frame, x, y [, z] (px) ...); frames
        must come in increasing order; an empty table is skipped."""
        if not len(features):
            return
        t = int(features["frame"].iloc[0])
        if self._last is not None and t <= self._last:
            raise ValueError(f"frames must come in increasing order: {t} after {self._last}")
        self._last = t
        self._parts.append(features)
        if self._oversize:
            return
        from trackpy.linking.linking import Linker, SubnetOversizeException

        pos = ["z", "y", "x"] if "z" in features else ["y", "x"]
        coords = features[pos].to_numpy(np.float64)
        try:
            with _trackpy_quiet():
                if self._linker is None:
                    self._linker = Linker(self.search_range, memory=self.memory)
                    self._linker.init_level(coords, t)
                else:
                    self._linker.next_level(coords, t)
        except SubnetOversizeException:
            self._oversize, self._linker, self._ids = True, None, []
            return
        self._ids.append(np.asarray(self._linker.particle_ids, dtype=np.int64))

    @property
    def empty(self) -> bool:
        """No features were added."""
        return not self._parts

    def tracks(self) -> pd.DataFrame:
        """Every feature added, with its ``particle`` (ids by first appearance); rows in
        the order added."""
        if not self._parts:
            return pd.DataFrame(columns=["frame", "particle"])
        features = pd.concat(self._parts, ignore_index=True)
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
        with _trackpy_quiet():
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
