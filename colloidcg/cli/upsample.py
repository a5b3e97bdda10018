"""``colloidcg upsample``: large-system snapshots from a small one, by hierarchical tiling."""

from __future__ import annotations

import argparse

from ._common import add_table_output, auto_or_int, substeps_arg, table_output, torch_device


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "upsample", help="build large-system snapshots from a small tracks table and a model",
        description="Hierarchical upsampling (docs/scaling.md): tiles of the input (frames of a periodic "
                    "box under random cyclic shifts, or square windows of an open field of view) are "
                    "placed side by side with random symmetries, particles placed too close across a seam "
                    "are moved into gaps on their own side "
                    "and the seams relaxed with the model (at a temperature calibrated on the input), "
                    "the rest held fixed; repeated by doubling "
                    "until the area (volume) is K times the tile's. Writes the tracks schema (frame = "
                    "sample index, px) to the .parquet file given with -o, with a JSON sidecar recording "
                    "the periodic box and the seam relaxation.")
    p.add_argument("model", metavar="MODEL", help="model folder written by colloidcg train, or a bundle "
                                                 "written by colloidcg export")
    p.add_argument("--init", required=True, metavar="TRACKS.parquet",
                   help="tracks table (px, frames) whose frames are the tiles; a periodic box comes from "
                        "the table's sidecar (meta.box_px), else the model's calibration (both given and "
                        "different: refused), else square "
                        "windows of the field of view are tiled")
    p.add_argument("--frame", type=int, default=None, metavar="F",
                   help="take every tile from this frame (default: tiles drawn from all frames)")
    p.add_argument("--factor", type=int, required=True, metavar="K",
                   help="area factor (volume in 3D): a square (cube) such as 4, 16, 64 (required)")
    p.add_argument("--samples", type=int, default=1, metavar="N", help="independent large snapshots")
    p.add_argument("--seed", type=int, default=0, help="seed (>= 0) of the tiling and relaxation noise")
    p.add_argument("--relax-steps", type=_relax_steps_arg, default="adaptive", metavar="N|auto|adaptive",
                   help="model frames of seam relaxation per doubling (0: overlap removal only); auto: until "
                        "the particles have moved, rms, 0.55 nearest-neighbour distances, as far as seams in "
                        "steep-contact (hard-sphere-like) liquids take to heal, measured on a pilot doubling "
                        "(use it with --band all); adaptive (default): 3 frames of the band, unless pilot "
                        "doublings relaxed that long still lack neighbours at their seams, in which case auto "
                        "and, without --band, --band all (docs/scaling.md)")
    p.add_argument("--relax-substeps", type=substeps_arg, default="auto", metavar="K",
                   help="integration steps per model frame in the seam relaxation, or auto (default): the "
                        "fewest that keep the model's rollouts of the input stable")
    p.add_argument("--band", type=_band_arg, default=None, metavar="PX|all",
                   help="half-width of the relaxed band along each seam, px (default: the model's "
                        "interaction range); all: the whole system is relaxed (no held layer, no band edge)")
    p.add_argument("--relax-temperature", default="auto", metavar="auto|X",
                   help="scale of the model's k_B during the seam relaxation: auto (default) calibrates it so "
                        "that the model's rollouts of the input keep the input's first coordination shell; "
                        "1 runs the model as trained")
    p.add_argument("--band-edge", choices=("reflect", "held"), default="reflect",
                   help="reflect (default): a band particle that leaves the band is reflected back, so the "
                        "band keeps its particles; held: the band's particles move freely among the held "
                        "layer, which never moves, and leak into it (docs/scaling.md)")
    p.add_argument("--seam-overlaps", choices=("reinsert", "push"), default="reinsert", dest="seam_overlaps",
                   help="reinsert (default): a pair placed too close across a seam loses one particle to the "
                        "largest gap of its own side at its own distance to the seam (no density wave); push: "
                        "the pair is pushed apart (docs/scaling.md)")
    p.add_argument("--push-quantile", default="auto", metavar="auto|Q", dest="push_quantile",
                   help="pairs placed across a seam closer than this quantile of the data's near-shell "
                        "distances are resolved; auto (default): 0.02 in 2D, 0 in 3D (only pairs closer than "
                        "the data's closest approach; docs/scaling.md)")
    p.add_argument("--tiling", choices=("auto", "random", "matched", "oriented"), default="auto",
                   help="auto (default): matched where one crystal orientation spans the input's frames "
                        "(median order coherence >= 0.5), else random; random: every tile placed with a "
                        "uniformly random symmetry and shift; matched: each tile after the first of a "
                        "doubling gets the best of --tiling-candidates symmetries and registry shifts, scored "
                        "by |psi6| (2D) or q6 (3D) along the new seams, so ordered tiles continue their "
                        "lattice across them (one crystal in an open field of view, 2D, 3D fcc or 3D close-packed "
                        "layers stacked in any order, is turned to its lattice and cut into windows "
                        "commensurate with it; stacked layers keep their stacking); oriented (2D, periodic "
                        "box): the same with each tile's pattern turned to its neighbours' lattice orientation, "
                        "any angle (docs/scaling.md)")
    p.add_argument("--tiling-candidates", type=int, default=32, metavar="N", dest="tiling_candidates",
                   help="--tiling matched|oriented: candidates per placed tile (default 32)")
    p.add_argument("--seam-field", choices=("auto", "gibbs", "pair", "none"), default="auto", dest="seam_field",
                   help="a crystal film (2D, or 3D close-packed layers): gibbs: the sites within 2 lattice "
                        "spacings of a seam are redrawn from the crystal's displacement field, fitted to the film, "
                        "so that neighbours across a window's face are correlated as in the crystal; pair: "
                        "the same from a pair interaction on the lattice's first-shell bonds, fitted to the film "
                        "(1-2 minutes); auto (default): pair (2D since session 47, 3D since session 49); none: "
                        "keep the windows' own displacements (docs/scaling.md)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_table_output(p, "BIG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ParameterError
    from ..export import load_model
    from ..outputs import output_folder, provenance, read_table, write_table
    from ..scaling import side_steps, upsample
    from ..scaling.seams import seam_check_summary
    from ..scaling.upsample import relaxation_summary, tiling_summary

    out = table_output(args)
    if args.samples < 1:
        raise ParameterError(f"--samples: must be >= 1, got {args.samples}")
    if args.seed < 0:
        raise ParameterError(f"--seed: must be >= 0, got {args.seed}")
    temperature = _auto_or_number(args.relax_temperature, "--relax-temperature", "a number > 0",
                                  lambda v: 0 < v < float("inf"))
    push_quantile = _auto_or_number(args.push_quantile, "--push-quantile", "a number in [0, 1)",
                                    lambda v: 0.0 <= v < 1.0)
    dev = torch_device(args.device)
    with output_folder(out.parent, [out.name, out.with_suffix(".json").name], args.overwrite,
                       option=f"-o {out}: folder") as tx:
        model, cfg = load_model(args.model, device=dev)
        try:
            side_steps(args.factor, int(model.config.dim))
        except ParameterError as exc:
            raise ParameterError(f"--{exc}") from None
        tracks, meta = read_table(args.init, required=["frame", "particle", "x", "y"])
        up = upsample(model, cfg, tracks, meta, factor=args.factor, frame=args.frame, samples=args.samples,
                      seed=args.seed, relax_steps=args.relax_steps, relax_substeps=args.relax_substeps, band=args.band,
                      relax_temperature=temperature, band_edge=args.band_edge,
                      seam_overlaps=args.seam_overlaps, tiling=args.tiling, push_quantile=push_quantile,
                      tiling_candidates=args.tiling_candidates, seam_field=args.seam_field, name=str(args.init),
                      progress=not args.quiet)
        cal = cfg.get("calibration", {}) or {}
        dim = int(model.config.dim)
        names = ["x", "y", "z"][:dim]
        units = {**{n: "px" for n in names}, **{"v" + n: "px/frame" for n in names},
                 "frame": "sample index", "seam_distance": "px", "site_seam_distance": "px",
                 "tile": "index of the tile within the sample"}
        side = provenance("upsample", {"model": args.model, "init": args.init},
                          {**up.parameters, "device": dev}, units=units,
                          meta={"box_px": up.box_px, "um_per_px": cal.get("um_per_px"), "fps": cal.get("fps")})
        write_table(tx.path(out.name), up.tracks, side)
    n = up.parameters["n_particles"]
    print(f"upsampled x{args.factor}: {args.samples} snapshot(s) of {min(n)}-{max(n)} particles in a "
          f"{' x '.join(f'{b:.1f}' for b in up.box_px)} px periodic box: {out}")
    print(f"tiling: {tiling_summary(up.parameters['tiling'])}")
    print(f"seam relaxation: {relaxation_summary(up.parameters['seam_relaxation'])}")
    print(f"seam check: {seam_check_summary(up.parameters['seam_check'])}")
    return 0


def _auto_or_number(text: str, option: str, expected: str, ok) -> str | float:
    """``text`` as given on the command line: "auto", or a number for which ``ok`` holds
    (else a ParameterError naming ``option`` and what was ``expected``)."""
    from ..errors import ParameterError

    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise ParameterError(f"{option}: must be auto or {expected}, got {text}")
    return value


def _relax_steps_arg(text: str) -> int | str:
    """--relax-steps: an integer >= 0, 'auto' or 'adaptive'."""
    if text.strip().lower() == "adaptive":
        return "adaptive"
    try:
        return auto_or_int(0)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, 'auto' or 'adaptive', got {text!r}") from None


def _band_arg(text: str) -> float | str:
    """--band: a width > 0 px or 'all'."""
    if text.strip().lower() == "all":
        return "all"
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a width > 0 px or 'all', got {text!r}")
    return v
