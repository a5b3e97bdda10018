"""A crystal's thermal displacement field, learned from a film and sampled across seams.

Windows of one crystal film (:func:`colloidcg.scaling.upsample._crystal_film`) are cut in
the lattice's registry and placed as they are, so a tiled film is one crystal. Its seams
still show: neighbours across a window face were displaced by thermal motion in different
frames, or different places, so their relative displacement lacks the correlation that
neighbours in a crystal have (the long-wavelength phonons move them together). In 2D that
left |psi6| 0.025-0.03 low within a spacing of every face (docs/scaling.md).

This module heals those faces without a dynamical model, the counterpart of the
reference's few Monte Carlo events near each seam (Chen et al.): the displacements u of
the sites in a band about each seam are redrawn by Gibbs sampling from a Gaussian Markov
random field fitted to the film itself.

- :func:`fit_field`: the field is the conditional law of one site's displacement given
  its neighbours' in the first two shells, u_i | rest ~ N(sum_R A_R u_(i+R), Sigma), fitted
  by least squares over every site of every frame whose neighbourhood is complete
  (pseudo-likelihood; Besag 1975). For a harmonic crystal, whose dynamical matrix reaches
  the same shells, this is its exact conditional law (the precision matrix is the
  dynamical matrix / kT, so A_R = -Phi_ii^-1 Phi_(i,i+R) and Sigma = kT Phi_ii^-1).
  Anharmonic crystals get the best linear-Gaussian description of their local
  correlations.
- :func:`heal`: sweeps of Gibbs sampling over the band, the rest held; sites coloured so
  that no two updated together are neighbours.

Written here rather than taken from a library: freud and trackpy measure displacement
fields but do not fit or sample their conditional law; the fit is one least-squares
solve and the sampler a few lines of numpy.

Lattice: the triangular lattice a1 = (a, 0), a2 = (a / 2, h) of
:mod:`colloidcg.scaling.stacking`, in turned coordinates (a lattice vector along x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .stacking import lattice_site, site_of

#: Neighbour offsets (i, j) in units of a1, a2: the first shell (6, at a) and the second
#: (6, at sqrt(3) a).
SHELLS = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1, -1), (-1, 1),
                   (1, 1), (-1, -1), (2, -1), (-2, 1), (1, -2), (-1, 2)])
#: Gibbs sweeps over a band (:func:`heal`). Single-site sweeps mix a band's long modes
#: slowly: on the LAMMPS film (docs/scaling.md) the row at the faces kept |psi6| 0.0045
#: above the bulk after 150 sweeps and 0.0016 after 500.
SWEEPS = 400
#: The band healed on either side of a seam, in lattice spacings a.
BAND_SPACINGS = 2.0


@dataclass
class LatticeField:
    """The conditional law of one site's displacement u_i (px) given its :data:`SHELLS`
    neighbours' (stacked (2 * 12,) px): a Gaussian N(coef @ u_nbrs, cov), weighted by
    exp(sum over its 6 first-shell bonds of ``bond_log_weight`` at the bond's length).

    a, h : lattice spacing and row spacing, px.
    coef : (2, 24) regression coefficients.
    cov : (2, 2) px^2 residual covariance.
    bond_edges : (B + 1,) px, bins of first-shell bond lengths.
    bond_log_weight : (B,) log weight of a bond of that length (0: the Gaussian alone;
        :func:`calibrate_bonds`). A Gaussian field's bond lengths are symmetric about the
        spacing, a crystal's are not (contacts repel, stretched bonds do not), and without
        the weight the healed seams have 10 % too many pairs 3 px inside the first peak.
    samples : sites the fit used.
    variance_explained : share of the displacement variance the neighbours explain.
    """

    a: float
    h: float
    coef: np.ndarray
    cov: np.ndarray
    bond_edges: np.ndarray
    bond_log_weight: np.ndarray
    samples: int
    variance_explained: float

    def as_dict(self) -> dict:
        return {"a_px": self.a, "h_px": self.h, "sites": self.samples,
                "variance_explained": round(self.variance_explained, 4),
                "residual_sd_px": np.sqrt(np.diag(self.cov)).round(4).tolist()}

    def log_weight(self, r: np.ndarray) -> np.ndarray:
        """Log weight of first-shell bonds of length ``r`` px (bins outside the data's
        bonds: -inf below, 0 above)."""
        k = np.searchsorted(self.bond_edges, r) - 1
        out = self.bond_log_weight[np.clip(k, 0, len(self.bond_log_weight) - 1)]
        out = np.where(r < self.bond_edges[0], -50.0, out)
        return np.where(r >= self.bond_edges[-1], 0.0, out)


def _keys(sites: np.ndarray, a: float, h: float) -> np.ndarray:
    """(n, 2) int64 lattice indices (i, j) of sites (n, 2) px of the lattice through the
    origin: site = i a1 + j a2."""
    j = np.round(sites[:, 1] / h)
    i = np.round((sites[:, 0] - 0.5 * a * j) / a)
    return np.column_stack([i, j]).astype(np.int64)


def _displacements(pos: np.ndarray, a: float, h: float, origin: np.ndarray | None = None):
    """Each particle's nearest site's indices (n, 2) int64 and its displacement (n, 2) px
    from it, for the lattice through ``origin`` (default: the particles' own
    :func:`~colloidcg.scaling.stacking.site_of`)."""
    origin = site_of(pos, a, h) if origin is None else origin
    site = lattice_site(pos - origin, a, h)
    return _keys(site, a, h), pos - origin - site


def _neighbours(keys: np.ndarray, period: tuple[int, int] | None = None) -> np.ndarray:
    """(n, 12) index of the particle on each :data:`SHELLS` neighbour site of each
    particle's site (lattice indices ``keys`` (n, 2)), -1 where that site is empty or
    shared and for every neighbour of a particle that shares its own site. ``period``
    (n1, n2): the sites wrap in a periodic box n1 a wide and n2 h high (n2 even), else
    they do not."""
    # a site's column and row: (i + j // 2, j), which a rectangular box of whole periods wraps
    col, row = keys[:, 0] + np.floor_divide(keys[:, 1], 2), keys[:, 1]
    if period is None:
        c0, r0 = col.min() - 3, row.min() - 3
        shape = (int(col.max() - c0) + 4, int(row.max() - r0) + 4)
    else:
        c0, r0, shape = 0, 0, period

    def flat(c, r):
        return np.mod(c - c0, shape[0]) * shape[1] + np.mod(r - r0, shape[1])
    own = flat(col, row)
    count = np.bincount(own, minlength=shape[0] * shape[1])
    table = np.full(shape[0] * shape[1], -1, np.int64)
    table[own] = np.arange(len(keys))
    table[count > 1] = -1
    nb = np.empty((len(keys), len(SHELLS)), np.int64)
    for c, (di, dj) in enumerate(SHELLS):
        j = row + dj
        nb[:, c] = table[flat(keys[:, 0] + di + np.floor_divide(j, 2), j)]
    nb[count[own] > 1] = -1
    return nb


def _bond_vectors(a: float, h: float) -> np.ndarray:
    """(6, 2) px: the first-shell neighbour sites relative to a site."""
    first = SHELLS[:6]
    return np.column_stack([first[:, 0] * a + 0.5 * a * first[:, 1], first[:, 1] * h])


def _bond_lengths(u: np.ndarray, nb: np.ndarray, sites: np.ndarray, rows: np.ndarray, ui: np.ndarray,
                  bonds: np.ndarray) -> np.ndarray:
    """(len(rows), 6) px: first-shell bond lengths of particles ``rows`` displaced by ``ui``."""
    d = bonds[None] + u[nb[rows, :6]] - ui[:, None, :]
    return np.hypot(d[..., 0], d[..., 1])


def _sweep(u: np.ndarray, nb: np.ndarray, groups: list, field: "LatticeField", chol: np.ndarray,
           rng: np.random.Generator, bonds: np.ndarray) -> None:
    """One Metropolis-within-Gibbs sweep over ``groups`` (arrays of particle indices, no
    two in a group neighbours): each particle's displacement is proposed from the Gaussian
    conditional and accepted by its bonds' weight ratio (the proposal is the Gaussian part
    of the target, so only the weights enter). ``u`` (N, 2) px is updated in place."""
    for g in groups:
        prop = u[nb[g]].reshape(len(g), -1) @ field.coef.T + rng.standard_normal((len(g), 2)) @ chol.T
        if np.any(field.bond_log_weight != 0.0):
            gain = (field.log_weight(_bond_lengths(u, nb, None, g, prop, bonds)).sum(1)
                    - field.log_weight(_bond_lengths(u, nb, None, g, u[g], bonds)).sum(1))
            take = np.log(rng.uniform(size=len(g))) < gain
            g, prop = g[take], prop[take]
        u[g] = prop


def _colour_groups(keys: np.ndarray, movable: np.ndarray, nb: np.ndarray,
                   period: tuple[int, int] | None = None) -> list:
    """``movable`` split into groups of which no two members are :data:`SHELLS` neighbours
    (``nb``), so that a group's sites can be drawn at once: 9 colours by (column mod 3, row
    mod 3) of the (wrapped) site, then, where a box of ``period`` (n1, n2) sites that are
    not multiples of 3 puts two neighbours of one colour across its wrap, greedy new
    colours for those. Drawn together, two neighbours would each be conditioned on the
    other's old displacement."""
    col, row = keys[:, 0] + np.floor_divide(keys[:, 1], 2), keys[:, 1]
    if period is not None:
        col, row = np.mod(col, period[0]), np.mod(row, period[1])
    colour = np.full(len(keys), -1, np.int64)
    colour[movable] = np.mod(col[movable], 3) * 3 + np.mod(row[movable], 3)
    nbc = np.where(nb[movable] >= 0, colour[np.maximum(nb[movable], 0)], -1)
    clash = movable[np.any(nbc == colour[movable][:, None], axis=1)]
    for i in clash:
        taken = set(colour[nb[i][nb[i] >= 0]].tolist())
        if colour[i] in taken:
            colour[i] = next(c for c in range(9, 9 + 13) if c not in taken)
    return [movable[colour[movable] == c] for c in np.unique(colour[movable])]


