"""Macroscopic SDE on an aging bidisperse glass: does the naive baseline fail there too?

The known answer of ``benchmarks/macro.py`` is a monodisperse quench whose order grows as
grains coarsen. This is the issue's other example system: bidisperse harmonic soft disks
(diameters 16 and 22.4 px, equal numbers) quenched from uniformly random positions into
the glass, where the mean local hexatic order |psi6_i| rises within a macro step and then
ages slowly (about 0.50 to 0.55 over 30 macro steps at area fraction 0.84), with no
growing length scale. Learned from 64-particle quenches only, checked against direct
1024-particle runs (relative MSE of the ensemble-mean psi6, as in macro.py), for the naive
SDE (whole small-system increments, lambda = 1) and block states (16 small systems side by
side, periodic patches, lambda = K), each fitted with several seeds.

    python benchmarks/macro_glass.py                      # phi 0.84, kT 0.002, 3 fit seeds (about 2 min)
    python benchmarks/macro_glass.py --phi 0.80 --fits 5

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

D_SMALL, D_LARGE, D0, SUBSTEPS, DT, STEPS, N_SMALL, FACTOR = 16.0, 22.4, 0.25, 3, 25, 30, 64, 16
RELAX, BUFFER = 2, 2 * D_LARGE     # --chain: frames of seam relaxation; mobile buffer around a patch, px


def side_for(n, phi):
    """Side (px) of the square box of n particles, half of each size, at area fraction phi."""
    return math.sqrt(n / 2 * math.pi / 4 * (D_SMALL ** 2 + D_LARGE ** 2) / phi)


def quench(n, seed, phi, sim, steps=STEPS):
    """States (steps + 1 MicroStates, one per macro step) of one quench from random positions."""
    from colloidcg.scaling.partial import full_step
    from colloidcg.scaling.simulators import MicroState, derive_key
    side = side_for(n, phi)
    rng = np.random.default_rng(seed)
    s = MicroState(rng.uniform(0, side, (n, 2)), np.where(np.arange(n) % 2 == 0, D_SMALL, D_LARGE),
                   np.array([side, side]), np.arange(n, dtype=np.int64), None, None)
    states = [s]
    for k in range(steps):
        s = full_step(sim, s, DT, derive_key(seed, n, k))
        states.append(s)
    return states


def upsampled(small, t, samples, rng, sim, relax=RELAX):
    """``samples`` large snapshots (MicroStates, FACTOR x the small area) at macro step t:
    4 x 4 small snapshots of that age from different quenches, each shifted and turned by
    a random symmetry of the square; pairs closer across a seam than the 2 % quantile of
    the data's first shell (per pair of sizes) reinserted into the largest gap on their own
    side, pairs still closer than the data's closest approach pushed to it, then RELAX
    frames of the truth dynamics (``relax``; none at t = 0: random positions need no seam
    treatment)."""
    from colloidcg.scaling.partial import full_step
    from colloidcg.scaling.simulators import MicroState, derive_key
    from colloidcg.scaling.upsample import (Configuration, _transform, closest_approach, reinsert_across_seams,
                                            separate, tile_configurations)
    box = small[0][0].box
    m = int(round(math.sqrt(FACTOR)))
    late = [small[r][-1] for r in range(8)]
    frames, sizes = [np.mod(s.pos, box) for s in late], [s.size for s in late]
    closest, push = closest_approach(frames, sizes, box), closest_approach(frames, sizes, box, quantile=0.02)
    out = []
    for k in range(samples):
        pick = rng.choice(len(small), m * m, replace=False)
        parts = [_transform(Configuration(np.mod(small[i][t].pos, box), np.zeros_like(small[i][t].pos),
                                          small[i][t].size, box, np.full(N_SMALL, np.inf)), rng) for i in pick]
        cfg, new, part = tile_configurations(parts, m)
        pos, size = cfg.pos, cfg.size
        if t > 0:
            cfg, new, _ = reinsert_across_seams(cfg, new, part, m, push, rng)
            pos, keep, _ = separate(cfg.pos, cfg.size, cfg.box, closest, floor=closest,
                                    active=new < push.largest(cfg.size) + 2 * D_LARGE, group=part)
            pos, size = pos[keep], cfg.size[keep]
        st = MicroState(np.mod(pos, cfg.box), size, cfg.box, np.arange(len(pos), dtype=np.int64), None, None)
        if t > 0 and relax:
            st = full_step(sim, st, relax, derive_key(77, t, k))
        out.append(st)
    return out


def chain(args, sim, enc, small, z_start, tile, relmse):
    """The issue's chain on the glass: rows (fit seed, relative MSE) and the snapshots' own
    mean psi6 per macro step against the small quenches'."""
    from colloidcg.scaling.macro import fit_sde, partial_increments
    from colloidcg.scaling.partial import partial_evolution
    rng = np.random.default_rng(5)
    snaps = [s for t in range(STEPS) for s in upsampled(small, t, args.samples, rng, sim, args.relax)]
    steps = partial_evolution(sim, snaps, patch=math.sqrt(tile), steps=DT, patches_per_snapshot=args.patches,
                              buffer=BUFFER, seed=11, progress=True)
    z0, z1 = partial_increments(enc, snaps, steps)
    K = steps[0].n_patches
    rows = []
    for fs in range(args.fits):
        sde, _ = fit_sde(z0, z1, dt=DT, names=enc.names, lam=float(K), area_px2=FACTOR * tile, tile_area_px2=tile,
                         start=z_start, seed=fs)
        z = sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=fs)[..., 0]
        rows.append(relmse(z.mean(0)))
    snap_mean = np.array([np.mean([enc.whole(s)[0] for s in snaps[t * args.samples:(t + 1) * args.samples]])
                          for t in range(STEPS)])
    return rows, snap_mean, K


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phi", type=float, default=0.84, help="area fraction (default 0.84)")
    ap.add_argument("--kT", type=float, default=0.002, help="thermal energy in eps (default 0.002)")
    ap.add_argument("--small", type=int, default=64, help="small quenches (default 64)")
    ap.add_argument("--runs", type=int, default=20, help="direct 16x runs (default 20)")
    ap.add_argument("--fits", type=int, default=3, help="fit seeds of each SDE (default 3)")
    ap.add_argument("--sde-runs", type=int, default=200, dest="sde_runs")
    ap.add_argument("--chain", action="store_true", help="also the issue's chain: upsampled states, halo patches")
    ap.add_argument("--samples", type=int, default=3, help="--chain: upsampled snapshots per macro step")
    ap.add_argument("--patches", type=int, default=4, help="--chain: patches per upsampled snapshot")
    ap.add_argument("--relax", type=int, default=RELAX, help="--chain: frames of truth relaxation of each snapshot")
    ap.add_argument("--cache", default="/tmp/colloidcg_macro_cache", help="where the simulations are kept")
    args = ap.parse_args(argv)
    import torch
    from tqdm.auto import tqdm

    from colloidcg.scaling.latent import block_paths
    from colloidcg.scaling.macro import Encoder, block_increments, fast_variance, fit_sde, trajectory_increments
    from colloidcg.scaling.simulators import SoftDiskSimulator
    torch.set_num_threads(1)
    sim = SoftDiskSimulator(diffusion=D0, kT=args.kT, substeps=SUBSTEPS, interaction_range=D_LARGE)
    enc = Encoder(["psi6"])
    cache = Path(args.cache) / f"glass_phi_{args.phi}_kT_{args.kT}_runs_{args.runs}_small_{args.small}.npz"
    if cache.exists():
        got = np.load(cache)
        big, small_pos = got["big"], got["small_pos"]
    else:
        big = np.array([[enc.whole(s)[0] for s in quench(N_SMALL * FACTOR, 1000 * FACTOR + r, args.phi, sim)]
                        for r in tqdm(range(args.runs), desc="direct 16x")])
        small_pos = np.array([[s.pos for s in quench(N_SMALL, r, args.phi, sim)]
                              for r in tqdm(range(args.small), desc="small quenches")])
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, big=big, small_pos=small_pos)
    start = quench(N_SMALL, 0, args.phi, sim, steps=0)[0]
    small = [[start._replace(pos=p) for p in traj] for traj in small_pos]
    true_mean = big.mean(0)
    train_mean = np.array([[enc.whole(s)[0] for s in tr] for tr in small]).mean(0)
    tile = side_for(N_SMALL, args.phi) ** 2
    z_start = np.array([true_mean[0]])

    def relmse(pred):
        return float(np.sum((pred - true_mean) ** 2) / np.sum(true_mean ** 2))

    nz0, nz1 = trajectory_increments(enc, small)
    z_small = np.array([[enc.whole(s) for s in tr] for tr in small])
    fast = fast_variance(z_small) / FACTOR       # the block state's fast part (macro train's default)
    var_direct = float(np.mean(big[:, 5:].var(0)))
    rows, var = [], []
    for fs in range(args.fits):
        naive, _ = fit_sde(nz0, nz1, dt=DT, names=enc.names, lam=1.0, area_px2=tile, tile_area_px2=tile,
                           start=z_start, seed=fs)
        bz0, bz1 = block_increments(enc, small, blocks=FACTOR, sets_per_step=8, seed=fs)
        kw = dict(dt=DT, names=enc.names, lam=float(FACTOR), area_px2=FACTOR * tile, tile_area_px2=tile,
                  start=z_start, seed=fs)
        block, _ = fit_sde(bz0, bz1, **kw)
        block_fast, _ = fit_sde(bz0, bz1, fast_var=fast, **kw)
        sz0, sz1 = block_increments(enc, small, blocks=FACTOR, sets_per_step=8, seed=fs, smooth=True)
        block_smooth, _ = fit_sde(sz0, sz1, fast_var=fast, **kw)
        paths = block_paths(z_small, blocks=FACTOR, repeats=8, seed=fs)
        block_latent, _ = fit_sde(*paths.pairs(), fast_var=fast, latent=paths, **kw)
        row, v = [], []
        for sde in (naive, block, block_fast, block_smooth, block_latent):
            z = sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=fs)[..., 0]
            row.append(relmse(z.mean(0)))
            v.append(float(np.mean(z[:, 5:].var(0))) / var_direct)
        rows.append(row)
        var.append(v)
    print(f"## bidisperse glass quench (phi {args.phi}, kT {args.kT}): {N_SMALL} -> {N_SMALL * FACTOR} particles\n")
    print("mean |psi6| of the direct 16x runs at macro steps 0 / 1 / 2 / 10 / 30: "
          + " / ".join(f"{true_mean[k]:.3f}" for k in (0, 1, 2, 10, STEPS)) + "\n")
    print(f"fast part of one small system's psi6 (colloidcg.scaling.fast_variance): {fast[0] * FACTOR:.2e}\n")
    print("| fit seed | naive | block states | block states, fast part apart | the same, smoothed state | "
          "the same, latent state | naive / block | variance at 16x / direct runs': naive, block, fast part apart, "
          "smoothed, latent |")
    print("|---|---|---|---|---|---|---|---|")
    for fs, ((a, b, c, d, e), v) in enumerate(zip(rows, var)):
        print(f"| {fs} | {a:.2e} | {b:.2e} | {c:.2e} | {d:.2e} | {e:.2e} | {a / b:.2f} | "
              + ", ".join(f"{x:.2f}" for x in v) + " |")
    a, b, c, d, e = np.median(np.array(rows), axis=0)
    vm = np.median(np.array(var), axis=0)
    print(f"| median | {a:.2e} | {b:.2e} | {c:.2e} | {d:.2e} | {e:.2e} | {a / b:.2f} | "
          + ", ".join(f"{x:.2f}" for x in vm) + " |\n")
    print(f"the training quenches' own mean psi6 against the direct runs: {relmse(train_mean):.2e}")
    if args.chain:
        rows_c, snap_mean, K = chain(args, sim, enc, small, z_start, tile, relmse)
        print(f"\n## the issue's chain: upsampled states, halo patches (patch = the small box, K = {K:g}, "
              f"lambda = K, {args.samples} snapshots per macro step, {args.patches} patches each, {args.relax} frames of relaxation)\n")
        print("| fit seed | chain | naive | naive / chain |")
        print("|---|---|---|---|")
        for fs, c in enumerate(rows_c):
            print(f"| {fs} | {c:.2e} | {rows[fs][0]:.2e} | {rows[fs][0] / c:.2f} |")
        c = float(np.median(rows_c))
        print(f"| median | {c:.2e} | {a:.2e} | {a / c:.2f} |\n")
        gap = snap_mean - train_mean[:STEPS]
        own = float(np.sum((snap_mean - true_mean[:STEPS]) ** 2) / np.sum(true_mean[:STEPS] ** 2))
        print(f"upsampled snapshots' mean psi6 minus the small quenches' (macro steps 1-{STEPS - 1}): "
              f"mean {gap[1:].mean():+.4f}, range {gap[1:].min():+.4f} .. {gap[1:].max():+.4f}; "
              f"the snapshots' own path against the direct runs (steps 0-{STEPS - 1}): {own:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
