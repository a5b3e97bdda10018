"""Nothing the user has is ever lost: each case of the reliability issue (16).

Errors come before any work, as one line naming the file and the parameter, and a
command that fails writes nothing; output folders are locked; a failed batch redo keeps
the previous result and reports it "stale"; summary.csv, report.html and `colloidcg info`
check the files before they call anything unchanged. Fault injection (killed runs,
concurrent writers) is in test_faults.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from colloidcg.cli import main
from colloidcg.errors import ColloidcgError
from colloidcg.outputs import (LOCK_NAME, OutputLock, atomic_write_json, leftovers, read_table,
                               write_table)


def _video(path: Path, seed: int = 0, n_frames: int = 12) -> Path:
    from colloidcg.synthetic import SynthConfig, make_video

    frames = make_video(SynthConfig(n_frames=n_frames, width=64, height=64, diameter=8.0,
                                    area_fraction=0.6, seed=seed)).frames
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, frames, imagej=True, resolution=(10.0, 10.0),
                     metadata={"axes": "TYX", "finterval": 0.01, "unit": "micron"})
    return path


def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:   # argparse
        code = exc.code
    cap = capsys.readouterr()
    return code, cap.err


def _one_line_error(code, err, *needles) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 or lines[0].startswith("usage:"), err
    for n in needles:
        assert n in err, (n, err)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A small video, its tracks (OUT/tracks.parquet + tracks.json) and a model trained on them."""
    d = tmp_path_factory.mktemp("rel")
    video = _video(d / "v.tif")
    assert main(["track", str(video), "-o", str(d / "t"), "--quiet", "--processes", "1"]) == 0
    assert main(["train", str(d / "t" / "tracks.parquet"), "-o", str(d / "m"), "--epochs", "1",
                 "--cutoff", "2.0", "--n-pair", "2", "--quiet"]) == 0
    return d, video, d / "t" / "tracks.parquet", d / "m"


