"""Format back-ends behind :func:`colloidcg.io.open_video`, and the table that lists them.

Each back-end opens a file lazily and offers ``n_frames``, ``read(i)`` (one frame as a
numpy array, (Y, X) or (Z, Y, X), greyscale, native dtype), ``native`` calibration
(whatever the file itself records: fps, um_per_px, timestamps; for movies also "header",
the container header's claims), ``is_stack``, ``dtype`` and ``close()``. Errors are raised
as :class:`colloidcg.errors.VideoError` with the path in the message.

Which back-end reads what is declared once, in the table at the end of this module
(:class:`BackendSpec` entries, see :func:`backends`): ``open_video``, batch discovery,
``colloidcg info`` and the napari reader all read it. Adding a format is one back-end
class and one entry there (or :func:`register_backend` at run time).
"""

from __future__ import annotations

import logging
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import VideoError

# File endings tifffile decodes (TIFF stacks; TIFF frames in a folder of frames).
_TIFFFILE_EXTS = (".tif", ".tiff")

# Length units as ImageJ/OME write them, in micrometres.
_UNIT_UM = {"micron": 1.0, "microns": 1.0, "um": 1.0, "µm": 1.0, "\u00b5m": 1.0, "\\u00B5m": 1.0,
            "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6,
            "micrometer": 1.0}


def to_grey(frame: np.ndarray) -> np.ndarray:
    """Collapse a trailing RGB(A) axis to luminance (ITU-R 601 weights), keeping dtype."""
    if frame.ndim >= 3 and frame.shape[-1] in (3, 4):
        rgb = frame[..., :3].astype(np.float64)
        grey = rgb @ np.array([0.299, 0.587, 0.114])
        if np.issubdtype(frame.dtype, np.integer):
            grey = np.rint(grey)
        return grey.astype(frame.dtype)
    return frame


