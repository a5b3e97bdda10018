"""The rollout loop, torch only: it runs in colloidcg and, copied verbatim, in every exported
bundle (``rollout.py`` imports it), so both produce the same trajectory for the same seed.

Nothing here imports colloidcg or SciPy. Pieces:

- :func:`minimum_image`, :func:`wrap`: periodic-box geometry (the model compiles them),
  rectangular, or sheared (Lees-Edwards) with an optional ``shear`` state;
- :class:`LeesEdwards`: steady simple shear of the periodic box (sliding-brick boundaries,
  Lees & Edwards 1972): flow along x (axis 0), gradient along y (axis 1); the image across
  +y is shifted along x by the offset delta(t) = delta_0 + rate L_y t (mod L_x) and moves
  with the velocity jump rate L_y along x. The functions here take its state at one time,
  ``shear`` = tensor (offset delta, jump rate L_y) (:meth:`LeesEdwards.state`), or None
  for the rectangular box, whose path is unchanged op for op;
- :func:`search_pairs`: every pair closer than a radius, O(N^2) in blocks of rows (the
  exported model's neighbour search; colloidcg itself searches with a k-d tree,
  :func:`colloidcg.core.graph.find_pairs`). Both lists are sorted by i then j; they may
  differ in candidate pairs at exactly the search radius (``<=`` in float64 there, ``<`` in
  the model's dtype here), which never matters: the model keeps only pairs closer than
  their range, well inside the radius with its skin;
- :class:`VerletList`: a neighbour list with a skin over any such search (Verlet 1967);
- :func:`run`: the loop over an integrator's ``step`` (:mod:`colloidcg.core.integrators`),
  with substeps, recording, and boundary particles whose state is prescribed.
"""

from __future__ import annotations

import contextlib
from typing import Callable, List, Optional

import torch
from torch import Tensor


def _image_step(box: Tensor, shear: Tensor) -> Tensor:
    """(d,) the displacement of the image across +y: (offset, L_y, 0)."""
    sh = shear.to(box.dtype)
    return torch.cat([sh[0:1], box[1:2], torch.zeros_like(box[2:])])


def _jump_vector(box: Tensor, shear: Tensor) -> Tensor:
    """(d,) the velocity of the image across +y: (rate L_y, 0, 0)."""
    sh = shear.to(box.dtype)
    return torch.cat([sh[1:2], torch.zeros_like(box[1:])])


def minimum_image(rij: Tensor, box: Optional[Tensor], shear: Optional[Tensor] = None) -> Tensor:
    """Minimum-image separation vectors of raw separations ``rij`` (..., d) in a periodic
    box (d,), or ``rij`` unchanged for open boundaries (box None).

    ``shear`` (2,): the Lees-Edwards state (offset delta, velocity jump) (module docstring):
    the y layer is chosen first, n = round(y_ij / L_y), the image across it shifted by
    (n delta, n L_y), then x (and z) are wrapped rectangularly. This is the nearest image
    for every pair closer than half the box (the only ones a search within a cutoff below
    L / 2 can return)."""
    if box is None:
        return rij
    if shear is not None:
        rij = rij - torch.round(rij[..., 1:2] / box[1]) * _image_step(box, shear)
    return rij - box * torch.round(rij / box)


def shear_velocity(rij: Tensor, box: Optional[Tensor], shear: Optional[Tensor]) -> Tensor:
    """(..., d) the velocity of the image of j that :func:`minimum_image` picks for the raw
    separation ``rij`` = r_i - r_j, relative to j itself: round(y_ij / L_y) (rate L_y, 0, 0)
    (zeros without shear). The relative velocity of the pair is v_i - v_j - this."""
    if box is None or shear is None:
        return torch.zeros_like(rij)
    return torch.round(rij[..., 1:2] / box[1]) * _jump_vector(box, shear)


def image_count(r: Tensor, box: Tensor) -> Tensor:
    """(..., 1) how many boxes along y the positions ``r`` (..., d) lie above the primary
    one: (y - remainder(y, L_y)) / L_y, rounded (consistent with :func:`wrap`)."""
    y = r[..., 1:2]
    return torch.round((y - torch.remainder(y, box[1])) / box[1])


