"""2D tracking of dyed spheres in widefield fluorescence, each at its own defocus.

The 2D renderers of ``benchmarks/tracking_conditions.py`` draw every particle in focus.
In a quasi-2D sample (colloids between two glass plates a little wider than a diameter,
or sedimented ones that are not all on the glass) each particle sits at its own height,
and in widefield fluorescence a particle half a micron out of focus is wider, dimmer and
ringed. Here every particle's image is computed from the optics: a uniformly dyed sphere
(radius in um) convolved in 3D with the emission PSF of vector diffraction theory (the
``psf`` package by C. Gohlke, BSD-3-Clause; Richards-Wolf, aberration-free) and taken at
the focal plane, for the particle's own defocus (drawn once per particle, |N(0, sd)|).
Positions: a random packing of the projected disks (``colloidcg.synthetic.scenes``),
Brownian steps between frames. Each pixel integrates the profile over 3 x 3 subpixels;
photons: ``peak`` above a background at the brightest in-focus pixel, Poisson noise, read
noise, 16 bits. Tracked with ``colloidcg.tracking.track`` (everything estimated) and trackpy
with hand-set parameters (``tracking_conditions.trackpy_params``: diameter and separation
from the true size, minmass from the truth); scored by
``colloidcg.tracking.accuracy.score_localisation`` (particles a diameter from the edges).

    python benchmarks/tracking_widefield.py          # every condition, seed 0 (about 2 min)
    python benchmarks/tracking_widefield.py --only "sd 0.4" --seed 1

Prints a markdown table: recall, precision, RMS error (px), median ep / error, for both.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: profile grid: fine steps per pixel, defocus step (um), subpixels per pixel and axis
FINE_PER_PX, DEFOCUS_STEP, SUB = 4, 0.05, 3


@dataclass(frozen=True)
class Condition:
    name: str
    radius: float = 0.5            # um
    defocus_sd: float = 0.0        # um
    area_fraction: float = 0.3     # of the projected disks
    na: float = 1.4
    n: float = 1.5
    em_nm: float = 580.0
    pixel: float = 0.1             # um
    peak: float = 300.0            # photons above the background, brightest in-focus pixel
    background: float = 20.0       # photons per pixel
    read_noise: float = 2.0


CONDITIONS = (
    Condition("in focus, phi 0.3"),
    Condition("defocus sd 0.2 um, phi 0.3", defocus_sd=0.2),
    Condition("defocus sd 0.4 um, phi 0.3", defocus_sd=0.4),
    Condition("defocus sd 0.2 um, phi 0.6", defocus_sd=0.2, area_fraction=0.6),
    Condition("NA 0.75, n 1.33, defocus sd 0.4 um", defocus_sd=0.4, na=0.75, n=1.33),
    Condition("r 0.25 um beads, defocus sd 0.3 um", radius=0.25, defocus_sd=0.3),
)


def profiles(c: Condition, max_defocus: float):
    """Radial image profiles of one dyed sphere at defocus 0, DEFOCUS_STEP, ... up to
    ``max_defocus`` (um): (defocus (D,), r (R,) in px, values (D, R), photons per unit
    profile such that the in-focus profile's pixel peak is ``c.peak``)."""
    import psf
    from scipy.signal import fftconvolve

    h = c.pixel / FINE_PER_PX                    # fine grid step, um
    reach = c.radius + 2.0                       # um: the profile is kept to here
    half = int(math.ceil(reach / h))
    grid = np.arange(-half, half + 1) * h
    X, Y = np.meshgrid(grid, grid)
    R2 = X ** 2 + Y ** 2
    zmax = max_defocus + c.radius + h
    nz, nr = int(math.ceil(zmax / h)) + 2, int(math.ceil(math.sqrt(2) * reach / h)) + 2
    em = psf.PSF(psf.ISOTROPIC | psf.EMISSION, shape=(nz, nr), dims=(nz * h, nr * h),
                 em_wavelen=c.em_nm, num_aperture=c.na, refr_index=c.n).data
    rr = np.sqrt(R2) / h

    def psf_slice(dz):
        """The emission PSF in the plane dz (um) from its focus, on the fine grid."""
        iz = abs(dz) / h
        k = min(int(iz), nz - 2)
        f = min(iz - k, 1.0)
        prof = (1 - f) * em[k] + f * em[k + 1]
        return np.interp(rr, np.arange(nr), prof, right=0.0)

    zs = np.arange(-c.radius + h / 2, c.radius, h)
    discs = [(R2 <= c.radius ** 2 - z ** 2).astype(float) for z in zs]
    defocus = np.arange(0.0, max_defocus + DEFOCUS_STEP / 2, DEFOCUS_STEP)
    r_bins = np.arange(0, half + 1) * h / c.pixel            # px
    idx = np.minimum(np.rint(np.sqrt(R2) / h).astype(int), half)
    out = []
    for d in defocus:
        img = sum(fftconvolve(disc, psf_slice(d - z), mode="same") for z, disc in zip(zs, discs))
        sums = np.bincount(idx.ravel(), img.ravel(), half + 1)
        cnt = np.bincount(idx.ravel(), None, half + 1)
        out.append(sums / np.maximum(cnt, 1))
    vals = np.array(out)
    return defocus, r_bins, vals


def render(c: Condition, seed: int, side: int = 256, n_frames: int = 5):
    """Frames (T, H, W) uint16 and truth (frame, particle, x, y px, defocus um)."""
    import pandas as pd

    from colloidcg.synthetic import scenes as S

    rng = np.random.default_rng(seed)
    d_px = 2 * c.radius / c.pixel
    pos, _ = S.random_packing((side, side), c.area_fraction, (d_px,), rng=rng)
    n = len(pos)
    dz = np.abs(rng.normal(0.0, c.defocus_sd, n)) if c.defocus_sd > 0 else np.zeros(n)
    defocus, r_bins, vals = profiles(c, max(float(dz.max()), DEFOCUS_STEP))
    # the in-focus particle's brightest pixel (its centre on a pixel centre) gets c.peak photons
    sub = (np.arange(SUB) + 0.5) / SUB - 0.5
    centre = np.mean([np.interp(math.hypot(a, b), r_bins, vals[0]) for a in sub for b in sub])
    scale = c.peak / centre
    w = int(math.ceil(r_bins[-1])) - 1
    frames, rows = [], []
    for t in range(n_frames):
        if t:
            pos = pos + rng.normal(0.0, 0.3, pos.shape)
        img = np.zeros((side, side))
        for i, ((x, y), z) in enumerate(zip(pos, dz)):
            k = min(int(z / DEFOCUS_STEP), len(defocus) - 2)
            f = min(z / DEFOCUS_STEP - k, 1.0)
            prof = (1 - f) * vals[k] + f * vals[k + 1]
            x0, x1 = max(int(x) - w, 0), min(int(x) + w + 1, side)
            y0, y1 = max(int(y) - w, 0), min(int(y) + w + 1, side)
            if x1 <= x0 or y1 <= y0:
                continue
            px = np.arange(x0, x1)[None, :, None, None] + sub[None, None, None, :] - x
            py = np.arange(y0, y1)[:, None, None, None] + sub[None, None, :, None] - y
            r = np.sqrt(px ** 2 + py ** 2)
            img[y0:y1, x0:x1] += np.interp(r, r_bins, prof, right=0.0).mean(axis=(2, 3)) * scale
        photons = rng.poisson(img + c.background) + rng.normal(0.0, c.read_noise, img.shape)
        frames.append(np.clip(np.rint(photons), 0, 65535).astype(np.uint16))
        for i, (x, y) in enumerate(pos):
            rows.append((t, i, x, y, dz[i]))
    return np.array(frames), pd.DataFrame(rows, columns=["frame", "particle", "x", "y", "defocus"])


def run(c: Condition, seed: int) -> dict:
    import trackpy as tp

    from colloidcg.tracking import track
    from colloidcg.tracking.accuracy import score_localisation
    from tracking_conditions import trackpy_params

    frames, truth = render(c, seed)
    shape = frames.shape[1:]
    d = 2 * c.radius / c.pixel
    margin, radius = d, 0.5 * d
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = track(frames, progress=False, processes=1)
    row = {"case": c.name, "n": len(truth[truth.frame == 0]), "time": time.perf_counter() - t0,
           "ours": score_localisation(res.tracks, truth, shape, margin, radius, crowded_within=1.1 * d),
           "params": f"d={res.params.diameter}, model={getattr(res.params, 'spot_model', '')}"}
    dia, sep, mm = trackpy_params(frames[0], truth[truth.frame == 0], d, margin, radius)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = tp.batch(frames, dia, minmass=mm, separation=sep, processes=1)
    row["trackpy"] = score_localisation(f, truth, shape, margin, radius, crowded_within=1.1 * d)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="conditions whose name contains this text")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"widefield fluorescence, 256 x 256 px of 100 nm, 5 frames, seed {args.seed}; PSF: Richards-Wolf "
          f"emission (psf package), em 580 nm; each particle at its own defocus |N(0, sd)|\n")
    print("| condition | particles | colloidcg: recall / precision / RMS px / ep over the per-axis error | "
          "trackpy (hand-set): recall / precision / RMS px | colloidcg time (s) |")
    print("|---|---:|---|---|---:|")
    for c in CONDITIONS:
        if args.only is not None and args.only not in c.name:
            continue
        r = run(c, args.seed)
        o, t = r["ours"], r["trackpy"]
        print(f"| {c.name} | {r['n']} | {o.recall:.3f} / {o.precision:.3f} / {o.rms_error:.3f} / "
              f"{o.ep_axis_ratio:.2f} | {t.recall:.3f} / {t.precision:.3f} / {t.rms_error:.3f} | "
              f"{r['time']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
