"""``colloidcg.toml``: calibration and parameter overrides kept beside the videos.

A ``colloidcg.toml`` in a folder applies to the videos in that folder and, for a batch,
in every folder below it; the nearest file wins. Recognised tables and keys::

    [calibration]
    fps = 500.0          # frames per second
    um_per_px = 0.107    # micrometres per pixel (lateral)
    um_per_slice = 0.3   # micrometres between z slices (stacks only)
    tiff_axis = "T"      # a TIFF stack's only non-spatial axis is time ("T"), one z
                         # stack ("Z") or channels ("C"); see colloidcg.io.open_video

    [track]              # any parameter of colloidcg.tracking.track
    diameter = 11
    invert = false

Other tables (``[rearrangements]``, ``[train]`` ...) are passed to the later stages.
Unknown calibration keys are an error naming the file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ..errors import ColloidcgError

CONFIG_NAME = "colloidcg.toml"
CALIBRATION_KEYS = {"fps": float, "um_per_px": float, "um_per_slice": float, "tiff_axis": str}
TIFF_AXIS_VALUES = ("T", "Z", "C")


def read_config(path: str | Path) -> dict[str, Any]:
    """Parse and validate one ``colloidcg.toml``; errors name the file and the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ColloidcgError(f"{path}: malformed TOML ({exc})") from None
    except OSError as exc:
        raise ColloidcgError(f"{path}: cannot read ({exc.strerror})") from None
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ColloidcgError(
                f"{path}: key '{key}' must sit inside a table such as [calibration] or [track]")
    cal = data.get("calibration", {})
    for key, value in cal.items():
        if key not in CALIBRATION_KEYS:
            raise ColloidcgError(
                f"{path}: unknown key 'calibration.{key}'; expected one of "
                f"{', '.join(sorted(CALIBRATION_KEYS))}")
        if key == "tiff_axis":
            if value not in TIFF_AXIS_VALUES:
                raise ColloidcgError(f"{path}: 'calibration.tiff_axis' must be one of "
                                     f"{', '.join(repr(v) for v in TIFF_AXIS_VALUES)}, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ColloidcgError(
                f"{path}: 'calibration.{key}' must be a positive number, got {value!r}")
        cal[key] = float(value)
    return data


def find_config(video_path: str | Path, root: str | Path | None = None) -> Path | None:
    """The nearest ``colloidcg.toml`` for ``video_path``.

    Looks in the video's folder (for a folder of frames: the folder itself, then its parent)
    and, when ``root`` is given, in every folder up to and including ``root``.
    """
    video_path = Path(video_path).resolve()
    start = video_path if video_path.is_dir() else video_path.parent
    stop = Path(root).resolve() if root is not None else None
    folder = start
    while True:
        cand = folder / CONFIG_NAME
        if cand.is_file():
            return cand
        if stop is None:
            if folder != start or not video_path.is_dir():
                return None
        elif folder == stop or stop not in folder.parents:
            return None
        if folder.parent == folder:
            return None
        folder = folder.parent