def natural_key(name: str):
    """Sort key that orders ``f2`` before ``f10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class TiffBackend:
    """Multi-page TIFF: (T, Y, X) or (T, Z, Y, X) stacks, 8/16-bit, ImageJ or OME metadata.

    Pages are read one frame at a time. A stack whose only non-spatial axis is Z (ImageJ's
    default when nobody set "frames") is read as a time series: 2D video is the common case.
    A (T, Z, Y, X) hyperstack gives 3D frames. With a channel axis, channel 0 is used.
    """

    kind = "tiff"

    def __init__(self, path: Path, tiff_axis: str | None = None):
        import tifffile

        self.path = path
        if tiff_axis is not None and tiff_axis not in TIFF_AXIS_ROLES:
            raise VideoError(f"{path}: tiff_axis must be one of {', '.join(TIFF_AXIS_ROLES)}, "
                             f"got {tiff_axis!r}")
        self._tiff_axis = tiff_axis
        self.notes: list[str] = []
        # tifffile logs damaged structures as warnings and carries on with what it can
        # read; the checks in _open turn that into one clear error, so its log is muted.
        log = logging.getLogger("tifffile")
        level = log.level
        log.setLevel(logging.CRITICAL)
        try:
            self._open(tifffile, path)
        finally:
            log.setLevel(level)

    def _open(self, tifffile, path: Path) -> None:
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            axes, shape = series.axes, series.shape
        except Exception as exc:
            raise VideoError(f"{path}: not a readable TIFF ({exc})") from None
        plane = "Y" in axes and "X" in axes and axes.index("X") == axes.index("Y") + 1
        if not plane:
            raise VideoError(f"{path}: TIFF axes {axes!r} have no Y, X image plane")
        # RGB(A) samples either follow X (contiguous) or precede Y (separate planes)
        self._planar = "S" in axes and axes.index("S") < axes.index("Y")
        other = [(a, n) for a, n in zip(axes, shape) if a not in "YXS"]
        n_pages = int(np.prod([n for _, n in other])) if other else 1
        ij = self._tif.imagej_metadata if self._tif.is_imagej else None
        declared = int((ij or {}).get("images", 0) or 0)
        if declared > n_pages:
            # tifffile falls back to the readable pages of a cut ImageJ file (with a warning)
            raise VideoError(f"{path}: truncated or corrupt ImageJ TIFF: its header declares "
                             f"{declared} images but only {n_pages} can be read")
        index = np.arange(n_pages).reshape([n for _, n in other] or [1])
        names = [a for a, _ in other] or ["T"]
        if len(other) == 1:
            role = self._single_axis_role(other[0][0], other[0][1], ij)
            names = [role]
            if role == "Z":     # one z stack: a single 3D frame
                index = index.reshape(1, -1)
                names = ["T", "Z"]
        # Select channel 0 of any channel axis.
        for ax in ("C",):
            if ax in names:
                index = np.take(index, 0, axis=names.index(ax))
                names.remove(ax)
        time_like = [a for a in names if a in "TIQ"]
        if "Z" in names and time_like:
            index = np.moveaxis(index, [names.index(time_like[0]), names.index("Z")], [0, 1])
            index = index.reshape(index.shape[0], index.shape[1], -1)[:, :, 0]
        else:
            index = index.reshape(-1, 1)
        self._pages_of = index            # (T, Z) page numbers
        self.is_stack = index.shape[1] > 1
        self._samples = "S" in axes
        self._page_shape = shape[axes.index("Y")], shape[axes.index("X")]
        self.n_frames = index.shape[0]
        self.dtype = np.dtype(series.dtype)
        self._page_count = len(self._tif.pages)
        if self._page_count < n_pages:
            # A single-IFD ImageJ file (>4 GB) or a truncated one: fall back to a memory map.
            try:
                self._mm = series.asarray(out="memmap")
            except Exception as exc:
                raise VideoError(f"{path}: truncated TIFF: {self._page_count} pages for "
                                 f"{n_pages} expected ({exc})") from None
        else:
            self._mm = None
        self.native = self._read_calibration()

    def _single_axis_role(self, axis: str, n: int, ij: dict | None) -> str:
        """What the stack's only non-spatial axis is: "T" (frames), "Z" (one z stack) or
        "C" (channels, of which channel 0 is read)."""
        choose = ("choose T (frames), Z (one z stack) or C (channels, channel 0 is read) with "
                  "--tiff-axis, open_video(tiff_axis=...) or tiff_axis in [calibration] of "
                  "colloidcg.toml")
        if self._tiff_axis is not None:
            if self._tiff_axis != axis:
                self.notes.append(f"axis {axis} ({n} entries) read as {self._tiff_axis} "
                                  f"({TIFF_AXIS_ROLES[self._tiff_axis]}), as chosen by tiff_axis")
            return self._tiff_axis
        if axis != "C":
            if axis == "Z":
                self.notes.append(f"axis Z ({n} entries) read as T (time): a stack whose only "
                                  f"axis is Z is ImageJ's default; tiff_axis='Z' reads one z stack")
            return "T"
        if _has_channel_metadata(self._tif, ij):
            return "C"
        if n > 4:
            self.notes.append(f"axis C ({n} entries, more than a colour image has, no channel "
                              f"metadata) read as T (time)")
            return "T"
        raise VideoError(f"{self.path}: the stack's only non-spatial axis is C (channels) with "
                         f"{n} entries and no channel metadata, so it may be {n} colour channels "
                         f"or {n} frames; {choose}")

    def read(self, i: int) -> np.ndarray:
        pages = self._pages_of[i]
        try:
            if self._mm is not None:
                flat = self._mm.reshape(-1, *self._mm.shape[-(3 if self._samples else 2):])
                planes = [np.asarray(flat[p]) for p in pages]
            else:
                planes = [self._tif.pages[int(p)].asarray() for p in pages]
        except Exception as exc:
            raise VideoError(f"{self.path}: frame {i} cannot be read, the file may be truncated "
                             f"or corrupt ({exc.__class__.__name__}: {exc})") from None
        if self._planar:
            planes = [np.moveaxis(p, -3, -1) for p in planes]
        planes = [to_grey(p) for p in planes]
        return planes[0] if not self.is_stack else np.stack(planes)

    def _read_calibration(self) -> dict[str, Any]:
        tif = self._tif
        out: dict[str, Any] = {}
        ij = tif.imagej_metadata or {}
        page = tif.pages[0]
        if ij:
            if ij.get("finterval"):
                out["fps"] = 1.0 / float(ij["finterval"])
            elif ij.get("fps"):
                out["fps"] = float(ij["fps"])
            scale = _UNIT_UM.get(str(ij.get("unit", "")).strip())
            res = page.tags.get("XResolution")
            if scale and res is not None:
                num, den = res.value
                if num > 0 and den > 0:
                    out["um_per_px"] = scale * den / num
            if scale and self.is_stack and ij.get("spacing"):
                out["um_per_slice"] = scale * float(ij["spacing"])
        elif tif.is_ome and tif.ome_metadata:
            out.update(_ome_calibration(tif.ome_metadata))
        return out

    def close(self) -> None:
        self._tif.close()


#: Values of ``tiff_axis``: what a stack's only non-spatial axis holds.
TIFF_AXIS_ROLES = {"T": "time", "Z": "one z stack", "C": "channels"}


def _has_channel_metadata(tif, ij: dict | None) -> bool:
    """Whether the file says more about its channels than their number: ImageJ colour
    tables, display ranges or a composite/colour mode; OME channel names or colours."""
    if ij:
        keys = {str(k).lower() for k in ij}
        if keys & {"luts", "ranges", "lut"}:
            return True
        if str(ij.get("mode", "")).lower() in ("composite", "color", "colour"):
            return True
        return False
    if tif.is_ome and tif.ome_metadata:
        try:
            root = ET.fromstring(tif.ome_metadata)
        except ET.ParseError:
            return False
        for el in root.iter():
            if el.tag.endswith("Channel") and set(el.attrib) & {
                    "Name", "Color", "EmissionWavelength", "ExcitationWavelength", "Fluor"}:
                return True
    return False


def _ome_calibration(xml: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return out
    for el in root.iter():
        if el.tag.endswith("Pixels"):
            a = el.attrib
            if "PhysicalSizeX" in a:
                out["um_per_px"] = float(a["PhysicalSizeX"]) * _UNIT_UM.get(a.get("PhysicalSizeXUnit", "µm"), 1.0)
            if "PhysicalSizeZ" in a:
                out["um_per_slice"] = float(a["PhysicalSizeZ"]) * _UNIT_UM.get(a.get("PhysicalSizeZUnit", "µm"), 1.0)
            if a.get("TimeIncrement"):
                t = float(a["TimeIncrement"])
                if a.get("TimeIncrementUnit", "s") == "ms":
                    t *= 1e-3
                if t > 0:
                    out["fps"] = 1.0 / t
            break
    return out


class FolderBackend:
    """A folder of single-frame images (.png, .tif, .jpg, .bmp), in natural sort order."""

    kind = "image folder"

    def __init__(self, path: Path):
        # the frame endings are this format's entry in the table (a subclass registered
        # under another name reads the endings of its own entry)
        frame_exts = backend_spec(self.kind).extensions
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in frame_exts
                 and not p.name.startswith(".")]
        if not files:
            raise VideoError(f"{path}: folder holds no image frames "
                             f"(expected files ending in {', '.join(frame_exts)})")
        exts = {p.suffix.lower() for p in files}
        if len(exts) > 1 and not exts <= set(_TIFFFILE_EXTS):
            raise VideoError(f"{path}: folder mixes image types {sorted(exts)}; expected one kind of frame")
        self.path = path
        self.files = sorted(files, key=lambda p: natural_key(p.name))
        self.n_frames = len(self.files)
        self.is_stack = False
        first = self.read(0)
        self._shape, self.dtype = first.shape, first.dtype
        self.native: dict[str, Any] = {}

    def read(self, i: int) -> np.ndarray:
        f = self.files[i]
        try:
            if f.suffix.lower() in _TIFFFILE_EXTS:
                import tifffile
                img = tifffile.imread(f)
            else:
                import imageio.v3 as iio
                img = iio.imread(f)
        except Exception as exc:
            raise VideoError(f"{f}: cannot read image frame ({exc.__class__.__name__}: {exc})") from None
        img = to_grey(np.asarray(img))
        if img.ndim != 2:
            raise VideoError(f"{f}: expected a 2D greyscale or RGB image, got shape {img.shape}")
        if i and img.shape != self._shape:
            raise VideoError(f"{f}: frame shape {img.shape} differs from the first frame's {self._shape}")
        return img

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class MovieIndex:
    """Where every decoded frame of a movie stream sits in time.

    pts : (T,) int64, the presentation timestamps of the decoded frames in display order,
        in units of ``time_base``; frame ``i`` is the one whose timestamp is ``pts[i]``.
    key : (T,) bool, frames that start a decodable run (keyframes).
    seek : (T,) int64, the timestamp to seek to for a keyframe (its decoding timestamp,
        which the demuxers' seek tables use); for other frames, unused.
    time_base : Fraction, seconds per timestamp unit.
    method : "container index", "packets" or "decoded": how the index was made.
    """

    pts: np.ndarray
    key: np.ndarray
    seek: np.ndarray
    time_base: Fraction
    method: str

    @property
    def times(self) -> np.ndarray:
        """Seconds from the first frame."""
        return (self.pts - self.pts[0]).astype(np.float64) * float(self.time_base)


# Indexes made in this process, by (path, size, mtime): reopening a movie (a worker process
# that unpickles a Video, a batch stage after discovery) does not scan it again.
_INDEX_CACHE: dict[tuple, MovieIndex] = {}
_INDEX_CACHE_MAX = 64


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _valid_index(pts, key) -> bool:
    return len(pts) > 0 and bool(key[0]) and bool(np.all(np.diff(pts) > 0))


class MovieBackend:
    """AVI / MP4 / MOV / MKV through PyAV (FFmpeg), decoded on demand.

    Frames are indexed by their decoded presentation timestamps, found once at open:
    from the container's own sample table where it lists every frame and frames are not
    reordered (MP4/MOV/AVI without B-frames: nothing is read), else by demuxing the
    packets without decoding them, else (packets without timestamps, duplicated
    timestamps, edit lists that discard frames) by decoding the stream once. The
    number of frames is what the stream decodes to, whatever the header claims; each
    frame's time is its timestamp; fps is the median timestamp step.

    Reading in order continues the running decoder. Any other read seeks to the
    keyframe at or before the wanted frame's timestamp and decodes forward to exactly
    that timestamp, so a frame is the same whatever was read before.
    """

    kind = "movie"

    def __init__(self, path: Path, index: MovieIndex | None = None):
        import av

        self.path = path
        try:
            self._container = av.open(str(path))
            self._stream = self._container.streams.video[0]
        except Exception as exc:
            raise VideoError(f"{path}: not a readable video ({exc.__class__.__name__}: {exc})") from None
        s = self._stream
        rate = s.average_rate or s.guessed_rate or s.base_rate
        header_fps = float(rate) if rate else None
        header_n = int(s.frames or 0)
        if not header_n and s.duration and rate and s.time_base:
            header_n = int(round(float(s.duration * s.time_base * rate)))
        self._lock = threading.RLock()
        self._decoder = None
        self._next = -1              # the frame the running decoder gives next
        self._last: tuple[int, np.ndarray] | None = None
        key = _file_key(path)
        if index is None:
            index = _INDEX_CACHE.get(key)
        if index is None:
            index = self._make_index()
            if len(_INDEX_CACHE) >= _INDEX_CACHE_MAX:
                _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
            _INDEX_CACHE[key] = index
        self._use(index)
        self.n_frames = len(index.pts)
        self.is_stack = False
        self.dtype = np.dtype(np.uint8)
        native: dict[str, Any] = {"timestamps": index.times,
                                  "header": {"n_frames": header_n or None, "fps": header_fps}}
        if self.n_frames > 1:
            step = Fraction(float(np.median(np.diff(index.pts)))) * index.time_base
            native["fps"] = float(1 / step)
        elif header_fps:
            native["fps"] = header_fps
        self.native = native

    # -- the index -----------------------------------------------------------------
    def _make_index(self) -> MovieIndex:
        s = self._stream
        tb = Fraction(s.time_base) if s.time_base else Fraction(1, 1)
        fmt = self._container.format.name or ""
        reorder = bool(getattr(s.codec_context, "has_b_frames", 0))
        try:
            cand = self._container_index(tb, fmt, reorder)
            if cand is not None and self._agrees(cand):
                return cand
            cand, key_dts = self._packet_index(tb, fmt, reorder)
            if cand is not None and self._agrees(cand):
                return cand
        except VideoError:
            raise
        except Exception as exc:
            raise VideoError(f"{self.path}: cannot read the video stream, the file may be truncated "
                             f"or corrupt ({exc.__class__.__name__}: {exc})") from None
        return self._decode_index(tb, key_dts)

    def _container_index(self, tb, fmt, reorder) -> MovieIndex | None:
        """The container's own table of frames (MP4/MOV sample table, AVI idx1): read at
        open, nothing else is read. Its timestamps are decoding times, so only for
        streams without reordered frames."""
        if reorder or not ("mp4" in fmt or "mov" in fmt or fmt == "avi") or not self._whole_file(fmt):
            return None
        entries = [e for e in self._stream.index_entries if e.size > 0]
        if not entries or any(e.is_discard for e in entries):
            return None
        if max(e.pos + e.size for e in entries) > self.path.stat().st_size:
            return None
        pts = np.array([e.timestamp for e in entries], np.int64)
        key = np.array([e.is_keyframe for e in entries], bool)
        return MovieIndex(pts, key, pts.copy(), tb, "container index") if _valid_index(pts, key) else None

    def _packet_index(self, tb, fmt, reorder) -> tuple[MovieIndex | None, dict[int, int]]:
        """Every packet's timestamps, demuxed without decoding."""
        rows = []
        # AVI stores no presentation times: with reordered (B-) frames its packets'
        # timestamps are decoding times, which the decoded frames do not keep
        usable = not (reorder and fmt == "avi")
        last_corrupt = False
        self._container.seek(0)
        for pkt in self._container.demux(self._stream):
            if not pkt.size:
                continue
            last_corrupt = bool(pkt.is_corrupt)
            ts = pkt.pts if pkt.pts is not None else (pkt.dts if not reorder else None)
            if ts is None or pkt.is_discard or pkt.is_corrupt:
                usable = False
            rows.append((ts if ts is not None else -1,
                         pkt.dts if pkt.dts is not None else (ts if ts is not None else -1),
                         bool(pkt.is_keyframe)))
        self._container.seek(0)
        if last_corrupt:
            raise VideoError(f"{self.path}: the last frame's data is cut short after {len(rows) - 1} "
                             f"frames: the file is truncated")
        key_dts = {r[0]: r[1] for r in rows if r[2] and r[0] >= 0}
        if usable and rows:
            order = np.argsort([r[0] for r in rows], kind="stable")
            pts = np.array([rows[k][0] for k in order], np.int64)
            key = np.array([rows[k][2] for k in order], bool)
            seek = np.array([rows[k][1] for k in order], np.int64)
            if _valid_index(pts, key):
                return MovieIndex(pts, key, seek, tb, "packets"), key_dts
        return None, key_dts

    def _agrees(self, index: MovieIndex) -> bool:
        """Check an index made without decoding against the decoder: the first frame, and
        every frame from the last keyframe to the end, must be there with those times."""
        self._use(index)
        try:
            self.read(0)
            keys = np.flatnonzero(index.key)
            k = int(keys[-1])
            self.read(k)
            tail = [int(index.pts[k])] + [f.pts for f in self._decoder]
            ok = [t for t in tail if t is not None and t >= index.pts[k]] == index.pts[k:].tolist()
        except Exception:
            ok = False
        self._decoder, self._last, self._next = None, None, -1
        self._container.seek(0)
        return ok

    def _use(self, index: MovieIndex) -> None:
        self.index = index
        self._keys = np.flatnonzero(index.key)

    def _whole_file(self, fmt: str) -> bool:
        """False for an AVI shorter than its RIFF header says (cut off: no frame index)."""
        if fmt != "avi":
            return True
        with open(self.path, "rb") as fh:
            head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF":
            return False
        return int.from_bytes(head[4:8], "little") + 8 <= self.path.stat().st_size

    def _decode_index(self, tb: Fraction, key_dts: dict[int, int]) -> MovieIndex:
        """Decode the whole stream once. Frames whose timestamps are missing or out of
        order (B-frames in AVI) are numbered in output order instead ("decoded order")."""
        pts, key, seek = [], [], []
        try:
            self._container.seek(0)
            for frame in self._container.decode(self._stream):
                pts.append(frame.pts)
                dts = key_dts.get(frame.pts) if frame.key_frame and frame.pts is not None else None
                key.append(dts is not None)
                seek.append(-1 if dts is None else dts)
            self._container.seek(0)
        except Exception as exc:
            raise VideoError(f"{self.path}: frame {len(pts)} cannot be decoded, the file may be "
                             f"truncated or corrupt ({exc.__class__.__name__}: {exc})") from None
        n = len(pts)
        if not n:
            return MovieIndex(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64), tb,
                              "decoded")
        key[0], seek[0] = True, -1
        arr = np.array([-1 if p is None else p for p in pts], np.int64)
        if any(p is None for p in pts) or not np.all(np.diff(arr) > 0):
            # no usable timestamps: frame k is the k-th frame the decoder puts out, at k / rate
            rate = self._stream.average_rate or self._stream.guessed_rate
            tb = Fraction(1, 1) / Fraction(rate) if rate else Fraction(1, 1)
            return MovieIndex(np.arange(n, dtype=np.int64), np.array(key), np.array(seek, np.int64),
                              tb, "decoded order")
        return MovieIndex(arr, np.array(key), np.array(seek, np.int64), tb, "decoded")

    # -- reading -------------------------------------------------------------------
    def _restart(self, k: int, target: int = -1) -> None:
        """Put the decoder at keyframe number ``k`` of the index by seeking to timestamp
        ``target`` (k = 0 or a negative target: the stream start)."""
        if target < 0 or k <= 0:
            self._container.seek(0)
            k = 0
        else:
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        self._decoder = self._container.decode(self._stream)
        self._count = k          # output number of the next frame ("decoded order" index)
        self._fresh = k > 0      # the first frame out after a seek must be that keyframe

    def read(self, i: int) -> np.ndarray:
        with self._lock:         # one decoder: dask's threads take turns
            return self._read(i)

    def _read(self, i: int) -> np.ndarray:
        if self._last is not None and self._last[0] == i:
            return self._last[1].copy()
        want = int(self.index.pts[i])
        try:
            if self._decoder is not None and i == self._next:
                frame = self._pull(want)
                if frame is not None:
                    return self._keep(i, frame)
            # seek to the last keyframe at or before the wanted frame; if the demuxer lands
            # after it, step back one keyframe at a time (finally: from the start)
            for k, target in self._seek_plan(i):
                self._restart(k, target)
                frame = self._pull(want)
                if frame is not None:
                    return self._keep(i, frame)
        except VideoError:
            raise
        except Exception as exc:
            self._decoder = None
            raise VideoError(f"{self.path}: frame {i} cannot be decoded, the file may be truncated "
                             f"or corrupt ({exc.__class__.__name__}: {exc})") from None
        self._decoder = None
        raise VideoError(f"{self.path}: frame {i} (time {self.index.times[i]:.6g} s) cannot be "
                         f"decoded: the stream ends or skips it; the file may be truncated")

    def _seek_plan(self, i: int) -> list[tuple[int, int]]:
        """Where to seek from for frame ``i``: the last keyframe at or before it, by its
        presentation time (what the MP4 and Matroska demuxers seek by) then by its decoding
        time (AVI); if the demuxer lands past the frame, the keyframes before; the start."""
        idx = self.index
        plan = []
        for k in self._keys[self._keys <= i][::-1][:3]:
            k = int(k)
            if k == 0:
                break
            if idx.method != "decoded order":
                plan.append((k, int(idx.pts[k])))
            if idx.seek[k] >= 0 and (idx.method == "decoded order" or idx.seek[k] != idx.pts[k]):
                plan.append((k, int(idx.seek[k])))
        return plan + [(0, -1)]

    def _pull(self, want: int):
        """Decode forward to the frame whose timestamp is ``want``; None if passed or ended."""
        numbered = self.index.method == "decoded order"
        for frame in self._decoder:
            if numbered and self._fresh and not frame.key_frame:
                return None      # not where the index says: try an earlier keyframe
            self._fresh = False
            ts = self._count if numbered else frame.pts
            self._count += 1
            if ts is None:
                continue
            if ts == want:
                return frame
            if ts > want:
                return None
        return None

    def _keep(self, i: int, frame) -> np.ndarray:
        arr = self._to_array(frame)
        self._next = i + 1
        self._last = (i, arr)
        return arr.copy()

    @staticmethod
    def _to_array(frame) -> np.ndarray:
        fmt = frame.format.name
        if fmt.startswith("gray16"):
            return frame.to_ndarray(format="gray16le")
        return frame.to_ndarray(format="gray")

    def close(self) -> None:
        self._decoder = None
        self._container.close()


