"""Microscopic simulators for partial evolution: one interface, two implementations.

A microscopic simulator advances a configuration (:class:`MicroState`, px and frames) by a
number of frames. Two properties make partial evolution (:mod:`.partial`) testable:

- **frozen particles**: ``advance(..., frozen=mask)`` holds the masked particles at their
  given state for the whole call (the halo around a patch), their interactions with the
  others included;
- **noise keyed by identity**: every random number is a function of ``(key, micro step,
  particle identity)`` (per-particle channels) or ``(key, micro step, unordered pair of
  identities)`` (pair channels), never of the order or the number of particles simulated
  alongside. A particle of a patch thus receives the same noise as in the whole system, so
  one micro step of an interior particle in a patch equals its step in the whole system.
  The micro-step counter starts at 0 in every ``advance`` call: successive calls of one
  trajectory need distinct keys (:func:`derive_key`).

The keyed numbers come from a counter-based hash (:func:`keyed_normals`): the SplitMix64
finaliser (Steele, Lea & Flood 2014) applied word by word to the counter, then the
Box-Muller transform of the hash's two 32-bit halves. Vectorised over all counters, no
state, no Python loop per particle or pair. Its normals are exact to 32-bit uniform
resolution (tails beyond 6.66 standard deviations are cut, probability 3e-11).

Implementations:

- :class:`SoftDiskSimulator`: the truth of :mod:`colloidcg.synthetic` — overdamped
  Brownian harmonic soft disks (Ermak & McCammon 1978, Euler-Maruyama), the forces of
  :func:`colloidcg.synthetic.dynamics.pair_forces`, 2D.
- :class:`SoftSphereSimulator`: the same dynamics for harmonic soft spheres, 3D.
- :class:`ModelSimulator`: a learned :class:`~colloidcg.core.model.MetriplecticModel`
  stepped by its integrator with local steps (:func:`~colloidcg.core.integrators.integrator_for`
  with ``local=True``: exact-OU for frame-averaged models, else Euler-Maruyama; the
  pair-splitting step that rollouts of momentum-conserving models use sweeps pairs in
  sequence, so a particle's step there depends on chains of pairs and no finite halo makes
  a patch step exact), its normal numbers handed in through the integrators' ``numbers``
  argument.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..errors import ParameterError

__all__ = ["MicroState", "MicroSimulator", "SoftDiskSimulator", "SoftSphereSimulator", "ModelSimulator", "keyed_normals",
           "derive_key", "check_state"]


class MicroState(NamedTuple):
    """One configuration, px and frames.

    pos : (N, d) float64 positions, px: wrapped into ``box`` for a periodic system; for an
        open system (``box`` None, a patch with its halo) any coordinates.
    size : (N,) per-particle diameters (soft disks: px; the learned model: the unit of its
        tracks' size column), or None.
    box : (d,) float64 periodic box lengths, px, or None for an open system.
    ids : (N,) int64 particle identities, unique; the keyed noise follows them.
    vel : (N, d) velocities px/frame (the learned model: frame averages, displacement over
        the last frame), or None (overdamped; the model then starts from rest).
    S : (N, n_S) the learned model's entropic variables, or None (the model fills them in
        from its structural encoder).
    """

    pos: np.ndarray
    size: np.ndarray | None
    box: np.ndarray | None
    ids: np.ndarray
    vel: np.ndarray | None
    S: np.ndarray | None


@runtime_checkable
class MicroSimulator(Protocol):
    """What partial evolution needs of a microscopic simulator.

    interaction_range : px; particles farther apart than this do not interact directly.
        One micro step of a particle depends on particles within 2 x this range at most
        (the learned model: a neighbour's density and S depend on its own neighbours).
    """

    interaction_range: float

    def prepare(self, state: MicroState) -> MicroState:
        """The state with whatever ``advance`` would otherwise fill in computed for the
        whole (periodic) system (the learned model: S from the encoder)."""
        ...

    def advance(self, state: MicroState, steps: int, *, frozen: np.ndarray | None, key: int) -> MicroState:
        """``state`` after ``steps`` frames; particles with ``frozen[i]`` keep their state.
        Random numbers are keyed by (key, micro step, particle or pair identity)."""
        ...


# ----------------------------------------------------------------------------- keyed noise
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)

#: domains of the counters, so pair, particle and initial-velocity numbers never collide
PAIR, PARTICLE, INITIAL = 1, 2, 3


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of uint64 ``x`` (wrapping arithmetic)."""
    x = x + _GOLD
    x = (x ^ (x >> np.uint64(30))) * _C1
    x = (x ^ (x >> np.uint64(27))) * _C2
    return x ^ (x >> np.uint64(31))


def _hash(words: list) -> np.ndarray:
    """uint64 hash of the counters given as broadcastable integer arrays (int64 or uint64)."""
    with np.errstate(over="ignore"):
        h = np.zeros(np.broadcast_shapes(*[np.shape(w) for w in words]), np.uint64)
        for w in words:
            h = _mix(h ^ np.asarray(w).astype(np.uint64))
    return h


def keyed_normals(key: int, step: int, domain: int, a: np.ndarray, b: np.ndarray | None,
                  channels: int) -> np.ndarray:
    """Standard normal numbers, a pure function of their counter.

    key, step, domain : ints; a : (M,) int64 identities; b : (M,) int64 second identities
    (pairs: pass the smaller identity as ``a``) or None; channels : numbers per row.
    Returns (M, channels) float64.
    """
    a = np.asarray(a, np.int64)[:, None]
    words = [np.int64(key), np.int64(step), np.int64(domain), a]
    if b is not None:
        words.append(np.asarray(b, np.int64)[:, None])
    words.append(np.arange(channels, dtype=np.int64)[None, :])
    h = _hash(words)
    hi = (h >> np.uint64(32)).astype(np.float64)
    lo = (h & np.uint64(0xFFFFFFFF)).astype(np.float64)
    u1 = (hi + 1.0) * 2.0 ** -32           # (0, 1]
    u2 = lo * 2.0 ** -32                   # [0, 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def derive_key(*words: int) -> int:
    """A 63-bit key from integers (e.g. seed, snapshot, patch), for :meth:`advance`."""
    h = _hash([np.int64(int(w)) for w in words])
    return int(h >> np.uint64(1))


# ----------------------------------------------------------------------------- checks
def check_state(state: MicroState, name: str = "state") -> int:
    """Refuse a malformed :class:`MicroState` (ParameterError); returns its dimension d."""
    pos = np.asarray(state.pos)
    if pos.ndim != 2 or pos.shape[1] not in (2, 3):
        raise ParameterError(f"{name}.pos: expected (N, 2) or (N, 3) px, got shape {pos.shape}")
    n, d = pos.shape
    if not np.all(np.isfinite(pos)):
        raise ParameterError(f"{name}.pos: positions must be finite")
    ids = np.asarray(state.ids)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise ParameterError(f"{name}.ids: expected ({n},) integer particle identities, got {ids.dtype} {ids.shape}")
    if len(np.unique(ids)) != n:
        raise ParameterError(f"{name}.ids: particle identities must be unique (the keyed noise follows them)")
    if state.box is not None:
        box = np.asarray(state.box, float)
        if box.shape != (d,) or not np.all(box > 0):
            raise ParameterError(f"{name}.box: expected ({d},) positive px or None, got {state.box!r}")
    if state.size is not None and np.shape(state.size) != (n,):
        raise ParameterError(f"{name}.size: expected ({n},), got {np.shape(state.size)}")
    if state.vel is not None and np.shape(state.vel) != (n, d):
        raise ParameterError(f"{name}.vel: expected ({n}, {d}) px/frame, got {np.shape(state.vel)}")
    if state.S is not None and (np.ndim(state.S) != 2 or np.shape(state.S)[0] != n):
        raise ParameterError(f"{name}.S: expected ({n}, n_S), got {np.shape(state.S)}")
    return d


def _frozen_mask(frozen, n: int) -> np.ndarray:
    if frozen is None:
        return np.zeros(n, bool)
    f = np.asarray(frozen)
    if f.shape != (n,) or f.dtype != bool:
        raise ParameterError(f"frozen: expected a ({n},) bool mask or None, got {f.dtype} {f.shape}")
    return f


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ParameterError(f"steps: expected an integer >= 0 frames, got {steps!r}")
    return int(steps)


# ----------------------------------------------------------------------------- soft disks
class SoftDiskSimulator:
    """Overdamped Brownian harmonic soft disks, as :mod:`colloidcg.synthetic` simulates them.

    dx = F / zeta dt + sqrt(2 D0 dt) xi per micro step dt = 1 / substeps frames,
    zeta = kT / D0, F the harmonic soft-disk forces (eps = 1) of
    :func:`colloidcg.synthetic.dynamics.pair_forces`, xi keyed by (key, micro step,
    particle identity). 2D only, no shear, no inertia.

    diffusion : D0, px^2/frame. kT : thermal energy in units of eps (synthetic's
    ``thermal_ratio``). substeps : micro steps per frame (None: synthetic's rule,
    max(4, ceil(18 D0 / (kT d_min^2))) from the diameters of the first state advanced).
    diameter : px, used when a state has no sizes (None: states must carry sizes).
    interaction_range : px, the largest diameter the simulator will meet (pairs interact
    below the mean of their diameters); default ``diameter``; with per-particle sizes,
    pass the largest.
    """

    def __init__(self, *, diffusion: float, kT: float, substeps: int | None = None,
                 diameter: float | None = None, interaction_range: float | None = None):
        for nm, val in (("diffusion", diffusion), ("kT", kT)):
            if not (np.isfinite(val) and val > 0):
                raise ParameterError(f"{nm}: expected a positive number, got {val!r}")
        if substeps is not None and (int(substeps) != substeps or substeps < 1):
            raise ParameterError(f"substeps: expected an integer >= 1, got {substeps!r}")
        if diameter is not None and not diameter > 0:
            raise ParameterError(f"diameter: expected a positive px diameter, got {diameter!r}")
        rng = interaction_range if interaction_range is not None else diameter
        if rng is None or not rng > 0:
            raise ParameterError("interaction_range: give the largest particle diameter, px "
                                 "(or diameter for monodisperse disks)")
        self.D0 = float(diffusion)
        self.kT = float(kT)
        self.zeta = self.kT / self.D0
        self.substeps = None if substeps is None else int(substeps)
        self.diameter = None if diameter is None else float(diameter)
        self.interaction_range = float(rng)

    def micro_steps(self, diam: np.ndarray) -> int:
        """Micro steps per frame (synthetic's stability rule unless given)."""
        if self.substeps is not None:
            return self.substeps
        lam = self.D0 / (self.kT * float(np.min(diam)) ** 2)
        return min(max(4, int(np.ceil(18.0 * lam))), 2000)

    def _diameters(self, state: MicroState) -> np.ndarray:
        if state.size is not None:
            diam = np.asarray(state.size, float)
        elif self.diameter is not None:
            diam = np.full(len(state.pos), self.diameter)
        else:
            raise ParameterError("state.size: soft disks need per-particle diameters (or SoftDiskSimulator(diameter=...))")
        if len(diam) and diam.max() > self.interaction_range * (1 + 1e-12):
            raise ParameterError(f"state.size: a diameter {diam.max():g} px exceeds the interaction_range "
                                 f"{self.interaction_range:g} px")
        return diam

    def prepare(self, state: MicroState) -> MicroState:
        """Nothing to fill in for soft disks: the state itself (checked)."""
        check_state(state)
        return state

    #: the dimension this simulator integrates, and what a state of another one is told
    DIM, WRONG_DIM = 2, "soft disks are 2D, got {d}D positions"

    def _force_field(self, state: MicroState, pos: np.ndarray, diam: np.ndarray):
        """(positions to integrate (N, d) px, forces: positions -> (N, d) eps/px, offset px to
        subtract afterwards). Soft disks use synthetic's force routine, whose box is always
        periodic: an open system goes into a periodic box wide enough that no pair meets
        across its edge."""
        from ..synthetic.dynamics import Box, NeighbourList, pair_forces

        if state.box is not None:
            box = Box(float(state.box[0]), float(state.box[1]), yc=0.0)
            offset = np.zeros(2)
        else:
            lo, hi = pos.min(0), pos.max(0)
            pad = 4.0 * self.interaction_range + 0.5 * (hi - lo) + 1.0
            side = (hi - lo) + 2.0 * pad
            box = Box(float(side[0]), float(side[1]), yc=0.0)
            offset = pad - lo
            pos = pos + offset
        nlist = NeighbourList(cutoff=float(diam.max()), skin=0.4 * float(diam.min()))
        return pos, (lambda p: pair_forces(p, diam, box, nlist)[0]), offset

    def advance(self, state: MicroState, steps: int, *, frozen: np.ndarray | None = None,
                key: int = 0) -> MicroState:
        """Advance ``steps`` frames (``substeps`` Euler-Maruyama micro steps each); frozen
        particles stay put. Returns the new state (vel None: overdamped)."""
        d = check_state(state)
        if d != self.DIM:
            raise ParameterError("state.pos: " + self.WRONG_DIM.format(d=d))
        steps = _check_steps(steps)
        n = len(state.pos)
        fz = _frozen_mask(frozen, n)
        diam = self._diameters(state)
        pos = np.array(state.pos, float)
        if n == 0 or steps == 0:
            return state._replace(pos=pos, vel=None)
        pos, forces, offset = self._force_field(state, pos, diam)
        nsub = self.micro_steps(diam)
        dt = 1.0 / nsub
        amp = np.sqrt(2.0 * self.D0 * dt)
        move = ~fz
        mids = np.asarray(state.ids, np.int64)[move]
        k = 0
        for _ in range(steps):
            for _ in range(nsub):
                f = forces(pos)
                xi = keyed_normals(key, k, PARTICLE, mids, None, self.DIM)
                pos[move] += dt * f[move] / self.zeta + amp * xi
                k += 1
        pos = pos - offset
        if state.box is not None:
            pos = np.mod(pos, np.asarray(state.box, float))
        pos[fz] = np.asarray(state.pos, float)[fz]       # exactly where they were
        return state._replace(pos=pos, vel=None)


class SoftSphereSimulator(SoftDiskSimulator):
    """Overdamped Brownian harmonic soft spheres in 3D: :class:`SoftDiskSimulator`'s
    dynamics (same parameters, same keyed noise, same Euler-Maruyama step) with the pair
    potential U = eps (1 - r / sigma)^2 / 2 for r < sigma = (d_i + d_j) / 2, eps = 1, in a
    periodic box or open (box None).

    :mod:`colloidcg.synthetic`'s force routine is written for 2D (its box also shears);
    this one finds pairs with :mod:`colloidcg.neighbours` (cKDTree), in any dimension.
    """

    DIM, WRONG_DIM = 3, "soft spheres are 3D, got {d}D positions (2D: SoftDiskSimulator)"

    def _forces(self, pos: np.ndarray, diam: np.ndarray, box) -> np.ndarray:
        """(N, d) forces, eps/px, on ``pos`` (N, d) px in ``box`` (d,) px or None (open)."""
        from ..neighbours import Tree

        tree = Tree(pos, box)
        p = tree.pairs(float(diam.max()), sort=False)
        force = np.zeros_like(pos)
        if len(p) == 0:
            return force
        i, j = p[:, 0], p[:, 1]
        dv = tree.separations(i, j)                      # r_j - r_i, minimum image
        r = np.sqrt(np.square(dv).sum(axis=1))
        sig = 0.5 * (diam[i] + diam[j])
        on = r < sig
        i, j, dv, r, sig = i[on], j[on], dv[on], r[on], sig[on]
        fj = ((1.0 - r / sig) / sig / np.maximum(r, 1e-12))[:, None] * dv   # on j, away from i
        for k in range(pos.shape[1]):
            force[:, k] = (np.bincount(j, weights=fj[:, k], minlength=len(pos))
                           - np.bincount(i, weights=fj[:, k], minlength=len(pos)))
        return force

    def _force_field(self, state: MicroState, pos: np.ndarray, diam: np.ndarray):
        """(positions, forces: positions -> (N, 3) eps/px, offset 0): pairs found in the
        periodic box, or open (box None)."""
        box = None if state.box is None else np.asarray(state.box, float)
        return pos, (lambda p: self._forces(p, diam, box)), 0.0


# ----------------------------------------------------------------------------- learned model
class ModelSimulator:
    """A learned :class:`~colloidcg.core.model.MetriplecticModel` as microscopic simulator.

    model : the model (its dtype and device set the computation's; use float64 for exact
        comparisons). model_config : the model directory's config dict; its
        ``calibration`` (um_per_px, fps; default 1) converts px and frames into the model's
        units. substeps : integration steps per frame. device : where to run.

    Each :meth:`advance` starts the model's integrator afresh from the state (the exact-OU
    integrator draws the instantaneous velocity from its conditional law given the frame
    average, with numbers keyed by (key, particle identity)); pair noise is keyed by
    (key, micro step, unordered pair of identities), substrate noise by (key, micro step,
    identity). interaction_range = the model's cutoff h in px; one micro step of a particle
    depends on particles within 2 h (neighbours' densities and S).
    """

    def __init__(self, model, model_config: dict | None = None, *, substeps: int = 1, device="cpu"):
        import torch

        if int(substeps) != substeps or substeps < 1:
            raise ParameterError(f"substeps: expected an integer >= 1, got {substeps!r}")
        cal = (model_config or {}).get("calibration", {}) or {}
        self.um = float(cal.get("um_per_px") or 1.0)
        self.fps = float(cal.get("fps") or 1.0)
        self.model = model.to(device)
        self.device = torch.device(device)
        self.dtype = next(model.parameters()).dtype
        self.substeps = int(substeps)
        self.interaction_range = float(model.cutoff) / self.um

    # -- conversions
    def _t(self, a):
        import torch
        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def _size(self, state: MicroState):
        if self.model.size_scale > 0:
            if state.size is None:
                raise ParameterError("state.size: the model was trained with per-particle sizes; pass them")
            return self._t(state.size)
        return None

    def _S(self, r, box, state: MicroState):
        if state.S is not None:
            return self._t(state.S)
        from ..core.graph import find_pairs
        return self.model.encode(r, find_pairs(r, self.model.cutoff, box), box)

    def prepare(self, state: MicroState) -> MicroState:
        """The state with S from the model's structural encoder where it has none (in the
        state's own box)."""
        import torch

        d = check_state(state)
        if d != self.model.dim:
            raise ParameterError(f"state.pos: {d}D positions but the model is {self.model.dim}D")
        if state.S is not None:
            return state
        box = None if state.box is None else self._t(np.asarray(state.box, float) * self.um)
        r = self._t(np.asarray(state.pos, float) * self.um)
        if box is not None:
            r = torch.remainder(r, box)
        with torch.no_grad():
            S = self._S(r, box, state)
        return state._replace(S=S.cpu().numpy().astype(np.float64))

    def _interacting(self, r, cand, box, size):
        """The candidate pairs closer than their range, by the test of
        :meth:`MetriplecticModel.geometry` (so that it keeps every pair handed to it and the
        keyed numbers stay aligned with the model's pairs)."""
        import torch
        from ..core.driver import minimum_image

        m = self.model
        i, j = cand[:, 0], cand[:, 1]
        dist = torch.linalg.vector_norm(minimum_image(r[i] - r[j], box), dim=-1).clamp_min(1e-12 * m.cutoff)
        a = m.reduced_size(size, r)
        h = m.cutoff if a is None else m.cutoff * 0.5 * (a[i] + a[j])
        return cand[dist < h]

    def _pair_numbers(self, key: int, step: int, pairs, ids: np.ndarray, d: int):
        """(P, d + 2) numbers of the pairs, oriented from the smaller identity to the larger:
        the model's pair (i, j) gives i the increment X and j -X, with the shear channels
        (the first d) and the conduction channel (the last) odd under the exchange of i and
        j and the central channel (e_ij xi) even, so those are negated where i has the
        larger identity."""
        p = pairs.cpu().numpy()
        a, b = ids[p[:, 0]], ids[p[:, 1]]
        z = keyed_normals(key, step, PAIR, np.minimum(a, b), np.maximum(a, b), d + 2)
        odd = np.ones(d + 2)
        odd[:d] = odd[d + 1] = -1.0
        z = np.where((a > b)[:, None], z * odd, z)
        return self._t(z)

    def _particle_numbers(self, key: int, step: int, domain: int, ids: np.ndarray, sets: int, d: int):
        if sets == 0:
            return self._t(np.zeros((0, len(ids), d)))
        z = keyed_normals(key, step, domain, ids, None, sets * d)      # (N, sets * d)
        return self._t(z.reshape(len(ids), sets, d).transpose(1, 0, 2))

    def advance(self, state: MicroState, steps: int, *, frozen: np.ndarray | None = None,
                key: int = 0) -> MicroState:
        """Advance ``steps`` frames (``substeps`` integrator steps each) with keyed noise;
        frozen particles keep their position, velocity and S (their interactions count).
        Returns positions (wrapped for a periodic box), velocities (displacement over the
        last frame, px/frame) and S."""
        import torch

        from ..core.graph import NeighbourList
        from ..core.integrators import ExactOU, integrator_for
        from ..core.types import Carry

        d = check_state(state)
        m = self.model
        if d != m.dim:
            raise ParameterError(f"state.pos: {d}D positions but the model is {m.dim}D")
        steps = _check_steps(steps)
        n = len(state.pos)
        fz = _frozen_mask(frozen, n)
        ids = np.asarray(state.ids, np.int64)
        um, fps = self.um, self.fps
        box = None if state.box is None else self._t(np.asarray(state.box, float) * um)
        r0 = self._t(np.asarray(state.pos, float) * um)
        if box is not None:
            r0 = torch.remainder(r0, box)
        v0 = self._t(np.zeros((n, d)) if state.vel is None else np.asarray(state.vel, float) * um * fps)
        size = self._size(state)
        dt = 1.0 / fps / self.substeps
        integ = integrator_for(m, local=True)
        exact = isinstance(integ, ExactOU)
        sets = 2 if exact else (1 if m.substrate else 0)
        fzt = torch.as_tensor(fz, device=self.device)
        with torch.no_grad():
            S0 = self._S(r0, box, state)
            if n == 0 or steps == 0:
                return state._replace(pos=np.asarray(state.pos, float), S=S0.cpu().numpy().astype(np.float64))
            nl = NeighbourList(m.cutoff, 0.3 * m.cutoff, box)
            pairs = self._interacting(r0, nl.update(r0), box, size)
            init_numbers = (self._t(np.zeros((0, d + 2))), self._particle_numbers(key, 0, INITIAL, ids, 1, d))
            cur = integ.init(r0, v0, S0, pairs, box, size, dt * self.substeps, None, True, init_numbers)
            hold = (cur.r.clone(), cur.u.clone(), cur.S.clone(), cur.v_avg.clone())
            unwrapped = r0.clone()
            last = unwrapped
            k = 0
            for _ in range(steps):
                last = unwrapped.clone()
                for _ in range(self.substeps):
                    pairs = self._interacting(cur.r, nl.update(cur.r), box, size)
                    numbers = (self._pair_numbers(key, k, pairs, ids, d),
                               self._particle_numbers(key, k, PARTICLE, ids, sets, d))
                    cur = integ.step(cur, pairs, box, size, dt, None, True, numbers)
                    k += 1
                    if fz.any():
                        r, u, S, va = cur.r.clone(), cur.u.clone(), cur.S.clone(), cur.v_avg.clone()
                        r[fzt], u[fzt], S[fzt], va[fzt] = hold[0][fzt], hold[1][fzt], hold[2][fzt], hold[3][fzt]
                        dr = cur.dr.clone()
                        dr[fzt] = 0.0
                        cur = Carry(r, u, S, va, cur.force, dr)
                    unwrapped = unwrapped + cur.dr
            vel = (unwrapped - last) / (um / fps)
            pos = unwrapped / um
            out_pos = pos.cpu().numpy().astype(np.float64)
            if state.box is not None:
                out_pos = np.mod(out_pos, np.asarray(state.box, float))
            else:
                out_pos[fz] = np.asarray(state.pos, float)[fz]
            out_vel = vel.cpu().numpy().astype(np.float64)
            if fz.any():
                out_vel[fz] = np.asarray(v0.cpu().numpy() / (um * fps))[fz]
            return MicroState(out_pos, state.size, state.box, ids, out_vel, cur.S.cpu().numpy().astype(np.float64))