def fit_field(frames: list[np.ndarray], a: float, h: float, origins: list[np.ndarray] | None = None, *,
              rng: np.random.Generator | None = None) -> LatticeField:
    """Fit the displacement field's conditional law (:class:`LatticeField`) to frames of one
    crystal, positions (n, 2) px in turned coordinates (open views: sites at the edge,
    whose neighbourhood is incomplete, are left out), then its bond weights
    (:func:`calibrate_bonds`). ``origins``: each frame's lattice site (2,) px (default
    :func:`~colloidcg.scaling.stacking.site_of`)."""
    xs, ys, fields = [], [], []
    for t, p in enumerate(frames):
        if len(p) < 20:
            continue
        keys, u = _displacements(p, a, h, None if origins is None else origins[t])
        nb = _neighbours(keys)
        ok = np.all(nb >= 0, axis=1)
        if not ok.any():
            continue
        u = u - u.mean(0)           # the frame's registry, as each window's (upsample: ``local``)
        xs.append(u[nb[ok]].reshape(int(ok.sum()), -1))
        ys.append(u[ok])
        fields.append((keys, u, nb, ok))
    if not xs:
        raise ValueError("fit_field: no site with its two neighbour shells complete")
    X, Y = np.concatenate(xs), np.concatenate(ys)
    coef, *_ = np.linalg.lstsq(X, Y, rcond=None)
    resid = Y - X @ coef
    cov = resid.T @ resid / max(1, len(Y) - X.shape[1])
    total = float(np.sum(Y.var(0)))
    field = LatticeField(a, h, coef.T, cov, np.array([0.0, np.inf]), np.zeros(1), len(Y),
                         1.0 - float(np.trace(cov)) / total if total > 0 else 0.0)
    return calibrate_bonds(field, fields, np.random.default_rng(0) if rng is None else rng)


