"""Known answer for the macroscopic SDE (issue 19): soft disks ordering after a quench.

Truth: monodisperse overdamped harmonic soft disks (colloidcg.synthetic's dynamics through
colloidcg.scaling.SoftDiskSimulator, keyed noise), diameter 16 px, area fraction 0.85,
kT = 0.002 eps, D0 = 0.25 px^2/frame, 3 micro steps per frame, quenched from uniformly
random positions (infinite temperature). The mean local hexatic order |psi6_i| (6 nearest
neighbours) rises from 0.36 to ~0.6 within 50 frames and then grows slowly as grains
coarsen.

1. Learning uses small systems only (64 particles, 1/16 of the target area): 64 small
   quench trajectories, one snapshot every macro step (25 frames).
   a. Upsampled states, halo patches: large snapshots built by tiling 16 small snapshots
      of the same time (random shifts and symmetries), resolving pairs too close across
      the seams (--seam-overlaps: reinserted, colloidcg upsample's default, or pushed
      apart, the treatment before session 17) and relaxing with 2 frames of the truth
      dynamics (not at the start, uniformly random already); partial evolution of patches
      (the small box's side, a mobile buffer of 2 diameters, then a frozen halo of 2
      diameters) gives increments. Printed too: the snapshots' psi6 against their tiles',
      near the seams and away from them.
   b. Block states, periodic patches: K = 16 small systems of the same time side by side,
      uncoupled (no seams); a patch is one of them evolved with its own periodic boundary
      (its own next macro step); z1 = z(block state) + z_I(x1) - z_I(x0), lambda = K.
2. The SDE (psi6, optionally more observables or closure variables) is run for the 16x
   system (1024 particles), 200 runs, and its ensemble-mean psi6 trajectory compared with
   20 direct simulations of the 16x system (relative MSE = sum (pred - true)^2 / sum true^2
   over the macro steps); the naive baseline is the same SDE fitted on whole small-system
   increments, lambda = 1. The block states and the naive baseline are fitted with
   --fit-seeds seeds (network initialisation and validation split), whose spread is
   reported.
3. Fluctuations: the across-run variance of psi6 at 4x and 16x (and the direct runs').
4. Patch curve (l/2, l, 2l) and lambda sweep (1, K/4, K/2, K, 2K).

    python benchmarks/macro.py                     # everything (cached in --cache)
    python benchmarks/macro.py --stage truth       # only the direct simulations
    python benchmarks/macro.py --stage block --small-seed 200   # block states on other quenches
    python benchmarks/macro.py --stage seams       # why upsampled snapshots mislead the SDE
    python benchmarks/macro.py --stage seams --tiling matched   # the same, registry-matched tiles beside random
    python benchmarks/macro.py --tiling matched --patch-mults 1 --chain-fits 5 --small-seed 100   # the issue's chain, matched tiles
    python benchmarks/macro.py --tiling oriented --patch-mults 1 --chain-fits 5 --small-seed 200  # tiles turned to any angle
    python benchmarks/macro.py --tiling refine --refine-relax 10 --samples 12 --patch-mults 1 --chain-fits 5 --chain-bags 3   # refined, not tiled
    python benchmarks/macro.py --stage seam-causes   # what the oriented seams' deficit is made of (700 frames)
    python benchmarks/macro.py --stage ensemble --fit-seeds 10 --small-seed 100   # bagged block SDE fits
    python benchmarks/macro.py --stage bagging --fit-seeds 10 --sde-runs 1000 --small-seed 100   # the default bagged fit
    python benchmarks/macro.py --stage diagnose --sde-runs 1000 --small-seed 200   # where the bag's error comes from
    python benchmarks/macro.py --stage horizon --fit-seeds 10 --sde-runs 1000 --small-seed 200   # the multi-step drift
    python benchmarks/macro.py --stage horizon --horizons auto --fit-seeds 10 --sde-runs 1000   # H chosen by cross-validation
    python benchmarks/macro.py --stage video --video-seed 1   # the chain from a tracked video
    python benchmarks/macro.py --stage video --video-seed 1 --fresh-macro   # the same tracks and model, macro train again
    python benchmarks/macro.py --stage video-block --fields 32   # block states from 32 filmed fields of view
    python benchmarks/macro.py --stage block-curve --fit-seeds 10 --sde-runs 1000   # block states: lambda sweep, small systems of l/2, l, 2l
    python benchmarks/macro.py --stage block-curve --fit-seeds 10 --sde-runs 1000 --fast-part   # the same, z's fast part kept out of sigma

Prints markdown tables; writes plots and results.json into --out.
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

PHI, KT, D0, SUBSTEPS, DIAM = 0.85, 0.002, 0.25, 3, 16.0
N_SMALL, FACTOR, DT, STEPS = 64, 16, 25, 30
RELAX, BUFFER = 2, 2 * DIAM     # frames of seam relaxation; mobile buffer between patch and frozen halo, px
REFINE_COHERENCE = 0.5          # --tiling refine: refine where the small boxes' order coherence reaches this


def simulator():
    from colloidcg.scaling.simulators import SoftDiskSimulator
    return SoftDiskSimulator(diffusion=D0, kT=KT, substeps=SUBSTEPS, diameter=DIAM)


def side_for(n):
    return math.sqrt(n * math.pi / 4 * DIAM ** 2 / PHI)


def quench_start(n, seed):
    """Uniformly random positions (an infinite-temperature start), a MicroState."""
    from colloidcg.scaling.simulators import MicroState
    side = side_for(n)
    rng = np.random.default_rng(seed)
    return MicroState(rng.uniform(0, side, (n, 2)), np.full(n, DIAM), np.array([side, side]),
                      np.arange(n, dtype=np.int64), None, None)


def trajectory(n, seed, steps=STEPS, keep=False):
    """psi6 along one quench (steps + 1 values, one per macro step); with ``keep`` the states too."""
    from colloidcg.scaling.observables import whole
    from colloidcg.scaling.partial import full_step
    from colloidcg.scaling.simulators import derive_key
    sim = simulator()
    s = quench_start(n, seed)
    z, states = [whole(s, ["psi6"])[0]], [s]
    for k in range(steps):
        s = full_step(sim, s, DT, derive_key(seed, n, k))
        z.append(whole(s, ["psi6"])[0])
        if keep:
            states.append(s)
    return np.array(z), states


def cached(path: Path, fn):
    if path.exists():
        return dict(np.load(path, allow_pickle=True))
    out = fn()
    np.savez(path, **out)
    return out


def stage_truth(cache: Path, runs: int):
    from tqdm.auto import tqdm
    res = {}
    for f in (1, 4, FACTOR):
        def go(f=f):
            return {"z": np.array([trajectory(N_SMALL * f, 1000 * f + r)[0]
                                   for r in tqdm(range(runs), desc=f"direct {f}x")])}
        res[f] = cached(cache / f"truth_{f}x.npz", go)["z"]
    return res


def stage_small(cache: Path, n_traj: int, first_seed: int = 0, steps: int = STEPS, n: int = N_SMALL):
    """Small quench trajectories of ``n`` particles (seeds first_seed, first_seed + 1, ...):
    positions (n_traj, steps + 1, n, 2)."""
    from tqdm.auto import tqdm

    def go():
        pos = [np.array([s.pos for s in trajectory(n, first_seed + r, steps=steps, keep=True)[1]])
               for r in tqdm(range(n_traj), desc=f"small quenches of {n}")]
        return {"pos": np.array(pos)}
    name = f"small_{n_traj}" + ("" if first_seed == 0 else f"_from_{first_seed}") + \
        ("" if steps == STEPS else f"_steps_{steps}") + ("" if n == N_SMALL else f"_n_{n}") + ".npz"
    return cached(cache / name, go)["pos"]


def place(parts, m, rng, closest, push, seam_overlaps):
    """Tile ``parts`` (m x m Configurations of the small box) and resolve pairs placed too
    close across the new seams: "reinsert" (colloidcg's default, upsample.reinsert_across_seams:
    one particle of each pair moves to the largest gap on its own side at its own distance
    to the seam, then pairs still closer than the closest approach are pushed to it) or
    "push" (the earlier treatment: pairs pushed apart to ``closest``). Returns (positions,
    (N,) distance to the nearest new seam, px, the box)."""
    from colloidcg.scaling.upsample import reinsert_across_seams, separate, tile_configurations
    cfg, new, part = tile_configurations(parts, m)
    if seam_overlaps == "reinsert":
        cfg, new, _ = reinsert_across_seams(cfg, new, part, m, push, rng)
        pos, keep, _ = separate(cfg.pos, None, cfg.box, closest, floor=closest,
                                active=new < push.largest(None) + 2 * DIAM, group=part)
    else:
        pos, keep, _ = separate(cfg.pos, None, cfg.box, closest, active=new < 2 * DIAM, group=part)
    return pos[keep], new[keep], cfg.box


def seam_approaches(small_pos):
    """(closest, push) ClosestApproach of the small quenches' late frames: the closest pair
    seen, and the 2 % quantile of the first shell's near side (upsample's push distance)."""
    from colloidcg.scaling.upsample import closest_approach
    side = side_for(N_SMALL)
    box = np.array([side, side])
    frames = [np.mod(p, box) for p in small_pos[:8, -1]]
    return closest_approach(frames, [None] * 8, box), closest_approach(frames, [None] * 8, box, quantile=0.02)


def refine_periodic(pos, box):
    """One refinement step of a periodic 2D configuration, the off-lattice counterpart of
    the reference's block-spin doubling (a spin becomes a 2 x 2 block): every particle at r
    moves to 2 r in a box twice as large per axis, and a particle is added at the midpoint
    2 r_i + (r_j - r_i) of every periodic Delaunay edge (freud's periodic Voronoi
    neighbours). A periodic triangulation has 3 N edges, so the density is kept, and a
    triangular lattice refines to the same lattice: grains keep their orientation and
    double in size. pos (N, 2) px, box (2,) px -> (positions (M, 2) px, the box 2 box)."""
    import freud
    u = np.mod(pos, box)
    vor = freud.locality.Voronoi()
    vor.compute((freud.box.Box(Lx=float(box[0]), Ly=float(box[1]), is2D=True),
                 np.c_[u - box / 2.0, np.zeros(len(u))]))
    nl = vor.nlist
    i, j = np.asarray(nl.query_point_indices), np.asarray(nl.point_indices)
    once = i < j                     # each edge is listed from both ends
    i, j = i[once], j[once]
    raw = u[j] - u[i]                # freud's float32 vectors choose the image, float64 the length
    sep = raw + np.round((np.asarray(nl.vectors, float)[once, :2] - raw) / box) * box
    big = 2.0 * box
    out = np.mod(np.concatenate([2.0 * u, 2.0 * u[i] + sep]), big)
    out[out >= big] = 0.0
    return out, big


def order_coherence(pos, box):
    """|<psi6>| / <|psi6|> of one periodic configuration (colloidcg.scaling.observables.order_coherence):
    near 1 when one grain's orientation spans the box, about 1/sqrt(N) for many independent grains."""
    from colloidcg.scaling.observables import order_coherence as coherence
    return coherence(np.mod(pos, box), box)


def refine_from(small_pos):
    """The first macro step at which the small quenches' median order coherence reaches
    REFINE_COHERENCE: from there on ``--tiling refine`` refines instead of tiling."""
    side = side_for(N_SMALL)
    box = np.array([side, side])
    for t in range(small_pos.shape[1]):
        if np.median([order_coherence(p[t], box) for p in small_pos]) >= REFINE_COHERENCE:
            return t
    return small_pos.shape[1]


def refined(small_pos, t, samples, rng, relax_per_level):
    """Large snapshots at macro step t by refinement: one small snapshot of time t refined
    twice (16x the area), overlaps below the data's closest approach pushed apart and
    ``relax_per_level`` frames of truth dynamics after each doubling. Returns MicroStates."""
    from colloidcg.scaling.partial import full_step
    from colloidcg.scaling.simulators import MicroState, derive_key
    from colloidcg.scaling.upsample import separate
    side = side_for(N_SMALL)
    closest, _ = seam_approaches(small_pos)
    out = []
    for k in range(samples):
        p, b = np.mod(small_pos[rng.integers(len(small_pos)), t], side), np.array([side, side])
        for level in range(int(round(math.log(FACTOR, 4)))):
            p, b = refine_periodic(p, b)
            moved, keep, _ = separate(p, None, b, closest)
            st = MicroState(moved[keep], np.full(int(keep.sum()), DIAM), b, np.arange(int(keep.sum())), None, None)
            st = full_step(simulator(), st, relax_per_level, derive_key(78, t, k, level))
            p = st.pos
        out.append(st)
    return out


