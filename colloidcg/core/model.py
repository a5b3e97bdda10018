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
when n_s = 1). Heat q delivered to particle i raises S_i by w q / theta_i, so that
T_i . dS_i = q.

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

Time stepping. :meth:`MetriplecticModel.step` is semi-implicit Euler-Maruyama. Video
gives frame-averaged velocities (r_t - r_{t-1}) / dt, which for a particle whose velocity
relaxes within a few frames are strongly correlated averages, not the instantaneous v; an
Euler-Maruyama chain at the frame rate cannot reproduce their statistics (about 20 % error
in the MSD at gamma dt = 1), and its substrate heat bookkeeping heats the particles at
large gamma dt. Frame-averaged models (``config.frame_average``, the default with a
substrate) therefore keep the instantaneous velocity as a hidden state and advance with
:meth:`MetriplecticModel.step_ou`: the substrate friction is integrated exactly (an
Ornstein-Uhlenbeck flow with the other accelerations held over the step; Ermak & Buckholz
1980) and the heat every particle exchanges is booked from its realized kinetic energy
change by solving U(S + dS) = U(S) + q, so energy is conserved step by step (exactly for
free particles). The likelihood (:mod:`.loss`) uses the matching statistics of frame
averages (:mod:`.ou`), exact for free Langevin particles at any gamma dt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

from .encoder import StructuralEncoder
from .graph import find_pairs, minimum_image, wrap
from .nets import CompactKernel, InternalEnergy, PairCoefficients, PairPotential, inv_softplus


@dataclass
class ModelConfig:
    """Architecture and physical scales of a :class:`MetriplecticModel`.

    Lengths are in the trajectory's length unit (um for video data), times in its time
    unit (s). ``cutoff`` is h; ``tau``, ``mass_scale`` and ``theta_ref`` set the initial
    scales of friction (mass/time), mass and temperature (energy, with k_B = 1 unless set);
    ``stiffness`` the scale of U's volume dependence (bulk modulus / theta_ref), calibrated
    from the data's drift so that stiff dense packings are reachable by training.
    ``frame_average`` (with ``substrate``): the data's velocities are frame averages
    (finite differences of positions), the likelihood and rollouts treat the instantaneous
    velocity as latent and integrate the substrate friction exactly (:mod:`.ou`).
    ``n_pair`` > 0: a learned repulsive pair energy of that many harmonic terms is added to
    E (:class:`~.nets.PairPotential`, energy scale ``theta_ref * stiffness``); 0: none (the
    density-kernel energy alone, as in models saved before it existed).
    ``deviatoric``: add the shear-strain energy of :meth:`MetriplecticModel._deviatoric_energy`
    (for solids); ``fabric_ref`` its reference neighbour weight, calibrated from the data
    (the mean over particles of sum_j W(q_ij)).
    ``size_scale`` > 0: per-particle sizes, reduced by this reference size (units of the
    tracks' ``size_column``; the largest particles' size), scale each pair's range (see the
    module docstring); 0: one range h for all pairs.
    """

    dim: int = 2
    cutoff: float = 1.0
    n_s: int = 1
    width: int = 50
    depth: int = 2
    n_kernel: int = 4
    energy_width: int = 32
    energy_depth: int = 2
    encoder_width: int = 32
    n_rbf: int = 8
    substrate: bool = True
    deviatoric: bool = False
    frame_average: bool = True
    k_B: float = 1.0
    tau: float = 1.0
    mass_scale: float = 1.0
    theta_ref: float = 1.0
    volume_ref: float = 1.0
    stiffness: float = 1.0
    fabric_ref: float = 1.0
    size_scale: float = 0.0
    size_column: str = ""
    n_pair: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model configuration keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class State:
    """Particle state. r, v: (N, d); S: (N, n_s). Units of the trajectory. ``size``: optional
    (N,) per-particle sizes (constants that move with the particles; read only by models
    with ``config.size_scale > 0``)."""

    r: torch.Tensor
    v: torch.Tensor
    S: torch.Tensor
    size: torch.Tensor | None = None

    def flat(self) -> torch.Tensor:
        return torch.cat([self.r.reshape(-1), self.v.reshape(-1), self.S.reshape(-1)])

    @staticmethod
    def unflat(x: torch.Tensor, n: int, d: int, k: int) -> "State":
        return State(x[: n * d].view(n, d), x[n * d: 2 * n * d].view(n, d), x[2 * n * d:].view(n, k))

    def clone(self) -> "State":
        return State(self.r.clone(), self.v.clone(), self.S.clone(), self.size)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


