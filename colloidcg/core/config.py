"""Configuration and state of the metriplectic model: :class:`ModelConfig` (architecture and
physical scales, what ``config.json`` stores) and :class:`State` (one configuration of
particles, the eager API's argument)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import torch


def _opt(default, help: str, unit: str | None = None):
    """A field with its help text and unit (read by the CLI, the napari widget and
    :class:`colloidcg.train.TrainConfig`); ``None`` for ``terms`` means an empty dict."""
    if default is None:
        return field(default_factory=dict, metadata={"help": help, "unit": unit})
    return field(default=default, metadata={"help": help, "unit": unit})


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
    ``terms``: energy terms that have no field of their own, switched on by name with
    their options (``{"name": {"option": value}}``); a new term needs no other change here.
    Every field's help text and unit are in its metadata (:func:`option_help`).
    """

    dim: int = _opt(2, "spatial dimension, 2 or 3 (set from the data)")
    cutoff: float = _opt(1.0, "interaction range h of every pair function", "length")
    n_s: int = _opt(1, "number of entropy-like variables S per particle")
    ordered_s: bool = _opt(False, "order the entropy-like variables by their share of the heat (n_s > 1): "
                                  "S0 receives the least, so it changes slowest and keeps its encoded "
                                  "value longest; off: the shares are free and which variable is S0 "
                                  "is arbitrary")
    s0_heat_share: float = _opt(0.0, "fixed share of the heat that S0 receives (n_s > 1): S0 becomes a slow "
                                     "structural variable that keeps its encoded value while the other "
                                     "variables take up the rest of the heat; 0: every share is learned")
    width: int = _opt(50, "width of the pair networks (friction and heat-conduction coefficients)")
    depth: int = _opt(2, "hidden layers of the pair networks")
    n_kernel: int = _opt(4, "basis functions of the learned density kernel W")
    energy_width: int = _opt(32, "width of the internal-energy network U(S, V)")
    energy_depth: int = _opt(2, "hidden layers of the internal-energy network U(S, V)")
    encoder_width: int = _opt(32, "width of the structural encoder that predicts S")
    n_rbf: int = _opt(8, "radial basis functions of the structural encoder's features")
    substrate: bool = _opt(True, "friction against the solvent/substrate; off: the momentum-conserving model")
    deviatoric: bool = _opt(False, "add the deviatoric (shear-strain) energy, for solids")
    frame_average: bool = _opt(True, "read velocities as frame averages (finite differences of positions) "
                                     "of a latent instantaneous velocity and integrate the substrate "
                                     "friction exactly; off: instantaneous velocities, Euler-Maruyama at "
                                     "the frame rate (particle data recorded at the integration step)")
    k_B: float = _opt(1.0, "Boltzmann constant in the model's units (0: deterministic)")
    tau: float = _opt(1.0, "time scale of the friction coefficients", "time")
    friction_scale: float = _opt(1.0, "factor on every friction coefficient, pair and substrate (set by "
                                      "the transport calibration, TrainConfig.transport 'msd'; 1: as "
                                      "the likelihood fitted them)")
    transport_substeps: int = _opt(1, "integration steps per frame the friction_scale was calibrated with "
                                      "(TrainConfig.transport 'msd'); rollouts with substeps 'auto' take "
                                      "at least this many")
    mass_scale: float = _opt(1.0, "scale of the learned particle mass", "mass")
    theta_ref: float = _opt(1.0, "temperature scale (calibrated from the velocities)", "energy")
    volume_ref: float = _opt(1.0, "reference kernel volume 1 / (W(0) + sum_j W) (calibrated)")
    stiffness: float = _opt(1.0, "bulk scale of U's volume term, in theta_ref (calibrated from the forces)")
    fabric_ref: float = _opt(1.0, "typical neighbour weight sum_j W of the deviatoric energy (calibrated)")
    size_scale: float = _opt(0.0, "reference size of per-particle sizes (0: one range for all pairs)", "size")
    size_column: str = _opt("", "tracks column with the per-particle size")
    n_pair: int = _opt(0, "terms of the learned repulsive pair energy (soft-sphere contacts with learned "
                          "contact distances); 0: none, the density-kernel energy alone")
    terms: dict = _opt(None, "further energy terms switched on by name, with their options: "
                             "{name: {option: value}} (terms without a field of their own; "
                             "colloidcg.core.terms)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model configuration keys: {sorted(unknown)}")
        return cls(**d)

    @staticmethod
    def option_help(name: str) -> tuple[str, str | None]:
        """(help text, unit) of the field ``name``."""
        for f in fields(ModelConfig):
            if f.name == name:
                return f.metadata["help"], f.metadata["unit"]
        raise KeyError(name)

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