def upsampled(small_pos, t, samples, rng, relax=RELAX, seam_overlaps="reinsert", tiling="random",
              refine_relax=10, refine_start=None):
    """Large snapshots at macro step t: 4 x 4 small snapshots of time t from different
    trajectories, random shifts/symmetries (``tiling="matched"``: every tile after the first
    the best of 32 symmetries and registry shifts for its seams with the tiles placed
    before it, colloidcg.scaling.match_parts), overlaps at the seams resolved
    (:func:`place`), ``relax`` frames of truth relaxation of the whole large system.
    ``tiling="refine"``: from macro step ``refine_start`` on (:func:`refine_from`), where the
    small quenches' order spans their box, :func:`refined` snapshots; oriented tiles before.
    Returns MicroStates."""
    from colloidcg.scaling.partial import full_step
    from colloidcg.scaling.simulators import MicroState, derive_key
    from colloidcg.scaling.upsample import Configuration, _transform, match_parts, tile_configurations
    if tiling == "refine":
        if t >= refine_start:
            return refined(small_pos, t, samples, rng, refine_relax)
        tiling = "oriented"
    side = side_for(N_SMALL)
    box = np.array([side, side])
    m = int(round(math.sqrt(FACTOR)))
    closest, push = seam_approaches(small_pos)
    out = []
    for k in range(samples):
        pick = rng.choice(len(small_pos), m * m, replace=len(small_pos) < m * m)
        parts = [_transform(Configuration(np.mod(small_pos[i, t], box), np.zeros((N_SMALL, 2)), None, box,
                                          np.full(N_SMALL, np.inf)), rng) for i in pick]
        if tiling != "random" and t > 0:
            parts, _ = match_parts(parts, m, rng, rotate=tiling == "oriented")
        if t > 0:    # the quench's start is uniformly random: tiles of it need no seam treatment
            pos, _, big = place(parts, m, rng, closest, push, seam_overlaps)
        else:
            cfg, _, _ = tile_configurations(parts, m)
            pos, big = cfg.pos, cfg.box
        st = MicroState(pos, np.full(len(pos), DIAM), big, np.arange(len(pos), dtype=np.int64), None, None)
        if t > 0 and relax:
            st = full_step(simulator(), st, relax, derive_key(77, t, k))
        out.append(st)
    return out


def snapshot_seams(snaps, snap_t, small_states, enc, side, true_mean):
    """The upsampled snapshots' psi6 against their tiles': per macro step t >= 1, the
    snapshots' mean |psi6| minus the training quenches' mean at t (the tiles' population),
    and its split into the band within one diameter of a seam (seams at multiples of the
    small box's side) and the rest beyond two diameters. Means over t (and over the late
    half, t >= 15), and the relative MSE of the snapshots' mean psi6 (per t) against the
    direct runs' mean: what a drift that followed the snapshots exactly would get."""
    from colloidcg.scaling.observables import psi6_local
    train = np.array([[enc.whole(st)[0] for st in traj] for traj in small_states]).mean(0)
    rows = []
    for t in sorted(set(snap_t) - {0}):
        whole_, band, bulk = [], [], []
        for s, ts in zip(snaps, snap_t):
            if ts != t:
                continue
            p = np.abs(psi6_local(s.pos, s.box))
            u = np.mod(s.pos, side)
            d = np.min(np.minimum(u, side - u), axis=1)
            whole_.append(p.mean())
            band.append(p[d < DIAM].mean())
            bulk.append(p[d >= 2 * DIAM].mean())
        rows.append((t, np.mean(whole_) - train[t], np.mean(band) - np.mean(bulk), np.mean(bulk) - train[t],
                     np.mean(whole_)))
    r = np.array(rows)
    tt = r[:, 0].astype(int)
    within = tt < len(true_mean)         # longer small quenches (--small-steps): compared where the truth is
    snap_mean = np.concatenate([[np.mean([enc.whole(s)[0] for s, ts in zip(snaps, snap_t) if ts == 0])],
                                r[within, 4]])
    late = r[:, 0] >= 15
    return {"per_step": r.tolist(), "snapshot_minus_tiles": float(r[:, 1].mean()),
            "snapshot_minus_tiles_late": float(r[late, 1].mean()), "seam_band_minus_bulk": float(r[:, 2].mean()),
            "bulk_minus_tiles": float(r[:, 3].mean()),
            "snapshots_mean_vs_direct": relmse(snap_mean, true_mean[np.concatenate([[0], tt[within]])])}


def relmse(pred, true):
    return float(np.sum((pred - true) ** 2) / np.sum(true ** 2))


def fast_var_for(args, enc, states, K):
    """With --fast-part: the fast part of z for a block state of K small systems (what
    ``colloidcg macro train --states block`` measures by default, macro.fast_variance of
    the small systems' own psi6 paths, over K); None without it (sigma then holds the fast
    part, as before session 43)."""
    if not args.fast_part:
        return None
    from colloidcg.scaling.macro import fast_variance
    return fast_variance(np.array([[enc.whole(s) for s in t] for t in states])) / K


def block_states(args, enc, small_states, z_start, truth, tile_area, nz0, nz1):
    """Block states (periodic patches, no seams): K = FACTOR small systems side by side, one
    of them evolved (its own next macro step); lambda = K, the area of K small systems.
    The block SDE and the naive one (nz0, nz1: whole small-system increments, lambda = 1)
    are both fitted with ``args.fit_seeds`` seeds: the spread of one fit is as large as the
    difference being measured. Returns (the numbers, the first seed's 16x ensemble)."""
    from colloidcg.scaling.macro import block_increments, fit_sde
    true_mean = truth[FACTOR].mean(0)
    var_direct = np.mean(truth[FACTOR][:, 5:].var(0))
    block = {"relmse": [], "relmse_naive": [], "var_ratio_4x_over_16x": [], "var_ratio_16x_direct": []}
    zb_first = None
    for fs in range(args.fit_seeds):
        n_sde, _ = fit_sde(nz0, nz1, dt=DT, names=enc.names, lam=1.0, area_px2=tile_area, tile_area_px2=tile_area,
                           start=z_start, seed=fs)
        zn_s = n_sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=fs)[..., 0]
        bz0, bz1 = block_increments(enc, small_states, blocks=FACTOR, sets_per_step=args.block_sets, seed=fs)
        b_sde, _ = fit_sde(bz0, bz1, dt=DT, names=enc.names, lam=float(FACTOR), area_px2=FACTOR * tile_area,
                           tile_area_px2=tile_area, start=z_start, seed=fs)
        zb = b_sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=fs)[..., 0]
        zb4 = b_sde.simulate(steps=STEPS, runs=args.sde_runs, factor=4, z0=z_start, seed=fs + 1000)[..., 0]
        zb_first = zb if zb_first is None else zb_first
        block["relmse"].append(relmse(zb.mean(0), true_mean))
        block["relmse_naive"].append(relmse(zn_s.mean(0), true_mean))
        block["var_ratio_4x_over_16x"].append(float(np.mean(zb4[:, 5:].var(0)) / np.mean(zb[:, 5:].var(0))))
        block["var_ratio_16x_direct"].append(float(np.mean(zb[:, 5:].var(0)) / var_direct))
    block["median_relmse"] = float(np.median(block["relmse"]))
    block["median_relmse_naive"] = float(np.median(block["relmse_naive"]))
    block["ratio_of_medians"] = block["median_relmse_naive"] / block["median_relmse"]
    block["ratio_per_seed"] = [a / b for a, b in zip(block["relmse_naive"], block["relmse"])]
    return block, zb_first


def ensemble_fits(args, enc, small_states, z_start, truth, tile_area, nz0, nz1, sets_list=(8,)):
    """Is the block SDE's spread the fit's, and does averaging fits remove it? (And how far is
    the bagged mean from the training quenches' own mean, the most the data can tell?)

    For every fit seed s (0 .. --fit-seeds - 1) the naive SDE and the block SDE (block states
    drawn with ``sets_per_step`` in ``sets_list``, draw and fit both seeded by s) are fitted
    and run for the 16x system. Reported per method: each fit's relative MSE, their median,
    and the relative MSE of the *bagged* ensemble mean (the mean over fits of each fit's
    ensemble-mean trajectory: an equal mixture of the fitted SDEs), for all fits and for
    disjoint groups of 5 fits. Bagging is applied to the naive baseline as well."""
    from tqdm.auto import tqdm

    from colloidcg.scaling.macro import block_increments, fit_sde
    true_mean = truth[FACTOR].mean(0)
    M = int(args.fit_seeds)
    means = {"naive": []}
    means.update({f"block_{k}": [] for k in sets_list})
    for fs in tqdm(range(M), desc="fits"):
        n_sde, _ = fit_sde(nz0, nz1, dt=DT, names=enc.names, lam=1.0, area_px2=tile_area, tile_area_px2=tile_area,
                           start=z_start, seed=fs)
        means["naive"].append(n_sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start,
                                             seed=fs)[..., 0].mean(0))
        for k in sets_list:
            bz0, bz1 = block_increments(enc, small_states, blocks=FACTOR, sets_per_step=k, seed=fs)
            b_sde, _ = fit_sde(bz0, bz1, dt=DT, names=enc.names, lam=float(FACTOR), area_px2=FACTOR * tile_area,
                               tile_area_px2=tile_area, start=z_start, seed=fs)
            means[f"block_{k}"].append(b_sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start,
                                                      seed=fs)[..., 0].mean(0))
    # what the training data themselves give: their own mean psi6 per macro step
    train_mean = np.array([[enc.whole(st)[0] for st in traj] for traj in small_states]).mean(0)
    out = {"training_mean_vs_direct": relmse(train_mean, true_mean)}
    for name, m in means.items():
        m = np.array(m)
        single = [relmse(x, true_mean) for x in m]
        groups = [relmse(m[g:g + 5].mean(0), true_mean) for g in range(0, M - 4, 5)]
        out[name] = {"relmse": single, "median": float(np.median(single)),
                     "bagged_all": relmse(m.mean(0), true_mean), "bagged_groups_of_5": groups,
                     "bagged_vs_training_mean": relmse(m.mean(0), train_mean), "bagged_mean": m.mean(0).tolist()}
    return out


def print_ensemble(ens, n_small, small_seed):
    print(f"| {n_small} small quenches from seed {small_seed} | fits | median single fit | range | bagged, all fits "
          "| bagged, groups of 5 |")
    print("|---|---|---|---|---|---|")
    for name, r in ens.items():
        if name == "training_mean_vs_direct":
            continue
        print(f"| {name} | {len(r['relmse'])} | {r['median']:.2e} | {min(r['relmse']):.1e} - {max(r['relmse']):.1e} "
              f"| {r['bagged_all']:.2e} | {', '.join(f'{g:.2e}' for g in r['bagged_groups_of_5'])} |")
    nv = ens["naive"]
    print(f"\nthe training quenches' own mean psi6 against the direct runs: {ens['training_mean_vs_direct']:.2e}")
    for name, r in ens.items():
        if name in ("naive", "training_mean_vs_direct"):
            continue
        print(f"{name}: bagged mean against the training quenches' own mean: {r['bagged_vs_training_mean']:.2e}")
        print(f"\n{name}: ratio of medians {nv['median'] / r['median']:.2f}; bagged all: naive bagged / block bagged "
              f"{nv['bagged_all'] / r['bagged_all']:.2f}, naive median / block bagged "
              f"{nv['median'] / r['bagged_all']:.2f}; groups of 5 (both bagged): "
              + ", ".join(f"{a / b:.2f}" for a, b in zip(nv["bagged_groups_of_5"], r["bagged_groups_of_5"])))


