"""The metriplectic core: a structure-preserving stochastic particle model.

- :mod:`.config`: :class:`ModelConfig` (architecture, scales) and :class:`State`;
- :mod:`.types`: the typed intermediates (:class:`~.types.PairGeometry`,
  :class:`~.types.Thermo`, :class:`~.types.Terms`, :class:`~.types.Carry`, ...);
- :mod:`.nets`: constrained learned pieces (compact kernel, convex monotone U with its
  closed-form derivatives, pair coefficients, soft-sphere potential);
- :mod:`.terms`: the energy terms, one module each (density U(S, V), pair, deviatoric);
- :mod:`.encoder`: rotation/translation/permutation-invariant structural encoder for S;
- :mod:`.model`: the model: terms of a state, exported tensor-level methods;
- :mod:`.dynamics`: drift, noise, covariance and the exact-OU flow as pure functions;
- :mod:`.integrators`: ``(init, step)`` integrators (Euler-Maruyama, exact OU);
- :mod:`.driver`: the torch-only rollout loop, Verlet list and periodic geometry (also
  shipped in bundles); :mod:`.graph`: the k-d-tree pair search; :mod:`.integrate`:
  :func:`rollout`;
- :mod:`.ou`: exact Ornstein-Uhlenbeck coefficients and frame-average statistics;
- :mod:`.loss`: Gaussian transition likelihoods; :mod:`.tables`: tabulated functions.

docs/architecture.md draws how they fit together.
"""

from .config import ModelConfig, State
from .graph import NeighbourList, find_pairs, minimum_image, wrap
from .integrate import Rollout, rollout
from .loss import multistep_nll, transition_nll
from .model import MetriplecticModel

__all__ = ["MetriplecticModel", "ModelConfig", "State", "NeighbourList", "find_pairs",
           "minimum_image", "wrap", "rollout", "Rollout", "transition_nll", "multistep_nll"]
