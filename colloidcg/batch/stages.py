"""The batch's stages, one video at a time: each runs in a Dask worker (or in-process).

Stage folders are OUT/<video>/<stage>/. Each stage reads what earlier stages wrote there
(the output folder must be visible to every worker: a shared file system on a cluster),
decides from its key whether it is up to date (:mod:`.hashing`), and otherwise runs in a
transaction folder beside its stage folder (:class:`colloidcg.outputs.Commit`), writes
``stage.json`` there last and swaps the finished folder in whole: a killed or failed
redo never touches the previous result. Every failure is caught and recorded, so one
bad video never stops the others; when a previous complete result exists it is kept and
reported "stale", with the reason, in ``attempt.json`` beside its ``stage.json``.

- track: the video -> tracks.parquet (+ sidecar), msd.png, gr.png, statistics.json; for
  an MD trajectory (job kind "trajectory"), the trajectory read and coarse-grained with
  the ``[md]`` table's options (:func:`colloidcg.md.read_md_tracks`) -> the same files
- rearrangements: tracks -> rearrangements.parquet, events.parquet, d2min.png; "skipped"
  for trajectories (detection reads video tracks: 2D positions with localisation noise)
- train: tracks (+ rearrangement labels when that stage is complete) -> the model folder
- evaluate: model + tracks -> sim.parquet, metrics.json and model-versus-data plots
- export: model (+ evaluate metrics when complete) -> bundle/
- macro (optional, not run by default): model + tracks -> sde/ (``colloidcg macro train``:
  upsampling, partial evolution, SDE fit, report and plots) and macro.parquet (+ .json,
  .png: ``colloidcg macro simulate``), with the ``[macro]`` table's options (:data:`MACRO_KEYS`)
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from threadpoolctl import threadpool_limits

from .._version import __version__
from ..errors import ColloidcgError
from ..outputs import Commit
from . import hashing
from .discover import VideoJob

STAGES = ("track", "rearrangements", "train", "evaluate", "export", "macro")
#: The stages a batch runs unless told otherwise (macro is asked for by name).
DEFAULT_STAGES = STAGES[:5]
REQUIRES = {"track": (), "rearrangements": ("track",), "train": ("track",),
            "evaluate": ("track", "train"), "export": ("train",), "macro": ("track", "train")}
#: Used when complete, not required.
OPTIONAL = {"train": ("rearrangements",), "export": ("evaluate",)}


@dataclass
class Options:
    """Batch-wide settings passed to every stage.

    out : the batch output folder (absolute).
    root : the batch input folder (absolute), for colloidcg.toml look-ups.
    threads : threads one task may use: torch (train, evaluate, export), OpenCV (track),
        rearrangement worker threads.
    """

    out: str
    root: str
    threads: int = 1


def stage_dir(opts: Options, job: VideoJob, stage: str) -> Path:
    return Path(opts.out) / job.rel / stage


class _Blocked(Exception):
    """An input stage has no complete output."""


def _upstream(opts: Options, job: VideoJob, stage: str) -> dict[str, dict]:
    recs = {}
    for up in REQUIRES[stage]:
        att = hashing.read_attempt(stage_dir(opts, job, up))
        if att is not None:
            raise _Blocked(f"stage '{up}' {att.get('status', 'failed')} (its previous result is kept, stale)")
        rec = hashing.completed(stage_dir(opts, job, up))
        if rec is None:
            old = hashing.read_record(stage_dir(opts, job, up))
            if old is not None and old.get("status") in ("failed", "blocked"):
                raise _Blocked(f"stage '{up}' {old['status']}")
            raise _Blocked(f"needs the output of stage '{up}', which has not run "
                           f"(add {up} to --stages)")
        recs[up] = rec
    for up in OPTIONAL.get(stage, ()):
        rec = hashing.completed(stage_dir(opts, job, up))
        if rec is not None and hashing.read_attempt(stage_dir(opts, job, up)) is None:
            recs[up] = rec
    return recs


def _out_hash(rec: dict | None, name: str) -> str | None:
    if rec is None:
        return None
    info = (rec.get("outputs") or {}).get(name)
    return info.get("sha256") if info else None


# ----------------------------------------------------------------------------- track
def _open_video(job: VideoJob, opts: Options):
    from ..errors import VideoError
    from ..io import open_video

    # the batch-wide --config fills calibration the file and colloidcg.toml left unknown;
    # the merged tables become the video's configuration (track() reads [track] from it)
    cal = job.config.get("calibration", {})
    axis = cal.get("tiff_axis")
    try:
        video = open_video(job.path, config_root=opts.root)
    except VideoError:
        if not axis:
            raise
        video = None              # e.g. an ambiguous TIFF axis, which the configuration settles
    from_batch = bool(axis) and (video is None or "tiff_axis" not in video.meta.sources)
    if from_batch:
        # no colloidcg.toml beside the video chose the TIFF axis: the batch configuration does
        video = open_video(job.path, config_root=opts.root, tiff_axis=axis)
    change: dict[str, Any] = {"config": job.config, "sources": dict(video.meta.sources)}
    if from_batch and "tiff_axis" in change["sources"]:
        change["sources"]["tiff_axis"] = f"batch configuration ({job.config_files[0]})"
    for key in ("fps", "um_per_px", "um_per_slice"):
        if getattr(video.meta, key) is None and key in cal:
            change[key] = float(cal[key])
            change["sources"][key] = f"batch configuration ({job.config_files[0]})"
    video.meta = dataclasses.replace(video.meta, **change)
    return video


def _md_options(job: VideoJob) -> dict:
    """md-read's options from the job's [md] table; relative paths from the trajectory's folder."""
    md = dict(job.config.get("md", {}))
    here = Path(job.path).parent
    for key in ("topology", "coarse_grain"):
        v = md.get(key)
        if key == "coarse_grain" and v in ("none", "molecule", "type", None):
            continue
        if v is not None and not Path(v).is_absolute():
            md[key] = str(here / v)
    return md


