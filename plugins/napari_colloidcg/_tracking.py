"""Live preview of the Track widget: one frame located with the widget's parameters,
exactly as "Track all" (:func:`colloidcg.tracking.track_iter`, run in a napari worker that
yields after every located frame and stops its processes when quit) locates every frame;
the masses of every candidate spot (for the minmass histogram) and the links to the next
frame at the current search range (:func:`colloidcg.tracking.link.link`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from colloidcg.tracking import TrackParams, locate_frame

__all__ = ["locate_preview", "candidate_masses", "link_preview"]


def locate_preview(frame: np.ndarray, frame_no: int, params: TrackParams) -> pd.DataFrame:
    """Particles of one frame with the given (complete) parameters, as Track all finds them."""
    return locate_frame(np.asarray(frame), frame_no, params.diameter, params.separation,
                        params.minmass, params.invert, roi=params.roi, refine=params.refine,
                        contrast=params.contrast, objects=params.objects or "spots")


def candidate_masses(frame: np.ndarray, params: TrackParams) -> np.ndarray:
    """trackpy's mass of every candidate spot of a frame (minmass 0, no joint fit): the
    distribution that minmass cuts."""
    f = locate_frame(np.asarray(frame), 0, params.diameter, params.separation, 0.0,
                     params.invert, roi=params.roi, refine=False, contrast=params.contrast)
    return f["mass"].to_numpy(float)


def link_preview(f0: pd.DataFrame, f1: pd.DataFrame, search_range: float | None) -> tuple[pd.DataFrame, float]:
    """Links between the particles of two consecutive frames, as Track all links them.

    ``search_range`` None: estimated from the two frames
    (:func:`colloidcg.tracking.params.suggest_search_range`). Returns (one row per linked
    particle: frame, [z,] y, x at the first frame, dz, dy, dx, step (px); the search range used).
    """
    from colloidcg.neighbours import nearest
    from colloidcg.tracking.link import link
    from colloidcg.tracking.params import suggest_search_range

    pos = [c for c in ("z", "y", "x") if c in f0.columns]
    if len(f0) == 0 or len(f1) == 0:
        return pd.DataFrame(columns=["frame", *pos, *(f"d{c}" for c in pos), "step"]), float(search_range or 0.0)
    if not search_range:
        a = f0[pos].to_numpy(float)
        spacing = float(np.median(nearest(a)[0])) if len(a) > 1 else float("nan")
        search_range = float(suggest_search_range(a, f1[pos].to_numpy(float), spacing))
    both = pd.concat([f0[["frame", *pos]], f1[["frame", *pos]]], ignore_index=True)
    linked = link(both, float(search_range), 0)
    t0 = int(f0["frame"].iloc[0])
    a = linked[linked["frame"] == t0].set_index("particle")
    b = linked[linked["frame"] != t0].set_index("particle")
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    out = a[["frame", *pos]].reset_index(drop=True)
    for c in pos:
        out[f"d{c}"] = (b[c].to_numpy() - a[c].to_numpy())
    out["step"] = np.sqrt(sum(out[f"d{c}"] ** 2 for c in pos))
    return out, float(search_range)
