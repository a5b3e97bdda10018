"""Tabulated pair functions and equation of state for fast inference, as molecular-dynamics
codes tabulate pair potentials.

The learned pair functions (kernel W, dW/dq and the friction/conduction coefficients
A, B, C) depend only on q = r/h, so for rollouts they can be evaluated from a table on
q in [0, 1] with linear interpolation instead of running the MLP for every pair. The
interpolation error is O(dq^2 f''/8); :func:`tabulate` measures it against the network on
a grid 7 times finer and returns the largest error relative to each function's maximum.

The per-particle thermodynamics U(S, V), T = dU/dS, P = dU/d(density) and kappa =
d^2U/dS^2 (one entropic variable) are a function of two numbers; :func:`tabulate_eos`
tabulates them on a grid over a range of (S, density) with bilinear interpolation, which
saves the network and its double backward pass. Particles outside the range fall back to
the network, so a table changes results only by its interpolation error, which
:func:`tabulate_eos` measures at the cell centres (the worst places for bilinear
interpolation) and returns.
"""

from __future__ import annotations

import torch
from torch import nn

from .model import MetriplecticModel


class PairTable(nn.Module):
    """Linear-interpolation table of k pair functions on n points of q in [0, 1]: the
    columns of :func:`_exact` (W, dW/dq, A, B, C [, phi, dphi/dq dimensionless])."""

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.register_buffer("values", values)  # (n, k)
        self.n, self.k = values.shape
        # per interval: value at the left node and slope, so one gather serves a lookup
        ext = torch.cat([values, values[-1:]])
        self.register_buffer("cells", torch.cat([ext[:-1], ext[1:] - ext[:-1]], -1))   # (n, 2k)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """(P, k) interpolated values at q (P,); 0 at q >= 1."""
        x = torch.clamp(q, 0.0, 1.0) * (self.n - 1)
        i0 = torch.clamp(x.floor().long(), max=self.n - 2)
        f = (x - i0.to(x.dtype)).unsqueeze(-1)
        cell = self.cells.to(q.dtype).index_select(0, i0)
        out = cell[:, :self.k] + cell[:, self.k:] * f
        return out * (q < 1.0).unsqueeze(-1).to(q.dtype)


@torch.no_grad()
def _exact(model: MetriplecticModel, q: torch.Tensor) -> torch.Tensor:
    """(P, k) columns W, dW/dq, A, B, C and, for a model with a pair energy, the
    dimensionless phi and dphi/dq (the model scales them by theta_ref * stiffness)."""
    w, dw = model.kernel(q)
    cols = [w.unsqueeze(-1), dw.unsqueeze(-1), model.pair(q).to(q.dtype)]
    if model.config.n_pair > 0:
        phi, dphi = model.pair_potential(q)
        cols += [phi.unsqueeze(-1), dphi.unsqueeze(-1)]
    return torch.cat(cols, -1)


@torch.no_grad()
def tabulate(model: MetriplecticModel, n: int = 4097) -> float:
    """Install a table in ``model`` (``model.tables``); return the max relative error.

    Call :func:`untabulate` (or set ``model.tables = None``) before training again.
    """
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    model.tables = None
    q = torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=device)
    values = _exact(model.double(), q) if dtype != torch.float64 else _exact(model, q)
    model.to(dtype)
    table = PairTable(values.to(dtype))
    qf = torch.linspace(0.0, 1.0, 7 * (n - 1) + 1, dtype=torch.float64, device=device)[:-1]
    exact = _exact(model.double(), qf)
    model.to(dtype)
    approx = table.double()(qf)
    scale = exact.abs().amax(0).clamp_min(1e-300)
    err = float(((approx - exact).abs().amax(0) / scale).max())
    model.tables = table.to(dtype)
    return err



