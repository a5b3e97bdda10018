"""Scoring tracks against known truth (synthetic videos): detection, localisation, linking."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from ..neighbours import cross_distances, nearest


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
        d_ft, i_ft = nearest(tp_, query=fp_)
        d_tf, i_tf = nearest(fp_, query=tp_)
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


# ---------------------------------------------------------------- localisation, one-to-one

@dataclass
class LocalisationScore:
    """Detection and localisation accuracy with a one-to-one (Hungarian) matching.

    Counted particles: true ones whose centre is more than ``margin`` px inside every edge
    (recall, errors), found ones likewise (precision). A found particle inside counts as
    true positive when it is matched to any true particle, counted or not.

    recall, precision : float
    rms_error : sqrt(mean(dx^2 + dy^2)) over matched counted pairs (px)
    median_error : median of sqrt(dx^2 + dy^2) (px)
    p99_error : 99th percentile of the distance (px)
    axis_sigma : robust per-axis error, 1.4826 x median(|dx|, |dy| pooled) (px)
    median_ep : median of the found ``ep`` column over matched pairs (NaN without it)
    ep_ratio : median_ep / median_error (issue 15's "ep calibration"; a per-axis ep that is
        exactly right gives 1 / 1.177 = 0.85 for Gaussian errors)
    ep_axis_ratio : median_ep / axis_sigma (1 when ep is a correct per-axis error)
    mean_dx, mean_dy : mean error (found - true) per axis (px): a bias or a convention shift
    rms_crowded : RMS error of the counted true particles with another true particle closer
        than ``crowded_within`` px (NaN when not asked); n_crowded their number
    n_true, n_found, n_matched : counts
    """

    recall: float
    precision: float
    rms_error: float
    median_error: float
    p99_error: float
    axis_sigma: float
    median_ep: float
    ep_ratio: float
    ep_axis_ratio: float
    mean_dx: float
    mean_dy: float
    rms_crowded: float
    n_crowded: int
    n_true: int
    n_found: int
    n_matched: int

    def as_dict(self) -> dict:
        return asdict(self)


def match_one_to_one(found_xy, true_xy, radius: float):
    """Optimal one-to-one assignment (minimum total distance) of found to true positions
    within ``radius`` px. Positions are (N, d) arrays of any dimension d (2 for flat
    ones). Returns (i_found, i_true) index arrays of the matched pairs."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse import coo_matrix

    found_xy, true_xy = np.asarray(found_xy, float), np.asarray(true_xy, float)
    d = found_xy.shape[-1] if found_xy.ndim == 2 else 2
    found_xy, true_xy = found_xy.reshape(-1, d), true_xy.reshape(-1, d)
    nf, nt = len(found_xy), len(true_xy)
    if nf == 0 or nt == 0:
        return np.zeros(0, int), np.zeros(0, int)
    fi, ti, dist = cross_distances(found_xy, true_xy, radius)
    if len(fi) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    # solve each connected cluster of candidate pairs separately (small dense problems)
    graph = coo_matrix((np.ones(len(fi)), (fi, nf + ti)), shape=(nf + nt, nf + nt))
    _, comp = connected_components(graph, directed=False)
    out_f, out_t = [], []
    pair_comp = comp[fi]
    order = np.argsort(pair_comp, kind="stable")
    bounds = np.flatnonzero(np.diff(pair_comp[order])) + 1
    for grp in np.split(order, bounds):
        gf, gt, gd = fi[grp], ti[grp], dist[grp]
        uf, lf = np.unique(gf, return_inverse=True)
        ut, lt = np.unique(gt, return_inverse=True)
        if len(grp) == 1:
            out_f.append(uf)
            out_t.append(ut)
            continue
        big = 1e6 * (radius + 1)
        cost = np.full((len(uf), len(ut)), big)
        cost[lf, lt] = gd
        r, c = linear_sum_assignment(cost)
        ok = cost[r, c] < big
        out_f.append(uf[r[ok]])
        out_t.append(ut[c[ok]])
    return np.concatenate(out_f), np.concatenate(out_t)