def _plan_track(job, opts, ups, ctx):
    sd = stage_dir(opts, job, "track")
    prev = hashing.read_record(sd)
    prev_video = ((prev or {}).get("inputs") or {}).get("video") if prev else None
    if job.kind == "trajectory":
        md = _md_options(job)
        inputs = {"video": hashing.hash_video(job.path, prev_video if isinstance(prev_video, dict) else None)}
        for key in ("topology", "coarse_grain"):
            if md.get(key) and Path(md[key]).is_file():
                inputs[key] = hashing.hash_video(md[key])
        return {"md": md}, inputs
    video = _open_video(job, opts)
    ctx["video"] = video
    vid = hashing.hash_video(job.path, prev_video if isinstance(prev_video, dict) else None)
    m = video.meta
    params = {"track": {k: v for k, v in job.config.get("track", {}).items() if k != "processes"},
              "calibration": {"fps": m.fps, "um_per_px": m.um_per_px, "um_per_slice": m.um_per_slice}}
    return params, {"video": vid}


def _run_trajectory(job, opts, out: Path) -> dict:
    from ..md import read_md_tracks
    from ..outputs import write_table
    from .analysis import track_statistics

    md = _md_options(job)
    mapping = md.pop("coarse_grain", "none")
    types = md.pop("types", None)
    tracks, side = read_md_tracks(job.path, mapping, types, **md)
    write_table(out / "tracks.parquet", tracks, side)
    meta = side.get("meta") or {}
    numbers = track_statistics(tracks, out, 1.0, meta.get("fps"))
    numbers.update(coarse_grain=mapping, length_unit=meta.get("length_unit"), time_unit=meta.get("time_unit"))
    return numbers


def _run_track(job, opts, ups, ctx, out: Path) -> dict:
    if job.kind == "trajectory":
        return _run_trajectory(job, opts, out)
    import trackpy

    from ..tracking import track
    from .analysis import track_statistics

    import cv2

    trackpy.quiet()
    cv2.setNumThreads(int(opts.threads))
    video = ctx["video"]
    # one process per task: the batch's parallelism is its Dask workers (and a Dask
    # worker is a daemonic process, which may not start a process pool)
    result = track(video, None, progress=False, processes=1)
    result.save(out, overwrite=True)
    numbers = track_statistics(result.tracks, out, video.meta.um_per_px, video.meta.fps)
    if result.quality is not None:    # summary.csv: the tracking verdict and its reasons
        numbers.update(quality=result.quality.status,
                       quality_reasons="; ".join(result.quality.reasons))
    return numbers


