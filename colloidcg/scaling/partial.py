"""Partial evolution: increments of a large system from small patches with a frozen halo.

After Chen et al., "Scalable learning of macroscopic stochastic dynamics": instead of
simulating a large snapshot x0 for one macroscopic step, cut a square (cube) patch I of side
``patch`` at a uniformly random place of the periodic box, simulate only the patch and a
frozen halo around it, and form the large system's increment from the patch,
z1 = phi(x0) + phi(x1, I) - phi(x0, I), phi an additive per-area encoder. A patch increment
has the whole system's mean and K = box area / patch area times its covariance.

Here:

- the patch's particles and its halo (every particle within ``halo`` of the patch, default
  2 x the simulator's interaction range) are taken in minimum-image coordinates about the
  patch centre, so a patch may wrap across the box edge;
- they are simulated as an OPEN system (no periodic box), the halo particles frozen at
  their snapshot state for the whole macro step; when the patch and its halo span the box
  along some axis, the whole periodic system is simulated instead, every particle outside
  the patch frozen;
- optionally a mobile ``buffer`` layer between the patch and the halo moves with the patch
  but is not part of the sample: the frozen halo then acts on the sample only through it,
  which reduces the frozen halo's bias over long macro steps (a particle beside a frozen
  wall is more confined than in the whole system);
- noise is keyed by particle (and pair) identity (:mod:`.simulators`), so :func:`full_step`
  with the same key gives the whole system the same noise. For one micro step an interior
  particle's patch step then equals its full-system step (to rounding): its step depends
  on particles within 2 x the interaction range, all present. Over many micro steps the
  frozen halo is an approximation: halo particles that would have moved do not.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ParameterError
from .simulators import MicroState, check_state, derive_key

__all__ = ["PatchStep", "partial_evolution", "full_step", "cut_patch"]


class PatchStep(NamedTuple):
    """One patch evolved by one macro step.

    snapshot : index into the snapshot list.
    centre : (d,) px, the patch centre in the snapshot's box.
    side : patch side, px (the inner region, a square or cube).
    inner : (M,) indices into the snapshot of the particles inside the patch, in the order
        of the inner rows of ``before``/``after`` (their motion is the sample).
    before : the patch and halo as simulated: inner rows first, then the halo (frozen).
        Open system (box None, positions in minimum-image coordinates about ``centre``,
        not wrapped) or, when patch and halo span the box, the whole periodic system.
    after : the same rows after ``steps`` frames.
    inner_mask : (M_total,) bool, the inner rows of before/after.
    n_patches : K = box area (volume) / patch area (volume), the natural covariance scale
        lambda of a patch increment.
    key : the noise key of this patch; ``full_step(simulator, snapshot, steps, key)`` gives
        the whole system the same noise.
    rows : (M_total,) indices into the snapshot of the rows of before/after.
    frozen_mask : (M_total,) bool, the frozen halo rows (the rest: inner rows and the
        mobile buffer).
    """

    snapshot: int
    centre: np.ndarray
    side: float
    inner: np.ndarray
    before: MicroState
    after: MicroState
    inner_mask: np.ndarray
    n_patches: float
    key: int
    rows: np.ndarray
    frozen_mask: np.ndarray


def full_step(simulator, snapshot: MicroState, steps: int, key: int) -> MicroState:
    """Advance the whole periodic ``snapshot`` by ``steps`` frames with noise keyed by
    ``key`` (the same numbers a patch with that key gives its particles).

    The micro-step counter of the keyed noise starts at 0 in every call, so a trajectory
    made of several calls needs a new key for each (e.g.
    :func:`~.simulators.derive_key` (seed, call index)); the same key twice repeats the noise."""
    if snapshot.box is None:
        raise ParameterError("snapshot.box: a full-system step needs the periodic box, px")
    return simulator.advance(snapshot, steps, frozen=None, key=key)


def _check_geometry(simulator, box: np.ndarray, patch: float, halo: float | None, buffer: float) -> float:
    rng = float(simulator.interaction_range)
    if not (np.isfinite(patch) and patch > 0):
        raise ParameterError(f"patch: expected a positive side, px, got {patch!r}")
    if patch < 2.0 * rng:
        raise ParameterError(f"patch: side {patch:g} px is smaller than twice the interaction range "
                             f"(2 x {rng:g} px)")
    if patch > float(np.min(box)):
        raise ParameterError(f"patch: side {patch:g} px is larger than the box {np.asarray(box).tolist()} px")
    halo = 2.0 * rng if halo is None else float(halo)
    if not halo >= 2.0 * rng * (1.0 - 1e-12):
        raise ParameterError(f"halo: {halo:g} px is thinner than twice the interaction range (2 x {rng:g} px); "
                             "an interior particle's step depends on particles that far away")
    if not (np.isfinite(buffer) and buffer >= 0):
        raise ParameterError(f"buffer: expected a width >= 0 px, got {buffer!r}")
    return halo


def cut_patch(snapshot: MicroState, centre: np.ndarray, side: float, halo: float, buffer: float = 0.0):
    """The patch of ``side`` px about ``centre`` with its mobile ``buffer`` and frozen
    ``halo``: (state to simulate, rows into the snapshot (inner first, then the buffer, then
    the halo), inner mask, frozen mask, periodic or not).

    Open (box None, minimum-image coordinates about the centre) unless side + 2 (buffer +
    halo) reaches the box along some axis; then every particle, in the periodic box, all
    outside the patch and buffer frozen."""
    box = np.asarray(snapshot.box, float)
    pos = np.asarray(snapshot.pos, float)
    dx = pos - centre
    dx -= box * np.round(dx / box)
    a = np.abs(dx)
    inner = np.all(a < 0.5 * side, axis=1)
    mobile = np.all(a < 0.5 * side + buffer, axis=1)
    periodic = bool(np.any(side + 2.0 * (buffer + halo) >= box))
    if periodic:
        region = np.ones(len(pos), bool)
    else:
        region = np.all(a < 0.5 * side + buffer + halo, axis=1)
    inn = np.nonzero(inner)[0]
    buf = np.nonzero(mobile & ~inner)[0]
    rows = np.concatenate([inn, buf, np.nonzero(region & ~mobile)[0]])
    mask = np.zeros(len(rows), bool)
    mask[: len(inn)] = True
    frozen = np.ones(len(rows), bool)
    frozen[: len(inn) + len(buf)] = False
    sel = lambda x: None if x is None else np.asarray(x)[rows]  # noqa: E731
    if periodic:
        state = MicroState(np.mod(pos[rows], box), sel(snapshot.size), box, np.asarray(snapshot.ids)[rows],
                           sel(snapshot.vel), sel(snapshot.S))
    else:
        state = MicroState(centre + dx[rows], sel(snapshot.size), None, np.asarray(snapshot.ids)[rows],
                           sel(snapshot.vel), sel(snapshot.S))
    return state, rows, mask, frozen, periodic


def partial_evolution(simulator, snapshots: list[MicroState], *, patch: float, steps: int,
                      patches_per_snapshot: int = 1, halo: float | None = None, buffer: float = 0.0,
                      seed: int = 0, progress: bool = False) -> list[PatchStep]:
    """Evolve ``patches_per_snapshot`` random patches of each snapshot by ``steps`` frames.

    simulator : a :class:`~.simulators.MicroSimulator` (px, frames).
    snapshots : periodic configurations (:class:`~.simulators.MicroState` with a box).
    patch : patch side, px; at least 2 x the interaction range, at most the box.
    steps : frames of one macro step (>= 1).
    halo : frozen halo width, px (default 2 x the interaction range; thinner is refused).
    buffer : width of a mobile layer between the patch and the halo, px (default 0): it
        moves but is not part of the sample (``inner``), and shields the sample from the
        frozen halo over long macro steps.
    seed : the patch centres and noise keys derive from it (key = f(seed, snapshot, patch)).

    Returns one :class:`PatchStep` per patch, in order of snapshot then patch. Snapshots
    are first completed by ``simulator.prepare`` (the learned model's S from its encoder
    in the whole periodic box), so a patch starts from the snapshot's own state.
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ParameterError(f"steps: expected an integer >= 1 frames per macro step, got {steps!r}")
    if isinstance(patches_per_snapshot, bool) or int(patches_per_snapshot) != patches_per_snapshot \
            or patches_per_snapshot < 1:
        raise ParameterError(f"patches_per_snapshot: expected an integer >= 1, got {patches_per_snapshot!r}")
    if len(snapshots) == 0:
        raise ParameterError("snapshots: expected at least one configuration")
    rng = np.random.default_rng(seed)
    out: list[PatchStep] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(snapshots) * int(patches_per_snapshot), desc="partial evolution", unit="patch")
    try:
        for s, snap in enumerate(snapshots):
            d = check_state(snap, f"snapshots[{s}]")
            if snap.box is None:
                raise ParameterError(f"snapshots[{s}].box: partial evolution needs the periodic box, px")
            box = np.asarray(snap.box, float)
            h = _check_geometry(simulator, box, float(patch), halo, float(buffer))
            snap = simulator.prepare(snap._replace(pos=np.mod(np.asarray(snap.pos, float), box)))
            K = float(np.prod(box)) / float(patch) ** d
            for p in range(int(patches_per_snapshot)):
                centre = rng.uniform(0.0, 1.0, d) * box
                key = derive_key(seed, s, p)
                before, rows, mask, frozen, _ = cut_patch(snap, centre, float(patch), h, float(buffer))
                after = simulator.advance(before, int(steps), frozen=frozen, key=key)
                out.append(PatchStep(s, centre, float(patch), rows[mask], before, after, mask, K, key, rows,
                                     frozen))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out
