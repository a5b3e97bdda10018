"""Running a batch on Dask distributed: an embedded LocalCluster or a given scheduler.

Each (video, stage) is one Dask task; a video's stages are chained (each task takes the
previous one's result), different videos run in parallel on the workers. Tasks read and
write the output folder directly, so on a cluster OUT (and ROOT) must be on a file system
every worker sees at the same path. The driver only submits, follows progress, and writes
summary.csv and report.html at the end.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .._version import __version__
from ..errors import ColloidcgError, ParameterError
from ..outputs import (LOCK_NAME, TXN_PREFIX, OutputLock, _make_folder, atomic_write_json,
                       check_output_folder, recover, recover_tree)
from .discover import VideoJob, discover
from .stages import DEFAULT_STAGES, STAGES, Options, record_failure, run_stage, stage_dir

BATCH_JSON = "batch.json"


@dataclass
class BatchResult:
    """rows: one per (video, stage), as in summary.csv; n_failed: rows failed, blocked or
    stale; skipped: image files under ROOT that are not videos, with the reason."""

    rows: pd.DataFrame
    summary: Path
    report: Path
    n_failed: int
    wall_s: float
    skipped: dict = field(default_factory=dict)


def parse_stages(text: str | list | tuple) -> list[str]:
    """Stage names from "track,rearrangements" (any order; run in pipeline order)."""
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    bad = [s for s in names if s not in STAGES]
    if bad or not names:
        raise ParameterError(f"--stages: unknown stage(s) {', '.join(bad) or '(none given)'}; "
                             f"expected a comma-separated list of {', '.join(STAGES)}")
    return [s for s in STAGES if s in names]


def check_folders(root: Path, out: Path) -> None:
    """ROOT must be a folder; OUT must not be inside ROOT and must be new, empty or a
    previous batch output (which is then resumed)."""
    if not root.is_dir():
        raise ColloidcgError(f"{root}: ROOT is not a folder (give the folder that holds the videos)")
    if out == root or root in out.parents:
        raise ColloidcgError(f"-o {out}: the output folder is inside ROOT {root}; choose a folder "
                             "outside it (its results would otherwise be scanned as input)")
    check_output_folder(out)
    if out.exists():
        if not out.is_dir():
            raise ColloidcgError(f"-o {out}: exists and is not a folder")
        mine = (LOCK_NAME,)   # a lock file left by a killed run is no content
        if any(p.name not in mine and not p.name.startswith(TXN_PREFIX) for p in out.iterdir()) \
                and not (out / BATCH_JSON).is_file():
            raise ColloidcgError(f"-o {out}: exists, is not empty and is not a colloidcg batch output "
                                 f"(no {BATCH_JSON}); choose a new or empty folder")


def _worker_info() -> dict:
    import colloidcg

    return {"colloidcg_version": colloidcg.__version__, "python": sys.version.split()[0]}


#: Modules each stage imports in the worker, preloaded once into the LocalCluster's fork
#: server (see :func:`_forkserver_workers`).
STAGE_MODULES = {
    "track": ("trackpy", "cv2", "matplotlib.pyplot", "colloidcg.tracking", "colloidcg.batch.analysis"),
    "rearrangements": ("sklearn.linear_model", "colloidcg.rearrangements"),
    "train": ("torch", "colloidcg.train"),
    "evaluate": ("torch", "colloidcg.simulate", "colloidcg.evaluate"),
    "export": ("torch", "colloidcg.export"),
    "macro": ("torch", "colloidcg.scaling", "colloidcg.cli.macro"),
}


@contextlib.contextmanager
def _forkserver_workers():
    """While open, the embedded LocalCluster starts its worker processes from a fork
    server that has already imported what every stage needs (:data:`STAGE_MODULES`).

    With Dask's default "spawn", every worker process imports trackpy, torch and the rest
    itself (about 2 s of CPU each for trackpy alone); from a fork server those imports
    happen once and each worker starts as a copy. The fork server is a fresh,
    single-threaded process (never the driver), so forking it is safe. Where there is no
    fork server (Windows), Dask's default stays.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        yield
        return
    import dask

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        from distributed.utils import get_mp_context

        # Dask sets its own preload list the first time it makes the context; ours extends
        # it. It only counts until the fork server starts (at the first worker), and the
        # server lives as long as this process: a second batch in the same process (the
        # napari widget, a notebook) reuses it whatever its stages, so every stage's
        # modules are preloaded, not only this batch's (a cluster first started for
        # training alone left later tracking workers without trackpy)
        mods = ["distributed"] + sorted({m for mods_ in STAGE_MODULES.values() for m in mods_})
        get_mp_context().set_forkserver_preload(mods)
        # start it now: it imports while this process starts the scheduler
        multiprocessing.forkserver.ensure_running()
        yield