def wrap(r: Tensor, box: Optional[Tensor], shear: Optional[Tensor] = None) -> Tensor:
    """Positions wrapped into ``[0, L)`` for a periodic box (unchanged when ``box`` is None).

    With ``shear`` (Lees-Edwards state) a position n boxes above the primary one along y
    is taken back by n (delta, L_y) before x (and z) are wrapped: its velocity changes by
    -n (rate L_y, 0, 0) (:func:`wrap_velocity`)."""
    if box is None:
        return r
    if shear is not None:
        r = r - image_count(r, box) * _image_step(box, shear)
    return torch.remainder(r, box)


def wrap_velocity(v: Tensor, r: Tensor, box: Optional[Tensor], shear: Optional[Tensor]) -> Tensor:
    """Velocities (N, d) of particles at positions ``r`` (before wrapping) once
    :func:`wrap` has taken them into the primary box: v - n (rate L_y, 0, 0), n their
    :func:`image_count` (v unchanged without shear)."""
    if box is None or shear is None:
        return v
    return v - image_count(r, box) * _jump_vector(box, shear)


def advance_shear(shear: Optional[Tensor], dt: float) -> Optional[Tensor]:
    """The Lees-Edwards state ``dt`` later: the offset grows by the jump times dt."""
    if shear is None:
        return None
    return torch.cat([shear[0:1] + shear[1:2] * dt, shear[1:2]])


class LeesEdwards:
    """Steady simple shear of a periodic box (module docstring): flow along x, gradient
    along y, at ``rate`` (1/time); ``offset`` is the shift along x of the image across +y
    at time 0 (length; e.g. a LAMMPS box's xy tilt at the starting frame).

    :meth:`state` gives the (2,) tensor the geometry functions take at time t."""

    def __init__(self, rate: float, offset: float = 0.0):
        self.rate = float(rate)
        self.offset = float(offset)

    def state(self, t: float, box: Tensor) -> Tensor:
        """(offset delta(t) reduced into [-L_x/2, L_x/2), velocity jump rate L_y), box's dtype
        and device."""
        lx, ly = float(box[0]), float(box[1])
        jump = self.rate * ly
        off = self.offset + jump * t
        off = off - lx * float(round(off / lx))
        return torch.tensor([off, jump], dtype=box.dtype, device=box.device)

    def __repr__(self) -> str:
        return f"LeesEdwards(rate={self.rate!r}, offset={self.offset!r})"


def search_pairs(r: Tensor, radius: float, box: Optional[Tensor] = None, block: int = 1024,
                 shear: Optional[Tensor] = None) -> Tensor:
    """(P, 2) int64 pairs i < j with |r_ij| < radius (minimum image with a box, sheared
    with ``shear``), sorted by i then j: all pairs, ``block`` rows at a time (O(N^2) time,
    O(block N) memory)."""
    n = r.shape[0]
    out: List[Tensor] = []
    idx = torch.arange(n, device=r.device)
    for start in range(0, n, block):
        stop = min(n, start + block)
        rij = minimum_image(r[start:stop].unsqueeze(1) - r.unsqueeze(0), box, shear)
        d2 = (rij * rij).sum(-1)
        close = (d2 < radius * radius) & (idx[start:stop].unsqueeze(1) < idx.unsqueeze(0))
        ij = torch.nonzero(close)
        out.append(torch.stack([ij[:, 0] + start, ij[:, 1]], 1))
    if len(out) == 0:
        return torch.zeros(0, 2, dtype=torch.long, device=r.device)
    return torch.cat(out, 0)


