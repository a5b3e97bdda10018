"""Training: a short fit learns free Langevin friction; bad input and divergence give clear
errors; the CLI chain train -> simulate -> evaluate writes its files."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from colloidcg.cli import main
from colloidcg.core.persist import load_model, save_model
from colloidcg.data import from_tracks
from colloidcg.errors import ColloidcgError, ParameterError
from colloidcg.outputs import provenance, write_table
from colloidcg.train import TrainConfig, TrainingDiverged, estimate_localisation_noise, fit

from test_known_answers import free_langevin, tracks_table

torch.set_num_threads(1)


def langevin(n=60, frames=40, gamma=5.0, kT=1.0, sub=20, L=60.0, seed=0, loc=0.0):
    """Free underdamped Langevin particles (BAOAB, no forces), recorded every frame."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(0, L, (n, 2))
    v = rng.normal(0, math.sqrt(kT), (n, 2))
    pos = free_langevin(r, v, frames, gamma, kT, sub, rng)
    return tracks_table(pos + rng.normal(0, loc, (frames, n, 2)))


FAST = dict(epochs=3, batch_frames=8, lr=1e-2, cutoff=3.0, edge=0.0, progress=False, val_rollout_steps=5)


def test_fit_learns_velocity_relaxation_of_free_particles():
    traj = from_tracks(langevin(frames=60))
    res = fit(traj, TrainConfig(**{**FAST, "epochs": 4, "lr": 1e-2}, loc_noise="none"))
    assert res.history[-1]["train_nll"] < res.history[0]["train_nll"]
    m = res.model
    with torch.no_grad():
        r0 = traj.pos[1]
        S = m.initial_S(r0)
        from colloidcg.core import State, find_pairs
        pairs = find_pairs(r0, m.config.cutoff)
        ns = m.compute(State(r0, traj.vel[1], S), pairs)
        gamma_dt = float(ns.diss.gamma0.mean()) * traj.dt
        kT_over_m = float((ns.thermo.theta / ns.m).mean())
    # truth: gamma dt = 5, kT/m = 1. The frame-averaged velocities have lag-1 correlation
    # only 0.123; the model reads them as averages of a latent instantaneous velocity and
    # recovers the continuous-time friction (an AR(1) fit would give 1 - 0.123).
    print("gamma_dt", gamma_dt, "kT/m", kT_over_m)
    assert 4.0 < gamma_dt < 6.0
    assert 0.85 < kT_over_m < 1.15
    assert set(res.report) >= {"epochs_run", "best_epoch", "cutoff", "localisation_noise", "particle_steps_per_s"}


def test_localisation_noise_estimate():
    traj = from_tracks(langevin(frames=40, gamma=50.0, loc=0.3, seed=2))
    est = estimate_localisation_noise(traj)
    assert 0.2 < est < 0.4


