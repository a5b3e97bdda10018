"""Stochastic rollouts of a :class:`~colloidcg.core.model.MetriplecticModel`.

Euler-Maruyama for (v, S) with the Ito drift included, positions advanced with the new
velocity (semi-implicit / symplectic Euler), neighbour pairs reused with a Verlet skin.
Random numbers come from one seeded ``torch.Generator``, so a rollout with the same seed,
model, initial state, dtype and device is reproduced exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .graph import NeighbourList, wrap
from .model import MetriplecticModel, State


@dataclass
class Rollout:
    """Recorded rollout. r: (T, N, d) unwrapped positions; v: (T, N, d); S: (T, N, n_s);
    dt: time between recorded frames."""

    r: torch.Tensor
    v: torch.Tensor
    S: torch.Tensor
    dt: float
    n_neighbour_builds: int


def make_generator(seed: int | None, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g


@torch.no_grad()
def rollout(model: MetriplecticModel, state: State, steps: int, dt: float, *,
            box: torch.Tensor | None = None, seed: int | None = 0, noise: bool = True,
            skin: float | None = None, boundary: torch.Tensor | None = None,
            prescribed=None, record_every: int = 1, substeps: int = 1) -> Rollout:
    """Advance ``state`` by ``steps`` recorded steps of length ``dt``.

    Parameters
    ----------
    model : the model (its dtype and device set the computation's).
    state : initial State (positions may be unwrapped; they are wrapped for a box).
    steps : number of recorded steps; each is ``substeps`` integration steps of dt/substeps.
    box : (d,) periodic box or None (open boundaries).
    seed : seed of the random generator (exact reproducibility).
    noise : False gives the deterministic (mean-field) dynamics.
    skin : Verlet skin (default 0.3 h).
    boundary : (N,) bool mask of particles whose state is prescribed.
    prescribed : callable ``k -> State`` giving the boundary particles' state after
        recorded step k (k = 1..steps), or None to hold them at their initial state.
    record_every : keep every n-th recorded step.
    """
    if steps < 0 or substeps < 1 or record_every < 1:
        raise ValueError("steps must be >= 0, substeps and record_every >= 1")
    h = model.config.cutoff
    nl = NeighbourList(h, 0.3 * h if skin is None else skin, box)
    gen = make_generator(seed, state.r.device)
    h_dt = dt / substeps
    cur = State(wrap(state.r, box), state.v.clone(), state.S.clone())
    unwrapped = state.r.clone()
    hold = state.clone() if boundary is not None else None
    rs, vs, Ss = [unwrapped.clone()], [cur.v.clone()], [cur.S.clone()]
    for k in range(1, steps + 1):
        for _ in range(substeps):
            pairs = nl.update(cur.r)
            new = model.step(cur, pairs, h_dt, generator=gen, box=box, noise=noise)
            unwrapped = unwrapped + new.v * h_dt
            cur = new
        if boundary is not None:
            ref = prescribed(k) if prescribed is not None else hold
            unwrapped[boundary] = ref.r[boundary]
            cur.r[boundary] = wrap(ref.r[boundary], box)
            cur.v[boundary] = ref.v[boundary]
            cur.S[boundary] = ref.S[boundary]
        if k % record_every == 0:
            rs.append(unwrapped.clone())
            vs.append(cur.v.clone())
            Ss.append(cur.S.clone())
    return Rollout(torch.stack(rs), torch.stack(vs), torch.stack(Ss), dt * record_every, nl.n_builds)
