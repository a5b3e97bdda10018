"""Tracks as sorted arrays: the common input of the structure and rearrangement stages.

:func:`prepare` validates a trackpy-schema table once, before any work, and returns a
:class:`Frames` object holding the rows sorted by (frame, particle), the field of view
and the mean interparticle spacing. Every per-row result is computed in that sorted
order and put back into the caller's row order with :meth:`Frames.unsort`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import ColloidcgError, ParameterError

REQUIRED = ("frame", "particle", "x", "y")


@dataclass(frozen=True)
class Frames:
    """Particle positions sorted by (frame, particle).

    Attributes
    ----------
    order : (R,) int64
        Row ``k`` of the sorted arrays is row ``order[k]`` of the input table.
    frame, particle : (R,) int64
        Frame number and particle id of each sorted row.
    pos : (R, d) float64
        Positions in px (columns x, y[, z]).
    frames : (F,) int64
        The distinct frame numbers, ascending.
    starts : (F + 1,) int64
        Rows ``starts[f]:starts[f + 1]`` belong to ``frames[f]``.
    fov : (d, 2) float64
        Field of view, ``fov[k] = (lo, hi)`` along axis k in px.
    spacing : float
        Mean interparticle spacing ``a = (V / <N>)**(1/d)`` in px: V is the field-of-view
        area (volume) and <N> the mean number of particles per frame.
    fov_inferred : bool
        True when ``fov`` was inferred from the data (see :func:`prepare`).
    code : (R,) int64
        Particle ids renumbered 0..P-1 (same order as the ids).
    """

    order: np.ndarray
    frame: np.ndarray
    particle: np.ndarray
    pos: np.ndarray
    frames: np.ndarray
    starts: np.ndarray
    fov: np.ndarray
    spacing: float
    fov_inferred: bool
    code: np.ndarray

    @property
    def dim(self) -> int:
        return self.pos.shape[1]

    @property
    def n_rows(self) -> int:
        return self.pos.shape[0]

    @property
    def density(self) -> float:
        """Mean number density <N> / V in px^-d."""
        return float(np.diff(self.starts).mean() / np.prod(np.diff(self.fov, axis=1)))

    def unsort(self, values: np.ndarray) -> np.ndarray:
        """Return per-row ``values`` (sorted order, first axis) in the input's row order."""
        out = np.empty_like(values)
        out[self.order] = values
        return out

    def shifted_rows(self, lag: int, rows: np.ndarray | None = None) -> np.ndarray:
        """The sorted row of the same particle ``lag`` frames later, or -1.

        For all rows (R,), or for the sorted ``rows`` given.
        """
        n_ids = int(self.code.max()) + 1
        f0 = self.frame - self.frames[0]
        keys = f0 * n_ids + self.code  # ascending, because rows are sorted by (frame, particle)
        sel = slice(None) if rows is None else rows
        target = (f0[sel] + lag) * n_ids + self.code[sel]
        idx = np.searchsorted(keys, target)
        idx = np.minimum(idx, len(keys) - 1)
        return np.where(keys[idx] == target, idx, -1).astype(np.int64)

    def edge_mask(self, radius: float) -> np.ndarray:
        """(R,) bool: the disc (sphere) of ``radius`` px around the particle leaves the field of view."""
        lo, hi = self.fov[:, 0], self.fov[:, 1]
        return ((self.pos - radius < lo) | (self.pos + radius > hi)).any(axis=1)

    def frame_index(self) -> np.ndarray:
        """(R,) int64: index into :attr:`frames` of each row's frame."""
        return np.repeat(np.arange(len(self.frames)), np.diff(self.starts))


def _integer_column(df: pd.DataFrame, col: str, what: str) -> np.ndarray:
    vals = df[col].to_numpy()
    if not np.issubdtype(vals.dtype, np.integer):
        try:
            f = vals.astype(float)
        except (TypeError, ValueError):
            raise ColloidcgError(f"{what}: column '{col}' must hold integers, got {df[col].dtype}") from None
        if not np.isfinite(f).all() or (f != np.round(f)).any():
            raise ColloidcgError(f"{what}: column '{col}' must hold whole numbers (found NaN or fractions)")
        vals = f
    return vals.astype(np.int64)


def image_axes(tracks: pd.DataFrame, axes=("x", "y")) -> list[str]:
    """The position columns in image coordinates: ``x_image`` etc. where present."""
    return [f"{a}_image" if f"{a}_image" in tracks.columns else a for a in axes]


def fov_from_shape(shape) -> np.ndarray:
    """Field of view of an image of ``shape`` = (rows, cols) or (slices, rows, cols).

    Pixel centres sit at integer coordinates (trackpy's convention), so an image of width
    W spans x in [-0.5, W - 0.5]. Returns a (d, 2) array ordered (x, y[, z]).
    """
    shape = tuple(int(s) for s in shape)
    return np.array([(-0.5, n - 0.5) for n in reversed(shape)], dtype=float)


