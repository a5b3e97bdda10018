"""Integrators of the metriplectic model as ``(init, step)`` pairs.

Each integrator is a small module holding the model, with

- ``init(r, v, S, pairs, box, size, dt, generator, noise) -> Carry``: the carried state
  (:class:`~.types.Carry`) from a recorded state (v: the data's velocities);
- ``step(carry, pairs, box, size, dt, generator, noise) -> Carry``: one step of dt.

Random numbers come from the ``generator`` passed in, always drawn in the same order, so
a seeded run is reproduced exactly; ``noise=False`` gives the mean path. ``numbers`` (optional,
last argument of ``init`` and ``step``) hands in the standard normal numbers instead: (pair
numbers (P, d + 2), per-particle numbers (k, N, d)), P the interacting pairs in the order of
``pairs`` (which must then hold only pairs closer than their range), k = 1 for
Euler-Maruyama with a substrate (else 0), 2 for the exact-OU step, 1 for its ``init``
(pair numbers unused); used for noise keyed by particle identity
(:mod:`colloidcg.scaling.simulators`); the pair-splitting step takes the pair numbers
only (k = 0). All compile with
TorchScript: the exported bundle carries the model's integrator, and
:func:`colloidcg.core.driver.run` loops over ``step`` in colloidcg and in the bundle alike.

- :class:`EulerMaruyama`: v' = v + a dt + dv~, S' = S + dS/dt dt + dS~, r' = r + v' dt
  (semi-implicit: positions move with the new velocity).
- :class:`PairSplitting` (momentum-conserving models, no substrate): kick, the pair
  friction and noise integrated exactly pair by pair (Shardlow 2003), kick, drift; the
  heat booked from the realized kinetic energy change.
- :class:`ExactOU` (frame-averaged models): the substrate friction integrated exactly
  with the other accelerations held over the step (Ermak & Buckholz 1980), the
  instantaneous velocity carried as a hidden state, the heat booked from the realized
  kinetic energy change (energy conserved step by step).

All record the frame's displacement / dt (:func:`.driver.run`), what finite differences of
recorded positions give, as the data's velocities are (for Euler-Maruyama at one step per
frame, the new velocity itself, to rounding).

Sheared boxes: ``init`` and ``step`` take the Lees-Edwards state (:mod:`.driver`) of the
step's start as an optional last argument ``shear``; the pairs see the image offset and the
velocity jump across the y boundary (in the friction too), and the new positions are
wrapped with the offset of the step's end, the velocities of particles wrapped across y
shifted by the jump (:func:`.driver.wrap`, :func:`.driver.wrap_velocity`). Without it
(None) every step is the rectangular one, op for op.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from . import dynamics
from .driver import advance_shear, shear_velocity, wrap, wrap_velocity
from .ou import coefficients
from .scatter import dot
from .types import Carry


class Integrator(nn.Module):
    """Holds the model; subclasses define ``step`` and, where the carry needs more than the
    state (exact OU), ``init`` (see the module docstring)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @torch.jit.export
    def init(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor, box: Optional[Tensor],
             size: Optional[Tensor], dt: float, generator: Optional[torch.Generator], noise: bool,
             numbers: Optional[Tuple[Tensor, Tensor]] = None, shear: Optional[Tensor] = None) -> Carry:
        z = torch.zeros_like(r)
        if shear is not None:
            v = wrap_velocity(v, r, box, shear)
        return Carry(wrap(r, box, shear), v, S, v, z, z)

    def _pair_jump(self, r: Tensor, pairs: Tensor, box: Optional[Tensor], shear: Optional[Tensor]) -> Optional[Tensor]:
        """(P, d) the velocity jump of each pair's image (sheared boxes; None otherwise)."""
        if shear is None:
            return None
        return shear_velocity(r[pairs[:, 0]] - r[pairs[:, 1]], box, shear)


