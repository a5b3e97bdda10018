"""Upsampling a crystal against a direct simulation of the large crystal (2D and 3D).

Truth: monodisperse overdamped harmonic soft disks (2D) or spheres (3D), diameter 16 px,
kT = 0.002 eps, D0 = 0.25 px^2/frame, 3 micro steps per frame (colloidcg.scaling's
SoftDiskSimulator / SoftSphereSimulator, the synthetic dynamics), started from a perfect
crystal in a commensurate periodic box and run ``--equilibrate`` frames before recording:

- 2D: a triangular crystal of 12 x 12 disks at area fraction 0.85 (rectangular box);
  K = 16 (2304 disks);
- 3D: an fcc crystal of 4^3 cubic cells (256 spheres) at volume fraction 0.70; K = 8 (2048).

A model is trained on the small crystal's trajectory; ``colloidcg.scaling.upsample`` builds
snapshots of K times the area (volume) with ``tiling="auto"`` (the input is one crystal, so
matched) and with ``tiling="random"`` beside it, both with the default adaptive seam
relaxation. Printed, against a direct simulation of the large crystal (same start, same
equilibration): g(r) relative RMS error, the mean local bond order (|psi6| 2D, q6 3D), the
closest pair against the data's, the seam check (band against bulk, Student t) and the
seconds taken.

    python benchmarks/upsample_crystal.py --dim 2
    python benchmarks/upsample_crystal.py --dim 3 --samples 4
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")

DIAM, KT, D0, SUBSTEPS = 16.0, 0.002, 0.25, 3
PHI = {2: 0.85, 3: 0.70}


def lattice(dim: int, cells: int, phi: float) -> tuple[np.ndarray, np.ndarray]:
    """A perfect crystal in its commensurate periodic box: 2D triangular, ``cells`` x
    ``cells`` disks (``cells`` even); 3D fcc, ``cells``^3 cubic cells of 4 spheres. Returns
    (positions (N, d) px, box (d,) px) at packing fraction ``phi`` of diameter DIAM."""
    if dim == 2:
        a = DIAM * math.sqrt(math.pi / (2 * math.sqrt(3) * phi))       # triangular spacing
        i, j = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        pos = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2)
        return pos, np.array([cells * a, cells * a * math.sqrt(3) / 2])
    a = (4 * math.pi / 6 * DIAM ** 3 / phi) ** (1 / 3)                    # cubic cell side
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    g = np.array([(i, j, k) for i in range(cells) for j in range(cells) for k in range(cells)], float)
    return ((g[:, None, :] + base[None]) * a).reshape(-1, 3), np.full(3, cells * a)


def run(dim: int, pos: np.ndarray, box: np.ndarray, equilibrate: int, frames: int, every: int,
        seed: int) -> pd.DataFrame:
    """Tracks (frame, particle, x, y[, z], px) of the crystal run ``equilibrate`` frames, then
    recorded every ``every`` frames, ``frames`` times."""
    from colloidcg.scaling.partial import full_step
    from colloidcg.scaling.simulators import MicroState, SoftDiskSimulator, SoftSphereSimulator, derive_key
    sim = (SoftDiskSimulator if dim == 2 else SoftSphereSimulator)(diffusion=D0, kT=KT, substeps=SUBSTEPS,
                                                                   diameter=DIAM)
    n = len(pos)
    s = MicroState(pos.copy(), np.full(n, DIAM), box, np.arange(n, dtype=np.int64), None, None)
    s = full_step(sim, s, equilibrate, derive_key(seed, n, 0))
    rows = []
    for f in range(frames):
        s = full_step(sim, s, every, derive_key(seed, n, f + 1))
        p = np.mod(s.pos, box)
        rows.append(pd.DataFrame({"frame": f, "particle": np.arange(n), **{c: p[:, k] for k, c in
                                                                           enumerate("xyz"[:dim])}}))
    return pd.concat(rows, ignore_index=True)


def bond_order(tracks: pd.DataFrame, box, dim: int) -> float:
    from colloidcg.scaling.observables import local_order
    return float(np.mean([local_order(g[list("xyz"[:dim])].to_numpy(), np.asarray(box)).mean()
                          for _, g in tracks.groupby("frame")]))


def closest(tracks: pd.DataFrame, box, dim: int) -> float:
    from colloidcg.neighbours import nearest
    return float(min(nearest(g[list("xyz"[:dim])].to_numpy(), 1, box=np.asarray(box))[0].min()
                     for _, g in tracks.groupby("frame")))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, choices=(2, 3), default=2)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="upsampling seed")
    ap.add_argument("--equilibrate", type=int, default=200, help="frames before recording")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--tilings", default="auto,random")
    ap.add_argument("--relax-steps", default="adaptive", dest="relax_steps",
                    help="upsample's relax_steps: adaptive (default), auto or a number of model frames")
    args = ap.parse_args(argv)
    import torch

    from colloidcg import evaluate as ev
    from colloidcg.scaling import upsample
    from colloidcg.scaling.seams import SeamVisibleWarning, seam_check_summary
    from colloidcg.train import TrainConfig, train_tracks

    torch.set_num_threads(1)
    dim = args.dim
    cells, factor = (12, 16) if dim == 2 else (4, 8)
    m = round(factor ** (1 / dim))
    pos, box = lattice(dim, cells, PHI[dim])
    t0 = time.perf_counter()
    small = run(dim, pos, box, args.equilibrate, 60, 5, seed=1)
    big_pos, big_box = lattice(dim, cells * m, PHI[dim]) if dim == 3 else (None, None)
    if dim == 2:        # m x m copies of the small crystal's lattice: the same rectangle, m times per axis
        shifts = np.array([(i, j) for i in range(m) for j in range(m)], float) * box
        big_pos, big_box = (pos[None] + shifts[:, None]).reshape(-1, 2), box * m
    big = run(dim, big_pos, big_box, args.equilibrate, 8, 25, seed=2)
    print(f"{dim}D crystal, {len(pos)} -> {len(big_pos)} particles (K = {factor}), packing fraction {PHI[dim]}; "
          f"truth simulated in {time.perf_counter() - t0:.0f} s")
    res = train_tracks(small, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=args.epochs, lr=1e-2, progress=False, loc_noise="none",
                                   cutoff=1.5 * DIAM, seed=0), box_px=box.tolist())
    cfg = {"calibration": res.report["calibration"]}
    r_max = min(float(big_box.min()) / 2, 4 * DIAM)
    g_big = ev.rdf(big, box_px=big_box.tolist(), max_frames=8, r_max=r_max, bins=40)["g"]
    g_small = ev.rdf(small, box_px=box.tolist(), max_frames=60, r_max=r_max, bins=40)["g"]
    name = "|psi6|" if dim == 2 else "q6"
    print(f"small crystal against the large: g(r) {ev.rel_rms(g_small, g_big):.4f}; mean {name} "
          f"{bond_order(small, box, dim):.4f} against {bond_order(big, big_box, dim):.4f}\n")
    print(f"| tiling | g(r) rel. RMS | mean {name} (direct {bond_order(big, big_box, dim):.4f}) | closest pair / data's "
          "| seam check | s |")
    print("|---|---|---|---|---|---|")
    for tiling in args.tilings.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeamVisibleWarning)
            up = upsample(res.model, cfg, small, {"meta": {"box_px": box.tolist()}}, factor=factor,
                          samples=args.samples, seed=args.seed, tiling=tiling,
                          relax_steps=args.relax_steps if args.relax_steps in ("adaptive", "auto")
                          else int(args.relax_steps),
                          seam_overlaps="push" if tiling == "random" else "reinsert")
        u = up.tracks
        err = ev.rel_rms(ev.rdf(u, box_px=up.box_px, max_frames=args.samples, r_max=r_max, bins=40)["g"], g_big)
        chosen = up.parameters["tiling"]["method"]
        print(f"| {tiling}{' (' + chosen + ')' if chosen != tiling else ''} | {err:.4f} | "
              f"{bond_order(u, up.box_px, dim):.4f} | {closest(u, up.box_px, dim) / closest(small, box, dim):.3f} | "
              f"{seam_check_summary(up.parameters['seam_check'])} | {up.parameters['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
