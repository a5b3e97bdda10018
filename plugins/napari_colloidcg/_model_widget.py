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
import time
from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtCore import QObject, Signal

from colloidcg.structure.frames import image_axes

from ._common import (LayerWidget, calibration, current_frame, find_layer, frame_shape,
                      layer_info, notify_info, points_data, replace_layer, spatial_transform,
                      table_features, tabs, tracks_layer_args, tracks_table)
from ._plots import ColourBar, ComparisonPlot, LossPlot

S_CMAP = "viridis"
S_LAYER = "S (model)"
#: What "Show S" shows: label -> kind.
S_SOURCES = {"carried along the tracks": "carried", "encoded from each frame": "encoded"}
SIM_LAYER = "simulation"


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
    (dict) is merged into :class:`colloidcg.train.TrainConfig` by its ``from_dict`` (scripts and
    tests use it for short runs; architecture options flat or under ``model``). The training
    fields' defaults and tooltips are TrainConfig's. Layers made: ``s_layer`` (Points coloured by S), ``simulation_layer``
    (Tracks); ``comparison`` holds the MSD and g(r) plot docked beside the viewer.
    """

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, labels=True)
        self.tracks = self.layer_combo("tracks", "tracks", accept=_is_observed)
        from colloidcg.train import TrainConfig

        def opt(name):    # default and help of a training option: TrainConfig's
            return TrainConfig.describe(name)

        self.epochs = SpinBox(label="epochs", value=opt("epochs").default, min=1, max=100000,
                              tooltip=opt("epochs").help)
        self.batch_frames = SpinBox(label="frames per batch", value=opt("batch_frames").default, min=1,
                                    max=10000, tooltip=opt("batch_frames").help)
        self.lr = FloatSpinBox(label="learning rate", value=opt("lr").default, min=1e-6, max=1.0, step=1e-3,
                               tooltip=opt("lr").help)
        self.lr.native.setDecimals(5)
        self.seed = SpinBox(label="seed", value=opt("seed").default, min=0, max=2**31 - 1,
                            tooltip=opt("seed").help)
        self.sizes = CheckBox(text="per-particle sizes (tracks' size column; mixtures)",
                              value=bool(opt("size_column").default), tooltip=opt("size_column").help)
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.load_button = PushButton(text="Load model...")
        self.show_s_button = PushButton(text="Show S on the footage", enabled=False)
        self.s_source = ComboBox(label="S", choices=list(S_SOURCES), value=next(iter(S_SOURCES)),
                                 tooltip="carried: encoded at each particle's first frame, then advanced "
                                         "with the model's noise-aware dS/dt along the tracks (the model "
                                         "folder's S.parquet when it covers these tracks); encoded: the "
                                         "encoder's S of each frame's neighbourhood, no memory")
        self.steps = SpinBox(label="rollout steps (frames)", value=20, min=1, max=100000)
        self.simulate_button = PushButton(text="Simulate from this frame", enabled=False)
        self.export_button = PushButton(text="Export bundle...", enabled=False)
        self.mask_edge = CheckBox(text="hide the field-of-view edge (halo of one cutoff)",
                                  value=True, tooltip="particles closer than the model's cutoff "
                                  "to the edge of the footage miss neighbours: their S is not "
                                  "comparable")
        self.auc_label = Label(value="")
        self.auc_label.native.setWordWrap(True)
        self.loss_plot = LossPlot(self.viewer)
        self.colour_bar = ColourBar(viewer=self.viewer)
        self.comparison = ComparisonPlot(self.viewer)
        self.extend([self.tracks])
        lay = self.native.layout()
        train_box = Container(widgets=[self.epochs, self.batch_frames, self.lr, self.seed, self.sizes,
                                       Container(widgets=[self.train_button, self.cancel_button],
                                                 layout="horizontal", labels=False)], labels=True)
        s_box = Container(widgets=[Container(widgets=[self.s_source], labels=True), self.show_s_button,
                                   self.mask_edge], labels=False)
        sim_box = Container(widgets=[self.steps, self.simulate_button], labels=True)
        self.sections = tabs({"Train": [train_box, self.loss_plot.canvas],
                              "S": [s_box, self.colour_bar.canvas, self.auc_label],
                              "Rollout": [sim_box, self.comparison.widget]})
        lay.addWidget(self.sections)
        for w in (Container(widgets=[self.load_button, self.export_button], layout="horizontal",
                            labels=False), self.status):
            lay.addWidget(w.native)
        self.mask_edge.changed.connect(self._apply_edge_mask)
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
        self._uids: dict = {}
        self.simulation = None
        self.metrics: dict = {}
        self.auc: dict = {}
        self._train_started = 0.0
        self._epochs_total = 0
        self.eta_seconds: float | None = None
        self.status.value = "train on a tracks layer, or load a model"

    def _made(self, name: str):
        lay = find_layer(self.viewer, name)
        return lay if lay is not None and layer_info(lay).get("uid") == self._uids.get(name) else None

    @property
    def s_layer(self):
        """Points coloured by the learned S (None until shown or once deleted)."""
        return self._made(S_LAYER)

    @property
    def simulation_layer(self):
        """Tracks of the last rollout (None until simulated or once deleted)."""
        return self._made(SIM_LAYER)

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
        from colloidcg.errors import ParameterError
        try:
            cfg = TrainConfig.from_dict({"epochs": int(self.epochs.value), "batch_frames": int(self.batch_frames.value),
                                         "lr": float(self.lr.value), "seed": int(self.seed.value),
                                         "size_column": "size" if self.sizes.value else "",
                                         "progress": False, **self.config_overrides}, "config_overrides: ")
        except ParameterError as exc:
            self._on_error(exc)
            return None
        um, fps = calibration(layer)
        self._stop.clear()
        self.history = []
        self.loss_plot.clear()
        self._progress = progress(total=cfg.epochs, desc="Training")
        self._train_started = time.perf_counter()
        self._epochs_total = int(cfg.epochs)
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
        if not any(r.get("epoch") == record.get("epoch") for r in self.history):
            self.history.append(record)   # (a record may arrive after the result)
        if not any(r.get("epoch") == record.get("epoch") for r in self.loss_plot.records):
            self.loss_plot.add(record)
        if self._progress is None:   # training already returned: keep its summary
            return
        self._progress.update(1)
        self.status.value = (f"epoch {record['epoch']}/{self._epochs_total}: training NLL "
                             f"{record['train_nll']:.4g}, validation NLL {record['val_nll']:.4g}; "
                             f"{self.eta_text(int(record['epoch']))}")

    def eta_text(self, done: int) -> str:
        """"about 1 min 20 s left" from the mean time per epoch so far (the best epoch
        may stop training earlier: patience)."""
        total = self._epochs_total
        if done <= 0 or total <= 0:
            return "time left unknown"
        per = (time.perf_counter() - self._train_started) / done
        left = max(0.0, per * (total - done))
        self.eta_seconds = left
        return f"about {_duration(left)} left ({_duration(per)} per epoch)"

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
        """Colour every tracked particle of every frame by the model's S (first component), in
        a worker thread: carried along the tracks (the default; encoded at each particle's
        first frame and advanced with the noise-aware dS/dt, :mod:`colloidcg.train.carried`;
        read from the model folder's ``S.parquet`` when that covers every row of the tracks;
        feature ``dSdt`` beside it, k_B per frame) or, with *S* set to encoded, computed by the
        structural encoder from each frame's neighbourhood.

        Particles closer than the model's cutoff to the edge of the field of view miss
        neighbours: they are marked (feature ``edge``) and hidden while *hide the
        field-of-view edge* is ticked. When a D2min layer of the same tracks exists, the
        ROC AUC with which S picks the rearranging particles is shown beside the softness
        baseline's (:func:`colloidcg.rearrangements.softness.softness_baseline`)."""
        layer, df, _ = self._table()
        if layer is None or self.model is None:
            return None
        model = self.model
        um, _ = self._units()
        cal = (self.model_config or {}).get("calibration") or {}
        box_px = cal.get("box_px")
        n_frames = int(df["frame"].nunique())
        cutoff_px = float(model.config.cutoff) / um
        fov = _fov(df, frame_shape(layer))
        labels = self._labels_for(layer)
        horizon = int(((self.model_config or {}).get("train") or {}).get("horizon") or 3)
        carried = S_SOURCES[self.s_source.value] == "carried"
        stored = self._stored_S()
        loc_um = self._localisation_noise()

        def work():
            import torch

            dtype = next(model.parameters()).dtype
            if carried:
                table = _carried(model, df, stored, um, self._units()[1], box_px, loc_um, dtype)
                yield
            else:
                box = None if box_px is None else torch.as_tensor(np.asarray(box_px, float) * um, dtype=dtype)
                dims = [c for c in ("x", "y", "z") if c in df.columns]
                parts = []
                for _, g in df.groupby("frame", sort=True):
                    r = torch.as_tensor(g[dims].to_numpy(float) * um, dtype=dtype)
                    with torch.no_grad():
                        s = model.initial_S(r, None, box)[:, 0].cpu().numpy() if len(g) > 1 else np.full(len(g), np.nan)
                    parts.append(g.assign(S=s))
                    yield
                table = pd.concat(parts)
            table["edge"] = _near_edge(table, fov, cutoff_px) if box_px is None else False
            auc = s_auc(table, labels, horizon) if labels is not None else {}
            return table, auc

        def done(out):
            self._show_S(layer, *out, cutoff_px)

        return self.run_worker(work, on_return=done, progress={"total": 1 if carried else n_frames,
                                                                "desc": "carried S" if carried else "S per frame"})

    def _stored_S(self) -> pd.DataFrame | None:
        """The model folder's S.parquet (frame, particle, S0.., dSdt), or None."""
        if self.model_dir is None or not (self.model_dir / "S.parquet").is_file():
            return None
        try:
            return pd.read_parquet(self.model_dir / "S.parquet")
        except Exception:     # unreadable: computed anew instead
            return None

    def _localisation_noise(self) -> float:
        """The localisation noise (um) the model was trained with: the training report's, else 0."""
        rep = self.report
        if not rep and self.model_dir is not None and (self.model_dir / "report.json").is_file():
            import json
            try:
                rep = json.loads((self.model_dir / "report.json").read_text())
            except (OSError, ValueError):
                rep = {}
        val = (rep or {}).get("localisation_noise")
        return float(val) if isinstance(val, (int, float)) and np.isfinite(val) else 0.0

    def _labels_for(self, layer):
        """The rearrangement table (D2min layer metadata) of the tracks ``layer``, if any."""
        for lay in self.viewer.layers:
            info = layer_info(lay)
            if info.get("kind") == "d2min" and isinstance(info.get("table"), pd.DataFrame) \
                    and info.get("source") in (None, layer.name):
                return info["table"], dict(info.get("parameters") or {})
        return None

    def _show_S(self, layer, table: pd.DataFrame, auc: dict, cutoff_px: float) -> None:
        t = table[np.isfinite(table["S"].to_numpy(float))].reset_index(drop=True)
        edge = t["edge"].to_numpy(bool)
        s = t["S"].to_numpy(float)
        inner = s[~edge] if (~edge).any() else s
        lo, hi = (float(np.percentile(inner, 1)), float(np.percentile(inner, 99))) if len(inner) else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1e-6
        spacing = _spacing(t)
        features = table_features(t)
        lay = replace_layer(
            self.viewer, S_LAYER, "points", points_data(t), features=features,
            face_color="S", face_colormap=S_CMAP, face_contrast_limits=(lo, hi),
            size=0.55 * spacing, border_width=0, opacity=0.85,
            metadata={"kind": "S", "table": t, "edge_px": cutoff_px, "auc": auc},
            **spatial_transform(layer, 2 + (1 if "z" in t.columns else 0) + 1))
        self._uids[S_LAYER] = layer_info(lay)["uid"]
        self._apply_edge_mask()
        self.auc = auc
        what = "carried along the tracks" if "dSdt" in t.columns else "encoded from each frame"
        self.colour_bar.show(S_CMAP, lo, hi, f"S ({what}; colours: interior 1-99 %)")
        self.auc_label.value = _auc_text(auc)
        self.status.value = (f"S on {len(t)} particle-frames: {lo:.3g} .. {hi:.3g} (1st-99th percentile "
                             f"of the interior); {int(edge.sum())} within {cutoff_px:.1f} px of the "
                             f"field-of-view edge {'hidden' if self.mask_edge.value else 'shown'}")

    def _apply_edge_mask(self, *_):
        lay = self.s_layer
        if lay is None or "edge" not in lay.features:
            return
        edge = lay.features["edge"].to_numpy(bool)
        lay.shown = ~edge if self.mask_edge.value else np.ones(len(edge), bool)

    # ------------------------------------------------------------------ rollout
    def simulate_from_frame(self, *_):
        """Roll the model out for ``steps`` frames from the frame on screen; show it as a
        Tracks layer beside the observed tracks and MSD / g(r) of both in the Rollout tab."""
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

            # the steps per frame linear stability asks for: a steep-contact model melts at one
            sim = simulate(model, config, df, meta, steps=steps, frame=frame, seed=seed, substeps="auto",
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
        # drift-subtracted tracks: draw the rollout where the footage shows it, frame by frame
        tracks = with_image_positions(sim.tracks, df)
        data, features = tracks_layer_args(tracks)
        lay = replace_layer(
            self.viewer, SIM_LAYER, "tracks", data, features=features, color_by="track_id",
            colormap="hsv", tail_length=int(self.steps.value), tail_width=2.5, blending="translucent",
            metadata={"kind": "simulation", "tracks": sim.tracks,
                      "meta": {"units": sim.meta, **sim.parameters}},
            **spatial_transform(layer, data.shape[1] - 1))
        self._uids[SIM_LAYER] = layer_info(lay)["uid"]
        cal = (self.model_config or {}).get("calibration") or {}
        units = ("um" if cal.get("um_per_px") else "px", "s" if cal.get("fps") else "frames")
        self.comparison.show(sd, ss, units)
        self.sections.setCurrentIndex(2)
        self.status.value = (f"rollout of {sim.parameters['n_particles']} particles for "
                             f"{sim.parameters['steps']} frames from frame {frame} "
                             f"({sim.parameters['substeps']} integration step(s) per frame): MSD relative "
                             f"error {metrics['msd_rel_rms']:.3g}, g(r) {metrics['rdf_rel_rms']:.3g}")

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
    from colloidcg.neighbours import nearest

    f = table[table["frame"] == table["frame"].min()]
    xy = f[[c for c in ("x", "y") if c in f.columns]].to_numpy(float)
    if len(xy) < 2:
        return 10.0
    return float(np.median(nearest(xy, 1)[0]))


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


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def with_image_positions(sim: pd.DataFrame, observed: pd.DataFrame) -> pd.DataFrame:
    """The rollout in the footage's frame: where tracking subtracted the stage drift, the
    observed drift of each frame (mean of x_image - x over its particles) is added back at
    that frame, as ``x_image`` (and y, z); frames past the data keep the last known drift."""
    out = sim.copy()
    for c in ("x", "y", "z"):
        ic = f"{c}_image"
        if ic not in observed.columns or c not in out.columns:
            continue
        drift = (observed[ic] - observed[c]).groupby(observed["frame"]).mean().sort_index()
        frames = out["frame"].to_numpy()
        known = drift.index.to_numpy()
        idx = np.clip(np.searchsorted(known, frames, side="right") - 1, 0, len(known) - 1)
        exact = drift.reindex(frames).to_numpy()
        off = np.where(np.isfinite(exact), exact, drift.to_numpy()[idx])
        out[ic] = out[c].to_numpy() + off
    return out


def _carried(model, df: pd.DataFrame, stored: pd.DataFrame | None, um: float, fps: float, box_px,
             loc_um: float, dtype) -> pd.DataFrame:
    """``df`` with the carried S (first component, column S) and dS/dt (k_B per frame): from
    ``stored`` (a model folder's S.parquet) when it has every (frame, particle) row of
    ``df``, else carried along ``df`` (:func:`colloidcg.train.carried.carried_table`, with
    localisation noise ``loc_um`` um)."""
    from colloidcg.data import from_tracks
    from colloidcg.train.carried import carried_table

    keys = ["frame", "particle"]
    if stored is not None and {"frame", "particle", "S0", "dSdt"} <= set(stored.columns):
        st = stored[keys + ["S0", "dSdt"]]
        idx = pd.MultiIndex.from_frame(df[keys].astype("int64"))
        if idx.isin(pd.MultiIndex.from_frame(st[keys].astype("int64"))).all():
            return _join_S(df, st)
    traj = from_tracks(df, None, fps=fps, um_per_px=um, box_px=box_px,
                       size_column=model.config.size_column or None).to(dtype=dtype)
    return _join_S(df, carried_table(model, traj, loc_um ** 2))


def _join_S(df: pd.DataFrame, st: pd.DataFrame) -> pd.DataFrame:
    st = st[["frame", "particle", "S0", "dSdt"]].rename(columns={"S0": "S"})
    st = st.astype({"frame": df["frame"].dtype, "particle": df["particle"].dtype})
    out = df.drop(columns=[c for c in ("S", "dSdt") if c in df.columns]).merge(st, on=["frame", "particle"],
                                                                             how="left")
    return out.sort_values(["frame", "particle"], kind="stable").reset_index(drop=True)


def _fov(df: pd.DataFrame, shape) -> list:
    """Field of view in image px as (lo, hi) per axis in x, y[, z] order: the footage when
    its shape is known, else the extent of the image positions (``x_image`` ... where the
    tracker subtracted the drift)."""
    dims = [c for c in ("x", "y", "z") if c in df.columns]
    if shape:
        shape = list(shape)
        sizes = {"x": shape[-1], "y": shape[-2], "z": shape[-3] if len(shape) > 2 else None}
        if all(sizes[c] is not None for c in dims):
            return [(-0.5, float(sizes[c]) - 0.5) for c in dims]
    return [(float(df[c].min()), float(df[c].max())) for c in image_axes(df, dims)]


def _near_edge(table: pd.DataFrame, fov, width: float) -> np.ndarray:
    """Rows closer than ``width`` px to the field of view's border (the model's halo), in
    image coordinates (drift-free tracks keep them as ``x_image`` ...)."""
    dims = image_axes(table, [c for c in ("x", "y", "z") if c in table.columns])
    out = np.zeros(len(table), bool)
    for c, (lo, hi) in zip(dims, fov):
        v = table[c].to_numpy(float)
        out |= (v < lo + width) | (v > hi - width)
    return out


def s_auc(table: pd.DataFrame, labels, horizon: int) -> dict:
    """ROC AUC with which S picks the rearranging particle-frames, on the rows the softness
    baseline is scored on (edge rows out; test frames after its training frames, with S's
    sign fixed on the training frames, as S is learned up to sign), and the baseline's AUC
    when the rearrangement table has the structural descriptors."""
    from colloidcg.train import roc_auc

    rt, params = labels
    lag = int(params.get("lag_frames") or 1)
    need = {"frame", "particle", "rearranging", "d2min"}
    if not need <= set(rt.columns):
        return {"error": "the D2min layer has no rearranging labels"}
    m = rt[["frame", "particle", "rearranging", "d2min"] + [c for c in rt.columns if str(c).startswith("G_")]
           + (["edge"] if "edge" in rt.columns else [])].merge(
        table[["frame", "particle", "S", "edge"]].rename(columns={"edge": "s_edge"}),
        on=["frame", "particle"], how="inner")
    edge = m["s_edge"].to_numpy(bool) | (m["edge"].to_numpy(bool) if "edge" in m.columns else False)
    use = np.isfinite(m["d2min"].to_numpy(float)) & np.isfinite(m["S"].to_numpy(float)) & ~edge
    out: dict = {"n_rows": int(use.sum()), "lag": lag}
    soft = None
    if any(str(c).startswith("G_") for c in m.columns) and "edge" in m.columns:
        try:
            from colloidcg.rearrangements.softness import softness_baseline

            soft = softness_baseline(rt, lag)
            out["softness_auc"], out["softness_auc_se"] = soft.auc, soft.auc_se
        except Exception as exc:   # one class missing, too few frames: say so
            out["softness_error"] = str(exc).splitlines()[0]
    frame = m["frame"].to_numpy()
    if not use.any():
        return {**out, "error": "no labelled interior particle-frames (S and D2min of other tracks?)"}
    f0, f1 = int(frame.min()), int(frame.max())
    split = soft.split_frame if soft is not None else f0 + int(np.ceil(0.5 * (f1 - f0 + 1)))
    train = use & (frame < split)
    test = use & (frame >= split + lag)
    y = m["rearranging"].to_numpy(float)
    s = m["S"].to_numpy(float)
    def two_classes(mask):
        return mask.any() and 0 < y[mask].sum() < mask.sum()

    out["held_out"] = bool(two_classes(train) and two_classes(test))
    if not out["held_out"]:
        # too few frames or events to hold frames out: every labelled interior row, the
        # sign chosen on the same rows (an upper estimate; said so beside the number)
        train = test = use
        split, lag = f0, 0
    a_train = roc_auc(s[train], y[train]) if train.any() else float("nan")
    sign = -1.0 if np.isfinite(a_train) and a_train < 0.5 else 1.0
    out.update({"split_frame": int(split), "lag": lag, "S_sign": sign, "n_test": int(test.sum()),
                "n_test_rearranging": int(y[test].sum()) if test.any() else 0,
                "S_auc": roc_auc(sign * s[test], y[test]) if test.any() else float("nan")})
    return out


def _auc_text(auc: dict) -> str:
    if not auc:
        return ("AUC of S: compute D2min on these tracks (Rearrangements) to see how well S "
                "picks the rearranging particles")
    if "error" in auc:
        return f"AUC of S: {auc['error']}"
    where = (f"frames >= {auc['split_frame'] + auc['lag']}" if auc.get("held_out")
             else "all frames, sign chosen on them: too few events to hold frames out")
    text = (f"AUC of S for rearranging particles: {auc['S_auc']:.3f} ({where}; "
            f"{auc['n_test']} rows, {auc['n_test_rearranging']} rearranging; edge out; "
            f"{'-' if auc['S_sign'] < 0 else '+'}S)")
    if "softness_auc" in auc:
        text += f"; softness baseline {auc['softness_auc']:.3f} +/- {auc['softness_auc_se']:.3f}"
    elif "softness_error" in auc:
        text += f"; softness baseline: {auc['softness_error']}"
    else:
        text += ("; softness baseline: tick 'structural descriptors' in Rearrangements and "
                 "compute again")
    return text
