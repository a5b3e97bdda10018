"""Fault injection: a killed or concurrent run never destroys a good result and never
leaves a half-written one that looks complete.

The invariant checked after every fault: each destination (a table and its sidecar, a
model folder, a batch stage folder, a bundle) is absent, the previous complete result or
the new complete one, as a reader sees it (readers finish a commit a kill interrupted,
:func:`colloidcg.outputs.recover`); what is reported (``colloidcg info``, summary.csv)
matches the files; and the next run on that output leaves no temporary files or lock.

- every step of a commit, in-process: the commit is cut after each file operation (as a
  SIGKILL would cut it) and the reader's view checked;
- ``colloidcg track``, ``train`` and ``batch`` run as subprocesses and are killed with
  SIGKILL (the whole process group: workers too) at seeded random moments of a run
  on tiny inputs, each time redoing a complete earlier result with other parameters;
- two writers into one output at once.

The quick part runs in the default suite; more trials are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from colloidcg.batch.hashing import read_record, verified_status
from colloidcg.cli import main
from colloidcg.outputs import (LOCK_NAME, TXN_PREFIX, Commit, atomic_write_json, leftovers, read_table,
                               recover, sha256_file, write_table)

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------- helpers
def _video(path: Path, seed: int = 0) -> Path:
    from colloidcg.synthetic import SynthConfig, make_video

    frames = make_video(SynthConfig(n_frames=12, width=64, height=64, diameter=8.0,
                                    area_fraction=0.6, seed=seed)).frames
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, frames, imagej=True, resolution=(10.0, 10.0),
                     metadata={"axes": "TYX", "finterval": 0.01, "unit": "micron"})
    return path


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "colloidcg", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    p = _start(args)
    out, err = p.communicate(timeout=600)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _timed(args: list[str]) -> float:
    t0 = time.monotonic()
    r = _run(args)
    assert r.returncode == 0, r.stderr
    return time.monotonic() - t0


def _kill_at(args: list[str], after_s: float) -> int:
    """Start the command, SIGKILL its whole process group after ``after_s`` seconds
    (or let it finish first); returns the exit code (-9 when killed)."""
    p = _start(args)
    try:
        p.wait(timeout=after_s)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    p.communicate()
    _reap_group(p.pid)
    return p.returncode


def _in_process(args: list[str]) -> int:
    """``colloidcg ARGS`` run in this process (torch on one thread, as ENV gives the
    subprocesses); its exit code. For the run that follows the killed ones: the clean-up
    it checks is the same code, without a fresh interpreter importing everything again."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(args)
    finally:
        torch.set_num_threads(threads)


def _reap_group(pgid: int) -> None:
    """Make sure no process of a killed group (pool or Dask workers) still runs."""
    for _ in range(100):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _moments(seed: int, n: int, duration: float) -> list[float]:
    """Seeded kill moments: half spread over the whole run, half over its end (where the
    results are written and committed)."""
    rng = np.random.default_rng(seed)
    return [float(duration * (rng.uniform(0.05, 1.0) if k % 2 == 0 else rng.uniform(0.7, 1.1)))
            for k in range(n)]


def _no_leftovers(root: Path) -> None:
    """No transaction folder, temporary file or lock file anywhere under ``root``."""
    for dirpath, dirnames, filenames in os.walk(root):
        assert not leftovers(dirpath), (dirpath, leftovers(dirpath))
        assert LOCK_NAME not in filenames, dirpath


def _info(path: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["info", str(path)])
    cap = capsys.readouterr()
    return code, cap.out + cap.err


# ----------------------------------------------------------------------------- what a reader sees
def _table_state(out: Path, stem: str = "tracks") -> dict | None:
    """None (absent) or the sidecar of a complete table pair; fails on anything else."""
    t, j = out / f"{stem}.parquet", out / f"{stem}.json"
    if not t.exists() and not j.exists():
        return None
    assert t.exists() and j.exists(), sorted(p.name for p in out.iterdir())
    meta = json.loads(j.read_text())
    assert sha256_file(t) == meta["table_sha256"], "a table with another run's sidecar"
    read_table(t)   # the public reader accepts it
    return meta


