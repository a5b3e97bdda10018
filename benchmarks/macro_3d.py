"""Known answer in 3D for the macroscopic SDE (issue 19): soft spheres crystallising after a quench.

Truth: monodisperse overdamped harmonic soft spheres (colloidcg.scaling.SoftSphereSimulator,
the dynamics of colloidcg.synthetic in 3D, keyed noise), diameter 16 px, volume fraction
0.80, kT = 0.002 eps, D0 = 0.25 px^2/frame, 8 micro steps per frame, quenched from
uniformly random positions. The mean Steinhardt q6 (12 nearest neighbours) jumps from 0.28
to 0.41 within 125 frames (local packing) and then creeps up as crystallites form; the
fraction of solid-like particles (ten Wolde et al. 1996) follows.

Small periodic boxes of 108 spheres (3 x 3 x 3 fcc cells fit the cube) crystallise much
faster than a large system: a nucleus spans a small box, and the periodic box templates
and stabilises the crystal, so after 1000 frames 108-sphere boxes are about 50 % solid-like
and 2916-sphere boxes (K = 27) about 12 %. This is the finite-size effect partial evolution
is for: patches evolved inside a large system (frozen halo, mobile buffer) lose the
periodic self-templating that small boxes have.

1. Learning uses small systems only (108 spheres, 1/27 of the target volume):
   - naive: the SDE fitted on whole small-system increments, lambda = 1;
   - block states: 27 small systems side by side, each a periodic patch (lambda = K);
   - the issue's chain: upsampled snapshots (27 small snapshots of the same time tiled with
     random shifts and cube symmetries, pairs closer across a seam than the data's 2 %
     quantile of near-shell distances pushed apart, 2 frames of truth relaxation), patches
     of the small box's side evolved with a mobile buffer and a frozen halo
     (colloidcg.scaling.partial_evolution), lambda = K.
   Every SDE is the library's default fit (a bag of 10 bootstrap fits, fit_bagged).
2. Each SDE is run for the 27x system (2916 spheres), 1000 runs, from the direct runs' mean
   start; relative MSE of the ensemble-mean q6 (and solid fraction) against 20 direct
   2916-sphere runs: sum (pred - true)^2 / sum true^2 over the macro steps.
3. Fluctuations: the predicted across-run variance at 8x and 27x (ratio 27 / 8 = 3.375 if
   it scales as 1 / volume).

    python benchmarks/macro_3d.py --stage truth --shard 0/2 &   # direct 27x runs (cached), in parallel
    python benchmarks/macro_3d.py --stage truth --shard 1/2
    python benchmarks/macro_3d.py                              # small quenches, the three chains, the table

Prints a markdown table; writes results_3d_<quenches>[_from_<seed>][_relax_<frames>].json and
a .png of the ensemble means into --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

PHI, KT, D0, SUBSTEPS, DIAM = 0.80, 0.002, 0.25, 8, 16.0
N_SMALL, FACTOR, DT, STEPS = 108, 27, 25, 40
RELAX, BUFFER = 2, 2 * DIAM      # frames of seam relaxation; mobile buffer between patch and halo, px
NAMES = ["q6", "solid_fraction"]


def simulator():
    from colloidcg.scaling.simulators import SoftSphereSimulator
    return SoftSphereSimulator(diffusion=D0, kT=KT, substeps=SUBSTEPS, diameter=DIAM)


def side_for(n):
    """Side (px) of the cube holding n spheres at volume fraction PHI."""
    return (n * math.pi / 6 * DIAM ** 3 / PHI) ** (1 / 3)


def quench(n, seed, keep=False):
    """(STEPS + 1, 2) observables along one quench from uniformly random positions, and with
    ``keep`` the (STEPS + 1, n, 3) positions."""
    from colloidcg.scaling.observables import whole
    from colloidcg.scaling.partial import full_step
    from colloidcg.scaling.simulators import MicroState, derive_key
    sim = simulator()
    side = side_for(n)
    rng = np.random.default_rng(seed)
    s = MicroState(rng.uniform(0, side, (n, 3)), np.full(n, DIAM), np.full(3, side),
                   np.arange(n, dtype=np.int64), None, None)
    z, pos = [whole(s, NAMES)], [s.pos]
    for k in range(STEPS):
        s = full_step(sim, s, DT, derive_key(seed, n, k))
        z.append(whole(s, NAMES))
        if keep:
            pos.append(s.pos)
    return np.array(z), (np.array(pos) if keep else None)


def stage_truth(cache: Path, runs: int, factors=(FACTOR, 8), shard=(0, 1)):
    """{factor: (runs, STEPS + 1, 2)} direct runs, one cached file per run (shards of the
    runs can be computed in parallel)."""
    from tqdm.auto import tqdm
    out = {}
    for f in factors:
        rows = []
        for r in tqdm(range(runs), desc=f"direct {f}x"):
            path = cache / f"truth3d_{f}x_{r}.npy"
            if not path.exists():
                if r % shard[1] != shard[0]:
                    continue
                z, _ = quench(N_SMALL * f, 1000 * f + r)
                np.save(path, z)
            rows.append(np.load(path))
        out[f] = np.array(rows)
    return out


def stage_small(cache: Path, n_traj: int, first_seed: int = 0):
    """Small quenches' positions (n_traj, STEPS + 1, N_SMALL, 3), cached."""
    from tqdm.auto import tqdm
    path = cache / f"small3d_{n_traj}_from_{first_seed}.npy"
    if not path.exists():
        np.save(path, np.array([quench(N_SMALL, first_seed + r, keep=True)[1]
                                for r in tqdm(range(n_traj), desc="small quenches")]))
    return np.load(path)


