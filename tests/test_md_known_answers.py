"""Known answers from LAMMPS truth (issue 21, part 4), through colloidcg.md.known.

Short versions (default suite): the same path end to end on small systems. What they
assert is what holds at that size: the MD data read through md-read reproduce the exact
ideal-gas MSD and VACF (units, times and unwrapping are right), the pipeline trains (one
epoch), rolls out 10x the training window and evaluates, and the momentum-conserving star
model conserves total momentum in the periodic box. The targets on the learned model (MSD,
VACF, g(r) within 0.10 of the continued MD; the ideal gas's D and VACF within 5 % of the
exact ones) are asserted by the slow, full versions (pytest -m slow).
"""

from __future__ import annotations

import pytest

from colloidcg.md.lammps import lammps_available

HAVE_LAMMPS, WHY = lammps_available()
pytestmark = pytest.mark.skipif(not HAVE_LAMMPS, reason=f"LAMMPS unavailable: {WHY}")


def test_ideal_gas_short(tmp_path):
    from colloidcg.md.known import ideal_gas_answer

    r = ideal_gas_answer(tmp_path, "short", epochs=1)     # the model's numbers are only measured here
    assert r["train_report"]["epochs_run"] == 1
    assert r["rollout_frames"] >= 10 * r["train_frames"]
    # the LAMMPS truth, read back, is the exact Langevin free particle
    assert r["md_msd_rel_rms_vs_exact"] <= 0.05
    assert r["md_vacf_rel_rms_vs_exact"] <= 0.05
    assert abs(r["md_D"] - 1.0) <= 0.05
    for k in ("model_msd_rel_rms_vs_exact", "model_vacf_rel_rms_vs_exact", "model_D"):
        assert r[k] == r[k] and r[k] > 0            # finite, measured


def test_star_melt_short_momentum(tmp_path):
    from colloidcg.md.known import star_melt_answer

    # the friction as the likelihood fits it: the transport calibration (about half of this
    # test's time at "msd") is tested in tests/test_transport.py, where a scaled friction
    # keeps a pair-only model's momentum too; the full answer calibrates
    r = star_melt_answer(tmp_path, "short", transport="likelihood")
    assert r["transport_factor"] is None
    assert r["rollout_frames"] >= 10 * r["train_frames"]
    assert r["md_momentum_rel"] < 1e-6                  # the DPD melt conserves momentum
    assert r["momentum_drift_rel"] < 1e-9               # so does the model (to rounding)
    for k in ("msd_rel_rms", "vacf_rel_rms", "rdf_rel_rms"):
        assert r[k] == r[k]


@pytest.mark.slow
def test_ideal_gas_full(tmp_path):
    from colloidcg.md.known import ideal_gas_answer

    r = ideal_gas_answer(tmp_path, "full")
    assert r["md_msd_rel_rms_vs_exact"] <= 0.05 and r["md_vacf_rel_rms_vs_exact"] <= 0.05
    assert abs(r["D_rel_error"]) <= 0.05, r
    assert r["model_vacf_rel_rms_vs_exact"] <= 0.05, r


@pytest.mark.slow
def test_star_melt_full(tmp_path):
    from colloidcg.md.known import star_melt_answer

    # 125 stars of 4 x 4 beads, frames every 0.1 tau, 100 training frames, cutoff 5 sigma,
    # friction calibrated to the training window's MSD (transport "msd", factor ~1.25-1.28),
    # rollout 1000 frames with 4 pair-splitting steps each. Measured: MSD 0.067, VACF 0.090,
    # g(r) 0.063 (training seed 6 on the same MD: 0.078 / 0.075 / 0.058); without the
    # calibration MSD 0.12-0.13 (docs/simulation.md)
    r = star_melt_answer(tmp_path, "full")
    assert r["momentum_drift_rel"] < 1e-9, r
    assert r["msd_rel_rms"] <= 0.10, r
    assert r["vacf_rel_rms"] <= 0.10, r
    assert r["rdf_rel_rms"] <= 0.10, r


