"""Sub-pixel tracking of colloids: video in, trackpy-schema trajectories out.

>>> from colloidcg.tracking import track
>>> result = track("experiment.tif")                   # doctest: +SKIP
>>> result.tracks.head()                                # frame, particle, x, y, ...
>>> result.params.diameter, result.params.sources       # what was used, and why

Detection follows trackpy's rules (band-pass, local maxima, mass; computed with OpenCV,
:mod:`colloidcg.tracking.locate`) and linking is trackpy's; positions come from fitting
every spot jointly with its neighbours (:mod:`colloidcg.tracking.refine`), which removes
the bias that overlapping neighbours give centroids in dense packings. With
``refine=False`` locating is plain ``trackpy.locate``. Parameters not given are
estimated from the data (:mod:`colloidcg.tracking.params`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator

import numpy as np
import pandas as pd

from ..errors import ParameterError, TrackingError
from ..outputs import provenance, write_table
from .link import add_velocities, estimate_drift, filter_stubs, gc_frozen, link, subtract_drift
from .locate import (iter_locate, iter_locate_probed, locate_frame, prepare, start_widths_3d,
                     trackpy_locate)
from .params import (AMBIGUOUS_CONTRAST, TrackParams, blob_scan, blob_sigma, contrast_ambiguity,
                     frame_minmass,
                     model_residual, noise_level, representative_plane, spot_scale,
                     suggest_diameter,
                     suggest_contrast, suggest_invert, suggest_minmass, suggest_parameters_2d,
                     suggest_search_range, suggest_separation)
from .quality import Quality, assess, step_covariances
from .refine import refine_jointly

__all__ = ["track", "track_iter", "TrackParams", "TrackResult", "locate_frame", "refine_jointly",
           "suggest_parameters"]


@dataclass
class TrackResult:
    """What :func:`track` returns.

    Attributes
    ----------
    tracks : DataFrame
        frame, particle, x, y [, z] (px), mass, size, ecc, signal, raw_mass, ep,
        vx, vy [, vz] (px/frame); with drift subtraction also x_image, y_image.
    params : TrackParams
        The parameters used, every ``None`` resolved; ``params.sources`` says for each
        whether it was given or estimated.
    meta : dict
        The video's description (path, frames, shape, fps, um_per_px and their sources).
    drift : DataFrame or None
        Cumulative drift per frame (px) when it was estimated.
    quality : Quality or None
        The verdict on the tracks (:mod:`colloidcg.tracking.quality`): status "ok",
        "warning" or "unreliable", the reasons, and the metrics behind them.
    timings : dict
        Wall time (s) of each stage of the call: "parameters" (estimation, search range
        included), "locating" (the frame loop, parallel over frames), "linking" (linking
        and stub removal), "quality" (the verdict), "other" (the rest: reading the first
        frame, masking, drift, velocities), and "total". Not saved with the tracks.
    """

    tracks: pd.DataFrame
    params: TrackParams
    meta: dict[str, Any]
    drift: pd.DataFrame | None = None
    quality: Quality | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def sidecar(self) -> dict[str, Any]:
        fps, ump = self.meta.get("fps"), self.meta.get("um_per_px")
        extra = {"video": self.meta, "n_particles": int(self.tracks["particle"].nunique()),
                 "n_rows": len(self.tracks)}
        if self.quality is not None:
            extra["quality"] = self.quality.as_dict()
        if self.drift is not None:
            extra["drift_px"] = {c: self.drift[c].round(4).tolist() for c in self.drift.columns}
        return provenance(
            "track", {"video": self.meta.get("path")}, _jsonable(dataclasses.asdict(self.params)),
            units={"x": "px", "y": "px", "z": "px", "frame": "frame", "vx": "px/frame",
                   "vy": "px/frame", "fps": fps, "um_per_px": ump,
                   "um_per_slice": self.meta.get("um_per_slice")},
            **extra)

    def save(self, out_dir: str | Path, overwrite: bool = False) -> Path:
        """Write OUT_DIR/tracks.parquet and OUT_DIR/tracks.json (atomically)."""
        from ..outputs import check_writable

        out = Path(out_dir) / "tracks.parquet"
        check_writable([out, out.with_suffix(".json")], overwrite)
        return write_table(out, self.tracks, self.sidecar())


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (tuple, list)):
        return [_jsonable(v) for v in d]
    if isinstance(d, np.generic):
        return d.item()
    return d


def _frame_range(params: TrackParams, n: int, path) -> range:
    if params.frames is None:
        return range(n)
    start, stop = params.frames
    if not (0 <= start < stop <= n):
        raise ParameterError(f"frames: range {start}..{stop} is outside the video {path}, "
                             f"which has frames 0..{n - 1} (stop is exclusive, at most {n})")
    return range(start, stop)


def _nn_spacing(x: np.ndarray, y: np.ndarray) -> float:
    from ..neighbours import nearest

    if len(x) < 2:
        return float("nan")
    return float(np.median(nearest(np.c_[x, y])[0]))


def _axis_spacing(f: pd.DataFrame, diameter: tuple) -> np.ndarray:
    """The typical neighbour distance along each axis (voxels) of 3D features ``f``: the
    median nearest-neighbour distance with z scaled to the plane by the diameters' ratio
    (a stack's z voxels are often longer, and its spots' extent along z says by how much),
    scaled back per axis. The nearest neighbours of the projection on the plane were
    closer than the particles are."""
    from ..neighbours import nearest

    if len(f) < 2:
        return np.full(3, np.nan)
    aspect = np.asarray(diameter, dtype=float) / float(diameter[-1])
    pts = f[["z", "y", "x"]].to_numpy() / aspect
    return float(np.median(nearest(pts)[0])) * aspect


#: The search range is read from pairs of consecutive frames spread over the video (3 to
#: 20 of them) holding together at least this many features: the displacements' 99th
#: percentile is then set by thousands of steps.
SEARCH_RANGE_FEATURES = 5000


def _estimate_search_range(features: pd.DataFrame, frames: range) -> float:
    """Search range from nearest-feature distances between consecutive frames: 3 to 20
    pairs of frames spread over the range (SEARCH_RANGE_FEATURES), pooled."""
    pos = ["z", "y", "x"] if "z" in features else ["y", "x"]
    t = features["frame"].to_numpy()
    xyz = features[pos].to_numpy()
    order = np.argsort(t, kind="stable")
    t, xyz = t[order], xyz[order]

    def at(k):
        return xyz[np.searchsorted(t, k, "left"):np.searchsorted(t, k, "right")]

    f0 = at(frames.start)
    spacing = _nn_spacing(f0[:, -1], f0[:, -2]) if len(f0) > 1 else float("nan")
    # enough pairs for SEARCH_RANGE_FEATURES features (a dense frame's 10^3 need 5, not 20)
    per_frame = max(1, len(t)) / max(1, len(frames))
    n_pairs = int(np.clip(np.ceil(SEARCH_RANGE_FEATURES / per_frame), 3, 20))
    starts = np.unique(np.linspace(frames.start, max(frames.start, frames.stop - 2),
                                   min(n_pairs, max(1, len(frames) - 1))).astype(int))
    p0 = [at(k) for k in starts]
    p1 = [at(k + 1 if len(frames) > 1 else k) for k in starts]
    return round(suggest_search_range(p0, p1, spacing), 3)


def suggest_parameters(frame: np.ndarray, params: TrackParams | None = None) -> TrackParams:
    """Fill ``invert``, ``diameter``, ``separation`` and ``minmass`` from one frame.

    Values already set in ``params`` are kept. ``params.sources`` records for each
    parameter "given" or "estimated". Raises :class:`TrackingError` if nothing
    particle-like is found.
    """
    return _suggest(frame, params)[0]


#: A frame in which at least this share of one polarity's blobs are holes of the other's
#: (params.HOLE_DEPTH) shows ring-shaped particles of that other polarity: the contrast is
#: then not decided by the spot model's residual, which for touching rings of radius 5 px
#: (trackpy.artificial) preferred the holes and gaps between them (recall 0.18). Rings
#: give 0.38-0.40 (radius 3-5; 0.15 for touching rings of radius 8), flat discs 0.01-0.35,
#: the shared mixed-contrast, bright-field and stuck files 0.00-0.03, the shared foam 0.17.
RING_HOLES = 0.25


def _suggest(frame: np.ndarray, params: TrackParams | None) -> tuple[TrackParams, float | None]:
    """:func:`suggest_parameters`, and the frame's
    :func:`~colloidcg.tracking.params.contrast_ambiguity` when the contrast was estimated
    from the blob scan of the unoriented frame (``None`` otherwise), so that the quality
    verdict need not scan the frame again."""
    p = dataclasses.replace(params) if params is not None else TrackParams()
    p.sources = dict(p.sources)
    ndim = frame.ndim
    p.validate(ndim)
    for name in ("diameter", "separation", "minmass", "search_range"):
        p.sources.setdefault(name, "given" if getattr(p, name) is not None else "estimated")
    for name in ("spot_profile", "gap_check", "spot_model"):   # (estimated ones: later)
        if getattr(p, name) is not None:
            p.sources.setdefault(name, "given")
    if p.contrast is None and p.invert is not None:
        p.contrast = "dark" if p.invert else "bright"
        p.sources.setdefault("contrast", p.sources.get("invert", "given"))
    p.sources.setdefault("contrast", "given" if p.contrast is not None else "estimated")
    scan = None
    if p.contrast is None:
        raw = prepare(frame, False, p.roi)
        plane = representative_plane(raw)
        scan = blob_scan(plane)
        p.contrast = suggest_contrast(scan, area=float(plane.size)) if ndim == 2 else \
            ("dark" if suggest_invert(plane, scan) else "bright")
    if p.contrast == "both" and ndim != 2:
        raise ParameterError("contrast: 'both' (mixed contrast) is available for 2D frames only")
    # ring-shaped particles: many blobs of the other polarity are their holes, and the
    # contrast is theirs however alike the two polarities' strengths (touching rings)
    rings = False
    if scan is not None and p.sources["contrast"] == "estimated" and p.contrast != "both":
        holes = scan.get("hole_fraction", {})
        for polarity, other in (("bright", "dark"), ("dark", "bright")):
            if holes.get(other, 0.0) >= RING_HOLES and holes.get(other, 0.0) > holes.get(polarity, 0.0):
                p.contrast, rings = polarity, True
    p.invert = None if p.contrast == "both" else p.contrast == "dark"
    p.sources["invert"] = p.sources["contrast"]
    ambiguity = contrast_ambiguity(scan) if (
        scan is not None and p.sources["contrast"] == "estimated" and p.contrast != "both") else None
    p.sources.setdefault("objects", "given" if p.objects is not None else "estimated")
    if ndim == 2 and p.objects != "spots" and not rings and (
            p.contrast != "both" or p.sources["contrast"] == "estimated"):
        q = _suggest_cells(frame, p, scan)
        if q is not None:      # the segmentation settled what the blob scan could not
            return q, None
    p.objects = "spots"
    img = prepare(frame, bool(p.invert), p.roi)
    if ndim == 2:
        if p.contrast == "both" and scan is None:
            scan = blob_scan(prepare(frame, False, p.roi))
        if ambiguity is not None and ambiguity >= AMBIGUOUS_CONTRAST and not rings:
            return _contrast_by_residual(frame, p, scan), ambiguity
        return suggest_parameters_2d(img, p, scan, prepare(frame, True, p.roi)
                                     if p.contrast == "both" else None), ambiguity
    found, model = None, None
    if p.diameter is None:
        plane = representative_plane(img)
        s0 = blob_sigma(plane)
        if not np.isfinite(s0):
            raise TrackingError("no particles found: nothing spot-like in the first frame; "
                                "check the video or give --diameter and --invert")
        sig = np.full(ndim, s0)
        if ndim == 3:
            s_ac, _ = spot_scale(img)
            sig[0] = s0 * s_ac[0] / s_ac[1:].mean()
        d0 = suggest_diameter(sig)
        # trackpy's default separation (diameter + 1) here: a smaller one lets pixel noise
        # swamp the mass distribution that minmass is read from.
        f0 = trackpy_locate(img, d0 if ndim == 3 else d0[0], minmass=0)
        if len(f0) == 0:
            raise TrackingError("no particles found in the first frame; check the video or "
                                "give --diameter, --minmass and --invert")
        keep = f0["mass"].to_numpy() >= suggest_minmass(f0["mass"].to_numpy())
        f0 = f0[keep]
        found = f0
        if ndim == 2 and len(f0) >= 3:
            r = refine_jointly(img, f0["x"].to_numpy(), f0["y"].to_numpy(), s0, add_missed=False)
            ok = r["converged"]
            if ok.sum() >= 3:
                sig = np.full(2, float(np.median(r["sigma"][ok])))
        elif ndim == 3 and len(f0) >= 3:
            # the widths of Gaussians fitted to the spots (the blob scan of the maximum
            # projection read 1.2 px for spots of 1.1, and the diameter from it, 5 px, left
            # trackpy's centroids 0.14 px off where 9 px gave 0.02)
            from .refine3d import fit_spots_3d

            r = fit_spots_3d(img, f0["z"].to_numpy(), f0["y"].to_numpy(), f0["x"].to_numpy(),
                             (float(sig[0]), float(sig[1:].mean())), model=p.spot_model or "auto",
                             add_missed=False)
            model = r["model"]
            if r["ok"].sum() >= 3:
                sig = np.array([float(np.median(r["sigma_z"][r["ok"]]))]
                               + [float(np.median(r["sigma_xy"][r["ok"]]))] * 2)
        dia = suggest_diameter(sig)
        p.diameter = dia[0] if ndim == 2 else dia
    dia_t = p.diameter if isinstance(p.diameter, tuple) else (p.diameter,) * ndim
    if p.separation is None:
        if found is None:
            f1 = trackpy_locate(img, p.diameter, minmass=0)
            if len(f1):
                found = f1[f1["mass"] >= suggest_minmass(f1["mass"].to_numpy())]
        spacing = _axis_spacing(found, dia_t) if found is not None else np.full(ndim, np.nan)
        sep = suggest_separation(dia_t, spacing)
        if ndim == 3:
            # along z the spots' extent overstates the spacing in voxels (the PSF is
            # longer there): spheres touching along z were merged at 0.6 of it (recall
            # 0.95); half the spot's length keeps them and still joins one spot's maxima
            sep = (min(float(sep[0]), 0.5 * dia_t[0]),) + tuple(float(v) for v in sep[1:])
        p.separation = sep[0] if ndim == 2 else sep
    if p.minmass is None:
        f2 = trackpy_locate(img, p.diameter, minmass=0, separation=p.separation)
        floor = 0.0
        if ndim == 3:
            # the mass pure noise reaches (a stack of 2:1 spots at a tenth of the light:
            # 39 % of the detections were noise without it)
            floor = _noise_mass_floor_3d(img.shape, noise_level(representative_plane(img)),
                                         p.diameter, p.separation)
        if len(f2) == 0:
            raise TrackingError(f"no particles found in the first frame with diameter={p.diameter}; "
                                "check the video, --diameter and --invert")
        p.minmass = suggest_minmass(f2["mass"].to_numpy(), floor)
    if p.spot_model is None and p.refine:
        # one spot model for the whole video (frame by frame the choice could flip)
        p.sources.setdefault("spot_model", "estimated")
        p.spot_model = model or _decide_spot_model(img, p)
    return p, ambiguity


def _noise_mass_floor_3d(shape: tuple, noise: float, diameter, separation, seed: int = 0) -> float:
    """The largest mass trackpy's 3D locate finds in white noise of std ``noise`` on a
    stack of ``shape`` (at most 64 x 128 x 128 voxels): a minmass that pure noise does not
    pass (the 3D counterpart of :func:`~colloidcg.tracking.params.noise_mass_floor`)."""
    size = tuple(min(n, m) for n, m in zip(shape, (64, 128, 128)))
    img = np.random.default_rng(seed).normal(0.0, noise, size) + 10 * noise
    mass = trackpy_locate(img, diameter, minmass=0, separation=separation)["mass"].to_numpy()
    return float(mass.max()) if len(mass) else 0.0


def _decide_spot_model(img: np.ndarray, p: TrackParams) -> str:
    """The 3D spot model ("gauss" or "ball") that :func:`~colloidcg.tracking.refine3d.
    fit_spots_3d` chooses on the spots of ``img`` found with ``p``'s parameters."""
    from .refine3d import fit_spots_3d

    f = trackpy_locate(img, p.diameter, minmass=p.minmass, separation=p.separation)
    if len(f) < 3:
        return "gauss"
    return fit_spots_3d(img, f["z"].to_numpy(), f["y"].to_numpy(), f["x"].to_numpy(),
                        start_widths_3d(p.diameter), add_missed=False)["model"]


