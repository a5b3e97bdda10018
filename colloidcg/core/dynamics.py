"""The dynamics of the metriplectic model as pure functions of its :class:`~.types.Terms`.

dx = [L dE/dx + M dS/dx + k_B div M] dt + dx~,  <dx~ dx~^T> = 2 k_B M dt  (module docstring of
:mod:`.model` for the channels). Every function here reads the terms of one state and
explicit inputs (velocities, noise numbers, dt, k_B) and returns tensors; none holds state
or draws random numbers itself unless given a generator. They are TorchScript-compatible:
the exported model compiles them.

The Ito drift k_B div M is evaluated analytically, channel family by channel family, from
div(b b^T) = (b . grad) b + b (div b), using theta's derivative kappa = w^T (d^2U/dS^2) w.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .ou import coefficients
from .scatter import dot, scatter2
from .types import Terms


def pair_drift(t: Terms, k_B: float, ito: bool = True, friction_heat: bool = True,
               friction_force: bool = True) -> Tuple[Tensor, Tensor]:
    """Conservative forces and the pair channels (friction, conduction) of the drift:
    dv/dt (N, d) and the scalar dS/dt (N,) before the heat weights.

    ``friction_heat=False`` leaves the friction channels' entropy terms (frictional heating
    and their Ito terms) out of dS/dt, for steps that book the realized heat instead (the
    exact-OU step). ``friction_force=False`` also leaves out the pair friction force
    -Gamma v_ij / m itself (not its Ito terms), for steps that integrate it pair by pair
    (:func:`pair_ou_sweep`)."""
    g, ds = t.geom, t.diss
    n, e, m = g.n, g.e, t.m
    d = e.shape[1]
    th_i, th_j, th_bar = ds.th_i, ds.th_j, ds.th_bar
    kappa = t.thermo.kappa
    k_i, k_j = kappa[g.i], kappa[g.j]
    vij = t.vij
    ev = dot(e, vij)
    par_v = e * ev.unsqueeze(-1)       # e (e . v)
    perp_v = vij - par_v               # P v
    q3_par = ev.square()
    q3_perp = (vij.square().sum(-1) - q3_par).clamp_min(0.0)
    sp, sp_i, sp_j = ds.s2_perp
    sb, sb_i, sb_j = ds.s2_par
    # M dS/dx: friction force and frictional heating
    ff = 1.0 if friction_force else 0.0
    fv = -ff * ((sp / th_bar).unsqueeze(-1) * perp_v + (sb / th_bar).unsqueeze(-1) * par_v)
    heat = (sp * q3_perp + sb * q3_par) / (2.0 * th_bar)        # = T_i dS_i = T_j dS_j
    fh = 1.0 if friction_heat else 0.0
    sdot_i = fh * heat / th_i
    sdot_j = fh * heat / th_j
    c2, c2_i, c2_j = ds.c2
    cond = c2 * (1.0 / th_i - 1.0 / th_j)
    sdot_i = sdot_i + cond / th_i
    sdot_j = sdot_j - cond / th_j
    if ito and k_B != 0.0:
        kb = k_B
        for s2, s2i, s2j, q1, q2, q3 in ((sp, sp_i, sp_j, perp_v, d - 1, q3_perp),
                                         (sb, sb_i, sb_j, par_v, 1, q3_par)):
            a_i = s2i / th_i - s2 / th_i ** 2
            a_j = s2j / th_j - s2 / th_j ** 2
            fv = fv - kb / 2.0 * (k_i * a_i + k_j * a_j).unsqueeze(-1) * q1
            b_i = s2i / th_i ** 2 - 2.0 * s2 / th_i ** 3
            b_j = s2j / th_j ** 2 - 2.0 * s2 / th_j ** 3
            c_i = s2i / (th_i * th_j) - s2 / (th_i ** 2 * th_j)
            c_j = s2j / (th_i * th_j) - s2 / (th_i * th_j ** 2)
            sdot_i = sdot_i + fh * kb * (-q2 * s2 / (m * th_i) + q3 / 4.0 * (k_i * b_i + k_j * c_j))
            sdot_j = sdot_j + fh * kb * (-q2 * s2 / (m * th_j) + q3 / 4.0 * (k_j * b_j + k_i * c_i))
        sdot_i = sdot_i + kb * (k_i * (c2_i / th_i ** 2 - 2 * c2 / th_i ** 3)
                                - k_j * (c2_j / (th_i * th_j) - c2 / (th_i * th_j ** 2)))
        sdot_j = sdot_j + kb * (k_j * (c2_j / th_j ** 2 - 2 * c2 / th_j ** 3)
                                - k_i * (c2_i / (th_i * th_j) - c2 / (th_i ** 2 * th_j)))
    dv = t.force / m + scatter2(n, g.ij, fv, -fv) / m
    sdot = scatter2(n, g.ij, sdot_i, sdot_j)
    return dv, sdot


def pair_friction_rate(t: Terms) -> Tensor:
    """(N,) each particle's pair-friction rate, 1/t: the diagonal of the pair friction
    -Gamma v_ij / m per unit of its own velocity, averaged over the d directions,
    gamma_i = sum_j ((d - 1) s2_perp + s2_par) / (d theta_bar m). It is the friction the
    particle would feel if its neighbours' velocities were held (the mean-field rate the
    frame-averaged likelihood of momentum-conserving models uses, :mod:`.loss`)."""
    g, ds = t.geom, t.diss
    d = g.e.shape[1]
    per_pair = ((d - 1) * ds.s2_perp[0] + ds.s2_par[0]) / (d * ds.th_bar)
    return scatter2(g.n, g.ij, per_pair, per_pair) / t.m


def substrate_drift(t: Terms, v: Tensor, k_B: float, ito: bool = True) -> Tuple[Tensor, Tensor]:
    """Substrate (solvent) part of the drift besides the friction -gamma0 v: the Ito
    velocity term (N, d) and dS/dt (N,) (frictional heating and its Ito term)."""
    d = v.shape[1]
    m = t.m
    s0, s0p = t.diss.s0
    th = t.thermo.theta
    v2 = v.square().sum(-1)
    sdot = s0 * v2 / th ** 2
    dv_ito = torch.zeros_like(v)
    if ito and k_B != 0.0:
        kappa = t.thermo.kappa
        dv_ito = -k_B * (kappa * (s0p / th - s0 / th ** 2) / m).unsqueeze(-1) * v
        sdot = sdot + k_B * (-d * s0 / (m * th) + v2 * kappa * (s0p / th ** 2 - 2 * s0 / th ** 3))
    return dv_ito, sdot


def drift(t: Terms, v: Tensor, k_B: float, substrate: bool, ito: bool = True) -> Tuple[Tensor, Tensor]:
    """Deterministic drift (dv/dt (N, d), dS/dt (N, n_s)) = [L dE/dx + M dS/dx + k_B div M]_(v, S);
    dr/dt = v."""
    dv, sdot = pair_drift(t, k_B, ito, True)
    if substrate:
        dv_ito, sdot_sub = substrate_drift(t, v, k_B, ito)
        dv = dv - t.diss.gamma0.unsqueeze(-1) * v + dv_ito
        sdot = sdot + sdot_sub
    return dv, sdot.unsqueeze(-1) * t.w


def normal_numbers(t: Terms, n_particle_sets: int, generator: Optional[torch.Generator]) -> Tuple[Tensor, Tensor]:
    """Standard normal numbers for one step, drawn in ONE call of the generator: (P, d + 2)
    for the pair channels and (n_particle_sets, N, d) for per-particle channels. One draw
    keeps the stream's order fixed wherever the step runs: TorchScript's optimizer may
    reorder two independent draws (seen with autograd on), which would change a seeded
    trajectory."""
    e = t.geom.e
    p, d = e.shape[0], e.shape[1]
    n = t.geom.n
    z = torch.randn([p * (d + 2) + n_particle_sets * n * d], dtype=e.dtype, device=e.device, generator=generator)
    return z[: p * (d + 2)].view(p, d + 2), z[p * (d + 2):].view(n_particle_sets, n, d)


def noise(t: Terms, v: Tensor, dt: float, k_B: float, xi_pair: Tensor, xi_sub: Optional[Tensor],
          friction_heat: bool = True) -> Tuple[Tensor, Tensor]:
    """One FDT-consistent noise increment (dv~ (N, d), dS~ (N, n_s)), covariance 2 k_B M dt,
    from standard normal numbers: ``xi_pair`` (P, d + 2) for the pair channels (d shear + 1
    central friction, 1 conduction) and ``xi_sub`` (N, d) for the substrate channels (None:
    left out, e.g. when the exact-OU step draws them itself). ``friction_heat=False`` leaves
    out the entropy part of the friction channels (the exact-OU step books the realized
    heat instead)."""
    g, ds = t.geom, t.diss
    n, e, m = g.n, g.e, t.m
    d = e.shape[1]
    amp = (2.0 * k_B * dt) ** 0.5
    xp = xi_pair[:, :d]
    xp = xp - e * dot(e, xp).unsqueeze(-1)
    X = ds.s2_perp[0].clamp_min(0).sqrt().unsqueeze(-1) * xp \
        + (ds.s2_par[0].clamp_min(0).sqrt() * xi_pair[:, d]).unsqueeze(-1) * e
    X = amp * X
    cz = amp * ds.c2[0].clamp_min(0).sqrt() * xi_pair[:, d + 1]
    if friction_heat:
        hf = -0.5 * dot(t.vij, X)
        ds_ = scatter2(n, g.ij, (hf + cz) / ds.th_i, (hf - cz) / ds.th_j)
    else:
        ds_ = scatter2(n, g.ij, cz / ds.th_i, -cz / ds.th_j)
    dv = scatter2(n, g.ij, X, -X) / m
    if xi_sub is not None:
        X0 = amp * ds.s0[0].clamp_min(0).sqrt().unsqueeze(-1) * xi_sub
        dv = dv + X0 / m
        ds_ = ds_ - dot(v, X0) / t.thermo.theta
    return dv, ds_.unsqueeze(-1) * t.w


def velocity_covariance(t: Terms, dt: float, k_B: float, substrate: bool) -> Tensor:
    """Per-particle (N, d, d) blocks of the velocity-noise covariance 2 k_B M_vv dt."""
    g, ds = t.geom, t.diss
    e = g.e
    d = e.shape[1]
    eye = torch.eye(d, dtype=e.dtype, device=e.device)
    ee = e.unsqueeze(-1) * e.unsqueeze(-2)
    blk = ds.s2_perp[0].view(-1, 1, 1) * (eye - ee) + ds.s2_par[0].view(-1, 1, 1) * ee
    cov = scatter2(g.n, g.ij, blk, blk)
    if substrate:
        cov = cov + ds.s0[0].view(-1, 1, 1) * eye
    return 2.0 * k_B * dt * cov / t.m ** 2


def ou_parts(t: Terms, v: Tensor, k_B: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Pieces of the exact-OU step: the constant acceleration b (N, d) (conservative
    forces, pair friction, Ito velocity terms), its conservative part force / m, and dS/dt
    (N,) of heat conduction (the only entropy change not booked from the realized heat)."""
    dv, sdot = pair_drift(t, k_B, True, False)
    dv_ito, _ = substrate_drift(t, v, k_B, True)
    return dv + dv_ito, t.force / t.m, sdot


