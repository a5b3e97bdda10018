"""Seeded stochastic rollouts of a :class:`~colloidcg.core.model.MetriplecticModel`.

:func:`rollout` picks the model's integrator (:mod:`.integrators`: exact-OU steps for
frame-averaged models, which carry the instantaneous velocity as a hidden state drawn
from its conditional law given the initial frame-averaged velocity, and record
displacement / dt; Euler-Maruyama otherwise), a k-d-tree Verlet list (:mod:`.graph`), and
runs the torch-only loop :func:`.driver.run` that exported bundles run too. Random numbers
come from one seeded ``torch.Generator``, so a rollout with the same seed, model, initial
state, dtype and device is reproduced exactly (on CUDA with deterministic scatter-adds,
:func:`.driver.deterministic_on`).

For fast rollouts pass the copy :meth:`MetriplecticModel.tabulated` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import State
from .driver import deterministic_on, make_generator, run
from .graph import NeighbourList
from .integrators import integrator_for

__all__ = ["Rollout", "rollout", "deterministic_on", "make_generator"]


@dataclass
class Rollout:
    """Recorded rollout. r: (T, N, d) unwrapped positions; v: (T, N, d); S: (T, N, n_s);
    dt: time between recorded frames; n_neighbour_builds: neighbour searches done."""

    r: torch.Tensor
    v: torch.Tensor
    S: torch.Tensor
    dt: float
    n_neighbour_builds: int


@torch.no_grad()
def rollout(model, state: State, steps: int, dt: float, *, box: torch.Tensor | None = None,
            seed: int | None = 0, noise: bool = True, skin: float | None = None,
            boundary: torch.Tensor | None = None, prescribed=None, record_every: int = 1,
            substeps: int = 1, lees_edwards=None) -> Rollout:
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
    lees_edwards : steady shear of the box, a :class:`~.driver.LeesEdwards` with the offset
        at the initial state (positions unwrapped in the infinite sheared system,
        velocities with their streaming part, as finite differences of sheared MD give),
        or None.
    """
    if steps < 0 or substeps < 1 or record_every < 1:
        raise ValueError("steps must be >= 0, substeps and record_every >= 1")
    h = model.cutoff
    nl = NeighbourList(h, 0.3 * h if skin is None else skin, box)
    size = model._size(state)

    def presc(k):
        ref = prescribed(k)
        return ref.r, ref.v, ref.S
    r, v, S, _ = run(integrator_for(model), state.r, state.v, state.S, steps, dt, neighbours=nl, size=size,
                     box=box, seed=seed, noise=noise, boundary=boundary, prescribed=presc if prescribed is not None else None,
                     record_every=record_every, substeps=substeps, lees_edwards=lees_edwards)
    return Rollout(r, v, S, dt * record_every, nl.n_builds)
