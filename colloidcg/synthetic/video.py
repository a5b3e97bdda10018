"""Synthetic colloid videos with ground truth: :func:`make_video` and :func:`write_synthetic`.

A box of soft disks larger than the field of view (FOV) is simulated (see
:mod:`colloidcg.synthetic.dynamics`); each frame, the particles whose images fall in or near
the FOV are rendered (see :mod:`colloidcg.synthetic.render`). Coordinates in the truth table
are FOV pixels: x = column, y = row, pixel centres at integers, and a row exists for every
particle whose centre lies in [-0.5, W - 0.5) x [-0.5, H - 0.5).

Particle ids: a simulated particle keeps its id while it stays in the same periodic image
relative to the FOV, so it keeps its id when it leaves the FOV and comes back across the
same edge; it gets a new id only after travelling around the periodic box (which happens
outside the FOV, in the margin).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from .config import SynthConfig
from .dynamics import Box, Integrator, random_packing
from .render import (background_field, brightfield_rings, digitise, fluorescence_spots)

TRUTH_UNITS = {"frame": "frame index", "x": "px", "y": "px", "diameter": "px",
               "vx": "px/frame", "vy": "px/frame", "particle": "id", "planted": "bool"}
EVENT_COLUMNS = ["event_id", "frame", "x", "y", "radius", "strain", "angle", "duration"]


class SyntheticVideo(NamedTuple):
    """Result of :func:`make_video`.

    frames : (T, H, W) uint8 or uint16 array.
    truth : DataFrame with columns frame, particle, x, y, diameter, [vx, vy,] planted
        (px, px/frame; velocities only for underdamped dynamics; rows sorted by frame,
        particle).
    meta : JSON-serialisable dict: fps, um_per_px, width, height, n_frames, bit_depth,
        mode, box (Lx, Ly), margin, n_simulated, substeps, diameters, strain (per frame),
        events (list of dicts) and parameters (the full resolved config).
    """

    frames: np.ndarray
    truth: pd.DataFrame
    meta: dict[str, Any]

    @property
    def events(self) -> pd.DataFrame:
        """Planted events: event_id, frame (first frame showing the displacement), x, y
        (FOV px, in frame ``frame - 1``), radius (px), strain, angle (rad, stretch axis),
        duration (frames)."""
        return pd.DataFrame(self.meta["events"], columns=EVENT_COLUMNS)


def _diameters(cfg: SynthConfig, lx: float, ly: float, rng: np.random.Generator) -> np.ndarray:
    if cfg.bidisperse:
        small = 2.0 * cfg.diameter / (1.0 + cfg.size_ratio)
        sizes = np.array([small, cfg.size_ratio * small])
    else:
        sizes = np.array([cfg.diameter])
    mean_area = float(np.mean(np.pi / 4 * sizes ** 2))
    n = max(1, int(round(cfg.area_fraction * lx * ly / mean_area)))
    diam = np.resize(sizes, n)
    return rng.permutation(diam)


def _render_pad(cfg: SynthConfig, dmax: float) -> float:
    if cfg.mode == "fluorescence":
        return float(np.ceil(4 * cfg.spot_sigma * dmax)) + 1.0
    return float(np.ceil(0.75 * dmax)) + 1.0


def _substeps(cfg: SynthConfig, dmin: float) -> int:
    if cfg.substeps is not None:
        return int(cfg.substeps)
    # Contact relaxation rate lambda = k/zeta = eps D0/(kT sigma^2); a triangular contact
    # network has Hessian eigenvalues up to ~9k, so Euler needs 9 lambda dt < 2; we keep
    # 9 lambda dt <= 0.5. Underdamped: omega = sqrt(9 lambda / tau_v), keep omega dt <= 0.3.
    lam = cfg.diffusion / (cfg.thermal_ratio * dmin * dmin)
    n = max(4, int(np.ceil(18.0 * lam)))
    if cfg.inertia > 0:
        n = max(n, int(np.ceil(np.sqrt(9.0 * lam / cfg.inertia) / 0.3)))
    return min(n, 2000)


def _resolve_events(cfg: SynthConfig, rng: np.random.Generator) -> list[dict[str, Any]]:
    ev = cfg.event_list()
    radius = cfg.event_radius if cfg.event_radius is not None else 2.5 * cfg.diameter
    if isinstance(ev, int):
        # centres at least half a radius inside the image when it is large enough
        inset_x = min(0.5 * radius, 0.25 * cfg.width)
        inset_y = min(0.5 * radius, 0.25 * cfg.height)
        rows = []
        for _ in range(ev):
            rows.append((int(rng.integers(1, cfg.n_frames - cfg.event_duration + 1)),
                         float(rng.uniform(inset_x - 0.5, cfg.width - 0.5 - inset_x)),
                         float(rng.uniform(inset_y - 0.5, cfg.height - 0.5 - inset_y)),
                         float(radius), float(cfg.event_strain)))
        rows.sort(key=lambda r: r[0])
    else:
        rows = list(ev)
    out = []
    for k, (f, x, y, r, s) in enumerate(rows):
        out.append(dict(event_id=k, frame=int(f), x=float(x), y=float(y), radius=float(r),
                        strain=float(s), angle=float(rng.uniform(0, np.pi)),
                        duration=int(cfg.event_duration)))
    return out


def _event_kick(pos: np.ndarray, box: Box, centre: np.ndarray, radius: float, strain: float,
                angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Eshelby-like localised pure shear about ``centre`` (sample px).

    u(d) = strain * w(|d|/R) * Q d,  Q = [[cos 2a, sin 2a], [sin 2a, -cos 2a]] (traceless,
    symmetric: stretch along angle a, compression across), w(q) = (1 - q^2)^2 for q < 1, so
    the displacement is continuous and vanishes at the boundary of the region.
    Returns (displacement (N, 2) px, moved mask (N,)).
    """
    c = np.broadcast_to(centre, pos.shape)
    conv = box.convected(pos)
    convc = box.convected(c)
    d = box.separation(conv, convc)
    q2 = np.einsum("ij,ij->i", d, d) / (radius * radius)
    inside = q2 < 1.0
    w = np.where(inside, (1.0 - q2) ** 2, 0.0)
    c2, s2 = np.cos(2 * angle), np.sin(2 * angle)
    u = np.stack([c2 * d[:, 0] + s2 * d[:, 1], s2 * d[:, 0] - c2 * d[:, 1]], axis=1)
    return strain * w[:, None] * u, inside


