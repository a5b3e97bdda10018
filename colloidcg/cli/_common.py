"""Argument helpers shared by several subcommands."""

from __future__ import annotations

import argparse


def add_output(p: argparse.ArgumentParser, required: bool = True, help: str = "output folder") -> None:
    p.add_argument("-o", "--output", required=required, metavar="OUT_DIR", help=help)
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: refuse and write nothing)")


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


def add_calibration(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=positive_float, default=None,
                   help="frame rate in frames per second (overrides the file and colloidcg.toml)")
    p.add_argument("--um-per-px", type=positive_float, default=None, dest="um_per_px",
                   help="pixel size in micrometres (overrides the file and colloidcg.toml)")


def add_tiff_axis(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiff-axis", choices=("T", "Z", "C"), default=None, dest="tiff_axis",
                   help="what a TIFF stack's only non-spatial axis holds: T (frames in time), "
                        "Z (one z stack) or C (channels; channel 0 is read). Default: the "
                        "file's labels, except that an unlabelled 'channel' axis of more than 4 "
                        "is time (overrides tiff_axis in colloidcg.toml)")