class EulerMaruyama(Integrator):
    """Semi-implicit Euler-Maruyama step (see the module docstring)."""

    @torch.jit.export
    def step(self, c: Carry, pairs: Tensor, box: Optional[Tensor], size: Optional[Tensor], dt: float,
             generator: Optional[torch.Generator], noise: bool,
             numbers: Optional[Tuple[Tensor, Tensor]] = None, shear: Optional[Tensor] = None) -> Carry:
        m = self.model
        t = m.terms_of(c.r, c.u, c.S, pairs, box, size, shear)
        dv, dS = dynamics.drift(t, c.u, m.k_B, m.substrate, True)
        v = c.u + dv * dt
        S = c.S + dS * dt
        if noise and m.k_B != 0.0:
            if numbers is None:
                xi, xp = dynamics.normal_numbers(t, 1 if m.substrate else 0, generator)
            else:
                xi, xp = numbers[0], numbers[1]
            xs: Optional[Tensor] = None
            if m.substrate:
                xs = xp[0]
            nv, nS = dynamics.noise(t, c.u, dt, m.k_B, xi, xs, True)
            v = v + nv
            S = S + nS
        dr = v * dt
        if shear is not None:
            end = advance_shear(shear, dt)
            v = wrap_velocity(v, c.r + dr, box, end)
            return Carry(wrap(c.r + dr, box, end), v, S, v, t.force, dr)
        return Carry(wrap(c.r + dr, box), v, S, v, t.force, dr)



class ExactOU(Integrator):
    """Exact-OU step for frame-averaged models (see the module docstring).

    ``init`` draws the instantaneous velocity at the end of the frame whose averaged
    velocity is v (stationary frozen-coefficient closure, :mod:`.ou`: mean
    v + a dt (1 - beta) / x, variance Sigma (1 - rho1) / (2 x) per component, Sigma the
    frame's Euler-Maruyama velocity-noise variance).

    ``step``: the pair noise acts as a kick; forces, pair friction and the Ito velocity
    terms act as a constant acceleration over the step, solved exactly with the substrate
    OU. The pair friction and the Ito velocity terms act on the carried ``v_avg`` (the
    previous step's averaged velocity, as in the likelihood), not on the instantaneous
    velocity, which fluctuates on the fast substrate time scale and would make that
    explicit friction stiff. Every particle's kinetic energy change not due to the
    conservative forces becomes heat in its own internal energy, so friction and noise
    conserve the energy exactly; heat conduction is Euler-Maruyama. The work of the
    conservative forces is booked with the trapezoidal rule, (F(r) + F(r')) / 2 . dr, one
    step late (the carried force and dr): with F(r) . dr alone the internal energy would
    gain dr . H dr / 2 per step (H the Hessian of the energy), which heats a stiff packing
    steadily.
    """

    @torch.jit.export
    def init(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor, box: Optional[Tensor],
             size: Optional[Tensor], dt: float, generator: Optional[torch.Generator], noise: bool,
             numbers: Optional[Tuple[Tensor, Tensor]] = None, shear: Optional[Tensor] = None) -> Carry:
        m = self.model
        if shear is not None:
            v = wrap_velocity(v, r, box, shear)
        r = wrap(r, box, shear)
        t = m.terms_of(r, v, S, pairs, box, size, shear)
        dv, _ = dynamics.drift(t, v, m.k_B, m.substrate, True)
        co = coefficients(t.diss.gamma0 * dt)
        u = v + dv * (dt * co.omb).unsqueeze(-1)
        if noise and m.k_B != 0.0:
            sig = dynamics.velocity_covariance(t, dt, m.k_B, m.substrate).diagonal(dim1=-2, dim2=-1).mean(-1)
            var = sig * co.F1 / 2.0
            if numbers is None:
                xu = torch.randn(u.shape, dtype=u.dtype, device=u.device, generator=generator)
            else:
                xu = numbers[1][0]
            u = u + var.clamp_min(0).sqrt().unsqueeze(-1) * xu
        z = torch.zeros_like(r)
        return Carry(r, u, S, v, z, z)

    @torch.jit.export
    def step(self, c: Carry, pairs: Tensor, box: Optional[Tensor], size: Optional[Tensor], dt: float,
             generator: Optional[torch.Generator], noise: bool,
             numbers: Optional[Tuple[Tensor, Tensor]] = None, shear: Optional[Tensor] = None) -> Carry:
        m = self.model
        t = m.terms_of(c.r, c.v_avg, c.S, pairs, box, size, shear)
        b, b_ext, sdot = dynamics.ou_parts(t, c.v_avg, m.k_B)
        S = c.S + sdot.unsqueeze(-1) * t.w * dt
        u = c.u
        z: Optional[Tensor] = None
        if noise and m.k_B != 0.0:
            if numbers is None:
                xi, z = dynamics.normal_numbers(t, 2, generator)
            else:
                xi, z = numbers[0], numbers[1]
            nv, nS = dynamics.noise(t, c.v_avg, dt, m.k_B, xi, None, False)
            u = u + nv
            S = S + nS
        extra = 0.5 * dot(t.force - c.force, c.dr)
        u1, dr, heat = dynamics.ou_flow(t, b, b_ext, u, c.u, dt, m.k_B, z, extra)
        dS = m.terms["density"].heat_to_entropy(c.S, t.thermo, heat, t.w)
        if shear is not None:
            end = advance_shear(shear, dt)
            rn = c.r + dr
            return Carry(wrap(rn, box, end), wrap_velocity(u1, rn, box, end), S + dS,
                         wrap_velocity(dr / dt, rn, box, end), t.force, dr)
        return Carry(wrap(c.r + dr, box), u1, S + dS, dr / dt, t.force, dr)