def score_localisation(found: pd.DataFrame, truth: pd.DataFrame, frame_shape: tuple[int, int],
                       margin: float, match_radius: float, truth_region=None,
                       crowded_within: float | None = None) -> LocalisationScore:
    """Score detections (frame, x, y [, ep]) against truth (frame, x, y), frame by frame,
    with a one-to-one matching within ``match_radius``; see :class:`LocalisationScore`.

    ``truth_region``: optional (H, W) bool image; true particles count (recall, errors)
    only where it is True at their nearest pixel, e.g. more than a diameter inside the
    part of the frame that shows the sample. Found particles are counted by ``margin`` alone,
    so detections on borders and walls still cost precision. ``crowded_within``: also the
    RMS error of particles with a true neighbour closer than this (px).
    """
    h, w = frame_shape

    def inside(df):
        x, y = df["x"].to_numpy(), df["y"].to_numpy()
        return (x > margin - 0.5) & (x < w - 0.5 - margin) & (y > margin - 0.5) & (y < h - 0.5 - margin)

    dx_all, dy_all, ep_all, crowd_all = [], [], [], []
    n_true = n_found = n_tp_true = n_tp_found = 0
    has_ep = "ep" in found.columns
    fgroups = dict(tuple(found.groupby("frame"))) if len(found) else {}
    for frame, t in truth.groupby("frame"):
        f = fgroups.get(frame, found.iloc[:0])
        tin, fin = inside(t), inside(f)
        if truth_region is not None:
            xi = np.clip(np.round(t["x"].to_numpy()).astype(int), 0, w - 1)
            yi = np.clip(np.round(t["y"].to_numpy()).astype(int), 0, h - 1)
            tin = tin & np.asarray(truth_region, bool)[yi, xi]
        n_true += int(tin.sum())
        n_found += int(fin.sum())
        i_f, i_t = match_one_to_one(f[["x", "y"]].to_numpy(), t[["x", "y"]].to_numpy(), match_radius)
        n_tp_found += int(fin[i_f].sum())
        n_tp_true += int(tin[i_t].sum())
        sel = tin[i_t]
        fx, fy = f["x"].to_numpy()[i_f[sel]], f["y"].to_numpy()[i_f[sel]]
        tx, ty = t["x"].to_numpy()[i_t[sel]], t["y"].to_numpy()[i_t[sel]]
        dx_all.append(fx - tx)
        dy_all.append(fy - ty)
        if crowded_within is not None:
            txy = t[["x", "y"]].to_numpy()
            if len(txy) > 1:
                nn, _ = nearest(txy)
                crowd_all.append(nn[i_t[sel]] < crowded_within)
            else:
                crowd_all.append(np.zeros(int(sel.sum()), bool))
        if has_ep:
            ep_all.append(f["ep"].to_numpy()[i_f[sel]])
    dx = np.concatenate(dx_all) if dx_all else np.zeros(0)
    dy = np.concatenate(dy_all) if dy_all else np.zeros(0)
    r = np.hypot(dx, dy)
    nan = float("nan")
    crowd = np.concatenate(crowd_all) if crowd_all else np.zeros(0, bool)
    rms_crowded = float(np.sqrt(np.mean(r[crowd] ** 2))) if crowd.any() else nan
    med = float(np.median(r)) if len(r) else nan
    axis = float(1.4826 * np.median(np.abs(np.concatenate([dx, dy])))) if len(r) else nan
    ep = np.concatenate(ep_all) if ep_all else np.zeros(0)
    ep = ep[np.isfinite(ep)]
    med_ep = float(np.median(ep)) if len(ep) else nan
    return LocalisationScore(
        recall=n_tp_true / n_true if n_true else nan,
        precision=n_tp_found / n_found if n_found else nan,
        rms_error=float(np.sqrt(np.mean(r ** 2))) if len(r) else nan,
        median_error=med, p99_error=float(np.percentile(r, 99)) if len(r) else nan,
        axis_sigma=axis, median_ep=med_ep,
        ep_ratio=med_ep / med if len(r) and med > 0 else nan,
        ep_axis_ratio=med_ep / axis if len(r) and axis > 0 else nan,
        mean_dx=float(np.mean(dx)) if len(r) else nan, mean_dy=float(np.mean(dy)) if len(r) else nan,
        rms_crowded=rms_crowded, n_crowded=int(crowd.sum()),
        n_true=n_true, n_found=n_found, n_matched=len(r))
