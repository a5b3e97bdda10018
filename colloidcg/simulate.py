"""Roll a trained model forward from one frame of a tracks table.

The same function serves ``colloidcg simulate``, the batch runner and the napari Model
widget: it takes a tracks table (trackpy schema, px and frames) and returns the rollout in
the same schema, so measured and simulated tracks go through the same evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from .core.integrate import rollout
from .core.model import MetriplecticModel, State
from .data import from_tracks, to_tracks
from .errors import ColloidcgError, ParameterError


@dataclass
class Simulation:
    """A rollout in the tracks schema.

    tracks : DataFrame with frame, particle, x, y [, z], vx, vy (px, px/frame); frames
        continue from the starting frame, particle ids are those of the starting frame.
    parameters : what was run (frame, steps, seed, substeps, fast, tabulation error), for
        the sidecar.
    meta : calibration the tracks are in (fps, um_per_px, box_px).
    """

    tracks: pd.DataFrame
    parameters: dict
    meta: dict


def simulate(model: MetriplecticModel, model_config: dict, tracks: pd.DataFrame, meta: dict | None = None, *,
             steps: int, frame: int | None = None, seed: int = 0, substeps: int = 1,
             fast: bool = False, name: str = "tracks") -> Simulation:
    """Stochastic rollout of ``model`` for ``steps`` frames, started from ``frame`` of ``tracks``.

    ``model_config`` is the model directory's ``config.json`` dict (its ``calibration``
    gives fps, um_per_px and box_px, the units the model was trained in). ``frame``
    defaults to the second frame, the first with finite-difference velocities. ``fast``
    tabulates the pair functions (error reported in ``parameters``). ``name`` is used in
    error messages (the file the tracks came from).
    """
    if steps < 1:
        raise ParameterError(f"steps: must be >= 1, got {steps}")
    if substeps < 1:
        raise ParameterError(f"substeps: must be >= 1, got {substeps}")
    cal = model_config.get("calibration", {}) or {}
    um = cal.get("um_per_px") or 1.0
    fps = cal.get("fps") or 1.0
    traj = from_tracks(tracks, meta, fps=fps, um_per_px=um, box_px=cal.get("box_px"))
    if traj.dim != model.config.dim:
        raise ColloidcgError(f"{name}: {traj.dim}D tracks but the model is {model.config.dim}D")
    param = next(model.parameters())
    traj = traj.to(device=param.device, dtype=param.dtype)
    f0 = int(traj.frames[0])
    frame = f0 + 1 if frame is None else int(frame)
    t = frame - f0
    if not (0 <= t < traj.n_frames):
        raise ParameterError(f"frame: {frame} is not in {name} (frames {f0}..{int(traj.frames[-1])})")
    idx = torch.nonzero(traj.present[t]).squeeze(-1)
    if idx.numel() == 0:
        raise ColloidcgError(f"{name}: no particle in frame {frame}")
    r0 = traj.pos[t, idx]
    v0 = traj.vel[t, idx] if t > 0 else torch.zeros_like(r0)
    tab_err = None
    if fast:
        from .core.tabulate import tabulate
        tab_err = tabulate(model)
    try:
        with torch.no_grad():
            S0 = model.initial_S(r0, None, traj.box)
            res = rollout(model, State(r0, v0, S0), steps, traj.dt, box=traj.box, seed=seed,
                          substeps=substeps)
    finally:
        if fast:
            from .core.tabulate import untabulate
            untabulate(model)
    df = to_tracks(res.r, traj.um_per_px, traj.fps, first_frame=frame,
                   particles=traj.particles[idx.cpu().numpy()], vel=res.v)
    parameters = {"frame": frame, "steps": steps, "seed": seed, "substeps": substeps, "fast": fast,
                  "tabulation_max_rel_error": tab_err, "n_particles": int(idx.numel())}
    return Simulation(df, parameters, {"fps": traj.fps, "um_per_px": traj.um_per_px,
                                       "box_px": cal.get("box_px")})
