"""``colloidcg md-read``: an MD trajectory (LAMMPS dump, GSD, MDAnalysis formats) to tracks."""

from __future__ import annotations

import argparse

from ._common import add_output, folder_output

_EPILOG = """\
formats: LAMMPS text dumps (dump custom with id [mol] [type] [mass] and x y z [ix iy iz],
xu yu zu, xs ys zs or xsu ysu zsu, [vx vy vz]; ITEM: UNITS and ITEM: TIME when
dump_modify units/time yes), GSD (HOOMD-blue; molecules = bonded clusters) and every
trajectory format MDAnalysis reads (XTC, TRR, DCD, NetCDF, ...; --topology for types,
residues as molecules, masses). Orthogonal, fixed periodic boxes only.

writes OUT_DIR/tracks.parquet (frame, particle, x, y [, z], vx, vy [, vz], type/mol where
defined; positions unwrapped across the box) and tracks.json (units, fps = 1 / time
between frames, meta.box_px = the periodic box, the file's description). Lengths stay in
the file's unit (px = 1 length unit), so train/simulate/evaluate/export read the table
as they read video tracks, with the box taken from the sidecar.

example:
  colloidcg md-read dump.lammpstrj -o stars --coarse-grain molecule
  colloidcg train stars/tracks.parquet -o stars_model --no-substrate
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "md-read", help="read an MD trajectory (LAMMPS dump, GSD, XTC/DCD/...) into tracks, "
                        "optionally coarse-grained",
        description="Read a molecular-dynamics trajectory into the tracks schema with its "
                    "periodic box and units, optionally coarse-grained to one particle per "
                    "molecule (centre of mass and its velocity), per molecule and type, or "
                    "by a grouping file.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trajectory", metavar="TRAJ", help="trajectory file")
    add_output(p, help="output folder (tracks.parquet + tracks.json)")
    p.add_argument("--format", choices=["lammps-dump", "gsd", "mdanalysis"], default=None,
                   help="file format (default: from the file name)")
    p.add_argument("--topology", metavar="FILE", default=None,
                   help="topology MDAnalysis reads (LAMMPS data, PDB, PSF, GRO, TPR, ...), for "
                        "MDAnalysis formats: types, molecules (residues), masses (default: none)")
    p.add_argument("--coarse-grain", default="none", dest="coarse_grain", metavar="MAP",
                   help="none (every atom a particle; default), molecule (one per molecule), "
                        "type (one per molecule and atom type) or a mapping file (CSV/Parquet "
                        "with columns id, group; or JSON {group: [atom ids]})")
    p.add_argument("--types", nargs="+", default=None, metavar="T",
                   help="keep only atoms of these types (before coarse-graining; default: all)")
    p.add_argument("--units", default=None,
                   help="LAMMPS unit style (lj, real, metal, si, cgs, electron, micro, nano) when "
                        "the file does not say; a file that says otherwise is an error (default: the "
                        "file's; unnamed units when it says none)")
    p.add_argument("--timestep", type=float, default=None, metavar="DT",
                   help="integration step in time units, for files that number frames by step "
                        "(dumps without ITEM: TIME, GSD); default: time in steps")
    p.add_argument("--dim", type=int, choices=[2, 3], default=None,
                   help="2 or 3 (default: 2 when every z is equal)")
    p.add_argument("--box", type=float, nargs="+", default=None, metavar="L",
                   help="box lengths, in the trajectory's length unit, for files without a unit cell "
                        "(e.g. XYZ; default: the file's unit cell)")
    p.add_argument("--start", type=int, default=0, help="first frame kept (default 0)")
    p.add_argument("--stop", type=int, default=None, help="frame to stop before (default: the end)")
    p.add_argument("--stride", type=int, default=1, help="keep every N-th frame (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import ParameterError
    from ..md.coarse import MAPS, read_md_tracks
    from ..outputs import output_folder, write_table

    if args.coarse_grain not in MAPS and not Path(args.coarse_grain).is_file():
        raise ParameterError(f"--coarse-grain: expected none, molecule, type or a mapping file; "
                             f"{args.coarse_grain!r} is none of them")
    if args.stride < 1 or args.start < 0:
        raise ParameterError(f"--stride must be >= 1 and --start >= 0 (got {args.stride}, {args.start})")
    out = folder_output(args)
    with output_folder(out, ["tracks.parquet", "tracks.json"], args.overwrite) as tx:
        df, side = read_md_tracks(args.trajectory, args.coarse_grain, args.types, format=args.format,
                                  topology=args.topology, units=args.units, timestep=args.timestep,
                                  dim=args.dim, box=args.box, start=args.start, stop=args.stop,
                                  stride=args.stride)
        write_table(tx.path("tracks.parquet"), df, side)
    meta = side["meta"]
    box = " x ".join(f"{b:.4g}" for b in meta["box_px"]) if meta["box_px"] else "not periodic"
    print(f"{df['particle'].nunique()} particles ({args.coarse_grain}) x {df['frame'].nunique()} frames, "
          f"{meta['dim']}D, box {box} {meta['length_unit']}, frame interval {1 / meta['fps']:.4g} "
          f"{meta['time_unit']} -> {out / 'tracks.parquet'}")
    for note in side["md"]["notes"]:
        print(f"note: {note}")
    return 0
