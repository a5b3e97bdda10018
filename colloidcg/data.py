"""From a tracks table to tensors: :class:`Trajectory`, and back again.

A tracks table (trackpy schema: frame, particle, x, y [, z] in pixels) becomes dense
arrays over (frame, particle) in physical units (um, s):

- ``pos`` (T, N, d): positions, um; zero where a particle is missing;
- ``vel`` (T, N, d): backward finite differences (r_t - r_{t-1}) / dt, um/s — the velocity
  that brought the particle to r_t, which makes r_{t+1} = r_t + v_{t+1} dt exact, as in
  the model's semi-implicit step; zero where undefined;
- ``present`` (T, N): the particle was tracked in that frame;
- ``mask`` (T, N): usable as a model particle: present, velocity defined, and at least
  ``edge`` away from its frame's field-of-view border (particles near the border, whose
  neighbourhoods are cut by the frame, are prescribed halo particles in training);
- ``dt`` = 1 / fps; ``box`` (d,) periodic box in um, or None for open boundaries;
- ``fov``: open boundaries only, the bounding box of all positions ((lo, hi) per axis,
  um); ``frame_fov`` (T, d, 2): each frame's own field of view (with the drift subtracted
  the camera's view moves from frame to frame; the halo is measured from each frame's own
  border, :func:`frame_fields_of_view`);
- ``size`` (N,): optional per-particle size, the particle's median over its frames of a
  size column of the tracks (units of that column, e.g. the synthetic truth's
  ``diameter`` or the tracker's ``size``, proportional to the radius of gyration); a
  constant of the particle, read by models trained with per-particle sizes;
- ``shear`` (T, 2): a sheared periodic box's Lees-Edwards state per frame (the offset
  along x of the image across +y, um, and the velocity jump rate L_y, um/s;
  :mod:`colloidcg.core.driver`), from a sidecar's ``meta.lees_edwards`` (MD tracks of a
  LAMMPS run with ``fix deform ... xy``), or None. Positions are then unwrapped in the
  infinite sheared system and the velocities carry the streaming part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .errors import ColloidcgError, ParameterError


@dataclass
class Trajectory:
    """Particle trajectories as tensors (see module docstring for shapes and units)."""

    pos: torch.Tensor
    vel: torch.Tensor
    present: torch.Tensor
    mask: torch.Tensor
    dt: float
    box: torch.Tensor | None = None
    frames: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    particles: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    um_per_px: float = 1.0
    fps: float = 1.0
    rearranging: torch.Tensor | None = None   # (T, N) float in {0, 1}, NaN where unknown
    d2min: torch.Tensor | None = None         # (T, N) float, NaN where unknown
    fov: tuple | None = None                  # ((lo, hi) per axis) in um, for open boundaries
    size: torch.Tensor | None = None          # (N,) per-particle size (size column's units)
    shear: torch.Tensor | None = None         # (T, 2) Lees-Edwards (offset um, jump um/s) per frame
    frame_fov: torch.Tensor | None = None     # (T, d, 2) each row's field of view (lo, hi per axis), um

    @property
    def n_frames(self) -> int:
        return self.pos.shape[0]

    @property
    def n_particles(self) -> int:
        return self.pos.shape[1]

    @property
    def dim(self) -> int:
        return self.pos.shape[2]

    def to(self, device=None, dtype=None) -> "Trajectory":
        def cv(t):
            if t is None:
                return None
            if t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)
        return Trajectory(cv(self.pos), cv(self.vel), cv(self.present), cv(self.mask), self.dt,
                          cv(self.box), self.frames, self.particles, self.um_per_px, self.fps,
                          cv(self.rearranging), cv(self.d2min), self.fov, cv(self.size), cv(self.shear),
                          cv(self.frame_fov))

    @property
    def shear_rate(self) -> float | None:
        """The shear rate of a Lees-Edwards box (1/s), None for an unsheared one."""
        if self.shear is None or self.box is None:
            return None
        return float(self.shear[0, 1]) / float(self.box[1])

    def shear_at(self, t: int) -> torch.Tensor | None:
        """(2,) the Lees-Edwards state of row t (None for an unsheared box)."""
        return None if self.shear is None else self.shear[t]

    def lees_edwards(self, t: int):
        """A :class:`colloidcg.core.driver.LeesEdwards` whose time 0 is row t (rollouts that
        start there), or None for an unsheared box."""
        if self.shear is None:
            return None
        from .core.driver import LeesEdwards
        return LeesEdwards(self.shear_rate, float(self.shear[t, 0]))

    def frame_slice(self, start: int, stop: int) -> "Trajectory":
        s = slice(start, stop)
        sub = lambda t: None if t is None else t[s]  # noqa: E731
        return Trajectory(self.pos[s], self.vel[s], self.present[s], self.mask[s], self.dt, self.box,
                          self.frames[s], self.particles, self.um_per_px, self.fps,
                          sub(self.rearranging), sub(self.d2min), self.fov, self.size, sub(self.shear),
                          sub(self.frame_fov))


def _meta_value(meta: dict | None, key: str):
    if not meta:
        return None
    for where in (meta, meta.get("meta", {}) or {}, meta.get("units", {}) or {},
                  meta.get("parameters", {}) or {}):
        if isinstance(where, dict) and where.get(key) is not None:
            try:
                return float(where[key])
            except (TypeError, ValueError):
                continue
    return None


def meta_box(meta: dict | None):
    """The periodic box (px) a sidecar records as ``meta.box_px`` (MD tracks from
    ``colloidcg md-read``, simulations of periodic models), or None."""
    box = ((meta or {}).get("meta") or {}).get("box_px") if isinstance((meta or {}).get("meta"), dict) else None
    if box is None:
        return None
    if not (isinstance(box, (list, tuple)) and len(box) in (2, 3) and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and np.isfinite(b) and b > 0 for b in box)):
        raise ColloidcgError(f"sidecar meta.box_px: expected two or three positive lengths in px, got {box!r}")
    return [float(b) for b in box]


def meta_lees_edwards(meta: dict | None) -> dict | None:
    """A sidecar's ``meta.lees_edwards`` (a sheared MD box: ``shear_rate``, 1/time, and
    ``tilt_xy``, px per frame read), checked, or None."""
    inner = (meta or {}).get("meta") if isinstance((meta or {}).get("meta"), dict) else None
    le = (inner or {}).get("lees_edwards")
    if le is None:
        return None
    rate, tilt = le.get("shear_rate") if isinstance(le, dict) else None, le.get("tilt_xy") if isinstance(le, dict) else None
    if le.get("plane", "xy") != "xy" or not isinstance(rate, (int, float)) or not np.isfinite(rate) \
            or not isinstance(tilt, (list, tuple)) or not all(isinstance(x, (int, float)) for x in tilt):
        raise ColloidcgError("sidecar meta.lees_edwards: expected plane 'xy', a finite shear_rate and a tilt_xy "
                             f"list per frame, got {le!r}")
    return {"shear_rate": float(rate), "tilt_xy": [float(x) for x in tilt]}


def near_edge(pos: torch.Tensor, fov, edge: float) -> torch.Tensor:
    """Bool tensor of shape ``pos.shape[:-1]``: positions (..., d) closer than ``edge`` to the
    border of the field of view ``fov`` ((lo, hi) per axis, same units as ``pos``): one
    field of view (d, 2), or one per frame (T, d, 2) for positions (T, N, d)."""
    f = torch.as_tensor(np.asarray(fov, dtype=float), dtype=pos.dtype, device=pos.device)
    lo, hi = f[..., 0], f[..., 1]
    if f.dim() == 3:                  # per frame: broadcast over the particles
        lo, hi = lo[:, None, :], hi[:, None, :]
    return ((pos < lo + edge) | (pos > hi - edge)).any(-1)


#: Frames over which a running median of each frame's centre estimates a drift the tracks
#: do not record (:func:`frame_fields_of_view`).
DRIFT_WINDOW = 9


def _symmetric_running_median(v: np.ndarray, half: int) -> np.ndarray:
    """Running median over up to 2 ``half`` + 1 values centred on each; near the ends the
    window shrinks symmetrically, so that a linear trend (a steady drift) is kept exactly."""
    n = len(v)
    out = np.empty(n)
    for k in range(n):
        h = min(half, k, n - 1 - k)
        out[k] = np.median(v[k - h: k + h + 1])
    return out


def frame_fields_of_view(tracks: pd.DataFrame, cols: list, share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's field of view in the tracks' coordinates: (frames (F,) ascending, fov
    (F, d, 2) px, (lo, hi) per axis), the same size in every frame.

    Along each axis the view is found in the camera's frame of reference, then moved by each
    frame's drift. Tracks with the drift subtracted by ``colloidcg track --subtract-drift``
    (the demo's) keep the image positions as ``x_image``, ``y_image``: there the camera's
    frame is the image, and the drift is x - x_image (median per frame). Without image
    positions (tracks from elsewhere) the drift is estimated as a running median over
    :data:`DRIFT_WINDOW` frames (fewer, symmetrically, near the ends) of each frame's centre
    (mid-point of its extent), less its median: about zero for a static camera, and it
    follows a drift that was subtracted before (trackpy's ``subtract_drift`` keeps no image
    positions). It also follows a collective flow of a dilute sample, which it cannot tell
    from a camera's drift (the real ``mixed_contrast`` film: views moved by up to 5 px).

    ``share``: the view's edges are where this share of the frames have particles out to
    (the quantile ``share`` of the frames' lowest positions, in the camera's frame, and 1 -
    ``share`` of their highest). 0 (the default): everything any frame saw, as a training
    halo needs (particles near a frame's own border have neighbours out of view).
    Upsampling cuts its windows from ``share=0.9``: trackers find fewer particles within a
    few pixels of the image's edge (the demo's sample: 0.8 of the interior density in the
    outermost 2 px), and a window that includes that margin carries its deficit into the
    seams (docs/scaling.md); a window a little too small loses only area.

    Why not simply the extent of all positions: with the drift subtracted it is wider than
    what any one frame saw, by the drift's range."""
    if not 0.0 <= share < 1.0:
        raise ParameterError(f"share: expected a share of the frames in [0, 1), got {share!r}")
    frames = tracks["frame"].to_numpy()
    uniq, inv = np.unique(frames, return_inverse=True)
    fov = np.empty((len(uniq), len(cols), 2))
    for a, c in enumerate(cols):
        x = tracks[c].to_numpy(float)
        img = f"{c}_image"
        im = tracks[img].to_numpy(float) if img in tracks.columns else None
        if im is not None and np.isfinite(im).all():
            shift = pd.Series(x - im).groupby(inv).median().to_numpy()
        else:
            by = pd.Series(x).groupby(inv)
            centre = 0.5 * (by.min().to_numpy() + by.max().to_numpy())
            smooth = _symmetric_running_median(centre, DRIFT_WINDOW // 2)
            shift = smooth - float(np.median(smooth))
        by = pd.Series(x - shift[inv]).groupby(inv)          # positions in the camera's frame
        fov[:, a, 0] = float(np.quantile(by.min().to_numpy(), share)) + shift
        fov[:, a, 1] = float(np.quantile(by.max().to_numpy(), 1.0 - share)) + shift
    return uniq, fov


def from_tracks(tracks: pd.DataFrame, meta: dict | None = None, *, fps: float | None = None,
                um_per_px: float | None = None, box_px=None, edge: float = 0.0,
                labels: pd.DataFrame | None = None, size_column: str | None = None,
                dtype=torch.float64, lees_edwards: dict | None = None) -> Trajectory:
    """Build a :class:`Trajectory` from a tracks table.

    Parameters
    ----------
    tracks : DataFrame with columns frame, particle, x, y [, z] (pixels); optional d2min and
        rearranging columns (rearrangement detector output).
    meta : sidecar dict; ``fps`` and ``um_per_px`` are looked up in it (top level, "meta",
        "units" or "parameters") unless given.
    fps : frames per second (default: from meta, else 1 — time in frames).
    um_per_px : pixel size (default: from meta, else 1 — lengths in pixels).
    box_px : periodic box lengths in pixels (sequence of d floats) or None (open).
    edge : distance (um) from the field-of-view border within which particles are halo.
    labels : optional table with frame, particle and d2min and/or rearranging columns.
    size_column : name of a per-particle size column (e.g. ``diameter`` or the tracker's
        ``size``); its per-particle median becomes ``Trajectory.size``.
    lees_edwards : a sheared box, ``{"shear_rate": 1/time, "tilt_xy": [px per frame]}``
        (default: the sidecar's ``meta.lees_edwards``, used with a periodic box only);
        becomes ``Trajectory.shear``.
    """
    need = ["frame", "particle", "x", "y"]
    missing = [c for c in need if c not in tracks.columns]
    if missing:
        raise ColloidcgError(f"tracks: missing column(s) {', '.join(missing)}; expected frame, particle, x, y")
    cols = ["x", "y"] + (["z"] if "z" in tracks.columns else [])
    d = len(cols)
    if len(tracks) == 0:
        raise ColloidcgError("tracks: the table is empty")
    xyz = tracks[cols].to_numpy(dtype=float)
    if not np.all(np.isfinite(xyz)):
        bad = tracks.loc[~np.isfinite(xyz).all(1), "frame"].iloc[0]
        raise ColloidcgError(f"tracks: NaN or infinite positions (first in frame {bad}); drop or fill them first")
    fps = fps if fps is not None else _meta_value(meta, "fps")
    um = um_per_px if um_per_px is not None else _meta_value(meta, "um_per_px")
    fps = 1.0 if fps is None else float(fps)
    um = 1.0 if um is None else float(um)
    if not np.isfinite(fps) or fps <= 0:
        raise ParameterError(f"fps: must be positive (got {fps}); dt = 1/fps must be > 0")
    if not np.isfinite(um) or um <= 0:
        raise ParameterError(f"um_per_px: must be positive (got {um})")
    frame = tracks["frame"].to_numpy().astype(np.int64)
    pid = tracks["particle"].to_numpy().astype(np.int64)
    f0, f1 = frame.min(), frame.max()
    T = int(f1 - f0 + 1)
    if len(np.unique(frame)) < 3:
        raise ColloidcgError(f"tracks: {len(np.unique(frame))} frame(s); at least 3 are needed "
                             "(two velocities, one transition)")
    if pd.Index(zip(frame, pid)).duplicated().any():
        raise ColloidcgError("tracks: a particle appears twice in one frame (duplicate frame, particle rows)")
    parts, col = np.unique(pid, return_inverse=True)
    row = frame - f0
    N = len(parts)
    pos = np.zeros((T, N, d))
    present = np.zeros((T, N), bool)
    pos[row, col] = xyz * um
    present[row, col] = True
    dt = 1.0 / fps
    vel = np.zeros_like(pos)
    vok = np.zeros((T, N), bool)
    vok[1:] = present[1:] & present[:-1]
    vel[1:] = np.where(vok[1:, :, None], (pos[1:] - pos[:-1]) / dt, 0.0)
    mask = present & vok
    box = None
    fov = frame_fov = None
    if box_px is not None:
        b = np.asarray(box_px, float).reshape(-1)
        if b.shape != (d,) or np.any(b <= 0):
            raise ParameterError(f"box: expected {d} positive lengths in pixels, got {box_px}")
        box = torch.as_tensor(b * um, dtype=dtype)
        # unwrap jumps across the box so that finite differences are the true displacements
        disp = pos[1:] - pos[:-1]
        disp -= b * um * np.round(disp / (b * um))
        vel[1:] = np.where(vok[1:, :, None], disp / dt, 0.0)
    else:
        lo = xyz.min(0) * um
        hi = xyz.max(0) * um
        fov = tuple((float(a), float(c)) for a, c in zip(lo, hi))
        which, per = frame_fields_of_view(tracks, cols)
        frame_fov = np.tile(np.stack([lo, hi], 1), (T, 1, 1))     # frames the table lacks: the union
        frame_fov[which - f0] = per * um
        if edge > 0:
            mask &= ~near_edge(torch.as_tensor(pos), frame_fov, edge).numpy()
        frame_fov = torch.as_tensor(frame_fov, dtype=dtype)
    rearr = d2 = None
    lab = labels if labels is not None else tracks
    if "rearranging" in lab.columns or "d2min" in lab.columns:
        lf = lab["frame"].to_numpy().astype(np.int64) - f0
        lp = np.searchsorted(parts, lab["particle"].to_numpy().astype(np.int64))
        ok = (lf >= 0) & (lf < T) & (lp < N)
        ok[ok] &= parts[lp[ok]] == lab["particle"].to_numpy()[ok]
        if "rearranging" in lab.columns:
            arr = np.full((T, N), np.nan)
            arr[lf[ok], lp[ok]] = lab["rearranging"].to_numpy(dtype=float)[ok]
            rearr = torch.as_tensor(arr, dtype=dtype)
        if "d2min" in lab.columns:
            arr = np.full((T, N), np.nan)
            arr[lf[ok], lp[ok]] = lab["d2min"].to_numpy(dtype=float)[ok]
            d2 = torch.as_tensor(arr, dtype=dtype)
    size = None
    if size_column:
        if size_column not in tracks.columns:
            raise ParameterError(f"size_column: the tracks have no column {size_column!r}")
        # the median over a particle's frames: one constant per particle, robust to the
        # frame-to-frame noise of a tracker's size estimate
        med = pd.Series(tracks[size_column].to_numpy(dtype=float)).groupby(col).median()
        vals = med.reindex(np.arange(N)).to_numpy()
        if not np.all(np.isfinite(vals) & (vals > 0)):
            raise ParameterError(f"size_column: {size_column!r} must be positive and finite for every particle")
        size = torch.as_tensor(np.array(vals, dtype=float), dtype=dtype)
    shear = None
    le = lees_edwards if lees_edwards is not None else meta_lees_edwards(meta)
    if le is not None and box is not None:
        if d < 2:
            raise ParameterError("lees_edwards: a sheared box needs at least 2 dimensions")
        tilt = np.asarray(le["tilt_xy"], float)
        if f0 < 0 or f1 >= len(tilt):
            raise ColloidcgError(f"sidecar meta.lees_edwards: tilt_xy has {len(tilt)} frames; the tracks have "
                                 f"frames {f0}..{f1}")
        jump = float(le["shear_rate"]) * float(box[1])
        shear = torch.as_tensor(np.column_stack([tilt[f0: f1 + 1] * um, np.full(T, jump)]), dtype=dtype)
    return Trajectory(torch.as_tensor(pos, dtype=dtype), torch.as_tensor(vel, dtype=dtype),
                      torch.as_tensor(present), torch.as_tensor(mask), dt, box,
                      np.arange(f0, f1 + 1), parts, um, fps, rearr, d2, fov, size, shear, frame_fov)


def to_tracks(pos, um_per_px: float = 1.0, fps: float = 1.0, first_frame: int = 0,
              particles=None, present=None, vel=None) -> pd.DataFrame:
    """Arrays (T, N, d) in um back to the tracks schema (pixels, frames).

    Parameters
    ----------
    pos : (T, N, d) positions in um (tensor or array).
    um_per_px, fps : calibration used to convert back to pixels and px/frame.
    particles : (N,) particle ids (default 0..N-1).
    present : (T, N) bool; rows where False are left out.
    vel : (T, N, d) velocities in um/s (optional; written as vx, vy [, vz] in px/frame).

    Returns a DataFrame with frame, particle, x, y [, z] [, vx, vy [, vz]].
    """
    p = pos.detach().cpu().numpy() if isinstance(pos, torch.Tensor) else np.asarray(pos)
    T, N, d = p.shape
    ids = np.arange(N) if particles is None else np.asarray(particles)
    fr = np.repeat(np.arange(first_frame, first_frame + T), N)
    out = {"frame": fr.astype(np.int64), "particle": np.tile(ids, T).astype(np.int64)}
    names = ["x", "y", "z"][:d]
    flat = p.reshape(T * N, d) / um_per_px
    for a, nm in enumerate(names):
        out[nm] = flat[:, a]
    if vel is not None:
        vv = vel.detach().cpu().numpy() if isinstance(vel, torch.Tensor) else np.asarray(vel)
        vv = vv.reshape(T * N, d) / um_per_px / fps
        for a, nm in enumerate(names):
            out["v" + nm] = vv[:, a]
    df = pd.DataFrame(out)
    if present is not None:
        pr = present.detach().cpu().numpy() if isinstance(present, torch.Tensor) else np.asarray(present)
        df = df[pr.reshape(-1).astype(bool)].reset_index(drop=True)
    return df
