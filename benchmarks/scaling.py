"""Speed of hierarchical upsampling (colloidcg.scaling.upsample) to 10^4 and 10^5 particles, and of
the macroscopic SDE (10^3 runs x 10^3 steps) against the particle model on the same large system.

A small periodic bidisperse soft-disk liquid (400 particles, area fraction 0.7,
colloidcg.synthetic dynamics) is simulated, a model is trained on it for a few epochs
(untimed), and one snapshot is upsampled by K = 25 (10^4 particles, one 5 x 5 step) and
K = 256 (1.02 x 10^5 particles, four doublings), with the default seam relaxation (10
model frames in a band one interaction range wide along every seam). For comparison it
also prints the cost of 10 frames of the particle model itself on the whole large system
(what relaxing everything, not only the seams, would cost).

    python benchmarks/scaling.py                 # 2 torch threads
    python benchmarks/scaling.py --threads 1 --factors 25
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd
import torch


def small_system(n=400, frames=40, every=5, phi=0.7, seed=0):
    """Bidisperse soft disks (as tests/test_upsample.py): tracks with a diameter column, box side px."""
    from colloidcg.synthetic.dynamics import Box, Integrator, random_packing
    rng = np.random.default_rng(seed)
    small = 2 * 16.0 / 2.4
    diam = rng.permutation(np.resize(np.array([small, 1.4 * small]), n))
    side = math.sqrt(np.sum(np.pi / 4 * diam ** 2) / phi)
    box = Box(side, side, yc=side / 2)
    pos = random_packing(n, diam, box, rng)
    integ = Integrator(diam, box, 0.5, 1e-2, 0.0, lambda t: (0.0, 0.0), rng)
    out = []
    for f in range(-1000, frames * every):
        if f >= 0 and f % every == 0:
            out.append(pos.copy())
        for k in range(6):
            pos, _ = integ.step(pos, None, f + k / 6, 1.0 / 6)
    out = np.array(out)
    t = len(out)
    return pd.DataFrame({"frame": np.repeat(np.arange(t), n), "particle": np.tile(np.arange(n), t),
                         "x": out[..., 0].ravel(), "y": out[..., 1].ravel(),
                         "diameter": np.tile(diam, t)}), side


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--factors", type=int, nargs="+", default=[25, 256])
    ap.add_argument("--model-steps", type=int, default=10, help="frames of the full-system rollout")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from colloidcg.core import State, rollout
    from colloidcg.scaling import upsample
    from colloidcg.train import TrainConfig, train_tracks

    df, side = small_system()
    res = train_tracks(df, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=3, lr=1e-2, progress=False, loc_noise="none", cutoff=24.0,
                                   size_column="diameter"), box_px=[side, side])
    model, cfg = res.model, {"calibration": res.report["calibration"]}
    print(f"tile: {df['particle'].nunique()} particles, box {side:.1f} px; torch threads {args.threads}")
    for k in args.factors:
        t0 = time.perf_counter()
        up = upsample(model, cfg, df, factor=k, seed=0)
        t_up = time.perf_counter() - t0
        n = up.parameters["n_particles"][0]
        rel = up.parameters["seam_relaxation"]
        g = up.tracks
        r0 = torch.tensor(g[["x", "y"]].to_numpy(), dtype=torch.float64)
        box = torch.as_tensor(up.box_px, dtype=torch.float64)
        size = torch.tensor(g["diameter"].to_numpy(), dtype=torch.float64)
        t0 = time.perf_counter()
        with torch.no_grad():
            S0 = model.initial_S(r0, None, box)
            rollout(model, State(r0, torch.zeros_like(r0), S0, size), args.model_steps, 1.0, box=box, seed=0)
        t_model = time.perf_counter() - t0
        print(f"K={k:4d}: {n:7d} particles, steps {up.parameters['side_steps']}: upsampling {t_up:7.1f} s "
              f"({rel['particles_relaxed']} particle relaxations, {rel['particles_dropped']} dropped); "
              f"the particle model, {args.model_steps} frames of the whole system: {t_model:7.1f} s")
    macro_speed(t_model / args.model_steps, n)
    return 0


def macro_speed(model_seconds_per_frame: float, n_particles: int, runs: int = 1000, steps: int = 1000,
                dt_frames: float = 10.0) -> None:
    """Time a 2-variable macroscopic SDE (colloidcg.scaling.macro; fitted to synthetic
    Ornstein-Uhlenbeck increments, untimed) for ``runs`` x ``steps``, and set it beside what
    the particle model would need for the same ensemble of the large system (its measured
    cost per frame x steps x dt_frames x runs)."""
    from colloidcg.scaling.macro import fit_sde
    rng = np.random.default_rng(0)
    z0 = rng.uniform(0.3, 0.9, (2000, 2))
    z1 = z0 + 0.05 * (0.6 - z0) + 0.02 * rng.standard_normal(z0.shape)
    sde, _ = fit_sde(z0, z1, dt=dt_frames, names=["psi6", "closure_0"], lam=16.0, iterations=50)
    t0 = time.perf_counter()
    sde.simulate(steps=steps, runs=runs, seed=0)
    t_sde = time.perf_counter() - t0
    t_particles = model_seconds_per_frame * steps * dt_frames * runs
    print(f"macro SDE, 2 variables: {runs} runs x {steps} steps in {t_sde:.1f} s; the particle model for the "
          f"same ensemble ({n_particles} particles, {steps} x {dt_frames:g} frames x {runs} runs) would take "
          f"about {t_particles / 3600:.0f} h ({model_seconds_per_frame:.3g} s per frame, measured above)")


if __name__ == "__main__":
    raise SystemExit(main())
