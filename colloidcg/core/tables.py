"""Linear-interpolation tables of functions of q = r / h in [0, 1], for fast rollouts, as
molecular-dynamics codes tabulate pair potentials.

Functions of a pair's reduced distance q alone (the kernel W, its derivative, the friction
and conduction functions, the soft-sphere energy) can be read from a table instead of
running their networks for every pair. Linear interpolation errs by O(dq^2 f''/8);
:meth:`LinearTable.fit` measures the error against the functions on a grid 7 times finer
and returns the largest error relative to each column's maximum.
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor, nn


class LinearTable(nn.Module):
    """Table of k functions on n equally spaced points of q in [0, 1]; 0 at q >= 1."""

    def __init__(self, values: Tensor):
        super().__init__()
        self.n = int(values.shape[0])
        self.k = int(values.shape[1])
        # per interval: value at the left node and slope, so one gather serves a lookup
        ext = torch.cat([values, values[-1:]])
        self.register_buffer("cells", torch.cat([ext[:-1], ext[1:] - ext[:-1]], -1))   # (n, 2k)

    def forward(self, q: Tensor) -> Tensor:
        """(P, k) interpolated values at q (P,)."""
        x = torch.clamp(q, 0.0, 1.0) * (self.n - 1)
        i0 = torch.clamp(x.floor().long(), max=self.n - 2)
        f = (x - i0.to(x.dtype)).unsqueeze(-1)
        cell = self.cells.to(q.dtype).index_select(0, i0)
        out = cell[:, :self.k] + cell[:, self.k:] * f
        return out * (q < 1.0).unsqueeze(-1).to(q.dtype)

    @classmethod
    @torch.no_grad()
    def fit(cls, fn: Callable[[Tensor], Tensor], n: int, like: Tensor) -> Tuple["LinearTable", float]:
        """Tabulate ``fn`` (q (P,) -> (P, k)) on n points; return the table (in ``like``'s
        dtype and device) and its largest relative error. ``fn`` is evaluated in float64
        (the module holding its weights is converted for the duration when needed)."""
        dtype, device = like.dtype, like.device
        q = torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=device)
        qf = torch.linspace(0.0, 1.0, 7 * (n - 1) + 1, dtype=torch.float64, device=device)[:-1]
        values, exact = fn(q).double(), fn(qf).double()
        table = cls(values)
        approx = table(qf)
        scale = exact.abs().amax(0).clamp_min(1e-300)
        err = float(((approx - exact).abs().amax(0) / scale).max())
        return table.to(dtype), err
