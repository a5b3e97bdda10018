"""Model bundles: a trained model packed for use elsewhere, and loading it back.

A bundle is a folder::

    BUNDLE/
      bundle.json        what the model is: architecture, units, dt, cutoff, calibration,
                         provenance of the training data, metrics, package and torch
                         versions, the TorchScript signatures, checksums of every file
      model.pt           the weights (torch state dict)
      config.json        the model-directory configuration (so BUNDLE is also a model
                         directory that colloidcg.core.persist can read)
      torchscript/model.pt  the model itself with its integrator, compiled (TorchScript;
                         colloidcg.export.compiled): drift, noise, energy, encoder, pair
                         search, and the integrator's init and step (the frame-averaged
                         exact-OU step for the default models)
      driver.py          the torch-only rollout loop (colloidcg.core.driver, verbatim)
      rollout.py         python rollout.py --init INIT.csv --steps N --seed S -o OUT.csv:
                         a rollout with torch alone, the same as colloidcg simulate's

The folder is assembled under a temporary name beside the target and renamed into place,
so an interrupted export never leaves a partial bundle under the final name.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import torch

from .._version import __version__
from .compiled import COMMON as COMMON_UNITS
from ..core.integrators import integrator_name
from ..errors import ColloidcgError, OutputExistsError
from ..outputs import Commit, sha256_file

BUNDLE_FORMAT = "colloidcg-model-bundle"
#: 2: the compiled model itself (torchscript/model.pt) with driver.py and rollout.py, in
#: place of version 1's four mirror modules.
BUNDLE_VERSION = 2
BUNDLE_JSON = "bundle.json"
TS_DIR = "torchscript"
UNITS = {
    "length": "um", "time": "s", "velocity": "um/s", "dt": "s", "cutoff": "um",
    "S": "dimensionless (units of k_B)",
    "energy": "model energy unit = model mass unit x um^2/s^2 (k_B = 1, so temperatures "
              "theta = dU/dS are in the same unit)",
    "mass": "model mass unit (learned; the model's energy unit follows from it)",
}


def is_bundle(path: str | os.PathLike) -> bool:
    return (Path(path) / BUNDLE_JSON).is_file()


def _json_clean(obj):
    """JSON-safe copy: NaN/inf become None (strict JSON for other tools)."""
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _training_provenance(cfg: dict) -> dict:
    """Where the training tracks came from: path, checksum and their own sidecar."""
    cal = cfg.get("calibration") or {}
    src = cal.get("tracks")
    prov = {"tracks": src, "tracks_sha256": None, "tracks_sidecar": None}
    if src and Path(src).is_file():
        prov["tracks_sha256"] = sha256_file(src)
        side = Path(src).with_suffix(".json")
        if side.is_file():
            try:
                rec = json.loads(side.read_text())
            except ValueError:
                rec = None
            if isinstance(rec, dict):
                prov["tracks_sidecar"] = {k: rec.get(k) for k in
                                          ("stage", "colloidcg_version", "created", "inputs",
                                           "parameters", "units", "video", "n_particles")
                                          if k in rec}
    return prov


def export_bundle(model_dir: str | os.PathLike, bundle_dir: str | os.PathLike, overwrite: bool = False,
                  metrics: dict | None = None) -> Path:
    """Pack the model directory ``model_dir`` (from ``colloidcg train``) as a bundle.

    Parameters
    ----------
    model_dir : folder with model.pt and config.json (report.json, when present, supplies
        training metrics).
    bundle_dir : the bundle folder to create.
    overwrite : replace an existing ``bundle_dir``.
    metrics : extra metrics to record (e.g. model-versus-data errors from evaluate).

    Returns the bundle path. Raises :class:`ColloidcgError` for an unreadable model
    directory or an existing target without ``overwrite`` (checked before any work).
    """
    from ..core import driver
    from ..core.persist import load_model as load_dir
    from .compiled import SIGNATURES, check_agreement, compile_model

    model_dir, bundle_dir = Path(model_dir), Path(bundle_dir)
    if bundle_dir.exists() and not overwrite:
        raise OutputExistsError(f"{bundle_dir}: already exists; pass --overwrite to replace it (nothing was written)")
    if bundle_dir.resolve() == model_dir.resolve():
        raise ColloidcgError(f"{bundle_dir}: the bundle must be a new folder, not the model directory itself")
    model, cfg = load_dir(model_dir)
    model.eval()
    compiled = compile_model(model)
    diffs = check_agreement(model, compiled)

    report = {}
    rpath = model_dir / "report.json"
    if rpath.is_file():
        try:
            report = json.loads(rpath.read_text())
        except ValueError:
            report = {}
    train_metrics = {k: report.get(k) for k in
                     ("epochs_run", "best_epoch", "best_val_score", "rearrangement_auc",
                      "localisation_noise", "cutoff", "particle_steps_per_s") if k in report}
    cal = cfg.get("calibration") or {}
    fps = cal.get("fps")
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    desc = {
        "bundle_format": BUNDLE_FORMAT,
        "bundle_version": BUNDLE_VERSION,
        "colloidcg_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "created": created,
        "architecture": {"class": "MetriplecticModel", "model_format": cfg.get("format"),
                         "model_format_version": cfg.get("format_version"), **cfg["model"]},
        "dtype": cfg.get("dtype", "float64"),
        "units": UNITS,
        "dt": (1.0 / fps) if fps else None,
        "cutoff": cfg["model"].get("cutoff"),
        "calibration": cal,
        "provenance": {"model_dir": str(model_dir.resolve()), "training_data": _training_provenance(cfg),
                       "train_options": cfg.get("train")},
        "metrics": {"training": train_metrics, **({"evaluation": metrics} if metrics else {})},
        "torchscript": {"file": f"{TS_DIR}/model.pt", "load": "ts = torch.jit.load(...)",
                        "inputs": COMMON_UNITS, "methods": SIGNATURES,
                        "integrator": integrator_name(model)},
        "rollout": "python rollout.py --init INIT.csv --steps N --seed S -o OUT.csv (see rollout.py --help)",
        "torchscript_check_max_rel_diff": diffs,
    }

    # the bundle is built in a transaction folder beside it and swapped in whole: a reader
    # (or a killed run) sees no bundle, the previous complete one or the new complete one
    with Commit(bundle_dir.parent) as tx:
        tmp = tx.path(bundle_dir.name)
        tmp.mkdir()
        shutil.copy2(model_dir / "model.pt", tmp / "model.pt")
        shutil.copy2(model_dir / "config.json", tmp / "config.json")
        (tmp / TS_DIR).mkdir()
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # TorchScript is deprecated upstream
            torch.jit.save(compiled, buf)
        (tmp / TS_DIR / "model.pt").write_bytes(buf.getvalue())
        shutil.copy2(driver.__file__, tmp / "driver.py")
        shutil.copy2(Path(__file__).with_name("rollout_script.py"), tmp / "rollout.py")   # never imported here
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        desc["files"] = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in files}
        text = json.dumps(_json_clean(desc), indent=2, allow_nan=False)
        (tmp / BUNDLE_JSON).write_text(text + "\n")
        tx.commit()
    return bundle_dir


def read_bundle(path: str | os.PathLike, verify: bool = True) -> dict:
    """bundle.json of the bundle at ``path``, checked for format, version and checksums."""
    path = Path(path)
    jpath = path / BUNDLE_JSON
    if not jpath.is_file():
        raise ColloidcgError(f"{path}: not a model bundle (no {BUNDLE_JSON})")
    try:
        desc = json.loads(jpath.read_text())
    except (OSError, ValueError) as exc:
        raise ColloidcgError(f"{jpath}: unreadable bundle description ({exc})") from None
    if not isinstance(desc, dict) or desc.get("bundle_format") != BUNDLE_FORMAT:
        raise ColloidcgError(f"{jpath}: not a colloidcg model bundle (bundle_format is "
                             f"{desc.get('bundle_format') if isinstance(desc, dict) else None!r}, "
                             f"expected {BUNDLE_FORMAT!r})")
    ver = desc.get("bundle_version")
    if ver != BUNDLE_VERSION:
        raise ColloidcgError(
            f"{path}: bundle version {ver!r} (written by colloidcg {desc.get('colloidcg_version', '?')}) "
            f"is incompatible with this colloidcg {__version__}, which reads bundle version "
            f"{BUNDLE_VERSION}; export the model again with this version")
    if verify:
        for name, digest in (desc.get("files") or {}).items():
            f = path / name
            if not f.is_file():
                raise ColloidcgError(f"{path}: bundle is incomplete, {name} is missing")
            if sha256_file(f) != digest:
                raise ColloidcgError(f"{path}: {name} does not match the checksum in {BUNDLE_JSON} "
                                     "(the bundle was modified or damaged)")
    return desc


def load_model(path: str | os.PathLike, device: str = "cpu"):
    """Reload a bundle or a model directory, to simulate or fine-tune.

    Returns ``(model, config)``: a :class:`~colloidcg.core.model.MetriplecticModel` on
    ``device`` and the model directory's configuration dict (architecture, dtype,
    calibration, training options), which :func:`colloidcg.simulate.simulate` takes; for a
    bundle, ``config["bundle"]`` holds bundle.json. An incompatible or damaged bundle or
    model directory raises :class:`ColloidcgError` saying why.
    """
    from ..core.persist import load_model as load_dir

    path = Path(path)
    if not path.exists():
        raise ColloidcgError(f"{path}: no such model bundle or model directory")
    if is_bundle(path):
        desc = read_bundle(path)
        model, cfg = load_dir(path, device=device)
        cfg = dict(cfg)
        cfg["bundle"] = desc
        return model, cfg
    if path.is_dir() and not (path / "config.json").is_file():
        raise ColloidcgError(f"{path}: neither a model bundle ({BUNDLE_JSON}) nor a model directory "
                             "(config.json + model.pt from colloidcg train)")
    return load_dir(path, device=device)
