"""The interaction range: chosen among multiples of the median nearest-neighbour distance
by the held-out NLL of short fits."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..data import Trajectory
from ..errors import ColloidcgError, ParameterError
from .config import TrainConfig
from .measures import median_nn_distance
from .sampler import TransitionSampler

#: Options of the short fits that score each candidate cutoff.
SHORT_FIT = {"epochs": 3, "max_frames_per_epoch": 8, "val_rollout_steps": 2, "progress": False,
             "checkpoint_dir": None, "patience": 3}


def fits_box(traj: Trajectory, cutoff: float) -> bool:
    """Whether a periodic box (if any) holds the pair search of ``cutoff`` (1.3 x cutoff
    below half the box)."""
    return traj.box is None or 1.3 * cutoff < 0.5 * float(traj.box.min())


def select_cutoff(traj: Trajectory, cfg: TrainConfig, sampler: TransitionSampler | None = None
                  ) -> tuple[float, dict]:
    """The interaction range with the best held-out NLL after a short fit, among
    ``cfg.cutoff_factors`` x the median nearest-neighbour distance (:func:`median_nn_distance`).

    Contact-like forces (colloids) want h near the first neighbour shell (a longer-ranged
    kernel softens the repulsion and shifts the first peak of g(r)); fluid-like, many-body
    interactions want a longer range. Each candidate gets 3 epochs of at most 8 frames
    (``SHORT_FIT``) with ``sampler`` (default: whole frames); candidates too long for the
    periodic box are skipped; a single factor is taken without fitting; when no fit gives a
    finite NLL, 2.5 x the distance. ``cfg`` is expected validated (:func:`fit` does).
    Returns (cutoff, {"nn_distance", "candidates": [[cutoff, val_nll], ...]}).
    """
    from .fitting import fit_with_cutoff
    from .sampler import FrameSampler

    nn_d = median_nn_distance(traj)
    factors = sorted(set(float(f) for f in cfg.cutoff_factors))
    if not factors or min(factors) <= 0:
        raise ParameterError(f"cutoff_factors: expected positive numbers, got {cfg.cutoff_factors!r}")
    if len(factors) == 1:
        return factors[0] * nn_d, {"nn_distance": nn_d, "candidates": [[factors[0] * nn_d, None]]}
    traj = traj.to(device=cfg.device, dtype=getattr(torch, cfg.dtype))
    sampler = sampler or FrameSampler()
    rows = []
    for f in factors:
        c = f * nn_d
        if not fits_box(traj, c):
            continue
        quick = replace(cfg, cutoff=c, **SHORT_FIT)
        try:
            nll = fit_with_cutoff(traj, quick, c, sampler).report["best_val_nll"]
        except ColloidcgError:
            nll = float("nan")
        rows.append([c, nll])
    ok = [r for r in rows if r[1] is not None and math.isfinite(r[1])]
    best = min(ok, key=lambda r: r[1])[0] if ok else 2.5 * nn_d
    return best, {"nn_distance": nn_d, "candidates": rows}