class CineBackend:
    """Vision Research Phantom .cine high-speed camera files, through pims."""

    kind = "cine"

    def __init__(self, path: Path):
        import pims

        self.path = path
        try:
            self._reader = pims.Cine(str(path))
            self.n_frames = len(self._reader)
        except Exception as exc:
            raise VideoError(f"{path}: not a readable Phantom .cine file ({exc.__class__.__name__}: {exc})") from None
        self.is_stack = False
        self.dtype = np.dtype(self._reader.pixel_type)
        native: dict[str, Any] = {}
        header_fps = float(getattr(self._reader, "frame_rate", None) or 0.0) or None
        if header_fps:
            native["fps"] = header_fps
        stamps = getattr(self._reader, "frame_time_stamps", None)
        if stamps:
            t = np.array([(d - stamps[0][0]).total_seconds() + (f - stamps[0][1]) for d, f in stamps])
            native["timestamps"] = t
            steps = np.diff(t)
            if len(steps) and np.all(steps > 0):
                # As for movies, the camera's per-frame stamps are the time base: a file
                # saved with a frame skip keeps the recording rate in its header (pims'
                # cine_781.cine: header 90 000 fps, stamps 1/9 000 s apart).
                native["fps"] = 1.0 / float(np.median(steps))
                native["header"] = {"fps": header_fps}
        self.native = native

    def read(self, i: int) -> np.ndarray:
        try:
            return to_grey(np.asarray(self._reader[i]))
        except Exception as exc:
            raise VideoError(f"{self.path}: frame {i} cannot be read, the file may be truncated "
                             f"({exc.__class__.__name__}: {exc})") from None

    def close(self) -> None:
        self._reader.close()


