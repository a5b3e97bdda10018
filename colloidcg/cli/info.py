"""``colloidcg info PATH``: what a video holds, or where an output came from."""

from __future__ import annotations

import json
from pathlib import Path

from ..io.readers import backends, formats_help, video_arg_help
from ._common import add_calibration, add_tiff_axis


def add_parser(sub) -> None:
    # the video formats come from the table of formats (colloidcg.io.readers.backends)
    p = sub.add_parser(
        "info", help="describe a video (frames, shape, calibration) or an output's provenance",
        description="For a video: print frames, shape, dtype, frame rate and pixel size, and "
                    "where each calibration value came from (file, colloidcg.toml, flag). For an "
                    "output: print the parameters, version and inputs saved with it: a .parquet "
                    "table or its .json sidecar, a model directory (config.json), a model bundle "
                    "(bundle.json), a batch stage folder (stage.json) or a batch output folder "
                    f"(summary.csv). Video formats: {formats_help()}.")
    p.add_argument("path", help=video_arg_help(", or a colloidcg output (.parquet/.json, model "
                                               "directory, bundle, batch folder)"))
    add_calibration(p, source="the video file and colloidcg.toml; videos only")
    add_tiff_axis(p)
    p.set_defaults(func=run)


def _short(v, width: int = 100) -> str:
    text = json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v)
    return text if len(text) <= width else text[: width - 3] + "..."


#: Units printed after numbers with these keys in model folders and bundles (the model's
#: length unit is um for video data; for MD tracks it is the trajectory's length unit).
_UNITS = {"cutoff": "um", "edge": "um", "loc_noise": "um", "nn_distance": "um", "um_per_px": "um/px",
          "fps": "frames/s", "dt": "s", "box_px": "px", "lr": "(Adam learning rate)"}


def _print_tree(rec: dict, indent: int = 0, skip=(), units: dict | None = None) -> None:
    pad = " " * indent
    for k, v in rec.items():
        if k in skip:
            continue
        if isinstance(v, dict) and v and indent < 4:
            print(f"{pad}{k}:")
            _print_tree(v, indent + 2, units=units)
        else:
            unit = (units or {}).get(k) if v is not None and not isinstance(v, (str, bool, dict)) else None
            text = _short(v) + (f" {unit}" if unit else "")
            print(f"{pad}{k:<18} {text}" if indent else f"{k:<14} {text}")


def _print_cutoff(model: dict, calibration: dict | None) -> None:
    """The interaction range first, with its unit and in pixels."""
    c = (model or {}).get("cutoff")
    if not isinstance(c, (int, float)):
        return
    um = (calibration or {}).get("um_per_px")
    px = f" = {c / um:.4g} px" if isinstance(um, (int, float)) and um > 0 else ""
    print(f"cutoff     {c:.4g} um{px} (interaction range; for MD tracks the trajectory's length unit)")


def _read_json(path: Path) -> dict:
    from ..errors import ColloidcgError

    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ColloidcgError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(rec, dict):
        raise ColloidcgError(f"{path}: expected a JSON object")
    return rec


def _print_sidecar(path: Path, rec: dict) -> int:
    print(f"output     {path}")
    for key in ("stage", "colloidcg_version", "created"):
        if key in rec:
            print(f"{key:<10} {rec[key]}")
    for section in ("inputs", "parameters", "units"):
        if rec.get(section):
            print(f"{section}:")
            for k, v in rec[section].items():
                print(f"  {k:<16} {_short(v)}")
    rest = {k: v for k, v in rec.items()
            if k not in ("stage", "colloidcg_version", "created", "inputs", "parameters", "units")}
    if rest:
        _print_tree(rest)
    return 0


def _print_bundle(path: Path) -> int:
    from ..export import read_bundle

    desc = read_bundle(path)
    print(f"bundle     {path}")
    _print_cutoff(desc.get("model") or desc.get("architecture") or {"cutoff": desc.get("cutoff")},
                  desc.get("calibration"))
    _print_tree(desc, skip=("torchscript", "files"), units=_UNITS)
    ts = desc.get("torchscript") or {}
    print(f"compiled model {ts.get('file')} (ts = torch.jit.load(...); integrator {ts.get('integrator')}; "
          "inputs and outputs in bundle.json 'torchscript'):")
    for call in ts.get("methods") or {}:
        print(f"  {call}")
    print(f"rollout    {desc.get('rollout')}")
    print(f"files      {', '.join(desc.get('files') or {})} (checksums verified)")
    return 0