def _model_state(out: Path) -> dict | None:
    """None (absent) or config.json of a complete model folder; fails on anything else."""
    from colloidcg.core.persist import load_model

    names = ("model.pt", "config.json", "report.json")
    there = [n for n in names if (out / n).exists()]
    if not there:
        return None
    assert len(there) == len(names), there
    cfg = json.loads((out / "config.json").read_text())
    assert sha256_file(out / "model.pt") == cfg["weights_sha256"], "weights of another run"
    rep = json.loads((out / "report.json").read_text())
    assert rep["calibration"]["fps"] == cfg["calibration"]["fps"]
    assert rep["epochs_run"] <= cfg["train"]["epochs"]
    load_model(out)
    return cfg


def _mixed_needs_commit_record(out: Path, stem: str = "tracks") -> None:
    """Before a reader repairs it: a table pair that does not belong together only ever
    exists while a committed transaction (which the repair finishes) is in the folder."""
    t, j = out / f"{stem}.parquet", out / f"{stem}.json"
    if t.exists() and j.exists():
        meta = json.loads(j.read_text())
        if sha256_file(t) != meta.get("table_sha256"):
            assert any((p / "commit.json").is_file() for p in out.glob(TXN_PREFIX + "*"))
    elif t.exists() or j.exists():
        assert any((p / "commit.json").is_file() for p in out.glob(TXN_PREFIX + "*"))


# ----------------------------------------------------------------------------- commits, step by step
class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no clean-up (not an Exception)."""


def _cut_after(monkeypatch, n_ops: int):
    """Make the n-th rename/replace (0-based) of this process 'kill' it."""
    count = {"n": 0}
    real_rename, real_replace = os.rename, os.replace

    def op(real):
        def f(*a, **k):
            if count["n"] == n_ops:
                raise _Killed()
            count["n"] += 1
            return real(*a, **k)
        return f

    monkeypatch.setattr(os, "rename", op(real_rename))
    monkeypatch.setattr(os, "replace", op(real_replace))
    monkeypatch.setattr(Commit, "abort", lambda self: None)   # a killed process cleans nothing
    return count


def _write_pair(folder: Path, version: int) -> None:
    df = pd.DataFrame({"frame": [0, 1], "particle": [version, version], "x": [1.0, 2.0], "y": [0.0, 0.0]})
    write_table(folder / "tracks.parquet", df, {"version": version})


def _write_dir(parent: Path, version: int) -> None:
    with Commit(parent) as tx:
        d = tx.path("stage")
        d.mkdir()
        (d / "a.txt").write_text(str(version))
        (d / "b.txt").write_text(str(version))
        atomic_write_json(d / "stage.json", {"version": version})
        tx.commit()


def _dir_state(parent: Path) -> int | None:
    d = parent / "stage"
    if not d.exists():
        return None
    v = json.loads((d / "stage.json").read_text())["version"]
    assert (d / "a.txt").read_text() == (d / "b.txt").read_text() == str(v)
    return v


@pytest.mark.parametrize("kind", ["table", "folder"])
def test_commit_cut_at_every_step(tmp_path, monkeypatch, kind):
    """Cut a redo after each of its file operations: a reader then sees the previous
    result or the new one, never a mixture, and the next writer leaves nothing behind."""
    import colloidcg.outputs as outputs

    write, state = ((lambda f, v: _write_pair(f, v)), lambda f: (_table_state(f) or {}).get("version")) \
        if kind == "table" else (_write_dir, _dir_state)
    seen = set()
    for n in range(12):
        folder = tmp_path / f"{kind}{n}"
        folder.mkdir()
        write(folder, 1)
        with monkeypatch.context() as m:
            _cut_after(m, n)
            try:
                write(folder, 2)
                finished = True
            except _Killed:
                finished = False
        outputs._LIVE_TXNS.clear()            # the 'killed' writer is gone
        if kind == "table":
            _mixed_needs_commit_record(folder)
        recover(folder)                       # what every reader does first
        v = state(folder)
        assert v in (1, 2), (n, v)
        seen.add(v)
        assert not leftovers(folder)          # repaired and cleaned
        write(folder, 3)                      # the next run on the output
        assert state(folder) == 3 and not leftovers(folder)
        if finished:
            assert v == 2
            break
    assert seen == {1, 2}                     # early cuts keep the old, late ones the new


def test_reader_does_not_touch_a_live_commit(tmp_path):
    """A transaction of a running writer (this process, not yet committed) is left alone
    by readers; only a dead writer's is repaired."""
    _write_pair(tmp_path, 1)
    tx = Commit(tmp_path)
    (tx.path("tracks.parquet")).write_bytes(b"half")
    assert recover(tmp_path) == [] and tx.txn.exists()
    tx.abort()
    assert not leftovers(tmp_path) and _table_state(tmp_path)["version"] == 1


