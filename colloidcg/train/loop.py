"""The pieces of the training loop: one epoch of optimiser steps (:func:`train_epoch`), the
optimiser and its schedule, the divergence guard, early stopping with the best weights,
checkpoints and the progress bar."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.model import MetriplecticModel
from ..core.persist import save_model
from ..errors import ColloidcgError
from .objective import LossOptions, batch_loss
from .sampler import TransitionSampler


class TrainingDiverged(ColloidcgError):
    """The loss became NaN or infinite; the last good weights were kept."""


def snapshot(model: torch.nn.Module) -> dict:
    """A copy of the model's weights."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def make_optimiser(params, lr: float, lr_final_fraction: float, total_steps: int):
    """Adam with a cosine learning-rate schedule from ``lr`` to ``lr_final_fraction`` x
    ``lr`` over ``total_steps`` optimiser steps. Returns (optimiser, scheduler)."""
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=lr * lr_final_fraction)
    return opt, sched


class Checkpoints:
    """Weights saved during training in ``folder`` (nothing when None): ``checkpoint/``
    after every epoch (and the last good weights on divergence), ``best/`` at each new
    best validation score."""

    def __init__(self, folder):
        self.folder = Path(folder) if folder else None

    def epoch(self, model: MetriplecticModel, epoch: int) -> None:
        if self.folder is not None:
            save_model(model, self.folder / "checkpoint", {"epoch": epoch})

    def best(self, model: MetriplecticModel, epoch: int) -> None:
        if self.folder is not None:
            save_model(model, self.folder / "best", {"epoch": epoch})

    def last_good(self, model: MetriplecticModel, epoch: int) -> Path | None:
        """Save the (restored) last good weights; returns where, or None."""
        if self.folder is None:
            return None
        save_model(model, self.folder / "checkpoint", {"epoch": epoch, "note": "last good weights before divergence"})
        return self.folder / "checkpoint"


class DivergenceGuard:
    """Keeps the weights of the end of the last epoch (at first: the initial ones) and, on
    a non-finite loss or weights, restores them and raises :class:`TrainingDiverged`."""

    def __init__(self, model: MetriplecticModel, params, checkpoints: Checkpoints, initial: dict):
        self.model, self.params, self.checkpoints = model, list(params), checkpoints
        self.last_good = initial

    def check_loss(self, loss: torch.Tensor, epoch: int, frames) -> None:
        """``epoch`` 0-based; ``frames`` the batch's frames (named in the message)."""
        if torch.isfinite(loss):
            return
        self.model.load_state_dict(self.last_good)
        path = self.checkpoints.last_good(self.model, epoch)
        where = f"; the last good weights are in {path}" if path is not None else ""
        raise TrainingDiverged(f"training diverged (loss is {float(loss)}) at epoch {epoch + 1}, "
                               f"frames {frames}{where}; try a smaller --lr or a larger cutoff")

    def check_weights(self, epoch: int) -> None:
        if any(not bool(torch.isfinite(p).all()) for p in self.params):
            self.model.load_state_dict(self.last_good)
            raise TrainingDiverged(f"training diverged (non-finite weights) at epoch {epoch + 1}; "
                                   "the last good weights were restored; try a smaller --lr")

    def epoch_done(self) -> None:
        self.last_good = snapshot(self.model)


def train_epoch(model: MetriplecticModel, sampler: TransitionSampler, opts: LossOptions, optimiser,
                scheduler, params, guard: DivergenceGuard, epoch: int, grad_clip: float) -> tuple[list, int]:
    """One epoch of optimiser steps over the sampler's batches (with carried-S windows,
    ``opts.carry`` is first carried along the data with the epoch's initial weights).
    Returns the batches' losses and the number of particle-steps they held."""
    model.train()
    if opts.carry is not None:   # the carried windows start from S carried with these weights
        opts.carry.refresh(model)
    losses, n_steps = [], 0
    for batch in sampler.epoch(epoch):
        optimiser.zero_grad()
        loss = batch_loss(model, batch, opts)
        guard.check_loss(loss, epoch, batch.frames)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimiser.step()
        scheduler.step()
        guard.check_weights(epoch)
        losses.append(float(loss.detach()))
        n_steps += batch.n_particles
    guard.epoch_done()
    return losses, n_steps


class EarlyStopping:
    """Tracks the best score (lower is better), its epoch, record and weights; training
    stops when it has not improved for ``patience`` epochs."""

    def __init__(self, patience: int, initial: dict):
        self.patience = patience
        self.score, self.epoch, self.record = float("inf"), -1, None
        self.state = initial
        self.bad_epochs = 0

    def update(self, score: float, record: dict, model: MetriplecticModel) -> bool:
        """Record an epoch's score (``record["epoch"]`` 1-based); True when it is a new best."""
        if score < self.score:
            self.score, self.epoch, self.record = score, record["epoch"], record
            self.state = snapshot(model)
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.bad_epochs >= self.patience


class ProgressBar:
    """tqdm over the epochs (off with ``enabled`` False or without tqdm), showing the last
    epoch's training NLL and validation MSD error."""

    def __init__(self, epochs: int, enabled: bool):
        try:
            from tqdm.auto import tqdm
            self.bar = tqdm(range(epochs), desc="train", disable=not enabled, leave=False)
        except ImportError:  # pragma: no cover
            self.bar = None
        self.epochs = epochs

    def __iter__(self):
        return iter(self.bar if self.bar is not None else range(self.epochs))

    def show(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(nll=f"{record['train_nll']:.3f}", val_msd=f"{record['val_msd_rel_rms']:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