# ----------------------------------------------------------------------------- rearrangements
def _plan_rearrangements(job, opts, ups, ctx):
    return ({"rearrangements": job.config.get("rearrangements", {})},
            {"tracks": _out_hash(ups["track"], "tracks.parquet")})


def _run_rearrangements(job, opts, ups, ctx, out: Path) -> dict:
    from ..rearrangements.plot import fov_from_sidecar, video_frame
    from ..outputs import read_table
    from ..rearrangements import busiest_frame, detect, plot_d2min_frame, softness_baseline

    tpath = stage_dir(opts, job, "track") / "tracks.parquet"
    tracks, meta = read_table(tpath, required=["frame", "particle", "x", "y"])
    fov = fov_from_sidecar(meta, tracks)
    kw = dict(job.config.get("rearrangements", {}))
    res = detect(tracks, fov=fov, workers=int(opts.threads), **kw)
    soft = None
    if kw.get("descriptors", True):
        try:
            soft = softness_baseline(res.table, res.parameters["lag_frames"]).summary()
        except ColloidcgError as exc:
            soft = {"auc": None, "reason": str(exc)}
    units = meta.get("units") or {}
    res.save(out, inputs={"tracks": str(tpath)}, overwrite=True, softness_baseline=soft,
             calibration={"fps": units.get("fps"), "um_per_px": units.get("um_per_px")})
    frame = busiest_frame(res.table)
    plot_d2min_frame(res.table, frame, out / "d2min.png", image=video_frame(meta, frame),
                     lag=res.parameters.get("lag_frames"), fps=units.get("fps"))
    p = res.parameters
    return {"n_rearranging": p.get("n_rearranging"), "n_events": p.get("n_events"),
            "lag_frames": p.get("lag_frames"), "d2min_threshold": p.get("threshold"),
            "softness_auc": (soft or {}).get("auc"), "d2min_frame": frame}


# ----------------------------------------------------------------------------- train
def _plan_train(job, opts, ups, ctx):
    labels = _out_hash(ups.get("rearrangements"), "rearrangements.parquet")
    return ({"train": job.config.get("train", {})},
            {"tracks": _out_hash(ups["track"], "tracks.parquet"), "labels": labels})


def _run_train(job, opts, ups, ctx, out: Path) -> dict:
    from ..outputs import read_table
    from ..train import train_tracks

    tpath = stage_dir(opts, job, "track") / "tracks.parquet"
    tracks, meta = read_table(tpath, required=["frame", "particle", "x", "y"])
    labels = None
    if "rearrangements" in ups:
        labels, _ = read_table(stage_dir(opts, job, "rearrangements") / "rearrangements.parquet",
                               required=["frame", "particle", "rearranging"])
    cfg = train_config(job.config.get("train", {}))
    res = train_tracks(tracks, meta, cfg, out, labels=labels, source=str(tpath), final_dir=ctx["final"])
    rep = res.report
    auc = (rep.get("rearrangement_auc") or {}).get("S")
    return {"epochs_run": rep.get("epochs_run"), "best_val_score": rep.get("best_val_score"),
            "cutoff_um": rep.get("cutoff"), "rearrangement_auc_S": auc}


def train_config(table: dict, where: str = ""):
    """The TrainConfig of a [train] table, checked: architecture options flat (``n_s``) or
    in a ``[train.model]`` table, lists accepted where tuples are, unknown keys named."""
    from ..train import TrainConfig

    return TrainConfig.from_dict({**table, "progress": False}, where).validate(where)


# ----------------------------------------------------------------------------- evaluate
def _model_hash(rec: dict | None) -> str | None:
    if rec is None:
        return None
    return hashing.canonical([_out_hash(rec, "model.pt"), _out_hash(rec, "config.json")])


