"""``colloidcg evaluate``: compare the statistics of two tracks tables."""

from __future__ import annotations

import argparse

from ._common import add_calibration, add_output


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="compare measured and simulated tracks (MSD, VACF, g(r), ...)",
        description="MSD, velocity autocorrelation, g(r), self van Hove, non-Gaussian parameter "
                    "and rearrangement rate of two tracks tables, their relative RMS errors "
                    "(metrics.json) and plots (PNG).")
    p.add_argument("data", metavar="DATA.parquet")
    p.add_argument("sim", metavar="SIM.parquet")
    add_output(p, help="report folder")
    add_calibration(p)
    p.add_argument("--box", type=float, nargs="+", default=None, metavar="L",
                   help="periodic box lengths in px (for g(r) of periodic simulations)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data import _meta_value
    from ..errors import ParameterError
    from ..evaluate import write_report
    from ..outputs import check_writable, read_table

    out = Path(args.output)
    check_writable([out / "metrics.json"], args.overwrite)
    data, mdata = read_table(args.data, required=["frame", "particle", "x", "y"])
    sim, msim = read_table(args.sim, required=["frame", "particle", "x", "y"])
    fps = args.fps or _meta_value(mdata, "fps") or _meta_value(msim, "fps") or 1.0
    um = args.um_per_px or _meta_value(mdata, "um_per_px") or _meta_value(msim, "um_per_px") or 1.0
    if fps <= 0 or um <= 0:
        raise ParameterError("--fps and --um-per-px must be positive")
    box = args.box or (msim.get("meta", {}) or {}).get("box_px")
    rec = write_report(data, sim, out, um_per_px=um, fps=fps, box_px=box,
                       extra={"data": str(Path(args.data).resolve()), "sim": str(Path(args.sim).resolve()),
                              "fps": fps, "um_per_px": um})
    print(f"MSD error {rec['msd_rel_rms']:.3g}, VACF error {rec['vacf_rel_rms']:.3g}, "
          f"g(r) error {rec['rdf_rel_rms']:.3g}; report in {out}")
    return 0
