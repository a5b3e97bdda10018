"""Grouping rearranging particles into events.

Two rearranging particle-frames belong to the same event when they are closer than the
cutoff in the same frame, or when one is at frame t, the other at the next frame of the
data, and their positions (each at its own frame) are closer than the cutoff (the same
particle in consecutive frames is always linked). Events are the connected components
of that graph (``scipy.sparse.csgraph.connected_components``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..neighbours import Tree

EVENT_COLUMNS = ["event_id", "frame_start", "frame_end", "x", "y", "n_particles", "peak_d2min",
                 "peak_frame", "n_rows"]


def label_events(pos: np.ndarray, fidx: np.ndarray, rearranging: np.ndarray,
                 cutoff: float) -> np.ndarray:
    """Event id of every row (-1 where not rearranging).

    Parameters
    ----------
    pos : (R, d) float64 px
    fidx : (R,) int  index of each row's frame among the distinct frames (consecutive
        frames of the data differ by 1)
    rearranging : (R,) bool
    cutoff : float px

    Returns
    -------
    (R,) int64 event ids 0, 1, ... numbered in order of first appearance in the row order.
    """
    rows = np.flatnonzero(rearranging)
    out = np.full(len(pos), -1, np.int64)
    if len(rows) == 0:
        return out
    # Stack frames along an extra axis, 2 * cutoff apart: distances across frames then
    # exceed the cutoff, so one KD tree finds same-frame pairs, and a copy shifted by one
    # frame finds pairs in consecutive frames.
    L = 2.0 * cutoff
    p = pos[rows]
    z = fidx[rows].astype(float) * L
    here = Tree(np.column_stack([p, z]))
    same = here.pairs(cutoff)
    prev = Tree(np.column_stack([p, z - L]))  # row at frame k+1 placed at frame k
    ni, nj, _ = here.distances_to(prev, cutoff)
    a = np.concatenate([same[:, 0], ni])
    b = np.concatenate([same[:, 1], nj])
    n = len(rows)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, lab = connected_components(graph, directed=False)
    _, first = np.unique(lab, return_index=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))  # component -> order of first appearance
    out[rows] = rank[lab]
    return out


def event_table(frame: np.ndarray, particle: np.ndarray, pos: np.ndarray, d2min: np.ndarray,
                event_id: np.ndarray) -> pd.DataFrame:
    """One row per event from per-row event ids.

    Columns: event_id, frame_start, frame_end (first and last frame t of the member
    rows; each row's D2min covers [t, t + lag]), x, y[, z] (mean position of the member
    rows, px), n_particles (distinct particles), peak_d2min (px^2), peak_frame (frame of
    the peak), n_rows (member particle-frames).
    """
    m = event_id >= 0
    axes = ["x", "y", "z"][: pos.shape[1]]
    cols = EVENT_COLUMNS[:5] + axes[2:] + EVENT_COLUMNS[5:]
    if not m.any():
        df = pd.DataFrame({c: pd.Series(dtype=float if c in ("x", "y", "z", "peak_d2min") else np.int64)
                           for c in cols})
        return df
    e, f, pid, p, d = event_id[m], frame[m], particle[m], pos[m], d2min[m]
    n_ev = int(e.max()) + 1
    cnt = np.bincount(e, minlength=n_ev)
    fs = np.full(n_ev, np.iinfo(np.int64).max)
    fe = np.full(n_ev, np.iinfo(np.int64).min)
    np.minimum.at(fs, e, f)
    np.maximum.at(fe, e, f)
    # peak: sort by (event, d2min) and take the last of each event
    o = np.lexsort((d, e))
    last = np.flatnonzero(np.r_[e[o][1:] != e[o][:-1], True])
    peak_rows = o[last]
    # distinct particles per event
    ep = np.unique(np.column_stack([e, pid]), axis=0)
    npart = np.bincount(ep[:, 0], minlength=n_ev)
    data = {"event_id": np.arange(n_ev), "frame_start": fs, "frame_end": fe}
    for k, ax in enumerate(axes):
        data[ax] = np.bincount(e, p[:, k], n_ev) / cnt
    data.update({"n_particles": npart, "peak_d2min": d[peak_rows], "peak_frame": f[peak_rows],
                 "n_rows": cnt})
    return pd.DataFrame(data)[cols]


def find_events(table: pd.DataFrame, cutoff: float) -> pd.DataFrame:
    """Events table from a rearrangements table (needs frame, particle, x, y[, z], d2min,
    rearranging). See :func:`label_events` and :func:`event_table`."""
    from ..structure.frames import prepare

    fr = prepare(table)
    rr = table["rearranging"].to_numpy(bool)[fr.order]
    d = table["d2min"].to_numpy(float)[fr.order]
    eid = label_events(fr.pos, fr.frame_index(), rr, cutoff)
    return event_table(fr.frame, fr.particle, fr.pos, d, eid)