def ou_flow(t: Terms, b: Tensor, b_ext: Tensor, u: Tensor, u_ref: Tensor, dt: float, k_B: float,
            z: Optional[Tensor], heat_extra: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """Exact substrate OU flow over dt under the constant acceleration b (N, d), from the
    instantaneous velocity u (Ermak & Buckholz 1980; :mod:`.ou`).

    Returns (u', dr, heat): heat (N,) = -(m/2)(|u'|^2 - |u_ref|^2) + m b_ext . dr [+ heat_extra],
    the kinetic energy the particle lost other than by the work of b_ext, which the caller
    moves into its internal energy. ``z`` (2, N, d) standard normal numbers, or None for the
    mean path (the noise's mean heat included)."""
    m = t.m
    d = u.shape[1]
    th = t.thermo.theta
    x = t.diss.gamma0 * dt
    co = coefficients(x)
    s2 = (k_B * th / m).clamp_min(0.0)                       # kT/m per particle
    u1 = co.E.unsqueeze(-1) * u + (dt * co.phi1).unsqueeze(-1) * b
    dr = dt * (co.phi1.unsqueeze(-1) * u + (dt * co.phi2).unsqueeze(-1) * b)
    if z is not None:
        sd = s2.sqrt()
        u1 = u1 + (sd * co.vu.sqrt()).unsqueeze(-1) * z[0]
        dr = dr + (dt * sd).unsqueeze(-1) * (co.cross.unsqueeze(-1) * z[0]
                                             + co.cond.sqrt().unsqueeze(-1) * z[1])
    heat = -0.5 * m * (u1.square().sum(-1) - u_ref.square().sum(-1)) + m * dot(b_ext, dr)
    if z is None:
        heat = heat - 0.5 * m * d * s2 * co.vu
    if heat_extra is not None:
        heat = heat + heat_extra
    return u1, dr, heat


def pair_ou_sweep(t: Terms, v: Tensor, dt: float, k_B: float, xi_pair: Optional[Tensor],
                  jump: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The pair friction and its noise over dt, integrated exactly pair by pair (a
    Shardlow splitting of dissipative particle dynamics; Shardlow 2003, SIAM J. Sci.
    Comput. 24, 1267), with every coefficient frozen at the terms' state.

    Alone, a pair's friction and noise move only its relative velocity v_ij (the pair's
    centre-of-mass velocity is untouched), along e_ij with the rate lam_par = 2 s2_par /
    (theta_bar m) and across it with lam_perp = 2 s2_perp / (theta_bar m): an
    Ornstein-Uhlenbeck process per component whose stationary variance is
    2 k_B theta_bar / m (reduced mass m / 2 at temperature theta_bar). Its exact update,
    v_ij' = a v_ij + sqrt(2 k_B theta_bar / m (1 - a^2)) xi, a = exp(-lam dt), keeps the
    Maxwell distribution at theta_bar for any dt (the discrete fluctuation-dissipation
    balance that an Euler-Maruyama step of a stiff friction breaks) and reduces to the
    Euler-Maruyama increment of the pair channels for lam dt -> 0.

    Pairs that share a particle do not commute, so they are updated in rounds of disjoint
    pairs (a matching: a pair goes in a round when its key is the smallest among the
    remaining pairs of both its particles; keys are the pair indices scrambled by an odd
    multiplier modulo 2^32, a fixed pseudo-random order), each round vectorised, which is a
    sequential sweep over all pairs in one fixed order. Momentum is conserved exactly, and
    each update's kinetic energy loss, -(m/4)(|v_ij'|^2 - |v_ij|^2), is the pair's heat,
    shared equally (the channels' T_i dS_i = T_j dS_j).

    v : (N, d) velocities. xi_pair : (P, d + 2) standard normal numbers of
    :func:`normal_numbers` (columns 0..d-1 across, d along e_ij; d + 1, conduction, unused
    here), or None for the noise-free path. jump : (P, d) the velocity of each pair's
    image of j relative to j (a sheared box: :func:`.driver.shear_velocity`), subtracted
    from v_i - v_j, or None. Returns (v' (N, d), heat (N,)): the caller moves
    each particle's heat into its internal energy.
    """
    g, ds = t.geom, t.diss
    n, e, m = g.n, g.e, t.m
    d = e.shape[1]
    p = e.shape[0]
    th = ds.th_bar.clamp_min(0.0)
    rate = 2.0 * dt / (th * m)
    a_perp = torch.exp(-rate * ds.s2_perp[0].clamp_min(0.0))
    a_par = torch.exp(-rate * ds.s2_par[0].clamp_min(0.0))
    heat = torch.zeros(n, dtype=v.dtype, device=v.device)
    if p == 0:
        return v, heat
    n_perp = torch.zeros_like(e)
    n_par = torch.zeros_like(th)
    var = 2.0 * k_B * th / m                             # stationary variance of a v_ij component
    if xi_pair is None:
        # the mean path books the noise's mean heat: each pair's expected kinetic energy gain
        # (m/4) var ((d - 1)(1 - a_perp^2) + 1 - a_par^2), taken from both particles equally
        h0 = 0.125 * m * var * ((d - 1) * (1.0 - a_perp.square()) + 1.0 - a_par.square())
        heat = heat - scatter2(n, g.ij, h0, h0)
    else:
        xp = xi_pair[:, :d]
        xp = xp - e * dot(e, xp).unsqueeze(-1)
        n_perp = (var * (1.0 - a_perp.square())).clamp_min(0.0).sqrt().unsqueeze(-1) * xp
        n_par = (var * (1.0 - a_par.square())).clamp_min(0.0).sqrt() * xi_pair[:, d]
    idx = torch.arange(p, device=e.device)
    key = (idx * 2654435761) % 4294967296               # a bijection of 0..2^32-1: unique keys
    big = torch.full([n], 4294967296, dtype=key.dtype, device=key.device)
    rem = idx
    gi, gj = g.i, g.j
    while rem.shape[0] > 0:
        k = key[rem]
        ii, jj = gi[rem], gj[rem]
        low = big.scatter_reduce(0, ii, k, "amin").scatter_reduce(0, jj, k, "amin")
        sel = (low[ii] == k) & (low[jj] == k)
        q = rem[sel]
        rem = rem[~sel]
        qi, qj = gi[q], gj[q]
        eq = e[q]
        vij = v[qi] - v[qj]
        if jump is not None:
            vij = vij - jump[q]
        par = dot(eq, vij)
        perp = vij - eq * par.unsqueeze(-1)
        par1 = a_par[q] * par + n_par[q]
        perp1 = a_perp[q].unsqueeze(-1) * perp + n_perp[q]
        dvij = (par1 - par).unsqueeze(-1) * eq + perp1 - perp
        v = v.index_add(0, qi, 0.5 * dvij).index_add(0, qj, -0.5 * dvij)
        h = -0.125 * m * (par1.square() + perp1.square().sum(-1) - par.square() - perp.square().sum(-1))
        heat = heat.index_add(0, qi, h).index_add(0, qj, h)
    return v, heat


def conduction_noise(t: Terms, dt: float, k_B: float, xi_pair: Tensor) -> Tensor:
    """The heat-conduction part of :func:`noise` alone: dS~ (N, n_s) from the conduction
    column (d + 1) of ``xi_pair`` (P, d + 2)."""
    g, ds = t.geom, t.diss
    d = g.e.shape[1]
    cz = (2.0 * k_B * dt) ** 0.5 * ds.c2[0].clamp_min(0).sqrt() * xi_pair[:, d + 1]
    return scatter2(g.n, g.ij, cz / ds.th_i, -cz / ds.th_j).unsqueeze(-1) * t.w
