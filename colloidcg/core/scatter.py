"""Sums over pairs onto particles (TorchScript-compatible helpers of the core)."""

from __future__ import annotations

import torch
from torch import Tensor


def dot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot product over the last axis."""
    return (a * b).sum(-1)


def scatter(n: int, idx: Tensor, val: Tensor) -> Tensor:
    """(n, ...) sums of the rows of ``val`` at the particles ``idx``."""
    shape = [n] + list(val.shape[1:])
    return torch.zeros(shape, dtype=val.dtype, device=val.device).index_add_(0, idx, val)


def scatter2(n: int, ij: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Sum over pairs of ``a`` at their first particle and ``b`` at their second, in one
    pass; ``ij`` = cat(i, j) (the pair list's two columns concatenated)."""
    return scatter(n, ij, torch.cat([a, b]))
