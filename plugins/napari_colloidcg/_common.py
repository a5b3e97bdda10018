"""What the widgets share: worker threads, notifications, layer <-> table conversion.

Conventions: positions in tables are px (x = column, y = row), frames are integers, and
layers made by the widgets copy the scale and translation of the footage (micrometres when
the calibration is known), so a point at (frame, y, x) px sits on the right pixel.
Tables travel between widgets in the layers' ``metadata["colloidcg"]``:

- image layers (from the reader): ``path``, ``meta`` (the video description);
- tracks layers: ``tracks`` (DataFrame, trackpy schema), ``meta`` (the JSON sidecar),
  ``frame_shape`` (Y, X) of the footage when known.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, Container, Label

KEY = "colloidcg"


# ---------------------------------------------------------------- notifications
def notify_error(exc: BaseException) -> None:
    """Show an error as a napari notification: one line for colloidcg's own errors,
    the traceback available for anything unexpected."""
    from napari.utils.notifications import notification_manager, show_error

    from colloidcg.errors import ColloidcgError

    if isinstance(exc, ColloidcgError):
        show_error(str(exc))
    else:
        notification_manager.receive_error(type(exc), exc, exc.__traceback__)


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


# ---------------------------------------------------------------- layers and tables
def layer_info(layer) -> dict:
    """``metadata["colloidcg"]`` of a layer (empty dict when absent)."""
    if layer is None:
        return {}
    return layer.metadata.get(KEY, {}) or {}


def calibration(layer) -> tuple[float | None, float | None]:
    """(um_per_px, fps) known for a layer: the video description or the tracks sidecar."""
    info = layer_info(layer)
    meta = info.get("meta") or {}
    vals = []
    for key in ("um_per_px", "fps"):
        v = None
        for where in (meta, meta.get("video") or {}, meta.get("units") or {}):
            if isinstance(where, dict) and where.get(key) is not None:
                v = float(where[key])
                break
        vals.append(v)
    return vals[0], vals[1]


def frame_shape(layer) -> tuple[int, ...] | None:
    """(Y, X) of the footage a layer belongs to, when known."""
    info = layer_info(layer)
    if info.get("frame_shape"):
        return tuple(int(s) for s in info["frame_shape"])
    meta = info.get("meta") or {}
    shape = meta.get("frame_shape") or (meta.get("video") or {}).get("frame_shape")
    return tuple(int(s) for s in shape) if shape else None


def position_columns(df: pd.DataFrame, image: bool = True) -> list[str]:
    """Row-major position columns: (z,) y, x; with ``image`` the image-frame positions
    (``y_image``, ``x_image``) where tracking subtracted the stage drift."""
    cols = []
    for c in ("z", "y", "x"):
        if c in df.columns:
            cols.append(f"{c}_image" if image and f"{c}_image" in df.columns else c)
    return cols


def points_data(df: pd.DataFrame) -> np.ndarray:
    """(N, 1 + d) array (frame, [z,] y, x) in px for a Points layer."""
    cols = ["frame"] + position_columns(df)
    return df[cols].to_numpy(dtype=float)


def tracks_data(df: pd.DataFrame) -> np.ndarray:
    """(N, 2 + d) array (particle, frame, [z,] y, x), sorted, for a Tracks layer."""
    d = df.sort_values(["particle", "frame"], kind="stable")
    cols = ["particle", "frame"] + position_columns(d)
    return d[cols].to_numpy(dtype=float)


def tracks_table(layer) -> tuple[pd.DataFrame, dict]:
    """(tracks DataFrame, sidecar dict) of a Tracks layer; layers made elsewhere are read
    from their data (track_id, t, [z,] y, x) with no calibration."""
    info = layer_info(layer)
    if isinstance(info.get("tracks"), pd.DataFrame):
        return info["tracks"], dict(info.get("meta") or {})
    data = np.asarray(layer.data)
    names = ["particle", "frame"] + (["z", "y", "x"] if data.shape[1] == 5 else ["y", "x"])
    df = pd.DataFrame(data, columns=names)
    df["particle"] = df["particle"].astype(np.int64)
    df["frame"] = np.rint(df["frame"]).astype(np.int64)
    return df, {}


def spatial_transform(layer, ndim: int) -> dict:
    """scale and translate of ``layer`` for a new layer of ``ndim`` dimensions (frame
    axis first) drawn over it."""
    if layer is None:
        return {}
    scale = tuple(layer.scale)[-ndim:]
    translate = tuple(layer.translate)[-ndim:]
    units = tuple(str(u) for u in getattr(layer, "units", ()))[-ndim:]
    if len(scale) < ndim:
        pad = ndim - len(scale)
        scale = (1.0,) * pad + scale
        translate = (0.0,) * pad + translate
        units = ("pixel",) * pad + units
    out = {"scale": scale, "translate": translate}
    if len(units) == ndim:
        out["units"] = units
    return out


def kind_of(layer) -> str:
    """"image", "points", "tracks", ... for a napari layer."""
    return type(layer).__name__.lower()


def replace_layer(viewer, name: str, kind: str, data, **kwargs):
    """Add a layer, replacing one of the same name (and kind) made earlier."""
    if name in viewer.layers and kind_of(viewer.layers[name]) == kind:
        viewer.layers.remove(name)
    return getattr(viewer, f"add_{kind}")(data, name=name, **kwargs)


def current_frame(viewer, layer=None) -> int:
    """Frame number (index on the first axis of ``layer``) under the viewer's slider."""
    if layer is not None:
        t = round(float(layer.world_to_data(viewer.dims.point)[0]))
        return int(np.clip(t, 0, layer.data.shape[0] - 1))
    return int(viewer.dims.current_step[0])


