"""``colloidcg macro train|simulate``: the macroscopic SDE learned from small systems.

train: upsampling of snapshots of the input tracks, partial evolution of patches with the
learned model, closure encoder and SDE fit (docs/scaling.md); simulate: ensembles of the
SDE for a system of any area factor.
"""

from __future__ import annotations

import argparse
import sys

from ._common import DefaultsHelpFormatter, add_output, add_table_output, table_output, torch_device

REPORT_FILES = ["sde.json", "sde.pt", "report.json", "increments.png", "lambda_sweep.png", "patch_curve.png"]
CLOSURE_FILES = ["closure.json", "closure.pt"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "macro", help="learn and run a macroscopic SDE of large systems from small ones",
        description="The macroscopic SDE dz = mu(z) dt + sigma(z) dW of chosen observables and learned "
                    "closure variables (docs/scaling.md): 'train' builds large snapshots by upsampling, "
                    "evolves patches of them with the model (partial evolution) and fits the SDE to the "
                    "increments; 'simulate' runs ensembles for a system of any area factor.")
    sub = p.add_subparsers(dest="macro_command", metavar="ACTION", required=True,
                           help="train: learn the SDE from a model and tracks; simulate: run ensembles of it")

    t = sub.add_parser("train", help="upsample, partial evolution, closure encoder and SDE fit",
                       formatter_class=DefaultsHelpFormatter,
                       description="Upsampled states (default): upsample snapshots of the input tracks by "
                                   "--factor, evolve random patches of side --patch (a frozen halo of twice "
                                   "the interaction range around each) by --steps frames with the model, and "
                                   "fit the SDE to the increments z1 = z(x0) + z_I(x1) - z_I(x0), covariance "
                                   "scaled by lambda (default K, the patch count). Block states (--states "
                                   "block): K = --factor of the small periodic systems given with --init, "
                                   "at the same frame, side by side; a patch is one of them, its step its own "
                                   "next --steps frames (no upsampling, no seams, no simulation). Writes "
                                   "MACRO_DIR: sde.json + sde.pt (the SDE), closure.json + closure.pt (the "
                                   "closure encoder, when --n-closure > 0), report.json and plots.")
    t.add_argument("model", metavar="MODEL", help="model folder written by colloidcg train (or a bundle)")
    t.add_argument("--init", required=True, nargs="+", metavar="TRACKS.parquet",
                   help="small-system tracks (px, frames). Upsampled states: one table, whose frames are "
                        "upsampled; periodic box from the sidecar or the model's calibration, else windows "
                        "of the field of view. Block states: at least --factor tables, one small periodic "
                        "system each (repeated experiments or quenches of the same age: the frame numbers "
                        "are aligned), boxes of equal area")
    t.add_argument("--states", default="upsampled", metavar="upsampled|block",
                   help="the large states the increments start from: 'upsampled' (tiles of the input, "
                        "seams relaxed with the model, patches evolved with the model) or 'block' (K small "
                        "periodic systems side by side, uncoupled, each evolved by its own data; describes a "
                        "large system whose correlations stay within the small box, docs/scaling.md)")
    t.add_argument("--tiling", choices=("random", "matched", "oriented"), default="random",
                   help="--states upsampled: how tiles are placed (colloidcg upsample --tiling; oriented "
                        "turns ordered periodic tiles to their neighbours' lattice, docs/scaling.md)")
    t.add_argument("--block-sets", type=int, default=8, metavar="N", dest="block_sets",
                   help="block states drawn per macro step (--states block)")
    t.add_argument("--horizon", default="0", metavar="H|auto",
                   help="--states block: 0, the drift of the one-step likelihood; H >= 1, the multi-step "
                        "drift, refitted so that its integrated steps follow the block states' own "
                        "trajectories over H macro steps; auto: H chosen among 0, 2, 4, 8, 16 by "
                        "cross-validation over the --init systems (4 folds; about 3x the cost of the "
                        "default fit; docs/scaling.md)")
    t.add_argument("--no-fast-part", action="store_true", dest="no_fast_part",
                   help="--states block: let sigma hold z's fast part too (by default the part that "
                        "decorrelates within a macro step is measured from successive increments and "
                        "added to every simulated state instead of being integrated as diffusion; "
                        "docs/scaling.md)")
    t.add_argument("--smooth-state", action="store_true", dest="smooth_state",
                   help="--states block, with the fast part: condition the drift on each block state's "
                        "three-point mean (t - 1, t, t + 1), free of regression to the mean; on an aging "
                        "quench it cut the mean's error 3-7x, for stationary fluctuations it weakens the "
                        "restoring drift (docs/scaling.md)")
    t.add_argument("--no-latent", action="store_true", dest="no_latent",
                   help="--states block: fit the one-step likelihood of the block states' increments instead "
                        "of the default latent-state likelihood of their whole paths (an extended Kalman "
                        "filter whose observation noise is the fast part, the drift conditioned on the "
                        "filtered slow state; used whenever the fast part is measured and neither "
                        "--smooth-state nor --horizon is given; docs/scaling.md)")
    t.add_argument("--factor", type=int, default=16, metavar="K",
                   help="area factor of the upsampled snapshots, a square (2D) or cube (3D); with --states "
                        "block also the number K of small systems in a block state")
    t.add_argument("--snapshots", type=int, default=8, metavar="N",
                   help="input frames upsampled, evenly spaced over the table (--states upsampled)")
    t.add_argument("--steps", type=int, default=10, metavar="F", help="frames per macroscopic step")
    t.add_argument("--patch", type=float, default=None, metavar="L",
                   help="patch side, px (default: the tile's side, so K = --factor); at least twice the "
                        "model's interaction range (--states upsampled)")
    t.add_argument("--buffer", type=float, default=None, metavar="PX",
                   help="mobile layer between each patch and its frozen halo, px (default: the model's "
                        "interaction range; 0: none); it shrinks the frozen halo's bias on the increments "
                        "(--states upsampled)")
    t.add_argument("--patches", type=int, default=None, metavar="P",
                   help="patches evolved per snapshot (--states upsampled; default 4)")
    t.add_argument("--observables", default="auto", metavar="NAMES",
                   help="comma-separated: psi6, ordered_fraction, psi6_coherence (2D), q6, solid_fraction (3D), "
                        "mean_S (evolved); area_fraction (a constant label, recorded, not evolved); default auto: "
                        "psi6 in 2D, q6 in 3D")
    t.add_argument("--n-closure", type=int, default=0, metavar="N", dest="n_closure",
                   help="learned closure variables (--states upsampled)")
    t.add_argument("--lambda", default="auto", dest="lam", metavar="auto|X",
                   help="covariance scale of a patch increment: auto = K, the patch count")
    t.add_argument("--no-patch-curve", action="store_true", dest="no_patch_curve",
                   help="skip the fits at half and twice the patch side (the report's patch curve)")
    t.add_argument("--fits", type=int, default=10, metavar="M",
                   help="SDE fits averaged into the saved SDE (bagging: each fitted to a bootstrap resample of "
                        "the increments, block states: to its own draw of them; drift and diffusion averaged). "
                        "Costs M fits; 1: a single fit")
    t.add_argument("--fit-iterations", type=int, default=300, metavar="N", dest="fit_iterations",
                   help="full-batch Adam steps of each SDE fit (the lowest validation NLL is kept)")
    t.add_argument("--seed", type=int, default=0, help="seed (>= 0) of upsampling, patches and noise")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    add_output(t, help="output folder MACRO_DIR")
    t.set_defaults(func=run_train)

    s = sub.add_parser("simulate", help="ensemble of the macroscopic SDE for a system of K times the tile's area",
                       formatter_class=DefaultsHelpFormatter,
                       description="Euler-Maruyama runs of the SDE in MACRO_DIR for a system whose area "
                                   "(volume) is --factor times the small system's; the noise covariance "
                                   "is scaled by the area the SDE was fitted for over this system's. "
                                   "Writes a table with columns run, step, time (frames) and one per "
                                   "variable, its sidecar, and a plot of the ensemble against time "
                                   "(TABLE.png).")
    s.add_argument("macro_dir", metavar="MACRO_DIR", help="folder written by colloidcg macro train")
    s.add_argument("--factor", type=float, required=True, metavar="K",
                   help="the system's area (volume) over the small system's, > 0")
    s.add_argument("--steps", type=int, required=True, metavar="N", help="macroscopic steps")
    s.add_argument("--runs", type=int, default=100, metavar="R", help="independent runs")
    s.add_argument("--seed", type=int, default=0, help="seed (>= 0) of the noise")
    add_table_output(s, "MACRO")
    s.set_defaults(func=run_simulate)


