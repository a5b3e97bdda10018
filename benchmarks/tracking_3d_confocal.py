"""3D tracking of dyed spheres imaged through a computed confocal PSF (another renderer).

``benchmarks/tracking_3d.py`` blurs its spheres with a Gaussian, the family the ball model
of :mod:`colloidcg.tracking.refine3d` is written in. Here the blur is a physical confocal
point spread function: the product of the excitation and the pinhole-integrated emission
PSF of a high-NA objective, computed by Richards-Wolf vector diffraction theory in the
``psf`` package (C. Gohlke, BSD-3-Clause; ``pip install psf``). It has the Airy-like
lateral profile with its rings, the axial profile with its side lobes, and an axial to
lateral width ratio set by the optics, none of which the fit's model has.

The sample: uniformly dyed spheres (radius in um) in an index-matched medium (the usual
colloid confocal setting: PMMA spheres in decalin / tetralin mixtures), placed by random
sequential addition and moved as hard spheres between frames (``tracking_3d.py``'s
placement and moves). Each sphere's dye is drawn on a grid FINE times finer than the
voxels, convolved with the PSF sampled on that grid, integrated over each voxel, and
counted as photons: ``peak`` photons above a background of ``background`` photons at the
brightest voxel, Poisson noise, Gaussian read noise, 12 bits. Tracked with
``colloidcg.tracking.track`` (everything estimated) and, beside it, trackpy's 3D
centroids with hand-set diameters (``tracking_3d.trackpy_run``).

    python benchmarks/tracking_3d_confocal.py               # every condition, seed 0 (a few minutes)
    python benchmarks/tracking_3d_confocal.py --only "near contact" --seed 1

Prints a markdown table: recall, precision, RMS error per axis in voxels and nm, ep / error.
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

import tracking_3d as bench  # noqa: E402

#: subvoxels per voxel and axis of the grid the dye and the PSF are drawn on
FINE = 3


@dataclass(frozen=True)
class Optics:
    """A confocal microscope and its sampling: voxel sizes (um), objective NA, the
    sample's refractive index, excitation and emission wavelengths (nm), the pinhole's
    back-projected radius in Airy units (1 AU = 1.22 em / NA)."""

    dxy: float = 0.15
    dz: float = 0.25
    na: float = 1.4
    n: float = 1.5
    ex_nm: float = 532.0
    em_nm: float = 580.0
    pinhole_au: float = 1.0


@dataclass(frozen=True)
class Condition:
    name: str
    radius: tuple = (0.75,)     # um; two values: a 50:50 mixture
    spacing: float = 1.3        # closest centre distance, in sums of radii
    optics: Optics = Optics()
    peak: float = 200.0         # photons at the brightest voxel above the background
    background: float = 10.0    # photons per voxel
    read_noise: float = 2.0     # counts


CONDITIONS = (
    Condition("r 0.75 um, NA 1.4, apart"),
    Condition("r 0.75 um, NA 1.4, near contact", spacing=1.05),
    Condition("r 0.6 + 0.85 um mixture, near contact", radius=(0.6, 0.85), spacing=1.05),
    Condition("r 0.5 um, NA 1.4, near contact", radius=(0.5,), spacing=1.05),
    Condition("r 0.75 um, NA 1.2 water-like (n 1.33), apart", optics=Optics(na=1.2, n=1.33)),
    Condition("r 0.75 um, pinhole 3 AU, apart", optics=Optics(pinhole_au=3.0)),
    Condition("r 0.75 um, 20 photons at the peak, apart", peak=20.0, background=2.0),
    Condition("r 0.3 um beads, apart", radius=(0.3,), spacing=2.0),
    Condition("r 0.3 um beads, voxels 100 x 60 x 60 nm, apart", radius=(0.3,), spacing=2.0,
              optics=Optics(dxy=0.06, dz=0.1)),
    Condition("r 1.2 um, near contact", radius=(1.2,), spacing=1.05),
)


def confocal_psf(optics: Optics, step_z: float, step_r: float, half_z: float = 2.0,
                 half_r: float = 1.2) -> np.ndarray:
    """The confocal PSF (Z, Y, X) sampled every (step_z, step_r, step_r) um over
    +-(half_z, half_r, half_r) um, normalised to sum 1."""
    import psf

    em_um = optics.em_nm / 1e3
    nz, nr = int(math.ceil(half_z / step_z)) + 1, int(math.ceil(half_r / step_r)) + 1
    p = psf.PSF(psf.ISOTROPIC | psf.CONFOCAL, shape=(nz, nr), dims=(nz * step_z, nr * step_r),
                ex_wavelen=optics.ex_nm, em_wavelen=optics.em_nm, num_aperture=optics.na,
                refr_index=optics.n, pinhole_radius=optics.pinhole_au * 1.22 * em_um / optics.na)
    v = p.volume()
    return v / v.sum()


def place(c: Condition, rng, shape) -> tuple[np.ndarray, np.ndarray]:
    """Sphere centres (N, 3) z, y, x voxels and radii (N,) px of condition ``c``."""
    o = c.optics
    return bench.positions_mixture(rng, shape, np.asarray(c.radius, float) / o.dxy, o.dz / o.dxy, c.spacing)


def light(c: Condition, pos: np.ndarray, radii: np.ndarray, shape, kernel: np.ndarray) -> np.ndarray:
    """The noise-free image (Z, Y, X) of the spheres: dye drawn FINE times finer than the
    voxels, convolved with ``kernel`` (:func:`confocal_psf` on that grid), voxel means."""
    from scipy.signal import fftconvolve

    f = FINE
    dye = bench.draw_dye(pos, radii, shape, c.optics.dz / c.optics.dxy, f)
    vol = fftconvolve(dye, kernel.astype(np.float32), mode="same")
    return np.clip(vol.reshape(shape[0], f, shape[1], f, shape[2], f).mean(axis=(1, 3, 5)), 0, None)


def counts(c: Condition, photons: np.ndarray, rng) -> np.ndarray:
    """One 12-bit frame: Poisson photons on ``photons`` + the background, read noise."""
    n = rng.poisson(photons + c.background) + rng.normal(0.0, c.read_noise, photons.shape)
    return np.clip(np.rint(n), 0, 4095).astype(np.uint16)


def render(c: Condition, seed: int, shape=(32, 96, 96), n_frames: int = 3):
    """Frames (T, Z, Y, X) uint16 and truth (frame, particle, x, y, z; voxels)."""
    import pandas as pd

    o = c.optics
    rng = np.random.default_rng(seed)
    pos, radii = place(c, rng, shape)
    kernel = confocal_psf(o, o.dz / FINE, o.dxy / FINE)
    frames, rows = [], []
    for t in range(n_frames):
        if t:
            pos = bench.hard_sphere_steps(pos, rng.normal(0, 0.3, pos.shape), radii, o.dz / o.dxy)
        vol = light(c, pos, radii, shape, kernel)
        if t == 0:
            scale = c.peak / max(float(vol.max()), 1e-12)
        frames.append(counts(c, vol * scale, rng))
        keep = np.all((pos >= 0) & (pos < np.array(shape) - 1), axis=1)
        for i in np.flatnonzero(keep):
            rows.append((t, i, pos[i, 2], pos[i, 1], pos[i, 0]))
    truth = pd.DataFrame(rows, columns=["frame", "particle", "x", "y", "z"])
    return np.array(frames), truth


def feature_diameter(c: Condition) -> np.ndarray:
    """The larger sphere's diameter per axis (z, y, x) in voxels."""
    r = max(c.radius)
    return np.array([2 * r / c.optics.dz, 2 * r / c.optics.dxy, 2 * r / c.optics.dxy])