class EOSTable(nn.Module):
    """Bilinear table of (U, T, P, kappa) on an (n_S, n_d) grid of (S, density), n_s = 1."""

    def __init__(self, values: torch.Tensor, s_range: tuple, d_range: tuple):
        super().__init__()
        self.register_buffer("values", values)  # (n_S, n_d, 4)
        self.s0, self.s1 = float(s_range[0]), float(s_range[1])
        self.d0, self.d1 = float(d_range[0]), float(d_range[1])
        self.ns, self.nd = values.shape[0], values.shape[1]
        # bilinear coefficients per cell, f = a + b fs + c fd + e fs fd: one gather per lookup
        v00, v10 = values[:-1, :-1], values[1:, :-1]
        v01, v11 = values[:-1, 1:], values[1:, 1:]
        cells = torch.cat([v00, v10 - v00, v01 - v00, v11 - v10 - v01 + v00], -1)   # (nS-1, nd-1, 16)
        self.register_buffer("cells", cells.reshape(-1, 16))

    def particle_terms(self, S: torch.Tensor, dens: torch.Tensor, exact):
        """(U, T (N, 1), P, theta, kappa) as ``MetriplecticModel.particle_terms``; rows outside
        the table's range come from ``exact(S, dens)``."""
        s = S[:, 0]
        xs = (s - self.s0) * ((self.ns - 1) / (self.s1 - self.s0))
        xd = (dens - self.d0) * ((self.nd - 1) / (self.d1 - self.d0))
        inside = (xs >= 0) & (xs <= self.ns - 1) & (xd >= 0) & (xd <= self.nd - 1)
        i0 = xs.clamp(0, self.ns - 1).floor().long().clamp(max=self.ns - 2)
        j0 = xd.clamp(0, self.nd - 1).floor().long().clamp(max=self.nd - 2)
        fs = (xs - i0.to(xs.dtype)).clamp(0, 1).unsqueeze(-1)
        fd = (xd - j0.to(xd.dtype)).clamp(0, 1).unsqueeze(-1)
        c = self.cells.to(S.dtype).index_select(0, i0 * (self.nd - 1) + j0)
        out = c[:, 0:4] + c[:, 4:8] * fs + (c[:, 8:12] + c[:, 12:16] * fs) * fd
        if not bool(inside.all()):
            idx = torch.nonzero(~inside).squeeze(-1)
            u, T, P, _, kap = exact(S[idx], dens[idx])
            out[idx] = torch.stack([u, T[:, 0], P, kap], -1).to(out.dtype)
        u, T, P, kap = out.unbind(-1)
        return u, T.unsqueeze(-1), P, T, kap


@torch.no_grad()
def tabulate_eos(model: MetriplecticModel, S: torch.Tensor, dens: torch.Tensor, n: int = 257,
                 margin: float = 0.5, s_pad: float = 10.0) -> float | None:
    """Install an equation-of-state table in ``model`` (``model.eos_table``) covering the
    given S (N, 1) and density (N,) samples, widened on each side by ``margin`` times their
    spread, at least ``s_pad`` (units of k_B: heat moves S) for S and half the extreme
    values for the density; return its max relative error (None, and no table, when
    n_s > 1).

    The error is the largest deviation from the network at the grid's cell centres,
    relative to each quantity's largest magnitude on the grid.
    """
    model.eos_table = None
    if model.config.n_s != 1:
        return None
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device

    s_lo, s_hi = float(S[:, 0].min()), float(S[:, 0].max())
    pad = max(margin * (s_hi - s_lo), s_pad)
    s_rng = (s_lo - pad, s_hi + pad)
    d_lo, d_hi = float(dens.min()), float(dens.max())
    pad = margin * (d_hi - d_lo)
    lo = min(d_lo - pad, 0.5 * d_lo)
    if lo <= 0.0:            # a wide spread (isolated particles) must not reach V = 1/d <= 0
        lo = 0.5 * d_lo      # d >= W(0) > 0
    d_rng = (lo, max(d_hi + pad, 1.5 * d_hi))

    def exact(sv, dv):
        rows = []
        for k in range(0, len(sv), 16):      # a few rows at a time: bounded autograd memory
            Sg, Dg = torch.meshgrid(sv[k: k + 16], dv, indexing="ij")
            u, T, P, _, kap = model._particle_terms_exact(Sg.reshape(-1, 1), Dg.reshape(-1))
            rows.append(torch.stack([u, T[:, 0], P, kap], -1).detach().view(Sg.shape[0], len(dv), 4))
        return torch.cat(rows)

    m64 = model.double()
    sv = torch.linspace(*s_rng, n, dtype=torch.float64, device=device)
    dv = torch.linspace(*d_rng, n, dtype=torch.float64, device=device)
    values = exact(sv, dv)
    mids = exact(0.5 * (sv[1:] + sv[:-1]), 0.5 * (dv[1:] + dv[:-1]))
    model.to(dtype)
    table = EOSTable(values, s_rng, d_rng)
    interp = 0.25 * (values[1:, 1:] + values[:-1, 1:] + values[1:, :-1] + values[:-1, :-1])
    scale = values.abs().amax((0, 1)).clamp_min(1e-300)
    err = float(((interp - mids).abs().amax((0, 1)) / scale).max())
    del m64
    model.eos_table = table.to(dtype)
    return err


def untabulate(model: MetriplecticModel) -> None:
    """Remove the pair and equation-of-state tables (back to the networks)."""
    model.tables = None
    model.eos_table = None
