"""Finding particles in frames: trackpy detection + overlap-aware refinement, in parallel."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .refine import refine_jointly

FEATURE_COLUMNS = ["frame", "x", "y", "mass", "size", "ecc", "signal", "raw_mass", "ep"]


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


def locate_frame(frame: np.ndarray, frame_no: int, diameter, separation, minmass: float,
                 invert: bool, roi=None, refine: bool = True) -> pd.DataFrame:
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
        Fit all spots jointly (2D only) to remove the bias of overlapping neighbours.

    Returns
    -------
    DataFrame
        One row per particle: frame, x, y [, z] (px), mass, size, ecc, signal, raw_mass,
        ep (trackpy's columns; mass/size of spots found only by the joint fit are scaled
        from its amplitude and width, their ecc is NaN).
    """
    import trackpy as tp

    img = prepare(frame, invert, roi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = tp.locate(img, diameter, minmass=minmass, separation=separation,
                      engine="numba", preprocess=True)
    f = f.reset_index(drop=True)
    if img.ndim == 2 and refine and len(f):
        sigma = float(np.asarray(diameter).ravel()[0]) / 3.5
        r = refine_jointly(img, f["x"].to_numpy(), f["y"].to_numpy(), sigma)
        n = len(f)
        f["x"], f["y"] = np.where(r["converged"][:n], r["x"][:n], f["x"]), \
            np.where(r["converged"][:n], r["y"][:n], f["y"])
        extra = r["added"] & r["converged"]
        if extra.any():
            ok = r["amplitude"][:n] > 0
            mass_per_amp = np.median(f["mass"].to_numpy()[ok] / r["amplitude"][:n][ok]) if ok.any() else 1.0
            size_per_sig = np.median(f["size"].to_numpy() / r["sigma"][:n])
            amp = r["amplitude"][extra]
            add = pd.DataFrame({
                "x": r["x"][extra], "y": r["y"][extra], "mass": amp * mass_per_amp,
                "size": r["sigma"][extra] * size_per_sig, "ecc": np.nan,
                "signal": amp / (2 * np.pi * r["sigma"][extra] ** 2),
                "raw_mass": amp, "ep": np.nan})
            add = add[add["mass"] >= minmass]
            f = pd.concat([f, add], ignore_index=True)
        h, w = img.shape
        inside = (f["x"] >= -0.5) & (f["x"] < w - 0.5) & (f["y"] >= -0.5) & (f["y"] < h - 0.5)
        f = f[inside]
        f = _drop_duplicates(f, 0.5 * sigma)
    if roi is not None:
        f["x"] += roi[0]
        f["y"] += roi[1]
    f["frame"] = frame_no
    cols = ["frame"] + (["z"] if "z" in f else []) + ["y", "x"] + \
        [c for c in ("mass", "size", "ecc", "signal", "raw_mass", "ep") if c in f]
    return f[[c for c in cols]].reset_index(drop=True)


def _drop_duplicates(f: pd.DataFrame, tol: float) -> pd.DataFrame:
    """Of two spots that converged onto the same particle keep the brighter."""
    from scipy.spatial import cKDTree

    if len(f) < 2:
        return f
    pairs = cKDTree(f[["x", "y"]].to_numpy()).query_pairs(tol, output_type="ndarray")
    if len(pairs) == 0:
        return f
    mass = f["mass"].to_numpy()
    drop = np.where(mass[pairs[:, 0]] >= mass[pairs[:, 1]], pairs[:, 1], pairs[:, 0])
    return f.drop(index=f.index[np.unique(drop)])


# ------------------------------------------------------------------ parallel driver
def _locate_chunk(video, frame_numbers: Sequence[int], kwargs: dict[str, Any]) -> pd.DataFrame:
    parts = [locate_frame(video[i], i, **kwargs) for i in frame_numbers]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def locate_many(video, frame_numbers: Sequence[int], processes: int | None = None,
                progress: bool = True, **kwargs) -> pd.DataFrame:
    """Locate particles in many frames, in parallel over frames.

    ``video`` is anything indexable by frame number that pickles cheaply (a
    :class:`colloidcg.io.Video` pickles as its path; workers reopen it). Frames are
    dealt out in small chunks to ``processes`` worker processes (default: all cores).
    """
    from tqdm.auto import tqdm

    frame_numbers = list(frame_numbers)
    n_proc = processes or os.cpu_count() or 1
    n_proc = min(n_proc, max(1, len(frame_numbers) // 2))
    bar = tqdm(total=len(frame_numbers), desc="locate", unit="frame", disable=not progress,
               file=sys.stderr)
    try:
        if n_proc <= 1:
            parts = []
            for i in frame_numbers:
                parts.append(locate_frame(video[i], i, **kwargs))
                bar.update(1)
        else:
            chunk = max(1, min(8, len(frame_numbers) // (4 * n_proc)))
            chunks = [frame_numbers[k:k + chunk] for k in range(0, len(frame_numbers), chunk)]
            # fork is fast and needs no __main__ guard in user scripts; it is safe because
            # nothing here starts OpenMP threads (the numba kernels are single-threaded).
            ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            parts = [None] * len(chunks)
            with cf.ProcessPoolExecutor(n_proc, mp_context=ctx) as pool:
                futures = {pool.submit(_locate_chunk, video, c, kwargs): k for k, c in enumerate(chunks)}
                for fut in cf.as_completed(futures):
                    k = futures[fut]
                    parts[k] = fut.result()
                    bar.update(len(chunks[k]))
    finally:
        bar.close()
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return pd.DataFrame(columns=FEATURE_COLUMNS)
    return pd.concat(parts, ignore_index=True)
