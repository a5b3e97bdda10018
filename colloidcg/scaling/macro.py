"""The macroscopic SDE dz = mu(z) dt + sigma(z) dW, learned from (partial) increments.

After Chen et al., "Scalable learning of macroscopic stochastic dynamics": the drift mu
and a Cholesky factor sigma of the diffusion are small neural networks of the
macroscopic state z (observables and closure variables, :mod:`colloidcg.scaling.observables`,
:mod:`colloidcg.scaling.closure`). They are fitted by the Gaussian likelihood of increments

    z1 - z0 ~ N(mu(z0) dt, lambda sigma(z0) sigma(z0)^T dt + jitter)

where an increment of partial evolution (one patch of K evolved, the rest frozen) has the
whole system's mean but K times its covariance, so lambda = K (the patch count) makes
sigma the whole (upsampled) system's noise. At inference sigma is used unscaled for that
system; a system whose area (volume) is F times the one the SDE was defined for has
covariance sigma sigma^T / F, so fluctuations shrink as 1/sqrt(area).

Units: z in its own units (observables are dimensionless), time in frames of the
microscopic data (the SDE's step ``dt`` is the macroscopic step, in frames), areas in px^2
(px^3 in 3D).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ColloidcgError, ParameterError
from .latent import BlockPaths

__all__ = ["MacroSDE", "BaggedSDE", "SDEConfig", "FitReport", "Encoder", "fit_sde", "fit_bagged", "load_sde", "gaussian_nll", "partial_increments",
           "trajectory_increments", "block_increments", "block_pairs", "block_draw", "BlockDraw", "refine_drift", "learn_macro", "learn_block", "MacroLearned"]

#: A run of :meth:`MacroSDE.simulate` counts as outside the fitted states when it goes this
#: fraction of the data's range beyond either end (:meth:`MacroSDE.outside_data`).
DATA_MARGIN = 0.25

#: Files of a saved SDE inside its folder.
CONFIG_FILE = "sde.json"
STATE_FILE = "sde.pt"


class _Net(torch.nn.Module):
    """A small MLP with a linear skip: out = W u + b + MLP(u) (a linear drift, such as an
    Ornstein-Uhlenbeck process's, is represented exactly by the skip)."""

    def __init__(self, n_in: int, n_out: int, hidden: int, layers: int):
        super().__init__()
        self.linear = torch.nn.Linear(n_in, n_out)
        mods, w = [], n_in
        for _ in range(layers):
            mods += [torch.nn.Linear(w, hidden), torch.nn.SiLU()]
            w = hidden
        mods.append(torch.nn.Linear(w, n_out))
        self.mlp = torch.nn.Sequential(*mods)
        torch.nn.init.zeros_(self.mlp[-1].weight)
        torch.nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, u):
        return self.linear(u) + self.mlp(u)


@dataclass
class SDEConfig:
    """What a saved SDE needs besides its weights (json).

    names : the variables of z, in order.
    dt : the macroscopic step, frames.
    area_px2 : area (volume) of the system whose noise sigma describes (unscaled), px^2.
    tile_area_px2 : area of the small system the data came from (``factor`` in
        :meth:`MacroSDE.simulate` is relative to it), px^2.
    z_mean, z_scale : normalisation of z (d,).
    drift_scale : typical |drift| per component, units of z per frame (d,).
    noise_scale : typical sigma per component, units of z per sqrt(frame) (d,).
    z0 : the state the runs start from by default (d,).
    labels : constant labels of the data (e.g. area_fraction), not evolved.
    hidden, layers : the networks' width and depth.
    fast_var : variance of z's fast part per component (d,) for a system of ``area_px2``,
        or None (none): a part that decorrelates within one macro step (the thermal
        fluctuation of a mean over particles), measured apart from the diffusion
        (:func:`fast_variance`). The likelihood counts it in every increment
        (:func:`gaussian_nll`) and :meth:`MacroSDE.simulate` adds it to every state it
        returns, scaled with the covariance (1 / area).
    """

    names: list
    dt: float
    area_px2: float
    tile_area_px2: float
    z_mean: list
    z_scale: list
    drift_scale: list
    noise_scale: list
    z0: list
    labels: dict = field(default_factory=dict)
    hidden: int = 32
    layers: int = 2
    extra: dict = field(default_factory=dict)
    fast_var: list | None = None


