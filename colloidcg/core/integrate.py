"""Stochastic rollouts of a :class:`~colloidcg.core.model.MetriplecticModel`.

Euler-Maruyama for (v, S) with the Ito drift included, positions advanced with the new
velocity (semi-implicit / symplectic Euler), neighbour pairs reused with a Verlet skin.
Frame-averaged models (``model.frame_averaged``) carry the instantaneous velocity as a
hidden state: it is drawn from its conditional law given the initial frame-averaged
velocity, advanced with the exact-OU step (:meth:`~.model.MetriplecticModel.step_ou`), and
the recorded velocities are displacement / dt, what finite differences of positions give.
Random numbers come from one seeded ``torch.Generator``, so a rollout with the same seed,
model, initial state, dtype and device is reproduced exactly (on CUDA with deterministic
scatter-adds, which :func:`rollout` turns on for its duration: :func:`deterministic_on`).
"""

from __future__ import annotations

import contextlib
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
    eos_table_error: float | None = None


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

    When the model's pair functions are tabulated (:func:`.tabulate.tabulate`, the fast
    mode) and it has one entropic variable, its equation of state is tabulated too for the
    duration of the rollout, over the initial state's range of (S, density) with margins
    (particles outside fall back to the network); the table's interpolation error is
    returned as ``eos_table_error``.
    """
    if steps < 0 or substeps < 1 or record_every < 1:
        raise ValueError("steps must be >= 0, substeps and record_every >= 1")
    with deterministic_on(state.r.device):
        h = model.config.cutoff
        nl = NeighbourList(h, 0.3 * h if skin is None else skin, box)
        gen = make_generator(seed, state.r.device)
        h_dt = dt / substeps
        fa = model.frame_averaged
        cur = State(wrap(state.r, box), state.v.clone(), state.S.clone(), state.size)
        v_avg = state.v.clone()     # last step-averaged velocity (what the pair friction sees)
        if fa:
            cur.v = model.latent_velocity(cur, nl.update(cur.r), dt, generator=gen, box=box, noise=noise)
        eos_err, own_eos = None, False
        if model.tables is not None and model.eos_table is None and model.config.n_s == 1:
            from .tabulate import tabulate_eos
            dens0 = model.compute(cur, nl.update(cur.r), box).dens
            eos_err, own_eos = tabulate_eos(model, cur.S, dens0), True
        try:
            return _run(model, state, cur, v_avg, nl, gen, steps, dt, h_dt, box, noise, boundary, prescribed,
                        record_every, substeps, fa, eos_err)
        finally:
            if own_eos:
                model.eos_table = None


def _run(model, state, cur, v_avg, nl, gen, steps, dt, h_dt, box, noise, boundary, prescribed,
         record_every, substeps, fa, eos_err):
    unwrapped = state.r.clone()
    hold = state.clone() if boundary is not None else None
    prev = None                  # (force, displacement) of the last step, for its work
    rs, vs, Ss = [unwrapped.clone()], [state.v.clone()], [cur.S.clone()]
    for k in range(1, steps + 1):
        start = unwrapped.clone() if fa else None
        for _ in range(substeps):
            pairs = nl.update(cur.r)
            if fa:
                cur, dr, force = model.step_ou(cur, pairs, h_dt, generator=gen, box=box, noise=noise,
                                               v_avg=v_avg, prev=prev)
                prev = (force, dr)
                v_avg = dr / h_dt
                unwrapped = unwrapped + dr
            else:
                cur = model.step(cur, pairs, h_dt, generator=gen, box=box, noise=noise)
                unwrapped = unwrapped + cur.v * h_dt
        v_rec = (unwrapped - start) / dt if fa else cur.v
        if boundary is not None:
            ref = prescribed(k) if prescribed is not None else hold
            unwrapped[boundary] = ref.r[boundary]
            cur.r[boundary] = wrap(ref.r[boundary], box)
            cur.v[boundary] = ref.v[boundary]
            cur.S[boundary] = ref.S[boundary]
            v_rec[boundary] = ref.v[boundary]
            v_avg[boundary] = ref.v[boundary]
            if prev is not None and prev[0] is not None:
                prev = (prev[0], prev[1].clone())
                prev[1][boundary] = 0.0        # prescribed moves are not the forces' work
        if k % record_every == 0:
            rs.append(unwrapped.clone())
            vs.append(v_rec.clone())
            Ss.append(cur.S.clone())
    return Rollout(torch.stack(rs), torch.stack(vs), torch.stack(Ss), dt * record_every, nl.n_builds,
                   eos_err)
