"""Learned closure variables: a per-particle, permutation-invariant encoder of the local
environment, averaged over particles (so additive like the observables).

Features of particle i (rotation and permutation invariant, :func:`local_features`):
distances to its 12 nearest neighbours (sorted) over the data's mean spacing and, in 2D,
|psi4_i|, |psi6_i| and the alignment Re(psi6_i conj(<psi6_j>)) with its 6 nearest
neighbours' mean (high inside a grain, low at grain boundaries).

The encoder is a small MLP, features -> n_closure numbers in (-1, 1) (tanh). A patch's
closure variables are the means of the codes over its inner particles, the whole
system's over all particles. As in the reference (Chen et al.), the encoder is trained as
an autoencoder of the configuration: a decoder reconstructs each particle's features from
its code. Reconstruction alone keeps whatever varies most, which need not be what the
observables' dynamics depends on, so a second term asks a linear head to predict each
patch's observable increment over the macroscopic step from the patch's observables and
mean code (partial evolution supplies those increments). Both terms are in standardised
units and weighted equally.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import ColloidcgError, ParameterError
from ..structure.order import bond_order
from .observables import knn

__all__ = ["ClosureEncoder", "local_features", "train_closure", "load_closure", "mean_spacing", "N_NEIGHBOURS"]

N_NEIGHBOURS = 12
CONFIG_FILE = "closure.json"
STATE_FILE = "closure.pt"


def local_features(state, spacing: float) -> np.ndarray:
    """(N, F) rotation-invariant features of every particle of ``state`` (pos (N, d) px,
    box or None), lengths in units of ``spacing`` px. F = 12 (3D) or 15 (2D)."""
    pos = np.asarray(state.pos, np.float64)
    k = min(N_NEIGHBOURS, len(pos) - 1)
    sep, dist, idx = knn(pos, state.box, k)
    feats = [dist / spacing]
    if k < N_NEIGHBOURS:
        feats.append(np.full((len(pos), N_NEIGHBOURS - k), np.max(dist) / spacing))
    if pos.shape[1] == 2:
        psi6 = bond_order(sep[:, :6], 6).mean(1)
        psi4 = bond_order(sep[:, :4], 4).mean(1)
        align = np.real(psi6 * np.conj(psi6[idx[:, :6]].mean(1)))
        feats += [np.abs(psi4)[:, None], np.abs(psi6)[:, None], align[:, None]]
    return np.concatenate(feats, axis=1)


class ClosureEncoder(torch.nn.Module):
    """features (N, F) -> codes (N, n_closure) in (-1, 1); a decoder back to features.

    The features are standardised with the training data's mean and scale (kept as
    buffers); ``spacing`` (px) is the length unit of the features.
    """

    def __init__(self, n_features: int, n_closure: int, spacing: float, hidden: int = 32):
        super().__init__()
        self.n_features, self.n_closure, self.spacing, self.hidden = int(n_features), int(n_closure), float(spacing), int(hidden)
        self.enc = torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, n_closure), torch.nn.Tanh()).double()
        self.dec = torch.nn.Sequential(torch.nn.Linear(n_closure, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, n_features)).double()
        self.register_buffer("f_mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("f_scale", torch.ones(n_features, dtype=torch.float64))

    def encode_features(self, f: torch.Tensor) -> torch.Tensor:
        return self.enc((f - self.f_mean) / self.f_scale)

    @torch.no_grad()
    def codes(self, state) -> np.ndarray:
        """(N, n_closure) per-particle codes of a state."""
        f = torch.as_tensor(local_features(state, self.spacing))
        return self.encode_features(f).numpy()

    def whole(self, state) -> np.ndarray:
        """(n_closure,) the closure variables of a whole state: the mean code."""
        return self.codes(state).mean(0)

    def patch_mean(self, state, inner_mask) -> np.ndarray:
        """(n_closure,) a patch's closure variables: the mean code of its inner particles."""
        return self.codes(state)[np.asarray(inner_mask, bool)].mean(0)

    def save(self, folder) -> None:
        import io

        from ..outputs import atomic_write_bytes, atomic_write_json
        folder = Path(folder)
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        atomic_write_bytes(folder / STATE_FILE, buf.getvalue())
        atomic_write_json(folder / CONFIG_FILE, {"n_features": self.n_features, "n_closure": self.n_closure,
                                                  "spacing_px": self.spacing, "hidden": self.hidden})