def make_video(config: SynthConfig | None = None, progress: bool = False,
               **overrides: Any) -> SyntheticVideo:
    """Simulate and render a synthetic colloid video with its ground truth.

    Parameters
    ----------
    config : :class:`SynthConfig` (default ``SynthConfig()``); keyword ``overrides`` replace
        its fields (e.g. ``make_video(n_frames=20, seed=3)``).
    progress : show a tqdm progress bar over frames.

    Returns
    -------
    :class:`SyntheticVideo` ``(frames (T, H, W) uint, truth DataFrame, meta dict)``; its
    ``.events`` property gives the planted-events table. Same config and seed give an
    identical result.
    """
    import dataclasses

    cfg = config if config is not None else SynthConfig()
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    cfg.validate()
    W, H, T = int(cfg.width), int(cfg.height), int(cfg.n_frames)

    seeds = np.random.SeedSequence(cfg.seed).spawn(4)
    rng_dyn, rng_ev, rng_look, rng_noise = (np.random.default_rng(s) for s in seeds)

    # ---- box and particles
    dmax = cfg.diameter * (2 * cfg.size_ratio / (1 + cfg.size_ratio) if cfg.bidisperse else 1.0)
    pad = _render_pad(cfg, dmax)
    margin = float(cfg.margin) if cfg.margin is not None else max(3.0 * dmax, pad + dmax, 16.0)
    margin = max(margin, pad + 1.0)
    lx, ly = W + 2 * margin, H + 2 * margin
    diam = _diameters(cfg, lx, ly, rng_dyn)
    n = len(diam)
    dmin = float(diam.min())
    box = Box(lx, ly, yc=margin + (H - 1) / 2.0)  # shear flow is zero on the FOV's centre row

    gamma0, period = float(cfg.shear_amplitude), float(cfg.shear_period)
    omega = 2 * np.pi / period

    def strain_fn(t):
        return gamma0 * np.sin(omega * t), gamma0 * omega * np.cos(omega * t)

    pos = random_packing(n, diam, box, rng_dyn)
    kT = float(cfg.thermal_ratio)
    nsub = _substeps(cfg, dmin)
    dt = 1.0 / nsub
    integ = Integrator(diam, box, cfg.diffusion, kT, cfg.inertia, strain_fn, rng_dyn,
                       max_strain=gamma0)
    vel = None
    if cfg.inertia > 0:
        vel = rng_dyn.standard_normal((n, 2)) * np.sqrt(kT / integ.mass)

    events = _resolve_events(cfg, rng_ev)
    ev_by_frame: dict[int, list[dict]] = {}
    for e in events:
        for g in range(e["frame"], min(e["frame"] + e["duration"], T)):
            ev_by_frame.setdefault(g, []).append(e)

    drift = np.asarray(cfg.drift, dtype=float)

    def origin(t):
        # FOV coordinate p corresponds to sample coordinate p + origin(t); the sample moves by
        # +drift per frame in the FOV, i.e. the FOV origin moves by -drift in the sample.
        return np.array([margin, margin]) - drift * t

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.equilibration + T, desc="simulating", unit="frame")

    # ---- equilibration (shear running, no events, not recorded)
    t = -float(cfg.equilibration)
    for _ in range(cfg.equilibration):
        for k in range(nsub):
            pos, vel = integ.step(pos, vel, t + k * dt, dt)
        t += 1.0
        if bar is not None:
            bar.update(1)

    traj = np.empty((T, n, 2))
    vtraj = np.empty((T, n, 2)) if vel is not None else None
    planted = np.zeros((T, n), dtype=bool)
    strains = np.empty(T)
    for f in range(T):
        if f > 0:
            kick = None
            for e in ev_by_frame.get(f, []):
                box.strain = strain_fn(t)[0]
                centre = np.array([e["x"], e["y"]]) + origin(e["frame"] - 1)  # fixed in the sample
                u, moved = _event_kick(pos, box, centre, e["radius"], e["strain"] / e["duration"],
                                       e["angle"])
                kick = u if kick is None else kick + u
                planted[f] |= moved
            for k in range(nsub):
                pos, vel = integ.step(pos, vel, t + k * dt, dt,
                                      kick=None if kick is None else kick / nsub)
            t += 1.0
        traj[f] = pos
        if vtraj is not None:
            vtraj[f] = vel
        strains[f] = strain_fn(t)[0]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
        bar = tqdm(total=T, desc="rendering", unit="frame")

    # ---- map to FOV coordinates, frame by frame
    top = 2 ** cfg.bit_depth - 1
    sizes_sig = cfg.spot_sigma * diam
    bright = rng_look.lognormal(0.0, cfg.brightness_cv, n) if cfg.brightness_cv > 0 else np.ones(n)
    bg = background_field(H, W, cfg.unevenness, rng_look)
    if cfg.mode == "fluorescence":
        gain = 0.6 * top / (cfg.photons * (1.0 + cfg.background))
        bg_img = cfg.photons * cfg.background * bg
    else:
        gain = 0.5 * top / cfg.photons
        bg_img = cfg.photons * bg

    frames = np.empty((T, H, W), dtype=np.uint8 if cfg.bit_depth == 8 else np.uint16)
    rows = []
    for f in range(T):
        box.strain = strains[f]
        q = traj[f] - origin(f) + margin + 0.5  # window-box coords in [0, L)
        ny = np.floor(q[:, 1] / ly)
        q[:, 1] -= ny * ly
        q[:, 0] -= ny * box.strain * ly
        nx = np.floor(q[:, 0] / lx)
        q[:, 0] -= nx * lx
        fx = q[:, 0] - margin - 0.5
        fy = q[:, 1] - margin - 0.5
        vis = ((fx >= -0.5 - pad) & (fx < W - 0.5 + pad) & (fy >= -0.5 - pad) & (fy < H - 0.5 + pad))
        if cfg.mode == "fluorescence":
            sig = fluorescence_spots(fx[vis], fy[vis], sizes_sig[vis], cfg.photons * bright[vis], H, W)
            expected = bg_img + sig
        else:
            ring = brightfield_rings(fx[vis], fy[vis], diam[vis], bright[vis], H, W)
            expected = bg_img * np.clip(1.0 + ring, 0.02, None)
        frames[f] = digitise(expected, gain, cfg.read_noise, cfg.bit_depth, rng_noise)

        inside = np.flatnonzero((fx >= -0.5) & (fx < W - 0.5) & (fy >= -0.5) & (fy < H - 0.5))
        rec = {
            "frame": np.full(len(inside), f, dtype=np.int64),
            "sim": inside,
            "ix": nx[inside].astype(np.int64),
            "iy": ny[inside].astype(np.int64),
            "x": fx[inside],
            "y": fy[inside],
            "diameter": diam[inside],
        }
        if vtraj is not None:
            rec["vx"] = vtraj[f, inside, 0] + drift[0]
            rec["vy"] = vtraj[f, inside, 1] + drift[1]
        rec["planted"] = planted[f, inside]
        rows.append(pd.DataFrame(rec))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    truth = pd.concat(rows, ignore_index=True)
    key = list(zip(truth["sim"].to_numpy(), truth["ix"].to_numpy(), truth["iy"].to_numpy()))
    truth.insert(1, "particle", pd.factorize(pd.Series(key), sort=False)[0].astype(np.int64))
    truth = truth.drop(columns=["sim", "ix", "iy"])
    truth = truth.sort_values(["frame", "particle"], kind="stable").reset_index(drop=True)

    sizes = sorted(set(np.round(diam, 6).tolist()))
    meta = {
        "fps": float(cfg.fps),
        "um_per_px": float(cfg.um_per_px),
        "width": W, "height": H, "n_frames": T,
        "bit_depth": int(cfg.bit_depth), "mode": cfg.mode,
        "box": [float(lx), float(ly)], "margin": float(margin),
        "n_simulated": int(n), "substeps": int(nsub),
        "diameters": sizes,
        "strain": strains.tolist(),
        "events": events,
        "parameters": cfg.to_dict(),
    }
    return SyntheticVideo(frames, truth, meta)


