"""Learned building blocks whose physical constraints hold by construction.

- :class:`CompactKernel`: the density kernel W(r) of compact support h, a positive
  combination of polynomial bumps (1 - r/h)^p, p >= 3, so that W >= 0, W is
  non-increasing, and W and W' vanish continuously at r = h.
- :class:`InternalEnergy`: U(S, V), jointly convex in (S, V), strictly increasing in every
  component of S and strictly decreasing in V. It is an input-convex neural network
  (Amos, Xu & Kolter 2017) applied to (S, -V/V0) with all weights non-negative (softplus
  of free parameters) and a convex, non-decreasing activation (softplus); such a network
  is convex and non-decreasing in each input. Added terms make the properties strict:
  ``lam . softplus(S)`` (T = dU/dS > 0, heat-capacity matrix positive definite) and
  ``-mu log(V/V0)`` (pressure -dU/dV > 0, compressibility > 0).
- :class:`PairCoefficients`: non-negative pair functions A(q), B(q), C(q) of q = r/h
  (softplus of an MLP output times the envelope (1 - q)^2 for q < 1, 0 beyond).
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F


def inv_softplus(y: float) -> float:
    """x with softplus(x) = y (y > 0)."""
    return y + math.log(-math.expm1(-y))


def envelope(q: torch.Tensor) -> torch.Tensor:
    """Smooth cut-off (1 - q)^2 for q < 1, exactly 0 for q >= 1."""
    return torch.clamp(1.0 - q, min=0.0).square()


class MLP(nn.Module):
    """Plain multilayer perceptron with SiLU activations."""

    def __init__(self, n_in: int, n_out: int, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = []
        n = n_in
        for _ in range(depth):
            layers += [nn.Linear(n, width), nn.SiLU()]
            n = width
        layers.append(nn.Linear(n, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CompactKernel(nn.Module):
    """W(r) = sum_k c_k (1 - r/h)_+^(k+3), c_k = softplus(raw_k) > 0.

    Evaluated on q = r/h. Returns W(q) and dW/dq.
    """

    def __init__(self, n_terms: int = 4):
        super().__init__()
        self.powers: torch.Tensor
        self.register_buffer("powers", torch.arange(3, 3 + n_terms, dtype=torch.float32))
        self.raw = nn.Parameter(torch.full((n_terms,), inv_softplus(1.0 / n_terms)))

    def coefficients(self) -> torch.Tensor:
        return F.softplus(self.raw)

    def forward(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.coefficients().to(q.dtype)
        p = self.powers.to(q.dtype)
        base = torch.clamp(1.0 - q, min=0.0).unsqueeze(-1)  # (..., 1)
        w = (c * base ** p).sum(-1)
        dw = -(c * p * base ** (p - 1)).sum(-1)
        return w, dw

    def at_zero(self) -> torch.Tensor:
        return self.coefficients().sum()


class InternalEnergy(nn.Module):
    """Input-convex, monotone internal energy U(S, V) in units of ``theta_ref``.

    Parameters
    ----------
    n_s : number of entropic components.
    width, depth : hidden width and number of hidden layers of the ICNN.
    """

    def __init__(self, n_s: int = 1, width: int = 32, depth: int = 2):
        super().__init__()
        n_in = n_s + 1
        self.n_s = n_s
        self.wx = nn.ParameterList()
        self.wz = nn.ParameterList()
        self.b = nn.ParameterList()
        n_prev = 0
        for layer in range(depth):
            self.wx.append(nn.Parameter(torch.randn(width, n_in) * 0.5 - 2.0))
            if layer > 0:
                self.wz.append(nn.Parameter(torch.randn(width, n_prev) * 0.5 - 3.0))
            self.b.append(nn.Parameter(torch.randn(width) * 0.5))
            n_prev = width
        self.out_z = nn.Parameter(torch.randn(n_prev) * 0.5 - 4.0)
        self.out_x = nn.Parameter(torch.full((n_in,), -3.0))
        # Linear entropy term sets the temperature scale (T ~ 1 at init); the softplus
        # term gives strict convexity (heat capacity > 0) and T > 0 everywhere.
        self.lin_s = nn.Parameter(torch.full((n_s,), inv_softplus(1.0)))
        self.lam = nn.Parameter(torch.full((n_s,), inv_softplus(0.1)))
        self.mu = nn.Parameter(torch.tensor(inv_softplus(1.0)))

    @torch.jit.unused
    def forward(self, S: torch.Tensor, v_red: torch.Tensor, stiffness: float = 1.0) -> torch.Tensor:
        """U per particle (eager only; the compiled model uses :meth:`derivatives`).

        Parameters
        ----------
        S : (N, n_s) entropic variables (dimensionless, units of k_B).
        v_red : (N,) reduced volume V / V0 > 0.
        stiffness : fixed factor (> 0) on the ``-mu log(V/V0)`` term: the dimensionless bulk
            modulus scale, calibrated from data (dense colloids are stiff in units of kT).
        """
        x = torch.cat([S, -v_red.unsqueeze(-1)], dim=-1)
        z = None
        for layer in range(len(self.wx)):
            pre = x @ F.softplus(self.wx[layer]).T + self.b[layer]
            if layer > 0:
                pre = pre + z @ F.softplus(self.wz[layer - 1]).T
            z = F.softplus(pre)
        u = z @ F.softplus(self.out_z) + x @ F.softplus(self.out_x)
        u = u + S @ F.softplus(self.lin_s) + F.softplus(S) @ F.softplus(self.lam)
        u = u - stiffness * F.softplus(self.mu) * torch.log(v_red)
        return u

    def layer_weights(self) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """The non-negative input weights softplus(wx_l), the biases b_l and the non-negative
        hidden weights softplus(wz_l) (layers 1..), as lists (TorchScript indexes lists,
        not ParameterLists)."""
        A: List[torch.Tensor] = []
        biases: List[torch.Tensor] = []
        B: List[torch.Tensor] = []
        for wx in self.wx:
            A.append(F.softplus(wx))
        for b in self.b:
            biases.append(b)
        for wz in self.wz:
            B.append(F.softplus(wz))
        return A, biases, B

    def value_and_slope(self, S: torch.Tensor, v_red: torch.Tensor, stiffness: float,
                        w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """U and its derivative along the heat weights, w . dU/dS (N,), in one forward pass
        (forward-mode through the layers; what Newton's method on U(S + s w) = target needs)."""
        x = torch.cat([S, -v_red.unsqueeze(-1)], dim=-1)
        wx_in = torch.cat([w, torch.zeros(1, dtype=w.dtype, device=w.device)])
        z = torch.zeros(0, dtype=x.dtype, device=x.device)
        a_z = torch.zeros(0, dtype=x.dtype, device=x.device)
        As, biases, Bs = self.layer_weights()
        for layer in range(len(As)):
            A = As[layer]
            pre = x @ A.T + biases[layer]
            a = (A @ wx_in).expand(x.shape[0], -1)
            if layer > 0:
                B = Bs[layer - 1]
                pre = pre + z @ B.T
                a = a + a_z @ B.T
            z = F.softplus(pre)
            a_z = torch.sigmoid(pre) * a
        out_z = F.softplus(self.out_z)
        out_x = F.softplus(self.out_x)
        lin = F.softplus(self.lin_s)
        lam = F.softplus(self.lam)
        u = z @ out_z + x @ out_x + S @ lin + F.softplus(S) @ lam - stiffness * F.softplus(self.mu) * torch.log(v_red)
        slope = a_z @ out_z + (out_x[:-1] + lin) @ w + (torch.sigmoid(S) * lam) @ w
        return u, slope

    def derivatives(self, S: torch.Tensor, v_red: torch.Tensor, stiffness: float,
                    w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """U and its derivatives in closed form (no autograd), for the drift and export.

        Parameters as :meth:`forward`; ``w`` (n_s,) the heat weights. Returns
        ``(u, du/dS (N, n_s), du/dv_red (N,), w^T (d^2u/dS^2) w (N,))``, all in units of
        ``theta_ref`` like :meth:`forward`.

        The network's input gradient is back-propagated by hand through its layers
        (d softplus = sigmoid), and the second derivative along w is carried forward with
        the layers (forward-mode: a layer's pre-activation moves by a = dpre . w, its
        output's curvature is s(1 - s) a^2 + s dpre'', s = sigmoid(pre)). Tested against
        autograd in tests/test_core.py.
        """
        n_s = self.n_s
        x = torch.cat([S, -v_red.unsqueeze(-1)], dim=-1)
        wx_in = torch.cat([w, torch.zeros(1, dtype=w.dtype, device=w.device)])     # direction in x
        z = torch.zeros(0, dtype=x.dtype, device=x.device)
        a_z = torch.zeros(0, dtype=x.dtype, device=x.device)       # dz . w
        c_z = torch.zeros(0, dtype=x.dtype, device=x.device)       # w^T (d^2 z) w
        sig: List[torch.Tensor] = []
        wxs, biases, wzs = self.layer_weights()
        for layer in range(len(wxs)):
            A = wxs[layer]
            pre = x @ A.T + biases[layer]
            a = (A @ wx_in).expand(x.shape[0], -1)
            c = torch.zeros_like(pre)
            if layer > 0:
                B = wzs[layer - 1]
                pre = pre + z @ B.T
                a = a + a_z @ B.T
                c = c_z @ B.T
            s = torch.sigmoid(pre)
            z = F.softplus(pre)
            a_z = s * a
            c_z = s * (1.0 - s) * a.square() + s * c
            sig.append(s)
        out_z = F.softplus(self.out_z)
        out_x = F.softplus(self.out_x)
        lin = F.softplus(self.lin_s)
        lam = F.softplus(self.lam)
        mu = F.softplus(self.mu)
        u = z @ out_z + x @ out_x + S @ lin + F.softplus(S) @ lam - stiffness * mu * torch.log(v_red)
        # reverse pass: g = du/dpre of the current layer
        g = sig[-1] * out_z
        grad_x = out_x + g @ wxs[-1]
        for layer in range(len(sig) - 1, 0, -1):
            g = sig[layer - 1] * (g @ wzs[layer - 1])
            grad_x = grad_x + g @ wxs[layer - 1]
        sS = torch.sigmoid(S)
        du_dS = grad_x[:, :n_s] + lin + sS * lam
        du_dv = -grad_x[:, n_s] - stiffness * mu / v_red
        curv = c_z @ out_z + (sS * (1.0 - sS) * lam) @ w.square()
        return u, du_dS, du_dv, curv


class PairCoefficients(nn.Module):
    """Non-negative pair functions of q = r/h: shear friction A, bulk friction B, conduction C.

    Returns a (..., 3) tensor (dimensionless; the model multiplies by its scales).
    """

    def __init__(self, width: int = 50, depth: int = 2, n_out: int = 3):
        super().__init__()
        self.mlp = MLP(1, n_out, width, depth)
        with torch.no_grad():
            self.mlp.net[-1].bias.fill_(inv_softplus(0.05))
            self.mlp.net[-1].weight.mul_(0.1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.mlp(q.unsqueeze(-1))) * envelope(q).unsqueeze(-1)


class PairPotential(nn.Module):
    """Repulsive pair energy phi(q) = sum_k c_k (1 - q / b_k)_+^2 of q = r/h, dimensionless.

    A non-negative combination (c_k = softplus(raw_k) >= 0) of harmonic soft-sphere
    potentials (Durian 1995) with learned contact distances b_k h, b_k = sigmoid(.) in
    (0, 1), initially spread evenly over [``b_min``, 0.98]: phi >= 0, phi is non-increasing
    (purely repulsive), and phi and its force vanish continuously at q = b_k < 1.
    Returns phi(q) and dphi/dq.
    """

    def __init__(self, n_terms: int = 8, b_min: float = 0.3, init: float = 1e-1):
        super().__init__()
        b = torch.linspace(b_min, 0.98, n_terms)
        self.raw_b = nn.Parameter(torch.log(b / (1.0 - b)))
        self.raw = nn.Parameter(torch.full((n_terms,), inv_softplus(init)))

    def coefficients(self) -> torch.Tensor:
        return F.softplus(self.raw)

    def ranges(self) -> torch.Tensor:
        return torch.sigmoid(self.raw_b)

    def forward(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.coefficients().to(q.dtype)
        b = self.ranges().to(q.dtype)
        gap = torch.clamp(1.0 - q.unsqueeze(-1) / b, min=0.0)   # (..., n)
        return (c * gap.square()).sum(-1), -(2.0 * c * gap / b).sum(-1)
