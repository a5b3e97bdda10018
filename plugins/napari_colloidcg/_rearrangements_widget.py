"""The Rearrangements widget: D2min as point colour on every frame with a colour bar,
events as highlighted markers, and an events table whose rows jump to the event.

The numbers come from :func:`colloidcg.rearrangements.detect`; the widget draws them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, FloatSpinBox, PushButton, SpinBox

from ._common import (LayerWidget, alive, find_layer, frame_shape, layer_info, notify_info,
                      points_data, position_columns, replace_layer, spatial_transform,
                      table_features, tracks_table)
from ._plots import ColourBar

#: Columns of the events table, as :func:`colloidcg.rearrangements.event_table` names them.
EVENT_COLUMNS = ["event_id", "frame_start", "frame_end", "x", "y", "n_particles", "peak_d2min"]
CMAP = "inferno"
D2MIN = "D2min"
EVENTS = "rearrangement events"


def _auto(box):
    box.native.setSpecialValueText("auto")
    return box


class RearrangementsWidget(LayerWidget):
    """D2min and rearrangement events of the selected tracks layer.

    After :meth:`compute`: ``result`` (:class:`colloidcg.rearrangements.Rearrangements`),
    ``d2min_layer`` and ``events_layer`` (Points), ``table`` (the Qt events table).
    """

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, labels=True)
        self.tracks = self.layer_combo("tracks", "tracks")
        self.lag = SpinBox(label="lag (frames; 0: auto)", value=0, min=0, max=100000,
                           tooltip="D2min lag; 0: chosen from the mean squared displacement")
        self.cutoff = _auto(FloatSpinBox(label="cutoff (px)", value=0.0, min=0.0, max=1e4, step=0.5,
                                         tooltip="neighbour radius; auto: first minimum of g(r)"))
        self.threshold = _auto(FloatSpinBox(
            label="threshold", value=0.0, min=0.0, max=1e6, step=0.01,
            tooltip="rearranging when d2min_norm exceeds it; auto: from the D2min distribution"))
        self.descriptors = CheckBox(text="structural descriptors too (slower)", value=False)
        self.compute_button = PushButton(text="Compute D2min")
        self.colour_bar = ColourBar(viewer=self.viewer)
        from qtpy.QtWidgets import QAbstractItemView, QTableWidget

        self.table = QTableWidget(0, len(EVENT_COLUMNS))
        self.table.setHorizontalHeaderLabels([c.replace("_", " ") for c in EVENT_COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setMinimumHeight(120)
        self.table.setMaximumHeight(260)
        self.table.cellClicked.connect(lambda row, _col: self.jump_to_event(row))
        self.extend([self.tracks, self.lag, self.cutoff, self.threshold, self.descriptors,
                     self.compute_button, self.status])
        lay = self.native.layout()
        lay.addWidget(self.colour_bar.canvas)
        lay.addWidget(self.table)
        self.compute_button.clicked.connect(self.compute)
        self.result = None
        self._uids: dict = {}
        self._source = None
        self.status.value = "pick a tracks layer (Track widget or tracks.parquet) and compute"

    def _made(self, name: str):
        lay = find_layer(self.viewer, name)
        return lay if lay is not None and layer_info(lay).get("uid") == self._uids.get(name) else None

    @property
    def d2min_layer(self):
        """Points coloured by D2min (None until computed or once deleted)."""
        return self._made(D2MIN)

    @property
    def events_layer(self):
        """Points circling the events (None until computed or once deleted)."""
        return self._made(EVENTS)

    # ------------------------------------------------------------------ compute
    def compute(self, *_):
        """Run :func:`colloidcg.rearrangements.detect` in a worker thread."""
        from colloidcg.rearrangements import detect
        from colloidcg.structure.frames import fov_from_shape

        layer = self.tracks.value
        if layer is None:
            notify_info("colloidcg: no tracks layer; track a video or load tracks.parquet first")
            return None
        df, _ = tracks_table(layer)
        shape = frame_shape(layer)
        kwargs = dict(lag=int(self.lag.value) or None, cutoff=float(self.cutoff.value) or None,
                      threshold=float(self.threshold.value) or None,
                      fov=fov_from_shape(shape) if shape else None,
                      descriptors=bool(self.descriptors.value))
        self.status.value = f"computing D2min over {df['frame'].nunique()} frames..."
        self.compute_button.enabled = False

        def done():
            self.compute_button.enabled = True

        return self.run_worker(detect, df, **kwargs, on_return=lambda r: self._show(layer, r),
                               on_finish=done, progress={"desc": "D2min"})

    def _show(self, layer, result) -> None:
        self.result = result
        self._source = layer
        tab = result.table
        ok = np.isfinite(tab["d2min_norm"].to_numpy(float)) & (tab["d2min_norm"].to_numpy(float) > 0)
        rows = tab[ok]
        value = np.log10(rows["d2min_norm"].to_numpy(float))
        thr = float(np.log10(result.parameters["threshold"]))
        lo = float(np.percentile(value, 1)) if len(value) else -1.0
        hi = float(np.percentile(value, 99.5)) if len(value) else lo + 1.0
        if hi <= lo:
            hi = lo + 1.0
        hi = max(hi, thr + 0.1 * (hi - lo))     # the threshold stays inside the colour bar
        spacing = float(result.parameters.get("mean_spacing_px") or 10.0)
        transform = spatial_transform(layer, 3)
        features = table_features(rows.reset_index(drop=True))
        features.insert(0, "log10_d2min_norm", value)
        lay = replace_layer(
            self.viewer, D2MIN, "points", points_data(rows), features=features,
            face_color="log10_d2min_norm", face_colormap=CMAP, face_contrast_limits=(lo, hi),
            size=0.55 * spacing, border_width=0, opacity=0.85,
            metadata={"kind": "d2min", "limits": (lo, hi), "threshold": thr, "table": tab,
                      "parameters": result.parameters, "source": layer.name}, **transform)
        self._uids[D2MIN] = layer_info(lay)["uid"]
        self.colour_bar.show(CMAP, lo, hi, "log$_{10}$ D$^2_{min}$ / (n a$^2$)   (line: threshold)", thr)
        self._show_events(result, transform)
        self.status.value = (f"lag {result.parameters['lag_frames']} frames, cutoff "
                             f"{result.parameters['cutoff_px']:.1f} px, threshold "
                             f"{result.parameters['threshold']:.3g}: {len(result.events)} events, "
                             f"{result.parameters['n_rearranging']} rearranging particle-frames")

    def _show_events(self, result, transform: dict) -> None:
        from qtpy.QtWidgets import QTableWidgetItem

        ev = result.events
        pos = position_columns(ev, image=False)
        rows = []
        for _, e in ev.iterrows():
            for f in range(int(e["frame_start"]), int(e["frame_end"]) + 1):
                rows.append([f, *(float(e[c]) for c in pos), int(e["event_id"])])
        data = np.array([r[:-1] for r in rows], float) if rows else np.zeros((0, 1 + len(pos)))
        ids = np.array([r[-1] for r in rows], int)
        size = 2.0 * float(result.parameters["cutoff_px"])
        lay = replace_layer(
            self.viewer, EVENTS, "points", data, features=event_features(ev, ids),
            symbol="disc", face_color="transparent", border_color="cyan", border_width=0.08,
            border_width_is_relative=True, size=size,
            metadata={"kind": "events", "events": ev}, **transform)
        self._uids[EVENTS] = layer_info(lay)["uid"]
        self.table.setRowCount(len(ev))
        for i, (_, e) in enumerate(ev.iterrows()):
            for j, c in enumerate(EVENT_COLUMNS):
                v = e.get(c, np.nan)
                text = f"{v:.1f}" if c in ("x", "y", "peak_d2min") else f"{int(v)}"
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    # ------------------------------------------------------------------ navigation
    def jump_to_event(self, row: int) -> None:
        """Show event ``row`` of the table: its peak frame on the slider, the view
        centred on it, its markers selected."""
        if self.result is None or not (0 <= row < len(self.result.events)):
            return
        e = self.result.events.iloc[row]
        frame = int(e["peak_frame"]) if "peak_frame" in e else int(e["frame_start"])
        frame = min(max(frame, int(e["frame_start"])), int(e["frame_end"]))
        pos = [float(e[c]) for c in position_columns(self.result.events, image=False)]
        layer = self.events_layer
        if layer is None:
            layer = self._source if alive(self.viewer, self._source) else None
        world = layer.data_to_world([frame, *pos]) if layer is not None else [frame, *pos]
        self.viewer.dims.set_current_step(0, frame)
        camera = getattr(self.viewer, "scene", self.viewer).camera   # napari >= 0.9: viewer.scene
        camera.center = tuple(world[-2:])
        evl = self.events_layer
        if evl is not None:
            ids = evl.features["event_id"].to_numpy()
            frames = np.rint(evl.data[:, 0]).astype(int)
            evl.selected_data = set(np.flatnonzero((ids == int(e["event_id"])) &
                                                                 (frames == frame)).tolist())
        self.table.selectRow(row)
        self.status.value = (f"event {int(e['event_id'])}: frames {int(e['frame_start'])}-"
                             f"{int(e['frame_end'])}, {int(e['n_particles'])} particles, peak D2min "
                             f"{float(e['peak_d2min']):.3g} px^2")


def event_features(events: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    """Features of the event markers (one marker per event and frame): every column of
    the events table, repeated on each of its markers."""
    if not len(ids):
        return pd.DataFrame({"event_id": ids})
    ev = events.set_index("event_id", drop=False)
    return table_features(ev.loc[ids].reset_index(drop=True))
