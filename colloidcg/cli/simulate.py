"""``colloidcg simulate``: roll a trained model forward from a measured frame."""

from __future__ import annotations

import argparse

from ._common import add_table_output, substeps_arg, table_output, torch_device


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="run a trained model from a frame of a tracks table",
        description="Stochastic rollout of a trained model, started from one frame of a tracks "
                    "table; writes the result in the tracks schema (px, frames) to the "
                    ".parquet file given with -o, with a JSON sidecar beside it. Lengths in px, "
                    "times in frames.")
    p.add_argument("model", metavar="MODEL", help="model folder written by colloidcg train, or a "
                                                 "bundle written by colloidcg export")
    p.add_argument("--init", required=True, metavar="TRACKS.parquet", help="tracks table (px, frames) to start from; "
                   "particles near its field-of-view edge are prescribed from it as a halo")
    p.add_argument("--frame", type=int, default=None, metavar="F",
                   help="frame number of --init to start from (default: the second frame)")
    p.add_argument("--steps", type=int, required=True, metavar="N",
                   help="number of frames to simulate (required)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise; same seed, same rollout")
    p.add_argument("--substeps", type=substeps_arg, default=1, metavar="K",
                   help="integration steps per frame, or auto: the fewest that keep the rollout stable "
                        "(steep contact forces need several; default 1, with a warning where one step is "
                        "unstable)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--fast", action="store_true",
                   help="tabulated pair functions and equation of state (faster; the tabulation error is "
                        "reported in the sidecar; default: exact)")
    add_table_output(p, "SIM")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import load_model
    from ..errors import ParameterError
    from ..outputs import output_folder, provenance, read_table, write_table
    from ..simulate import simulate

    out = table_output(args)
    if args.steps < 1:
        raise ParameterError(f"--steps: must be >= 1, got {args.steps}")
    torch_device(args.device)
    with output_folder(out.parent, [out.name, out.with_suffix(".json").name], args.overwrite,
                       option=f"-o {out}: folder") as tx:
        model, cfg = load_model(args.model, device=args.device)
        tracks, meta = read_table(args.init, required=["frame", "particle", "x", "y"])
        sim = simulate(model, cfg, tracks, meta, steps=args.steps, frame=args.frame, seed=args.seed,
                       substeps=args.substeps, fast=args.fast, name=str(args.init))
        side = provenance("simulate", {"model": args.model, "init": args.init},
                          {**sim.parameters, "device": args.device},
                          units={"x": "px", "y": "px", "vx": "px/frame", "vy": "px/frame", "frame": "frame"},
                          meta=sim.meta)
        write_table(tx.path(out.name), sim.tracks, side)
    print(f"simulated {args.steps} frames of {sim.parameters['n_particles']} particles from frame "
          f"{sim.parameters['frame']}: {out}")
    return 0
