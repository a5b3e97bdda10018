"""colloidcg: colloid microscopy video in; trajectories, rearrangements and a learned,
structure-preserving stochastic particle model out.

The stages are modules: :mod:`colloidcg.io` (video), :mod:`colloidcg.tracking`,
:mod:`colloidcg.synthetic` and the later stages described in the README.
"""

from ._version import __version__
from .errors import ColloidcgError
from .io import open_video

__all__ = ["__version__", "open_video", "ColloidcgError"]
