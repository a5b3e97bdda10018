"""The metriplectic (GENERIC) particle model.

State per particle i: position r_i (d), velocity v_i (d), entropic variables S_i (n_s).
Flat state ordering, used by the dense matrices: x = [r (N*d), v (N*d), S (N*n_s)].

Energy (Espanol & Revenga 2003, smoothed dissipative particle dynamics, with learned parts):

    E = sum_i m |v_i|^2 / 2 + sum_i U(S_i, V_i) [+ sum_{i<j} phi(|r_ij|)] [+ E_dev],
    V_i = 1 / d_i,  d_i = W(0) + sum_{j != i} W(|r_ij|)   (learned kernel W of support h)

The optional pair energy phi (``config.n_pair`` > 0; :class:`~.nets.PairPotential`) is a
learned repulsive soft-sphere potential: the density-kernel energy alone gives forces
(P_i + P_j) W'(r) whose radial shape is W' for every density, which cannot follow the
sharp contact forces of a packing near jamming; phi can (it reproduces harmonic soft disks
exactly). It is conservative and pairwise like the rest of E, so every identity below
holds unchanged.

Per-particle sizes (``config.size_scale > 0``): particle i carries a constant size s_i
(:attr:`State.size`, units of the data's size column), reduced to a_i = min(s_i / s_ref, 1)
with s_ref = ``size_scale``; every pair function of the pair (i, j) (kernel, friction,
conduction) is evaluated at q = |r_ij| / (h sigma_ij), sigma_ij = (a_i + a_j) / 2 <= 1, so
that each pair's range scales with its contact distance, as in a binary mixture. sigma_ij
is symmetric and moves with the particles, so every identity below holds unchanged (the
forces stay -dE/dr: d W(|r_ij| / (h sigma_ij)) / dr_i = W' e_ij / (h sigma_ij)). Without
sizes (``size_scale = 0``, the default) sigma_ij = 1.

Entropy: S_tot = sum_i sum_a S_i^a. Temperatures T_i^a = dU/dS_i^a > 0 and an effective
temperature theta_i = sum_a w_a T_i^a with learned w_a > 0, sum_a w_a = 1 (theta_i = T_i
when n_s = 1; with ``ordered_s`` the w_a are sorted, w_0 <= w_1 <= ..., so S^0 is the
variable that receives the least heat; with ``s0_heat_share`` w_0 is fixed at that share,
a slow structural variable, and the others share the rest). Heat q delivered to particle i raises S_i by
w q / theta_i, so that T_i . dS_i = q.

Dynamics:  dx = [L dE/dx + M dS/dx + k_B div M] dt + dx~,   <dx~ dx~^T> = 2 k_B M dt.

L is the canonical Poisson matrix on (r, v) with mass m (dr = v dt, m dv = -dE/dr dt),
zero on S, so L = -L^T and L dS/dx = 0. M is assembled from noise "channels" b_c:
M = sum_c b_c b_c^T, dx~ = sqrt(2 k_B dt) sum_c b_c xi_c with xi_c ~ N(0, 1) independent.
Every channel satisfies b_c . dE/dx = 0 (the kinetic energy it injects is taken from the
internal energy of the particles involved), hence M = M^T >= 0 and M dE/dx = 0 exactly.
Channels (v_ij = v_i - v_j, e_ij = r_ij / |r_ij|, P_ij = I - e e^T):

- pair friction, per pair, velocity increment X = sigma_perp P xi (d channels, "shear",
  coefficient A) + sigma_par e xi' (1 channel, "bulk"/central, coefficient B);
  dv_i = X / m, dv_j = -X / m (momentum conserved), dS_i = -w (v_ij . X) / (2 theta_i),
  dS_j = -w (v_ij . X) / (2 theta_j). With sigma^2 = G(q) theta_bar (theta_bar/theta_ref)^alpha,
  theta_bar = harmonic mean of theta_i and theta_j, the drift M dS/dx is the friction
  force -(1/m) Gamma_ij v_ij with Gamma = G_A (..)^a P + G_B (..)^b e e^T and the heat
  v_ij . Gamma v_ij shared equally as T dS. This is the Espanol-Revenga SDPD structure:
  their noise, a symmetric traceless Wiener matrix plus a trace part acting on e_ij, is a
  Gaussian vector with covariance of exactly this form (a P + b e e^T); we sample it in
  this equivalent (d + 1)-channel form.
- heat conduction, per pair, one antisymmetric scalar: dS_i = w c xi / theta_i,
  dS_j = -w c xi / theta_j, c^2 = C(q) theta_i theta_j (theta_bar/theta_ref)^alpha_C:
  Fourier's law T_i dS_i = c^2 (1/theta_i - 1/theta_j) dt.
- optional substrate (solvent) friction, per particle, d channels: dv_i = sigma_0 xi / m,
  dS_i = -w (v_i . sigma_0 xi) / theta_i. It lets momentum flow to the solvent (a colloid
  monolayer does not conserve its own momentum); with ``substrate=False`` total momentum
  is conserved exactly.

The Ito drift k_B div M is evaluated analytically, channel family by channel family,
from div(b b^T) = (b . grad) b + b (div b), using theta_i's derivative
g_i = d theta_i / d S_i (from the Hessian of U) and kappa_i = w . g_i >= 0.

Time stepping (:mod:`.integrators`): semi-implicit Euler-Maruyama, or, for frame-averaged
models, the exact-OU step. Video gives frame-averaged velocities (r_t - r_{t-1}) / dt,
which for a particle whose velocity relaxes within a few frames are strongly correlated
averages, not the instantaneous v; an Euler-Maruyama chain at the frame rate cannot
reproduce their statistics (about 20 % error in the MSD at gamma dt = 1), and its substrate
heat bookkeeping heats the particles at large gamma dt. Frame-averaged models
(``config.frame_average``, the default with a substrate) therefore keep the instantaneous
velocity as a hidden state and integrate the substrate friction exactly (an
Ornstein-Uhlenbeck flow with the other accelerations held over the step; Ermak & Buckholz
1980); the heat every particle exchanges is booked from its realized kinetic energy change
by solving U(S + dS) = U(S) + q, so energy is conserved step by step (exactly for free
particles). The likelihood (:mod:`.loss`) uses the matching statistics of frame averages
(:mod:`.ou`), exact for free Langevin particles at any gamma dt.

Code layout: the energy is a dict of terms (:mod:`.terms`, one module each: the density
term U(S, V), the pair energy, the deviatoric energy); :meth:`MetriplecticModel.terms_of`
evaluates everything a state's dynamics needs once (:class:`~.types.Terms`), and the
dynamics are pure functions of it (:mod:`.dynamics`). The model is written in
TorchScript's subset: the exported bundle is this very model, compiled
(:mod:`colloidcg.export`).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import dynamics
from .config import ModelConfig, State
from .driver import minimum_image, search_pairs, shear_velocity
from .encoder import StructuralEncoder
from .nets import CompactKernel, PairCoefficients, inv_softplus
from .scatter import scatter2
from .tables import LinearTable
from .terms import build_terms
from .types import Dissipation, PairGeometry, Terms

__all__ = ["MetriplecticModel", "ModelConfig", "State", "PairFunctions"]


class PairFunctions(nn.Module):
    """The functions of a pair's reduced distance q = r / h the dissipative part and the
    density use: the kernel W(q) with dW/dq (:class:`~.nets.CompactKernel`) and the (P, 3)
    dimensionless friction and conduction functions A, B, C (:class:`~.nets.PairCoefficients`)."""

    def __init__(self, n_kernel: int, width: int, depth: int):
        super().__init__()
        self.kernel = CompactKernel(n_kernel)
        self.coef = PairCoefficients(width, depth, 3)

    def forward(self, q: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        W, dW = self.kernel(q)
        return W, dW, self.coef(q).to(q.dtype)

    def at_zero(self) -> Tensor:
        """W(0), the particle's own weight in its density."""
        return self.kernel.at_zero()

    @torch.no_grad()
    def tabulated(self, n: int) -> Tuple["PairFunctions", float]:
        """A :class:`TabulatedPairFunctions` (call on a float64 copy) and its largest
        relative error."""
        new = TabulatedPairFunctions(self.kernel, self.coef)

        def cols(q: Tensor) -> Tensor:
            W, dW, coef = self.forward(q)
            return torch.cat([W.unsqueeze(-1), dW.unsqueeze(-1), coef], -1)
        new.table, err = LinearTable.fit(cols, n, self.kernel.raw)
        return new, err


