"""The dense noise-channel matrix B (M = B B^T) of a small system, for the joint-covariance
likelihood (``covariance="full"`` in :mod:`.loss`) and the guarantee tests.

Flat state ordering: x = [r (N d), v (N d), S (N n_s)], D = N (2 d + n_s). Channels, in
column order: per pair d shear-friction channels (the rows of the projector I - e e^T
scaled by sigma_perp), one central-friction channel and one conduction channel; then per
particle d substrate channels.
"""

from __future__ import annotations

import torch

from .config import State


def dense_channels(model, state: State, pairs: torch.Tensor, box=None) -> torch.Tensor:
    """The (D, n_channels) matrix B with M = B B^T, D = N (2 d + n_s). Small systems only."""
    ns = model.compute(state, pairs, box)
    g, ds = ns.geom, ns.diss
    n, i, j, e, m = g.n, g.i, g.j, g.e, ns.m
    d = e.shape[1]
    k = model.n_s
    D = n * (2 * d + k)
    ov, oS = n * d, 2 * n * d
    w = ns.w
    npair = i.shape[0]
    eye = torch.eye(d, dtype=e.dtype, device=e.device)
    Pm = eye - e.unsqueeze(-1) * e.unsqueeze(-2)                     # (P, d, d)
    u = torch.cat([ds.s2_perp[0].clamp_min(0).sqrt().view(-1, 1, 1) * Pm.transpose(1, 2),
                   (ds.s2_par[0].clamp_min(0).sqrt().unsqueeze(-1) * e).unsqueeze(1)], 1)
    nvc = d + 1                                                      # (P, nvc, d) rows = channels
    cols_v = (torch.arange(npair, device=e.device) * (nvc + 1)).view(-1, 1) + torch.arange(nvc, device=e.device)
    rows, cols, vals = [], [], []
    ax = torch.arange(d, device=e.device)
    sx = torch.arange(k, device=e.device)
    for sgn, idx in ((1.0, i), (-1.0, j)):
        rows.append((ov + idx.view(-1, 1, 1) * d + ax).expand(npair, nvc, d).reshape(-1))
        cols.append(cols_v.unsqueeze(-1).expand(npair, nvc, d).reshape(-1))
        vals.append((sgn * u / m).reshape(-1))
    hf = -0.5 * (u * ns.vij.unsqueeze(1)).sum(-1)                    # (P, nvc)
    for idx, th in ((i, ds.th_i), (j, ds.th_j)):
        rows.append((oS + idx.view(-1, 1, 1) * k + sx).expand(npair, nvc, k).reshape(-1))
        cols.append(cols_v.unsqueeze(-1).expand(npair, nvc, k).reshape(-1))
        vals.append(((hf / th.unsqueeze(-1)).unsqueeze(-1) * w).reshape(-1))
    ch = torch.arange(npair, device=e.device) * (nvc + 1) + nvc
    cc = ds.c2[0].clamp_min(0).sqrt()
    for sgn, idx, th in ((1.0, i, ds.th_i), (-1.0, j, ds.th_j)):
        rows.append((oS + idx.view(-1, 1) * k + sx).reshape(-1))
        cols.append(ch.view(-1, 1).expand(npair, k).reshape(-1))
        vals.append(((sgn * cc / th).unsqueeze(-1) * w).reshape(-1))
    nch = npair * (nvc + 1)
    if model.substrate:
        s0 = ds.s0[0].clamp_min(0).sqrt()
        pidx = torch.arange(n, device=e.device)
        c0 = nch + pidx.view(-1, 1) * d + ax                            # (N, d)
        rows.append((ov + pidx.view(-1, 1) * d + ax).reshape(-1))
        cols.append(c0.reshape(-1))
        vals.append((s0.view(-1, 1) / m * torch.ones(n, d, dtype=e.dtype, device=e.device)).reshape(-1))
        hs = -(state.v * s0.view(-1, 1)) / ns.thermo.theta.view(-1, 1)  # (N, d)
        rows.append((oS + pidx.view(-1, 1, 1) * k + sx).expand(n, d, k).reshape(-1))
        cols.append(c0.unsqueeze(-1).expand(n, d, k).reshape(-1))
        vals.append((hs.unsqueeze(-1) * w).reshape(-1))
        nch = nch + n * d
    B = torch.zeros(D, nch, dtype=e.dtype, device=e.device)
    return B.index_put((torch.cat(rows), torch.cat(cols)), torch.cat(vals), accumulate=True)