def _plan_evaluate(job, opts, ups, ctx):
    return ({"evaluate": job.config.get("evaluate", {})},
            {"tracks": _out_hash(ups["track"], "tracks.parquet"), "model": _model_hash(ups["train"])})


def _run_evaluate(job, opts, ups, ctx, out: Path) -> dict:
    from ..export import load_model
    from ..evaluate import write_report
    from ..outputs import provenance, read_table, write_table
    from ..simulate import simulate

    tpath = stage_dir(opts, job, "track") / "tracks.parquet"
    mdir = stage_dir(opts, job, "train")
    tracks, meta = read_table(tpath, required=["frame", "particle", "x", "y"])
    model, cfg = load_model(mdir)
    ev = job.config.get("evaluate", {})
    final = ctx["final"]
    f0, f1 = int(tracks["frame"].min()), int(tracks["frame"].max())
    steps = int(ev.get("steps", f1 - f0 - 1))
    if steps < 2:
        raise ColloidcgError(f"{tpath}: {f1 - f0 + 1} frames; evaluate needs at least 4 "
                             "(a rollout of two or more steps)")
    sim = simulate(model, cfg, tracks, meta, steps=steps, seed=int(ev.get("seed", 0)),
                   substeps=ev.get("substeps", "auto"), fast=bool(ev.get("fast", False)),
                   name=str(tpath))
    side = provenance("simulate", {"model": str(mdir), "init": str(tpath)}, sim.parameters,
                      units={"x": "px", "y": "px", "vx": "px/frame", "vy": "px/frame", "frame": "frame"},
                      meta=sim.meta)
    write_table(out / "sim.parquet", sim.tracks, side)
    cal = cfg.get("calibration") or {}
    um, fps = cal.get("um_per_px") or 1.0, cal.get("fps") or 1.0
    rec = write_report(tracks, sim.tracks, out, um_per_px=um, fps=fps, box_px=cal.get("box_px"),
                       extra={"data": str(tpath), "sim": str(final / "sim.parquet"), "fps": fps,
                              "um_per_px": um})
    return {k: rec.get(k) for k in ("msd_rel_rms", "vacf_rel_rms", "rdf_rel_rms", "van_hove_rel_rms")}


# ----------------------------------------------------------------------------- export
def _plan_export(job, opts, ups, ctx):
    return ({}, {"model": _model_hash(ups["train"]), "metrics": _out_hash(ups.get("evaluate"), "metrics.json")})


def _run_export(job, opts, ups, ctx, out: Path) -> dict:
    import json

    from ..export import export_bundle

    metrics = None
    if "evaluate" in ups:
        rec = json.loads((stage_dir(opts, job, "evaluate") / "metrics.json").read_text())
        metrics = {k: v for k, v in rec.items() if k != "curves"}
    export_bundle(stage_dir(opts, job, "train"), out / "bundle", overwrite=True, metrics=metrics)
    return {"bundle": f"{job.rel}/export/bundle"}


# ----------------------------------------------------------------------------- macro
#: The [macro] table: key -> (command, its flag, type). "train" keys go to ``colloidcg
#: macro train`` (states upsampled from the video's tracks), "simulate" keys to ``colloidcg
#: macro simulate`` (simulate_factor defaults to factor).
MACRO_KEYS = {"factor": ("train", "--factor", int), "snapshots": ("train", "--snapshots", int),
              "steps": ("train", "--steps", int), "patch": ("train", "--patch", float),
              "buffer": ("train", "--buffer", float), "patches": ("train", "--patches", int),
              "observables": ("train", "--observables", str), "n_closure": ("train", "--n-closure", int),
              "lambda": ("train", "--lambda", (str, float, int)), "tiling": ("train", "--tiling", str),
              "fits": ("train", "--fits", int), "fit_iterations": ("train", "--fit-iterations", int),
              "seed": ("train", "--seed", int), "patch_curve": ("train", None, bool),
              "simulate_factor": ("simulate", "--factor", float), "simulate_steps": ("simulate", "--steps", int),
              "runs": ("simulate", "--runs", int)}
