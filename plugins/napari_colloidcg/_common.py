"""What the widgets share: worker threads, notifications, layer <-> table conversion.

Conventions: positions in tables are px (x = column, y = row), frames are integers, and
layers made by the widgets copy the scale and translation of the footage (micrometres when
the calibration is known), so a point at (frame, y, x) px sits on the right pixel.
Tables travel between widgets in the layers' ``metadata["colloidcg"]``:

- image layers (from the reader): ``path``, ``meta`` (the video description);
- tracks layers: ``tracks`` (DataFrame, trackpy schema), ``meta`` (the JSON sidecar),
  ``frame_shape`` (Y, X) of the footage when known.

Every layer a widget makes also has ``kind`` and a ``uid`` there, and carries its table's
columns as features. Widgets opened from the Plugins menu get a proxy of the viewer, whose
layers are new proxy objects at every access: layers are therefore found by name and uid
(:func:`find_layer`, :func:`same_layer`), told apart with ``isinstance`` (:func:`kind_of`),
and replaced by name when an action runs again (:func:`replace_layer`).
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
        show_error(gui_message(exc))
    else:
        notification_manager.receive_error(type(exc), exc, exc.__traceback__)


def gui_message(exc: BaseException) -> str:
    """The library's message in the GUI's words: a command-line flag ("pass --overwrite")
    becomes what to do in the window."""
    import re

    msg = str(exc)
    msg = re.sub(r";?\s*pass --overwrite to replace it", "; choose another folder, or confirm "
                 "replacing it when the save dialog asks", msg)
    msg = re.sub(r"--overwrite", "replacing (confirm it in the save dialog)", msg)
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda m: f"'{GUI_FIELDS.get(m[1], m[1].replace('-', ' '))}'", msg)


#: Command-line flags the library's messages name, as the widgets label those fields.
GUI_FIELDS = {"diameter": "diameter (px)", "separation": "separation (px)", "minmass": "minmass",
              "invert": "particles: dark/bright", "contrast": "particles", "search-range": "search range (px)",
              "memory": "memory (frames)", "min-length": "min length (frames)",
              "processes": "processes", "lag": "lag (frames)", "cutoff": "cutoff (px)",
              "threshold": "threshold", "epochs": "epochs", "batch-frames": "frames per batch",
              "lr": "learning rate", "seed": "seed", "steps": "rollout steps (frames)"}


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


#: napari layer classes the widgets tell apart (``isinstance``: works on the proxied
#: viewer that napari gives widgets opened from the Plugins menu, where ``type()`` is
#: the proxy's).
_KINDS = ("image", "points", "tracks", "labels", "shapes", "surface", "vectors")


def sidecar_transform(meta: dict, ndim: int) -> dict:
    """scale (micrometres when the sidecar knows the pixel size) for a layer of ``ndim``
    dimensions (frame axis first) made from a table with no footage open."""
    units = meta.get("units") or {}
    um = units.get("um_per_px") or (meta.get("video") or {}).get("um_per_px")
    if not um:
        return {}
    um = float(um)
    dz = float(units.get("um_per_slice") or (meta.get("video") or {}).get("um_per_slice") or um)
    spatial = (dz,) * (ndim - 3) + (um, um)
    return {"scale": (1.0, *spatial), "units": ("pixel", *("um",) * (ndim - 1))}


def kind_of(layer) -> str:
    """"image", "points", "tracks", ... for a napari layer ("" for anything else)."""
    import napari.layers as nl

    for kind in _KINDS:
        if isinstance(layer, getattr(nl, kind.capitalize())):
            return kind
    return ""


def find_layer(viewer, name: str):
    """The layer called ``name`` in ``viewer`` (None when there is none). Layers are
    found by name, never by identity: napari hands plugin widgets a proxy of the viewer
    whose layers are new proxy objects at every access."""
    for lay in viewer.layers:
        if lay.name == name:
            return lay
    return None


def same_layer(a, b) -> bool:
    """True when ``a`` and ``b`` are the same layer: the same name and the same
    ``metadata["colloidcg"]["uid"]`` (layers made elsewhere: the same name and kind)."""
    if a is None or b is None:
        return False
    if a.name != b.name:
        return False
    ua, ub = layer_info(a).get("uid"), layer_info(b).get("uid")
    return ua == ub if (ua or ub) else kind_of(a) == kind_of(b)


def alive(viewer, layer) -> bool:
    """``layer`` is still in ``viewer`` (found by name and uid)."""
    return layer is not None and same_layer(find_layer(viewer, layer.name), layer)


def replace_layer(viewer, name: str, kind: str, data, metadata: dict | None = None, **kwargs):
    """Add a layer called ``name``, replacing the layer of that name and kind made
    earlier (re-running an action updates its layer instead of adding "name [1]").

    ``metadata`` becomes ``metadata["colloidcg"]`` with a fresh ``uid`` (how the widgets
    recognise their layers through napari's proxies)."""
    import uuid

    old = find_layer(viewer, name)
    if old is not None and kind_of(old) == kind:
        viewer.layers.remove(old.name)
    info = {**(metadata or {}), "uid": uuid.uuid4().hex}
    return getattr(viewer, f"add_{kind}")(data, name=name, metadata={KEY: info}, **kwargs)


def current_frame(viewer, layer=None) -> int:
    """Frame number (index on the first axis of ``layer``) under the viewer's slider."""
    if layer is not None:
        t = round(float(layer.world_to_data(viewer.dims.point)[0]))
        return int(np.clip(t, 0, layer.data.shape[0] - 1))
    return int(viewer.dims.current_step[0])


def table_features(df: pd.DataFrame) -> pd.DataFrame:
    """Every column of a table as layer features (users colour and filter by them):
    numbers and booleans as they are, anything else as text."""
    out = {}
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            out[str(c)] = col.to_numpy()
        else:
            out[str(c)] = col.astype(str).to_numpy()
    return pd.DataFrame(out)


def tracks_layer_args(df: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """(data, features) for a Tracks layer: rows sorted by particle and frame, every
    column a feature in the same order (``color_by`` any of them)."""
    d = df.sort_values(["particle", "frame"], kind="stable")
    return tracks_data(d), table_features(d).reset_index(drop=True)


def tabs(pages: dict):
    """A QTabWidget with one page per item (title: list of magicgui or Qt widgets): docks
    stay short enough for a 1366 x 768 screen."""
    from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

    tw = QTabWidget()
    for title, widgets in pages.items():
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        for w in widgets:
            lay.addWidget(w if isinstance(w, QWidget) else w.native)
        lay.addStretch(1)
        tw.addTab(page, title)
    return tw


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
        self._resetting = False
        self.native.setMaximumWidth(460)   # leave the canvas most of the window
        self.closed = False   # the Qt widget was deleted (viewer closed): results are dropped
        self.native.destroyed.connect(self._on_destroyed)
        self._tabified = False
        self._show_filter = _FirstShow(self._on_first_show)
        self.native.installEventFilter(self._show_filter)
        ev = self.viewer.layers.events
        ev.inserted.connect(self._refresh_choices)
        ev.removed.connect(self._refresh_choices)

    # layers to pick from
    def layer_combo(self, label: str, kind: str, accept: Callable[[Any], bool] | None = None) -> ComboBox:
        """A layer chooser that follows its layer by name: when an action replaces the
        chosen layer (same name, new data), the new one is chosen."""
        def choices(_widget=None):
            return [(lay.name, lay) for lay in self.viewer.layers
                    if kind_of(lay) == kind and (accept is None or accept(lay))]

        combo = ComboBox(label=label, choices=choices, nullable=False)
        combo._cg_name = None

        def remember(value):
            if not self._resetting:
                combo._cg_name = None if value is None else value.name

        combo.changed.connect(remember)
        self._combos.append(combo)
        return combo

    def _refresh_choices(self, event=None) -> None:
        if self.closed:
            return
        self._resetting = True
        try:
            for combo in self._combos:
                want = combo._cg_name
                combo.reset_choices()
                if want is None:   # nothing chosen yet: remember what the combo shows
                    combo._cg_name = None if combo.value is None else combo.value.name
                    continue
                live = next((lay for lay in self.viewer.layers if lay.name == want), None)
                if live is None:
                    continue
                # the same layer (by name and uid; identities differ through napari's
                # proxies), or a replacement of the same name whose combo value is stale
                current = combo.value
                if current is not None and current.name == want and \
                        layer_info(current).get("uid") == layer_info(live).get("uid"):
                    continue
                try:                             # the chosen layer was replaced: follow it
                    combo.value = live
                except ValueError:               # same name, not a valid choice here
                    pass
        except RuntimeError:   # widget already deleted (viewer closing)
            self.closed = True
        finally:
            self._resetting = False

    # docking
    def _on_first_show(self) -> None:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, self.tabify)

    def tabify(self) -> bool:
        """Put this widget's dock in the same tab group as the other colloidcg docks of
        the window (opened from the Plugins menu they would stack into a column taller
        than a laptop screen). True when it joined a group."""
        from qtpy.QtWidgets import QDockWidget, QMainWindow

        if self._tabified or self.closed:
            return False
        w, dock = self.native, None
        try:
            while w is not None:
                if isinstance(w, QDockWidget):
                    dock = w
                    break
                w = w.parentWidget()
        except RuntimeError:
            return False
        if dock is None:
            return False
        self._tabified = True
        dock.setProperty("colloidcg_dock", True)
        main = dock.parentWidget()
        if not isinstance(main, QMainWindow):
            return False
        for other in main.findChildren(QDockWidget):
            if other is not dock and other.property("colloidcg_dock") and not other.isHidden() \
                    and not other.isFloating() and main.dockWidgetArea(other) == main.dockWidgetArea(dock):
                main.tabifyDockWidget(other, dock)
                dock.show()
                dock.raise_()
                _fit_to_screen(main)
                return True
        return False

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
        text = gui_message(exc)
        self.status.value = f"error: {text.splitlines()[0][:200] if text else type(exc).__name__}"
        notify_error(exc)

    def cancel_all(self) -> None:
        for w in list(self._workers):
            w.quit()


def _fit_to_screen(main) -> None:
    """Shrink the main window back onto its screen: docks added one below the other before
    they were tabbed together may have grown it past the screen's height."""
    try:
        screen = main.screen().availableGeometry()
    except Exception:   # no screen (offscreen platform)
        return
    if main.height() > screen.height() or main.width() > screen.width():
        main.resize(min(main.width(), screen.width()), min(main.height(), screen.height()))


def _first_show_filter_class():
    from qtpy.QtCore import QEvent, QObject

    class FirstShow(QObject):
        """Calls ``callback`` once, at the first Show event of the watched widget."""

        def __init__(self, callback):
            super().__init__()
            self.callback = callback
            self.done = False

        def eventFilter(self, obj, event):
            if not self.done and event.type() == QEvent.Type.Show:
                self.done = True
                self.callback()
            return False

    return FirstShow


def _FirstShow(callback):
    return _first_show_filter_class()(callback)
