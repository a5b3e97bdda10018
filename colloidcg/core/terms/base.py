"""The interface every energy term implements.

The model's energy is a sum of terms: E = sum_i m |v_i|^2 / 2 + sum_terms E_term. Each term
is a small ``nn.Module`` with

- ``name`` (class attribute): its key in the model's ``terms`` (and in state dicts);
- ``build(config)`` (classmethod): the term for a :class:`~colloidcg.core.config.ModelConfig`,
  or None when the configuration does not ask for it;
- ``configure(config)``: copy the physical scales it uses from the configuration into plain
  attributes (called at construction and after calibration);
- ``evaluate(geom, S, thermo) -> TermOut``: its energy per particle (N,) and its forces
  -dE/dr (N, d) for the pairs ``geom`` (:class:`~colloidcg.core.types.PairGeometry`), in
  closed form, TorchScript-compatible (the exported model compiles it);
- ``calibrate(neighbour_weight, w0) -> dict``: configuration values it sets from the data
  (the per-particle neighbour weight sum_j W(q_ij) of a few frames, and W(0)); {} when none;
- ``tabulated(n, sample, w) -> (term, error)``: a fast version for rollouts (tables of n
  points instead of networks; ``sample`` = (S, dens) of the state to cover, ``w`` the heat
  weights) and its largest relative error, or (self, 0.0). Called on a float64 copy;
- ``report() -> dict``: its learned parameters in physical units, for report.json.

Every term must be conservative (forces are minus the gradient of its energy), pairwise in
the sense that it depends on positions only through pair separations (so forces conserve
momentum), and invariant under rotations; the guarantee tests in tests/test_core.py walk
every registered term. docs/architecture.md shows how to add one.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..types import PairGeometry, TermOut, Thermo


class EnergyTerm(nn.Module):
    """Base class of the energy terms (see the module docstring for the interface)."""

    name = ""

    @classmethod
    def build(cls, config) -> Optional["EnergyTerm"]:
        raise NotImplementedError

    def configure(self, config) -> None:
        pass

    def evaluate(self, geom: PairGeometry, S: Tensor, thermo: Thermo) -> TermOut:
        raise NotImplementedError

    def calibrate(self, neighbour_weight: Tensor, w0: float = 0.0) -> dict:
        return {}

    def tabulated(self, n: int, sample: Optional[Tuple[Tensor, Tensor]] = None,
                  w: Optional[Tensor] = None) -> Tuple["EnergyTerm", float]:
        return self, 0.0

    def report(self) -> dict:
        return {}


def zeros_out(geom: PairGeometry, like: Tensor) -> TermOut:
    """A term's output when it contributes nothing (N,) and (N, d)."""
    n = geom.n
    d = geom.e.shape[1]
    return TermOut(torch.zeros(n, dtype=like.dtype, device=like.device),
                   torch.zeros(n, d, dtype=like.dtype, device=like.device))
