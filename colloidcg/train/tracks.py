"""Tracks table -> trained model folder (the CLI, the batch runner and the napari widget
all train through :func:`train_tracks`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .config import TrainConfig
from .fitting import FitResult, fit

#: Files a trained model folder holds (see :func:`train_tracks`).
MODEL_FILES = ("model.pt", "config.json", "report.json")


def train_tracks(tracks, meta: dict | None = None, config: TrainConfig | None = None, out_dir=None, *,
                 labels=None, fps: float | None = None, um_per_px: float | None = None,
                 box_px=None, source: str | None = None, callback=None,
                 final_dir=None, sampler=None) -> FitResult:
    """Train on a tracks table (trackpy schema, px and frames) and, with ``out_dir``, write
    the model folder: ``model.pt``, ``config.json`` (architecture, calibration, training
    options), ``report.json`` (metrics and history), ``loss.png`` and ``validation.png``.

    ``meta`` is the tracks' sidecar (calibration is read from it unless ``fps`` /
    ``um_per_px`` are given); ``labels`` a rearrangement table (frame, particle,
    rearranging) for the AUC and auxiliary loss; ``source`` the tracks' path, recorded as
    provenance. ``final_dir``: where ``out_dir`` will be moved when it is a transaction's
    staging folder (:class:`colloidcg.outputs.Commit`); recorded as the checkpoint folder.
    ``sampler``: the :class:`~colloidcg.train.TransitionSampler` for :func:`fit`.
    """
    from ..core.persist import save_model
    from ..data import from_tracks, meta_box
    from ..outputs import atomic_write_json
    from ..plots import plot_training_history

    cfg = (config or TrainConfig()).validate()
    if box_px is None:      # a periodic box recorded with the tracks (MD tracks, simulations)
        box_px = meta_box(meta)
    traj = from_tracks(tracks, meta, fps=fps, um_per_px=um_per_px, box_px=box_px, labels=labels,
                       size_column=cfg.size_column or None)
    if out_dir is not None and cfg.checkpoint_dir is None:
        cfg = replace(cfg, checkpoint_dir=str(out_dir))
    result = fit(traj, cfg, callback=callback, sampler=sampler)
    result.report["calibration"] = {"um_per_px": traj.um_per_px, "fps": traj.fps,
                                    "box_px": list(box_px) if box_px is not None else None,
                                    "tracks": str(Path(source).resolve()) if source else None}
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
    return result
