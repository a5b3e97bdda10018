"""Seeded videos of a 2D foam (bubble raft) with exact ground truth.

Cells are the Voronoi regions of generator points that were relaxed towards their
cells' centroids (Lloyd's algorithm: a few steps give the near-hexagonal, slightly
polydisperse polygons of a dry 2D foam). Walls are the Voronoi edges drawn with a
given thickness; the image is rendered on a grid ``supersample`` times finer and
averaged down, so wall edges are anti-aliased, then blurred by a Gaussian PSF, lit
unevenly and given shot and read noise. Between frames the generators move by a
uniform shear plus small random steps, so the cells change shape and position.

The truth of a cell in a frame is the centroid of its rendered interior (the part of
its Voronoi region outside the walls), computed on the fine grid: what a segmentation
of the cell should return. It is not the generator point, which a wall-bounded region
does not reveal.

>>> from colloidcg.synthetic.foam import FoamConfig, make_foam_video
>>> frames, truth = make_foam_video(FoamConfig(n_frames=3))   # doctest: +SKIP

Lengths in px, intensities in grey levels of an 8-bit camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree


@dataclass
class FoamConfig:
    """Parameters of :func:`make_foam_video` (px, frames, grey levels)."""

    shape: tuple[int, int] = (256, 256)   # frame (Y, X)
    n_frames: int = 5
    cell_diameter: float = 24.0           # typical cell size (diameter of a disc of its area)
    wall_px: float = 2.0                  # wall thickness
    lloyd_steps: int = 6                  # fewer: more polydisperse, less regular cells
    shear_per_frame: float = 0.004        # uniform shear rate (strain per frame)
    step_px: float = 0.3                  # rms random step of a generator per frame, per axis
    interior: float = 200.0               # grey level inside a cell
    wall: float = 60.0                    # grey level of a wall
    psf_sigma: float = 0.7                # Gaussian blur of the optics
    illumination: float = 0.15            # relative fall-off of the light across the frame
    read_noise: float = 2.0               # grey levels rms
    gain: float = 0.5                     # shot noise: variance = gain * signal
    supersample: int = 4
    eight_bit: bool = True
    seed: int = 0


def _lloyd(points: np.ndarray, lo: np.ndarray, hi: np.ndarray, steps: int, rng) -> np.ndarray:
    """Move each point towards the centroid of its Voronoi cell within [lo, hi), by
    Monte Carlo (uniform samples assigned to their nearest point)."""
    n = len(points)
    for _ in range(steps):
        s = rng.uniform(lo, hi, (40 * n, 2))
        owner = cKDTree(points).query(s)[1]
        cnt = np.bincount(owner, minlength=n)
        ok = cnt > 0
        cx = np.bincount(owner, s[:, 0], n)[ok] / cnt[ok]
        cy = np.bincount(owner, s[:, 1], n)[ok] / cnt[ok]
        points = points.copy()
        points[ok] = np.c_[cx, cy]
    return points


def _render(points: np.ndarray, cfg: FoamConfig) -> tuple[np.ndarray, pd.DataFrame]:
    """One frame (Y, X) float of expected grey levels, and the truth of the cells whose
    Voronoi region lies inside the frame: id, x, y (interior centroid), area (px^2)."""
    ny, nx = cfg.shape
    ss = cfg.supersample
    v, u = np.mgrid[0:ny * ss, 0:nx * ss]
    # fine-grid pixel centres in frame px (a frame pixel's centre is at integer coordinates)
    fx = (u.ravel() + 0.5) / ss - 0.5
    fy = (v.ravel() + 0.5) / ss - 0.5
    d, owner = cKDTree(points).query(np.c_[fx, fy], k=2)
    # distance to the bisector of the two nearest generators (exact for their shared
    # wall): (d2^2 - d1^2) / (2 |p2 - p1|)
    sep = np.linalg.norm(points[owner[:, 1]] - points[owner[:, 0]], axis=1)
    to_wall = (d[:, 1] ** 2 - d[:, 0] ** 2) / (2 * np.maximum(sep, 1e-9))
    in_wall = to_wall < cfg.wall_px / 2
    fine = np.where(in_wall, cfg.wall, cfg.interior).reshape(ny * ss, nx * ss)
    img = fine.reshape(ny, ss, nx, ss).mean(axis=(1, 3))
    if cfg.psf_sigma > 0:
        img = ndimage.gaussian_filter(img, cfg.psf_sigma, mode="nearest")
    yy, xx = np.mgrid[0:ny, 0:nx]
    r2 = ((xx - nx / 2) ** 2 + (yy - ny / 2) ** 2) / (0.5 * max(nx, ny)) ** 2
    img = img * (1 - cfg.illumination * np.clip(r2, 0, 1))
    # truth: interior centroid per cell, for cells whose whole region is in the frame
    own = owner[:, 0]
    n = len(points)
    inside = ~in_wall
    cnt = np.bincount(own[inside], minlength=n)
    cx = np.bincount(own[inside], fx[inside], n) / np.maximum(cnt, 1)
    cy = np.bincount(own[inside], fy[inside], n) / np.maximum(cnt, 1)
    edge = np.zeros(n, bool)
    border = (u.ravel() < ss) | (u.ravel() >= (nx - 1) * ss) | (v.ravel() < ss) | (v.ravel() >= (ny - 1) * ss)
    edge[np.unique(own[border])] = True
    keep = (cnt > 0) & ~edge
    ids = np.flatnonzero(keep)
    truth = pd.DataFrame({"particle": ids, "x": cx[ids], "y": cy[ids],
                          "area": cnt[ids] / ss ** 2})
    return img, truth


def make_foam_video(cfg: FoamConfig | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Render a foam video.

    Returns
    -------
    frames : ndarray (T, Y, X)
        uint8 when ``cfg.eight_bit`` (clipped to 0-255), else float64.
    truth : DataFrame
        frame, particle (the cell's generator), x, y (px: centroid of the cell's rendered
        interior), area (px^2 of interior), for cells entirely inside the frame.
    """
    cfg = cfg or FoamConfig()
    rng = np.random.default_rng(cfg.seed)
    ny, nx = cfg.shape
    pad = 2.0 * cfg.cell_diameter
    lo, hi = np.array([-pad, -pad]), np.array([nx + pad, ny + pad])
    area = float(np.prod(hi - lo))
    n = int(round(area / (np.pi / 4 * cfg.cell_diameter ** 2)))
    pts = _lloyd(rng.uniform(lo, hi, (n, 2)), lo, hi, cfg.lloyd_steps, rng)
    frames, rows = [], []
    for t in range(cfg.n_frames):
        if t:
            pts = pts + np.c_[cfg.shear_per_frame * (pts[:, 1] - ny / 2), np.zeros(n)]
            pts = pts + rng.normal(0, cfg.step_px, pts.shape)
        mu, truth = _render(pts, cfg)
        img = mu + rng.normal(0, 1, mu.shape) * np.sqrt(cfg.read_noise ** 2 + cfg.gain * np.maximum(mu, 0))
        frames.append(np.clip(np.rint(img), 0, 255).astype(np.uint8) if cfg.eight_bit else img)
        rows.append(truth.assign(frame=t))
    truth = pd.concat(rows, ignore_index=True)[["frame", "particle", "x", "y", "area"]]
    return np.stack(frames), truth
