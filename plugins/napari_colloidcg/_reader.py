"""napari reader: every video format :func:`colloidcg.io.open_video` reads, served lazily.

The layer's data is a dask array of shape (T, Y, X) (or (T, Z, Y, X) for z-stacks) with one
chunk per frame; a frame is read from disk only when napari shows it, so a file of any
size opens in the time it takes to read its header and one frame. Calibration from the
file or ``colloidcg.toml`` sets the layer scale in micrometres (time stays in frames, so
the slider position is the frame number); what is known about the video goes into the
layer's ``metadata["colloidcg"]`` for the widgets.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from colloidcg.batch.stages import STAGES   # the batch's stage folders
from colloidcg.io.readers import file_extensions


def __getattr__(name):
    # VIDEO_EXTS: the file endings the reader is offered for (folders of frames are offered
    # too), read from colloidcg's table of formats when asked for, so that a format
    # registered at run time counts; napari.yaml lists the endings of the table as it ships.
    if name == "VIDEO_EXTS":
        return file_extensions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Frames:
    """Array-like view of a :class:`colloidcg.io.Video` for :func:`dask.array.from_array`.

    ``obj[t0:t1, ...]`` reads frames t0..t1-1. Reads are serialised by a lock because the
    format back-ends keep decoder and file state (napari's slicing and the widgets'
    worker threads may ask for frames at the same time).
    """

    def __init__(self, video):
        self.video = video
        self.shape = (len(video), *video.frame_shape)
        self.dtype = np.dtype(video.dtype)
        self.ndim = len(self.shape)
        self.lock = threading.Lock()

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        t = key[0]
        rest = key[1:]
        if isinstance(t, slice):
            idx = range(*t.indices(self.shape[0]))
            with self.lock:
                frames = [self.video[i] for i in idx]
            out = np.stack(frames) if frames else np.empty((0, *self.shape[1:]), self.dtype)
            return out[(slice(None), *rest)]
        with self.lock:
            frame = self.video[int(t)]
        return frame[rest] if rest else frame


def video_layer_data(video, name: str | None = None) -> tuple[Any, dict, str]:
    """napari LayerData tuple ``(dask array, kwargs, "image")`` for an open Video."""
    import dask.array as da

    meta = video.meta
    frames = _Frames(video)
    data = da.from_array(frames, chunks=(1, *frames.shape[1:]), asarray=False, fancy=False,
                         meta=np.empty((0,) * frames.ndim, frames.dtype), name=False)
    first = np.asarray(video[0])
    lo, hi = float(first.min()), float(first.max())
    if hi <= lo:
        hi = lo + 1.0
    um = meta.um_per_px
    spatial = (1.0,) * len(meta.frame_shape) if um is None else (
        (meta.um_per_slice or um,) * (len(meta.frame_shape) - 2) + (um, um))
    kwargs = {
        "name": name or meta.path.stem or meta.path.name,
        "scale": (1.0, *spatial),
        "contrast_limits": (lo, hi),
        "colormap": "gray",
        "multiscale": False,
        "axis_labels": ("frame", *("zyx"[-len(meta.frame_shape):])),
        "metadata": {"colloidcg": {"path": str(meta.path), "meta": meta.as_dict()}},
    }
    if um is not None:
        kwargs["units"] = ("pixel", *(("um",) * len(meta.frame_shape)))
    return data, kwargs, "image"


def _notify(message: str) -> None:
    try:
        from napari.utils.notifications import show_warning

        show_warning(message)
    except Exception:   # no napari event loop (headless use): nothing to show it in
        pass


def napari_get_reader(path) -> Callable | None:
    """Return a reader for ``path`` or None when it is nothing colloidcg can open.

    Videos (every format :func:`colloidcg.io.open_video` reads, folders of frames) open
    lazily; colloidcg's outputs open ready to inspect: a tracks table (``tracks.parquet``:
    Tracks + Points, every column a feature), an upsampled system (``colloidcg upsample``:
    Points, one sample per frame, with local |psi6| and the seam distance as features, and
    its periodic box), simulated tracks, a rearrangements or events
    table, a model folder or bundle (loaded into the Model widget), one video's batch
    results (``OUT/<video>/``: video, tracks, D2min, events, model) or a batch ``OUT``
    folder. Never raises: a file colloidcg should read but cannot (corrupt, truncated,
    empty) gives a napari warning with the one-line reason and None.
    """
    try:
        if isinstance(path, (list, tuple)):
            if len(path) != 1:
                return None
            path = path[0]
        p = Path(path)
        results = _results_reader(p)
        if results is not None:
            return results
        if not (p.is_dir() or p.suffix.lower() in file_extensions()):
            return None
        from colloidcg.io import open_video

        video = open_video(p)
    except Exception as exc:   # reader contract: never raise
        from colloidcg.errors import ColloidcgError

        msg = str(exc) if isinstance(exc, ColloidcgError) else f"{path}: {exc.__class__.__name__}: {exc}"
        _notify(f"colloidcg cannot open {path}: {msg}" if str(path) not in msg
                else f"colloidcg cannot open it: {msg}")
        return None

    def read(_path=None) -> list[tuple]:
        return [video_layer_data(video)]

    return read


# ---------------------------------------------------------------- results read back in


def _sidecar_scale(meta: dict, ndim: int) -> dict:
    from ._common import sidecar_transform

    return sidecar_transform(meta, ndim)


def _table_kind(df, meta: dict, path: Path) -> str | None:
    """"events", "rearrangements", "simulation", "tracks" or None for a Parquet table."""
    cols = set(df.columns)
    if {"event_id", "frame_start", "frame_end", "x", "y"} <= cols:
        return "events"
    if not {"frame", "x", "y"} <= cols:
        return None
    if "d2min" in cols:
        return "rearrangements"
    if "particle" not in cols:
        return None
    if meta.get("stage") == "simulate" or path.stem.startswith("sim"):
        return "simulation"
    return "tracks"


def _frame_shape(meta: dict):
    video = meta.get("video") or {}
    shape = video.get("frame_shape") or meta.get("frame_shape")
    return list(shape) if shape else None


def tracks_layers(df, meta: dict, name: str, kind: str = "tracks", points: bool = True) -> list[tuple]:
    """LayerData of a tracks table: a Tracks layer (every column a feature, the table and
    sidecar in ``metadata["colloidcg"]`` for the widgets) and a Points layer of every
    particle-frame with the same features (colour or filter by mass, size, ep, ...)."""
    from ._common import points_data, table_features, tracks_layer_args

    ndim = 4 if "z" in df.columns else 3
    transform = _sidecar_scale(meta, ndim)
    data, features = tracks_layer_args(df)
    info = {"kind": kind, "tracks": df, "meta": meta, "frame_shape": _frame_shape(meta)}
    out = [(data, {"name": name, "features": features, "color_by": "track_id", "tail_length": 15,
                   "tail_width": 2, "blending": "translucent",
                   "colormap": "hsv" if kind == "simulation" else "turbo",
                   "metadata": {"colloidcg": info}, **transform}, "tracks")]
    if points:
        out.append((points_data(df), {"name": f"{name} (points)", "features": table_features(df.reset_index(drop=True)),
                                      "size": 4.0, "face_color": "transparent",
                                      "border_color": "orange" if kind == "simulation" else "lime",
                                      "border_width": 0.15, "border_width_is_relative": True,
                                      "visible": False,
                                      "metadata": {"colloidcg": {"kind": f"{kind} points", "meta": meta}},
                                      **transform}, "points"))
    return out


def rearrangement_layers(df, meta: dict, name: str, source: str | None = None) -> list[tuple]:
    """A Points layer coloured by log10 of the normalised D2min (every column a feature;
    the table in metadata, as the Rearrangements widget makes it)."""
    from ._common import points_data, table_features

    ndim = 4 if "z" in df.columns else 3
    norm = df["d2min_norm"].to_numpy(float) if "d2min_norm" in df.columns else df["d2min"].to_numpy(float)
    ok = np.isfinite(norm) & (norm > 0)
    rows = df[ok].reset_index(drop=True)
    value = np.log10(norm[ok])
    features = table_features(rows)
    features.insert(0, "log10_d2min_norm", value)
    lo, hi = (float(np.percentile(value, 1)), float(np.percentile(value, 99.5))) if len(value) else (-1.0, 0.0)
    params = meta.get("parameters") or {}
    info = {"kind": "d2min", "table": df, "parameters": params, "meta": meta, "source": source}
    return [(points_data(rows), {"name": name, "features": features, "face_color": "log10_d2min_norm",
                                 "face_colormap": "inferno",
                                 "face_contrast_limits": (lo, hi if hi > lo else lo + 1.0),
                                 "size": 0.55 * float(params.get("mean_spacing_px") or 10.0),
                                 "border_width": 0, "opacity": 0.85,
                                 "metadata": {"colloidcg": info}, **_sidecar_scale(meta, ndim)}, "points")]


def event_layers(ev, meta: dict, name: str) -> list[tuple]:
    """Circles around each event on every frame it lasts (every column a feature)."""
    from ._common import position_columns
    from ._rearrangements_widget import event_features

    pos = position_columns(ev, image=False)
    rows = [[f, *(float(e[c]) for c in pos), int(e["event_id"])]
            for _, e in ev.iterrows() for f in range(int(e["frame_start"]), int(e["frame_end"]) + 1)]
    data = np.array([r[:-1] for r in rows], float) if rows else np.zeros((0, 1 + len(pos)))
    ids = np.array([r[-1] for r in rows], int)
    params = meta.get("parameters") or {}
    size = 2.0 * float(params.get("cutoff_px") or 20.0)
    return [(data, {"name": name, "features": event_features(ev, ids), "symbol": "disc",
                    "face_color": "transparent", "border_color": "cyan", "border_width": 0.08,
                    "border_width_is_relative": True, "size": size,
                    "metadata": {"colloidcg": {"kind": "events", "events": ev, "meta": meta}},
                    **_sidecar_scale(meta, 1 + len(pos))}, "points")]


def table_layers(path: Path, name: str | None = None, source: str | None = None) -> list[tuple]:
    """LayerData for one of colloidcg's Parquet tables (tracks, an upsampled system,
    simulated tracks, a rearrangements table, an events table); raises ColloidcgError for
    anything else."""
    from colloidcg.errors import ColloidcgError
    from colloidcg.outputs import read_table

    df, meta = read_table(path)
    kind = _table_kind(df, meta, path)
    if kind is None:
        raise ColloidcgError(f"{path}: not a colloidcg table (expected frame, particle, x, y; "
                             f"found {', '.join(map(str, list(df.columns)[:8]))})")
    if not len(df):
        raise ColloidcgError(f"{path}: the table is empty")
    folder = path.parent.parent if path.parent.name in STAGES else path.parent
    base = name or folder.name or path.stem
    from ._upsample import is_upsample, upsample_layers

    if kind == "tracks" and is_upsample(meta):
        return upsample_layers(df, meta, f"{name or path.stem} upsampled")
    if kind == "events":
        return event_layers(df, meta, f"{base} events")
    if kind == "rearrangements":
        return rearrangement_layers(df, meta, f"{base} D2min", source or f"{base} tracks")
    if kind == "simulation":
        return tracks_layers(df, meta, f"{base} simulation", kind="simulation")
    return tracks_layers(df, meta, f"{base} tracks")


def _is_model_dir(p: Path) -> bool:
    return p.is_dir() and ((p / "bundle.json").is_file() or
                           ((p / "model.pt").is_file() and (p / "config.json").is_file()))


def _is_video_results(p: Path) -> bool:
    return p.is_dir() and (p / "track" / "tracks.parquet").is_file()


def _is_batch_out(p: Path) -> bool:
    return p.is_dir() and ((p / "batch.json").is_file() or (p / "summary.csv").is_file()) \
        and any(True for _ in p.rglob("track/tracks.parquet"))


def load_model_into_widget(path: Path, viewer=None):
    """Open the Model widget (docked) of the current viewer and load the model at
    ``path`` into it. Returns the widget (None without a viewer)."""
    import napari

    viewer = viewer or napari.current_viewer()
    if viewer is None:
        return None
    _, widget = viewer.window.add_plugin_dock_widget("colloidcg", "Model")
    widget.load_model(path)
    return widget


def video_results_layers(folder: Path, label: str | None = None) -> tuple[list[tuple], Path | None]:
    """LayerData of one video's batch results (OUT/<video>/): the video (lazily, when
    its file is still where tracking read it), its tracks, D2min, events and rollout;
    and the model folder or bundle to load into the Model widget (or None)."""
    from colloidcg.outputs import read_table

    label = label or folder.name
    out: list[tuple] = []
    tracks_path = folder / "track" / "tracks.parquet"
    _, meta = read_table(tracks_path)
    vpath = ((meta.get("inputs") or {}).get("video") or (meta.get("video") or {}).get("path"))
    if vpath and Path(vpath).exists():
        try:
            from colloidcg.io import open_video

            out.append(video_layer_data(open_video(vpath), name=label))
        except Exception as exc:   # moved or unreadable: the results still open
            _notify(f"colloidcg: the video {vpath} of {folder} cannot be opened ({exc}); "
                    "showing the results alone")
    elif vpath:
        _notify(f"colloidcg: the video {vpath} of {folder} is not there any more; showing the results alone")
    tracks_name = f"{label} tracks"
    out += table_layers(tracks_path, name=label)
    rd = folder / "rearrangements"
    if (rd / "rearrangements.parquet").is_file():
        out += table_layers(rd / "rearrangements.parquet", name=label, source=tracks_name)
        for lay in out[-1:]:
            lay[1]["visible"] = False
    if (rd / "events.parquet").is_file():
        out += table_layers(rd / "events.parquet", name=label)
    sim = folder / "evaluate" / "sim.parquet"
    if sim.is_file():
        for lay in table_layers(sim, name=label):
            lay[1]["visible"] = False
            out.append(lay)
    model = None
    for cand in (folder / "export" / "bundle", folder / "train"):
        if _is_model_dir(cand):
            model = cand
            break
    return out, model


def _results_reader(p: Path) -> Callable | None:
    """A reader for colloidcg's outputs at ``p`` (None when ``p`` is none of them)."""
    if p.is_file() and p.suffix.lower() == ".parquet":
        layers = table_layers(p)      # errors: raised here, reported by the caller

        def read_table_file(_path=None):
            return layers
        return read_table_file
    if not p.is_dir():
        return None
    if _is_model_dir(p):
        def read_model(_path=None):
            load_model_into_widget(p)
            return [(None,)]
        return read_model
    folder, note = None, None
    if _is_video_results(p):
        folder = p
    elif _is_batch_out(p):
        videos = sorted({q.parent.parent for q in p.rglob("track/tracks.parquet")})
        folder = videos[0]
        if len(videos) > 1:
            note = (f"colloidcg: {p} holds the results of {len(videos)} videos; opened "
                    f"{folder.relative_to(p)} (open another one's folder to see it)")
    if folder is None:
        return None
    label = folder.name if folder != p else p.name
    layers, model = video_results_layers(folder, label)

    def read_results(_path=None):
        if note:
            _notify(note)
        if model is not None:
            load_model_into_widget(model)
        return layers
    return read_results