def stage_bagging(args, enc, small_states, z_start, truth, tile_area, nz0, nz1):
    """Bagging as ``colloidcg macro train`` does it by default (colloidcg.scaling.macro.fit_bagged:
    ``--fit-seeds`` members, each fitted to a bootstrap resample of its own block-state draw,
    drift averaged), ``--bags`` independent bags (member seeds 1000 b + k), against the naive
    baseline as before (single fits, seeds 0 .. --fit-seeds - 1, their median) and against a
    bagged naive SDE. Bags without the bootstrap (members differ by seed and block draw only)
    are fitted too. Each SDE is run ``--sde-runs`` times for the 16x system from ``z_start``.
    The standard errors of the ratios come from a bootstrap over the direct runs (the same
    resample for every method), the fits' spread from the bags."""
    from tqdm.auto import tqdm

    from colloidcg.scaling.macro import block_increments, fit_bagged, fit_sde
    M, nb = int(args.fit_seeds), int(args.bags)
    runs = truth[FACTOR]
    common = dict(dt=DT, names=enc.names, tile_area_px2=tile_area)

    def mean_of(sde, seed):
        return sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=seed)[..., 0].mean(0)

    z_all = np.array([[enc.whole(st) for st in t] for t in small_states])

    def draw(s):
        if args.latent:
            from colloidcg.scaling.latent import block_paths
            return block_paths(z_all, blocks=FACTOR, repeats=args.block_sets, seed=s)
        return block_increments(enc, small_states, blocks=FACTOR, sets_per_step=args.block_sets, seed=s,
                                smooth=args.smooth_state)

    means = {"naive_single": [], "naive_bagged": [], "block_bagged": [], "block_bagged_no_bootstrap": []}
    fast = fast_var_for(args, enc, small_states, FACTOR)
    t0 = time.perf_counter()
    for fs in tqdm(range(M), desc="naive single fits"):
        sde, _ = fit_sde(nz0, nz1, lam=1.0, area_px2=tile_area, start=z_start, seed=fs, **common)
        means["naive_single"].append(mean_of(sde, fs))
    for b in tqdm(range(nb), desc="bags"):
        seed = 1000 * b
        sde, _ = fit_bagged((nz0, nz1), fits=M, seed=seed, lam=1.0, area_px2=tile_area, start=z_start, **common)
        means["naive_bagged"].append(mean_of(sde, seed))
        for name, boot in (("block_bagged", True), ("block_bagged_no_bootstrap", False))[:1 if args.bootstrap_only else 2]:
            sde, _ = fit_bagged(draw, fits=M, seed=seed, bootstrap=boot, lam=float(FACTOR),
                                area_px2=FACTOR * tile_area, start=z_start, fast_var=fast, **common)
            means[name].append(mean_of(sde, seed))
    seconds = time.perf_counter() - t0
    means = {k: np.array(v) for k, v in means.items() if v}

    def table(true_mean):
        err = {k: np.array([relmse(m, true_mean) for m in v]) for k, v in means.items()}
        med = {k: float(np.median(v)) for k, v in err.items()}
        ratios = {"naive median / block bagged median": med["naive_single"] / med["block_bagged"],
                  "naive bagged median / block bagged median": med["naive_bagged"] / med["block_bagged"]}
        if "block_bagged_no_bootstrap" in med:
            ratios["naive median / block bagged (no bootstrap) median"] = (med["naive_single"]
                                                                           / med["block_bagged_no_bootstrap"])
        return err, ratios

    err, ratios = table(runs.mean(0))
    rng = np.random.default_rng(0)
    boot = {k: [] for k in ratios}
    boot_err = {k: [] for k in err}
    for _ in range(2000):
        e, r = table(runs[rng.integers(0, len(runs), len(runs))].mean(0))
        for k, v in r.items():
            boot[k].append(v)
        for k, v in e.items():
            boot_err[k].append(np.median(v))
    train_mean = np.array([[enc.whole(st)[0] for st in traj] for traj in small_states]).mean(0)
    return {"members_per_bag": M, "bags": nb, "sde_runs": args.sde_runs, "block_sets": args.block_sets,
            "relmse": {k: v.tolist() for k, v in err.items()},
            "median_relmse": {k: float(np.median(v)) for k, v in err.items()},
            "median_relmse_bootstrap_se": {k: float(np.std(v)) for k, v in boot_err.items()},
            "ratios": ratios, "ratios_bootstrap_se": {k: float(np.std(v)) for k, v in boot.items()},
            "ratios_bootstrap_2.5_97.5": {k: np.percentile(v, [2.5, 97.5]).tolist() for k, v in boot.items()},
            "training_mean_vs_direct": relmse(train_mean, runs.mean(0)), "seconds": seconds}


def print_bagging(res, n_small, small_seed):
    print(f"\n## bagging: {n_small} small quenches from seed {small_seed}, {res['bags']} bags of "
          f"{res['members_per_bag']} fits, {res['sde_runs']} SDE runs, bootstrap SE over the direct runs\n")
    print("| method | relative MSE per fit or bag | median (bootstrap SE) |")
    print("|---|---|---|")
    for k, v in res["relmse"].items():
        print(f"| {k} | {', '.join(f'{x:.2e}' for x in v)} | {res['median_relmse'][k]:.2e} "
              f"({res['median_relmse_bootstrap_se'][k]:.1e}) |")
    print(f"\nthe training quenches' own mean against the direct runs: {res['training_mean_vs_direct']:.2e}\n")
    for k, v in res["ratios"].items():
        lo, hi = res["ratios_bootstrap_2.5_97.5"][k]
        print(f"- {k}: {v:.2f} +- {res['ratios_bootstrap_se'][k]:.2f} (95 %: {lo:.2f} - {hi:.2f})")
    print(f"\n{res['seconds']:.0f} s of fitting")


def stage_horizon(args, enc, small_states, z_start, truth, tile_area, nz0, nz1):
    """The multi-step drift (colloidcg.scaling.macro.refine_drift): the default bag (10
    members, seed 0, each on its own block-state draw, bootstrap) with the drift of the
    one-step likelihood (horizon 0) and refitted to follow the block states' own
    trajectories over H macro steps, for each H in --horizons; against the naive baseline as
    in --stage bagging (the median of --fit-seeds single fits, seeds 0, 1, ...). Standard
    errors of the ratios from 2000 bootstrap resamples of the direct runs (the same resample
    for every method)."""
    from tqdm.auto import tqdm

    from colloidcg.scaling.macro import block_draw, fit_bagged, fit_sde
    runs = truth[FACTOR]
    common = dict(dt=DT, names=enc.names, tile_area_px2=tile_area)
    z = np.array([[enc.whole(st) for st in traj] for traj in small_states])          # (n, STEPS + 1, d)
    m = z[..., 0].mean(0)
    horizons = [h.strip() if h.strip() == "auto" else int(h) for h in args.horizons.split(",")]

    def mean_of(sde, seed):
        return sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=seed)[..., 0].mean(0)

    t0 = time.perf_counter()
    bag_seeds = [int(b) for b in args.bag_seeds.split(",")]
    choices = {}
    if "auto" in horizons:      # H chosen from the small quenches alone, seeded by the bag's seed
        from colloidcg.scaling.horizon import choose_horizon
        for b in bag_seeds:
            tc = time.perf_counter()
            H, rep = choose_horizon(z, blocks=FACTOR, dt=DT, sets_per_step=args.block_sets, seed=b,
                                    names=enc.names, progress=True)
            choices[b] = {**rep, "seconds": time.perf_counter() - tc}
            print(f"bag seed {b}: horizon auto chose H = {H} (held-out scores "
                  + ", ".join(f"H {h}: {m:.4f} +- {e:.4f}" for h, m, e in
                              zip(rep["candidates"], rep["mean_score"], rep["se_of_difference_to_best"]))
                  + f"; {choices[b]['seconds']:.0f} s)", flush=True)
        if args.choice_only:
            return {"horizons": horizons, "bag_seeds": bag_seeds, "auto_choice": choices,
                    "seconds": time.perf_counter() - t0}
    naive = np.array([mean_of(fit_sde(nz0, nz1, lam=1.0, area_px2=tile_area, start=z_start, seed=fs, **common)[0], fs)
                      for fs in tqdm(range(int(args.fit_seeds)), desc="naive single fits")])
    bags = {}
    runs_of = {}
    for Hs in horizons:
        if Hs == "auto":
            continue
        for b in bag_seeds:
            runs_of[(Hs, b)] = Hs
    for b, rep in choices.items():
        runs_of[("auto", b)] = rep["chosen"]
    done = {}
    for key, H in runs_of.items():
        b = key[1]
        if (H, b) in done:          # auto chose a horizon already fitted with this bag seed
            bags[key] = done[(H, b)]
            continue
        def draw(s, H=H):
            d = block_draw(z, blocks=FACTOR, sets_per_step=args.block_sets, seed=s, horizon=max(H, 1))
            return d if H else (d.z0, d.z1)          # H = 0: the one-step fit (the same draw as block_pairs)
        print(f"bag seed {b}, horizon {H}" + (" (auto)" if key[0] == "auto" else ""), flush=True)
        sde, _ = fit_bagged(draw, fits=10, seed=b, lam=float(FACTOR), area_px2=FACTOR * tile_area,
                            start=z_start, **common)
        bags[key] = done[(H, b)] = mean_of(sde, b)
    seconds = time.perf_counter() - t0

    def errors(true_mean):
        nv = float(np.median([relmse(x, true_mean) for x in naive]))
        return nv, {H: relmse(b, true_mean) for H, b in bags.items()}

    nv, err = errors(runs.mean(0))
    rng = np.random.default_rng(0)
    boot = {H: [] for H in bags}
    for _ in range(2000):
        bn, be = errors(runs[rng.integers(0, len(runs), len(runs))].mean(0))
        for H, e in be.items():
            boot[H].append(bn / e)
    windows = {"1-5": slice(1, 6), "6-17": slice(6, 18), "18-30": slice(18, STEPS + 1)}
    return {"horizons": horizons, "bag_seeds": bag_seeds, "auto_choice": choices,
            "naive_median": nv, "naive_relmse": [relmse(x, runs.mean(0)) for x in naive],
            "training_mean_vs_direct": relmse(m, runs.mean(0)),
            "bag": {f"H{H[0]}_seed{H[1]}": {
                "horizon": H[0], "horizon_fitted": runs_of[H], "bag_seed": H[1], "relmse": err[H], "ratio": nv / err[H],
                "ratio_bootstrap_se": float(np.std(boot[H])),
                "ratio_bootstrap_2.5_97.5": np.percentile(boot[H], [2.5, 97.5]).tolist(),
                "vs_training_mean": relmse(bags[H], m),
                "window_mean_minus_training": {k: float((bags[H] - m)[v].mean()) for k, v in windows.items()},
                "mean": bags[H].tolist()} for H in bags},
            "seconds": seconds}


def print_horizon(res, n_small, small_seed):
    if "bag" not in res:        # --choice-only
        for b, c in res["auto_choice"].items():
            print(f"| {n_small} quenches from seed {small_seed}, bag seed {b} | H = {c['chosen']} | "
                  + ", ".join(f"{h}: {m:.4f}" for h, m in zip(c["candidates"], c["mean_score"])) + " |")
        return
    print(f"\n## multi-step drift: {n_small} small quenches from seed {small_seed}; naive: median of "
          f"{len(res['naive_relmse'])} single fits {res['naive_median']:.2e}; the training quenches' own mean "
          f"against the direct runs {res['training_mean_vs_direct']:.2e}\n")
    print("| horizon H (macro steps) | bag: relative MSE | against its training mean | ratio naive / bag (bootstrap SE; 95 %) "
          "| bag minus training mean, steps 1-5 / 6-17 / 18-30 (1e-3) |")
    print("|---|---|---|---|---|")
    for r in res["bag"].values():
        lo, hi = r["ratio_bootstrap_2.5_97.5"]
        w = r["window_mean_minus_training"]
        name = f"auto = {r['horizon_fitted']}" if r["horizon"] == "auto" else r["horizon"]
        print(f"| {name} (bag seed {r['bag_seed']}) | {r['relmse']:.2e} | {r['vs_training_mean']:.2e} | {r['ratio']:.2f} +- {r['ratio_bootstrap_se']:.2f} "
              f"({lo:.1f}-{hi:.1f}) | {w['1-5'] * 1e3:+.1f} / {w['6-17'] * 1e3:+.1f} / {w['18-30'] * 1e3:+.1f} |")
    print(f"\n{res['seconds']:.0f} s of fitting")


def _hat(z, knots):
    """(M, len(knots)) piecewise-linear interpolation weights of z on the knots (clamped)."""
    z = np.clip(z, knots[0], knots[-1])
    k = np.clip(np.searchsorted(knots, z) - 1, 0, len(knots) - 2)
    f = (z - knots[k]) / (knots[k + 1] - knots[k])
    X = np.zeros((len(z), len(knots)))
    X[np.arange(len(z)), k] = 1 - f
    X[np.arange(len(z)), k + 1] = f
    return X


