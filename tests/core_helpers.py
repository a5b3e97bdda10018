"""Dense matrices and single steps of the metriplectic model, for the guarantee tests.

Flat state ordering x = [r (N d), v (N d), S (N n_s)]; M = B B^T from
:func:`colloidcg.core.dense.dense_channels`; L the canonical Poisson matrix on (r, v).
"""

from __future__ import annotations

import torch

from colloidcg.core import State
from colloidcg.core.dense import dense_channels
from colloidcg.core.integrators import EulerMaruyama, ExactOU
from colloidcg.core.types import Carry


def flat(s: State) -> torch.Tensor:
    return torch.cat([s.r.reshape(-1), s.v.reshape(-1), s.S.reshape(-1)])


def unflat(x: torch.Tensor, n: int, d: int, k: int, size=None) -> State:
    return State(x[: n * d].view(n, d), x[n * d: 2 * n * d].view(n, d), x[2 * n * d:].view(n, k), size)


def dense_M(m, s: State, pairs, box=None) -> torch.Tensor:
    B = dense_channels(m, s, pairs, box)
    return B @ B.T


def dense_L(m, n: int, dtype=torch.float64) -> torch.Tensor:
    d, k = m.dim, m.n_s
    D = n * (2 * d + k)
    L = torch.zeros(D, D, dtype=dtype)
    eye = torch.eye(n * d, dtype=dtype) / m.mass.detach().to(dtype)
    L[: n * d, n * d: 2 * n * d] = eye
    L[n * d: 2 * n * d, : n * d] = -eye
    return L


def gradients(m, s: State, pairs, box=None):
    """Flat dE/dx and dS/dx (dS_tot/dx = 1 on every S component, 0 elsewhere)."""
    ns = m.compute(s, pairs, box)
    gE = torch.cat([-ns.force.reshape(-1), (ns.m * s.v).reshape(-1), ns.thermo.T.reshape(-1)])
    gS = torch.cat([torch.zeros_like(s.r).reshape(-1), torch.zeros_like(s.v).reshape(-1),
                    torch.ones_like(s.S).reshape(-1)])
    return gE, gS


def em_step(m, s: State, pairs, dt, generator=None, box=None, noise=True) -> State:
    """One Euler-Maruyama step from ``s``."""
    z = torch.zeros_like(s.r)
    c = EulerMaruyama(m).step(Carry(s.r, s.v, s.S, s.v, z, z), pairs, box, s.size, dt, generator, noise)
    return State(c.r, c.u, c.S, s.size)


def ou_step(m, s: State, pairs, dt, generator=None, box=None, noise=True):
    """One exact-OU step from ``s`` (s.v the instantaneous velocity, also the averaged one);
    returns (State, displacement)."""
    z = torch.zeros_like(s.r)
    c = ExactOU(m).step(Carry(s.r, s.v, s.S, s.v, z, z), pairs, box, s.size, dt, generator, noise)
    return State(c.r, c.u, c.S, s.size), c.dr
