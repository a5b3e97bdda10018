"""Exact Ornstein-Uhlenbeck (OU) coefficients for substrate friction over one step.

A particle with velocity u under a constant acceleration b and a friction rate gamma,
du = (b - gamma u) dt + sqrt(2 gamma kT/m) dW, dr = u dt, has an exact Gaussian solution
over a step h (Ermak & Buckholz 1980, J. Comput. Phys. 35, 169). With x = gamma h:

    u(h)  = e^{-x} u + b h phi1 + xi_u
    dr    = h (phi1 u + b h phi2) + xi_r
    phi1 = (1 - e^{-x}) / x,   phi2 = (x - 1 + e^{-x}) / x^2

per component, with Var xi_u = s2 (1 - e^{-2x}), Cov(xi_u, xi_r) = s2 h x phi1^2,
Var xi_r = s2 h^2 psi, psi = 2 phi2 - phi1^2, s2 = kT/m.

Video gives frame-averaged velocities v_t = (r_t - r_{t-1}) / dt, not the instantaneous u.
In the stationary frozen-coefficient process the averaged velocities of consecutive frames
have variance 2 s2 phi2 and correlation rho1 = phi1^2 / (2 phi2); the instantaneous velocity
at the end of a frame, given that frame's average, has mean mu + beta (v_t - mu),
beta = phi1 / (2 phi2), and variance s2 (1 - rho1), with mu = u + a / gamma the terminal
velocity (a the full drift). The one-frame transition of averaged velocities is then

    v_{t+1} | v_t ~ N(v_t + a dt F1,  Sigma G),   F1 = (1 - rho1) / x,
    G = phi2 (1 - rho1^2) / x = phi2 (1 + rho1) F1,

with Sigma = 2 s2 x the Euler-Maruyama velocity-noise covariance of one frame. These
statistics are exact for free Langevin particles at any x and reduce to Brownian dynamics
for x >> 1 and to Euler-Maruyama-like factors 2/3 for x -> 0.

All coefficients are computed in float64 from a per-particle tensor x >= 0 (series where
the closed forms cancel) and returned in x's dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

_X_MIN = 1e-12
_X_MAX = 1e6


class OUCoefficients(NamedTuple):
    """OU step and frame-averaging coefficients, each shaped like x (see :func:`coefficients`)."""

    E: Tensor
    phi1: Tensor
    phi2: Tensor
    psi: Tensor
    vu: Tensor
    cross: Tensor
    cond: Tensor
    rho1: Tensor
    F1: Tensor
    G: Tensor
    omb: Tensor
    varu: Tensor


def coefficients(x: Tensor) -> OUCoefficients:
    """OU step and frame-averaging coefficients of x = gamma h (any shape, x >= 0).

    Fields (tensors shaped like x, in x's dtype): E = e^{-x}, phi1, phi2, psi,
    vu = 1 - e^{-2x}, cross = x phi1^2 / sqrt(vu), cond = psi - x^2 phi1^4 / vu (conditional
    variance of xi_r given xi_u, in units s2 h^2), rho1, F1, G, omb = (1 - beta) / x,
    varu = 1 - rho1. TorchScript-compatible.
    """
    dtype = x.dtype
    x = x.to(torch.float64).clamp(1e-12, 1e6)   # _X_MIN, _X_MAX; differentiable: the loss trains gamma
    small = x < 1e-3
    xs = torch.where(small, torch.ones_like(x), x)     # keeps the closed forms finite
    em1 = torch.expm1(-xs)
    E = torch.exp(-x)
    phi1 = torch.where(small, 1 - x / 2 + x ** 2 / 6 - x ** 3 / 24, -em1 / xs)
    phi2 = torch.where(small, 0.5 - x / 6 + x ** 2 / 24 - x ** 3 / 120, (xs + em1) / xs ** 2)
    psi = torch.where(small, 2 * x / 3 - x ** 2 / 2 + 7 * x ** 3 / 30, 2 * phi2 - phi1 ** 2)
    vu = -torch.expm1(-2 * x)
    cross = x * phi1 ** 2 / vu.sqrt()
    cond = torch.where(small, x / 6 - x ** 3 / 60, psi - x ** 2 * phi1 ** 4 / vu).clamp_min(0.0)
    rho1 = phi1 ** 2 / (2 * phi2)
    F1 = torch.where(small, 2.0 / 3 - 5 * x / 18 + 23 * x ** 2 / 270, (1 - rho1) / xs)
    G = phi2 * (1 + rho1) * F1
    beta = phi1 / (2 * phi2)
    omb = torch.where(small, 1.0 / 6 - x / 36 + x ** 2 / 540, (1 - beta) / xs)
    varu = x * F1
    return OUCoefficients(E.to(dtype), phi1.to(dtype), phi2.to(dtype), psi.to(dtype), vu.to(dtype),
                          cross.to(dtype), cond.to(dtype), rho1.to(dtype), F1.to(dtype), G.to(dtype),
                          omb.to(dtype), varu.to(dtype))


def lag_correlation(x: torch.Tensor, k: int) -> torch.Tensor:
    """Correlation rho_k = rho1 e^{-x (k - 1)} of frame-averaged velocities k frames apart."""
    c = coefficients(x)
    return c.rho1 * torch.exp(-x * (k - 1))


def conditional_variance_factor(x: torch.Tensor, k: int) -> torch.Tensor:
    """Var(v_{t+k} | v_t) / Sigma for frame-averaged velocities: phi2 (1 - rho_k^2) / x,
    written so that it stays finite for x -> 0 (Sigma = 2 s2 x is the one-frame EM noise)."""
    c = coefficients(x)
    xd = x.to(torch.float64).clamp(_X_MIN, _X_MAX)
    tail = torch.where(xd * (k - 1) < 1e-8, torch.full_like(xd, 2.0 * (k - 1)),
                       -torch.expm1(-2 * xd * (k - 1)) / xd).to(x.dtype)
    return c.phi2 * (c.F1 * (1 + c.rho1) + c.rho1 ** 2 * tail)


def invert_rho1(a: float) -> float:
    """x with rho1(x) = a (0 < a < 1): the friction rate (per frame) whose frame-averaged
    velocities have lag-1 correlation a. Bisection on the monotone rho1(x)."""
    lo, hi = 1e-6, 1e4
    if a >= float(coefficients(torch.tensor(lo, dtype=torch.float64)).rho1):
        return lo
    if a <= float(coefficients(torch.tensor(hi, dtype=torch.float64)).rho1):
        return hi
    for _ in range(100):
        mid = (lo * hi) ** 0.5
        if float(coefficients(torch.tensor(mid, dtype=torch.float64)).rho1) > a:
            lo = mid
        else:
            hi = mid
    return (lo * hi) ** 0.5