class VerletList:
    """Neighbour list with a skin: pairs are searched within ``cutoff + skin`` and reused
    until some particle has moved more than ``skin / 2`` since the search, which
    guarantees that no pair closer than ``cutoff`` is missed. In a sheared box (``shear``
    given to :meth:`update`) a pair across the y boundary also moves by the change of the
    offset, so the list is rebuilt once 2 max|dr| + |d delta| exceeds the skin.

    ``search(r, radius, box) -> (P, 2)`` is the pair search (called with the shear state as
    a fourth argument in a sheared box). Attributes: ``pairs`` (the candidate pairs),
    ``n_builds`` (searches so far)."""

    def __init__(self, cutoff: float, skin: float, box: Optional[Tensor] = None,
                 search: Callable = search_pairs):
        if cutoff <= 0 or skin < 0:
            raise ValueError("cutoff must be positive and skin non-negative")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.box = box
        self.search = search
        self.pairs: Optional[Tensor] = None
        self._r_ref: Optional[Tensor] = None
        self._offset_ref: Optional[float] = None
        self.n_builds = 0

    def build(self, r: Tensor, shear: Optional[Tensor] = None) -> Tensor:
        if shear is None:
            self.pairs = self.search(r, self.cutoff + self.skin, self.box)
            self._offset_ref = None
        else:
            self.pairs = self.search(r, self.cutoff + self.skin, self.box, shear)
            self._offset_ref = float(shear[0])
        self._r_ref = r.detach().clone()
        self.n_builds += 1
        return self.pairs

    def update(self, r: Tensor, shear: Optional[Tensor] = None) -> Tensor:
        """Pairs valid for positions ``r`` (and the shear state ``shear``), rebuilding only
        when needed."""
        if self.pairs is None or self._r_ref is None or self._r_ref.shape != r.shape:
            return self.build(r, shear)
        if shear is None:
            if self._offset_ref is not None:
                return self.build(r, shear)
            disp = minimum_image(r.detach() - self._r_ref, self.box)
            if float(disp.square().sum(-1).max()) > (0.5 * self.skin) ** 2:
                return self.build(r)
            return self.pairs
        if self._offset_ref is None or self.box is None:
            return self.build(r, shear)
        disp = minimum_image(r.detach() - self._r_ref, self.box, shear)
        lx = float(self.box[0])
        d_off = float(shear[0]) - self._offset_ref
        d_off = abs(d_off - lx * round(d_off / lx))
        if 2.0 * float(disp.square().sum(-1).max()) ** 0.5 + d_off > self.skin:
            return self.build(r, shear)
        return self.pairs


def make_generator(seed: Optional[int], device) -> torch.Generator:
    """The rollout's one random generator, seeded (None: 0)."""
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g


@contextlib.contextmanager
def deterministic_on(device):
    """On CUDA, turn on torch's deterministic algorithms for the duration (restored after).

    CUDA's index_add_, which sums every pair's contribution onto its particles, adds with
    atomics in whatever order the threads arrive unless deterministic algorithms are on
    (then it sorts), so a seeded rollout would differ at the rounding level from run to
    run. warn_only: cuBLAS matrix products would otherwise demand CUBLAS_WORKSPACE_CONFIG.
    On the CPU nothing changes (its scatter-adds are ordered).
    """
    if torch.device(device).type != "cuda":
        yield
        return
    was = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)


@torch.no_grad()
def run(integrator, r: Tensor, v: Tensor, S: Tensor, steps: int, dt: float, *, neighbours: VerletList,
        size: Optional[Tensor] = None, box: Optional[Tensor] = None, seed: Optional[int] = 0,
        noise: bool = True, boundary: Optional[Tensor] = None, prescribed=None,
        record_every: int = 1, substeps: int = 1, lees_edwards: Optional[LeesEdwards] = None):
    """Advance (r, v, S) by ``steps`` recorded steps of length ``dt``.

    integrator : an object with ``init(r, v, S, pairs, box, size, dt, generator, noise)`` and
        ``step(carry, pairs, box, size, dt, generator, noise)`` returning a
        :class:`~colloidcg.core.types.Carry` (eager or compiled). The recorded velocity is
        each recorded step's displacement / dt, what finite differences of recorded
        positions give.
    r, v, S : (N, d), (N, d), (N, n_s) initial state (positions may be unwrapped).
    neighbours : a :class:`VerletList` for the model's cutoff.
    steps : recorded steps; each is ``substeps`` integration steps of dt / substeps.
    seed : seed of the one random generator (exact reproducibility). noise : False for the
        mean-field dynamics.
    boundary : (N,) bool, particles whose state is prescribed; ``prescribed(k)`` gives
        their (r, v, S) after recorded step k (k = 1..steps), None holds the initial state.
    record_every : keep every n-th recorded step.
    lees_edwards : steady shear of the periodic ``box`` (:class:`LeesEdwards`; its offset
        is that at the initial state, time 0). Positions and velocities are then those of
        the infinite sheared system (an unwrapped position n boxes above the primary one
        along y carries n times the velocity jump, as finite differences of unwrapped MD
        positions do); they are wrapped into the box with the offset of the time and the
        velocity jump, each step's pairs see the offset and jump of the step's start, and
        the recorded positions are unwrapped again. No boundary particles.

    Returns (r (T, N, d) unwrapped, v (T, N, d), S (T, N, n_s), generator) with T =
    steps // record_every + 1.
    """
    if steps < 0 or substeps < 1 or record_every < 1:
        raise ValueError("steps must be >= 0, substeps and record_every >= 1")
    if lees_edwards is not None:
        if box is None:
            raise ValueError("lees_edwards: a sheared box needs a periodic box")
        if boundary is not None:
            raise ValueError("lees_edwards: a sheared box has no boundary particles")
        return _run_sheared(integrator, r, v, S, steps, dt, neighbours, size, box, seed, noise,
                            record_every, substeps, lees_edwards)
    with deterministic_on(r.device):
        gen = make_generator(seed, r.device)
        h_dt = dt / substeps
        r0 = wrap(r, box)
        cur = integrator.init(r0, v.clone(), S.clone(), neighbours.update(r0), box, size, dt, gen, noise)
        unwrapped = r.clone()
        hold = (r.clone(), v.clone(), S.clone())
        rs, vs, Ss = [unwrapped.clone()], [v.clone()], [cur.S.clone()]
        for k in range(1, steps + 1):
            start = unwrapped.clone()
            for _ in range(substeps):
                cur = integrator.step(cur, neighbours.update(cur.r), box, size, h_dt, gen, noise)
                unwrapped = unwrapped + cur.dr
            v_rec = (unwrapped - start) / dt          # the frame average, as finite differences give
            if boundary is not None:
                ref_r, ref_v, ref_S = prescribed(k) if prescribed is not None else hold
                unwrapped[boundary] = ref_r[boundary]
                new_r, new_u, new_S, new_va = cur.r.clone(), cur.u.clone(), cur.S.clone(), cur.v_avg.clone()
                new_r[boundary] = wrap(ref_r[boundary], box)
                new_u[boundary] = ref_v[boundary]
                new_S[boundary] = ref_S[boundary]
                new_va[boundary] = ref_v[boundary]
                v_rec[boundary] = ref_v[boundary]
                dr = cur.dr.clone()
                dr[boundary] = 0.0              # prescribed moves are not the forces' work
                cur = type(cur)(new_r, new_u, new_S, new_va, cur.force, dr)
            if k % record_every == 0:
                rs.append(unwrapped.clone())
                vs.append(v_rec.clone())
                Ss.append(cur.S.clone())
    return torch.stack(rs), torch.stack(vs), torch.stack(Ss), gen