class PairSplitting(Integrator):
    """Momentum-conserving models (no substrate): a DPD-style splitting in which every
    pair's friction and noise are integrated exactly (see the module docstring).

    ``step``, with the terms evaluated once at the start of the step (r, u, S):

    1. half a kick, u += (F / m + the pair channels' Ito velocity terms) dt / 2;
    2. the pair friction and its noise over dt, exactly pair by pair with frozen
       coefficients (:func:`.dynamics.pair_ou_sweep`); each pair's kinetic energy loss is
       its heat, moved into the internal energies of its two particles by solving
       U(S + dS) = U(S) + heat (the friction and noise conserve the energy exactly, and
       the noise-free path books the noise's mean heat);
    3. the other half kick with the same F;
    4. r += u dt (a drift); heat conduction is Euler-Maruyama.

    Without friction this is the leapfrog (kick, drift) scheme; the sweep keeps the
    Maxwell distribution of every pair's relative velocity at its temperature for any dt,
    where Euler-Maruyama of a stiff pair friction (rate x dt not small) runs hot by about
    1 / (1 - x dt / 2) per mode. Total momentum is conserved exactly by every part.
    """

    @torch.jit.export
    def step(self, c: Carry, pairs: Tensor, box: Optional[Tensor], size: Optional[Tensor], dt: float,
             generator: Optional[torch.Generator], noise: bool,
             numbers: Optional[Tuple[Tensor, Tensor]] = None, shear: Optional[Tensor] = None) -> Carry:
        m = self.model
        t = m.terms_of(c.r, c.u, c.S, pairs, box, size, shear)
        kick, sdot = dynamics.pair_drift(t, m.k_B, True, False, False)
        S = c.S + sdot.unsqueeze(-1) * t.w * dt
        xi: Optional[Tensor] = None
        if noise and m.k_B != 0.0:
            if numbers is None:
                xi, _ = dynamics.normal_numbers(t, 0, generator)
            else:
                xi = numbers[0]
            S = S + dynamics.conduction_noise(t, dt, m.k_B, xi)
        u = c.u + (0.5 * dt) * kick
        u, heat = dynamics.pair_ou_sweep(t, u, dt, m.k_B, xi, self._pair_jump(c.r, t.geom.pairs, box, shear))
        u = u + (0.5 * dt) * kick
        S = S + m.terms["density"].heat_to_entropy(c.S, t.thermo, heat, t.w)
        dr = u * dt
        if shear is not None:
            end = advance_shear(shear, dt)
            u = wrap_velocity(u, c.r + dr, box, end)
            return Carry(wrap(c.r + dr, box, end), u, S, u, t.force, dr)
        return Carry(wrap(c.r + dr, box), u, S, u, t.force, dr)


def integrator_name(model, local: bool = False) -> str:
    """The name of :func:`integrator_for`'s choice (the bundle's manifest)."""
    if model.frame_averaged:
        return "exact_ou"
    return "euler_maruyama" if (model.substrate or local) else "pair_splitting"


def integrator_for(model, local: bool = False) -> nn.Module:
    """The model's integrator: :class:`ExactOU` for frame-averaged models,
    :class:`PairSplitting` for momentum-conserving ones (no substrate), else
    :class:`EulerMaruyama` (a substrate without frame averaging).

    ``local=True`` asks for a step whose result for a particle depends only on the
    particles within one interaction range (patch steps, :mod:`colloidcg.scaling.partial`):
    the pair sweep of :class:`PairSplitting` carries information along chains of pairs
    within one step, so momentum-conserving models then get :class:`EulerMaruyama`
    (which runs hot where the pair friction is stiff, x dt not small)."""
    if model.frame_averaged:
        return ExactOU(model)
    return EulerMaruyama(model) if (model.substrate or local) else PairSplitting(model)
