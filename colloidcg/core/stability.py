"""How many integration steps per frame a rollout needs to stay stable.

A model trained at the frame rate can have forces far too stiff to be integrated in one
step per frame: steep contact repulsions (WCA, Lennard-Jones, hard-ish colloids) learned
from data whose particles move a tenth of a diameter per frame. One step then overshoots,
the particles overlap, and the rollout heats and melts within a few frames (measured on
LAMMPS Brownian dynamics of WCA disks: g(r) 60 % off after 10 frames at one step per
frame, 7 % at three or more; docs/model.md).

The criterion is linear stability. Around a configuration the conservative forces act on
the stiffest normal mode like a spring of rate kappa = lambda_max / m (lambda_max the
largest eigenvalue of the Hessian of the energy with respect to the positions, S held);
the integrator's step of length h maps (r, u) of that mode linearly, with the friction
rate gamma of the particles:

- exact OU (frame-averaged models, :class:`~.integrators.ExactOU`): r' = r + h phi1 u -
  kappa h^2 phi2 r, u' = e^{-x} u - kappa h phi1 r, x = gamma h. With the force held over
  the step it is the explicit Euler scheme for the oscillation, so without friction it is
  never stable; with friction it needs about h < 2 gamma / kappa, for an underdamped mode
  (the friction must remove the energy the step adds) as for an overdamped one (the
  Brownian limit, h kappa / gamma < 2). Inertial systems with weak friction (Lennard-Jones
  liquids under a Langevin thermostat) therefore need many substeps;
- semi-implicit Euler-Maruyama (:class:`~.integrators.EulerMaruyama`): v' = (1 - gamma h) v
  - kappa h r, r' = r + h v';
- pair splitting (:class:`~.integrators.PairSplitting`): half kick, the friction's exact
  decay e^{-gamma h}, half kick, drift (leapfrog: stable for h sqrt(kappa) < 2 without
  friction).

A step is stable when the spectral radius of that 2 x 2 map is at most 1. "auto" keeps one
step per frame where one step is stable at the data's configurations; otherwise it takes
the fewest substeps whose step is stable for ``safety`` x kappa: a model that is already
unstable at the frame rate has steep contacts, and rollouts meet closer, hence stiffer,
contacts than the frames they start from (the default 2 was measured: on the WCA disks the
step stable for kappa alone, two substeps, still melted, while 3 and more held; harmonic
soft disks, stable at one step, keep their measured rollouts), at the smallest and the
largest friction rate of the particles.
lambda_max comes from power iteration on Hessian-vector products by central differences
of the model's own forces (no second derivatives of the networks needed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .config import State
from .ou import coefficients

#: factor on the stiffest mode's rate kappa (see the module docstring)
SAFETY = 2.0
#: the most substeps "auto" chooses; a model that needs more is reported, not run slower
MAX_SUBSTEPS = 256


class UnstableRolloutWarning(UserWarning):
    """A rollout runs with fewer integration steps per frame than its stiffest mode needs."""


@dataclass
class Stability:
    """What :func:`stable_substeps` found: ``substeps`` per frame, the integrator's name,
    ``kappa`` (1/time^2, the stiffest mode's rate, before the safety factor), the friction
    rates ``gamma_min`` and ``gamma_max`` (1/time) and ``radius``, the spectral radius of one
    substep at ``safety`` x kappa (<= 1: stable; ``safety`` 1 where one step per frame is
    stable); ``capped``: more than ``MAX_SUBSTEPS`` were needed; ``calibrated_substeps``:
    the steps per frame the model's friction was calibrated with (``transport_substeps``,
    1 unless ``TrainConfig.transport`` is "msd"), a floor on ``substeps``."""

    substeps: int
    integrator: str
    kappa: float
    gamma_min: float
    gamma_max: float
    safety: float
    radius: float
    capped: bool
    calibrated_substeps: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def step_matrix(integrator: str, kappa: float, gamma: float, h: float) -> np.ndarray:
    """The linear map of one step h on (r, u) of a mode with spring rate ``kappa`` (1/time^2)
    and friction rate ``gamma`` (1/time), for ``integrator`` "ExactOU", "EulerMaruyama" or
    "PairSplitting" (module docstring)."""
    if integrator == "ExactOU":
        c = coefficients(torch.tensor(gamma * h, dtype=torch.float64))
        phi1, phi2, E = float(c.phi1), float(c.phi2), float(c.E)
        return np.array([[1.0 - kappa * h * h * phi2, h * phi1], [-kappa * h * phi1, E]])
    if integrator == "EulerMaruyama":
        a = 1.0 - gamma * h
        return np.array([[1.0 - kappa * h * h, h * a], [-kappa * h, a]])
    if integrator == "PairSplitting":
        kick = np.array([[1.0, 0.0], [-kappa * h / 2, 1.0]])
        decay = np.array([[1.0, 0.0], [0.0, float(np.exp(-gamma * h))]])
        drift = np.array([[1.0, h], [0.0, 1.0]])
        return drift @ kick @ decay @ kick
    raise ValueError(f"integrator: expected ExactOU, EulerMaruyama or PairSplitting, got {integrator!r}")


def spectral_radius(integrator: str, kappa: float, gamma: float, h: float) -> float:
    """Largest |eigenvalue| of :func:`step_matrix`."""
    return float(np.max(np.abs(np.linalg.eigvals(step_matrix(integrator, kappa, gamma, h)))))


@torch.no_grad()
def largest_curvature(model, state: State, pairs: torch.Tensor, box: torch.Tensor | None = None,
                      iterations: int = 40, seed: int = 0, shear: torch.Tensor | None = None) -> float:
    """lambda_max: the largest eigenvalue of the Hessian of the model's energy with respect
    to the positions (S held), energy / length^2 in the model's units, by power iteration on
    central-difference Hessian-vector products of the model's forces. Where the spectrum's
    largest magnitude is negative (an attractive saddle), the iteration is repeated on the
    shifted Hessian to find the largest positive eigenvalue (0 if there is none)."""
    r = state.r
    size = model._size(state)
    eps = 1e-4 * float(model.cutoff)
    zero = torch.zeros_like(r)

    def hv(x: torch.Tensor) -> torch.Tensor:
        fp = model.terms_of(r + eps * x, zero, state.S, pairs, box, size, shear).force
        fm = model.terms_of(r - eps * x, zero, state.S, pairs, box, size, shear).force
        return -(fp - fm) / (2 * eps)

    gen = torch.Generator(device="cpu").manual_seed(seed)

    def power(shift: float) -> float:
        x = torch.randn(r.shape, generator=gen, dtype=torch.float64).to(r)
        x = x / x.norm()
        lam = 0.0
        for _ in range(iterations):
            y = hv(x) - shift * x
            lam = float((x * y).sum())
            n = y.norm()
            if float(n) == 0.0:
                return 0.0
            x = y / n
        return lam

    lam = power(0.0)
    if lam < 0:
        lam = power(lam) + lam
    return max(lam, 0.0)


def substeps_for(integrator: str, kappa: float, gammas, dt: float, safety: float = SAFETY,
                 max_substeps: int = MAX_SUBSTEPS) -> tuple[int, float, bool]:
    """(substeps, spectral radius of one substep, capped): the fewest substeps of ``dt``
    whose step is stable (radius <= 1) for ``safety`` x ``kappa`` at every friction rate in
    ``gammas``."""
    def radius(k: int) -> float:
        return max(spectral_radius(integrator, safety * kappa, g, dt / k) for g in gammas)

    if kappa <= 0:
        return 1, radius(1), False
    k = 1
    while k <= max_substeps:
        rho = radius(k)
        if rho <= 1.0:
            return k, rho, False
        k = k + 1 if k < 8 else int(np.ceil(k * 1.25))
    return max_substeps, radius(max_substeps), True


@torch.no_grad()
def stable_substeps(model, states: list[State], dt: float, box: torch.Tensor | None = None,
                    safety: float = SAFETY, max_substeps: int = MAX_SUBSTEPS,
                    shear: torch.Tensor | None = None) -> Stability:
    """The integration steps per recorded step of length ``dt`` (model units) that keep
    ``model``'s rollouts from the configurations ``states`` linearly stable: one if one step
    is stable there, else the fewest stable for ``safety`` x kappa (module docstring); at
    least the steps its friction was calibrated with (``config.transport_substeps``). ``states``: one or a few configurations of the data (their largest
    curvature is used); ``shear``: the Lees-Edwards state of a sheared box (:mod:`.driver`)."""
    from .dynamics import pair_friction_rate
    from .graph import find_pairs
    from .integrators import integrator_for

    name = type(integrator_for(model)).__name__
    kappa, gmin, gmax = 0.0, np.inf, 0.0
    for st in states:
        # k-d tree (model.pairs is O(N^2)); a little beyond the range, as the probes move the particles
        pairs = find_pairs(st.r, 1.01 * float(model.cutoff), box, shear)
        t = model.terms_of(st.r, torch.zeros_like(st.r), st.S, pairs, box, model._size(st), shear)
        m = float(t.m)
        kappa = max(kappa, largest_curvature(model, st, pairs, box, shear=shear) / m)
        if name == "ExactOU":
            g = t.diss.gamma0
        elif name == "PairSplitting":
            g = pair_friction_rate(t)
        else:       # Euler-Maruyama: the substrate and the pair friction, both explicit
            g = pair_friction_rate(t) + (t.diss.gamma0 if model.substrate else 0.0)
        g = g.detach().double()
        gmin, gmax = min(gmin, float(g.min())), max(gmax, float(g.max()))
    if not np.isfinite(gmin):
        gmin = gmax = 0.0
    gammas = sorted({gmin, gmax})
    k, rho, capped = substeps_for(name, kappa, gammas, dt, 1.0, max_substeps)
    if k > 1 and safety != 1.0:
        k, rho, capped = substeps_for(name, kappa, gammas, dt, safety, max_substeps)
    else:
        safety = 1.0
    calibrated = int(getattr(model.config, "transport_substeps", 1))
    if calibrated > k:          # the friction was calibrated with more steps: take them
        k = calibrated
        rho = max(spectral_radius(name, safety * kappa, g, dt / k) for g in gammas)
    return Stability(int(k), name, float(kappa), float(gmin), float(gmax), float(safety), float(rho), bool(capped),
                     calibrated)