def upsampled(small_pos, t, samples, rng, push, relax=RELAX):
    """Large snapshots at macro step t: 3 x 3 x 3 small snapshots of time t from different
    quenches, each under a random cube symmetry and cyclic shift, pairs too close across the
    seams pushed apart to ``push`` (:func:`seam_push`), ``relax`` frames of truth relaxation
    of the whole large system (none at t = 0: random positions need no seam treatment)."""
    from colloidcg.scaling.partial import full_step
    from colloidcg.scaling.simulators import MicroState, derive_key
    from colloidcg.scaling.upsample import Configuration, _transform, separate, tile_configurations
    side = side_for(N_SMALL)
    box = np.full(3, side)
    m = 3
    out = []
    for k in range(samples):
        pick = rng.choice(len(small_pos), m ** 3, replace=len(small_pos) < m ** 3)
        parts = [_transform(Configuration(np.mod(small_pos[i, t], box), np.zeros((N_SMALL, 3)), None, box,
                                          np.full(N_SMALL, np.inf)), rng) for i in pick]
        cfg, new, part = tile_configurations(parts, m)
        if t > 0:
            # pairs across the seams closer than the 2 % quantile are pushed apart (colloidcg
            # upsample's --seam-overlaps push): at this density reinsertion moves a third of
            # the seam particles and takes 85 s per snapshot
            pos, keep, _ = separate(cfg.pos, None, cfg.box, push, active=new < 2 * DIAM, group=part)
            pos = pos[keep]
        else:
            pos = cfg.pos
        st = MicroState(pos, np.full(len(pos), DIAM), cfg.box, np.arange(len(pos), dtype=np.int64), None, None)
        if t > 0 and relax:
            st = full_step(simulator(), st, relax, derive_key(77, t, k))
        out.append(st)
    return out


def seam_push(small_pos, box):
    """ClosestApproach: the 2 % quantile of the first shell's near side in the small
    quenches' last frames (the first 8), colloidcg upsample's push distance."""
    from colloidcg.scaling.upsample import closest_approach
    frames = [np.mod(p, box) for p in small_pos[:8, -1]]
    return closest_approach(frames, [None] * 8, box, quantile=0.02)


