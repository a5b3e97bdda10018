"""Saving and loading a model directory.

A model directory holds ``model.pt`` (the weights, a torch state dict) and
``config.json`` (model configuration, data calibration, format version, package version).
Files are written atomically. Loading checks the format version and refuses, with one
line naming the directory, anything it cannot read.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from .._version import __version__
from ..errors import ColloidcgError
from ..outputs import atomic_write_bytes, atomic_write_json, sha256_file
from .config import ModelConfig
from .model import MetriplecticModel

#: Bump when the meaning of stored weights changes. 2: frame-averaged velocities with a
#: latent instantaneous velocity and exact substrate friction; U's stiffness scale.
FORMAT_VERSION = 2
FORMAT_NAME = "colloidcg-metriplectic"


#: Names of weights in model folders written before the energy terms became modules of their
#: own (colloidcg <= 0.8): old prefix -> new prefix. The weights mean the same.
RENAMED = (("kernel.", "pairfn.kernel."), ("pair.mlp.", "pairfn.coef.mlp."),
           ("energy.", "terms.density.eos."), ("pair_potential.", "terms.pair.potential."),
           ("raw_shear", "terms.deviatoric.raw_mu"))


def upgrade_state_dict(state: dict, model: MetriplecticModel) -> dict:
    """A state dict of an older layout with its keys renamed to this version's
    (:data:`RENAMED`); a model without a substrate gets the (unused) substrate parameters
    it lacked. Current state dicts are returned unchanged."""
    out = {}
    for key, value in state.items():
        for old, new in RENAMED:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    own = model.state_dict()
    for key in ("raw_gamma0", "raw_alpha0"):
        if key not in out and key in own:
            out[key] = own[key].detach().clone()
    return out


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
           "weights_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
           "colloidcg_version": __version__, "model": model.config.to_dict(),
           "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
    if extra:
        cfg.update(extra)
    atomic_write_json(directory / "config.json", cfg)
    return directory


#: Largest sizes a model configuration may ask for: far above any trained model, far
#: below sizes that would exhaust memory when the networks are allocated.
MODEL_LIMITS = {"dim": (2, 3), "n_s": (1, 16), "width": (1, 4096), "depth": (1, 32),
                "n_kernel": (1, 256), "energy_width": (1, 4096), "energy_depth": (1, 32),
                "encoder_width": (1, 4096), "n_rbf": (1, 1024), "n_pair": (0, 1024)}
#: Physical scales: finite and positive (size_scale: finite and >= 0).
MODEL_SCALES = ("cutoff", "k_B", "tau", "friction_scale", "mass_scale", "theta_ref", "volume_ref", "stiffness",
                "fabric_ref")


def s0_share_expected(share, n_s: int) -> str:
    """What ``ModelConfig.s0_heat_share`` must be, where ``share`` (with ``n_s`` entropic
    variables) is not that; "" where it is fine. One rule for saved models and training
    options."""
    import math

    if isinstance(share, bool) or not isinstance(share, (int, float)) or not (
            math.isfinite(share) and 0.0 <= share < 1.0):
        return "a number from 0 to below 1"
    if share > 0 and n_s < 2:
        return "0 with n_s = 1 (a fixed share for S0 needs n_s >= 2)"
    return ""


def check_model_config(model: dict, where: str) -> None:
    """Refuse a model configuration outside sane limits before anything is allocated;
    the one-line error names ``where`` (the file) and the key."""
    import math

    if not isinstance(model, dict):
        raise ColloidcgError(f"{where}: 'model' must be a JSON object, got {type(model).__name__}")
    for key, (lo, hi) in MODEL_LIMITS.items():
        if key not in model:
            continue
        v = model[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ColloidcgError(f"{where}: 'model.{key}' must be an integer from {lo} to {hi}, got {v!r}")
    if not isinstance(model.get("ordered_s", False), bool):
        raise ColloidcgError(f"{where}: 'model.ordered_s' must be true or false, got {model['ordered_s']!r}")
    expected = s0_share_expected(model.get("s0_heat_share", 0.0), model.get("n_s", 1))
    if expected:
        raise ColloidcgError(f"{where}: 'model.s0_heat_share' must be {expected}, got "
                             f"{model['s0_heat_share']!r} with n_s = {model.get('n_s', 1)}")
    terms = model.get("terms", {})
    if not (isinstance(terms, dict) and all(isinstance(k, str) and isinstance(v, dict) for k, v in terms.items())):
        raise ColloidcgError(f"{where}: 'model.terms' must map energy-term names to option tables, got {terms!r}")
    from .terms import REGISTRY
    unknown = sorted(set(terms) - set(REGISTRY))
    if unknown:
        raise ColloidcgError(f"{where}: the model uses energy term(s) {unknown} that this colloidcg "
                             f"{__version__} does not have (it has {sorted(REGISTRY)})")
    for key in MODEL_SCALES + ("size_scale",):
        if key not in model:
            continue
        v = model[key]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
            (v >= 0 if key == "size_scale" else v > 0)
        if not ok:
            raise ColloidcgError(f"{where}: 'model.{key}' must be a finite "
                                 f"{'non-negative' if key == 'size_scale' else 'positive'} number, got {v!r}")


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
    check_model_config(cfg.get("model"), str(directory / "config.json"))
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
    want = cfg.get("weights_sha256")
    if want and weights_name == "model.pt" and sha256_file(wpath) != want:
        raise ColloidcgError(f"{wpath}: the weights do not belong to {directory / 'config.json'} "
                             "(checksum differs): the model folder was not written together; retrain")
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
        model.load_state_dict(upgrade_state_dict(state, model))
    except Exception as exc:  # corrupt or mismatched file: several unrelated types
        raise ColloidcgError(f"{wpath}: weights do not match the configuration ({exc.__class__.__name__})") from None
    return model.to(device=device), cfg
