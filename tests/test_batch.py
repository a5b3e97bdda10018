"""colloidcg batch: discovery and colloidcg.toml rules, stages on a Dask LocalCluster and on a
real `dask scheduler` + `dask worker`, resume and idempotence, failures recorded, summary,
a self-contained report checked in headless Chromium, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from colloidcg.batch import VideoJob, discover, run_batch
from colloidcg.cli import main
from colloidcg.errors import ColloidcgError
from colloidcg.synthetic import SynthConfig, make_video


def _frames(seed: int) -> np.ndarray:
    cfg = SynthConfig(n_frames=12, width=64, height=64, diameter=8.0, area_fraction=0.6, seed=seed)
    return make_video(cfg).frames


def _tif(path: Path, frames: np.ndarray, fps: float | None = 100.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"axes": "TYX"}
    kw = {}
    if fps:
        meta.update(finterval=1.0 / fps, unit="micron")
        kw["resolution"] = (10.0, 10.0)   # 0.1 um per px
    tifffile.imwrite(path, frames, imagej=True, metadata=meta, **kw)
    return path


def _frame_folder(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        tifffile.imwrite(folder / f"frame_{i:03d}.tif", f)
    return folder


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """ROOT/a/v0.tif, b/v1.tif, b/frames/ (frames), b/c/frames/ (frames), b/c/broken.tif;
    b/colloidcg.toml: fps 50 and memory 2; b/c/colloidcg.toml: fps 25 (nearest wins)."""
    root = tmp_path_factory.mktemp("exp")
    _tif(root / "a" / "v0.tif", _frames(0))
    _tif(root / "b" / "v1.tif", _frames(1))
    _frame_folder(root / "b" / "frames", _frames(2))
    _frame_folder(root / "b" / "c" / "frames", _frames(3))
    (root / "b" / "c" / "broken.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    (root / "b" / "colloidcg.toml").write_text("[calibration]\nfps = 50.0\num_per_px = 0.2\n[track]\nmemory = 2\n")
    (root / "b" / "c" / "colloidcg.toml").write_text("[calibration]\nfps = 25.0\n[rearrangements]\ncutoff = 12.0\n")
    (root / "notes.png").write_bytes(b"not a video, a lone picture")   # one image: not a video
    return root


VIDEOS = ["a/v0.tif", "b/c/broken.tif", "b/c/frames", "b/frames", "b/v1.tif"]


def test_discovery_and_nearest_config(experiment):
    jobs = {j.rel: j for j in discover(experiment)}
    assert sorted(jobs) == VIDEOS
    assert jobs["b/frames"].config["calibration"]["fps"] == 50.0
    assert jobs["b/c/frames"].config["calibration"] == {"fps": 25.0}      # nearest file wins
    assert jobs["b/c/frames"].config["rearrangements"] == {"cutoff": 12.0}
    assert "track" not in jobs["b/c/frames"].config
    assert jobs["b/v1.tif"].config["track"] == {"memory": 2}
    assert jobs["a/v0.tif"].config == {}


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


NO_CHROMIUM = "no chromium binary found (apt-get install chromium): report.html is not checked in a browser"


def _dump_dom(page: Path, tmp_path: Path) -> str:
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'chromium-profile'}",
                           "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and "<body" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def check_report_in_chromium(report: Path, videos: list[str], tmp_path: Path) -> str | None:
    """Load the page from file:// in headless Chromium; every video has its section and every
    image decodes (the page's script sets data-images-ok once all <img> have naturalWidth > 0).
    Returns the rendered DOM, or None where no chromium is installed (then
    test_report_check_detects_broken_images is skipped, with the reason)."""
    if _chromium() is None:
        return None
    dom = _dump_dom(report, tmp_path)
    assert 'data-images-ok="true"' in dom, dom[:2000]
    n = int(dom.split('data-images="')[1].split('"')[0])
    assert n > 0
    for v in videos:
        assert f'data-video="{v}"' in dom
    return dom


def test_report_check_detects_broken_images(tmp_path):
    """The browser check itself: a page from write_report with one valid PNG and one that
    is not an image is reported as not fully decoded; with both valid, as decoded."""
    if _chromium() is None:
        pytest.skip(NO_CHROMIUM)
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from colloidcg.batch.discover import VideoJob
    from colloidcg.batch.hashing import write_record
    from colloidcg.batch.report_html import write_report
    from colloidcg.batch.summary import summary_table

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out = tmp_path / "out"
    for stage in ("track", "rearrangements"):
        write_record(out / "v.tif" / stage, {"status": "done", "outputs": {}})
    (out / "v.tif" / "track" / "msd.png").write_bytes(buf.getvalue())
    (out / "v.tif" / "rearrangements" / "d2min.png").write_bytes(b"not a PNG at all" * 8)
    rows = [{"video": "v.tif", "stage": s, "status": "done", "error": "", "duration_s": 1.0,
             "computed_s": 1.0, "numbers": {}} for s in ("track", "rearrangements")]
    table = summary_table(rows, ["track", "rearrangements"])
    jobs = [VideoJob("/x/v.tif", "v.tif")]
    write_report(out, jobs, table, ["track", "rearrangements"])
    dom = _dump_dom(out / "report.html", tmp_path)
    assert 'data-images="2"' in dom and 'data-images-decoded="1"' in dom and 'data-images-ok="false"' in dom
    (out / "v.tif" / "rearrangements" / "d2min.png").write_bytes(buf.getvalue())
    write_report(out, jobs, table, ["track", "rearrangements"])
    assert check_report_in_chromium(out / "report.html", ["v.tif"], tmp_path) is not None


def test_batch_local_cluster_failures_resume_and_report(tracker_compiled, experiment, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["batch", str(experiment), "-o", str(out), "--stages", "rearrangements,track",
                 "--workers", "2", "--quiet"])
    assert code == 1                                          # one video is corrupt
    assert json.loads((out / "batch.json").read_text())["scheduler"] == "LocalCluster(2 workers)"
    s = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(s.columns[:6]) == ["video", "stage", "status", "error", "duration_s", "computed_s"]
    assert sorted(s["video"].unique()) == VIDEOS and len(s) == 2 * len(VIDEOS)
    st = s.set_index(["video", "stage"])["status"]
    assert st[("b/c/broken.tif", "track")] == "failed" and st[("b/c/broken.tif", "rearrangements")] == "blocked"
    assert "broken.tif" in s.set_index(["video", "stage"]).loc[("b/c/broken.tif", "track"), "error"]
    good = [v for v in VIDEOS if v != "b/c/broken.tif"]
    assert all(st[(v, "track")] == "done" and st[(v, "rearrangements")] == "done" for v in good)
    trk = s[(s["stage"] == "track") & (s["status"] == "done")]
    assert (trk["n_particles"].astype(int) > 20).all() and (trk["D"].astype(float) > 0).all()

    # layout and provenance: OUT/<video>/<stage>/ with results, parameters and version
    for v in good:
        rec = json.loads((out / v / "track" / "stage.json").read_text())
        assert rec["status"] == "done" and rec["colloidcg_version"] and len(rec["key"]) == 64
        assert "tracks.parquet" in rec["outputs"] and (out / v / "track" / "tracks.parquet").is_file()
        assert (out / v / "rearrangements" / "d2min.png").is_file()
    cal = {v: json.loads((out / v / "track" / "stage.json").read_text())["parameters"]["calibration"]["fps"]
           for v in good}
    assert cal == {"a/v0.tif": 100.0, "b/v1.tif": 100.0, "b/frames": 50.0, "b/c/frames": 25.0}
    side = json.loads((out / "b/v1.tif/track/tracks.json").read_text())
    assert side["parameters"]["memory"] == 2 and side["parameters"]["sources"]["memory"] == "colloidcg.toml"
    assert json.loads((out / "b/c/frames/track/tracks.json").read_text())["parameters"]["memory"] == 3
    rr = json.loads((out / "b/c/frames/rearrangements/rearrangements.json").read_text())
    assert rr["parameters"]["cutoff_px"] == 12.0 and rr["parameters"]["cutoff_rule"] == "given"
    failed = json.loads((out / "b/c/broken.tif/track/stage.json").read_text())
    assert failed["status"] == "failed" and "broken.tif" in failed["error"]

    check_report_in_chromium(out / "report.html", VIDEOS, tmp_path)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0                      # the batch's provenance
    text = capsys.readouterr().out
    assert "b/c/broken.tif" in text and "failed" in text and str(experiment) in text
    assert main(["info", str(out / "b/v1.tif/track")]) == 0   # one stage's record
    text = capsys.readouterr().out
    assert "stage      track" in text and "memory" in text and "sha256" in text

    # rerun: nothing changed -> every good stage is skipped, the corrupt video fails again
    before = {v: (out / v / "track" / "tracks.parquet").stat().st_mtime_ns for v in good}
    # ... except what a killed or damaged run left: a missing record and a truncated output
    (out / "a/v0.tif/rearrangements/stage.json").unlink()
    with open(out / "b/frames/track/tracks.parquet", "r+b") as fh:
        fh.truncate(100)
    (experiment / "b" / "c" / "colloidcg.toml").write_text(
        "[calibration]\nfps = 25.0\n[rearrangements]\ncutoff = 12.0\n[track]\nmemory = 1\n")
    res = run_batch(experiment, out, stages="track,rearrangements", workers=2, progress=False)
    st = res.rows.set_index(["video", "stage"])["status"]
    assert st[("a/v0.tif", "track")] == "unchanged" and st[("a/v0.tif", "rearrangements")] == "done"
    assert st[("b/frames", "track")] == "done"                 # damaged output redone
    assert st[("b/c/frames", "track")] == "done"               # changed parameter redone
    assert st[("b/v1.tif", "track")] == "unchanged" and st[("b/v1.tif", "rearrangements")] == "unchanged"
    assert st[("b/c/broken.tif", "track")] == "failed" and res.n_failed == 2
    assert (out / "b/v1.tif/track/tracks.parquet").stat().st_mtime_ns == before["b/v1.tif"]
    assert pd.read_parquet(out / "b/frames/track/tracks.parquet").shape[0] > 0
    assert json.loads((out / "b/c/frames/track/tracks.json").read_text())["parameters"]["memory"] == 1
    assert not list(out.rglob(".*.tmp"))                      # no temporary files left behind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dask_processes(tmp_path_factory):
    """A real `dask scheduler` and one `dask worker` process on loopback, shared by this
    module's tests (the second finds the worker warm); torn down after.

    Each runs in its own process group, killed whole at the end (the worker's nanny and
    its worker process at once): a graceful `dask worker` shutdown takes about 8 s and
    tests nothing of colloidcg's."""
    tmp_path = tmp_path_factory.mktemp("dask")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    logs = [open(tmp_path / "scheduler.log", "w"), open(tmp_path / "worker.log", "w")]
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], stdout=logs[0], stderr=subprocess.STDOUT,
                              start_new_session=True)]
    time.sleep(0.5)
    procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", addr, "--nworkers", "1",
                                   "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                                   "--memory-limit", "0", "--local-directory", str(tmp_path / "dw")],
                                  stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True))
    try:
        yield addr
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        for f in logs:
            f.close()