def load_closure(folder) -> ClosureEncoder | None:
    """The encoder saved in ``folder`` by :meth:`ClosureEncoder.save`; None when the
    folder has none (an SDE without closure variables)."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        return None
    try:
        c = json.loads((folder / CONFIG_FILE).read_text())
        enc = ClosureEncoder(c["n_features"], c["n_closure"], c["spacing_px"], c["hidden"])
        enc.load_state_dict(torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ColloidcgError(f"{folder}: unreadable closure encoder ({exc})") from None
    enc.eval()
    return enc


def train_closure(patch_features: list[np.ndarray], patch_obs0: np.ndarray, patch_dobs: np.ndarray, *,
                  n_closure: int, spacing: float, hidden: int = 32, iterations: int = 400, lr: float = 5e-3,
                  max_particles: int = 20000, seed: int = 0, progress: bool = False) -> tuple[ClosureEncoder, dict]:
    """Train a :class:`ClosureEncoder`.

    patch_features : per patch, (M_p, F) features of its inner particles before the step.
    patch_obs0, patch_dobs : (P, n_obs) each patch's observables before the step and
        their increment over it.
    Loss = reconstruction MSE of the (standardised) features + MSE of the (standardised)
    increment predicted linearly from [observables, mean code]. Full batch over a random
    subset of up to ``max_particles`` particles for the reconstruction; every patch for
    the prediction. Returns (encoder, {'reconstruction': .., 'prediction': .., and the
    same for a zero code}).
    """
    if int(n_closure) != n_closure or n_closure < 1:
        raise ParameterError(f"n_closure: must be a positive integer, got {n_closure}")
    if len(patch_features) < 2:
        raise ColloidcgError("closure: fewer than two patches to train the closure encoder on")
    rng = np.random.default_rng(seed)
    torch.manual_seed(int(seed))
    allf = np.concatenate(patch_features)
    enc = ClosureEncoder(allf.shape[1], int(n_closure), spacing, hidden)
    enc.f_mean.copy_(torch.as_tensor(allf.mean(0)))
    enc.f_scale.copy_(torch.as_tensor(np.maximum(allf.std(0), 1e-9)))
    sub = allf[rng.choice(len(allf), min(len(allf), max_particles), replace=False)]
    F = torch.as_tensor(sub)
    Fs = (F - enc.f_mean) / enc.f_scale
    sizes = np.array([len(p) for p in patch_features])
    owner = torch.as_tensor(np.repeat(np.arange(len(sizes)), sizes))
    Fall = torch.as_tensor(allf)
    o0 = np.asarray(patch_obs0, np.float64)
    do = np.asarray(patch_dobs, np.float64)
    O0 = torch.as_tensor((o0 - o0.mean(0)) / np.maximum(o0.std(0), 1e-12))
    DO = torch.as_tensor((do - do.mean(0)) / np.maximum(do.std(0), 1e-12))
    head = torch.nn.Linear(o0.shape[1] + int(n_closure), do.shape[1]).double()
    opt = torch.optim.Adam(list(enc.parameters()) + list(head.parameters()), lr=lr)
    counts = torch.as_tensor(sizes, dtype=torch.float64)[:, None]
    it = range(int(iterations))
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="closure encoder", unit="it")

    def losses():
        code = enc.encode_features(Fall)
        mean_code = torch.zeros(len(sizes), int(n_closure), dtype=torch.float64).index_add_(0, owner, code) / counts
        pred = head(torch.cat([O0, mean_code], 1))
        rec = enc.dec(enc.encode_features(F))
        return torch.mean((rec - Fs) ** 2), torch.mean((pred - DO) ** 2)

    for _ in it:
        opt.zero_grad()
        r, p = losses()
        (r + p).backward()
        opt.step()
    enc.eval()
    with torch.no_grad():
        r, p = losses()
        # the prediction a linear head reaches from the observables alone (least squares)
        X = torch.cat([O0, torch.ones(len(O0), 1, dtype=torch.float64)], 1)
        sol = torch.linalg.lstsq(X, DO).solution
        p0 = torch.mean((X @ sol - DO) ** 2)
    return enc, {"reconstruction_mse": float(r), "prediction_mse": float(p),
                 "prediction_mse_observables_only": float(p0)}


def mean_spacing(state) -> float:
    """The mean nearest-neighbour distance of a state, px (the features' length unit)."""
    _, d, _ = knn(np.asarray(state.pos, np.float64), state.box, 1)
    return float(np.mean(d))