def _suggest_cells(frame: np.ndarray, p: TrackParams, scan: dict | None) -> TrackParams | None:
    """The parameters for cells (:mod:`colloidcg.tracking.cells`) when the first frame
    shows them, else None. Estimated (``p.objects`` None), cells are looked for only
    where the blob scan cannot tell particles from the holes between them
    (:data:`~colloidcg.tracking.params.AMBIGUOUS_CONTRAST`): a foam's flat cells and
    their wall junctions are blobs of both polarities alike (the shared data's foam:
    0.97). The polarity is the estimated contrast's, or where that was estimated too,
    the one whose segmentation shows cells (the more of them if both do). Given
    (``p.objects == "cells"``), the polarity that found the most cells is used even
    where :func:`~colloidcg.tracking.cells.cell_evidence` would not call them cells."""
    from .cells import cell_evidence

    raw = prepare(frame, False, p.roi)
    given = p.objects == "cells"
    if not given:
        sc = scan if scan is not None else blob_scan(raw)
        if contrast_ambiguity(sc) < AMBIGUOUS_CONTRAST:
            return None
    polarities = ("bright", "dark") if p.sources["contrast"] == "estimated" else (p.contrast,)
    found = {c: cell_evidence(raw, invert=c == "dark") for c in polarities}
    candidates = [c for c in polarities if found[c]["cells"]] or (list(polarities) if given else [])
    candidates = [c for c in candidates if found[c]["n"] > 0]
    if not candidates:
        if given:
            raise TrackingError("objects: 'cells' was given, but no cells were found in the first "
                                "frame; check the video and --contrast (the cells' interior)")
        return None
    c = max(candidates, key=lambda k: found[k]["n"])
    q = dataclasses.replace(p, objects="cells", contrast=c, invert=c == "dark",
                            sources=dict(p.sources))
    q.sources["invert"] = q.sources["contrast"]
    if q.diameter is None:
        q.diameter = max(3, int(round(found[c]["diameter"])) | 1)
    if q.separation is None:
        q.separation = 0.5 * q.diameter
    if q.minmass is None:
        q.minmass = 0.0
    for name in ("spot_profile", "gap_check"):   # spot checks: not for cells
        setattr(q, name, False)
        q.sources.setdefault(name, "not used for cells")
    return q


