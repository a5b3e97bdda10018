"""How many integration steps per frame a rollout needs (colloidcg.core.stability).

- The step matrices' stability bounds against their closed forms: leapfrog-type schemes
  (semi-implicit Euler-Maruyama, pair splitting) without friction are stable exactly for
  h sqrt(kappa) < 2; the exact-OU step with the force held is never stable without friction
  and, overdamped, needs h kappa / gamma < 2.
- The power iteration's lambda_max equals the largest eigenvalue of the energy's Hessian
  computed by automatic differentiation (a trained model, 12 particles).
- Known answer from another simulator (LAMMPS Brownian dynamics of WCA disks, skipped
  without LAMMPS): a model trained at the frame rate melts the liquid at one step per frame
  (with a warning), and keeps its g(r) with substeps="auto".
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from colloidcg import evaluate as ev
from colloidcg.core.config import State
from colloidcg.core.stability import (UnstableRolloutWarning, largest_curvature, spectral_radius,
                                      stable_substeps, substeps_for)
from colloidcg.md.lammps import lammps_available
from colloidcg.simulate import simulate
from colloidcg.train import TrainConfig, train_tracks

HAVE_LAMMPS, LAMMPS_WHY = lammps_available()


@pytest.mark.parametrize("scheme", ["EulerMaruyama", "PairSplitting"])
def test_leapfrog_schemes_are_stable_below_two_over_omega(scheme):
    kappa = 9.0                         # omega = 3: the bound is h = 2/3
    assert spectral_radius(scheme, kappa, 0.0, 0.99 * 2 / 3) == pytest.approx(1.0, abs=1e-9)
    assert spectral_radius(scheme, kappa, 0.0, 1.01 * 2 / 3) > 1.1
    # friction damps: strictly inside the unit circle below the bound
    assert spectral_radius(scheme, kappa, 0.5, 0.5) < 1.0


def test_exact_ou_step_needs_friction_and_h_below_two_gamma_over_kappa():
    for h in (1e-3, 0.1, 1.0):
        assert spectral_radius("ExactOU", 4.0, 0.0, h) > 1.0     # explicit Euler for an oscillation
    gamma, kappa = 100.0, 250.0                                    # overdamped: h < 2 gamma / kappa = 0.8
    assert spectral_radius("ExactOU", kappa, gamma, 0.75) < 1.0
    assert spectral_radius("ExactOU", kappa, gamma, 0.85) > 1.0
    k, rho, capped = substeps_for("ExactOU", kappa, [gamma], 1.0, safety=1.0)
    assert (k, capped) == (2, False) and rho < 1.0
    k2, _, _ = substeps_for("ExactOU", kappa, [gamma], 1.0, safety=2.0)
    assert k2 == 3                                                 # h < 0.4
    # no friction at all: capped, reported
    assert substeps_for("ExactOU", kappa, [0.0], 1.0, max_substeps=16)[2] is True


def _small_model():
    rng = np.random.default_rng(0)
    n, side, frames = 40, 80.0, 12
    pos = rng.uniform(0, side, (n, 2))
    rows = []
    for f in range(frames):
        pos = np.mod(pos + rng.normal(0, 0.5, pos.shape), side)
        rows.append(pd.DataFrame({"frame": f, "particle": np.arange(n), "x": pos[:, 0], "y": pos[:, 1]}))
    df = pd.concat(rows, ignore_index=True)
    torch.manual_seed(0)
    res = train_tracks(df, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=1, progress=False, loc_noise="none", cutoff=20.0, seed=0),
                       box_px=[side, side])
    return res.model.double(), side


def test_power_iteration_matches_the_autograd_hessian():
    model, side = _small_model()
    box = torch.tensor([side, side], dtype=torch.float64)
    rng = np.random.default_rng(1)
    # a dense cluster of 12 particles, so that the pair energy is stiff
    r = torch.tensor(30.0 + rng.uniform(0, 14.0, (12, 2)), dtype=torch.float64)
    pairs = model.pairs(r, box)
    S = model.initial_S(r, pairs, box)

    def energy(x):
        t = model.terms_of(x.reshape(-1, 2), torch.zeros_like(r), S, pairs, box, None)
        return t.energy.sum() + t.pair_energy.sum()

    H = torch.autograd.functional.hessian(energy, r.reshape(-1))
    exact = float(torch.linalg.eigvalsh(H).max())
    assert exact > 0
    got = largest_curvature(model, State(r, torch.zeros_like(r), S), pairs, box, iterations=200)
    assert got == pytest.approx(exact, rel=1e-3)


def wca_liquid(n, frames, seed):
    import tempfile
    from pathlib import Path

    from colloidcg.md.lammps import brownian_mixture_2d, mixture_tracks

    with tempfile.TemporaryDirectory() as tmp:
        run = brownian_mixture_2d(Path(tmp), n=n, frames=frames, dump_every=50, equilibrate=20000, seed=seed)
        return mixture_tracks(run, 16.0)


def gr(tracks, side, frames):
    t = tracks.assign(x=np.mod(tracks["x"], side), y=np.mod(tracks["y"], side))
    return ev.rdf(t, box_px=[side, side], max_frames=frames, r_max=56.0, bins=28)["g"]


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LAMMPS, reason=f"LAMMPS unavailable: {LAMMPS_WHY}")
def test_wca_disks_from_lammps_melt_at_one_step_and_hold_with_auto_substeps():
    """Measured (seed 11, 400 disks at area fraction 0.7, 0.01 Brownian times per frame, 6
    epochs): one step per frame melts the liquid (g(r) about 60 % off after 10 frames); the
    stiffest mode asks for 2 steps at the starting configuration and auto takes 3-4 (its
    safety factor 2), which keep g(r) within about 7 %."""
    df, side = wca_liquid(400, 100, seed=11)
    torch.manual_seed(0)
    res = train_tracks(df, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=6, lr=1e-2, progress=False, loc_noise="none", cutoff=24.0,
                                   size_column="diameter", seed=0), box_px=[side, side])
    cfg = {"calibration": res.report["calibration"]}
    assert res.report["rollout_stability"]["substeps"] >= 3      # the training report says so too
    g_data = gr(df, side, 100)
    meta = {"meta": {"box_px": [side, side]}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        one = simulate(res.model, cfg, df, meta, steps=20, frame=50, seed=0)
    assert any(issubclass(w.category, UnstableRolloutWarning) for w in caught)
    auto = simulate(res.model, cfg, df, meta, steps=20, frame=50, seed=0, substeps="auto")
    st = auto.parameters["stability"]
    print(f"auto: {st}; one step g(r) error {ev.rel_rms(gr(one.tracks[one.tracks.frame > 60], side, 20), g_data):.3f}, "
          f"auto {ev.rel_rms(gr(auto.tracks[auto.tracks.frame > 60], side, 20), g_data):.3f}")
    assert auto.parameters["substeps"] == st["substeps"] >= 3 and not st["capped"]
    assert ev.rel_rms(gr(one.tracks[one.tracks.frame > 60], side, 20), g_data) > 0.3
    assert ev.rel_rms(gr(auto.tracks[auto.tracks.frame > 60], side, 20), g_data) < 0.12


def test_auto_substeps_on_a_soft_model_and_bad_values():
    """A soft model needs no extra steps (no warning at one step); bad values are refused."""
    model, side = _small_model()
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"frame": np.repeat([0, 1, 2], 30), "particle": np.tile(np.arange(30), 3),
                       "x": np.tile(rng.uniform(0, side, 30), 3), "y": np.tile(rng.uniform(0, side, 30), 3)})
    cfg = {"calibration": {"um_per_px": 1.0, "fps": 1.0, "box_px": [side, side]}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnstableRolloutWarning)
        sim = simulate(model, cfg, df, steps=2, seed=0, substeps="auto")
    assert sim.parameters["substeps"] == sim.parameters["stability"]["substeps"] >= 1
    assert sim.parameters["substeps_requested"] == "auto"
    from colloidcg.simulate import tracks_stability
    assert tracks_stability(model, cfg, df).to_dict() == sim.parameters["stability"]   # the same check
    from colloidcg.errors import ParameterError
    for bad in (0, "fast", 1.5, True):
        with pytest.raises(ParameterError, match="substeps"):
            simulate(model, cfg, df, steps=2, substeps=bad)
    st = stable_substeps(model, [State(torch.tensor(df[df.frame == 0][["x", "y"]].to_numpy()),
                                       torch.zeros(30, 2, dtype=torch.float64),
                                       torch.zeros(30, 1, dtype=torch.float64))], 1.0,
                         torch.tensor([side, side], dtype=torch.float64))
    assert math.isfinite(st.kappa) and st.integrator == "ExactOU"


def test_transport_calibration_sets_the_floor_of_auto_substeps():
    """A friction calibrated to the MSD (transport 'msd') with 4 steps per frame is recorded
    in the model (transport_substeps) and taken by substeps='auto'; one step warns."""
    rng = np.random.default_rng(3)
    n, side = 30, 60.0
    pos = rng.uniform(0, side, (n, 2))
    rows = []
    for f in range(14):
        pos = np.mod(pos + rng.normal(0, 0.6, pos.shape), side)
        rows.append(pd.DataFrame({"frame": f, "particle": np.arange(n), "x": pos[:, 0], "y": pos[:, 1]}))
    df = pd.concat(rows, ignore_index=True)
    res = train_tracks(df, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=1, progress=False, loc_noise="none", cutoff=12.0, seed=0, transport="msd"),
                       box_px=[side, side])
    assert res.model.config.transport_substeps == res.report["transport"]["substeps"] >= 4
    cfg = {"calibration": res.report["calibration"]}
    sim = simulate(res.model, cfg, df, steps=2, seed=0, substeps="auto")
    assert sim.parameters["substeps"] >= res.model.config.transport_substeps
    assert sim.parameters["stability"]["calibrated_substeps"] == res.model.config.transport_substeps
    with pytest.warns(UnstableRolloutWarning, match="calibrated with"):
        simulate(res.model, cfg, df, steps=2, seed=0, substeps=1)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LAMMPS, reason=f"LAMMPS unavailable: {LAMMPS_WHY}")
@pytest.mark.parametrize("lammps_seed", [11, 21])
def test_known_answer_on_lammps_wca_disks_with_msd_transport_and_auto_substeps(lammps_seed):
    """The core's dense known answer (MSD / g(r) / VACF within 10 / 5 / 15 % over a 10x
    rollout) on LAMMPS Brownian WCA disks at area fraction 0.6, with the recipe for steep
    contacts: transport 'msd' and substeps 'auto' (benchmarks/known_answer_lammps.py;
    measured 9.3 / 4.1 / 11.2 % on seed 11, 3.7 / 3.3 / 7.2 % on seed 21)."""
    from bench_helpers import load_benchmark
    from test_known_answers import rollout_errors

    from colloidcg.core import rollout
    from colloidcg.data import from_tracks, to_tracks
    from colloidcg.train import fit

    bench = load_benchmark("known_answer_lammps")
    WINDOW = bench.WINDOW
    df, side = bench.lammps_truth(0.6, lammps_seed)
    traj = from_tracks(df[df["frame"] < WINDOW], box_px=[side, side], size_column="diameter")
    res = fit(traj, TrainConfig(epochs=20, lr=1e-2, progress=False, loc_noise="none", seed=0, transport="msd"))
    r0, v0 = traj.pos[1], traj.vel[1]
    with torch.no_grad():
        S0 = res.model.initial_S(r0, None, traj.box)
        auto = stable_substeps(res.model, [State(r0, v0, S0, traj.size)], traj.dt, traj.box).substeps
        out = rollout(res.model, State(r0, v0, S0, traj.size), 10 * WINDOW, traj.dt, box=traj.box, seed=1,
                      substeps=auto)
    e_msd, e_g, e_vacf = rollout_errors(to_tracks(out.r, first_frame=1), df, side, 10 * WINDOW)
    print(f"LAMMPS seed {lammps_seed}: {auto} substeps, MSD {e_msd:.3f} g(r) {e_g:.3f} VACF {e_vacf:.3f}")
    assert auto >= res.model.config.transport_substeps >= 4
    assert e_msd <= 0.10 and e_g <= 0.05 and e_vacf <= 0.15
