"""Neighbour pairs within a radius, frame by frame, in chunks of frames.

One k-d tree per frame (:func:`colloidcg.neighbours.pairs`) finds all unordered pairs
(i < j) at most ``r`` apart; pairs never join particles of different frames. Pairs are handed out in
chunks of whole frames so that memory stays bounded however long the video is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..neighbours import pairs as close_pairs
from .frames import Frames


@dataclass(frozen=True)
class PairChunk:
    """Unordered neighbour pairs of the sorted rows ``lo:hi`` (whole frames).

    ``i``, ``j`` (P,) int64 are sorted-row indices with i < j, both in ``lo:hi`` and in
    the same frame; ``dist`` (P,) float64 is |r_j - r_i| <= r in px.
    """

    lo: int
    hi: int
    i: np.ndarray
    j: np.ndarray
    dist: np.ndarray

    def within(self, r: float) -> "PairChunk":
        """The pairs at most ``r`` apart (self when that is all of them)."""
        if len(self.dist) == 0 or self.dist.max() <= r:
            return self
        keep = self.dist <= r
        return PairChunk(self.lo, self.hi, self.i[keep], self.j[keep], self.dist[keep])


def chunk_bounds(fr: Frames, chunk_rows: int = 50_000) -> list[tuple[int, int]]:
    """Split the frames into consecutive ranges [f0, f1) of about ``chunk_rows`` rows."""
    starts = fr.starts
    n_frames = len(fr.frames)
    out = []
    f = 0
    while f < n_frames:
        g = int(np.searchsorted(starts, starts[f] + chunk_rows, side="right")) - 1
        g = min(max(g, f + 1), n_frames)
        out.append((f, g))
        f = g
    return out


def pairs_in_frames(fr: Frames, f0: int, f1: int, r: float) -> PairChunk:
    """All pairs at most ``r`` apart within each of the frames with index f0 .. f1 - 1."""
    starts = fr.starts
    ii, jj, dd = [], [], []
    for k in range(f0, f1):
        s, e = int(starts[k]), int(starts[k + 1])
        if e - s < 2:
            continue
        pts = fr.pos[s:e]
        p, d = close_pairs(pts, r, sort=False, distances=True)
        if len(p):
            dd.append(d)
            p += s
            ii.append(p[:, 0])
            jj.append(p[:, 1])
    if ii:
        i, j, dist = np.concatenate(ii), np.concatenate(jj), np.concatenate(dd)
    else:
        i = j = np.empty(0, np.int64)
        dist = np.empty(0)
    return PairChunk(int(starts[f0]), int(starts[f1]), i.astype(np.int64, copy=False),
                     j.astype(np.int64, copy=False), dist)


def frame_pairs(fr: Frames, r: float, chunk_rows: int = 50_000) -> Iterator[PairChunk]:
    """Yield :class:`PairChunk` objects covering every frame of ``fr`` once, in order.

    Parameters
    ----------
    fr : Frames
    r : float
        Pair distance cutoff in px (pairs with distance <= r).
    chunk_rows : int
        Approximate number of rows per chunk (a chunk always holds whole frames).
    """
    for f0, f1 in chunk_bounds(fr, chunk_rows):
        yield pairs_in_frames(fr, f0, f1, r)


def map_chunks(fn, fr: Frames, r: float, workers: int | None = None, chunk_rows: int = 50_000) -> None:
    """Call ``fn(chunk)`` on the pair chunks of all frames, in ``workers`` threads.

    ``fn`` must only write rows ``chunk.lo:chunk.hi`` of shared arrays, so that chunks
    can run concurrently (the KD trees, Delaunay triangulations, numba kernels and large
    numpy operations release the GIL). ``workers`` defaults to min(2, CPU count); 1 runs
    in this thread.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    bounds = chunk_bounds(fr, chunk_rows)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    job = (lambda b: fn(pairs_in_frames(fr, b[0], b[1], r)))
    if workers == 1 or len(bounds) == 1:
        for b in bounds:
            job(b)
        return
    with ThreadPoolExecutor(workers) as ex:
        for _ in ex.map(job, bounds):
            pass
