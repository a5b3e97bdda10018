"""The soft-sphere pair energy: sum_{i<j} phi(q_ij), q = |r_ij| / h_ij.

phi is the learned :class:`~colloidcg.core.nets.PairPotential` (a non-negative sum of
harmonic soft-sphere terms with learned contact distances, Durian 1995) in units of
``theta_ref * stiffness``. The density term alone gives forces (P_i + P_j) W'(r) whose
radial shape is W' at every density, which cannot follow the sharp contact forces of a
packing near jamming; phi can (it reproduces harmonic soft disks exactly). Switched on by
``ModelConfig.n_pair`` > 0 (the number of harmonic terms).

:class:`TabulatedPairEnergy` is the fast version: phi and dphi/dq by linear interpolation
on a grid of q in [0, 1].
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..nets import PairPotential
from ..tables import LinearTable
from ..types import PairGeometry, TermOut, Thermo
from .base import EnergyTerm


class PairEnergy(EnergyTerm):
    """sum over pairs of theta_ref stiffness phi(q_ij) (see the module docstring)."""

    name = "pair"

    def __init__(self, n_terms: int):
        super().__init__()
        self.potential = PairPotential(n_terms)
        self.scale = 1.0
        self.cutoff = 1.0

    @classmethod
    def build(cls, config) -> Optional["PairEnergy"]:
        if config.n_pair <= 0:
            return None
        term = cls(config.n_pair)
        term.configure(config)
        return term

    def configure(self, config) -> None:
        self.scale = float(config.theta_ref * config.stiffness)
        self.cutoff = float(config.cutoff)

    def phi(self, q: Tensor) -> Tuple[Tensor, Tensor]:
        """phi(q) (P,) and d phi/dq (P,), energy units."""
        phi, dphi = self.potential(q)
        return self.scale * phi, self.scale * dphi

    def evaluate(self, geom: PairGeometry, S: Tensor, thermo: Thermo) -> TermOut:
        phi, dphi = self.phi(geom.q)
        return TermOut(None, phi, dphi / geom.h, None)

    @torch.no_grad()
    def tabulated(self, n: int, sample: Optional[Tuple[Tensor, Tensor]] = None,
                  w: Optional[Tensor] = None) -> Tuple[EnergyTerm, float]:
        new = TabulatedPairEnergy(self.potential.raw.shape[0])
        new.potential = self.potential
        new.scale, new.cutoff = self.scale, self.cutoff
        new.table, err = LinearTable.fit(lambda q: torch.stack(self.potential(q), -1), n,
                                         self.potential.raw)
        return new, err

    def report(self) -> dict:
        """The learned soft-sphere terms: contact distance b_k h (length units) and strength
        c_k theta_ref stiffness (energy units; the term's energy at full overlap)."""
        pot = self.potential
        return {"contact_distance": [float(b) * self.cutoff for b in pot.ranges().detach().cpu()],
                "strength": [float(c) * self.scale for c in pot.coefficients().detach().cpu()]}


class TabulatedPairEnergy(PairEnergy):
    """:class:`PairEnergy` with phi from a :class:`~colloidcg.core.tables.LinearTable`."""

    def __init__(self, n_terms: int):
        super().__init__(n_terms)
        self.table = LinearTable(torch.zeros(2, 2))

    def phi(self, q: Tensor) -> Tuple[Tensor, Tensor]:
        out = self.table(q)
        return self.scale * out[:, 0], self.scale * out[:, 1]


TERM = PairEnergy
