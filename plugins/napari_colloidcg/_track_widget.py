"""The Track widget: parameters with suggested values, a live detection preview on the
current frame, tracking of the whole video in a worker thread, and tracks.parquet in/out.

Everything it computes comes from :mod:`colloidcg.tracking`; the widget only collects
parameters, runs the library off the main thread and draws the results as layers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, PushButton, SpinBox

from ._common import (LayerWidget, alive, calibration, current_frame, find_layer, gui_message,
                      layer_info, notify_error, notify_info, points_data, replace_layer,
                      sidecar_transform, spatial_transform, table_features, tabs,
                      tracks_layer_args)
from ._plots import MassHistogram

PREVIEW = "detections (preview)"
LINKS = "links (preview)"
QUALITY_COLOURS = {"ok": "#4caf50", "warning": "#ff9800", "unreliable": "#f44336"}


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
        self.contrast = ComboBox(label="particles", choices=["bright", "dark", "both"],
                                 value="bright", tooltip="bright on dark, dark on bright, "
                                 "or both kinds in one video (mixed contrast)")
        self.objects = ComboBox(label="objects", choices=["auto", "spots", "cells"], value="auto",
                                tooltip="spots: particles; cells: objects that fill the plane "
                                "between thin walls (foams, bubble rafts, emulsions; 'particles' "
                                "is then the cells' interior); auto: cells only where the frame "
                                "shows them")
        self.refine = CheckBox(text="joint refinement (dense packings)", value=True)
        self.spot_profile = ComboBox(label="spot profile", choices=["auto", "on", "off"],
                                     value="auto", tooltip="check every frame for spots that "
                                     "are not Gaussian (rings, Airy patterns); auto: decided on "
                                     "the first, middle and last frames")
        self.gap_check = ComboBox(label="gap check", choices=["auto", "on", "off"], value="auto",
                                  tooltip="check every frame for the lit gaps of a bright-field "
                                  "packing; auto: decided on the first, middle and last frames")
        self.auto_button = PushButton(text="auto", tooltip="fill in the suggested values "
                                      "estimated from the current frame")
        self.live = CheckBox(text="live preview on the current frame", value=True)
        self.search_range = _auto_box(FloatSpinBox(
            label="search range (px)", value=0.0, min=0.0, max=500.0, step=0.5,
            tooltip="largest frame-to-frame step; auto: estimated from the detections"))
        self.show_links = CheckBox(text="preview links to the next frame", value=True,
                                   tooltip="arrows from each particle to where it is linked "
                                   "in the next frame at this search range")
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
        self.quality = Label(value="")
        self.quality.native.setWordWrap(True)
        self.quality.visible = False
        self.mass_plot = MassHistogram(self.viewer)
        # contrast and objects share a row (the dock must fit a 768 px screen)
        looks = Container(widgets=[self.contrast, self.objects], layout="horizontal", labels=False,
                          label="contrast, objects")
        looks.native.layout().setContentsMargins(0, 0, 0, 0)
        checks = Container(widgets=[self.spot_profile, self.gap_check], layout="horizontal",
                           labels=False, label="spot profile, gap check")
        checks.native.layout().setContentsMargins(0, 0, 0, 0)
        detection = Container(widgets=[self.diameter, self.separation, self.minmass, looks,
                                       self.refine, checks,
                                       self.auto_button, self.live], labels=True)
        linking = Container(widgets=[self.search_range, self.show_links, self.memory,
                                     self.min_length, self.processes, self.subtract_drift],
                            labels=True)
        self.extend([self.image])
        lay = self.native.layout()
        self.sections = tabs({"Detection": [detection, self.mass_plot.canvas],
                              "Linking": [linking]})
        lay.addWidget(self.sections)
        for w in (Container(widgets=[self.track_button, self.cancel_button], layout="horizontal", labels=False),
                  Container(widgets=[self.save_button, self.load_button], layout="horizontal", labels=False),
                  self.status, self.quality):
            lay.addWidget(w.native)
        self._invalid: str | None = None   # why the fields cannot be used (shown in status)
        self._diameter_marked = False
        self._preview_uid: str | None = None
        self._preview_text = ""
        self._extras_key = None
        self._links_uid: str | None = None
        self._tracks_name: str | None = None
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
        self._diam_z: int | None = None   # (Z, Y, X) videos: z diameter and separation from auto
        self._sep_z: float | None = None
        self.status.value = "press auto to estimate the parameters from the current frame"

        for w in (self.diameter, self.separation, self.minmass, self.contrast, self.objects,
                  self.refine, self.search_range, self.show_links):
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

    # ------------------------------------------------------------------ layers
    @property
    def preview_layer(self):
        """The detections preview (Points) while it is in the viewer, else None."""
        lay = find_layer(self.viewer, PREVIEW)
        return lay if lay is not None and layer_info(lay).get("uid") == self._preview_uid else None

    @property
    def links_layer(self):
        """The links preview (Vectors) while it is in the viewer, else None."""
        lay = find_layer(self.viewer, LINKS)
        return lay if lay is not None and layer_info(lay).get("uid") == self._links_uid else None

    @property
    def tracks_layer(self):
        """The Tracks layer of the last Track all or Load tracks (None once deleted)."""
        if self._tracks_name is None:
            return None
        lay = find_layer(self.viewer, self._tracks_name)
        return lay if lay is not None and layer_info(lay).get("kind") == "tracks" else None

    # ------------------------------------------------------------------ parameters
    def _diameter(self, ndim: int = 2):
        d = int(self.diameter.value)
        if ndim == 3 and self._diam_z is not None:
            return (int(self._diam_z), d, d)
        return d

    def params(self, ndim: int = 2):
        """The fields as :class:`colloidcg.tracking.TrackParams`. Fields left on auto are
        None, and so are the detection fields until they are set (by auto or by hand):
        tracking then estimates them, as ``colloidcg track`` does. ``ndim`` 3 for
        (Z, Y, X) frames (the z diameter and separation from auto, else the in-plane ones)."""
        from colloidcg.tracking import TrackParams

        ready = self._ready
        sep = float(self.separation.value)
        if ndim == 3 and self._sep_z is not None:
            sep = (float(self._sep_z), sep, sep)
        p = TrackParams(diameter=self._diameter(ndim) if ready else None,
                        separation=sep if ready else None,
                        minmass=float(self.minmass.value) if ready else None,
                        contrast=str(self.contrast.value) if ready else None,
                        objects=None if self.objects.value == "auto" else str(self.objects.value),
                        refine=bool(self.refine.value),
                        search_range=float(self.search_range.value) or None,
                        memory=int(self.memory.value), min_length=int(self.min_length.value),
                        subtract_drift=bool(self.subtract_drift.value),
                        processes=int(self.processes.value) or None,
                        spot_profile=_SWITCH[self.spot_profile.value],
                        gap_check=_SWITCH[self.gap_check.value])
        return p.validate(ndim)

    def _check_fields(self) -> str | None:
        """Why the fields cannot be used as they are (None when they can): checked as the
        user types."""
        d = int(self.diameter.value)
        if d % 2 == 0:
            return (f"diameter must be odd (trackpy's rule): {d} px is even; "
                    f"use {d - 1} or {d + 1}")
        try:
            self.params(3 if self._video_ndim() == 4 else 2)
        except Exception as exc:
            return gui_message(exc)
        return None

    def _video_ndim(self) -> int:
        layer = self.image.value
        return int(layer.data.ndim) if layer is not None else 3

    def _set_invalid(self, why: str | None) -> None:
        """Show (or clear) a field error: status line, red diameter field, no rings left
        from the last valid preview, Track all disabled."""
        self._invalid = why
        bad = why is not None and why.startswith("diameter")
        if bad != self._diameter_marked:   # restyling a widget is slow: only on a change
            self.diameter.native.setStyleSheet("background-color: #7a2a2a;" if bad else "")
            self._diameter_marked = bad
        enabled = why is None and self._track_worker is None
        if self.track_button.enabled != enabled:
            self.track_button.enabled = enabled
        if why is not None:
            self.status.value = f"check the fields: {why}"
            for lay in (self.preview_layer, self.links_layer):
                if lay is not None:
                    lay.data = np.zeros((0, *np.shape(lay.data)[1:]))

    def _on_param_changed(self, *_):
        if self._filling:
            return
        self._ready = True
        why = self._check_fields()
        self._set_invalid(why)
        if why is None:
            self.request_preview()

    def _on_image_changed(self, *_):
        if self._ready:
            self.request_preview()

    def _on_layer_removed(self, event) -> None:
        lay = event.value
        if lay.name == PREVIEW and self._preview_uid is not None \
                and layer_info(lay).get("uid") == self._preview_uid:
            self._preview_uid = None
            self.live.value = False    # the user deleted the preview: stop drawing it
        elif lay.name == LINKS and self._links_uid is not None \
                and layer_info(lay).get("uid") == self._links_uid:
            self._links_uid = None
            self.show_links.value = False

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
        d = p.diameter if isinstance(p.diameter, (tuple, list)) else (p.diameter,)
        sep = p.separation if isinstance(p.separation, (tuple, list)) else (p.separation,)
        self._diam_z = int(d[0]) if len(d) == 3 else None
        self._sep_z = float(sep[0]) if len(sep) == 3 else None
        self._filling = True
        try:
            self.diameter.value = int(d[-1])
            self.separation.value = float(round(float(sep[-1]), 2))
            self.minmass.value = float(round(p.minmass, 2))
            contrast = p.contrast
            self.contrast.value = contrast
            self.objects.value = p.objects or "auto"
        finally:
            self._filling = False
        self._ready = True
        self._set_invalid(None)
        z = f" (z: {self._diam_z} px)" if self._diam_z is not None else ""
        self.status.value = (f"suggested: diameter {int(d[-1])} px{z}, separation {float(sep[-1]):.1f} px, "
                             f"minmass {p.minmass:.4g}, {contrast} "
                             f"{'cells' if p.objects == 'cells' else 'particles'}")
        if preview:
            self.request_preview()

    # ------------------------------------------------------------------ preview
    def request_preview(self) -> None:
        """Locate particles on the current frame with the current fields, off the main
        thread; while one runs, the latest request waits for it (no queue builds up)."""
        if self.closed or not (self._ready and self.live.value) or self.image.value is None \
                or self._invalid is not None:
            return
        lay = self.preview_layer
        if lay is not None and not lay.visible:
            return   # hidden by the user: napari does not refresh hidden layers
        self._preview_requested_at = time.perf_counter()
        self._preview_pending = True
        if self._preview_worker is None:
            self._start_preview()

    def _start_preview(self) -> None:
        from ._tracking import locate_preview

        self._preview_pending = False
        layer = self.image.value
        if self.closed or layer is None or not alive(self.viewer, layer) or self._invalid is not None:
            return
        ndim = layer.data.ndim
        if ndim not in (3, 4):
            self.status.value = f"{layer.name}: expected a video (T, Y, X) or (T, Z, Y, X), got shape {layer.data.shape}"
            return
        try:
            params = self.params(ndim - 1)
        except Exception as exc:
            self._set_invalid(gui_message(exc))
            return
        t = current_frame(self.viewer, layer)
        links = bool(self.show_links.value) and t + 1 < layer.data.shape[0]
        sr = float(self.search_range.value) or None
        asked = self._preview_requested_at

        def work():
            t0 = time.perf_counter()
            df = locate_preview(self._frame(layer, t), t, params)
            return {"layer": layer, "t": t, "params": params, "table": df,
                    "seconds": time.perf_counter() - t0, "asked": asked, "links": links, "sr": sr}

        self._preview_worker = self.run_worker(work, on_return=self._show_preview,
                                               on_finish=self._preview_done)

    def _preview_done(self) -> None:
        self._preview_worker = None
        if self._preview_pending:
            self._start_preview()

    def _show_preview(self, out) -> None:
        layer, t, params, df = out["layer"], out["t"], out["params"], out["table"]
        if not alive(self.viewer, layer) or not self.live.value or self._invalid is not None:
            return   # deleted, switched off, or the fields changed to something invalid
        existing = self.preview_layer
        if existing is not None and not existing.visible:
            return
        ndim = layer.data.ndim
        data = points_data(df) if len(df) else np.zeros((0, ndim))
        size = float(np.max(params.diameter))
        meta = {"kind": "preview", "frame": t, "table": df}
        if existing is None:
            new = replace_layer(
                self.viewer, PREVIEW, "points", data, metadata=meta, features=table_features(df),
                size=size, face_color="transparent", border_color="lime", border_width=0.12,
                border_width_is_relative=True, **spatial_transform(layer, ndim))
            self._preview_uid = layer_info(new)["uid"]
        else:
            existing.data = data
            existing.features = table_features(df)
            existing.size = size
            existing.border_color = "lime"
            for k, v in spatial_transform(layer, ndim).items():
                setattr(existing, k, v)
            info = layer_info(existing)
            info.update(meta)
        self.n_previews += 1
        self.last_preview_seconds = time.perf_counter() - out["asked"]
        self._preview_text = f"frame {t}: {len(df)} particles (located in {1e3 * out['seconds']:.0f} ms)"
        self.status.value = self._preview_text
        self._start_extras(out)

    def _start_extras(self, out) -> None:
        """After the rings: the mass histogram and the links to the next frame, in a
        worker of their own (the rings never wait for them); a result for fields or a
        frame that changed meanwhile is dropped."""
        from ._tracking import candidate_masses, link_preview, locate_preview

        layer, t, params, df, links, sr = (out[k] for k in ("layer", "t", "params", "table", "links", "sr"))
        key = (t, repr(params), sr, links)
        self._extras_key = key

        def work():
            frame = self._frame(layer, t)
            res = {"mass": candidate_masses(frame, params), "links": None, "search_range": None}
            if links:
                f1 = locate_preview(self._frame(layer, t + 1), t + 1, params)
                res["links"], res["search_range"] = link_preview(df, f1, sr)
            return res

        def show(res):
            if key != self._extras_key or self._invalid is not None or not self.live.value:
                return
            self.mass_plot.show(res["mass"], params.minmass)
            self._show_links(layer, res)
            if res["links"] is not None:
                lk = res["links"]
                med = float(np.median(lk["step"])) if len(lk) else float("nan")
                self.status.value = (f"{self._preview_text}; {len(lk)} linked to frame {t + 1} at search "
                                     f"range {res['search_range']:.2f} px{' (auto)' if not sr else ''}, "
                                     f"median step {med:.2f} px")

        self.run_worker(work, on_return=show)

    def _show_links(self, layer, out) -> None:
        lk = out["links"]
        existing = self.links_layer
        if lk is None:
            if existing is not None:
                existing.data = np.zeros((0, 2, layer.data.ndim))
            return
        pos = [c for c in ("z", "y", "x") if c in lk.columns]
        n, d = len(lk), 1 + len(pos)
        vec = np.zeros((n, 2, d))
        if n:
            vec[:, 0, 0] = lk["frame"].to_numpy(float)
            vec[:, 0, 1:] = lk[pos].to_numpy(float)
            vec[:, 1, 1:] = lk[[f"d{c}" for c in pos]].to_numpy(float)
        feats = pd.DataFrame({"step_px": lk["step"].to_numpy(float) if n else np.zeros(0)})
        meta = {"kind": "links", "search_range": out["search_range"]}
        if existing is None:
            new = replace_layer(self.viewer, LINKS, "vectors", vec, metadata=meta, features=feats,
                                edge_color="yellow", edge_width=0.6, length=1.0,
                                **spatial_transform(layer, layer.data.ndim))
            self._links_uid = layer_info(new)["uid"]
        else:
            existing.data = vec
            existing.features = feats
            layer_info(existing).update(meta)

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
        """Track the whole video, 2D (T, Y, X) or 3D (T, Z, Y, X), in a worker thread with
        napari's progress bar; the result becomes a Tracks layer (every column a feature)."""
        from colloidcg.tracking import track_iter

        layer = self.image.value
        if layer is None:
            notify_info("colloidcg: open a video first (File > Open, or File > Open Sample)")
            return None
        if self._track_worker is not None:
            return self._track_worker
        if self._invalid is not None:
            self.status.value = f"check the fields: {self._invalid}"
            return None
        try:
            if layer.data.ndim not in (3, 4):
                from colloidcg.errors import ParameterError
                raise ParameterError(f"{layer.name}: expected a video (T, Y, X) or (T, Z, Y, X); "
                                     f"this layer has shape {layer.data.shape}")
            params = self.params(layer.data.ndim - 1)
            video, meta = self._source(layer)
        except Exception as exc:
            self._on_error(exc)
            return None
        n = len(video)
        self.status.value = f"tracking {n} frames..."
        self.quality.visible = False
        self.track_button.enabled = False
        self.cancel_button.enabled = True
        clock = time.perf_counter()

        def returned(result):
            self._show_result(layer, result, time.perf_counter() - clock)

        def finished():
            self._track_worker = None
            self.track_button.enabled = self._invalid is None
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
        ndim = image_layer.data.ndim
        shape = tuple(result.meta.get("frame_shape") or image_layer.data.shape[1:])
        sidecar = result.sidecar()
        quality = getattr(result, "quality", None) or sidecar.get("quality")
        self._show_tracks(result.tracks, sidecar, f"{image_layer.name} tracks",
                          spatial_transform(image_layer, ndim), shape)
        n = result.tracks["particle"].nunique()
        sr = result.params.search_range
        self.status.value = (f"{n} trajectories, {len(result.tracks)} positions in {seconds:.1f} s "
                             f"(search range {sr:.2f} px)")
        self.show_quality(quality)

    def show_quality(self, quality) -> None:
        """Show the tracking quality verdict ({"status", "reasons", "metrics"}) when the
        library gives one (tracks.json ``quality``); hidden otherwise."""
        if quality is not None and not isinstance(quality, dict):
            if hasattr(quality, "as_dict"):
                quality = quality.as_dict()
            else:
                quality = {k: getattr(quality, k, None) for k in ("status", "reasons", "metrics")}
        if not isinstance(quality, dict) or not quality.get("status"):
            self.quality.value = ""
            self.quality.visible = False
            return
        status = str(quality.get("status"))
        reasons = [str(r) for r in (quality.get("reasons") or [])]
        colour = QUALITY_COLOURS.get(status, "#9e9e9e")
        text = f"<b style='color:{colour}'>tracking quality: {status}</b>"
        if reasons:
            text += "<br>" + "<br>".join(f"- {r}" for r in reasons[:6])
        self.quality.value = text
        self.quality.native.setToolTip("\n".join(f"{k}: {v}" for k, v in (quality.get("metrics") or {}).items()))
        self.quality.visible = True

    def _show_tracks(self, df, sidecar: dict, name: str, transform: dict, shape) -> None:
        self._table = (df, sidecar)
        data, features = tracks_layer_args(df)
        replace_layer(
            self.viewer, name, "tracks", data, features=features, color_by="track_id",
            tail_length=15, tail_width=2, blending="translucent",
            metadata={"kind": "tracks", "tracks": df, "meta": sidecar,
                      "frame_shape": list(shape) if shape else None}, **transform)
        self._tracks_name = name
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
        ndim = 4 if "z" in df.columns else 3
        if image is not None and image.data.ndim == ndim:
            transform, shape = spatial_transform(image, ndim), image.data.shape[1:]
        else:
            transform, shape = sidecar_transform(meta, ndim), (meta.get("video") or {}).get("frame_shape")
        self.result = None
        self._show_tracks(df, meta, f"{Path(path).parent.name or 'loaded'} tracks", transform, shape)
        self.status.value = f"loaded {len(df)} positions of {df['particle'].nunique()} particles from {path}"
        self.show_quality(meta.get("quality"))
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
            if ans != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        self.save_tracks(folder, overwrite=overwrite)

    def _load_dialog(self, *_):
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.native, "Open tracks", "", "Parquet tables (*.parquet)")
        if path:
            self.load_tracks(path)


#: The auto/on/off choices as TrackParams values.
_SWITCH = {"auto": None, "on": True, "off": False}


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
