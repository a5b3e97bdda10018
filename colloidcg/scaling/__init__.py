"""Learning large systems from small ones (issue 19; Chen et al., "Scalable learning of
macroscopic stochastic dynamics").

So far: hierarchical upsampling, :func:`upsample` — large-system snapshots built from a
small observed or simulated one by tiling, overlap removal and seam relaxation with the
learned model (see :mod:`colloidcg.scaling.upsample` and docs/scaling.md).
"""

from .upsample import (ClosestApproach, Configuration, Upsampled, closest_approach, separate, side_steps,
                       tile_configurations, upsample)

__all__ = ["ClosestApproach", "Configuration", "Upsampled", "closest_approach", "separate", "side_steps",
           "tile_configurations", "upsample"]
