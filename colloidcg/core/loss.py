"""Gaussian negative log-likelihood of observed transitions.

Data velocities are frame averages v_t = (r_t - r_{t-1}) / dt, so positions follow
exactly (r_{t+1} = r_t + v_{t+1} dt) and carry no extra information; the likelihood is that
of v_{t+1} given the state x_t = (r_t, v_t, S_t). It is Gaussian with, per particle,

- Euler-Maruyama models (``config.frame_average`` off, or no substrate):
  mean v_t + a(x_t) dt, covariance Sigma = 2 k_B M_vv(x_t) dt (a the full drift: forces,
  friction, Ito term);
- frame-averaged models: mean v_t + a dt F1(x), covariance Sigma G(x), x = gamma0 dt the
  substrate friction per frame (:mod:`.ou`): the exact one-frame statistics of averaged
  velocities of a Langevin particle, whose instantaneous velocity is latent;
- pair-frame-averaged models (momentum-conserving, ``config.frame_average`` without a
  substrate): the same factors with x = gamma_i dt, gamma_i the particle's mean-field
  pair-friction rate (its neighbours' velocities held over the frame;
  :func:`.dynamics.pair_friction_rate`). Without them the Euler-Maruyama likelihood reads
  the strongly correlated averages of consecutive frames as weak friction: on the star
  melt (x ~ 0.75 per frame) it learned a third of the friction and the rollout diffused
  3x too far. The multistep terms beyond the first frame keep the Euler-Maruyama closure.

Localisation noise of variance sigma^2 per coordinate adds (eps_{t+1} - eps_t - c (eps_t -
eps_{t-1})) / dt to the residual, c = d mean / d v_t (rho1 for frame-averaged models,
1 - gamma0 dt for Euler-Maruyama), a variance sigma^2 (1 + (1 + c)^2 + c^2) / dt^2.

``covariance="marginal"`` (default) sums, over particles, the exact marginal Gaussian
log-density of each particle's increment (d x d covariance blocks of M_vv): a composite
likelihood (Lindsay 1988; Varin, Reid & Firth 2011), consistent for the parameters, linear
in N. ``covariance="full"`` uses the joint dense covariance (small systems only; it keeps
the per-particle frame-averaging factors as a diagonal scaling).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .config import State
from .dense import dense_channels
from .driver import wrap
from .dynamics import pair_friction_rate
from .integrators import EulerMaruyama, ExactOU
from .model import MetriplecticModel
from .ou import coefficients, conditional_variance_factor
from .types import Carry, Terms


def _gauss_nll_blocks(res: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Per-row NLL of residuals (N, d) under (N, d, d) covariances."""
    d = res.shape[-1]
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):  # not positive definite (diverged weights): report NaN
        return res.new_full(res.shape[:-1], float("nan"))
    z = torch.linalg.solve_triangular(chol, res.unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return 0.5 * (z.square().sum(-1) + logdet + d * math.log(2 * math.pi))


def _loc_factor(c: torch.Tensor) -> torch.Tensor:
    """Localisation-noise variance of a one-frame residual, in units sigma^2 / dt^2."""
    return 1.0 + (1.0 + c) ** 2 + c ** 2


def _rates(model: MetriplecticModel, ns, dt: float, like: torch.Tensor) -> torch.Tensor:
    """Substrate friction per frame x = gamma0 dt (N,), zero without a substrate."""
    if model.substrate:
        return ns.diss.gamma0 * dt
    return torch.zeros(ns.geom.n, dtype=like.dtype, device=like.device)


def _averaging_rates(model: MetriplecticModel, ns, dt: float) -> torch.Tensor | None:
    """Friction per frame x (N,) that sets the frame-averaging factors of :mod:`.ou`: the
    substrate's gamma0 dt for frame-averaged models, the mean-field pair-friction rate
    times dt for pair-frame-averaged (momentum-conserving) ones, None for neither."""
    if model.frame_averaged:
        return ns.diss.gamma0 * dt
    if model.pair_frame_averaged:
        return pair_friction_rate(ns) * dt
    return None


class TransitionMoments(NamedTuple):
    """The Gaussian law of v_{t+1} given the state at t.

    mean : (N, d) L/t.  cov : (N, d, d) per-particle covariance blocks, (L/t)^2.
    c : (N,) d mean / d v_t of the substrate part (for the localisation-noise term).
    terms : the state's :class:`~.types.Terms`.  dS : (N, n_s) dS/dt of the drift, 1/t.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    c: torch.Tensor
    terms: Terms
    dS: torch.Tensor


def transition_mean_cov(model: MetriplecticModel, state: State, pairs: torch.Tensor, dt: float,
                        box=None, shear=None) -> TransitionMoments:
    """Mean (N, d) and covariance blocks (N, d, d) of v_{t+1} given ``state`` at t
    (:class:`TransitionMoments`); ``shear``: the Lees-Edwards state of a sheared box at t
    (:mod:`.driver`), or None."""
    ns = model.compute(state, pairs, box, shear)
    _, dv, dS = model.drift(state, pairs, box, ns=ns)
    cov = model.velocity_covariance(ns, dt)
    xa = _averaging_rates(model, ns, dt)
    if xa is not None:
        co = coefficients(xa)
        mean = state.v + dv * (dt * co.F1).unsqueeze(-1)
        cov = cov * co.G.view(-1, 1, 1)
        c = co.rho1
    else:
        mean = state.v + dv * dt
        c = 1.0 - _rates(model, ns, dt, dv)
    return TransitionMoments(mean, cov, c, ns, dS)


def moments_nll(moments: TransitionMoments, v_next: torch.Tensor, valid: torch.Tensor, dt: float,
                loc_var: torch.Tensor | float = 0.0, jitter: float = 1e-9) -> torch.Tensor:
    """(n_valid,) marginal NLL of each valid particle's observed v_{t+1} (N, d) under the
    one-step law ``moments`` with localisation noise of variance ``loc_var`` (length^2 per
    coordinate): the per-particle terms :func:`transition_nll` averages."""
    res = (v_next - moments.mean)[valid]
    d = res.shape[-1]
    eye = torch.eye(d, dtype=res.dtype, device=res.device)
    loc = (loc_var / dt ** 2) * _loc_factor(moments.c)[valid]
    cov = moments.cov[valid]
    scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).detach().clamp_min(1e-300)
    cov = cov + (loc + jitter * scale).view(-1, 1, 1) * eye
    return _gauss_nll_blocks(res, cov)


def transition_nll(model: MetriplecticModel, state: State, v_next: torch.Tensor,
                   valid: torch.Tensor, pairs: torch.Tensor, dt: float, box=None,
                   loc_var: torch.Tensor | float = 0.0, covariance: str = "marginal",
                   jitter: float = 1e-9, shear=None):
    """Mean NLL per valid particle of one observed transition.

    Parameters
    ----------
    state : State at t (S usually from the structural encoder).
    v_next : (N, d) observed velocity at t + 1.
    valid : (N,) bool: particles entering the loss (interior, observed at t-1, t, t+1).
    pairs : (P, 2) neighbour pairs at t.
    loc_var : localisation variance per coordinate (length^2), tensor or float.
    covariance : "marginal" or "full" ("marginal" only in a sheared box).
    shear : the Lees-Edwards state (2,) of a sheared box at t, or None.

    Returns
    -------
    (nll, moments): scalar tensor and the :class:`TransitionMoments` it was computed from.
    """
    if shear is not None and covariance != "marginal":
        raise ValueError("covariance: a sheared box supports 'marginal' only")
    moments = transition_mean_cov(model, state, pairs, dt, box, shear)
    mean, c = moments.mean, moments.c
    res = (v_next - mean)[valid]
    d = res.shape[-1]
    loc = (loc_var / dt ** 2) * _loc_factor(c)[valid]
    if covariance == "marginal":
        nll = moments_nll(moments, v_next, valid, dt, loc_var, jitter).mean()
    elif covariance == "full":
        B = dense_channels(model, state, pairs, box)
        n = state.r.shape[0]
        Bv = B[n * d: 2 * n * d].view(n, d, -1)
        xa = _averaging_rates(model, moments.terms, dt)
        if xa is not None:
            Bv = Bv * coefficients(xa).G.sqrt().view(-1, 1, 1)
        Bv = Bv[valid].reshape(-1, B.shape[1])
        cov = 2.0 * model.k_B * dt * Bv @ Bv.T
        scale = cov.diagonal().mean().detach()
        cov = cov + torch.diag((loc + jitter * scale).repeat_interleave(d))
        nll = _gauss_nll_blocks(res.reshape(1, -1), cov.unsqueeze(0)).sum() / res.shape[0]
    else:
        raise ValueError("covariance must be 'marginal' or 'full'")
    return nll, moments


def multistep_nll(model: MetriplecticModel, r_seq: torch.Tensor, v_seq: torch.Tensor,
                  S0: torch.Tensor, valid_seq: torch.Tensor, pairs: torch.Tensor, dt: float,
                  box=None, loc_var=0.0, prescribed: torch.Tensor | None = None,
                  size: torch.Tensor | None = None):
    """K-step NLL: mean over k = 1..K and valid particles of -log p(v_{t+k} | x_t).

    Gaussian closure: the mean is the noise-free K-step path from x_t (for frame-averaged
    models from the latent instantaneous velocity's conditional mean, with the exact-OU
    step), the covariance that of the linearised substrate dynamics, exact for free
    particles: Sigma (1 - phi^{2k}) / (1 - phi^2), phi = 1 - gamma0 dt (Euler-Maruyama), or
    Sigma phi2 (1 - rho_k^2) / x, rho_k = rho1 e^{-x (k-1)} (frame-averaged; :mod:`.ou`).
    For K = 1 it equals :func:`transition_nll`.

    r_seq, v_seq : (K+1, N, d) observed; valid_seq : (K, N) bool for frames t+1..t+K;
    prescribed : (N,) bool particles whose (r, v) are taken from the data at every step
    (halo / boundary); size : (N,) per-particle sizes (models with sizes). Pairs are those
    at t (the caller adds a skin).
    """
    K = r_seq.shape[0] - 1
    state = State(r_seq[0], v_seq[0], S0, size)
    mean1, cov1, c1, ns, _ = transition_mean_cov(model, state, pairs, dt, box)
    sigma = model.velocity_covariance(ns, dt)
    x = _rates(model, ns, dt, sigma)
    d = r_seq.shape[-1]
    eye = torch.eye(d, dtype=r_seq.dtype, device=r_seq.device)
    total = r_seq.new_zeros(())
    count = 0
    fa = model.frame_averaged
    em = EulerMaruyama(model)
    ou = ExactOU(model)
    zero = torch.zeros_like(state.r)
    cur = Carry(wrap(state.r, box), state.v, state.S, state.v, zero, zero)
    if fa:   # the latent instantaneous velocity's conditional mean; friction sees the data's v
        cur = Carry(cur.r, ou.init(state.r, state.v, state.S, pairs, box, size, dt, None, False).u,
                    state.S, state.v, zero, zero)
    v_prev = state.v
    for k in range(1, K + 1):
        if k == 1:
            mean, cov, c = mean1, cov1, c1
            if fa:
                nxt = ou.step(cur, pairs, box, size, dt, None, False)
                v_prev = nxt.dr / dt
            else:
                nxt = em.step(cur, pairs, box, size, dt, None, False)
        else:
            if fa:
                nxt = ou.step(Carry(cur.r, cur.u, cur.S, v_prev, zero, zero), pairs, box, size, dt, None, False)
                mean = nxt.dr / dt
                cov = sigma * conditional_variance_factor(x, k).view(-1, 1, 1)
                c = coefficients(x).rho1 * torch.exp(-x * (k - 1))
            else:
                nxt = em.step(cur, pairs, box, size, dt, None, False)
                mean = nxt.u
                phi2 = (1.0 - x) ** 2
                cov = sigma * sum(phi2 ** j for j in range(k)).view(-1, 1, 1)
                c = (1.0 - x) ** k
        if fa and k > 1:
            v_prev = mean
        if prescribed is not None:
            pm = prescribed.unsqueeze(-1)
            nxt = Carry(torch.where(pm, r_seq[k], nxt.r), torch.where(pm, v_seq[k], nxt.u), nxt.S,
                        nxt.v_avg, zero, zero)
            if fa:
                v_prev = torch.where(pm, v_seq[k], v_prev)
        valid = valid_seq[k - 1]
        res = (v_seq[k] - mean)[valid]
        locf = _loc_factor(c) if k == 1 else 2.0 + 2.0 * c ** 2
        cv = cov[valid]
        cv = cv + (loc_var / dt ** 2 * locf[valid] + 1e-9 * cv.diagonal(
            dim1=-2, dim2=-1).mean(-1).detach()).view(-1, 1, 1) * eye
        total = total + _gauss_nll_blocks(res, cv).sum()
        count += int(valid.sum())
        cur = nxt
    return total / max(count, 1)