#: What the batch's macro stage does where the [macro] table is silent: a 16x area, no
#: patch-size curve (it triples the cost), 100 macro steps of 100 runs.
MACRO_DEFAULTS = {"factor": 16, "patch_curve": False, "simulate_steps": 100, "runs": 100}


def macro_argv(table: dict, model: str, tracks: str, out: Path) -> tuple[list[str], list[str]]:
    """The ``colloidcg macro train`` and ``macro simulate`` command lines of a [macro]
    table (values already checked against :data:`MACRO_KEYS`)."""
    opts = {**MACRO_DEFAULTS, **table}
    train = ["macro", "train", model, "--init", tracks, "-o", str(out / "sde")]
    sim = ["macro", "simulate", str(out / "sde"), "-o", str(out / "macro.parquet")]
    for key, value in opts.items():
        command, flag, _ = MACRO_KEYS[key]
        if key == "patch_curve":
            train += [] if value else ["--no-patch-curve"]
        elif command == "train":
            train += [flag, str(value)]
        else:
            sim += [flag, str(value)]
    if "simulate_factor" not in opts:
        sim += ["--factor", str(opts["factor"])]
    if "seed" in opts:
        sim += ["--seed", str(opts["seed"])]
    return train, sim


def _plan_macro(job, opts, ups, ctx):
    return ({"macro": job.config.get("macro", {})},
            {"tracks": _out_hash(ups["track"], "tracks.parquet"), "model": _model_hash(ups["train"])})


def _run_macro(job, opts, ups, ctx, out: Path) -> dict:
    import contextlib
    import io
    import json

    from ..cli import build_parser

    tpath = stage_dir(opts, job, "track") / "tracks.parquet"
    train, sim = macro_argv(job.config.get("macro", {}), str(stage_dir(opts, job, "train")), str(tpath), out)
    parser = build_parser("macro")
    said = io.StringIO()
    for argv in (train, sim):
        args = parser.parse_args(argv)
        # the commands' one-line summaries and progress bars stay out of the worker's
        # output; their warnings go to the summary (the redirection is process-wide: a
        # local cluster runs one task per worker process; on an external scheduler's
        # multi-threaded worker, other tasks' stderr is held here while this stage runs)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(said):
            args.func(args)
    warnings = [ln.strip() for ln in said.getvalue().replace("\r", "\n").splitlines()
                if ln.strip().startswith("warning:")]
    rep = json.loads((out / "sde" / "report.json").read_text())
    side = json.loads((out / "macro.json").read_text())
    fit = rep.get("fit") or {}
    return {"macro_variables": ",".join(rep.get("variables") or []), "macro_K": rep.get("n_patches_K"),
            "macro_increments": rep.get("patches"), "macro_val_nll": fit.get("val_nll"),
            "macro_runs_outside": (side.get("parameters") or {}).get("runs_outside_fitted_states"),
            "macro_warnings": " ".join(warnings)}


PLAN: dict[str, Callable] = {"track": _plan_track, "rearrangements": _plan_rearrangements,
                             "train": _plan_train, "evaluate": _plan_evaluate, "export": _plan_export,
                             "macro": _plan_macro}
RUN: dict[str, Callable] = {"track": _run_track, "rearrangements": _run_rearrangements,
                            "train": _run_train, "evaluate": _run_evaluate, "export": _run_export,
                            "macro": _run_macro}


