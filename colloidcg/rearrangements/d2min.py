"""Non-affine displacement D2min (Falk & Langer, Phys. Rev. E 57, 7192, 1998).

For particle i between frames t and t + lag, with neighbours j closer than ``cutoff`` at
frame t and present at both frames, dr0_j = r_j(t) - r_i(t), dr1_j = r_j(t+lag) - r_i(t+lag):

    D2min_i = min_J sum_j |dr1_j - J dr0_j|^2,  J = X Y^-1,
    X = sum_j dr1_j dr0_j^T,  Y = sum_j dr0_j dr0_j^T          (Falk & Langer eqs. 2.11-2.14)

The sums are accumulated for every particle of every frame at once with ``np.bincount``
over the neighbour pairs; J is solved for all particles in one batched ``np.linalg.solve``;
D2min is then evaluated as the sum of squared residuals |dr1 - J dr0|^2 directly (rather
than the closed form sum |dr1|^2 - tr(X Y^-1 X^T), which loses digits to cancellation), so
affine motion gives zero to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ..structure.frames import Frames, prepare
from ..structure.neighbours import PairChunk, map_chunks

#: Y is treated as singular (neighbours on a line or plane) when
#: det(Y) <= SINGULAR_RTOL * (trace(Y) / d)^d.
SINGULAR_RTOL = 1e-10


def check_lag(lag, fr: Frames) -> int:
    """Validate ``lag`` (frames) against the data; returns it as int."""
    try:
        ok = float(lag) == int(lag) and int(lag) > 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ParameterError(f"lag: expected a positive whole number of frames, got {lag!r}")
    lag = int(lag)
    span = int(fr.frames[-1] - fr.frames[0]) + 1
    if span < lag + 1:
        raise ParameterError(f"lag={lag}: the tracks span {span} frame(s) "
                             f"({fr.frames[0]}..{fr.frames[-1]}); need at least lag + 1 = {lag + 1}")
    return lag


def check_cutoff(cutoff) -> float:
    """Validate ``cutoff`` (px); returns it as float."""
    try:
        c = float(cutoff)
    except (TypeError, ValueError):
        c = float("nan")
    if not (np.isfinite(c) and c > 0):
        raise ParameterError(f"cutoff: expected a positive distance in px, got {cutoff!r}")
    return c


class D2minAccumulator:
    """D2min for all rows of ``fr``, fed with neighbour-pair chunks (within >= cutoff).

    After all chunks have been added, the arrays ``d2min`` (px^2), ``n_neighbours`` (the
    neighbours that entered the sum) and ``n_candidates`` (neighbours within the cutoff
    at frame t, present later or not) hold one value per sorted row.
    """

    def __init__(self, fr: Frames, lag: int, cutoff: float):
        self.fr = fr
        self.lag = lag
        self.cutoff = cutoff
        self.next = fr.shifted_rows(lag)
        self.d2min = np.full(fr.n_rows, np.nan)
        self.n_neighbours = np.zeros(fr.n_rows, np.int64)
        self.n_candidates = np.zeros(fr.n_rows, np.int64)

    def add(self, chunk: PairChunk) -> None:
        ch = chunk.within(self.cutoff)
        lo, m = chunk.lo, chunk.hi - chunk.lo
        d = self.fr.dim
        pos = self.fr.pos
        il, jl = ch.i - lo, ch.j - lo
        self.n_candidates[lo:chunk.hi] += np.bincount(il, minlength=m) + np.bincount(jl, minlength=m)
        ni, nj = self.next[ch.i], self.next[ch.j]
        ok = (ni >= 0) & (nj >= 0)
        i, j, il, jl, ni, nj = ch.i[ok], ch.j[ok], il[ok], jl[ok], ni[ok], nj[ok]
        dr0 = pos[j] - pos[i]
        dr1 = pos[nj] - pos[ni]
        # The pair enters the sums of both i and j; for j both vectors flip sign, so the
        # outer products dr1 dr0^T and dr0 dr0^T are the same for both ends.
        n = np.bincount(il, minlength=m) + np.bincount(jl, minlength=m)
        X = np.empty((m, d, d))
        Y = np.empty((m, d, d))
        for a in range(d):
            for b in range(d):
                w = dr1[:, a] * dr0[:, b]
                X[:, a, b] = np.bincount(il, w, m) + np.bincount(jl, w, m)
                if b >= a:
                    w = dr0[:, a] * dr0[:, b]
                    Y[:, a, b] = Y[:, b, a] = np.bincount(il, w, m) + np.bincount(jl, w, m)
        tr = np.trace(Y, axis1=1, axis2=2) / d
        good = n >= d + 1
        good[good] = np.linalg.det(Y[good]) > SINGULAR_RTOL * tr[good] ** d
        # J^T = Y^-1 X^T (Y symmetric); rows without a J stay NaN
        JT = np.full((m, d, d), np.nan)
        if good.any():
            JT[good] = np.linalg.solve(Y[good], np.swapaxes(X[good], 1, 2))
        # residuals r = dr1 - J dr0, row-vector form dr1 - dr0 @ J^T; for j: -(dr1 - J_j dr0)
        ri = dr1 - np.einsum("pk,pkl->pl", dr0, JT[il])
        rj = dr1 - np.einsum("pk,pkl->pl", dr0, JT[jl])
        s = np.bincount(il, np.square(ri).sum(1), m) + np.bincount(jl, np.square(rj).sum(1), m)
        self.d2min[lo:chunk.hi] = np.where(good, s, np.nan)
        self.n_neighbours[lo:chunk.hi] = n

    def check_enough_neighbours(self) -> None:
        """Raise if the cutoff leaves every particle with fewer than dim + 1 neighbours."""
        need = self.fr.dim + 1
        if self.n_candidates.max(initial=0) < need:
            raise ParameterError(
                f"cutoff={self.cutoff:g} px: no particle has the {need} neighbours within the cutoff "
                f"that D2min needs (mean spacing {self.fr.spacing:.3g} px; the first minimum of g(r) "
                f"is usually 1.3-1.5 spacings)")


@dataclass(frozen=True)
class D2minColumns:
    """D2min results in sorted-row order (see :class:`colloidcg.structure.Frames`)."""

    d2min: np.ndarray
    d2min_norm: np.ndarray
    n_neighbours: np.ndarray
    edge: np.ndarray


def d2min_columns(fr: Frames, lag: int, cutoff: float, workers: int | None = None) -> D2minColumns:
    """Compute D2min on prepared frames (``workers`` threads, default min(2, CPUs))."""
    acc = D2minAccumulator(fr, lag, cutoff)
    map_chunks(acc.add, fr, cutoff, workers)
    acc.check_enough_neighbours()
    return finish(acc)


def finish(acc: D2minAccumulator) -> D2minColumns:
    fr = acc.fr
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = acc.d2min / (acc.n_neighbours * fr.spacing ** 2)
    return D2minColumns(acc.d2min, norm, acc.n_neighbours, fr.edge_mask(acc.cutoff))


def d2min(tracks: pd.DataFrame, lag: int, cutoff: float, fov=None,
          workers: int | None = None) -> pd.DataFrame:
    """Falk-Langer D2min of every particle in every frame.

    Parameters
    ----------
    tracks : DataFrame
        Trackpy-schema tracks: frame, particle, x, y[, z] in px (z makes it 3D).
    lag : int
        Frames between the two configurations compared (t and t + lag).
    cutoff : float
        Neighbour distance in px, measured at frame t.
    fov : (d, 2) array-like, optional
        Field of view ((xlo, xhi), (ylo, yhi)[, (zlo, zhi)]) in px; default inferred from
        the data (see :func:`colloidcg.structure.prepare`).
    workers : int, optional
        Threads (default min(2, CPU count)); frames are split among them.

    Returns
    -------
    DataFrame
        A copy of ``tracks`` (same rows, order and index) with columns

        - ``d2min`` (px^2): D2min over [t, t + lag], stored at frame t; NaN when the
          particle is absent at t + lag, has fewer than d + 1 neighbours present at both
          frames, or its neighbours lie on a line (plane in 3D);
        - ``d2min_norm``: d2min / (n_neighbours * a^2), a = mean spacing;
        - ``n_neighbours``: neighbours that entered the sum;
        - ``edge``: the disc (sphere) of radius ``cutoff`` around the particle at frame t
          leaves the field of view, so some of its neighbours may be unseen.

    Raises
    ------
    ColloidcgError / ParameterError
        Bad columns, NaN positions, lag or cutoff not positive, fewer than lag + 1
        frames, or a cutoff so small that no particle has d + 1 neighbours.
    """
    fr = prepare(tracks, fov)
    lag = check_lag(lag, fr)
    cutoff = check_cutoff(cutoff)
    cols = d2min_columns(fr, lag, cutoff, workers)
    out = tracks.copy()
    out["d2min"] = fr.unsort(cols.d2min)
    out["d2min_norm"] = fr.unsort(cols.d2min_norm)
    out["n_neighbours"] = fr.unsort(cols.n_neighbours)
    out["edge"] = fr.unsort(cols.edge)
    return out
