"""S as carried state: encoded once, then evolved with the model's own dS/dt along the data.

The structural encoder gives each particle's S at the first frame it is seen (the start of
a training window, or a particle's entry into the field of view); after that S follows
the model's deterministic entropy production along the measured positions and velocities,
S_{t+1} = S_t + dt dS/dt(r_t, v_t, S_t). Training in this mode (``TrainConfig.s_memory =
"carried"``) scores the one-step likelihood of every observed velocity of a K-frame window
given the data before it and the carried S (:func:`carried_window_terms`), so S is learned
from what it does to the dynamics over K frames, with gradients through the carried S into
the encoder (truncated at the window start). :func:`carry_along` carries S over a whole
trajectory (the model folder's ``S.parquet``; the rearrangement AUCs).

**Noise-aware heat.** The entropy production dS/dt is a quadratic form in the velocities
(frictional heating: sum_pairs v_ij^T A_ij v_ij / theta and, with a substrate,
s0 |v_i|^2 / theta^2) plus terms that do not depend on them (Ito terms, heat
conduction). Measured velocities are v_obs = v + e, with e = (eps_{t} - eps_{t-1}) / dt the
localisation error (variance sigma^2 = ``loc_var`` per coordinate, length^2; 2 sigma^2 /
dt^2 per coordinate of e): the heating of e is counted as if it were motion, sigma^2-sized
per frame, and along tracks of slow colloids it swamps the latent heating (|dS| 110-140
k_B per frame against a spread of S of about 4 on the vacancy control). Here dS/dt counts
the heating of the latent motion instead, its expectation given the data:

    E[Q(v) | data] = Q(v_hat) + tr(A P),    v_hat = E[v | data],  P = Cov[v | data],

exact for a quadratic form Q(v) = v^T A v (no linear part). The posterior is the one the
likelihood's own noise model implies (:func:`velocity_posterior`): the one-step law of
v_{t+1} given the state at t (mean m, covariance Sigma, d mean / d v_t = c) sees the
residual rho = v_obs_{t+1} - m = innovation + n, n = (eps_{t+1} - eps_t - c (eps_t -
eps_{t-1})) / dt, Var n = b I, b = sigma^2 (1 + (1 + c)^2 + c^2) / dt^2. The error of
v_obs_{t+1}, e = (eps_{t+1} - eps_t) / dt, has Cov(e, rho) = a I, a = sigma^2 (2 + c) / dt^2,
so with V = Sigma + b I

    v_hat = v_obs - a V^-1 rho,     P = 2 sigma^2 / dt^2 I - a^2 V^-1

(Gaussian conditioning; P >= 0 since 2 b dt^2 / sigma^2 - (2 + c)^2 = 3 c^2 >= 0 where
Sigma = 0). At a particle's first velocity (no preceding transition) the prior is the
equilibrium law N(0, k_B theta / m I): v_hat = s / (s + R) v_obs, P = s R / (s + R) I,
s = k_B theta / m, R = 2 sigma^2 / dt^2. Without noise (sigma = 0) v_hat = v_obs and P = 0:
the plain dS/dt. tr(A P) is evaluated with P's isotropic part p = tr P / d (exact for
isotropic P; the substrate part always is) by the model's own drift: dS at velocities
whose quadratic invariants equal the expected ones (|v_i|^2 = d p_i; for each pair
(e . v_ij)^2 = p_i + p_j, |v_ij|^2 = d (p_i + p_j)) minus dS at v = 0.

**First-law heat** (``heat="work"``). The drift above books the model's *expected* heat:
the frictional heating of the latent motion plus the fluctuation (Ito) terms, which
presume thermal motion at the model's temperature theta. Where the data hold less latent
motion than theta implies (a lattice whose particles sit still between events, seen
through localisation noise), the fluctuation terms are not balanced and S cools steadily,
at a rate set by each particle's friction and temperature, i.e. by its structure. The
alternative books each frame's heat from the first law, as the model's own exact-OU
rollouts do (:class:`~colloidcg.core.integrators.ExactOU`): the heat q_i a particle receives
from t to t + 1 is the mechanical energy its friction channels took, the loss of its
latent kinetic energy K = (m / 2) E[|v|^2 | data] = (m / 2) (|v_hat|^2 + d p) plus the work
of the conservative forces along its measured displacement, by the trapezoidal rule
(booked one frame late, as the rollouts do):

    q_i(t) = K_i(t) - K_i(t+1) + F_i(t) . dr_i(t+1) + (F_i(t) - F_i(t-1)) . dr_i(t) / 2,

    dS_i = w q_i / theta_i + dt (heat conduction: the drift's conduction terms, as in the rollouts).

The kinetic terms telescope and the trapezoidal work of a time-reversible stationary
process has zero mean (it changes sign under time reversal), so along an equilibrium or
quiescent film the carried S has no mean drift, whatever the model's theta, while the work
the forces do on a particle that is moved (a shear) is heat. dS/dt of a row needs the
next frame's position: at a particle's last frame it is NaN. Where it stops working: along
thermal motion the realized work is large and random from frame to frame, so the carried S
random-walks (on the glass of ``benchmarks/rearrangements.py`` carried S + aux fell from
0.666 to 0.456; on the vacancy control's quiescent lattice it rose from 0.745 to 0.839), so
it is an option (``TrainConfig.s_heat``), not the default.

Units: S in k_B, velocities length/time (px/frame for tracks in px and frames), loc_var
length^2 (px^2), dS/dt k_B/time, q energy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core import dynamics
from ..core.config import State
from ..core.graph import find_pairs
from ..core.loss import TransitionMoments, moments_nll, transition_mean_cov
from ..core.model import MetriplecticModel
from ..core.ou import coefficients
from ..core.scatter import dot
from ..core.types import Terms
from ..data import Trajectory
from ..errors import ColloidcgError, ParameterError
from .labels import future_labels
from .measures import particle_sizes


# ----------------------------------------------------------------------------- noise-aware heat
def velocity_posterior(moments: TransitionMoments, v_obs: torch.Tensor, loc_var: float,
                       dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean (N, d) and isotropic variance p (N,) (length^2/time^2 per coordinate)
    of the latent v_{t+1} given its observation ``v_obs`` (N, d) and the one-step law
    ``moments`` from the state at t (module docstring)."""
    if not loc_var:
        return v_obs, torch.zeros_like(v_obs[:, 0])
    d = v_obs.shape[-1]
    c = moments.c
    s2 = loc_var / dt ** 2
    a = s2 * (2.0 + c)
    b = s2 * (1.0 + (1.0 + c) ** 2 + c ** 2)
    eye = torch.eye(d, dtype=v_obs.dtype, device=v_obs.device)
    V = moments.cov + b.view(-1, 1, 1) * eye
    rho = v_obs - moments.mean
    Vinv_rho = torch.linalg.solve(V, rho.unsqueeze(-1)).squeeze(-1)
    v_hat = v_obs - a.unsqueeze(-1) * Vinv_rho
    tr_Vinv = torch.linalg.inv(V).diagonal(dim1=-2, dim2=-1).sum(-1)
    p = (2.0 * s2 - a ** 2 * tr_Vinv / d).clamp_min(0.0)
    return v_hat, p


