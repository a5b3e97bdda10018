"""The interface every energy term implements.

The model's energy is a sum of terms: E = sum_i m |v_i|^2 / 2 + sum_terms E_term. Each term
is a small ``nn.Module`` with

- ``name`` (class attribute): its key in the model's ``terms`` (and in state dicts);
- ``build(config)`` (classmethod): the term for a :class:`~colloidcg.core.config.ModelConfig`,
  or None when the configuration does not ask for it (default: on when
  ``config.terms`` names it, with the options given there);
- ``configure(config)``: copy the physical scales it uses from the configuration into plain
  attributes (called at construction and after calibration);
- ``evaluate(geom, S, thermo) -> TermOut``: its energy and forces for the pairs ``geom``
  (:class:`~colloidcg.core.types.PairGeometry`) in closed form (:class:`~colloidcg.core.types.TermOut`:
  per-particle and per-pair energies, central pair forces dE/d|r_ij| and any other force),
  TorchScript-compatible (the exported model compiles it);
- ``calibrate(neighbour_weight, w0) -> dict``: configuration values it sets from the data
  (the per-particle neighbour weight sum_j W(q_ij) of a few frames, and W(0)); {} when none.
  A key that is a ModelConfig field sets that field; any other is stored with the term's
  options in ``ModelConfig.terms[name]`` (so it is saved in config.json and passed to the
  constructor when the model is loaded);
- ``tabulated(n, sample, w) -> (term, error)``: a fast version for rollouts (tables of n
  points instead of networks; ``sample`` = (S, dens) of the state to cover, ``w`` the heat
  weights) and its largest relative error, or (self, 0.0). Called on a float64 copy;
- ``report() -> dict``: its learned parameters in physical units, for report.json.

Every term must be conservative (forces are minus the gradient of its energy), pairwise in
the sense that it depends on positions only through pair separations (so forces conserve
momentum), and invariant under rotations; the guarantee tests in tests/test_core.py walk
every registered term. Only the density term's U may depend on the entropic variables S:
the temperatures T = dU/dS that the dissipative part, the noise and the heat booking use
come from U alone, so another term depending on S would break the degeneracy M dE/dx = 0
(the guarantee test checks that every other term's energy has no S-gradient).
docs/architecture.md shows how to add one.
"""

from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn

from ..scatter import scatter2
from ..types import PairGeometry, TermOut, Thermo


class EnergyTerm(nn.Module):
    """Base class of the energy terms (see the module docstring for the interface)."""

    name = ""

    @classmethod
    def build(cls, config) -> Optional["EnergyTerm"]:
        """Default: the term is on when ``config.terms`` names it, built with the options
        given there as keyword arguments, then configured."""
        if cls.name not in config.terms:
            return None
        term = cls(**config.terms[cls.name])
        term.configure(config)
        return term

    def configure(self, config) -> None:
        pass

    def evaluate(self, geom: PairGeometry, S: Tensor, thermo: Thermo) -> TermOut:
        raise TypeError(f"{type(self).__name__} is an energy term without evaluate(geom, S, thermo); "
                        "every term defines it (colloidcg.core.terms.base)")

    def calibrate(self, neighbour_weight: Tensor, w0: float = 0.0) -> dict:
        return {}

    def tabulated(self, n: int, sample: Optional[Tuple[Tensor, Tensor]] = None,
                  w: Optional[Tensor] = None) -> Tuple["EnergyTerm", float]:
        return self, 0.0

    def report(self) -> dict:
        return {}


def energy_of(geom: PairGeometry, out: TermOut) -> Tensor:
    """(N,) a term's energy per particle: its own part and half of each of its pairs'."""
    e = geom.dist.new_zeros(geom.n)
    if out.energy is not None:
        e = e + out.energy
    if out.pair_energy is not None:
        half = 0.5 * out.pair_energy
        e = e + scatter2(geom.n, geom.ij, half, half)
    return e


def force_of(geom: PairGeometry, out: TermOut) -> Tensor:
    """(N, d) a term's force -dE/dr: its non-central part and its central pair forces."""
    f = geom.e.new_zeros(geom.n, geom.e.shape[1])
    if out.force is not None:
        f = f + out.force
    if out.dEdr is not None:
        fp = -out.dEdr.unsqueeze(-1) * geom.e
        f = f + scatter2(geom.n, geom.ij, fp, -fp)
    return f
