"""The Track widget: parameters with suggested values, a live detection preview on the
current frame, tracking of the whole video in a worker thread, and tracks.parquet in/out.

Everything it computes comes from :mod:`colloidcg.tracking`; the widget only collects
parameters, runs the library off the main thread and draws the results as layers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSpinBox, PushButton, SpinBox

from ._common import (KEY, LayerWidget, calibration, current_frame, layer_info, notify_error,
                      notify_info, points_data, replace_layer, spatial_transform, tracks_data)

PREVIEW = "detections (preview)"


def _auto_box(box, text: str = "auto"):
    """Show ``text`` in a spin box at its minimum (0 means: estimate it)."""
    box.native.setSpecialValueText(text)
    return box


class TrackWidget(LayerWidget):
    """Track colloids in the selected video layer.

    Attributes useful from scripts and tests: ``preview_layer`` (Points), ``tracks_layer``
    (Tracks), ``result`` (the last :class:`colloidcg.tracking.TrackResult`),
    ``last_preview_seconds`` (time from a parameter change to the points drawn).
    """

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, labels=True)
        self.image = self.layer_combo("video", "image")
        self.diameter = SpinBox(label="diameter (px)", value=11, min=3, max=301, step=2,
                                tooltip="feature size, odd (trackpy's diameter)")
        self.separation = FloatSpinBox(label="separation (px)", value=9.0, min=0.5, max=500.0,
                                       step=0.5, tooltip="minimum distance between particles")
        self.minmass = FloatSpinBox(label="minmass", value=0.0, min=0.0, max=1e12, step=10.0,
                                    tooltip="minimum integrated brightness of a particle")
        self.invert = CheckBox(text="dark particles on bright background")
        self.refine = CheckBox(text="joint refinement (dense packings)", value=True)
        self.auto_button = PushButton(text="auto", tooltip="fill in the suggested values "
                                      "estimated from the current frame")
        self.live = CheckBox(text="live preview on the current frame", value=True)
        self.search_range = _auto_box(FloatSpinBox(
            label="search range (px)", value=0.0, min=0.0, max=500.0, step=0.5,
            tooltip="largest frame-to-frame step; auto: estimated from the detections"))
        self.memory = SpinBox(label="memory (frames)", value=3, min=0, max=1000)
        self.min_length = SpinBox(label="min length (frames)", value=3, min=1, max=100000)
        self.subtract_drift = CheckBox(text="subtract stage drift")
        self.processes = SpinBox(label="processes (0: all cores)", value=0, min=0, max=256,
                                 tooltip="worker processes locating frames in parallel")
        self.track_button = PushButton(text="Track all")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.save_button = PushButton(text="Save tracks...", enabled=False,
                                      tooltip="write tracks.parquet and tracks.json in a folder")
        self.load_button = PushButton(text="Load tracks...", tooltip="show a tracks.parquet")
        self.extend([
            self.image, self.diameter, self.separation, self.minmass,
            self.invert, self.refine, self.auto_button, self.live,
            self.search_range, self.memory, self.min_length, self.processes,
            self.subtract_drift,
            Container(widgets=[self.track_button, self.cancel_button], layout="horizontal", labels=False),
            Container(widgets=[self.save_button, self.load_button], layout="horizontal", labels=False),
            self.status,
        ])
        self.preview_layer = None
        self.tracks_layer = None
        self.result = None            # TrackResult of the last run
        self._table = None            # (tracks DataFrame, sidecar) to save
        self._ready = False           # parameters were set (auto or by hand)
        self._filling = False
        self._preview_worker = None
        self._preview_pending = False
        self._preview_requested_at = 0.0
        self.last_preview_seconds: float | None = None
        self.n_previews = 0
        self._track_worker = None
        self.status.value = "press auto to estimate the parameters from the current frame"

        for w in (self.diameter, self.separation, self.minmass, self.invert, self.refine):
            w.changed.connect(self._on_param_changed)
        self.live.changed.connect(lambda v: self.request_preview() if v else None)
        self.image.changed.connect(self._on_image_changed)
        self.auto_button.clicked.connect(self.auto)
        self.track_button.clicked.connect(self.track_all)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(self._save_dialog)
        self.load_button.clicked.connect(self._load_dialog)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)

    @property
    def busy(self) -> bool:
        """True while a worker runs or a preview waits for one."""
        return bool(self._workers) or self._preview_pending

    # ------------------------------------------------------------------ parameters
    def params(self):
        """The fields as :class:`colloidcg.tracking.TrackParams`. Fields left on auto are
        None, and so are the detection fields until they are set (by auto or by hand):
        tracking then estimates them, as ``colloidcg track`` does."""
        from colloidcg.tracking import TrackParams

        ready = self._ready
        p = TrackParams(diameter=int(self.diameter.value) if ready else None,
                        separation=float(self.separation.value) if ready else None,
                        minmass=float(self.minmass.value) if ready else None,
                        invert=bool(self.invert.value) if ready else None,
                        refine=bool(self.refine.value),
                        search_range=float(self.search_range.value) or None,
                        memory=int(self.memory.value), min_length=int(self.min_length.value),
                        subtract_drift=bool(self.subtract_drift.value),
                        processes=int(self.processes.value) or None)
        return p.validate(2)

    def _on_param_changed(self, *_):
        if self._filling:
            return
        self._ready = True
        self.request_preview()

    def _on_image_changed(self, *_):
        if self._ready:
            self.request_preview()

    def _on_layer_removed(self, event) -> None:
        if self.preview_layer is not None and event.value is self.preview_layer:
            self.preview_layer = None
            self.live.value = False    # the user deleted the preview: stop drawing it

    def _on_step(self, *_):
        if self._ready and self.live.value:
            self.request_preview()

    def _frame(self, layer, t: int) -> np.ndarray:
        return np.asarray(layer.data[t])

    def auto(self, *_):
        """Estimate diameter, separation, minmass and dark/bright from the current frame
        (:func:`colloidcg.tracking.suggest_parameters`), in a worker thread. Values that a
        ``colloidcg.toml`` beside the video sets in ``[track]`` are kept, as
        ``colloidcg track`` keeps them."""
        layer = self.image.value
        if layer is None:
            notify_info("colloidcg: open a video first (File > Open, or File > Open Sample)")
            return None
        from colloidcg.tracking import suggest_parameters

        t = current_frame(self.viewer, layer)
        self.status.value = f"estimating parameters on frame {t}..."
        path = layer_info(layer).get("path")

        def work():
            return suggest_parameters(self._frame(layer, t), _toml_track_params(path))

        return self.run_worker(work, on_return=self._fill, progress={"desc": "suggest parameters"})

    def _fill(self, p, preview: bool = True) -> None:
        self._filling = True
        try:
            self.diameter.value = int(p.diameter)
            self.separation.value = float(round(p.separation, 2))
            self.minmass.value = float(round(p.minmass, 2))
            self.invert.value = bool(p.invert)
        finally:
            self._filling = False
        self._ready = True
        self.status.value = (f"suggested: diameter {p.diameter} px, separation {p.separation:.1f} px, "
                             f"minmass {p.minmass:.4g}, {'dark' if p.invert else 'bright'} particles")
        if preview:
            self.request_preview()

    # ------------------------------------------------------------------ preview
    def request_preview(self) -> None:
        """Locate particles on the current frame with the current fields, off the main
        thread; while one runs, the latest request waits for it (no queue builds up)."""
        if self.closed or not (self._ready and self.live.value) or self.image.value is None:
            return
        if self.preview_layer is not None and self.preview_layer in self.viewer.layers \
                and not self.preview_layer.visible:
            return   # hidden by the user: napari does not refresh hidden layers
        self._preview_requested_at = time.perf_counter()
        self._preview_pending = True
        if self._preview_worker is None:
            self._start_preview()

    def _start_preview(self) -> None:
        from ._tracking import locate_preview

        self._preview_pending = False
        layer = self.image.value
        if self.closed or layer not in self.viewer.layers:
            return
        if layer.data.ndim != 3:
            if layer is not None:
                self.status.value = "preview and tracking here are for 2D video (T, Y, X)"
            return
        try:
            params = self.params()
        except Exception as exc:
            notify_error(exc)
            return
        t = current_frame(self.viewer, layer)
        asked = self._preview_requested_at

        def work():
            t0 = time.perf_counter()
            df = locate_preview(self._frame(layer, t), t, params)
            return layer, t, params, df, time.perf_counter() - t0, asked

        self._preview_worker = self.run_worker(work, on_return=self._show_preview,
                                               on_finish=self._preview_done)

    def _preview_done(self) -> None:
        self._preview_worker = None
        if self._preview_pending:
            self._start_preview()

    def _show_preview(self, out) -> None:
        layer, t, params, df, seconds, asked = out
        if layer not in self.viewer.layers:
            return
        if self.preview_layer in self.viewer.layers and not self.preview_layer.visible:
            return
        data = points_data(df) if len(df) else np.zeros((0, 3))
        if self.preview_layer is None or self.preview_layer not in self.viewer.layers:
            self.preview_layer = self.viewer.add_points(
                data, name=PREVIEW, size=params.diameter, face_color="transparent",
                border_color="lime", border_width=0.12, border_width_is_relative=True,
                **spatial_transform(layer, 3))
        else:
            self.preview_layer.data = data
            self.preview_layer.size = params.diameter
            self.preview_layer.border_color = "lime"
            for k, v in spatial_transform(layer, 3).items():
                setattr(self.preview_layer, k, v)
        self.preview_layer.metadata[KEY] = {"frame": t, "table": df}
        self.n_previews += 1
        self.last_preview_seconds = time.perf_counter() - asked
        self.status.value = (f"frame {t}: {len(df)} particles (located in {1e3 * seconds:.0f} ms)")

    # ------------------------------------------------------------------ tracking
    def _source(self, layer):
        """(video or array, meta) for the worker: a file is reopened (worker processes
        reopen it by path), other layers are read into memory."""
        info = layer_info(layer)
        um, fps = calibration(layer)
        if info.get("path"):
            from colloidcg.io import open_video

            video = open_video(info["path"], fps=fps, um_per_px=um)
            return video, video.meta.as_dict()
        arr = np.asarray(layer.data)
        return arr, {"path": None, "n_frames": int(arr.shape[0]), "frame_shape": list(arr.shape[1:]),
                     "fps": fps, "um_per_px": um}

    def track_all(self, *_):
        """Track the whole video in a worker thread with napari's progress bar; the
        result becomes a Tracks layer coloured by particle."""
        from colloidcg.tracking import track_iter

        layer = self.image.value
        if layer is None:
            notify_info("colloidcg: open a video first (File > Open, or File > Open Sample)")
            return None
        if self._track_worker is not None:
            return self._track_worker
        try:
            params = self.params()
            if layer.data.ndim != 3:
                from colloidcg.errors import ParameterError
                raise ParameterError(f"{layer.name}: the Track widget tracks 2D video (T, Y, X); "
                                     f"this layer has shape {layer.data.shape}; use `colloidcg track`")
            video, meta = self._source(layer)
        except Exception as exc:
            notify_error(exc)
            return None
        n = len(video)
        self.status.value = f"tracking {n} frames..."
        self.track_button.enabled = False
        self.cancel_button.enabled = True
        clock = time.perf_counter()

        def returned(result):
            self._show_result(layer, result, time.perf_counter() - clock)

        def finished():
            self._track_worker = None
            self.track_button.enabled = True
            self.cancel_button.enabled = False

        worker = self.run_worker(track_iter, video, params, meta=meta, on_return=returned,
                                 on_finish=finished, progress={"total": n, "desc": "Tracking"})
        worker.aborted.connect(lambda: self._set_status("tracking cancelled"))
        self._track_worker = worker
        return worker

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def cancel(self, *_) -> None:
        """Stop Track all (at the next located frame; frames already handed to worker
        processes finish first)."""
        if self._track_worker is not None:
            self._track_worker.quit()
            self.status.value = "cancelling..."

    def _show_result(self, image_layer, result, seconds: float) -> None:
        self.result = result
        if not self._ready:   # show what was estimated
            self._fill(result.params, preview=False)
        shape = tuple(result.meta.get("frame_shape") or image_layer.data.shape[1:])
        self._show_tracks(result.tracks, result.sidecar(), f"{image_layer.name} tracks",
                          spatial_transform(image_layer, 3), shape)
        n = result.tracks["particle"].nunique()
        self.status.value = (f"{n} trajectories, {len(result.tracks)} positions in {seconds:.1f} s "
                             f"(search range {result.params.search_range:.2f} px)")

    def _show_tracks(self, df, sidecar: dict, name: str, transform: dict, shape) -> None:
        self._table = (df, sidecar)
        self.tracks_layer = replace_layer(
            self.viewer, name, "tracks", tracks_data(df), color_by="track_id", tail_length=15,
            tail_width=2, blending="translucent", **transform)
        self.tracks_layer.metadata[KEY] = {"kind": "tracks", "tracks": df, "meta": sidecar,
                                           "frame_shape": list(shape) if shape else None}
        self.save_button.enabled = True

    # ------------------------------------------------------------------ files
    def save_tracks(self, out_dir, overwrite: bool = False) -> Path | None:
        """Write OUT_DIR/tracks.parquet and its JSON sidecar (refuses to replace existing
        files unless ``overwrite``). Errors become notifications; returns the path."""
        from colloidcg.outputs import check_writable, write_table

        if self._table is None:
            notify_info("colloidcg: no tracks to save yet; press Track all or load tracks")
            return None
        try:
            out = Path(out_dir) / "tracks.parquet"
            check_writable([out, out.with_suffix(".json")], overwrite)
            path = write_table(out, *self._table)
        except Exception as exc:
            notify_error(exc)
            return None
        self.status.value = f"saved {path}"
        return path

    def load_tracks(self, path) -> object | None:
        """Show a tracks.parquet (frame, particle, x, y in px) as a Tracks layer over the
        selected video. Errors become notifications; returns the layer."""
        from colloidcg.outputs import read_table

        try:
            df, meta = read_table(path, required=["frame", "particle", "x", "y"])
            if not len(df):
                from colloidcg.errors import ColloidcgError
                raise ColloidcgError(f"{path}: the tracks table is empty")
        except Exception as exc:
            notify_error(exc)
            return None
        image = self.image.value
        if image is not None:
            transform, shape = spatial_transform(image, 3), image.data.shape[1:]
        else:
            um = (meta.get("units") or {}).get("um_per_px")
            transform = {"scale": (1.0, float(um), float(um)),
                         "units": ("pixel", "um", "um")} if um else {}
            shape = (meta.get("video") or {}).get("frame_shape")
        self.result = None
        self._show_tracks(df, meta, f"{Path(path).parent.name or 'loaded'} tracks", transform, shape)
        self.status.value = f"loaded {len(df)} positions of {df['particle'].nunique()} particles from {path}"
        return self.tracks_layer

    def _save_dialog(self, *_):
        from qtpy.QtWidgets import QFileDialog, QMessageBox

        folder = QFileDialog.getExistingDirectory(self.native, "Folder for tracks.parquet")
        if not folder:
            return
        target = Path(folder) / "tracks.parquet"
        overwrite = False
        if target.exists() or target.with_suffix(".json").exists():
            ans = QMessageBox.question(self.native, "Replace?", f"{target} exists. Replace it?")
            if ans != QMessageBox.Yes:
                return
            overwrite = True
        self.save_tracks(folder, overwrite=overwrite)

    def _load_dialog(self, *_):
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.native, "Open tracks", "", "Parquet tables (*.parquet)")
        if path:
            self.load_tracks(path)


def _toml_track_params(path):
    """TrackParams from the ``[track]`` table of the ``colloidcg.toml`` nearest to the video
    at ``path`` (None when there is no file or no table); errors name the file and key."""
    if not path:
        return None
    from colloidcg.io.config import find_config, read_config
    from colloidcg.tracking import TrackParams

    cfg_path = find_config(path)
    if cfg_path is None:
        return None
    table = read_config(cfg_path).get("track") or {}
    if not table:
        return None
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    params = TrackParams.from_dict(values, where=f"{cfg_path} [track]")
    params.sources = {k: "colloidcg.toml" for k in values}
    return params
