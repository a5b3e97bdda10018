"""The Model widget: train the metriplectic particle model on the current tracks (worker
thread, live loss curve, cancellable), colour the footage by the learned entropy-like
variable S, roll the model out from the frame on screen beside the observed tracks, plot
MSD and g(r) of model against data, and export the model as a bundle.

Training is :func:`colloidcg.train.train_tracks`, rollouts :func:`colloidcg.simulate.simulate`,
statistics :func:`colloidcg.evaluate.compare` and export
:func:`colloidcg.export.export_bundle`; the widget runs them off the main thread and draws.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, Container, FloatSpinBox, PushButton, SpinBox
from qtpy.QtCore import QObject, Signal

from ._common import (KEY, LayerWidget, calibration, current_frame, layer_info, notify_info,
                      points_data, replace_layer, spatial_transform, tracks_data, tracks_table)
from ._plots import ColourBar, ComparisonPlot, LossPlot

S_CMAP = "viridis"


class _EpochSignal(QObject):
    """Carries training records from the worker thread to the main thread (Qt queues a
    signal emitted in another thread to the receiver's thread)."""

    record = Signal(object)


def _is_observed(layer) -> bool:
    return layer_info(layer).get("kind", "tracks") == "tracks"


class ModelWidget(LayerWidget):
    """Train, inspect, simulate and export the particle model.

    After training or :meth:`load_model`: ``model``, ``model_config`` (the config.json
    dict: calibration, training options), ``report`` and ``history``. ``config_overrides``
    (dict) is merged into :class:`colloidcg.train.TrainConfig` (scripts and tests use it
    for short runs). Layers made: ``s_layer`` (Points coloured by S), ``simulation_layer``
    (Tracks); ``comparison`` holds the MSD and g(r) plot docked beside the viewer.
    """

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, labels=True)
        self.tracks = self.layer_combo("tracks", "tracks", accept=_is_observed)
        self.epochs = SpinBox(label="epochs", value=30, min=1, max=100000)
        self.batch_frames = SpinBox(label="frames per batch", value=4, min=1, max=10000)
        self.lr = FloatSpinBox(label="learning rate", value=3e-3, min=1e-6, max=1.0, step=1e-3)
        self.lr.native.setDecimals(5)
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.sizes = CheckBox(text="per-particle sizes (tracks' size column; mixtures)", value=False)
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.load_button = PushButton(text="Load model...")
        self.show_s_button = PushButton(text="Show S on the footage", enabled=False)
        self.steps = SpinBox(label="rollout steps (frames)", value=20, min=1, max=100000)
        self.simulate_button = PushButton(text="Simulate from this frame", enabled=False)
        self.export_button = PushButton(text="Export bundle...", enabled=False)
        self.loss_plot = LossPlot()
        self.colour_bar = ColourBar()
        self.extend([
            self.tracks, self.epochs, self.batch_frames, self.lr, self.seed, self.sizes,
            Container(widgets=[self.train_button, self.cancel_button, self.load_button],
                      layout="horizontal", labels=False),
            self.show_s_button, self.steps, self.simulate_button, self.export_button, self.status,
        ])
        lay = self.native.layout()
        lay.addWidget(self.loss_plot.canvas)
        lay.addWidget(self.colour_bar.canvas)
        self.train_button.clicked.connect(self.train)
        self.cancel_button.clicked.connect(self.cancel)
        self.load_button.clicked.connect(self._load_dialog)
        self.show_s_button.clicked.connect(self.show_S)
        self.simulate_button.clicked.connect(self.simulate_from_frame)
        self.export_button.clicked.connect(self._export_dialog)
        self._signal = _EpochSignal()
        self._signal.record.connect(self._on_epoch)
        self._stop = threading.Event()
        self._progress = None
        self.config_overrides: dict = {}
        self.model = None
        self.model_config: dict | None = None
        self.model_dir: Path | None = None
        self.report: dict = {}
        self.history: list = []
        self.s_layer = None
        self.simulation = None
        self.simulation_layer = None
        self.comparison: ComparisonPlot | None = None
        self.metrics: dict = {}
        self.status.value = "train on a tracks layer, or load a model"

    def _table(self):
        layer = self.tracks.value
        if layer is None:
            notify_info("colloidcg: no tracks layer; track a video or load tracks.parquet first")
            return None, None, None
        df, meta = tracks_table(layer)
        return layer, df, meta

    # ------------------------------------------------------------------ training
    def train(self, *_):
        """Fit the model to the selected tracks in a worker thread; every epoch updates
        the loss plot and napari's progress bar; Cancel stops after the current epoch."""
        from napari.utils import progress

        from colloidcg.train import TrainConfig, train_tracks

        layer, df, meta = self._table()
        if layer is None or self.busy:
            return None
        try:
            cfg = TrainConfig(**{"epochs": int(self.epochs.value), "batch_frames": int(self.batch_frames.value),
                                 "lr": float(self.lr.value), "seed": int(self.seed.value),
                                 "size_column": "size" if self.sizes.value else "",
                                 "progress": False, **self.config_overrides})
        except TypeError as exc:
            from colloidcg.errors import ParameterError
            self._on_error(ParameterError(f"config_overrides: {exc}"))
            return None
        um, fps = calibration(layer)
        self._stop.clear()
        self.history = []
        self.loss_plot.clear()
        self._progress = progress(total=cfg.epochs, desc="Training")
        signal, stop = self._signal, self._stop

        def callback(record):
            signal.record.emit(record)
            return stop.is_set()

        def finished():
            self.train_button.enabled = True
            self.cancel_button.enabled = False
            if self._progress is not None:
                self._progress.close()
                self._progress = None

        self.train_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = f"training on {df['particle'].nunique()} particles, {df['frame'].nunique()} frames..."
        return self.run_worker(train_tracks, df, meta, cfg, None, fps=fps, um_per_px=um,
                               callback=callback, on_return=self._trained, on_finish=finished)

    def _on_epoch(self, record: dict) -> None:
        self.history.append(record)
        self.loss_plot.add(record)
        if self._progress is not None:
            self._progress.update(1)
        self.status.value = (f"epoch {record['epoch']}: train NLL {record['train_nll']:.4g}, "
                             f"validation NLL {record['val_nll']:.4g}")

    def cancel(self, *_) -> None:
        """Stop training at the end of the current epoch (the best model so far is kept)."""
        self._stop.set()
        self.status.value = "stopping after this epoch..."

    def _trained(self, result) -> None:
        self._set_model(result.model, {"calibration": result.report["calibration"],
                                       "train": result.report.get("config", {})}, None)
        self.report = dict(result.report)
        self.history = list(result.history)
        r = self.report
        self.status.value = (f"{'cancelled after' if r.get('cancelled') else 'trained'} {r['epochs_run']} "
                             f"epochs; best epoch {r['best_epoch']} (validation MSD error "
                             f"{r['best_val_score']:.3g})")

    def _set_model(self, model, config: dict, directory) -> None:
        self.model, self.model_config = model, config
        self.model_dir = Path(directory) if directory else None
        for b in (self.show_s_button, self.simulate_button, self.export_button):
            b.enabled = True

    def load_model(self, path):
        """Load a model directory (``colloidcg train``) or bundle (``colloidcg export``)."""
        from colloidcg.export import load_model

        try:
            model, cfg = load_model(path)
        except Exception as exc:
            self._on_error(exc)
            return None
        self._set_model(model.eval(), cfg, path)
        self.report = {}
        self.status.value = f"loaded the model in {path}"
        return model

    # ------------------------------------------------------------------ S on the footage
    def _units(self) -> tuple[float, float]:
        cal = (self.model_config or {}).get("calibration") or {}
        return float(cal.get("um_per_px") or 1.0), float(cal.get("fps") or 1.0)

    def show_S(self, *_):
        """Colour every tracked particle of every frame by the model's S (first component),
        computed by the structural encoder from its neighbourhood, in a worker thread."""
        layer, df, _ = self._table()
        if layer is None or self.model is None:
            return None
        model = self.model
        um, _ = self._units()
        cal = (self.model_config or {}).get("calibration") or {}
        box_px = cal.get("box_px")
        n_frames = int(df["frame"].nunique())

        def work():
            import torch

            dtype = next(model.parameters()).dtype
            box = None if box_px is None else torch.as_tensor(np.asarray(box_px, float) * um, dtype=dtype)
            dims = [c for c in ("x", "y", "z") if c in df.columns]
            parts = []
            for _, g in df.groupby("frame", sort=True):
                r = torch.as_tensor(g[dims].to_numpy(float) * um, dtype=dtype)
                with torch.no_grad():
                    s = model.initial_S(r, None, box)[:, 0].cpu().numpy() if len(g) > 1 else np.full(len(g), np.nan)
                parts.append(g.assign(S=s))
                yield
            return pd.concat(parts)

        return self.run_worker(work, on_return=lambda t: self._show_S(layer, t),
                               progress={"total": n_frames, "desc": "S per frame"})

    def _show_S(self, layer, table: pd.DataFrame) -> None:
        t = table[np.isfinite(table["S"].to_numpy(float))]
        s = t["S"].to_numpy(float)
        lo, hi = (float(np.percentile(s, 1)), float(np.percentile(s, 99))) if len(s) else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1e-6
        spacing = _spacing(t)
        self.s_layer = replace_layer(
            self.viewer, "S (model)", "points", points_data(t), features=pd.DataFrame({"S": s}),
            face_color="S", face_colormap=S_CMAP, face_contrast_limits=(lo, hi),
            size=0.55 * spacing, border_width=0, opacity=0.85, **spatial_transform(layer, 3))
        self.s_layer.metadata[KEY] = {"kind": "S", "table": t}
        self.colour_bar.show(S_CMAP, lo, hi, "S (learned entropy variable)")
        self.status.value = f"S on {len(t)} particle-frames: {lo:.3g} .. {hi:.3g} (1st-99th percentile)"

    # ------------------------------------------------------------------ rollout
    def simulate_from_frame(self, *_):
        """Roll the model out for ``steps`` frames from the frame on screen; show it as a
        Tracks layer beside the observed tracks and MSD / g(r) of both in a dock."""
        from colloidcg.simulate import simulate

        layer, df, meta = self._table()
        if layer is None or self.model is None:
            return None
        frame = current_frame(self.viewer, None)
        f0, f1 = int(df["frame"].min()), int(df["frame"].max())
        frame = min(max(frame, f0), f1)
        steps = int(self.steps.value)
        model, config = self.model, dict(self.model_config or {})
        um, fps = self._units()
        box_px = ((config.get("calibration") or {}).get("box_px"))
        seed = int(self.seed.value)

        def work():
            from colloidcg.evaluate import compare

            sim = simulate(model, config, df, meta, steps=steps, frame=frame, seed=seed,
                           name=layer.name)
            window = df[(df["frame"] >= frame) & (df["frame"] <= frame + steps)]
            if window["frame"].nunique() < 3:
                window = df
            return (sim, *compare(window, sim.tracks, um, fps, box_px=box_px))

        self.status.value = f"simulating {steps} frames from frame {frame}..."
        return self.run_worker(work, on_return=lambda out: self._show_simulation(layer, df, frame, *out),
                               progress={"desc": "Simulating"})

    def _show_simulation(self, layer, df, frame, sim, metrics, sd, ss) -> None:
        self.simulation, self.metrics = sim, metrics
        tracks = sim.tracks.copy()
        # drift-subtracted tracks: draw the rollout where the footage shows its start frame
        at = df[df["frame"] == frame]
        for c in ("x", "y", "z"):
            if f"{c}_image" in at.columns and c in tracks.columns and len(at):
                tracks[c] = tracks[c] + float((at[f"{c}_image"] - at[c]).mean())
        self.simulation_layer = replace_layer(
            self.viewer, "simulation", "tracks", tracks_data(tracks), color_by="track_id",
            colormap="hsv", tail_length=int(self.steps.value), tail_width=2.5, blending="translucent",
            **spatial_transform(layer, 3))
        self.simulation_layer.metadata[KEY] = {"kind": "simulation", "tracks": sim.tracks,
                                               "meta": {"units": sim.meta, **sim.parameters}}
        cal = (self.model_config or {}).get("calibration") or {}
        units = ("um" if cal.get("um_per_px") else "px", "s" if cal.get("fps") else "frames")
        self._comparison_dock().show(sd, ss, units)
        self.status.value = (f"rollout of {sim.parameters['n_particles']} particles for "
                             f"{sim.parameters['steps']} frames from frame {frame}: MSD relative "
                             f"error {metrics['msd_rel_rms']:.3g}, g(r) {metrics['rdf_rel_rms']:.3g}")

    def _comparison_dock(self) -> ComparisonPlot:
        alive = self.comparison is not None
        if alive:
            try:
                self.comparison.widget.isVisible()
            except RuntimeError:   # the dock was closed and its Qt widget deleted
                alive = False
        if not alive:
            self.comparison = ComparisonPlot()
            self.viewer.window.add_dock_widget(self.comparison.widget, name="model vs data",
                                               area="right")
        return self.comparison

    # ------------------------------------------------------------------ export
    def export(self, bundle_dir, overwrite: bool = False):
        """Write the model as a bundle (:func:`colloidcg.export.export_bundle`) in a worker
        thread; the in-memory model is first saved as a model directory."""
        from colloidcg.export import export_bundle

        if self.model is None:
            notify_info("colloidcg: no model to export; train or load one first")
            return None
        model, config, report, history = self.model, dict(self.model_config or {}), dict(self.report), list(self.history)
        source = self.model_dir
        metrics = {k: v for k, v in self.metrics.items() if isinstance(v, (int, float))} or None

        def work():
            from colloidcg.core.persist import save_model
            from colloidcg.export import is_bundle
            from colloidcg.outputs import atomic_write_json

            if source is not None and not is_bundle(source):
                return export_bundle(source, bundle_dir, overwrite=overwrite, metrics=metrics)
            with tempfile.TemporaryDirectory(prefix="colloidcg-model-") as tmp:
                mdir = Path(tmp) / "model"
                save_model(model, mdir, {k: v for k, v in config.items() if k not in ("bundle",)})
                if report:
                    atomic_write_json(mdir / "report.json", _jsonable({**report, "history": history}))
                return export_bundle(mdir, bundle_dir, overwrite=overwrite, metrics=metrics)

        def done(path):
            self.status.value = f"exported the model bundle to {path}"

        return self.run_worker(work, on_return=done, progress={"desc": "Exporting"})

    def _load_dialog(self, *_):
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Model directory or bundle")
        if folder:
            self.load_model(folder)

    def _export_dialog(self, *_):
        from qtpy.QtWidgets import QFileDialog, QMessageBox

        folder, _ = QFileDialog.getSaveFileName(self.native, "New bundle folder", "model_bundle")
        if not folder:
            return
        overwrite = False
        if Path(folder).exists():
            if QMessageBox.question(self.native, "Replace?", f"{folder} exists. Replace it?") != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        self.export(folder, overwrite=overwrite)


def _spacing(table: pd.DataFrame) -> float:
    """Median nearest-neighbour distance (px) in the first frame: marker size."""
    from scipy.spatial import cKDTree

    f = table[table["frame"] == table["frame"].min()]
    xy = f[[c for c in ("x", "y") if c in f.columns]].to_numpy(float)
    if len(xy) < 2:
        return 10.0
    d, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(d[:, 1]))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