class MacroSDE(torch.nn.Module):
    """dz = mu(z) dt + sigma(z) dW, d = len(names) variables.

    mu(z) = drift_scale * f(u), sigma(z) = diag(noise_scale) L(u), u = (z - z_mean) / z_scale,
    f a small MLP with a linear skip, L lower triangular with a positive diagonal
    (softplus + 1e-4). Float64 throughout. With ``config.fast_var`` the observed z is
    x + e: x follows the SDE, e is independent at every step, N(0, fast_var) (scaled as
    the covariance).
    """

    def __init__(self, config: SDEConfig):
        super().__init__()
        self.config = config
        d = len(config.names)
        self.d = d
        self.drift_net = _Net(d, d, config.hidden, config.layers).double()
        self.chol_net = _Net(d, d * (d + 1) // 2, config.hidden, config.layers).double()
        self.register_buffer("z_mean", torch.tensor(config.z_mean, dtype=torch.float64))
        self.register_buffer("z_scale", torch.tensor(config.z_scale, dtype=torch.float64))
        self.register_buffer("drift_scale", torch.tensor(config.drift_scale, dtype=torch.float64))
        self.register_buffer("noise_scale", torch.tensor(config.noise_scale, dtype=torch.float64))
        self.fast_var = (torch.zeros(d, dtype=torch.float64) if config.fast_var is None
                         else torch.tensor(config.fast_var, dtype=torch.float64))
        self._tril = torch.tril_indices(d, d)
        with torch.no_grad():    # start at sigma = noise_scale (softplus(x) = 1 - 1e-4 on the diagonal)
            diag = (self._tril[0] == self._tril[1])
            self.chol_net.linear.weight.zero_()
            self.chol_net.linear.bias.zero_()
            self.chol_net.linear.bias[diag] = math.log(math.expm1(1.0 - 1e-4))

    @property
    def names(self) -> list:
        return list(self.config.names)

    @property
    def dt(self) -> float:
        return float(self.config.dt)

    def _u(self, z):
        return (z - self.z_mean) / self.z_scale

    def drift(self, z: torch.Tensor) -> torch.Tensor:
        """mu(z), (R, d) -> (R, d), units of z per frame."""
        return self.drift_net(self._u(z)) * self.drift_scale

    def sigma(self, z: torch.Tensor) -> torch.Tensor:
        """sigma(z), (R, d) -> (R, d, d) lower triangular, units of z per sqrt(frame)."""
        raw = self.chol_net(self._u(z))
        L = z.new_zeros(z.shape[0], self.d, self.d)
        L[:, self._tril[0], self._tril[1]] = raw
        i = torch.arange(self.d)
        L[:, i, i] = torch.nn.functional.softplus(L[:, i, i]) + 1e-4
        return L * self.noise_scale[None, :, None]

    def covariance_scale(self, factor: float | None = None, area_px2: float | None = None) -> float:
        """The factor on sigma sigma^T for a system of ``factor`` times the tile's area (or
        of ``area_px2``): the defining area over the system's area."""
        if area_px2 is None:
            if factor is None:
                return 1.0
            area_px2 = float(factor) * float(self.config.tile_area_px2)
        if not area_px2 > 0:
            raise ParameterError(f"factor: the system's area must be > 0, got {area_px2} px^2")
        return float(self.config.area_px2) / float(area_px2)

    @torch.no_grad()
    def simulate(self, *, steps: int, runs: int, factor: float | None = None, area_px2: float | None = None,
                 z0=None, seed: int = 0, progress: bool = False) -> np.ndarray:
        """Euler-Maruyama ensemble, vectorised over runs.

        steps : macroscopic steps of ``dt`` frames. runs : independent runs.
        factor : the system's area over the tile's (default: the area the SDE was fitted
            for); the covariance is scaled by :meth:`covariance_scale`.
        z0 : (d,) or (runs, d) start (default: the stored ``z0``).
        Returns (runs, steps + 1, d) float64: the SDE's state, plus at every step after
        the start an independent draw of the fast part when the SDE has one (``fast_var``).
        """
        if int(steps) != steps or steps < 1:
            raise ParameterError(f"steps: must be a positive integer, got {steps}")
        if int(runs) != runs or runs < 1:
            raise ParameterError(f"runs: must be a positive integer, got {runs}")
        c = self.covariance_scale(factor, area_px2)
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.as_tensor(self.config.z0 if z0 is None else z0, dtype=torch.float64)
        z = z.expand(int(runs), self.d).clone() if z.ndim == 1 else z.clone()
        if z.shape != (int(runs), self.d):
            raise ParameterError(f"z0: expected ({self.d},) or ({runs}, {self.d}), got {tuple(z.shape)}")
        out = torch.empty(int(runs), int(steps) + 1, self.d, dtype=torch.float64)
        out[:, 0] = z
        dt = self.dt
        amp = math.sqrt(dt * c)
        it = range(int(steps))
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(it, desc="macro SDE", unit="step")
        fast = torch.sqrt(c * self.fast_var)
        for k in it:
            xi = torch.randn(int(runs), self.d, 1, dtype=torch.float64, generator=gen)
            z = z + self.drift(z) * dt + amp * (self.sigma(z) @ xi)[..., 0]
            out[:, k + 1] = z
            if self.config.fast_var is not None:
                out[:, k + 1] += fast * torch.randn(int(runs), self.d, dtype=torch.float64, generator=gen)
        return out.numpy()

    def outside_data(self, z: np.ndarray, margin: float = DATA_MARGIN) -> np.ndarray | None:
        """Which runs left the states the SDE was fitted on: (runs,) bool, True where a run's
        trajectory ``z`` ((runs, steps + 1, d), as :meth:`simulate` returns) goes outside
        [z_min - margin w, z_max + margin w] in any component, w = z_max - z_min over the
        fit's increments (both ends). There the drift and noise are extrapolations of the
        networks, which nothing in the data constrains (a run can then run away). None
        for an SDE saved without its data range (before this was recorded)."""
        lo, hi = self.config.extra.get("z_min"), self.config.extra.get("z_max")
        if lo is None or hi is None:
            return None
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        w = np.maximum(hi - lo, 1e-12)
        z = np.asarray(z, float)
        out = (z < lo - margin * w) | (z > hi + margin * w) | ~np.isfinite(z)
        return out.reshape(len(z), -1).any(axis=1)

    # ------------------------------------------------------------------ save / load
    def save(self, folder) -> Path:
        """Write ``sde.json`` (config) and ``sde.pt`` (state dict) into ``folder``, atomically."""
        return self._write(folder, {})

    def _write(self, folder, extra: dict) -> Path:
        """Write the state dict and the config (plus ``extra`` entries) atomically."""
        import io

        from ..outputs import atomic_write_bytes, atomic_write_json
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        atomic_write_bytes(folder / STATE_FILE, buf.getvalue())
        atomic_write_json(folder / CONFIG_FILE, {"kind": "colloidcg macro SDE", "version": 1,
                                                  "config": asdict(self.config), **extra})
        return folder


class BaggedSDE(MacroSDE):
    """An ensemble of M fitted :class:`MacroSDE` members used as one SDE (bagging):
    mu(z) = mean over members of mu_m(z), sigma(z) = the Cholesky factor of the mean of
    sigma_m sigma_m^T. Its ``config`` is the first member's (names, dt, areas, start),
    with ``extra["fits"] = M``; :meth:`simulate`, :meth:`covariance_scale` and
    :meth:`save` are :class:`MacroSDE`'s. Averaging the drift removes the part of one
    fit's error that differs between fits (initialisation, validation split, the data's
    resample), not the error the fits share.
    """

    def __init__(self, configs: list):
        torch.nn.Module.__init__(self)
        if not configs:
            raise ParameterError("fits: a bagged SDE needs at least one member")
        first = configs[0]
        for c in configs[1:]:
            if list(c.names) != list(first.names) or c.dt != first.dt or c.area_px2 != first.area_px2:
                raise ParameterError("fits: the members of a bagged SDE must share variables, dt and area")
        self.members = torch.nn.ModuleList([MacroSDE(c) for c in configs])
        span = {}
        if all("z_min" in c.extra and "z_max" in c.extra for c in configs):
            span = {"z_min": np.min([c.extra["z_min"] for c in configs], axis=0).tolist(),
                    "z_max": np.max([c.extra["z_max"] for c in configs], axis=0).tolist()}
        self.config = SDEConfig(**{**asdict(first), "extra": {**first.extra, **span, "fits": len(configs)}})
        self.d = len(first.names)
        self.fast_var = self.members[0].fast_var

    def drift(self, z: torch.Tensor) -> torch.Tensor:
        """The members' mean drift, (R, d) -> (R, d), units of z per frame."""
        return torch.stack([m.drift(z) for m in self.members]).mean(0)

    def sigma(self, z: torch.Tensor) -> torch.Tensor:
        """Cholesky factor of the members' mean diffusion, (R, d) -> (R, d, d)."""
        cov = torch.stack([(L @ L.transpose(1, 2)) for L in (m.sigma(z) for m in self.members)]).mean(0)
        return torch.linalg.cholesky(cov)

    def save(self, folder) -> Path:
        """Write ``sde.json`` (every member's config) and ``sde.pt`` into ``folder``, atomically."""
        return self._write(folder, {"members": [asdict(m.config) for m in self.members]})


def load_sde(folder) -> MacroSDE:
    """A :class:`MacroSDE` (or :class:`BaggedSDE`) saved by its ``save`` (in any process)."""
    folder = Path(folder)
    cfg_path, st_path = folder / CONFIG_FILE, folder / STATE_FILE
    if not cfg_path.is_file() or not st_path.is_file():
        raise ColloidcgError(f"{folder}: not a macro SDE folder (expected {CONFIG_FILE} and {STATE_FILE}, "
                             "as written by colloidcg macro train)")
    try:
        doc = json.loads(cfg_path.read_text())
        cfg = SDEConfig(**doc["config"])
        members = [SDEConfig(**c) for c in doc["members"]] if "members" in doc else None
    except (ValueError, KeyError, TypeError) as exc:
        raise ColloidcgError(f"{cfg_path}: unreadable macro SDE configuration ({exc})") from None
    sde = MacroSDE(cfg) if members is None else BaggedSDE(members)
    sde.load_state_dict(torch.load(st_path, map_location="cpu", weights_only=True))
    sde.eval()
    return sde


# ---------------------------------------------------------------------- fitting
def gaussian_nll(sde: MacroSDE, z0: torch.Tensor, dz: torch.Tensor, lam: float, jitter: float) -> torch.Tensor:
    """Mean negative log-likelihood (per increment, without the constant) of increments
    ``dz`` (M, d) from ``z0`` (M, d): N(mu dt, lam (sigma sigma^T dt + 2 diag(fast_var))
    + jitter^2 diag(noise_scale^2) dt), fast_var the SDE's fast part (zero without one:
    an increment holds the fast parts of both its ends)."""
    dt = sde.dt
    r = dz - sde.drift(z0) * dt
    L = sde.sigma(z0)
    cov = lam * dt * (L @ L.transpose(1, 2))
    cov = cov + torch.diag_embed((jitter * sde.noise_scale) ** 2 * dt + 2.0 * lam * sde.fast_var).expand_as(cov)
    C = torch.linalg.cholesky(cov)
    y = torch.linalg.solve_triangular(C, r[..., None], upper=False)[..., 0]
    logdet = torch.log(torch.diagonal(C, dim1=1, dim2=2)).sum(1)
    return (0.5 * (y ** 2).sum(1) + logdet).mean()


@dataclass
class FitReport:
    """What :func:`fit_sde` did: lambda, the jitter, iterations, train/validation NLL per
    increment, the number of increments."""

    lam: float
    jitter: float
    iterations: int
    train_nll: float
    val_nll: float
    n_increments: int
    latent_train_nll: float | None = None
    latent_val_nll: float | None = None


def fit_sde(z0, z1, *, dt: float, names, lam: float = 1.0, area_px2: float = 1.0,
            tile_area_px2: float | None = None, start=None, labels: dict | None = None,
            jitter: float = 1e-3, hidden: int = 32, layers: int = 2, iterations: int = 300,
            lr: float = 2e-3, weight_decay: float = 1e-5, val_fraction: float = 0.2, seed: int = 0,
            paths=None, path_weights=None, path_iterations: int = 200, path_lr: float = 1e-3,
            fast_var=None, latent=None, latent_iterations: int = 300, latent_lr: float = 1e-2,
            progress: bool = False) -> tuple[MacroSDE, FitReport]:
    """Fit :class:`MacroSDE` to increments by the Gaussian likelihood.

    z0, z1 : (M, d) states before and after one macroscopic step of ``dt`` frames (for
        partial evolution z1 = z(x0) + z_I(x1) - z_I(x0), see docs/scaling.md).
    lam : covariance scale of the increments (the patch count K for partial increments,
        1 for whole-system increments).
    area_px2 : area (volume) of the system the increments describe, px^2: the unscaled
        sigma is that system's noise. tile_area_px2 : the small system's area (default
        ``area_px2``); ``factor`` in :meth:`MacroSDE.simulate` is relative to it.
    start : (d,) the state simulations start from by default (default: the first row of z0).
    jitter : the noise floor, a fraction of the typical noise per component (added in
        quadrature, unscaled by lambda).
    iterations : full-batch Adam steps (lr, weight_decay); the state with the lowest
        validation NLL (a random ``val_fraction`` of the increments) is kept.
    paths : optional (B, H + 1, d) trajectories of the states the increments start from,
        one macro step apart (NaN after a trajectory's end; block states:
        :func:`block_draw`). When given, the drift is then refined so that its own
        integrated steps follow them over H macro steps (:func:`refine_drift`, the
        multi-step drift; ``path_weights`` (B,) weights per trajectory, ``path_iterations``
        Adam steps at ``path_lr``); sigma stays the likelihood fit's.
    fast_var : (d,) variance of z's fast part for a system of ``area_px2``
        (:func:`fast_variance`, scaled to that area), or None: sigma then describes the
        increments' whole spread, the fast part included.
    latent : optional :class:`~.latent.BlockPaths`, the block states' paths the increments
        came from (:meth:`~.latent.BlockPaths.pairs`). The increments then give only the
        start (the least-squares linear drift, corrected for the fast part when
        ``fast_var`` is given; their own likelihood is not optimised, its drift being
        biased) and the SDE is fitted by the latent-state likelihood of those paths
        (:func:`~.latent.fit_latent`:
        ``latent_iterations`` Adam steps at ``latent_lr``; the drift conditioned on the
        filtered slow state, free of the fast part's regression to the mean). Not with
        ``paths``.
    """
    if latent is not None and paths is not None:
        raise ParameterError("latent: the latent-state fit and the multi-step drift (paths) exclude each other")
    z0 = np.asarray(z0, np.float64)
    z1 = np.asarray(z1, np.float64)
    names = list(names)
    if z0.ndim != 2 or z0.shape != z1.shape or z0.shape[1] != len(names):
        raise ParameterError(f"increments: z0 and z1 must both be (M, {len(names)}), got {z0.shape} and {z1.shape}")
    if len(z0) < 10:
        raise ColloidcgError(f"increments: {len(z0)} increments are too few to fit an SDE (need >= 10)")
    if not np.isfinite(z0).all() or not np.isfinite(z1).all():
        raise ColloidcgError("increments: NaN or infinite values in z")
    if not (np.isfinite(lam) and lam > 0):
        raise ParameterError(f"lambda: must be a finite number > 0, got {lam}")
    if not dt > 0:
        raise ParameterError(f"dt: must be > 0 frames, got {dt}")
    if fast_var is not None:
        fast_var = np.asarray(fast_var, np.float64).reshape(-1)
        if fast_var.shape != (len(names),) or not np.all(np.isfinite(fast_var)) or np.any(fast_var < 0):
            raise ParameterError(f"fast_var: expected {len(names)} finite variances >= 0, got {fast_var}")
    dz = z1 - z0
    zs = np.maximum(z0.std(0), 1e-12)
    ds = np.maximum(np.abs(dz.mean(0)) / dt, 1e-12)
    fast2 = 0.0 if fast_var is None else 2.0 * lam * fast_var
    spread = np.sqrt(np.maximum(dz.var(0) - fast2, 0.05 * dz.var(0) + 1e-24))
    ns = spread / math.sqrt(lam * dt)
    ds = np.maximum(ds, spread / dt * 0.1)
    cfg = SDEConfig(names=names, dt=float(dt), area_px2=float(area_px2),
                    tile_area_px2=float(area_px2 if tile_area_px2 is None else tile_area_px2),
                    z_mean=z0.mean(0).tolist(), z_scale=zs.tolist(), drift_scale=ds.tolist(),
                    noise_scale=ns.tolist(), z0=list(map(float, z0[0] if start is None else start)),
                    labels=dict(labels or {}), hidden=int(hidden), layers=int(layers),
                    extra={"lambda": float(lam), "jitter": float(jitter),
                           "z_min": np.minimum(z0.min(0), z1.min(0)).tolist(),
                           "z_max": np.maximum(z0.max(0), z1.max(0)).tolist()},
                    fast_var=None if fast_var is None else fast_var.tolist())
    torch.manual_seed(int(seed))
    sde = MacroSDE(cfg)
    # start from the least-squares linear drift (an Ornstein-Uhlenbeck fit), the MLP at zero
    u = (z0 - z0.mean(0)) / zs
    X = np.concatenate([u, np.ones((len(u), 1))], axis=1)
    coef = np.linalg.lstsq(X, dz / dt / ds, rcond=None)[0]
    if latent is not None and fast_var is not None:
        coef = _errors_in_variables_start(u, dz / dt / ds, fast_var / zs ** 2, fast_var / (zs * dt * ds), coef)
    resid = dz - (X @ coef) * ds * dt
    with torch.no_grad():
        sde.drift_net.linear.weight.copy_(torch.as_tensor(coef[:-1].T))
        sde.drift_net.linear.bias.copy_(torch.as_tensor(coef[-1]))
        ns = np.sqrt(np.maximum(resid.var(0) - fast2, 0.05 * resid.var(0) + 1e-24)) / math.sqrt(lam * dt)
        sde.noise_scale.copy_(torch.as_tensor(ns))
    cfg.noise_scale = ns.tolist()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(z0))
    n_val = int(round(val_fraction * len(z0))) if len(z0) >= 20 else 0
    va, tr = perm[:n_val], perm[n_val:]
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    Z0, DZ = t(z0), t(dz)
    opt = torch.optim.Adam(sde.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(iterations), eta_min=lr * 0.02)
    best, best_state, last_tr = math.inf, None, math.nan
    it = range(int(iterations))
    if latent is not None:      # the increments only give the start (their drift is biased by the fast part)
        it = range(0)
    elif progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="fit macro SDE", unit="it")
    for _ in it:
        opt.zero_grad()
        loss = gaussian_nll(sde, Z0[tr], DZ[tr], lam, jitter)
        loss.backward()
        opt.step()
        sched.step()
        last_tr = float(loss.detach())
        if n_val:
            with torch.no_grad():
                v = float(gaussian_nll(sde, Z0[va], DZ[va], lam, jitter))
        else:
            v = last_tr
        if v < best:
            best = v
            best_state = {k: x.detach().clone() for k, x in sde.state_dict().items()}
    if best_state is not None:
        sde.load_state_dict(best_state)
    if paths is not None:
        refine_drift(sde, paths, weights=path_weights, iterations=path_iterations, lr=path_lr, seed=seed,
                     val_fraction=val_fraction)
    latent_nll = (None, None)
    if latent is not None:
        from .latent import fit_latent
        latent_nll = fit_latent(sde, latent, lam=lam, jitter=jitter, iterations=latent_iterations, lr=latent_lr,
                                val_fraction=val_fraction, seed=seed, progress=progress)
    sde.eval()
    with torch.no_grad():
        tr_nll = float(gaussian_nll(sde, Z0[tr], DZ[tr], lam, jitter))
        v_nll = float(gaussian_nll(sde, Z0[va], DZ[va], lam, jitter)) if n_val else tr_nll
    return sde, FitReport(float(lam), float(jitter), int(iterations), tr_nll,
                          v_nll if (paths is not None or latent is not None) else float(best), int(len(z0)), *latent_nll)


