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

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

D_SMALL, D_LARGE, D0, SUBSTEPS, DT, STEPS, N_SMALL, FACTOR = 16.0, 22.4, 0.25, 3, 25, 30, 64, 16


def side_for(n, phi):
    """Side (px) of the square box of n particles, half of each size, at area fraction phi."""
    return math.sqrt(n / 2 * math.pi / 4 * (D_SMALL ** 2 + D_LARGE ** 2) / phi)


def quench(n, seed, phi, sim):
    """States (STEPS + 1 MicroStates, one per macro step) of one quench from random positions."""
    from colloidcg.scaling.partial import full_step
    from colloidcg.scaling.simulators import MicroState, derive_key
    side = side_for(n, phi)
    rng = np.random.default_rng(seed)
    s = MicroState(rng.uniform(0, side, (n, 2)), np.where(np.arange(n) % 2 == 0, D_SMALL, D_LARGE),
                   np.array([side, side]), np.arange(n, dtype=np.int64), None, None)
    states = [s]
    for k in range(STEPS):
        s = full_step(sim, s, DT, derive_key(seed, n, k))
        states.append(s)
    return states


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phi", type=float, default=0.84, help="area fraction (default 0.84)")
    ap.add_argument("--kT", type=float, default=0.002, help="thermal energy in eps (default 0.002)")
    ap.add_argument("--small", type=int, default=64, help="small quenches (default 64)")
    ap.add_argument("--runs", type=int, default=20, help="direct 16x runs (default 20)")
    ap.add_argument("--fits", type=int, default=3, help="fit seeds of each SDE (default 3)")
    ap.add_argument("--sde-runs", type=int, default=200, dest="sde_runs")
    args = ap.parse_args(argv)
    import torch
    from tqdm.auto import tqdm

    from colloidcg.scaling.macro import Encoder, block_increments, fit_sde, trajectory_increments
    from colloidcg.scaling.simulators import SoftDiskSimulator
    torch.set_num_threads(1)
    sim = SoftDiskSimulator(diffusion=D0, kT=args.kT, substeps=SUBSTEPS, interaction_range=D_LARGE)
    enc = Encoder(["psi6"])
    big = np.array([[enc.whole(s)[0] for s in quench(N_SMALL * FACTOR, 1000 * FACTOR + r, args.phi, sim)]
                    for r in tqdm(range(args.runs), desc="direct 16x")])
    small = [quench(N_SMALL, r, args.phi, sim) for r in tqdm(range(args.small), desc="small quenches")]
    true_mean = big.mean(0)
    train_mean = np.array([[enc.whole(s)[0] for s in tr] for tr in small]).mean(0)
    tile = side_for(N_SMALL, args.phi) ** 2
    z_start = np.array([true_mean[0]])

    def relmse(pred):
        return float(np.sum((pred - true_mean) ** 2) / np.sum(true_mean ** 2))

    nz0, nz1 = trajectory_increments(enc, small)
    rows = []
    for fs in range(args.fits):
        naive, _ = fit_sde(nz0, nz1, dt=DT, names=enc.names, lam=1.0, area_px2=tile, tile_area_px2=tile,
                           start=z_start, seed=fs)
        bz0, bz1 = block_increments(enc, small, blocks=FACTOR, sets_per_step=8, seed=fs)
        block, _ = fit_sde(bz0, bz1, dt=DT, names=enc.names, lam=float(FACTOR), area_px2=FACTOR * tile,
                           tile_area_px2=tile, start=z_start, seed=fs)
        zn = naive.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=fs)[..., 0]
        zb = block.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=fs)[..., 0]
        rows.append((relmse(zn.mean(0)), relmse(zb.mean(0))))
    print(f"## bidisperse glass quench (phi {args.phi}, kT {args.kT}): {N_SMALL} -> {N_SMALL * FACTOR} particles\n")
    print("mean |psi6| of the direct 16x runs at macro steps 0 / 1 / 2 / 10 / 30: "
          + " / ".join(f"{true_mean[k]:.3f}" for k in (0, 1, 2, 10, STEPS)) + "\n")
    print("| fit seed | naive | block states | naive / block |")
    print("|---|---|---|---|")
    for fs, (a, b) in enumerate(rows):
        print(f"| {fs} | {a:.2e} | {b:.2e} | {a / b:.2f} |")
    a, b = np.median([r[0] for r in rows]), np.median([r[1] for r in rows])
    print(f"| median | {a:.2e} | {b:.2e} | {a / b:.2f} |\n")
    print(f"the training quenches' own mean psi6 against the direct runs: {relmse(train_mean):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
