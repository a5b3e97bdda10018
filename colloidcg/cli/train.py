"""``colloidcg train``: fit the metriplectic model to a tracks table."""

from __future__ import annotations

import argparse
import re

from ._common import add_calibration, add_output, folder_output, config_default, config_help, length


#: TrainConfig options that are lengths (um, or with the px suffix).
LENGTHS = ("cutoff", "edge", "loc_noise")
#: TrainConfig options set by flags of the same name (dest); --cutoff, --edge and --loc-noise
#: are lengths converted to um first.
CONFIG_FLAGS = ("epochs", "batch_frames", "lr", "device", "seed", "multistep", "aux_weight", "n_s",
                "ordered_s", "s0_heat_share", "dtype", "s_memory", "s_window", "s_heat", "transport",
                "substrate", "deviatoric", "cutoff_factors", "n_kernel", "n_pair", "select", "size_column",
                "frame_average", "progress")


def add_parser(subparsers) -> None:
    from ..train import TrainConfig

    def d(name):
        return config_default(TrainConfig, name)

    def h(name, extra=""):    # the option's help text, from TrainConfig, in flag names
        text = config_help(TrainConfig, name)
        for other in CONFIG_FLAGS:
            if "_" in other:
                text = re.sub(rf"\b{other}\b", "--" + other.replace("_", "-"), text)
        text = text.replace("lr_final_fraction", f"{d('lr_final_fraction'):g}")
        if name in LENGTHS:
            text = text.replace(" in um", " in um (or with a unit: 2.4um, 24px)", 1)
        return text + extra

    def off(name):           # a --no-X switch: what "off" means, then the default
        on, _, without = h(name).partition("; off: ")
        return f"{without}; default: {on}"

    def on(name):            # an --X switch that is off by default: what it does, then the default
        does, _, without = h(name).partition("; off: ")
        return f"{does}; default: off ({without})"

    p = subparsers.add_parser(
        "train", help="fit the stochastic particle model to tracks",
        description="Fit the structure-preserving (metriplectic) particle model to a tracks "
                    "table; writes model.pt, config.json, report.json, S.parquet (S carried along the "
                    "data) and loss/validation plots. "
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
    p.add_argument("--epochs", type=int, default=d("epochs"), metavar="N", help=h("epochs"))
    p.add_argument("--batch-frames", type=int, default=d("batch_frames"), dest="batch_frames",
                   metavar="N", help=h("batch_frames"))
    p.add_argument("--lr", type=float, default=d("lr"),
                   help=h("lr"))
    p.add_argument("--device", default=d("device"), help=h("device"))
    p.add_argument("--seed", type=int, default=d("seed"), help=h("seed"))
    p.add_argument("--cutoff", type=length, default=None, metavar="LENGTH",
                   help=h("cutoff"))
    p.add_argument("--edge", type=length, default=None, metavar="LENGTH", help=h("edge"))
    p.add_argument("--loc-noise", default=d("loc_noise"), dest="loc_noise", metavar="SIGMA",
                   help=h("loc_noise"))
    p.add_argument("--multistep", type=int, default=d("multistep"), metavar="K", help=h("multistep"))
    p.add_argument("--s-memory", default=d("s_memory"), dest="s_memory", choices=["encoded", "carried"],
                   help=h("s_memory"))
    p.add_argument("--s-window", type=int, default=d("s_window"), dest="s_window", metavar="K",
                   help=h("s_window"))
    p.add_argument("--s-heat", default=d("s_heat"), dest="s_heat", choices=["drift", "work"],
                   help=h("s_heat"))
    p.add_argument("--aux-weight", type=float, default=d("aux_weight"), dest="aux_weight",
                   help=h("aux_weight", "; the labels come from --rearrangements"))
    p.add_argument("--n-s", type=int, default=d("n_s"), dest="n_s", help=h("n_s"))
    p.add_argument("--ordered-s", action="store_true", default=d("ordered_s"), dest="ordered_s",
                   help=on("ordered_s"))
    p.add_argument("--s0-heat-share", type=float, default=d("s0_heat_share"), dest="s0_heat_share",
                   metavar="W", help=h("s0_heat_share"))
    p.add_argument("--dtype", default=d("dtype"), choices=["float32", "float64"], help=h("dtype"))
    p.add_argument("--box", type=length, nargs="+", default=None, metavar="L",
                   help="periodic box lengths, um, or in px with the suffix (512px); a bare "
                        "number is accepted only where um and px coincide (MD tracks), since it "
                        "meant px in earlier versions; default: the "
                        "tracks' sidecar meta.box_px (colloidcg md-read), else open boundaries")
    p.add_argument("--no-substrate", action="store_false", dest="substrate", help=off("substrate"))
    p.add_argument("--deviatoric", action="store_true", default=d("deviatoric"), help=h("deviatoric"))
    p.add_argument("--cutoff-factors", type=float, nargs="+", default=d("cutoff_factors"),
                   dest="cutoff_factors", metavar="F", help=h("cutoff_factors"))
    p.add_argument("--n-kernel", type=int, default=d("n_kernel"), dest="n_kernel", help=h("n_kernel"))
    p.add_argument("--n-pair", type=int, default=d("n_pair"), dest="n_pair", help=h("n_pair"))
    p.add_argument("--select", default=d("select"), choices=["val_nll", "val_msd"], help=h("select"))
    p.add_argument("--transport", default=d("transport"), choices=["likelihood", "msd"], help=h("transport"))
    p.add_argument("--size-column", default=d("size_column"), dest="size_column", metavar="COLUMN",
                   help=h("size_column"))
    p.add_argument("--no-frame-average", action="store_false", dest="frame_average", help=off("frame_average"))
    p.add_argument("--quiet", action="store_false", dest="progress", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math

    from ..errors import ParameterError
    from ..outputs import check_unique_rows, output_folder, read_table
    from ..train import MODEL_FILES, TrainConfig, train_tracks
    from ..data import _meta_value
    from ._common import Length
    from ._common import length as parse_length

    out = folder_output(args)
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
    options = {name: getattr(args, name) for name in CONFIG_FLAGS}
    cfg = TrainConfig.from_dict({**options, "cutoff": cutoff, "edge": edge, "loc_noise": loc})
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
        labels = lag = None
        if args.rearrangements:
            labels, lab_meta = read_table(args.rearrangements, required=["frame", "particle", "rearranging"])
            check_unique_rows(labels, args.rearrangements)
            lag = (lab_meta.get("parameters") or {}).get("lag_frames")
        result = train_tracks(tracks, meta, cfg, tx.new, labels=labels, fps=args.fps,
                              um_per_px=args.um_per_px, box_px=box_px, source=args.tracks,
                              final_dir=out.resolve(), labels_lag=lag)
    report = result.report
    auc = report.get("rearrangement_auc", {})
    msg = (f"trained {report['epochs_run']} epochs (best {report['best_epoch']}, validation MSD error "
           f"{report['best_val_score']:.3g}); model in {out}")
    if auc.get("S") is not None and math.isfinite(auc["S"]):
        msg += f"; rearrangement ROC AUC of S: {auc['S']:.3f}"
    elif auc.get("n"):   # e.g. a short film: no rearranging row within the horizon there
        msg += "; rearrangement ROC AUC of S: undefined (the validation frames hold one class)"
    cs = report.get("carried_s_auc", {})
    if "S0" in cs:
        msg += (f"; carried S on the softness test rows: {cs['S0']['auc']:.3f} (softness "
                f"{cs['softness']['auc']:.3f} +- {cs['softness']['se']:.3f})")
    steps = (report.get("rollout_stability") or {}).get("substeps", 1)
    if steps > 1:
        msg += (f"; its rollouts need {steps} integration steps per frame (colloidcg simulate "
                "--substeps auto)")
    print(msg)
    return 0
