"""Training options: :class:`TrainConfig`, with the model's architecture embedded as a
:class:`~colloidcg.core.model.ModelConfig`.

Each option's default, help text and unit live here once, in the dataclass fields'
metadata (``help``, ``unit``); the command line (``colloidcg train``), the napari Model
widget and the batch runner's ``[train]`` tables read them from here (:func:`option_info`).
Lengths are in the trajectory's length unit: um for video data, the MD length unit for
tracks from ``colloidcg md-read``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

import torch

from ..core.model import ModelConfig
from ..errors import ParameterError

#: ModelConfig fields that training sets from the data (or leaves fixed), not options:
#: the dimension and the physical scales. Every other ModelConfig field is an
#: architecture option (``TrainConfig.model``).
CALIBRATED = ("dim", "cutoff", "k_B", "tau", "friction_scale", "transport_substeps", "mass_scale", "theta_ref",
              "volume_ref", "stiffness", "fabric_ref", "size_scale", "size_column")

def architecture_keys() -> tuple[str, ...]:
    """The ModelConfig fields that are training options (in ModelConfig's order)."""
    return tuple(f.name for f in fields(ModelConfig) if f.name not in CALIBRATED)


def default_model_config() -> ModelConfig:
    """Training's default architecture: ModelConfig's defaults with the learned pair energy
    on (8 terms; ModelConfig's own default, 0, is that of models saved before it existed)."""
    return ModelConfig(n_pair=8)


def option(default=dataclasses.MISSING, *, help: str, unit: str | None = None, factory=None):
    """A dataclass field with its help text and unit (None: a pure number or a name)."""
    meta = {"help": help, "unit": unit}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Training options (lengths in the trajectory's units, um for video data).

    ``model`` holds the architecture (:class:`~colloidcg.core.model.ModelConfig`; its scales
    are calibrated from the data by :func:`colloidcg.train.build_model`). The architecture
    options can also be given and read flat, as before the embedding:
    ``TrainConfig(n_pair=0).n_pair`` is ``TrainConfig(model=...).model.n_pair``.
    Dictionaries from files (a ``[train]`` table, a model folder's stored ``train`` record)
    go through :meth:`from_dict`, which also takes the flat keys and names unknown ones.
    Every option's meaning is in its field's metadata (:func:`option_info`).
    """

    epochs: int = option(30, help="training epochs, each a pass over the training frames; the best "
                                  "epoch by the validation score is kept")
    batch_frames: int = option(4, help="frames (one-step transitions) per optimiser step", unit="frames")
    lr: float = option(3e-3, help="Adam learning rate at the start; a cosine schedule lowers it to "
                                  "lr_final_fraction x this by the last epoch")
    lr_final_fraction: float = option(0.1, help="learning rate at the end as a fraction of lr")
    val_fraction: float = option(0.2, help="fraction of the usable frames, the last ones, held out "
                                           "for validation")
    patience: int = option(8, help="epochs without a better validation score before training stops",
                           unit="epochs")
    seed: int = option(0, help="seed of the weight initialisation, batch order and validation rollouts")
    device: str = option("cpu", help="cpu, cuda or cuda:N")
    dtype: str = option("float64", help="floating-point precision of the model: float32 or float64")
    cutoff: float | None = option(
        None, unit="um",
        help="interaction range h in um; default: the candidate among cutoff_factors x the median "
             "nearest-neighbour distance (in contact distances with per-particle sizes) with the lowest "
             "held-out NLL after a short fit (3 epochs of at most 8 frames)")
    edge: float | None = option(None, unit="um",
                                help="width of the halo at the field-of-view border in um: its particles "
                                     "are prescribed from the data and left out of the loss; default: "
                                     "the cutoff (no halo in periodic boxes)")
    loc_noise: str | float = option("estimate", unit="um",
                                    help="localisation noise (standard deviation per axis) in um, "
                                         "'estimate' (from the correlation of successive displacements) "
                                         "or 'none'")
    multistep: int = option(1, unit="frames", help="K > 1 adds the K-step likelihood (K frames ahead)")
    s_memory: str = option("encoded", help="how S is obtained along the data: encoded (the encoder predicts "
                                           "S afresh from every frame) or carried (encoded once at the "
                                           "start of an s_window-frame window, then evolved with the "
                                           "model's noise-aware dS/dt, and trained through the window's "
                                           "one-step likelihoods)")
    s_window: int = option(4, unit="frames", help="frames over which S is carried in training "
                                                  "(s_memory carried)")
    s_start: str = option("entry", help="where a carried-S training window's S starts (s_memory carried): "
                                        "entry (S carried from each particle's first frame, as along the "
                                        "data and in the scores) or window (encoded at the window's first "
                                        "frame)")
    s_heat: str = option("drift", help="how carried S books heat along the data (s_memory carried, and "
                                       "S.parquet): drift (the model's expected dS/dt at the posterior "
                                       "velocities) or work (the first law: the latent kinetic energy's "
                                       "loss plus the conservative forces' work along the measured "
                                       "displacement, as the model's own rollouts book it; no mean drift "
                                       "along a stationary film)")
    aux_weight: float = option(0.0, help="weight of the auxiliary loss that teaches S the rearrangement "
                                         "labels (0: S is learned through the likelihood alone)")
    horizon: int = option(3, unit="frames", help="frames ahead within which a rearrangement counts as "
                                                 "coming (ROC AUC of S and the auxiliary loss)")
    transport: str = option("likelihood", help="friction as the likelihood fits it (likelihood), or scaled "
                                               "after training by one factor so that rollouts reproduce the "
                                               "training frames' MSD (msd: the Markovian closure of a "
                                               "velocity memory, for coarse-grained MD such as one particle "
                                               "per star polymer; colloidcg.train.transport)")
    select: str = option("val_nll", help="validation score that picks the best epoch: val_nll (held-out "
                                         "likelihood) or val_msd (rollout MSD error)")
    cutoff_factors: tuple = option((1.05, 1.15, 1.5, 2.5),
                                   help="candidate cutoffs, in median nearest-neighbour distances, when "
                                        "the cutoff is not given")
    covariance: str = option("marginal", help="transition covariance in the likelihood: marginal (per "
                                              "particle) or full (all particles jointly)")
    val_rollout_steps: int = option(20, unit="frames", help="length of the validation rollout over the "
                                                            "held-out frames, in frames")
    max_frames_per_epoch: int | None = option(None, unit="frames",
                                              help="training frames per epoch at most (default: all)")
    progress: bool = option(True, help="show a progress bar")
    checkpoint_dir: str | None = option(None, help="folder for checkpoint/ (every epoch) and best/ "
                                                   "(best validation score so far)")
    grad_clip: float = option(10.0, help="largest gradient norm; larger gradients are scaled down to it")
    size_column: str = option("", help="tracks column with a per-particle size ('size' from the tracker, "
                                       "'diameter' in the synthetic truth): pair ranges scale with the "
                                       "pair's mean size (bidisperse/polydisperse packings); empty: one "
                                       "range for all pairs (the default, empty)")
    model: ModelConfig = option(factory=default_model_config,
                                help="architecture of the model (ModelConfig); its scales are "
                                     "calibrated from the data")

    @classmethod
    def describe(cls, name: str) -> "OptionInfo":
        """Default, help text and unit of option ``name`` (flat names: ``epochs``, ``n_pair``)."""
        return option_info(name)

    def __post_init__(self):
        if isinstance(self.model, ModelConfig):   # each TrainConfig owns its architecture
            self.model = replace(self.model)

    def to_dict(self) -> dict:
        """Plain dict: the training options and ``model``, the architecture options only (what
        config.json's ``train`` record stores; :meth:`from_dict` reads it back)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        d["model"] = {k: getattr(self.model, k) for k in architecture_keys()} \
            if isinstance(self.model, ModelConfig) else self.model
        return d

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "") -> "TrainConfig":
        """A TrainConfig from a dict of options: a ``[train]`` table, a stored ``train``
        record (old ones have the architecture options flat, newer ones under ``model``),
        keyword options. Architecture options may be flat (``n_pair``) or in a ``model``
        dict; lists become tuples. Unknown keys raise :class:`ParameterError` naming the
        key (prefixed by ``where``). Not yet validated: call :meth:`validate`."""
        if not isinstance(d, Mapping):
            raise ParameterError(f"{where.rstrip('.')}: expected a table of training options, got {d!r}")
        arch = architecture_keys()
        train_names = [f.name for f in fields(cls) if f.name != "model"]
        kw, model_kw, model = {}, {}, None

        def put(key, value, label):
            if key in model_kw:
                raise ParameterError(f"{where}{label}: given twice (flat and under 'model')")
            model_kw[key] = value

        for key, value in d.items():
            value = tuple(value) if isinstance(value, list) else value
            if key == "model":
                if isinstance(value, ModelConfig):
                    model = value
                    continue
                if not isinstance(value, Mapping):
                    raise ParameterError(f"{where}model: expected a table of architecture options, "
                                         f"got {value!r}")
                for k, v in value.items():
                    if k not in arch:
                        raise _unknown(f"{where}model.{k}", k, arch)
                    put(k, tuple(v) if isinstance(v, list) else v, f"model.{k}")
            elif key in train_names:
                kw[key] = value
            elif key in arch:
                put(key, value, key)
            else:
                raise _unknown(f"{where}{key}", key, train_names + list(arch) + ["model"])
        base = model if model is not None else default_model_config()
        try:
            return cls(**kw, model=replace(base, **model_kw))
        except TypeError as exc:     # e.g. a non-string key
            raise ParameterError(f"{where.rstrip('.')}: {exc}") from None

    @classmethod
    def option_hints(cls) -> dict[str, typing.Any]:
        """Type hint of every key :meth:`from_dict` accepts: the training options, the
        architecture options (flat) and ``model`` (a dict)."""
        hints = typing.get_type_hints(cls)
        out = {f.name: hints[f.name] for f in fields(cls) if f.name != "model"}
        mhints = typing.get_type_hints(ModelConfig)
        out.update({k: mhints[k] for k in architecture_keys()})
        out["model"] = dict
        return out

    def validate(self, where: str = "") -> "TrainConfig":
        """Check every option before any work (or allocation); lists are accepted where
        tuples are. Raises :class:`ParameterError` naming the option (prefixed by
        ``where``, e.g. a configuration file's ``[train]`` table; architecture options by
        their flat name, e.g. ``n_pair``). Returns self."""
        from ..core.persist import MODEL_LIMITS, s0_share_expected

        pre = f"{where}" if where else ""

        def bad(name, expected, value):
            return ParameterError(f"{pre}{name}: expected {expected}, got {value!r}")

        def integer(name, lo, hi=None, none=False, obj=self):
            v = getattr(obj, name)
            if none and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                rng = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
                raise bad(name, f"an integer {rng}", v)

        def number(name, lo, strict=True, hi=None, none=False):
            v = getattr(self, name)
            if none and v is None:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
                (v > lo if strict else v >= lo) and (hi is None or v <= hi)
            if not ok:
                rng = f"{'>' if strict else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
                raise bad(name, f"a finite number {rng}", v)

        for name in ("epochs", "batch_frames", "patience", "multistep", "horizon", "val_rollout_steps",
                     "s_window"):
            integer(name, 1)
        integer("max_frames_per_epoch", 1, none=True)
        integer("seed", 0)
        m = self.model
        if not isinstance(m, ModelConfig):
            raise bad("model", "a ModelConfig (TrainConfig.from_dict reads dicts)", m)
        defaults = ModelConfig()
        for name in CALIBRATED:
            if getattr(m, name) != getattr(defaults, name):
                raise ParameterError(f"{pre}model.{name}: set by training from the data, not an option; "
                                     f"leave it at {getattr(defaults, name)!r} (got {getattr(m, name)!r})")
        for name in architecture_keys():
            if name in MODEL_LIMITS:
                lo, hi = MODEL_LIMITS[name]
                integer(name, lo, hi, obj=m)
            elif isinstance(getattr(defaults, name), bool) and not isinstance(getattr(m, name), bool):
                raise bad(name, "true or false", getattr(m, name))
        expected = s0_share_expected(m.s0_heat_share, m.n_s)
        if expected:
            raise bad("s0_heat_share", expected, m.s0_heat_share)
        from ..core.terms import REGISTRY
        if not (isinstance(m.terms, dict) and all(isinstance(k, str) and isinstance(v, dict) for k, v in m.terms.items())):
            raise bad("terms", "a table of energy-term names to option tables", m.terms)
        unknown = sorted(set(m.terms) - set(REGISTRY))
        if unknown:
            raise bad("terms", f"energy terms among {sorted(REGISTRY)}", unknown)
        number("lr", 0)
        number("lr_final_fraction", 0, hi=1)
        number("val_fraction", 0, strict=False, hi=0.9)
        number("aux_weight", 0, strict=False)
        number("grad_clip", 0)
        number("cutoff", 0, none=True)
        number("edge", 0, strict=False, none=True)
        if not isinstance(self.progress, bool):
            raise bad("progress", "true or false", self.progress)
        if not isinstance(self.device, str) or not (
                self.device == "cpu" or self.device == "cuda" or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise bad("device", "'cpu', 'cuda' or 'cuda:N'", self.device)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ParameterError(f"{pre}device: {self.device!r} requested but CUDA is not available "
                                 "on this machine; use 'cpu'")
        if self.dtype not in ("float32", "float64"):
            raise bad("dtype", "'float32' or 'float64'", self.dtype)
        if self.select not in ("val_nll", "val_msd"):
            raise bad("select", "'val_nll' or 'val_msd'", self.select)
        if self.transport not in ("likelihood", "msd"):
            raise bad("transport", "'likelihood' or 'msd'", self.transport)
        if self.s_memory not in ("encoded", "carried"):
            raise bad("s_memory", "'encoded' or 'carried'", self.s_memory)
        if self.s_start not in ("entry", "window"):
            raise bad("s_start", "'entry' or 'window'", self.s_start)
        if self.s_heat not in ("drift", "work"):
            raise bad("s_heat", "'drift' or 'work'", self.s_heat)
        if self.s_memory == "carried" and self.covariance != "marginal":
            raise bad("covariance", "'marginal' with s_memory 'carried'", self.covariance)
        if self.covariance not in ("marginal", "full"):
            raise bad("covariance", "'marginal' or 'full'", self.covariance)
        if not isinstance(self.size_column, str):
            raise bad("size_column", "a column name (text)", self.size_column)
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, str):
            raise bad("checkpoint_dir", "a folder name (text)", self.checkpoint_dir)
        ln = self.loc_noise
        if not (ln in ("estimate", "none") or (isinstance(ln, (int, float)) and not isinstance(ln, bool)
                                              and math.isfinite(ln) and ln >= 0)):
            raise bad("loc_noise", "'estimate', 'none' or a length >= 0", ln)
        cf = self.cutoff_factors
        if isinstance(cf, list):
            cf = tuple(cf)
            object.__setattr__(self, "cutoff_factors", cf)
        if not (isinstance(cf, tuple) and cf and all(
                isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0
                for f in cf)):
            raise bad("cutoff_factors", "a non-empty list of positive numbers", self.cutoff_factors)
        if self.aux_weight > 0 and m.n_s < 1:
            raise bad("aux_weight", "0 without entropic variables", self.aux_weight)
        return self


def _unknown(label: str, key, expected) -> ParameterError:
    return ParameterError(f"{label}: unknown option {key!r}; expected one of {', '.join(sorted(expected))}")


def _accept_flat_architecture(cls):
    """Let ``cls(n_pair=0, ...)`` set ``model.n_pair`` and ``obj.n_pair`` read and write it
    (the flat options of TrainConfig before it embedded the ModelConfig)."""
    init = cls.__init__
    names = architecture_keys()

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        flat = {k: kwargs.pop(k) for k in names if k in kwargs}
        init(self, *args, **kwargs)
        if flat:
            self.model = replace(self.model, **flat)

    def alias(name):
        return property(lambda self: getattr(self.model, name),
                        lambda self, value: setattr(self.model, name, value),
                        doc=f"``model.{name}``: {ModelConfig.option_help(name)[0]}")

    cls.__init__ = __init__
    for name in names:
        setattr(cls, name, alias(name))
    return cls


_accept_flat_architecture(TrainConfig)


class OptionInfo(NamedTuple):
    """An option's default, help text and unit (None: a pure number or a name)."""

    default: typing.Any
    help: str
    unit: str | None


def option_info(name: str) -> OptionInfo:
    """Default, help and unit of a TrainConfig option by its flat name (``epochs``,
    ``n_pair``...): the CLI and the napari widget show these instead of repeating them."""
    for f in fields(TrainConfig):
        if f.name == name:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            return OptionInfo(default, f.metadata["help"], f.metadata["unit"])
    if name in architecture_keys():
        text, unit = ModelConfig.option_help(name)
        return OptionInfo(getattr(default_model_config(), name), text, unit)
    raise KeyError(name)
