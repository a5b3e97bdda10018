"""The lazy :class:`Video` and its :class:`VideoMeta`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ParameterError, VideoError
from .config import find_config, read_config
from .readers import TIFF_AXIS_ROLES, spec_for


@dataclass(frozen=True)
class VideoMeta:
    """What is known about a video, and where each calibration value came from.

    Attributes
    ----------
    path : Path
        The file (or folder of frames).
    format : str
        The format's name in the table of formats (:func:`colloidcg.io.readers.backends`):
        "tiff", "movie", "image folder" or "cine" as shipped.
    n_frames : int
        Number of frames T.
    frame_shape : tuple of int
        (Y, X) for 2D video, (Z, Y, X) for stacks, in pixels.
    dtype : numpy.dtype
        Pixel type as stored (greyscale).
    fps : float or None
        Frames per second.
    um_per_px : float or None
        Lateral pixel size in micrometres.
    um_per_slice : float or None
        Distance between z slices in micrometres (stacks only).
    timestamps : ndarray of shape (T,) or None
        Per-frame times in seconds from the first frame, when the file records them
        (movies: the decoded presentation timestamps; Phantom .cine: the camera's stamps).
        :attr:`Video.times` gives times for every video.
    sources : dict
        For each of fps, um_per_px, um_per_slice: "file", "colloidcg.toml (<path>)",
        "flag" or "unknown". For a movie, fps from "file" is the median step of its
        frame timestamps.
    config : dict
        The parsed colloidcg.toml that applies to this video (empty when none).
    header : dict
        What a movie container's header claims ("n_frames", "fps"), kept to be reported
        when it disagrees with the decoded frames; empty for other formats.
    notes : tuple of str
        How the file was interpreted where it could have been read otherwise (a TIFF axis
        read as time, a movie header that disagrees with its frames), for ``info``.
    """

    path: Path
    format: str
    n_frames: int
    frame_shape: tuple[int, ...]
    dtype: np.dtype
    fps: float | None = None
    um_per_px: float | None = None
    um_per_slice: float | None = None
    timestamps: np.ndarray | None = None
    sources: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def ndim(self) -> int:
        """Spatial dimension of a frame: 2 or 3."""
        return len(self.frame_shape)

    @property
    def dt(self) -> float | None:
        """Seconds between frames (from fps)."""
        return None if not self.fps else 1.0 / self.fps

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary, as saved in output sidecars."""
        return {
            "path": str(self.path), "format": self.format, "n_frames": self.n_frames,
            "frame_shape": list(self.frame_shape), "dtype": str(self.dtype), "fps": self.fps,
            "um_per_px": self.um_per_px, "um_per_slice": self.um_per_slice,
            "sources": dict(self.sources),
            # only where the file was read otherwise than it claims (movie header, TIFF axis)
            **({"header": dict(self.header)} if self.header and self.notes else {}),
            **({"notes": list(self.notes)} if self.notes else {}),
        }


def _open_backend(spec, path: Path, **options):
    """``spec.reader(path, ...)`` with those of ``options`` that are set and that the
    format's table entry lists as its reader's."""
    return spec.reader(path, **{k: v for k, v in options.items()
                                if v is not None and k in spec.options})


class Video:
    """A video whose frames are read on demand.

    ``video[i]`` returns frame ``i`` as an array of shape (Y, X) (or (Z, Y, X) for stacks),
    greyscale, in the file's dtype; ``len(video)`` is the number of frames; iteration
    yields frames in order. Nothing but the header is read when the video is opened, so a
    10 GB file costs no memory. A Video pickles by path, so worker processes reopen it.
    """

    def __init__(self, path: str | Path, fps: float | None = None, um_per_px: float | None = None,
                 config_root: str | Path | None = None, tiff_axis: str | None = None):
        self._args = (path, fps, um_per_px, config_root, tiff_axis)
        path = Path(path)
        if not path.exists():
            raise VideoError(f"{path}: no such file or folder")
        for name, val in (("fps", fps), ("um_per_px", um_per_px)):
            if val is not None and not (np.isfinite(val) and val > 0):
                raise ParameterError(f"{name} must be a positive number, got {val}")
        if tiff_axis is not None and tiff_axis not in TIFF_AXIS_ROLES:
            raise ParameterError(f"tiff_axis must be one of {', '.join(TIFF_AXIS_ROLES)} "
                                 f"({', '.join(TIFF_AXIS_ROLES.values())}), got {tiff_axis!r}")
        cfg_path = find_config(path, config_root)
        config = read_config(cfg_path) if cfg_path else {}
        cal_cfg = config.get("calibration", {})
        spec = spec_for(path)
        self._backend = _open_backend(spec, path, tiff_axis=tiff_axis or cal_cfg.get("tiff_axis"))
        b = self._backend
        if b.n_frames < 1:
            raise VideoError(f"{path}: contains no frames")
        first = b.read(0)
        if first.size == 0:
            raise VideoError(f"{path}: frames are empty (shape {first.shape})")
        # Reading the last frame now catches truncated files before any work starts.
        if b.n_frames > 1:
            b.read(b.n_frames - 1)
        values, sources = {}, {}
        flags = {"fps": fps, "um_per_px": um_per_px, "um_per_slice": None}
        for key in ("fps", "um_per_px", "um_per_slice"):
            if flags[key] is not None:
                values[key], sources[key] = float(flags[key]), "flag"
            elif b.native.get(key):
                values[key], sources[key] = float(b.native[key]), "file"
            elif key in cal_cfg:
                values[key], sources[key] = cal_cfg[key], f"{cfg_path.name} ({cfg_path})"
            else:
                values[key], sources[key] = None, "unknown"
        header = {k: v for k, v in (b.native.get("header") or {}).items() if v}
        notes = list(getattr(b, "notes", ()))
        if header.get("n_frames") and header["n_frames"] != b.n_frames:
            notes.append(f"the container header claims {header['n_frames']} frames; "
                         f"{b.n_frames} frames decode")
        if header.get("fps") and b.native.get("fps") and abs(header["fps"] / b.native["fps"] - 1) > 0.01:
            notes.append(f"the container header claims {header['fps']:g} fps; the frame "
                         f"timestamps give {b.native['fps']:.6g} fps (median step)")
        if tiff_axis and "tiff_axis" in spec.options:
            sources["tiff_axis"] = "flag"
        elif cal_cfg.get("tiff_axis") and "tiff_axis" in spec.options:
            sources["tiff_axis"] = f"{cfg_path.name} ({cfg_path})"
        self.meta = VideoMeta(path=path, format=spec.name, n_frames=b.n_frames,
                              frame_shape=tuple(first.shape), dtype=np.dtype(first.dtype),
                              timestamps=b.native.get("timestamps"), sources=sources,
                              config=config, header=header, notes=tuple(notes), **values)

    # -- sequence protocol -------------------------------------------------
    def __len__(self) -> int:
        return self.meta.n_frames

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.meta.path}: frame {i} is outside 0..{n - 1}")
        return self._backend.read(i)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    @property
    def times(self) -> np.ndarray | None:
        """Time of every frame in seconds from the first: the file's per-frame timestamps
        (movies, .cine) unless the frame rate was stated by flag, else frame / fps; None
        when neither is known."""
        m = self.meta
        if m.timestamps is not None and m.sources.get("fps") != "flag":
            return np.asarray(m.timestamps, dtype=np.float64)
        if m.fps:
            return np.arange(m.n_frames) / m.fps
        return None

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self.meta.frame_shape

    @property
    def dtype(self) -> np.dtype:
        return self.meta.dtype

    @property
    def path(self) -> Path:
        return self.meta.path

    def to_dask(self):
        """A lazy dask array of shape (T, *frame_shape), one chunk per frame."""
        import dask
        import dask.array as da

        read = dask.delayed(self.__getitem__, pure=True)
        frames = [da.from_delayed(read(i), shape=self.frame_shape, dtype=self.dtype)
                  for i in range(len(self))]
        return da.stack(frames)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        # the metadata (and a movie's frame index) travel along: a worker reopens the file
        # without scanning or validating it again
        return {"args": self._args, "meta": self.meta,
                "index": getattr(self._backend, "index", None)}

    def __setstate__(self, state):
        args = state["args"]
        meta, index = state.get("meta"), state.get("index")
        if meta is None:
            self.__init__(*args)
            return
        self._args = args
        path = Path(args[0])
        tiff_axis = args[4] if len(args) > 4 else None
        cal = (meta.config or {}).get("calibration", {})
        self._backend = _open_backend(spec_for(path), path, index=index,
                                      tiff_axis=tiff_axis or cal.get("tiff_axis"))
        if self._backend.n_frames != meta.n_frames:
            raise VideoError(f"{path}: the file changed since it was opened "
                             f"({meta.n_frames} frames then, {self._backend.n_frames} now)")
        self.meta = meta

    def __repr__(self) -> str:
        m = self.meta
        return (f"<Video {m.path.name}: {m.n_frames} frames of {'x'.join(map(str, m.frame_shape))} "
                f"{m.dtype}, fps={m.fps}, um_per_px={m.um_per_px}>")


