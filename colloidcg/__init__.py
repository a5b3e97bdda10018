"""colloidcg: colloid microscopy video in; trajectories, rearrangements and a learned,
structure-preserving stochastic particle model out.

The stages are modules: :mod:`colloidcg.io` (video), :mod:`colloidcg.tracking`,
:mod:`colloidcg.synthetic` and the later stages described in the README and docs/.
:func:`load_model` reloads a trained model (bundle or model directory).
"""

from ._version import __version__
from .errors import ColloidcgError
from .io import open_video

__all__ = ["__version__", "open_video", "load_model", "ColloidcgError"]


def load_model(path, device="cpu"):
    """Reload a model bundle or model directory: returns ``(model, config)``.

    See :func:`colloidcg.export.load_model` (imported on first use: torch is heavy).
    """
    from .export import load_model as _load

    return _load(path, device=device)
