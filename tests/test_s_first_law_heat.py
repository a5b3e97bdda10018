"""Carried S with the first-law heat (``s_heat="work"``, issue 20): along a stationary
equilibrium film the carried S has no mean drift, whatever the model's temperature, while
the expected-drift heat of a model whose temperature does not match the data's motion
cools steadily (the vacancy control's failure); the option is threaded through training
and checked."""

import math

import numpy as np
import pytest
import torch

from colloidcg.data import from_tracks
from colloidcg.errors import ParameterError
from colloidcg.train import TrainConfig, build_model, fit
from colloidcg.train.carried import carry_along, check_heat

from test_known_answers import soft_disk_tracks
from test_train import FAST, langevin

torch.set_num_threads(1)


def _mean_rate(model, traj, loc_var, heat):
    """(mean, standard error) over particles of each particle's mean dS/dt (k_B per frame)
    over the interior frames 4..T-2 (away from the entry frame's prior and the last frame)."""
    rate = carry_along(model, traj, loc_var, heat=heat).dSdt[4:-1, :, 0]
    ok = torch.isfinite(rate)
    per = torch.where(ok, rate, torch.zeros_like(rate)).sum(0) / ok.sum(0)
    return float(per.mean()), float(per.std()) / math.sqrt(per.numel())


def test_stationary_film_has_no_mean_drift_with_the_first_law_heat():
    """Known answer (equilibrium soft disks, particle truth, periodic; an untrained model,
    so its temperature is not the film's): with the first-law heat the carried S has zero
    mean drift within 3 standard errors, without and with localisation noise of one rms
    step per frame and axis; the expected-drift heat of the same model cools by more than
    20 of its standard errors. (The kinetic terms telescope and the trapezoidal work of a
    time-reversible stationary process has zero mean.)"""
    df, side = soft_disk_tracks(80, 0.75, False, 40, seed=0, equilibration=100)
    clean = from_tracks(df, box_px=[side, side])
    torch.manual_seed(0)
    model = build_model(clean, TrainConfig(loc_noise="none").validate(), 18.0)
    step = float(clean.vel[2:].square().mean().sqrt()) * clean.dt
    rng = np.random.default_rng(1)
    noisy = df.copy()
    noisy["x"] += rng.normal(0, step, len(df))
    noisy["y"] += rng.normal(0, step, len(df))
    for traj, loc_var in ((clean, 0.0), (from_tracks(noisy, box_px=[side, side]), step ** 2)):
        work, se_w = _mean_rate(model, traj, loc_var, "work")
        drift, se_d = _mean_rate(model, traj, loc_var, "drift")
        print(f"loc var {loc_var:.3g}: mean dS/dt work {work:+.4f} +- {se_w:.4f}, drift {drift:+.4f} +- {se_d:.4f}")
        assert abs(work) < 3 * se_w
        assert drift < -20 * se_d


def test_first_law_heat_option_is_checked_and_trains():
    """``s_heat`` is validated (TrainConfig and the carried functions); a short carried
    training with the first-law heat runs, and S carried with it follows its booked rate,
    with no rate at a particle's last frame (no next position)."""
    with pytest.raises(ParameterError, match="s_heat"):
        TrainConfig(s_heat="entropy").validate()
    with pytest.raises(ParameterError, match="s_heat"):
        check_heat("realized")
    traj = from_tracks(langevin(n=16, frames=12))
    res = fit(traj, TrainConfig(**{**FAST, "epochs": 1, "batch_frames": 4}, s_memory="carried", s_window=3,
                                n_pair=0, s_heat="work"))
    assert math.isfinite(res.history[-1]["train_nll"])
    car = carry_along(res.model, traj, float(res.report["localisation_noise"]) ** 2, heat="work")
    both = traj.present[1:] & traj.present[:-1]
    step = car.S[1:] - car.S[:-1] - traj.dt * torch.nan_to_num(car.dSdt[:-1])
    assert float(step[both].abs().max()) < 1e-12                 # S follows its booked rate
    assert bool(torch.isnan(car.dSdt[-1]).all())                  # the last frame has no next position