class SeqBackend:
    """NorPix StreamPix .seq sequences (the streaming format of many high-speed and
    machine-vision cameras), through pims: uncompressed monochrome frames of 8, 16 or 32
    bit, each followed by its timestamp (s since the epoch, with ms and, from StreamPix 6,
    us). As for Phantom files the timestamps are the time base, and the header's suggested
    frame rate is kept beside them."""

    kind = "seq"

    def __init__(self, path: Path):
        import pims

        self.path = path
        try:
            self._reader = pims.NorpixSeq(str(path))
            self.n_frames = len(self._reader)
        except Exception as exc:
            raise VideoError(f"{path}: not a readable NorPix .seq file: expected an uncompressed monochrome "
                             f"StreamPix sequence ({exc.__class__.__name__}: {exc})") from None
        if self.n_frames < 1:
            raise VideoError(f"{path}: a NorPix .seq header but no complete frame after it "
                             "(the file is truncated)")
        self.is_stack = False
        self.dtype = np.dtype(self._reader.pixel_type)
        hdr = self._reader.header_dict
        # StreamPix 6 (header version 5 on) puts frames after 8192 header bytes and stamps
        # them with s, ms and us; earlier versions after 1024 bytes, with s and ms.
        offset, micro = (8192, True) if int(hdr["version"]) >= 5 else (1024, False)
        block = int(hdr["true_image_size"])
        self.notes: list[str] = []
        tail = (path.stat().st_size - offset) % block
        if tail:
            self.notes.append(f"{tail} bytes after the last complete frame: the recording may be truncated "
                              f"({self.n_frames} complete frames read)")
        if int(hdr["allocated_frames"]) > self.n_frames:
            self.notes.append(f"the header allocates {hdr['allocated_frames']} frames; the file holds "
                              f"{self.n_frames}")
        native: dict[str, Any] = {}
        header_fps = float(self._reader.frame_rate or 0.0) or None
        if header_fps:
            native["fps"] = header_fps
        t = self._timestamps(path, offset, block, int(hdr["image_size_bytes"]), micro)
        steps = np.diff(t)
        if len(steps) and np.all(steps > 0):
            native["timestamps"] = t - t[0]
            native["fps"] = 1.0 / float(np.median(steps))
            native["header"] = {"fps": header_fps}
        self.native = native

    def _timestamps(self, path: Path, offset: int, block: int, image: int, micro: bool) -> np.ndarray:
        """(n_frames,) s from the first frame, from the integer stamps after each image.
        Read here rather than through pims' float seconds since the epoch, whose
        resolution (0.2 us in 2020s dates) is a few per cent of a 100 kHz camera's step."""
        raw = np.memmap(path, np.uint8, mode="r")
        at = offset + block * np.arange(self.n_frames) + image
        b = raw[at[:, None] + np.arange(8 if micro else 6)].astype(np.int64)
        sec = b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16 | b[:, 3] << 24
        us = (b[:, 4] | b[:, 5] << 8) * 1000 + ((b[:, 6] | b[:, 7] << 8) if micro else 0)
        return ((sec - sec[0]) * 1_000_000 + (us - us[0])) * 1e-6

    def read(self, i: int) -> np.ndarray:
        try:
            return to_grey(np.asarray(self._reader[i]))
        except Exception as exc:
            raise VideoError(f"{self.path}: frame {i} cannot be read ({exc.__class__.__name__}: {exc})") from None

    def close(self) -> None:
        self._reader.close()


