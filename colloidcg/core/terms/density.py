"""The density term: internal energy U(S_i, V_i) of every particle's kernel volume.

V_i = 1 / dens_i, dens_i = W(0) + sum_{j != i} W(q_ij), W the learned compact kernel
(:class:`~colloidcg.core.nets.CompactKernel`); U is the input-convex network
:class:`~colloidcg.core.nets.InternalEnergy` in units of ``theta_ref``, evaluated at the
reduced volume V / ``volume_ref`` with the calibrated bulk scale ``stiffness``. Its forces
are F_i = -sum_j (P_i + P_j) W'(q_ij) e_ij / h_ij with P = dU/d dens (Espanol & Revenga
2003, smoothed dissipative particle dynamics). It also supplies the temperatures
T = dU/dS, theta = w . T and kappa = w^T (d^2U/dS^2) w that every dissipative part reads,
all in closed form (:meth:`InternalEnergy.derivatives`).

:class:`TabulatedDensityEnergy` is the fast version for rollouts (one entropic variable):
U, T, P and kappa from a bilinear table over a range of (S, dens), the network outside it.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..nets import InternalEnergy
from ..types import PairGeometry, TermOut, Thermo
from .base import EnergyTerm


class DensityEnergy(EnergyTerm):
    """sum_i U(S_i, V_i) (see the module docstring). Always present."""

    name = "density"

    def __init__(self, n_s: int, width: int, depth: int):
        super().__init__()
        self.eos = InternalEnergy(n_s, width, depth)
        self.theta_ref = 1.0
        self.volume_ref = 1.0
        self.stiffness = 1.0

    @classmethod
    def build(cls, config) -> "DensityEnergy":
        term = cls(config.n_s, config.energy_width, config.energy_depth)
        term.configure(config)
        return term

    def configure(self, config) -> None:
        self.theta_ref = float(config.theta_ref)
        self.volume_ref = float(config.volume_ref)
        self.stiffness = float(config.stiffness)

    def calibrate(self, neighbour_weight: Tensor, w0: float = 0.0) -> dict:
        """volume_ref: the mean kernel volume 1 / (W(0) + sum_j W) of the sample."""
        return {"volume_ref": float((1.0 / (w0 + neighbour_weight)).mean())}

    def exact_thermo(self, dens: Tensor, S: Tensor, w: Tensor) -> Thermo:
        """:class:`Thermo` from the network, in closed form."""
        v_red = 1.0 / (dens * self.volume_ref)
        u, du_dS, du_dv, curv = self.eos.derivatives(S, v_red, self.stiffness, w.to(S.dtype))
        T = self.theta_ref * du_dS
        return Thermo(dens, self.theta_ref * u, T, -self.theta_ref * du_dv * v_red / dens,
                      T @ w.to(S.dtype), self.theta_ref * curv)

    def thermo(self, dens: Tensor, S: Tensor, w: Tensor) -> Thermo:
        return self.exact_thermo(dens, S, w)

    def u_theta(self, S: Tensor, dens: Tensor, w: Tensor) -> Tuple[Tensor, Tensor]:
        """U (N,) and theta (N,) at (S, V = 1/dens) (one forward pass of the network)."""
        u, slope = self.eos.value_and_slope(S, 1.0 / (dens * self.volume_ref), self.stiffness, w.to(S.dtype))
        return self.theta_ref * u, self.theta_ref * slope

    def evaluate(self, geom: PairGeometry, S: Tensor, thermo: Thermo) -> TermOut:
        P = thermo.P
        dEdr = (P[geom.i] + P[geom.j]) * geom.dW / geom.h
        return TermOut(thermo.U, None, dEdr, None)

    def heat_to_entropy(self, S: Tensor, thermo: Thermo, heat: Tensor, w: Tensor) -> Tensor:
        """dS (N, n_s) along the heat weights w with U(S + dS, V) = U(S, V) + heat (N,).

        Newton's method from the second-order guess heat/theta - kappa heat^2 / (2 theta^3);
        dU/ds = theta > 0 and U is convex in s, so it converges quadratically. Every particle
        gets one update; those whose U(S + s w) is not yet U + heat to 1e-12 of U (float32:
        8e-6) get up to three more, and only they are evaluated again. With the network one
        update is enough for the heats of a step (20,000 particles: none needed another); a
        free gas at kT/m = 9 needed three for its largest heats. The tabulated version solves
        its own piecewise-linear U, exactly in one update within a cell.
        """
        w = w.to(S.dtype)
        th = thermo.theta
        s = heat / th - thermo.kappa * heat.square() / (2 * th ** 3)
        target = thermo.U + heat
        tol = 1e-12 if S.dtype == torch.float64 else 64 * 1.2e-7   # roundings of U (and of a table)
        u_new, th_new = self.u_theta(S + s.unsqueeze(-1) * w, thermo.dens, w)
        s = s - (u_new - target) / th_new
        u_new, th_new = self.u_theta(S + s.unsqueeze(-1) * w, thermo.dens, w)
        res = u_new - target
        bad = res.abs() > tol * (target.abs() + heat.abs())
        idx = torch.nonzero(bad).squeeze(-1)
        for _ in range(3):
            if idx.shape[0] == 0:
                break                                   # U(S + s w) = U + heat to rounding
            s = s.index_put((idx,), s[idx] - res[bad] / th_new[bad])
            u_new, th_new = self.u_theta(S[idx] + s[idx].unsqueeze(-1) * w, thermo.dens[idx], w)
            res = u_new - target[idx]
            bad = res.abs() > tol * (target[idx].abs() + heat[idx].abs())
            idx = idx[bad]
        return s.unsqueeze(-1) * w

    def tabulated(self, n: int, sample: Optional[Tuple[Tensor, Tensor]] = None,
                  w: Optional[Tensor] = None) -> Tuple[EnergyTerm, float]:
        """A :class:`TabulatedDensityEnergy` over the range of ``sample`` = (S (N, 1), dens
        (N,)) and its largest relative error; (self, 0.0) without a sample or with n_s > 1."""
        if sample is None or self.eos.n_s != 1 or w is None:
            return self, 0.0
        return TabulatedDensityEnergy.from_term(self, sample[0], sample[1], w, n)

    def report(self) -> dict:
        return {"volume_ref": self.volume_ref, "stiffness": self.stiffness}


class TabulatedDensityEnergy(DensityEnergy):
    """:class:`DensityEnergy` with (U, T, P, kappa) from a bilinear table on an
    (n_S, n_d) grid of (S, dens), n_s = 1; rows outside the table's range from the network.

    Bilinear interpolation errs by O(dx^2 f''/8); :meth:`from_term` measures the largest
    error at the cell centres (the worst places) relative to each quantity's largest
    magnitude on the grid."""

    def __init__(self, n_s: int, width: int, depth: int):
        super().__init__(n_s, width, depth)
        self.register_buffer("cells", torch.zeros(1, 16))
        self.s0 = 0.0
        self.s1 = 1.0
        self.d0 = 0.0
        self.d1 = 1.0
        self.ns = 2
        self.nd = 2

    @classmethod
    @torch.no_grad()
    def from_term(cls, term: DensityEnergy, S: Tensor, dens: Tensor, w: Tensor, n: int = 257,
                  margin: float = 0.5, s_pad: float = 10.0) -> Tuple["TabulatedDensityEnergy", float]:
        """The table covering S (N, 1) and dens (N,) (``term`` and the samples in float64;
        :meth:`MetriplecticModel.tabulated` converts), widened on each side by ``margin``
        times their spread, at least ``s_pad`` (units of k_B: heat moves S) for S and half
        the extreme values for the density."""
        eos = term.eos
        new = cls(eos.n_s, eos.wx[0].shape[0], len(eos.wx))
        new.eos = eos
        new.theta_ref, new.volume_ref, new.stiffness = term.theta_ref, term.volume_ref, term.stiffness
        device = S.device
        s_lo, s_hi = float(S[:, 0].min()), float(S[:, 0].max())
        pad = max(margin * (s_hi - s_lo), s_pad)
        new.s0, new.s1 = s_lo - pad, s_hi + pad
        d_lo, d_hi = float(dens.min()), float(dens.max())
        pad = margin * (d_hi - d_lo)
        lo = min(d_lo - pad, 0.5 * d_lo)
        if lo <= 0.0:            # a wide spread (isolated particles) must not reach V = 1/d <= 0
            lo = 0.5 * d_lo      # d >= W(0) > 0
        new.d0, new.d1 = lo, max(d_hi + pad, 1.5 * d_hi)
        new.ns, new.nd = n, n
        w64 = w.double().to(device)

        def exact(sv: Tensor, dv: Tensor) -> Tensor:
            rows = []
            for k in range(0, len(sv), 16):      # 16 rows at a time: bounded memory
                Sg, Dg = torch.meshgrid(sv[k: k + 16], dv, indexing="ij")
                th = term.exact_thermo(Dg.reshape(-1), Sg.reshape(-1, 1), w64)
                rows.append(torch.stack([th.U, th.T[:, 0], th.P, th.kappa], -1).view(Sg.shape[0], len(dv), 4))
            return torch.cat(rows)

        sv = torch.linspace(new.s0, new.s1, n, dtype=torch.float64, device=device)
        dv = torch.linspace(new.d0, new.d1, n, dtype=torch.float64, device=device)
        values = exact(sv, dv)
        mids = exact(0.5 * (sv[1:] + sv[:-1]), 0.5 * (dv[1:] + dv[:-1]))
        v00, v10 = values[:-1, :-1], values[1:, :-1]
        v01, v11 = values[:-1, 1:], values[1:, 1:]
        cells = torch.cat([v00, v10 - v00, v01 - v00, v11 - v10 - v01 + v00], -1)   # (n-1, n-1, 16)
        new.cells = cells.reshape(-1, 16)
        interp = 0.25 * (values[1:, 1:] + values[:-1, 1:] + values[1:, :-1] + values[:-1, :-1])
        scale = values.abs().amax((0, 1)).clamp_min(1e-300)
        err = float(((interp - mids).abs().amax((0, 1)) / scale).max())
        return new, err

    def _cells(self, S: Tensor, dens: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Each row's table cell (N, 16), its fractional position in S and in dens (N, 1)
        each, and whether it lies inside the table (N,)."""
        xs = (S[:, 0] - self.s0) * ((self.ns - 1) / (self.s1 - self.s0))
        xd = (dens - self.d0) * ((self.nd - 1) / (self.d1 - self.d0))
        inside = (xs >= 0) & (xs <= self.ns - 1) & (xd >= 0) & (xd <= self.nd - 1)
        i0 = xs.clamp(0, self.ns - 1).floor().long().clamp(max=self.ns - 2)
        j0 = xd.clamp(0, self.nd - 1).floor().long().clamp(max=self.nd - 2)
        fs = (xs - i0.to(xs.dtype)).clamp(0, 1).unsqueeze(-1)
        fd = (xd - j0.to(xd.dtype)).clamp(0, 1).unsqueeze(-1)
        return self.cells.to(S.dtype).index_select(0, i0 * (self.nd - 1) + j0), fs, fd, inside

    def thermo(self, dens: Tensor, S: Tensor, w: Tensor) -> Thermo:
        c, fs, fd, inside = self._cells(S, dens)
        out = c[:, 0:4] + c[:, 4:8] * fs + (c[:, 8:12] + c[:, 12:16] * fs) * fd
        if not bool(inside.all()):
            idx = torch.nonzero(~inside).squeeze(-1)
            ex = self.exact_thermo(dens[idx], S[idx], w)
            out[idx] = torch.stack([ex.U, ex.T[:, 0], ex.P, ex.kappa], -1).to(out.dtype)
        cols: List[Tensor] = out.unbind(-1)
        T = cols[1].unsqueeze(-1)
        return Thermo(dens, cols[0], T, cols[2], cols[1], cols[3])

    def u_theta(self, S: Tensor, dens: Tensor, w: Tensor) -> Tuple[Tensor, Tensor]:
        """The table's U and its own slope in S (the bilinear U is linear in S within a
        cell), so that Newton's method in :meth:`heat_to_entropy` solves the table's
        equation U(S + dS) = U + heat in one step within a cell (the interpolated T, a
        separate column, is not exactly that slope); the network outside the table."""
        c, fs, fd, inside = self._cells(S, dens)
        u = (c[:, 0:1] + c[:, 4:5] * fs + (c[:, 8:9] + c[:, 12:13] * fs) * fd)[:, 0]
        slope = ((c[:, 4:5] + c[:, 12:13] * fd) * ((self.ns - 1) / (self.s1 - self.s0)))[:, 0]
        if not bool(inside.all()):
            idx = torch.nonzero(~inside).squeeze(-1)
            u_ex, th_ex = self.eos.value_and_slope(S[idx], 1.0 / (dens[idx] * self.volume_ref), self.stiffness,
                                                   w.to(S.dtype))
            u = u.index_put((idx,), (self.theta_ref * u_ex).to(u.dtype))
            slope = slope.index_put((idx,), (self.theta_ref * th_ex).to(u.dtype))
        return u, slope


TERM = DensityEnergy