def entry_posterior(terms: Terms, v_obs: torch.Tensor, loc_var: float, dt: float,
                    k_B: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior of a velocity with no preceding transition, under the equilibrium prior
    N(0, k_B theta / m I): (mean (N, d), isotropic variance (N,))."""
    if not loc_var:
        return v_obs, torch.zeros_like(v_obs[:, 0])
    s = (k_B * terms.thermo.theta / terms.m).clamp_min(0.0)
    R = 2.0 * loc_var / dt ** 2
    k = s / (s + R)
    return k.unsqueeze(-1) * v_obs, k * R


def _perpendicular(e: torch.Tensor) -> torch.Tensor:
    """(P, d) unit vectors perpendicular to the unit vectors ``e`` (P, d), d = 2 or 3."""
    if e.shape[-1] == 2:
        return torch.stack([-e[:, 1], e[:, 0]], -1)
    ref = torch.zeros_like(e)
    ref[:, 0] = 1.0
    near_x = e[:, 0].abs() > 0.9
    ref[near_x, 0] = 0.0
    ref[near_x, 1] = 1.0
    n = torch.linalg.cross(e, ref)
    return n / torch.linalg.vector_norm(n, dim=-1, keepdim=True)


def latent_entropy_rate(model: MetriplecticModel, terms: Terms, v_hat: torch.Tensor,
                        p: torch.Tensor | None, dt: float) -> torch.Tensor:
    """dS/dt (N, n_s) of the latent motion: the model's deterministic drift at the posterior
    mean velocities ``v_hat`` (N, d) plus the expected heating of their posterior spread
    ``p`` (N,) (module docstring; None: no spread). ``terms``: the state's
    :class:`~colloidcg.core.types.Terms` (its own velocities are not used); ``dt`` the
    frame interval.

    Frame-averaged models: the friction heats with the latent *instantaneous* velocity u,
    not with the frame average v. Given v, u has the conditional law the exact-OU step
    starts from (:class:`~colloidcg.core.integrators.ExactOU`): mean v + a dt (1 - beta) / x,
    variance k_B theta / m x F1 per coordinate (x = gamma0 dt; :mod:`colloidcg.core.ou`),
    and v's own posterior spread p enters with the factor (1 - x (1 - beta) / x)^2. Without
    this the frame averages' smaller spread (2 / x of k_B theta / m for x >> 1) would
    count as a steady cooling."""
    g = terms.geom

    def rate(v: torch.Tensor, vij: torch.Tensor):
        return dynamics.drift(terms._replace(v=v, vij=vij), v, model.k_B, model.substrate, True)

    dv, dS = rate(v_hat, v_hat[g.i] - v_hat[g.j])
    if p is None:
        p = torch.zeros_like(v_hat[:, 0])
    if model.frame_averaged:
        x = terms.diss.gamma0 * dt
        co = coefficients(x)
        u_hat = v_hat + dv * (dt * co.omb).unsqueeze(-1)
        kT_m = (model.k_B * terms.thermo.theta / terms.m).clamp_min(0.0)
        p = (1.0 - x * co.omb) ** 2 * p + kT_m * co.varu
        dv, dS = rate(u_hat, u_hat[g.i] - u_hat[g.j])
    if not bool((p > 0).any()):
        return dS
    d = v_hat.shape[-1]
    pij = p[g.i] + p[g.j]
    fake_vij = pij.clamp_min(1e-300).sqrt().unsqueeze(-1) * (g.e + (d - 1) ** 0.5 * _perpendicular(g.e))
    fake_v = p.clamp_min(1e-300).sqrt().unsqueeze(-1).expand(-1, d)
    zero = torch.zeros_like(v_hat)
    return dS + rate(fake_v, fake_vij)[1] - rate(zero, zero[g.i] - zero[g.j])[1]


#: How the carried S books heat along the data (module docstring): ``drift``, the model's
#: expected dS/dt at the posterior velocities; ``work``, the first law with the latent
#: kinetic energy and the conservative forces' trapezoidal work.
HEATS = ("drift", "work")


def check_heat(heat: str) -> str:
    """``heat`` if it is one of :data:`HEATS`, else ParameterError."""
    if heat not in HEATS:
        raise ParameterError(f"s_heat: expected one of {', '.join(HEATS)}, got {heat!r}")
    return heat


def kinetic_energy(terms: Terms, v_hat: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """(N,) expected kinetic energy (m / 2) (|v_hat|^2 + d p) of velocities with posterior
    mean ``v_hat`` (N, d) and isotropic variance ``p`` (N,), energy units."""
    d = v_hat.shape[-1]
    return 0.5 * terms.m * (v_hat.square().sum(-1) + d * p)


def work_entropy_rate(model: MetriplecticModel, terms: Terms, k_now: torch.Tensor, k_next: torch.Tensor,
                      dr: torch.Tensor, late: torch.Tensor | None, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(dS/dt (N, n_s), heat q (N,)) of one frame by the first law (module docstring).

    ``terms``: the state at t; ``k_now``, ``k_next`` (N,): the expected kinetic energies at
    t and t + 1 (:func:`kinetic_energy`); ``dr`` (N, d): the measured displacement
    r_{t+1} - r_t; ``late`` (N,): the late half of the previous frame's trapezoidal work,
    (F(t) - F(t-1)) . dr(t) / 2, or None. Heat conduction enters as the drift's conduction
    terms (with their Ito part), as in the exact-OU rollouts."""
    q = k_now - k_next + dot(terms.force, dr)
    if late is not None:
        q = q + late
    _, cond = dynamics.pair_drift(terms, model.k_B, True, False)
    return (q / (terms.thermo.theta * dt) + cond).unsqueeze(-1) * terms.w, q


# ----------------------------------------------------------------------------- training windows
@dataclass
class CarriedWindow:
    """A sub-system followed over K steps (frames t..t+K) for training with carried S;
    m particles, d dimensions.

    index : (m,) long, trajectory rows (particles present in every frame t-1..t+K)
    r, v : (K+1, m, d) positions (length) and velocities (length/time) at t..t+K
    pairs : K tensors (P_k, 2) long, pairs within the cutoff at t+k (local indices), k < K
    interior : (m,) bool, particles scored at every step (the rest: halo, prescribed)
    size : (m,) per-particle sizes, or None
    labels : (K, m) float rearrangement labels at t..t+K-1 (1, 0, NaN), or None
    t : the window's first frame (the trajectory's frame index)
    """

    index: torch.Tensor
    r: torch.Tensor
    v: torch.Tensor
    pairs: list
    interior: torch.Tensor
    size: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    t: int = 0

    @property
    def steps(self) -> int:
        return self.r.shape[0] - 1


def make_carried_window(traj: Trajectory, t: int, steps: int, cutoff: float,
                        among: torch.Tensor | None = None, interior: torch.Tensor | None = None,
                        horizon: int | None = None) -> CarriedWindow:
    """The carried-S window of up to ``steps`` frames from t (fewer near the end of the
    data), of the particles present in frames t-1..t+K (only those of the (N,) bool mask
    ``among`` when given), scored where the trajectory's mask (and ``interior``) holds in
    every frame t..t+K; ``horizon`` attaches the rearrangement labels of frames t..t+K-1
    (NaN outside ``interior`` when given: a patch's halo)."""
    K = max(1, min(steps, traj.n_frames - 1 - t))
    win = traj.present[t - 1: t + K + 1].all(0)
    if among is not None:
        win = win & among
    idx = torch.nonzero(win).squeeze(-1)
    r = traj.pos[t: t + K + 1, idx]
    inner = traj.mask[t: t + K + 1, idx].all(0)
    if interior is not None:
        inner = inner & interior[idx]
    pairs = [find_pairs(r[k], cutoff, traj.box) for k in range(K)]
    labels = None
    if horizon is not None and traj.rearranging is not None:
        rows = []
        for k in range(K):
            lab = future_labels(traj, t + k, horizon)
            rows.append(torch.full((idx.numel(),), float("nan"), dtype=r.dtype, device=r.device)
                        if lab is None else lab[idx].to(r.dtype))
        labels = torch.stack(rows)
        if interior is not None:   # a sub-system's halo is not scored by the auxiliary loss either
            labels = torch.where(interior[idx], labels, torch.full_like(labels, float("nan")))
    return CarriedWindow(idx, r, traj.vel[t: t + K + 1, idx], pairs, inner, particle_sizes(traj, idx), labels, t)


def carried_window_terms(model: MetriplecticModel, w: CarriedWindow, dt: float, box=None,
                         loc_var: float = 0.0, aux=None, start: "CarriedStart | None" = None,
                         heat: str = "drift") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(NLL, auxiliary loss or None) of a carried-S window.

    S_0 is the window's start S: with ``start`` (a :class:`CarriedStart`, training's
    default) the S carried from each particle's entry frame, as :func:`carry_along` and
    the scores use it; without, S encoded from the window's first frame. For k = 0..K-1
    the observed v_{t+k+1} is scored under the one-step law from the data (r, v) at t+k
    and the carried S_k (:func:`colloidcg.core.loss.moments_nll`), and S_{k+1} = S_k + dt
    dS/dt with the noise-aware dS/dt of :func:`latent_entropy_rate` (``heat="drift"``) or
    the first-law heat of :func:`work_entropy_rate` (``heat="work"``; the window's first
    step has no late half of the previous frame's work). The NLL is the mean
    over steps and scored particles (for K = 1 without ``start`` it equals the one-step
    NLL of the encoded S); ``aux`` (an :class:`~colloidcg.train.AuxiliaryLoss`) is the mean
    over steps of its loss on S_k against the labels of frame t+k.
    """
    check_heat(heat)
    if start is not None:
        S = start.start_S(model, w.t, w.index)
    else:
        S = model.initial_S(w.r[0], w.pairs[0], box)
    total = w.r.new_zeros(())
    count = 0
    aux_terms = []
    v_hat = p = None
    force = dr_prev = None
    for k in range(w.steps):
        mom = transition_mean_cov(model, State(w.r[k], w.v[k], S, w.size), w.pairs[k], dt, box)
        nll = moments_nll(mom, w.v[k + 1], w.interior, dt, loc_var)
        total = total + nll.sum()
        count += int(nll.shape[0])
        if aux is not None and w.labels is not None:
            a = aux(S, w.labels[k])
            if a is not None:
                aux_terms.append(a)
        if k + 1 < w.steps:
            if v_hat is None:
                v_hat, p = entry_posterior(mom.terms, w.v[k], loc_var, dt, model.k_B)
            if heat == "work":
                v_next, p_next = velocity_posterior(mom, w.v[k + 1], loc_var, dt)
                dr = w.v[k + 1] * dt
                late = None if force is None else 0.5 * dot(mom.terms.force - force, dr_prev)
                rate, _ = work_entropy_rate(model, mom.terms, kinetic_energy(mom.terms, v_hat, p),
                                            kinetic_energy(mom.terms, v_next, p_next), dr, late, dt)
                S = S + dt * rate
                force, dr_prev = mom.terms.force, dr
                v_hat, p = v_next, p_next
                continue
            S = S + dt * latent_entropy_rate(model, mom.terms, v_hat, p, dt)
            v_hat, p = velocity_posterior(mom, w.v[k + 1], loc_var, dt)
    aux_loss = torch.stack(aux_terms).mean() if aux_terms else None
    return total / max(count, 1), aux_loss


# ----------------------------------------------------------------------------- whole trajectories
@dataclass
class CarriedS:
    """S carried along a trajectory (T frames, N particles, n_s components).

    S : (T, N, n_s) S at every present row (NaN elsewhere), k_B.
    dSdt : (T, N, n_s) the noise-aware dS/dt used from that row to the next, k_B/time
        (NaN at rows without a velocity: a particle's first frame).
    """

    S: torch.Tensor
    dSdt: torch.Tensor


@torch.no_grad()
def carry_along(model: MetriplecticModel, traj: Trajectory, loc_var: float = 0.0,
                progress: bool = False, heat: str = "drift") -> CarriedS:
    """Carry S along ``traj`` (:class:`CarriedS`): each particle's S is encoded at the first
    frame it is seen (from that frame's configuration) and then advanced frame by frame
    with the noise-aware dS/dt (:func:`latent_entropy_rate`) at the measured positions and
    the posterior velocities (:func:`velocity_posterior`; localisation variance
    ``loc_var``, length^2). A particle that disappears and comes back is encoded again.
    At a particle's first frame its velocity is unknown: it enters its neighbours' drift
    with v = 0, its own S is held to the next frame. ``heat="work"`` books the first-law
    heat of :func:`work_entropy_rate` instead of the drift (module docstring): a row's rate
    then also needs the particle's next frame (NaN, and S held, at its last frame)."""
    check_heat(heat)
    T, N, d = traj.pos.shape
    dt = traj.dt
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    pos, vel = traj.pos.to(device, dtype), traj.vel.to(device, dtype)
    present = traj.present.to(device)
    box = None if traj.box is None else traj.box.to(device, dtype)
    size = None if traj.size is None else traj.size.to(device, dtype)
    n_s = model.n_s
    S_out = torch.full((T, N, n_s), float("nan"), dtype=dtype, device=device)
    dS_out = torch.full_like(S_out, float("nan"))
    cur = torch.full((N, n_s), float("nan"), dtype=dtype, device=device)
    carried = torch.zeros(N, dtype=torch.bool, device=device)
    prev_mom = None          # (index, TransitionMoments, had a velocity) of the previous frame
    work = heat == "work"
    if work:                 # per particle: the next frame's kinetic energy, last force and step
        k_next = torch.full((N,), float("nan"), dtype=dtype, device=device)
        f_last = torch.zeros((N, d), dtype=dtype, device=device)
        dr_last = torch.zeros((N, d), dtype=dtype, device=device)
        booked = torch.zeros(N, dtype=torch.bool, device=device)
    frames = range(T)
    if progress:
        from tqdm.auto import tqdm
        frames = tqdm(frames, desc="carry S", leave=False)
    for t in frames:
        here = present[t]
        carried = carried & here                      # gone particles are re-encoded on return
        if work:
            booked = booked & here
        idx = torch.nonzero(here).squeeze(-1)
        if idx.numel() == 0:
            prev_mom = None
            continue
        r = pos[t, idx]
        shear = None if traj.shear is None else traj.shear[t].to(device, dtype)
        pairs = find_pairs(r, model.cutoff, box, shear)
        new = ~carried[idx]
        if bool(new.any()):
            cur[idx[new]] = model.initial_S(r, pairs, box, shear)[new]
            carried[idx[new]] = True
        S_out[t, idx] = cur[idx]
        has_v = present[t - 1, idx] if t > 0 else torch.zeros_like(new)
        v = torch.where(has_v.unsqueeze(-1), vel[t, idx], torch.zeros_like(r))
        sz = None if size is None else size[idx]
        mom = transition_mean_cov(model, State(r, v, cur[idx], sz), pairs, dt, box, shear)
        v_hat, p = entry_posterior(mom.terms, v, loc_var, dt, model.k_B)
        if prev_mom is not None and loc_var:
            pidx, pm, p_has_v = prev_mom
            slot = torch.full((N,), -1, dtype=torch.long, device=device)
            slot[pidx[p_has_v]] = torch.nonzero(p_has_v).squeeze(-1)
            j = slot[idx]
            ok = (j >= 0) & has_v
            if bool(ok.any()):
                jj = j[ok]
                sub = TransitionMoments(pm.mean[jj], pm.cov[jj], pm.c[jj], pm.terms, pm.dS[jj])
                vh, pp = velocity_posterior(sub, v[ok], loc_var, dt)
                v_hat, p = v_hat.clone(), p.clone()
                v_hat[ok], p[ok] = vh, pp
        v_hat = torch.where(has_v.unsqueeze(-1), v_hat, torch.zeros_like(v_hat))
        p = torch.where(has_v, p, torch.zeros_like(p))
        if work:
            go = has_v & (present[t + 1, idx] if t + 1 < T else torch.zeros_like(has_v))
            v1 = vel[t + 1, idx] if t + 1 < T else torch.zeros_like(v)
            v1 = torch.where(go.unsqueeze(-1), v1, torch.zeros_like(v1))
            vh1, p1 = velocity_posterior(mom, v1, loc_var, dt)
            k1 = kinetic_energy(mom.terms, vh1, p1)
            k0 = torch.where(booked[idx], k_next[idx], kinetic_energy(mom.terms, v_hat, p))
            dr = v1 * dt
            late = torch.where(booked[idx], 0.5 * dot(mom.terms.force - f_last[idx], dr_last[idx]),
                               torch.zeros_like(k0))
            rate, _ = work_entropy_rate(model, mom.terms, k0, k1, dr, late, dt)
            k_next[idx], f_last[idx], dr_last[idx] = k1, mom.terms.force, dr
            booked[idx] = go
            has_v = go
        else:
            rate = latent_entropy_rate(model, mom.terms, v_hat, p, dt)
        rate = torch.where(has_v.unsqueeze(-1), rate, torch.zeros_like(rate))
        dS_out[t, idx] = torch.where(has_v.unsqueeze(-1), rate, torch.full_like(rate, float("nan")))
        cur[idx] = cur[idx] + dt * rate
        prev_mom = (idx, mom, has_v)
    return CarriedS(S_out, dS_out)


def carried_table(model: MetriplecticModel, traj: Trajectory, loc_var: float = 0.0,
                  progress: bool = False, heat: str = "drift"):
    """:func:`carry_along` as a table: frame, particle, S0 [, S1 ...] (k_B), dSdt (the sum
    over components, k_B per frame), one row per tracked row of ``traj``; frames and
    particle ids those of the tracks; ``heat``: as :func:`carry_along`."""
    import pandas as pd
    res = carry_along(model, traj, loc_var, progress, heat)
    pres = traj.present.cpu().numpy()
    tt, nn = np.nonzero(pres)
    S = res.S.cpu().numpy()[tt, nn]
    dS = res.dSdt.sum(-1).cpu().numpy()[tt, nn] * traj.dt
    cols = {"frame": np.asarray(traj.frames)[tt].astype(np.int64),
            "particle": np.asarray(traj.particles)[nn]}
    for k in range(S.shape[1]):
        cols[f"S{k}"] = S[:, k]
    cols["dSdt"] = dS
    return pd.DataFrame(cols)


# ----------------------------------------------------------------------------- training from the carried state
def entry_frames(present: torch.Tensor) -> torch.Tensor:
    """(T, N) long: for each present row, the frame at which the particle's current run of
    presence began (its entry into the field of view, or its first frame); -1 where absent.
    ``present``: (T, N) bool."""
    T, N = present.shape
    out = torch.full((T, N), -1, dtype=torch.long, device=present.device)
    run = torch.full((N,), -1, dtype=torch.long, device=present.device)
    for t in range(T):
        here = present[t]
        run = torch.where(here, torch.where(run >= 0, run, torch.full_like(run, t)), torch.full_like(run, -1))
        out[t] = run
    return out


class CarriedStart:
    """The start S of training's carried windows: S as :func:`carry_along` carries it along
    the training trajectory (encoded at each particle's entry frame, then advanced with the
    noise-aware dS/dt), so that training sees S at the ages at which it is used along the
    data, in rollouts and by the scores, not only within ``s_window`` frames of an encoding.

    :meth:`refresh` carries S with the current weights (no gradient; once per epoch).
    :meth:`start_S` returns, for a window's particles, that carried value with the gradient
    of the encoder at their entry frames attached (S_t = S_enc + sum of dS, the sum held
    fixed: truncated backpropagation through time, cut at the window's start). Units: S in
    k_B; ``loc_var`` the localisation variance (length^2) of the noise-aware heat; ``heat``
    how heat is booked (:data:`HEATS`).
    """

    def __init__(self, traj: Trajectory, loc_var: float = 0.0, heat: str = "drift"):
        self.traj, self.loc_var, self.heat = traj, float(loc_var), check_heat(heat)
        self.entry = entry_frames(traj.present)
        self.S: torch.Tensor | None = None
        self._pairs: dict = {}

    @torch.no_grad()
    def refresh(self, model: MetriplecticModel) -> None:
        """Carry S along the whole trajectory with the model's current weights."""
        was = model.training
        model.eval()
        self.S = carry_along(model, self.traj, self.loc_var, heat=self.heat).S
        model.train(was)

    def _encoded(self, model: MetriplecticModel, f: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows present at frame f (M,), their encoded S (M, n_s), with gradient)."""
        tr = self.traj
        if f not in self._pairs:
            idx = torch.nonzero(tr.present[f]).squeeze(-1)
            self._pairs[f] = (idx, find_pairs(tr.pos[f, idx], model.cutoff, tr.box))
        idx, pairs = self._pairs[f]
        return idx, model.initial_S(tr.pos[f, idx], pairs, tr.box)

    def start_S(self, model: MetriplecticModel, t: int, index: torch.Tensor) -> torch.Tensor:
        """(m, n_s) S at frame t of the trajectory rows ``index`` (m,): the carried value,
        differentiable through the encoder at each row's entry frame."""
        if self.S is None:
            self.refresh(model)
        value = self.S[t, index]
        if not bool(torch.isfinite(value).all()):
            raise ColloidcgError(f"carried S: rows absent at frame {t} have no carried S")
        ent = self.entry[t, index]
        enc = torch.zeros_like(value)
        slot = torch.full((self.traj.n_particles,), -1, dtype=torch.long, device=index.device)
        for f in torch.unique(ent).tolist():
            rows = torch.nonzero(ent == f).squeeze(-1)
            idx, S_f = self._encoded(model, int(f))
            slot[idx] = torch.arange(idx.numel(), device=idx.device)
            enc = enc.index_copy(0, rows, S_f[slot[index[rows]]])
        return value + (enc - enc.detach())
