"""Live preview of the Track widget: one frame located with the widget's parameters,
exactly as "Track all" (:func:`colloidcg.tracking.track_iter`, run in a napari worker that
yields after every located frame and stops its processes when quit) locates every frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from colloidcg.tracking import TrackParams, locate_frame

__all__ = ["locate_preview"]


def locate_preview(frame: np.ndarray, frame_no: int, params: TrackParams) -> pd.DataFrame:
    """Particles of one frame with the given (complete) parameters, as Track all finds them."""
    return locate_frame(np.asarray(frame), frame_no, params.diameter, params.separation,
                        params.minmass, params.invert, roi=params.roi, refine=params.refine)
