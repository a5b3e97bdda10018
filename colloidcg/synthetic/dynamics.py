"""Dynamics of 2D soft disks in a periodic (optionally sheared) box.

Units: lengths in pixels, time in frames, energies in units of the repulsion strength
``eps`` (so ``kT = thermal_ratio``).

Pair potential (harmonic soft disks, Durian 1995; O'Hern et al. 2003)::

    U(r) = eps/2 (1 - r/sigma_ij)^2   for r < sigma_ij = (d_i + d_j)/2, else 0
    |F|  = eps/sigma_ij (1 - r/sigma_ij), repulsive, along r_ij

Overdamped Brownian dynamics (Ermak & McCammon 1978), Euler-Maruyama::

    dx = [F/zeta + u(y)] dt + sqrt(2 D0 dt) xi,     zeta = kT/D0

Underdamped Langevin dynamics, BAOAB splitting (Leimkuhler & Matthews 2013)::

    m dv = [F - zeta (v - u(y))] dt + sqrt(2 zeta kT) dW,   m = zeta * tau_v

Imposed simple shear: the solvent velocity is u = (gamma_dot(t) (y - y_c), 0) with
Lees-Edwards boundary conditions (Lees & Edwards 1972). Neighbour search is done in the
convected coordinates s = x - gamma(t) (y - y_c), in which the periodic images form a plain
rectangular lattice, so the periodic neighbour search (:mod:`colloidcg.neighbours`) applies unchanged; the real
separation of a pair is (ds + gamma dy, dy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..neighbours import Tree, wrap


@dataclass
class Box:
    """A periodic box ``[0, Lx) x [0, Ly)`` with an optional Lees-Edwards strain.

    ``strain`` is the current shear strain gamma (x displacement of the image above per
    unit height); ``yc`` the height at which the shear flow is zero.
    """

    lx: float
    ly: float
    yc: float
    strain: float = 0.0

    def convected(self, pos: np.ndarray) -> np.ndarray:
        """Wrapped convected coordinates (s, y) of ``pos`` (N, 2) unwrapped real positions."""
        s = pos[:, 0] - self.strain * (pos[:, 1] - self.yc)
        return wrap(np.column_stack([s, pos[:, 1]]), (self.lx, self.ly))

    def separation(self, conv_i: np.ndarray, conv_j: np.ndarray) -> np.ndarray:
        """Real minimum-image separation r_i - r_j (M, 2) from convected coordinates."""
        ds = conv_i[:, 0] - conv_j[:, 0]
        dy = conv_i[:, 1] - conv_j[:, 1]
        ds -= self.lx * np.round(ds / self.lx)
        dy -= self.ly * np.round(dy / self.ly)
        return np.stack([ds + self.strain * dy, dy], axis=1)


@dataclass
class NeighbourList:
    """Verlet list in convected coordinates, rebuilt when particles have moved too far.

    Correctness: any pair with real distance < ``cutoff`` at strain |gamma| <= ``max_strain``
    has convected distance < cutoff (1 + max_strain); the list keeps pairs closer than that
    plus ``skin`` at build time and is rebuilt once any particle's convected position has
    moved by more than skin/2.
    """

    cutoff: float
    skin: float
    max_strain: float = 0.0
    pairs: np.ndarray = field(default_factory=lambda: np.empty((0, 2), dtype=np.intp))
    _ref: np.ndarray | None = None
    rebuilds: int = 0

    def update(self, box: Box, conv: np.ndarray) -> np.ndarray:
        if self._ref is not None:
            d = conv - self._ref
            d[:, 0] -= box.lx * np.round(d[:, 0] / box.lx)
            d[:, 1] -= box.ly * np.round(d[:, 1] / box.ly)
            if np.max(np.einsum("ij,ij->i", d, d)) < (0.5 * self.skin) ** 2:
                return self.pairs
        radius = self.cutoff * (1.0 + self.max_strain) + self.skin
        # the k-d tree's pair order, as before the search moved to colloidcg.neighbours:
        # the force sums (bincount over pairs) then reproduce earlier trajectories bit for bit
        self.pairs = Tree(conv, (box.lx, box.ly)).pairs(radius, sort=False)
        self._ref = conv.copy()
        self.rebuilds += 1
        return self.pairs


def pair_forces(pos: np.ndarray, diam: np.ndarray, box: Box, nlist: NeighbourList,
                eps: float = 1.0) -> tuple[np.ndarray, float, np.ndarray]:
    """Harmonic soft-disk forces.

    Parameters
    ----------
    pos : (N, 2) unwrapped real positions, px.
    diam : (N,) diameters, px.

    Returns
    -------
    forces : (N, 2) in units eps/px.
    energy : total potential energy, units eps.
    overlap : (M,) relative overlaps 1 - r/sigma_ij of the pairs in contact.
    """
    n = len(pos)
    conv = box.convected(pos)
    pairs = nlist.update(box, conv)
    forces = np.zeros((n, 2))
    if len(pairs) == 0:
        return forces, 0.0, np.empty(0)
    i, j = pairs[:, 0], pairs[:, 1]
    rij = box.separation(conv[i], conv[j])
    r = np.sqrt(np.einsum("ij,ij->i", rij, rij))
    sig = 0.5 * (diam[i] + diam[j])
    touch = r < sig
    if not np.any(touch):
        return forces, 0.0, np.empty(0)
    i, j, rij, r, sig = i[touch], j[touch], rij[touch], r[touch], sig[touch]
    ov = 1.0 - r / sig
    # force on i: +eps/sigma (1 - r/sigma) * rij/r (repulsive)
    mag = eps * ov / sig / np.maximum(r, 1e-12)
    f = rij * mag[:, None]
    for k in range(2):
        forces[:, k] = (np.bincount(i, weights=f[:, k], minlength=n)
                        - np.bincount(j, weights=f[:, k], minlength=n))
    energy = 0.5 * eps * float(np.sum(ov * ov))
    return forces, energy, ov


def fire_relax(pos: np.ndarray, diam: np.ndarray, box: Box, max_steps: int = 4000,
               overlap_tol: float = 0.02) -> np.ndarray:
    """Remove overlaps by FIRE energy minimisation (Bitzek et al., PRL 97, 170201, 2006).

    Unit masses, energies in eps, lengths in px, so a contact's period is ~2 pi sigma; the
    time step is bounded by 0.3 mean diameters. Stops once the largest relative overlap
    1 - r/sigma_ij is below ``overlap_tol`` or after ``max_steps``. Returns new positions.
    """
    pos = pos.copy()
    nlist = NeighbourList(cutoff=float(diam.max()), skin=0.3 * float(diam.min()),
                          max_strain=abs(box.strain))
    dm = float(np.mean(diam))
    dt_max, dt = 0.3 * dm, 0.05 * dm
    alpha0, alpha, n_pos = 0.1, 0.1, 0
    v = np.zeros_like(pos)
    f, _, ov = pair_forces(pos, diam, box, nlist)
    for _ in range(max_steps):
        if len(ov) == 0 or ov.max() < overlap_tol:
            break
        if float(np.sum(f * v)) > 0:
            fn, vn = np.linalg.norm(f), np.linalg.norm(v)
            v = (1 - alpha) * v + alpha * vn * f / fn
            n_pos += 1
            if n_pos > 5:
                dt = min(dt * 1.1, dt_max)
                alpha *= 0.99
        else:
            n_pos, alpha = 0, alpha0
            dt *= 0.5
            v[:] = 0.0
        v += dt * f
        pos += dt * v
        f, _, ov = pair_forces(pos, diam, box, nlist)
    return pos


def random_packing(n: int, diam: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray:
    """Random positions (N, 2) in the box, then overlaps removed by FIRE."""
    pos = rng.uniform(0.0, 1.0, size=(n, 2)) * np.array([box.lx, box.ly])
    return fire_relax(pos, diam, box)


class Integrator:
    """Brownian (``tau_v == 0``) or underdamped Langevin/BAOAB (``tau_v > 0``) stepping.

    Parameters
    ----------
    diam : (N,) px.
    box : :class:`Box` (its strain is updated by :meth:`step`).
    diffusion : D0, px^2/frame.
    kT : thermal energy in units of eps.
    tau_v : momentum relaxation time m/zeta in frames (0 = overdamped).
    strain_fn : callable t -> (gamma, gamma_dot), t in frames.
    rng : random generator.
    """

    def __init__(self, diam, box, diffusion, kT, tau_v, strain_fn, rng, max_strain=0.0):
        self.diam = diam
        self.box = box
        self.D0 = float(diffusion)
        self.kT = float(kT)
        self.zeta = self.kT / self.D0
        self.tau_v = float(tau_v)
        self.mass = self.zeta * self.tau_v
        self.strain_fn = strain_fn
        self.rng = rng
        self.nlist = NeighbourList(cutoff=float(diam.max()), skin=0.4 * float(diam.min()),
                                   max_strain=max_strain)
        self._f = None

    def forces(self, pos, t):
        self.box.strain = self.strain_fn(t)[0]
        f, e, ov = pair_forces(pos, self.diam, self.box, self.nlist)
        self.last_overlap = ov
        return f

    def flow(self, pos, t):
        """Solvent velocity u(y), px/frame, (N, 2)."""
        gdot = self.strain_fn(t)[1]
        u = np.zeros_like(pos)
        u[:, 0] = gdot * (pos[:, 1] - self.box.yc)
        return u

    def step(self, pos, vel, t, dt, kick=None):
        """Advance (pos, vel) from time t to t + dt (frames); returns new arrays.

        ``kick`` (N, 2), px, is an imposed displacement added during this step (used for
        planted events).
        """
        n = len(pos)
        if self.tau_v == 0.0:
            f = self.forces(pos, t)
            u = self.flow(pos, t + 0.5 * dt)
            noise = self.rng.standard_normal((n, 2)) * np.sqrt(2.0 * self.D0 * dt)
            new = pos + dt * (f / self.zeta + u) + noise
            if kick is not None:
                new += kick
            return new, None
        # BAOAB
        if self._f is None:
            self._f = self.forces(pos, t)
        m = self.mass
        v = vel + 0.5 * dt * self._f / m
        x = pos + 0.5 * dt * v
        u = self.flow(x, t + 0.5 * dt)
        c1 = np.exp(-dt / self.tau_v)
        v = u + c1 * (v - u) + np.sqrt((1.0 - c1 * c1) * self.kT / m) * self.rng.standard_normal((n, 2))
        x = x + 0.5 * dt * v
        if kick is not None:
            x = x + kick
        self._f = self.forces(x, t + dt)
        v = v + 0.5 * dt * self._f / m
        return x, v