def stage_diagnose(args, enc, small_states, z_start, truth, tile_area):
    """Where the block SDE's error comes from, per training set: the default bag (10 members,
    seed 0, --sde-runs runs) against the direct runs and against its own training quenches'
    mean; the same drift without noise (is it the drift or the diffusion?); the naive
    single fit (seed 0); the error split into the training mean's own error, the SDE's
    error against its training mean and their cross term, and by macro-step window; and a
    piecewise-linear drift (knots at quantiles of the block states' z, weighted least
    squares) in place of the network."""
    import torch

    from colloidcg.scaling.macro import block_pairs, fit_bagged, fit_sde, trajectory_increments
    runs = truth[FACTOR]
    T = runs.mean(0)
    z = np.array([[enc.whole(st)[0] for st in traj] for traj in small_states])     # (n, STEPS + 1)
    m = z.mean(0)
    common = dict(dt=DT, names=enc.names, tile_area_px2=tile_area)
    draw = lambda s: block_pairs(z[..., None], blocks=FACTOR, sets_per_step=args.block_sets, seed=s)  # noqa: E731
    bag, _ = fit_bagged(draw, fits=10, seed=0, lam=float(FACTOR), area_px2=FACTOR * tile_area, start=z_start, **common)
    zb = bag.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=0)[..., 0].mean(0)
    det = [float(z_start[0])]
    with torch.no_grad():
        for _ in range(STEPS):
            det.append(det[-1] + DT * float(bag.drift(torch.tensor([[det[-1]]], dtype=torch.float64))[0, 0]))
    det = np.array(det)
    nz0, nz1 = trajectory_increments(enc, small_states)
    naive, _ = fit_sde(nz0, nz1, lam=1.0, area_px2=tile_area, start=z_start, seed=0, **common)
    zn = naive.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=0)[..., 0].mean(0)
    den = float(np.sum(T ** 2))
    a, b = zb - m, m - T
    windows = {"1-5": slice(1, 6), "6-17": slice(6, 18), "18-30": slice(18, STEPS + 1)}
    res = {"training_mean_vs_direct": relmse(m, T), "bag_vs_direct": relmse(zb, T), "bag_vs_training_mean": relmse(zb, m),
           "cross_term": float(2 * np.sum(a * b) / den), "drift_alone_vs_direct": relmse(det, T),
           "naive_seed0_vs_direct": relmse(zn, T),
           "window_mean_bag_minus_training": {k: float(a[v].mean()) for k, v in windows.items()},
           "window_mean_training_minus_direct": {k: float(b[v].mean()) for k, v in windows.items()},
           "window_mean_naive_minus_training": {k: float((zn - m)[v].mean()) for k, v in windows.items()},
           "window_share_of_bag_relmse": {k: float(np.sum((zb - T)[v] ** 2) / den) for k, v in windows.items()}}
    z0, z1 = draw(0)
    z0, dz = z0[:, 0], (z1 - z0)[:, 0] / DT
    spline = {}
    for nk in (8, 16, 31):
        knots = np.unique(np.quantile(z0, np.linspace(0, 1, nk)))
        X = _hat(z0, knots)
        w = np.ones(len(z0))
        for _ in range(3):          # weights: 1 / the residual variance, itself piecewise linear in z
            c = np.linalg.lstsq(X * np.sqrt(w)[:, None], dz * np.sqrt(w), rcond=None)[0]
            v = np.linalg.lstsq(X, (dz - X @ c) ** 2, rcond=None)[0]
            w = 1.0 / np.maximum(X @ v, 1e-3 * np.mean((dz - X @ c) ** 2))
        path = [float(z_start[0])]
        for _ in range(STEPS):
            path.append(path[-1] + DT * float((_hat(np.array([path[-1]]), knots) @ c)[0]))
        spline[nk] = {"vs_direct": relmse(np.array(path), T), "vs_training_mean": relmse(np.array(path), m)}
    res["piecewise_linear_drift"] = spline
    return res


def print_diagnose(res, n_small, small_seed):
    print(f"\n## diagnosis: {n_small} small quenches from seed {small_seed}\n")
    for k, v in res.items():
        if isinstance(v, dict):
            print(f"- {k}: " + ", ".join(f"{a}: {b if isinstance(b, dict) else f'{b:.2e}'}" for a, b in v.items()))
        else:
            print(f"- {k}: {v:.2e}")


def stage_video(args, cache: Path, out: Path, truth, z_start, tile_area, small_states, enc):
    """The chain from video (the path a user takes): a quench of N_SMALL visible particles
    filmed in a window of a periodic sample 4x its area (the same soft disks, from uniformly
    random positions), tracked, a model trained on the tracks, ``colloidcg macro train``
    (upsampled 16x, patches evolved with the model, lambda = K) on its frames 0, DT, ...,
    and the SDE run for 16x and 4x against the same direct runs and the same start as the
    particle-truth chain. Returns the results dict."""
    from colloidcg.scaling.macro import block_increments, fit_sde, load_sde, trajectory_increments
    from tqdm.auto import tqdm

    from colloidcg.scaling.video_chain import quench_video, run_chain
    true_mean = truth[FACTOR].mean(0)
    var_direct = {f: float(np.mean(truth[f][:, 5:].var(0))) for f in (4, FACTOR)}
    t0 = time.perf_counter()
    video = quench_video(n_fov=N_SMALL, frames=STEPS * DT + 1, seed=args.video_seed, area_fraction=PHI,
                         diameter=DIAM, diffusion=D0, kT=KT, substeps=SUBSTEPS, progress=True)
    t_video = time.perf_counter() - t0
    work = cache / f"video_{args.video_seed}_e{args.video_epochs}"
    if (work / "macro" / "report.json").is_file() and not args.fresh:      # the chain is cached: reuse it
        from colloidcg.outputs import read_table
        from colloidcg.scaling.video_chain import ChainResult, match_error
        tracks, _ = read_table(work / "tracks.parquet")
        seconds = json.loads((work / "seconds.json").read_text())
        if args.fresh_macro:        # the same tracks and model; colloidcg macro train again (e.g. new seams)
            from colloidcg.scaling.video_chain import macro_train_chain
            t_macro = time.perf_counter()
            macro_train_chain(work, factor=FACTOR, steps=DT, snapshots=STEPS + 1, patches=args.patches,
                              seed=args.video_seed)
            seconds["macro_train"] = time.perf_counter() - t_macro
            (work / "seconds.json").write_text(json.dumps(seconds))
        chain = ChainResult(tracks, match_error(tracks, video.truth, 8.0), work / "model", work / "macro",
                            json.loads((work / "macro" / "report.json").read_text()), seconds)
    else:
        chain = run_chain(video, work, factor=FACTOR, steps=DT, snapshots=STEPS + 1, patches=args.patches,
                          epochs=args.video_epochs, seed=args.video_seed, progress=True)
        (work / "seconds.json").write_text(json.dumps(chain.seconds))
    sde = load_sde(chain.macro_dir)
    res = {"video": {"fov_px": video.fov_px, "sample_px": video.sample_px, "n_sample": video.n_sample,
                     "frames": int(len(video.frames)), "seed": args.video_seed,
                     "visible_per_frame": float(video.truth.groupby("frame").size().mean()),
                     "seconds_video": t_video},
           "tracking": chain.tracking, "seconds": chain.seconds, "macro_report": chain.report,
           "epochs": args.video_epochs}
    runs = {}
    for start_name, z0 in (("truth_start", z_start), ("own_start", None)):
        z16 = sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z0, seed=0)[..., 0]
        z4 = sde.simulate(steps=STEPS, runs=args.sde_runs, factor=4, z0=z0, seed=1)[..., 0]
        runs[start_name] = (z16, z4)
        v16, v4 = float(np.mean(z16[:, 5:].var(0))), float(np.mean(z4[:, 5:].var(0)))
        res[start_name] = {"z0": float(z16[0, 0]),
                           "relmse": relmse(z16.mean(0), true_mean), "var_16x": v16, "var_4x": v4,
                           "var_ratio_4x_over_16x": v4 / v16, "var_ratio_16x_direct": v16 / var_direct[FACTOR],
                           "var_ratio_4x_direct": v4 / var_direct[4], "mean_16x": z16.mean(0).tolist()}
    # references on the same direct runs: the particle-truth chain's naive and block SDEs (fit seed 0),
    # and the video sample's own psi6 (one quench of the 4x sample, every DT frames)
    nz0, nz1 = trajectory_increments(enc, small_states)
    n_sde, _ = fit_sde(nz0, nz1, dt=DT, names=enc.names, lam=1.0, area_px2=tile_area, tile_area_px2=tile_area,
                       start=z_start, seed=0)
    zn = n_sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=0)[..., 0]
    bz0, bz1 = block_increments(enc, small_states, blocks=FACTOR, sets_per_step=args.block_sets, seed=0)
    b_sde, _ = fit_sde(bz0, bz1, dt=DT, names=enc.names, lam=float(FACTOR), area_px2=FACTOR * tile_area,
                       tile_area_px2=tile_area, start=z_start, seed=0)
    zb = b_sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=0)[..., 0]
    sample = video.psi6_sample[::DT]
    res["reference"] = {"relmse_naive": relmse(zn.mean(0), true_mean), "relmse_block": relmse(zb.mean(0), true_mean),
                        "relmse_video_sample_psi6": relmse(sample, true_mean),
                        "video_sample_psi6": sample.tolist(), "direct_16x_mean": true_mean.tolist()}
    res["snapshot_frames"] = chain.report.get("snapshot_frames")
    # decomposition: the same upsampled snapshots (macro train's seeds), their psi6 against the
    # filmed sample's, and patches evolved with the truth dynamics instead of the model
    from colloidcg.cli.macro import _states
    from colloidcg.export import load_model
    from colloidcg.outputs import read_table
    from colloidcg.scaling import upsample
    from colloidcg.scaling.macro import learn_macro
    model, mcfg = load_model(chain.model_dir)
    model = model.double()
    tracks, meta = read_table(work / "tracks.parquet")
    snaps = []
    for i, f in enumerate(tqdm(chain.report["snapshot_frames"], desc="upsampling again")):
        up = upsample(model, mcfg, tracks, meta, factor=FACTOR, frame=int(f), samples=1, seed=args.video_seed + i)
        snaps += [st._replace(size=np.full(len(st.pos), DIAM)) for st in _states(up, None, 2)]
    z_snap = np.array([enc.whole(st)[0] for st in snaps])
    res["snapshots_psi6"] = z_snap.tolist()
    res["snapshots_minus_sample"] = float(np.mean(z_snap[1:] - video.psi6_sample[::DT][1:]))
    tile = float(chain.report["upsampling"]["tile_px"][0])
    truth_patches = learn_macro(simulator(), snaps, patch=tile, steps=DT, observables=["psi6"],
                                patches_per_snapshot=args.patches, buffer=args.buffer, tile_area_px2=tile * tile,
                                seed=args.video_seed, progress=True)
    zt = truth_patches.sde.simulate(steps=STEPS, runs=args.sde_runs, factor=FACTOR, z0=z_start, seed=0)[..., 0]
    res["truth_dynamics_on_video_snapshots"] = {"relmse": relmse(zt.mean(0), true_mean),
                                                "mean_16x": zt.mean(0).tolist()}
    (out / f"video_{args.video_seed}.json").write_text(json.dumps(res, indent=1, default=float))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = np.arange(STEPS + 1) * DT
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(t, true_mean, "k-", lw=2, label=f"direct 16x ({len(truth[FACTOR])} runs)")
    ax[0].fill_between(t, true_mean - truth[FACTOR].std(0), true_mean + truth[FACTOR].std(0), color="k", alpha=0.15)
    ax[0].plot(t, sample, "k:", label="the filmed sample (4x, one quench)")
    ax[0].plot(t, runs["truth_start"][0].mean(0), "C1-", label="macro SDE from video (upsampled, model patches)")
    ax[0].plot(t, runs["own_start"][0].mean(0), "C1--", label="the same from its own first snapshot")
    ax[0].plot(t, zb.mean(0), "C2-", label="particle truth: block states")
    ax[0].plot(t, zn.mean(0), "C3--", label="particle truth: naive")
    ax[0].set_xlabel("time (frames)")
    ax[0].set_ylabel("mean |psi6|")
    ax[0].legend(fontsize=7)
    ax[1].plot(t[1:], truth[FACTOR].var(0)[1:], "k-", label="direct 16x")
    ax[1].plot(t[1:], truth[4].var(0)[1:], "k--", label="direct 4x")
    ax[1].plot(t[1:], runs["truth_start"][0].var(0)[1:], "C1-", label="SDE from video 16x")
    ax[1].plot(t[1:], runs["truth_start"][1].var(0)[1:], "C1--", label="SDE from video 4x")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("time (frames)")
    ax[1].set_ylabel("variance over runs")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"video_{args.video_seed}.png", dpi=110)
    plt.close(fig)
    tr = res["tracking"]
    print(f"## chain from video (seed {args.video_seed}; field of view {video.fov_px} px, ~"
          f"{res['video']['visible_per_frame']:.0f} particles; sample {video.sample_px:g} px, {video.n_sample})\n")
    print(f"tracking: {tr['rms_error_per_axis_px']:.3f} px per axis, recall {tr['recall']:.3f}, precision "
          f"{tr['precision']:.3f}; seconds {', '.join(f'{k} {v:.0f}' for k, v in chain.seconds.items())}\n")
    print("| ensemble-mean psi6 against the direct 16x runs | relative MSE | var 4x / 16x | var 16x / direct |")
    print("|---|---|---|---|")
    for k in ("truth_start", "own_start"):
        r = res[k]
        print(f"| video chain, SDE from {k.replace('_', ' ')} (z0 {r['z0']:.3f}) | {r['relmse']:.2e} | "
              f"{r['var_ratio_4x_over_16x']:.2f} | {r['var_ratio_16x_direct']:.2f} |")
    ref = res["reference"]
    print(f"| particle truth, block states (fit seed 0) | {ref['relmse_block']:.2e} | | |")
    print(f"| particle truth, naive (fit seed 0) | {ref['relmse_naive']:.2e} | | |")
    print(f"| the filmed sample's own psi6 (one quench) | {ref['relmse_video_sample_psi6']:.2e} | | |")
    print(f"| video snapshots, patches evolved with the truth dynamics | "
          f"{res['truth_dynamics_on_video_snapshots']['relmse']:.2e} | | |")
    print(f"\nupsampled snapshots' psi6 minus the filmed sample's (frames {DT}-{STEPS * DT}, mean): "
          f"{res['snapshots_minus_sample']:+.3f}")
    return res