def _run_sheared(integrator, r: Tensor, v: Tensor, S: Tensor, steps: int, dt: float, neighbours: VerletList,
                 size: Optional[Tensor], box: Tensor, seed: Optional[int], noise: bool, record_every: int,
                 substeps: int, le: LeesEdwards):
    """:func:`run` in a Lees-Edwards box. The integrators take the shear state of each
    step's start as their last argument and wrap their new positions with the offset of the
    step's end. A particle's image count n along y (how many boxes above the primary one
    its unwrapped position is) is kept here: its unwrapped displacement over a step is
    dr + n (rate L_y) h along x, the streaming of its image."""
    with deterministic_on(r.device):
        gen = make_generator(seed, r.device)
        h_dt = dt / substeps
        sh = le.state(0.0, box)
        n_img = image_count(r, box)
        r0 = wrap(r, box, sh)
        v0 = wrap_velocity(v, r, box, sh)
        jump = _jump_vector(box, sh)
        cur = integrator.init(r0, v0, S.clone(), neighbours.update(r0, sh), box, size, dt, gen, noise, None, sh)
        n_img = n_img + torch.round((r0[:, 1:2] - cur.r[:, 1:2]) / box[1])   # a y at L_y that init wrapped again
        unwrapped = r.clone()
        rs, vs, Ss = [unwrapped.clone()], [v.clone()], [cur.S.clone()]
        n_sub = 0
        for k in range(1, steps + 1):
            start = unwrapped.clone()
            for _ in range(substeps):
                sh = le.state(n_sub * h_dt, box)
                before = cur.r
                cur = integrator.step(cur, neighbours.update(cur.r, sh), box, size, h_dt, gen, noise, None, sh)
                n_sub += 1
                unwrapped = unwrapped + cur.dr + n_img * jump * h_dt
                # images the step's wrap crossed along y
                n_img = n_img + torch.round((before[:, 1:2] + cur.dr[:, 1:2] - cur.r[:, 1:2]) / box[1])
            v_rec = (unwrapped - start) / dt
            if k % record_every == 0:
                rs.append(unwrapped.clone())
                vs.append(v_rec.clone())
                Ss.append(cur.S.clone())
    return torch.stack(rs), torch.stack(vs), torch.stack(Ss), gen