def test_batch_on_real_dask_scheduler_with_train_evaluate_export(tracker_compiled, dask_processes, tmp_path,
                                                                 capsys):
    """All stages through real scheduler and worker processes; training kept to one epoch
    with the cutoff given (the automatic choice's short fits are test_train's to check;
    here they were most of the training stage)."""
    root = tmp_path / "root"
    _tif(root / "run1" / "movie.tif", _frames(5))
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[train]\nepochs = 1\ncutoff = 2.0\nval_rollout_steps = 3\n[evaluate]\nseed = 3\n")
    out = tmp_path / "out"
    code = main(["batch", str(root), "-o", str(out), "--config", str(cfg), "--scheduler", dask_processes,
                 "--quiet"])
    text = capsys.readouterr()
    assert code == 0, text.out + text.err
    s = pd.read_csv(out / "summary.csv")
    assert list(s["stage"]) == ["track", "rearrangements", "train", "evaluate", "export"]
    assert (s["status"] == "done").all(), s[["stage", "status", "error"]]
    assert s.loc[s["stage"] == "train", "epochs_run"].item() == 1
    assert np.isfinite(s.loc[s["stage"] == "evaluate", "msd_rel_rms"].item())
    v = out / "run1" / "movie.tif"
    assert {"sim.parquet", "metrics.json", "msd.png", "rdf.png"} <= {p.name for p in (v / "evaluate").iterdir()}
    bundle = v / "export" / "bundle"
    desc = json.loads((bundle / "bundle.json").read_text())
    assert desc["metrics"]["evaluation"]["msd_rel_rms"] == pytest.approx(s.loc[s["stage"] == "evaluate", "msd_rel_rms"].item())
    assert desc["provenance"]["training_data"]["tracks"] == str(v / "track" / "tracks.parquet")
    import colloidcg

    model, mcfg = colloidcg.load_model(bundle)
    assert mcfg["train"]["epochs"] == 1
    assert json.loads((v / "train" / "stage.json").read_text())["inputs"]["labels"]   # labels used
    assert main(["info", str(v / "train")]) == 0 and "calibration:" in capsys.readouterr().out
    html = (out / "report.html").read_text()
    assert "Model versus data" in html and html.count("data:image/png;base64,") >= 8
    check_report_in_chromium(out / "report.html", ["run1/movie.tif"], tmp_path)