def _print_model_dir(path: Path) -> int:
    from ..core.persist import read_config
    from ..errors import ColloidcgError
    from ..outputs import sha256_file

    cfg = read_config(path)
    want = cfg.get("weights_sha256")
    if want and sha256_file(path / "model.pt") != want:
        raise ColloidcgError(f"{path / 'model.pt'}: the weights do not belong to "
                             f"{path / 'config.json'} (checksum differs); retrain")
    print(f"model      {path}{' (weights checksum verified)' if want else ''}")
    _print_cutoff(cfg.get("model"), cfg.get("calibration"))
    _print_tree(cfg, units=_UNITS)
    rpath = path / "report.json"
    if rpath.is_file():
        rep = _read_json(rpath)
        print("report:")
        _print_tree({k: v for k, v in rep.items() if k not in ("history", "calibration")}, 2, units=_UNITS)
    return 0


def _print_batch(path: Path) -> int:
    import pandas as pd

    from ..batch.hashing import verified_status
    from ..errors import ColloidcgError
    from ..outputs import OutputLock

    try:
        df = pd.read_csv(path / "summary.csv", keep_default_na=False)
    except Exception as exc:  # pandas raises several unrelated types
        raise ColloidcgError(f"{path / 'summary.csv'}: not a readable summary ({exc.__class__.__name__})") from None
    side = path / "batch.json"
    rec = _read_json(side) if side.is_file() else {}
    print(f"batch      {path}")
    # what summary.csv says, checked against the stage folders as they are now
    disk, notes = [], []
    for _, r in df.iterrows():
        st, why = verified_status(path / str(r.get("video", "")) / str(r.get("stage", "")))
        said = str(r.get("status", ""))
        agree = {"done": ("done",), "unchanged": ("done",), "stale": ("stale",),
                 "failed": ("failed", "stale"), "blocked": ("blocked", "stale")}.get(said, (said,))
        disk.append(st)
        if st not in agree:
            notes.append(f"  {r.get('video')} [{r.get('stage')}]: summary.csv says {said}, "
                         f"on disk it is {st}{': ' + why if why else ''}")
    df["on_disk"] = disk
    with pd.option_context("display.width", 200, "display.max_columns", 12):
        print(df[[c for c in ("video", "stage", "status", "on_disk", "duration_s", "error") if c in df]].to_string(index=False))
    if rec.get("state") == "running":
        try:
            with OutputLock(path):
                busy = False
        except ColloidcgError:
            busy = True
        except OSError:
            busy = False
        notes.insert(0, "  a batch is running in this folder now (summary.csv is from an earlier run)" if busy
                     else "  the last batch run here was interrupted (summary.csv is from an earlier "
                          "run; rerun the batch to resume)")
    if notes:
        print("differences between summary.csv and the files (the files are what is there):")
        print("\n".join(notes))
    else:
        print("every row of summary.csv checked against its stage folder: they agree")
    if rec.get("skipped"):
        print("skipped files (not videos):")
        for f, why in rec["skipped"].items():
            print(f"  {f}: {why}")
    if rec:
        _print_tree(rec, skip=("videos", "skipped"))
    return 0


def _print_trajectory(path: Path) -> int:
    """An MD trajectory (colloidcg.md): format, frames, atoms, box, units, what it holds."""
    from ..md.trajectory import read_trajectory

    desc = read_trajectory(path).describe()
    print(f"trajectory {path}")
    _print_tree(desc)
    return 0


def _print_csv(path: Path) -> int:
    """A tracks table made elsewhere (CSV, no sidecar): what the commands will read."""
    from ..outputs import read_table
    from ..structure.frames import REQUIRED

    df, _ = read_table(path)
    print(f"table       {path} (CSV, no provenance sidecar: made outside colloidcg)")
    print(f"rows        {len(df)}")
    print(f"columns     {', '.join(map(str, df.columns))}")
    need = [c for c in REQUIRED if c not in df.columns]
    if need:
        print(f"not tracks  missing {', '.join(need)} (the tracks schema: frame, particle, x, y [, z], px)")
        return 0
    frames = df["frame"]
    print(f"frames      {frames.min()}..{frames.max()} ({frames.nunique()} present), "
          f"{df['particle'].nunique()} particles")
    print("calibration none recorded: give --fps and --um-per-px to the commands (else frames and px)")
    return 0


def _check_parquet(path: Path) -> int:
    """The number of rows of a Parquet table; a one-line error when it is not one."""
    from ..errors import ColloidcgError

    try:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception as exc:  # pyarrow raises several unrelated types
        raise ColloidcgError(f"{path}: not a readable Parquet table ({exc.__class__.__name__}: "
                             f"{' '.join(str(exc).split())[:200]})") from None