def test_localisation_noise_estimate_caged_particles():
    """Particles rattling in cages (positions an AR(1) around fixed sites: successive
    displacements anti-correlated by the motion itself, as in dense suspensions) plus
    localisation noise sigma = 0.2. Motion alone gives C(1) = -V (1 - phi)^2 = -0.04 and
    C(2) = phi C(1); noise adds -sigma^2 = -0.04 to C(1) only. Taking all of -C(1) as noise
    would give 0.28; the estimate must stay near 0.2 (its bias here: sqrt(0.044) = 0.21)."""
    rng = np.random.default_rng(3)
    n, frames, phi, V, sigma = 400, 300, 0.9, 4.0, 0.2
    sites = rng.uniform(0, 400, (n, 2))
    u = rng.normal(0, math.sqrt(V), (n, 2))
    pos = np.empty((frames, n, 2))
    for t in range(frames):
        pos[t] = sites + u
        u = phi * u + rng.normal(0, math.sqrt(V * (1 - phi ** 2)), (n, 2))
    pos += rng.normal(0, sigma, pos.shape)
    df = pd.DataFrame({"frame": np.repeat(np.arange(frames), n), "particle": np.tile(np.arange(n), frames),
                       "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})
    est = estimate_localisation_noise(from_tracks(df))
    assert 0.18 < est < 0.235


def test_divergence_stops_with_message_and_keeps_checkpoint(tmp_path):
    traj = from_tracks(langevin(frames=12))
    with pytest.raises(TrainingDiverged, match="diverged"):
        fit(traj, TrainConfig(**{**FAST, "lr": 1e30, "epochs": 4}), out_dir=tmp_path)


def test_no_usable_particles_and_bad_dt_messages():
    df = langevin(frames=10)
    traj = from_tracks(df)
    traj.dt = 0.0
    with pytest.raises(ColloidcgError, match="dt"):
        fit(traj, TrainConfig(**FAST))
    with pytest.raises(ColloidcgError, match="usable"):
        fit(from_tracks(df), TrainConfig(**{**FAST, "edge": 1e6}))


def test_model_directory_round_trip_and_incompatible_version(tmp_path):
    traj = from_tracks(langevin(frames=10))
    res = fit(traj, TrainConfig(**{**FAST, "epochs": 1}))
    save_model(res.model, tmp_path / "m")
    m2, cfg = load_model(tmp_path / "m")
    sd2 = m2.state_dict()
    for k, a in res.model.state_dict().items():
        assert torch.equal(a, sd2[k]), k
    assert m2.config.n_pair == TrainConfig().n_pair > 0 and any(k.endswith("potential.raw_b") for k in sd2)
    c = json.loads((tmp_path / "m" / "config.json").read_text())
    # a model saved before the pair energy existed (no n_pair key, no such weights) loads
    # as what it was: the density-kernel energy alone
    old = tmp_path / "old"
    save_model(fit(traj, TrainConfig(**{**FAST, "epochs": 1, "n_pair": 0})).model, old)
    c_old = json.loads((old / "config.json").read_text())
    del c_old["model"]["n_pair"]
    (old / "config.json").write_text(json.dumps(c_old))
    m_old, _ = load_model(old)
    assert m_old.config.n_pair == 0 and not hasattr(m_old, "pair_potential")
    # a model with the deviatoric energy of the earlier form (no fabric_ref) is refused
    dev = tmp_path / "dev"
    save_model(fit(traj, TrainConfig(**{**FAST, "epochs": 1, "deviatoric": True})).model, dev)
    assert load_model(dev)[0].config.fabric_ref > 0
    c_dev = json.loads((dev / "config.json").read_text())
    del c_dev["model"]["fabric_ref"]
    (dev / "config.json").write_text(json.dumps(c_dev))
    with pytest.raises(ColloidcgError, match=r"deviatoric energy .*retrain"):
        load_model(dev)
    c["format_version"] = 999
    (tmp_path / "m" / "config.json").write_text(json.dumps(c))
    with pytest.raises(ColloidcgError, match="incompatible"):
        load_model(tmp_path / "m")


def test_rearrangement_auc_reported():
    df = langevin(frames=16)
    rng = np.random.default_rng(0)
    df["rearranging"] = rng.random(len(df)) < 0.2
    res = fit(from_tracks(df), TrainConfig(**{**FAST, "epochs": 1, "aux_weight": 0.5}))
    auc = res.report["rearrangement_auc"]
    assert auc["n"] > 0 and 0.0 <= auc["S"] <= 1.0 and "aux" in auc


def vacancy_lattice_labels(seed, side=14, n_vac=16, frames=40, rate=0.03, noise=0.3):
    """Triangular lattice (spacing 10) with ``n_vac`` vacancies, static sites plus position
    noise; a particle with k vacant first-shell sites is labelled rearranging in a frame with
    probability rate * k (rare: ~1 % of rows). Returns the tracks with their labels."""
    from scipy.spatial import cKDTree
    rng = np.random.default_rng(seed)
    jj, ii = np.meshgrid(np.arange(side), np.arange(side))
    full = np.column_stack([(jj * 10.0 + (ii % 2) * 5.0).ravel(), (ii * 10.0 * math.sqrt(3) / 2).ravel()])
    vac = rng.choice(len(full), n_vac, replace=False)
    keep = np.ones(len(full), bool)
    keep[vac] = False
    p0 = full[keep]
    n = len(p0)
    k = np.isfinite(cKDTree(full[vac]).query(p0, k=6, distance_upper_bound=11.0)[0]).sum(1)
    pos = p0[None] + rng.normal(0, noise, (frames, n, 2))
    lab = rng.random((frames, n)) < rate * k[None]
    df = pd.DataFrame({"frame": np.repeat(np.arange(frames), n), "particle": np.tile(np.arange(n), frames),
                       "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel(), "rearranging": lab.ravel()})
    return df


def test_auxiliary_loss_without_positive_labels_is_a_clear_error():
    df = vacancy_lattice_labels(0, frames=8)
    df["rearranging"] = False
    with pytest.raises(ParameterError, match="aux_weight: the training frames hold 0 rearranging"):
        fit(from_tracks(df), TrainConfig(epochs=1, cutoff=24.0, edge=0.0, progress=False, aux_weight=1.0))


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_auxiliary_loss_teaches_S_rare_structural_labels(seed):
    """Rearrangements happen only next to vacancies and in ~1 % of rows. With the
    auxiliary loss (class-balanced, as the softness baseline's regression) S must rank
    the held-out frames' rows nearly as well as the ideal predictor, the number of vacant
    first-shell sites (AUC ~0.8), within 6 epochs. Unweighted, the rare positives hardly
    move the loss: S reached 0.61 and 0.62 here."""
    df = vacancy_lattice_labels(seed)
    res = fit(from_tracks(df), TrainConfig(epochs=6, batch_frames=8, lr=1e-2, cutoff=24.0, edge=0.0,
                                           progress=False, val_rollout_steps=5, aux_weight=1.0, seed=seed))
    assert res.report["rearrangement_auc"]["S"] >= 0.75


def test_cli_train_simulate_evaluate(tmp_path, capsys):
    tracks = tmp_path / "tracks.parquet"
    write_table(tracks, langevin(frames=16), provenance("test", {}, {}, meta={"fps": 10.0, "um_per_px": 0.2}))
    model = tmp_path / "model"
    assert main(["train", str(tracks), "-o", str(model), "--epochs", "2", "--quiet", "--cutoff", "0.6",
                 "--edge", "0"]) == 0
    for f in ("model.pt", "config.json", "report.json", "loss.png", "validation.png"):
        assert (model / f).exists(), f
    sim = tmp_path / "sim.parquet"
    assert main(["simulate", str(model), "--init", str(tracks), "--frame", "1", "--steps", "12",
                 "--seed", "3", "-o", str(sim)]) == 0
    out = pd.read_parquet(sim)
    assert set(out.columns) >= {"frame", "particle", "x", "y"} and out["frame"].nunique() == 13
    sim2 = tmp_path / "sim2.parquet"
    assert main(["simulate", str(model), "--init", str(tracks), "--frame", "1", "--steps", "12",
                 "--seed", "3", "-o", str(sim2), "--fast"]) == 0
    assert np.allclose(pd.read_parquet(sim2)[["x", "y"]], out[["x", "y"]], atol=1e-3)
    assert main(["evaluate", str(tracks), str(sim), "-o", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "metrics.json").exists()
    # bad inputs: one-line errors, exit code 2
    capsys.readouterr()
    assert main(["simulate", str(tmp_path), "--init", str(tracks), "--steps", "3", "-o", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colloidcg simulate: error:") and err.count("\n") == 1
    bad = tmp_path / "bad.parquet"
    write_table(bad, langevin(frames=2), {})
    assert main(["train", str(bad), "-o", str(tmp_path / "m2")]) == 2


def test_callback_sees_every_epoch_and_can_cancel():
    traj = from_tracks(langevin(frames=30))
    seen = []
    res = fit(traj, TrainConfig(**{**FAST, "epochs": 5}, loc_noise="none"),
              callback=lambda rec: seen.append(rec) or rec["epoch"] >= 2)
    assert [r["epoch"] for r in seen] == [1, 2]
    assert res.report["cancelled"] and not res.report["stopped_early"]
    assert res.report["epochs_run"] == 2 and all(math.isfinite(r["train_nll"]) for r in seen)


def _one_line(exc_info):
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


def test_bad_trajectories_give_one_line_errors():
    df = langevin(frames=10)
    traj = from_tracks(df)
    traj.pos[3, 5, 0] = float("nan")
    with pytest.raises(ColloidcgError, match="NaN") as e:
        fit(traj, TrainConfig(**FAST))
    _one_line(e)
    with pytest.raises(ColloidcgError, match="at least 3") as e:
        fit(from_tracks(df).frame_slice(0, 2), TrainConfig(**FAST))
    _one_line(e)
    # particles without neighbours: fine with substrate friction (free particles), an error
    # for a model whose only forces are pair interactions
    far = langevin(n=20, frames=10, L=1e4)
    with pytest.raises(ColloidcgError, match="no particle has a neighbour") as e:
        fit(from_tracks(far), TrainConfig(**{**FAST, "substrate": False}))
    _one_line(e)
    with pytest.raises(ColloidcgError, match="cutoff") as e:
        fit(from_tracks(df, box_px=[60.0, 60.0]), TrainConfig(**{**FAST, "cutoff": 25.0}))
    _one_line(e)
    for bad in ({"select": "best"}, {"multistep": 0}, {"cutoff": -1.0}):
        with pytest.raises(ColloidcgError) as e:
            fit(from_tracks(df), TrainConfig(**{**FAST, **bad}))
        _one_line(e)


def test_multistep_likelihood_is_used_in_training():
    traj = from_tracks(langevin(frames=20))
    one = fit(traj, TrainConfig(**{**FAST, "epochs": 1}, loc_noise="none"))
    three = fit(traj, TrainConfig(**{**FAST, "epochs": 1, "multistep": 3}, loc_noise="none"))
    a, b = one.history[0]["train_nll"], three.history[0]["train_nll"]
    assert math.isfinite(b)
    # the 3-step term adds a (positive-density, here > 1 nat) NLL to every batch
    assert b > a + 1.0


def test_cli_train_options_reach_the_configuration(tmp_path):
    tracks = tmp_path / "tracks.parquet"
    write_table(tracks, langevin(frames=12), provenance("test", {}, {}, meta={"fps": 10.0, "um_per_px": 0.2}))
    model = tmp_path / "model"
    assert main(["train", str(tracks), "-o", str(model), "--epochs", "1", "--quiet", "--edge", "0",
                 "--cutoff-factors", "1.5", "2.5", "--select", "val_msd", "--no-frame-average",
                 "--n-kernel", "3"]) == 0
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["train"]["cutoff_factors"] == [1.5, 2.5] and cfg["train"]["select"] == "val_msd"
    assert cfg["train"]["model"]["frame_average"] is False and cfg["model"]["n_kernel"] == 3
    assert cfg["train"]["model"]["n_kernel"] == 3   # the stored record reads back as the same options
    assert TrainConfig.from_dict(cfg["train"]).model.n_kernel == 3
    sel = json.loads((model / "report.json").read_text())["cutoff_selection"]
    tried = [c for c, _ in sel["candidates"]]
    assert tried == pytest.approx([1.5 * sel["nn_distance"], 2.5 * sel["nn_distance"]])


def test_cli_size_column(tmp_path, capsys):
    t = langevin(frames=10)
    t["size"] = np.where(t["particle"] % 2 == 0, 1.0, 1.4)
    tracks = tmp_path / "tracks.parquet"
    write_table(tracks, t, provenance("test", {}, {}, meta={"fps": 10.0, "um_per_px": 0.2}))
    model = tmp_path / "model"
    assert main(["train", str(tracks), "-o", str(model), "--epochs", "1", "--quiet", "--edge", "0",
                 "--cutoff", "0.6", "--size-column", "size"]) == 0
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["model"]["size_column"] == "size" and cfg["model"]["size_scale"] == pytest.approx(1.4)
    capsys.readouterr()
    assert main(["train", str(tracks), "-o", str(tmp_path / "m2"), "--epochs", "1", "--quiet",
                 "--size-column", "radius"]) == 2
    assert "radius" in capsys.readouterr().err


def test_seed_alone_sets_the_initial_weights_whatever_the_cutoff_selection_ran():
    """A fit whose cutoff was selected among candidates (short fits run first) ends exactly
    where a fit given that cutoff directly ends: same seed, same weights."""
    traj = from_tracks(langevin(n=40, frames=20))
    cfg = {**FAST, "epochs": 2, "loc_noise": "none", "cutoff": None, "cutoff_factors": (1.5, 2.5)}
    picked = fit(traj, TrainConfig(**cfg))
    assert len(picked.report["cutoff_selection"]["candidates"]) == 2
    direct = fit(traj, TrainConfig(**{**cfg, "cutoff": picked.report["cutoff"]}))
    a, b = picked.model.state_dict(), direct.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