#: :func:`calibrate_bonds`: bins of first-shell bond length, iterations, sweeps (over up
#: to 20 frames)
BOND_BINS = 32
BOND_ITERATIONS = 6
BOND_SWEEPS = 40
#: ... and the soft threshold of each correction, in standard errors of its log ratio
BOND_THRESHOLD = 1.0


def _histogram(r: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(r, edges)[0].astype(float)


def calibrate_bonds(field: LatticeField, fields: list, rng: np.random.Generator) -> LatticeField:
    """The bond weights (:attr:`LatticeField.bond_log_weight`) that give redrawn sites the
    data's first-shell bond lengths, by iterative Boltzmann inversion (Reith et al. 2003)
    on the data itself, in the geometry of a seam: in each frame the interior sites within
    :data:`BAND_SPACINGS` of a line through a random point (along a lattice row or across
    the rows, alternately) are redrawn (:data:`BOND_SWEEPS` sweeps, the rest held), and
    each bin's log weight moves by log(data's bonds / the band's bonds), soft-thresholded
    at :data:`BOND_THRESHOLD` standard errors, :data:`BOND_ITERATIONS` times. Weights
    calibrated on scattered single sites instead, held on every side, left the healed
    bands' |psi6| 0.006-0.009 above the bulk. ``fields``: per frame (keys, displacements,
    neighbours, interior mask)."""
    a, h = field.a, field.h
    bonds = _bond_vectors(a, h)
    data = np.concatenate([_bond_lengths(u, nb, None, np.flatnonzero(ok), u[ok], bonds).ravel()
                           for keys, u, nb, ok in fields])
    lo, hi = np.quantile(data, [0.0, 0.999])
    edges = np.linspace(lo, hi, BOND_BINS + 1)
    kernel = np.array([1.0, 2.0, 3.0, 2.0, 1.0])      # the asymmetry is smooth, the counts' noise is not
    want = np.convolve(_histogram(data, edges), kernel, "same")
    field.bond_edges, field.bond_log_weight = edges, np.zeros(BOND_BINS)
    chol = np.linalg.cholesky(field.cov + 1e-12 * np.eye(2))
    used = fields[:: max(1, len(fields) // 20)]
    for it in range(BOND_ITERATIONS):
        got = np.zeros(BOND_BINS)
        for k, (keys, u0, nb, ok) in enumerate(used):
            u = u0.copy()
            inner = np.flatnonzero(ok)
            # a seam's band: sites within BAND_SPACINGS of a row (y) or a column line (x)
            axis = (it + k) % 2
            coord = (keys[inner, 0] + 0.5 * keys[inner, 1]) * a if axis == 0 else keys[inner, 1] * h
            cut = rng.uniform(coord.min(), coord.max())
            band = inner[np.abs(coord - cut) < BAND_SPACINGS * a]
            if len(band) == 0:
                continue
            groups = _colour_groups(keys, band, nb)
            for _ in range(BOND_SWEEPS):
                _sweep(u, nb, groups, field, chol, rng, bonds)
            got += _histogram(_bond_lengths(u, nb, None, band, u[band], bonds).ravel(), edges)
        got = np.convolve(got, kernel, "same")
        fit = (want > 0) & (got > 0)
        step = np.zeros(BOND_BINS)
        step[fit] = np.log(want[fit] / want.sum()) - np.log(got[fit] / got.sum())
        # soft-thresholded in standard errors of the log ratio (Poisson counts, the
        # kernel's weight 9): only what the counts resolve is corrected
        se = np.zeros(BOND_BINS)
        se[fit] = np.sqrt(9.0 / want[fit] + 9.0 / got[fit])
        step = np.sign(step) * np.maximum(np.abs(step) - BOND_THRESHOLD * se, 0.0)
        step[want == 0] = -20.0          # never seen in the data
        field.bond_log_weight = np.clip(field.bond_log_weight + step, -20.0, 20.0)
    return field


def heal(pos: np.ndarray, box: np.ndarray, field: LatticeField, band: np.ndarray, rng: np.random.Generator, *,
         sweeps: int = SWEEPS) -> tuple[np.ndarray, int]:
    """Redraw the displacements of the particles ``band`` ((N,) bool) of a periodic crystal
    from ``field`` by Metropolis-within-Gibbs sampling, the rest held.

    pos : (N, 2) px, in the field's turned coordinates, inside ``box`` (2,) px, whose sides
        are whole lattice periods (a, 2 h) (a tiled film).
    Returns (new positions (N, 2) px wrapped into the box, particles redrawn). Particles on a
    shared site or beside an empty or shared one (vacancies, interstitials) are held.
    """
    a, h = field.a, field.h
    pos = np.asarray(pos, float).copy()
    box = np.asarray(box, float)
    origin = site_of(pos, a, h)
    keys, u = _displacements(pos, a, h, origin)
    period = (int(round(box[0] / a)), int(round(box[1] / h)))
    nb = _neighbours(keys, period)
    movable = np.flatnonzero(band & np.all(nb >= 0, axis=1))
    if len(movable) == 0:
        return np.mod(pos, box), 0
    groups = _colour_groups(keys, movable, nb, period)
    chol = np.linalg.cholesky(field.cov + 1e-12 * np.eye(2))
    bonds = _bond_vectors(a, h)
    for _ in range(int(sweeps)):
        _sweep(u, nb, groups, field, chol, rng, bonds)
    site = lattice_site(pos - origin, a, h)
    pos[movable] = (origin + site + u)[movable]
    return np.mod(pos, box), int(len(movable))


def harmonic_crystal(n1: int, n2: int, count: int, kt_over_k: float, a: float, seed: int = 0):
    """Exact samples of a triangular crystal with central nearest-neighbour springs, a known
    answer for :func:`fit_field` and :func:`heal`: precision Phi / kT with Phi_ii = 3 k I
    and Phi_(i,i+R) = -k e_R e_R^T over the 6 bonds, so that u_i given the rest is
    N(sum_R e_R e_R^T u_(i+R) / 3, kT / (3 k) I) and the second shell does not enter.

    n1, n2 : sites per row and rows (n2 even) of the periodic box (n1 a, n2 h), h = a sqrt(3) / 2.
    count : samples; kt_over_k : kT / k, px^2; a : spacing, px.
    Returns (sites (N, 2) px, displacements (count, N, 2) px with each sample's mean
    removed, box (2,) px). Dense Cholesky: a few thousand sites at most.
    """
    h = a * math.sqrt(3) / 2
    rows, cols = np.meshgrid(np.arange(n2), np.arange(n1), indexing="ij")
    sites = np.column_stack([(cols + 0.5 * (rows % 2)).ravel() * a, rows.ravel() * h])
    nb = _neighbours(_keys(sites, a, h), (n1, n2))
    bonds = _bond_vectors(a, h)
    n = len(sites)
    Q = np.zeros((2 * n, 2 * n))
    idx = np.arange(n)
    for c in range(6):
        e = bonds[c] / np.linalg.norm(bonds[c])
        block = np.outer(e, e) / kt_over_k
        for p in range(2):
            for q in range(2):
                Q[2 * idx + p, 2 * idx + q] += block[p, q]
                Q[2 * idx + p, 2 * nb[:, c] + q] -= block[p, q]
    Q += 1e-6 * np.eye(2 * n)          # pins the translations
    L = np.linalg.cholesky(Q)
    z = np.random.default_rng(seed).standard_normal((2 * n, count))
    u = np.linalg.solve(L.T, z).T.reshape(count, n, 2)
    return sites, u - u.mean(1, keepdims=True), np.array([n1 * a, n2 * h])
