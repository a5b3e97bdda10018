"""``colloidcg train``: fit the metriplectic model to a tracks table."""

from __future__ import annotations

import argparse

from ._common import add_calibration, add_output


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="fit the stochastic particle model to tracks",
        description="Fit the structure-preserving (metriplectic) particle model to a tracks "
                    "table; writes model.pt, config.json, report.json and loss/validation plots.")
    p.add_argument("tracks", metavar="TRACKS.parquet", help="tracks table (frame, particle, x, y in px)")
    add_output(p, help="model folder to write")
    add_calibration(p)
    p.add_argument("--rearrangements", metavar="R.parquet", default=None,
                   help="rearrangement table with frame, particle, rearranging [, d2min]: "
                        "used for the ROC AUC of S and, with --aux-weight, an auxiliary loss")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-frames", type=int, default=4, dest="batch_frames")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cutoff", type=float, default=None, help="interaction range in um (default: 2.5 x nearest-neighbour distance)")
    p.add_argument("--edge", type=float, default=None, help="halo width at the image border in um (default: the cutoff)")
    p.add_argument("--loc-noise", default="estimate", dest="loc_noise",
                   help="localisation noise in um, 'estimate' (default) or 'none'")
    p.add_argument("--multistep", type=int, default=1, help="add the K-step likelihood (K > 1)")
    p.add_argument("--aux-weight", type=float, default=0.0, dest="aux_weight")
    p.add_argument("--n-s", type=int, default=1, dest="n_s", help="number of entropic variables per particle")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--box", type=float, nargs="+", default=None, metavar="L",
                   help="periodic box lengths in px (simulation data); default: the tracks' sidecar "
                        "meta.box_px (colloidcg md-read), else open boundaries")
    p.add_argument("--no-substrate", action="store_true", dest="no_substrate",
                   help="no friction against the solvent/substrate (momentum-conserving model)")
    p.add_argument("--deviatoric", action="store_true", help="add the deviatoric (shear) energy, for solids")
    p.add_argument("--cutoff-factors", type=float, nargs="+", default=None, dest="cutoff_factors",
                   metavar="F", help="candidate cutoffs, in median nearest-neighbour distances, when "
                                     "--cutoff is not given (default 1.05 1.15 1.5 2.5)")
    p.add_argument("--n-kernel", type=int, default=4, dest="n_kernel",
                   help="basis functions of the learned kernel (default 4)")
    p.add_argument("--n-pair", type=int, default=8, dest="n_pair",
                   help="terms of the learned repulsive pair energy (soft-sphere contacts; default 8, "
                        "0: none, the density-kernel energy alone)")
    p.add_argument("--select", default="val_nll", choices=["val_nll", "val_msd"],
                   help="validation score that picks the best epoch (default val_nll)")
    p.add_argument("--size-column", default="", dest="size_column", metavar="COLUMN",
                   help="per-particle size column of the tracks (e.g. 'size' from the tracker) for "
                        "bidisperse/polydisperse packings: pair ranges scale with the pair's mean size")
    p.add_argument("--no-frame-average", action="store_false", dest="frame_average",
                   help="read velocities as instantaneous, not as frame averages (particle data "
                        "recorded at the integration step)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from ..errors import ParameterError
    from ..outputs import check_unique_rows, output_folder, read_table
    from ..train import MODEL_FILES, TrainConfig, train_tracks

    out = Path(args.output)
    loc = args.loc_noise
    if loc not in ("estimate", "none"):
        try:
            loc = float(loc)
        except ValueError:
            raise ParameterError(f"--loc-noise: expected a number in um, 'estimate' or 'none', got {loc!r}") from None
    cfg = TrainConfig(epochs=args.epochs, batch_frames=args.batch_frames, lr=args.lr, device=args.device,
                      seed=args.seed, cutoff=args.cutoff, edge=args.edge, loc_noise=loc,
                      multistep=args.multistep, aux_weight=args.aux_weight, n_s=args.n_s,
                      dtype=args.dtype, substrate=not args.no_substrate, deviatoric=args.deviatoric,
                      progress=not args.quiet, n_kernel=args.n_kernel, n_pair=args.n_pair, select=args.select,
                      frame_average=args.frame_average, size_column=args.size_column,
                      **({"cutoff_factors": tuple(args.cutoff_factors)} if args.cutoff_factors else {}))
    try:
        cfg.validate()
    except ParameterError as exc:   # name the flag, not the option
        name, _, rest = str(exc).partition(":")
        raise ParameterError(f"--{name.replace('_', '-')}:{rest}") from None
    if args.box is not None and not all(math.isfinite(b) and b > 0 for b in args.box):
        raise ParameterError(f"--box: expected positive lengths in px, got {args.box}")
    with output_folder(out, MODEL_FILES, args.overwrite) as tx:
        tracks, meta = read_table(args.tracks, required=["frame", "particle", "x", "y"])
        check_unique_rows(tracks, args.tracks)
        labels = None
        if args.rearrangements:
            labels, _ = read_table(args.rearrangements, required=["frame", "particle", "rearranging"])
            check_unique_rows(labels, args.rearrangements)
        result = train_tracks(tracks, meta, cfg, tx.new, labels=labels, fps=args.fps,
                              um_per_px=args.um_per_px, box_px=args.box, source=args.tracks,
                              final_dir=out.resolve())
    report = result.report
    auc = report.get("rearrangement_auc", {})
    msg = (f"trained {report['epochs_run']} epochs (best {report['best_epoch']}, validation MSD error "
           f"{report['best_val_score']:.3g}); model in {out}")
    if auc.get("S") is not None:
        msg += f"; rearrangement ROC AUC of S: {auc['S']:.3f}"
    print(msg)
    return 0
