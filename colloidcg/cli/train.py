"""``colloidcg train``: fit the metriplectic model to a tracks table."""

from __future__ import annotations

import argparse

from ._common import add_calibration, add_output, config_default, length


def add_parser(subparsers) -> None:
    from ..train import TrainConfig

    def d(name):
        return config_default(TrainConfig, name)

    p = subparsers.add_parser(
        "train", help="fit the stochastic particle model to tracks",
        description="Fit the structure-preserving (metriplectic) particle model to a tracks "
                    "table; writes model.pt, config.json, report.json and loss/validation plots. "
                    "Units: every length option (--cutoff, --edge, --loc-noise, --box) is in um "
                    "(for MD tracks from colloidcg md-read: the trajectory's length unit); a "
                    "number may carry its unit, e.g. --cutoff 2.4um or --cutoff 24px (px are "
                    "converted with the pixel size). Times are in frames.")
    p.add_argument("tracks", metavar="TRACKS.parquet",
                   help="tracks table (frame, particle, x, y in px) with its JSON sidecar, e.g. "
                        "from colloidcg track")
    add_output(p, help="model folder to write")
    add_calibration(p, source="the tracks' sidecar")
    p.add_argument("--rearrangements", metavar="R.parquet", default=None,
                   help="rearrangement table with frame, particle, rearranging [, d2min]: "
                        "used for the ROC AUC of S and, with --aux-weight, an auxiliary loss "
                        "(default: none)")
    p.add_argument("--epochs", type=int, default=d("epochs"), metavar="N",
                   help="training epochs, each a pass over the training frames; the best epoch "
                        "by the validation score is kept")
    p.add_argument("--batch-frames", type=int, default=d("batch_frames"), dest="batch_frames",
                   metavar="N", help="frames (one-step transitions) per optimiser step")
    p.add_argument("--lr", type=float, default=d("lr"),
                   help=f"Adam learning rate at the start; it decays to "
                        f"{d('lr_final_fraction'):g} x this by the last epoch")
    p.add_argument("--device", default=d("device"), help="cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=d("seed"),
                   help="seed of the weight initialisation, batch order and validation rollouts")
    p.add_argument("--cutoff", type=length, default=None, metavar="LENGTH",
                   help="interaction range, um (or with a unit: 2.4um, 24px); default: chosen "
                        "among --cutoff-factors x the median nearest-neighbour distance by the "
                        "held-out likelihood of short fits")
    p.add_argument("--edge", type=length, default=None, metavar="LENGTH",
                   help="width of the halo at the field-of-view border whose particles are "
                        "prescribed from the data and left out of the loss, um (or 24px); "
                        "default: the cutoff")
    p.add_argument("--loc-noise", default=d("loc_noise"), dest="loc_noise", metavar="SIGMA",
                   help="localisation noise (standard deviation per axis), um (or with px), "
                        "'estimate' (from the tracks) or 'none'")
    p.add_argument("--multistep", type=int, default=d("multistep"), metavar="K",
                   help="K > 1 adds the K-step likelihood (K frames ahead)")
    p.add_argument("--aux-weight", type=float, default=d("aux_weight"), dest="aux_weight",
                   help="weight of the auxiliary loss that teaches S the rearrangement labels "
                        "of --rearrangements (0: S is learned through the likelihood alone)")
    p.add_argument("--n-s", type=int, default=d("n_s"), dest="n_s",
                   help="number of entropic variables per particle")
    p.add_argument("--dtype", default=d("dtype"), choices=["float32", "float64"],
                   help="floating-point precision of the model")
    p.add_argument("--box", type=length, nargs="+", default=None, metavar="L",
                   help="periodic box lengths, um, or in px with the suffix (512px); a bare "
                        "number is accepted only where um and px coincide (MD tracks), since it "
                        "meant px in earlier versions; default: the "
                        "tracks' sidecar meta.box_px (colloidcg md-read), else open boundaries")
    p.add_argument("--no-substrate", action="store_true", dest="no_substrate",
                   help="no friction against the solvent/substrate (momentum-conserving model)")
    p.add_argument("--deviatoric", action="store_true", help="add the deviatoric (shear) energy, for solids")
    p.add_argument("--cutoff-factors", type=float, nargs="+", default=d("cutoff_factors"),
                   dest="cutoff_factors", metavar="F",
                   help="candidate cutoffs, in median nearest-neighbour distances, when --cutoff "
                        "is not given")
    p.add_argument("--n-kernel", type=int, default=d("n_kernel"), dest="n_kernel",
                   help="basis functions of the learned kernel")
    p.add_argument("--n-pair", type=int, default=d("n_pair"), dest="n_pair",
                   help="terms of the learned repulsive pair energy (soft-sphere contacts; "
                        "0: none, the density-kernel energy alone)")
    p.add_argument("--select", default=d("select"), choices=["val_nll", "val_msd"],
                   help="validation score that picks the best epoch: held-out likelihood or "
                        "rollout MSD error")
    p.add_argument("--size-column", default=d("size_column"), dest="size_column", metavar="COLUMN",
                   help="per-particle size column of the tracks (e.g. 'size' from the tracker) for "
                        "bidisperse/polydisperse packings: pair ranges scale with the pair's mean "
                        "size (default: none, one range for all pairs)")
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
    from ..data import _meta_value
    from ._common import Length
    from ._common import length as parse_length

    out = Path(args.output)
    loc = args.loc_noise
    if loc not in ("estimate", "none"):
        try:
            loc = parse_length(loc)
        except argparse.ArgumentTypeError:
            raise ParameterError(f"--loc-noise: expected a length in um (or with px), 'estimate' or "
                                 f"'none', got {loc!r}") from None
    um_per_px = args.um_per_px

    def pixel_size() -> float:      # px are converted with the pixel size of the tracks' sidecar
        nonlocal um_per_px
        if um_per_px is None:
            _, side = read_table(args.tracks, required=["frame", "particle", "x", "y"])
            um_per_px = _meta_value(side, "um_per_px") or 1.0
        return um_per_px

    def um(v):
        return v.to_um(pixel_size()) if isinstance(v, Length) and v.unit == "px" else (
            float(v) if isinstance(v, Length) else v)

    loc, cutoff, edge = um(loc), um(args.cutoff), um(args.edge)
    cfg = TrainConfig(epochs=args.epochs, batch_frames=args.batch_frames, lr=args.lr, device=args.device,
                      seed=args.seed, cutoff=cutoff, edge=edge, loc_noise=loc,
                      multistep=args.multistep, aux_weight=args.aux_weight, n_s=args.n_s,
                      dtype=args.dtype, substrate=not args.no_substrate, deviatoric=args.deviatoric,
                      progress=not args.quiet, n_kernel=args.n_kernel, n_pair=args.n_pair, select=args.select,
                      frame_average=args.frame_average, size_column=args.size_column,
                      cutoff_factors=tuple(args.cutoff_factors))
    try:
        cfg.validate()
    except ParameterError as exc:   # name the flag, not the option
        name, _, rest = str(exc).partition(":")
        raise ParameterError(f"--{name.replace('_', '-')}:{rest}") from None
    box_px = None
    if args.box is not None:
        if not all(math.isfinite(b) and b > 0 for b in args.box):
            raise ParameterError(f"--box: expected positive lengths, got {[float(b) for b in args.box]}")
        if any(b.unit is None for b in args.box) and pixel_size() != 1.0:
            raise ParameterError(
                f"--box: give the unit, e.g. --box {args.box[0] * pixel_size():g}um or --box "
                f"{float(args.box[0]):g}px: lengths of colloidcg train are in um, and a bare --box was "
                f"read as px in earlier versions (the tracks' pixel size is {pixel_size():g} um)")
        box_px = [b.to_px(pixel_size(), bare="um") for b in args.box]
    with output_folder(out, MODEL_FILES, args.overwrite) as tx:
        tracks, meta = read_table(args.tracks, required=["frame", "particle", "x", "y"])
        check_unique_rows(tracks, args.tracks)
        labels = None
        if args.rearrangements:
            labels, _ = read_table(args.rearrangements, required=["frame", "particle", "rearranging"])
            check_unique_rows(labels, args.rearrangements)
        result = train_tracks(tracks, meta, cfg, tx.new, labels=labels, fps=args.fps,
                              um_per_px=args.um_per_px, box_px=box_px, source=args.tracks,
                              final_dir=out.resolve())
    report = result.report
    auc = report.get("rearrangement_auc", {})
    msg = (f"trained {report['epochs_run']} epochs (best {report['best_epoch']}, validation MSD error "
           f"{report['best_val_score']:.3g}); model in {out}")
    if auc.get("S") is not None:
        msg += f"; rearrangement ROC AUC of S: {auc['S']:.3f}"
    print(msg)
    return 0
