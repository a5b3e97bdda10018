"""How much of the 3D error near contact is noise (what ``ep`` reports) and how much is bias.

    python benchmarks/tracking_3d_bias.py              # three spacings, about 4 min on 2 cores
    python benchmarks/tracking_3d_bias.py --fine 4     # the renderer on a finer grid

One configuration of dyed spheres (radius 5 px, PSF 1.2 / 3.0 px, z step 2, stack 40 x 112
x 112; ``benchmarks/tracking_3d.py``'s renderer) is drawn three times with independent
pixel noise and tracked as a 3-frame video (one set of parameters for all three). Per spot,
the mean error over the three realisations is its bias (fixed by the configuration) and the
scatter about it its noise; the noise part is scaled by sqrt(3/2) (three draws, one mean
removed) and the bias part has the noise's share of the mean (noise^2 / 3) removed.
Printed per axis z / y / x in voxels of that axis, for spots farther than a diameter from
every face: the RMS error, its noise and bias parts, the median ``ep``, and the correlation
of the errors of two realisations (1: all bias, 0: all noise).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tracking_3d as bench  # noqa: E402

SIZE = (5.0, 1.2, 3.0, 2.0)          # radius, PSF sigma in the plane / along z, z step (px)
SPACINGS = (("near contact", 1.05), ("volume fraction ~0.3", 1.3), ("apart", 2.0))


def split(spacing: float, fine: int, seed: int = 0) -> dict:
    """Noise and bias parts of the error at ``spacing`` (contact distances); ``fine``:
    the renderer's subvoxels per voxel and axis."""
    from colloidcg.tracking import track
    from colloidcg.tracking.accuracy import match_one_to_one

    bench.FINE = fine
    frames, truth = bench.render("sphere", SIZE, spacing, seed=seed, n_frames=1)
    pos = truth[truth["frame"] == 0][["z", "y", "x"]].to_numpy()
    vid = np.stack([bench.render_frame("sphere", SIZE, pos, bench.SHAPE, np.random.default_rng(seed + 1000 + k))
                    for k in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = track(vid, progress=False, processes=1)
    dia = bench.feature_diameter("sphere", SIZE)
    zs = dia[1] / dia[0]
    inside = np.all((pos > dia - 0.5) & (pos < np.array(bench.SHAPE, float) - 0.5 - dia), axis=1)
    err = np.full((3, len(pos), 3), np.nan)
    ep = np.full_like(err, np.nan)
    for f in range(3):
        g = r.tracks[r.tracks["frame"] == f]
        i_f, i_t = match_one_to_one(g[["z", "y", "x"]].to_numpy() * [zs, 1, 1], pos * [zs, 1, 1], 0.5 * dia[1])
        err[f, i_t] = g[["z", "y", "x"]].to_numpy()[i_f] - pos[i_t]
        ep[f, i_t] = g[["ep_z", "ep", "ep"]].to_numpy()[i_f]
    ok = inside & np.isfinite(err).all(axis=(0, 2))
    e = err[:, ok]
    mean = e.mean(0)
    noise2 = ((e - mean) ** 2).mean((0, 1)) * 1.5
    return {"n": int(ok.sum()), "model": r.params.spot_model, "rms": np.sqrt((e ** 2).mean((0, 1))),
            "noise": np.sqrt(noise2), "bias": np.sqrt(np.maximum((mean ** 2).mean(0) - noise2 / 3, 0.0)),
            "ep": np.nanmedian(ep[:, ok], axis=(0, 1)),
            "corr": np.array([np.corrcoef(e[0, :, k], e[1, :, k])[0, 1] for k in range(3)])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fine", type=int, default=2, help="renderer subvoxels per voxel and axis (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.fine < 1:
        ap.error(f"--fine: expected an integer >= 1, got {args.fine}")
    print(f"\ndyed spheres r {SIZE[0]:g} px, PSF {SIZE[1]:g} / {SIZE[2]:g} px, z step {SIZE[3]:g}, renderer "
          f"grid 1/{args.fine} voxel, seed {args.seed}; z / y / x in voxels\n")
    print("| spheres | spots | model | RMS error | noise part | median ep | bias part | error correlation between realisations |")
    print("|---|---:|---|---|---|---|---|---|")
    for name, spacing in SPACINGS:
        s = split(spacing, args.fine, args.seed)

        def f3(v, digits=4):
            return " / ".join(f"{x:.{digits}f}" for x in v)
        print(f"| {name} (spacing {spacing:g}) | {s['n']} | {s['model']} | {f3(s['rms'])} | {f3(s['noise'])} | "
              f"{f3(s['ep'])} | {f3(s['bias'])} | {f3(s['corr'], 2)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
