"""Structural encoder: each particle's initial S from its local environment.

Features are built only from pair distances and bond-angle invariants, so S is invariant
under rotations, translations and permutations of the neighbours (unlike a descriptor
built on raw coordinates). Every neighbour enters with the smooth weight
w(r) = (1 - r/h_enc)^2, so features change continuously as neighbours enter or leave.

- radial: Gaussian-smeared neighbour-distance histogram (the "radial structure functions"
  of Behler & Parrinello 2007 and of the softness of Cubuk et al. 2015),
  G_k = sum_j w(r_ij) exp(-(r_ij/h - mu_k)^2 / (2 s^2));
- angular, 2D: bond-orientational order magnitudes |psi_l| for l = 2, 4, 6,
  psi_l = sum_j w_j exp(i l phi_ij) / sum_j w_j (Nelson & Halperin 1979);
- angular, any dimension: invariants of the deviatoric part D of the weighted fabric
  tensor sum_j w_j e_ij e_ij^T / sum_j w_j: |D| = sqrt(tr D^2), and tr D^3 in 3D;
- the total neighbour weight sum_j w_j (a smooth coordination number).

The features go through an MLP to the n_s components of S.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor, nn

from .graph import minimum_image
from .nets import MLP


def invariant_features(r: Tensor, pairs: Tensor, cutoff: float, box: Optional[Tensor],
                       centres: Tensor, width: float, shear: Optional[Tensor] = None) -> Tensor:
    """(N, n_features) invariant features of every particle's neighbourhood.

    r : (N, d) positions; pairs : (P, 2) unordered pairs i < j (all pairs closer than
    ``cutoff`` at least; farther ones contribute exactly 0); box : (d,) or None;
    centres : (n_rbf,) radial Gaussian centres in units of ``cutoff``; width : their
    standard deviation, same units; shear : the Lees-Edwards state of a sheared box
    (:func:`colloidcg.core.driver.minimum_image`) or None. Columns: n_rbf radial, the neighbour weight, |D|, then
    tr D^3 (3D) or |psi_2|, |psi_4|, |psi_6| (2D).

    Written in TorchScript's subset: the exported bundle compiles the model itself,
    this function included (:mod:`colloidcg.export.compiled`).
    """
    n = r.shape[0]
    dim = r.shape[1]
    i = pairs[:, 0]
    j = pairs[:, 1]
    rij = minimum_image(r[i] - r[j], box, shear)
    dist = torch.linalg.vector_norm(rij, dim=-1)
    q = dist / cutoff
    w = torch.clamp(1.0 - q, min=0.0).square()
    e = rij / dist.clamp_min(1e-12).unsqueeze(-1)
    # radial histogram, scattered to both ends of each pair
    g = torch.exp(-(q.unsqueeze(-1) - centres) ** 2 / (2 * width ** 2)) * w.unsqueeze(-1)
    rad = torch.zeros(n, centres.shape[0], dtype=r.dtype, device=r.device)
    rad.index_add_(0, i, g).index_add_(0, j, g)
    wsum = torch.zeros(n, dtype=r.dtype, device=r.device)
    wsum.index_add_(0, i, w).index_add_(0, j, w)
    denom = wsum.clamp_min(1e-12)
    # fabric tensor: e e^T is even in e, so both ends get the same contribution
    ee = (e.unsqueeze(-1) * e.unsqueeze(-2)) * w.view(-1, 1, 1)
    fab = torch.zeros(n, dim, dim, dtype=r.dtype, device=r.device)
    fab.index_add_(0, i, ee).index_add_(0, j, ee)
    fab = fab / denom.view(-1, 1, 1)
    dev = fab - torch.eye(dim, dtype=r.dtype, device=r.device) * (
        fab.diagonal(dim1=-2, dim2=-1).sum(-1) / dim).view(-1, 1, 1)
    dev2 = dev @ dev
    feats: List[Tensor] = [rad, wsum.unsqueeze(-1),
                           torch.sqrt(dev2.diagonal(dim1=-2, dim2=-1).sum(-1) + 1e-12).unsqueeze(-1)]
    if dim == 3:
        feats.append((dev2 @ dev).diagonal(dim1=-2, dim2=-1).sum(-1).unsqueeze(-1))
    if dim == 2:
        phi = torch.atan2(e[:, 1], e[:, 0])
        for l in [2, 4, 6]:
            # bond j->i has angle phi + pi: exp(i l (phi + pi)) = exp(i l phi) for even l
            both = torch.stack([w * torch.cos(l * phi), w * torch.sin(l * phi)], -1)
            cs = torch.zeros(n, 2, dtype=r.dtype, device=r.device)
            cs.index_add_(0, i, both).index_add_(0, j, both)
            cs = cs / denom.unsqueeze(-1)
            feats.append(torch.sqrt(cs.square().sum(-1) + 1e-12).unsqueeze(-1))
    return torch.cat(feats, dim=-1)


class StructuralEncoder(nn.Module):
    """Rotation-, translation- and permutation-invariant map from neighbourhood to S.

    Parameters
    ----------
    dim : 2 or 3.
    n_s : number of S components.
    n_rbf : number of radial Gaussians.
    width, depth : MLP size.
    """

    def __init__(self, dim: int, n_s: int = 1, n_rbf: int = 8, width: int = 32, depth: int = 2):
        super().__init__()
        self.dim = dim
        self.n_rbf = n_rbf
        self.register_buffer("centres", torch.linspace(0.0, 1.0, n_rbf))
        self.width_rbf = 0.5 / max(n_rbf - 1, 1)
        n_ang = 4 if dim == 2 else 2
        self.n_features = n_rbf + n_ang + 1
        self.mlp = MLP(self.n_features, n_s, width, depth)
        # Feature normalisation (set from data by the model's calibration).
        self.register_buffer("f_mean", torch.zeros(self.n_features))
        self.register_buffer("f_std", torch.ones(self.n_features))

    def features(self, r: torch.Tensor, pairs: torch.Tensor, cutoff: float,
                 box: torch.Tensor | None, shear: torch.Tensor | None = None) -> torch.Tensor:
        """(N, n_features) invariant features (:func:`invariant_features`)."""
        return invariant_features(r, pairs, cutoff, box, self.centres.to(r.dtype), self.width_rbf, shear)

    def forward(self, r: torch.Tensor, pairs: torch.Tensor, cutoff: float,
                box: torch.Tensor | None, shear: torch.Tensor | None = None) -> torch.Tensor:
        f = self.features(r, pairs, cutoff, box, shear)
        f = (f - self.f_mean.to(r.dtype)) / self.f_std.to(r.dtype)
        return self.mlp(f)
