"""``fit``: the training run, assembled from the pieces of the other modules."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.model import MetriplecticModel
from ..data import Trajectory, near_edge
from ..errors import ColloidcgError, ParameterError
from .calibrate import build_model
from .carried import CarriedStart
from .config import TrainConfig
from .cutoff import fits_box, select_cutoff
from .labels import balanced_pos_weight, rearrangement_auc
from .loop import (Checkpoints, DivergenceGuard, EarlyStopping, ProgressBar, make_optimiser,
                   snapshot, train_epoch)
from .measures import localisation_sigma
from .objective import AuxiliaryLoss, LossOptions
from .sampler import FrameSampler, FrameTransitions, TransitionSampler
from .transport import calibrate_transport
from .validation import selection_score, validate_epoch


@dataclass
class FitResult:
    """The trained model (best epoch's weights), the report dict and the per-epoch
    history records (``epoch``, ``train_nll``, ``val_nll``, ``val_msd_rel_rms``, ``lr``)."""

    model: MetriplecticModel
    report: dict
    history: list = field(default_factory=list)


def check_trajectory(traj: Trajectory, cfg: TrainConfig) -> None:
    """What training needs of the data, checked before any work: three frames, a positive
    frame interval, finite positions, labels for the auxiliary loss, a cutoff that fits the
    periodic box."""
    if traj.n_frames < 3:
        raise ColloidcgError(f"trajectory: {traj.n_frames} frames; at least 3 are needed")
    if not (traj.dt > 0 and math.isfinite(traj.dt)):
        raise ParameterError(f"dt: must be positive, got {traj.dt}")
    if not bool(torch.isfinite(traj.pos[traj.present]).all()):
        raise ColloidcgError("trajectory: NaN or infinite positions")
    if cfg.aux_weight > 0 and traj.rearranging is None:
        raise ParameterError("aux_weight: > 0 needs rearrangement labels (rearranging column)")
    if traj.shear is not None:
        check_sheared(cfg)
    if cfg.cutoff and not fits_box(traj, float(cfg.cutoff)):
        raise ParameterError(f"cutoff: {float(cfg.cutoff):g} is too large for the periodic box "
                             f"{[round(float(b), 4) for b in traj.box]} (needs 1.3 x cutoff < half the box)")


def check_sheared(cfg: TrainConfig, sampler: TransitionSampler | None = None) -> None:
    """What training in a sheared (Lees-Edwards) box supports: a momentum-conserving model
    (no substrate: a solvent at rest would brake the flow), one-step likelihood with the
    marginal covariance and encoded S, whole frames."""
    if cfg.model.substrate:
        raise ParameterError("substrate: a sheared box (sidecar meta.lees_edwards) needs the momentum-conserving "
                             "model (substrate False, --no-substrate): substrate friction would act against "
                             "the lab frame, not the flow")
    for name, value, ok in (("multistep", cfg.multistep, 1), ("s_memory", cfg.s_memory, "encoded"),
                            ("covariance", cfg.covariance, "marginal"), ("transport", cfg.transport, "likelihood")):
        if value != ok:
            raise ParameterError(f"{name}: a sheared box (sidecar meta.lees_edwards) supports {ok!r} only, "
                                 f"got {value!r}")
    if sampler is not None and not isinstance(sampler, FrameSampler):
        raise ParameterError("sampler: a sheared box (sidecar meta.lees_edwards) trains on whole frames only")


def with_edge_halo(traj: Trajectory, edge: float | None, cutoff: float) -> Trajectory:
    """``traj`` (a shallow copy) with the particles within ``edge`` (None: the cutoff) of
    the field of view's border outside its mask, so that they are prescribed, not scored.
    Periodic boxes and trajectories without a field of view have no border."""
    traj = traj.to()
    width = cutoff if edge is None else edge
    if traj.box is None and traj.fov is not None and width > 0:
        fov = traj.frame_fov if traj.frame_fov is not None else traj.fov
        traj.mask = traj.mask & ~near_edge(traj.pos, fov, width)
    return traj


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def fit(traj: Trajectory, config: TrainConfig | None = None, out_dir=None,
        callback=None, *, sampler: TransitionSampler | None = None) -> FitResult:
    """Train a model on ``traj``; returns the best model and a report dict.

    ``sampler`` (default :class:`FrameSampler`, whole frames) provides the transitions
    that train and validate; the options of ``config`` are checked, and the trajectory,
    before any work.

    ``out_dir`` (or ``config.checkpoint_dir``) receives ``checkpoint/`` (last good
    weights, each epoch) and ``best/`` (best validation score so far).

    ``callback(record)``, if given, is called after every epoch with that epoch's history
    record (``epoch``, ``train_nll``, ``val_nll``, ``val_msd_rel_rms``, ``lr``); if it
    returns True, training stops there (as on early stopping) and the best model so far is
    returned, with ``report["cancelled"] = True``. GUIs and batch runners use it for live
    loss curves and cancellation.

    ``config.transport == "msd"``: the best model's friction is then scaled by one factor
    so that its rollouts reproduce the data's MSD (:mod:`colloidcg.train.transport`;
    ``report["transport"]``).
    """
    cfg = (config or TrainConfig()).validate()
    check_trajectory(traj, cfg)
    if traj.shear is not None:
        check_sheared(cfg, sampler)
    sampler = sampler if sampler is not None else FrameSampler()
    seed_everything(cfg.seed)
    traj = traj.to(device=cfg.device, dtype=getattr(torch, cfg.dtype))
    if cfg.cutoff:
        cutoff, selection = float(cfg.cutoff), None
    else:
        cutoff, selection = select_cutoff(traj, cfg, sampler)
    result = fit_with_cutoff(traj, cfg, cutoff, sampler, out_dir, callback, selection)
    if cfg.transport == "msd":
        result.report["transport"] = calibrate_transport(result.model, with_edge_halo(traj, cfg.edge, cutoff),
                                                         seed=cfg.seed)
    return result


def fit_with_cutoff(traj: Trajectory, cfg: TrainConfig, cutoff: float, sampler: TransitionSampler,
                    out_dir=None, callback=None, selection: dict | None = None) -> FitResult:
    """:func:`fit` at a known interaction range, with ``cfg`` validated and ``traj`` checked
    and on ``cfg``'s device and dtype (the cutoff selection's short fits run through here)."""
    dtype = getattr(torch, cfg.dtype)
    traj = with_edge_halo(traj, cfg.edge, cutoff)
    sampler.setup(traj, cutoff, cfg)
    pos_weight = None
    if cfg.aux_weight > 0:
        pos_weight = balanced_pos_weight(traj, sampler.train_frames, cfg.horizon, dtype, cfg.device)
    # the model's initial weights depend on the seed only, not on whether (or how many)
    # short fits of the cutoff selection ran before
    seed_everything(cfg.seed)
    model = build_model(traj, cfg, cutoff)
    loc_sigma = localisation_sigma(traj, cfg.loc_noise)
    aux = (AuxiliaryLoss.new(cfg.model.n_s, cfg.aux_weight, pos_weight, increasing=cfg.s_memory == "carried")
           if pos_weight is not None else None)
    carry = (CarriedStart(traj, loc_sigma ** 2, cfg.s_heat)
             if cfg.s_memory == "carried" and cfg.s_start == "entry" else None)
    opts = LossOptions(traj.dt, traj.box, loc_sigma ** 2, cfg.covariance, aux, carry, cfg.s_heat)
    params = list(model.parameters()) + (list(aux.head.parameters()) if aux is not None else [])
    optimiser, scheduler = make_optimiser(params, cfg.lr, cfg.lr_final_fraction,
                                          cfg.epochs * sampler.steps_per_epoch())
    checkpoints = Checkpoints(out_dir or cfg.checkpoint_dir)
    initial = snapshot(model)
    guard = DivergenceGuard(model, params, checkpoints, initial)
    stopping = EarlyStopping(cfg.patience, initial)
    bar = ProgressBar(cfg.epochs, cfg.progress)

    history = []
    t_start = time.perf_counter()
    n_particle_steps = 0
    stopped_early = cancelled = False
    try:
        for epoch in bar:
            losses, n = train_epoch(model, sampler, opts, optimiser, scheduler, params, guard, epoch,
                                    cfg.grad_clip)
            n_particle_steps += n
            val = validate_epoch(model, sampler, opts, traj, cfg.val_rollout_steps, cfg.seed)
            train_nll = float(np.mean(losses))
            score = selection_score(cfg.select, val, train_nll)
            rec = {"epoch": epoch + 1, "train_nll": train_nll, "val_nll": val["val_nll"],
                   "val_msd_rel_rms": val["val_msd_rel_rms"], "lr": scheduler.get_last_lr()[0]}
            history.append(rec)
            bar.show(rec)
            checkpoints.epoch(model, epoch + 1)
            if callback is not None and callback(dict(rec)):
                cancelled = True
            if stopping.update(score, rec, model):
                checkpoints.best(model, epoch + 1)
                if cancelled:
                    break
            elif stopping.exhausted or cancelled:
                stopped_early = not cancelled
                break
    finally:
        bar.close()
    elapsed = time.perf_counter() - t_start
    model.load_state_dict(stopping.state)
    model.eval()
    best_rec = stopping.record or (history[-1] if history else {})
    report = {
        "epochs_run": len(history), "best_epoch": stopping.epoch,
        "best_val_score": best_rec.get("val_msd_rel_rms", float("nan")),
        "best_val_nll": best_rec.get("val_nll", float("nan")), "selected_by": cfg.select,
        "stopped_early": stopped_early, "cancelled": cancelled, "cutoff": cutoff, "dt": traj.dt,
        "localisation_noise": loc_sigma, "n_train_frames": len(sampler.train_frames),
        "n_val_frames": len(sampler.validation_frames),
        "train_seconds": elapsed, "particle_steps_per_s": n_particle_steps / max(elapsed, 1e-9),
        "mass": float(model.mass.detach()), "stiffness": float(model.config.stiffness),
        "config": cfg.to_dict(),
    }
    if selection is not None:
        report["cutoff_selection"] = selection
    # every energy term's learned parameters in physical units (the pair energy also under
    # its earlier key, which reports and notebooks read)
    report["energy_terms"] = model.term_reports()
    if "pair" in report["energy_terms"]:
        report["pair_energy"] = report["energy_terms"]["pair"]
    if traj.rearranging is not None:
        frames = sampler.frame_transitions or FrameTransitions(traj, cutoff)
        report["rearrangement_auc"] = rearrangement_auc(
            model, traj, list(sampler.validation_frames) or list(sampler.train_frames), cfg.horizon,
            frames, aux.head if aux is not None else None, sign_frames=list(sampler.train_frames))
    return FitResult(model, report, history)
