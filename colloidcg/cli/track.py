"""``colloidcg track VIDEO -o OUT_DIR``: locate and link every particle."""

from __future__ import annotations

import sys

from ..io.readers import video_arg_help
from ._common import add_calibration, add_output, folder_output, add_tiff_axis


def _odd_int(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive odd integer (px), got {text!r}") from None
    return v


def add_parser(sub) -> None:
    p = sub.add_parser(
        "track", help="locate and link particles: VIDEO -> OUT_DIR/tracks.parquet (+ tracks.json)",
        description="Track every particle of a video with sub-pixel accuracy. Parameters left "
                    "out are estimated from the data; the ones used, and whether each was given "
                    "or estimated, are saved in OUT_DIR/tracks.json.")
    p.add_argument("video", help=video_arg_help())     # the formats of colloidcg.io.readers' table
    add_output(p)
    g = p.add_argument_group("tracking parameters (default: estimated from the video)")
    g.add_argument("--diameter", type=_odd_int, metavar="PX",
                   help="spot diameter, odd integer, px (default: estimated from the video)")
    g.add_argument("--minmass", type=float, metavar="M",
                   help="minimum integrated brightness of a particle, in band-passed grey values (the tracks' mass column; default: estimated above the noise floor)")
    g.add_argument("--separation", type=float, metavar="PX",
                   help="minimum distance between particles, px (default: estimated, 0.6 x the neighbour spacing, at most 0.85 x the diameter)")
    g.add_argument("--search-range", type=float, dest="search_range",
                   metavar="PX", help="largest displacement between frames, px (default: estimated from the displacements)")
    g.add_argument("--memory", type=int, default=3,
                   metavar="N",
                   help="frames a particle may vanish and keep its identity (default 3)")
    inv = g.add_mutually_exclusive_group()
    inv.add_argument("--invert", dest="invert", action="store_true", default=None,
                     help="particles are dark on a bright background (default: contrast estimated)")
    inv.add_argument("--no-invert", dest="invert", action="store_false",
                     help="particles are bright on a dark background")
    inv.add_argument("--contrast", choices=("bright", "dark", "both"),
                     help="particle contrast; 'both': mixed bright and dark particles in one "
                          "field (bright field around focus), each row gets contrast +1 or -1 (default: estimated)")
    g.add_argument("--objects", choices=("spots", "cells"),
                   help="what is tracked: 'spots' (particles) or 'cells' (objects that fill the "
                        "plane between thin walls: foams, bubble rafts, concentrated emulsions; "
                        "--contrast is then the cells' interior); default: estimated (cells only "
                        "where the first frame shows them)")
    g.add_argument("--frames", type=int, nargs=2, metavar=("START", "STOP"),
                   help="frame range to track, frame numbers from 0, STOP exclusive (default: every frame)")
    g.add_argument("--roi", type=int, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                   help="region of interest in px (X1, Y1 exclusive; default: the whole frame)")
    g.add_argument("--no-refine", dest="refine", action="store_false",
                   help="skip the overlap-aware joint refinement (plain trackpy centroids; default: refine)")
    g.add_argument("--spot-profile", choices=("auto", "on", "off"), default="auto",
                   help="measure the spots' non-Gaussian radial profile (rings, Airy patterns) "
                        "in every frame; auto: decided on the first, middle and last frames (default)")
    g.add_argument("--gap-check", choices=("auto", "on", "off"), default="auto",
                   help="test every frame for the lit gaps of a bright-field packing; auto: "
                        "decided on the first, middle and last frames (default)")
    g.add_argument("--spot-model", choices=("auto", "gauss", "ball"), default="auto",
                   help="3D stacks: fit every spot as an anisotropic Gaussian or as a dyed sphere "
                        "blurred by the PSF; auto: decided on the first frame (default)")
    g.add_argument("--subtract-drift", action="store_true",
                   help="estimate collective drift and subtract it from x, y (default: keep it)")
    g.add_argument("--min-length", type=int, default=3, dest="min_length",
                   metavar="N",
                   help="drop trajectories shorter than this many frames (default 3)")
    g.add_argument("--processes", type=int, metavar="N", help="worker processes (default: all cores)")
    add_calibration(p)
    add_tiff_axis(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import trackpy

    from ..io import open_video
    from ..outputs import output_folder
    from ..tracking import TrackParams, track

    trackpy.quiet()
    out = folder_output(args)
    # the output folder is checked, locked and cleaned of killed runs' leftovers before the
    # work; the tables are swapped in together at the end, and nothing is written on failure
    with output_folder(out, ["tracks.parquet", "tracks.json"], args.overwrite) as tx:
        params = TrackParams(
            diameter=args.diameter, minmass=args.minmass, separation=args.separation,
            search_range=args.search_range, memory=args.memory, invert=args.invert,
            contrast=args.contrast, objects=args.objects,
            frames=tuple(args.frames) if args.frames else None,
            roi=tuple(args.roi) if args.roi else None, refine=args.refine,
            subtract_drift=args.subtract_drift, min_length=args.min_length, processes=args.processes,
            spot_profile=_switch(args.spot_profile), gap_check=_switch(args.gap_check),
            spot_model=None if args.spot_model == "auto" else args.spot_model)
        given = {k for k in ("diameter", "minmass", "separation", "search_range", "invert", "contrast",
                             "objects", "spot_profile", "gap_check", "spot_model")
                 if getattr(params, k) is not None}
        with open_video(args.video, fps=args.fps, um_per_px=args.um_per_px,
                        tiff_axis=args.tiff_axis) as video:
            result = track(video, params, progress=not args.quiet,
                           **{k: getattr(params, k) for k in given})
        result.save(tx.new, overwrite=True)
    t = result.tracks
    p = result.params
    print(f"{len(t)} positions, {t['particle'].nunique()} trajectories over "
          f"{t['frame'].nunique()} frames -> {out / 'tracks.parquet'}")
    print(f"diameter={p.diameter} ({p.sources.get('diameter')}), minmass={p.minmass:.4g} "
          f"({p.sources.get('minmass')}), separation={_fmt(p.separation)} "
          f"({p.sources.get('separation')}), search_range={p.search_range:.3g} "
          f"({p.sources.get('search_range')}), contrast={p.contrast} ({p.sources.get('contrast')}), "
          f"objects={p.objects} ({p.sources.get('objects')})"
          + (f", spot_model={p.spot_model} ({p.sources.get('spot_model')})" if p.spot_model else ""))
    q = result.quality
    if q is not None:
        print(f"quality: {q.status}")
        for reason in q.reasons:
            print(f"warning: {reason}", file=sys.stderr)
    return 0


def _fmt(v):
    return ", ".join(f"{x:.3g}" for x in v) if isinstance(v, (tuple, list)) else f"{float(v):.3g}"


def _switch(value: str) -> bool | None:
    """An auto/on/off flag as a :class:`~colloidcg.tracking.TrackParams` value."""
    return {"auto": None, "on": True, "off": False}[value]
