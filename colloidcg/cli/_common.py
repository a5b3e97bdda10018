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
