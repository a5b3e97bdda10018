"""``colloidcg demo``: the README's first command runs every stage on the sample video."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from colloidcg.cli import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One demo run shared by the tests: (output folder, what it printed, torch's thread
    count before and after it)."""
    import contextlib
    import io

    import torch

    from colloidcg.cli.demo import DEMO_TORCH_THREADS

    out = tmp_path_factory.mktemp("demo") / "demo"
    threads = torch.get_num_threads()
    torch.set_num_threads(DEMO_TORCH_THREADS + 1)     # other than the demo's own, to see it restored
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            assert main(["demo", "-o", str(out), "--epochs", "1", "--quiet"]) == 0
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    return out, text.getvalue(), (DEMO_TORCH_THREADS + 1, after)


@pytest.fixture(scope="module")
def demo_out(demo_run):
    return demo_run[0]


def test_demo_tracks_the_sample_to_its_truth(demo_out):
    acc = json.loads((demo_out / "tracking_accuracy.json").read_text())
    assert acc["recall"] >= 0.99 and acc["precision"] >= 0.99
    assert acc["rms_error"] < 0.15          # px, particles away from the edges
    side = json.loads((demo_out / "track" / "tracks.json").read_text())
    assert side["parameters"]["subtract_drift"] is True


def test_demo_writes_rearrangements_and_d2min_picture(demo_out):
    table = pd.read_parquet(demo_out / "rearrangements" / "rearrangements.parquet")
    events = pd.read_parquet(demo_out / "rearrangements" / "events.parquet")
    assert table["rearranging"].any() and len(events) >= 1
    side = json.loads((demo_out / "rearrangements" / "rearrangements.json").read_text())
    assert 0.0 <= side["softness_baseline"]["auc"] <= 1.0
    import matplotlib.image as mpimg
    img = mpimg.imread(demo_out / "d2min.png")
    assert img.shape[0] > 200 and img.shape[1] > 200 and img[..., :3].std() > 0.05   # a drawn picture


def test_demo_trains_simulates_and_reports(demo_out):
    cfg = json.loads((demo_out / "model" / "config.json").read_text())
    assert cfg["calibration"]["fps"] == pytest.approx(100.0) and cfg["calibration"]["um_per_px"] == pytest.approx(0.1)
    report = json.loads((demo_out / "model" / "report.json").read_text())
    assert report["epochs_run"] == 1 and math.isfinite(report["history"][0]["train_nll"])
    sim = pd.read_parquet(demo_out / "simulate" / "sim.parquet")
    data = pd.read_parquet(demo_out / "track" / "tracks.parquet")
    assert {"frame", "particle", "x", "y"} <= set(sim.columns)
    assert sim["frame"].min() == data["frame"].min() + 1 and sim["frame"].max() == data["frame"].max()
    assert np.isfinite(sim[["x", "y"]].to_numpy()).all()
    # the halo particles are prescribed, not reported: every simulated particle starts inside
    start = sim[sim["frame"] == sim["frame"].min()]
    assert len(start) < data[data["frame"] == start["frame"].iloc[0]].shape[0]
    metrics = json.loads((demo_out / "report" / "metrics.json").read_text())
    for key in ("msd_rel_rms", "vacf_rel_rms", "rdf_rel_rms"):
        assert metrics[key] is not None and metrics[key] >= 0
    assert {"msd.png", "rdf.png", "vacf.png"} <= {p.name for p in (demo_out / "report").iterdir()}
    bundle = json.loads((demo_out / "bundle" / "bundle.json").read_text())
    assert bundle["cutoff"] == pytest.approx(cfg["model"]["cutoff"])
    assert {p.name for p in (demo_out / "bundle" / "torchscript").iterdir()} == {"model.pt"}
    assert (demo_out / "bundle" / "rollout.py").is_file() and (demo_out / "bundle" / "driver.py").is_file()


def test_demo_shows_and_times_every_stage(demo_run):
    _, text, (before, after) = demo_run
    assert after == before      # the demo's one torch thread is not left behind
    for k in range(1, 7):
        assert f"[{k}/6]" in text
    assert text.count("    took ") == 6 and "done in " in text


def test_demo_refuses_to_overwrite(demo_out, capsys):
    before = (demo_out / "track" / "tracks.parquet").stat().st_mtime_ns
    assert main(["demo", "-o", str(demo_out), "--epochs", "1", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (demo_out / "track" / "tracks.parquet").stat().st_mtime_ns == before
