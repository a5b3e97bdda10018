"""Saving and loading a model directory.

A model directory holds ``model.pt`` (the weights, a torch state dict) and
``config.json`` (model configuration, data calibration, format version, package version).
Files are written atomically. Loading checks the format version and refuses, with one
line naming the directory, anything it cannot read.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from .._version import __version__
from ..errors import ColloidcgError
from ..outputs import atomic_write_bytes, atomic_write_json
from .model import MetriplecticModel, ModelConfig

#: Bump when the meaning of stored weights changes. 2: frame-averaged velocities with a
#: latent instantaneous velocity and exact substrate friction; U's stiffness scale.
FORMAT_VERSION = 2
FORMAT_NAME = "colloidcg-metriplectic"


def save_model(model: MetriplecticModel, directory, extra: dict | None = None,
               weights_name: str = "model.pt") -> Path:
    """Write ``model.pt`` and ``config.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, buf)
    atomic_write_bytes(directory / weights_name, buf.getvalue())
    cfg = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
           "colloidcg_version": __version__, "model": model.config.to_dict(),
           "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
    if extra:
        cfg.update(extra)
    atomic_write_json(directory / "config.json", cfg)
    return directory


def read_config(directory) -> dict:
    directory = Path(directory)
    path = directory / "config.json"
    if not directory.is_dir():
        raise ColloidcgError(f"{directory}: not a model directory (expected a folder with config.json and model.pt)")
    if not path.exists():
        raise ColloidcgError(f"{directory}: no config.json; not a colloidcg model directory")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ColloidcgError(f"{path}: unreadable model configuration ({exc})") from None
    if cfg.get("format") != FORMAT_NAME or cfg.get("format_version") != FORMAT_VERSION:
        raise ColloidcgError(
            f"{directory}: model format {cfg.get('format')!r} version {cfg.get('format_version')!r} "
            f"(written by colloidcg {cfg.get('colloidcg_version', '?')}) is incompatible with this "
            f"colloidcg {__version__}, which reads {FORMAT_NAME!r} version {FORMAT_VERSION}; retrain the model")
    return cfg


def load_model(directory, device="cpu", weights_name: str = "model.pt") -> tuple[MetriplecticModel, dict]:
    """Load a model directory; returns (model, config dict)."""
    directory = Path(directory)
    cfg = read_config(directory)
    if cfg.get("model", {}).get("deviatoric") and "fabric_ref" not in cfg["model"]:
        raise ColloidcgError(
            f"{directory}: model trained with the deviatoric energy of colloidcg "
            f"{cfg.get('colloidcg_version', '?')}, whose fabric tensor was normalised differently; "
            "its weights do not fit this version's deviatoric energy; retrain the model")
    try:
        mcfg = ModelConfig.from_dict(cfg["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ColloidcgError(f"{directory}: config.json has an invalid model section ({exc})") from None
    dtype = getattr(torch, str(cfg.get("dtype", "float64")), None)
    if not isinstance(dtype, torch.dtype):
        raise ColloidcgError(f"{directory}: config.json has an unknown dtype {cfg.get('dtype')!r}")
    model = MetriplecticModel(mcfg).to(dtype)
    wpath = directory / weights_name
    if not wpath.exists():
        raise ColloidcgError(f"{directory}: no {weights_name}; the model directory is incomplete")
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # corrupt or mismatched file: several unrelated types
        raise ColloidcgError(f"{wpath}: weights do not match the configuration ({exc.__class__.__name__})") from None
    return model.to(device=device), cfg