def prepare(tracks: pd.DataFrame, fov=None, what: str = "tracks") -> Frames:
    """Validate ``tracks`` and sort it into a :class:`Frames`.

    Parameters
    ----------
    tracks : DataFrame
        Trackpy-schema table with at least frame, particle, x, y (px); a ``z`` column
        makes the data 3D. When tracking subtracted the stage drift, the image positions
        ``x_image``, ``y_image`` are used instead of x, y: the analyses here are
        unchanged by a translation of a whole frame, and the field of view is in image
        coordinates.
    fov : array-like (d, 2), optional
        Field of view ``((xlo, xhi), (ylo, yhi)[, (zlo, zhi)])`` in px. When omitted it is
        inferred: the extent of all particle centres, padded by half the mean spacing on
        every side (a particle's centre is about a/2 from the edge of the region it
        samples), with the spacing ``a`` solved self-consistently.
    what : str
        Name used in error messages (a file name, for instance).

    Raises
    ------
    ColloidcgError
        Missing columns, an empty table, NaN positions, non-integer frame/particle, one
        particle twice in a frame, or particles outside a given ``fov``.
    """
    if not isinstance(tracks, pd.DataFrame):
        raise ColloidcgError(f"{what}: expected a pandas DataFrame of tracks, got {type(tracks).__name__}")
    missing = [c for c in REQUIRED if c not in tracks.columns]
    if missing:
        raise ColloidcgError(f"{what}: missing column(s) {', '.join(missing)}; expected at least "
                             f"{', '.join(REQUIRED)}")
    if len(tracks) == 0:
        raise ColloidcgError(f"{what}: the table has no rows")
    axes = ["x", "y"] + (["z"] if "z" in tracks.columns else [])
    axes = image_axes(tracks, axes)
    try:
        pos = tracks[axes].to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise ColloidcgError(f"{what}: columns {', '.join(axes)} must be numeric") from None
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        raise ColloidcgError(f"{what}: {int(bad.sum())} row(s) have NaN or infinite positions in "
                             f"{'/'.join(axes)}; drop or interpolate them first")
    frame = _integer_column(tracks, "frame", what)
    particle = _integer_column(tracks, "particle", what)

    order = np.lexsort((particle, frame))
    frame, particle, pos = frame[order], particle[order], pos[order]
    dup = (np.diff(frame) == 0) & (np.diff(particle) == 0)
    if dup.any():
        k = int(np.flatnonzero(dup)[0])
        raise ColloidcgError(f"{what}: particle {particle[k]} appears more than once in frame {frame[k]}")
    frames, starts = np.unique(frame, return_index=True)
    starts = np.append(starts, len(frame)).astype(np.int64)
    n_mean = len(frame) / len(frames)
    d = pos.shape[1]

    if fov is None:
        lo, hi = pos.min(axis=0), pos.max(axis=0)
        ext = hi - lo
        if (ext <= 0).any():
            raise ColloidcgError(f"{what}: all particles lie on a line or a point; cannot infer the "
                                 f"field of view (pass fov)")
        a = float(np.prod(ext) / n_mean) ** (1.0 / d)
        for _ in range(50):  # fixed point of a = (prod(ext + a) / <N>)^(1/d); converges fast
            a_new = float(np.prod(ext + a) / n_mean) ** (1.0 / d)
            if abs(a_new - a) <= 1e-12 * a_new:
                break
            a = a_new
        a = a_new
        fov_arr = np.stack([lo - a / 2, hi + a / 2], axis=1)
        inferred = True
    else:
        try:
            fov_arr = np.asarray(fov, dtype=float).reshape(d, 2)
        except (TypeError, ValueError):
            raise ParameterError(f"fov: expected {d} (lo, hi) pairs in px, got {fov!r}") from None
        if not np.isfinite(fov_arr).all() or (fov_arr[:, 1] <= fov_arr[:, 0]).any():
            raise ParameterError(f"fov: each axis needs finite lo < hi, got {fov_arr.tolist()}")
        outside = ((pos < fov_arr[:, 0]) | (pos > fov_arr[:, 1])).any(axis=1)
        if outside.any():
            raise ParameterError(f"fov: {int(outside.sum())} particle position(s) lie outside "
                                 f"{fov_arr.tolist()}")
        a = float(np.prod(np.diff(fov_arr, axis=1)) / n_mean) ** (1.0 / d)
        inferred = False
    _, code = np.unique(particle, return_inverse=True)
    return Frames(order=order.astype(np.int64), frame=frame, particle=particle, pos=pos,
                  frames=frames.astype(np.int64), starts=starts, fov=fov_arr, spacing=a,
                  fov_inferred=inferred, code=code.astype(np.int64).ravel())
