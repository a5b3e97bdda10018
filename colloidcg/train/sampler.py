"""Where training's transitions come from: the transition types, the
:class:`TransitionSampler` interface :func:`~colloidcg.train.fit` draws from, and
:class:`FrameSampler`, which trains on whole frames.

A :class:`Transition` is one step t -> t+1 of a sub-system: any subset of the particles
present in both frames, each either *scored* (``valid``: its transition enters the loss) or
*prescribed* (a halo: it acts on the scored particles, its own transition is not scored).
Whole frames (:class:`FrameSampler`) prescribe the particles at the field-of-view border;
a patch of a large system prescribes a shell of the interaction range around it.

Units: those of the trajectory (lengths in um for video data, times in s); indices are
rows of the :class:`~colloidcg.data.Trajectory`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.graph import find_pairs
from ..data import Trajectory
from ..errors import ColloidcgError
from .labels import future_labels
from .measures import particle_sizes

if TYPE_CHECKING:
    from .carried import CarriedWindow

#: Pairs of a K-step window are searched within this multiple of the cutoff at its first
#: frame and kept for all K steps (particles move in between).
WINDOW_SKIN = 1.3


@dataclass
class Window:
    """A sub-system followed over K steps, frames t..t+K, for the K-step likelihood
    (:func:`colloidcg.core.loss.multistep_nll`); m particles, d dimensions.

    index : (m,) long, trajectory rows (particles present in every frame t-1..t+K)
    r : (K+1, m, d) positions at t..t+K (length)
    v : (K+1, m, d) velocities at t..t+K (length/time; finite differences, frame averages)
    pairs : (P, 2) long, pairs within ``WINDOW_SKIN`` x the cutoff at t (local indices),
        the pair list of all K steps
    pairs_S : (Q, 2) long, pairs within the cutoff at t, from which the encoder predicts S_t
    interior : (m,) bool, particles scored at every step; the others are prescribed from
        the data (halo)
    size : (m,) per-particle sizes (the tracks' size column), or None
    """

    index: torch.Tensor
    r: torch.Tensor
    v: torch.Tensor
    pairs: torch.Tensor
    pairs_S: torch.Tensor
    interior: torch.Tensor
    size: torch.Tensor | None = None

    @property
    def steps(self) -> int:
        return self.r.shape[0] - 1


@dataclass
class Transition:
    """One step t -> t+1 of a sub-system of n particles (d dimensions, P pairs).

    frame : t
    index : (n,) long, trajectory rows of the particles (present at t and t+1)
    r : (n, d) positions at t (length)
    v : (n, d) velocities at t, (r_t - r_{t-1}) / dt (length/time)
    v_next : (n, d) velocities at t+1 (length/time), the observation the loss scores
    pairs : (P, 2) long, pairs within the cutoff at t (local indices into 0..n-1)
    valid : (n,) bool, scored particles: interior and tracked at t-1, t, t+1; the rest are
        prescribed (:attr:`prescribed`)
    size : (n,) per-particle sizes (units of the tracks' size column), or None
    labels : (n,) float, rearrangement within the next ``horizon`` frames (1, 0, NaN
        unknown), or None without labels
    window : the K-step window starting at t (``multistep`` > 1), or None
    carried : the carried-S window starting at t (``s_window`` given: training with
        ``s_memory = "carried"``), or None
    shear : (2,) the Lees-Edwards state at t of a sheared box (``Trajectory.shear``), or None
    """

    frame: int
    index: torch.Tensor
    r: torch.Tensor
    v: torch.Tensor
    v_next: torch.Tensor
    pairs: torch.Tensor
    valid: torch.Tensor
    size: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    window: Window | None = None
    carried: "CarriedWindow | None" = None
    shear: torch.Tensor | None = None

    @property
    def prescribed(self) -> torch.Tensor:
        """(n,) bool, the halo: particles that act on the others but are not scored."""
        return ~self.valid

    @property
    def n(self) -> int:
        return int(self.index.shape[0])


@dataclass
class TransitionBatch:
    """Transitions whose losses are averaged into one optimiser step (or one validation
    term): the loss is the mean over transitions of each one's mean NLL per scored particle."""

    transitions: list[Transition] = field(default_factory=list)

    def __iter__(self) -> Iterator[Transition]:
        return iter(self.transitions)

    def __len__(self) -> int:
        return len(self.transitions)

    @property
    def frames(self) -> list[int]:
        return [tr.frame for tr in self.transitions]

    @property
    def n_particles(self) -> int:
        """Particle-steps in the batch, scored and prescribed."""
        return sum(tr.n for tr in self.transitions)


def make_transition(traj: Trajectory, t: int, cutoff: float, index: torch.Tensor | None = None,
                    valid: torch.Tensor | None = None, horizon: int | None = None,
                    multistep: int = 1, s_window: int | None = None) -> Transition:
    """The transition t -> t+1 of the particles ``index`` (default: every particle present
    at t and t+1; given, they must be). ``valid``: (n,) bool, False for particles to
    prescribe besides those outside the trajectory's mask (the field-of-view halo).
    ``horizon``: attach the rearrangement labels; ``multistep`` K > 1: attach the K-step
    window of the same particles when t + K is a frame (:func:`make_window`); ``s_window``:
    attach the carried-S window of up to that many frames
    (:func:`~colloidcg.train.carried.make_carried_window`)."""
    whole = index is None
    if whole:
        index = torch.nonzero(traj.present[t] & traj.present[t + 1]).squeeze(-1)
    r = traj.pos[t, index]
    shear = traj.shear_at(t)
    pairs = find_pairs(r, cutoff, traj.box, shear)
    ok = traj.mask[t, index] & traj.mask[t + 1, index]
    if valid is not None:
        ok = ok & valid
    labels = None
    if horizon is not None:
        lab = future_labels(traj, t, horizon)
        labels = None if lab is None else lab[index]
        if labels is not None and valid is not None:
            # a sub-system's prescribed particles (a patch's halo) are not scored by the
            # auxiliary loss either: their S comes from a cut-off neighbourhood
            labels = torch.where(valid, labels, torch.full_like(labels, float("nan")))
    window = carried = None
    among = interior = None
    if not whole:   # the windows follow the same sub-system
        among = torch.zeros(traj.n_particles, dtype=torch.bool, device=index.device)
        among[index] = True
    if valid is not None:
        interior = torch.zeros(traj.n_particles, dtype=torch.bool, device=index.device)
        interior[index] = valid
    if multistep > 1 and t + multistep < traj.n_frames:
        window = make_window(traj, t, multistep, cutoff, among, interior)
    if s_window is not None:
        from .carried import make_carried_window
        carried = make_carried_window(traj, t, s_window, cutoff, among, interior, horizon)
    return Transition(t, index, r, traj.vel[t, index], traj.vel[t + 1, index], pairs, ok,
                      particle_sizes(traj, index), labels, window, carried, shear)


def make_window(traj: Trajectory, t: int, steps: int, cutoff: float,
                among: torch.Tensor | None = None, interior: torch.Tensor | None = None) -> Window:
    """The K = ``steps`` window from t of the particles present in frames t-1..t+K (only
    those of ``among``, a (N,) bool mask, when given); scored where the trajectory's mask
    holds in every frame t..t+K (and ``interior``, a (N,) bool mask, when given)."""
    K = steps
    win = traj.present[t - 1: t + K + 1].all(0)
    if among is not None:
        win = win & among
    idx = torch.nonzero(win).squeeze(-1)
    r_seq = traj.pos[t: t + K + 1, idx]
    inner = traj.mask[t: t + K + 1, idx].all(0)
    if interior is not None:
        inner = inner & interior[idx]
    return Window(idx, r_seq, traj.vel[t: t + K + 1, idx], find_pairs(r_seq[0], cutoff * WINDOW_SKIN, traj.box),
                  find_pairs(r_seq[0], cutoff, traj.box), inner, particle_sizes(traj, idx))


def carried_window(config) -> int | None:
    """The carried-S window length of a TrainConfig (None unless ``s_memory`` is carried)."""
    return config.s_window if getattr(config, "s_memory", "encoded") == "carried" else None


class FrameTransitions:
    """The whole-frame transitions t -> t+1 of a trajectory (every particle present at t
    and t+1; the field-of-view halo prescribed), made on first use and cached."""

    def __init__(self, traj: Trajectory, cutoff: float, horizon: int | None = None, multistep: int = 1,
                 s_window: int | None = None):
        self.traj, self.cutoff, self.horizon, self.multistep = traj, cutoff, horizon, multistep
        self.s_window = s_window
        self.cache: dict[int, Transition] = {}

    def get(self, t: int) -> Transition:
        if t not in self.cache:
            self.cache[t] = make_transition(self.traj, t, self.cutoff, horizon=self.horizon,
                                            multistep=self.multistep, s_window=self.s_window)
        return self.cache[t]


class TransitionSampler(ABC):
    """The source of :func:`~colloidcg.train.fit`'s transitions.

    ``fit`` calls :meth:`setup` once the interaction range is known, with the trajectory
    on the training device (the field-of-view halo already outside its mask); the cutoff
    selection's short fits call it too, once per candidate, so each call starts afresh.
    Then, per epoch, it optimises on the batches of :meth:`epoch` and scores the batches of
    :meth:`validation`. After :meth:`setup`, ``train_frames`` and ``validation_frames``
    name the frames (t of t -> t+1) that train and that validate: the report counts them,
    the auxiliary loss balances its classes over the training frames' labels, the
    validation rollout starts at the frame before the first validation frame, and the
    rearrangement AUC is scored on whole validation frames.
    """

    train_frames: Sequence[int] = ()
    validation_frames: Sequence[int] = ()

    @abstractmethod
    def setup(self, traj: Trajectory, cutoff: float, config) -> None:
        """Bind to ``traj`` at interaction range ``cutoff`` with the options of ``config``
        (a :class:`~colloidcg.train.TrainConfig`); raise :class:`ColloidcgError` when
        there is nothing to train on."""

    @abstractmethod
    def steps_per_epoch(self) -> int:
        """Optimiser steps (batches) per epoch (>= 1), for the learning-rate schedule."""

    @abstractmethod
    def epoch(self, epoch: int) -> Iterator[TransitionBatch]:
        """The training batches of epoch ``epoch`` (0-based)."""

    @abstractmethod
    def validation(self) -> Iterator[TransitionBatch]:
        """The held-out batches; their mean loss is the epoch's validation NLL (none: NaN)."""

    @property
    def frame_transitions(self) -> FrameTransitions | None:
        """Whole-frame transitions to reuse for the rearrangement AUC, if the sampler has them."""
        return None


class FrameSampler(TransitionSampler):
    """Whole frames. Usable frames are those t (1 <= t <= T-2) with a scored particle; the
    last ``val_fraction`` of them validate, one batch per frame, the rest train. Each epoch
    draws a permutation of the training frames from a generator seeded with ``seed``
    (``np.random.default_rng``), keeps the first ``max_frames_per_epoch`` and cuts it into
    batches of ``batch_frames`` (options of the TrainConfig given to :meth:`setup`)."""

    def __init__(self):
        self.frames: FrameTransitions | None = None
        self.train_frames: list[int] = []
        self.validation_frames: list[int] = []

    @property
    def frame_transitions(self) -> FrameTransitions | None:
        return self.frames

    def setup(self, traj: Trajectory, cutoff: float, config) -> None:
        horizon = config.horizon if traj.rearranging is not None else None
        self.frames = frames = FrameTransitions(traj, cutoff, horizon, config.multistep, carried_window(config))
        # transitions t -> t+1 need v_t (t >= 1) and v_{t+1}
        usable = [t for t in range(1, traj.n_frames - 1) if bool(frames.get(t).valid.any())]
        if not usable:
            raise ColloidcgError(
                "trajectory: no particle is usable for training (every particle is missing in consecutive "
                "frames or within the edge halo); lower --edge or check the tracks")
        n_pairs = sum(int(frames.get(t).pairs.shape[0]) for t in usable[:5])
        if n_pairs == 0 and not config.model.substrate:
            raise ColloidcgError(f"trajectory: no particle has a neighbour within the cutoff h={cutoff:.3g}; "
                                 "check um_per_px or pass a larger cutoff")
        n_val = max(1, int(round(config.val_fraction * len(usable)))) if len(usable) > 2 else 0
        self.train_frames = usable[: len(usable) - n_val] if n_val else usable
        self.validation_frames = usable[len(usable) - n_val:] if n_val else []
        n = len(self.train_frames)
        self.per_epoch = n if config.max_frames_per_epoch is None else min(n, config.max_frames_per_epoch)
        self.batch_frames = config.batch_frames
        self.rng = np.random.default_rng(config.seed)

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.per_epoch / self.batch_frames))

    def epoch(self, epoch: int) -> Iterator[TransitionBatch]:
        order = self.rng.permutation(self.train_frames)[: self.per_epoch]
        for b in range(0, len(order), self.batch_frames):
            yield TransitionBatch([self.frames.get(int(t)) for t in order[b: b + self.batch_frames]])

    def validation(self) -> Iterator[TransitionBatch]:
        for t in self.validation_frames:
            yield TransitionBatch([self.frames.get(t)])