class MrawBackend:
    """Photron FASTCAM .mraw high-speed recordings, opened by their .cih / .cihx header
    (the .mraw beside it, with the same name, holds the frames). The header is parsed by
    pyMRAW (``pip install pymraw``); 8- and 16-bit frames are memory-mapped, 12-bit packed
    ones unpacked frame by frame with pyMRAW's decoder. Monochrome only."""

    kind = "mraw"

    def __init__(self, path: Path):
        try:
            import pyMRAW
        except ImportError:
            raise VideoError(f"{path}: reading Photron .cih/.mraw files needs pyMRAW "
                             "(pip install pymraw)") from None
        self.path = path
        try:
            cih = pyMRAW.get_cih(str(path))
            w, h, n = int(cih["Image Width"]), int(cih["Image Height"]), int(cih["Total Frame"])
            bits = int(cih["Color Bit"])
        except Exception as exc:
            raise VideoError(f"{path}: not a readable Photron .cih/.cihx header "
                             f"({exc.__class__.__name__}: {exc})") from None
        colour = str(cih.get("Color Type", "Mono"))
        if colour.lower() != "mono":
            raise VideoError(f"{path}: Color Type {colour!r}: only monochrome Photron recordings are read")
        if bits not in (8, 12, 16):
            raise VideoError(f"{path}: Color Bit {bits}: expected 8, 12 or 16")
        if bits == 12 and (h * w) % 2:
            raise VideoError(f"{path}: 12-bit frames of {w} x {h} (an odd number of pixels) cannot be "
                             "unpacked: expected an even pixel count")
        mraw = path.with_suffix(".mraw")
        if not mraw.is_file():
            raise VideoError(f"{path}: its frames file {mraw.name} is missing (expected beside the header)")
        per_frame = h * w * bits // 8
        size = mraw.stat().st_size
        if size < n * per_frame:
            raise VideoError(f"{mraw}: {size} bytes, expected {n * per_frame} for {n} frames of {w} x {h} "
                             f"at {bits} bit (the header's Total Frame): the file is truncated")
        self._decode = pyMRAW.nb_read_uint12
        self._bits, self._shape, self._per_frame = bits, (h, w), per_frame
        store = np.uint8 if bits == 8 else np.uint16
        self._data = np.memmap(mraw, dtype=np.uint8 if bits == 12 else store, mode="r",
                               shape=(n * per_frame,) if bits == 12 else (n, h, w))
        self.n_frames = n
        self.is_stack = False
        self.dtype = np.dtype(store)
        fps = float(cih.get("Record Rate(fps)", 0) or 0)
        self.native: dict[str, Any] = {"fps": fps} if fps > 0 else {}

    def read(self, i: int) -> np.ndarray:
        if self._bits == 12:
            raw = np.asarray(self._data[i * self._per_frame:(i + 1) * self._per_frame])
            return np.asarray(self._decode(raw)).reshape(self._shape)
        return np.array(self._data[i])

    def close(self) -> None:
        self._data = None