def _copy_tracks(tracks: Path, dest: Path, change=None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(tracks, dest / "tracks.parquet")
    meta = json.loads(tracks.with_suffix(".json").read_text())
    if change is not None:
        change(meta)
    (dest / "tracks.json").write_text(json.dumps(meta) if not isinstance(meta, str) else meta)
    return dest / "tracks.parquet"


# ----------------------------------------------------------------------------- output checks
def test_unwritable_outputs_refused_before_work(tmp_path, capsys):
    """-o /proc/x, -o an existing file, -o a read-only folder: one line, before the video
    is even opened (the video here is missing: the output is what is reported)."""
    missing_video = tmp_path / "nope.tif"
    code, err = _cli(["track", missing_video, "-o", "/proc/x"], capsys)
    _one_line_error(code, err, "-o /proc/x", "nothing was written")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    code, err = _cli(["track", missing_video, "-o", afile], capsys)
    _one_line_error(code, err, str(afile), "not a folder")
    assert afile.read_text() == "mine"
    for cmd in (["rearrangements", tmp_path / "t.parquet"], ["train", tmp_path / "t.parquet"],
                ["evaluate", tmp_path / "a.parquet", tmp_path / "b.parquet"]):
        code, err = _cli(cmd + ["-o", afile], capsys)
        _one_line_error(code, err, str(afile), "not a folder")


def test_read_only_folder(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
    else:   # root writes anywhere: let the permission check see what a user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if Path(p) == ro else real(p, m, *a, **k))
    try:
        code, err = _cli(["track", tmp_path / "nope.tif", "-o", ro / "out"], capsys)
        _one_line_error(code, err, str(ro), "cannot write")
        assert _entries(ro) == []
    finally:
        ro.chmod(0o755)


def test_failed_command_writes_nothing(tmp_path, capsys):
    """A command that fails after starting leaves no folder, lock or temporary file."""
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + bytes(200))
    out = tmp_path / "new" / "out"
    code, err = _cli(["track", bad, "-o", out, "--quiet"], capsys)
    assert code == 2 and "Traceback" not in err
    assert not (tmp_path / "new").exists()
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    code, err = _cli(["track", bad, "-o", keep, "--quiet"], capsys)
    assert code == 2 and _entries(keep) == ["notes.txt"]


# ----------------------------------------------------------------------------- locks
def _holder(folder: Path) -> subprocess.Popen:
    code = ("import sys, time; from colloidcg.outputs import OutputLock; "
            f"OutputLock({str(folder)!r}).acquire(); print('held', flush=True); time.sleep(600)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_names_holder_and_stale_lock_released(tmp_path, capsys, tracked):
    _, video, _, _ = tracked
    out = tmp_path / "out"
    out.mkdir()
    p = _holder(out)
    try:
        code, err = _cli(["track", video, "-o", out, "--quiet", "--processes", "1"], capsys)
        _one_line_error(code, err, str(out), "in use by another colloidcg run", f"process {p.pid}")
        assert _entries(out) == [LOCK_NAME]                  # nothing of ours was written
        with pytest.raises(ColloidcgError, match=f"process {p.pid}"):
            OutputLock(out).acquire()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert (out / LOCK_NAME).exists()                        # left by the killed holder
    code, err = _cli(["track", video, "-o", out, "--quiet", "--processes", "1"], capsys)
    assert code == 0, err                                    # stale lock detected and taken over
    assert _entries(out) == ["tracks.json", "tracks.parquet"]


def test_lock_in_one_process(tmp_path):
    lock = OutputLock(tmp_path).acquire()
    with pytest.raises(ColloidcgError, match=f"process {os.getpid()}"):
        OutputLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    OutputLock(tmp_path).acquire().release()


def test_leftovers_of_killed_runs_removed_by_next_run(tmp_path, capsys, tracked):
    _, video, _, _ = tracked
    out = tmp_path / "out"
    out.mkdir()
    (out / ".tracks.parquet.ab12cd34.tmp").write_bytes(b"half")   # an atomic write, killed
    dead = out / ".colloidcg-txn-otherhost-1-00ff00ff"             # an uncommitted transaction
    (dead / "new").mkdir(parents=True)
    (dead / "new" / "tracks.parquet").write_bytes(b"half")
    code, err = _cli(["track", video, "-o", out, "--quiet", "--processes", "1"], capsys)
    assert code == 0, err
    assert leftovers(out) == [dead]    # another machine's transaction: only its own run may judge
    shutil.rmtree(dead)
    from colloidcg.outputs import _HOST

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()                        # a process id that no longer runs
    (out / f".colloidcg-txn-{_HOST}-{gone.pid}-00ff00ff" / "new").mkdir(parents=True)
    (out / ".report.html.zz99yy88.tmp").write_bytes(b"half")
    code, err = _cli(["track", video, "-o", out, "--quiet", "--processes", "1", "--overwrite"], capsys)
    assert code == 0, err
    assert leftovers(out) == [] and _entries(out) == ["tracks.json", "tracks.parquet"]


# ----------------------------------------------------------------------------- sidecars
@pytest.mark.parametrize("bad", ["fast", -100, 0, float("nan")])
def test_sidecar_calibration_checked(tmp_path, capsys, tracked, bad):
    _, _, tracks, model = tracked

    def change(meta):
        meta["units"]["fps"] = bad
    t = _copy_tracks(tracks, tmp_path / "in", change)
    side = t.with_suffix(".json")
    for cmd in (["rearrangements", t, "-o", tmp_path / "r"], ["train", t, "-o", tmp_path / "m"],
                ["evaluate", t, tracks, "-o", tmp_path / "e"],
                ["simulate", model, "--init", t, "-o", tmp_path / "s.parquet", "--steps", "2"]):
        code, err = _cli(cmd, capsys)
        _one_line_error(code, err, str(side), "units.fps", "finite positive")
    assert not any((tmp_path / n).exists() for n in ("r", "m", "e", "s.parquet"))


def test_json_never_holds_nan(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"fps": float("nan"), "x": [1.0, float("inf")],
                                            "y": np.float64("nan")})
    text = (tmp_path / "a.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"fps": None, "x": [1.0, None], "y": None}


def test_corrupt_sidecar_one_line(tmp_path, capsys, tracked):
    _, _, tracks, model = tracked
    t = _copy_tracks(tracks, tmp_path / "in")
    t.with_suffix(".json").write_text('{"units": {"fps": 100, ')   # cut short
    for cmd in (["rearrangements", t, "-o", tmp_path / "r"], ["train", t, "-o", tmp_path / "m"],
                ["evaluate", t, tracks, "-o", tmp_path / "e"], ["evaluate", tracks, t, "-o", tmp_path / "e"]):
        code, err = _cli(cmd, capsys)
        _one_line_error(code, err, str(t.with_suffix(".json")), "damaged JSON sidecar")
    (model.parent / "mc").mkdir()
    for name in ("model.pt", "config.json"):
        shutil.copy(model / name, model.parent / "mc" / name)
    (model.parent / "mc" / "config.json").write_text("{oops")
    code, err = _cli(["simulate", model.parent / "mc", "--init", tracks, "--steps", "2", "-o", tmp_path / "s.parquet"], capsys)
    _one_line_error(code, err, "config.json")


def test_table_and_sidecar_that_do_not_belong_together(tmp_path, capsys):
    df = pd.DataFrame({"frame": [0, 1], "particle": [0, 0], "x": [1.0, 2.0], "y": [0.0, 0.0]})
    write_table(tmp_path / "a" / "t.parquet", df, {"run": 1})
    write_table(tmp_path / "b" / "t.parquet", df.assign(x=[5.0, 6.0]), {"run": 2})
    shutil.copy(tmp_path / "b" / "t.json", tmp_path / "a" / "t.json")
    with pytest.raises(ColloidcgError, match="does not match its sidecar"):
        read_table(tmp_path / "a" / "t.parquet")
    code, err = _cli(["info", tmp_path / "a" / "t.parquet"], capsys)
    _one_line_error(code, err, "does not match its sidecar")


def test_model_weights_and_config_that_do_not_belong_together(tmp_path, tracked, capsys):
    from colloidcg.core.persist import load_model

    _, _, tracks, model = tracked
    mine = tmp_path / "m"
    shutil.copytree(model, mine)
    data = bytearray((model / "model.pt").read_bytes())
    data[-1] ^= 1                                # another run's weights, as far as the checksum goes
    (mine / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ColloidcgError, match="do not belong"):
        load_model(mine)
    code, err = _cli(["info", mine], capsys)
    _one_line_error(code, err, "do not belong")


def test_absurd_model_config_refused_before_allocation(tmp_path, tracked, capsys):
    from colloidcg.core.persist import load_model

    _, _, tracks, model = tracked
    mine = tmp_path / "m"
    shutil.copytree(model, mine)
    cfg = json.loads((mine / "config.json").read_text())
    cfg["model"]["width"] = 2_000_000            # ~160 GB of weights
    (mine / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ColloidcgError, match=r"model\.width"):
        load_model(mine)
    code, err = _cli(["simulate", mine, "--init", tracks, "--steps", "2", "-o", tmp_path / "s.parquet"], capsys)
    _one_line_error(code, err, "config.json", "model.width")
    cfg["model"]["width"], cfg["model"]["tau"] = 50, float("nan")
    (mine / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ColloidcgError, match=r"model\.tau"):
        load_model(mine)


# ----------------------------------------------------------------------------- commands
def test_plot_frame_checked_before_anything_is_written(tmp_path, capsys, tracked):
    _, _, tracks, _ = tracked
    out = tmp_path / "r"
    code, err = _cli(["rearrangements", tracks, "-o", out, "--plot-frame", "999", "--no-descriptors"], capsys)
    _one_line_error(code, err, "--plot-frame 999", "nothing was written")
    assert not out.exists()
    code, err = _cli(["rearrangements", tracks, "-o", out, "--plot-frame", "5", "--no-descriptors"], capsys)
    assert code == 0, err                         # the corrected rerun is not refused
    assert {"rearrangements.parquet", "events.parquet", "d2min.png"} <= set(_entries(out))


def test_evaluate_duplicate_rows(tmp_path, capsys, tracked):
    _, _, tracks, _ = tracked
    df, meta = read_table(tracks)
    dup = pd.concat([df, df.iloc[:3]])
    write_table(tmp_path / "d" / "dup.parquet", dup, meta)
    code, err = _cli(["evaluate", tracks, tmp_path / "d" / "dup.parquet", "-o", tmp_path / "e"], capsys)
    _one_line_error(code, err, "dup.parquet", "repeat a (frame, particle) pair")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--device", "tpu"], "--device"), (["--n-s", "0"], "--n-s"), (["--dtype", "float16"], "--dtype"),
    (["--lr", "-1"], "--lr"), (["--cutoff-factors", "0"], "--cutoff-factors"),
    (["--fps", "-100"], "--fps"), (["--um-per-px", "nan"], "--um-per-px")])