def test_bad_input_gives_clear_errors(tmp_path, experiment, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no videos here")
    with pytest.raises(ColloidcgError, match="no videos found"):
        run_batch(empty, tmp_path / "o1", progress=False)
    assert main(["batch", str(empty), "-o", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "no videos found" in err and len(err.strip().splitlines()) == 1

    bad = tmp_path / "bad"
    _tif(bad / "x" / "v.tif", _frames(0)[:4])
    (bad / "x" / "colloidcg.toml").write_text("[track]\ndiamter = 9\n")
    with pytest.raises(ColloidcgError, match=r"x/colloidcg.toml: unknown key 'track.diamter'"):
        run_batch(bad, tmp_path / "o2", progress=False)
    (bad / "x" / "colloidcg.toml").write_text("[train]\nepochs = 'many'\n")
    with pytest.raises(ColloidcgError, match=r"colloidcg.toml: 'train.epochs' must be int"):
        run_batch(bad, tmp_path / "o2", progress=False)
    (bad / "x" / "colloidcg.toml").write_text("[calibration\nfps = 3\n")
    with pytest.raises(ColloidcgError, match=r"x/colloidcg.toml: malformed TOML"):
        run_batch(bad, tmp_path / "o2", progress=False)
    (bad / "x" / "colloidcg.toml").write_text("[calibration]\nfsp = 3\n")
    with pytest.raises(ColloidcgError, match=r"x/colloidcg.toml: unknown key 'calibration.fsp'"):
        run_batch(bad, tmp_path / "o2", progress=False)
    assert not (tmp_path / "o2").exists()                     # nothing written before the checks

    with pytest.raises(ColloidcgError, match="inside ROOT"):
        run_batch(experiment, experiment / "results", progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.docx").write_text("precious")
    with pytest.raises(ColloidcgError, match="not a colloidcg batch output"):
        run_batch(experiment, other, progress=False)
    with pytest.raises(ColloidcgError, match="--stages: unknown stage"):
        run_batch(experiment, tmp_path / "o3", stages="track,fly", progress=False)

    port = _free_port()   # nothing listens there
    (bad / "x" / "colloidcg.toml").unlink()
    with pytest.raises(ColloidcgError, match=rf"--scheduler tcp://127.0.0.1:{port}: cannot reach .* check the address"):
        run_batch(bad, tmp_path / "o4", scheduler=f"tcp://127.0.0.1:{port}", connect_timeout=2,
                  progress=False)


def _worker_state() -> dict:
    from threadpoolctl import threadpool_info

    return {"trackpy": "trackpy" in sys.modules, "torch": "torch" in sys.modules,
            "blas_threads": max((p["num_threads"] for p in threadpool_info()), default=1)}


def test_local_cluster_workers_start_with_stage_modules_and_bounded_threads(monkeypatch, tmp_path):
    """Workers fork from a server that already imported what every stage needs (the fork
    server lives as long as the process: under pytest-xdist another file's cluster may
    have started it first, as a second batch in a napari session would), and each stage
    runs with BLAS pools limited to its thread share."""
    from distributed import Client

    from colloidcg.batch import runner, stages

    with runner._Cluster(None, 1, 10.0, 60.0) as client:
        assert isinstance(client, Client)
        (state,) = client.run(_worker_state).values()
    assert state["trackpy"] and state["torch"]

    seen = {}

    def fake_track(job, opts, ups, ctx, out):
        seen.update(_worker_state())
        return {}

    monkeypatch.setitem(stages.RUN, "track", fake_track)
    monkeypatch.setitem(stages.PLAN, "track", lambda job, opts, ups, ctx: ({}, {}))
    job = VideoJob(path=str(tmp_path / "v.tif"), rel="v.tif")
    row = stages.run_stage(job, "track", stages.Options(out=str(tmp_path / "out"), root=str(tmp_path),
                                                        threads=1))
    assert row["status"] == "done", row
    assert seen["blas_threads"] == 1


def test_batch_configuration_chooses_the_tiff_axis(tmp_path):
    """A batch --config's [calibration] tiff_axis reads a TIFF whose only non-spatial axis is
    ambiguous (refused without it), unless a colloidcg.toml beside the video says otherwise."""
    import tifffile

    from colloidcg.batch.discover import VideoJob
    from colloidcg.batch.stages import Options, _open_video
    from colloidcg.errors import VideoError
    from colloidcg.io import open_video

    data = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    path = root / "a" / "c3.tif"
    tifffile.imwrite(path, data, imagej=True)
    with pytest.raises(VideoError, match="tiff"):
        open_video(path)
    opts = Options(out=str(tmp_path / "out"), root=str(root))
    job = VideoJob(str(path), "a/c3.tif", {"calibration": {"tiff_axis": "T"}}, [str(tmp_path / "batch.toml")])
    v = _open_video(job, opts)
    assert len(v) == 3 and v.meta.sources["tiff_axis"] == f"batch configuration ({tmp_path / 'batch.toml'})"
    (root / "a" / "colloidcg.toml").write_text('[calibration]\ntiff_axis = "Z"\n')   # nearer, wins
    v = _open_video(job, opts)
    assert len(v) == 1 and v.frame_shape == (3, 20, 30)


# ----------------------------------------------------------------------------- MD trajectories
def _md_dump(path: Path, n_mol: int = 40, T: int = 14, L: float = 9.0, seed: int = 0) -> Path:
    """A LAMMPS text dump (lj units, times, unwrapped xu yu zu, mol ids) of n_mol dimers
    diffusing in a periodic box: what `dump custom` writes for a molecular liquid."""
    rng = np.random.default_rng(seed)
    com = rng.uniform(0, L, (n_mol, 3))
    bond = rng.normal(size=(n_mol, 3))
    bond *= 0.5 / np.linalg.norm(bond, axis=1, keepdims=True)
    out = []
    for k in range(T):
        com = com + rng.normal(0, 0.15, com.shape)
        atoms = np.concatenate([com + bond, com - bond])          # atom i and i + n_mol: molecule i
        mol = np.r_[np.arange(1, n_mol + 1), np.arange(1, n_mol + 1)]
        out += (["ITEM: UNITS", "lj"] if k == 0 else []) + [
            "ITEM: TIME", f"{0.5 * k}", "ITEM: TIMESTEP", str(100 * k), "ITEM: NUMBER OF ATOMS", str(2 * n_mol),
            "ITEM: BOX BOUNDS pp pp pp", f"0 {L}", f"0 {L}", f"0 {L}", "ITEM: ATOMS id mol type xu yu zu"]
        out += [f"{i + 1} {mol[i]} 1 {a[0]:.8f} {a[1]:.8f} {a[2]:.8f}" for i, a in enumerate(atoms)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    return path


def test_discovery_finds_trajectories_and_checks_the_md_table(tmp_path):
    root = tmp_path / "root"
    _md_dump(root / "melt" / "run.lammpstrj")
    (root / "melt" / "colloidcg.toml").write_text('[md]\ncoarse_grain = "molecule"\n')
    jobs = discover(root)
    assert [(j.rel, j.kind) for j in jobs] == [("melt/run.lammpstrj", "trajectory")]
    assert jobs[0].config["md"] == {"coarse_grain": "molecule"}
    (root / "melt" / "colloidcg.toml").write_text('[md]\ncoarse_grain = "atoms"\n')
    with pytest.raises(ColloidcgError, match=r"colloidcg.toml: 'md.coarse_grain' must be none, molecule, type"):
        discover(root)
    (root / "melt" / "colloidcg.toml").write_text('[md]\nunits = "lj"\nframes = 3\n')
    with pytest.raises(ColloidcgError, match=r"unknown key 'md.frames'"):
        discover(root)


def test_batch_of_md_trajectories_on_real_dask_scheduler(dask_processes, tmp_path, capsys):
    """A folder of LAMMPS dumps through a real scheduler and worker: the first stage reads
    and coarse-grains each dump (one particle per molecule, from the [md] table), the
    rearrangement stage is skipped, and train, evaluate and export run on the periodic 3D
    box; a truncated dump fails its first stage with the reader's one-line error and blocks
    only its own later stages."""
    root = tmp_path / "root"
    _md_dump(root / "melt" / "run.lammpstrj")
    bad = _md_dump(root / "cut" / "run.lammpstrj", seed=1)
    bad.write_text("\n".join(bad.read_text().splitlines()[:-5]) + "\n")
    (root / "colloidcg.toml").write_text('[md]\ncoarse_grain = "molecule"\n')
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[train]\nepochs = 1\nval_rollout_steps = 3\nsubstrate = false\ncutoff = 2.5\n"
                   "[evaluate]\nseed = 3\nsteps = 5\n")
    out = tmp_path / "out"
    code = main(["batch", str(root), "-o", str(out), "--config", str(cfg), "--scheduler", dask_processes, "--quiet"])
    text = capsys.readouterr()
    assert code == 1, text.out + text.err                      # the truncated dump failed
    s = pd.read_csv(out / "summary.csv")
    g = s[s["video"] == "melt/run.lammpstrj"].set_index("stage")
    assert list(g.index) == ["track", "rearrangements", "train", "evaluate", "export"]
    assert g.loc["rearrangements", "status"] == "skipped"
    assert (g.drop(index="rearrangements")["status"] == "done").all(), g[["status", "error"]]
    assert g.loc["track", "n_particles"] == 40 and g.loc["track", "n_frames"] == 14
    c = s[s["video"] == "cut/run.lammpstrj"].set_index("stage")
    assert c.loc["track", "status"] == "failed" and "truncated" in c.loc["track", "error"]
    assert c.loc["train", "status"] == "blocked"
    from colloidcg.outputs import read_table
    tracks, side = read_table(out / "melt" / "run.lammpstrj" / "track" / "tracks.parquet")
    assert side["meta"]["box_px"] == [9.0, 9.0, 9.0] and side["meta"]["fps"] == pytest.approx(2.0)
    assert {"x", "y", "z"} <= set(tracks.columns)
    sim, _ = read_table(out / "melt" / "run.lammpstrj" / "evaluate" / "sim.parquet")
    v = sim.groupby("frame")[["vx", "vy", "vz"]].sum().to_numpy()   # no substrate: momentum conserved
    assert np.abs(v[1:] - v[1]).max() < 1e-9 * np.abs(sim[["vx", "vy", "vz"]].to_numpy()).sum(0).max()
    desc = json.loads((out / "melt" / "run.lammpstrj" / "export" / "bundle" / "bundle.json").read_text())
    assert desc["torchscript"]["integrator"] == "pair_splitting"
    # resumed: nothing changes, nothing runs again
    assert main(["batch", str(root), "-o", str(out), "--config", str(cfg), "--scheduler", dask_processes,
                 "--quiet"]) == 1
    s2 = pd.read_csv(out / "summary.csv").set_index(["video", "stage"])
    assert (s2.loc["melt/run.lammpstrj"].drop(index="rearrangements")["status"] == "unchanged").all()


@pytest.mark.slow
def test_batch_macro_stage_runs_on_request_resumes_and_keeps_its_result(tmp_path):
    """The optional macro stage (issue 19): on request it learns the macroscopic SDE from
    the video's tracks and trained model and runs an ensemble of it, with the [macro]
    table's options; a rerun leaves it unchanged, a changed option redoes it alone, and a
    failing redo (too few increments) keeps the previous result, marked stale."""
    root = tmp_path / "root"
    v = make_video(SynthConfig(n_frames=12, width=128, height=128, diameter=8.0, area_fraction=0.6, seed=7))
    _tif(root / "run1" / "movie.tif", v.frames)
    base = ("[train]\nepochs = 1\ncutoff = 2.0\nval_rollout_steps = 3\n[macro]\nfactor = 4\nsnapshots = 3\n"
            "steps = 1\npatches = 4\nfits = 1\nfit_iterations = 20\nsimulate_steps = 5\n")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(base + "runs = 4\n")
    out = tmp_path / "out"

    def run():
        run_batch(root, out, config=cfg, stages="track,train,macro", workers=1, progress=False)
        return pd.read_csv(out / "summary.csv").set_index("stage")

    s = run()
    assert list(s.index) == ["track", "train", "macro"] and (s["status"] == "done").all(), s[["status", "error"]]
    assert s.loc["macro", "macro_K"] == pytest.approx(4.0) and s.loc["macro", "macro_increments"] == 12
    folder = out / "run1" / "movie.tif" / "macro"
    table = pd.read_parquet(folder / "macro.parquet")
    assert list(table.columns) == ["run", "step", "time", "psi6"] and len(table) == 4 * 6
    assert np.isfinite(table["psi6"]).all() and table.groupby("step")["psi6"].std().iloc[-1] > 0
    rep = json.loads((folder / "sde" / "report.json").read_text())
    assert rep["factor"] == 4 and rep["init"] == str(out / "run1" / "movie.tif" / "track" / "tracks.parquet")
    assert (folder / "macro.png").is_file() and (folder / "sde" / "sde.pt").is_file()
    page = (out / "report.html").read_text()
    assert "Macroscopic SDE: ensemble against time" in page and "patch increments" in page
    before = (folder / "macro.parquet").read_bytes()

    assert (run()["status"] == "unchanged").all()
    cfg.write_text(base + "runs = 3\n")
    s = run()
    assert list(s["status"]) == ["unchanged", "unchanged", "done"]
    assert pd.read_parquet(folder / "macro.parquet")["run"].nunique() == 3
    kept = (folder / "macro.parquet").read_bytes()
    assert kept != before
    cfg.write_text(base.replace("snapshots = 3", "snapshots = 1") + "runs = 3\n")
    s = run()
    assert s.loc["macro", "status"] == "stale" and "too few to fit an SDE" in s.loc["macro", "error"]
    assert (folder / "macro.parquet").read_bytes() == kept

    cfg.write_text(base + "runz = 4\n")
    with pytest.raises(ColloidcgError, match="unknown key 'macro.runz'"):
        run()