# ------------------------------------------------------------------ the table of formats
@dataclass(frozen=True)
class BackendSpec:
    """One video format: what :func:`open_video`, batch discovery, ``colloidcg info`` and
    the napari reader need to know about it.

    name : str
        The format's name, as :attr:`VideoMeta.format <colloidcg.io.VideoMeta>` reports it
        ("tiff", "movie", "image folder", "cine"); unique in the table.
    reader : type
        The back-end class, called as ``reader(path, **options)`` (see the module docstring
        for what it offers).
    extensions : tuple of str
        Lower-case file endings with their dot. A file format opens files with these
        endings; a folder format reads the frames with these endings in a folder.
    layout : "file" or "folder"
        One file is one video, or one folder of single-frame files is one video.
    description : str
        One line for help texts and the docs.
    options : tuple of str
        Keyword arguments of ``reader`` beyond the path that :class:`Video` hands on when
        they are set: ``"tiff_axis"`` (``open_video``'s), ``"index"`` (a movie's frame
        index, carried along when a Video is pickled).
    detect : callable, optional
        ``detect(path) -> bool`` for what the ending alone does not settle. A file format
        claims a file whose ending it lists when ``detect`` is None or says yes; a folder
        format claims a folder when ``detect`` says yes, by default when the folder holds a
        (non-hidden) file with one of its endings.
    count_frames : callable, optional
        For file formats whose files may hold a single image (TIFF): ``count_frames(path)``
        gives the number of frames, or None when the file cannot be read. Batch discovery
        takes a one-frame file as a frame of a folder of frames, not as a video.
    fps_from_timestamps : bool
        The frame rate the file gives is the median step of its per-frame timestamps
        (movies), as ``colloidcg info`` says.
    """

    name: str
    reader: type
    extensions: tuple[str, ...]
    layout: str
    description: str
    options: tuple[str, ...] = ()
    detect: Callable[[Path], bool] | None = None
    count_frames: Callable[[Path], int | None] | None = None
    fps_from_timestamps: bool = False

    def claims(self, path: Path) -> bool:
        """Whether this format reads ``path`` (a file or folder, which must exist)."""
        path = Path(path)
        if self.layout == "folder":
            if not path.is_dir():
                return False
            if self.detect is not None:
                return bool(self.detect(path))
            return any(p.suffix.lower() in self.extensions and not p.name.startswith(".")
                       and p.is_file() for p in path.iterdir())
        return (path.suffix.lower() in self.extensions and not path.is_dir()
                and (self.detect is None or bool(self.detect(path))))

    def summary(self) -> str:
        """``name (endings): description``, one line for help texts."""
        what = " ".join(self.extensions)
        where = f"a folder of {what} frames" if self.layout == "folder" else what
        return f"{self.name} ({where}): {self.description}"


