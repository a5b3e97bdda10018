"""Additive per-particle observables: the chosen macroscopic variables z*.

Each observable is a mean over particles of a per-particle quantity f_i(x), so it is
intensive and additive: the whole system's value is the mean over all particles, a
patch's value the mean over the patch's inner particles (a patch's halo only supplies
neighbours), and the whole system's value is the particle-weighted mean of its patches'.

Observables (:data:`OBSERVABLES`):

- ``psi6``: mean local hexatic order |psi6_i|, psi6_i = (1/6) sum_j exp(6 i theta_ij) over
  the 6 nearest neighbours (Nelson & Halperin 1979; 2D only).
- ``ordered_fraction``: the fraction of particles with |psi6_i| > ``ORDER_THRESHOLD`` (0.7).
- ``psi6_coherence``: mean over particles of |(psi6_i + sum_j psi6_j) / (k + 1)|, j over the
  k = ``COHERENCE_NEIGHBOURS`` (30, about three neighbour shells) nearest neighbours, psi6
  complex: the orientational coherence of a particle's surroundings. It is high inside
  grains a few spacings wide and low where orientations of nearby particles disagree, so
  it tells grain size apart from local order at equal ``psi6`` (a closure variable for
  coarsening; 2D only). Its reach is the k-th neighbour distance plus a first shell
  (about 4 mean spacings): a patch's values equal the whole system's only with a halo
  (plus buffer) that wide.
- ``q6``: mean local Steinhardt bond order q6_i over the 12 nearest neighbours,
  q6_i = sqrt(4 pi / 13 sum_m |q6m_i|^2), q6m_i = (1/12) sum_j Y6m(r_ij) (Steinhardt,
  Nelson & Ronchetti 1983; 3D only). A perfect fcc crystal gives 0.5745, hcp 0.4848, a
  uniform random gas about 0.28, a dense soft-sphere liquid about 0.41.
- ``solid_fraction``: the fraction of solid-like particles, the crystallinity of 3D
  nucleation studies (ten Wolde, Ruiz-Montero & Frenkel 1996): a bond i-j between 12
  nearest neighbours is solid-like when the normalised overlap of their q6m vectors,
  Re sum_m q6m_i q6m_j* / (|q6_i| |q6_j|), exceeds ``SOLID_BOND`` (0.5), and a particle is
  solid-like with at least ``SOLID_BONDS`` (7) of its 12 bonds so (3D only). Its reach is
  two neighbour shells (about 2.5 spacings).
- ``mean_S``: mean of the first entropy-like variable S of the learned model (needs S).
- ``area_fraction`` is *not* a dynamic variable: in a fixed periodic box it is a constant
  (sum of pi/4 size_i^2 over the box area; pi/6 size^3 over the volume in 3D). It is kept
  as a label of the data (:func:`labels`), never evolved; asking for it among the
  evolved variables is refused.

A rearrangement-rate proxy needs two configurations per evaluation (not one state), so it
is not an additive observable of a state and is not offered.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import ParameterError
from ..structure.order import bond_order

__all__ = ["OBSERVABLES", "LABELS", "ORDER_THRESHOLD", "COHERENCE_NEIGHBOURS", "psi6_coherence", "check_names", "per_particle", "whole", "patch_mean",
           "labels", "psi6_local", "knn", "q6m_local", "q6_norm", "solid_like", "q6_local", "local_order",
           "order_coherence"]

OBSERVABLES = ("psi6", "ordered_fraction", "psi6_coherence", "q6", "solid_fraction", "mean_S")
LABELS = ("area_fraction",)
ORDER_THRESHOLD = 0.7
COHERENCE_NEIGHBOURS = 30
#: 3D bond order: neighbours per particle, the solid-bond overlap threshold and the solid
#: bonds a solid-like particle needs (ten Wolde, Ruiz-Montero & Frenkel 1996).
Q6_NEIGHBOURS, SOLID_BOND, SOLID_BONDS = 12, 0.5, 7


def check_names(names: Sequence[str], dim: int, has_S: bool = True, has_size: bool = True) -> tuple[list, list]:
    """Split requested ``names`` into (evolved observables, constant labels); a one-line
    ParameterError for a name the data cannot give (psi6 in 3D, mean_S without S,
    area_fraction without sizes, unknown names)."""
    obs, lab = [], []
    for n in names:
        n = n.strip()
        if not n:
            continue
        if n in LABELS:
            if not has_size:
                raise ParameterError("observables: area_fraction needs per-particle sizes; the data have none")
            lab.append(n)
            continue
        if n not in OBSERVABLES:
            raise ParameterError(f"observables: unknown {n!r}; expected some of "
                                 f"{', '.join(OBSERVABLES + LABELS)}")
        if n in ("psi6", "ordered_fraction", "psi6_coherence") and dim != 2:
            raise ParameterError(f"observables: {n} is a 2D hexatic order; the data are {dim}D "
                                 "(3D: q6, solid_fraction)")
        if n in ("q6", "solid_fraction") and dim != 3:
            raise ParameterError(f"observables: {n} is a 3D bond order; the data are {dim}D "
                                 "(2D: psi6, ordered_fraction)")
        if n == "mean_S" and not has_S:
            raise ParameterError("observables: mean_S needs the model's S; the simulator has none")
        if n not in obs:
            obs.append(n)
    if not obs:
        raise ParameterError(f"observables: need at least one of {', '.join(OBSERVABLES)} to evolve "
                             "(area_fraction is a constant label)")
    return obs, lab


def knn(pos: np.ndarray, box, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest neighbours of every particle, minimum image in ``box`` (None: open).
    Returns (separations (N, k, d) px, r_j - r_i; distances (N, k) px; indices (N, k))."""
    from ..neighbours import Tree

    tree = Tree(pos, box)
    k = min(int(k), len(pos) - 1)
    if k < 1:
        raise ParameterError("state: fewer than two particles")
    d, idx = tree.nearest(k)
    d = d.reshape(len(pos), k)
    idx = idx.reshape(len(pos), k)
    sep = tree.points[idx] - tree.points[:, None, :]
    if tree.box is not None:
        sep -= tree.box * np.round(sep / tree.box)
    return sep, d, idx


