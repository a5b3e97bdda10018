"""Roll a trained model forward from one frame of a tracks table.

The same function serves ``colloidcg simulate``, the batch runner and the napari Model
widget: it takes a tracks table (trackpy schema, px and frames) and returns the rollout in
the same schema, so measured and simulated tracks go through the same evaluation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .core.graph import find_pairs, wrap
from .core.integrate import rollout
from .core.model import MetriplecticModel, State
from .core.stability import UnstableRolloutWarning, stable_substeps
from .data import from_tracks, near_edge, to_tracks
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
             steps: int, frame: int | None = None, seed: int = 0, substeps: int | str = 1,
             fast: bool = False, halo: float | None = None, keep_halo: bool = False,
             name: str = "tracks") -> Simulation:
    """Stochastic rollout of ``model`` for ``steps`` frames, started from ``frame`` of ``tracks``.

    ``model_config`` is the model directory's ``config.json`` dict (its ``calibration``
    gives fps, um_per_px and box_px, the units the model was trained in). ``frame``
    defaults to the second frame, the first with finite-difference velocities. ``fast``
    rolls out a tabulated copy of the model (:meth:`MetriplecticModel.tabulated`: pair
    functions, pair energy and equation of state; errors reported in ``parameters``). ``name`` is used in
    error messages (the file the tracks came from).

    ``substeps``: integration steps per frame, or "auto": one where one step per frame is
    linearly stable at the starting frame, else enough for twice its stiffest mode
    (:func:`colloidcg.core.stability.stable_substeps`; steep contact forces learned at the
    frame rate, WCA or Lennard-Jones particles, need several), and at least the steps the
    model's friction was calibrated with (``transport="msd"``). With a number, the same check
    runs and warns (:class:`UnstableRolloutWarning`) where steps of that length are unstable
    even at the starting configuration or fewer than the calibration's; the check is in
    ``parameters["stability"]`` either way.

    Open boundaries (video): a field of view is a window into a larger sample, so the
    particles within ``halo`` (um; default the model's cutoff, 0 for none) of its border at
    the starting frame are boundary particles, as in training: their state is prescribed
    from the data at every later frame the data has them, and held at their last observed
    state after that. They are left out of the returned tracks unless ``keep_halo``.
    Periodic boxes have no boundary particles.

    Sheared boxes (the tracks' sidecar has ``meta.lees_edwards``: MD tracks of a LAMMPS run
    with ``fix deform ... xy``; positions unwrapped in the infinite sheared system): the
    rollout runs in the Lees-Edwards box (:class:`colloidcg.core.driver.LeesEdwards`) with
    the data's shear rate, from the image offset (tilt) of the starting frame, and its
    ``meta`` carries ``lees_edwards`` with the offset continued to every frame.
    """
    if steps < 1:
        raise ParameterError(f"steps: must be >= 1, got {steps}")
    auto = substeps == "auto"
    if not auto and (isinstance(substeps, bool) or not isinstance(substeps, (int, np.integer)) or substeps < 1):
        raise ParameterError(f"substeps: expected an integer >= 1 or 'auto', got {substeps!r}")
    cal = model_config.get("calibration", {}) or {}
    um = cal.get("um_per_px") or 1.0
    fps = cal.get("fps") or 1.0
    traj = from_tracks(tracks, meta, fps=fps, um_per_px=um, box_px=cal.get("box_px"),
                       size_column=model.config.size_column or None)
    if traj.dim != model.config.dim:
        raise ColloidcgError(f"{name}: {traj.dim}D tracks but the model is {model.config.dim}D")
    param = next(model.parameters())
    traj = traj.to(device=param.device, dtype=param.dtype)
    if traj.shear is not None and model.substrate:
        raise ParameterError(f"{name}: the tracks are sheared (sidecar meta.lees_edwards) but the model has "
                             "substrate friction; shear needs a momentum-conserving model (substrate False)")
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
    halo = model.config.cutoff if halo is None else float(halo)
    if halo < 0:
        raise ParameterError(f"halo: must be >= 0 um, got {halo}")
    boundary = None
    if traj.box is None and traj.fov is not None and halo > 0:
        boundary = near_edge(r0, traj.fov if traj.frame_fov is None else traj.frame_fov[t], halo)
        if not bool(boundary.any()):
            boundary = None
    if boundary is not None and bool(boundary.all()):
        raise ColloidcgError(f"{name}: every particle of frame {frame} lies within the halo ({halo:g} um) "
                             "of the field-of-view border; nothing is left to simulate (pass a smaller halo)")
    tab_err = eos_err = None
    shear0 = traj.shear_at(t)
    with torch.no_grad():
        S0 = model.initial_S(r0, None, traj.box, shear0)
        prescribed = _observed(traj, t, idx, steps, S0) if boundary is not None else None
        size = None if traj.size is None else traj.size[idx]
        state = State(r0, v0, S0, size)
        runner = model
        if fast:
            # a tabulated copy; the equation-of-state table covers the starting state
            rw = wrap(r0, traj.box, shear0)
            dens0 = model.density_of(State(rw, v0, S0, size), find_pairs(rw, model.cutoff, traj.box, shear0),
                                     traj.box, shear0)
            runner, errors = model.tabulated((S0, dens0))
            eos_err = errors.pop("density", None)
            tab_err = max(errors.values())
        stability = stable_substeps(model, [State(wrap(r0, traj.box, shear0), v0, S0, size)], traj.dt, traj.box,
                                    shear=shear0, **({} if auto else {"safety": 1.0}))
        if auto:
            substeps = stability.substeps
        elif stability.substeps > substeps:
            why = (f"its friction was calibrated with {stability.calibrated_substeps} steps per frame "
                   "(transport 'msd')" if stability.calibrated_substeps > substeps else
                   f"its stiffest mode needs {stability.substeps} even at the starting configuration; the "
                   "rollout may heat and melt")
            warnings.warn(UnstableRolloutWarning(
                f"{name}: {substeps} integration step(s) per frame is too few for this model from frame "
                f"{frame} ({why}): pass substeps='auto' (--substeps auto)"), stacklevel=2)
        res = rollout(runner, state, steps, traj.dt, box=traj.box, seed=seed, substeps=substeps,
                      boundary=boundary, prescribed=prescribed, lees_edwards=traj.lees_edwards(t))
    keep = torch.ones_like(idx, dtype=torch.bool) if (boundary is None or keep_halo) else ~boundary
    df = to_tracks(res.r[:, keep], traj.um_per_px, traj.fps, first_frame=frame,
                   particles=traj.particles[idx[keep].cpu().numpy()], vel=res.v[:, keep])
    if keep_halo and boundary is not None:
        df["boundary"] = np.tile(boundary.cpu().numpy(), res.r.shape[0])
    n_halo = 0 if boundary is None else int(boundary.sum())
    parameters = {"frame": frame, "steps": steps, "seed": seed, "substeps": int(substeps),
                  "substeps_requested": "auto" if auto else int(substeps), "stability": stability.to_dict(),
                  "fast": fast,
                  "tabulation_max_rel_error": tab_err,
                  "eos_table_max_rel_error": eos_err,
                  "n_particles": int(idx.numel()) - n_halo,
                  "n_boundary": n_halo, "halo_um": halo if boundary is not None else None}
    meta_out = {"fps": traj.fps, "um_per_px": traj.um_per_px, "box_px": cal.get("box_px")}
    if traj.shear is not None:
        meta_out["box_px"] = (traj.box / traj.um_per_px).tolist()
        meta_out["lees_edwards"] = sheared_meta(traj, t, frame, steps)
        parameters["shear_rate"] = traj.shear_rate
    return Simulation(df, parameters, meta_out)


def sheared_meta(traj, t: int, frame: int, steps: int) -> dict:
    """The ``meta.lees_edwards`` of a rollout from row t (frame ``frame``) of a sheared
    trajectory: the offset (px) continued at the shear rate to frames 0..frame + steps (the
    frames the rollout's tracks and the data before it carry)."""
    off0 = float(traj.shear[t, 0])
    jump = float(traj.shear[t, 1])
    tilt = [(off0 + jump * (k - frame) * traj.dt) / traj.um_per_px for k in range(frame + steps + 1)]
    return {"plane": "xy", "shear_rate": traj.shear_rate, "tilt_xy": tilt,
            "note": "continued from the starting frame's offset at the shear rate (colloidcg simulate)"}


def _observed(traj, t: int, idx: torch.Tensor, steps: int, S0: torch.Tensor):
    """``k -> State`` of the particles ``idx`` at frame t + k from the data, each held at its
    last observed state where the data no longer has it (velocity zero once held)."""
    last = min(traj.n_frames - 1, t + steps)
    pos = traj.pos[t: last + 1, idx].clone()
    vel = traj.vel[t: last + 1, idx].clone()
    seen = traj.present[t: last + 1, idx]
    for k in range(1, pos.shape[0]):           # forward fill, one vectorised step per frame
        gone = ~seen[k]
        pos[k, gone] = pos[k - 1, gone]
        vel[k, gone] = 0.0

    def prescribed(k: int) -> State:
        if k < pos.shape[0]:
            return State(pos[k], vel[k], S0)
        return State(pos[-1], torch.zeros_like(vel[-1]), S0)
    return prescribed


def tracks_stability(model: MetriplecticModel, model_config: dict, tracks: pd.DataFrame, meta: dict | None = None,
                     frame: int | None = None):
    """:func:`colloidcg.core.stability.stable_substeps` of ``model`` at one frame of
    ``tracks`` (default its first; one frame suffices), in the units of ``model_config``'s
    calibration: the integration steps per frame its rollouts from there need."""
    from .data import meta_box

    cal = model_config.get("calibration", {}) or {}
    um, fps = float(cal.get("um_per_px") or 1.0), float(cal.get("fps") or 1.0)
    frame = int(tracks["frame"].min()) if frame is None else int(frame)
    rows = tracks[tracks["frame"] == frame]
    if rows.empty:
        raise ParameterError(f"frame: {frame} is not in the tracks")
    dim = int(model.config.dim)
    param = next(model.parameters())
    as_t = lambda a: torch.tensor(np.asarray(a, float), dtype=param.dtype, device=param.device)  # noqa: E731
    box_px = cal.get("box_px") or meta_box(meta)
    box = None if box_px is None else as_t(box_px) * um
    r = as_t(rows[["x", "y", "z"][:dim]].to_numpy()) * um
    r = wrap(r, box)
    col = model.config.size_column or None
    size = as_t(rows[col].to_numpy()) if col else None
    with torch.no_grad():
        S = model.initial_S(r, None, box)
        return stable_substeps(model, [State(r, torch.zeros_like(r), S, size)], 1.0 / fps, box)
