"""Fitting the metriplectic model to a :class:`~colloidcg.data.Trajectory`.

``fit(trajectory, TrainConfig(...))`` calibrates the model's scales to the data (friction
and temperature from the velocities' variance and lag-1 correlation read as frame averages
of a Langevin velocity; U's stiffness from a least-squares fit of the forces to the mean
velocity changes; the interaction range, when not given, by the held-out NLL of short fits),
then minimises the Gaussian transition NLL (:mod:`colloidcg.core.loss`) with Adam and a
cosine learning-rate schedule over mini-batches of transitions drawn by a
:class:`TransitionSampler` (default :class:`FrameSampler`: whole frames). S is never
observed: the structural encoder predicts S_t from the configuration of every frame and is
trained through the likelihood (its S sets temperatures, pressures and friction). Optional
auxiliary loss: a logistic read-out of S predicts the detector's "rearranging" labels in the
next frames.

Each epoch ends with two validation scores on the held-out (last) frames: their NLL and the
relative RMS error of the mean squared displacement of a stochastic rollout over them
(halo particles prescribed from the data) against the data's. The model is selected by
``select``: "val_nll" (default; the held-out likelihood, a proper score with little
sampling noise; an epoch whose rollout diverges is never selected) or "val_msd" (the
rollout's MSD error; noisy for short windows and few particles). Training stops early
when the score has not improved for ``patience`` epochs; the best model is kept. A non-finite
loss stops training with :class:`TrainingDiverged`, after restoring and saving the last good
weights.

Modules: :mod:`.config` (options), :mod:`.sampler` (transitions and samplers),
:mod:`.objective` (the loss), :mod:`.calibrate` (a new model's scales), :mod:`.measures`
(data statistics), :mod:`.cutoff` (the interaction range), :mod:`.validation`,
:mod:`.patches` (:class:`PatchSampler`: random patches of a large system with a
prescribed halo), :mod:`.labels` (rearrangement labels and AUC), :mod:`.loop` (epoch, divergence guard, early
stopping, checkpoints, progress bar), :mod:`.fitting` (:func:`fit`), :mod:`.tracks`
(:func:`train_tracks`).
"""

from .calibrate import build_model, force_scale, pair_energy_report
from .config import TrainConfig, default_model_config, option_info
from .cutoff import select_cutoff
from .fitting import FitResult, check_trajectory, fit
from .labels import balanced_pos_weight, future_labels, rearrangement_auc, roc_auc
from .loop import TrainingDiverged
from .measures import estimate_localisation_noise, median_nn_distance
from .objective import AuxiliaryLoss, LossOptions, batch_loss, transition_terms
from .patches import PatchSampler
from .sampler import (FrameSampler, FrameTransitions, Transition, TransitionBatch, TransitionSampler,
                      Window, make_transition, make_window)
from .tracks import MODEL_FILES, train_tracks
from .validation import validation_rollout

__all__ = ["AuxiliaryLoss", "FitResult", "FrameSampler", "FrameTransitions", "LossOptions", "MODEL_FILES",
           "PatchSampler", "TrainConfig", "TrainingDiverged", "Transition", "TransitionBatch", "TransitionSampler", "Window",
           "balanced_pos_weight", "batch_loss", "build_model", "check_trajectory", "default_model_config",
           "estimate_localisation_noise", "fit", "force_scale", "future_labels", "make_transition",
           "make_window", "median_nn_distance", "option_info", "pair_energy_report", "rearrangement_auc",
           "roc_auc", "select_cutoff", "train_tracks", "transition_terms", "validation_rollout"]
