"""Finding particles in frames: peak detection + overlap-aware refinement, in parallel.

With ``refine=True`` (the default) a frame goes through

1. trackpy's band-pass (Gaussian of 1 px minus a ``diameter`` boxcar, Crocker & Grier,
   J. Colloid Interface Sci. 179, 298 (1996)), computed with OpenCV;
2. trackpy's local-maximum rule (grey dilation over a square of side 2 separation /
   sqrt 2, above the 64th percentile of its non-zero pixels), including maxima on the frame border, whose
   spots may be centred just outside the frame;
3. trackpy's ``mass`` (band-passed brightness summed over a disc of radius
   diameter // 2) and the ``minmass`` threshold;
4. the joint fit of all spots (:func:`colloidcg.tracking.refine.refine_jointly`), which
   replaces trackpy's centroid iteration and gives the width, eccentricity and a
   localisation uncertainty of every spot;
5. as trackpy after refinement: minmass on the mass at the fitted position, and of two
   spots closer than ``separation`` only the brighter; besides, a spot within two
   diameters of one at least four times as massive is dropped (the bright halo of a
   bright-field ring is not a particle; in crowded frames it must also be four times
   fainter in fitted amplitude).

With ``refine=False`` it is plain ``trackpy.locate`` (centroids), for comparison and for
z-stacks.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import math
import multiprocessing as mp
import os
import sys
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from numba import njit

from .gaps import bright_gaps, lit_halos, rings_possible
from .refine import _median_inplace, _sort_small, refine_jointly

FEATURE_COLUMNS = ["frame", "y", "x", "mass", "size", "ecc", "signal", "raw_mass", "ep"]
#: With mixed contrast, a ``contrast`` column follows (+1 bright, -1 dark).
#: How :func:`locate_frame` runs the joint fit: two sweeps of the first stage (spots
#: with a background offset each; the background map comes from their residual), one of
#: the second. More sweeps change positions by < 0.005 px on dense test videos.
REFINE_OPTIONS = dict(n_sweeps=1, stage1_sweeps=2, n_newton=2, stage2_newton=1, tol=1e-2)
#: Where spots overlap heavily (median neighbour distance under CROWDED_SIGMAS spot
#: sigmas) Gauss-Seidel converges slowly, and the first background, taken while every
#: spot still has its own offset, sits too high (23 for a true 20 on the dense
#: bidisperse analogue of tests/test_tracking_robust.py). There the fit runs longer and
#: the background and the spots are refitted in turn: on that analogue, from positions
#: 0.5 px off, RMS 0.26 px with REFINE_OPTIONS, 0.18 px with these at twice the time
#: (0.16 px at four times: not worth it). Most of what was left came from the free width
#: of every spot and from spots the fit never had (a partner merged into one detection, a
#: spot centred outside the frame): with each population's width held
#: (``shared_widths``, :func:`colloidcg.tracking.refine.refine_jointly`) and the missed
#: spots found in that fit's residual, 0.12-0.17 px over three realisations (was
#: 0.15-0.36) at about 2.5 times the time of the crowded fit without it.
CROWDED_SIGMAS = 3.2
#: A fit whose position error (ep) is this many times the frame's median has failed
#: (a spot far from Gaussian, e.g. a few percent of ring-shaped bright-field spots, with
#: errors up to 1.5 px): its position is then trackpy's centroid of the band-passed frame
#: if that lies within FAILED_FIT_MAX_SHIFT px of the fit (further off, at a black band or
#: a wall, the centroid is no better), unless the frame is crowded (there the centroid's
#: pull towards the neighbours costs more: RMS 0.17 -> 0.28 px on the soft dense
#: bidisperse case). Ring spots of the conditions benchmark: RMS 0.168 px with (4, 1 px),
#: 0.111 px with (2.5, 2 px); no other condition changed, the dark-dish analogue by
#: +-0.005 in precision.
FAILED_FIT_EP = 2.5
FAILED_FIT_MAX_SHIFT = 2.0   # px
CROWDED_OPTIONS = dict(n_sweeps=2, stage1_sweeps=4, n_newton=2, stage2_newton=2, tol=1e-3,
                       background_passes=5, shared_widths=True)
#: A spot within two diameters of one this many times more massive is dropped as a
#: satellite (the bright halo of a bright-field ring); neighbouring particles differ by
#: far less.
SATELLITE_RATIO = 4.0


def prepare(frame: np.ndarray, invert: bool, roi) -> np.ndarray:
    """Float frame with bright particles, cropped to ``roi`` (x0, y0, x1, y1)."""
    img = np.asarray(frame, dtype=np.float64)
    if roi is not None:
        x0, y0, x1, y1 = roi
        img = img[..., y0:y1, x0:x1]
    if invert:
        img = float(np.iinfo(frame.dtype).max if np.issubdtype(frame.dtype, np.integer)
                    else img.max()) - img
    return img


# ------------------------------------------------------------------ detection
def bandpass(img: np.ndarray, diameter: int, noise_size: float = 1.0) -> np.ndarray:
    """trackpy's band-pass: Gaussian (``noise_size`` px) minus a ``diameter`` boxcar, >= 0.

    Same filter as :func:`trackpy.preprocessing.bandpass` (threshold 0), ~10x faster
    with OpenCV. Returns float32 (Y, X).
    """
    import cv2

    im = np.ascontiguousarray(img, dtype=np.float32)
    d = int(diameter) | 1
    lp = cv2.GaussianBlur(im, (0, 0), noise_size, borderType=cv2.BORDER_REFLECT)
    bp = lp - cv2.blur(im, (d, d), borderType=cv2.BORDER_REFLECT)
    np.maximum(bp, 0, out=bp)
    return bp


@njit(cache=True)
def _disc_sums(img, xs, ys, radius):
    """Sum of img over a disc of ``radius`` px around each (rounded) position: returns
    the sum over the in-frame part and that sum scaled to the whole disc's area (for
    spots cut by the frame border)."""
    ny, nx = img.shape
    out = np.empty(len(xs))
    full = np.empty(len(xs))
    r = int(radius)
    r2 = radius * radius
    for i in range(len(xs)):
        cu = int(np.rint(xs[i]))
        cv = int(np.rint(ys[i]))
        acc = 0.0
        n_in = 0
        n_all = 0
        for dv in range(-r, r + 1):
            v = cv + dv
            half = int(math.sqrt(max(r2 - dv * dv, 0.0)))
            n_all += 2 * half + 1
            if v < 0 or v >= ny:
                continue
            lo = max(0, cu - half)
            hi = min(nx, cu + half + 1)
            row = img[v, lo:hi]
            for k in range(hi - lo):
                acc += row[k]
            n_in += max(0, hi - lo)
        out[i] = acc
        full[i] = acc * n_all / n_in if n_in > 0 else 0.0
    return out, full


@njit(cache=True)
def _maxima(bp, dil, threshold):
    """Positions (x, y) of pixels equal to their dilation and above ``threshold``."""
    ny, nx = bp.shape
    xs = []
    ys = []
    for v in range(ny):
        brow = bp[v]
        drow = dil[v]
        for u in range(nx):
            c = brow[u]
            if c > threshold and c == drow[u]:
                xs.append(u)
                ys.append(v)
    return np.array(xs, dtype=np.int64), np.array(ys, dtype=np.int64)


@njit(cache=True)
def _subpixel(bp, ys, xs):
    """Parabolic vertex through each maximum and its two neighbours, per axis (px)."""
    ny, nx = bp.shape
    fx = np.empty(len(xs))
    fy = np.empty(len(xs))
    for i in range(len(xs)):
        u = xs[i]
        v = ys[i]
        c = bp[v, u]
        dx = 0.0
        if 0 < u < nx - 1:
            lo, hi = bp[v, u - 1], bp[v, u + 1]
            den = lo - 2 * c + hi
            if den < 0:
                dx = min(max(0.5 * (lo - hi) / den, -0.5), 0.5)
        dy = 0.0
        if 0 < v < ny - 1:
            lo, hi = bp[v - 1, u], bp[v + 1, u]
            den = lo - 2 * c + hi
            if den < 0:
                dy = min(max(0.5 * (lo - hi) / den, -0.5), 0.5)
        fx[i] = u + dx
        fy[i] = v + dy
    return fx, fy


def find_peaks(img: np.ndarray, diameter: int, separation: float, percentile: float = 64,
               bp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate particles: local maxima of the band-passed frame and their masses.

    Parameters
    ----------
    img : ndarray (Y, X)
        Frame, particles bright.
    diameter : int
        Odd feature diameter (px): boxcar size and mass disc (radius diameter // 2).
    separation : float
        Minimum distance between maxima (px); of two closer ones the brighter is kept.
    percentile : float
        Maxima must exceed this percentile of the band-passed frame (trackpy's rule).
    bp : ndarray, optional
        The band-passed frame, if already computed.

    Returns
    -------
    x, y : ndarray (N,)
        Sub-pixel start positions (px), maxima on the border included.
    mass : ndarray (N,)
        trackpy's mass (band-passed brightness in the disc), for spots cut by the border
        scaled up to the full disc.
    bp : ndarray (Y, X) float32
    """
    import cv2

    if bp is None:
        bp = bandpass(img, diameter)
    size = max(3, int(2 * separation / math.sqrt(2)) | 1)
    dil = cv2.dilate(bp, np.ones((size, size), np.uint8), borderType=cv2.BORDER_REFLECT)
    sub = bp[::3, ::3]
    sub = sub[sub > 0]
    thr = float(np.percentile(sub, percentile)) if len(sub) else 0.0
    xs, ys = _maxima(bp, dil, thr)
    empty = np.zeros(0)
    if len(xs) == 0:
        return empty, empty, empty, bp
    _, mass = _disc_sums(bp, xs.astype(np.float64), ys.astype(np.float64), float(diameter // 2))
    if len(xs) > 1:   # plateaus and near-equal neighbours: keep the brighter of close pairs
        keep = ~_duplicates(xs.astype(np.float64), ys.astype(np.float64), mass, separation)
        xs, ys, mass = xs[keep], ys[keep], mass[keep]
    fx, fy = _subpixel(bp, ys, xs)
    return fx, fy, mass, bp


def locate_frame(frame: np.ndarray, frame_no: int, diameter, separation, minmass: float,
                 invert: bool | None, roi=None, refine: bool = True,
                 contrast: str | None = None, spot_profile: bool = True,
                 gap_check: bool = True, probe: dict | None = None, spot_model: str = "auto",
                 objects: str = "spots") -> pd.DataFrame:
    """Locate the particles of one frame.

    Parameters
    ----------
    frame : ndarray (Y, X) or (Z, Y, X)
        Raw frame.
    diameter, separation : int/float or tuple
        trackpy's feature diameter (odd, px) and minimum separation (px), per axis.
    minmass : float
        Minimum integrated brightness (trackpy's mass) of a feature.
    invert : bool
        Particles dark on bright.
    roi : (x0, y0, x1, y1), optional
        Crop in px; positions are returned in full-frame coordinates.
    refine : bool
        Fit all spots jointly to remove the bias of overlapping neighbours (3D stacks:
        anisotropic Gaussians or blurred balls, ``spot_model``,
        :mod:`colloidcg.tracking.refine3d`, which adds the standard error along z as
        ``ep_z``); False: plain trackpy.locate.
    contrast : {"bright", "dark", "both"}, optional
        "both": mixed contrast (2D); bright and dark particles are located separately
        and a ``contrast`` column (+1 bright, -1 dark) is added. Of a bright and a dark
        spot closer than ``diameter`` only the more massive is kept: the bright halo of
        a dark particle (and the dark ring of a bright one) is not a particle.
        "bright"/"dark" override ``invert``; None: ``invert`` decides.
    spot_profile : bool
        Measure the spots' shared non-Gaussian radial profile and, where it explains
        enough of the residual, locate by own light (:func:`_refine_with_profile`, with
        ``refine``). False skips the measurement: for Gaussian spots (the profile explains
        nothing) the result is the same.
    gap_check : bool
        Test the candidates for the lit gaps of a bright-field packing
        (:func:`colloidcg.tracking.gaps.bright_gaps`). False skips the test: where the
        frame holds no ring-shaped particles it drops nothing anyway.
    probe : dict, optional
        Filled with what the two probes (those switched on) found: ``profile_gain`` (share of the Gaussian
        fit's residual variance the radial profile explains; 0 when not measured) and
        ``rings`` (the gap test's frame-level gates did not rule rings out), to decide them
        once per video (:func:`colloidcg.tracking._decide_probes`).

    spot_model : {"auto", "gauss", "ball"}
        3D stacks: the spot model of the joint fit (:func:`colloidcg.tracking.refine3d.
        fit_spots_3d`; "auto" decides in this frame, :func:`colloidcg.tracking.track`
        decides once, on the first frame, and passes its choice).

    objects : {"spots", "cells"}
        "cells": segment the 2D frame into cells between walls
        (:func:`colloidcg.tracking.cells.locate_cells`; ``invert``: the cells are dark,
        ``diameter``: the typical cell's); the spot parameters are not used.

    Returns
    -------
    DataFrame
        One row per particle: frame, y, x [, z] (px), mass (trackpy's), size (px: the
        fitted Gaussian width sigma; trackpy's radius of gyration without refinement),
        ecc, signal (peak height above background), raw_mass, ep (px: standard error of
        the position).
    """
    if objects == "cells":
        from .cells import locate_cells

        inv = contrast == "dark" if contrast in ("bright", "dark") else bool(invert)
        return locate_cells(frame, frame_no, invert=inv, diameter=float(diameter), roi=roi)
    with _one_blas_thread():
        return _locate_frame(frame, frame_no, diameter, separation, minmass, invert, roi,
                             refine, contrast, spot_profile, gap_check, probe, spot_model)


def _one_blas_thread():
    """Context in which BLAS (numpy's matrix products and solves) runs on one thread.

    A frame's few small products (the radial profile's normal matrix, 3 x 3 to 40 x 40
    solves) are slower threaded than not, and frames are already located in parallel: with
    OpenBLAS's default of one thread a core, one core located the dense benchmark's frames
    in 101 ms instead of 55 ms. Finding the loaded BLAS libraries costs 1-2.5 ms, so the
    controller is kept, and found again whenever a module has been imported since: BLAS
    libraries arrive with extension modules (OpenCV and SciPy bring their own), and a
    controller from before such an import would miss them."""
    global _BLAS
    from threadpoolctl import ThreadpoolController

    if _IN_FORKED_WORKER:
        # BLAS is one-threaded already (the pool's parent set it so before forking), and
        # setting it here would cost: in a forked child OpenBLAS has no thread server, and
        # any change of its thread count starts one, whose threads spin for about 0.1 s
        # after each use. On the dense benchmark a fresh worker's first frame took 310 ms
        # of CPU that way (two extra threads busy beside it), 85 ms without.
        return contextlib.nullcontext()
    if _BLAS is None or _BLAS[0] != len(sys.modules):
        controller = ThreadpoolController()   # (may import modules itself)
        _BLAS = (len(sys.modules), controller)
    return _BLAS[1].limit(limits=1, user_api="blas")


#: (len(sys.modules) when found, threadpoolctl.ThreadpoolController) for _one_blas_thread.
_BLAS = None
#: True in a worker process forked by :class:`_FramePool` (set by :func:`_worker_init`).
_IN_FORKED_WORKER = False


def _locate_frame(frame, frame_no, diameter, separation, minmass, invert, roi, refine,
                  contrast, spot_profile, gap_check, probe, spot_model="auto") -> pd.DataFrame:
    if np.issubdtype(np.asarray(frame).dtype, np.floating) and not np.isfinite(frame).all():
        from ..errors import TrackingError

        raise TrackingError(f"frame {frame_no} has {int((~np.isfinite(frame)).sum())} non-finite "
                            "pixels (NaN or inf); replace them before tracking")
    if contrast == "both":
        return _locate_both(frame, frame_no, diameter, separation, minmass, roi, refine,
                            spot_profile, gap_check, probe)
    if contrast is not None:
        invert = contrast == "dark"
    img = prepare(frame, bool(invert), roi)
    # the columns travel as a dict of arrays and become a DataFrame once, at the end
    # (selecting columns of a DataFrame costs pandas 3 about 1.3 ms, 2 % of a dense frame)
    if img.ndim == 2 and refine:
        f = _locate_refined(img, diameter, separation, minmass, spot_profile, probe, gap_check)
    else:
        t = trackpy_locate(img, diameter, minmass=minmass, separation=separation, preprocess=True)
        f = {c: t[c].to_numpy() for c in t.columns}
        if img.ndim == 3 and refine and len(f["x"]):
            f = _refine_3d(img, f, diameter, spot_model, minmass)
    if img.ndim == 2 and len(f["x"]):
        # the lit gaps of a bright-field packing (colloidcg.tracking.gaps); they stay in
        # the joint fit, where their light is modelled instead of pulling the particles
        x, y, dia = f["x"], f["y"], float(np.max(diameter))
        rings = True
        if probe is not None and gap_check:
            rings = rings_possible(img, x, y, dia)
            probe["rings"] = probe.get("rings", False) or rings
        if gap_check and rings:   # (where rings are ruled out, bright_gaps drops nothing)
            f = _rows(f, ~bright_gaps(img, x, y, dia))
        f = _rows(f, ~interstices(f["x"], f["y"], f["mass"], dia))
    if roi is not None:
        f["x"] = f["x"] + roi[0]
        f["y"] = f["y"] + roi[1]
    cols = (["z"] if "z" in f else []) + ["y", "x"] + \
        [c for c in ("mass", "size", "ecc", "signal", "raw_mass", "ep", "ep_z") if c in f]
    n = len(f["x"])
    return pd.DataFrame({"frame": np.full(n, frame_no, dtype=np.int64),
                         **{c: np.asarray(f[c], dtype=np.float64) for c in cols}})


def trackpy_rows(f) -> np.ndarray:
    """The rows of trackpy's ``locate`` (or ``batch``) output ``f`` (a DataFrame or a
    dict of columns) that are features: those with a position.

    With an anisotropic 3D diameter, trackpy 0.7 under pandas 3 joins its per-axis ``ep``
    columns to the features on a different index, which adds one row of NaN positions
    per feature whose index the other side lacks (on a stack of 2:1 spots, 53 of 130
    rows); those rows are not features."""
    ok = np.ones(len(f["x"]), bool)
    for c in ("z", "y", "x"):
        if c in f:
            ok &= np.isfinite(np.asarray(f[c], dtype=float))
    return ok


def trackpy_locate(img: np.ndarray, diameter, **kwargs) -> pd.DataFrame:
    """``trackpy.locate`` with the numba engine and its warnings silenced, keeping only
    the rows that are features (:func:`trackpy_rows`). ``kwargs`` go to trackpy."""
    import trackpy as tp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = tp.locate(img, diameter, engine="numba", **kwargs)
    return t[trackpy_rows(t)]


def start_widths_3d(diameter) -> tuple[float, float]:
    """The Gaussian widths (along z, in the plane; voxels) a 3D fit starts from: the
    diameter per axis over 3.5 (:func:`colloidcg.tracking.params.suggest_diameter`'s
    inverse)."""
    dia = np.broadcast_to(np.asarray(diameter, dtype=float), (3,))
    return float(dia[0] / 3.5), float(0.5 * (dia[1] + dia[2]) / 3.5)


def _refine_3d(img: np.ndarray, f: dict[str, np.ndarray], diameter, model: str = "auto",
               minmass: float = 0.0) -> dict[str, np.ndarray]:
    """Positions of 3D features refined by joint fits of the spot ``model`` ("gauss",
    "ball" or "auto"; :func:`colloidcg.tracking.refine3d.fit_spots_3d`), started from
    trackpy's centroids with widths diameter / 3.5 per axis, with the spots the centroids
    missed found in the fit's residual (rows appended; their mass, raw_mass and signal
    measured at the fitted position, ecc NaN); ``size`` becomes the fitted
    (Gaussian-equivalent) width in the plane,
    ``ep`` the standard error in the plane (the rms of the y and x ones) and ``ep_z`` that
    along z (voxels)."""
    from .refine3d import fit_spots_3d

    r = fit_spots_3d(img, f["z"], f["y"], f["x"], start_widths_3d(diameter), model=model)
    n = len(f["x"])
    out = {c: v for c, v in f.items() if not c.startswith(("ep", "size"))}
    added = np.flatnonzero(r["added"])
    if len(added):
        # spots found in the fit's residual (trackpy's margin left them out, or they were
        # merged into a neighbour's maximum): kept where centred in the stack with a mass,
        # scaled to the whole mask where a face cuts it, that passes minmass
        pos = np.c_[r["z"][added], r["y"][added], r["x"][added]]
        inside = np.all((pos >= -0.5) & (pos < np.array(img.shape) - 0.5), axis=1)
        added, pos = added[inside], pos[inside]
        radii = np.broadcast_to(np.asarray(diameter, dtype=float), (3,)) // 2
        bp = _bandpass_3d(img, diameter)
        mass, full = _ellipsoid_sums(bp, pos, radii)
        keep = full >= (minmass or 0.0)
        added, pos, mass = added[keep], pos[keep], mass[keep]
        extra = {"mass": mass, "raw_mass": _ellipsoid_sums(img, pos, radii)[0],
                 "signal": r["peak"][added]}
        for c, v in out.items():
            out[c] = np.r_[v, extra.get(c, np.full(len(added), np.nan))]
    rows = np.r_[np.arange(n), added].astype(np.int64)
    out.update(z=r["z"][rows], y=r["y"][rows], x=r["x"][rows], size=r["sigma_xy"][rows],
               ep=np.sqrt(0.5 * (r["ep_y"][rows] ** 2 + r["ep_x"][rows] ** 2)), ep_z=r["ep_z"][rows])
    return out


def _bandpass_3d(img: np.ndarray, diameter) -> np.ndarray:
    """trackpy's band-pass of a stack (noise 1 voxel, boxcar ``diameter`` per axis), the
    image trackpy's 3D masses are summed on."""
    import trackpy as tp

    d = tuple(int(v) for v in np.broadcast_to(np.asarray(diameter), (3,)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(tp.preprocessing.bandpass(img, 1, d), dtype=np.float64)


def _ellipsoid_sums(img: np.ndarray, pos: np.ndarray, radii) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``img`` over ellipsoids of semi-axes ``radii`` (z, y, x voxels) around the
    rounded positions ``pos`` (N, 3): the in-stack part, and that part scaled to the whole
    ellipsoid's voxel count (for spots cut by a face)."""
    r = np.maximum(np.asarray(radii, dtype=int), 1)
    grid = np.mgrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1].reshape(3, -1).T
    grid = grid[np.sum((grid / r) ** 2, axis=1) <= 1.0]
    out, full = np.zeros(len(pos)), np.zeros(len(pos))
    shape = np.array(img.shape)
    for i, c in enumerate(np.rint(pos).astype(int)):
        v = grid + c
        inside = np.all((v >= 0) & (v < shape), axis=1)
        out[i] = float(img[tuple(v[inside].T)].sum())
        full[i] = out[i] * len(grid) / max(int(inside.sum()), 1)
    return out, full


def _rows(columns: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The rows ``keep`` (bool mask) of every column."""
    return {c: v[keep] for c, v in columns.items()}


def _locate_both(frame, frame_no, diameter, separation, minmass, roi, refine, spot_profile,
                 gap_check, probe) -> pd.DataFrame:
    """Mixed contrast: bright and dark particles located separately, halos dropped."""
    parts = []
    for sign in (1, -1):
        f = locate_frame(frame, frame_no, diameter, separation, minmass, sign < 0, roi, refine,
                         spot_profile=spot_profile, gap_check=gap_check, probe=probe)
        f["contrast"] = np.int8(sign)
        parts.append(f)
    f = pd.concat(parts, ignore_index=True)
    drop = halos(f["x"].to_numpy(), f["y"].to_numpy(), f["mass"].to_numpy(),
                 f["contrast"].to_numpy(), float(np.max(diameter)))
    return f[~drop].reset_index(drop=True)


#: In mixed contrast, a spot of one contrast within HALO_REACH diameters of a spot of the
#: other at least HALO_RATIO times as massive is its halo or ring: a dark particle's
#: bright halo lies 4-6 px out for 5-7 px spots (the mixed-contrast analogue and the real
#: video), with a third of the core's mass or less.
HALO_REACH, HALO_RATIO = 1.5, 2.0


def halos(x: np.ndarray, y: np.ndarray, mass: np.ndarray, sign: np.ndarray, diameter: float
          ) -> np.ndarray:
    """Mask of the spots to drop in a mixed-contrast frame: of a bright and a dark spot
    closer than 1.5 ``diameter`` px, the less massive when the other is at least twice
    as massive (a dark particle's bright halo, a bright particle's dark ring); of a pair
    closer than ``diameter``, the less massive in any case. ``sign``: +1 bright, -1 dark,
    per spot."""
    from ..neighbours import pairs as close_pairs

    if len(x) < 2:
        return np.zeros(len(x), bool)
    pairs = close_pairs(np.c_[x, y], HALO_REACH * diameter)
    pairs = pairs[sign[pairs[:, 0]] != sign[pairs[:, 1]]]
    if len(pairs):
        a, b = pairs[:, 0], pairs[:, 1]
        near = np.hypot(x[a] - x[b], y[a] - y[b]) < diameter
        lopsided = np.maximum(mass[a], mass[b]) >= HALO_RATIO * np.minimum(mass[a], mass[b])
        pairs = pairs[near | lopsided]
    return _greedy_drop(pairs, mass, len(x))


#: A spot enclosed by at least three spots INTERSTITIAL_RATIO times as massive, each closer
#: to it than INTERSTITIAL_REACH times their own spacing, is the lit gap between particles
#: of a dense bright-field packing, not a particle. The gap of three touching disks sits at
#: 0.58 of their spacing, of four at 0.71; a real particle can only come this close to three
#: larger neighbours if it is under 0.44 of their diameter ((1 + 0.44) / 2 = 0.72), so
#: mixtures up to a size ratio of about 2.3 keep their small particles.
INTERSTITIAL_REACH, INTERSTITIAL_RATIO = 0.72, 1.5


def interstices(x: np.ndarray, y: np.ndarray, mass: np.ndarray,
                diameter: float | None = None) -> np.ndarray:
    """Mask of the spots that are interstices of a dense packing (see INTERSTITIAL_REACH).

    A spot's "spacing" is the distance to its nearest spot at least 1/INTERSTITIAL_RATIO
    as massive (its peers, gaps excluded); enclosed means no angular gap of half a turn
    or more between the directions to the heavier spots within reach.
    x, y : (N,) px; mass : (N,) any brightness unit. ``diameter`` (px), optional: only
    spots within INTERSTITIAL_QUERY diameters of each other are neighbours (faster; in a
    packing every spot that decides is far closer). None: the 12 nearest, however far.
    """
    from ..neighbours import nearest
    from ..neighbours import pairs as close_pairs

    n = len(x)
    drop = np.zeros(n, bool)
    if n < 4:
        return drop
    k = min(n - 1, INTERSTITIAL_K)
    pts = np.c_[x, y]
    if diameter is None:
        dist, idx = nearest(pts, k=k)
    else:
        # each spot's k nearest among the pairs within reach: a k-d tree's pair search
        # and a compiled selection take a third of its k-nearest query (2.3 ms for the
        # 10^3 spots of a dense frame)
        pairs = close_pairs(pts, INTERSTITIAL_QUERY * float(diameter), sort=False)
        dist, idx = _k_nearest_from_pairs(pts, pairs, k)
    valid = idx < n
    safe = np.where(valid, idx, 0)
    peer = valid & (mass[safe] * INTERSTITIAL_RATIO >= mass[:, None])
    spacing = np.where(peer.any(axis=1), dist[np.arange(n), peer.argmax(axis=1)], np.inf)
    heavier = valid & (mass[safe] >= INTERSTITIAL_RATIO * mass[:, None])
    return _enclosed(np.asarray(x, np.float64), np.asarray(y, np.float64), safe, dist,
                     heavier, spacing, INTERSTITIAL_REACH)


#: :func:`interstices` looks at each spot's INTERSTITIAL_K nearest spots ...
INTERSTITIAL_K = 12
#: ... within this many diameters when the diameter is known (an interstice's enclosing
#: particles lie within 0.72 of their spacing: all of them for spacings up to 2.7
#: diameters, where a packing's are about one).
INTERSTITIAL_QUERY = 2.0


@njit(cache=True)
def _k_nearest_from_pairs(pts, pairs, k):
    """The ``k`` nearest of each point of ``pts`` (n, 2) among the unordered ``pairs``
    (P, 2) of point indices: (dist, idx), each (n, k), nearest first; missing
    neighbours have distance inf and index n (as a k-d tree's query)."""
    n = pts.shape[0]
    out_d = np.full((n, k), np.inf)
    out_i = np.full((n, k), n, np.int64)
    cnt = np.zeros(n, np.int64)
    for p in range(pairs.shape[0]):
        for side in range(2):
            i = pairs[p, side]
            j = pairs[p, 1 - side]
            d = math.hypot(pts[j, 0] - pts[i, 0], pts[j, 1] - pts[i, 1])
            c = cnt[i]
            if c == k and d >= out_d[i, k - 1]:
                continue
            # insertion into the sorted row (ties: the smaller index first, as a k-d tree)
            t = c if c < k else k - 1
            while t > 0 and (out_d[i, t - 1] > d or (out_d[i, t - 1] == d and out_i[i, t - 1] > j)):
                if t < k:
                    out_d[i, t] = out_d[i, t - 1]
                    out_i[i, t] = out_i[i, t - 1]
                t -= 1
            out_d[i, t] = d
            out_i[i, t] = j
            if c < k:
                cnt[i] = c + 1
    return out_d, out_i


@njit(cache=True)
def _enclosed(x, y, idx, dist, heavier, spacing, reach):
    """For :func:`interstices`: spot i is enclosed when its heavier neighbours (``idx``,
    ``dist`` (N, K) of its K nearest, ``heavier`` (N, K)) closer than ``reach`` times
    their median spacing are at least three and leave no angular gap of half a turn.
    (A per-spot loop; compiled since a dense frame has ~10^3 spots.)"""
    n, k = idx.shape
    drop = np.zeros(n, np.bool_)
    buf = np.empty(k)
    ang = np.empty(k)
    for i in range(n):
        m = 0
        for t in range(k):
            if heavier[i, t]:
                buf[m] = spacing[idx[i, t]]
                m += 1
        if m < 3:
            continue
        lim = reach * _median_inplace(buf, m)
        c = 0
        for t in range(k):
            if heavier[i, t] and dist[i, t] <= lim:
                j = idx[i, t]
                ang[c] = math.atan2(y[j] - y[i], x[j] - x[i])
                c += 1
        if c < 3:
            continue
        _sort_small(ang, c)
        widest = ang[0] + 2 * math.pi - ang[c - 1]
        for t in range(1, c):
            widest = max(widest, ang[t] - ang[t - 1])
        drop[i] = widest < math.pi
    return drop


def _locate_refined(img: np.ndarray, diameter, separation, minmass: float,
                    spot_profile: bool = True, probe: dict | None = None,
                    gap_check: bool = False) -> dict[str, np.ndarray]:
    d = int(np.asarray(diameter).ravel()[0])
    sep = float(np.asarray(separation).ravel()[0])
    sigma = d / 3.5
    x, y, mass, bp = find_peaks(img, d, sep)
    keep = mass >= minmass
    x, y, mass = x[keep], y[keep], mass[keep]
    if gap_check and len(x):
        # the lit surroundings of bright-field particles standing apart are not fitted
        # (gaps of a packing are: their light is modelled, and they are dropped after)
        keep = ~lit_halos(img, x, y, d, mass=mass)
        x, y, mass = x[keep], y[keep], mass[keep]
    h, w = img.shape
    if len(x) == 0:
        return {c: np.zeros(0) for c in FEATURE_COLUMNS[1:]}
    r = _refine_with_profile(img, x, y, sigma, d, spot_profile, (bp, mass, gap_check))
    crowded = bool(r.pop("crowded"))
    if probe is not None:
        probe["profile_gain"] = max(probe.get("profile_gain", 0.0), float(r["profile_gain"]))
    rx, ry = r["x"], r["y"]
    radius = float(d // 2)
    mass, full = _disc_sums(bp, rx, ry, radius)
    # keep converged spots centred in the frame whose mass at the fitted position passes
    # minmass (as trackpy: after refinement; scaled up to the full disc where the border
    # cuts it); then the duplicate and satellite rules
    inside = (rx >= -0.5) & (rx < w - 0.5) & (ry >= -0.5) & (ry < h - 0.5)
    ok = r["converged"] & inside & (full >= minmass)
    if crowded:   # spots that moved from a peak between particles onto one (merged_partners)
        ok |= merged_partners(r["amplitude"], inside & ((full >= minmass) | r["partner"]), ok)
    # in a crowd a heavily overlapping pair sums to several times one spot's band-passed
    # mass: there a satellite must also be that much fainter in its own fitted light
    own = r["amplitude"][ok] if crowded else None
    ok[ok] = _thin(rx[ok], ry[ok], mass[ok], full[ok], sep, 2.0 * d, SATELLITE_RATIO, own)
    sel = np.flatnonzero(ok)
    rx, ry, s, ep = rx[sel], ry[sel], r["sigma"][sel], r["ep"][sel]
    failed = np.zeros(len(ep), bool)
    if len(ep) >= 10 and not crowded and not r["profile_gain"]:
        # (positions from own-light centroids already); where spots overlap, centroids are worse still
        # (and a disc cut by the frame's border pulls the centroid inwards)
        inside = (rx >= radius) & (rx <= w - 1 - radius) & (ry >= radius) & (ry <= h - 1 - radius)
        failed = (ep > FAILED_FIT_EP * np.median(ep)) & inside
    if failed.any():
        cx, cy = _centroids(bp, rx[failed], ry[failed], radius)
        # a centroid that wanders off (an edge, a wall) is no better: keep the fit there
        near = np.hypot(cx - rx[failed], cy - ry[failed]) < FAILED_FIT_MAX_SHIFT
        idx = np.flatnonzero(failed)[near]
        rx, ry = rx.copy(), ry.copy()
        rx[idx], ry[idx] = cx[near], cy[near]
    return {"x": rx, "y": ry, "mass": mass[sel], "size": s, "ecc": r["ecc"][sel],
            "signal": r["amplitude"][sel] / (2 * np.pi * s ** 2),
            "raw_mass": _disc_sums(img, rx, ry, radius)[0], "ep": ep}


def _fit_options(x: np.ndarray, y: np.ndarray, sigma: float) -> tuple[dict, bool]:
    """The joint fit's options for spots at (x, y) px of width ``sigma`` px:
    CROWDED_OPTIONS where their median neighbour distance is under CROWDED_SIGMAS sigmas,
    else REFINE_OPTIONS; and whether they are crowded."""
    if len(x) > 2:
        from ..neighbours import nearest

        if np.median(nearest(np.c_[x, y])[0]) < CROWDED_SIGMAS * sigma:
            return dict(CROWDED_OPTIONS), True
    return dict(REFINE_OPTIONS), False


def _refine_with_profile(img: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: float,
                         diameter: int, measure: bool = True,
                         candidates: tuple[np.ndarray, np.ndarray, bool] | None = None
                         ) -> dict[str, np.ndarray]:
    """The joint Gaussian fit; where the spots are not Gaussian, then positions from
    their own light (:mod:`colloidcg.tracking.psf`).

    1. :func:`refine_jointly` with :func:`_fit_options`.
    2. The radial profile that the spots share beyond their Gaussians is measured from
       the fit's residual (:func:`colloidcg.tracking.psf.radial_profile`, out to
       PSF_REACH diameters). If it explains less than ``psf.MIN_GAIN`` of the residual
       (Gaussian spots), the fit stands.
    3. Else the spots are fitted again as Gaussian (of the median width) + that profile
       (scaled to each spot's amplitude, moving with the spot), and each spot's position is the
       centroid of its own light (the frame less the background and the other spots'
       Gaussians and profiles) over a disc of PSF_CENTROID_RADIUS median fitted sigmas, with
       its standard error from the residual (:func:`colloidcg.tracking.psf.own_light_centroids`).

    Where step 2 finds a profile and ``candidates`` (the band-passed frame, the start
    positions' masses and whether lit gaps may be among them) is given, start positions
    that are noise maxima on one flat top (:func:`plateau_pairs`; not lit gaps,
    :func:`colloidcg.tracking.gaps.bright_gaps`, which the fit models as spots of their
    own) are merged first, the more massive kept, and everything runs again from the rest
    (once).

    Steps 2-3 are skipped when ``measure`` is False.

    Returns :func:`refine_jointly`'s dict (without the background map), plus
    ``profile_gain`` (0-d: share of the Gaussian fit's residual variance the profile
    explains; 0 when it was not measured) and ``crowded`` (whether the crowded options
    were used).
    """
    from .psf import (KNOT_PX, MAX_SIDE, MIN_GAIN, correlated_noise_gain, own_light_centroids,
                      radial_profile, render_profile, template_kernel, template_positions)
    from .refine import RENDER_HALF_WIDTH, render_spots
    from .uncertainty import noise_model

    opts, crowded = _fit_options(x, y, sigma)
    r = refine_jointly(img, x, y, sigma, return_background=True, **opts)
    bg = r.pop("background_map")
    r["profile_gain"] = np.float64(0.0)
    r["crowded"] = crowded
    if not (PSF_PROFILE and measure) or len(r["x"]) < PSF_MIN_SPOTS:
        return r
    # the residual on the central square the profile is measured on (psf.MAX_SIDE)
    h, w = img.shape
    y0, x0 = max(0, (h - MAX_SIDE) // 2), max(0, (w - MAX_SIDE) // 2)
    box = (slice(y0, y0 + MAX_SIDE), slice(x0, x0 + MAX_SIDE))
    spots = np.c_[r["x"] - x0, r["y"] - y0, r["amplitude"], r["sigma"]]
    reach = RENDER_HALF_WIDTH * spots[:, 3] + 1
    side = img[box].shape
    near = ((spots[:, 0] > -reach) & (spots[:, 0] < side[1] + reach)
            & (spots[:, 1] > -reach) & (spots[:, 1] < side[0] + reach))
    residual = img[box] - bg[box] - render_spots(side, spots[near])
    # each spot's profile scaled to its fitted amplitude (by its peak height instead:
    # clipped 8-bit spots 0.099 -> 0.154 px, rings the same); not stretched to its fitted
    # width: the widths fitted to ring-shaped spots in a crowd scatter (RMS 0.083 ->
    # 0.198 px on the bright-field ring condition with stretching), so one profile serves all
    s_med = float(np.median(r["sigma"]))
    scale = np.ones(len(r["sigma"]))
    weight = r["amplitude"] / np.median(r["amplitude"])
    knots, gain = radial_profile(residual, r["x"] - x0, r["y"] - y0, weight, scale,
                                 PSF_REACH * diameter)
    if gain < MIN_GAIN:
        return r
    if candidates is not None:
        bp, mass, gap_check = candidates
        flat = plateau_pairs(bp, x, y, PLATEAU_REACH * diameter)
        if len(flat) and gap_check:   # lit gaps of a bright-field packing are fitted as spots
            gap = bright_gaps(img, x, y, diameter)
            flat = flat[~gap[flat[:, 0]] & ~gap[flat[:, 1]]]
        if len(flat):
            keep = ~_greedy_drop(flat, mass, len(x))
            return _refine_with_profile(img, x[keep], y[keep], sigma, diameter, measure)
    corr = render_profile(img.shape, r["x"], r["y"], weight, scale, knots)
    # width fixed at the median: the profile carries the spots' shape (free widths:
    # clipped 8-bit spots 0.097 -> 0.152 px)
    r2 = refine_jointly(img, r["x"], r["y"], s_med, return_background=True, fit_sigma=False,
                        profile=(knots, KNOT_PX, weight, scale, corr), **opts)
    bg = r2.pop("background_map")
    r2["converged"] &= r["converged"]
    r2["added"] = r["added"]
    r2["partner"] = r["partner"]
    r2["profile_gain"] = np.float64(gain)
    r2["crowded"] = crowded
    spots = np.c_[r2["x"], r2["y"], r2["amplitude"], r2["sigma"]]
    model = render_spots(img.shape, spots) + render_profile(img.shape, r2["x"], r2["y"], weight, scale, knots)
    residual = img - bg - model
    amp_med = float(np.median(r2["amplitude"]))
    radius = _centroid_radius(knots, s_med, amp_med)
    cx, cy, ep = own_light_centroids(residual, r2["x"], r2["y"], r2["amplitude"], r2["sigma"],
                                     weight, scale, knots, radius,
                                     noise_gain=correlated_noise_gain(residual, radius))
    if PSF_TEMPLATE:
        moved = np.hypot(cx - r2["x"], cy - r2["y"])
        if np.isfinite(moved).any() and np.median(moved[np.isfinite(moved)]) > PSF_REMEASURE_SHIFT * KNOT_PX:
            # the profile was measured at positions that the centroids have since moved by
            # more than its resolution (flat discs: detected anywhere on their plateau, the
            # Gaussian fits ended 0.5-4.5 px from the centres, smearing a sharp edge at 12 px
            # over 8-16 px): measure it again around the centroids, and the template with it
            cx = np.where(np.isfinite(cx), cx, r2["x"])
            cy = np.where(np.isfinite(cy), cy, r2["y"])
            spots = np.c_[cx, cy, r2["amplitude"], r2["sigma"]]
            gauss = render_spots(img.shape, spots)
            knots, _ = radial_profile((img - bg - gauss)[box], cx - x0, cy - y0, weight, scale,
                                      PSF_REACH * diameter)
            r2["x"], r2["y"] = cx, cy
            model = gauss + render_profile(img.shape, cx, cy, weight, scale, knots)
            residual = img - bg - model
        # each spot's measured template fitted to its own light, from the centroid
        rt = _template_radius(knots, s_med, amp_med)
        rho = float(np.median(weight / np.maximum(r2["amplitude"], 1e-300)))
        gain_t = correlated_noise_gain(residual, rt, template_kernel(s_med, rho, knots, rt))
        # each pixel weighted by its expected noise variance, v0 + g x (the spots' light),
        # both measured from this residual (colloidcg.tracking.uncertainty.noise_model),
        # never less than the background's: below it (a bright-field particle's dark ring)
        # the template's misfit, not the noise, would set the weights (dilute rings: RMS
        # 0.084 -> 0.097 px with a floor of a tenth of it)
        peak = amp_med / (2 * np.pi * s_med ** 2)
        v0, g = noise_model(residual, model, peak)
        variance = np.maximum(v0 + g * model, v0)
        tx, ty, tep, tok = template_positions(residual, r2["x"], r2["y"], r2["amplitude"], r2["sigma"],
                                              weight, scale, knots, cx, cy, rt, noise_gain=gain_t,
                                              variance=variance)
        cx, cy = np.where(tok, tx, cx), np.where(tok, ty, cy)
        ep = np.where(tok, tep, ep)
    r2["x"], r2["y"] = cx, cy
    r2["ep"] = np.where(np.isfinite(ep), ep, r2["ep"])
    return r2


#: Measure the spots' non-Gaussian part and, where there is one, locate them by their own
#: light (:func:`_refine_with_profile`).
PSF_PROFILE = True
#: ... and then refine each own-light centroid by a fit of the spot's measured template to
#: its own light (:func:`colloidcg.tracking.psf.template_positions`).
PSF_TEMPLATE = True
#: The profile is measured again around the own-light centroids when they moved from the
#: positions it was measured at by more than this many knot spacings (median over spots).
PSF_REMEASURE_SHIFT = 0.5
#: The template fit's disc ends 1 px beyond the last radius where the median spot's light
#: is at least this share of its brightest (:func:`_template_radius`).
TEMPLATE_LEVEL = 0.05
#: Two start positions closer than PLATEAU_REACH diameters are noise maxima on one flat top
#: when the band-passed frame along the segment between them stays above (1 - PLATEAU_DIP)
#: of the lower of its two ends (:func:`plateau_pairs`); only where the spots are not
#: Gaussian (:func:`_refine_with_profile`). On trackpy.artificial flat tops and sharp discs
#: near contact (``benchmarks/tracking_artificial.py``) the separation that resolves
#: touching Gaussian spots (0.6 neighbour spacings) leaves two or three maxima on one top,
#: 0.55-0.68 diameters apart, the light between them 8-42 % below the lower one; between
#: two such particles it falls to the background. Those pairs fitted as two spots each
#: gave RMS 0.69 px (flat top to 0.8 of the radius) and 0.36 px (sharp discs of 16 px; seed 0);
#: merged, 0.08 and 0.12. Touching Gaussian spots can be as close with as little light
#: lost between them (distinct spots 0.54 diameters apart, 37 % lower between, in the
#: conditions table's softest bidisperse packing), hence the restriction to non-Gaussian
#: spots.
PLATEAU_REACH = 0.7
PLATEAU_DIP = 0.5


def plateau_pairs(bp: np.ndarray, x: np.ndarray, y: np.ndarray, reach: float) -> np.ndarray:
    """Pairs (P, 2) of spots (x, y (N,) px) closer than ``reach`` px whose light in the
    band-passed frame ``bp`` (Y, X) does not dip between them: along the segment joining
    them (sampled every half pixel, nearest pixel) it stays above (1 - PLATEAU_DIP) of
    the lower of the two ends, which must be positive."""
    from ..neighbours import pairs as close_pairs

    if len(x) < 2:
        return np.zeros((0, 2), np.int64)
    pairs = close_pairs(np.c_[x, y], reach)
    if len(pairs) == 0:
        return pairs
    h, w = bp.shape
    t = np.linspace(0.0, 1.0, int(np.ceil(2 * reach)) + 2)
    i, j = pairs[:, 0], pairs[:, 1]
    px = x[i, None] + (x[j] - x[i])[:, None] * t
    py = y[i, None] + (y[j] - y[i])[:, None] * t
    v = bp[np.clip(np.rint(py).astype(np.int64), 0, h - 1),
           np.clip(np.rint(px).astype(np.int64), 0, w - 1)]
    lower = np.minimum(v[:, 0], v[:, -1])
    flat = (lower > 0) & (v.min(axis=1) >= (1.0 - PLATEAU_DIP) * lower)
    return pairs[flat]
#: ... when at least this many spots share the frame (the profile is an average).
PSF_MIN_SPOTS = 10
#: Extent of the profile in diameters: a bright-field ring lies at about half a diameter,
#: the first bright ring of an Airy spot at 3.9 sigma (1.1 diameters).
PSF_REACH = 1.2
#: Radius of the own-light centroid's disc, in fitted sigmas: ring-shaped spots
#: (bright-field conditions, 3 frames) gave RMS 0.092 / 0.135 / 0.076 px at s/d 0.25 /
#: 0.35 / 0.20 with 2.0, about the same with 2.5, and 0.12-0.24 with 1.5 (a disc of 3 px
#: samples the spot too coarsely).
PSF_CENTROID_RADIUS = 2.0
#: ... or less where the median spot's light (its Gaussian + the profile) ends sooner:
#: 1 px beyond the radius at which, going out from its brightest radius, it first falls
#: under PSF_CENTROID_LEVEL of that maximum. A Gaussian fitted to a ring or a flat top
#: is broad, and a disc of 2 of its sigmas takes in misfit beyond the spot
#: (trackpy.artificial rings of radius 8 px: RMS 0.32 px with the 15.6 px of 2 sigmas,
#: 0.09 with 9 px; ``benchmarks/tracking_artificial.py``).
PSF_CENTROID_LEVEL = 0.1


def _median_light(knots: np.ndarray, sigma: float, amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """The median spot's radial light: radii (K,) px at the profile's knots and there its
    Gaussian of width ``sigma`` px and integral ``amplitude`` plus the profile ``knots``."""
    from .psf import KNOT_PX

    r = np.arange(len(knots)) * KNOT_PX
    return r, amplitude / (2 * np.pi * sigma ** 2) * np.exp(-0.5 * (r / sigma) ** 2) + knots


def _centroid_radius(knots: np.ndarray, sigma: float, amplitude: float) -> float:
    """Radius (px) of the own-light centroid's disc (PSF_CENTROID_RADIUS, _LEVEL) for
    spots of the median ``amplitude``: a Gaussian of width ``sigma`` (px) plus the radial
    profile ``knots`` (every psf.KNOT_PX px)."""
    r, light = _median_light(knots, sigma, amplitude)
    top = int(np.argmax(light))
    below = np.flatnonzero(light[top:] < PSF_CENTROID_LEVEL * light[top])
    if len(below) == 0 or light[top] <= 0:
        return PSF_CENTROID_RADIUS * sigma
    return min(PSF_CENTROID_RADIUS * sigma, float(r[top + below[0]]) + 1.0)


def _template_radius(knots: np.ndarray, sigma: float, amplitude: float) -> float:
    """Radius (px) of the disc the template fit uses (psf.TEMPLATE_RADIUS median sigmas)
    for spots of the median ``amplitude`` (a Gaussian of width ``sigma`` px plus the
    profile ``knots``), or 1 px beyond the last radius where the spot's light, bright or
    dark, is still TEMPLATE_LEVEL of its brightest, if that is sooner: a flat disc's
    Gaussian is broad (sharp-edged discs 24 px wide: sigma 9 px, 3.5 sigmas 32 px) while
    its light ends at its edge, and beyond it the disc held only background and
    neighbours (trackpy.artificial's: RMS 0.24 px against the centroid's 0.07). At a
    tenth the measured dark ring of the conditions table's bright-field spots (7 % of the
    peak at area fraction 0.7) was left out: 0.069 -> 0.091 px."""
    from .psf import TEMPLATE_RADIUS

    r, light = _median_light(knots, sigma, amplitude)
    top = float(np.max(np.abs(light)))
    lit = np.flatnonzero(np.abs(light) >= TEMPLATE_LEVEL * top)
    if top <= 0 or len(lit) == 0:
        return TEMPLATE_RADIUS * sigma
    return min(TEMPLATE_RADIUS * sigma, float(r[lit[-1]]) + 1.0)


@njit(cache=True)
def _centroids(bp, xs, ys, radius):
    """trackpy's refinement: the centroid of the band-passed frame in a disc of
    ``radius`` px, moved to it until it moves less than 0.1 px (at most 10 times)."""
    ny, nx = bp.shape
    r = int(radius)
    r2 = radius * radius
    ox = xs.copy()
    oy = ys.copy()
    for i in range(len(xs)):
        cx, cy = xs[i], ys[i]
        for _ in range(10):
            cu, cv = int(np.rint(cx)), int(np.rint(cy))
            sw = 0.0
            sx = 0.0
            sy = 0.0
            for dv in range(-r, r + 1):
                v = cv + dv
                if v < 0 or v >= ny:
                    continue
                for du in range(-r, r + 1):
                    u = cu + du
                    if u < 0 or u >= nx or du * du + dv * dv > r2:
                        continue
                    wgt = bp[v, u]
                    sw += wgt
                    sx += wgt * u
                    sy += wgt * v
            if sw <= 0.0:
                break
            nx_, ny_ = sx / sw, sy / sw
            moved = math.hypot(nx_ - cx, ny_ - cy)
            cx, cy = nx_, ny_
            if moved < 0.1:
                break
        ox[i], oy[i] = cx, cy
    return ox, oy


#: In a crowded frame a spot of the joint fit that failed convergence or minmass is kept
#: when its own fitted light is at least this fraction of the median spot's, and it passes
#: minmass at its fitted position or was found as a partner by the shared-width stage
#: (:func:`merged_partners`).
MERGED_PARTNER_LIGHT = 0.5
#: ... judged only when at least this many spots pass the usual rules (the median).
MERGED_PARTNER_MIN_SPOTS = 10


def merged_partners(amplitude: np.ndarray, candidate: np.ndarray, passed: np.ndarray
                    ) -> np.ndarray:
    """Mask of crowded-frame spots to keep although they failed convergence or minmass.

    Broad spots that touch (Airy spots at sigma/d 0.35, whose rings add up between
    particles) merge into one band-pass peak or give peaks between particles. The joint
    fit finds the particles, but the detector's rules then dropped them: a spot started
    on a peak between particles moves onto one that had no peak of its own, more than 2
    sigma away ("not converged"); a partner found in the shared-width stage's residual
    has a low band-passed mass (the band-pass subtracts the mean of a box that holds its
    neighbour's light). Their fitted light (the joint fit's amplitude, the neighbours'
    light modelled) is that of a particle, 0.6-1.2 of the median. Duplicates are left to
    the separation rule.

    Only spots that pass minmass at their fitted position, or partners of the
    shared-width stage (whose residual peaks must also exceed 5 noise sigmas), are
    candidates: in the mixed-contrast analogue (halos, noise) a crowded frame holds
    hundreds of spots found by the first stage's residual search that fail minmass with
    fitted light above half the median (precision 0.99 -> 0.986 when they were judged).

    Measured: the conditions benchmark's Airy s/d 0.35 (tracks, 10 frames), recall 0.996
    -> 1.000 at precision 1.000 (with the shared-width stage's search and pruning,
    :func:`colloidcg.tracking.refine._prune_redundant`); a single frame of the same kind
    (tests/test_tracking_psf.py, seed 1) 0.972 -> 1.000 (seeds 4, 5, 6: 0.994-1.000 with
    it; seed 2: 0.977, a spot fitted midway between three particles).

    amplitude : (N,) fitted integrated light; candidate : (N,) bool, the spots that may be
    kept (see above; centre in the frame); passed : (N,) bool, the spots that pass every
    usual rule. Returns (N,) bool, True for the spots to add (never one of ``passed``).
    """
    amplitude = np.asarray(amplitude, dtype=np.float64)
    out = np.zeros(len(amplitude), bool)
    if passed.sum() < MERGED_PARTNER_MIN_SPOTS:
        return out
    ref = float(np.median(amplitude[passed]))
    return candidate & ~passed & np.isfinite(amplitude) & (amplitude >= MERGED_PARTNER_LIGHT * ref)


def _thin(x, y, mass, full, separation, reach, ratio, own=None) -> np.ndarray:
    """Which spots to keep: of spots closer than ``separation`` only the most massive
    (greedy, as trackpy's ``where_close``); no spot within ``reach`` px of one at least
    ``ratio`` times as massive (by the border-scaled ``full`` mass): the bright halo and
    side lobes of ring-shaped (bright-field) particles. With ``own`` (N,), e.g. the
    fitted amplitudes, such a spot must also be ``ratio`` times fainter by ``own``."""
    from ..neighbours import Tree

    keep = np.ones(len(x), bool)
    if len(x) < 2:
        return keep
    tree = Tree(np.c_[x, y])
    faint = np.flatnonzero(full * ratio <= full.max())   # only these can be satellites
    if len(faint):
        for i, nb in zip(faint, tree.within(reach, query=np.c_[x[faint], y[faint]])):
            nb = np.asarray(nb, dtype=np.int64)
            big = full[nb] >= ratio * full[i]
            if own is not None:
                big &= own[nb] >= ratio * own[i]
            keep[i] = not np.any(big)
    pairs = tree.pairs(separation)
    keep &= ~_greedy_drop(pairs, mass, len(x))
    return keep


def _greedy_drop(pairs: np.ndarray, mass: np.ndarray, n: int) -> np.ndarray:
    """Of each close pair drop the less massive, brightest first (a dropped spot no
    longer removes others)."""
    drop = np.zeros(n, bool)
    if len(pairs) == 0:
        return drop
    partners: dict[int, list[int]] = {}
    for a, b in pairs:
        partners.setdefault(int(a), []).append(int(b))
        partners.setdefault(int(b), []).append(int(a))
    for i in sorted(partners, key=lambda k: -mass[k]):
        if not drop[i]:
            for j in partners[i]:
                if mass[j] <= mass[i]:
                    drop[j] = True
    return drop


def _duplicates(x: np.ndarray, y: np.ndarray, mass: np.ndarray, tol: float) -> np.ndarray:
    """Mask of spots within ``tol`` px of a more massive kept spot (trackpy's rule)."""
    from ..neighbours import pairs as close_pairs

    if len(x) < 2:
        return np.zeros(len(x), bool)
    pairs = close_pairs(np.c_[x, y], tol)
    return _greedy_drop(pairs, mass, len(x))


# ------------------------------------------------------------------ parallel driver
_FORKED: dict[str, Any] = {}   # the video, inherited by forked workers


def _locate_chunk(video, frame_numbers: Sequence[int], kwargs: dict[str, Any]
                  ) -> list[pd.DataFrame]:
    video = _FORKED["video"] if video is None else video   # None: a forked worker's own
    return [locate_frame(video[i], i, **kwargs) for i in frame_numbers]


def _locate_probe(video, frame_number: int, kwargs: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
    video = _FORKED["video"] if video is None else video
    probe: dict = {}
    return locate_frame(video[frame_number], frame_number, **kwargs, probe=probe), probe


class _FramePool:
    """Worker processes that locate frames (a context manager).

    Forked workers (Linux) inherit an in-memory video with no copy; otherwise the video
    is pickled (a :class:`colloidcg.io.Video` pickles as its path and workers reopen it).
    Fork is fast and needs no ``__main__`` guard in user scripts; it is safe because
    nothing here starts OpenMP threads (the numba kernels are single-threaded).
    """

    def __init__(self, video, n_proc: int):
        fork = sys.platform.startswith("linux")
        self.ctx = mp.get_context("fork" if fork else "spawn")
        self.inherit = fork and isinstance(video, np.ndarray)
        self.video, self.n_proc = video, n_proc

    def __enter__(self) -> "_FramePool":
        if self.inherit:
            _FORKED.update(video=self.video)
        self.cv2 = _single_threaded_cv2()
        self.cv2.__enter__()
        # BLAS on one thread in the parent while the pool lives: forked workers inherit
        # that and never change it (see _one_blas_thread), and the parent's own linking
        # meanwhile has no BLAS threads competing with the workers for the cores
        self.blas = _one_blas_thread()
        self.blas.__enter__()
        try:
            self.pool = cf.ProcessPoolExecutor(self.n_proc, mp_context=self.ctx,
                                               initializer=_worker_init,
                                               initargs=(self.ctx.get_start_method(),))
        except BaseException:       # no pool: leave OpenCV, BLAS and the video as found
            self.blas.__exit__(None, None, None)
            self.cv2.__exit__(None, None, None)
            _FORKED.clear()
            raise
        return self

    def chunk(self, frames: Sequence[int], kwargs: dict) -> cf.Future:
        """Locate ``frames`` with ``kwargs``; the future's result: list of DataFrames."""
        return self.pool.submit(_locate_chunk, None if self.inherit else self.video,
                                list(frames), kwargs)

    def probe(self, frame: int, kwargs: dict) -> cf.Future:
        """Locate one frame with the probes on; the future's result: (DataFrame, probe)."""
        return self.pool.submit(_locate_probe, None if self.inherit else self.video, frame,
                                kwargs)

    def __exit__(self, *exc):
        try:
            # a consumer that stops early (close()) drops the chunks not yet started
            self.pool.shutdown(wait=True, cancel_futures=True)
        finally:
            self.blas.__exit__(*exc)
            self.cv2.__exit__(*exc)
            _FORKED.clear()


def _workers(processes: int | None, n_frames: int) -> int:
    n_proc = processes or os.cpu_count() or 1
    return min(n_proc, max(1, n_frames // 2))


def _chunks(frames: list[int], n_proc: int) -> list[list[int]]:
    """Frames dealt out in chunks of up to 4 (fewer hand-overs), the last two per worker
    one by one, so that the workers run out of frames together: with chunks of 4 to the
    end, one worker could still be on its last 3 frames while the others wait."""
    size = max(1, min(4, len(frames) // (4 * n_proc)))
    head = frames[:max(0, len(frames) - 2 * n_proc)]
    return ([head[k:k + size] for k in range(0, len(head), size)]
            + [[k] for k in frames[len(head):]])


def _in_chunks(pool: _FramePool, frames: list[int], kwargs: dict, bar) -> Iterator[pd.DataFrame]:
    """Locate ``frames`` on ``pool`` in chunks (:func:`_chunks`); yield each frame's
    DataFrame in order, while later chunks run."""
    chunks = _chunks(frames, pool.n_proc)
    futures = [pool.chunk(c, kwargs) for c in chunks]
    for fut, c in zip(futures, chunks):
        yield from fut.result()
        bar.update(len(c))


def iter_locate(video, frame_numbers: Sequence[int], processes: int | None = None,
                progress: bool = True, **kwargs) -> Iterator[pd.DataFrame]:
    """Locate particles in many frames, in parallel over frames; yield one DataFrame per
    frame (as :func:`locate_frame`), in frame order, as soon as it is ready.

    ``video`` is anything indexable by frame number: an in-memory array is inherited
    by forked worker processes (no copy); a :class:`colloidcg.io.Video` pickles as its
    path and workers reopen it. Frames are dealt out in small chunks to ``processes``
    worker processes (default: all cores); the caller gets the first frames while later
    ones are still being located.
    """
    from tqdm.auto import tqdm

    frame_numbers = list(frame_numbers)
    n_proc = _workers(processes, len(frame_numbers))
    with tqdm(total=len(frame_numbers), desc="locate", unit="frame", disable=not progress,
              file=sys.stderr) as bar:
        if n_proc <= 1:
            for i in frame_numbers:
                yield locate_frame(video[i], i, **kwargs)
                bar.update(1)
            return
        with _FramePool(video, n_proc) as pool:
            yield from _in_chunks(pool, frame_numbers, kwargs, bar)


def merge_probes(probes: Sequence[dict]) -> dict:
    """What several frames' probes (:func:`locate_frame`'s ``probe``) found together: the
    largest ``profile_gain``, and ``rings`` if any frame that tested for them may hold them."""
    out: dict = {}
    for pr in probes:
        if "profile_gain" in pr:
            out["profile_gain"] = max(out.get("profile_gain", 0.0), pr["profile_gain"])
        if "rings" in pr:
            out["rings"] = out.get("rings", False) or pr["rings"]
    return out


def iter_locate_probed(video, probed: Sequence[int], rest: Sequence[int],
                       decide: Callable[[dict], dict], guess: dict,
                       processes: int | None = None, progress: bool = True,
                       **kwargs) -> Iterator[pd.DataFrame]:
    """Locate the ``probed`` frames with the probes as ``kwargs`` set them, decide from
    what they found how to locate the ``rest``, and locate it; yield one DataFrame per
    frame as soon as it is ready (the probed frames first; not in frame order).

    Parameters
    ----------
    probed, rest : sequences of int
        Frame numbers located with the probes on (``locate_frame(..., probe=...)``), and
        the other frames.
    decide : callable
        ``decide(probe) -> dict``: from the probed frames' merged findings
        (:func:`merge_probes`), the keyword arguments that change for ``rest``
        (``spot_profile``, ``gap_check``). Called once.
    guess : dict
        The decision expected before the probes are in. With several processes the
        probed frames are located in parallel, and the workers a probe leaves idle
        locate frames of ``rest`` with ``kwargs`` updated by ``guess`` meanwhile; they
        are kept if ``decide`` agrees, else located again. The results are therefore the
        same as probing first and locating the rest afterwards, in less time: on 2
        cores the three probes of :func:`colloidcg.tracking.track` used to take three
        frames' time before any other frame started, now two.
    """
    from tqdm.auto import tqdm

    probed, rest = list(probed), list(rest)
    n_proc = _workers(processes, len(probed) + len(rest))
    with tqdm(total=len(probed) + len(rest), desc="locate", unit="frame",
              disable=not progress, file=sys.stderr) as bar:
        if n_proc <= 1:
            probe: dict = {}
            for k in probed:
                yield locate_frame(video[k], k, **kwargs, probe=probe)
                bar.update(1)
            final = {**kwargs, **decide(probe)}
            for k in rest:
                yield locate_frame(video[k], k, **final)
                bar.update(1)
            return
        with _FramePool(video, n_proc) as pool:
            probes = [pool.probe(k, kwargs) for k in probed]
            # as many frames as the probes' last round leaves workers idle
            n_spec = min(len(rest), (-len(probed)) % n_proc)
            speculative = {**kwargs, **guess}
            spec = [pool.chunk([k], speculative) for k in rest[:n_spec]]
            found = []
            for fut in probes:
                f, pr = fut.result()
                found.append(pr)
                yield f
                bar.update(1)
            final = {**kwargs, **decide(merge_probes(found))}
            if final == speculative:
                for fut in spec:
                    yield from fut.result()
                    bar.update(1)
                todo = rest[n_spec:]
            else:   # wrong guess: those frames again with the decision
                for fut in spec:
                    fut.cancel()
                todo = rest
            yield from _in_chunks(pool, todo, final, bar)


def locate_many(video, frame_numbers: Sequence[int], processes: int | None = None,
                progress: bool = True, **kwargs) -> pd.DataFrame:
    """Locate particles in many frames, in parallel over frames (see :func:`iter_locate`).

    Returns one DataFrame: frame, y, x [, z] (px), mass, size, ecc, signal, raw_mass, ep.
    """
    parts = [p for p in iter_locate(video, frame_numbers, processes, progress, **kwargs)
             if len(p)]
    if not parts:
        return pd.DataFrame(columns=FEATURE_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def _worker_init(start_method: str = "fork") -> None:
    """Keep freed memory in the worker's heap: every frame allocates the same few
    image-sized arrays, and returning them to the OS makes each new one page-fault
    again (about a fifth of the time per frame). A forked worker also marks itself so
    that it leaves the BLAS thread count it inherited (one) alone."""
    global _IN_FORKED_WORKER
    _IN_FORKED_WORKER = start_method == "fork"
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 256 * 1024 * 1024)   # M_MMAP_THRESHOLD
            libc.mallopt(-1, 512 * 1024 * 1024)   # M_TRIM_THRESHOLD
        except (OSError, AttributeError):
            pass


class _single_threaded_cv2:
    """OpenCV's own thread pool off while worker processes share the cores."""

    def __enter__(self):
        import cv2

        self.n = cv2.getNumThreads()
        cv2.setNumThreads(1)

    def __exit__(self, *exc):
        import cv2

        cv2.setNumThreads(self.n)