def open_video(path: str | Path, fps: float | None = None, um_per_px: float | None = None,
               config_root: str | Path | None = None, tiff_axis: str | None = None) -> Video:
    """Open a video lazily.

    Parameters
    ----------
    path : str or Path
        A .avi/.mp4/.mov file, a multi-page .tif/.tiff (8 or 16 bit, (T, Y, X) or a
        (T, Z, Y, X) hyperstack), a folder of .png/.tif frames, or a Phantom .cine file:
        every format in the table of :func:`colloidcg.io.readers.backends`, which decides
        which back-end reads the path (a folder: the folder formats; a file: by its ending).
    fps, um_per_px : float, optional
        Calibration given by the user. They take precedence over what the file records
        and over ``colloidcg.toml`` (a user who states a value means it); without them the
        file's own metadata is used, then the nearest ``colloidcg.toml``.
    config_root : path, optional
        Look for ``colloidcg.toml`` in every folder from the video's up to this one (batch
        use); by default only beside the video.
    tiff_axis : {"T", "Z", "C"}, optional
        For a TIFF stack with a single non-spatial axis: read it as time ("T", frames),
        as one z stack ("Z", a single 3D frame) or as channels ("C", channel 0 is read).
        By default the file's label decides, except that a "channel" axis with more than
        4 entries and no channel metadata is read as time, and one with 2-4 entries and no
        channel metadata is refused as ambiguous. Falls back to ``tiff_axis`` in the
        ``[calibration]`` table of ``colloidcg.toml``; ignored for other files and for
        hyperstacks with several labelled axes.

    Raises
    ------
    VideoError
        The file is missing, of an unknown kind, corrupt, truncated or has no frames.
    """
    return Video(path, fps=fps, um_per_px=um_per_px, config_root=config_root, tiff_axis=tiff_axis)