def stage_video_block(args, cache: Path, out: Path, truth, z_start, tile_area):
    """Block states from video: --fields quenches, each filmed in its own field of view
    (the same system and window as --stage video; frames 0, DT, ... only), located with
    colloidcg's tracking (parameters estimated on the first, then reused), psi6 averaged
    over the particles at least 24 px (1.5 diameters) inside each field of view. Block
    states of K = FACTOR fields of view, lambda = K, against the naive SDE of the same
    fields' own increments (lambda = 1), --fit-seeds fits each; run for the 16x system
    (1024 particles' area) from the same start and compared with the same direct runs."""
    from tqdm.auto import tqdm

    from colloidcg.scaling.macro import block_pairs, fit_sde
    from colloidcg.scaling.video_chain import interior_psi6, quench_video
    from colloidcg.tracking import track
    edge = 1.5 * DIAM
    tag = f"{args.fields}" if args.field_sample == 4 else f"{args.fields}_sample{args.field_sample}"
    path = cache / f"video_fields_{tag}.npz"
    if path.is_file():
        d = np.load(path)
        z, n, window = d["z"], d["n"], float(d["window"])
    else:
        z, n, params, window = [], [], None, None
        for k in tqdm(range(args.fields), desc="fields of view"):
            v = quench_video(n_fov=N_SMALL, frames=STEPS * DT + 1, seed=5000 + k, area_fraction=PHI, diameter=DIAM,
                             diffusion=D0, kT=KT, substeps=SUBSTEPS, render_every=DT,
                             sample_factor=args.field_sample)
            tr = track(v.frames, params=params, progress=False)
            params = tr.params if params is None else params
            f, zz, nn = interior_psi6(tr.tracks, edge)
            if len(f) != STEPS + 1:
                raise SystemExit(f"field {k}: psi6 in {len(f)} of {STEPS + 1} frames")
            z.append(zz)
            n.append(nn)
            window = float(v.fov_px)
        z, n = np.array(z), np.array(n)
        np.savez(path, z=z, n=n, window=window)
    inner_area = (window - 2 * edge) ** 2
    big_area = FACTOR * tile_area        # the direct 16x system's area
    true_mean = truth[FACTOR].mean(0)
    res = {"fields": args.fields, "sample_factor": args.field_sample, "edge_px": edge, "window_px": window,
           "interior_area_px2": inner_area,
           "particles_averaged_per_field": float(n[:, 1:].mean()),
           "fields_mean_vs_direct": relmse(z.mean(0), true_mean), "block": [], "naive": []}
    zb_all, zn_all = [], []
    fast = None
    if args.fast_part:     # the block state's fast part (thermal and localisation noise alike)
        from colloidcg.scaling.macro import fast_variance
        fast = fast_variance(z[..., None], n.astype(float)) / FACTOR
        res["fast_variance_field"] = float(fast[0] * FACTOR)
    for fs in range(args.fit_seeds):
        latent = None
        if args.latent:
            from colloidcg.scaling.latent import block_paths
            latent = block_paths(z[..., None], n.astype(float), blocks=FACTOR, repeats=args.block_sets, seed=fs)
            bz0, bz1 = latent.pairs()
        else:
            bz0, bz1 = block_pairs(z[..., None], n.astype(float), blocks=FACTOR, sets_per_step=args.block_sets,
                                   seed=fs)
        b_sde, _ = fit_sde(bz0, bz1, dt=DT, names=["psi6"], lam=float(FACTOR), area_px2=FACTOR * inner_area,
                           tile_area_px2=inner_area, start=z_start, seed=fs, fast_var=fast, latent=latent)
        zb = b_sde.simulate(steps=STEPS, runs=args.sde_runs, area_px2=big_area, z0=z_start, seed=fs)[..., 0]
        nz0, nz1 = z[:, :-1].reshape(-1, 1), z[:, 1:].reshape(-1, 1)
        n_sde, _ = fit_sde(nz0, nz1, dt=DT, names=["psi6"], lam=1.0, area_px2=inner_area, tile_area_px2=inner_area,
                           start=z_start, seed=fs)
        zn = n_sde.simulate(steps=STEPS, runs=args.sde_runs, area_px2=big_area, z0=z_start, seed=fs)[..., 0]
        res["block"].append(relmse(zb.mean(0), true_mean))
        res["naive"].append(relmse(zn.mean(0), true_mean))
        zb_all.append(zb)
        zn_all.append(zn)
    zb4 = b_sde.simulate(steps=STEPS, runs=args.sde_runs, area_px2=big_area / 4, z0=z_start, seed=7)[..., 0]
    res["median_block"] = float(np.median(res["block"]))
    res["median_naive"] = float(np.median(res["naive"]))
    res["ratio_of_medians"] = res["median_naive"] / res["median_block"]
    res["bagged_block"] = relmse(np.mean([a.mean(0) for a in zb_all], 0), true_mean)
    res["bagged_naive"] = relmse(np.mean([a.mean(0) for a in zn_all], 0), true_mean)
    v16 = float(np.mean(zb_all[-1][:, 5:].var(0)))
    res["var_4x_over_16x_last_fit"] = float(np.mean(zb4[:, 5:].var(0))) / v16
    res["var_16x_over_direct_last_fit"] = v16 / float(np.mean(truth[FACTOR][:, 5:].var(0)))
    (out / f"video_fields_{tag}{'_fast' if args.fast_part else ''}{'_latent' if args.latent else ''}.json").write_text(
        json.dumps(res, indent=1, default=float))
    print(f"## block states from {args.fields} fields of view of samples {args.field_sample}x their area "
          f"(interior {window - 2 * edge:.0f} px, "
          f"~{res['particles_averaged_per_field']:.0f} particles each)\n")
    print("| fit seed | block states, lambda = K | naive (the fields' own increments) |")
    print("|---|---|---|")
    for k, (a, b) in enumerate(zip(res["block"], res["naive"])):
        print(f"| {k} | {a:.2e} | {b:.2e} |")
    print(f"| median | {res['median_block']:.2e} | {res['median_naive']:.2e} |")
    print(f"| bagged | {res['bagged_block']:.2e} | {res['bagged_naive']:.2e} |")
    print(f"\nratio of medians {res['ratio_of_medians']:.2f}; the fields' own mean against the direct runs "
          f"{res['fields_mean_vs_direct']:.2e}; block variance 4x / 16x {res['var_4x_over_16x_last_fit']:.2f}, "
          f"16x / direct {res['var_16x_over_direct_last_fit']:.2f}")
    return res


#: --stage block-curve: small systems of l/2, l and 2l (particles), the same 4096 particles of
#: training quenches for each (n_traj = 4096 / n), and the lambdas of the sweep at l: 1, K/4,
#: K/2, K, 2K
CURVE_SIZES = (16, 64, 256)
CURVE_LAMBDAS = (1.0, FACTOR / 4, FACTOR / 2, FACTOR, 2 * FACTOR)


