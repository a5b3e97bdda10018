"""Argument helpers shared by several subcommands."""

from __future__ import annotations

import argparse


def add_output(p: argparse.ArgumentParser, required: bool = True, help: str = "output folder") -> None:
    p.add_argument("-o", "--output", required=required, metavar="OUT_DIR", help=help)
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: refuse and write nothing)")


def add_calibration(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate in frames per second (overrides the file and colloidcg.toml)")
    p.add_argument("--um-per-px", type=float, default=None, dest="um_per_px",
                   help="pixel size in micrometres (overrides the file and colloidcg.toml)")


def add_tiff_axis(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiff-axis", choices=("T", "Z", "C"), default=None, dest="tiff_axis",
                   help="what a TIFF stack's only non-spatial axis holds: T (frames in time), "
                        "Z (one z stack) or C (channels; channel 0 is read). Default: the "
                        "file's labels, except that an unlabelled 'channel' axis of more than 4 "
                        "is time (overrides tiff_axis in colloidcg.toml)")
