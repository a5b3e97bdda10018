"""Tabulated pair functions for fast inference, as molecular-dynamics codes tabulate
pair potentials.

The learned pair functions (kernel W, dW/dq and the friction/conduction coefficients
A, B, C) depend only on q = r/h, so for rollouts they can be evaluated from a table on
q in [0, 1] with linear interpolation instead of running the MLP for every pair. The
interpolation error is O(dq^2 f''/8); :func:`tabulate` measures it against the network on
a grid 7 times finer and returns the largest error relative to each function's maximum.
"""

from __future__ import annotations

import torch
from torch import nn

from .model import MetriplecticModel


class PairTable(nn.Module):
    """Linear-interpolation table of (W, dW/dq, A, B, C) on n points of q in [0, 1]."""

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.register_buffer("values", values)  # (n, 5)
        self.n = values.shape[0]

    def forward(self, q: torch.Tensor):
        x = torch.clamp(q, 0.0, 1.0) * (self.n - 1)
        i0 = torch.clamp(x.floor().long(), max=self.n - 2)
        f = (x - i0.to(x.dtype)).unsqueeze(-1)
        tab = self.values.to(q.dtype)
        out = tab[i0] * (1 - f) + tab[i0 + 1] * f
        out = out * (q < 1.0).unsqueeze(-1).to(q.dtype)
        return out[..., 0], out[..., 1], out[..., 2:]


@torch.no_grad()
def _exact(model: MetriplecticModel, q: torch.Tensor) -> torch.Tensor:
    w, dw = model.kernel(q)
    return torch.cat([w.unsqueeze(-1), dw.unsqueeze(-1), model.pair(q).to(q.dtype)], -1)


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
    w, dw, c = table.double()(qf)
    approx = torch.cat([w.unsqueeze(-1), dw.unsqueeze(-1), c], -1)
    scale = exact.abs().amax(0).clamp_min(1e-300)
    err = float(((approx - exact).abs().amax(0) / scale).max())
    model.tables = table.to(dtype)
    return err


def untabulate(model: MetriplecticModel) -> None:
    model.tables = None