def run(c: Condition, seed: int, with_trackpy: bool = True) -> dict:
    from colloidcg.tracking import track

    frames, truth = render(c, seed)
    dia = feature_diameter(c)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = track(frames, progress=False, processes=1)
    row = {"case": c.name, "n": float(truth.groupby("frame").size().mean()), "time": time.perf_counter() - t0,
           "ours": bench.score(r.tracks, truth, frames.shape[1:], dia), "model": r.params.spot_model}
    if with_trackpy:
        row["trackpy"] = bench.score(bench.trackpy_run(frames, truth, dia, c.spacing), truth, frames.shape[1:], dia)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="conditions whose name contains this text")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-trackpy", action="store_true", help="leave out trackpy's row")
    args = ap.parse_args(argv)
    conds = [c for c in CONDITIONS if args.only is None or args.only in c.name]
    o = Optics()
    print(f"3D confocal stacks (32, 96, 96) voxels of {o.dz * 1e3:.0f} x {o.dxy * 1e3:.0f} x {o.dxy * 1e3:.0f} nm, "
          f"3 frames, seed {args.seed}; PSF: Richards-Wolf confocal (psf package), ex {o.ex_nm:.0f} / em "
          f"{o.em_nm:.0f} nm; RMS per axis z / y / x in voxels (nm)\n")
    print("| condition | particles | model | recall / precision | RMS z / y / x, voxels | nm | ep / error | "
          "trackpy (hand-set): recall / RMS | time (s) |")
    print("|---|---:|---|---|---|---|---|---|---:|")
    for c in conds:
        r = run(c, args.seed, not args.no_trackpy)
        s = r["ours"]
        nm = s["rms"] * np.array([c.optics.dz, c.optics.dxy, c.optics.dxy]) * 1e3
        tp = r.get("trackpy")
        tp_txt = "-" if tp is None else f"{tp['recall']:.3f} / " + " / ".join(f"{v:.3f}" for v in tp["rms"])
        print(f"| {c.name} | {r['n']:.0f} | {r['model']} | {s['recall']:.3f} / {s['precision']:.3f} | "
              + " / ".join(f"{v:.3f}" for v in s["rms"]) + " | " + " / ".join(f"{v:.0f}" for v in nm)
              + " | " + " / ".join(f"{v:.2f}" for v in s["ep_ratio"]) + f" | {tp_txt} | {r['time']:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
