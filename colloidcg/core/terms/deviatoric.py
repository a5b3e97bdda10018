"""The deviatoric (shear-strain) energy, for solids: sum_i theta_ref stiffness mu / 2 |dev F_i|^2.

F_i = sum_j W(q_ij) e_ij e_ij^T / fabric_ref is the fabric tensor of i's neighbours (its
own W(0) left out), in units of the typical neighbour weight ``fabric_ref`` (calibrated
from the data: the mean over particles of sum_j W(q_ij)), so |dev F_i| is O(1) in a
strained packing whatever the kernel's scale; it goes to 0 smoothly as neighbours leave the
cutoff. The energy scale is that of the conservative forces (the calibrated stiffness), mu
a learned positive factor starting at 1e-3 (larger starts let the shear forces dominate
and doubled the g(r) error of dense packings). Pairwise sums of even functions of e_ij:
translation- and rotation-invariant, so the forces conserve momentum. Switched on by
``ModelConfig.deviatoric``.

Forces in closed form. Pair (i, j) adds M = W e e^T / fabric_ref to F_i and F_j, so
dE/dM = G = theta_ref stiffness mu (dev F_i + dev F_j) (d/dF |dev F|^2 / 2 = dev F), and with
de/dr_ij = (I - e e^T) / |r_ij|,

    dE/dr_ij = [W'/h (e.G.e) e + 2 W / |r_ij| (G e - (e.G.e) e)] / fabric_ref,

F_i = -dE/dr_ij, F_j = +dE/dr_ij.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..nets import inv_softplus
from ..scatter import scatter2
from ..types import PairGeometry, TermOut, Thermo
from .base import EnergyTerm


class DeviatoricEnergy(EnergyTerm):
    """Shear-strain energy of the neighbour fabric (see the module docstring)."""

    name = "deviatoric"

    def __init__(self):
        super().__init__()
        self.raw_mu = nn.Parameter(torch.tensor(inv_softplus(1e-3)))
        self.scale = 1.0
        self.fabric_ref = 1.0

    @classmethod
    def build(cls, config) -> Optional["DeviatoricEnergy"]:
        if not config.deviatoric:
            return None
        term = cls()
        term.configure(config)
        return term

    def configure(self, config) -> None:
        self.scale = float(config.theta_ref * config.stiffness)
        self.fabric_ref = float(config.fabric_ref)

    def calibrate(self, neighbour_weight: Tensor, w0: float = 0.0) -> dict:
        """fabric_ref: the mean neighbour weight sum_j W(q_ij) of the sample."""
        return {"fabric_ref": max(float(neighbour_weight.mean()), 1e-12)}

    def evaluate(self, geom: PairGeometry, S: Tensor, thermo: Thermo) -> TermOut:
        n = geom.n
        e = geom.e
        d = e.shape[1]
        ee = e.unsqueeze(-1) * e.unsqueeze(-2)                         # (P, d, d)
        m = ee * (geom.W / self.fabric_ref).view(-1, 1, 1)
        fab = scatter2(n, geom.ij, m, m)
        tr = fab.diagonal(dim1=-2, dim2=-1).sum(-1)
        dev = fab - torch.eye(d, dtype=e.dtype, device=e.device) * (tr / d).view(-1, 1, 1)
        c = self.scale * F.softplus(self.raw_mu).to(e.dtype)
        energy = 0.5 * c * dev.square().sum([-1, -2])
        G = c * (dev[geom.i] + dev[geom.j])                           # dE/dM, (P, d, d)
        Ge = (G @ e.unsqueeze(-1)).squeeze(-1)                        # (P, d)
        eGe = (Ge * e).sum(-1)
        g = ((geom.dW / geom.h) * eGe).unsqueeze(-1) * e \
            + (2.0 * geom.W / geom.dist).unsqueeze(-1) * (Ge - eGe.unsqueeze(-1) * e)
        g = g / self.fabric_ref
        return TermOut(energy, None, None, scatter2(n, geom.ij, -g, g))

    def report(self) -> dict:
        return {"shear_factor": float(F.softplus(self.raw_mu)), "fabric_ref": self.fabric_ref,
                "energy_scale": self.scale}


TERM = DeviatoricEnergy
