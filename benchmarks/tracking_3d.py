"""Tracking accuracy on 3D stacks (confocal-like volumes) against known positions.

Two renderers, neither of them the tracker's own model:

- ``trackpy.artificial.draw_spots`` in 3D (trackpy's test-image generator): an anisotropic
  feature evaluated at voxel centres without blur, ``gauss`` (a Gaussian of width
  ``size`` / sqrt(3) per axis) or ``hat`` (a flat top out to half of ``size`` with
  Gaussian shoulders: a dyed bead);
- ``sphere``: what a confocal microscope records of uniformly dyed spheres: solid spheres
  drawn on a grid twice as fine as the voxels, blurred by an anisotropic Gaussian PSF
  (``scipy.ndimage.gaussian_filter``) and averaged over each voxel (``--only sphere``).

Positions: random sequential addition with a minimum distance of ``spacing`` x the
feature's diameter along each axis (z scaled by the anisotropy); every particle then takes
random steps of 0.3 voxel per axis and frame (spheres: a step that would overlap another
sphere is not taken; before session 28 they could, and two overlapping spheres summed to
one brighter, larger blob). Light: 0.8 x the feature (peak about 200 grey
levels of 8 bits) on a background of 20, with shot noise (variance 0.5 x the light above
20) and read noise (3 grey levels). Counted: particles more than a feature diameter inside
every face; one-to-one matching within half the xy diameter (z scaled to xy voxels).

Rows: colloidcg's ``track`` with automatic parameters, and trackpy.batch with hand-set
parameters (odd diameters >= the feature's per axis, separation 0.8 x the minimum distance,
minmass chosen with the truth, as the 2D tables do). Per-axis RMS errors are in voxels of
that axis; ``ep/err``: median reported standard error over the median absolute error of
the axis divided by 0.6745 (1 for a calibrated standard error).

    python benchmarks/tracking_3d.py                # all cases, a few minutes on 2 cores
    python benchmarks/tracking_3d.py --only sphere
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings

import numpy as np
import pandas as pd

#: (name, renderer, size, spacing in diameters[, options]): size per axis (z, y, x) in
#: voxels for trackpy's features; for spheres (radius, PSF sigma in the plane, PSF sigma
#: along z, z step), all in xy voxels, the radius a pair for a 50:50 binary mixture
#: (spacing then in contact distances r_i + r_j); options: ``peak``, the particles' light in grey
#: levels above the background (default about 200)
CASES = [
    ("gauss isotropic, dilute", "gauss", (2.0, 2.0, 2.0), 2.0),
    ("gauss z 2x, apart", "gauss", (4.0, 2.0, 2.0), 1.5),
    ("gauss z 2x, near contact", "gauss", (4.0, 2.0, 2.0), 1.1),
    ("hat z 1.5x, near contact", "hat", (6.0, 4.0, 4.0), 1.1),
    ("spheres r 5, z-step 2, phi ~0.3", "sphere", (5.0, 1.2, 3.0, 2.0), 1.3),
    ("spheres r 5, z-step 2, dense", "sphere", (5.0, 1.2, 3.0, 2.0), 1.05),
    # a binary mixture (radii 4 and 5.5 px, 50:50) near contact: one shared spot shape
    ("spheres r 4 + 5.5, z-step 2, dense", "sphere", ((4.0, 5.5), 1.2, 3.0, 2.0), 1.05),
    # where it gets harder: a coarser z step, and a tenth of the light
    ("spheres r 5, z-step 3, phi ~0.3", "sphere", (5.0, 1.2, 3.0, 3.0), 1.3),
    ("gauss z 2x, apart, peak 20", "gauss", (4.0, 2.0, 2.0), 1.5, {"peak": 20.0}),
    ("spheres r 5, z-step 2, phi ~0.3, peak 20", "sphere", (5.0, 1.2, 3.0, 2.0), 1.3, {"peak": 20.0}),
]

SHAPE = (40, 112, 112)
#: the sphere renderer's subvoxels per voxel and axis (its drawn balls are staircases of them)
FINE = 2
N_FRAMES = 3
STEP = 0.3


def feature_diameter(kind: str, size) -> np.ndarray:
    """Diameter per axis (z, y, x) in voxels: 4 widths for a Gaussian (trackpy draws
    exp(-3 r^2 / 2 size^2) in 3D), 2 x size for a hat, the sphere's diameter (z in z
    voxels) for spheres (the larger one of a binary mixture)."""
    if kind == "sphere":
        radius, _, _, zstep = size
        radius = float(np.max(radius))
        return np.array([2 * radius / zstep, 2 * radius, 2 * radius])
    s = np.asarray(size, float)
    return 4.0 * s / math.sqrt(3.0) if kind == "gauss" else 2.0 * s


def positions(rng, shape, diameter, spacing, tries=40000) -> np.ndarray:
    """Random sequential addition in voxel coordinates (N, 3) z, y, x, pairs at least
    ``spacing`` diameters apart along the scaled axes."""
    scale = np.asarray(diameter, float)
    cand = rng.uniform([0, 0, 0], shape, (tries, 3)) / scale
    kept = np.zeros((0, 3))
    from scipy.spatial import cKDTree

    cell: list[np.ndarray] = []
    for c in cand:
        if len(cell) and len(cKDTree(np.array(cell)).query_ball_point(c, spacing)):
            continue
        cell.append(c)
    kept = np.array(cell) * scale
    return kept


def sphere_radii(size, n: int, rng) -> np.ndarray:
    """(n,) radii of the spheres: one radius, or a 50:50 mixture of the two radii of a
    tuple ``size[0]`` (drawn with ``rng``)."""
    r = np.atleast_1d(np.asarray(size[0], float))
    return np.full(n, r[0]) if len(r) == 1 else rng.choice(r, n)


def positions_mixture(rng, shape, radii, zstep, spacing, tries=40000) -> tuple[np.ndarray, np.ndarray]:
    """Random sequential addition of spheres of the given radii (px; chosen at random for
    each candidate): (positions (N, 3) z, y, x voxels, radii (N,)), pairs at least
    ``spacing`` x (r_i + r_j) apart, z in voxels of ``zstep`` px."""
    from scipy.spatial import cKDTree

    scale = np.array([zstep, 1.0, 1.0])
    cand = rng.uniform([0, 0, 0], shape, (tries, 3)) * scale
    rad = rng.choice(np.asarray(radii, float), tries)
    reach = 2 * spacing * float(np.max(radii))
    kept: list[int] = []
    for i, c in enumerate(cand):
        if kept:
            near = cKDTree(cand[kept]).query_ball_point(c, reach)
            k = np.asarray(kept)[near]
            if len(k) and np.any(np.linalg.norm(cand[k] - c, axis=1) < spacing * (rad[k] + rad[i])):
                continue
        kept.append(i)
    return cand[kept] / scale, rad[kept]


def draw_dye(pos: np.ndarray, radii: np.ndarray, shape, zstep: float, f: int) -> np.ndarray:
    """Uniformly dyed spheres at ``pos`` (N, 3) voxels, of ``radii`` (N,) px, on a grid of
    f x f x f subvoxels per voxel (float32, shape ``shape`` x f): 1 in each subvoxel whose
    centre lies inside a sphere (z voxels are ``zstep`` px long)."""
    fine = np.zeros(tuple(n * f for n in shape), np.float32)
    zz, yy, xx = [np.arange(n * f) / f + (0.5 / f - 0.5) for n in shape]
    for (z, y, x), radius in zip(pos, radii):
        rz = int(math.ceil(radius / zstep)) + 1
        rr = int(math.ceil(radius)) + 1
        sl = []
        for c, r, n in ((z, rz, shape[0]), (y, rr, shape[1]), (x, rr, shape[2])):
            lo, hi = max(0, int(math.floor(c - r))), min(n, int(math.ceil(c + r)) + 1)
            sl.append(slice(lo * f, hi * f))
        dz = (zz[sl[0]] - z)[:, None, None] * zstep
        dy = (yy[sl[1]] - y)[None, :, None]
        dx = (xx[sl[2]] - x)[None, None, :]
        fine[tuple(sl)] += (dz ** 2 + dy ** 2 + dx ** 2 <= radius ** 2)
    return fine


def render_frame(kind: str, size, pos: np.ndarray, shape, rng, peak: float = 200.0,
                 radii: np.ndarray | None = None) -> np.ndarray:
    """One 8-bit volume (Z, Y, X) of the particles at ``pos`` (N, 3), their light
    ``peak`` grey levels above the background at most; spheres of ``radii`` (N,) px
    (default ``size[0]`` each)."""
    if kind == "sphere":
        from scipy.ndimage import gaussian_filter

        _, s_xy, s_z, zstep = size
        radii = np.full(len(pos), float(np.max(size[0]))) if radii is None else radii
        f = FINE    # fine grid: f x f x f subvoxels per voxel
        fine = draw_dye(pos, radii, shape, zstep, f)
        fine = gaussian_filter(fine, (s_z / zstep * f, s_xy * f, s_xy * f), mode="constant")
        vol = fine.reshape(shape[0], f, shape[1], f, shape[2], f).mean(axis=(1, 3, 5))
        light = 20.0 + peak * vol / max(float(vol.max()), 1e-12)
    else:
        import trackpy.artificial as art

        kw = {"disc_size": 0.5} if kind == "hat" else {}
        drawn = art.draw_spots(shape, pos, tuple(size), noise_level=0, bitdepth=8, feat_func=kind, **kw)
        light = 20.0 + peak / 255.0 * drawn.astype(float)
    img = light + rng.normal(0.0, 1.0, shape) * np.sqrt(9.0 + 0.5 * (light - 20.0))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def hard_sphere_steps(pos: np.ndarray, step: np.ndarray, radii: np.ndarray, zstep: float) -> np.ndarray:
    """Positions (N, 3) voxels after the random ``step``s of spheres of ``radii`` (px),
    each particle in turn; a step that would overlap another sphere is not taken (dyed
    colloids do not interpenetrate; summed overlaps looked like one larger sphere)."""
    from scipy.spatial import cKDTree

    scale = np.array([zstep, 1.0, 1.0])
    out = pos.copy()
    tree = cKDTree(pos * scale)
    reach = 2 * float(np.max(radii))
    for i in range(len(pos)):
        new = (out[i] + step[i]) * scale
        near = [j for j in tree.query_ball_point(pos[i] * scale, reach + 3 * STEP * zstep) if j != i]
        if near and np.any(np.linalg.norm(out[near] * scale - new, axis=1) < radii[near] + radii[i]):
            continue
        out[i] = out[i] + step[i]
    return out


def render(kind: str, size, spacing: float, seed: int = 0, shape=SHAPE, n_frames=N_FRAMES,
           peak: float = 200.0):
    """Frames (T, Z, Y, X) uint8 and truth (frame, particle, x, y, z), voxels."""
    rng = np.random.default_rng(seed)
    dia = feature_diameter(kind, size)
    radii = None
    if kind == "sphere" and np.size(size[0]) > 1:
        pos, radii = positions_mixture(rng, shape, size[0], size[3], spacing)
    else:
        pos = positions(rng, shape, dia, spacing)
    if kind == "sphere" and radii is None:
        radii = np.full(len(pos), float(size[0]))
    frames, rows = [], []
    for t in range(n_frames):
        if t:
            step = rng.normal(0, STEP, pos.shape)
            pos = pos + step if kind != "sphere" else hard_sphere_steps(pos, step, radii, size[3])
        keep = np.all((pos >= 0) & (pos < np.array(shape) - 1), axis=1)
        p = pos[keep]
        frames.append(render_frame(kind, size, p, shape, rng, peak,
                                   None if radii is None else radii[keep]))
        rows.append(pd.DataFrame({"frame": t, "particle": np.flatnonzero(keep),
                                  "x": p[:, 2], "y": p[:, 1], "z": p[:, 0]}))
    return np.array(frames), pd.concat(rows, ignore_index=True)


def score(found: pd.DataFrame, truth: pd.DataFrame, shape, dia) -> dict:
    """Recall, precision, per-axis RMS (voxels of that axis) and ep/err per axis."""
    from colloidcg.tracking.accuracy import match_one_to_one

    zs = dia[1] / dia[0]        # z voxels to xy voxels (the feature's aspect)
    lim = np.array(shape, float)

    def inside(df):
        c = df[["z", "y", "x"]].to_numpy()
        return np.all((c > dia - 0.5) & (c < lim - 0.5 - dia), axis=1)

    errs, eps = [], []
    n_true = n_found = tp_t = tp_f = 0
    for frame, t in truth.groupby("frame"):
        f = found[found["frame"] == frame]
        tin, fin = inside(t), inside(f)
        n_true += int(tin.sum())
        n_found += int(fin.sum())
        a = f[["z", "y", "x"]].to_numpy() * [zs, 1, 1]
        b = t[["z", "y", "x"]].to_numpy() * [zs, 1, 1]
        i_f, i_t = match_one_to_one(a, b, 0.5 * dia[1])
        tp_f += int(fin[i_f].sum())
        tp_t += int(tin[i_t].sum())
        sel = tin[i_t]
        errs.append(f[["z", "y", "x"]].to_numpy()[i_f[sel]] - t[["z", "y", "x"]].to_numpy()[i_t[sel]])
        cols = [c for c in ("ep_z", "ep_y", "ep_x") if c in f]
        if len(cols) == 3:
            eps.append(f[cols].to_numpy()[i_f[sel]])
        elif "ep" in f and "ep_z" in f:
            e = f[["ep_z", "ep", "ep"]].to_numpy()
            eps.append(e[i_f[sel]])
    e = np.concatenate(errs) if errs else np.zeros((0, 3))
    out = {"recall": tp_t / n_true if n_true else float("nan"),
           "precision": tp_f / n_found if n_found else float("nan"),
           "rms": np.sqrt(np.mean(e ** 2, axis=0)) if len(e) else np.full(3, np.nan),
           "n": len(e)}
    if eps:
        ep = np.concatenate(eps)
        scale = np.median(np.abs(e), axis=0) / 0.6745
        out["ep_ratio"] = np.nanmedian(ep, axis=0) / scale
    return out


def trackpy_run(frames, truth, dia, spacing):
    import trackpy as tp

    from colloidcg.tracking.locate import trackpy_locate, trackpy_rows

    d = tuple(int(2 * math.ceil(x / 2) + 1) for x in dia)      # odd, >= the feature's
    sep = tuple(0.8 * spacing * x for x in dia)
    t0 = truth[truth["frame"] == 0]
    f0 = trackpy_locate(frames[0], d, minmass=0, separation=sep)
    # minmass chosen with the truth: the largest that keeps every true particle matched
    from colloidcg.tracking.accuracy import match_one_to_one

    zs = dia[1] / dia[0]
    i_f, _ = match_one_to_one(f0[["z", "y", "x"]].to_numpy() * [zs, 1, 1],
                              t0[["z", "y", "x"]].to_numpy() * [zs, 1, 1], 0.5 * dia[1])
    minmass = 0.9 * float(np.percentile(f0["mass"].to_numpy()[i_f], 1)) if len(i_f) else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = tp.batch(frames, d, minmass=minmass, separation=sep, processes=1, engine="numba")
    # trackpy 0.7 under pandas 3 adds rows of NaN positions with anisotropic diameters
    # (colloidcg.tracking.locate.trackpy_rows); they are not features
    return f[trackpy_rows(f)]


def run_case(name, kind, size, spacing, options=None, seed=0) -> dict:
    from colloidcg.tracking import track

    frames, truth = render(kind, size, spacing, seed, **(options or {}))
    dia = feature_diameter(kind, size)
    row = {"case": name, "n": float(truth.groupby("frame").size().mean())}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = track(frames, progress=False, processes=1)
    row["time"] = time.perf_counter() - t0
    row["ours"] = score(r.tracks, truth, frames.shape[1:], dia)
    sep = ", ".join(f"{v:.3g}" for v in np.atleast_1d(r.params.separation))
    row["params"] = f"d={r.params.diameter}, sep=({sep}), model={r.params.spot_model}"
    row["trackpy"] = score(trackpy_run(frames, truth, dia, spacing), truth, frames.shape[1:], dia)
    return row


def fmt(s: dict) -> str:
    rms = " / ".join(f"{v:.3f}" for v in s["rms"])
    return f"{s['recall']:.3f} / {s['precision']:.3f} / {rms}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="cases whose name contains this text")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cases = [c for c in CASES if args.only is None or args.only in c[0]]
    print(f"3D stacks {SHAPE} (z, y, x) voxels, {N_FRAMES} frames, seed {args.seed}; "
          "recall / precision / RMS z / y / x (voxels)\n")
    print("| case | particles | colloidcg (auto) | ep/err z / y / x | trackpy (hand-set) | colloidcg parameters | time (s) |")
    print("|---|---:|---|---|---|---|---:|")
    for name, kind, size, spacing, *options in cases:
        r = run_case(name, kind, size, spacing, options[0] if options else None, args.seed)
        ep = r["ours"].get("ep_ratio")
        eps = " / ".join(f"{v:.2f}" for v in ep) if ep is not None else "-"
        print(f"| {r['case']} | {r['n']:.0f} | {fmt(r['ours'])} | {eps} | {fmt(r['trackpy'])} | "
              f"{r['params']} | {r['time']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
