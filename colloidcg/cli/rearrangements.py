"""``colloidcg rearrangements TRACKS.parquet -o OUT_DIR``: where and when the material rearranges."""

from __future__ import annotations

from ._common import add_output, folder_output


def add_parser(sub) -> None:
    p = sub.add_parser(
        "rearrangements",
        help="D2min, rearranging particles, events and structural descriptors from tracks",
        description="Compute the non-affine displacement D2min (Falk & Langer 1998) of every "
                    "particle and frame, label rearranging particles, group them into events, "
                    "and add structural descriptors (Voronoi area, coordination, |psi6|, radial "
                    "structure functions) and the softness baseline's ROC AUC. Parameters left "
                    "out are measured from the data; the values used are saved in "
                    "OUT_DIR/rearrangements.json. Writes OUT_DIR/rearrangements.parquet, "
                    "OUT_DIR/events.parquet (each with a .json sidecar) and OUT_DIR/d2min.png.")
    p.add_argument("tracks", metavar="TRACKS.parquet",
                   help="tracks table (frame, particle, x, y in px) from `colloidcg track`")
    add_output(p)
    g = p.add_argument_group("parameters (default: measured from the data)")
    g.add_argument("--lag", type=int, help="frames between the configurations compared "
                                           "(default: from the MSD, cage rattling << cutoff)")
    g.add_argument("--cutoff", type=float, help="neighbour distance, px (default: first minimum of g(r))")
    g.add_argument("--threshold", type=float,
                   help="d2min_norm above which a particle is rearranging (dimensionless; "
                        "default: 3 robust standard deviations above the median of log D2min)")
    g.add_argument("--diameter", type=float,
                   help="particle diameter, px, for the local area fraction (default: the "
                        "table's diameter column, if any)")
    g.add_argument("--fov", type=float, nargs=4, metavar=("XLO", "XHI", "YLO", "YHI"),
                   help="field of view, px (default: the tracked video's frame or ROI from the "
                        "tracks' sidecar, else the extent of the data)")
    p.add_argument("--no-descriptors", dest="descriptors", action="store_false",
                   help="skip the structural descriptors and the softness baseline (default: compute them)")
    p.add_argument("--plot-frame", type=int, dest="plot_frame",
                   help="frame drawn in d2min.png (default: the one with most rearranging particles)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ColloidcgError, ParameterError
    from ..rearrangements.plot import fov_from_sidecar, video_frame
    from ..outputs import output_folder, read_table
    from ..rearrangements import (Rearrangements, busiest_frame, detect, plot_d2min_frame,
                                  softness_baseline)

    out = folder_output(args)
    png = out / "d2min.png"
    names = [q.name for q in Rearrangements.output_paths(out)] + [png.name]
    with output_folder(out, names, args.overwrite) as tx:
        tracks, meta = read_table(args.tracks, required=["frame", "particle", "x", "y"])
        if args.plot_frame is not None and args.plot_frame not in set(tracks["frame"].unique()):
            f = tracks["frame"]
            raise ParameterError(f"--plot-frame {args.plot_frame}: not a frame of {args.tracks} "
                                 f"(frames {int(f.min())}..{int(f.max())}; nothing was written)")
        if args.fov is not None:
            xlo, xhi, ylo, yhi = args.fov
            fov = [(xlo, xhi), (ylo, yhi)]
        else:
            fov = fov_from_sidecar(meta, tracks)
        try:
            res = detect(tracks, lag=args.lag, cutoff=args.cutoff, threshold=args.threshold, fov=fov,
                         diameter=args.diameter, descriptors=args.descriptors)
        except ColloidcgError as exc:
            # name the input file in the one-line message
            raise type(exc)(f"{args.tracks}: {exc}") from None
        soft = None
        if args.descriptors:
            try:
                s = softness_baseline(res.table, res.parameters["lag_frames"])
                soft = s.summary()
            except ColloidcgError as exc:
                soft = {"auc": None, "reason": str(exc)}
        units_in = (meta.get("units") or {})
        extra = {"softness_baseline": soft,
                 "calibration": {"fps": units_in.get("fps"), "um_per_px": units_in.get("um_per_px")}}
        frame = args.plot_frame if args.plot_frame is not None else busiest_frame(res.table)
        if frame not in set(res.table["frame"].unique()):
            raise ParameterError(f"--plot-frame {frame}: not a frame of {args.tracks}")
        res.save(tx.new, inputs={"tracks": args.tracks}, overwrite=True, **extra)
        plot_d2min_frame(res.table, frame, tx.path(png.name), image=video_frame(meta, frame),
                         lag=res.parameters.get("lag_frames"), fps=units_in.get("fps"))
    t_path, e_path = [q for q in Rearrangements.output_paths(out) if q.suffix == ".parquet"]
    p = res.parameters
    how = (lambda rule, measured: "given" if rule == "given" else measured)
    print(f"lag {p['lag_frames']} frames ({how(p['lag_rule'], 'from the MSD')}), cutoff "
          f"{p['cutoff_px']:.3g} px ({p['cutoff_rule']}), threshold {p['threshold']:.3g} on d2min_norm "
          f"({how(p['threshold_rule'], 'from the D2min distribution')})")
    print(f"{p['n_rearranging']} rearranging particle-frames in {p['n_events']} events "
          f"-> {t_path}, {e_path}")
    if soft is not None:
        print(f"softness baseline ROC AUC: "
              f"{'%.3f' % soft['auc'] if soft.get('auc') is not None else 'n/a (' + soft['reason'] + ')'}")
    print(f"picture of frame {frame}: {png}")
    return 0
