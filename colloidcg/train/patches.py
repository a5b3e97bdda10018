"""Training on patches of a large system: :class:`PatchSampler`.

A field of view (or a simulation box) much larger than the interaction range need not be
trained on whole frames: a random square (cube in 3D) patch of side ``side`` is scored, and
a shell ``halo`` wide around it is prescribed from the data (:class:`~.sampler.Transition`
with ``valid`` False there; their rearrangement labels are not scored either). A scored
particle's transition depends on its neighbours within the range h (forces, friction,
noise) and, through their densities, temperatures and encoded S, on their neighbours within
h: nothing farther than 2 h. With a halo of at least 2 h (the default; thinner is refused)
a patch's scored particles therefore have exactly the terms they have in the whole frame
(tested to rounding), and a patch costs (side + 2 halo)^d instead of the frame's area.
That holds for the one-step likelihood (the default); with ``multistep`` K > 1 the halo is
reset to the data at every step of the window, where in the whole frame it would evolve,
so the K-step terms near the halo differ. This is the seam of issue 19's partial
evolution: the microscopic model learned from patches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from ..core.driver import minimum_image
from ..data import Trajectory
from ..errors import ParameterError
from .sampler import FrameSampler, TransitionBatch, carried_window, make_transition


class PatchSampler(FrameSampler):
    """Random patches of the training frames; validation on whole frames.

    Parameters
    ----------
    side : patch side (length units of the trajectory, um for video data); at least twice
        the interaction range.
    halo : width of the prescribed shell around the patch, at least 2 x the range (the
        default; the patch's scored terms are then exactly the whole frame's).
    patches_per_frame : patches drawn from each training frame per epoch.

    Training frames, their seeded order per epoch and the validation frames are those of
    :class:`~.sampler.FrameSampler` (options of the TrainConfig); each frame of the order
    contributes ``patches_per_frame`` patches at centres drawn uniformly over the box or the
    field of view (a patch may reach past the field of view's border, where the trajectory's
    own edge halo is prescribed, so every particle is scored as often), and
    ``batch_frames`` patches make a batch. Patches without a scored particle are skipped.
    """

    def __init__(self, side: float, halo: float | None = None, patches_per_frame: int = 4):
        super().__init__()
        try:
            side, halo = float(side), None if halo is None else float(halo)
        except (TypeError, ValueError):
            raise ParameterError(f"side, halo: expected lengths, got {side!r}, {halo!r}") from None
        if not (math.isfinite(side) and side > 0):
            raise ParameterError(f"side: expected a positive patch side, got {side!r}")
        if halo is not None and not math.isfinite(halo):
            raise ParameterError(f"halo: expected a finite width, got {halo!r}")
        if int(patches_per_frame) < 1:
            raise ParameterError(f"patches_per_frame: expected >= 1, got {patches_per_frame!r}")
        self.side = side
        self.halo_width = halo
        self.patches_per_frame = int(patches_per_frame)

    def setup(self, traj: Trajectory, cutoff: float, config) -> None:
        if self.side < 2 * cutoff:
            raise ParameterError(f"side: a patch of {self.side:g} is smaller than twice the interaction "
                                 f"range ({2 * cutoff:g}); its particles would all be at its border")
        if self.halo_width is not None and self.halo_width < 2 * cutoff:
            raise ParameterError(f"halo: {self.halo_width:g} is thinner than twice the interaction range "
                                 f"({2 * cutoff:g}); the patch's terms would differ from the whole frame's")
        super().setup(traj, cutoff, config)
        self.traj, self.cutoff = traj, cutoff
        self.halo = 2.0 * cutoff if self.halo_width is None else self.halo_width
        self.horizon = config.horizon if traj.rearranging is not None else None
        self.multistep = config.multistep
        self.s_window = carried_window(config)
        if traj.box is not None:
            self.lo = torch.zeros(traj.dim, dtype=traj.pos.dtype)
            self.hi = traj.box.detach().cpu().to(traj.pos.dtype)
            self.centre_lo, self.centre_hi = self.lo, self.hi
        else:
            self.lo = torch.tensor([a for a, _ in traj.fov], dtype=traj.pos.dtype)
            self.hi = torch.tensor([b for _, b in traj.fov], dtype=traj.pos.dtype)
            self.centre_lo, self.centre_hi = self.lo, self.hi

    def patch(self, t: int, centre: torch.Tensor):
        """The transition t -> t+1 of the patch centred at ``centre`` (d,): particles within
        side/2 + halo of it (per axis; minimum image in a box) present at t and t+1, those
        within side/2 scored. None when none is scored."""
        tr = self.traj
        cand = torch.nonzero(tr.present[t] & tr.present[t + 1]).squeeze(-1)
        off = tr.pos[t, cand] - centre.to(device=tr.pos.device, dtype=tr.pos.dtype)
        off = minimum_image(off, tr.box).abs().amax(-1)
        half = 0.5 * self.side
        keep = off < half + self.halo
        index = cand[keep]
        inner = off[keep] < half
        if not bool(inner.any()):
            return None
        trn = make_transition(tr, t, self.cutoff, index=index, valid=inner, horizon=self.horizon,
                              multistep=self.multistep, s_window=self.s_window)
        return trn if bool(trn.valid.any()) else None

    def epoch(self, epoch: int) -> Iterator[TransitionBatch]:
        order = self.rng.permutation(self.train_frames)[: self.per_epoch]
        batch = []
        for t in order:
            u = torch.as_tensor(self.rng.random((self.patches_per_frame, len(self.lo))), dtype=self.lo.dtype)
            for c in self.centre_lo + u * (self.centre_hi - self.centre_lo):
                trn = self.patch(int(t), c)
                if trn is None:
                    continue
                batch.append(trn)
                if len(batch) == self.batch_frames:
                    yield TransitionBatch(batch)
                    batch = []
        if batch:
            yield TransitionBatch(batch)

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.per_epoch * self.patches_per_frame / self.batch_frames))


__all__ = ["PatchSampler"]