def _scatter(n: int, idx: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
    out = torch.zeros((n,) + val.shape[1:], dtype=val.dtype, device=val.device)
    return out.index_add_(0, idx, val)


def _scatter2(n: int, ij: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over pairs of a at their first particle and b at their second, in one pass;
    ``ij`` = cat(i, j) (the pair list's two columns concatenated)."""
    return _scatter(n, ij, torch.cat([a, b]))


class MetriplecticModel(nn.Module):
    """Learned SDPD-like metriplectic particle model (see module docstring)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.dim not in (2, 3):
            raise ValueError("dim must be 2 or 3")
        self.config = config
        c = config
        self.kernel = CompactKernel(c.n_kernel)
        self.energy = InternalEnergy(c.n_s, c.energy_width, c.energy_depth)
        self.pair = PairCoefficients(c.width, c.depth, 3)
        self.encoder = StructuralEncoder(c.dim, c.n_s, c.n_rbf, c.encoder_width, 2)
        if c.n_pair > 0:
            self.pair_potential = PairPotential(c.n_pair)
        self.raw_mass = nn.Parameter(torch.tensor(inv_softplus(1.0)))
        self.raw_w = nn.Parameter(torch.zeros(c.n_s))
        self.raw_alpha = nn.Parameter(torch.zeros(3))  # exponents for A, B, C
        if c.substrate:
            self.raw_gamma0 = nn.Parameter(torch.tensor(inv_softplus(0.5)))
            self.raw_alpha0 = nn.Parameter(torch.tensor(0.0))
        if c.deviatoric:
            self.raw_shear = nn.Parameter(torch.tensor(inv_softplus(1e-3)))
        self.tables = None  # optional tabulated pair functions for fast rollouts
        self.eos_table = None  # optional tabulated U(S, V) for fast rollouts (n_s = 1)

    # ------------------------------------------------------------------ scalars
    @property
    def mass(self) -> torch.Tensor:
        return self.config.mass_scale * F.softplus(self.raw_mass)

    @property
    def heat_weights(self) -> torch.Tensor:
        return torch.softmax(self.raw_w, 0)

    def _alphas(self) -> torch.Tensor:
        return 2.0 * torch.tanh(self.raw_alpha)

    def _gamma0(self):
        return self.config.mass_scale / self.config.tau * F.softplus(self.raw_gamma0), \
            2.0 * torch.tanh(self.raw_alpha0)

    # ------------------------------------------------------------------ pieces
    def pair_functions(self, q: torch.Tensor):
        """W(q), dW/dq and the (P, 3) dimensionless A, B, C of q = r / h."""
        W, dW, coef, _ = self.pair_values(q)
        return W, dW, coef

    def pair_values(self, q: torch.Tensor):
        """Every function of a pair's q = r / h in one pass: W (P,), dW/dq (P,), the (P, 3)
        dimensionless A, B, C and, with a pair energy (``n_pair`` > 0), the pair's energy phi
        and d phi / dq (energy units: ``theta_ref * stiffness`` times
        :class:`~.nets.PairPotential`) as a tuple, else None."""
        if self.tables is not None:
            out = self.tables(q)
            W, dW, coef = out[:, 0], out[:, 1], out[:, 2:5]
            pot = (out[:, 5], out[:, 6]) if out.shape[1] > 5 else None
        else:
            W, dW = self.kernel(q)
            coef = self.pair(q).to(q.dtype)
            pot = self.pair_potential(q) if self.config.n_pair > 0 else None
        if self.config.n_pair <= 0:
            return W, dW, coef, None
        scale = self.config.theta_ref * self.config.stiffness
        return W, dW, coef, (scale * pot[0], scale * pot[1])

    def particle_terms(self, S: torch.Tensor, dens: torch.Tensor):
        """Per-particle thermodynamics from U(S, V = 1/dens).

        Returns U (N,), T = dU/dS (N, n_s), P = dU/d dens (N,), theta (N,), kappa (N,)
        with kappa = w^T (d^2U/dS^2) w >= 0. Differentiable w.r.t. parameters and inputs.
        """
        if self.eos_table is not None and not torch.is_grad_enabled():
            return self.eos_table.particle_terms(S, dens, self._particle_terms_exact)
        return self._particle_terms_exact(S, dens)

    def _particle_terms_exact(self, S: torch.Tensor, dens: torch.Tensor, chunk: int = 65536):
        if not torch.is_grad_enabled() and S.shape[0] > chunk:
            # inference on many particles: chunks bound the double-backward graph's memory
            parts = [self._particle_terms_exact(S[k: k + chunk], dens[k: k + chunk], chunk)
                     for k in range(0, S.shape[0], chunk)]
            return tuple(torch.cat(t) for t in zip(*parts))
        c = self.config
        with torch.enable_grad():
            S_in = S if S.requires_grad else S.detach().requires_grad_(True)
            d_in = dens if dens.requires_grad else dens.detach().requires_grad_(True)
            u = c.theta_ref * self.energy(S_in, 1.0 / (d_in * c.volume_ref), c.stiffness)
            T, P = torch.autograd.grad(u.sum(), (S_in, d_in), create_graph=True)
            w = self.heat_weights.to(S.dtype)
            theta = T @ w
            g, = torch.autograd.grad(theta.sum(), S_in, create_graph=True)
            kappa = g @ w
        if not torch.is_grad_enabled():
            u, T, P, theta, kappa = (t.detach() for t in (u, T, P, theta, kappa))
        return u, T, P, theta, kappa

    def reduced_size(self, state: State) -> torch.Tensor | None:
        """(N,) reduced sizes a_i = min(s_i / size_scale, 1), or None for a model without sizes."""
        c = self.config
        if c.size_scale <= 0:
            return None
        if state.size is None:
            from ..errors import ColloidcgError
            raise ColloidcgError(f"state: the model was trained with per-particle sizes (tracks column "
                                 f"{c.size_column!r}); pass them as State.size")
        return (state.size.to(state.r.dtype) / c.size_scale).clamp(min=1e-3, max=1.0)

    def pair_range(self, a: torch.Tensor | None, pairs: torch.Tensor):
        """Range h sigma_ij of every pair, (P,), or the scalar h without sizes."""
        if a is None:
            return self.config.cutoff
        return self.config.cutoff * 0.5 * (a[pairs[:, 0]] + a[pairs[:, 1]])

    def compute(self, state: State, pairs: torch.Tensor, box: torch.Tensor | None = None):
        """Everything the drift, noise and covariance need, in one pass.

        Parameters
        ----------
        state : State with r, v (N, d), S (N, n_s).
        pairs : (P, 2) unordered candidate pairs (pairs beyond the cutoff contribute 0 and
            are dropped here: a Verlet list with a skin holds many).
        box : (d,) periodic box or None.
        """
        c = self.config
        r, v, S = state.r, state.v, state.S
        n, d = r.shape
        i, j = pairs[:, 0], pairs[:, 1]
        rij = minimum_image(r[i] - r[j], box)
        dist = torch.linalg.vector_norm(rij, dim=-1).clamp_min(1e-12 * c.cutoff)
        a = self.reduced_size(state)
        h = self.pair_range(a, pairs)
        near = dist < h
        if not bool(near.all()):
            k = torch.nonzero(near).squeeze(-1)
            pairs, rij, dist = pairs.index_select(0, k), rij.index_select(0, k), dist.index_select(0, k)
            i, j = pairs[:, 0], pairs[:, 1]
            if a is not None:
                h = h.index_select(0, k)
        e = rij / dist.unsqueeze(-1)
        q = dist / h
        W, dW, coef, pot = self.pair_values(q)
        w0 = self.kernel.at_zero().to(r.dtype)
        ij = torch.cat([i, j])
        dens = w0 + _scatter2(n, ij, W, W)
        U, T, Pd, theta, kappa = self.particle_terms(S, dens)
        ns = SimpleNamespace(n=n, d=d, i=i, j=j, ij=ij, e=e, q=q, dW=dW, dens=dens, U=U, T=T, Pd=Pd,
                             theta=theta, kappa=kappa, state=state, pairs=pairs, box=box)
        m = self.mass.to(r.dtype)
        ns.m = m
        # conservative forces F_i = -dE/dr_i (pairwise, equal and opposite)
        dEdr = (Pd[i] + Pd[j]) * dW / h
        if pot is not None:
            ns.phi = pot[0]
            dEdr = dEdr + pot[1] / h
        fpair = -dEdr.unsqueeze(-1) * e
        ns.force = _scatter2(n, ij, fpair, -fpair)
        if c.deviatoric:
            ns.force = ns.force + self._deviatoric_force(r, pairs, box, a)
        # pair amplitudes
        th_i, th_j = theta[i], theta[j]
        th_bar = 2.0 * th_i * th_j / (th_i + th_j)
        dbar_i = th_bar.square() / (2.0 * th_i.square())  # d theta_bar / d theta_i
        dbar_j = th_bar.square() / (2.0 * th_j.square())
        alpha = self._alphas().to(r.dtype)
        gscale = c.mass_scale / c.tau
        ratio = th_bar / c.theta_ref
        s2 = []
        for k in range(2):  # shear (perpendicular), bulk (central) friction
            val = gscale * coef[:, k] * th_bar * ratio ** alpha[k]
            dval = (1.0 + alpha[k]) * val / th_bar
            s2.append((val, dval * dbar_i, dval * dbar_j))
        ns.s2_perp, ns.s2_par = s2
        c2 = coef[:, 2] / c.tau * th_i * th_j * ratio ** alpha[2]
        ns.c2 = (c2, c2 / th_i + alpha[2] * c2 / th_bar * dbar_i,
                 c2 / th_j + alpha[2] * c2 / th_bar * dbar_j)
        ns.th_i, ns.th_j, ns.th_bar = th_i, th_j, th_bar
        ns.vij = v[i] - v[j]
        if c.substrate:
            g0, a0 = self._gamma0()
            g0 = g0.to(r.dtype)
            s0 = g0 * theta * (theta / c.theta_ref) ** a0
            ns.s0 = (s0, (1.0 + a0) * s0 / theta)
            ns.a0 = a0.to(r.dtype)
            ns.gamma0 = s0 / (m * theta)          # substrate friction rate (1/time), (N,)
        return ns

    def _deviatoric_energy(self, r, pairs, box, a=None):
        """Per-particle shear-strain energy (N,), theta_ref * stiffness * mu / 2 * |dev F_i|^2.

        F_i = sum_j W(q_ij) e_ij e_ij^T / fabric_ref is the fabric tensor of i's
        neighbours (its own W(0) left out), in units of the typical neighbour weight
        ``fabric_ref`` (calibrated from the data), so |dev F_i| is O(1) in a strained
        packing whatever the kernel's scale; it goes to 0 smoothly as neighbours leave the
        cutoff. The energy scale is that of the conservative forces (the calibrated
        stiffness), mu a learned positive factor. Pairwise sums of even functions of e_ij:
        translation- and rotation-invariant, so the forces conserve momentum.
        """
        c = self.config
        n, d = r.shape
        i, j = pairs[:, 0], pairs[:, 1]
        rij = minimum_image(r[i] - r[j], box)
        dist = torch.linalg.vector_norm(rij, dim=-1).clamp_min(1e-12 * c.cutoff)
        e = rij / dist.unsqueeze(-1)
        W, _, _ = self.pair_functions(dist / self.pair_range(a, pairs))
        ee = (e.unsqueeze(-1) * e.unsqueeze(-2)) * W.view(-1, 1, 1)
        fab = (_scatter(n, i, ee) + _scatter(n, j, ee)) / c.fabric_ref
        tr = fab.diagonal(dim1=-2, dim2=-1).sum(-1)
        dev = fab - torch.eye(d, dtype=r.dtype, device=r.device) * (tr / d).view(-1, 1, 1)
        mu = F.softplus(self.raw_shear).to(r.dtype)
        return c.theta_ref * c.stiffness * mu / 2 * dev.square().sum((-1, -2))

    def _deviatoric_force(self, r, pairs, box, a=None):
        """-dE_dev/dr by automatic differentiation (translation invariant: sums to zero)."""
        with torch.enable_grad():
            r_in = r if r.requires_grad else r.detach().requires_grad_(True)
            e_dev = self._deviatoric_energy(r_in, pairs, box, a).sum()
            g, = torch.autograd.grad(e_dev, r_in, create_graph=torch.is_grad_enabled())
        return -g

    # ------------------------------------------------------------------ energy
    def total_energy(self, state: State, pairs: torch.Tensor, box=None) -> torch.Tensor:
        ns = self.compute(state, pairs, box)
        e = 0.5 * ns.m * state.v.square().sum() + ns.U.sum()
        if self.config.n_pair > 0:
            e = e + ns.phi.sum()
        if self.config.deviatoric:
            e = e + self._deviatoric_energy(state.r, pairs, box, self.reduced_size(state)).sum()
        return e

    # ------------------------------------------------------------------ drift
    def drift(self, state: State, pairs: torch.Tensor, box=None, ns=None, ito: bool = True):
        """Deterministic drift (dr/dt, dv/dt, dS/dt) = L dE/dx + M dS/dx [+ k_B div M]."""
        if ns is None:
            ns = self.compute(state, pairs, box)
        dv, sdot = self._pair_drift(state, ns, ito)
        if self.config.substrate:
            g0, dv_ito, sdot_sub = self._substrate_drift(state, ns, ito)
            dv = dv - g0.unsqueeze(-1) * state.v + dv_ito
            sdot = sdot + sdot_sub
        dS = sdot.unsqueeze(-1) * self.heat_weights.to(dv.dtype)
        return state.v, dv, dS

    def _substrate_drift(self, state: State, ns, ito: bool = True):
        """Substrate (solvent) part of the drift: friction rate gamma0 (N,) (the friction
        acceleration is -gamma0 v), the Ito velocity term (N, d) and dS/dt (N,)."""
        c = self.config
        d, m, v = ns.d, ns.m, state.v
        s0, s0p = ns.s0
        th = ns.theta
        v2 = v.square().sum(-1)
        sdot = s0 * v2 / th ** 2
        dv_ito = torch.zeros_like(v)
        if ito and c.k_B != 0.0:
            kb = c.k_B
            dv_ito = -kb * (ns.kappa * (s0p / th - s0 / th ** 2) / m).unsqueeze(-1) * v
            sdot = sdot + kb * (-d * s0 / (m * th) + v2 * ns.kappa * (s0p / th ** 2 - 2 * s0 / th ** 3))
        return ns.gamma0, dv_ito, sdot

    def _pair_drift(self, state: State, ns, ito: bool = True, friction_heat: bool = True):
        """Conservative forces and the pair channels (friction, conduction) of the drift:
        dv/dt (N, d) and the scalar dS/dt (N,) before the heat weights.

        ``friction_heat=False`` leaves the friction channels' entropy terms (frictional
        heating and their Ito terms) out of dS/dt, for steps that book the realized heat
        instead (:meth:`step_ou`)."""
        c = self.config
        n, d, i, j, e, m = ns.n, ns.d, ns.i, ns.j, ns.e, ns.m
        th_i, th_j, th_bar = ns.th_i, ns.th_j, ns.th_bar
        k_i, k_j = ns.kappa[i], ns.kappa[j]
        vij = ns.vij
        ev = _dot(e, vij)
        par_v = e * ev.unsqueeze(-1)       # e (e . v)
        perp_v = vij - par_v               # P v
        q3_par = ev.square()
        q3_perp = (vij.square().sum(-1) - q3_par).clamp_min(0.0)
        sp, sp_i, sp_j = ns.s2_perp
        sb, sb_i, sb_j = ns.s2_par
        # M dS/dx: friction force and frictional heating
        fv = -(sp / th_bar).unsqueeze(-1) * perp_v - (sb / th_bar).unsqueeze(-1) * par_v
        heat = (sp * q3_perp + sb * q3_par) / (2.0 * th_bar)        # = T_i dS_i = T_j dS_j
        fh = 1.0 if friction_heat else 0.0
        sdot_i = fh * heat / th_i
        sdot_j = fh * heat / th_j
        c2, c2_i, c2_j = ns.c2
        cond = c2 * (1.0 / th_i - 1.0 / th_j)
        sdot_i = sdot_i + cond / th_i
        sdot_j = sdot_j - cond / th_j
        if ito and c.k_B != 0.0:
            kb = c.k_B
            for (s2, s2i, s2j, q1, q2, q3) in ((sp, sp_i, sp_j, perp_v, d - 1, q3_perp),
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
        dv = ns.force / m + _scatter2(n, ns.ij, fv, -fv) / m
        sdot = _scatter2(n, ns.ij, sdot_i, sdot_j)
        return dv, sdot

    # ------------------------------------------------------------------ noise
    def noise(self, state: State, pairs: torch.Tensor, dt: float, generator=None, box=None, ns=None,
              substrate: bool = True, friction_heat: bool = True):
        """One FDT-consistent noise increment (dv~, dS~), covariance 2 k_B M dt.

        ``substrate=False`` leaves out the substrate channels (the exact-OU step draws them
        itself); ``friction_heat=False`` leaves out the entropy part of the friction
        channels' noise (the exact-OU step books the realized heat instead)."""
        if ns is None:
            ns = self.compute(state, pairs, box)
        c = self.config
        n, d, i, e, m = ns.n, ns.d, ns.i, ns.e, ns.m
        v = state.v
        dtype, dev = v.dtype, v.device
        amp = (2.0 * c.k_B * dt) ** 0.5
        w = self.heat_weights.to(dtype)
        npair = i.shape[0]
        xi = torch.randn(npair, d + 2, dtype=dtype, device=dev, generator=generator)
        xp = xi[:, :d]
        xp = xp - e * _dot(e, xp).unsqueeze(-1)
        X = ns.s2_perp[0].clamp_min(0).sqrt().unsqueeze(-1) * xp \
            + (ns.s2_par[0].clamp_min(0).sqrt() * xi[:, d]).unsqueeze(-1) * e
        X = amp * X
        hf = -0.5 * _dot(ns.vij, X) if friction_heat else 0.0
        cz = amp * ns.c2[0].clamp_min(0).sqrt() * xi[:, d + 1]
        dv = _scatter2(n, ns.ij, X, -X) / m
        ds = _scatter2(n, ns.ij, (hf + cz) / ns.th_i, (hf - cz) / ns.th_j)
        if c.substrate and substrate:
            X0 = amp * ns.s0[0].clamp_min(0).sqrt().unsqueeze(-1) * torch.randn(
                n, d, dtype=dtype, device=dev, generator=generator)
            dv = dv + X0 / m
            ds = ds - _dot(v, X0) / ns.theta
        return dv, ds.unsqueeze(-1) * w

    # ------------------------------------------------------------------ covariance
    def velocity_covariance(self, ns, dt: float) -> torch.Tensor:
        """Per-particle (N, d, d) blocks of the velocity-noise covariance 2 k_B M_vv dt."""
        n, d, e = ns.n, ns.d, ns.e
        eye = torch.eye(d, dtype=e.dtype, device=e.device)
        ee = e.unsqueeze(-1) * e.unsqueeze(-2)
        blk = ns.s2_perp[0].view(-1, 1, 1) * (eye - ee) + ns.s2_par[0].view(-1, 1, 1) * ee
        cov = _scatter2(n, ns.ij, blk, blk)
        if self.config.substrate:
            cov = cov + ns.s0[0].view(-1, 1, 1) * eye
        return 2.0 * self.config.k_B * dt * cov / ns.m ** 2

    # ------------------------------------------------------------------ dense (tests)
    def dense_channels(self, state: State, pairs: torch.Tensor, box=None) -> torch.Tensor:
        """The (D, n_channels) matrix B with M = B B^T, D = N (2 d + n_s). For small systems."""
        ns = self.compute(state, pairs, box)
        n, d, i, j, e, m = ns.n, ns.d, ns.i, ns.j, ns.e, ns.m
        k = self.config.n_s
        D = n * (2 * d + k)
        ov, oS = n * d, 2 * n * d
        w = self.heat_weights.to(e.dtype)
        npair = i.shape[0]
        eye = torch.eye(d, dtype=e.dtype, device=e.device)
        Pm = eye - e.unsqueeze(-1) * e.unsqueeze(-2)                     # (P, d, d)
        u = torch.cat([ns.s2_perp[0].clamp_min(0).sqrt().view(-1, 1, 1) * Pm.transpose(1, 2),
                       (ns.s2_par[0].clamp_min(0).sqrt().unsqueeze(-1) * e).unsqueeze(1)], 1)
        nvc = d + 1                                                      # (P, nvc, d) rows = channels
        cols_v = (torch.arange(npair, device=e.device) * (nvc + 1)).view(-1, 1) + torch.arange(nvc, device=e.device)
        rows, cols, vals = [], [], []
        ax = torch.arange(d, device=e.device)
        sx = torch.arange(k, device=e.device)
        for sgn, idx in ((1.0, i), (-1.0, j)):
            rows.append((ov + idx.view(-1, 1, 1) * d + ax).expand(npair, nvc, d).reshape(-1))
            cols.append(cols_v.unsqueeze(-1).expand(npair, nvc, d).reshape(-1))
            vals.append((sgn * u / m).reshape(-1))
        hf = -0.5 * (u * ns.vij.unsqueeze(1)).sum(-1)                    # (P, nvc)
        for idx, th in ((i, ns.th_i), (j, ns.th_j)):
            rows.append((oS + idx.view(-1, 1, 1) * k + sx).expand(npair, nvc, k).reshape(-1))
            cols.append(cols_v.unsqueeze(-1).expand(npair, nvc, k).reshape(-1))
            vals.append(((hf / th.unsqueeze(-1)).unsqueeze(-1) * w).reshape(-1))
        ch = torch.arange(npair, device=e.device) * (nvc + 1) + nvc
        cc = ns.c2[0].clamp_min(0).sqrt()
        for sgn, idx, th in ((1.0, i, ns.th_i), (-1.0, j, ns.th_j)):
            rows.append((oS + idx.view(-1, 1) * k + sx).reshape(-1))
            cols.append(ch.view(-1, 1).expand(npair, k).reshape(-1))
            vals.append(((sgn * cc / th).unsqueeze(-1) * w).reshape(-1))
        nch = npair * (nvc + 1)
        if self.config.substrate:
            s0 = ns.s0[0].clamp_min(0).sqrt()
            pidx = torch.arange(n, device=e.device)
            c0 = nch + pidx.view(-1, 1) * d + ax                            # (N, d)
            rows.append((ov + pidx.view(-1, 1) * d + ax).reshape(-1))
            cols.append(c0.reshape(-1))
            vals.append((s0.view(-1, 1) / m * torch.ones(n, d, dtype=e.dtype, device=e.device)).reshape(-1))
            hs = -(state.v * s0.view(-1, 1)) / ns.theta.view(-1, 1)       # (N, d)
            rows.append((oS + pidx.view(-1, 1, 1) * k + sx).expand(n, d, k).reshape(-1))
            cols.append(c0.unsqueeze(-1).expand(n, d, k).reshape(-1))
            vals.append((hs.unsqueeze(-1) * w).reshape(-1))
            nch = nch + n * d
        B = torch.zeros(D, nch, dtype=e.dtype, device=e.device)
        return B.index_put((torch.cat(rows), torch.cat(cols)), torch.cat(vals), accumulate=True)

    def dense_M(self, state: State, pairs: torch.Tensor, box=None) -> torch.Tensor:
        B = self.dense_channels(state, pairs, box)
        return B @ B.T

    def dense_L(self, n: int, dtype=torch.float64, device=None) -> torch.Tensor:
        d, k = self.config.dim, self.config.n_s
        D = n * (2 * d + k)
        L = torch.zeros(D, D, dtype=dtype, device=device)
        m = self.mass.detach().to(dtype)
        eye = torch.eye(n * d, dtype=dtype, device=device) / m
        L[: n * d, n * d: 2 * n * d] = eye
        L[n * d: 2 * n * d, : n * d] = -eye
        return L

    def gradients(self, state: State, pairs: torch.Tensor, box=None):
        """Flat dE/dx and dS/dx (dS_tot/dx = 1 on every S component, 0 elsewhere)."""
        ns = self.compute(state, pairs, box)
        gE = torch.cat([-ns.force.reshape(-1), (ns.m * state.v).reshape(-1), ns.T.reshape(-1)])
        gS = torch.cat([torch.zeros_like(state.r).reshape(-1), torch.zeros_like(state.v).reshape(-1),
                        torch.ones_like(state.S).reshape(-1)])
        return gE, gS

    # ------------------------------------------------------------------ stepping
    def step(self, state: State, pairs: torch.Tensor, dt: float, generator=None, box=None,
             noise: bool = True) -> State:
        """One Euler-Maruyama step, positions updated with the new velocity (semi-implicit):

        v' = v + a dt + dv~,  S' = S + dS/dt dt + dS~,  r' = r + v' dt.
        """
        ns = self.compute(state, pairs, box)
        _, dv, dS = self.drift(state, pairs, box, ns=ns)
        v = state.v + dv * dt
        S = state.S + dS * dt
        if noise and self.config.k_B != 0.0:
            nv, nS = self.noise(state, pairs, dt, generator, box, ns=ns)
            v = v + nv
            S = S + nS
        r = wrap(state.r + v * dt, box)
        return State(r, v, S, state.size)

    # ------------------------------------------------------------------ exact-OU stepping
    @property
    def frame_averaged(self) -> bool:
        """True when data velocities are read as frame averages and the substrate friction
        is integrated exactly (``config.frame_average`` with a substrate)."""
        return bool(self.config.frame_average and self.config.substrate)

    def ou_flow(self, state: State, ns, b: torch.Tensor, u: torch.Tensor, dt: float,
                generator=None, noise: bool = True, b_ext: torch.Tensor | None = None,
                u_ref: torch.Tensor | None = None, heat_extra: torch.Tensor | None = None):
        """Exact substrate OU flow over dt under the constant acceleration b (N, d), from the
        instantaneous velocity u (Ermak & Buckholz 1980; see :mod:`.ou`).

        Returns (u', dr, dS) with dS (N, n_s) the entropy change. The heat
        q = -(m/2)(|u'|^2 - |u_ref|^2) + m b_ext . dr, the kinetic energy the particle lost
        other than by the work of b_ext, is moved into its internal energy exactly:
        U(S + w s, V) = U(S, V) + q is solved for s by Newton's method, so a free particle's
        energy is conserved step by step. ``b_ext`` is the part of b whose work other
        terms account for (the conservative forces: the particles' volumes); default b.
        ``u_ref`` is the velocity the kinetic energy is counted from (default u);
        ``heat_extra`` (N,) is added to q. Noise off gives the mean path (the noise's mean
        heat included).
        """
        from .ou import coefficients
        c = self.config
        d, m = ns.d, ns.m
        th = ns.theta
        x = ns.gamma0 * dt
        co = coefficients(x)
        s2 = (c.k_B * th / m).clamp_min(0.0)                       # kT/m per particle
        u1 = co.E.unsqueeze(-1) * u + (dt * co.phi1).unsqueeze(-1) * b
        dr = dt * (co.phi1.unsqueeze(-1) * u + (dt * co.phi2).unsqueeze(-1) * b)
        if noise and c.k_B != 0.0:
            z = torch.randn((2,) + u.shape, dtype=u.dtype, device=u.device, generator=generator)
            sd = s2.sqrt()
            u1 = u1 + (sd * co.vu.sqrt()).unsqueeze(-1) * z[0]
            dr = dr + (dt * sd).unsqueeze(-1) * (co.cross.unsqueeze(-1) * z[0]
                                                 + co.cond.sqrt().unsqueeze(-1) * z[1])
        u0 = u if u_ref is None else u_ref
        heat = -0.5 * m * (u1.square().sum(-1) - u0.square().sum(-1)) + m * _dot(b if b_ext is None else b_ext, dr)
        if not (noise and c.k_B != 0.0):
            heat = heat - 0.5 * m * d * s2 * co.vu
        if heat_extra is not None:
            heat = heat + heat_extra
        return u1, dr, self.heat_to_entropy(state.S, ns, heat)

    def heat_to_entropy(self, S: torch.Tensor, ns, heat: torch.Tensor, iterations: int = 2) -> torch.Tensor:
        """dS (N, n_s) along the heat weights w with U(S + dS, V) = U(S, V) + heat (N,).

        Newton's method from the second-order guess heat/theta - kappa heat^2 / (2 theta^3);
        dU/ds = theta > 0, so it converges quadratically."""
        w = self.heat_weights.to(S.dtype)
        th = ns.theta
        s = heat / th - ns.kappa * heat.square() / (2 * th ** 3)
        target = ns.U + heat
        for _ in range(iterations):
            u_new, th_new = self.internal_energy(S + s.unsqueeze(-1) * w, ns.dens)
            s = s - (u_new - target) / th_new
        return s.unsqueeze(-1) * w

    def internal_energy(self, S: torch.Tensor, dens: torch.Tensor):
        """U (N,) and theta = w . dU/dS (N,) at (S, V = 1/dens)."""
        c = self.config
        if self.eos_table is not None and not torch.is_grad_enabled():
            u, T, _, th, _ = self.eos_table.particle_terms(S, dens, self._particle_terms_exact)
            return u, th
        with torch.enable_grad():
            S_in = S.detach().requires_grad_(True) if not S.requires_grad else S
            u = c.theta_ref * self.energy(S_in, 1.0 / (dens * c.volume_ref), c.stiffness)
            T, = torch.autograd.grad(u.sum(), S_in, create_graph=torch.is_grad_enabled())
        th = T @ self.heat_weights.to(S.dtype)
        if not torch.is_grad_enabled():
            u, th = u.detach(), th.detach()
        return u, th

    def ou_parts(self, state: State, ns):
        """Pieces of the exact-OU step at ``state``: the constant acceleration b (N, d)
        (conservative forces, pair friction, Ito velocity terms), the conservative part
        force/m, and dS/dt (N,) of heat conduction (the only entropy change not booked from
        the realized heat)."""
        dv, sdot = self._pair_drift(state, ns, friction_heat=False)
        _, dv_ito, _ = self._substrate_drift(state, ns)
        return dv + dv_ito, ns.force / ns.m, sdot

    def step_ou(self, state: State, pairs: torch.Tensor, dt: float, generator=None, box=None,
                noise: bool = True, v_avg: torch.Tensor | None = None, prev=None):
        """One step with the substrate friction integrated exactly (frame-averaged models).

        ``state.v`` is the instantaneous velocity u. The pair noise acts as a kick; forces,
        pair friction and the Ito velocity terms act as a constant acceleration over the
        step, solved exactly with the substrate OU (:meth:`ou_flow`, Ermak & Buckholz 1980).
        Energy is booked from the realized motion: every particle's kinetic energy change
        not due to the conservative forces becomes heat in its own internal energy, so
        friction and noise, substrate and pair alike, conserve the energy exactly; heat
        conduction is Euler-Maruyama. ``v_avg`` (default ``state.v``) is the velocity the
        pair friction and the Ito velocity terms act on: the previous step's averaged
        velocity, as in the likelihood (:mod:`.loss`), rather than the instantaneous one,
        which fluctuates on the fast substrate time scale 1/gamma0 and would make that
        explicit friction stiff.

        The work of the conservative forces is booked with the trapezoidal rule,
        (F(r) + F(r')) / 2 . dr, one step late: ``prev`` = (F, dr) of the previous step adds
        (F(r) - F_prev) / 2 . dr_prev to this step's heat. With F(r) . dr alone the internal
        energy would gain dr . H dr / 2 per step (H the Hessian of the energy), which for a
        stiff packing heats it steadily.

        Returns (new State with instantaneous velocity, displacement dr, force F(r)): dr / dt
        is the step's averaged velocity, what finite differences of recorded positions
        measure; (F, dr) is the next step's ``prev``. Without a substrate this is
        :meth:`step` (dr = v' dt).
        """
        if not self.config.substrate:
            new = self.step(state, pairs, dt, generator, box, noise)
            return new, new.v * dt, None
        seen = state if v_avg is None else State(state.r, v_avg, state.S, state.size)
        ns = self.compute(seen, pairs, box)
        b, b_ext, sdot = self.ou_parts(seen, ns)
        w = self.heat_weights.to(b.dtype)
        S = state.S + sdot.unsqueeze(-1) * w * dt
        u = state.v
        if noise and self.config.k_B != 0.0:
            nv, nS = self.noise(state, pairs, dt, generator, box, ns=ns, substrate=False,
                                friction_heat=False)
            u = u + nv
            S = S + nS
        extra = None
        if prev is not None and prev[0] is not None:
            extra = 0.5 * _dot(ns.force - prev[0], prev[1])
        u1, dr, dS = self.ou_flow(state, ns, b, u, dt, generator, noise, b_ext=b_ext, u_ref=state.v,
                                  heat_extra=extra)
        return State(wrap(state.r + dr, box), u1, S + dS, state.size), dr, ns.force

    def latent_velocity(self, state: State, pairs: torch.Tensor, dt: float, generator=None, box=None,
                        noise: bool = True) -> torch.Tensor:
        """Instantaneous velocity at the end of a frame whose averaged velocity is state.v.

        Stationary frozen-coefficient closure (see :mod:`.ou`): mean v + a dt (1 - beta) / x
        (a the full drift), variance Sigma (1 - rho1) / (2 x) per component, Sigma the
        frame's Euler-Maruyama velocity-noise variance. Noise off gives the mean.
        """
        if not self.frame_averaged:
            return state.v
        from .ou import coefficients
        ns = self.compute(state, pairs, box)
        _, dv, _ = self.drift(state, pairs, box, ns=ns)
        co = coefficients(ns.gamma0 * dt)
        u = state.v + dv * (dt * co.omb).unsqueeze(-1)
        if noise and self.config.k_B != 0.0:
            sig = self.velocity_covariance(ns, dt).diagonal(dim1=-2, dim2=-1).mean(-1)
            var = sig * co.F1 / 2.0
            u = u + var.clamp_min(0).sqrt().unsqueeze(-1) * torch.randn(
                u.shape, dtype=u.dtype, device=u.device, generator=generator)
        return u

    def initial_S(self, r: torch.Tensor, pairs: torch.Tensor | None = None, box=None) -> torch.Tensor:
        """S from the structural encoder, (N, n_s)."""
        if pairs is None:
            pairs = find_pairs(r, self.config.cutoff, box)
        return self.encoder(r, pairs, self.config.cutoff, box)