def run(args) -> int:
    import numpy as np

    from ..errors import ColloidcgError
    from ..io import open_video

    from ..outputs import check_table_pair, recover

    path = Path(args.path)
    recover(path if path.is_dir() else path.parent)   # finish a commit a killed run left halfway
    if path.suffix.lower() == ".parquet" and path.exists():
        _check_parquet(path)
    if path.suffix.lower() == ".csv" and not path.with_suffix(".json").exists():
        return _print_csv(path)
    if path.suffix.lower() in (".parquet", ".json"):
        side = path.with_suffix(".json")
        if not side.exists():
            raise ColloidcgError(f"{path}: no provenance sidecar {side.name} beside it")
        table = path.with_suffix(".parquet")
        if side.name not in ("bundle.json", "config.json") and table.exists():
            _check_parquet(table)
            check_table_pair(table, _read_json(side))
        if side.name == "bundle.json":
            return _print_bundle(side.parent)
        if side.name == "config.json" and (side.parent / "model.pt").exists():
            return _print_model_dir(side.parent)
        return _print_sidecar(path, _read_json(side))
    if path.is_dir():
        if (path / "bundle.json").is_file():
            return _print_bundle(path)
        if (path / "config.json").is_file() and (path / "model.pt").is_file():
            return _print_model_dir(path)
        if (path / "stage.json").is_file():
            from ..batch.hashing import verified_status

            st, why = verified_status(path)
            print(f"on disk    {st}{' (' + why + ')' if why else ''} (every recorded output checked)")
            return _print_sidecar(path, _read_json(path / "stage.json"))
        if (path / "summary.csv").is_file():
            return _print_batch(path)
    if path.is_file():
        from ..md.trajectory import detect_format

        if detect_format(path) is not None:
            return _print_trajectory(path)
    with open_video(path, fps=args.fps, um_per_px=args.um_per_px, tiff_axis=args.tiff_axis) as video:
        m = video.meta
        hdr = m.header or {}
        spec = next((s for s in backends() if s.name == m.format), None)
        print(f"file        {m.path}")
        print(f"format      {m.format}" + (f" ({spec.description})" if spec else ""))
        claim = (f" (decoded; the container header claims {hdr['n_frames']})"
                 if hdr.get("n_frames") and hdr["n_frames"] != m.n_frames else "")
        print(f"frames      {m.n_frames}{claim}")
        print(f"shape       {' x '.join(map(str, m.frame_shape))} ({'Z, ' if m.ndim == 3 else ''}Y, X px)")
        print(f"dtype       {m.dtype}")
        fps = f"{m.fps:g}" if m.fps else "unknown"
        how = ""
        by_stamps = spec is not None and spec.fps_from_timestamps
        if by_stamps and m.sources["fps"] == "file":
            how = " (median step of the frame timestamps)"
        if hdr.get("fps") and m.fps and abs(hdr["fps"] / m.fps - 1) > 0.01:
            how += f"; the container header claims {hdr['fps']:g} fps"
        print(f"fps         {fps:<12} from {m.sources['fps']}{how}")
        ump = f"{m.um_per_px:g}" if m.um_per_px else "unknown"
        print(f"um_per_px   {ump:<12} from {m.sources['um_per_px']}")
        if m.ndim == 3:
            ums = f"{m.um_per_slice:g}" if m.um_per_slice else "unknown"
            print(f"um_per_slice {ums:<11} from {m.sources['um_per_slice']}")
        if m.timestamps is not None:
            t = m.timestamps
            print(f"timestamps  {len(t)} in file, {t[0]:.6g} .. {t[-1]:.6g} s")
            if len(t) > 1:
                d = np.diff(t)
                kind = "regular" if np.ptp(d) <= 1e-3 * abs(np.median(d)) else "irregular"
                print(f"            steps {d.min():.6g} .. {d.max():.6g} s, median {np.median(d):.6g} s "
                      f"({kind})")
            if len(t) > 1 and t[-1] > t[0] and not by_stamps:
                rate = (len(t) - 1) / (t[-1] - t[0])
                note = "" if not m.fps or abs(rate / m.fps - 1) < 0.01 else \
                    " (differs from the header's fps: frames may have been skipped when saving)"
                print(f"            {rate:.6g} frames/s from the timestamps{note}")
        if m.sources.get("tiff_axis"):
            print(f"tiff_axis   {'':<12} from {m.sources['tiff_axis']}")
        for line in m.notes:
            if not line.startswith("the container header"):   # shown with frames and fps
                print(f"note        {line}")
    return 0
