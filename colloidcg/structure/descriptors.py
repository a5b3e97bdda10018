"""Per-particle, per-frame structural descriptors.

Columns added (2D):

- ``coordination``: number of neighbours closer than ``cutoff`` (the first minimum of
  g(r) by default). Undercounted near the edge of the field of view.
- ``voronoi_area`` (px^2): Voronoi cell area; NaN for cells that are unbounded or that
  particles outside the field of view could change (see :mod:`.voronoi`).
- ``area_fraction``: local area fraction pi d^2 / 4 / voronoi_area, only when particle
  diameters are known (a ``diameter`` column in px, or the ``diameter`` argument).
- ``psi6``: |psi_6|, the modulus of the local hexatic order over Voronoi neighbours
  (NaN where the Voronoi cell is NaN).
- ``G_<r>``: radial structure functions at radii r (units of the mean spacing a), see
  :mod:`.radial`.

3D data get ``coordination`` and the ``G_<r>`` columns (cell volumes and psi6 are 2D
descriptors).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ParameterError
from . import radial
from .frames import Frames, prepare
from .neighbours import PairChunk, map_chunks
from .order import pair_counts, psi_k
from .voronoi import voronoi_frames


class DescriptorAccumulator:
    """Computes descriptors chunk by chunk from shared neighbour pairs.

    Used by :func:`descriptors` and by the rearrangement pipeline, which feeds the same
    pair chunks to D2min so that neighbours are searched once per frame.
    """

    def __init__(self, fr: Frames, cutoff: float, radii=radial.DEFAULT_RADII,
                 width: float = radial.DEFAULT_WIDTH, diameter=None):
        self.fr = fr
        self.cutoff = float(cutoff)
        self.radii = np.asarray(radii, float)
        self.width = float(width)
        if self.radii.ndim != 1 or len(self.radii) == 0 or not np.isfinite(self.radii).all() \
                or (self.radii < 0).any():
            raise ParameterError(f"radii: expected a non-empty list of distances >= 0 (units of the "
                                 f"mean spacing), got {radii!r}")
        if not (np.isfinite(self.width) and self.width > 0):
            raise ParameterError(f"width: expected a positive number (units of the mean spacing), got {width!r}")
        self.diameter = diameter
        self.coordination = np.zeros(fr.n_rows, np.int64)
        self.G = np.zeros((fr.n_rows, len(self.radii)))
        self.area = np.full(fr.n_rows, np.nan)
        self.psi6 = np.full(fr.n_rows, np.nan)

    @property
    def search_radius(self) -> float:
        """Pair radius (px) this accumulator needs: max(cutoff, RSF support)."""
        return max(self.cutoff, radial.search_radius(self.fr.spacing, self.radii, self.width))

    def add(self, chunk: PairChunk) -> None:
        lo, hi = chunk.lo, chunk.hi
        near = chunk.dist <= self.cutoff
        self.coordination[lo:hi] += pair_counts(chunk.i[near] - lo, chunk.j[near] - lo, hi - lo)
        a = self.fr.spacing
        radial.accumulate(chunk.i, chunk.j, chunk.dist, self.radii * a, self.width * a, self.G)
        if self.fr.dim == 2:
            # Voronoi cells of the chunk's frames (chunks hold whole frames)
            f0, f1 = np.searchsorted(self.fr.starts, [lo, hi])
            starts = self.fr.starts[f0:f1 + 1] - lo
            pos = self.fr.pos[lo:hi]
            area, src, dst = voronoi_frames(pos, starts, self.fr.fov)
            psi = np.abs(psi_k(pos, src, dst, hi - lo, 6))
            psi[np.isnan(area)] = np.nan
            self.area[lo:hi] = area
            self.psi6[lo:hi] = psi

    def finish(self) -> dict[str, np.ndarray]:
        """Columns in sorted-row order (see :class:`Frames`)."""
        fr = self.fr
        cols: dict[str, np.ndarray] = {"coordination": self.coordination}
        if fr.dim == 2:
            cols["voronoi_area"] = self.area
            if self.diameter is not None:
                d = np.broadcast_to(np.asarray(self.diameter, float), (fr.n_rows,))
                cols["area_fraction"] = np.pi * d ** 2 / 4.0 / self.area
            cols["psi6"] = self.psi6
        for k, name in enumerate(radial.feature_names(self.radii)):
            cols[name] = self.G[:, k]
        return cols


def _diameter(tracks: pd.DataFrame, fr: Frames, diameter):
    """Per-sorted-row diameters (px) from the argument or a ``diameter`` column, or None."""
    if diameter is not None:
        d = float(diameter)
        if not (np.isfinite(d) and d > 0):
            raise ParameterError(f"diameter: expected a positive size in px, got {diameter!r}")
        return d
    if "diameter" in tracks.columns:
        return tracks["diameter"].to_numpy(float)[fr.order]
    return None


def descriptors(tracks: pd.DataFrame, cutoff: float | None = None, fov=None, diameter=None,
                radii=radial.DEFAULT_RADII, width: float = radial.DEFAULT_WIDTH,
                workers: int | None = None) -> pd.DataFrame:
    """Structural descriptors of every particle in every frame.

    Parameters
    ----------
    tracks : DataFrame
        Trackpy-schema tracks (frame, particle, x, y[, z]) in px.
    cutoff : float, optional
        Neighbour distance for ``coordination`` in px; default: first minimum of g(r)
        (:func:`colloidcg.structure.rdf.cutoff_from_gr`).
    fov : (d, 2) array-like, optional
        Field of view in px; default inferred (see :func:`colloidcg.structure.frames.prepare`).
    diameter : float, optional
        Particle diameter in px for ``area_fraction``; default the ``diameter`` column if
        the table has one, else no area fraction.
    radii, width : radial structure function radii and Gaussian width, units of the mean
        spacing a.
    workers : int, optional
        Threads (default min(2, CPU count)).

    Returns
    -------
    DataFrame
        A copy of ``tracks`` (same row order and index) with the descriptor columns added.
    """
    from .rdf import cutoff_from_gr

    fr = prepare(tracks, fov)
    if cutoff is None:
        cutoff, _ = cutoff_from_gr(fr)
    elif not (np.isfinite(cutoff) and cutoff > 0):
        raise ParameterError(f"cutoff: expected a positive distance in px, got {cutoff!r}")
    acc = DescriptorAccumulator(fr, cutoff, radii, width, _diameter(tracks, fr, diameter))
    map_chunks(acc.add, fr, acc.search_radius, workers)
    out = tracks.copy()
    for name, col in acc.finish().items():
        out[name] = fr.unsort(col)
    return out
