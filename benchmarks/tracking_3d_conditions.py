"""3D tracking of dyed spheres under conditions the main table does not vary.

Radius 3 and 8 px, a PSF 4.5 px long along z, a looser packing and a looser mixture,
drawn by ``benchmarks/tracking_3d.py``'s blurred-sphere renderer (hard-sphere motion) on
stacks 32 x 96 x 96, 2 frames; colloidcg's ``track`` with automatic parameters, scored as
the main table (RMS per axis in voxels of that axis, ``ep/err``: 1 is calibrated).

    python benchmarks/tracking_3d_conditions.py [--seed 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tracking_3d as B  # noqa: E402

SHAPE = (32, 96, 96)
#: (name, (radius or (r1, r2), PSF sigma in the plane, PSF sigma along z, z step) px, spacing)
CASES = [
    ("r 3, PSF 1.0 / 2.5, z step 1.5, near contact", (3.0, 1.0, 2.5, 1.5), 1.05),
    ("r 8, PSF 1.2 / 3, z step 2, near contact", (8.0, 1.2, 3.0, 2.0), 1.05),
    ("r 5, PSF 1.5 / 4.5, z step 2, near contact", (5.0, 1.5, 4.5, 2.0), 1.05),
    ("r 5, PSF 1.2 / 3, z step 2, spacing 1.15", (5.0, 1.2, 3.0, 2.0), 1.15),
    ("r 4 + 5.5, PSF 1.2 / 3, z step 2, spacing 1.2", ((4.0, 5.5), 1.2, 3.0, 2.0), 1.2),
]


def main(argv=None) -> int:
    from colloidcg.tracking import track

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"stacks {SHAPE}, 2 frames, seed {args.seed}\n")
    print("| spheres | model | recall / precision | RMS z / y / x | ep/err z / y / x | time (s) |")
    print("|---|---|---|---|---|---:|")
    for name, size, spacing in CASES:
        frames, truth = B.render("sphere", size, spacing, seed=args.seed, shape=SHAPE, n_frames=2)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = track(frames, progress=False, processes=1)
        s = B.score(r.tracks, truth, SHAPE, B.feature_diameter("sphere", size))
        rms = " / ".join(f"{v:.3f}" for v in s["rms"])
        ep = " / ".join(f"{v:.2f}" for v in s["ep_ratio"])
        print(f"| {name} | {r.params.spot_model} | {s['recall']:.3f} / {s['precision']:.3f} | {rms} | {ep} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
