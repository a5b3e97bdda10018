"""Validation after each epoch: the held-out NLL, a stochastic rollout over the held-out
frames scored by its MSD against the data's, and the score that selects the best epoch."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.graph import minimum_image
from ..core.integrate import rollout
from ..core.model import MetriplecticModel, State
from ..data import Trajectory
from .measures import particle_sizes
from .objective import LossOptions, batch_loss
from .sampler import TransitionSampler


def _msd_curve(r: torch.Tensor) -> torch.Tensor:
    """MSD from the first frame, (T,) for r (T, N, d)."""
    return (r - r[0]).square().sum(-1).mean(-1)


def data_window(traj: Trajectory, start: int, steps: int):
    """The particles present throughout frames start..start+steps: their indices (n,),
    their data positions (steps + 1, n, d) unwrapped by minimum-image steps, and the mask
    (n,) of those scored (inside the field of view's mask at ``start``; the rest are a
    prescribed halo in :func:`window_rollout`)."""
    keep = traj.present[start: start + steps + 1].all(0)
    idx = torch.nonzero(keep).squeeze(-1)
    data_r = traj.pos[start: start + steps + 1, idx]
    if traj.box is not None:
        disp = minimum_image(data_r[1:] - data_r[:-1], traj.box)
        data_r = torch.cat([data_r[:1], data_r[:1] + torch.cumsum(disp, 0)])
    return idx, data_r, traj.mask[start, idx]


def window_rollout(model: MetriplecticModel, traj: Trajectory, start: int, steps: int, idx: torch.Tensor,
                   interior: torch.Tensor, seed: int = 0, substeps: int = 1) -> torch.Tensor:
    """(steps + 1, n, d) unwrapped positions of a stochastic rollout of the particles
    ``idx`` from their data state at frame ``start`` (S encoded there), those outside
    ``interior`` prescribed from the data (open boundaries; none in a sheared box)."""
    r0, v0 = traj.pos[start, idx], traj.vel[start, idx]
    size = particle_sizes(traj, idx)
    with torch.no_grad():
        S0 = model.initial_S(r0, None, traj.box, traj.shear_at(start))
        halo = ~interior

        def prescribed(k):
            t = start + k
            return State(traj.pos[t, idx], traj.vel[t, idx], S0, size)

        sheared = traj.shear is not None
        out = rollout(model, State(r0, v0, S0, size), steps, traj.dt, box=traj.box, seed=seed,
                      boundary=halo if bool(halo.any()) and not sheared else None, prescribed=prescribed,
                      substeps=substeps, lees_edwards=traj.lees_edwards(start))
    return out.r


def stability_at(model: MetriplecticModel, traj: Trajectory, t: int):
    """:func:`colloidcg.core.stability.stable_substeps` of ``model`` at frame index ``t`` of
    ``traj`` (the particles present there): the integration steps per frame its rollouts
    from there need. None with fewer than 2 particles."""
    from ..core.stability import stable_substeps

    idx = torch.nonzero(traj.present[t]).squeeze(-1)
    if idx.numel() < 2:
        return None
    r, shear = traj.pos[t, idx], traj.shear_at(t)
    with torch.no_grad():
        S = model.initial_S(r, None, traj.box, shear)
        return stable_substeps(model, [State(r, traj.vel[t, idx], S, particle_sizes(traj, idx))], traj.dt,
                               traj.box, shear=shear)


def validation_rollout(model: MetriplecticModel, traj: Trajectory, start: int, steps: int,
                       seed: int = 0) -> dict:
    """Rollout over frames start..start+steps, halo prescribed; MSD relative RMS error
    (``msd_rel_rms``, NaN with fewer than 2 steps or particles; inf when the rollout
    diverges) and both MSD curves (length^2, lags 1..steps)."""
    steps = min(steps, traj.n_frames - 1 - start)
    if steps < 2:
        return {"msd_rel_rms": float("nan")}
    idx, data_r, interior = data_window(traj, start, steps)
    if idx.numel() < 2:
        return {"msd_rel_rms": float("nan")}
    sim_r = window_rollout(model, traj, start, steps, idx, interior, seed)
    sel = interior if bool(interior.any()) else torch.ones_like(interior)
    m_sim = _msd_curve(sim_r[:, sel])[1:]
    m_dat = _msd_curve(data_r[:, sel])[1:]
    err = float(torch.sqrt(((m_sim - m_dat) / m_dat.clamp_min(1e-300)).square().mean()))
    if not math.isfinite(err):
        err = float("inf")
    return {"msd_rel_rms": err, "msd_sim": m_sim.tolist(), "msd_data": m_dat.tolist()}


@torch.no_grad()
def validate_epoch(model: MetriplecticModel, sampler: TransitionSampler, opts: LossOptions,
                   traj: Trajectory, rollout_steps: int, seed: int) -> dict:
    """``val_nll``: the mean loss of the sampler's validation batches (NaN without any);
    ``val_msd_rel_rms``: :func:`validation_rollout` from the frame before the first
    validation frame (frame 0 without validation frames); ``n_val``: validation batches."""
    model.eval()
    if opts.carry is not None:   # carried-S windows start from S carried with the trained weights
        opts.carry.refresh(model)
    losses = [float(batch_loss(model, b, opts)) for b in sampler.validation()]
    val_nll = float(np.mean(losses)) if losses else float("nan")
    vf = list(sampler.validation_frames)
    start = (vf[0] - 1) if vf else 0
    vr = validation_rollout(model, traj, start, rollout_steps, seed=seed)
    return {"val_nll": val_nll, "val_msd_rel_rms": vr["msd_rel_rms"], "n_val": len(losses)}


def selection_score(select: str, val: dict, train_nll: float) -> float:
    """The score (lower is better) that picks the best epoch. "val_nll": the held-out NLL,
    inf when the validation rollout diverged; "val_msd": the rollout's MSD error. When the
    chosen score is not finite it falls back to the other, then to the training NLL."""
    val_nll, msd = val["val_nll"], val["val_msd_rel_rms"]
    if select == "val_msd" or not math.isfinite(val_nll):
        if math.isfinite(msd):
            return msd
        return val_nll if math.isfinite(val_nll) else train_nll
    return val_nll if math.isfinite(msd) or not val["n_val"] else float("inf")
