"""Configuration and state of the metriplectic model: :class:`ModelConfig` (architecture and
physical scales, what ``config.json`` stores) and :class:`State` (one configuration of
particles, the eager API's argument)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import torch


@dataclass
class ModelConfig:
    """Architecture and physical scales of a :class:`MetriplecticModel`.

    Lengths are in the trajectory's length unit (um for video data), times in its time
    unit (s). ``cutoff`` is h; ``tau``, ``mass_scale`` and ``theta_ref`` set the initial
    scales of friction (mass/time), mass and temperature (energy, with k_B = 1 unless set);
    ``stiffness`` the scale of U's volume dependence (bulk modulus / theta_ref), calibrated
    from the data's drift so that stiff dense packings are reachable by training.
    ``frame_average`` (with ``substrate``): the data's velocities are frame averages
    (finite differences of positions), the likelihood and rollouts treat the instantaneous
    velocity as latent and integrate the substrate friction exactly (:mod:`.ou`).
    ``n_pair`` > 0: a learned repulsive pair energy of that many harmonic terms is added to
    E (:class:`~.nets.PairPotential`, energy scale ``theta_ref * stiffness``); 0: none (the
    density-kernel energy alone, as in models saved before it existed).
    ``deviatoric``: add the shear-strain energy of :class:`~.terms.deviatoric.DeviatoricEnergy`
    (for solids); ``fabric_ref`` its reference neighbour weight, calibrated from the data
    (the mean over particles of sum_j W(q_ij)).
    ``size_scale`` > 0: per-particle sizes, reduced by this reference size (units of the
    tracks' ``size_column``; the largest particles' size), scale each pair's range (see the
    module docstring); 0: one range h for all pairs.
    """

    dim: int = 2
    cutoff: float = 1.0
    n_s: int = 1
    width: int = 50
    depth: int = 2
    n_kernel: int = 4
    energy_width: int = 32
    energy_depth: int = 2
    encoder_width: int = 32
    n_rbf: int = 8
    substrate: bool = True
    deviatoric: bool = False
    frame_average: bool = True
    k_B: float = 1.0
    tau: float = 1.0
    mass_scale: float = 1.0
    theta_ref: float = 1.0
    volume_ref: float = 1.0
    stiffness: float = 1.0
    fabric_ref: float = 1.0
    size_scale: float = 0.0
    size_column: str = ""
    n_pair: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model configuration keys: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "ModelConfig":
        """A copy with ``changes`` applied (unknown names raise TypeError)."""
        return replace(self, **changes)


@dataclass
class State:
    """Particle state. r, v: (N, d); S: (N, n_s). Units of the trajectory. ``size``: optional
    (N,) per-particle sizes (constants that move with the particles; read only by models
    with ``config.size_scale > 0``)."""

    r: torch.Tensor
    v: torch.Tensor
    S: torch.Tensor
    size: torch.Tensor | None = None

    def clone(self) -> "State":
        return State(self.r.clone(), self.v.clone(), self.S.clone(), self.size)