def _contrast_by_residual(frame: np.ndarray, p: TrackParams, scan: dict) -> TrackParams:
    """Bright or dark, when the blob scan cannot tell (:data:`AMBIGUOUS_CONTRAST`): the
    parameters are estimated for each polarity, and the one whose spot model leaves the
    smaller residual (:func:`colloidcg.tracking.params.model_residual`) is kept; the
    scan's choice where only it could be fitted."""
    best, best_res = None, math.inf
    for contrast in (p.contrast, "dark" if p.contrast == "bright" else "bright"):
        q = dataclasses.replace(p, contrast=contrast, invert=contrast == "dark",
                                sources=dict(p.sources))
        img = prepare(frame, q.invert, p.roi)
        try:
            q = suggest_parameters_2d(img, q, scan)
        except TrackingError:
            continue
        res = model_residual(img, int(q.diameter), float(q.separation), float(q.minmass))
        if best is None or res < best_res:
            best, best_res = q, res
    if best is None:
        raise TrackingError("no particles found: nothing spot-like in the first frame; check "
                            "the video or give --diameter and --contrast")
    return best


def track(video, params: TrackParams | dict | None = None, progress: bool = True,
          **overrides) -> TrackResult:
    """Locate and link every particle of a video.

    Parameters
    ----------
    video : path, :class:`colloidcg.io.Video` or ndarray (T, Y, X) / (T, Z, Y, X)
        The frames. A path is opened with :func:`colloidcg.io.open_video`.
    params : TrackParams or dict, optional
        Parameters; any left ``None`` are estimated from the data.
    progress : bool
        Show progress bars (tqdm) on stderr.
    **overrides
        Any :class:`TrackParams` field, e.g. ``diameter=11, minmass=500``.

    Returns
    -------
    TrackResult
        ``.tracks`` in the trackpy schema (px, frames), ``.params`` as resolved.

    Raises
    ------
    VideoError, ParameterError, TrackingError
        With one-line messages naming the file or parameter.
    """
    steps = track_iter(video, params, progress=progress, **overrides)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def track_iter(video, params: TrackParams | dict | None = None, progress: bool = False,
               meta: dict | None = None, **overrides) -> Generator[int, None, TrackResult]:
    """:func:`track` in steps, for callers that show progress or may stop early (the napari
    widget, batch runners).

    A generator: yields the number of frames located so far after every frame, and
    returns the :class:`TrackResult` (``StopIteration.value``; ``result = yield from
    track_iter(...)``). Closing it early (``close()``) stops the worker processes; frames
    already handed out finish first. ``meta`` describes an array ``video`` for the sidecar
    (fps, um_per_px, path); other arguments are those of :func:`track`.

    While it links and assesses the tracks (after the last yield), the objects that
    existed before are kept out of Python's cyclic garbage collection
    (:func:`colloidcg.tracking.link.gc_frozen`): full collections walking the whole heap
    cost as much as linking itself.
    """
    return (yield from _track_steps(video, params, progress, meta, overrides))