class TabulatedPairFunctions(PairFunctions):
    """:class:`PairFunctions` read from a :class:`~.tables.LinearTable` (fast rollouts)."""

    def __init__(self, kernel: CompactKernel, coef: PairCoefficients):
        nn.Module.__init__(self)
        self.kernel = kernel
        self.coef = coef
        self.table = LinearTable(torch.zeros(2, 5))

    def forward(self, q: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        out = self.table(q)
        return out[:, 0], out[:, 1], out[:, 2:5]


class MetriplecticModel(nn.Module):
    """Learned SDPD-like metriplectic particle model (see the module docstring).

    Submodules: ``pairfn`` (:class:`PairFunctions`), ``encoder``
    (:class:`~.encoder.StructuralEncoder`), ``terms`` (name -> energy term, density first).
    Tensor-level methods (TorchScript, exported): :meth:`geometry`, :meth:`terms_of`,
    :meth:`drift_rates`, :meth:`noise_covariance`, :meth:`noise_sample`, :meth:`energy`,
    :meth:`encode`, :meth:`pairs`. Eager conveniences taking a :class:`State`:
    :meth:`compute`, :meth:`drift`, :meth:`noise`, :meth:`total_energy`, :meth:`initial_S`.
    """

    __jit_unused_properties__ = ["mass", "heat_weights", "frame_averaged", "pair_frame_averaged"]

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.dim not in (2, 3):
            raise ValueError("dim must be 2 or 3")
        c = config
        # built in this order, the networks draw the same initial weights from torch's
        # generator as the model before its energy terms became modules (U, then the pair
        # coefficients, then the encoder), so a seeded training reproduces earlier results
        self.terms = nn.ModuleDict(build_terms(c))
        self.pairfn = PairFunctions(c.n_kernel, c.width, c.depth)
        self.encoder = StructuralEncoder(c.dim, c.n_s, c.n_rbf, c.encoder_width, 2)
        self.raw_mass = nn.Parameter(torch.tensor(inv_softplus(1.0)))
        self.raw_w = nn.Parameter(torch.zeros(c.n_s))
        self.raw_alpha = nn.Parameter(torch.zeros(3))  # exponents for A, B, C
        # substrate friction (present, and unused, in models without a substrate, so that
        # the compiled model has one shape)
        self.raw_gamma0 = nn.Parameter(torch.tensor(inv_softplus(0.5)))
        self.raw_alpha0 = nn.Parameter(torch.tensor(0.0))
        self.pair_block = 1024
        self.configure(c)

    # ------------------------------------------------------------------ configuration
    def configure(self, config: ModelConfig) -> None:
        """Copy the configuration's scales into plain attributes (which TorchScript
        compiles) here and in every term."""
        self.config = config
        self.dim = int(config.dim)
        self.n_s = int(config.n_s)
        self.ordered_s = bool(config.ordered_s)
        self.s0_share = float(config.s0_heat_share)
        self.cutoff = float(config.cutoff)
        self.k_B = float(config.k_B)
        self.tau = float(config.tau)
        self.friction_scale = float(config.friction_scale)
        self.mass_scale = float(config.mass_scale)
        self.theta_ref = float(config.theta_ref)
        self.size_scale = float(config.size_scale)
        self.substrate = bool(config.substrate)
        self.fa = bool(config.frame_average and config.substrate)
        self.fa_pair = bool(config.frame_average and not config.substrate)
        for term in self.terms.values():
            term.configure(config)

    def update_config(self, **changes) -> None:
        """Change configuration values (e.g. calibrated scales) and apply them."""
        self.configure(self.config.replace(**changes))

    def calibrate(self, neighbour_weight: Tensor) -> dict:
        """Let every term set its scales from a sample of per-particle neighbour weights
        sum_j W(q_ij) (:meth:`neighbour_weight`); returns the configuration changes made."""
        from dataclasses import fields
        own = {f.name for f in fields(ModelConfig)}
        w0 = float(self.pairfn.at_zero().detach())
        changes: dict = {}
        terms = {k: dict(v) for k, v in self.config.terms.items()}
        for name, term in self.terms.items():
            for key, value in term.calibrate(neighbour_weight, w0).items():
                if key in own:
                    changes[key] = value
                else:       # a term's own calibrated option, kept with its options (config.json)
                    terms.setdefault(name, {})[key] = value
        if terms != self.config.terms:
            changes["terms"] = terms
        if changes:
            self.update_config(**changes)
        return changes

    # ------------------------------------------------------------------ scalars
    @property
    def mass(self) -> Tensor:
        return self.mass_value()

    @property
    def heat_weights(self) -> Tensor:
        return self.weights()

    @property
    def frame_averaged(self) -> bool:
        """True when data velocities are read as frame averages and the substrate friction
        is integrated exactly (``config.frame_average`` with a substrate)."""
        return self.fa

    @property
    def pair_frame_averaged(self) -> bool:
        """True for a momentum-conserving model (no substrate) whose likelihood reads the
        data's velocities as frame averages, with each particle's mean-field pair-friction
        rate (:func:`.dynamics.pair_friction_rate`) in the exact-OU factors of :mod:`.ou`;
        its rollouts integrate the pair friction pair by pair (:class:`~.integrators.PairSplitting`)."""
        return self.fa_pair

    def mass_value(self) -> Tensor:
        return self.mass_scale * F.softplus(self.raw_mass)

    def weights(self) -> Tensor:
        """Heat weights w (n_s,), positive, summing to 1; with ``ordered_s`` sorted
        ascending (S0 receives the least heat), a permutation of the free ones. With
        ``s0_heat_share`` > 0, w_0 is that share, fixed, and the other variables share the
        rest by their learned (and, with ``ordered_s``, sorted) weights; raw_w[0] is then
        unused."""
        if self.s0_share > 0.0:
            rest = torch.softmax(self.raw_w[1:], 0)
            if self.ordered_s:
                rest = torch.sort(rest).values
            share = torch.full((1,), self.s0_share, dtype=rest.dtype, device=rest.device)
            return torch.cat([share, (1.0 - self.s0_share) * rest])
        w = torch.softmax(self.raw_w, 0)
        if self.ordered_s:
            w = torch.sort(w).values
        return w

    def substrate_friction(self) -> Tuple[Tensor, Tensor]:
        """(gamma0 scale, its temperature exponent alpha0)."""
        g0 = self.friction_scale * self.mass_scale / self.tau * F.softplus(self.raw_gamma0)
        return g0, 2.0 * torch.tanh(self.raw_alpha0)

    # ------------------------------------------------------------------ geometry
    def reduced_size(self, size: Optional[Tensor], like: Tensor) -> Optional[Tensor]:
        """(N,) reduced sizes a_i = min(s_i / size_scale, 1), or None for a model without sizes."""
        if self.size_scale <= 0.0:
            return None
        if size is None:
            raise RuntimeError("size: the model was trained with per-particle sizes; pass them (N,)")
        return (size.to(like.dtype) / self.size_scale).clamp(min=1e-3, max=1.0)

    def geometry(self, r: Tensor, pairs: Tensor, box: Optional[Tensor], size: Optional[Tensor],
                 shear: Optional[Tensor] = None) -> PairGeometry:
        """The pairs of the candidate list ``pairs`` (P, 2) closer than their range
        h_ij = h (a_i + a_j) / 2 (h without sizes), and every function of their distance.
        Candidate pairs beyond the range are dropped here (a Verlet list holds many).
        ``shear``: the Lees-Edwards state of a sheared box (:mod:`.driver`), or None."""
        n = r.shape[0]
        i, j = pairs[:, 0], pairs[:, 1]
        rij = minimum_image(r[i] - r[j], box, shear)
        dist = torch.linalg.vector_norm(rij, dim=-1).clamp_min(1e-12 * self.cutoff)
        a = self.reduced_size(size, r)
        if a is None:
            h = dist.new_full([1], self.cutoff)             # one range: broadcast
        else:
            h = self.cutoff * 0.5 * (a[i] + a[j])
        near = dist < h
        if not bool(near.all()):
            k = torch.nonzero(near).squeeze(-1)
            pairs, rij, dist = pairs.index_select(0, k), rij.index_select(0, k), dist.index_select(0, k)
            if a is not None:
                h = h.index_select(0, k)
            i, j = pairs[:, 0], pairs[:, 1]
        e = rij / dist.unsqueeze(-1)
        q = dist / h
        W, dW, coef = self.pairfn(q)
        return PairGeometry(pairs, i, j, torch.cat([i, j]), e, dist, h, q, W, dW, coef, n)

    def neighbour_weight(self, r: Tensor, pairs: Tensor, box: Optional[Tensor] = None,
                         size: Optional[Tensor] = None, shear: Optional[Tensor] = None) -> Tensor:
        """(N,) sum_j W(q_ij) over each particle's neighbours (its own W(0) left out)."""
        g = self.geometry(r, pairs, box, size, shear)
        return scatter2(g.n, g.ij, g.W, g.W)

    # ------------------------------------------------------------------ terms
    def terms_of(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor, box: Optional[Tensor],
                 size: Optional[Tensor], shear: Optional[Tensor] = None) -> Terms:
        """Everything the drift, noise and covariance of the state (r, v, S) need, in one
        pass (:class:`~.types.Terms`). ``shear``: the Lees-Edwards state of a sheared box
        (:mod:`.driver`): pairs across the y boundary then see the image's offset and its
        velocity jump (in ``vij``, which the friction acts on)."""
        g = self.geometry(r, pairs, box, size, shear)
        n = g.n
        dtype = r.dtype
        w = self.weights().to(dtype)
        dens = self.pairfn.at_zero().to(dtype) + scatter2(n, g.ij, g.W, g.W)
        thermo = self.terms["density"].thermo(dens, S, w)
        force = torch.zeros_like(r)
        energy = torch.zeros_like(dens)
        pair_energy = torch.zeros_like(g.dist)
        dEdr = torch.zeros_like(g.dist)
        for term in self.terms.values():
            out = term.evaluate(g, S, thermo)
            part = out.force
            if part is not None:
                force = force + part
            part = out.energy
            if part is not None:
                energy = energy + part
            part = out.pair_energy
            if part is not None:
                pair_energy = pair_energy + part
            part = out.dEdr
            if part is not None:
                dEdr = dEdr + part
        fpair = -dEdr.unsqueeze(-1) * g.e          # central forces of every term, scattered once
        force = force + scatter2(n, g.ij, fpair, -fpair)
        theta = thermo.theta
        th_i, th_j = theta[g.i], theta[g.j]
        th_bar = 2.0 * th_i * th_j / (th_i + th_j)
        dbar_i = th_bar.square() / (2.0 * th_i.square())  # d theta_bar / d theta_i
        dbar_j = th_bar.square() / (2.0 * th_j.square())
        alpha = (2.0 * torch.tanh(self.raw_alpha)).to(dtype)
        gscale = self.friction_scale * self.mass_scale / self.tau
        ratio = th_bar / self.theta_ref
        coef = g.coef
        val = gscale * coef[:, 0] * th_bar * ratio ** alpha[0]          # shear friction
        dval = (1.0 + alpha[0]) * val / th_bar
        s2_perp = (val, dval * dbar_i, dval * dbar_j)
        val = gscale * coef[:, 1] * th_bar * ratio ** alpha[1]          # central friction
        dval = (1.0 + alpha[1]) * val / th_bar
        s2_par = (val, dval * dbar_i, dval * dbar_j)
        c2 = coef[:, 2] / self.tau * th_i * th_j * ratio ** alpha[2]
        c2t = (c2, c2 / th_i + alpha[2] * c2 / th_bar * dbar_i, c2 / th_j + alpha[2] * c2 / th_bar * dbar_j)
        m = self.mass_value().to(dtype)
        if self.substrate:
            g0, a0 = self.substrate_friction()
            s0 = g0.to(dtype) * theta * (theta / self.theta_ref) ** a0.to(dtype)
            s0t = (s0, (1.0 + a0.to(dtype)) * s0 / theta)
            gamma0 = s0 / (m * theta)          # substrate friction rate (1/time), (N,)
        else:
            z = torch.zeros_like(theta)
            s0t = (z, z)
            gamma0 = z
        diss = Dissipation(th_i, th_j, th_bar, s2_perp, s2_par, c2t, s0t, gamma0)
        vij = v[g.i] - v[g.j]
        if shear is not None:
            vij = vij - shear_velocity(r[g.i] - r[g.j], box, shear)
        return Terms(g, thermo, diss, m, w, force, energy, pair_energy, v, vij)

    # ------------------------------------------------------------------ exported
    @torch.jit.export
    def drift_rates(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor, box: Optional[Tensor] = None,
                    size: Optional[Tensor] = None, shear: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """(dr/dt, dv/dt, dS/dt) = L dE/dx + M dS/dx + k_B div M at (r, v, S)."""
        t = self.terms_of(r, v, S, pairs, box, size, shear)
        dv, dS = dynamics.drift(t, v, self.k_B, self.substrate, True)
        return v, dv, dS

    @torch.jit.export
    def noise_covariance(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor, dt: float,
                         box: Optional[Tensor] = None, size: Optional[Tensor] = None,
                         shear: Optional[Tensor] = None) -> Tensor:
        """(N, d, d) covariance of each particle's velocity noise over dt, 2 k_B M_vv dt."""
        t = self.terms_of(r, v, S, pairs, box, size, shear)
        return dynamics.velocity_covariance(t, dt, self.k_B, self.substrate)

    @torch.jit.export
    def noise_sample(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor, dt: float,
                     generator: Optional[torch.Generator] = None, box: Optional[Tensor] = None,
                     size: Optional[Tensor] = None, shear: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """One noise increment (dv~ (N, d), dS~ (N, n_s)) over dt, covariance 2 k_B M dt."""
        t = self.terms_of(r, v, S, pairs, box, size, shear)
        return self._noise(t, v, dt, generator)

    def _noise(self, t: Terms, v: Tensor, dt: float, generator: Optional[torch.Generator]) -> Tuple[Tensor, Tensor]:
        xi, xp = dynamics.normal_numbers(t, 1 if self.substrate else 0, generator)
        xs: Optional[Tensor] = None
        if self.substrate:
            xs = xp[0]
        return dynamics.noise(t, v, dt, self.k_B, xi, xs, True)

    @torch.jit.export
    def energy(self, r: Tensor, v: Tensor, S: Tensor, pairs: Tensor, box: Optional[Tensor] = None,
               size: Optional[Tensor] = None, shear: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Total energy () and per-particle energy (N,): m |v|^2 / 2 plus every term's share."""
        t = self.terms_of(r, v, S, pairs, box, size, shear)
        half = 0.5 * t.pair_energy
        e = 0.5 * t.m * v.square().sum(-1) + t.energy + scatter2(t.geom.n, t.geom.ij, half, half)
        return e.sum(), e

    @torch.jit.export
    def encode(self, r: Tensor, pairs: Tensor, box: Optional[Tensor] = None,
               shear: Optional[Tensor] = None) -> Tensor:
        """S (N, n_s) from the structural encoder."""
        return self.encoder(r, pairs, self.cutoff, box, shear)

    @torch.jit.export
    def pairs(self, r: Tensor, box: Optional[Tensor] = None, shear: Optional[Tensor] = None) -> Tensor:
        """Every pair i < j closer than the cutoff, sorted (torch only; O(N^2) in blocks)."""
        return search_pairs(r, self.cutoff, box, self.pair_block, shear)

    # ------------------------------------------------------------------ eager conveniences
    def _size(self, state: State) -> Optional[Tensor]:
        if self.size_scale > 0 and state.size is None:
            from ..errors import ColloidcgError
            raise ColloidcgError(f"state: the model was trained with per-particle sizes (tracks column "
                                 f"{self.config.size_column!r}); pass them as State.size")
        return state.size

    def compute(self, state: State, pairs: Tensor, box: Optional[Tensor] = None,
                shear: Optional[Tensor] = None) -> Terms:
        """:meth:`terms_of` for a :class:`State`."""
        return self.terms_of(state.r, state.v, state.S, pairs, box, self._size(state), shear)

    def drift(self, state: State, pairs: Tensor, box: Optional[Tensor] = None, ns: Optional[Terms] = None,
              ito: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
        """Deterministic drift (dr/dt, dv/dt, dS/dt) = L dE/dx + M dS/dx [+ k_B div M]."""
        t = self.compute(state, pairs, box) if ns is None else ns
        dv, dS = dynamics.drift(t, state.v, self.k_B, self.substrate, ito)
        return state.v, dv, dS

    def noise(self, state: State, pairs: Tensor, dt: float, generator=None, box=None,
              ns: Optional[Terms] = None) -> Tuple[Tensor, Tensor]:
        """One FDT-consistent noise increment (dv~, dS~), covariance 2 k_B M dt."""
        t = self.compute(state, pairs, box) if ns is None else ns
        return self._noise(t, state.v, dt, generator)

    def velocity_covariance(self, ns: Terms, dt: float) -> Tensor:
        """Per-particle (N, d, d) blocks of the velocity-noise covariance 2 k_B M_vv dt."""
        return dynamics.velocity_covariance(ns, dt, self.k_B, self.substrate)

    def total_energy(self, state: State, pairs: Tensor, box=None) -> Tensor:
        t = self.compute(state, pairs, box)
        return 0.5 * t.m * state.v.square().sum() + t.energy.sum() + t.pair_energy.sum()

    def initial_S(self, r: Tensor, pairs: Optional[Tensor] = None, box=None, shear=None) -> Tensor:
        """S from the structural encoder, (N, n_s)."""
        if pairs is None:
            from .graph import find_pairs
            pairs = find_pairs(r, self.cutoff, box, shear)
        return self.encode(r, pairs, box, shear)

    def term_reports(self) -> Dict[str, dict]:
        """Every energy term's learned parameters in physical units (report.json)."""
        return {name: rep for name, term in self.terms.items() if (rep := term.report())}

    # ------------------------------------------------------------------ fast copies
    @torch.no_grad()
    def tabulated(self, sample: Optional[Tuple[Tensor, Tensor]] = None, n_pair_table: int = 4097,
                  n_eos_table: int = 257) -> Tuple["MetriplecticModel", dict]:
        """A copy for fast rollouts with its pair functions and energy terms tabulated, and
        their largest relative errors {part: error}.

        ``sample`` = (S (N, n_s), dens (N,)) sets the range of the equation-of-state table
        (the rollout's initial state, with margins; one entropic variable only). The copy
        is for inference: train the original."""
        import copy
        dtype = next(self.parameters()).dtype
        fast = copy.deepcopy(self).double()
        errors: dict = {}
        fast.pairfn, errors["pair_functions"] = fast.pairfn.tabulated(n_pair_table)
        w = fast.weights()
        for name in list(fast.terms.keys()):
            term = fast.terms[name]
            n = n_eos_table if name == "density" else n_pair_table
            smp = None if sample is None else (sample[0].double(), sample[1].double())
            new, err = term.tabulated(n, smp, w)
            if new is not term:
                fast.terms[name] = new
                errors[name] = err
        return fast.to(dtype), errors

    def density_of(self, state: State, pairs: Tensor, box=None, shear=None) -> Tensor:
        """(N,) kernel density W(0) + sum_j W(q_ij) at the state's positions."""
        return self.pairfn.at_zero().to(state.r.dtype) + self.neighbour_weight(state.r, pairs, box, self._size(state),
                                                                             shear)