def _write_tiff_atomic(path: Path, frames: np.ndarray, fps: float, um_per_px: float,
                       compress: bool = True) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        tifffile.imwrite(
            tmp, frames, imagej=True,
            resolution=(1.0 / um_per_px, 1.0 / um_per_px),
            metadata={"axes": "TYX", "finterval": 1.0 / fps, "unit": "micron", "fps": fps},
            compression="zlib" if compress else None,
        )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_synthetic(out_dir: str | os.PathLike, config: SynthConfig | None = None,
                    overwrite: bool = False, progress: bool = False) -> dict[str, Path]:
    """Generate a video and write it with its truth.

    Writes ``out_dir/video.tif`` (ImageJ hyperstack, zlib, finterval = 1/fps, resolution in
    pixels per micron), ``out_dir/truth.parquet`` + ``truth.json`` and, when events were
    planted, ``out_dir/events.parquet`` + ``events.json``. Existing files are refused unless
    ``overwrite`` (checked before any work). Returns the written paths by name.
    """
    from ..outputs import check_writable, provenance, write_table

    cfg = config if config is not None else SynthConfig()
    cfg.validate()
    out = Path(out_dir)
    paths = {"video": out / "video.tif", "truth": out / "truth.parquet",
             "events": out / "events.parquet"}
    check_writable([paths["video"], paths["truth"], paths["truth"].with_suffix(".json"),
                    paths["events"], paths["events"].with_suffix(".json")], overwrite)
    res = make_video(cfg, progress=progress)
    _write_tiff_atomic(paths["video"], res.frames, cfg.fps, cfg.um_per_px)
    meta = {k: v for k, v in res.meta.items() if k not in ("parameters", "events")}
    units = {c: TRUTH_UNITS[c] for c in res.truth.columns if c in TRUTH_UNITS}
    side = provenance("synth", {"video": paths["video"]}, cfg.to_dict(), units, meta=meta)
    write_table(paths["truth"], res.truth, side)
    written = {"video": paths["video"], "truth": paths["truth"]}
    if res.meta["events"]:
        ev_side = provenance("synth", {"video": paths["video"]}, cfg.to_dict(),
                             {"frame": "frame index", "x": "px", "y": "px", "radius": "px",
                              "strain": "dimensionless", "angle": "rad",
                              "duration": "frames"}, meta=meta)
        write_table(paths["events"], res.events, ev_side)
        written["events"] = paths["events"]
    elif overwrite:
        for p in (paths["events"], paths["events"].with_suffix(".json")):
            if p.exists():
                p.unlink()
    return written
