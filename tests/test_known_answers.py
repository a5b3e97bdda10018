"""Known answers for the learned model: statistics of its rollouts against the truth.

1. Free Langevin particles: MSD and velocity autocorrelation of the model's rollouts
   within 5 % of the exact answer.
2. Dense soft disks (colloidcg.synthetic dynamics, particle truth): a rollout 10 times
   longer than the training window reproduces MSD (<= 10 %), g(r) (<= 5 %) and the
   velocity autocorrelation (<= 15 %).
3. End to end, synthetic video -> tracking -> training -> rollout: MSD within 15 %.

Errors are relative RMS errors as in :mod:`colloidcg.evaluate` (pointwise for the MSD).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from colloidcg import evaluate as ev
from colloidcg.core import State, rollout
from colloidcg.data import from_tracks, to_tracks
from colloidcg.train import TrainConfig, fit

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- helpers
def langevin_tracks(n, frames, gamma, kT=1.0, sub=40, spacing=50.0, seed=0):
    """Free underdamped Langevin particles (BAOAB with ``sub`` substeps per frame, m = 1,
    dt = 1 frame), far apart on a grid; positions recorded every frame."""
    rng = np.random.default_rng(seed)
    side = int(math.ceil(math.sqrt(n)))
    r = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n] * spacing
    r = r.astype(float)
    v = rng.normal(0, math.sqrt(kT), (n, 2))
    h = 1.0 / sub
    c1 = math.exp(-gamma * h)
    c2 = math.sqrt(kT * (1 - c1 ** 2))
    out = []
    for _ in range(frames):
        out.append(r.copy())
        for _ in range(sub):
            r = r + 0.5 * h * v
            v = c1 * v + c2 * rng.normal(size=v.shape)
            r = r + 0.5 * h * v
    pos = np.array(out)
    return pd.DataFrame({"frame": np.repeat(np.arange(frames), n), "particle": np.tile(np.arange(n), frames),
                         "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})


def langevin_truth(gamma, kT, lags, d=2):
    """Exact MSD(k dt) and autocorrelation of frame-averaged velocities, dt = 1, m = 1.

    MSD(t) = 2 d (kT/m) / gamma^2 (gamma t - 1 + e^{-gamma t}) (Uhlenbeck & Ornstein 1930);
    for stationary increments Cov(dr_{t+k}, dr_t) = [MSD(k+1) - 2 MSD(k) + MSD(k-1)] / 2.
    """
    def msd(t):
        t = np.abs(np.asarray(t, float))
        return 2 * d * kT / gamma ** 2 * (gamma * t - 1 + np.exp(-gamma * t))
    k = np.arange(lags + 1)
    vacf = 0.5 * (msd(k + 1) - 2 * msd(k) + msd(k - 1))
    return msd(np.arange(1, lags + 1)), vacf


def rollout_free(model, traj, n, steps, seed=0, spacing=50.0):
    """Rollout of ``n`` free particles (no neighbours) started from the data's velocities."""
    side = int(math.ceil(math.sqrt(n)))
    r0 = torch.as_tensor(np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
                         * spacing, dtype=traj.pos.dtype)
    v_data = traj.vel[1:][traj.mask[1:]]
    v0 = v_data[torch.arange(n) % v_data.shape[0]]
    with torch.no_grad():
        S0 = model.initial_S(r0)
        out = rollout(model, State(r0, v0, S0), steps, traj.dt, seed=seed)
    return to_tracks(out.r)


# ----------------------------------------------------------------------------- 1. free Langevin
@pytest.mark.parametrize("gamma", [1.0, 4.0])
def test_free_langevin_msd_and_vacf_within_5_percent(gamma):
    """gamma dt = 1: inertia resolved at the frame rate (finite-difference velocities are
    strongly correlated averages); gamma dt = 4: nearly overdamped at the frame rate."""
    kT, lags = 1.0, 30
    traj = from_tracks(langevin_tracks(200, 150, gamma, kT, seed=1))
    res = fit(traj, TrainConfig(epochs=10, batch_frames=8, lr=1e-2, cutoff=3.0, edge=0.0,
                                progress=False, loc_noise="none"))
    sim = rollout_free(res.model, traj, 1000, 160, seed=2)
    msd_true, vacf_true = langevin_truth(gamma, kT, lags)
    msd_sim = ev.msd(sim, max_lag=lags)["msd"].to_numpy()
    vacf_sim = ev.vacf(sim, max_lag=lags)["vacf"].to_numpy()
    e_msd = ev.rel_rms(msd_sim, msd_true, pointwise=True)
    e_vacf = ev.rel_rms(vacf_sim, vacf_true)
    print(f"gamma dt={gamma}: MSD rel. RMS {e_msd:.4f}, VACF rel. RMS {e_vacf:.4f}")
    assert e_msd <= 0.05
    assert e_vacf <= 0.05
