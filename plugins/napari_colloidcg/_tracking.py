"""Tracking in steps the GUI can show and stop: the same stages as
:func:`colloidcg.tracking.track`, with a progress step per located frame.

:func:`colloidcg.tracking.track` runs to the end once started; the Track widget needs to
report every frame to napari's progress bar and to stop when asked. So this generator
locates frames in blocks with :func:`colloidcg.tracking.locate.iter_locate` (in parallel,
as ``track`` does), yields after each frame, and then links, filters and adds velocities
with the tracking package's own functions. Stopping it (``close()``, which napari's
worker ``quit()`` does at the next yield) waits at most for the frames of the current
block.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np
import pandas as pd

from colloidcg.errors import TrackingError
from colloidcg.tracking import TrackParams, TrackResult, suggest_parameters
from colloidcg.tracking.link import add_velocities, estimate_drift, filter_stubs, link, subtract_drift
from colloidcg.tracking.locate import FEATURE_COLUMNS, iter_locate, locate_frame

#: Frames per block and worker process between chances to stop.
FRAMES_PER_WORKER = 4


def locate_preview(frame: np.ndarray, frame_no: int, params: TrackParams) -> pd.DataFrame:
    """Particles of one frame with the given (complete) parameters, as Track all finds them."""
    return locate_frame(np.asarray(frame), frame_no, params.diameter, params.separation,
                        params.minmass, params.invert, roi=params.roi, refine=params.refine)


def track_steps(video, params: TrackParams, meta: dict) -> Iterator[int]:
    """Locate and link every frame of ``video``; yields the number of frames located so
    far and returns a :class:`colloidcg.tracking.TrackResult`.

    ``video`` is a :class:`colloidcg.io.Video` (worker processes reopen it by path) or an
    array (T, Y, X); ``params`` any left ``None`` are estimated as ``track`` does;
    ``meta`` describes the video for the sidecar (path, n_frames, frame_shape, fps,
    um_per_px).
    """
    from colloidcg.tracking import _estimate_search_range, _frame_range

    p = dataclasses.replace(params)
    n = len(video)
    frames = _frame_range(p, n, meta.get("path") or "<array>")
    first = np.asarray(video[frames.start])
    p.validate(first.ndim)
    p = suggest_parameters(first, p)
    kwargs = dict(diameter=p.diameter, separation=p.separation, minmass=p.minmass,
                  invert=p.invert, roi=p.roi, refine=p.refine)
    n_proc = p.processes or os.cpu_count() or 1
    block = FRAMES_PER_WORKER * n_proc
    numbers = list(frames)
    parts = []
    done = 0
    for k in range(0, len(numbers), block):
        for f in iter_locate(video, numbers[k:k + block], processes=p.processes, progress=False,
                             **kwargs):
            if len(f):
                parts.append(f)
            done += 1
            yield done
    features = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=FEATURE_COLUMNS)
    where = meta.get("path") or "the video"
    if len(features) == 0:
        raise TrackingError(f"no particles found in {where} with diameter={p.diameter}, "
                            f"minmass={p.minmass:.4g}, invert={p.invert}; check these parameters")
    if p.search_range is None:
        p.search_range = _estimate_search_range(features, frames)
    tracks = link(features, p.search_range, p.memory)
    tracks = filter_stubs(tracks, min(p.min_length, len(frames)))
    if len(tracks) == 0:
        raise TrackingError(f"no trajectories of at least {p.min_length} frames in {where}; "
                            "lower min_length or check the search range")
    drift = None
    if p.subtract_drift:
        drift = estimate_drift(tracks)
        tracks = subtract_drift(tracks, drift)
    tracks = add_velocities(tracks)
    first_cols = ["frame", "particle", "x", "y"] + (["z"] if "z" in tracks else [])
    tracks = tracks[first_cols + [c for c in tracks.columns if c not in first_cols]]
    tracks["frame"] = tracks["frame"].astype(np.int64)
    tracks["particle"] = tracks["particle"].astype(np.int64)
    return TrackResult(tracks=tracks.reset_index(drop=True), params=p, meta=meta, drift=drift)
