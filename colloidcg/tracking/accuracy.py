"""Scoring tracks against known truth (synthetic videos): detection, localisation, linking."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree


@dataclass
class TrackingScore:
    """Accuracy of tracks against truth, over particles at least ``margin`` px from the edges.

    recall : fraction of true particles found (within ``match_radius``).
    precision : fraction of found particles that are true.
    rms_error : RMS distance of matched pairs (px).
    link_accuracy : fraction of frame-to-frame links joining the same true particle.
    """

    recall: float
    precision: float
    rms_error: float
    link_accuracy: float
    n_true: int
    n_found: int

    def as_dict(self) -> dict:
        return asdict(self)


def _inside(x, y, shape, margin):
    h, w = shape
    return (x >= margin - 0.5) & (x < w - 0.5 - margin) & (y >= margin - 0.5) & (y < h - 0.5 - margin)


def score_tracks(tracks: pd.DataFrame, truth: pd.DataFrame, frame_shape: tuple[int, int],
                 margin: float, match_radius: float) -> TrackingScore:
    """Match found and true positions frame by frame (mutual nearest neighbours).

    Parameters
    ----------
    tracks, truth : DataFrame
        frame, particle, x, y (px). ``tracks`` positions in image coordinates.
    frame_shape : (H, W)
    margin : float
        Only particles at least this far (px) from every edge count (either side).
    match_radius : float
        Largest distance (px) for a found particle to count as a true one.
    """
    sq_err, n_true, n_found, n_tp_true, n_tp_found = [], 0, 0, 0, 0
    match_of = {}   # (frame, found particle) -> true particle
    for frame, t in truth.groupby("frame"):
        f = tracks[tracks["frame"] == frame]
        tin = _inside(t["x"].to_numpy(), t["y"].to_numpy(), frame_shape, margin)
        fin = _inside(f["x"].to_numpy(), f["y"].to_numpy(), frame_shape, margin)
        n_true += int(tin.sum())
        n_found += int(fin.sum())
        if len(f) == 0 or len(t) == 0:
            continue
        tp_, fp_ = t[["x", "y"]].to_numpy(), f[["x", "y"]].to_numpy()
        d_ft, i_ft = cKDTree(tp_).query(fp_)
        d_tf, i_tf = cKDTree(fp_).query(tp_)
        mutual = (i_tf[i_ft] == np.arange(len(fp_))) & (d_ft <= match_radius)
        n_tp_found += int((mutual & fin).sum())
        matched_true = np.zeros(len(tp_), bool)
        matched_true[i_ft[mutual]] = True
        n_tp_true += int((matched_true & tin).sum())
        sel = mutual & fin & tin[i_ft]
        sq_err.extend((d_ft[sel] ** 2).tolist())
        tids = t["particle"].to_numpy()
        for fid, tid in zip(f["particle"].to_numpy()[sel], tids[i_ft[sel]]):
            match_of[(frame, fid)] = tid
    good = total = 0
    for (frame, fid), tid in match_of.items():
        nxt = match_of.get((frame + 1, fid))
        if nxt is not None:
            total += 1
            good += nxt == tid
    # Links that jumped to an unmatched or different particle count as wrong too.
    return TrackingScore(
        recall=n_tp_true / n_true if n_true else float("nan"),
        precision=n_tp_found / n_found if n_found else float("nan"),
        rms_error=float(np.sqrt(np.mean(sq_err))) if sq_err else float("nan"),
        link_accuracy=good / total if total else float("nan"),
        n_true=n_true, n_found=n_found)
