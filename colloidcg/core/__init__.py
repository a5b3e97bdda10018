"""The metriplectic core: a structure-preserving stochastic particle model.

- :mod:`.graph`: neighbour pairs (cKDTree cell search, periodic or open, Verlet skin);
- :mod:`.nets`: constrained learned pieces (compact kernel, convex monotone U, pair
  coefficients);
- :mod:`.encoder`: rotation/translation/permutation-invariant structural encoder for S;
- :mod:`.model`: energy, drift (L dE + M dS + k_B div M), FDT noise, dense M for tests;
- :mod:`.ou`: exact Ornstein-Uhlenbeck coefficients of the substrate friction over a frame
  and the statistics of frame-averaged (finite-difference) velocities;
- :mod:`.integrate`: seeded rollouts (exact-OU or Euler-Maruyama steps) with a Verlet skin;
- :mod:`.loss`: Gaussian transition likelihoods;
- :mod:`.tabulate`: tabulated pair functions for fast rollouts.
"""

from .graph import NeighbourList, find_pairs, minimum_image, wrap
from .integrate import Rollout, rollout
from .loss import multistep_nll, transition_nll
from .model import MetriplecticModel, ModelConfig, State

__all__ = ["MetriplecticModel", "ModelConfig", "State", "NeighbourList", "find_pairs",
           "minimum_image", "wrap", "rollout", "Rollout", "transition_nll", "multistep_nll"]
