"""The rollout loop, torch only: it runs in colloidcg and, copied verbatim, in every exported
bundle (``rollout.py`` imports it), so both produce the same trajectory for the same seed.

Nothing here imports colloidcg or SciPy. Pieces:

- :func:`minimum_image`, :func:`wrap`: periodic-box geometry (the model compiles them);
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


def minimum_image(rij: Tensor, box: Optional[Tensor]) -> Tensor:
    """Minimum-image separation vectors of raw separations ``rij`` (..., d) in a periodic
    box (d,), or ``rij`` unchanged for open boundaries (box None)."""
    if box is None:
        return rij
    return rij - box * torch.round(rij / box)


def wrap(r: Tensor, box: Optional[Tensor]) -> Tensor:
    """Positions wrapped into ``[0, L)`` for a periodic box (unchanged when ``box`` is None)."""
    if box is None:
        return r
    return torch.remainder(r, box)


def search_pairs(r: Tensor, radius: float, box: Optional[Tensor] = None, block: int = 1024) -> Tensor:
    """(P, 2) int64 pairs i < j with |r_ij| < radius (minimum image with a box), sorted by i
    then j: all pairs, ``block`` rows at a time (O(N^2) time, O(block N) memory)."""
    n = r.shape[0]
    out: List[Tensor] = []
    idx = torch.arange(n, device=r.device)
    for start in range(0, n, block):
        stop = min(n, start + block)
        rij = minimum_image(r[start:stop].unsqueeze(1) - r.unsqueeze(0), box)
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
    guarantees that no pair closer than ``cutoff`` is missed.

    ``search(r, radius, box) -> (P, 2)`` is the pair search. Attributes: ``pairs`` (the
    candidate pairs), ``n_builds`` (searches so far)."""

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
        self.n_builds = 0

    def build(self, r: Tensor) -> Tensor:
        self.pairs = self.search(r, self.cutoff + self.skin, self.box)
        self._r_ref = r.detach().clone()
        self.n_builds += 1
        return self.pairs

    def update(self, r: Tensor) -> Tensor:
        """Pairs valid for positions ``r``, rebuilding only when needed."""
        if self.pairs is None or self._r_ref is None or self._r_ref.shape != r.shape:
            return self.build(r)
        disp = minimum_image(r.detach() - self._r_ref, self.box)
        if float(disp.square().sum(-1).max()) > (0.5 * self.skin) ** 2:
            return self.build(r)
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
        record_every: int = 1, substeps: int = 1):
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

    Returns (r (T, N, d) unwrapped, v (T, N, d), S (T, N, n_s), generator) with T =
    steps // record_every + 1.
    """
    if steps < 0 or substeps < 1 or record_every < 1:
        raise ValueError("steps must be >= 0, substeps and record_every >= 1")
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
