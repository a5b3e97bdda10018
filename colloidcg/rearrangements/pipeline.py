"""The rearrangement stage in one call: D2min, labels, events and structural descriptors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ..outputs import check_writable, provenance, write_table
from ..structure import radial
from ..structure.descriptors import DescriptorAccumulator, _diameter
from ..structure.frames import prepare
from ..structure.neighbours import map_chunks
from .d2min import D2minAccumulator, check_cutoff, check_lag, finish
from .defaults import N_SIGMA, PLATEAU, RATTLE_FRACTION, choose_lag, choose_threshold, cutoff_from_gr
from .events import event_table, label_events


@dataclass
class Rearrangements:
    """Result of :func:`detect`.

    Attributes
    ----------
    table : DataFrame
        The input tracks (same rows, order, index) plus d2min (px^2), d2min_norm,
        n_neighbours, rearranging, edge, event_id (-1 when not rearranging) and the
        descriptors (coordination, voronoi_area, [area_fraction], psi6, G_*).
    events : DataFrame
        One row per event (see :func:`colloidcg.rearrangements.events.event_table`).
    parameters : dict
        The resolved parameters and how each was chosen (JSON-ready).
    """

    table: pd.DataFrame
    events: pd.DataFrame
    parameters: dict

    TABLE = "rearrangements.parquet"
    EVENTS = "events.parquet"

    @classmethod
    def output_paths(cls, out_dir) -> list[Path]:
        """The files :meth:`save` writes in ``out_dir`` (tables and their JSON sidecars)."""
        out = Path(out_dir)
        return [out / cls.TABLE, (out / cls.TABLE).with_suffix(".json"),
                out / cls.EVENTS, (out / cls.EVENTS).with_suffix(".json")]

    def save(self, out_dir, inputs: dict | None = None, overwrite: bool = False,
             **extra) -> tuple[Path, Path]:
        """Write OUT_DIR/rearrangements.parquet and OUT_DIR/events.parquet, each with a
        JSON sidecar holding the resolved parameters (atomically; refuses to replace
        existing files unless ``overwrite``). ``extra`` items go into both sidecars."""
        check_writable(self.output_paths(out_dir), overwrite)
        out = Path(out_dir)
        units = {"x": "px", "y": "px", "frame": "frame", "d2min": "px^2", "d2min_norm": "1",
                 "voronoi_area": "px^2", "cutoff_px": "px", "lag_frames": "frame"}
        side = provenance("rearrangements", inputs or {}, self.parameters, units, **extra)
        t = write_table(out / self.TABLE, self.table, side)
        e = write_table(out / self.EVENTS, self.events,
                        {**side, "table": "events: one row per connected group of rearranging "
                                          "particle-frames"})
        return t, e


def detect(tracks: pd.DataFrame, lag: int | None = None, cutoff: float | None = None,
           threshold: float | None = None, fov=None, diameter: float | None = None,
           descriptors: bool = True, radii=radial.DEFAULT_RADII, width: float = radial.DEFAULT_WIDTH,
           n_sigma: float = N_SIGMA, workers: int | None = None) -> Rearrangements:
    """Find where and when the material rearranges, and describe the local structure.

    Parameters
    ----------
    tracks : DataFrame
        Trackpy-schema tracks (frame, particle, x, y[, z]) in px.
    lag : int, optional
        D2min lag in frames; default chosen from the MSD
        (:func:`colloidcg.rearrangements.defaults.choose_lag`).
    cutoff : float, optional
        Neighbour cutoff in px; default the first minimum of g(r).
    threshold : float, optional
        A row is ``rearranging`` when d2min_norm > threshold (dimensionless); default
        from the D2min distribution (:func:`~colloidcg.rearrangements.defaults.choose_threshold`).
    fov : (d, 2) array-like, optional
        Field of view in px; default inferred from the data.
    diameter : float, optional
        Particle diameter (px) for the local area fraction; default a ``diameter`` column.
    descriptors : bool
        Compute the structural descriptors (default True).
    radii, width : radial structure function radii and width, units of the mean spacing.
    n_sigma : float
        Robust standard deviations above the median of log10(d2min_norm) for the default
        threshold.
    workers : int, optional
        Threads (default min(2, CPU count)); frames are split among them.

    Returns
    -------
    Rearrangements
    """
    fr = prepare(tracks, fov)
    # check what the user gave before any work
    if lag is not None:
        lag = check_lag(lag, fr)
    if cutoff is not None:
        cutoff = check_cutoff(cutoff)
    if threshold is not None:
        try:
            ok = float(threshold) > 0 and np.isfinite(float(threshold))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ParameterError(f"threshold: expected a positive number (on d2min_norm), got {threshold!r}")
        threshold = float(threshold)

    params: dict = {"fov_px": fr.fov.tolist(), "fov_inferred": fr.fov_inferred,
                    "mean_spacing_px": fr.spacing, "dim": fr.dim}
    if cutoff is None:
        cutoff, rule = cutoff_from_gr(fr)
        params["cutoff_rule"] = rule
    else:
        params["cutoff_rule"] = "given"
    params["cutoff_px"] = float(cutoff)
    if lag is None:
        lag, info = choose_lag(fr, cutoff)
        params["lag_rule"] = (f"shortest lag whose median drift-corrected displacement reaches "
                              f"{PLATEAU:g} x that of the longest lag <= n_frames // 10 with "
                              f"displacement <= {RATTLE_FRACTION:g} x cutoff")
        params["lag_curve"] = info
    else:
        params["lag_rule"] = "given"
    lag = check_lag(lag, fr)
    params["lag_frames"] = lag
    dacc = D2minAccumulator(fr, lag, cutoff)
    sacc = None
    r_search = cutoff
    if descriptors:
        sacc = DescriptorAccumulator(fr, cutoff, radii, width, _diameter(tracks, fr, diameter))
        r_search = sacc.search_radius
    def work(chunk):
        dacc.add(chunk)
        if sacc is not None:
            sacc.add(chunk)

    map_chunks(work, fr, r_search, workers)
    dacc.check_enough_neighbours()
    d2 = finish(dacc)

    if threshold is None:
        threshold = choose_threshold(d2.d2min_norm, d2.edge, n_sigma)
        params["threshold_rule"] = (f"10^(median + {n_sigma:g} x 1.4826 MAD) of log10(d2min_norm), "
                                    f"finite non-edge rows")
    else:
        params["threshold_rule"] = "given"
    params["threshold"] = float(threshold)
    params["threshold_on"] = "d2min_norm"
    with np.errstate(invalid="ignore"):
        rr = d2.d2min_norm > threshold
    eid = label_events(fr.pos, fr.frame_index(), rr, cutoff)
    events = event_table(fr.frame, fr.particle, fr.pos, d2.d2min, eid)

    out = tracks.copy()
    cols = {"d2min": d2.d2min, "d2min_norm": d2.d2min_norm, "n_neighbours": d2.n_neighbours,
            "rearranging": rr, "edge": d2.edge, "event_id": eid}
    if sacc is not None:
        cols.update(sacc.finish())
        params["radii_spacings"] = [float(r) for r in sacc.radii]
        params["width_spacings"] = float(sacc.width)
    for name, col in cols.items():
        out[name] = fr.unsort(col)
    params["n_rows"] = fr.n_rows
    params["n_frames"] = len(fr.frames)
    params["n_rearranging"] = int(rr.sum())
    params["n_events"] = len(events)
    return Rearrangements(out, events, params)
