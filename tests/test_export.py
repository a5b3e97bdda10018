"""Model bundles: contents, the compiled model running with torch alone and agreeing with the
eager model to 1e-10, rollout.py reproducing colloidcg simulate, reloading
(colloidcg.load_model, simulate), clear errors for bad bundles."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

import colloidcg
from colloidcg.cli import main
from colloidcg.core.graph import find_pairs
from colloidcg.core.model import MetriplecticModel, ModelConfig, State
from colloidcg.core.persist import save_model
from colloidcg.errors import ColloidcgError, OutputExistsError
from colloidcg.export import export_bundle, read_bundle
from colloidcg.outputs import provenance, write_table

torch.set_num_threads(1)

FPS, UM = 20.0, 0.25


def _tracks(tmp_path):
    """A small tracks table (px, frames) with a sidecar, as tracking writes it."""
    rng = np.random.default_rng(0)
    n, T = 40, 8
    pos = rng.uniform(0, 60, (n, 2)) + np.cumsum(rng.normal(0, 0.3, (T, n, 2)), 0)
    df = pd.DataFrame({"frame": np.repeat(np.arange(T), n), "particle": np.tile(np.arange(n), T),
                       "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})
    path = tmp_path / "tracks" / "tracks.parquet"
    write_table(path, df, provenance("track", {"video": str(tmp_path / "movie.tif")}, {"diameter": 7},
                                     units={"x": "px", "fps": FPS, "um_per_px": UM}))
    return path


def _model(seed: int, **cfg) -> MetriplecticModel:
    torch.manual_seed(seed)
    if "stiffness" in ModelConfig.__dataclass_fields__:   # calibration constant of U's volume term
        cfg["stiffness"] = 3.0
    m = MetriplecticModel(ModelConfig(dim=2, cutoff=2.0, theta_ref=0.7, tau=0.3, **cfg)).double()
    with torch.no_grad():   # move away from the initial weights so that every term matters
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
        m.encoder.f_std.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    tracks = _tracks(tmp)
    out = {}
    for name, kw in {"substrate": dict(n_s=2, substrate=True, n_pair=4),
                     "deviatoric": dict(n_s=1, substrate=False, deviatoric=True)}.items():
        m = _model(len(out), **kw)
        mdir = tmp / f"model_{name}"
        save_model(m, mdir, {"calibration": {"um_per_px": UM, "fps": FPS, "box_px": None,
                                             "tracks": str(tracks)},
                             "train": {"epochs": 3}})
        (mdir / "report.json").write_text(json.dumps({"epochs_run": 3, "best_val_score": 0.25}))
        out[name] = (m, mdir, export_bundle(mdir, tmp / f"bundle_{name}", metrics={"msd_rel_rms": 0.1}))
    return tmp, tracks, out


def test_bundle_holds_weights_description_and_torchscript(bundles):
    tmp, tracks, out = bundles
    m, mdir, b = out["substrate"]
    assert {p.name for p in b.iterdir()} == {"bundle.json", "model.pt", "config.json", "torchscript",
                                              "driver.py", "rollout.py"}
    assert {p.name for p in (b / "torchscript").iterdir()} == {"model.pt"}
    d = read_bundle(b)
    assert d["architecture"]["n_s"] == 2 and d["architecture"]["cutoff"] == 2.0
    assert d["dt"] == pytest.approx(1 / FPS) and d["cutoff"] == 2.0
    assert d["units"]["length"] == "um" and d["units"]["time"] == "s"
    assert d["colloidcg_version"] == colloidcg.__version__
    prov = d["provenance"]["training_data"]
    assert prov["tracks"] == str(tracks)
    import hashlib
    assert prov["tracks_sha256"] == hashlib.sha256(tracks.read_bytes()).hexdigest()
    assert prov["tracks_sidecar"]["inputs"]["video"].endswith("movie.tif")
    assert d["metrics"]["training"]["best_val_score"] == 0.25
    assert d["metrics"]["evaluation"]["msd_rel_rms"] == 0.1
    ts = d["torchscript"]
    assert ts["file"] == "torchscript/model.pt" and ts["inputs"]["r"].endswith("um")
    assert any(k.startswith("ts.model.drift_rates(") for k in ts["methods"])
    assert any(k.startswith("ts.step(") for k in ts["methods"])
    assert ts["integrator"] == ("exact_ou" if b.name.endswith("substrate") else "pair_splitting")
    assert set(d["files"]) == {"model.pt", "config.json", "torchscript/model.pt", "driver.py", "rollout.py"}
    # weights reload exactly, through the public entry point
    m2, cfg = colloidcg.load_model(b)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    assert cfg["calibration"]["fps"] == FPS and cfg["bundle"]["bundle_version"] == 2
    m3, _ = colloidcg.load_model(mdir)   # a model directory works too
    assert torch.equal(m3.raw_mass, m.raw_mass)


# Runs with -I (no user site, no PYTHONPATH, no script dir) and with colloidcg's editable
# install finder removed, so only torch can be imported.
NO_COLLOIDCG = textwrap.dedent(r"""
    import sys
    sys.meta_path[:] = [f for f in sys.meta_path if "colloidcg" not in repr(f).lower()]
    sys.path[:] = [p for p in sys.path if "colloidcg" not in p and "/work/main" not in p]
    try:
        import colloidcg
    except ImportError:
        pass
    else:
        raise SystemExit("colloidcg is importable: the test would prove nothing")