# ---------------------------------------------------------------------- train
def _observable_names(arg: str, dim: int) -> list[str]:
    """--observables as a list; "auto" is the dimension's bond order (psi6 2D, q6 3D)."""
    return ["psi6" if dim == 2 else "q6"] if arg.strip() == "auto" else arg.split(",")


def _states(up, size_col, dim):
    """MicroStates of an upsampled table (one per sample)."""
    import numpy as np

    from ..scaling.simulators import MicroState
    names = ["x", "y", "z"][:dim]
    box = np.asarray(up.box_px, float)
    out = []
    for _, g in up.tracks.groupby("frame", sort=True):
        vel = g[["v" + n for n in names]].to_numpy(float) if all("v" + n in g for n in names) else None
        out.append(MicroState(g[names].to_numpy(float), g[size_col].to_numpy(float) if size_col else None, box,
                              g["particle"].to_numpy(np.int64), vel, None))
    return out


def _small_increments(tracks, meta, box, frames, steps, size_col, dim):
    """Whole-system states of the input at frames f and f + steps (periodic input only)."""
    import numpy as np

    from ..scaling.simulators import MicroState
    names = ["x", "y", "z"][:dim]
    by = {int(f): g for f, g in tracks.groupby("frame")}
    pairs = []
    for f in frames:
        if f + steps in by:
            a, b = by[f], by[f + steps]
            pairs.append([MicroState(np.mod(g[names].to_numpy(float), box),
                                     g[size_col].to_numpy(float) if size_col else None, box,
                                     g["particle"].to_numpy(np.int64), None, None) for g in (a, b)])
    return pairs


