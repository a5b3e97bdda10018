"""Gaussian negative log-likelihood of observed transitions.

One step (Euler-Maruyama with the model's semi-implicit position update): given the
state x_t = (r_t, v_t, S_t), the next velocity is Gaussian,

    v_{t+1} ~ N( v_t + a(x_t) dt,  2 k_B M_vv(x_t) dt + Sigma_loc ),

with a the full drift (forces, friction, Ito term). Positions follow exactly
(r_{t+1} = r_t + v_{t+1} dt, true by construction of finite-difference velocities), so
they carry no extra information. For video data, localisation noise of variance
sigma_loc^2 per coordinate makes the velocity increment v_{t+1} - v_t =
(r_{t+1} - 2 r_t + r_{t-1}) / dt carry an extra variance 6 sigma_loc^2 / dt^2.

``covariance="marginal"`` (default) sums, over particles, the exact marginal Gaussian
log-density of each particle's increment (d x d covariance blocks of M_vv): a composite
likelihood (Lindsay 1988; Varin, Reid & Firth 2011), consistent for the parameters, linear
in N. ``covariance="full"`` uses the joint dense covariance (small systems only).
"""

from __future__ import annotations

import math

import torch

from .model import MetriplecticModel, State


def _gauss_nll_blocks(res: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Per-row NLL of residuals (N, d) under (N, d, d) covariances."""
    d = res.shape[-1]
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):  # not positive definite (diverged weights): report NaN
        return res.new_full(res.shape[:-1], float("nan"))
    z = torch.linalg.solve_triangular(chol, res.unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return 0.5 * (z.square().sum(-1) + logdet + d * math.log(2 * math.pi))


def transition_nll(model: MetriplecticModel, state: State, v_next: torch.Tensor,
                   valid: torch.Tensor, pairs: torch.Tensor, dt: float, box=None,
                   loc_var: torch.Tensor | float = 0.0, covariance: str = "marginal",
                   jitter: float = 1e-9):
    """Mean NLL per valid particle of one observed transition.

    Parameters
    ----------
    state : State at t (S usually from the structural encoder).
    v_next : (N, d) observed velocity at t + 1.
    valid : (N,) bool: particles entering the loss (interior, observed at t-1, t, t+1).
    pairs : (P, 2) neighbour pairs at t.
    loc_var : localisation variance per coordinate (length^2), tensor or float.
    covariance : "marginal" or "full".

    Returns
    -------
    (nll, info): scalar tensor and a dict with the drift terms (for diagnostics).
    """
    ns = model.compute(state, pairs, box)
    _, dv, dS = model.drift(state, pairs, box, ns=ns)
    mean = state.v + dv * dt
    res = (v_next - mean)[valid]
    d = res.shape[-1]
    eye = torch.eye(d, dtype=res.dtype, device=res.device)
    loc = 6.0 * loc_var / dt ** 2
    if covariance == "marginal":
        cov = model.velocity_covariance(ns, dt)[valid]
        scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).detach().clamp_min(1e-300)
        cov = cov + (loc + jitter * scale).view(-1, 1, 1) * eye
        nll = _gauss_nll_blocks(res, cov).mean()
    elif covariance == "full":
        B = model.dense_channels(state, pairs, box)
        n = state.r.shape[0]
        Bv = B[n * d: 2 * n * d].view(n, d, -1)[valid].reshape(-1, B.shape[1])
        cov = 2.0 * model.config.k_B * dt * Bv @ Bv.T
        scale = cov.diagonal().mean().detach()
        cov = cov + (loc + jitter * scale) * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        nll = _gauss_nll_blocks(res.reshape(1, -1), cov.unsqueeze(0)).sum() / res.shape[0]
    else:
        raise ValueError("covariance must be 'marginal' or 'full'")
    return nll, {"ns": ns, "dS": dS, "mean": mean}


def multistep_nll(model: MetriplecticModel, r_seq: torch.Tensor, v_seq: torch.Tensor,
                  S0: torch.Tensor, valid_seq: torch.Tensor, pairs: torch.Tensor, dt: float,
                  box=None, loc_var=0.0, prescribed: torch.Tensor | None = None):
    """K-step NLL: the deterministic (noise-free) K-step prediction of v_{t+k}, k = 1..K,
    with covariance approximated by k one-step covariances at x_t (Gaussian closure).

    r_seq, v_seq : (K+1, N, d) observed; valid_seq : (K, N) bool for frames t+1..t+K;
    prescribed : (N,) bool particles whose (r, v) are taken from the data at every step
    (halo / boundary). Pairs are those at t (the caller adds a skin).
    """
    K = r_seq.shape[0] - 1
    state = State(r_seq[0], v_seq[0], S0)
    ns = model.compute(state, pairs, box)
    cov1 = model.velocity_covariance(ns, dt)
    d = r_seq.shape[-1]
    eye = torch.eye(d, dtype=r_seq.dtype, device=r_seq.device)
    total = r_seq.new_zeros(())
    count = 0
    cur = state
    for k in range(1, K + 1):
        nxt = model.step(cur, pairs, dt, box=box, noise=False)
        if prescribed is not None:
            pm = prescribed.unsqueeze(-1)
            nxt = State(torch.where(pm, r_seq[k], nxt.r), torch.where(pm, v_seq[k], nxt.v), nxt.S)
        valid = valid_seq[k - 1]
        res = (v_seq[k] - nxt.v)[valid]
        cov = k * cov1[valid] + (6.0 * loc_var / dt ** 2 + 1e-9 * cov1[valid].diagonal(
            dim1=-2, dim2=-1).mean(-1).detach()).view(-1, 1, 1) * eye
        total = total + _gauss_nll_blocks(res, cov).sum()
        count += int(valid.sum())
        cur = nxt
    return total / max(count, 1)