""")
# Reads a state, writes the compiled model's results.
TORCH_ONLY = NO_COLLOIDCG + textwrap.dedent(r"""
    import torch
    case = torch.load(sys.argv[1])
    res = {}
    for name, b in case["bundles"].items():
        ts = torch.jit.load(b + "/torchscript/model.pt")
        m = ts.model
        for bx, box in (("open", None), ("box", case["box"])):
            r, v, S = case["r"], case["v"], case[name + "_S"]
            pairs = m.pairs(r, box)
            out = {"pairs": pairs}
            out["drift"] = m.drift_rates(r, v, S, pairs, box)
            out["cov"] = m.noise_covariance(r, v, S, pairs, 0.01, box)
            out["sample"] = m.noise_sample(r, v, S, pairs, 0.01, torch.Generator().manual_seed(7), box)
            out["energy"] = m.energy(r, v, S, pairs, box)
            g = torch.Generator().manual_seed(3)
            carry = ts.init(r, v, S, pairs, box, None, 0.01, g, True)
            out["step"] = tuple(ts.step(carry, pairs, box, None, 0.01, g, True))
            with torch.no_grad():
                out["S0"] = m.encode(r, pairs, box)
                out["drift_nograd"] = m.drift_rates(r, v, S, pairs, box)
            res[name + "_" + bx] = out
    torch.save(res, sys.argv[2])
