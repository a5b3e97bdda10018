"""Format back-ends behind :func:`colloidcg.io.open_video`.

Each back-end opens a file lazily and offers ``n_frames``, ``read(i)`` (one frame as a
numpy array, (Y, X) or (Z, Y, X), greyscale, native dtype) and ``native`` calibration
(whatever the file itself records: fps, um_per_px, timestamps). Errors are raised as
:class:`colloidcg.errors.VideoError` with the path in the message.
"""

from __future__ import annotations

import logging

import re
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VideoError

MOVIE_EXTS = (".avi", ".mp4", ".mov", ".mkv", ".m4v")
TIFF_EXTS = (".tif", ".tiff")
CINE_EXTS = (".cine",)
FRAME_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")

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

    def __init__(self, path: Path):
        import tifffile

        self.path = path
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
        # Select channel 0 of any channel axis.
        for ax in ("C",):
            if ax in names:
                index = np.take(index, 0, axis=names.index(ax))
                names.remove(ax)
        time_like = [a for a in names if a in "TIQ"]
        if not time_like and "Z" in names and len(names) == 1:
            names = ["T"]
            time_like = ["T"]
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
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTS
                 and not p.name.startswith(".")]
        if not files:
            raise VideoError(f"{path}: folder holds no image frames "
                             f"(expected files ending in {', '.join(FRAME_EXTS)})")
        exts = {p.suffix.lower() for p in files}
        if len(exts) > 1 and not exts <= set(TIFF_EXTS):
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
            if f.suffix.lower() in TIFF_EXTS:
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


class MovieBackend:
    """AVI / MP4 / MOV through PyAV (FFmpeg), decoded on demand.

    Sequential reads continue the running decoder; a jump seeks to the keyframe before the
    wanted frame and decodes forward, so random access is exact for constant-rate video.
    """

    kind = "movie"

    def __init__(self, path: Path):
        import av

        self.path = path
        try:
            self._container = av.open(str(path))
            self._stream = self._container.streams.video[0]
        except Exception as exc:
            raise VideoError(f"{path}: not a readable video ({exc.__class__.__name__}: {exc})") from None
        s = self._stream
        rate = s.average_rate or s.guessed_rate or s.base_rate
        self._rate = Fraction(rate) if rate else None
        self._tb = Fraction(s.time_base) if s.time_base else None
        self._start = s.start_time or 0
        n = s.frames
        if not n and s.duration and self._rate and self._tb:
            n = int(round(float(s.duration * self._tb * self._rate)))
        if not n:
            n = self._count_packets()
        self.n_frames = int(n)
        self.is_stack = False
        self._decoder = None
        self._next = 0
        self.native = {"fps": float(self._rate)} if self._rate else {}
        self.dtype = np.dtype(np.uint8)

    def _count_packets(self) -> int:
        count = sum(1 for p in self._container.demux(self._stream) if p.size)
        self._container.seek(0)
        return count

    def _frame_index(self, frame) -> int:
        if frame.pts is None or not (self._rate and self._tb):
            return self._next
        return int(round(float((frame.pts - self._start) * self._tb * self._rate)))

    def read(self, i: int) -> np.ndarray:
        try:
            if self._decoder is None or i != self._next:
                if self._rate and self._tb:
                    target = self._start + int(Fraction(i) / self._rate / self._tb)
                    self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
                else:
                    self._container.seek(0)
                self._decoder = self._container.decode(self._stream)
                self._next = -1
            for frame in self._decoder:
                k = self._frame_index(frame)
                if k >= i:
                    self._next = i + 1
                    return self._to_array(frame)
        except VideoError:
            raise
        except Exception as exc:
            raise VideoError(f"{self.path}: frame {i} cannot be decoded, the file may be truncated "
                             f"or corrupt ({exc.__class__.__name__}: {exc})") from None
        raise VideoError(f"{self.path}: frame {i} is missing: the file ends early "
                         f"(header says {self.n_frames} frames); it may be truncated")

    @staticmethod
    def _to_array(frame) -> np.ndarray:
        fmt = frame.format.name
        if fmt.startswith("gray16"):
            return frame.to_ndarray(format="gray16le")
        return frame.to_ndarray(format="gray")

    def close(self) -> None:
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
        if getattr(self._reader, "frame_rate", None):
            native["fps"] = float(self._reader.frame_rate)
        stamps = getattr(self._reader, "frame_time_stamps", None)
        if stamps:
            t = np.array([(d - stamps[0][0]).total_seconds() + (f - stamps[0][1]) for d, f in stamps])
            native["timestamps"] = t
        self.native = native

    def read(self, i: int) -> np.ndarray:
        try:
            return to_grey(np.asarray(self._reader[i]))
        except Exception as exc:
            raise VideoError(f"{self.path}: frame {i} cannot be read, the file may be truncated "
                             f"({exc.__class__.__name__}: {exc})") from None

    def close(self) -> None:
        self._reader.close()


def backend_for(path: Path):
    """Pick the back-end for ``path`` from its type and extension."""
    if path.is_dir():
        return FolderBackend
    ext = path.suffix.lower()
    if ext in TIFF_EXTS:
        return TiffBackend
    if ext in MOVIE_EXTS:
        return MovieBackend
    if ext in CINE_EXTS:
        return CineBackend
    raise VideoError(
        f"{path}: unsupported video format '{ext or path.name}'; expected a folder of frames or a file "
        f"ending in {', '.join(TIFF_EXTS + MOVIE_EXTS + CINE_EXTS)}")