def test_train_options_checked_first(tmp_path, capsys, tracked, flags, needle):
    _, _, tracks, _ = tracked
    code, err = _cli(["train", tracks, "-o", tmp_path / "m", "--quiet", *flags], capsys)
    assert code == 2 and "Traceback" not in err and needle in err, err
    assert "diverged" not in err and not (tmp_path / "m").exists()


def test_simulate_device_checked(tmp_path, capsys, tracked):
    _, _, tracks, model = tracked
    code, err = _cli(["simulate", model, "--init", tracks, "--steps", "2", "--device", "tpu",
                      "-o", tmp_path / "s.parquet"], capsys)
    _one_line_error(code, err, "--device", "'tpu'")
    assert _entries(tmp_path) == []


def test_negative_fps_flag_named(tmp_path, capsys, tracked):
    _, _, tracks, _ = tracked
    for cmd in (["evaluate", tracks, tracks, "-o", tmp_path / "e"], ["track", tracks, "-o", tmp_path / "t"]):
        code, err = _cli(cmd + ["--fps", "-100"], capsys)
        last = err.strip().splitlines()[-1]           # the error line (argparse prints usage first)
        assert code == 2 and "--fps" in last and "positive" in last, err
        assert "--um-per-px" not in last


def test_info_on_text_named_parquet(tmp_path, capsys):
    p = tmp_path / "t.parquet"
    p.write_text("frame,particle\n0,1\n")
    (tmp_path / "t.json").write_text(json.dumps({"n_rows": 1234}))
    code, err = _cli(["info", p], capsys)
    _one_line_error(code, err, str(p), "not a readable Parquet table")
    assert "1234" not in err