def test_brownian_mixture_3d_is_the_colloid_analogue(tmp_path):
    """The 3D WCA mixture under fix brownian: the stated volume fraction and composition,
    spheres never closer than their WCA contacts allow, and at short lag the MSD of free
    Brownian motion, 6 D0 t (D0 = kT / gamma = 1; slowed by the crowding, never faster)."""
    import numpy as np

    from colloidcg.md.lammps import brownian_mixture_2d, brownian_mixture_3d, mixture_tracks
    from colloidcg.neighbours import pairs

    run = brownian_mixture_3d(tmp_path / "bd", n=200, volume_fraction=0.3, frames=21, dump_every=5,
                              equilibrate=5000, seed=3)
    df, side = mixture_tracks(run, 1.0)
    assert {"x", "y", "z"} <= set(df.columns) and df["particle"].nunique() == 200
    first = df[df["frame"] == 0]
    assert np.mean(first["diameter"] == 1.4) == 0.5
    assert np.sum(np.pi / 6 * first["diameter"] ** 3) / side ** 3 == pytest.approx(0.3, rel=1e-9)
    box = np.full(3, side)
    p = np.mod(first[["x", "y", "z"]].to_numpy(), box)
    pr, d = pairs(p, 2.0, box, distances=True)
    sig = (first["diameter"].to_numpy()[pr[:, 0]] + first["diameter"].to_numpy()[pr[:, 1]]) / 2
    assert (d / sig).min() > 0.75                       # WCA at kT = 1: no deep overlaps
    # MSD over one frame (5 steps of 2e-4): below the free 6 D0 t, above half of it at phi 0.3
    w = df.pivot(index="frame", columns="particle", values=["x", "y", "z"])
    steps = np.stack([np.diff(w[a].to_numpy(), axis=0) for a in ("x", "y", "z")], -1)
    msd1 = float(np.mean(np.sum(steps ** 2, -1)))
    free = 6 * 1.0 * run["frame_dt"]
    assert 0.5 * free < msd1 < 1.05 * free, (msd1, free)
    # the 2D entry point still writes its record with the area fraction
    r2 = brownian_mixture_2d(tmp_path / "bd2", n=50, frames=2, dump_every=5, equilibrate=100, seed=3)
    assert r2["dim"] == 2 and r2["area_fraction"] == 0.7


def test_brownian_yukawa_2d_has_the_stated_pair_energy(tmp_path):
    """Charged colloids (screened Coulomb under fix brownian): the pair energy LAMMPS reports
    for the first dumped frame is the stated law summed over that frame's pairs,
    U(r) = A exp(-kappa r) / r with U(a) = coupling kT at the mean spacing a = 1, to the
    dump's precision; the cut drops less than 1e-3 kT; no two particles come closer than
    the repulsion allows at kT = 1; the MSD over one frame is near free diffusion's 4 D0 t."""
    import numpy as np

    from colloidcg.md.lammps import brownian_yukawa_2d, mixture_tracks
    from colloidcg.neighbours import pairs

    run = brownian_yukawa_2d(tmp_path / "yk", n=144, coupling=5.0, kappa=1.5, frames=11, dump_every=5,
                             equilibrate=2000, seed=4)
    A, kappa, cut = run["yukawa_A"], run["kappa"], run["cutoff"]
    assert A * np.exp(-kappa) == pytest.approx(5.0, rel=1e-12)
    assert A * np.exp(-kappa * cut) / cut < 1e-3 and run["box"] == [12.0, 12.0]
    df, side = mixture_tracks(run, 1.0)
    box = np.full(2, side)
    first = df[df["frame"] == df["frame"].min()]
    p = np.mod(first[["x", "y"]].to_numpy(), box)
    pr, d = pairs(p, cut, box, distances=True)
    mine = float(np.sum(A * np.exp(-kappa * d) / d)) / len(p)
    log = (tmp_path / "yk" / "log.lammps").read_text().splitlines()
    head = max(i for i, line in enumerate(log) if line.split()[:3] == ["Step", "Temp", "E_pair"])
    lammps = float(log[head + 1].split()[2])          # per atom (thermo_modify norm, LJ units)
    assert mine == pytest.approx(lammps, rel=2e-6)
    assert d.min() > 0.45                               # U(0.45 a) is about 25 kT here
    w = df.pivot(index="frame", columns="particle", values=["x", "y"])
    steps = np.stack([np.diff(w[a].to_numpy(), axis=0) for a in ("x", "y")], -1)
    msd1 = float(np.mean(np.sum(steps ** 2, -1)))
    free = 4 * 1.0 * run["frame_dt"]
    assert 0.6 * free < msd1 < 1.05 * free, (msd1, free)