def _track_steps(video, params: TrackParams | dict | None, progress: bool, meta: dict | None,
                 overrides: dict) -> Generator[int, None, TrackResult]:
    """The body of :func:`track_iter`."""
    from ..io import Video, open_video

    t_start = time.perf_counter()
    timings = dict.fromkeys(("parameters", "locating", "linking", "quality"), 0.0)

    if isinstance(params, dict):
        params = TrackParams.from_dict(params)
    p = dataclasses.replace(params) if params is not None else TrackParams()
    for k, v in overrides.items():
        if not hasattr(p, k) or k == "sources":
            raise ParameterError(f"{k}: not a tracking parameter")
        setattr(p, k, v)
    if isinstance(video, (str, Path)):
        video = open_video(video)
    if isinstance(video, Video):
        meta = video.meta.as_dict()
        cfg_track = video.meta.config.get("track", {})
        given = {k for k, v in overrides.items() if v is not None}
        for k, v in cfg_track.items():   # colloidcg.toml [track] fills what was not given
            if k not in given and (params is None or getattr(params, k, None) is None):
                if not hasattr(p, k) or k == "sources":
                    raise ParameterError(f"{video.meta.path}: colloidcg.toml [track] has unknown key '{k}'")
                setattr(p, k, tuple(v) if isinstance(v, list) else v)
                p.sources = {**p.sources, k: "colloidcg.toml"}
        path = video.meta.path
    else:
        video = np.asarray(video)
        if video.ndim not in (3, 4) or video.shape[0] == 0:
            raise ParameterError(f"video: expected an array of shape (T, Y, X) or (T, Z, Y, X) with "
                                 f"T >= 1, got {video.shape}")
        meta = {"path": None, "fps": None, "um_per_px": None, **(meta or {}),
                "n_frames": video.shape[0], "frame_shape": list(video.shape[1:])}
        path = meta["path"] or "<array>"
    n = len(video)
    frames = _frame_range(p, n, path)
    first = np.asarray(video[frames.start])
    p.validate(first.ndim)
    if p.roi is not None:
        h, w = first.shape[-2:]
        x0, y0, x1, y1 = p.roi
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ParameterError(f"roi: {p.roi} is outside the {w} x {h} px frames of {path}")
    _check_frame(first, frames.start, path)
    if p.diameter is not None:
        small = min(first.shape[-2:]) if p.roi is None else min(p.roi[2] - p.roi[0], p.roi[3] - p.roi[1])
        if max(np.atleast_1d(p.diameter)) > small / 2:
            raise ParameterError(f"diameter: {p.diameter} px is more than half of the "
                                 f"{small} px frame (or roi) of {path}; expected the diameter of "
                                 "one particle's spot")
    try:
        with _timed(timings, "parameters"):
            p, ambiguity = _suggest(first, p)
    except TrackingError as e:
        raise TrackingError(f"{path}: {e}") from None
    kwargs = dict(diameter=p.diameter, separation=p.separation, minmass=p.minmass,
                  invert=p.invert, roi=p.roi, refine=p.refine, contrast=p.contrast,
                  spot_profile=p.spot_profile is not False, gap_check=p.gap_check is not False,
                  objects=p.objects)
    if first.ndim == 3:
        kwargs["spot_model"] = p.spot_model or "auto"
    parts, probe = [], None
    t_locate = time.perf_counter()
    try:
        if first.ndim == 2 and p.refine and (p.spot_profile is None or p.gap_check is None):
            # the first, middle and last frames are located with the undecided probes on
            # (a given one as given), and what they find decides the probes for the
            # video; their results are kept (the same as without a probe that finds
            # nothing)
            probed = sorted({frames[0], frames[len(frames) // 2], frames[-1]})
            probe = {}

            def decide(found: dict) -> dict:
                probe.update(found)
                _decide_probes(p, found)
                return dict(spot_profile=p.spot_profile is not False,
                            gap_check=p.gap_check is not False)

            # the guess: what the undecided probes find on Gaussian spots (nothing)
            guess = dict(spot_profile=p.spot_profile is True, gap_check=p.gap_check is True)
            located = iter_locate_probed(video, probed, [k for k in frames if k not in probed],
                                         decide, guess, processes=p.processes,
                                         progress=progress, **kwargs)
        else:
            located = iter_locate(video, list(frames), processes=p.processes,
                                  progress=progress, **kwargs)
        for done, f in enumerate(located, start=1):
            if len(f):
                parts.append(f)
            yield done
    except TrackingError as e:          # a bad frame met while locating: name the file
        raise TrackingError(f"{path}: {e}") from None
    if first.ndim == 2 and parts:
        final = dict(kwargs, spot_profile=p.spot_profile is not False, gap_check=p.gap_check is not False)
        parts, refit = _follow_fading(video, frames, parts, p, final)
        if refit:
            p.sources = {**p.sources, "minmass": f"estimated; per frame in {refit} faded frames"}
    timings["locating"] = time.perf_counter() - t_locate
    if not parts:
        raise TrackingError(f"no particles found in {path} with diameter={p.diameter}, "
                            f"minmass={p.minmass:.4g}, contrast={p.contrast}; check these parameters")
    # (frozen here, where nothing yields: held across the yields above, the freeze kept
    # the caller's whole heap out of collection for as long as it held the generator
    # unfinished, e.g. a GUI between frames)
    with gc_frozen():
        return _link_and_assess(parts, video, first, frames, p, path, meta, ambiguity,
                                probe, timings, t_start)


#: Fading (photobleaching): where the detections per frame fall below FADING_TRIGGER of
#: the first frames' (running medians, :func:`colloidcg.tracking.quality.count_range`),
#: every frame with fewer than FADING_FRAME of their count gets a minmass of its own, and is
#: located again with it where that is below FADING_REFIT of the first frame's.
FADING_TRIGGER = 0.8
FADING_FRAME = 0.95
FADING_REFIT = 0.8


def _follow_fading(video, frames: range, parts: list[pd.DataFrame], p: TrackParams,
                   kwargs: dict) -> tuple[list[pd.DataFrame], int]:
    """Frames whose particles have faded (photobleaching) located again with a minmass
    estimated on each (:func:`colloidcg.tracking.params.frame_minmass`, the first frame's
    rule, never below the noise floor of that frame).

    Only where the minmass was estimated, for one polarity of spots, on videos of 10 frames
    or more whose detections per frame fall to under FADING_TRIGGER of the first frames'
    count (a fall from the start: particles that come later do not trigger it). A frame
    with fewer than FADING_FRAME of that count is located again when its own minmass is
    under FADING_REFIT of the first frame's; particles that merely left the field keep their
    brightness, and with it the minmass. Returns the parts (each replaced frame's table
    swapped in) and how many frames were located again."""
    from .quality import count_range

    if (p.sources.get("minmass") != "estimated" or p.objects != "spots" or p.contrast == "both"
            or len(frames) < 10):
        return parts, 0
    table = {int(f["frame"].iloc[0]): f for f in parts}
    numbers = np.concatenate([np.full(len(f), k) for k, f in table.items()])
    ratio, runs = count_range(numbers, len(frames), frames.start)
    if ratio is None or ratio >= FADING_TRIGGER or runs[0] < runs[2]:
        return parts, 0
    refit = 0
    for k in frames:
        if len(table.get(k, ())) >= FADING_FRAME * runs[0]:
            continue
        frame = np.asarray(video[k])
        img = prepare(frame, bool(p.invert), p.roi)
        scan = blob_scan(img)
        mm = frame_minmass([img], p, float(scan["noise"]), scan["bright"])
        if mm is None or not mm < FADING_REFIT * p.minmass:
            continue
        f = locate_frame(frame, k, **{**kwargs, "minmass": mm})
        if len(f):
            table[k] = f
        refit += 1
    return [table[k] for k in sorted(table)], refit


def _link_and_assess(parts: list[pd.DataFrame], video, first: np.ndarray, frames: range,
                     p: TrackParams, path, meta: dict, ambiguity, probe: dict | None,
                     timings: dict[str, float], t_start: float) -> TrackResult:
    """The located frames ``parts`` linked, assessed and returned as a TrackResult (the
    steps of :func:`track` after locating; ``timings`` is completed in place)."""
    features = pd.concat(parts, ignore_index=True).sort_values("frame", kind="stable",
                                                               ignore_index=True)
    features, masked = _mask_no_sample(features, first, p)
    if p.search_range is None:
        with _timed(timings, "parameters"):
            p.search_range = _estimate_search_range(features, frames)
    with _timed(timings, "linking"):
        tracks = link(features, p.search_range, p.memory)
        tracks = filter_stubs(tracks, min(p.min_length, len(frames)))
    if len(tracks) == 0:
        from .quality import frame_correlation

        k0 = frames.start
        sample = [np.asarray(video[k]) for k in range(k0, min(k0 + 5, frames.stop))]
        corr = frame_correlation(sample, int(np.max(p.diameter)) | 1) if first.ndim == 2 else float("nan")
        why = (f"; consecutive frames are nearly unrelated (correlation {corr:.2f}): particles move "
               "farther than their size between frames, or the frames are noise"
               if np.isfinite(corr) and corr < 0.3 else "")
        raise TrackingError(f"no trajectories of at least {p.min_length} frames in {path} "
                            f"(search range {p.search_range:.3g} px){why}; lower --min-length or "
                            "check --search-range")
    # ep is a standard error from the fit (tracking.uncertainty, calibrated on known
    # truth); the tracks' own noise is a check only (the verdict's ep_tracks_ratio):
    # scaled to it, median ep / error ranged 0.51-1.65 over the conditions benchmark
    # (1.16 and 0.94 on two realisations of one condition: the motion's own step
    # correlations bias it), so it is not applied
    with _timed(timings, "quality"):
        covariances = step_covariances(tracks)
        quality = _assess(tracks, p, frames, video, first, ambiguity, covariances)
    quality.metrics.update(no_sample_fraction=round(masked, 4))
    if probe is not None:
        quality.metrics.update(probed_profile_gain=round(probe.get("profile_gain", 0.0), 4),
                               probed_rings_possible=bool(probe.get("rings", True)))
    drift = None
    if p.subtract_drift:
        drift = estimate_drift(tracks)
        tracks = subtract_drift(tracks, drift)
    tracks = add_velocities(tracks)
    first_cols = ["frame", "particle", "x", "y"] + (["z"] if "z" in tracks else [])
    rest = [c for c in tracks.columns if c not in first_cols]
    tracks = tracks[first_cols + rest]
    tracks["frame"] = tracks["frame"].astype(np.int64)
    tracks["particle"] = tracks["particle"].astype(np.int64)
    timings["total"] = time.perf_counter() - t_start
    timings["other"] = timings["total"] - sum(timings[k] for k in ("parameters", "locating",
                                                                      "linking", "quality"))
    return TrackResult(tracks=tracks, params=p, meta=meta, drift=drift, quality=quality,
                       timings=timings)


#: The spots' radial profile is measured in every frame when, on one of the probed
#: frames (first, middle, last), it explains at least this fraction of :data:`colloidcg.tracking.psf.MIN_GAIN` (the gain
#: at which a frame's fit uses it): half, so that a video whose gain hovers near the
#: threshold keeps deciding frame by frame.
PROFILE_PROBE_MARGIN = 0.5


def _decide_probes(p: TrackParams, probe: dict) -> None:
    """Fill ``p.spot_profile`` and ``p.gap_check`` (where None) from what the probed frames
    found (``probe``: :func:`colloidcg.tracking.locate.locate_frame`'s, the largest
    profile gain and whether any frame may hold rings)."""
    from .psf import MIN_GAIN

    decided = {"spot_profile": probe.get("profile_gain", 0.0) >= PROFILE_PROBE_MARGIN * MIN_GAIN,
               "gap_check": bool(probe.get("rings", True))}
    for name, value in decided.items():
        if getattr(p, name) is None:
            setattr(p, name, value)
            p.sources[name] = "estimated"


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str):
    """Add the wall time (s) of the block to ``timings[stage]``."""
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] += time.perf_counter() - t


def _check_frame(frame: np.ndarray, k: int, path) -> None:
    """Refuse a frame with non-finite pixels, or one that is blank, naming the frame."""
    if np.issubdtype(frame.dtype, np.floating):
        bad = ~np.isfinite(frame)
        if bad.any():
            where = np.argwhere(bad)[0]
            raise TrackingError(f"{path}: frame {k} has {int(bad.sum())} non-finite pixels "
                                f"(NaN or inf; the first at row {where[-2]}, column {where[-1]}); "
                                "replace them (e.g. by the local background) before tracking")
    if frame.size and frame.min() == frame.max():
        raise TrackingError(f"{path}: frame {k} is blank (every pixel is {frame.flat[0]}); "
                            "nothing can be tracked in it")


def _mask_no_sample(features: pd.DataFrame, first: np.ndarray, p: TrackParams
                    ) -> tuple[pd.DataFrame, float]:
    """Drop detections where the first frame shows no sample (black borders, walls;
    :func:`colloidcg.tracking.params.sample_mask`); returns them and the masked share
    of the frame. 2D, single-contrast only; cells are masked frame by frame where they
    are found (:func:`colloidcg.tracking.cells.locate_cells`), so only the share is
    measured here."""
    from .params import sample_mask

    if first.ndim != 2 or p.contrast == "both" or "signal" not in features or not len(features):
        return features, 0.0
    img = prepare(first, bool(p.invert), p.roi)
    # the particles' height in the frame the mask is drawn from: a video whose particles
    # fade (photobleaching) has a lower median over all frames, and the first frame's
    # bright packing was then masked as "no sample"
    frame = features["frame"].to_numpy()
    own = frame == frame.min()
    peak = float(np.nanmedian(features["signal"].to_numpy(float)[own]))
    mask = sample_mask(img, int(np.max(p.diameter)), peak)
    if mask is None:
        return features, 0.0
    if p.objects == "cells":   # masked per frame while locating (a raft moves: cells.py)
        return features, float(1 - mask.mean())
    x0, y0 = (p.roi[0], p.roi[1]) if p.roi is not None else (0, 0)
    h, w = mask.shape
    xi = np.clip(np.rint(features["x"].to_numpy() - x0).astype(int), 0, w - 1)
    yi = np.clip(np.rint(features["y"].to_numpy() - y0).astype(int), 0, h - 1)
    return features[mask[yi, xi]].reset_index(drop=True), float(1 - mask.mean())


def _assess(tracks: pd.DataFrame, p: TrackParams, frames: range, video, first: np.ndarray,
            ambiguity: float | None = None, covariances: dict | None = None) -> Quality:
    """The quality verdict, with the frame correlation of up to 5 consecutive frames
    from the middle of the range. ``ambiguity``: the first frame's contrast ambiguity
    if already measured (computed here when the contrast was estimated and it is not);
    ``covariances``: :func:`~colloidcg.tracking.quality.step_covariances` of ``tracks``."""
    from .params import noise_level

    k0 = frames.start + max(0, (len(frames) - 5) // 2)
    numbers = list(range(k0, min(k0 + 5, frames.stop)))
    sample = [np.asarray(video[k]) for k in numbers]
    if first.ndim == 3:                      # z-stacks: the plane of maximum intensity
        sample = [s.max(axis=0) for s in sample]
        first = first.max(axis=0)
    origin = (0, 0)
    if p.roi is not None:
        x0, y0, x1, y1 = p.roi
        sample = [s[y0:y1, x0:x1] for s in sample]
        first = first[y0:y1, x0:x1]
        origin = (x0, y0)
    d = float(np.max(p.diameter))
    if p.sources.get("contrast") != "estimated" or p.contrast == "both" or p.objects == "cells":
        ambiguity = None      # (cells: the segmentation settled it, _suggest_cells)
    elif ambiguity is None:
        ambiguity = contrast_ambiguity(blob_scan(np.asarray(first, np.float32)))
    return assess(tracks, diameter=d, search_range=float(p.search_range), n_frames=len(frames),
                  noise=noise_level(np.asarray(first, np.float32)), frames=sample,
                  frame_numbers=numbers if first.ndim == 2 and "z" not in tracks else None,
                  origin=origin, contrast_ambiguity=ambiguity, covariances=covariances,
                  first_frame=frames.start)