def _error_text(exc: BaseException) -> str:
    """One line (summary.csv rows stay one line; the traceback is in stage.json)."""
    text = str(exc) if isinstance(exc, ColloidcgError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def record_failure(sd: Path, record: dict, status: str, error: str, row: dict | None = None,
                   **extra) -> dict:
    """Record that a stage ``status`` ("failed" or "blocked") with ``error``.

    When the stage folder ``sd`` holds a previous complete result it is kept untouched and
    marked stale: ``attempt.json`` beside its ``stage.json`` says what went wrong, and the
    row becomes "stale" with the previous result's numbers. Otherwise a folder holding only
    the failure's ``stage.json`` is swapped in. Returns the (updated) row.
    """
    row = row if row is not None else {}
    rec = {**record, "status": status, "error": error,
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    prev = hashing.completed(sd)
    if prev is not None:
        hashing.write_attempt(sd, rec)
        row.update(status="stale", numbers=prev.get("numbers") or {},
                   computed_s=prev.get("duration_s"),
                   error=f"{status}: {error}; kept the previous result (from {prev.get('created', '?')})")
        return row
    with Commit(sd.parent) as tx:
        work = tx.path(sd.name)
        work.mkdir()
        hashing.write_record(work, rec)
        tx.commit()
    row.update(status=status, error=error)
    return row


def run_stage(job: VideoJob, stage: str, opts: Options, previous: Any = None) -> dict[str, Any]:
    """Run (or skip, when up to date) one stage of one video; never raises for the
    video's own problems. Returns the summary row: video, stage, status ("done",
    "unchanged", "failed", "blocked", or "stale": failed or blocked with the previous
    complete result kept), error, duration_s, computed_s and key numbers.

    ``previous`` is the row of the stage before it in this run; it is only used to make
    Dask run the stages of a video in order.
    """
    t0 = time.perf_counter()
    logging.getLogger("tifffile").setLevel(logging.ERROR)   # damaged files are reported in the row
    sd = stage_dir(opts, job, stage)
    row: dict[str, Any] = {"video": job.rel, "stage": stage, "status": "", "error": "",
                           "duration_s": 0.0, "computed_s": None, "numbers": {}}
    record: dict[str, Any] = {"stage": stage, "colloidcg_version": __version__,
                              "video": job.path, "video_rel": job.rel, "config_files": job.config_files}
    if stage in ("train", "evaluate", "export", "macro"):
        import torch

        torch.set_num_threads(int(opts.threads))
    ctx: dict[str, Any] = {}
    if job.kind == "trajectory" and stage == "rearrangements":
        row.update(status="skipped", error="an MD trajectory: rearrangement detection reads video tracks "
                                           "(2D positions with localisation noise)")
        return row
    try:
        ups = _upstream(opts, job, stage)
        params, inputs = PLAN[stage](job, opts, ups, ctx)
        key = hashing.stage_key(stage, params, {k: (v.get("sha256") if isinstance(v, dict) else v)
                                                 for k, v in inputs.items()})
        done = hashing.up_to_date(sd, key)
        if done is not None:
            hashing.clear_attempt(sd)   # an earlier failed redo is superseded: this result is current
            row.update(status="unchanged", computed_s=done.get("duration_s"),
                       numbers=done.get("numbers") or {})
            return row
        record.update(key=key, parameters=params, inputs=inputs)
        ctx["final"] = sd
        # the stage runs in a transaction folder beside its folder and is swapped in whole
        # when complete: a failed or killed redo leaves the previous result as it was
        with Commit(sd.parent) as tx:
            work = tx.path(stage)
            work.mkdir()
            # BLAS/OpenMP pools sized to the task's share of the machine: a worker started
            # from a fork server has numpy's pools sized before Dask's per-worker settings
            with threadpool_limits(int(opts.threads)):
                numbers = RUN[stage](job, opts, ups, ctx, work)
            dur = time.perf_counter() - t0
            record.update(status="done", error=None, numbers=numbers, duration_s=round(dur, 3),
                          outputs=hashing.manifest(work),
                          created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            hashing.write_record(work, record)
            tx.commit()
        row.update(status="done", numbers=numbers, computed_s=round(dur, 3))
    except _Blocked as exc:
        record_failure(sd, record, "blocked", str(exc), row=row)
    except Exception as exc:   # one video's failure must not stop the batch: record it
        try:
            record_failure(sd, record, "failed", _error_text(exc), row=row,
                           traceback=traceback.format_exc())
        except OSError:
            row.update(status="failed", error=_error_text(exc))
    finally:
        video = ctx.get("video")
        if video is not None:
            video.close()
        row["duration_s"] = round(time.perf_counter() - t0, 3)
    return row
