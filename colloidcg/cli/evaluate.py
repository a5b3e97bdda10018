"""``colloidcg evaluate``: compare the statistics of two tracks tables."""

from __future__ import annotations

import argparse

from ._common import add_calibration, add_output, folder_output, length


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="compare measured and simulated tracks (MSD, VACF, g(r), ...)",
        description="MSD, velocity autocorrelation, g(r), self van Hove, non-Gaussian parameter "
                    "and rearrangement rate of two tracks tables, their relative RMS errors "
                    "(metrics.json) and plots (PNG). The tables are in px and frames; the metrics "
                    "and plots in um and s, converted with --um-per-px and --fps.")
    p.add_argument("data", metavar="DATA.parquet",
                   help="measured tracks table (frame, particle, x, y in px), e.g. "
                        "colloidcg track's tracks.parquet")
    p.add_argument("sim", metavar="SIM.parquet",
                   help="simulated tracks table in the same schema, e.g. from colloidcg simulate")
    add_output(p, help="report folder (metrics.json and PNG plots)")
    add_calibration(p, source="the tables' sidecars, else 1")
    p.add_argument("--box", type=length, nargs="+", default=None, metavar="L",
                   help="periodic box lengths, px, or in um with the suffix (51.2um), for g(r) "
                        "of periodic simulations (default: SIM's sidecar meta.box_px, else open "
                        "boundaries)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from ..data import _meta_value
    from ..errors import ParameterError
    from ..evaluate import write_report
    from ..outputs import check_unique_rows, output_folder, read_table

    out = folder_output(args)
    with output_folder(out, ["metrics.json"], args.overwrite) as tx:
        data, mdata = read_table(args.data, required=["frame", "particle", "x", "y"])
        sim, msim = read_table(args.sim, required=["frame", "particle", "x", "y"])
        check_unique_rows(data, args.data)
        check_unique_rows(sim, args.sim)
        fps = args.fps or _meta_value(mdata, "fps") or _meta_value(msim, "fps") or 1.0
        um = args.um_per_px or _meta_value(mdata, "um_per_px") or _meta_value(msim, "um_per_px") or 1.0
        box = [b.to_px(um, bare="px") for b in args.box] if args.box else \
            (msim.get("meta", {}) or {}).get("box_px")
        if box is not None and not (isinstance(box, (list, tuple)) and len(box) >= 2 and all(
                isinstance(b, (int, float)) and math.isfinite(b) and b > 0 for b in box)):
            raise ParameterError(f"{'--box' if args.box else str(args.sim) + ': meta.box_px'}: expected "
                                 f"two or three positive lengths in px, got {box!r}")
        # a sheared box (md-read of a LAMMPS fix deform run, or simulate from one): each
        # table's offset per frame, for g(r)'s sheared minimum image
        tilts = [((m.get("meta", {}) or {}).get("lees_edwards") or {}).get("tilt_xy") for m in (mdata, msim)]
        rec = write_report(data, sim, tx.new, um_per_px=um, fps=fps, box_px=box,
                           tilt_data=tilts[0] if box is not None else None,
                           tilt_sim=tilts[1] if box is not None else None,
                           extra={"data": str(Path(args.data).resolve()), "sim": str(Path(args.sim).resolve()),
                                  "fps": fps, "um_per_px": um})
    print(f"MSD error {rec['msd_rel_rms']:.3g}, VACF error {rec['vacf_rel_rms']:.3g}, "
          f"g(r) error {rec['rdf_rel_rms']:.3g}; report in {out}")
    return 0