def _tiff_frame_count(path: Path) -> int | None:
    """Frames in a TIFF file; None when it cannot be read (batch discovery then takes it
    as a video, so that the batch reports it as failed instead of skipping it silently)."""
    try:
        b = TiffBackend(path)     # mutes tifffile's log itself: the batch reports the damage
    except VideoError:
        return None
    try:
        return int(b.n_frames)
    finally:
        b.close()


#: The formats, in the order they are tried and listed. The single place that says which
#: back-end reads what: add an entry here (and a back-end class above) for a new format.
_TABLE: list[BackendSpec] = [
    BackendSpec("tiff", TiffBackend, _TIFFFILE_EXTS, "file",
                "multi-page TIFF, 8 or 16 bit, ImageJ or OME metadata, (T, Z, Y, X) "
                "hyperstacks as 3D frames (tifffile)",
                options=("tiff_axis",), count_frames=_tiff_frame_count),
    BackendSpec("movie", MovieBackend, (".avi", ".mp4", ".mov", ".mkv", ".m4v"), "file",
                "movies decoded on demand, frames indexed by their presentation timestamps "
                "(PyAV/FFmpeg)",
                options=("index",), fps_from_timestamps=True),
    BackendSpec("image folder", FolderBackend, (".png", *_TIFFFILE_EXTS, ".jpg", ".jpeg", ".bmp"),
                "folder", "single-frame images in natural sort order (f2 before f10)"),
    BackendSpec("cine", CineBackend, (".cine",), "file",
                "Phantom high-speed camera files, with per-frame timestamps (pims)"),
    BackendSpec("mraw", MrawBackend, (".cih", ".cihx"), "file",
                "Photron FASTCAM high-speed recordings: the .cih/.cihx header, frames in the "
                ".mraw beside it; 8, 12 (packed) or 16 bit, monochrome (pyMRAW)"),
    BackendSpec("seq", SeqBackend, (".seq",), "file",
                "NorPix StreamPix sequences from high-speed and machine-vision cameras: "
                "uncompressed monochrome, 8 or 16 bit, per-frame timestamps (pims)"),
]

