"""The ``colloidcg`` command line.

Each subcommand lives in its own module in this package and defines
``add_parser(subparsers)``, which registers an ``argparse`` sub-parser whose default
``func`` takes the parsed arguments and returns an exit code. Modules are discovered
automatically; heavy libraries are imported inside the ``func`` so that ``--help`` stays
fast.

User errors (:class:`colloidcg.errors.ColloidcgError`) are printed as one line and give
exit code 2; no traceback is shown for them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings

from .._version import __version__
from ..errors import ColloidcgError
from ._common import DefaultsHelpFormatter, RawDescriptionDefaultsHelpFormatter

#: The order subcommands appear in ``colloidcg --help``; others follow alphabetically.
ORDER = ("info", "synth", "track", "rearrangements", "train", "simulate", "upsample", "macro", "evaluate",
         "export", "batch", "demo")


def _subcommand_modules(only: str | None = None):
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    if only is not None:
        names = [n for n in names if n == only]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    for name in names:
        mod = importlib.import_module(f"{__name__}.{name}")
        if hasattr(mod, "add_parser"):
            yield mod


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every subcommand, or with ``only`` (a module name of this
    package) that one alone, so that a command does not import what the others need for
    their options (``train``'s import torch: about 3.5 s of every ``colloidcg track``)."""
    parser = argparse.ArgumentParser(
        prog="colloidcg",
        description="Colloid microscopy video in; trajectories, rearrangements and a "
                    "learned stochastic particle model out.",
    )
    parser.add_argument("--version", action="version", version=f"colloidcg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _subcommand_modules(only):
        mod.add_parser(sub)
    for sp in sub.choices.values():     # every flag's help says its default
        raw = issubclass(sp.formatter_class, argparse.RawDescriptionHelpFormatter)
        sp.formatter_class = RawDescriptionDefaultsHelpFormatter if raw else DefaultsHelpFormatter
    return parser


def _command_module(argv: list[str]) -> str | None:
    """The module of the subcommand ``argv`` names first, if it is one."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is None or first.startswith("_"):
        return None
    name = first.replace("-", "_")
    return name if any(m.name == name for m in pkgutil.iter_modules(__path__)) else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_module(argv))
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except ColloidcgError as exc:
        print(f"colloidcg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"colloidcg {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def run() -> None:  # pragma: no cover - console-script shim
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # the output went into a reader that stopped early (`colloidcg info X | head`):
        # not an error; keep Python from complaining again when it flushes at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