""")
# Runs a bundle's rollout.py the same way: argv[1] the script, the rest its arguments.
RUN_ROLLOUT = NO_COLLOIDCG + textwrap.dedent(r"""
    import runpy
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
""")


def test_torchscript_runs_with_torch_alone_and_matches_the_model(bundles, tmp_path):
    from colloidcg.core.integrators import integrator_for

    _, _, out = bundles
    rng = torch.Generator().manual_seed(0)
    n = 30
    r = torch.rand(n, 2, generator=rng, dtype=torch.float64) * 6.0
    v = torch.randn(n, 2, generator=rng, dtype=torch.float64)
    box = torch.tensor([6.0, 6.5], dtype=torch.float64)
    case = {"r": r, "v": v, "box": box, "bundles": {k: str(b) for k, (_, _, b) in out.items()}}
    for name, (m, _, _) in out.items():
        with torch.no_grad():
            case[name + "_S"] = m.initial_S(r) + 0.2 * torch.randn(n, m.config.n_s, generator=rng, dtype=torch.float64)
    torch.save(case, tmp_path / "case.pt")
    script = tmp_path / "torch_only.py"
    script.write_text(TORCH_ONLY)
    proc = subprocess.run([sys.executable, "-I", str(script), str(tmp_path / "case.pt"), str(tmp_path / "res.pt")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = torch.load(tmp_path / "res.pt")

    def close(a, b):
        scale = float(b.detach().abs().max()) or 1.0
        return float((a.detach() - b.detach()).abs().max()) / scale

    for name, (m, _, _) in out.items():
        S = case[name + "_S"]
        for bx, bv in (("open", None), ("box", box)):
            got = res[f"{name}_{bx}"]
            pairs = find_pairs(r, m.config.cutoff, bv)
            assert torch.equal(got["pairs"], pairs)
            assert len(pairs) > 3 * n          # a dense enough state to test interactions
            st = State(r, v, S)
            ns = m.compute(st, pairs, bv)
            for a, b in zip(got["drift"], m.drift(st, pairs, bv, ns=ns)):
                assert close(a, b) < 1e-10
            for a, b in zip(got["drift_nograd"], got["drift"]):
                assert close(a, b) < 1e-12
            assert close(got["cov"], m.velocity_covariance(ns, 0.01)) < 1e-10
            g = torch.Generator().manual_seed(7)   # the same normal numbers the model draws
            for a, b in zip(got["sample"], m.noise(st, pairs, 0.01, generator=g, box=bv, ns=ns)):
                assert close(a, b) < 1e-10
            E, e = got["energy"]
            assert close(E, m.total_energy(st, pairs, bv)) < 1e-10
            assert close(e.sum(), E) < 1e-12
            assert close(got["S0"], m.initial_S(r, pairs, bv)) < 1e-10
            g = torch.Generator().manual_seed(3)
            integ = integrator_for(m)
            with torch.no_grad():
                want = integ.step(integ.init(r, v, S, pairs, bv, None, 0.01, g, True), pairs, bv, None, 0.01, g, True)
            for a, b in zip(got["step"], want):
                assert close(a, b) < 1e-10


def _rollout_script_matches_simulate(bundle, tracks, tmp_path, steps=6, seed=11, frame=2, size_column=None):
    """Run the bundle's rollout.py with torch alone on the rows of ``tracks`` (written as CSV
    in um) and colloidcg simulate on the same rows; return their largest relative
    differences of positions and velocities and the number of rows."""
    df = pd.read_parquet(tracks)
    sim = tmp_path / "sim.parquet"
    assert main(["simulate", str(bundle), "--init", str(tracks), "--steps", str(steps), "--seed", str(seed),
                 "--frame", str(frame), "-o", str(sim)]) == 0
    csv = df.copy()
    for c in ("x", "y", "x_image", "y_image"):
        if c in csv.columns:
            csv[c] *= UM
    rng = np.random.default_rng(5)           # velocity columns are ignored, as simulate ignores them
    csv["vx"], csv["vy"] = rng.normal(size=len(csv)), rng.normal(size=len(csv))
    csv.to_csv(tmp_path / "init.csv", index=False, float_format="%.17g")
    script = tmp_path / "run_rollout.py"
    script.write_text(RUN_ROLLOUT)
    proc = subprocess.run([sys.executable, "-I", str(script), str(bundle / "rollout.py"), "--init",
                           str(tmp_path / "init.csv"), "--steps", str(steps), "--seed", str(seed), "--frame",
                           str(frame), "-o", str(tmp_path / "out.csv")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = pd.read_parquet(sim).sort_values(["frame", "particle"]).reset_index(drop=True)
    b = pd.read_csv(tmp_path / "out.csv").sort_values(["frame", "particle"]).reset_index(drop=True)
    assert len(a) == len(b) and (a[["frame", "particle"]].to_numpy() == b[["frame", "particle"]].to_numpy()).all()
    pos_a, pos_b = a[["x", "y"]].to_numpy() * UM, b[["x", "y"]].to_numpy()
    vel_a, vel_b = a[["vx", "vy"]].to_numpy() * UM * FPS, b[["vx", "vy"]].to_numpy()
    moved = np.abs(pos_a - np.repeat(pos_a[: len(pos_a) // (steps + 1)], steps + 1, 0)).max()
    assert moved > 0
    return (np.abs(pos_a - pos_b).max() / np.abs(pos_a).max(), np.abs(vel_a - vel_b).max() / np.abs(vel_a).max(),
            len(a))


@pytest.mark.parametrize("name", ["substrate", "deviatoric", "float32 periodic"])
def test_rollout_script_with_torch_alone_reproduces_simulate(bundles, tmp_path, name):
    """The bundle's rollout.py (torch only) and colloidcg simulate, same rows and seed: the
    same trajectory to 1e-5 relative (a frame-averaged exact-OU model and a pair-splitting one,
    open boundaries with their halo; a float32 model in a periodic box)."""
    _, tracks, out = bundles
    if name == "float32 periodic":
        m = _model(7, n_s=1, substrate=True, n_pair=4).float()
        save_model(m, tmp_path / "model32", {"calibration": {"um_per_px": UM, "fps": FPS, "box_px": [64.0, 64.0]}})
        bundle = export_bundle(tmp_path / "model32", tmp_path / "bundle32")
        df = pd.read_parquet(tracks)
        df["x"], df["y"] = np.mod(df["x"], 64.0), np.mod(df["y"], 64.0)
        tracks = tmp_path / "periodic.parquet"
        write_table(tracks, df, provenance("track", {}, {}, units={"x": "px"}))
    else:
        bundle = out[name][2]
    dpos, dvel, n = _rollout_script_matches_simulate(bundle, tracks, tmp_path)
    assert n > 7 * 10 and dpos < 1e-5 and dvel < 1e-5
    if name == "substrate":
        # drift-free tracks with the image positions kept: the halo is measured from the
        # starting frame's view (the image extent moved by its drift), in both
        df = pd.read_parquet(tracks)
        df = df.assign(x_image=df["x"] - 6.0 * df["frame"], y_image=df["y"])
        drifting = tmp_path / "drifting.parquet"
        write_table(drifting, df, provenance("track", {}, {}, units={"x": "px"}))
        (tmp_path / "d").mkdir()
        dpos, dvel, n_view = _rollout_script_matches_simulate(bundle, drifting, tmp_path / "d")
        assert dpos < 1e-5 and dvel < 1e-5 and n_view != n


def test_simulate_and_info_accept_a_bundle(bundles, tmp_path, capsys):
    _, tracks, out = bundles
    _, _, b = out["substrate"]
    sim = tmp_path / "sim.parquet"
    assert main(["simulate", str(b), "--init", str(tracks), "--steps", "3", "-o", str(sim)]) == 0
    df = pd.read_parquet(sim)
    assert df["frame"].nunique() == 4 and np.isfinite(df[["x", "y"]].to_numpy()).all()
    assert json.loads(sim.with_suffix(".json").read_text())["inputs"]["model"] == str(b)
    capsys.readouterr()
    assert main(["info", str(b)]) == 0
    text = capsys.readouterr().out
    assert "bundle_version" in text and "tracks_sha256" in text and "rollout.py" in text
    assert main(["info", str(out["substrate"][1])]) == 0
    assert "calibration:" in capsys.readouterr().out


def test_export_cli_and_refusals(bundles, tmp_path, capsys):
    _, _, out = bundles
    mdir = out["deviatoric"][1]
    b = tmp_path / "b"
    assert main(["export", str(mdir), "-o", str(b)]) == 0
    capsys.readouterr()
    assert main(["export", str(mdir), "-o", str(b)]) == 2          # exists: refused
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(OutputExistsError):
        export_bundle(mdir, b)
    export_bundle(mdir, b, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary left
    assert main(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "c")]) == 2
    assert "model directory" in capsys.readouterr().err


def test_incompatible_or_damaged_bundle_gives_clear_errors(bundles, tmp_path):
    import shutil

    _, _, out = bundles
    src = out["substrate"][2]
    b = tmp_path / "b"
    shutil.copytree(src, b)
    desc = json.loads((b / "bundle.json").read_text())
    (b / "bundle.json").write_text(json.dumps({**desc, "bundle_version": 99}))
    with pytest.raises(ColloidcgError, match=r"bundle version 99 .*incompatible.*reads bundle version 2"):
        colloidcg.load_model(b)
    (b / "bundle.json").write_text(json.dumps(desc))
    with open(b / "model.pt", "ab") as fh:
        fh.write(b"0")
    with pytest.raises(ColloidcgError, match="model.pt does not match the checksum"):
        colloidcg.load_model(b)
    shutil.copy(src / "model.pt", b / "model.pt")
    (b / "torchscript" / "model.pt").unlink()
    with pytest.raises(ColloidcgError, match="incomplete, torchscript/model.pt is missing"):
        colloidcg.load_model(b)
    with pytest.raises(ColloidcgError, match="neither a model bundle"):
        colloidcg.load_model(tmp_path)
    with pytest.raises(ColloidcgError, match="no such model"):
        colloidcg.load_model(tmp_path / "missing")


def test_loaded_bundle_can_be_fine_tuned(bundles):
    """load_model gives a trainable model: a few optimiser steps on the transition
    likelihood of a batch lower it, and the exported weights are left untouched."""
    from colloidcg.core.loss import transition_nll

    _, _, out = bundles
    b = out["substrate"][2]
    model, _ = colloidcg.load_model(b)
    g = torch.Generator().manual_seed(1)
    r = torch.rand(40, 2, generator=g, dtype=torch.float64) * 8.0
    v = torch.randn(40, 2, generator=g, dtype=torch.float64)
    v_next = 0.5 * v + 0.3 * torch.randn(40, 2, generator=g, dtype=torch.float64)
    pairs = find_pairs(r, model.config.cutoff)
    with torch.no_grad():
        S = model.initial_S(r, pairs)
    valid = torch.ones(40, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        nll, _ = transition_nll(model, State(r, v, S), v_next, valid, pairs, 0.05)
        nll.backward()
        opt.step()
        losses.append(float(nll.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    fresh, _ = colloidcg.load_model(b)
    assert torch.equal(fresh.raw_mass, out["substrate"][0].raw_mass)


def test_model_with_per_particle_sizes_exports_with_a_size_input(tmp_path):
    """A model with per-particle sizes: the bundle's modules take the sizes as their optional
    last input and agree with the model to 1e-10; without sizes they refuse."""
    tracks = _tracks(tmp_path)
    m = _model(5, n_s=1, substrate=True, deviatoric=True, size_scale=8.0, size_column="size", n_pair=3)
    mdir = tmp_path / "model_sized"
    save_model(m, mdir, {"calibration": {"um_per_px": UM, "fps": FPS, "box_px": None, "tracks": str(tracks)},
                         "train": {"epochs": 3}})
    b = export_bundle(mdir, tmp_path / "bundle_sized")
    assert read_bundle(b)["architecture"]["size_scale"] == 8.0
    import warnings
    with warnings.catch_warnings():       # torch 2.x marks TorchScript deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        ts = torch.jit.load(str(b / "torchscript" / "model.pt")).model
    rng = torch.Generator().manual_seed(1)
    n = 30
    r = torch.rand(n, 2, generator=rng, dtype=torch.float64) * 6.0
    v = torch.randn(n, 2, generator=rng, dtype=torch.float64)
    size = torch.where(torch.rand(n, generator=rng) < 0.5, 8.0, 8.0 / 1.4).to(torch.float64)
    box = torch.tensor([6.0, 6.5], dtype=torch.float64)
    with torch.no_grad():
        S = m.initial_S(r, None, box)
    pairs = find_pairs(r, m.config.cutoff, box)
    st = State(r, v, S, size)
    ns = m.compute(st, pairs, box)
    assert 0 < len(ns.geom.pairs) < len(pairs)      # small pairs have a shorter range

    def close(a, b):
        return float((a.detach() - b.detach()).abs().max()) / (float(b.detach().abs().max()) or 1.0)

    for a, want in zip(ts.drift_rates(r, v, S, pairs, box, size), m.drift(st, pairs, box, ns=ns)):
        assert close(a, want) < 1e-10
    assert close(ts.noise_covariance(r, v, S, pairs, 0.01, box, size), m.velocity_covariance(ns, 0.01)) < 1e-10
    assert close(ts.energy(r, v, S, pairs, box, size)[0], m.total_energy(st, pairs, box)) < 1e-10
    got = ts.noise_sample(r, v, S, pairs, 0.01, torch.Generator().manual_seed(7), box, size)
    for a, want in zip(got, m.noise(st, pairs, 0.01, generator=torch.Generator().manual_seed(7), box=box, ns=ns)):
        assert close(a, want) < 1e-10
    with pytest.raises(Exception, match="size"):
        ts.drift_rates(r, v, S, pairs, box)