def plot(res, direct, path):
    """Ensemble means against time: the direct 27x runs (each run thin), the small boxes'
    own mean, and every method's SDE."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = np.arange(STEPS + 1) * DT
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, (ax, label) in enumerate(zip(axes, ("mean q6", "solid-like fraction"))):
        for run in direct:
            ax.plot(t, run[:, i], color="0.8", lw=0.6)
        ax.plot(t, np.asarray(res["direct_mean"])[:, i], "k", lw=2, label="direct 27x runs (mean)")
        ax.plot(t, np.asarray(res["small_mean"])[:, i], "k--", label="small boxes (108 spheres)")
        for name, r in res["methods"].items():
            ax.plot(t, np.asarray(r["mean"])[:, i], label=f"SDE: {name}")
        ax.set_xlabel("frames after the quench")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("3D soft spheres crystallising: 27x system predicted from 108-sphere boxes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def relmse(pred, true):
    return float(np.sum((pred - true) ** 2) / np.sum(true ** 2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("truth", "all"), default="all")
    ap.add_argument("--shard", default="0/1", help="--stage truth: K/N computes every N-th run from K")
    ap.add_argument("--cache", default="/tmp/colloidcg_macro3d_cache")
    ap.add_argument("--out", default="benchmarks/results/macro")
    ap.add_argument("--runs", type=int, default=20, help="direct 27x runs (and 8x runs for the fluctuations)")
    ap.add_argument("--small", type=int, default=64, help="small quenches")
    ap.add_argument("--small-seed", type=int, default=0, dest="small_seed")
    ap.add_argument("--samples", type=int, default=2, help="upsampled snapshots per macro step")
    ap.add_argument("--patches", type=int, default=4, help="patches per upsampled snapshot")
    ap.add_argument("--buffer", type=float, default=BUFFER, help="mobile buffer around each patch, px")
    ap.add_argument("--relax", type=int, default=RELAX, help="frames of truth relaxation of each upsampled snapshot")
    ap.add_argument("--fits", type=int, default=10, help="members of each bagged fit")
    ap.add_argument("--sde-runs", type=int, default=1000, dest="sde_runs")
    args = ap.parse_args(argv)
    cache, out = Path(args.cache), Path(args.out)
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    shard = tuple(int(x) for x in args.shard.split("/"))
    if args.stage == "truth":
        stage_truth(cache, args.runs, shard=shard)
        return 0
    import torch
    torch.set_num_threads(1)
    from colloidcg.scaling.macro import (Encoder, block_increments, fit_bagged, partial_increments,
                                         trajectory_increments)
    from colloidcg.scaling.partial import partial_evolution
    from colloidcg.scaling.simulators import MicroState

    truth = stage_truth(cache, args.runs)
    small_pos = stage_small(cache, args.small, args.small_seed)
    side = side_for(N_SMALL)
    tile = side ** 3
    enc = Encoder(NAMES)
    true_mean = truth[FACTOR].mean(0)
    z_start = true_mean[0]
    small_states = [[MicroState(p, np.full(N_SMALL, DIAM), np.full(3, side), np.arange(N_SMALL), None, None)
                     for p in traj] for traj in small_pos]
    train_mean = np.array([[enc.whole(s) for s in tr] for tr in small_states]).mean(0)

    def fit(inc, lam, area, seed=0):
        sde, _ = fit_bagged(inc, fits=args.fits, seed=seed, start=z_start, dt=DT, names=enc.names, lam=lam,
                            area_px2=area, tile_area_px2=tile)
        return sde

    def run(sde, factor, seed=0):
        return sde.simulate(steps=STEPS, runs=args.sde_runs, factor=factor, z0=z_start, seed=seed)

    res = {"parameters": {"phi": PHI, "kT": KT, "D0": D0, "substeps": SUBSTEPS, "diameter_px": DIAM,
                          "n_small": N_SMALL, "factor": FACTOR, "dt_frames": DT, "steps": STEPS,
                          "direct_runs": args.runs, "small_quenches": args.small, "small_seed": args.small_seed,
                          "upsampled_per_step": args.samples, "relax_frames": args.relax, "patches": args.patches, "buffer_px": args.buffer,
                          "fits": args.fits, "sde_runs": args.sde_runs, "observables": NAMES},
           "direct_mean": true_mean.tolist(), "small_mean": train_mean.tolist()}
    t0 = time.perf_counter()
    nz0, nz1 = trajectory_increments(enc, small_states)
    methods = {"naive": fit((nz0, nz1), 1.0, tile)}
    methods["block"] = fit(lambda s: block_increments(enc, small_states, blocks=FACTOR, sets_per_step=8, seed=s),
                           float(FACTOR), FACTOR * tile)
    rng = np.random.default_rng(5)
    push = seam_push(small_pos, np.full(3, side))
    snaps = [s for t in range(STEPS) for s in upsampled(small_pos, t, args.samples, rng, push, relax=args.relax)]
    res["upsampled_snapshot_mean"] = [np.mean([enc.whole(s) for s in snaps[t * args.samples:(t + 1) * args.samples]],
                                              axis=0).tolist() for t in range(STEPS)]
    steps = partial_evolution(simulator(), snaps, patch=side, steps=DT, patches_per_snapshot=args.patches,
                              buffer=args.buffer, seed=11, progress=True)
    hz0, hz1 = partial_increments(enc, snaps, steps)
    K = steps[0].n_patches
    methods["halo chain"] = fit((hz0, hz1), float(K), FACTOR * tile)
    res["seconds"] = time.perf_counter() - t0
    rows = {}
    for name, sde in methods.items():
        z = run(sde, FACTOR)
        z8 = run(sde, 8, seed=1)
        mean = z.mean(0)
        rows[name] = {"relmse": {n: relmse(mean[:, i], true_mean[:, i]) for i, n in enumerate(NAMES)},
                      "mean": mean.tolist(),
                      "var_ratio_8x_over_27x": (z8[:, 5:].var(0).mean(0) / z[:, 5:].var(0).mean(0)).tolist(),
                      "var_27x_over_direct": (z[:, 5:].var(0).mean(0) / truth[FACTOR][:, 5:].var(0).mean(0)).tolist()}
    res["methods"] = rows
    res["direct_var_ratio_8x_over_27x"] = (truth[8][:, 5:].var(0).mean(0) / truth[FACTOR][:, 5:].var(0).mean(0)).tolist()
    res["small_mean_relmse"] = {n: relmse(train_mean[:, i], true_mean[:, i]) for i, n in enumerate(NAMES)}
    name = (f"results_3d_{args.small}" + ("" if args.small_seed == 0 else f"_from_{args.small_seed}")
            + ("" if args.relax == RELAX else f"_relax_{args.relax}"))
    (out / f"{name}.json").write_text(json.dumps(res, indent=1, default=float))
    plot(res, truth[FACTOR], out / f"{name}.png")
    print(f"## soft spheres crystallising after a quench (phi {PHI}): {N_SMALL} -> {N_SMALL * FACTOR} spheres\n")
    print("mean q6 / solid fraction at macro steps 0, 5, 20, 40: direct 27x "
          + ", ".join(f"{true_mean[k, 0]:.3f} / {true_mean[k, 1]:.3f}" for k in (0, 5, 20, STEPS))
          + "; small boxes " + ", ".join(f"{train_mean[k, 0]:.3f} / {train_mean[k, 1]:.3f}" for k in (0, 5, 20, STEPS))
          + "\n")
    print("| learned from | relative MSE, q6 | solid fraction | naive / this (q6) | variance 8x / 27x (q6; 1/volume: 3.375) |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['relmse']['q6']:.2e} | {r['relmse']['solid_fraction']:.2e} | "
              f"{rows['naive']['relmse']['q6'] / r['relmse']['q6']:.2f} | {r['var_ratio_8x_over_27x'][0]:.2f} |")
    print(f"| the small boxes' own mean | {res['small_mean_relmse']['q6']:.2e} | "
          f"{res['small_mean_relmse']['solid_fraction']:.2e} | | |")
    print(f"\n{res['seconds']:.0f} s for the three fits and the halo chain's snapshots and patches")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