def test_tracks_from_a_csv_file(tmp_path, capsys, tracked):
    """Tracks saved as CSV elsewhere (pandas' to_csv, index column included, no sidecar) are
    read as the Parquet table is: the same model, to the bit, given the same calibration;
    a CSV without the tracks' columns or that is not CSV at all gets one line naming it."""
    import pandas as pd
    import torch

    _, _, tracks, _ = tracked
    df = pd.read_parquet(tracks)
    df.to_csv(tmp_path / "t.csv")
    cal = json.loads(tracks.with_suffix(".json").read_text())["video"]
    flags = ["--epochs", "1", "--cutoff", "2.0", "--n-pair", "2", "--quiet",
             "--fps", cal["fps"], "--um-per-px", cal["um_per_px"]]
    plain = tmp_path / "plain.parquet"
    df.to_parquet(plain)                            # the same rows, no sidecar either
    for src, out in ((tmp_path / "t.csv", "a"), (plain, "b")):
        assert _cli(["train", src, "-o", tmp_path / out, *flags], capsys)[0] == 0
    wa, wb = (torch.load(tmp_path / k / "model.pt", weights_only=True) for k in ("a", "b"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert f"rows        {len(df)}" in out and f"{df['particle'].nunique()} particles" in out, out
    (tmp_path / "cols.csv").write_text("a,b\n1,2\n")
    code, err = _cli(["train", tmp_path / "cols.csv", "-o", tmp_path / "c"], capsys)
    _one_line_error(code, err, "cols.csv", "missing column(s) frame, particle, x, y")
    (tmp_path / "bin.csv").write_bytes(b"\x00\xff\x00" * 50)
    code, err = _cli(["rearrangements", tmp_path / "bin.csv", "-o", tmp_path / "r"], capsys)
    assert code == 2 and "bin.csv" in err and "Traceback" not in err, err


def test_export_bundle_swapped_whole(tmp_path, capsys, tracked):
    from colloidcg.export import read_bundle

    _, _, _, model = tracked
    b = tmp_path / "bundle"
    assert _cli(["export", model, "-o", b], capsys)[0] == 0
    first = read_bundle(b)["created"]
    code, err = _cli(["export", model, "-o", b], capsys)
    _one_line_error(code, err, "already exists")
    assert _cli(["export", model, "-o", b, "--overwrite"], capsys)[0] == 0
    assert read_bundle(b)["created"] >= first and not leftovers(tmp_path)
    assert _entries(tmp_path) == ["bundle"]


# ----------------------------------------------------------------------------- batch
def _cfg(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, needle", [
    ('[train]\ndevice = "tpu"\n', "train.device"),
    ('[train]\ndevice = "cuda"\n', "train.device"),
    ('[train]\ndtype = "float16"\n', "train.dtype"),
    ("[train]\nn_s = 0\n", "train.n_s"),
    ("[train]\nwidth = 100000000\n", "train.width"),
    ("[train]\ncutoff_factors = [1.5, -1]\n", "train.cutoff_factors"),
    ("[evaluate]\nsteps = 1\n", "evaluate.steps"),
    ("[evaluate]\nsubsteps = 0\n", "evaluate.substeps"),
    ("[rearrangements]\ncutoff = -3.0\n", "rearrangements.cutoff"),
])
def test_batch_config_checked_before_work(tmp_path, text, needle):
    import torch

    from colloidcg.batch import run_batch

    if "cuda" in text and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    _video(tmp_path / "root" / "v.tif")
    cfg = _cfg(tmp_path / "c.toml", text)
    with pytest.raises(ColloidcgError, match=needle.replace(".", r"\.")) as e:
        run_batch(tmp_path / "root", tmp_path / "out", config=cfg, progress=False)
    assert str(cfg) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_batch_lists_accepted_where_tuples_are(tmp_path):
    from colloidcg.batch.discover import load_config
    from colloidcg.batch.stages import train_config

    cfg = load_config(_cfg(tmp_path / "c.toml", "[train]\ncutoff_factors = [1.5]\n"))
    assert train_config(cfg["train"]).cutoff_factors == (1.5,)


def test_batch_output_checks(tmp_path):
    from colloidcg.batch import run_batch

    _video(tmp_path / "root" / "v.tif")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, needle in ((afile, "not a folder"), (Path("/proc/x"), "/proc/x")):
        with pytest.raises(ColloidcgError, match=needle):
            run_batch(tmp_path / "root", out, progress=False)


def test_discovery_reports_what_it_skips(tmp_path):
    from colloidcg.batch import discover

    root = tmp_path / "root"
    _video(root / "v.tif")
    one = root / "single" / "only.tif"
    one.parent.mkdir(parents=True)
    tifffile.imwrite(one, np.zeros((16, 16), np.uint8))
    skipped = []
    jobs = discover(root, skipped=skipped)
    assert [j.rel for j in jobs] == ["v.tif"]
    assert [Path(f) for f, _ in skipped] == [one] and "single image" in skipped[0][1]


def test_settle_rows_killed_worker(tmp_path):
    """A task whose worker died: that stage "failed", the stages after it "blocked"
    (Dask fails them along with it), each recorded in its folder; a stage with a previous
    complete result keeps it and is "stale"."""
    from colloidcg.batch import VideoJob
    from colloidcg.batch.hashing import read_record, verified_status, write_record
    from colloidcg.batch.runner import TASK_DIED, settle_rows
    from colloidcg.batch.stages import Options

    opts = Options(out=str(tmp_path), root=str(tmp_path))
    job = VideoJob(str(tmp_path / "v.tif"), "v.tif")
    prev = tmp_path / "v.tif" / "evaluate"
    prev.mkdir(parents=True)
    write_record(prev, {"status": "done", "outputs": {}, "created": "earlier", "numbers": {"x": 1}})
    stages = ["track", "rearrangements", "train", "evaluate"]
    died = f"{TASK_DIED}: KilledWorker: worker died"
    rows = [{"video": "v.tif", "stage": "track", "status": "done", "error": ""}] + [
        {"video": "v.tif", "stage": s, "status": "failed", "error": died} for s in stages[1:]]
    rows = {r["stage"]: r for r in settle_rows(rows, [job], stages, opts)}
    assert rows["track"]["status"] == "done"
    assert rows["rearrangements"]["status"] == "failed"
    assert rows["train"]["status"] == "blocked" and "rearrangements" in rows["train"]["error"]
    assert rows["evaluate"]["status"] == "stale" and "blocked" in rows["evaluate"]["error"]
    assert read_record(tmp_path / "v.tif" / "train")["status"] == "blocked"
    assert verified_status(prev)[0] == "stale"


def test_dashboard_on_localhost_only():
    import psutil

    from colloidcg.batch.runner import _Cluster

    def listening():   # this process's listening sockets (other tests may have left some)
        return {c.laddr for c in psutil.Process().net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN}

    before = listening()
    with _Cluster(None, 1, 10, 60) as client:
        assert "127.0.0.1" in client.dashboard_link
        new = listening() - before   # the scheduler's and the dashboard's
        assert len(new) >= 2 and all(a.ip in ("127.0.0.1", "::1") for a in new), new


@pytest.fixture(scope="module")
def stale_batch(tmp_path_factory):
    """A batch (track, rearrangements) run once; then the video is damaged and the batch
    rerun: the track redo fails."""
    from colloidcg.batch import run_batch

    d = tmp_path_factory.mktemp("stale")
    root, out = d / "root", d / "out"
    video = _video(root / "v.tif")
    lone = root / "x" / "lone.png"
    lone.parent.mkdir()
    lone.write_bytes(b"\x89PNG not really")
    cfg = _cfg(d / "c.toml", "[rearrangements]\ndescriptors = false\n")
    first = run_batch(root, out, config=cfg, stages="track,rearrangements", workers=1, progress=False)
    good = video.read_bytes()
    video.write_bytes(good[:600])   # truncated: the redo of track fails
    second = run_batch(root, out, config=cfg, stages="track,rearrangements", workers=1, progress=False)
    return root, out, video, good, cfg, first, second


def test_failed_redo_keeps_previous_result(stale_batch, capsys):
    from colloidcg.batch.hashing import verified_status

    root, out, video, good, cfg, first, second = stale_batch
    assert set(first.rows["status"]) == {"done"}
    st = second.rows.set_index("stage")
    assert st.loc["track", "status"] == "stale" and "kept the previous result" in st.loc["track", "error"]
    assert st.loc["rearrangements", "status"] == "stale" and "blocked" in st.loc["rearrangements", "error"]
    assert second.n_failed == 2
    # the previous results are all there, intact
    assert verified_status(out / "v.tif" / "track")[0] == "stale"
    read_table(out / "v.tif" / "track" / "tracks.parquet")
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(summary["status"]) == ["stale", "stale"]
    html = (out / "report.html").read_text()
    assert 'class="stale"' in html and "lone.png" in html
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "they agree" in text and "stale" in text


def test_info_checks_summary_against_disk(stale_batch, capsys, tmp_path):
    root, out, video, good, cfg, first, second = stale_batch
    mine = tmp_path / "copy"
    shutil.copytree(out, mine)
    capsys.readouterr()
    assert main(["info", str(mine)]) == 0
    text = capsys.readouterr().out
    assert "they agree" in text and "lone.png" in text
    (mine / "v.tif" / "rearrangements" / "events.parquet").unlink()   # damaged after the run
    assert main(["info", str(mine)]) == 0
    text = capsys.readouterr().out
    assert "v.tif [rearrangements]: summary.csv says stale, on disk it is incomplete" in text


def test_stale_cleared_when_input_is_good_again(stale_batch):
    from colloidcg.batch import run_batch
    from colloidcg.batch.hashing import verified_status

    root, out, video, good, cfg, first, second = stale_batch
    video.write_bytes(good)
    third = run_batch(root, out, config=cfg, stages="track,rearrangements", workers=1, progress=False)
    assert set(third.rows["status"]) == {"unchanged"}, third.rows
    assert verified_status(out / "v.tif" / "track") == ("done", "")
    assert verified_status(out / "v.tif" / "rearrangements") == ("done", "")


def test_output_folder_named_like_a_table_and_a_folder_given_for_a_table(tmp_path, capsys, tracked):
    """`track VIDEO -o tracks.parquet` made a folder that later commands took for a table
    (pandas read it as a dataset and failed on its JSON sidecar): now -o refuses a file
    name, writing nothing, and a folder given where a table is expected names its tables."""
    d, video, tracks, _ = tracked
    for cmd in (["track", video, "--processes", "1", "--quiet"], ["rearrangements", tracks],
                ["train", tracks, "--epochs", "1", "--quiet"]):
        code, err = _cli(cmd + ["-o", tmp_path / "out.parquet"], capsys)
        _one_line_error(code, err, "-o", "expected an output folder", str(tmp_path / "out"))
        assert _entries(tmp_path) == []
    code, err = _cli(["rearrangements", tracks.parent, "-o", tmp_path / "r"], capsys)
    _one_line_error(code, err, "a folder, expected a .parquet table", str(tracks))
    assert not (tmp_path / "r").exists()
