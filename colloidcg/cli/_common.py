"""Argument helpers shared by several subcommands."""

from __future__ import annotations

import argparse


def add_output(p: argparse.ArgumentParser, required: bool = True, help: str = "output folder") -> None:
    p.add_argument("-o", "--output", required=required, metavar="OUT_DIR", help=help)
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: refuse and write nothing)")


def add_table_output(p: argparse.ArgumentParser, name: str) -> None:
    """-o TABLE.parquet (a sidecar TABLE.json is written beside it) and --overwrite."""
    p.add_argument("-o", "--output", required=True, metavar=f"{name}.parquet",
                   help=f"output table, a file name ending in .parquet (its sidecar {name}.json is "
                        "written beside it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: refuse and write nothing)")


def table_output(args: argparse.Namespace):
    """The -o path of :func:`add_table_output`, checked: a ParameterError unless it ends in
    .parquet."""
    from pathlib import Path

    from ..errors import ParameterError
    out = Path(args.output)
    if out.suffix != ".parquet":
        raise ParameterError(f"-o: {out}: expected a .parquet file name")
    return out


#: Endings of the files colloidcg writes or reads: an output *folder* named like one of
#: them is almost always a mistaken -o (``track video.avi -o tracks.parquet`` made a folder
#: that later commands, and pandas, took for a table)
FILE_SUFFIXES = (".parquet", ".json", ".csv", ".pt", ".npz", ".png", ".tif", ".tiff")


def folder_output(args: argparse.Namespace):
    """The -o path of :func:`add_output`, checked: a ParameterError when its name ends like
    a file's (:data:`FILE_SUFFIXES`); the command's outputs go inside the folder."""
    from pathlib import Path

    from ..errors import ParameterError
    out = Path(args.output)
    if out.suffix.lower() in FILE_SUFFIXES:
        raise ParameterError(f"-o: {out}: expected an output folder (the command writes its files inside it), "
                             f"not a {out.suffix} file name; e.g. -o {out.with_suffix('')}")
    return out


def torch_device(dev: str) -> str:
    """``--device``: 'cpu', 'cuda' or 'cuda:N', and CUDA only where torch sees it
    (ParameterError otherwise)."""
    import torch

    from ..errors import ParameterError
    if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ParameterError(f"--device: expected 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"--device: {dev!r} requested but CUDA is not available")
    return dev


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (calibration flags)."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text!r}")
    return v


def add_calibration(p: argparse.ArgumentParser, source: str = "the file and colloidcg.toml") -> None:
    p.add_argument("--fps", type=positive_float, default=None,
                   help=f"frame rate, frames per second (default: from {source})")
    p.add_argument("--um-per-px", type=positive_float, default=None, dest="um_per_px",
                   help=f"pixel size, um per px (default: from {source})")


def add_tiff_axis(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiff-axis", choices=("T", "Z", "C"), default=None, dest="tiff_axis",
                   help="what a TIFF stack's only non-spatial axis holds: T (frames in time), "
                        "Z (one z stack) or C (channels; channel 0 is read). Default: the "
                        "file's labels, except that an unlabelled 'channel' axis of more than 4 "
                        "is time (overrides tiff_axis in colloidcg.toml)")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless the help already names its
    default or the default is empty (None, False, a switch); every subcommand uses it."""

    def _get_help_string(self, action):
        h = action.help or ""
        d = action.default
        if "%(default)" in h or "default" in h.lower() or d is None or d is False or d is True \
                or d == "" or d is argparse.SUPPRESS or not action.option_strings:
            return h
        if isinstance(d, (list, tuple)):
            d = " ".join(str(x) for x in d)
        return f"{h} (default: {d})" if h else f"default: {d}"


class RawDescriptionDefaultsHelpFormatter(DefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`DefaultsHelpFormatter` that keeps the description's and epilog's line breaks."""


def _config_option(cls, name: str) -> tuple:
    """(default, help) of option ``name`` of the dataclass ``cls``: from ``cls.describe``
    where the class describes its options itself (TrainConfig: its embedded architecture
    options too), else from the field and its metadata (``help``)."""
    import dataclasses

    if hasattr(cls, "describe"):
        info = cls.describe(name)
        return info.default, info.help
    for f in dataclasses.fields(cls):
        if f.name == name:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            return default, f.metadata.get("help", "")
    raise KeyError(name)


def config_default(cls, name: str):
    """The default of option ``name`` of the dataclass ``cls`` (e.g. TrainConfig), so that
    the command line shows the library's own defaults instead of repeating them."""
    return _config_option(cls, name)[0]


def config_help(cls, name: str) -> str:
    """The help text (with its unit) of option ``name`` of the dataclass ``cls``, from the
    field's metadata, so that the command line does not repeat it."""
    return _config_option(cls, name)[1]


class Length(float):
    """A length given on the command line, with the unit it was given in (``um`` or
    ``px``; ``None`` when the number carried no unit)."""

    unit: str | None

    def __new__(cls, value: float, unit: str | None):
        obj = super().__new__(cls, value)
        obj.unit = unit
        return obj

    def to_um(self, um_per_px: float, bare: str = "um") -> float:
        unit = self.unit or bare
        return float(self) * um_per_px if unit == "px" else float(self)

    def to_px(self, um_per_px: float, bare: str = "px") -> float:
        unit = self.unit or bare
        return float(self) / um_per_px if unit == "um" else float(self)


def length(text: str) -> Length:
    """argparse type: a finite length >= 0, optionally with a unit suffix: ``12``, ``1.5um``,
    ``1.5µm`` or ``16px``."""
    import math
    import re

    m = re.fullmatch(r"\s*([-+0-9.eE]+)\s*(um|µm|μm|px)?\s*", text)
    try:
        v = float(m.group(1)) if m else float("nan")
    except ValueError:
        v = float("nan")
    if not m or not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(
            f"expected a length >= 0, a number optionally followed by um or px (e.g. 1.5um, 16px), "
            f"got {text!r}")
    unit = m.group(2)
    return Length(v, "um" if unit in ("µm", "μm") else unit)


def auto_or_int(minimum: int):
    """An argparse type: 'auto' or an integer >= ``minimum``."""
    def parse(text: str) -> int | str:
        if text.strip().lower() == "auto":
            return "auto"
        try:
            k = int(text)
        except ValueError:
            k = minimum - 1
        if k < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum} or 'auto', got {text!r}")
        return k
    return parse


#: --substeps: a positive integer or 'auto'.
substeps_arg = auto_or_int(1)
