"""The training objective: the loss of a batch of transitions as a plain function of
(model, batch, options).

Per transition: the one-step Gaussian NLL of the next velocities (mean per scored particle,
:func:`colloidcg.core.loss.transition_nll`), plus, with a K-step window, the K-step NLL
(:func:`colloidcg.core.loss.multistep_nll`), plus, with an :class:`AuxiliaryLoss`, the
class-balanced logistic loss of a read-out of S against the coming rearrangement labels.
S is never observed: the encoder predicts S_t from the configuration at t, or, with a
carried-S window (``TrainConfig.s_memory = "carried"``), S is encoded at each particle's
entry frame and carried with the model's noise-aware dS/dt to the window and through it
(``s_start = "window"``: encoded at the window's first frame instead; :mod:`.carried`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..core.loss import multistep_nll, transition_nll
from ..core.model import MetriplecticModel, State
from .carried import CarriedStart, carried_window_terms
from .sampler import Transition, TransitionBatch, Window


class IncreasingReadout(torch.nn.Module):
    """A linear read-out n_s -> 1 whose weights are non-negative (softplus of free
    parameters): the logit can only grow with every component of S. (M, n_s) -> (M, 1)."""

    def __init__(self, n_s: int):
        super().__init__()
        self.raw = torch.nn.Parameter(torch.zeros(1, n_s))
        self.bias = torch.nn.Parameter(torch.zeros(1))

    @property
    def weight(self) -> torch.Tensor:
        """(1, n_s) the non-negative weights."""
        return torch.nn.functional.softplus(self.raw)

    def forward(self, S: torch.Tensor) -> torch.Tensor:
        return S @ self.weight.T + self.bias


@dataclass
class AuxiliaryLoss:
    """A logistic read-out of S, ``head`` (n_s -> 1), trained on the rearrangement labels
    with weight ``weight``; rearranging rows weigh ``pos_weight`` (negatives / positives
    of the training frames: both classes count equally).

    With carried S the read-out is increasing (:class:`IncreasingReadout`): a particle's
    carried S rises with the heat its motion produces, and rearranging regions produce
    it, so the structural S the encoder gives must point the same way or the heat carried
    along the data cancels it (measured on the vacancy control: an encoder that put the
    soft sites at low S lost its signal within 60-90 frames of carrying)."""

    head: torch.nn.Module
    weight: float
    pos_weight: torch.Tensor

    @classmethod
    def new(cls, n_s: int, weight: float, pos_weight: torch.Tensor, increasing: bool = False) -> "AuxiliaryLoss":
        """A fresh read-out (a Linear's initial weights drawn from torch's global generator;
        ``increasing``: an :class:`IncreasingReadout`, weights softplus(0) = log 2), on the
        device and in the dtype of ``pos_weight``."""
        head = IncreasingReadout(n_s) if increasing else torch.nn.Linear(n_s, 1)
        head = head.to(device=pos_weight.device, dtype=pos_weight.dtype)
        return cls(head, weight, pos_weight)

    def __call__(self, S: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Mean class-balanced binary cross-entropy over the rows with known labels
        (None when there are none)."""
        if labels is None:
            return None
        ok = torch.isfinite(labels)
        if not bool(ok.any()):
            return None
        logit = self.head(S).squeeze(-1)[ok]
        return torch.nn.functional.binary_cross_entropy_with_logits(logit, labels[ok], pos_weight=self.pos_weight)


@dataclass
class LossOptions:
    """What the loss needs besides the model and the batch: the frame interval ``dt``
    (time), the periodic box (length; None: open), the localisation noise variance
    ``loc_var`` (length^2 per axis), the transition covariance ("marginal" or "full"), the
    optional auxiliary loss and, for carried-S windows, the :class:`~.carried.CarriedStart`
    that gives their start S (None: encoded at each window's first frame) and how they book
    heat (``s_heat``, :data:`~.carried.HEATS`)."""

    dt: float
    box: torch.Tensor | None = None
    loc_var: float = 0.0
    covariance: str = "marginal"
    aux: AuxiliaryLoss | None = None
    carry: CarriedStart | None = None
    s_heat: str = "drift"


class TransitionTerms(NamedTuple):
    """The loss terms of one transition (scalar tensors; None where absent)."""

    nll: torch.Tensor
    multistep: torch.Tensor | None
    aux: torch.Tensor | None


def window_nll(model: MetriplecticModel, w: Window, opts: LossOptions, frame: int | None = None) -> torch.Tensor:
    """K-step NLL of a window (scored particles; the rest prescribed from the data). Its S
    at the first frame is encoded there, or, when training carries S from each particle's
    entry (``opts.carry``) and the window's ``frame`` is given, the carried S: the same
    start as the carried one-step windows."""
    if opts.carry is not None and frame is not None:
        S0 = opts.carry.start_S(model, frame, w.index)
    else:
        S0 = model.initial_S(w.r[0], w.pairs_S, opts.box)
    valid = w.interior.unsqueeze(0).expand(w.steps, -1)
    return multistep_nll(model, w.r, w.v, S0, valid, w.pairs, opts.dt, opts.box,
                         loc_var=opts.loc_var, prescribed=~w.interior, size=w.size)


def transition_terms(model: MetriplecticModel, tr: Transition, opts: LossOptions) -> TransitionTerms:
    """The loss terms of one transition. With a carried-S window (``tr.carried``) its NLL is
    the window's mean one-step NLL with S carried through the window from its start S (the
    S carried from each particle's entry frame, ``opts.carry``, or encoded at the window's
    first frame) and the auxiliary loss that of the carried S
    (:func:`~colloidcg.train.carried.carried_window_terms`); otherwise the one-step NLL and
    auxiliary loss of the S encoded from frame t."""
    if tr.carried is not None:
        nll, aux = carried_window_terms(model, tr.carried, opts.dt, opts.box, opts.loc_var, opts.aux,
                                        opts.carry, opts.s_heat)
        ms = window_nll(model, tr.window, opts, tr.frame) if tr.window is not None else None
        return TransitionTerms(nll, ms, aux)
    S = model.initial_S(tr.r, tr.pairs, opts.box, tr.shear)
    nll, _ = transition_nll(model, State(tr.r, tr.v, S, tr.size), tr.v_next, tr.valid, tr.pairs, opts.dt,
                            opts.box, loc_var=opts.loc_var, covariance=opts.covariance, shear=tr.shear)
    ms = window_nll(model, tr.window, opts) if tr.window is not None else None
    aux = opts.aux(S, tr.labels) if opts.aux is not None else None
    return TransitionTerms(nll, ms, aux)


def batch_loss(model: MetriplecticModel, batch: TransitionBatch, opts: LossOptions) -> torch.Tensor:
    """Mean over the batch's transitions of their NLL (+ K-step NLL), plus ``aux.weight``
    times the mean auxiliary loss."""
    total = 0.0
    aux_total = 0.0
    for tr in batch:
        terms = transition_terms(model, tr, opts)
        total = total + terms.nll
        if terms.multistep is not None:
            total = total + terms.multistep
        if terms.aux is not None:
            aux_total = aux_total + terms.aux
    loss = total / len(batch)
    if opts.aux is not None:
        loss = loss + opts.aux.weight * aux_total / len(batch)
    return loss
