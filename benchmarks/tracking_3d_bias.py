"""How much of the 3D error near contact is noise (what ``ep`` reports) and how much is bias.

    python benchmarks/tracking_3d_bias.py              # three spacings, about 4 min on 2 cores
    python benchmarks/tracking_3d_bias.py --fine 4     # the renderer on a finer grid
    python benchmarks/tracking_3d_bias.py --renderer confocal   # through a computed confocal PSF

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
CONFOCAL_CASES = ("r 0.75 um, NA 1.4, near contact", "r 0.75 um, NA 1.4, apart")


def _gaussian_realisations(spacing: float, fine: int, seed: int):
    """One configuration of this script's spheres drawn three times with independent
    pixel noise: (positions (N, 3) voxels, video (3, Z, Y, X), diameter per axis)."""
    bench.FINE = fine
    frames, truth = bench.render("sphere", SIZE, spacing, seed=seed, n_frames=1)
    pos = truth[truth["frame"] == 0][["z", "y", "x"]].to_numpy()
    vid = np.stack([bench.render_frame("sphere", SIZE, pos, bench.SHAPE, np.random.default_rng(seed + 1000 + k))
                    for k in range(3)])
    return pos, vid, bench.feature_diameter("sphere", SIZE)


def _confocal_realisations(name: str, seed: int):
    """The same for a condition of ``tracking_3d_confocal.py`` (its PSF, photons and noise)."""
    import tracking_3d_confocal as conf

    c = next(c for c in conf.CONDITIONS if c.name == name)
    shape = (32, 96, 96)
    pos, radii = conf.place(c, np.random.default_rng(seed), shape)
    o = c.optics
    vol = conf.light(c, pos, radii, shape, conf.confocal_psf(o, o.dz / conf.FINE, o.dxy / conf.FINE))
    photons = vol * (c.peak / max(float(vol.max()), 1e-12))
    vid = np.stack([conf.counts(c, photons, np.random.default_rng(seed + 1000 + k)) for k in range(3)])
    keep = np.all((pos >= 0) & (pos < np.array(shape) - 1), axis=1)
    return pos[keep], vid, conf.feature_diameter(c)


def split(pos: np.ndarray, vid: np.ndarray, dia: np.ndarray) -> dict:
    """Noise and bias parts of the error of the spheres at ``pos`` (N, 3) voxels, drawn as
    the three frames of ``vid`` with independent noise; ``dia``: diameter per axis."""
    from colloidcg.tracking import track
    from colloidcg.tracking.accuracy import match_one_to_one

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = track(vid, progress=False, processes=1)
    zs = dia[1] / dia[0]
    inside = np.all((pos > dia - 0.5) & (pos < np.array(vid.shape[1:], float) - 0.5 - dia), axis=1)
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
    ap.add_argument("--renderer", choices=("gaussian", "confocal"), default="gaussian",
                    help="this script's Gaussian-blurred spheres, or tracking_3d_confocal.py's computed "
                         "confocal PSF (its radius 0.75 um conditions; --fine does not apply)")
    args = ap.parse_args(argv)
    if args.fine < 1:
        ap.error(f"--fine: expected an integer >= 1, got {args.fine}")
    if args.renderer == "gaussian":
        print(f"\ndyed spheres r {SIZE[0]:g} px, PSF {SIZE[1]:g} / {SIZE[2]:g} px, z step {SIZE[3]:g}, renderer "
              f"grid 1/{args.fine} voxel, seed {args.seed}; z / y / x in voxels\n")
        cases = [(f"{name} (spacing {spacing:g})", lambda sp=spacing: _gaussian_realisations(sp, args.fine, args.seed))
                 for name, spacing in SPACINGS]
    else:
        print(f"\ndyed spheres through the computed confocal PSF (tracking_3d_confocal.py), seed {args.seed}; "
              f"z / y / x in voxels\n")
        cases = [(name, lambda n=name: _confocal_realisations(n, args.seed)) for name in CONFOCAL_CASES]
    print("| spheres | spots | model | RMS error | noise part | median ep | bias part | error correlation between realisations |")
    print("|---|---:|---|---|---|---|---|---|")
    for name, make in cases:
        s = split(*make())

        def f3(v, digits=4):
            return " / ".join(f"{x:.{digits}f}" for x in v)
        print(f"| {name} | {s['n']} | {s['model']} | {f3(s['rms'])} | {f3(s['noise'])} | "
              f"{f3(s['ep'])} | {f3(s['bias'])} | {f3(s['corr'], 2)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