# ---------------------------------------------------------------- widget base
class LayerWidget(Container):
    """Base of the colloidcg widgets: a magicgui Container bound to a viewer, which runs
    long work in napari worker threads and reports errors as notifications."""

    def __init__(self, napari_viewer, **kwargs):
        super().__init__(**kwargs)
        self.viewer = napari_viewer
        self._workers: set = set()
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self._combos: list[ComboBox] = []
        self.native.setMaximumWidth(460)   # leave the canvas most of the window
        self.closed = False   # the Qt widget was deleted (viewer closed): results are dropped
        self.native.destroyed.connect(self._on_destroyed)
        ev = self.viewer.layers.events
        ev.inserted.connect(self._refresh_choices)
        ev.removed.connect(self._refresh_choices)

    # layers to pick from
    def layer_combo(self, label: str, kind: str, accept: Callable[[Any], bool] | None = None) -> ComboBox:
        def choices(_widget=None):
            return [(lay.name, lay) for lay in self.viewer.layers
                    if kind_of(lay) == kind and (accept is None or accept(lay))]

        combo = ComboBox(label=label, choices=choices, nullable=False)
        self._combos.append(combo)
        return combo

    def _refresh_choices(self, event=None) -> None:
        if self.closed:
            return
        for combo in self._combos:
            try:
                combo.reset_choices()
            except RuntimeError:   # widget already deleted (viewer closing)
                self.closed = True
                return

    def _on_destroyed(self, *_):
        self.closed = True
        self.cancel_all()

    def _guard(self, fn):
        """``fn`` for a worker signal: skipped once the widget is gone (a worker may finish
        after the viewer was closed)."""
        def call(*args):
            if self.closed:
                return None
            try:
                return fn(*args)
            except RuntimeError as exc:
                if "deleted" in str(exc):
                    self.closed = True
                    return None
                notify_error(exc)
            except Exception as exc:   # shown, never raised into Qt's event loop
                notify_error(exc)
            return None
        return call

    # workers
    @property
    def busy(self) -> bool:
        """True while any of this widget's workers runs."""
        return bool(self._workers)

    def run_worker(self, func, *args, on_return=None, on_yield=None, progress=None,
                   on_finish=None, **kwargs):
        """Start ``func(*args, **kwargs)`` in a napari worker thread (a generator function
        yields progress steps); errors become notifications."""
        from napari.qt.threading import create_worker

        worker = create_worker(func, *args, _progress=progress, _start_thread=False,
                               _connect={"errored": self._guard(self._on_error)}, **kwargs)
        if on_return is not None:
            worker.returned.connect(self._guard(on_return))
        if on_yield is not None:
            worker.yielded.connect(self._guard(on_yield))
        self._workers.add(worker)
        finish = self._guard(on_finish) if on_finish is not None else None

        def done():
            self._workers.discard(worker)
            if finish is not None:
                finish()

        worker.finished.connect(done)
        worker.start()
        return worker

    def _on_error(self, exc: BaseException) -> None:
        self.status.value = f"error: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
        notify_error(exc)

    def cancel_all(self) -> None:
        for w in list(self._workers):
            w.quit()
