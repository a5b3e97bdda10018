"""Typed intermediate results of the metriplectic model.

Every quantity the drift, the noise and the likelihood share is computed once per state by
:meth:`~.model.MetriplecticModel.terms_of` and handed on in these named tuples (TorchScript
compiles them, so the exported model uses the same types). N particles, d dimensions,
P interacting pairs (those closer than their range), n_s entropic variables. Units are
the trajectory's: lengths L (um for video), times t (s), energy E (mass x L^2 / t^2,
k_B = 1 by default).
"""


from typing import NamedTuple, Optional, Tuple

from torch import Tensor


class PairGeometry(NamedTuple):
    """The interacting pairs and every function of their distance.

    pairs : (P, 2) int64, i < j, only pairs closer than their range h_ij.
    i, j : (P,) the two columns; ij : (2P,) cat(i, j), for scattering to both ends.
    e : (P, d) unit vectors r_ij / |r_ij| (r_ij = r_i - r_j, minimum image).
    dist : (P,) |r_ij|, L.  h : (P,) pair range h sigma_ij, or (1,) when every pair has
    the range h (models without sizes; broadcasts), L.  q : (P,) dist / h.
    W : (P,) kernel W(q), dimensionless; dW : (P,) dW/dq.
    coef : (P, 3) dimensionless friction and conduction functions A, B, C of q.
    n : number of particles N.
    """

    pairs: Tensor
    i: Tensor
    j: Tensor
    ij: Tensor
    e: Tensor
    dist: Tensor
    h: Tensor
    q: Tensor
    W: Tensor
    dW: Tensor
    coef: Tensor
    n: int


class Thermo(NamedTuple):
    """Per-particle thermodynamics from the internal energy U(S, V), V = 1 / dens.

    dens : (N,) kernel density W(0) + sum_j W(q_ij), dimensionless.
    U : (N,) internal energy, E.  T : (N, n_s) temperatures dU/dS, E.
    P : (N,) dU/d dens, E (the density term's conservative forces are -(P_i + P_j) W' e / h).
    theta : (N,) effective temperature w . T, E.  kappa : (N,) w^T (d^2U/dS^2) w >= 0, E.
    """

    dens: Tensor
    U: Tensor
    T: Tensor
    P: Tensor
    theta: Tensor
    kappa: Tensor


class TermOut(NamedTuple):
    """What one energy term contributes, split so that the model sums every term's central
    pair forces and pair energies before it scatters them onto particles once.

    energy : (N,) energy attributed to single particles, E.
    pair_energy : (P,) energy of each pair (half to each of its particles), E.
    dEdr : (P,) central pair force: dE/d|r_ij|, E/L; the force on i is -dEdr e_ij, on j +dEdr e_ij.
    force : (N, d) any other (non-central) force -dE/dr, E/L.
    Each is None where the term has no such part (nothing is allocated or added for it).
    The term's energy is energy + each particle's half of its pairs' pair_energy; its force
    is force + the scattered central forces (:func:`colloidcg.core.terms.base.energy_of`,
    :func:`~colloidcg.core.terms.base.force_of`).
    """

    energy: Optional[Tensor]
    pair_energy: Optional[Tensor]
    dEdr: Optional[Tensor]
    force: Optional[Tensor]


class Dissipation(NamedTuple):
    """Amplitudes of the noise channels (the dissipative part M), with their derivatives
    with respect to the temperatures they depend on (for the Ito drift).

    th_i, th_j : (P,) theta of each pair's two particles; th_bar : (P,) their harmonic mean.
    s2_perp, s2_par : (value, d/d theta_i, d/d theta_j), each (P,): the squared amplitudes
        sigma^2 of the shear (perpendicular) and central pair friction, mass^2 L^2 / t^3 / E
        x E (so that sigma^2 / theta is a friction coefficient, mass / t).
    c2 : (value, d/d theta_i, d/d theta_j), each (P,): squared heat-conduction amplitude, E / t.
    s0 : (value, d/d theta) (N,): squared substrate-friction amplitude (zeros without one).
    gamma0 : (N,) substrate friction rate, 1/t (zeros without a substrate).
    """

    th_i: Tensor
    th_j: Tensor
    th_bar: Tensor
    s2_perp: Tuple[Tensor, Tensor, Tensor]
    s2_par: Tuple[Tensor, Tensor, Tensor]
    c2: Tuple[Tensor, Tensor, Tensor]
    s0: Tuple[Tensor, Tensor]
    gamma0: Tensor


class Terms(NamedTuple):
    """Everything the dynamics of one state needs.

    geom : the pairs; thermo : per-particle thermodynamics; diss : noise amplitudes.
    m : () particle mass.  w : (n_s,) heat weights (sum 1).
    force : (N, d) conservative force -dE/dr of all energy terms, E/L.
    energy : (N,) conservative energy attributed to single particles (U, the deviatoric
        part), E; pair_energy : (P,) the pairs' energies (half to each particle), E. No
        kinetic energy.
    v : (N, d) the velocities the dissipative terms act on; vij : (P, d) v_i - v_j.
    """

    geom: PairGeometry
    thermo: Thermo
    diss: Dissipation
    m: Tensor
    w: Tensor
    force: Tensor
    energy: Tensor
    pair_energy: Tensor
    v: Tensor
    vij: Tensor


class Carry(NamedTuple):
    """What an integrator carries from step to step (:mod:`.integrators`).

    r : (N, d) positions, wrapped into a periodic box.  u : (N, d) the velocity the
    integrator advances (instantaneous for the exact-OU step).  S : (N, n_s).
    v_avg : (N, d) the last step's averaged velocity, displacement / dt (what the pair
    friction of the exact-OU step acts on).  force, dr : (N, d) the last step's conservative
    force and displacement (zeros before the first step), for the trapezoidal work.
    """

    r: Tensor
    u: Tensor
    S: Tensor
    v_avg: Tensor
    force: Tensor
    dr: Tensor