_LAYOUTS = ("file", "folder")


def backends() -> tuple[BackendSpec, ...]:
    """Every registered format, in the order they are tried."""
    return tuple(_TABLE)


def backend_spec(name: str) -> BackendSpec:
    """The table entry of the format called ``name`` (KeyError when there is none)."""
    for spec in _TABLE:
        if spec.name == name:
            return spec
    raise KeyError(f"no video format {name!r}; known: {', '.join(s.name for s in _TABLE)}")


def register_backend(spec: BackendSpec, before: str | None = None) -> BackendSpec:
    """Add a format to the table (at the end, or before the entry named ``before``, which
    is then tried after it). Returns ``spec``; :func:`unregister_backend` removes it."""
    if not isinstance(spec, BackendSpec):
        raise TypeError(f"expected a BackendSpec, got {type(spec).__name__}")
    if spec.layout not in _LAYOUTS:
        raise ValueError(f"{spec.name}: layout must be one of {', '.join(_LAYOUTS)}, got {spec.layout!r}")
    if not spec.extensions or any(not e.startswith(".") or e != e.lower() for e in spec.extensions):
        raise ValueError(f"{spec.name}: extensions must be lower-case endings with their dot, "
                         f"got {spec.extensions!r}")
    if any(s.name == spec.name for s in _TABLE):
        raise ValueError(f"a video format named {spec.name!r} is registered already")
    if spec.layout == "file" and spec.detect is None:
        taken = {e: s.name for s in _TABLE if s.layout == "file" for e in s.extensions}
        clash = [e for e in spec.extensions if e in taken]
        if clash:
            raise ValueError(f"{spec.name}: {', '.join(clash)} already read by "
                             f"{', '.join(sorted({taken[e] for e in clash}))}; give detect= to "
                             f"tell the files apart")
    at = len(_TABLE) if before is None else _TABLE.index(backend_spec(before))
    _TABLE.insert(at, spec)
    return spec


def unregister_backend(name: str) -> BackendSpec:
    """Remove the format called ``name`` from the table; returns its entry."""
    spec = backend_spec(name)
    _TABLE.remove(spec)
    return spec


def file_extensions() -> tuple[str, ...]:
    """Endings of the files that are videos in themselves (file formats), table order."""
    return tuple(dict.fromkeys(e for s in _TABLE if s.layout == "file" for e in s.extensions))


def frame_extensions() -> tuple[str, ...]:
    """Endings of the frames that folder formats read, table order."""
    return tuple(dict.fromkeys(e for s in _TABLE if s.layout == "folder" for e in s.extensions))


def formats_help() -> str:
    """The formats as one sentence for help texts: ``name (endings): description; ...``."""
    return "; ".join(s.summary() for s in _TABLE)


def video_arg_help(extra: str = "") -> str:
    """Help text of a command-line argument that takes a video."""
    files = "/".join(file_extensions())
    folder = " or folder of frames" if any(s.layout == "folder" for s in _TABLE) else ""
    return f"video file ({files}){folder}{extra}"


def unsupported(path: Path) -> VideoError:
    """The error for a path no format claims: it names the path and what is read."""
    ext = path.suffix.lower()
    folder = "a folder of frames or " if any(s.layout == "folder" for s in _TABLE) else ""
    return VideoError(f"{path}: unsupported video format '{ext or path.name}'; expected {folder}"
                      f"a file ending in {', '.join(file_extensions())}")


def spec_for(path: Path) -> BackendSpec:
    """The table entry that reads ``path``: for a folder, the first folder format that
    claims it (else the first folder format, whose reader then says what the folder
    lacks); for a file, the first file format that claims it. VideoError when none does."""
    path = Path(path)
    if path.is_dir():
        folders = [s for s in _TABLE if s.layout == "folder"]
        for spec in folders:
            if spec.claims(path):
                return spec
        if folders:
            return folders[0]
        raise VideoError(f"{path}: a folder, and no registered video format reads folders; "
                         f"expected a file ending in {', '.join(file_extensions())}")
    for spec in _TABLE:
        if spec.layout == "file" and spec.claims(path):
            return spec
    raise unsupported(path)


def backend_for(path: Path):
    """The back-end class that reads ``path`` (see :func:`spec_for`)."""
    return spec_for(path).reader


# Values for code that imports them, made from the table as it ships. Code that must see
# formats registered at run time calls file_extensions() / frame_extensions() instead.
TIFF_EXTS = backend_spec("tiff").extensions
MOVIE_EXTS = backend_spec("movie").extensions
CINE_EXTS = backend_spec("cine").extensions
FRAME_EXTS = backend_spec("image folder").extensions