def _errors_in_variables_start(u, y, noise_u, noise_uy, plain):
    """The least-squares linear drift y ~ W u + b corrected for noise in the regressor:
    u (M, d) centred states with independent noise of variance ``noise_u`` (d,) that
    enters y (M, d) with covariance -``noise_uy`` (d,) component by component (the fast
    part of z0 appears with the opposite sign in its increment). Moment equations
    (cov(u) - diag noise_u) W^T = cov(u, y) + diag noise_uy (the errors-in-variables
    correction; Fuller 1987, *Measurement Error Models*, sect. 2.2). Returns coef as
    ``plain`` ((d + 1, d), last row the intercept), or ``plain`` itself where the corrected
    covariance keeps less than a tenth of any eigenvalue (the correction then dominates)."""
    n = len(u)
    cuu = u.T @ u / n
    corrected = cuu - np.diag(noise_u)
    if np.linalg.eigvalsh(corrected).min() <= 0.1 * np.linalg.eigvalsh(cuu).min():
        return plain
    W = np.linalg.solve(corrected, u.T @ y / n + np.diag(noise_uy))
    return np.vstack([W, y.mean(0)[None]])


def refine_drift(sde: MacroSDE, paths, *, weights=None, iterations: int = 200, lr: float = 1e-3,
                 val_fraction: float = 0.2, seed: int = 0) -> float:
    """The multi-step drift: refit mu so that the SDE's own integrated steps follow
    observed trajectories over several macro steps (sigma is left as it is).

    A one-step fit makes mu(z) dt the mean increment of the states seen at z. When states
    of different histories share a z (a non-Markov process seen through z), the
    integrated drift need not follow the mean trajectory the increments came from. Here
    the noise-free Euler path r_0 = x_0, r_{k+1} = r_k + mu(r_k) dt is fitted to each
    trajectory x_0 .. x_H by weighted least squares over all lags k = 1..H at once:

        loss = sum_b w_b sum_k sum_i (r_k,i - x_k,i)^2 / (k s_i(x_0)^2 dt)

    s_i^2 the diagonal of sigma sigma^T at the start (the variance of x_k grows as k s^2
    dt). The pooled lags are correlated; this is a least-squares criterion, not a
    likelihood.

    paths : (B, H + 1, d) trajectories one macro step (``sde.dt`` frames) apart; NaN
        entries (after a trajectory's end) are left out. H >= 1.
    weights : (B,) weights of the trajectories (default 1).
    iterations : Adam steps at ``lr`` on the drift network; the state with the lowest
        loss on a random ``val_fraction`` of the trajectories (all if fewer than 10) is
        kept. Returns that loss.
    """
    P = np.asarray(paths, np.float64)
    if P.ndim != 3 or P.shape[1] < 2 or P.shape[2] != sde.d:
        raise ParameterError(f"paths: expected (trajectories, horizon + 1 >= 2, {sde.d}) values, got shape {P.shape}")
    if not np.isfinite(P[:, :2]).all():
        raise ColloidcgError("paths: every trajectory needs finite values at its first two macro steps")
    B, H1, _ = P.shape
    w = np.ones(B) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (B,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ParameterError(f"path_weights: expected ({B},) finite weights >= 0, not all 0")
    X = torch.as_tensor(P)
    mask = torch.isfinite(X)
    X = torch.nan_to_num(X)
    dt = sde.dt
    with torch.no_grad():
        L = sde.sigma(X[:, 0])
        s2 = torch.diagonal(L @ L.transpose(1, 2), dim1=1, dim2=2) * dt          # (B, d)
    k = torch.arange(H1, dtype=torch.float64).clamp(min=1.0)
    Wt = mask.double() / (k[None, :, None] * s2[:, None, :]) * torch.as_tensor(w)[:, None, None]
    Wt[:, 0] = 0.0
    rng = np.random.default_rng([int(seed), 4099])
    perm = rng.permutation(B)
    n_val = int(round(val_fraction * B)) if B >= 10 else 0
    va = torch.as_tensor(perm[:n_val]) if n_val else torch.as_tensor(perm)
    tr = torch.as_tensor(perm[n_val:])

    def loss(idx):
        r = X[idx, 0]
        path = [r]
        for _ in range(H1 - 1):
            r = r + sde.drift(r) * dt
            path.append(r)
        R = torch.stack(path, 1)
        return ((R - X[idx]) ** 2 * Wt[idx]).sum() / Wt[idx].sum()

    opt = torch.optim.Adam(sde.drift_net.parameters(), lr=lr)
    with torch.no_grad():
        best = float(loss(va))
    best_state = {n: x.detach().clone() for n, x in sde.state_dict().items()}
    for _ in range(int(iterations)):
        opt.zero_grad()
        loss(tr).backward()
        opt.step()
        with torch.no_grad():
            v = float(loss(va))
        if v < best:
            best, best_state = v, {n: x.detach().clone() for n, x in sde.state_dict().items()}
    sde.load_state_dict(best_state)
    return best


#: Fits averaged by default (:func:`fit_bagged`, ``colloidcg macro train --fits``).
DEFAULT_FITS = 10


def fit_bagged(increments, *, fits: int = DEFAULT_FITS, seed: int = 0, bootstrap: bool = True,
               start=None, **kwargs) -> tuple[MacroSDE, list]:
    """Bagging: ``fits`` SDEs fitted by :func:`fit_sde`, averaged into one :class:`BaggedSDE`.

    increments : (z0, z1), each (M, d), or a callable seed -> (z0, z1) that draws them
        afresh for each member (block states: every member its own draw of block sets);
        either may be a :class:`BlockDraw` with trajectories instead, whose drift is then
        the multi-step drift (:func:`refine_drift`; with the bootstrap, each trajectory
        weighted by how many of its increments were drawn), or a
        :class:`~.latent.BlockPaths`, fitted by the latent-state likelihood after its
        increments' (the bootstrap resamples whole paths).
    fits : members M (1: a plain :class:`MacroSDE`, as :func:`fit_sde`).
    seed : member k is fitted with seed ``seed + k`` (network initialisation, validation
        split, its draw of increments and its resample).
    bootstrap : each member is fitted to a resample of its increments with replacement
        (same count); False: to all of them (members then differ by seed only).
    start : (d,) default start of simulations (default: the first row of the first
        member's z0). Other keyword arguments go to :func:`fit_sde`.
    Returns (the SDE, [FitReport per member]). Costs ``fits`` times one fit.
    """
    if isinstance(fits, bool) or int(fits) != fits or fits < 1:
        raise ParameterError(f"fits: must be an integer >= 1, got {fits}")
    members, reports = [], []
    for k in range(int(fits)):
        s = int(seed) + k
        data = increments(s) if callable(increments) else increments
        paths = state = weights = None
        if isinstance(data, BlockPaths):
            if bootstrap and int(fits) > 1:
                data = data.take(np.random.default_rng([s, 7919]).integers(0, len(data.mean), len(data.mean)))
            z0, z1 = data.pairs()
            if start is None:
                start = z0[0]
            sde, rep = fit_sde(z0, z1, start=start, seed=s, latent=data, **kwargs)
            members.append(sde)
            reports.append(rep)
            continue
        if isinstance(data, BlockDraw):
            z0, z1, paths, state = data.z0, data.z1, data.paths, data.state
        else:
            z0, z1 = data
        z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
        if start is None:
            start = z0[0] if z0.ndim == 2 and len(z0) else None
        if bootstrap and int(fits) > 1:
            pick = np.random.default_rng([s, 7919]).integers(0, len(z0), len(z0))
            z0, z1 = z0[pick], z1[pick]
            if paths is not None:     # each trajectory weighted by how often its increments were drawn
                weights = np.bincount(state[pick], minlength=len(paths)).astype(float)
        if paths is not None:
            kwargs = {**kwargs, "paths": paths, "path_weights": weights}
        sde, rep = fit_sde(z0, z1, start=start, seed=s, **kwargs)
        members.append(sde)
        reports.append(rep)
    if len(members) == 1:
        return members[0], reports
    bag = BaggedSDE([m.config for m in members])
    for dst, src in zip(bag.members, members):
        dst.load_state_dict(src.state_dict())
    bag.eval()
    return bag, reports


def _fit_summary(reports: list) -> dict:
    """The report's fit entries: the first member's FitReport as ``fit`` (val_nll: the
    members' mean) and, for a bag, every member's in ``fits``."""
    first = asdict(reports[0])
    first["val_nll"] = float(np.mean([r.val_nll for r in reports]))
    first["train_nll"] = float(np.mean([r.train_nll for r in reports]))
    out = {"fit": first, "n_fits": len(reports)}
    if len(reports) > 1:
        out["fits"] = [asdict(r) for r in reports]
    return out


# ---------------------------------------------------------------------- increments
class Encoder:
    """The macroscopic encoder phi: chosen observables (:mod:`.observables`) followed by
    learned closure variables (:class:`~.closure.ClosureEncoder`, optional). Every
    variable is a mean over particles, so phi is additive.

    names : the observables' names; closure : an encoder or None.
    """

    def __init__(self, names, closure=None):
        self.observables = list(names)
        self.closure = closure

    @property
    def names(self) -> list:
        n = 0 if self.closure is None else self.closure.n_closure
        return self.observables + [f"closure_{k}" for k in range(n)]

    def per_particle(self, state) -> np.ndarray:
        """(N, d) per-particle values of every variable."""
        from .observables import per_particle
        f = per_particle(state, self.observables)
        if self.closure is not None:
            f = np.concatenate([f, self.closure.codes(state)], axis=1)
        return f

    def whole(self, state) -> np.ndarray:
        """(d,) the whole state's z: the mean over its particles."""
        return self.per_particle(state).mean(0)

    def patch(self, state, inner_mask) -> np.ndarray:
        """(d,) a patch's z: the mean over its inner particles (the halo supplies neighbours)."""
        return self.per_particle(state)[np.asarray(inner_mask, bool)].mean(0)


def partial_increments(encoder: Encoder, snapshots, patch_steps) -> tuple[np.ndarray, np.ndarray]:
    """Increments of the large systems from partial evolution.

    snapshots : the periodic snapshots the patches were cut from (MicroState, prepared by
        the simulator where it fills in S); patch_steps : :class:`~.partial.PatchStep` list.
    Returns (z0, z1), (P, d) each: z0 = phi(x0) of the snapshot, z1 = phi(x0) + phi(x1, I)
    - phi(x0, I), phi(., I) the mean over the patch's inner particles (Chen et al.): an
    increment with the whole system's mean and K times its covariance.
    """
    whole = {}
    z0, z1 = [], []
    for ps in patch_steps:
        if ps.snapshot not in whole:
            whole[ps.snapshot] = encoder.whole(snapshots[ps.snapshot])
        w = whole[ps.snapshot]
        z0.append(w)
        z1.append(w + encoder.patch(ps.after, ps.inner_mask) - encoder.patch(ps.before, ps.inner_mask))
    return np.array(z0), np.array(z1)


def patch_only_increments(encoder: Encoder, snapshots, patch_steps) -> tuple[np.ndarray, np.ndarray]:
    """The reference's naive baseline data (Chen et al.'s code: no partial-evolution
    correction): z0 = phi(x0) of the snapshot and z1 = phi(x1, I), the evolved patch's own
    mean taken for the whole system's next state. (P, d) each, the same patches as
    :func:`partial_increments`. Fitted with lambda = 1 and the large system's area, its
    noise is a patch's, used unscaled on the large system."""
    whole = {}
    z0, z1 = [], []
    for ps in patch_steps:
        if ps.snapshot not in whole:
            whole[ps.snapshot] = encoder.whole(snapshots[ps.snapshot])
        z0.append(whole[ps.snapshot])
        z1.append(encoder.patch(ps.after, ps.inner_mask))
    return np.array(z0), np.array(z1)


def trajectory_increments(encoder: Encoder, trajectories) -> tuple[np.ndarray, np.ndarray]:
    """Whole-system increments along trajectories (lists of MicroState one macro step
    apart): (z(x_t), z(x_{t+1})) pairs, (M, d) each (the naive baseline's data)."""
    z0, z1 = [], []
    for traj in trajectories:
        z = np.array([encoder.whole(s) for s in traj])
        z0.append(z[:-1])
        z1.append(z[1:])
    return np.concatenate(z0), np.concatenate(z1)


def block_increments(encoder: Encoder, trajectories, *, blocks: int, sets_per_step: int = 8,
                     seed: int = 0, smooth: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Partial increments of block states: periodic patches, no seams.

    A block state is ``blocks`` (= K) small periodic systems at the same macro step, side
    by side and uncoupled; its z is the particle-weighted mean of theirs. A patch is one
    block, evolved with its own periodic boundary (the periodic patches of Chen et al.):
    its step is the small system's own next macro step. As for
    :func:`partial_increments`, z1 = z(x0) + z_I(x1) - z_I(x0), an increment with the
    block state's mean and K times its covariance (fit with lambda = K and the area of K
    small systems).

    Unlike the naive baseline (a small system's increment against its own z), the drift is
    conditioned on the mean of K systems, whose fluctuations are K times smaller, as the
    large system's are. The block state ignores the coupling between neighbouring regions
    and keeps each block's own finite-size effects: it describes a large system whose
    correlation length (grain size) stays below the small box, and nothing larger.

    trajectories : lists of periodic MicroStates one macro step apart (every list equally
        long, same macro steps); blocks : K >= 2; sets_per_step : block states drawn per
        macro step (members without replacement while there are enough trajectories).
    smooth : condition on the block state's smoothed z (:func:`block_draw`).
    Returns (z0, z1), (M, d) each, M = (steps - 1) x sets_per_step x K.
    """
    _check_blocks(blocks, sets_per_step)
    trajectories = [list(t) for t in trajectories]
    if not trajectories:
        raise ParameterError("trajectories: expected at least one small-system trajectory")
    steps = len(trajectories[0])
    if steps < 2 or any(len(t) != steps for t in trajectories):
        raise ParameterError("trajectories: expected equally long trajectories of >= 2 states each, "
                             f"got lengths {sorted({len(t) for t in trajectories})}")
    z = np.array([[encoder.whole(s) for s in t] for t in trajectories])           # (n, steps, d)
    w = np.array([[len(s.pos) for s in t] for t in trajectories], dtype=float)      # (n, steps)
    return block_pairs(z, w, blocks=blocks, sets_per_step=sets_per_step, seed=seed, smooth=smooth)


def _check_blocks(blocks, sets_per_step) -> None:
    if isinstance(blocks, bool) or int(blocks) != blocks or blocks < 2:
        raise ParameterError(f"blocks: expected an integer K >= 2 small systems per block state, got {blocks!r}")
    if isinstance(sets_per_step, bool) or int(sets_per_step) != sets_per_step or sets_per_step < 1:
        raise ParameterError(f"sets_per_step: expected an integer >= 1, got {sets_per_step!r}")


def block_pairs(z, weights=None, *, blocks: int, sets_per_step: int = 8, seed: int = 0,
                smooth: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`block_increments` from values: ``z`` (n, steps, d) the small systems' z along
    their trajectories, ``weights`` (n, steps) their particle counts (None: equal).
    Returns (z0, z1), ((steps - 1) x sets_per_step x blocks, d) each."""
    d = block_draw(z, weights, blocks=blocks, sets_per_step=sets_per_step, seed=seed, horizon=1, smooth=smooth)
    return d.z0, d.z1


@dataclass
class BlockDraw:
    """One draw of block states (:func:`block_draw`).

    z0, z1 : (M, d) partial increments, M = (steps - 1) x sets_per_step x K (as
        :func:`block_pairs`). paths : (B, horizon + 1, d) each block state's own z over
        the next ``horizon`` macro steps (its K systems' weighted mean; NaN after the
        last macro step), B = (steps - 1) x sets_per_step. state : (M,) the block state
        (row of ``paths``) each increment belongs to.
    """

    z0: np.ndarray
    z1: np.ndarray
    paths: np.ndarray
    state: np.ndarray


def systems_and_weights(z, weights, min_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``z`` as float (systems, steps >= min_steps, d) and its weights (systems, steps),
    ones when None; a one-line ParameterError for anything else."""
    z = np.asarray(z, np.float64)
    if z.ndim != 3 or z.shape[1] < min_steps:
        raise ParameterError(f"z: expected (systems, steps >= {min_steps}, d) values, got shape {z.shape}")
    n, steps, _ = z.shape
    w = np.ones((n, steps)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (n, steps) or not np.all(w > 0):
        raise ParameterError(f"weights: expected ({n}, {steps}) positive particle counts, got shape {w.shape}")
    return z, w


def fast_variance(z, weights=None) -> np.ndarray:
    """The variance of the fast part of z in one small system, per component (d,).

    A mean over particles such as |psi6| holds a part that decorrelates within one macro
    step (each particle's bonds vibrate) beside the slow part the SDE describes. Seen
    through whole increments the fast part e counts twice (e_{k+1} - e_k) and makes
    successive increments anticorrelated: for z = x + e, e independent at every step with
    variance r, cov(dz_k, dz_{k+1}) = -r (lag 2 and beyond: 0), whatever x does over one
    step (the slow part's own lag-1 covariance, of order its drift's slope times its
    variance, is neglected). Here r = -cov(dz_k, dz_{k+1}), the increments centred per
    time across systems (so the mean path's curvature does not enter), the first
    increment (from the start) left out, each system's deviations scaled by the square
    root of its particle count over the mean (r refers to a system of the mean count);
    clipped to [0, 0.45 var(dz)] (the lag-1 correlation of a sum of a random walk and white
    noise is at least -0.5). The same localisation-noise signature as in single-particle
    tracking; docs/scaling.md.

    z : (systems, steps >= 4, d) values one macro step apart, every system at the same
        times; weights : (systems, steps) particle counts or None.
    """
    lag1, var, _ = increment_moments(z, weights)
    return np.clip(-lag1, 0.0, 0.45 * var)


def increment_moments(z, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lag-1 covariance, variance, lag-2 correlation) of the systems' successive
    increments, per component (d,) each, centred per time across systems, the first
    increment left out, each system's deviations scaled by sqrt(count / mean count)
    (:func:`fast_variance`). The lag-2 correlation is 0 when the fast part is white at
    the macro step; clearly negative, it outlives one step (a longer step fixes that)."""
    z, w = systems_and_weights(z, weights, min_steps=4)
    n = z.shape[0]
    if n < 2:
        raise ParameterError(f"z: the fast part is measured across systems, expected >= 2, got {n}")
    dz = np.diff(z, axis=1)[:, 1:]
    dev = (dz - dz.mean(0, keepdims=True)) * np.sqrt(w[:, 2:, None] / w.mean())
    m = dev.shape[1]
    lag1 = (dev[:, :-1] * dev[:, 1:]).sum((0, 1)) / ((n - 1) * (m - 1))
    var = (dev * dev).sum((0, 1)) / ((n - 1) * m)
    lag2 = (dev[:, :-2] * dev[:, 2:]).sum((0, 1)) / ((n - 1) * (m - 2)) if m > 2 else np.full_like(var, np.nan)
    return lag1, var, lag2 / np.maximum(var, 1e-300)


def block_draw(z, weights=None, *, blocks: int, sets_per_step: int = 8, seed: int = 0,
               horizon: int = 1, smooth: bool = False) -> BlockDraw:
    """Block states' partial increments (:func:`block_pairs`, the same draw for the same
    seed) and their trajectories over ``horizon`` >= 1 macro steps, for the multi-step
    drift (:func:`refine_drift`; :func:`fit_bagged` takes a BlockDraw).
    ``z`` (n, steps, d), ``weights`` (n, steps) as in :func:`block_pairs`.

    smooth : the state an increment starts from (z0, and the path's first entry) is the
        mean of the block state's own z at t - 1, t and t + 1 instead of z at t, from
        the third macro step on (the first two keep z_t: a quench's path bends too
        sharply there). Its fast part (:func:`fast_variance`; weights 1/3 on e_{t-1},
        e_t, e_{t+1}) is uncorrelated with the increment's, e_{t+1} - e_t, so the drift
        fitted to it is not pulled towards "what is momentarily ahead falls back"
        (regression to the mean), which a drift conditioned on z_t itself learns from the
        fast part alone (docs/scaling.md). Costs a curvature bias of a third of the
        path's second difference."""
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
        raise ParameterError(f"horizon: expected an integer >= 1 macro steps, got {horizon!r}")
    z, w = systems_and_weights(z, weights, min_steps=2)
    n, steps, _ = z.shape
    _check_blocks(blocks, sets_per_step)
    rng = np.random.default_rng(seed)
    K, H = int(blocks), int(horizon)
    z0, z1, paths = [], [], []
    for t in range(steps - 1):
        for _ in range(int(sets_per_step)):
            pick = rng.choice(n, K, replace=n < K)
            end = min(t + H, steps - 1) + 1
            path = np.full((H + 1, z.shape[2]), np.nan)
            path[:end - t] = (w[pick, t:end, None] * z[pick, t:end]).sum(0) / w[pick, t:end, None].sum(0)
            if smooth and t >= 2:
                around = (w[pick, t - 1:t + 2, None] * z[pick, t - 1:t + 2]).sum(0) / w[pick, t - 1:t + 2, None].sum(0)
                path[0] = around.mean(0)
            paths.append(path)
            zbar = path[0]
            for i in pick:
                z0.append(zbar)
                z1.append(zbar + z[i, t + 1] - z[i, t])
    return BlockDraw(np.array(z0), np.array(z1), np.array(paths), np.repeat(np.arange(len(paths)), K))


# ---------------------------------------------------------------------- the whole chain
@dataclass
class MacroLearned:
    """Result of :func:`learn_macro`.

    sde : the fitted :class:`MacroSDE`; encoder : the :class:`Encoder` (observables and
    closure); z0, z1 : (P, d) the partial increments; n_patches : K; lam : the lambda
    used; report : what was done (json-ready); closure_report : the closure training's
    losses (or None).
    """

    sde: MacroSDE
    encoder: Encoder
    z0: np.ndarray
    z1: np.ndarray
    n_patches: float
    lam: float
    report: dict
    closure_report: dict | None = None


def learn_macro(simulator, snapshots, *, patch: float, steps: int, observables, n_closure: int = 0,
                lam: float | str = "auto", patches_per_snapshot: int = 4, buffer: float = 0.0, tile_area_px2: float | None = None,
                start=None, labels: dict | None = None, seed: int = 0, iterations: int = 300,
                fits: int = DEFAULT_FITS, progress: bool = False) -> MacroLearned:
    """Partial evolution, closure encoder and SDE fit on large periodic ``snapshots``.

    simulator : a :class:`~.simulators.MicroSimulator`; snapshots : large periodic
    MicroStates (upsampled); patch : patch side, px; steps : frames per macro step;
    observables : names (:mod:`.observables`); n_closure : learned closure variables (0:
    none); lam : 'auto' (= K, the patch count) or a number; tile_area_px2 : the small
    system's area, px^2 (default: the snapshots'); buffer : mobile layer between each patch
    and its frozen halo, px (:func:`~.partial.partial_evolution`); start : (d_obs,) or None, the default
    start of simulations (default: the mean z of the first snapshot); fits : SDE fits
    averaged (:func:`fit_bagged`, each on a bootstrap resample of the patch increments;
    1: one fit on all of them).
    """
    from .closure import local_features, mean_spacing, train_closure
    from .partial import partial_evolution

    if not snapshots:
        raise ParameterError("snapshots: expected at least one large configuration")
    prepared = [simulator.prepare(s._replace(pos=np.mod(np.asarray(s.pos, float), np.asarray(s.box, float))))
                for s in snapshots]
    patch_steps = partial_evolution(simulator, prepared, patch=float(patch), steps=int(steps),
                                    patches_per_snapshot=int(patches_per_snapshot), buffer=float(buffer),
                                    seed=int(seed),
                                    progress=progress)
    K = float(patch_steps[0].n_patches)
    closure = None
    closure_report = None
    obs = Encoder(observables)
    if n_closure:
        spacing = mean_spacing(prepared[0])
        feats, o0, do = [], [], []
        for ps in patch_steps:
            f = local_features(ps.before, spacing)[ps.inner_mask]
            feats.append(f)
            a, b = obs.patch(ps.before, ps.inner_mask), obs.patch(ps.after, ps.inner_mask)
            o0.append(a)
            do.append(b - a)
        closure, closure_report = train_closure(feats, np.array(o0), np.array(do), n_closure=int(n_closure),
                                                spacing=spacing, seed=int(seed), progress=progress)
    enc = Encoder(observables, closure)
    z0, z1 = partial_increments(enc, prepared, patch_steps)
    lam_v = K if lam == "auto" else float(lam)
    area = float(np.prod(np.asarray(prepared[0].box, float)))
    z_start = enc.whole(prepared[0]) if start is None else np.asarray(start, float)
    sde, fit = fit_bagged((z0, z1), fits=fits, dt=float(steps), names=enc.names, lam=lam_v, area_px2=area,
                          tile_area_px2=area if tile_area_px2 is None else float(tile_area_px2), start=z_start,
                          labels=labels, seed=int(seed), iterations=iterations, progress=progress)
    report = {"patch_px": float(patch), "buffer_px": float(buffer), "n_patches_K": K, "lambda": lam_v, "steps_frames": int(steps),
              "snapshots": len(prepared), "patches": len(patch_steps), "area_px2": area,
              "tile_area_px2": sde.config.tile_area_px2, "variables": enc.names, **_fit_summary(fit)}
    return MacroLearned(sde, enc, z0, z1, K, lam_v, report, closure_report)


def learn_block(trajectories, *, steps: int, observables, blocks: int, lam: float | str = "auto",
                sets_per_step: int = 8, labels: dict | None = None, seed: int = 0, iterations: int = 300,
                fits: int = DEFAULT_FITS, horizon: int | str = 0, fast_part: bool = True,
                smooth_state: bool = False, latent: bool | str = "auto", progress: bool = False) -> MacroLearned:
    """The SDE fitted on block states (:func:`block_increments`) of small periodic systems.

    trajectories : one list per small system of periodic MicroStates ``steps`` frames
        apart, all systems at the same times (the same age: repeated experiments or
        quenches), all in boxes of one area; at least ``blocks`` systems, so that a block
        state is the mean of K different systems.
    steps : frames per macro step; observables : names (:mod:`.observables`);
    blocks : K, the block state's area over the small box's (the large system's factor);
    lam : 'auto' (= K) or a number; sets_per_step : block states drawn per macro step.
    The SDE describes a system of K small boxes (area_px2 = K x the box's area,
    tile_area_px2 = the box's area) and starts by default from the systems' mean z at the
    first time. fits : SDE fits averaged (:func:`fit_bagged`: member k draws its own block
    states with seed ``seed + k`` and is fitted to a bootstrap resample of them; 1: one fit).
    horizon : 0 (default): the drift of the one-step likelihood; H >= 1: the multi-step
    drift, refitted so that its integrated steps follow the block states' own trajectories
    over H macro steps (:func:`refine_drift`; docs/scaling.md); "auto": H chosen among
    :data:`~.horizon.AUTO_HORIZONS` by cross-validation over the small systems
    (:func:`~.horizon.choose_horizon`, seeded by ``seed``; the report's
    ``horizon_choice`` holds its scores).
    fast_part : measure the fast part of z from the small systems' successive increments
        (:func:`fast_variance`, with at least 4 macro steps) and keep it out of sigma: the
        SDE then returns the slow state plus a fresh fast part at every step
        (``SDEConfig.fast_var``). Without it (False, or too few steps) sigma holds both,
        and the runs' variance grows as if the fast part were diffusion (2.6x the direct
        runs' on the crystal known answer; docs/scaling.md).
    smooth_state : with the fast part, condition the drift on the block state's three-point
        mean (:func:`block_draw` ``smooth``), free of regression to the mean. On the aging
        crystal known answer it cut the mean's error 3-7x; for stationary fluctuations it
        biases the restoring drift towards zero (docs/scaling.md), hence off by default.
    latent : fit the block states' whole paths by the latent-state likelihood
        (:mod:`.latent`: an extended Kalman filter with the fast part as observation
        noise, plus the members' scatter), the drift conditioned on the filtered slow
        state; each member draws ``sets_per_step`` random partitions of the systems into
        block states (:func:`~.latent.block_paths`); ``iterations`` are then the filter
        likelihood's Adam steps. "auto" (default): whenever the fast part is measured
        (``fast_part`` and >= 4 macro steps) and neither ``smooth_state`` nor a horizon is
        asked for; True: required (a one-line error where it cannot be); False: the
        one-step likelihood of the block states' increments.
    Returns a :class:`MacroLearned` (n_patches = K, no closure; z0, z1 the first member's
    block states).
    """
    trajectories = [list(t) for t in trajectories]
    _check_blocks(blocks, sets_per_step)
    if smooth_state and not fast_part:
        raise ParameterError("smooth_state: conditions on a state freed of the fast part; it needs fast_part=True")
    if latent not in (True, False, "auto"):
        raise ParameterError(f"latent: expected True, False or 'auto', got {latent!r}")
    if latent is True and (not fast_part or smooth_state or horizon):
        raise ParameterError("latent: the latent-state fit needs the fast part and excludes smooth_state and a horizon")
    K = int(blocks)
    if len(trajectories) < K:
        raise ParameterError(f"trajectories: a block state of K = {K} needs at least {K} small systems, "
                             f"got {len(trajectories)}")
    areas = np.array([float(np.prod(np.asarray(t[0].box, float))) if t else 0.0 for t in trajectories])
    if not np.all(areas > 0) or not np.allclose(areas, areas[0], rtol=1e-6):
        raise ParameterError("trajectories: every small system needs a periodic box of the same area, got "
                             f"{sorted(set(np.round(areas, 3).tolist()))} px^2")
    if not (horizon == "auto" or (isinstance(horizon, (int, np.integer)) and not isinstance(horizon, bool)
                                  and horizon >= 0)):
        raise ParameterError(f"horizon: expected an integer >= 0 macro steps or 'auto', got {horizon!r}")
    enc = Encoder(observables)
    choice = None
    fast_var = None
    lengths = sorted({len(t) for t in trajectories})
    if len(lengths) != 1 or lengths[0] < 2:
        raise ParameterError(f"trajectories: expected equally long trajectories of >= 2 states each, got lengths {lengths}")
    # the systems' z, encoded once: every member's draw, the fast part and the start use it
    z_all = np.array([[enc.whole(s) for s in t] for t in trajectories])
    counts = np.array([[len(s.pos) for s in t] for t in trajectories], dtype=float)
    if latent is True and z_all.shape[1] < 4:
        raise ParameterError(f"latent: the fast part is measured from >= 4 macro steps, got {z_all.shape[1]}")
    latent = bool(latent) and fast_part and z_all.shape[1] >= 4 and not smooth_state and horizon == 0
    if fast_part and z_all.shape[1] >= 4:
        fast_var = fast_variance(z_all, counts) / K     # for the block state's area, K boxes
        lag1, inc_var, lag2 = increment_moments(z_all, counts)
    if horizon == "auto":
        from .horizon import choose_horizon
        horizon, choice = choose_horizon(z_all, counts, blocks=K, dt=float(steps), sets_per_step=int(sets_per_step),
                                         seed=int(seed), iterations=iterations, names=enc.names, progress=progress)
    smooth = bool(smooth_state) and fast_var is not None
    if latent:
        from .latent import block_paths

        def draw(s):
            return block_paths(z_all, counts, blocks=K, repeats=int(sets_per_step), seed=int(s))
    elif horizon:
        def draw(s):
            return block_draw(z_all, counts, blocks=K, sets_per_step=int(sets_per_step), seed=int(s),
                              horizon=int(horizon), smooth=smooth)
    else:
        def draw(s):      # as block_increments, from the values encoded above
            return block_pairs(z_all, counts, blocks=K, sets_per_step=int(sets_per_step), seed=int(s), smooth=smooth)
    first_draw = draw(seed)
    if latent:
        z0, z1 = first_draw.pairs()
    else:
        z0, z1 = (first_draw.z0, first_draw.z1) if horizon else first_draw
    tile_area = float(areas[0])
    lam_v = float(K) if lam == "auto" else float(lam)
    z_start = (counts[:, 0, None] * z_all[:, 0]).sum(0) / counts[:, 0].sum()
    sde, fit = fit_bagged(draw, fits=fits, dt=float(steps), names=enc.names, lam=lam_v, area_px2=K * tile_area,
                          tile_area_px2=tile_area, start=z_start, labels=labels, seed=int(seed),
                          iterations=iterations, fast_var=fast_var, progress=progress,
                          **({"latent_iterations": iterations} if latent else {}))
    method = ("latent-state likelihood" if latent else
              ", ".join((["one-step likelihood on the smoothed state"] if smooth else ["one-step likelihood"])
                        + ([f"multi-step drift over {int(horizon)} macro steps"] if horizon else [])))
    report = {"states": "block", "drift_fit": method, "systems": len(trajectories), "n_patches_K": float(K), "lambda": lam_v,
              "steps_frames": int(steps), "macro_steps": len(trajectories[0]) - 1,
              "block_sets_per_step": int(sets_per_step), "horizon_macro_steps": int(horizon),
              "horizon_choice": choice,
              "fast_part": None if fast_var is None else {
                  "variance_small_system": (fast_var * K).tolist(),
                  "share_of_increment_variance": (2 * fast_var * K / np.maximum(inc_var, 1e-300)).tolist(),
                  "increment_lag1_correlation": (lag1 / np.maximum(inc_var, 1e-300)).tolist(),
                  "increment_lag2_correlation": [None if not np.isfinite(v) else float(v) for v in lag2],
                  "smooth_state": smooth, "latent_state": bool(latent),
                  "note": "z's fast part, from the small systems' successive increments; kept out of sigma"},
              "area_px2": K * tile_area, "tile_area_px2": tile_area,
              "variables": enc.names, **_fit_summary(fit)}
    return MacroLearned(sde, enc, z0, z1, float(K), lam_v, report, None)