class _Cluster:
    """Context manager giving a connected ``distributed.Client``."""

    def __init__(self, scheduler: str | None, workers: int, connect_timeout: float,
                 worker_timeout: float):
        self.scheduler, self.workers = scheduler, workers
        self.connect_timeout, self.worker_timeout = connect_timeout, worker_timeout
        self.cluster = self.client = None
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        from distributed import Client, LocalCluster

        if self.scheduler is None:
            self._stack.enter_context(_forkserver_workers())
            # one single-threaded worker process per slot; dashboard on a free port (several
            # batches on one machine never collide); no memory limit (training holds
            # its data inside the task, which Dask's memory manager cannot spill)
            # scheduler and dashboard listen on this machine only (127.0.0.1), never on
            # all interfaces
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                        processes=True, host="127.0.0.1",
                                        dashboard_address="127.0.0.1:0",
                                        memory_limit=0, silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
            return self.client
        addr = self.scheduler
        try:
            self.client = Client(addr, timeout=self.connect_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ColloidcgError(
                f"--scheduler {addr}: cannot reach a Dask scheduler there ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no answer'}); check the address and "
                "that `dask scheduler` is running and reachable from this machine") from None
        try:
            self.client.wait_for_workers(1, timeout=self.worker_timeout)
        except (TimeoutError, OSError):
            self.close()
            raise ColloidcgError(
                f"--scheduler {addr}: the scheduler has no workers after {self.worker_timeout:g} s; "
                f"start some with `dask worker {addr}`") from None
        try:
            info = self.client.run(_worker_info)
        except Exception as exc:  # deserialisation errors of any kind on the workers
            self.close()
            raise ColloidcgError(
                f"--scheduler {addr}: the workers cannot run colloidcg ({type(exc).__name__}: {exc}); "
                f"install colloidcg {__version__} in every worker's environment") from None
        bad = {w: i["colloidcg_version"] for w, i in info.items() if i["colloidcg_version"] != __version__}
        if bad:
            self.close()
            raise ColloidcgError(
                f"--scheduler {addr}: workers run other colloidcg versions ({bad}); this is "
                f"{__version__}: install the same version everywhere")
        return self.client

    def close(self):
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        self._stack.close()

    def __exit__(self, *exc):
        self.close()


def run_batch(root, out, *, config=None, stages=DEFAULT_STAGES, workers: int | None = None,
              scheduler: str | None = None, threads: int | None = None, progress: bool = True,
              connect_timeout: float = 10.0, worker_timeout: float = 60.0,
              report: bool = True) -> BatchResult:
    """Run ``stages`` on every video under ``root``, results in ``out``.

    Parameters
    ----------
    root : folder searched for videos (:func:`colloidcg.batch.discover.discover`).
    out : output folder (must not be inside ``root``); a previous batch output is resumed:
        stages whose inputs and parameters are unchanged are skipped.
    config : a colloidcg.toml-format file applied to every video (under the nearest
        colloidcg.toml of each video).
    stages : subset of :data:`STAGES` (always run in pipeline order; default the five of
        :data:`DEFAULT_STAGES`, macro only when named).
    workers : worker processes of the embedded LocalCluster (default: CPU count, at most
        the number of videos); ignored with ``scheduler``.
    scheduler : address of a running Dask scheduler (e.g. "tcp://10.0.0.5:8786").
    threads : threads each task may use: torch in training, OpenCV in tracking, the
        rearrangement stage's threads (default with the LocalCluster: CPU count / workers;
        with a scheduler: 1).
    progress : tqdm bars over videos and stages on stderr.

    Returns a :class:`BatchResult`; failures are in it, not raised. Raises
    :class:`ColloidcgError` for bad input (no videos, bad colloidcg.toml, unreachable
    scheduler, OUT inside ROOT) before any work.
    """
    from .report_html import write_report
    from .summary import write_summary

    t_start = time.perf_counter()
    stages = parse_stages(stages)
    root, out = Path(root).resolve(), Path(out).resolve()
    check_folders(root, out)
    if workers is not None and workers < 1:
        raise ParameterError(f"--workers: must be >= 1, got {workers}")
    if threads is not None and threads < 1:
        raise ParameterError(f"--threads: must be >= 1, got {threads}")
    skipped: list = []
    jobs = discover(root, config, exclude=out, skipped=skipped)
    n_cpu = os.cpu_count() or 1
    if scheduler is None:
        workers = workers or max(1, min(n_cpu, len(jobs)))
        if threads is None:
            threads = max(1, n_cpu // workers)
    opts = Options(out=str(out), root=str(root), threads=threads or 1)
    made = not out.exists()
    _make_folder(out, "-o")
    ok = False
    try:
        with OutputLock(out):
            recover_tree(out)   # finish or undo the commits of killed runs, remove their temporaries
            info = {"colloidcg_version": __version__, "root": str(root), "out": str(out),
                    "config": str(Path(config).resolve()) if config else None, "stages": stages,
                    "scheduler": scheduler or f"LocalCluster({workers} workers)", "threads": opts.threads,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "state": "running",
                    "pid": os.getpid(), "videos": [j.rel for j in jobs],
                    "skipped": {str(Path(f).relative_to(root).as_posix()): why for f, why in skipped}}

            def started():   # the cluster is up: from here on the run leaves a record
                atomic_write_json(out / BATCH_JSON, info)

            rows = _execute(jobs, stages, opts, scheduler, workers or 0, progress, connect_timeout,
                            worker_timeout, on_ready=started)
            rows = settle_rows(rows, jobs, stages, opts)
            table = write_summary(rows, out / "summary.csv", stages)
            rpath = out / "report.html"
            if report:
                write_report(out, jobs, table, stages, skipped=info["skipped"])
            atomic_write_json(out / BATCH_JSON, {**info, "state": "finished",
                                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        ok = True
    finally:
        if made and not ok:
            try:
                out.rmdir()   # nothing was written (only where the run failed before it started)
            except OSError:
                pass
    n_bad = int(table["status"].isin(["failed", "blocked", "stale"]).sum())
    return BatchResult(table, out / "summary.csv", rpath, n_bad, time.perf_counter() - t_start,
                       info["skipped"])


#: Start of the error of a row whose Dask task itself died (not a failure inside run_stage).
TASK_DIED = "the Dask task failed"


def settle_rows(rows: list[dict], jobs: list[VideoJob], stages: list[str], opts: Options) -> list[dict]:
    """Rows of tasks that died (a killed worker, a lost task) made true to the disk.

    The first such stage of a video is "failed"; the stages after it, which Dask fails
    along with it, are "blocked" by it. Each is recorded in its stage folder like any
    failure: a previous complete result is kept and reported "stale".
    """
    by = {(r["video"], r["stage"]): r for r in rows}
    for job in jobs:
        cause = None
        for stage in stages:
            r = by.get((job.rel, stage))
            if r is None or not str(r.get("error", "")).startswith(TASK_DIED):
                if r is not None and r.get("status") in ("failed", "blocked"):
                    cause = cause or stage
                continue
            if cause is None:
                status, error, cause = "failed", r["error"], stage
            else:
                status, error = "blocked", f"stage '{cause}' did not finish"
            rec = {"stage": stage, "colloidcg_version": __version__, "video": job.path,
                   "video_rel": job.rel, "config_files": job.config_files}
            try:
                sd = stage_dir(opts, job, stage)
                recover(sd.parent, held=True)   # the dead task's transaction folder
                record_failure(sd, rec, status, error, row=r)
            except OSError:
                r.update(status=status, error=error)
    return rows


def _execute(jobs: list[VideoJob], stages: list[str], opts: Options, scheduler, workers: int,
             progress: bool, connect_timeout: float, worker_timeout: float, on_ready=None) -> list[dict]:
    from distributed import as_completed
    from tqdm.auto import tqdm

    rows: list[dict] = []
    with _Cluster(scheduler, workers, connect_timeout, worker_timeout) as client:
        if on_ready is not None:
            on_ready()
        futures, order = {}, []
        for k, job in enumerate(jobs):
            prev = None
            for stage in stages:
                fut = client.submit(run_stage, job, stage, opts, prev, pure=False,
                                    key=f"colloidcg-{stage}-{k}-{time.monotonic_ns()}")
                futures[fut.key] = (job, stage)
                order.append(fut)
                prev = fut
        left = {j.rel: len(stages) for j in jobs}
        bar_v = tqdm(total=len(jobs), desc="videos", unit="video", position=0, disable=not progress,
                     file=sys.stderr)
        bar_s = tqdm(total=len(futures), desc="stages", unit="stage", position=1, disable=not progress,
                     file=sys.stderr)
        try:
            for fut in as_completed(order):
                job, stage = futures[fut.key]
                if fut.status == "finished":
                    row = fut.result()
                else:   # the task itself died (worker killed, lost, or a bug outside run_stage)
                    try:
                        exc = fut.exception()
                    except Exception as e:  # a cancelled future raises here
                        exc = e
                    row = {"video": job.rel, "stage": stage, "status": "failed",
                           "error": " ".join(f"{TASK_DIED}: {type(exc).__name__}: {exc}".split()),
                           "duration_s": None, "computed_s": None, "numbers": {}}
                rows.append(row)
                bar_s.set_postfix_str(f"{job.rel}: {stage} {row['status']}", refresh=False)
                bar_s.update(1)
                left[job.rel] -= 1
                if left[job.rel] == 0:
                    bar_v.update(1)
        finally:
            bar_s.close()
            bar_v.close()
    return rows
