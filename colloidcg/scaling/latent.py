"""The latent-state likelihood of block states: an extended Kalman filter along their paths.

A mean over particles z = x + e has a slow part x, which the SDE describes, and a fast
part e that decorrelates within one macro step (:func:`~.macro.fast_variance`). A drift
fitted to increments conditioned on z_t learns the fast part's regression to the mean:
a state that is momentarily high is followed by an increment that takes it back. The
smoothed state (``smooth_state``) removes that bias but flattens a restoring drift. Here a
block state's path is taken for what it is, noisy observations of a latent Markov
process:

    x_{t+1} = x_t + mu(x_t) dt + eta_t,   eta_t ~ N(0, s sigma(x_t) sigma(x_t)^T dt)
    Z_t     = x_t + eps_t,                eps_t ~ N(0, s R)

R the fast part's variance for the block state's area (``MacroSDE.fast_var``) and s =
lambda / K (1 at lambda = K). The likelihood of a path is the product of its one-step-ahead
predictive densities, the innovations of an extended Kalman filter whose drift is
linearised about the filtered mean (Jazwinski 1970, *Stochastic Processes and Filtering
Theory*, ch. 8; Sarkka 2013, *Bayesian Filtering and Smoothing*, sect. 5.2). The drift is
thus conditioned on the filtered latent state, neither pulled to the mean by the fast part
nor flattened by smoothing: on a stationary Ornstein-Uhlenbeck process seen through white
noise it recovers the process's own restoring rate (tests/test_macro_latent.py).

The K member systems' own increments carry what partial increments add about the noise:
their scatter about the members' mean increment is N(0, lambda (sigma sigma^T dt + 2 R))
with K - 1 degrees of freedom. The partial-increment likelihood (:func:`~.macro.gaussian_nll`)
splits exactly into that scatter and a term for the members' mean; the filter replaces the
latter. With lambda = K both terms describe the block state of K boxes; lambda keeps its
meaning for the lambda sweep.

Units as in :mod:`.macro`: z in its own units, time in frames (``sde.dt`` per macro step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ParameterError

__all__ = ["BlockPaths", "block_paths", "kalman_nll", "fit_latent", "DEFAULT_REPEATS"]

#: Random partitions of the small systems into block states (:func:`block_paths`).
DEFAULT_REPEATS = 8


@dataclass
class BlockPaths:
    """Block states followed over the whole duration (:func:`block_paths`).

    mean : (B, T + 1, d) each block state's z along its path, its K systems' particle-
        weighted mean, one macro step apart.
    increments : (B, K, T, d) each member system's own increments z_{t+1} - z_t.
    """

    mean: np.ndarray
    increments: np.ndarray

    @property
    def blocks(self) -> int:
        """K, the systems per block state."""
        return int(self.increments.shape[1])

    def take(self, rows) -> "BlockPaths":
        """The block states ``rows`` (an index array, repeats allowed: a bootstrap resample)."""
        rows = np.asarray(rows, int)
        return BlockPaths(self.mean[rows], self.increments[rows])

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The same data as partial increments (:func:`~.macro.block_pairs`): z0 the block
        state at t, z1 = z0 + one member's increment; (B T K, d) each."""
        B, K, T, d = self.increments.shape
        z0 = np.broadcast_to(self.mean[:, None, :-1], (B, K, T, d))
        return z0.reshape(-1, d).copy(), (z0 + self.increments).reshape(-1, d)