def stage_block_curve(args, cache: Path, enc, z_start, truth, small_states, tile_area):
    """The issue's item 4 on block states, the chain that meets the mean target: a lambda
    sweep (1, K/4, K/2, K, 2K) with the small systems of side l (``small_states``, 64
    particles, K = 16), and small systems of side l/2, l and 2l (16, 64, 256 particles;
    K = 64, 16, 4; 256, 64 and 16 quenches, 4096 particles each, seeds 50 000 +
    --small-seed + r for the new sizes), lambda = K. Every SDE is a bag as ``macro train``
    fits by default (``--fit-seeds`` members, bag seed 0), run ``--sde-runs`` times for the
    16x system (1024 particles) from ``z_start`` and compared with the 20 direct runs: the
    relative MSE of the ensemble mean, and the variance across runs over macro steps 5-30
    against the direct runs'. The naive SDE (whole small-system increments, lambda = 1,
    bagged alike) for each size beside it."""
    from tqdm.auto import tqdm

    from colloidcg.scaling.macro import block_increments, fit_bagged, trajectory_increments
    from colloidcg.scaling.simulators import MicroState
    runs = truth[FACTOR]
    true_mean, var_direct = runs.mean(0), float(np.mean(runs[:, 5:].var(0)))
    states = {N_SMALL: (small_states, tile_area)}

    def states_of(n):
        if n not in states:
            pos = stage_small(cache, (N_SMALL * args.small) // n, 50_000 + args.small_seed, n=n)
            side = side_for(n)
            states[n] = ([[MicroState(p, np.full(n, DIAM), np.array([side, side]), np.arange(n), None, None)
                           for p in traj] for traj in pos], side * side)
        return states[n]

    # (small-system particles, lambda, None for the naive SDE): the sweep at l, then l/2 and 2l
    jobs = ([(N_SMALL, None)] + [(N_SMALL, lam) for lam in CURVE_LAMBDAS]
            + [(n, lam) for n in CURVE_SIZES if n != N_SMALL for lam in (N_SMALL * FACTOR / n, None)])
    rows = []
    t0 = time.perf_counter()
    for n, lam in tqdm(jobs, desc="block curve"):
        sts, area = states_of(n)
        K = N_SMALL * FACTOR // n
        common = dict(dt=DT, names=enc.names, tile_area_px2=area, start=z_start, fits=int(args.fit_seeds), seed=0)
        if lam is None:
            sde, _ = fit_bagged(trajectory_increments(enc, sts), lam=1.0, area_px2=area, **common)
        else:
            z_sts = np.array([[enc.whole(st) for st in t] for t in sts]) if args.latent else None

            def draw(s, sts=sts, K=K, z_sts=z_sts):
                if args.latent:
                    from colloidcg.scaling.latent import block_paths
                    return block_paths(z_sts, blocks=K, repeats=args.block_sets, seed=s)
                return block_increments(enc, sts, blocks=K, sets_per_step=args.block_sets, seed=s,
                                        smooth=args.smooth_state)
            sde, _ = fit_bagged(draw, lam=float(lam), area_px2=K * area, fast_var=fast_var_for(args, enc, sts, K),
                                **common)
        z = sde.simulate(steps=STEPS, runs=args.sde_runs, factor=K, z0=z_start, seed=0)[..., 0]
        rows.append({"n_small": n, "K": K, "lambda": "naive (1)" if lam is None else float(lam),
                     "relmse": relmse(z.mean(0), true_mean),
                     "var_over_direct": float(np.mean(z[:, 5:].var(0)) / var_direct)})
    return {"rows": rows, "members_per_bag": int(args.fit_seeds), "sde_runs": args.sde_runs,
            "block_sets": args.block_sets, "seconds": time.perf_counter() - t0}


def print_block_curve(res):
    print(f"\n## block states: lambda sweep and small-system size ({res['members_per_bag']} fits per bag, "
          f"{res['sde_runs']} SDE runs, against the direct 16x runs)\n")
    print("| small system (particles) | K | lambda | relative MSE of the mean | variance / direct runs' |")
    print("|---|---|---|---|---|")
    for r in res["rows"]:
        lam = r["lambda"] if isinstance(r["lambda"], str) else f"{r['lambda']:g}"
        print(f"| {r['n_small']} | {r['K']} | {lam} | {r['relmse']:.2e} | {r['var_over_direct']:.2f} |")


def print_block(block, n_small):
    print(f"| {len(block['relmse'])} fit seeds, {n_small} small quenches | block states, periodic patches, "
          "lambda = K | naive | naive / block |")
    print("|---|---|---|---|")
    for k, (a, b) in enumerate(zip(block["relmse"], block["relmse_naive"])):
        print(f"| seed {k} | {a:.2e} | {b:.2e} | {b / a:.1f} |")
    print(f"| median | {block['median_relmse']:.2e} | {block['median_relmse_naive']:.2e} | "
          f"{block['ratio_of_medians']:.1f} |")
    print(f"| block SDE variance 4x / 16x | {', '.join(f'{v:.2f}' for v in block['var_ratio_4x_over_16x'])} | "
          f"16x / direct | {', '.join(f'{v:.2f}' for v in block['var_ratio_16x_direct'])} |\n")


def seam_table(small_pos, truth, samples=3, seed=1, seam_overlaps="reinsert", tiling="random"):
    """Why upsampled states mislead the SDE: for tiles of several times, the tiles' own psi6,
    the upsampled snapshots' psi6 (random symmetries as in :func:`upsampled`, or every tile's
    symmetry chosen to match a common psi6 orientation; 2 or 25 frames of relaxation; overlaps
    at the seams resolved by ``seam_overlaps``, :func:`place`), split into the band within
    one diameter of a seam and the rest beyond two diameters, beside the direct 16x runs'
    mean at that time, and their ordering rate over one whole-system macro step, beside the
    direct 16x runs' rate at the same psi6. With ``tiling="matched"`` the rows are random
    and registry-matched tiling (colloidcg.scaling.match_parts), 2 and 25 frames, the same
    small quenches. Prints a markdown table; returns its rows."""
    from colloidcg.scaling.observables import psi6_local
    from colloidcg.scaling.partial import full_step
    from colloidcg.scaling.simulators import MicroState, derive_key
    from colloidcg.scaling.upsample import Configuration, match_parts
    side = side_for(N_SMALL)
    box = np.array([side, side])
    m = int(round(math.sqrt(FACTOR)))
    closest, push = seam_approaches(small_pos)
    curve = truth[FACTOR].mean(0)
    zz, rate = 0.5 * (curve[1:] + curve[:-1]), np.diff(curve) / DT
    order = np.argsort(zz)
    syms = [(p, f) for p in ([0, 1], [1, 0]) for f in ([0, 0], [0, 1], [1, 0], [1, 1])]

    def apply(pos, p, f):
        q = pos[:, p].copy()
        f = np.array(f, bool)
        q[:, f] = box[f] - q[:, f]
        return np.mod(q, box)

    def lift(t, rng, align, relax):
        target = rng.uniform(0, 2 * np.pi)
        matched = align in ("matched", "oriented")
        rotate = align == "oriented"
        align = align is True
        parts = []
        for i in rng.choice(len(small_pos), m * m, replace=len(small_pos) < m * m):
            pos = np.mod(small_pos[i, t] + rng.uniform(0, 1, 2) * box, box)
            if align:      # the symmetry whose global psi6 phase is nearest the common target
                cands = [apply(pos, p, f) for p, f in syms]
                mis = [abs(np.angle(np.exp(1j * (np.angle(psi6_local(q, box).mean()) - target)))) for q in cands]
                pos = cands[int(np.argmin(mis))]
            else:
                pos = apply(pos, *syms[rng.integers(len(syms))])
            parts.append(Configuration(pos, np.zeros((N_SMALL, 2)), None, box, np.full(N_SMALL, np.inf)))
        if matched:
            parts, _ = match_parts(parts, m, rng, rotate=rotate)
        pos, _, big = place(parts, m, rng, closest, push, seam_overlaps)
        st = MicroState(pos, np.full(len(pos), DIAM), big, np.arange(len(pos)), None, None)
        return full_step(simulator(), st, relax, derive_key(77, t, int(rng.integers(1 << 30))))

    rng = np.random.default_rng(seed)
    rows = []
    print("| tiles | relaxation, frames | time, frames | tiles' psi6 | upsampled psi6 (SE) | within a diameter "
          "of a seam | beyond two diameters | direct 16x psi6 | its rate, 1e-4/frame | direct 16x rate at that psi6 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    modes = (((False, 2), (True, 2), (False, 25)) if tiling == "random"
             else ((False, 2), (tiling, 2), (False, 25), (tiling, 25)))
    for align, relax in modes:
        for t in (2, 4, 8, 12, 20, 28):
            z_tiles = float(np.mean([np.abs(psi6_local(np.mod(p, box), box)).mean() for p in small_pos[:, t]]))
            z, d, band, bulk = [], [], [], []
            for k in range(samples):
                st = lift(t, rng, align, relax)
                p6 = np.abs(psi6_local(st.pos, st.box))
                a = p6.mean()
                u = np.mod(st.pos, side)
                dist = np.min(np.minimum(u, side - u), axis=1)
                band.append(p6[dist < DIAM].mean())
                bulk.append(p6[dist >= 2 * DIAM].mean())
                b = full_step(simulator(), st, DT, derive_key(5, t, k))
                z.append(a)
                d.append((np.abs(psi6_local(b.pos, b.box)).mean() - a) / DT)
            zl = float(np.mean(z))
            name = align if align in ("matched", "oriented") else ("aligned" if align else "random")
            row = {"tiling": name, "aligned": align is True, "relax": relax, "t_frames": t * DT, "psi6_tiles": z_tiles,
                   "psi6_upsampled": zl, "psi6_upsampled_se": float(np.std(z, ddof=1) / math.sqrt(samples)),
                   "psi6_seam_band": float(np.mean(band)), "psi6_beyond_two_diameters": float(np.mean(bulk)),
                   "psi6_direct_16x": float(curve[t]),
                   "rate": float(np.mean(d)), "rate_se": float(np.std(d) / math.sqrt(samples)),
                   "rate_direct_16x": float(np.interp(zl, zz[order], rate[order]))}
            rows.append(row)
            print(f"| {name} | {relax} | {t * DT} | {z_tiles:.3f} | {zl:.3f} ({row['psi6_upsampled_se']:.3f}) | "
                  f"{row['psi6_seam_band']:.3f} | {row['psi6_beyond_two_diameters']:.3f} | {curve[t]:.3f} | "
                  f"{row['rate'] * 1e4:.1f} +- {row['rate_se'] * 1e4:.1f} | {row['rate_direct_16x'] * 1e4:.1f} |",
                  flush=True)
    summary = {}
    for name, relax in {(r["tiling"], r["relax"]) for r in rows}:
        sel = [r for r in rows if r["tiling"] == name and r["relax"] == relax]
        summary[f"{name}_{relax}"] = {
            "band_minus_beyond": float(np.mean([r["psi6_seam_band"] - r["psi6_beyond_two_diameters"] for r in sel])),
            "upsampled_minus_tiles": float(np.mean([r["psi6_upsampled"] - r["psi6_tiles"] for r in sel])),
            "upsampled_minus_direct_16x": float(np.mean([r["psi6_upsampled"] - r["psi6_direct_16x"] for r in sel]))}
    print("\n| tiling, relaxation | band minus beyond two diameters | upsampled minus tiles | upsampled minus direct 16x |")
    print("|---|---|---|---|")
    for key, v in sorted(summary.items()):
        print(f"| {key} | {v['band_minus_beyond']:+.4f} | {v['upsampled_minus_tiles']:+.4f} | "
              f"{v['upsampled_minus_direct_16x']:+.4f} |")
    return {"rows": rows, "summary": summary}


def seam_causes(small_pos, t=28, samples=4, seed=3):
    """What the oriented tiling's seam band is made of, at macro step ``t`` (700 frames):
    snapshots of 4 x 4 tiles (no relaxation) under matched and oriented tiling (32 and 128
    candidates), oriented tiling of 16 copies of one tile, and oriented tiling without the
    overlap treatment. Per row the mean |psi6| of the snapshot, of the band within one
    diameter of a seam and of the region beyond two diameters, and the particle count,
    means over ``samples`` snapshots. Prints a markdown table; returns its rows."""
    from colloidcg.scaling.observables import psi6_local
    from colloidcg.scaling.upsample import Configuration, _transform, match_parts, tile_configurations
    side = side_for(N_SMALL)
    box = np.array([side, side])
    m = int(round(math.sqrt(FACTOR)))
    closest, push = seam_approaches(small_pos)
    tiles = float(np.mean([np.abs(psi6_local(np.mod(p, box), box)).mean() for p in small_pos[:, t]]))

    def snap(rng, candidates, rotate, same=False, treat=True):
        pick = rng.choice(len(small_pos), m * m, replace=len(small_pos) < m * m)
        if same:
            pick = [pick[0]] * (m * m)
        parts = [_transform(Configuration(np.mod(small_pos[i, t], box), np.zeros((N_SMALL, 2)), None, box,
                                          np.full(N_SMALL, np.inf)), rng) for i in pick]
        parts, _ = match_parts(parts, m, rng, candidates=candidates, rotate=rotate)
        if treat:
            pos, _, big = place(parts, m, rng, closest, push, "reinsert")
        else:
            cfg, _, _ = tile_configurations(parts, m)
            pos, big = cfg.pos, cfg.box
        p6 = np.abs(psi6_local(pos, big))
        u = np.mod(pos, side)
        dist = np.min(np.minimum(u, side - u), axis=1)
        return p6.mean(), p6[dist < DIAM].mean(), p6[dist >= 2 * DIAM].mean(), len(pos)

    cases = [("matched, 32 candidates", dict(candidates=32, rotate=False)),
             ("oriented, 32 candidates", dict(candidates=32, rotate=True)),
             ("oriented, 128 candidates", dict(candidates=128, rotate=True)),
             ("oriented, 16 copies of one tile", dict(candidates=32, rotate=True, same=True)),
             ("oriented, no overlap treatment", dict(candidates=32, rotate=True, treat=False))]
    print(f"\n| tiling (t = {t * DT} frames, tiles' psi6 {tiles:.3f}, {samples} snapshots each) | snapshot psi6 | "
          "within a diameter of a seam | beyond two diameters | particles |")
    print("|---|---|---|---|---|")
    rows = []
    for name, kw in cases:
        rng = np.random.default_rng(seed)
        r = np.array([snap(rng, **kw) for _ in range(samples)]).mean(0)
        rows.append({"case": name, "psi6": r[0], "band": r[1], "beyond": r[2], "particles": r[3],
                     "tiles": tiles, "t_frames": t * DT})
        print(f"| {name} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.0f} |", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("truth", "block", "block-curve", "ensemble", "bagging", "diagnose", "horizon",
                                        "seams", "video", "video-block", "seam-causes", "all"),
                    default="all",
                    help="truth: the direct runs only; block: the block states and the naive baseline only; "
                         "seams: the upsampled snapshots' psi6 and ordering rate against their tiles' and the "
                         "direct runs'; ensemble: block SDE fits bagged (averaged) against single fits, "
                         "(--ensemble-sets block states per macro step); video: the chain from a tracked video "
                         "(render, track, train, colloidcg macro train) against the same direct runs; "
                         "video-block: block states from --fields filmed fields of view; diagnose: where the "
                         "bagged block SDE's error comes from (drift or diffusion, training mean or SDE); "
                         "horizon: the bag with the multi-step drift (--horizons) against the naive baseline; "
                         "seam-causes: oriented seams at 700 frames with more candidates, copies of one tile and "
                         "no overlap treatment; block-curve: block states' lambda sweep and small systems of l/2, "
                         "l and 2l")
    ap.add_argument("--small-seed", type=int, default=0, help="the small quenches' seeds start here")
    ap.add_argument("--bag-seeds", default="0", help="--stage horizon: comma-separated seeds of the bags "
                    "(member k of the bag with seed b: seed b + k)")
    ap.add_argument("--horizons", default="0,8", help="--stage horizon: comma-separated horizons H of the "
                    "multi-step drift, macro steps (0: the one-step likelihood's drift; auto: chosen by "
                    "cross-validation over the small quenches, colloidcg.scaling.horizon)")
    ap.add_argument("--choice-only", action="store_true", help="--stage horizon with auto in --horizons: only "
                    "choose H (colloidcg.scaling.horizon.choose_horizon), fit no bags")
    ap.add_argument("--video-seed", type=int, default=1, help="--stage video: seed of the filmed quench")
    ap.add_argument("--video-epochs", type=int, default=6, help="--stage video: the model's training epochs")
    ap.add_argument("--ensemble-sets", default="8", help="--stage ensemble: block states per macro step, "
                    "comma-separated (one block SDE per value and fit seed)")
    ap.add_argument("--fields", type=int, default=32, help="--stage video-block: filmed quenches (fields of view)")
    ap.add_argument("--field-sample", type=int, default=4, help="--stage video-block: the filmed periodic sample's "
                    "area over the field of view's (a square number)")
    ap.add_argument("--fresh", action="store_true", help="--stage video: redo the chain even when it is cached")
    ap.add_argument("--fresh-macro", action="store_true", help="--stage video: keep the cached tracks and model, "
                    "redo colloidcg macro train (its upsampling and patches)")
    ap.add_argument("--cache", default="/tmp/colloidcg_macro_cache")
    ap.add_argument("--out", default="benchmarks/results/macro")
    ap.add_argument("--runs", type=int, default=20, help="direct simulations per size")
    ap.add_argument("--small", type=int, default=64, help="small quench trajectories")
    ap.add_argument("--small-steps", type=int, default=STEPS, dest="small_steps",
                    help="macro steps of each small quench (the large system is compared over "
                         f"{STEPS}); longer quenches give the chain's snapshots the older, more ordered "
                         "tiles that seams pull below the large system's late psi6")
    ap.add_argument("--bags", type=int, default=3, help="--stage bagging: independent bags of --fit-seeds fits")
    ap.add_argument("--fit-seeds", type=int, default=5,
                    help="SDE fits (network seeds and validation splits) for the block states and the naive baseline")
    ap.add_argument("--block-sets", type=int, default=8, help="block states drawn per macro step")
    ap.add_argument("--samples", type=int, default=3, help="upsampled snapshots per macro step")
    ap.add_argument("--patches", type=int, default=4, help="patches per upsampled snapshot")
    ap.add_argument("--buffer", type=float, default=BUFFER, help="mobile buffer around each patch, px")
    ap.add_argument("--closure", type=int, default=0, help="learned closure variables")
    ap.add_argument("--observables", default="psi6",
                    help="evolved observables, psi6 first (the compared one); e.g. psi6,ordered_fraction")
    ap.add_argument("--seam-overlaps", choices=("reinsert", "push"), default="reinsert",
                    help="pairs placed too close across a seam of an upsampled snapshot: 'reinsert' (colloidcg "
                         "upsample's default: one of the pair moves to the largest gap on its own side) or 'push' "
                         "(pushed apart: this benchmark's treatment until session 17)")
    ap.add_argument("--refine-relax", type=int, default=10, dest="refine_relax",
                    help="--tiling refine: frames of truth relaxation after each doubling")
    ap.add_argument("--tiling", choices=("random", "matched", "oriented", "refine"), default="random",
                    help="upsampled snapshots: tiles placed with random symmetries and shifts (default) or "
                         "'matched' (colloidcg.scaling.match_parts: each tile after the first the best of 32 "
                         "symmetries and registry shifts by |psi6| along its seams); --stage seams: 'matched' "
                         "adds matched rows beside the random ones; 'refine': from the macro step where the small "
                         "boxes' median order coherence reaches REFINE_COHERENCE, one small snapshot refined twice "
                         "(refine_periodic, --refine-relax frames after each doubling), oriented tiles before")
    ap.add_argument("--chain-bags", type=int, default=0, dest="chain_bags",
                    help="default stage: also fit the chain's SDE (patch l) and the naive one as this many bags "
                         "of 10 bootstrap fits each (colloidcg macro train's default fit)")
    ap.add_argument("--chain-fits", type=int, default=1, dest="chain_fits",
                    help="default stage: also fit the chain's SDE (patch l) and the naive one with this many "
                         "seeds and report their medians")
    ap.add_argument("--relax", type=int, default=RELAX, help="frames of truth relaxation of each upsampled snapshot")
    ap.add_argument("--sde-runs", type=int, default=200)
    ap.add_argument("--smooth-state", action="store_true", dest="smooth_state",
                    help="--stage bagging, block-curve with --fast-part: block states conditioned on their "
                         "three-point mean (macro train --smooth-state; results *_fast_smooth.json)")
    ap.add_argument("--bootstrap-only", action="store_true", dest="bootstrap_only",
                    help="--stage bagging: skip the bags without the bootstrap (half the cost)")
    ap.add_argument("--latent", action="store_true",
                    help="--stage bagging, block-curve, video-block: block states fitted by the latent-state "
                         "likelihood, as `macro train --states block` does by default since session 44 "
                         "(colloidcg.scaling.latent; needs --fast-part; results *_latent.json)")
    ap.add_argument("--fast-part", action="store_true", dest="fast_part",
                    help="--stage bagging, block-curve, video-block: block fits keep z's fast part out of sigma, as "
                         "`macro train --states block` does by default since session 43 (results *_fast.json)")
    ap.add_argument("--patch-mults", default="0.5,1,2", help="patch sides in units of the small box's side")
    args = ap.parse_args(argv)
    if args.smooth_state and not args.fast_part:
        raise SystemExit("--smooth-state: needs --fast-part (the smoothing is what the fast part calls for)")
    if args.latent and (not args.fast_part or args.smooth_state):
        raise SystemExit("--latent: needs --fast-part (the filter's observation noise) and excludes --smooth-state")
    import torch
    torch.set_num_threads(1)
    cache, out = Path(args.cache), Path(args.out)
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    truth = stage_truth(cache, args.runs)
    if args.stage == "truth":
        return 0
    from colloidcg.scaling.macro import (Encoder, fit_sde, partial_increments, patch_only_increments,
                                         trajectory_increments)
    from colloidcg.scaling.partial import partial_evolution
    from colloidcg.scaling.simulators import MicroState
    small_pos = stage_small(cache, args.small, args.small_seed, args.small_steps)
    if args.stage == "seam-causes":
        rows = seam_causes(small_pos)
        (out / f"seam_causes_{args.small}.json").write_text(json.dumps(rows, indent=1, default=float))
        return 0
    if args.stage == "seams":
        rows = seam_table(small_pos, truth, samples=args.samples, seam_overlaps=args.seam_overlaps,
                          tiling=args.tiling)
        name = "seams.json" if args.seam_overlaps == "push" else f"seams_{args.seam_overlaps}.json"
        if args.tiling != "random":
            name = name.replace(".json", f"_{args.tiling}_{args.small}" + ("" if args.small_seed == 0 else
                                                                     f"_from_{args.small_seed}") + ".json")
        (out / name).write_text(json.dumps(rows, indent=1))
        return 0
    side = side_for(N_SMALL)
    tile_area = side * side
    big_area = FACTOR * tile_area
    rng = np.random.default_rng(5)
    t0 = time.perf_counter()
    snaps, snap_t = [], []
    # block, ensemble, video stages: only the start, for z_start
    refine_start = refine_from(small_pos) if args.tiling == "refine" else None
    for t in range(1 if args.stage in ("block", "block-curve", "ensemble", "bagging", "diagnose", "horizon", "video",
                                       "video-block")
                   else args.small_steps):
        for s in upsampled(small_pos, t, args.samples, rng, relax=args.relax, seam_overlaps=args.seam_overlaps,
                           tiling=args.tiling, refine_relax=args.refine_relax, refine_start=refine_start):
            snaps.append(s)
            snap_t.append(t)
    t_up = time.perf_counter() - t0
    obs_names = [n.strip() for n in args.observables.split(",") if n.strip()]
    if obs_names[0] != "psi6":
        raise SystemExit("--observables: psi6 must come first (it is the one compared with the direct runs)")
    enc = Encoder(obs_names)
    results = {"parameters": {"phi": PHI, "kT": KT, "D0": D0, "substeps": SUBSTEPS, "diameter_px": DIAM,
                              "n_small": N_SMALL, "factor": FACTOR, "dt_frames": DT, "steps": STEPS,
                              "direct_runs": args.runs, "small_trajectories": args.small,
                              "upsampled_per_step": args.samples, "patches_per_snapshot": args.patches,
                              "sde_runs": args.sde_runs, "buffer_px": args.buffer, "relax_frames": args.relax,
                              "seam_overlaps": args.seam_overlaps, "tiling": args.tiling,
                              **({"refine_relax_frames": args.refine_relax, "refine_from_step": refine_start}
                                 if args.tiling == "refine" else {}),
                              "observables": obs_names, "small_seed": args.small_seed,
                              "fit_seeds": args.fit_seeds, "block_sets": args.block_sets}}
    z_start = np.mean([enc.whole(s) for s, t in zip(snaps, snap_t) if t == 0], axis=0)
    true_mean = truth[FACTOR].mean(0)

    def evaluate(sde, factor, seed=0):
        z = sde.simulate(steps=STEPS, runs=args.sde_runs, factor=factor, z0=z_start, seed=seed)
        return z[..., 0]

    def fit(z0, z1, lam, area):
        sde, rep = fit_sde(z0, z1, dt=DT, names=enc.names, lam=lam, area_px2=area, tile_area_px2=tile_area,
                           start=z_start, seed=0)
        return sde

    small_states = [[MicroState(p, np.full(N_SMALL, DIAM), np.array([side, side]), np.arange(N_SMALL), None, None)
                     for p in traj] for traj in small_pos]
    if args.stage == "video-block":
        stage_video_block(args, cache, out, truth, z_start, tile_area)
        return 0
    if args.stage == "video":
        stage_video(args, cache, out, truth, z_start, tile_area, small_states, enc)
        return 0
    if args.stage == "ensemble":
        nz0, nz1 = trajectory_increments(enc, small_states)
        ens = ensemble_fits(args, enc, small_states, z_start, truth, tile_area, nz0, nz1,
                            sets_list=[int(x) for x in args.ensemble_sets.split(",")])
        results["ensemble"] = ens
        name = "bagged_fits.json" if args.small_seed == 0 else f"bagged_fits_from_{args.small_seed}.json"
        (out / name).write_text(json.dumps(results, indent=1, default=float))
        print_ensemble(ens, args.small, args.small_seed)
        return 0
    if args.stage == "diagnose":
        res = stage_diagnose(args, enc, small_states, z_start, truth, tile_area)
        results["diagnose"] = res
        name = f"diagnose_{args.small}" + ("" if args.small_seed == 0 else f"_from_{args.small_seed}") + ".json"
        (out / name).write_text(json.dumps(results, indent=1, default=float))
        print_diagnose(res, args.small, args.small_seed)
        return 0
    if args.stage == "horizon":
        nz0, nz1 = trajectory_increments(enc, small_states)
        res = stage_horizon(args, enc, small_states, z_start, truth, tile_area, nz0, nz1)
        results["horizon"] = res
        name = (f"horizon_{args.small}" + ("" if args.small_seed == 0 else f"_from_{args.small_seed}")
                + ("" if args.bag_seeds == "0" else "_bags_" + args.bag_seeds.replace(",", "_"))
                + ("" if "auto" not in args.horizons else "_auto" + ("_choice" if args.choice_only else ""))
                + ".json")
        (out / name).write_text(json.dumps(results, indent=1, default=float))
        print_horizon(res, args.small, args.small_seed)
        return 0
    if args.stage == "bagging":
        nz0, nz1 = trajectory_increments(enc, small_states)
        res = stage_bagging(args, enc, small_states, z_start, truth, tile_area, nz0, nz1)
        results["bagging"] = res
        name = (f"bagging_{args.small}" + ("" if args.small_seed == 0 else f"_from_{args.small_seed}")
                + ("_fast" if args.fast_part else "") + ("_smooth" if args.smooth_state else "")
                + ("_latent" if args.latent else "") + ".json")
        (out / name).write_text(json.dumps(results, indent=1, default=float))
        print_bagging(res, args.small, args.small_seed)
        return 0
    if args.stage == "block-curve":
        res = stage_block_curve(args, cache, enc, z_start, truth, small_states, tile_area)
        results["block_curve"] = res
        name = (f"block_curve_{args.small}" + ("" if args.small_seed == 0 else f"_from_{args.small_seed}")
                + ("_fast" if args.fast_part else "") + ("_smooth" if args.smooth_state else "")
                + ("_latent" if args.latent else "") + ".json")
        (out / name).write_text(json.dumps(results, indent=1, default=float))
        print_block_curve(res)
        return 0
    if args.stage == "block":
        nz0, nz1 = trajectory_increments(enc, small_states)
        block, _ = block_states(args, enc, small_states, z_start, truth, tile_area, nz0, nz1)
        results["block"] = block
        (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
        print_block(block, args.small)
        return 0
    # partial evolution at l/2, l, 2l
    patch_rows = {}
    sdes = {}
    inc = {}
    mults = [float(x) for x in args.patch_mults.split(",")]
    for mult in mults:
        l = mult * side
        t0 = time.perf_counter()
        steps = partial_evolution(simulator(), snaps, patch=l, steps=DT, patches_per_snapshot=args.patches,
                                  buffer=args.buffer, seed=11, progress=True)
        t_pe = time.perf_counter() - t0
        if args.closure and mult == 1.0:
            from colloidcg.scaling.closure import local_features, mean_spacing, train_closure
            spacing = mean_spacing(snaps[-1])
            obs = Encoder(obs_names)
            a = np.array([obs.patch(ps.before, ps.inner_mask) for ps in steps])
            b = np.array([obs.patch(ps.after, ps.inner_mask) for ps in steps])
            feats = [local_features(ps.before, spacing)[ps.inner_mask] for ps in steps]
            closure, crep = train_closure(feats, a, b - a, n_closure=args.closure, spacing=spacing, progress=True)
            results["closure_training"] = crep
            enc = Encoder(obs_names, closure)
            z_start = np.mean([enc.whole(s) for s, t in zip(snaps, snap_t) if t == 0], axis=0)
        z0, z1 = partial_increments(enc, snaps, steps)
        K = steps[0].n_patches
        inc[mult] = (z0, z1, K)
        if mult == 1.0:
            rz0, rz1 = patch_only_increments(enc, snaps, steps)
        sde = fit(z0, z1, K, big_area)
        sdes[mult] = sde
        z = evaluate(sde, FACTOR)
        patch_rows[mult] = {"patch_px": l, "K": K, "relmse": relmse(z.mean(0), true_mean),
                            "var_ratio_16x": float(np.mean(z[:, 5:].var(0)) / np.mean(truth[FACTOR][:, 5:].var(0))),
                            "seconds_partial": t_pe}
    # naive: whole small-system increments, lambda = 1
    nz0, nz1 = trajectory_increments(enc, small_states)
    naive = fit(nz0, nz1, 1.0, tile_area)
    zn = evaluate(naive, FACTOR)
    # the reference's own naive baseline (Chen et al.'s code): the same snapshots and
    # patches, z1 = phi(x1, I) without the partial-evolution correction, lambda = 1, its
    # noise (a patch's) used unscaled on the large system
    naive_ref = fit(rz0, rz1, 1.0, big_area)
    zr = evaluate(naive_ref, FACTOR)
    block, zb_first = block_states(args, enc, small_states, z_start, truth, tile_area, nz0, nz1)
    # lambda sweep at l
    z0, z1, K = inc[1.0]
    lam_rows = {}
    for name, lam in (("1", 1.0), ("K/4", K / 4), ("K/2", K / 2), ("K", K), ("2K", 2 * K)):
        sde = fit(z0, z1, lam, big_area)
        z = evaluate(sde, FACTOR)
        var_ratio = float(np.mean(z[:, 5:].var(0)) / np.mean(truth[FACTOR][:, 5:].var(0)))
        lam_rows[name] = {"lambda": lam, "relmse": relmse(z.mean(0), true_mean), "var_ratio_16x": var_ratio,
                          "log_var_error": abs(math.log(var_ratio))}
    ours = sdes[1.0]
    zo = evaluate(ours, FACTOR)
    z4 = evaluate(ours, 4, seed=1)
    var = {"pred_4x": float(np.mean(z4[:, 5:].var(0))), "pred_16x": float(np.mean(zo[:, 5:].var(0))),
           "direct_1x": float(np.mean(truth[1][:, 5:].var(0))), "direct_4x": float(np.mean(truth[4][:, 5:].var(0))),
           "direct_16x": float(np.mean(truth[FACTOR][:, 5:].var(0)))}
    var["pred_ratio_4x_over_16x"] = var["pred_4x"] / var["pred_16x"]
    var["direct_ratio_4x_over_16x"] = var["direct_4x"] / var["direct_16x"]
    results.update({
        "relmse_ours": relmse(zo.mean(0), true_mean), "relmse_naive": relmse(zn.mean(0), true_mean),
        "relmse_naive_reference": relmse(zr.mean(0), true_mean),
        "var_ratio_16x_naive_reference": float(np.mean(zr[:, 5:].var(0)) / np.mean(truth[FACTOR][:, 5:].var(0))),
        "relmse_small_mean": relmse(truth[1].mean(0), true_mean),
        "relmse_training_small_mean": relmse(np.array([[enc.whole(st)[0] for st in traj[:STEPS + 1]]
                                                       for traj in small_states]).mean(0), true_mean),
        "block": block,
        "patch_curve": patch_rows, "lambda_sweep": lam_rows, "variance": var,
        "seconds_upsampling": t_up,
    })
    results["ratio_naive_over_ours"] = results["relmse_naive"] / results["relmse_ours"]
    results["ratio_naive_reference_over_ours"] = results["relmse_naive_reference"] / results["relmse_ours"]
    if args.chain_fits > 1:
        # the chain's SDE and the naive one fitted with seeds 0 .. chain_fits - 1 (network
        # initialisation and validation split): one fit's spread is large (single block fits
        # spread 10-fold), so the chain is compared by the median over seeds
        z0, z1, K = inc[1.0]
        per = {"ours": [], "naive": [], "naive_reference": []}
        away = {"ours": [], "naive": [], "naive_reference": []}
        for fs in range(args.chain_fits):
            for name, (a0, a1, lam, area) in (("ours", (z0, z1, K, big_area)), ("naive", (nz0, nz1, 1.0, tile_area)),
                                              ("naive_reference", (rz0, rz1, 1.0, big_area))):
                sde, _ = fit_sde(a0, a1, dt=DT, names=enc.names, lam=lam, area_px2=area, tile_area_px2=tile_area,
                                 start=z_start, seed=fs)
                zf = evaluate(sde, FACTOR, seed=fs)
                per[name].append(relmse(zf.mean(0), true_mean))
                away[name].append(int(sde.outside_data(zf[..., None]).sum()))
        results["chain_fits"] = {"relmse_ours": per["ours"], "relmse_naive": per["naive"],
                                 "runs_outside_fitted_states_ours": away["ours"],
                                 "runs_outside_fitted_states_naive": away["naive"],
                                 "median_ours": float(np.median(per["ours"])),
                                 "median_naive": float(np.median(per["naive"])),
                                 "relmse_naive_reference": per["naive_reference"],
                                 "median_naive_reference": float(np.median(per["naive_reference"])),
                                 "ratio_of_medians_reference": float(np.median(per["naive_reference"])
                                                                     / np.median(per["ours"])),
                                 "ratio_of_medians": float(np.median(per["naive"]) / np.median(per["ours"]))}
    if args.chain_bags:
        # the chain and the naive SDE as colloidcg macro train fits them by default: bags of
        # 10 bootstrap fits (colloidcg.scaling.macro.fit_bagged), bag b's members seeded
        # 1000 b + k
        from colloidcg.scaling.macro import fit_bagged
        z0, z1, K = inc[1.0]
        per = {"ours": [], "naive": [], "naive_reference": []}
        for b in range(args.chain_bags):
            for name, (a0, a1, lam, area) in (("ours", (z0, z1, K, big_area)), ("naive", (nz0, nz1, 1.0, tile_area)),
                                              ("naive_reference", (rz0, rz1, 1.0, big_area))):
                sde, _ = fit_bagged((a0, a1), fits=10, seed=1000 * b, dt=DT, names=enc.names, lam=lam,
                                    area_px2=area, tile_area_px2=tile_area, start=z_start)
                per[name].append(relmse(evaluate(sde, FACTOR, seed=b).mean(0), true_mean))
        results["chain_bags"] = {"relmse_ours": per["ours"], "relmse_naive": per["naive"],
                                 "ratio_per_bag": [n / o for n, o in zip(per["naive"], per["ours"])],
                                 "relmse_naive_reference": per["naive_reference"],
                                 "ratio_per_bag_reference": [n / o for n, o in zip(per["naive_reference"],
                                                                                   per["ours"])]}
    results["seams"] = snapshot_seams(snaps, snap_t, small_states, enc, side, true_mean)
    results_name = ("results.json" if args.tiling == "random" and args.small_seed == 0 and args.chain_fits == 1 else
                    f"results_{args.tiling}_{args.small}" + ("" if args.small_seed == 0 else f"_from_{args.small_seed}")
                    + ("" if args.small_steps == STEPS else f"_steps_{args.small_steps}")
                    + (f"_relax_{args.refine_relax}" if args.tiling == "refine" else "")
                    + (f"_samples_{args.samples}" if args.samples != 3 else "")
                    + (f"_bags_{args.chain_bags}" if args.chain_bags else "")
                    + ".json")
    (out / results_name).write_text(json.dumps(results, indent=1, default=float))
    # plots
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = np.arange(STEPS + 1) * DT
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(t, true_mean, "k-", lw=2, label=f"direct 16x ({args.runs} runs)")
    ax[0].fill_between(t, true_mean - truth[FACTOR].std(0), true_mean + truth[FACTOR].std(0), color="k", alpha=0.15)
    ax[0].plot(t, truth[1].mean(0), "k:", label="direct 1x (training size)")
    ax[0].plot(t, zo.mean(0), "C0-", label="macro SDE, upsampled states, halo patches, lambda = K")
    ax[0].plot(t, zn.mean(0), "C3--", label="naive (small increments, lambda = 1)")
    ax[0].plot(t, zr.mean(0), "C1:", label="the reference's naive (patch as whole, lambda = 1)")
    ax[0].plot(t, zb_first.mean(0), "C2-", label="macro SDE, block states (periodic patches), lambda = K")
    ax[0].set_xlabel("time (frames)")
    ax[0].set_ylabel("mean |psi6|")
    ax[0].legend(fontsize=8)
    ax[1].plot(t[1:], truth[FACTOR].var(0)[1:], "k-", label="direct 16x")
    ax[1].plot(t[1:], truth[4].var(0)[1:], "k--", label="direct 4x")
    ax[1].plot(t[1:], zo.var(0)[1:], "C0-", label="SDE 16x (upsampled, halo)")
    ax[1].plot(t[1:], z4.var(0)[1:], "C0--", label="SDE 4x (upsampled, halo)")
    ax[1].set_yscale("log")
    ax[1].plot(t[1:], zb_first.var(0)[1:], "C2-", label="SDE 16x (block states)")
    ax[1].set_xlabel("time (frames)")
    ax[1].set_ylabel("variance over runs (from the first step)")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / results_name.replace("results", "ensemble").replace(".json", ".png"), dpi=110)
    plt.close(fig)
    # tables
    print(f"## macro SDE known answer (soft disks, phi {PHI}, kT {KT}; {N_SMALL} -> {N_SMALL * FACTOR} particles)\n")
    print("| | relative MSE of the ensemble-mean psi6 against 20 direct 16x runs |")
    print("|---|---|")
    print(f"| upsampled states, halo patches, lambda = K | {results['relmse_ours']:.2e} |")
    if "chain_fits" in results:
        cf = results["chain_fits"]
        print(f"| the same, {args.chain_fits} fit seeds: median (range) | {cf['median_ours']:.2e} "
              f"({min(cf['relmse_ours']):.1e} - {max(cf['relmse_ours']):.1e}) |")
        print(f"| naive, {args.chain_fits} fit seeds: median (range) | {cf['median_naive']:.2e} "
              f"({min(cf['relmse_naive']):.1e} - {max(cf['relmse_naive']):.1e}) |")
        print(f"| ratio of medians naive / ours | {cf['ratio_of_medians']:.2f} |")
        print(f"| the reference's naive, {args.chain_fits} fit seeds: median (range) | "
              f"{cf['median_naive_reference']:.2e} ({min(cf['relmse_naive_reference']):.1e} - "
              f"{max(cf['relmse_naive_reference']):.1e}) |")
        print(f"| ratio of medians, the reference's naive / ours | {cf['ratio_of_medians_reference']:.2f} |")
        print(f"| runs (of {args.sde_runs}) leaving the fitted states, per fit: ours / naive | "
              f"{cf['runs_outside_fitted_states_ours']} / {cf['runs_outside_fitted_states_naive']} |")
    if "chain_bags" in results:
        cb = results["chain_bags"]
        print(f"| the same, bags of 10 fits (bag seeds 0, 1000, ...): ours | "
              f"{', '.join(f'{v:.2e}' for v in cb['relmse_ours'])} |")
        print(f"| naive, bags of 10 fits | {', '.join(f'{v:.2e}' for v in cb['relmse_naive'])} |")
        print(f"| ratio naive / ours per bag | {', '.join(f'{v:.2f}' for v in cb['ratio_per_bag'])} |")
        print(f"| the reference's naive, bags of 10 fits | "
              f"{', '.join(f'{v:.2e}' for v in cb['relmse_naive_reference'])} |")
        print(f"| ratio, the reference's naive / ours per bag | "
              f"{', '.join(f'{v:.2f}' for v in cb['ratio_per_bag_reference'])} |")
    print(f"| naive (small increments, lambda = 1) | {results['relmse_naive']:.2e} |")
    print(f"| ratio naive / ours | {results['ratio_naive_over_ours']:.2f} |")
    print(f"| the reference's naive (the same patches, z1 = phi(x1, I), lambda = 1, noise unscaled) | "
          f"{results['relmse_naive_reference']:.2e} (variance / direct 16x "
          f"{results['var_ratio_16x_naive_reference']:.1f}) |")
    print(f"| ratio, the reference's naive / ours | {results['ratio_naive_reference_over_ours']:.2f} |")
    print(f"| the small system's own mean (direct 1x) | {results['relmse_small_mean']:.2e} |")
    print(f"| the training trajectories' own mean ({args.small} small quenches) | "
          f"{results['relmse_training_small_mean']:.2e} |\n")
    sm = results["seams"]
    print(f"upsampled snapshots ({args.seam_overlaps} at the seams, {args.relax} frames relaxed): psi6 minus their "
          f"tiles' (the training quenches' mean at that time) {sm['snapshot_minus_tiles']:+.4f} over macro steps "
          f"1-{STEPS} ({sm['snapshot_minus_tiles_late']:+.4f} over 15-{STEPS}); within {DIAM:g} px of a seam minus "
          f"beyond {2 * DIAM:g} px {sm['seam_band_minus_bulk']:+.4f}, beyond {2 * DIAM:g} px minus the tiles' "
          f"{sm['bulk_minus_tiles']:+.4f}; the snapshots' own mean psi6 against the direct runs: relative MSE "
          f"{sm['snapshots_mean_vs_direct']:.2e}\n")
    print_block(block, args.small)
    print("| patch | K | relative MSE | variance / direct 16x |")
    print("|---|---|---|---|")
    for mult, r in patch_rows.items():
        print(f"| {mult:g} l = {r['patch_px']:.1f} px | {r['K']:.1f} | {r['relmse']:.2e} | {r['var_ratio_16x']:.2f} |")
    print("\n| lambda | relative MSE | variance / direct 16x |")
    print("|---|---|---|")
    for name, r in lam_rows.items():
        print(f"| {name} = {r['lambda']:.1f} | {r['relmse']:.2e} | {r['var_ratio_16x']:.2f} |")
    print("\n| variance of psi6 over runs (steps 5-30) | 4x | 16x | 4x / 16x |")
    print("|---|---|---|---|")
    print(f"| SDE | {var['pred_4x']:.2e} | {var['pred_16x']:.2e} | {var['pred_ratio_4x_over_16x']:.2f} |")
    print(f"| direct | {var['direct_4x']:.2e} | {var['direct_16x']:.2e} | {var['direct_ratio_4x_over_16x']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
