"""``colloidcg simulate``: roll a trained model forward from a measured frame."""

from __future__ import annotations

import argparse

from ._common import add_output


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate", help="run a trained model from a frame of a tracks table",
        description="Stochastic rollout of a trained model, started from one frame of a tracks "
                    "table; writes the result in the tracks schema (px, frames).")
    p.add_argument("model", metavar="MODEL_DIR", help="folder written by colloidcg train")
    p.add_argument("--init", required=True, metavar="TRACKS.parquet", help="tracks table to start from")
    p.add_argument("--frame", type=int, default=None, help="frame to start from (default: the second frame)")
    p.add_argument("--steps", type=int, required=True, help="number of frames to simulate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--substeps", type=int, default=1, help="integration steps per frame (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--fast", action="store_true",
                   help="tabulated pair functions (faster; error reported in the sidecar)")
    add_output(p, help="output table SIM.parquet")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..core.integrate import rollout
    from ..core.model import State
    from ..core.persist import load_model
    from ..data import from_tracks, to_tracks
    from ..errors import ColloidcgError, ParameterError
    from ..outputs import check_writable, provenance, read_table, write_table

    out = Path(args.output)
    if out.suffix != ".parquet":
        raise ParameterError(f"-o: {out}: expected a .parquet file name")
    check_writable([out, out.with_suffix(".json")], args.overwrite)
    if args.steps < 1:
        raise ParameterError(f"--steps: must be >= 1, got {args.steps}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"--device: {args.device!r} requested but CUDA is not available")
    model, cfg = load_model(args.model, device=args.device)
    cal = cfg.get("calibration", {})
    tracks, meta = read_table(args.init, required=["frame", "particle", "x", "y"])
    um = cal.get("um_per_px") or 1.0
    fps = cal.get("fps") or 1.0
    traj = from_tracks(tracks, meta, fps=fps, um_per_px=um, box_px=cal.get("box_px"))
    if traj.dim != model.config.dim:
        raise ColloidcgError(f"{args.init}: {traj.dim}D tracks but the model is {model.config.dim}D")
    dtype = next(model.parameters()).dtype
    traj = traj.to(device=args.device, dtype=dtype)
    f0 = int(traj.frames[0])
    frame = f0 + 1 if args.frame is None else args.frame
    t = frame - f0
    if not (0 <= t < traj.n_frames):
        raise ParameterError(f"--frame: {frame} is not in {args.init} (frames {f0}..{int(traj.frames[-1])})")
    idx = torch.nonzero(traj.present[t]).squeeze(-1)
    if idx.numel() == 0:
        raise ColloidcgError(f"{args.init}: no particle in frame {frame}")
    r0 = traj.pos[t, idx]
    v0 = traj.vel[t, idx] if t > 0 else torch.zeros_like(r0)
    tab_err = None
    if args.fast:
        from ..core.tabulate import tabulate
        tab_err = tabulate(model)
    with torch.no_grad():
        S0 = model.initial_S(r0, None, traj.box)
        res = rollout(model, State(r0, v0, S0), args.steps, traj.dt, box=traj.box, seed=args.seed,
                      substeps=args.substeps)
    df = to_tracks(res.r, traj.um_per_px, traj.fps, first_frame=frame,
                   particles=traj.particles[idx.cpu().numpy()], vel=res.v)
    side = provenance("simulate", {"model": args.model, "init": args.init},
                      {"frame": frame, "steps": args.steps, "seed": args.seed, "substeps": args.substeps,
                       "device": args.device, "fast": args.fast, "tabulation_max_rel_error": tab_err},
                      units={"x": "px", "y": "px", "vx": "px/frame", "vy": "px/frame", "frame": "frame"},
                      meta={"fps": traj.fps, "um_per_px": traj.um_per_px,
                            "box_px": cal.get("box_px")})
    write_table(out, df, side)
    print(f"simulated {args.steps} frames of {idx.numel()} particles from frame {frame}: {out}")
    return 0