def block_paths(z, weights=None, *, blocks: int, repeats: int = DEFAULT_REPEATS, seed: int = 0) -> BlockPaths:
    """Block states of ``blocks`` (= K) small systems, each followed over every macro step.

    z : (n, T + 1, d) the small systems' z along their trajectories, all at the same times;
    weights : (n, T + 1) their particle counts (None: equal). Each of ``repeats`` random
    partitions of the n systems (seeded by ``seed``) gives n // K block states of K
    different systems (the n mod K left over sit that partition out), so every system
    serves equally often. Returns B = repeats x (n // K) paths.
    """
    from .macro import _check_blocks, systems_and_weights
    z, w = systems_and_weights(z, weights, min_steps=2)
    _check_blocks(blocks, repeats)
    n, K = z.shape[0], int(blocks)
    if n < K:
        raise ParameterError(f"z: a block state of K = {K} needs at least {K} small systems, got {n}")
    rng = np.random.default_rng([int(seed), 6151])
    groups = np.concatenate([rng.permutation(n)[:(n // K) * K].reshape(-1, K) for _ in range(int(repeats))])
    mean = (w[groups, :, None] * z[groups]).sum(1) / w[groups].sum(1)[..., None]
    return BlockPaths(mean, np.diff(z[groups], axis=2))


def _chol_solve_logdet(S, v):
    """(v^T S^-1 v, log det S) for a batch of SPD matrices S (B, d, d) and vectors v (B, ..., d)."""
    C = torch.linalg.cholesky(S)
    y = torch.linalg.solve_triangular(C, v.transpose(-1, -2) if v.ndim == 3 else v[..., None], upper=False)
    quad = (y ** 2).sum((-2, -1))
    return quad, 2.0 * torch.log(torch.diagonal(C, dim1=1, dim2=2)).sum(1)


def _drift_and_jacobian(sde, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mu(m) (B, d) and its Jacobian d mu / d z (B, d, d) by central differences, all in
    one call of the network (steps of 1e-5 of each variable's scale; the drift is smooth,
    so the error is ~1e-10 relative, and the filter needs no second autograd pass)."""
    B, d = m.shape
    h = 1e-5 * sde.z_scale                                            # (d,)
    steps = torch.cat([torch.zeros(1, d, dtype=m.dtype), torch.diag(h), -torch.diag(h)])   # (2d + 1, d)
    out = sde.drift((m[:, None, :] + steps[None]).reshape(-1, d)).reshape(B, 2 * d + 1, d)
    jac = (out[:, 1:d + 1] - out[:, d + 1:]).transpose(1, 2) / (2.0 * h)    # [b, i, j] = d mu_i / d z_j
    return out[:, 0], jac


def kalman_nll(sde, data: BlockPaths, *, lam: float, jitter: float = 1e-3) -> torch.Tensor:
    """Mean negative log-likelihood per block state and macro step (without the constant)
    of block paths under ``sde`` (a :class:`~.macro.MacroSDE` for the block state's area):
    the filter's innovations plus the members' scatter (module docstring; the scatter's
    covariance is taken at the observed block state, as in the partial-increment likelihood).

    The filter starts at x_0 ~ N(Z_0, s R). ``jitter``: a noise floor, a fraction of the
    typical noise per component, added in quadrature to every covariance (unscaled), as in
    :func:`~.macro.gaussian_nll`.
    """
    Z = torch.as_tensor(data.mean, dtype=torch.float64)
    inc = torch.as_tensor(data.increments, dtype=torch.float64)
    B, T1, d = Z.shape
    T, K = T1 - 1, inc.shape[1]
    s = float(lam) / K
    dt = sde.dt
    eye = torch.eye(d, dtype=torch.float64)
    R = torch.diag(sde.fast_var)
    floor = torch.diag((jitter * sde.noise_scale) ** 2 * dt)
    # the members' scatter, every step at once: (B T) covariances, K deviations each
    L = sde.sigma(Z[:, :-1].reshape(-1, d))
    Q_obs = (L @ L.transpose(1, 2)) * dt                               # (B T, d, d)
    dev = (inc - inc.mean(1, keepdim=True)).permute(0, 2, 1, 3).reshape(B * T, K, d)
    quad, logdet = _chol_solve_logdet(lam * (Q_obs + 2.0 * R) + floor, dev)
    total = (0.5 * quad + 0.5 * (K - 1) * logdet).sum()
    # the filter along the block states' own paths
    m, P = Z[:, 0], (s * R + floor).expand(B, d, d)
    for t in range(T):
        mu, J = _drift_and_jacobian(sde, m)
        Lm = sde.sigma(m)
        F = eye + J * dt
        m_pred = m + mu * dt
        P_pred = F @ P @ F.transpose(1, 2) + s * dt * (Lm @ Lm.transpose(1, 2))
        S = P_pred + s * R + floor
        v = Z[:, t + 1] - m_pred
        quad, logdet = _chol_solve_logdet(S, v)
        total = total + (0.5 * quad + 0.5 * logdet).sum()
        G = torch.linalg.solve(S, P_pred).transpose(1, 2)           # P_pred S^-1 (both symmetric)
        m = m_pred + (G @ v[..., None])[..., 0]
        P = (eye - G) @ P_pred
        P = 0.5 * (P + P.transpose(1, 2))
    return total / (B * T)


def fit_latent(sde, data: BlockPaths, *, lam: float, jitter: float = 1e-3, iterations: int = 200,
               lr: float = 1e-3, val_fraction: float = 0.2, seed: int = 0, progress: bool = False) -> tuple[float, float]:
    """Refit ``sde`` (drift and noise, in place) by the latent-state likelihood
    (:func:`kalman_nll`) of block paths, starting from its current weights (the increments'
    fit: :func:`~.macro.fit_sde` with ``latent=``).

    Adam at ``lr`` with a cosine schedule for ``iterations`` steps; the state with the
    lowest NLL on a random ``val_fraction`` of the paths (all of them when fewer than 10)
    is kept. Returns (train NLL, validation NLL) per block state and macro step.
    """
    if not isinstance(data, BlockPaths):
        raise ParameterError(f"latent: expected BlockPaths (colloidcg.scaling.latent.block_paths), got {type(data).__name__}")
    if data.mean.shape[2] != sde.d or data.mean.shape[1] < 2:
        raise ParameterError(f"latent: expected paths of >= 2 macro steps with {sde.d} variables, got {data.mean.shape}")
    B = len(data.mean)
    rng = np.random.default_rng([int(seed), 104729])
    perm = rng.permutation(B)
    n_val = int(round(val_fraction * B)) if B >= 10 else 0
    tr = data.take(perm[n_val:])
    va = data.take(perm[:n_val]) if n_val else tr
    opt = torch.optim.Adam(sde.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(iterations), 1), eta_min=lr * 0.02)
    with torch.no_grad():
        best = float(kalman_nll(sde, va, lam=lam, jitter=jitter))
    best_state = {k: x.detach().clone() for k, x in sde.state_dict().items()}
    it = range(int(iterations))
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="latent-state fit", unit="it")
    for _ in it:
        opt.zero_grad()
        loss = kalman_nll(sde, tr, lam=lam, jitter=jitter)
        if not torch.isfinite(loss):
            break
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            v = float(kalman_nll(sde, va, lam=lam, jitter=jitter))
        if v < best:
            best, best_state = v, {k: x.detach().clone() for k, x in sde.state_dict().items()}
    sde.load_state_dict(best_state)
    with torch.no_grad():
        train = float(kalman_nll(sde, tr, lam=lam, jitter=jitter))
    return train, (best if n_val else train)