def psi6_local(pos: np.ndarray, box, k: int = 6) -> np.ndarray:
    """Complex psi6_i (N,) over the ``k`` nearest neighbours (2D positions px)."""
    if pos.shape[1] != 2:
        raise ParameterError(f"psi6: a 2D hexatic order; the positions are {pos.shape[1]}D")
    sep, _, _ = knn(pos, box, k)
    return bond_order(sep, 6).mean(axis=1)


def psi6_coherence(pos: np.ndarray, box, psi: np.ndarray | None = None,
                   k: int = COHERENCE_NEIGHBOURS) -> np.ndarray:
    """(N,) |(psi6_i + sum_j psi6_j) / (k + 1)| over the ``k`` nearest neighbours j of each
    particle (2D positions px, ``box`` (2,) px or None; ``psi`` the complex psi6_i (N,) if
    already computed). Dimensionless, in [0, 1]."""
    if psi is None:
        psi = psi6_local(pos, box)
    _, _, idx = knn(pos, box, k)
    return np.abs((psi + psi[idx].sum(axis=1)) / (idx.shape[1] + 1))


def q6m_local(pos: np.ndarray, box, k: int = Q6_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Steinhardt q6m_i (N, 13) complex, m = -6..6, averaged over the ``k`` nearest
    neighbours (3D positions px, ``box`` (3,) px or None), and the neighbours' indices
    (N, k)."""
    if pos.shape[1] != 3:
        raise ParameterError(f"q6: a 3D bond order; the positions are {pos.shape[1]}D")
    sep, dist, idx = knn(pos, box, k)
    polar = np.arccos(np.clip(sep[..., 2] / np.maximum(dist, 1e-300), -1.0, 1.0))
    azimuth = np.arctan2(sep[..., 1], sep[..., 0])
    m = np.arange(-6, 7)[:, None, None]
    return _sph_harm6(m, polar[None], azimuth[None]).mean(axis=2).T, idx


def _sph_harm6(m, polar, azimuth):
    """Y_6^m(polar, azimuth), broadcast (scipy's sph_harm_y, or the older sph_harm)."""
    import scipy.special as sp

    if hasattr(sp, "sph_harm_y"):
        return sp.sph_harm_y(6, m, polar, azimuth)
    return sp.sph_harm(m, 6, azimuth, polar)


def q6_norm(q6m: np.ndarray) -> np.ndarray:
    """(N,) q6_i = sqrt(4 pi / 13 sum_m |q6m_i|^2) of q6m (N, 13)."""
    return np.sqrt(4.0 * math.pi / 13.0 * np.sum(np.abs(q6m) ** 2, axis=1))


def solid_like(q6m: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(N,) bool: at least :data:`SOLID_BONDS` of a particle's neighbours ``idx`` (N, k) have
    a normalised q6m overlap above :data:`SOLID_BOND` with it (q6m (N, 13))."""
    unit = q6m / np.maximum(np.sqrt(np.sum(np.abs(q6m) ** 2, axis=1)), 1e-300)[:, None]
    overlap = np.real(np.einsum("im,ikm->ik", unit, np.conj(unit[idx])))
    return np.sum(overlap > SOLID_BOND, axis=1) >= SOLID_BONDS


def q6_local(pos: np.ndarray, box, k: int = Q6_NEIGHBOURS) -> np.ndarray:
    """(N,) Steinhardt q6_i over the ``k`` nearest neighbours (3D positions px, ``box`` (3,)
    px or None), as ``q6_norm(q6m_local(pos, box, k)[0])`` but through the addition theorem
    of spherical harmonics, sum_m Y6m(u) Y6m(v)* = 13 / (4 pi) P6(u . v), so that
    q6_i^2 = (1/k^2) sum_jl P6(u_ij . u_il): a few times faster than evaluating the 13
    harmonics (the seam scoring of matched tiling calls it for every candidate)."""
    if pos.shape[1] != 3:
        raise ParameterError(f"q6: a 3D bond order; the positions are {pos.shape[1]}D")
    sep, dist, _ = knn(pos, box, k)
    u = sep / np.maximum(dist, 1e-300)[..., None]
    c = np.einsum("nja,nla->njl", u, u)
    c2 = c * c
    p6 = (((231.0 * c2 - 315.0) * c2 + 105.0) * c2 - 5.0) / 16.0
    return np.sqrt(np.maximum(p6.sum(axis=(1, 2)), 0.0)) / k


def local_order(pos: np.ndarray, box) -> np.ndarray:
    """(N,) the local bond order of the dimension: |psi6_i| (6 nearest neighbours) in 2D,
    q6_i (12 nearest neighbours) in 3D. ``pos`` (N, d) px, ``box`` (d,) px or None."""
    return np.abs(psi6_local(pos, box)) if pos.shape[1] == 2 else q6_local(pos, box)


def order_coherence(pos: np.ndarray, box) -> float:
    """How far one orientation of the bond order spans a configuration: |<psi6_i>| / <|psi6_i|>
    in 2D, q6 of the mean q6m_i over the mean q6_i in 3D (``pos`` (N, d) px, ``box`` (d,) px or
    None). Near 1 for a single crystal (thermal vibrations lower it a little), about
    1/sqrt(number of grains) for a polycrystal and about 1/sqrt(N) for a liquid."""
    if pos.shape[1] == 2:
        psi = psi6_local(pos, box)
        return float(abs(psi.mean()) / max(float(np.abs(psi).mean()), 1e-300))
    q = q6m_local(pos, box)[0]
    return float(q6_norm(q.mean(axis=0)[None])[0] / max(float(q6_norm(q).mean()), 1e-300))


def per_particle(state, names: Sequence[str]) -> np.ndarray:
    """(N, len(names)) per-particle values f_i of the observables ``names`` for a
    :class:`~colloidcg.scaling.simulators.MicroState` (pos (N, d) px, box (d,) px or None,
    S (N, n_S) or None)."""
    pos = np.asarray(state.pos, np.float64)
    cols = []
    psi = q = None
    for n in names:
        if n in ("psi6", "ordered_fraction", "psi6_coherence"):
            if psi is None:
                psi = psi6_local(pos, state.box)
            if n == "psi6":
                cols.append(np.abs(psi))
            elif n == "ordered_fraction":
                cols.append((np.abs(psi) > ORDER_THRESHOLD).astype(np.float64))
            else:
                cols.append(psi6_coherence(pos, state.box, psi))
        elif n in ("q6", "solid_fraction"):
            if q is None:
                q = q6m_local(pos, state.box)
            cols.append(q6_norm(q[0]) if n == "q6" else solid_like(*q).astype(np.float64))
        elif n == "mean_S":
            if state.S is None:
                raise ParameterError("observables: mean_S needs the model's S; the state has none")
            cols.append(np.asarray(state.S, np.float64)[:, 0])
        else:
            raise ParameterError(f"observables: unknown {n!r}; expected some of {', '.join(OBSERVABLES)}")
    return np.stack(cols, axis=1) if cols else np.zeros((len(pos), 0))


def whole(state, names: Sequence[str]) -> np.ndarray:
    """(len(names),) the whole system's observables: the mean over all particles."""
    return per_particle(state, names).mean(axis=0)


def patch_mean(state, inner_mask: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(len(names),) a patch's observables: the mean over its inner particles
    (``inner_mask`` (N,) bool over ``state``'s particles; the halo supplies neighbours)."""
    f = per_particle(state, names)
    m = np.asarray(inner_mask, bool)
    if not m.any():
        raise ParameterError("patch: no inner particles")
    return f[m].mean(axis=0)


def labels(state, names: Sequence[str]) -> dict:
    """Constant labels of a periodic state: {'area_fraction': sum of particle areas over
    the box area} (sizes are diameters, px)."""
    out = {}
    for n in names:
        if n == "area_fraction":
            if state.size is None or state.box is None:
                raise ParameterError("observables: area_fraction needs sizes and a periodic box")
            s = np.asarray(state.size, np.float64)
            d = len(state.box)
            vol = math.pi / 4 * s ** 2 if d == 2 else math.pi / 6 * s ** 3
            out[n] = float(vol.sum() / np.prod(state.box))
    return out