def _load_model(args, dev):
    """(model in float64, its config dict, its dimension), with --factor checked against the
    dimension (a square in 2D, a cube in 3D)."""
    from ..errors import ParameterError
    from ..export import load_model
    from ..scaling import side_steps

    model, cfg = load_model(args.model, device=dev)
    model = model.double()
    dim = int(model.config.dim)
    try:
        side_steps(args.factor, dim)
    except ParameterError as exc:
        raise ParameterError(f"--{exc}") from None
    return model, cfg, dim


def run_train(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    import numpy as np
    import torch

    from ..errors import ParameterError
    from ..outputs import atomic_write_json, output_folder, read_table
    from ..scaling import upsample
    from ..scaling.macro import fit_sde, learn_macro, trajectory_increments
    from ..scaling.observables import check_names, labels as label_values
    from ..scaling.simulators import ModelSimulator
    from ..simulate import tracks_stability

    if args.states not in ("upsampled", "block"):
        raise ParameterError(f"--states: expected 'upsampled' or 'block', got {args.states!r}")
    if args.horizon != "auto":
        try:
            args.horizon = int(args.horizon)
        except ValueError:
            raise ParameterError(f"--horizon: expected an integer >= 0 or 'auto', got {args.horizon!r}") from None
    if args.smooth_state and args.no_fast_part:
        raise ParameterError("--smooth-state: conditions on a state freed of the fast part; drop --no-fast-part")
    if args.states == "block":
        for flag, v in (("--patch", args.patch), ("--buffer", args.buffer), ("--patches", args.patches),
                        ("--n-closure", args.n_closure or None),
                        ("--tiling", None if args.tiling == "random" else args.tiling)):
            if v is not None:
                raise ParameterError(f"{flag}: applies to --states upsampled only (block states have no patches "
                                     "cut from a large system)")
    elif args.horizon:
        raise ParameterError("--horizon: applies to --states block only (upsampled states have no trajectories "
                             "of their own to follow)")
    elif args.no_fast_part or args.smooth_state or args.no_latent:
        flag = "--no-fast-part" if args.no_fast_part else "--smooth-state" if args.smooth_state else "--no-latent"
        raise ParameterError(f"{flag}: applies to --states block only (upsampled states have no "
                             "successive increments to measure a fast part from)")
    elif len(args.init) != 1:
        raise ParameterError(f"--init: --states upsampled takes one tracks table, got {len(args.init)} "
                             "(several small systems of the same age: --states block)")
    if args.patches is None:
        args.patches = 4
    for flag, v, lo in (("--snapshots", args.snapshots, 1), ("--steps", args.steps, 1), ("--patches", args.patches, 1),
                        ("--n-closure", args.n_closure, 0), ("--seed", args.seed, 0),
                        ("--block-sets", args.block_sets, 1), ("--fits", args.fits, 1),
                        ("--horizon", 0 if args.horizon == "auto" else args.horizon, 0),
                        ("--fit-iterations", args.fit_iterations, 1)):
        if v < lo:
            raise ParameterError(f"{flag}: must be >= {lo}, got {v}")
    if args.lam != "auto":
        try:
            lam = float(args.lam)
        except ValueError:
            raise ParameterError(f"--lambda: expected 'auto' or a number > 0, got {args.lam!r}") from None
        if not (math.isfinite(lam) and lam > 0):
            raise ParameterError(f"--lambda: expected 'auto' or a number > 0, got {args.lam!r}")
    else:
        lam = "auto"
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    dev = torch_device(args.device)
    out = Path(args.output)
    if args.states == "block":
        return _train_block(args, lam, dev, out)
    names = REPORT_FILES + (CLOSURE_FILES if args.n_closure else [])
    with output_folder(out, names, args.overwrite, option=f"-o {out}") as tx:
        model, cfg, dim = _load_model(args, dev)
        size_col = model.config.size_column or None
        obs, labs = check_names(_observable_names(args.observables, dim), dim, has_S=True, has_size=bool(size_col))
        tracks, meta = read_table(args.init[0], required=["frame", "particle", "x", "y"])
        sim = ModelSimulator(model, cfg, device=dev)
        if args.patch is not None and args.patch < 2 * sim.interaction_range:
            raise ParameterError(f"--patch: {args.patch:g} px is smaller than twice the model's interaction "
                                 f"range (2 x {sim.interaction_range:g} px)")
        sim.substeps = tracks_stability(model, cfg, tracks, meta).substeps    # steep contacts need several
        frames = np.unique(tracks["frame"].to_numpy())
        pick = frames[np.unique(np.round(np.linspace(0, len(frames) - 1, min(args.snapshots, len(frames)))).astype(int))]
        from tqdm.auto import tqdm
        snaps, up_params = [], None
        for i, f in enumerate(tqdm(pick, desc="upsampling", unit="snapshot")):
            # 3 frames of the band, as measured for the macroscopic chain (docs/scaling.md)
            up = upsample(model, cfg, tracks, meta, factor=args.factor, frame=int(f), samples=1,
                          seed=args.seed + i, tiling=args.tiling, relax_steps=3, name=str(args.init[0]))
            snaps += _states(up, size_col, dim)
            up_params = up.parameters
        tile = np.asarray(up_params["tile_px"], float)
        tile_area = float(np.prod(tile))
        patch = float(np.min(tile)) if args.patch is None else float(args.patch)
        buffer = sim.interaction_range if args.buffer is None else float(args.buffer)
        if not (math.isfinite(buffer) and buffer >= 0):
            raise ParameterError(f"--buffer: must be a length >= 0 px, got {args.buffer}")
        labels = label_values(snaps[0], labs)
        res = learn_macro(sim, snaps, patch=patch, steps=args.steps, observables=obs, n_closure=args.n_closure,
                          lam=lam, patches_per_snapshot=args.patches, buffer=buffer, tile_area_px2=tile_area,
                          labels=labels, seed=args.seed, fits=args.fits, iterations=args.fit_iterations,
                          progress=True)
        folder = tx.path("sde.json").parent
        res.sde.save(folder)
        if res.encoder.closure is not None:
            res.encoder.closure.save(folder)
        K = res.n_patches
        report = {"model": str(args.model), "init": str(args.init[0]), "states": "upsampled", "factor": args.factor,
                  "model_substeps": sim.substeps,
                  "snapshot_frames": [int(f) for f in pick], "observables": obs, "labels": labels,
                  "n_closure": args.n_closure, "upsampling": {k: up_params[k] for k in ("tile", "tile_px", "side_steps")},
                  **res.report, "closure_training": res.closure_report}
        # lambda sweep: the small input's own whole-system increments (periodic input only)
        box = up_params["tile_px"] if up_params["tile"] == "periodic box" else None
        sweep = []
        if box is not None:
            pairs = [[sim.prepare(s) for s in pr] for pr in
                     _small_increments(tracks, meta, np.asarray(box, float), [int(f) for f in frames], args.steps,
                                       size_col, dim)]
            if len(pairs) >= 10:
                sz0, sz1 = trajectory_increments(res.encoder, pairs)
                for name, lv in (("1", 1.0), ("K/4", K / 4), ("K/2", K / 2), ("K", K), ("2K", 2 * K)):
                    sde_l, _ = fit_sde(res.z0, res.z1, dt=args.steps, names=res.encoder.names, lam=lv,
                                       area_px2=res.report["area_px2"], tile_area_px2=tile_area, seed=args.seed,
                                       iterations=args.fit_iterations)
                    sweep.append({"lambda": name, "value": lv,
                                  **_variance_check(sde_l, sz0, sz1, args.steps)})
        report["lambda_sweep"] = sweep or "needs a periodic input with frames --steps apart (>= 10 pairs)"
        # patch curve: half and twice the patch side
        curve = [{"patch_px": patch, "K": K, "val_nll": res.report["fit"]["val_nll"],
                  **(_variance_check(res.sde, sz0, sz1, args.steps) if sweep else {})}]
        if not args.no_patch_curve:
            box_min = float(np.min(np.asarray(snaps[0].box)))
            for mult in (0.5, 2.0):
                lp = mult * patch
                if lp < 2 * sim.interaction_range or lp > box_min:
                    continue
                # observables only (no closure) at the other patch sides
                r2 = learn_macro(sim, snaps, patch=lp, steps=args.steps, observables=obs,
                                 patches_per_snapshot=args.patches, buffer=buffer, tile_area_px2=tile_area,
                                 seed=args.seed, fits=args.fits, iterations=args.fit_iterations, progress=True)
                row = {"patch_px": lp, "K": r2.n_patches, "val_nll": r2.report["fit"]["val_nll"]}
                if sweep:
                    row.update(_variance_check(r2.sde, *trajectory_increments(r2.encoder, pairs), args.steps))
                curve.append(row)
        report["patch_curve"] = sorted(curve, key=lambda r: r["patch_px"])
        atomic_write_json(tx.path("report.json"), report)
        _plots(tx, res, report)
    print(f"macro SDE of {', '.join(res.encoder.names)} from {len(res.z0)} patch increments "
          f"(K = {K:.3g}, lambda = {res.lam:.3g}): {out}")
    return 0


def _block_trajectories(args, model_config, size_col, dim, sim):
    """The --init tables as small periodic systems: (trajectories, frames, box). Each
    table's frames f0, f0 + steps, ... (f0 the first frame all tables share, as long as all
    have it), positions wrapped into its periodic box, prepared by the model's simulator."""
    import numpy as np

    from ..data import meta_box
    from ..errors import ParameterError
    from ..outputs import read_table
    from ..scaling.simulators import MicroState

    cal_box = (model_config.get("calibration", {}) or {}).get("box_px")
    names = ["x", "y", "z"][:dim]
    tables, boxes = [], []
    for path in args.init:
        tracks, meta = read_table(path, required=["frame", "particle"] + names)
        if size_col and size_col not in tracks.columns:
            raise ParameterError(f"{path}: the model was trained with per-particle sizes (column {size_col!r}) "
                                 "but the tracks have no such column")
        box = meta_box(meta)
        box = cal_box if box is None else box
        if box is None:
            raise ParameterError(f"{path}: no periodic box (sidecar meta.box_px or model calibration box_px); "
                                 "block states need periodic small systems")
        box = np.asarray(box, float).reshape(-1)
        if len(box) != dim:
            raise ParameterError(f"{path}: the periodic box {box.tolist()} has {len(box)} sides for {dim}D tracks")
        if not np.isfinite(tracks[names].to_numpy(float)).all():
            raise ParameterError(f"{path}: NaN or infinite positions; drop or fill them first")
        tables.append({int(f): g for f, g in tracks.groupby("frame", sort=True)})
        boxes.append(box)
    areas = np.array([np.prod(b) for b in boxes])
    if not np.allclose(areas, areas[0], rtol=1e-6):
        raise ParameterError(f"--init: block states need small boxes of one area, got "
                             f"{sorted(set(np.round(areas, 3).tolist()))} px^2")
    common = sorted(set.intersection(*(set(t) for t in tables)))
    if not common:
        raise ParameterError("--init: the tables share no frame number (block states pair systems of the same age)")
    frames = [common[0]]
    while frames[-1] + args.steps in set(common):
        frames.append(frames[-1] + args.steps)
    if len(frames) < 2:
        raise ParameterError(f"--steps: no frame {common[0]} + {args.steps} in every table; block states need "
                             "frames one macro step apart")
    trajs = []
    for t, box in zip(tables, boxes):
        traj = []
        for f in frames:
            g = t[f]
            traj.append(sim.prepare(MicroState(np.mod(g[names].to_numpy(float), box),
                                               g[size_col].to_numpy(float) if size_col else None, box,
                                               g["particle"].to_numpy(np.int64), None, None)))
        trajs.append(traj)
    return trajs, frames, boxes[0]


def _train_block(args, lam, dev, out) -> int:
    """``macro train --states block``: the SDE fitted on block states of the --init tables."""
    from ..errors import ParameterError
    from ..outputs import atomic_write_json, output_folder, read_table
    from ..scaling.macro import fit_sde, learn_block, trajectory_increments
    from ..scaling.observables import check_names, labels as label_values
    from ..scaling.simulators import ModelSimulator
    from ..simulate import tracks_stability

    names = [n for n in REPORT_FILES if n != "patch_curve.png"]
    with output_folder(out, names, args.overwrite, option=f"-o {out}") as tx:
        model, cfg, dim = _load_model(args, dev)
        if len(args.init) < args.factor:
            raise ParameterError(f"--init: block states of K = --factor {args.factor} need at least {args.factor} "
                                 f"small systems (one tracks table each), got {len(args.init)}")
        size_col = model.config.size_column or None
        obs, labs = check_names(_observable_names(args.observables, dim), dim, has_S=True, has_size=bool(size_col))
        first, first_meta = read_table(args.init[0], required=["frame", "particle", "x", "y"])
        sim = ModelSimulator(model, cfg, substeps=tracks_stability(model, cfg, first, first_meta).substeps,
                             device=dev)
        trajs, frames, box = _block_trajectories(args, cfg, size_col, dim, sim)
        labels = label_values(trajs[0][0], labs)
        res = learn_block(trajs, steps=args.steps, observables=obs, blocks=args.factor, lam=lam,
                          sets_per_step=args.block_sets, labels=labels, seed=args.seed, fits=args.fits,
                          horizon=args.horizon, iterations=args.fit_iterations,
                          fast_part=not args.no_fast_part, smooth_state=args.smooth_state, latent=False if args.no_latent else "auto",
                          progress=True)
        folder = tx.path("sde.json").parent
        res.sde.save(folder)
        K = res.n_patches
        report = {"model": str(args.model), "init": [str(p) for p in args.init], "factor": args.factor,
                  "model_substeps": sim.substeps,
                  "frames": [int(f) for f in frames], "box_px": box.tolist(), "observables": obs,
                  "labels": labels, **res.report}
        # lambda sweep against the small systems' own increments (factor 1)
        sz0, sz1 = trajectory_increments(res.encoder, trajs)
        sweep = []
        if len(sz0) >= 10:
            for name, lv in (("1", 1.0), ("K/4", K / 4), ("K/2", K / 2), ("K", K), ("2K", 2 * K)):
                sde_l, _ = fit_sde(res.z0, res.z1, dt=args.steps, names=res.encoder.names, lam=lv,
                                   area_px2=res.report["area_px2"], tile_area_px2=res.report["tile_area_px2"],
                                   seed=args.seed, iterations=args.fit_iterations,
                                   fast_var=res.sde.config.fast_var)
                sweep.append({"lambda": name, "value": lv, **_variance_check(sde_l, sz0, sz1, args.steps)})
        report["lambda_sweep"] = sweep or "needs >= 10 whole-system increments of the small systems"
        report["patch_curve"] = "block states: no patches cut from a large system"
        atomic_write_json(tx.path("report.json"), report)
        _plots(tx, res, report)
    choice = res.report.get("horizon_choice")
    if choice:
        print(f"horizon auto: H = {choice['chosen']} macro steps (held-out scores "
              + ", ".join(f"H {h}: {m:.3g}" for h, m in zip(choice["candidates"], choice["mean_score"])) + ")")
    fast = res.report.get("fast_part")
    if fast:
        print("fast part (white at the macro step, kept out of sigma): "
              + ", ".join(f"{n} {100 * sh:.0f} % of a small system's increment variance"
                          for n, sh in zip(res.encoder.names, fast["share_of_increment_variance"])))
    print(f"drift fitted by the {res.report['drift_fit']}")
    print(f"macro SDE of {', '.join(res.encoder.names)} from {len(res.z0)} block-state increments "
          f"({len(trajs)} small systems, K = {K:.3g}, lambda = {res.lam:.3g}): {out}")
    return 0


def _variance_check(sde, z0, z1, steps) -> dict:
    """The SDE's predicted increment variance for the small system (factor 1), first
    variable, against the observed variance of the small input's own increments about
    their least-squares linear trend in z0 (independent of the SDE); ratio 1 is right."""
    import numpy as np
    import torch

    with torch.no_grad():
        L = sde.sigma(torch.as_tensor(z0, dtype=torch.float64))
        c = sde.covariance_scale(1.0)
        cov = (L @ L.transpose(1, 2)).numpy() * steps * c
    if sde.config.fast_var is not None:      # an increment holds the fast parts of both its ends
        cov[:, 0, 0] += 2.0 * c * float(sde.config.fast_var[0])
    X = np.concatenate([z0, np.ones((len(z0), 1))], axis=1)
    dz = (z1 - z0)[:, 0]
    resid = dz - X @ np.linalg.lstsq(X, dz, rcond=None)[0]
    obs = float(np.sum(resid ** 2) / max(1, len(dz) - X.shape[1]))
    pred = float(np.mean(cov[:, 0, 0]))
    return {"predicted_variance_small": pred, "observed_variance_small": obs, "ratio": pred / obs}


def _plots(tx, res, report) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    d = len(res.encoder.names)
    fig, axes = plt.subplots(1, d, figsize=(4.2 * d, 3.8), squeeze=False)
    with torch.no_grad():
        mu = res.sde.drift(torch.as_tensor(res.z0)).numpy() * res.sde.dt
    for k, ax in enumerate(axes[0]):
        dz = res.z1[:, k] - res.z0[:, k]
        ax.scatter(res.z0[:, k], dz, s=5, alpha=0.4,
                   label="block-state increments" if res.report.get("states") == "block" else "partial increments")
        order = np.argsort(res.z0[:, k])
        ax.plot(res.z0[order, k], mu[order, k], "k.", ms=3, label="mu(z0) dt")
        ax.set_xlabel(res.encoder.names[k])
        ax.set_ylabel(f"increment over {res.sde.dt:g} frames")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(tx.path("increments.png"), dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 3.8))
    if isinstance(report["lambda_sweep"], list) and report["lambda_sweep"]:
        rows = report["lambda_sweep"]
        ax.semilogx([r["value"] for r in rows], [r["ratio"] for r in rows], "o-")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xlabel("lambda")
        ax.set_ylabel("predicted / observed small-system variance")
    else:
        ax.text(0.5, 0.5, "no lambda sweep:\n" + str(report["lambda_sweep"]), ha="center", va="center", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(tx.path("lambda_sweep.png"), dpi=100)
    plt.close(fig)
    if not isinstance(report["patch_curve"], list):
        return
    fig, ax = plt.subplots(figsize=(4.5, 3.8))
    rows = report["patch_curve"]
    key = "ratio" if all("ratio" in r for r in rows) else "val_nll"
    ax.plot([r["patch_px"] for r in rows], [r[key] for r in rows], "o-")
    ax.set_xlabel("patch side (px)")
    ax.set_ylabel("predicted / observed small-system variance" if key == "ratio" else "validation NLL")
    fig.tight_layout()
    fig.savefig(tx.path("patch_curve.png"), dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------- simulate
def run_simulate(args: argparse.Namespace) -> int:
    import math

    import numpy as np
    import pandas as pd
    import torch

    from ..errors import ParameterError
    from ..outputs import output_folder, provenance, write_table
    from ..scaling.macro import load_sde

    out = table_output(args)
    if not (math.isfinite(args.factor) and args.factor > 0):
        raise ParameterError(f"--factor: must be a number > 0, got {args.factor}")
    for flag, v, lo in (("--steps", args.steps, 1), ("--runs", args.runs, 1), ("--seed", args.seed, 0)):
        if v < lo:
            raise ParameterError(f"{flag}: must be >= {lo}, got {v}")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    sde = load_sde(args.macro_dir)
    z = sde.simulate(steps=args.steps, runs=args.runs, factor=args.factor, seed=args.seed, progress=True)
    R, T, d = z.shape
    outside = sde.outside_data(z)
    if outside is not None and outside.any():
        lo, hi = sde.config.extra["z_min"], sde.config.extra["z_max"]
        rng = ", ".join(f"{n} {a:.4g}..{b:.4g}" for n, a, b in zip(sde.names, lo, hi))
        print(f"warning: {int(outside.sum())} of {R} runs left the states the SDE was fitted on ({rng}, by more "
              f"than a quarter of that range): their drift and noise there are extrapolated, not learned",
              file=sys.stderr)
    cols = {"run": np.repeat(np.arange(R), T), "step": np.tile(np.arange(T), R),
            "time": np.tile(np.arange(T) * sde.dt, R)}
    for k, n in enumerate(sde.names):
        cols[n] = z[:, :, k].ravel()
    for n, v in sde.config.labels.items():
        cols[n] = np.full(R * T, float(v))
    df = pd.DataFrame(cols)
    png = out.with_suffix(".png")
    with output_folder(out.parent, [out.name, out.with_suffix(".json").name, png.name], args.overwrite,
                       option=f"-o {out}: folder") as tx:
        side = provenance("macro simulate", {"macro_dir": args.macro_dir},
                          {"factor": args.factor, "steps": args.steps, "runs": args.runs, "seed": args.seed,
                           "dt_frames": sde.dt, "covariance_scale": sde.covariance_scale(args.factor),
                           "runs_outside_fitted_states": None if outside is None else int(outside.sum())},
                          units={"time": "frames", "step": "macro steps"})
        write_table(tx.path(out.name), df, side)
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, d, figsize=(4.2 * d, 3.6), squeeze=False)
        t = np.arange(T) * sde.dt
        for k, ax in enumerate(axes[0]):
            for r in range(min(R, 30)):
                ax.plot(t, z[r, :, k], color="0.6", lw=0.5)
            ax.plot(t, z[:, :, k].mean(0), "k-", lw=2, label=f"mean of {R} runs")
            ax.set_xlabel("time (frames)")
            ax.set_ylabel(sde.names[k])
            ax.legend(fontsize=7)
        fig.suptitle(f"area factor {args.factor:g}")
        fig.tight_layout()
        fig.savefig(tx.path(png.name), dpi=100)
        plt.close(fig)
    print(f"{R} runs x {args.steps} steps of {', '.join(sde.names)} (area factor {args.factor:g}): {out}")
    return 0