# ----------------------------------------------------------------------------- track
def _track_trials(tmp_path, capsys, seed: int, n: int):
    """Redo a complete result with other parameters, alternately --min-length 3 and 5,
    killed at a random moment each time; the last run is left to finish."""
    video = _video(tmp_path / "v.tif")
    out = tmp_path / "out"
    args = lambda ml: ["track", str(video), "--quiet", "--processes", "1", "-o", str(out),  # noqa: E731
                       "--overwrite", "--min-length", str(ml)]
    duration = _timed(args(3))
    have = _table_state(out)["parameters"]["min_length"]
    assert have == 3
    _no_leftovers(out)
    states = []
    for t in _moments(seed, n, duration):
        want = 5 if have == 3 else 3
        code = _kill_at(args(want), t)      # the redo; it first repairs what the last kill left
        _mixed_needs_commit_record(out)
        recover(out)                        # what a reader does
        meta = _table_state(out)
        assert meta is not None, "a redo must never remove the previous result"
        ml = meta["parameters"]["min_length"]
        assert ml in (have, want) and (code != 0 or ml == want), (have, want, ml, code)
        if ml == 5:   # the table is the run's own: no trajectory shorter than 5 frames
            assert pd.read_parquet(out / "tracks.parquet").groupby("particle").size().min() >= 5
        icode, text = _info(out / "tracks.parquet", capsys)   # info reports what is there
        assert icode == 0, text
        assert any(line.split() == ["min_length", str(ml)] for line in text.splitlines()), text
        states.append(ml)
        have = ml
    assert _in_process(args(5)) == 0        # the next run cleans up after the killed ones
    assert _table_state(out)["parameters"]["min_length"] == 5
    _no_leftovers(out)
    return states


def test_kill_track(tmp_path, capsys):
    _track_trials(tmp_path, capsys, seed=1, n=2)


@pytest.mark.slow
def test_kill_track_many(tmp_path, capsys):
    states = _track_trials(tmp_path, capsys, seed=11, n=16)
    assert len(states) == 16


# ----------------------------------------------------------------------------- train
@pytest.fixture(scope="module")
def tiny_tracks(tmp_path_factory):
    """Tracks of a tiny video for the training trials, made by `colloidcg track` in this
    process (the kills here are of `colloidcg train`; a process of its own would only
    import and warm up the tracker again)."""
    d = tmp_path_factory.mktemp("tracks")
    assert main(["track", str(_video(d / "v.tif")), "-o", str(d), "--quiet", "--processes", "1"]) == 0
    return d / "tracks.parquet"


def _train_trials(tmp_path, capsys, tracks: Path, seed: int, n: int):
    """Retrain a complete model folder with another seed (0 <-> 1), killed at a random
    moment each time; the last run is left to finish."""
    out = tmp_path / "m"
    args = lambda s: ["train", str(tracks), "--epochs", "1", "--cutoff", "2.0", "--quiet",  # noqa: E731
                      "--n-pair", "2", "-o", str(out), "--overwrite", "--seed", str(s)]
    duration = _timed(args(0))
    have = _model_state(out)["train"]["seed"]
    states = []
    for t in _moments(seed, n, duration):
        want = 1 - have
        code = _kill_at(args(want), t)
        recover(out)
        cfg = _model_state(out)
        assert cfg is not None, "a redo must never remove the previous model"
        s = cfg["train"]["seed"]
        assert s in (have, want) and (code != 0 or s == want), (have, want, s, code)
        icode, text = _info(out, capsys)
        assert icode == 0 and "weights checksum verified" in text, text
        assert any(line.split()[:2] == ["seed", str(s)] for line in text.splitlines()), text
        states.append(s)
        have = s
    assert _in_process(args(1)) == 0        # the next run cleans up after the killed ones
    assert _model_state(out)["train"]["seed"] == 1
    _no_leftovers(out)
    return states


