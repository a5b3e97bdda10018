"""Neighbour pairs within a radius, frame by frame, in chunks of frames.

One :class:`scipy.spatial.cKDTree` per frame finds all unordered pairs (i < j) at most
``r`` apart; pairs never join particles of different frames. Pairs are handed out in
chunks of whole frames so that memory stays bounded however long the video is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy.spatial import cKDTree

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


def frame_pairs(fr: Frames, r: float, chunk_rows: int = 200_000) -> Iterator[PairChunk]:
    """Yield :class:`PairChunk` objects covering every frame of ``fr`` once, in order.

    Parameters
    ----------
    fr : Frames
    r : float
        Pair distance cutoff in px (pairs with distance <= r, as cKDTree.query_pairs).
    chunk_rows : int
        Approximate number of rows per chunk (a chunk always holds whole frames).
    """
    starts = fr.starts
    n_frames = len(fr.frames)
    f = 0
    while f < n_frames:
        g = int(np.searchsorted(starts, starts[f] + chunk_rows, side="right")) - 1
        g = min(max(g, f + 1), n_frames)
        ii, jj, dd = [], [], []
        for k in range(f, g):
            s, e = int(starts[k]), int(starts[k + 1])
            if e - s < 2:
                continue
            pts = fr.pos[s:e]
            p = cKDTree(pts).query_pairs(r, output_type="ndarray")
            if len(p):
                dd.append(np.sqrt(np.square(pts[p[:, 1]] - pts[p[:, 0]]).sum(axis=1)))
                p += s
                ii.append(p[:, 0])
                jj.append(p[:, 1])
        if ii:
            i, j, dist = np.concatenate(ii), np.concatenate(jj), np.concatenate(dd)
        else:
            i = j = np.empty(0, np.int64)
            dist = np.empty(0)
        yield PairChunk(int(starts[f]), int(starts[g]), i, j, dist)
        f = g
