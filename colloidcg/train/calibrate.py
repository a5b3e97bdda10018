"""Calibration: a new model's scales from the data (:func:`build_model`, :func:`force_scale`)
and the trained model's learned pair energy for the report (:func:`pair_energy_report`).

This is the one module of :mod:`colloidcg.train` that reaches into the model's internals
(its pair functions, kernel, encoder normalisation, raw friction weight, force terms).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from ..core.graph import find_pairs
from ..core.model import MetriplecticModel, State
from ..core.nets import inv_softplus
from ..core.ou import coefficients as ou_coefficients, invert_rho1
from ..data import Trajectory
from ..errors import ColloidcgError
from .config import TrainConfig
from .measures import particle_sizes


def build_model(traj: Trajectory, cfg: TrainConfig, cutoff: float) -> MetriplecticModel:
    """A new model with ``cfg.model``'s architecture and interaction range ``cutoff``, its
    scales calibrated from ``traj``: friction and temperature from the velocities' variance
    and lag-1 correlation (read as frame averages of a Langevin velocity when
    ``frame_average``), reference volume, neighbour weight and encoder normalisation from a
    few frames, and U's stiffness by :func:`force_scale`. On ``cfg.device`` in ``cfg.dtype``;
    the weights' initialisation draws from torch's global generator."""
    tvel = peculiar_velocities(traj)
    vel = tvel[traj.mask]
    if vel.shape[0] < 2:
        raise ColloidcgError("trajectory: fewer than two usable velocities (particles must be tracked in consecutive frames)")
    v2 = float(vel.var(0).mean())
    if not math.isfinite(v2) or v2 <= 0:
        raise ColloidcgError("trajectory: velocities are all equal (particles do not move); nothing to learn")
    # lag-1 velocity correlation a; for the Euler-Maruyama AR(1) with FDT noise the
    # stationary variance is 2 theta / (m (1 + a)), so theta ~ m <v^2> (1 + a) / 2
    ok = traj.mask[1:] & traj.mask[:-1]
    a = float((tvel[1:][ok] * tvel[:-1][ok]).sum() / tvel[:-1][ok].square().sum()) \
        if bool(ok.any()) else 0.0
    a = min(max(a, -0.5), 0.95)
    arch = cfg.model
    frame_average = arch.frame_average
    if frame_average:
        # frame-averaged velocities of a Langevin particle: lag-1 correlation rho1(x) and
        # variance 2 phi2(x) kT/m, x = gamma dt (colloidcg.core.ou)
        x0 = min(max(invert_rho1(max(a, 1e-3)), 0.05), 50.0)
        theta = v2 / (2.0 * float(ou_coefficients(torch.tensor(x0, dtype=torch.float64)).phi2))
    else:
        # Euler-Maruyama AR(1): v_t+1 = (1 - gamma dt) v_t + noise, a = 1 - gamma dt
        x0 = min(max(1.0 - a, 0.05), 1.5)
        theta = v2 * (1.0 + a) / 2.0
    mcfg = replace(arch, dim=traj.dim, cutoff=cutoff, tau=traj.dt, mass_scale=1.0, theta_ref=theta,
                   frame_average=frame_average)
    if traj.size is not None:
        # reference size: the large particles' (a high quantile, robust to a tracker's
        # outliers), so that every pair range h (a_i + a_j) / 2 is at most the cutoff
        mcfg.size_scale = float(torch.quantile(traj.size.double(), 0.95))
        mcfg.size_column = cfg.size_column
    model = MetriplecticModel(mcfg)
    dtype = getattr(torch, cfg.dtype)
    model = model.to(dtype=dtype, device=cfg.device)
    # reference volume and encoder feature normalisation from a few frames
    feats, nbr_weight = [], []
    with torch.no_grad():
        for t in np.linspace(0, traj.n_frames - 1, min(5, traj.n_frames)).astype(int):
            r = traj.pos[t][traj.present[t]]
            sh = traj.shear_at(int(t))
            pairs = find_pairs(r, cutoff, traj.box, sh)
            nbr = model.neighbour_weight(r, pairs, traj.box, particle_sizes(traj, traj.present[t]), sh)
            nbr_weight.append(nbr)                                       # sum_j W(q_ij)
            feats.append(model.encoder.features(r, pairs, cutoff, traj.box, sh))
    # each energy term's scales from the neighbour weights: the density term's reference
    # volume, the deviatoric term's typical fabric
    model.calibrate(torch.cat(nbr_weight))
    if arch.substrate:
        # start the solvent friction gamma dt = x0 at the data's lag-1 velocity relaxation
        with torch.no_grad():
            model.raw_gamma0.fill_(inv_softplus(x0))
    f = torch.cat(feats)
    model.encoder.f_mean.copy_(f.mean(0))
    model.encoder.f_std.copy_(f.std(0).clamp_min(1e-6))
    model.update_config(stiffness=force_scale(model, traj))
    return model


def peculiar_velocities(traj: Trajectory) -> torch.Tensor:
    """(T, N, d) the velocities less the streaming velocity of a sheared box, v_x - rate y
    and its mean (``traj.vel`` itself otherwise): the thermal part that sets the
    temperature scale."""
    rate = traj.shear_rate
    if rate is None:
        return traj.vel
    vel = traj.vel.clone()
    vel[..., 0] = vel[..., 0] - rate * traj.pos[..., 1]
    if bool(traj.mask.any()):
        vel[..., 0] = vel[..., 0] - vel[..., 0][traj.mask].mean()     # the profile's offset
    return vel


@torch.no_grad()
def force_scale(model: MetriplecticModel, traj: Trajectory, max_frames: int = 8) -> float:
    """Least-squares factor lambda by which the model's conservative forces must be scaled
    to explain the data's mean velocity changes, y = lambda X:

    y = v_{t+1} - rho v_t (the velocity change the friction alone predicts removed),
    X = (F / m) dt F1 (frame-averaged models; Euler-Maruyama: F1 = 1), over a few frames.

    Used to set ``ModelConfig.stiffness``, U's bulk-modulus scale: dense colloids push on
    each other with forces of many kT per particle size, out of reach of a U initialised
    at the thermal scale. Returns a value clamped to [1e-2, 1e6] (1 when there is no signal).
    """
    model.update_config(stiffness=1.0)
    ts = [t for t in range(1, traj.n_frames - 1) if bool((traj.mask[t] & traj.mask[t + 1]).any())]
    if not ts:
        return 1.0
    ts = [ts[k] for k in np.linspace(0, int(0.8 * (len(ts) - 1)), min(max_frames, len(ts))).astype(int)]
    num = den = 0.0
    for t in ts:
        idx = torch.nonzero(traj.present[t] & traj.present[t + 1]).squeeze(-1)
        r, v = traj.pos[t, idx], traj.vel[t, idx]
        sh = traj.shear_at(t)
        pairs = find_pairs(r, model.config.cutoff, traj.box, sh)
        if pairs.shape[0] == 0:
            continue
        S = model.initial_S(r, pairs, traj.box, sh)
        ns = model.compute(State(r, v, S, particle_sizes(traj, idx)), pairs, traj.box, sh)
        x = ns.diss.gamma0 * traj.dt
        if model.frame_averaged:
            co = ou_coefficients(x)
            rho, f1 = co.rho1, co.F1
        else:
            rho, f1 = 1.0 - x, torch.ones_like(x)
        ok = traj.mask[t, idx] & traj.mask[t + 1, idx]
        y = (traj.vel[t + 1, idx] - rho.unsqueeze(-1) * v)[ok]
        X = (ns.force / ns.m * traj.dt * f1.unsqueeze(-1))[ok]
        num += float((X * y).sum())
        den += float(X.square().sum())
    lam = num / den if den > 0 else float("nan")
    if not math.isfinite(lam) or lam <= 0:
        return 1.0
    return float(min(max(lam, 1e-2), 1e6))


def pair_energy_report(model: MetriplecticModel, cutoff: float) -> dict | None:
    """The learned soft-sphere terms: contact distance b_k h (length units) and strength
    c_k theta_ref stiffness (energy units; the term's energy at full overlap); None for a
    model without the pair energy."""
    return model.term_reports().get("pair")