def test_kill_train(tmp_path, capsys, tiny_tracks):
    _train_trials(tmp_path, capsys, tiny_tracks, seed=2, n=1)


@pytest.mark.slow
def test_kill_train_many(tmp_path, capsys, tiny_tracks):
    _train_trials(tmp_path, capsys, tiny_tracks, seed=12, n=10)


# ----------------------------------------------------------------------------- batch
def _batch_setup(tmp_path: Path, stages: str, n_videos: int = 2):
    root = tmp_path / "root"
    _video(root / "a" / "v0.tif", 0)
    if n_videos > 1:
        _video(root / "v1.tif", 1)
    cfg_a, cfg_b = tmp_path / "a.toml", tmp_path / "b.toml"
    common = "[rearrangements]\ndescriptors = false\n[train]\nepochs = 1\ncutoff = 2.0\nn_pair = 2\n"
    cfg_a.write_text("[track]\nmemory = 3\n" + common)
    cfg_b.write_text("[track]\nmemory = 2\n" + common)
    args = lambda out, cfg: ["batch", str(root), "-o", str(out), "--config", str(cfg),  # noqa: E731
                             "--stages", stages, "--workers", "1", "--threads", "1", "--quiet"]
    return root, cfg_a, cfg_b, args


def _check_batch_disk(out: Path, videos: list[str], stages: list[str], capsys) -> None:
    """Every stage folder is absent or complete (never half-written); a complete one's
    inputs are the current upstream's or the previous run's; info says where
    summary.csv disagrees with the files."""
    for v in videos:
        for st in stages:
            status, why = verified_status(out / v / st)
            assert status in ("absent", "done"), (v, st, status, why)
    code, text = _info(out, capsys)
    assert code == 0, text
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    agree = {"done": ("done",), "unchanged": ("done",), "stale": ("stale",),
             "failed": ("failed", "stale"), "blocked": ("blocked", "stale")}
    for _, r in summary.iterrows():
        disk, _ = verified_status(out / r["video"] / r["stage"])
        agrees = disk in agree[r["status"]]
        note = f"{r['video']} [{r['stage']}]: summary.csv says {r['status']}, on disk it is {disk}"
        assert (note in text) == (not agrees), (note, text)
    rec = json.loads((out / "batch.json").read_text())
    if rec.get("state") == "running":
        assert "interrupted" in text


def _batch_trials(tmp_path, capsys, seed: int, n: int, stages: str, n_videos: int = 2):
    """A complete batch (config A) redone with config B ([track] memory 3 -> 2, so every
    stage is redone), killed at a random moment, checked, then resumed to the end."""
    root, cfg_a, cfg_b, args = _batch_setup(tmp_path, stages, n_videos)
    st = stages.split(",")
    videos = ["a/v0.tif", "v1.tif"][:n_videos]
    for k, t in enumerate([None] * n):
        out = tmp_path / f"out{k}"
        t0 = time.monotonic()
        r = _run(args(out, cfg_a))
        assert r.returncode == 0, r.stdout + r.stderr
        t = _moments(seed + k, 1, time.monotonic() - t0)[0]
        _kill_at(args(out, cfg_b), t)                 # the redo, killed
        _check_batch_disk(out, videos, st, capsys)
        r = _run(args(out, cfg_b))                    # resumes
        assert r.returncode == 0, r.stdout + r.stderr
        summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
        assert set(summary["status"]) <= {"done", "unchanged"}, summary
        for v in videos:
            for s in st:
                assert verified_status(out / v / s) == ("done", "")
            assert read_record(out / v / "track")["parameters"]["track"]["memory"] == 2
        _check_batch_disk(out, videos, st, capsys)
        _no_leftovers(out)


@pytest.mark.slow    # (the default suite's time: kills of track and train stay in it)
def test_kill_batch(tmp_path, capsys):
    _batch_trials(tmp_path, capsys, seed=3, n=1, stages="track", n_videos=1)


@pytest.mark.slow
def test_kill_batch_many(tmp_path, capsys):
    _batch_trials(tmp_path, capsys, seed=13, n=4, stages="track,rearrangements,train,export")


