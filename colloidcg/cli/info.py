"""``colloidcg info PATH``: what a video holds, or where an output came from."""

from __future__ import annotations

import json
from pathlib import Path

from ._common import add_calibration


def add_parser(sub) -> None:
    p = sub.add_parser(
        "info", help="describe a video (frames, shape, calibration) or an output's provenance",
        description="For a video: print frames, shape, dtype, frame rate and pixel size, and "
                    "where each calibration value came from (file, colloidcg.toml, flag). For a "
                    ".parquet/.json output: print the parameters, version and inputs saved with it.")
    p.add_argument("path", help="video file, folder of frames, or a colloidcg output (.parquet/.json)")
    add_calibration(p)
    p.set_defaults(func=run)


def _print_provenance(path: Path) -> int:
    from ..errors import ColloidcgError

    side = path.with_suffix(".json")
    if not side.exists():
        raise ColloidcgError(f"{path}: no provenance sidecar {side.name} beside it")
    rec = json.loads(side.read_text())
    print(f"output     {path}")
    for key in ("stage", "colloidcg_version", "created"):
        if key in rec:
            print(f"{key:<10} {rec[key]}")
    for section in ("inputs", "parameters", "units"):
        if rec.get(section):
            print(f"{section}:")
            for k, v in rec[section].items():
                print(f"  {k:<16} {v}")
    return 0


def run(args) -> int:
    from ..io import open_video

    path = Path(args.path)
    if path.suffix.lower() in (".parquet", ".json"):
        return _print_provenance(path)
    with open_video(path, fps=args.fps, um_per_px=args.um_per_px) as video:
        m = video.meta
        print(f"file        {m.path}")
        print(f"format      {m.format}")
        print(f"frames      {m.n_frames}")
        print(f"shape       {' x '.join(map(str, m.frame_shape))} ({'Z, ' if m.ndim == 3 else ''}Y, X px)")
        print(f"dtype       {m.dtype}")
        fps = f"{m.fps:g}" if m.fps else "unknown"
        print(f"fps         {fps:<12} from {m.sources['fps']}")
        ump = f"{m.um_per_px:g}" if m.um_per_px else "unknown"
        print(f"um_per_px   {ump:<12} from {m.sources['um_per_px']}")
        if m.ndim == 3:
            ums = f"{m.um_per_slice:g}" if m.um_per_slice else "unknown"
            print(f"um_per_slice {ums:<11} from {m.sources['um_per_slice']}")
        if m.timestamps is not None:
            t = m.timestamps
            print(f"timestamps  {len(t)} in file, {t[0]:.6g} .. {t[-1]:.6g} s")
            if len(t) > 1 and t[-1] > t[0]:
                rate = (len(t) - 1) / (t[-1] - t[0])
                note = "" if not m.fps or abs(rate / m.fps - 1) < 0.01 else \
                    " (differs from the header's fps: frames may have been skipped when saving)"
                print(f"            {rate:.6g} frames/s from the timestamps{note}")
    return 0
