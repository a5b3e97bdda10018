"""Checks of an upsampled system: is a seam visible, and how close do pairs come?

Both read the tracks schema that :func:`~colloidcg.scaling.upsample` writes (frame = sample,
x, y [, z] in px, ``seam_distance`` in px, optionally a size column) and work on any
periodic snapshot, so a direct simulation can be measured the same way.

- :func:`seam_profile`: per particle, the neighbours within ``r_bond`` (local density) and,
  in 2D, |psi6| over the same neighbours, binned by distance to the nearest seam and minus
  the same in the bulk (``seam_distance`` > 3 ``r_bond``), per sample; mean and standard
  error over samples. A seam is visible where a bin's mean is more than about 2 standard
  errors from 0 (issue 19's criterion).
- :func:`closest_by_pair`: the smallest distance of every pair of sizes over all samples,
  to compare with the data's own closest approach.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from ..neighbours import pairs
from ..structure.order import psi_k


def _positions(frame: pd.DataFrame) -> np.ndarray:
    cols = ["x", "y", "z"] if "z" in frame.columns else ["x", "y"]
    return frame[cols].to_numpy(float)


def seam_profile(tracks: pd.DataFrame, box, r_bond: float, edges: Sequence[float] = (0.0, 16.0),
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The seam's imprint on local density and order.

    Parameters
    ----------
    tracks : upsampled samples (frame, x, y [, z], seam_distance; px).
    box : periodic box side(s), px.
    r_bond : neighbour distance, px (about the first minimum of g(r)).
    edges : bin edges of the distance to the nearest seam, px.

    Returns
    -------
    {"density": (mean, se), "psi6": (mean, se)} ("psi6" in 2D only), each of shape
    (len(edges) - 1,): the bin's mean over its particles minus the bulk's mean
    (``seam_distance`` > 3 ``r_bond``), averaged over samples, and the standard error of that
    average over samples (NaN with one sample).
    """
    box = np.asarray(box, float)
    diffs: dict[str, list] = {"density": []}
    two_d = "z" not in tracks.columns
    if two_d:
        diffs["psi6"] = []
    for _, g in tracks.groupby("frame"):
        p = np.mod(_positions(g), box)
        pr = pairs(p, r_bond, box)
        src = np.concatenate([pr[:, 0], pr[:, 1]])
        dst = np.concatenate([pr[:, 1], pr[:, 0]])
        values = {"density": np.bincount(src, minlength=len(p)).astype(float)}
        if two_d:
            # psi_k takes positions: each bond's far end is placed at its minimum image
            d = p[dst] - p[src]
            d -= box * np.round(d / box)
            pos2 = np.concatenate([p, p[src] + d])
            values["psi6"] = np.abs(psi_k(pos2, src, len(p) + np.arange(len(src)), len(pos2), 6)[:len(p)])
        seam = g["seam_distance"].to_numpy(float)
        bulk = seam > 3 * r_bond
        which = np.digitize(seam, edges) - 1
        for name, val in values.items():
            ref = np.nanmean(val[bulk])
            diffs[name].append([np.nanmean(val[which == b]) - ref if np.any(which == b) else np.nan
                                for b in range(len(edges) - 1)])
    out = {}
    for name, rows in diffs.items():
        a = np.array(rows, float)
        se = a.std(0, ddof=1) / math.sqrt(len(a)) if len(a) > 1 else np.full(a.shape[1], np.nan)
        out[name] = (a.mean(0), se)
    return out


def closest_by_pair(tracks: pd.DataFrame, box, size_column: str | None = None,
                    r_max: float | None = None) -> dict[tuple, float]:
    """{(smaller size, larger size): smallest distance over all frames} (px); without a size
    column the key is (None, None). ``r_max``: search distance (default: twice the largest
    size, or 30 px without sizes)."""
    box = np.asarray(box, float)
    if r_max is None:
        r_max = 2.0 * float(tracks[size_column].max()) if size_column else 30.0
    out: dict[tuple, float] = {}
    for _, g in tracks.groupby("frame"):
        pr, d = pairs(np.mod(_positions(g), box), r_max, box, distances=True)
        if size_column:
            s = g[size_column].to_numpy(float)
            a, b = s[pr[:, 0]], s[pr[:, 1]]
            key = pd.Series(d).groupby([np.minimum(a, b), np.maximum(a, b)]).min()
        else:
            key = pd.Series({(None, None): d.min()}) if len(d) else pd.Series(dtype=float)
        for k, v in key.items():
            out[k] = min(out.get(k, np.inf), float(v))
    return out