# ----------------------------------------------------------------------------- two writers
def test_two_track_writers(tmp_path):
    """Two `colloidcg track -o SAME` at once: one result, never a silent replacement: a
    writer either wins or is refused with one line naming the folder and the other's pid."""
    video = _video(tmp_path / "v.tif")
    out = tmp_path / "same"
    procs = {ml: _start(["track", str(video), "-o", str(out), "--quiet", "--overwrite",
                         "--processes", "1", "--min-length", str(ml)]) for ml in (3, 5)}
    res = {ml: (p.wait(timeout=600), p.communicate()[1]) for ml, p in procs.items()}
    winners = [ml for ml, (code, _) in res.items() if code == 0]
    assert winners, res
    for ml, (code, err) in res.items():
        if code != 0:
            other = procs[8 - ml].pid
            assert code == 2 and "in use by another colloidcg run" in err and str(other) in err, err
            assert str(out) in err and len(err.strip().splitlines()) == 1
    assert _table_state(out)["parameters"]["min_length"] in winners
    _no_leftovers(out)


@pytest.mark.slow
def test_two_batches(tmp_path):
    """Two batches into one OUT at once: the second is refused (no crash on the other's
    files), the first completes."""
    root, cfg_a, cfg_b, args = _batch_setup(tmp_path, "track")
    out = tmp_path / "out"
    procs = [_start(args(out, cfg_a)), _start(args(out, cfg_b))]
    res = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    assert any(code == 0 for code, _, _ in res), res
    for code, so, err in res:
        assert "Traceback" not in err and "FileNotFoundError" not in err
        if code != 0:
            assert code == 2 and "in use by another colloidcg run" in err, err
    for v in ("a/v0.tif", "v1.tif"):
        assert verified_status(out / v / "track") == ("done", "")
    _no_leftovers(out)


# ----------------------------------------------------------------------------- a killed worker
@pytest.mark.slow
def test_killed_worker_blocks_downstream(tmp_path):
    """SIGKILL the Dask worker process running a stage (its pid is in the name of the
    stage's transaction folder), with no retries allowed: that stage is "failed", the
    stages after it "blocked" (not "failed"), the other video completes, no leftovers."""
    root, cfg_a, _, args = _batch_setup(tmp_path, "track,rearrangements,train")
    out = tmp_path / "out"
    env = {**ENV, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    p = subprocess.Popen([sys.executable, "-m", "colloidcg", *args(out, cfg_a)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    video = out / "a" / "v0.tif"
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and p.poll() is None and time.monotonic() < deadline:
        for txn in video.glob(TXN_PREFIX + "*") if video.is_dir() else []:
            pid = int(txn.name.rsplit("-", 2)[-2])
            stage = next(iter(txn.glob("new/*")), None)
            if stage is not None and stage.name in ("track", "rearrangements"):
                os.kill(pid, signal.SIGKILL)
                killed = stage.name
                break
        time.sleep(0.01)
    so, err = p.communicate(timeout=600)
    _reap_group(p.pid)
    assert killed is not None, (so, err)
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False).set_index(["video", "stage"])
    st = summary["status"]
    order = ["track", "rearrangements", "train"]
    k = order.index(killed)
    assert st[("a/v0.tif", killed)] == "failed" and "the Dask task failed" in summary.loc[("a/v0.tif", killed), "error"]
    for later in order[k + 1:]:   # chained after it in Dask: not run, and said so
        assert st[("a/v0.tif", later)] == "blocked", summary
        assert f"stage '{killed}' did not finish" in summary.loc[("a/v0.tif", later), "error"]
    # the other video's tasks queued on the same worker died with it (Dask counts them as
    # killed too): the same rule holds there, otherwise it is done
    v1 = [st[("v1.tif", s)] for s in order]
    died = [s for s in order if "the Dask task failed" in summary.loc[("v1.tif", s), "error"]]
    if died:
        j = order.index(died[0])
        assert v1[j] == "failed" and set(v1[j + 1:]) <= {"blocked"}, summary
        assert set(v1[:j]) <= {"done"}
    else:
        assert set(v1) == {"done"}, summary
    assert p.returncode == 1
    assert verified_status(video / killed)[0] == "failed"
    _no_leftovers(out)
