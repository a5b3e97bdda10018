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

#: File endings the reader is offered for (folders of frames are offered too).
VIDEO_EXTS = (".tif", ".tiff", ".avi", ".mp4", ".mov", ".mkv", ".m4v", ".cine")


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
    """Return a reader for ``path`` or None when it is not a video colloidcg can open.

    Never raises: a file with a video ending that cannot be opened (corrupt, truncated,
    empty) gives a napari warning with the one-line reason and None.
    """
    try:
        if isinstance(path, (list, tuple)):
            if len(path) != 1:
                return None
            path = path[0]
        p = Path(path)
        if not (p.is_dir() or p.suffix.lower() in VIDEO_EXTS):
            return None
        from colloidcg.io import open_video

        video = open_video(p)
    except Exception as exc:   # reader contract: never raise
        from colloidcg.errors import ColloidcgError

        msg = str(exc) if isinstance(exc, ColloidcgError) else f"{path}: {exc.__class__.__name__}: {exc}"
        _notify(f"colloidcg cannot open the video: {msg}")
        return None

    def read(_path=None) -> list[tuple]:
        return [video_layer_data(video)]

    return read
