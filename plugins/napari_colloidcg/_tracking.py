"""The Track widget's calls into :mod:`colloidcg.tracking`.

Live preview locates one frame with the widget's parameters, exactly as "Track all" does
for every frame; "Track all" runs :func:`colloidcg.tracking.track_iter`, which yields after
every located frame (napari's progress bar) and stops its worker processes when the
napari worker is quit (cancel).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from colloidcg.tracking import TrackParams, locate_frame, track_iter

__all__ = ["locate_preview", "track_steps"]


def locate_preview(frame: np.ndarray, frame_no: int, params: TrackParams) -> pd.DataFrame:
    """Particles of one frame with the given (complete) parameters, as Track all finds them."""
    return locate_frame(np.asarray(frame), frame_no, params.diameter, params.separation,
                        params.minmass, params.invert, roi=params.roi, refine=params.refine)


def track_steps(video, params: TrackParams, meta: dict):
    """Track ``video`` (a :class:`colloidcg.io.Video` or an array (T, Y, X) described by
    ``meta``); yields frames located so far, returns the TrackResult."""
    return (yield from track_iter(video, params, meta=meta))
