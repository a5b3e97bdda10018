"""Finding the videos (and MD trajectories) under a folder and the configuration that
applies to each.

MD trajectories are files with the endings of :data:`TRAJECTORY_SUFFIXES` (LAMMPS text
dumps, GSD, and the MDAnalysis trajectory formats that carry their own coordinates: XTC,
TRR, DCD, NetCDF, H5MD); each is a job of kind "trajectory", read and coarse-grained by
the batch's first stage with the options of the ``[md]`` table (:data:`MD_KEYS`).

What a video is comes from the table of formats (:func:`colloidcg.io.readers.backends`):
as shipped, a movie or Phantom .cine file, a TIFF with more than one frame, or a folder
holding two or more single-frame images (a folder of frames). Hidden files and folders
(names starting with ".") are ignored. Every ``colloidcg.toml`` under the root is read and
checked before any work starts; the nearest one above a video applies to it, on top of
the batch-wide ``--config`` file (key by key: the nearer file wins).
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ColloidcgError
from ..io.config import CONFIG_NAME, find_config, read_config
from ..io.readers import backends, file_extensions, frame_extensions

#: Tables of colloidcg.toml the batch reads, besides [calibration] (checked by
#: colloidcg.io.config.read_config): table -> {key: (expected types, description)}.
REARRANGEMENT_KEYS = {"lag": (int,), "cutoff": (int, float), "threshold": (int, float),
                      "diameter": (int, float), "descriptors": (bool,), "n_sigma": (int, float)}
EVALUATE_KEYS = {"steps": (int,), "seed": (int,), "substeps": (int, str), "fast": (bool,)}
#: [md] keys: how a trajectory is read and coarse-grained (colloidcg md-read's options).
#: ``coarse_grain``: none, molecule, type, or a mapping file (CSV/Parquet/JSON; a relative
#: path is taken from the trajectory's folder); ``topology`` likewise.
MD_KEYS = {"coarse_grain": (str,), "types": (list,), "units": (str,), "timestep": (int, float),
           "dim": (int,), "topology": (str,)}
#: Endings of the files the batch takes as MD trajectories.
TRAJECTORY_SUFFIXES = (".dump", ".lammpstrj", ".lammpsdump", ".gsd", ".xtc", ".trr", ".dcd", ".nc", ".ncdf",
                       ".h5md")
#: TrainConfig fields the batch sets itself.
TRAIN_RESERVED = {"progress", "checkpoint_dir"}
TABLES = ("calibration", "track", "rearrangements", "train", "evaluate", "md", "macro")


@dataclass
class VideoJob:
    """One video of a batch.

    path : absolute path of the video (file or folder of frames).
    rel : its path relative to the batch root (POSIX), which names its output folder.
    config : the merged configuration (tables as in colloidcg.toml).
    config_files : the files it came from, farthest first.
    kind : "video", or "trajectory" (an MD trajectory file: read and coarse-grained instead
        of tracked; no rearrangement stage).
    """

    path: str
    rel: str
    config: dict[str, Any] = field(default_factory=dict)
    config_files: list[str] = field(default_factory=list)
    kind: str = "video"


def _type_name(types) -> str:
    return " or ".join(sorted({t.__name__ for t in types}))


def _check_value(path: Path, table: str, key: str, value, types) -> None:
    ok = any(isinstance(value, t) and not (isinstance(value, bool) and t is not bool) for t in types)
    if not ok:
        raise ColloidcgError(f"{path}: '{table}.{key}' must be {_type_name(types)}, got {value!r}")


def _train_types() -> dict[str, tuple]:
    from ..train import TrainConfig

    out = {}
    for name, h in TrainConfig.option_hints().items():   # flat architecture keys and 'model' too
        if name in TRAIN_RESERVED:
            continue
        args = tuple(typing.get_args(h) or (h,))
        if float in args:
            args = args + (int,)
        out[name] = args
    return out


def check_tables(path: Path, data: dict) -> dict:
    """Check the batch tables of one parsed colloidcg.toml; errors name the file and key."""
    from ..tracking import TrackParams

    for table in data:
        if table not in TABLES:
            raise ColloidcgError(f"{path}: unknown table [{table}]; expected some of "
                                 f"{', '.join('[' + t + ']' for t in TABLES)}")
    track = data.get("track", {})
    names = {f.name for f in dataclasses.fields(TrackParams)} - {"sources"}
    for key, value in track.items():
        if key not in names:
            raise ColloidcgError(f"{path}: unknown key 'track.{key}'; expected one of {', '.join(sorted(names))}")
    if track:
        vals = {k: tuple(v) if isinstance(v, list) else v for k, v in track.items()}
        try:
            p = TrackParams(**vals)
            d = p.diameter
            p.validate(len(d) if isinstance(d, tuple) else 2)
        except (ColloidcgError, TypeError, ValueError) as exc:
            raise ColloidcgError(f"{path}: [track] {exc}") from None
    from .stages import MACRO_KEYS

    macro = {k: (t if isinstance(t, tuple) else (t,)) + ((int,) if t is float else ())
             for k, (_, _, t) in MACRO_KEYS.items()}
    for table, spec in (("rearrangements", REARRANGEMENT_KEYS), ("evaluate", EVALUATE_KEYS),
                        ("md", MD_KEYS), ("macro", macro), ("train", None)):
        if table not in data:
            continue
        spec = spec if spec is not None else _train_types()   # imports torch: only when needed
        for key, value in data.get(table, {}).items():
            if key not in spec:
                raise ColloidcgError(f"{path}: unknown key '{table}.{key}'; expected one of "
                                     f"{', '.join(sorted(spec))}")
            types = tuple(t for t in spec[key] if isinstance(t, type))
            if tuple in types and isinstance(value, list):   # TOML has arrays, not tuples
                value = tuple(value)
            _check_value(path, table, key, value, types)
    sub = data.get("evaluate", {}).get("substeps")
    if isinstance(sub, str) and sub != "auto":
        raise ColloidcgError(f"{path}: 'evaluate.substeps' must be an integer >= 1 or \"auto\", got {sub!r}")
    for key, lo in (("steps", 2), ("seed", 0), ("substeps", 1)):
        v = data.get("evaluate", {}).get(key)
        if v is not None and not isinstance(v, str) and v < lo:
            raise ColloidcgError(f"{path}: 'evaluate.{key}' must be >= {lo}, got {v!r}")
    md = data.get("md", {})
    from ..md.coarse import MAPS
    from ..md.trajectory import UNIT_STYLES
    cg = md.get("coarse_grain")
    if cg is not None and cg not in MAPS and not cg.lower().endswith((".csv", ".parquet", ".json")):
        raise ColloidcgError(f"{path}: 'md.coarse_grain' must be {', '.join(MAPS)} or a mapping file "
                             f"(.csv, .parquet, .json), got {cg!r}")
    if md.get("units") is not None and md["units"] not in UNIT_STYLES:
        raise ColloidcgError(f"{path}: 'md.units' must be a LAMMPS unit style ({', '.join(UNIT_STYLES)}), "
                             f"got {md['units']!r}")
    if md.get("dim") is not None and md["dim"] not in (2, 3):
        raise ColloidcgError(f"{path}: 'md.dim' must be 2 or 3, got {md['dim']!r}")
    if md.get("timestep") is not None and not (math.isfinite(md["timestep"]) and md["timestep"] > 0):
        raise ColloidcgError(f"{path}: 'md.timestep' must be a finite positive number, got {md['timestep']!r}")
    for key in ("lag",):
        v = data.get("rearrangements", {}).get(key)
        if v is not None and v < 1:
            raise ColloidcgError(f"{path}: 'rearrangements.{key}' must be >= 1, got {v!r}")
    for key in ("cutoff", "threshold", "diameter", "n_sigma"):
        v = data.get("rearrangements", {}).get(key)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ColloidcgError(f"{path}: 'rearrangements.{key}' must be a finite positive number, got {v!r}")
    if "train" in data:
        from ..errors import ParameterError
        from .stages import train_config

        try:   # every value, as training will use it (device available, dtype, limits...)
            train_config(data["train"], where=f"{path}: train.")
        except (ParameterError, TypeError) as exc:
            raise ColloidcgError(str(exc)) from None
    return data


def load_config(path: str | os.PathLike) -> dict:
    """Read and check one configuration file (colloidcg.toml format)."""
    path = Path(path)
    if not path.is_file():
        raise ColloidcgError(f"{path}: no such configuration file")
    return check_tables(path, read_config(path))


def merge(base: dict, over: dict) -> dict:
    """Tables of ``over`` on top of ``base``, key by key."""
    out = {t: dict(v) for t, v in base.items()}
    for t, v in over.items():
        out.setdefault(t, {}).update(v)
    return out


def _file_format(path: Path, file_specs):
    """The first file format of the table that claims ``path``, or None."""
    for spec in file_specs:
        if spec.claims(path):
            return spec
    return None


def find_videos(root: str | os.PathLike, exclude: str | os.PathLike | None = None,
                skipped: list | None = None) -> list[Path]:
    """Every video under ``root`` (sorted), skipping hidden entries and ``exclude``.

    Read from the table of formats. In each folder: a file that a file format claims is a
    video, except that a file of a format that counts frames (TIFF) is a video only when
    it has more than one frame (or cannot be read: the batch then reports it as failed),
    and otherwise one image; files with the endings a folder format reads are images. The
    folder itself is a video (a folder of frames) when it holds two or more single-frame
    images and no multi-frame file with an image ending (which the folder reader would
    take as a frame), or when a folder format with a ``detect`` check claims it. Once two single-frame files have been counted and no multi-frame
    one with an image ending seen in a folder, its remaining files of that kind are taken
    as frames without opening them.

    ``skipped``, when given, receives (path, reason) for every image file that is not
    part of a video (a lone single-frame image; single frames beside multi-frame TIFFs),
    so that the batch can report them instead of skipping them silently.
    """
    root = Path(root)
    skip = Path(exclude).resolve() if exclude is not None else None
    file_specs = [s for s in backends() if s.layout == "file"]
    # folder formats that recognise their folders by a check of their own
    detecting = [s for s in backends() if s.layout == "folder" and s.detect is not None]
    frame_exts = set(frame_extensions())
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (skip is None or (here / d).resolve() != skip))
        frames, counted, stacks, frame_files, lone = 0, 0, [], [], []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = here / name
            ext = p.suffix.lower()
            if ext in TRAJECTORY_SUFFIXES:
                found.append(p)            # an MD trajectory
                continue
            spec = _file_format(p, file_specs)
            if spec is not None and spec.count_frames is not None:
                n = 1 if (counted >= 2 and not stacks and ext in frame_exts) else spec.count_frames(p)
                if n is None or n > 1:
                    (stacks if ext in frame_exts else found).append(p)
                elif ext in frame_exts:
                    frames += 1
                    counted += 1
                    frame_files.append(p)
                else:
                    lone.append(p)
            elif spec is not None:
                (stacks if ext in frame_exts else found).append(p)
            elif ext in frame_exts:
                frames += 1
                frame_files.append(p)
        found.extend(stacks)
        single = ("a single image, not a video (a folder of frames needs two or more; a TIFF "
                  "read as one frame may be a stack whose frames are labelled as another axis)")
        if (frames >= 2 and not stacks) or any(s.claims(here) for s in detecting):
            found.append(here)
        elif frame_files and skipped is not None:
            why = ("single-frame image beside multi-frame TIFFs in the same folder (not taken as a "
                   "folder of frames)" if stacks else single)
            skipped.extend((f, why) for f in frame_files)
        if lone and skipped is not None:
            skipped.extend((f, single) for f in lone)
    return sorted(found)


def discover(root: str | os.PathLike, base_config: str | os.PathLike | None = None,
             exclude: str | os.PathLike | None = None, skipped: list | None = None) -> list[VideoJob]:
    """The videos under ``root`` with their merged configuration; every colloidcg.toml
    under ``root`` is checked first. Raises :class:`ColloidcgError` when none is found.
    ``skipped`` receives (path, reason) of image files that are not videos."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ColloidcgError(f"{root}: not a folder (ROOT must be the folder that holds the videos)")
    base = load_config(base_config) if base_config else {}
    skip = Path(exclude).resolve() if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")
                       and (skip is None or (Path(dirpath) / d).resolve() != skip)]
        if CONFIG_NAME in filenames:
            load_config(Path(dirpath) / CONFIG_NAME)
    videos = find_videos(root, exclude, skipped)
    if not videos:
        kinds = ", ".join(file_extensions())
        raise ColloidcgError(f"{root}: no videos found (looked for {kinds} files, folders of "
                             f"two or more {'/'.join(frame_extensions())} frames, and MD trajectories "
                             f"{', '.join(TRAJECTORY_SUFFIXES)})")
    jobs = []
    for v in videos:
        rel = v.relative_to(root).as_posix()
        cfg_path = find_config(v, root)
        cfg, files = dict(base), ([str(Path(base_config).resolve())] if base_config else [])
        if cfg_path is not None:
            cfg = merge(base, load_config(cfg_path))
            files.append(str(cfg_path))
        kind = "trajectory" if (v.is_file() and v.suffix.lower() in TRAJECTORY_SUFFIXES) else "video"
        jobs.append(VideoJob(str(v), rel if rel != "." else v.name, cfg, files, kind))
    return jobs
