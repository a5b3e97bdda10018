"""Where and when the material rearranges.

- :func:`d2min`: Falk-Langer non-affine displacement of every particle and frame.
- :func:`detect`: the whole stage, with defaults measured from the data: D2min,
  ``rearranging`` labels, events, and the structural descriptors of
  :mod:`colloidcg.structure`.
- :func:`find_events`: group rearranging particles into events.
- :func:`softness_baseline`: logistic regression on radial structure functions that
  predicts rearrangements (Cubuk et al. 2015); the bar for learned structural variables.
- :func:`score_against_softness`: ROC AUC of any per-row value (learned S, dS/dt, size,
  ...) on exactly the softness baseline's test rows, with block-bootstrap errors.
- :func:`plot_d2min_frame`: PNG of D2min over one frame.

Units: positions px, D2min px^2, lag frames.
"""

from .d2min import d2min
from .defaults import choose_lag, choose_threshold, cutoff_from_gr, typical_displacement
from .events import event_table, find_events, label_events
from .pipeline import Rearrangements, detect
from .plot import busiest_frame, plot_d2min_frame
from .scoring import ScoreReport, score_against_softness, softness_test_rows, softness_train_rows
from .softness import SoftnessResult, softness_baseline
from ..structure.frames import fov_from_shape

__all__ = [
    "d2min", "detect", "Rearrangements", "find_events", "label_events", "event_table",
    "choose_lag", "choose_threshold", "cutoff_from_gr", "typical_displacement",
    "softness_baseline", "SoftnessResult", "score_against_softness", "ScoreReport",
    "softness_test_rows", "softness_train_rows", "plot_d2min_frame", "busiest_frame",
    "fov_from_shape",
]
