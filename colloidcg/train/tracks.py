"""Tracks table -> trained model folder (the CLI, the batch runner and the napari widget
all train through :func:`train_tracks`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .carried import carried_table
from .config import TrainConfig
from .fitting import FitResult, fit
from .validation import stability_at

#: Files a trained model folder holds (see :func:`train_tracks`).
MODEL_FILES = ("model.pt", "config.json", "report.json", "S.parquet", "S.json")


def train_tracks(tracks, meta: dict | None = None, config: TrainConfig | None = None, out_dir=None, *,
                 labels=None, fps: float | None = None, um_per_px: float | None = None,
                 box_px=None, source: str | None = None, callback=None,
                 final_dir=None, sampler=None, labels_lag: int | None = None) -> FitResult:
    """Train on a tracks table (trackpy schema, px and frames) and, with ``out_dir``, write
    the model folder: ``model.pt``, ``config.json`` (architecture, calibration, training
    options), ``report.json`` (metrics and history), ``loss.png`` and ``validation.png``.

    ``meta`` is the tracks' sidecar (calibration is read from it unless ``fps`` /
    ``um_per_px`` are given); ``labels`` a rearrangement table (frame, particle,
    rearranging) for the AUC and auxiliary loss; ``source`` the tracks' path, recorded as
    provenance. ``final_dir``: where ``out_dir`` will be moved when it is a transaction's
    staging folder (:class:`colloidcg.outputs.Commit`); recorded as the checkpoint folder.
    ``sampler``: the :class:`~colloidcg.train.TransitionSampler` for :func:`fit`.

    The folder also holds ``S.parquet`` (with its sidecar ``S.json``): S carried along the
    data (:func:`~colloidcg.train.carried.carried_table`: encoded at each particle's first
    frame, then advanced with the noise-aware dS/dt), one row per tracked row. With a
    rearrangement table that has the structure functions (``colloidcg rearrangements``
    with descriptors), ``report.json``'s ``carried_s_auc`` scores the carried S and dS/dt
    on the softness baseline's test rows (``labels_lag``: the labels' lag in frames, the
    rearrangements sidecar's ``lag_frames``; default the training ``horizon``).
    """
    from ..core.persist import save_model
    from ..data import from_tracks, meta_box
    from ..outputs import atomic_write_json, provenance, write_table
    from ..plots import plot_training_history

    cfg = (config or TrainConfig()).validate()
    if box_px is None:      # a periodic box recorded with the tracks (MD tracks, simulations)
        box_px = meta_box(meta)
    traj = from_tracks(tracks, meta, fps=fps, um_per_px=um_per_px, box_px=box_px, labels=labels,
                       size_column=cfg.size_column or None)
    if out_dir is not None and cfg.checkpoint_dir is None:
        cfg = replace(cfg, checkpoint_dir=str(out_dir))
    result = fit(traj, cfg, callback=callback, sampler=sampler)
    s_table = carried_table(result.model, traj.to(device=cfg.device, dtype=getattr(torch, cfg.dtype)),
                            float(result.report["localisation_noise"]) ** 2, progress=cfg.progress,
                            heat=cfg.s_heat)
    s_table["frame"] = s_table["frame"].astype(tracks["frame"].dtype)
    if labels is not None:
        result.report["carried_s_auc"] = carried_s_auc(labels, s_table, labels_lag or cfg.horizon)
    # the integration steps per frame the model's rollouts need (simulate --substeps auto takes them)
    st = stability_at(result.model, traj.to(device=cfg.device, dtype=getattr(torch, cfg.dtype)),
                      max(1, traj.n_frames // 2))
    result.report["rollout_stability"] = {} if st is None else st.to_dict()
    result.report["calibration"] = {"um_per_px": traj.um_per_px, "fps": traj.fps,
                                    "box_px": list(box_px) if box_px is not None else None,
                                    "tracks": str(Path(source).resolve()) if source else None}
    if traj.shear is not None:      # trained in a sheared (Lees-Edwards) box
        result.report["calibration"]["lees_edwards"] = {"plane": "xy", "shear_rate": traj.shear_rate}
    if out_dir is not None:
        out = Path(out_dir)
        train_rec = cfg.to_dict()
        if final_dir is not None:
            train_rec["checkpoint_dir"] = str(final_dir)
        save_model(result.model, out, {"calibration": result.report["calibration"], "train": train_rec})
        report = dict(result.report)
        report["history"] = result.history
        report["plots"] = [p.name for p in plot_training_history(result.history, out)]
        atomic_write_json(out / "report.json", report)
        write_table(out / "S.parquet", s_table, provenance(
            "train", {"tracks": str(Path(source).resolve()) if source else None},
            {"s_memory": cfg.s_memory, "localisation_noise": result.report["localisation_noise"]},
            {"S0": "k_B (S components S0, S1, ...)", "dSdt": "k_B per frame (sum over components)"}))
    return result


def carried_s_auc(labels, s_table, lag: int) -> dict:
    """ROC AUC of the carried S0 (sign fixed on the softness baseline's training rows) and
    of dS/dt for "rearranges within the next ``lag`` frames", on exactly the softness
    baseline's test rows, beside the baseline's AUC and standard error
    (:func:`colloidcg.rearrangements.scoring.score_against_softness`); ``{"skipped":
    reason}`` when the rearrangement table cannot carry the baseline (no structure
    functions, one class only)."""
    from ..errors import ColloidcgError
    from ..rearrangements.scoring import score_against_softness
    try:
        rep = score_against_softness(labels, s_table[["frame", "particle", "S0", "dSdt"]], lag,
                                     fix_sign=["S0"])
    except ColloidcgError as exc:
        return {"skipped": str(exc)}
    out = rep.summary()
    out["note"] = ("the model trained on every frame, test frames included (the softness baseline "
                   "on the frames before its split only)")
    return out

