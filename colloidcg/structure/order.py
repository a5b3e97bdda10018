"""Bond-orientational order and neighbour counts from pair lists."""

from __future__ import annotations

import numpy as np


def bond_order(d: np.ndarray, k: int = 6) -> np.ndarray:
    """exp(i k theta) of bond vectors ``d`` (..., 2) px, theta the angle to the x axis:
    complex (...)."""
    z = (d[..., 0] + 1j * d[..., 1]) / np.hypot(d[..., 0], d[..., 1])  # exp(i theta)
    return z ** k if k not in (6,) else (z * z * z) ** 2  # exact integer powers, no trig


def psi_k(pos: np.ndarray, src: np.ndarray, dst: np.ndarray, n_rows: int, k: int = 6,
          bonds: np.ndarray | None = None) -> np.ndarray:
    """Local k-fold bond-orientational order, complex, per row (2D).

    psi_k(i) = (1/n_i) sum_j exp(i k theta_ij) over the directed bonds i -> j given by
    ``src``/``dst`` (Nelson & Halperin 1979), theta_ij the angle of r_j - r_i to the x axis.

    Parameters
    ----------
    pos : (R, 2) float64 px
    src, dst : (B,) int  directed bonds (each neighbour relation listed once per direction)
    n_rows : int
    k : int
    bonds : (B, 2) px, optional
        The bond vectors r_j - r_i where they are not pos[dst] - pos[src] (minimum image
        in a periodic box).

    Returns
    -------
    (R,) complex128; NaN for rows with no bonds.
    """
    zk = bond_order(pos[dst] - pos[src] if bonds is None else bonds, k)
    re = np.bincount(src, zk.real, minlength=n_rows)
    im = np.bincount(src, zk.imag, minlength=n_rows)
    n = np.bincount(src, minlength=n_rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (re + 1j * im) / np.where(n > 0, n, np.nan)


def pair_counts(i: np.ndarray, j: np.ndarray, n_rows: int) -> np.ndarray:
    """(R,) int64: number of partners of each row in the unordered pairs (i, j)."""
    return np.bincount(i, minlength=n_rows) + np.bincount(j, minlength=n_rows)
