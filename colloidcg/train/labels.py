"""Rearrangement labels in training: which particles rearrange within the next frames, the
class balance of the auxiliary loss, and the ROC AUC with which the learned S predicts them."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.model import MetriplecticModel, State
from ..data import Trajectory
from ..errors import ParameterError


def future_labels(traj: Trajectory, t: int, horizon: int) -> torch.Tensor | None:
    """(N,) 1 where a particle rearranges within frames t+1..t+horizon, 0 where it is known
    not to, NaN where unknown; None without labels or future frames."""
    if traj.rearranging is None:
        return None
    fut = traj.rearranging[t + 1: t + 1 + horizon]
    if fut.shape[0] == 0:
        return None
    known = torch.isfinite(fut).any(0)
    lab = torch.nan_to_num(fut, nan=0.0).amax(0)
    return torch.where(known, lab, torch.full_like(lab, float("nan")))


def balanced_pos_weight(traj: Trajectory, frames, horizon: int, dtype, device) -> torch.Tensor:
    """Weight of the rearranging rows in the auxiliary loss: (negatives / positives) over
    the particles present in the training ``frames``, so both classes weigh equally (as the
    softness baseline's class-balanced logistic regression). Rearrangements are rare
    (typically < 1 % of rows): unweighted, the loss is all but indifferent to them."""
    pos = neg = 0
    for t in frames:
        lab = future_labels(traj, t, horizon)
        if lab is None:
            continue
        lab = lab[traj.present[t]]
        pos += int((lab == 1).sum())
        neg += int((lab == 0).sum())
    if pos == 0 or neg == 0:
        raise ParameterError(f"aux_weight: the training frames hold {pos} rearranging and {neg} other "
                             "labelled rows; the auxiliary loss needs both (detect with a lower "
                             "threshold, train on more frames, or set aux_weight 0)")
    return torch.tensor(neg / pos, dtype=dtype, device=device)


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (NaN when only one class is present)."""
    from sklearn.metrics import roc_auc_score
    ok = np.isfinite(score) & np.isfinite(label)
    y = label[ok] > 0.5
    if y.all() or (~y).all():
        return float("nan")
    return float(roc_auc_score(y, score[ok]))


@torch.no_grad()
def rearrangement_auc(model: MetriplecticModel, traj: Trajectory, tlist, horizon: int,
                      frames=None, aux_head=None, sign_frames=None) -> dict:
    """ROC AUC with which S_t (first component, sign fixed on ``sign_frames``), the
    entropy production dS/dt, and the auxiliary read-out ``aux_head`` (if trained) predict
    that a particle rearranges within the next ``horizon`` frames, over the frames
    ``tlist``. ``frames``: a :class:`~colloidcg.train.FrameTransitions` of ``traj`` at the
    model's cutoff to reuse (one is made otherwise)."""
    from .sampler import FrameTransitions
    frames = frames or FrameTransitions(traj, model.config.cutoff)

    def collect(ts):
        out = {"S": [], "dSdt": [], "aux": [], "y": []}
        for t in ts:
            lab = future_labels(traj, t, horizon)
            if lab is None:
                continue
            tr = frames.get(t)
            S = model.initial_S(tr.r, tr.pairs, traj.box)
            _, _, dS = model.drift(State(tr.r, tr.v, S, tr.size), tr.pairs, traj.box)
            out["S"].append(S[:, 0].cpu().numpy())
            out["dSdt"].append(dS.sum(-1).cpu().numpy())
            out["aux"].append(aux_head(S).squeeze(-1).cpu().numpy() if aux_head is not None
                              else np.full(tr.n, np.nan))
            out["y"].append(lab[tr.index].cpu().numpy())
        return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in out.items()}

    ev = collect(tlist)
    res = {"n": int(np.isfinite(ev["y"]).sum()) if len(ev["y"]) else 0, "horizon": horizon}
    if res["n"] == 0:
        return res
    sign = 1.0
    if sign_frames is not None:
        tr = collect(sign_frames)
        if len(tr["y"]):
            a = roc_auc(tr["S"], tr["y"])
            sign = -1.0 if (math.isfinite(a) and a < 0.5) else 1.0
    res["S"] = roc_auc(sign * ev["S"], ev["y"])
    res["S_sign"] = sign
    res["dSdt"] = roc_auc(ev["dSdt"], ev["y"])
    if aux_head is not None:
        res["aux"] = roc_auc(ev["aux"], ev["y"])
    return res
