"""A crystal's thermal displacement field, learned from a film and sampled across seams.

Windows of one crystal film (:func:`colloidcg.scaling.upsample._crystal_film`,
:func:`~colloidcg.scaling.upsample._stacked_film`) are cut in the lattice's registry and
placed as they are, so a tiled film is one crystal. Its seams still show: neighbours across
a window face were displaced by thermal motion in different frames, or different places,
so their relative displacement lacks the correlation that neighbours in a crystal have
(the long-wavelength phonons move them together). In 2D that left |psi6| 0.025-0.03 low
within a spacing of every face (docs/scaling.md).

This module heals those faces without a dynamical model, the counterpart of the
reference's few Monte Carlo events near each seam (Chen et al.): the displacements u of
the sites in a band about each seam are redrawn from a Markov random field fitted to the
film itself.

- The graph: every particle sits on an ideal lattice site (given by the caller, who knows
  the lattice: a triangular lattice in 2D, close-packed layers of any stacking in 3D). Its
  neighbours are the sites within :data:`REACH` lattice spacings (2D: the first two shells,
  12 sites; 3D close packed: the first two, 18). Sites whose neighbours sit at the same
  offsets form a class (one in 2D and fcc; two in hcp; up to four in a random stacking).
- :func:`fit_field`: per class, the conditional law of a site's displacement given its
  neighbours', u_i | rest ~ N(sum_R A_R u_(i+R), Sigma), fitted by least squares over every
  site of every frame whose neighbourhood is complete (pseudo-likelihood; Besag 1975). For
  a harmonic crystal whose dynamical matrix reaches those shells this is its exact
  conditional law (the precision matrix is the dynamical matrix / kT, so A_R = -Phi_ii^-1
  Phi_(i,i+R) and Sigma = kT Phi_ii^-1). A Gaussian field's bond lengths are symmetric
  about the spacing and a crystal's are not (contacts repel, stretched bonds do not), so
  each site is also weighted by exp(sum over its first-shell bonds of w(r)), with w found
  by iterative Boltzmann inversion on the film (:func:`calibrate_bonds`).
- :func:`calibrate_order` (2D, optional): a local-order weight exp(beta sum_j |psi6_j|),
  beta by pseudo-likelihood. With the bond weights alone, redrawn bands of a periodic
  soft-disk crystal come out 0.4-0.7 % too ordered in |psi6|; with it, within 1-2 standard
  errors of the crystal's (benchmarks/lattice_field_bands.py). Not upsample's default: on
  a film's own frames the pseudo-likelihood's beta overshoots (bands 0.6 % less ordered),
  and so it does on a LAMMPS crystal film's seams (docs/scaling.md).
- ``fit_field(gaussian=False)``: no Gaussian part in the law, which is then a pair
  interaction on the first-shell bonds (:func:`fit_pair_weights`, pseudo-likelihood, then
  the inversion for the bonds' tension); the Gaussian only proposes. With the soft disks'
  own pair potential it keeps a periodic crystal's |psi6| in redrawn bands away from
  defects, and fitted it does too. Through upsample (2D films, windows on the common
  lattice) it keeps the seams' |psi6| within 2 standard errors of the bulk's over films of
  independent runs (binned by lattice site), on soft-disk and LAMMPS WCA films, where the
  Gaussian field's seams are 0.2-0.6 % too ordered (docs/scaling.md), so it is upsample's
  2D default since session 47. In 3D (a coarser grid for its normaliser) it keeps the
  seams of LAMMPS WCA films within 1.5 standard errors over runs of the direct crystal's
  q6, where the Gaussian field's are 2.3-3.0 too ordered, and it is the 3D default since
  session 49; in bands of a periodic crystal it comes out 0.1-0.3 % too disordered there
  (benchmarks/lattice_field_bands.py --dim 3). It assumes
  particles that interact in pairs within the first shell: sites jittered independently
  (a pinned lattice) come out too disordered with it, and the Gaussian field is their
  model.
- :func:`heal`: Metropolis-within-Gibbs sweeps over the band, the rest held: each site's
  proposal is its Gaussian conditional, accepted by its bonds' weight ratio; sites are
  drawn a colour at a time, no two of a colour neighbours.

Written here rather than taken from a library: freud and trackpy measure displacement
fields but do not fit or sample their conditional law; the fit is one least-squares solve
per class and the sampler a few lines of numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

#: Neighbours of a site: the sites within this many lattice spacings (2D: the first two
#: shells of the triangular lattice, at a and sqrt(3) a; 3D close packed: the first two, at
#: a and sqrt(2) a, short of hcp's 1.63 a and fcc's sqrt(3) a).
REACH = {2: 1.85, 3: 1.5}
#: The first shell, whose bonds carry the weights: within this many spacings.
FIRST_SHELL = 1.2
#: Gibbs sweeps over a band (:func:`heal`). Single-site sweeps mix a band's long modes
#: slowly: on the LAMMPS film (docs/scaling.md) the row at the faces kept |psi6| 0.0045
#: above the bulk after 150 sweeps and 0.0016 after 500.
SWEEPS = 400
#: The band healed on either side of a seam, in lattice spacings a.
BAND_SPACINGS = 2.0
#: :func:`calibrate_bonds`: bins of first-shell bond length, iterations, sweeps (over up
#: to 20 frames) ...
BOND_BINS = 32
BOND_ITERATIONS = 8
BOND_SWEEPS = 40
#: ... and the soft threshold of each correction, in standard errors of its log ratio
BOND_THRESHOLD = 1.0
#: :func:`calibrate_order` (2D): draws per site for the pseudo-likelihood's expectations,
#: and the largest |beta| searched (log weight per unit of summed |psi6|)
ORDER_PROPOSALS = 32
ORDER_BOUND = 20.0
#: :func:`fit_pair_weights`: sites that enter the fit and grid points either side of a
#: site's cage centre per axis, by dimension (3D: a coarser grid, 13^3 points, and fewer
#: sites, so that the normaliser's sparse matrix stays near 1 GB; 2D's 29 points per axis
#: and 8000 sites would need 37 GB there), the grid's half-width in standard deviations of
#: the sites' displacement from their cage centre, the weight's nodes and the penalty on
#: its curvature (per site, on second differences of the nodes' values)
PAIR_SITES = {2: 8000, 3: 3000}
PAIR_GRID = {2: 14, 3: 6}
PAIR_HALF_SD = 6.0
PAIR_NODES = 40
PAIR_SMOOTH = 0.1


@dataclass
class Graph:
    """Sites and their neighbours.

    nb : (N, K) index of each site's neighbours, sorted by offset (-1: none).
    cls : (N,) class index into ``signatures`` (-1: the neighbourhood is incomplete or of a
        class the field does not know).
    sites : (N, d) px, the ideal sites.
    nb1, offset1 : (N, K1), (N, K1, d) px: the first shell alone (its bonds carry the
        weights): each neighbour's index and the ideal offset of its site, -1 / 0 where
        missing.
    """

    nb: np.ndarray
    cls: np.ndarray
    sites: np.ndarray
    nb1: np.ndarray
    offset1: np.ndarray


@dataclass
class LatticeField:
    """The conditional law of one site's displacement u_i (px) given its neighbours'
    (stacked (K d,) px, in the order of their offsets), per class of site: a Gaussian
    N(coef[c] @ u_nbrs, cov[c]), weighted by exp(sum over its first-shell bonds of
    ``bond_log_weight`` at the bond's length).

    a : lattice spacing (nearest-neighbour distance), px.
    signatures : (C, K d) int, each class's neighbour offsets in units of a / 24.
    coef : (C, d, K d); cov : (C, d, d) px^2.
    bond_edges : (B + 1,) px, bins of first-shell bond lengths; bond_log_weight : (B,).
    samples : sites the fit used; variance_explained : share of the displacement variance
        the neighbours explain.
    order_weight : 2D only, beta of the local-order weight exp(beta sum_j |psi6_j|) over
        every site j (|psi6| over its first-shell bonds; 0: none; :func:`calibrate_order`).
    order_trace : the calibration's pseudo-likelihood estimating function at the search's
        ends and at 0, (beta, mean over sites of E_beta[S_i | rest] - S_i(data)).
    gaussian : False: the Gaussian only proposes each move (accepted with its Hastings
        ratio) and the law is the bonds' weights alone, a pair interaction on the lattice's
        first-shell bonds (:func:`fit_pair_weights`; bonds beyond the longest seen keep
        the last bin's weight).
    """

    a: float
    signatures: np.ndarray
    coef: np.ndarray
    cov: np.ndarray
    bond_edges: np.ndarray
    bond_log_weight: np.ndarray
    samples: int
    variance_explained: float
    order_weight: float = 0.0
    order_trace: tuple = ()
    gaussian: bool = True

    @property
    def dim(self) -> int:
        return self.cov.shape[-1]

    @property
    def ordered(self) -> bool:
        """Whether the local-order weight is on (2D only): sites drawn together must then
        share no neighbour (:func:`colour_groups` with ``shared``)."""
        return self.dim == 2 and self.order_weight != 0.0

    def as_dict(self) -> dict:
        return {"a_px": self.a, "classes": int(len(self.signatures)), "sites": self.samples,
                "gaussian": bool(self.gaussian),
                "variance_explained": round(self.variance_explained, 4),
                "order_weight": round(float(self.order_weight), 3),
                "order_calibration": [[round(float(b), 3), round(float(f), 5)] for b, f in self.order_trace],
                "residual_sd_px": np.sqrt(np.diagonal(self.cov, axis1=1, axis2=2)).mean(0).round(4).tolist()}

    def log_weight(self, r: np.ndarray) -> np.ndarray:
        """Log weight of first-shell bonds of length ``r`` px (below the data's shortest
        bond: -50; above its longest: 0)."""
        lo, hi = self.bond_edges[0], self.bond_edges[-1]
        nbins = len(self.bond_log_weight)
        k = ((r - lo) * (nbins / (hi - lo))).astype(np.int64) if np.isfinite(hi) else np.zeros(r.shape, np.int64)
        out = self.bond_log_weight[np.clip(k, 0, nbins - 1)]
        out = np.where(r < lo, -50.0, out)
        # beyond the longest bond: flat with the Gaussian (it holds the sites), else the
        # last bin's weight (the bonds alone hold them: a bond must not gain by stretching)
        return np.where(r >= hi, 0.0 if self.gaussian else self.bond_log_weight[-1], out)


def graph(sites: np.ndarray, a: float, box: np.ndarray | None = None) -> tuple[Graph, np.ndarray]:
    """The neighbour graph of ideal ``sites`` (N, d) px, spacing ``a`` px, periodic in
    ``box`` (d,) px or open. Returns (the graph with ``cls`` -1 everywhere but where the
    neighbourhood has the most common number of neighbours, which gets 0; the signature of
    every site (N, K d) int, offsets in a / 24, for :func:`_classify`)."""
    sites = np.asarray(sites, float)
    n, d = sites.shape
    if box is not None:
        box = np.asarray(box, float)
        tree = cKDTree(np.mod(sites, box), boxsize=box)
    else:
        tree = cKDTree(sites)
    pairs = tree.query_pairs(REACH[d] * a, output_type="ndarray")
    i = np.concatenate([pairs[:, 0], pairs[:, 1]])
    j = np.concatenate([pairs[:, 1], pairs[:, 0]])
    off = sites[j] - sites[i]
    if box is not None:
        off -= box * np.round(off / box)
    key = np.round(off / (a / 24.0)).astype(np.int64)
    order = np.lexsort(tuple(key[:, k] for k in reversed(range(d))) + (i,))
    i, j, off, key = i[order], j[order], off[order], key[order]
    count = np.bincount(i, minlength=n)
    K = int(np.bincount(count).argmax()) if n else 0
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    slot = np.arange(len(i)) - start[i]
    keep = slot < K
    nb = np.full((n, K), -1, np.int64)
    offset = np.zeros((n, K, d))
    sig = np.zeros((n, K * d), np.int64)
    nb[i[keep], slot[keep]] = j[keep]
    offset[i[keep], slot[keep]] = off[keep]
    sig.reshape(n, K, d)[i[keep], slot[keep]] = key[keep]
    # complete: the usual number of neighbours, each on its own site, none on the site's
    # own (an interstitial beside a vacancy would otherwise pass for complete)
    keys3 = sig.reshape(n, K, d)
    shared = np.any(np.all(keys3[:, 1:] == keys3[:, :-1], axis=2), axis=1) | np.any(np.all(keys3 == 0, axis=2), axis=1)
    complete = (count == K) & ~shared
    nb[~complete] = -1
    first = (np.linalg.norm(offset, axis=2) < FIRST_SHELL * a) & (nb >= 0)
    K1 = int(first.sum(1).max()) if n else 0
    rank = np.cumsum(first, axis=1) - 1
    nb1 = np.full((n, K1), -1, np.int64)
    offset1 = np.zeros((n, K1, d))
    r, k = np.nonzero(first)
    nb1[r, rank[r, k]] = nb[r, k]
    offset1[r, rank[r, k]] = offset[r, k]
    return Graph(nb, np.where(complete, 0, -1), sites, nb1, offset1), sig


def _classify(g: Graph, sig: np.ndarray, signatures: np.ndarray) -> np.ndarray:
    """Each site's class: its row in ``signatures`` (C, K d), -1 where its neighbourhood is
    incomplete or of no known class."""
    complete = g.cls >= 0
    cls = np.full(len(sig), -1, np.int64)
    if len(signatures) and sig.shape[1] == signatures.shape[1]:
        for c, s in enumerate(signatures):
            cls[complete & np.all(sig == s, axis=1)] = c
    return cls


def _bond_lengths(u: np.ndarray, g: Graph, rows: np.ndarray, ui: np.ndarray) -> np.ndarray:
    """(len(rows), K1) px: the first-shell bond lengths of sites ``rows`` displaced by
    ``ui`` (where ``g.nb1`` is -1 the value is meaningless: mask with ``g.nb1[rows] >= 0``)."""
    d = g.offset1[rows] + u[np.maximum(g.nb1[rows], 0)] - ui[:, None, :]
    return np.sqrt(np.einsum("nkd,nkd->nk", d, d))


def _psi6(bonds: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """|psi6| over the ``valid`` (..., K1) of ``bonds`` (..., K1, 2) px (0 with none)."""
    w = bonds[..., 0] + 1j * bonds[..., 1]
    w2 = w * w                          # exp(6 i theta) = (w / |w|)^6, without trigonometry
    z = w2 * w2 * w2 / np.maximum(w2.real ** 2 + w2.imag ** 2, 1e-300) ** 1.5
    return np.abs(np.where(valid, z, 0.0).sum(-1)) / np.maximum(valid.sum(-1), 1)


def _order_change(u: np.ndarray, g: Graph, grp: np.ndarray, prop: np.ndarray) -> np.ndarray:
    """(len(grp),): the change of sum_j |psi6_j| (over first-shell bonds) when each site of
    ``grp`` alone moves from ``u[grp]`` to ``prop``: its own |psi6| and its first-shell
    neighbours' (no two sites of ``grp`` may share a neighbour: :func:`colour_groups` with
    ``shared=True``)."""
    nb1 = g.nb1[grp]
    valid = nb1 >= 0
    step = prop - u[grp]
    j = np.maximum(nb1, 0)
    # rows: the site itself, then each first-shell neighbour; columns: that row's bonds
    rows = np.concatenate([grp[:, None], j], axis=1)                     # (n, 1 + K1)
    nbr = g.nb1[rows]                                                    # (n, 1 + K1, K1)
    ok = (nbr >= 0) & np.concatenate([np.ones((len(grp), 1), bool), valid], axis=1)[..., None]
    bonds = g.offset1[rows] + u[np.maximum(nbr, 0)] - u[rows][:, :, None, :]
    # the move: the site's own bonds lose the step, each neighbour's bond to it gains it
    sign = np.where(nbr == grp[:, None, None], 1.0, 0.0)
    sign[:, 0] = -1.0
    both = _psi6(np.stack([bonds, bonds + sign[..., None] * step[:, None, None, :]]), ok)
    return (both[1] - both[0]).sum(1)


def _sweep(u: np.ndarray, g: Graph, groups: list, field: LatticeField, chol: np.ndarray,
           rng: np.random.Generator) -> None:
    """One Metropolis-within-Gibbs sweep over ``groups`` (arrays of site indices, no two in
    a group neighbours, nor, with a local-order weight, sharing a neighbour): each site's
    displacement is proposed from its class's Gaussian conditional and accepted by its
    bonds' and the local order's weight ratio (the proposal is the Gaussian part of the
    target, so only the weights enter; without a Gaussian part, ``field.gaussian`` False,
    its Hastings ratio q(old) / q(new) enters too). ``u`` (N, d) px is updated in place."""
    d = u.shape[1]
    weighted = bool(np.any(field.bond_log_weight != 0.0))
    ordered = field.ordered
    for grp in groups:
        cls = g.cls[grp]
        prop = np.empty((len(grp), d))
        hastings = np.zeros(len(grp))
        for c in np.unique(cls):
            sel = cls == c
            sub = grp[sel]
            mean = u[g.nb[sub]].reshape(len(sub), -1) @ field.coef[c].T
            z = rng.standard_normal((len(sub), d))
            prop[sel] = mean + z @ chol[c].T
            if not field.gaussian:
                # the Gaussian is only the proposal: q(old) / q(new)
                z_old = np.linalg.solve(chol[c], (u[sub] - mean).T).T
                hastings[sel] = 0.5 * (np.sum(z * z, 1) - np.sum(z_old * z_old, 1))
        if weighted or ordered or not field.gaussian:
            gain = hastings
            if weighted:
                first = g.nb1[grp] >= 0
                gain += (np.where(first, field.log_weight(_bond_lengths(u, g, grp, prop))
                                  - field.log_weight(_bond_lengths(u, g, grp, u[grp])), 0.0).sum(1))
            if ordered:
                gain += field.order_weight * _order_change(u, g, grp, prop)
            take = np.log(rng.uniform(size=len(grp))) < gain
            grp, prop = grp[take], prop[take]
        u[grp] = prop


def colour_groups(g: Graph, movable: np.ndarray, shared: bool = False) -> list:
    """``movable`` (site indices) split into groups of which no two members are neighbours,
    so that a group can be drawn at once (two neighbours drawn together would each be
    conditioned on the other's old displacement): greedy colouring in the order of the
    sites' places (z, y, x), which on a lattice comes close to the fewest colours (9 for
    the triangular lattice's two shells, where random priorities took about 20; each colour
    is a numpy pass per sweep). ``shared``: nor two sites with a first-shell neighbour in
    common (the local-order weight of a site depends on both)."""
    movable = np.asarray(movable, np.int64)
    order = movable[np.lexsort(tuple(g.sites[movable, k] for k in range(g.sites.shape[1])))]
    colour = np.full(len(g.nb), -1, np.int64)
    nb = g.nb
    if shared and g.nb1.shape[1]:
        second = np.where(g.nb1[:, :, None] >= 0, g.nb1[np.maximum(g.nb1, 0)], -1)
        nb = np.concatenate([nb, second.reshape(len(nb), -1)], axis=1)
    for i in order.tolist():
        taken = {int(c) for c in colour[nb[i][nb[i] >= 0]]}
        c = 0
        while c in taken:
            c += 1
        colour[i] = c
    return [movable[colour[movable] == c] for c in range(int(colour.max()) + 1 if len(movable) else 0)]


def _wrapped(pos: np.ndarray, sites: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    u = np.asarray(pos, float) - sites
    return u if box is None else u - box * np.round(u / box)


def fit_field(frames: list, a: float, *, rng: np.random.Generator | None = None,
              bond_weights: bool = True, order_weight: bool = False, gaussian: bool = True) -> LatticeField:
    """Fit the displacement field's conditional law (:class:`LatticeField`) to frames of one
    crystal: ``frames`` a list of (positions (n, d) px, their ideal sites (n, d) px), open
    views (sites at the edge, whose neighbourhood is incomplete, are left out); ``a`` the
    nearest-neighbour spacing, px. Each frame's mean displacement is removed (its registry,
    as each window's is). Then the bond weights (:func:`calibrate_bonds`; ``bond_weights``
    False: flat, the Gaussian field alone) and, in 2D with ``order_weight``, the local-order
    weight (:func:`calibrate_order`; not the default: it makes redrawn bands of a periodic
    crystal keep its |psi6|, but overshoots on a film's own frames, docs/scaling.md).
    ``gaussian`` False: the Gaussian only proposes moves and the law is the product of the
    bonds' weights alone, a pair interaction on the lattice's first-shell bonds, fitted by
    pseudo-likelihood (:func:`fit_pair_weights`) and then by inversion on bands
    (:func:`calibrate_bonds`, unthresholded); upsample's default seam field (docs/scaling.md)."""
    per = []
    for pos, sites in frames:
        if len(pos) < 20:
            continue
        g, sig = graph(sites, a)
        if not np.any(g.cls >= 0):
            continue
        u = _wrapped(pos, sites, None)
        per.append((g, sig, u - u.mean(0)))
    if not per:
        raise ValueError("fit_field: no site with its neighbourhood complete")
    K = int(np.bincount([g.nb.shape[1] for g, _, _ in per]).argmax())
    per = [(g, sig, u) for g, sig, u in per if g.nb.shape[1] == K]
    signatures = np.unique(np.concatenate([sig[g.cls >= 0] for g, sig, _ in per]), axis=0)
    xs: dict = {}
    ys: dict = {}
    fields = []
    for g, sig, u in per:
        g.cls = _classify(g, sig, signatures)
        for c in np.unique(g.cls[g.cls >= 0]):
            sel = np.flatnonzero(g.cls == c)
            xs.setdefault(c, []).append(u[g.nb[sel]].reshape(len(sel), -1))
            ys.setdefault(c, []).append(u[sel])
        fields.append((g, u))
    coef, cov, kept = [], [], []
    resid_total, total, samples = 0.0, 0.0, 0
    for c in sorted(xs):
        X, Y = np.concatenate(xs[c]), np.concatenate(ys[c])
        if len(Y) <= X.shape[1]:
            continue                    # too few sites of this class to fit: it stays unknown
        # the Gaussian as the law: under translation invariance (a runaway without it). As
        # a pair field's proposal only, the law does not depend on it, but the calibration's
        # finite sweeps do: 2D keeps the unconstrained proposal session 47's films were
        # measured with (constrained, three films' seams moved by about 0.002 in |psi6|);
        # 3D, first measured with the constraint, keeps it
        invariant = gaussian or Y.shape[1] == 3
        b = _translation_invariant_lstsq(X, Y) if invariant else np.linalg.lstsq(X, Y, rcond=None)[0]
        r = Y - X @ b
        coef.append(b.T)
        cov.append(r.T @ r / (len(Y) - X.shape[1]))
        kept.append(c)
        resid_total += float(np.sum(r ** 2))
        total += float(np.sum((Y - Y.mean(0)) ** 2))
        samples += len(Y)
    if samples == 0:
        raise ValueError("fit_field: too few complete sites to fit the field")
    # only fitted classes are known: a site of an unfitted one is held (here and in heal)
    renumber = np.full(len(signatures), -1, np.int64)
    renumber[kept] = np.arange(len(kept))
    for g, _ in fields:
        g.cls = np.where(g.cls >= 0, renumber[np.maximum(g.cls, 0)], -1)
    field = LatticeField(a, signatures[kept], np.array(coef), np.array(cov), np.array([0.0, np.inf]), np.zeros(1),
                         samples, 1.0 - resid_total / total if total > 0 else 0.0)
    field.gaussian = gaussian
    if order_weight and not gaussian:
        raise ValueError("fit_field: the local-order weight is calibrated with the Gaussian part; "
                         "gaussian=False takes none")
    if not bond_weights:
        if not gaussian:
            raise ValueError("fit_field: a field without its Gaussian part needs bond weights")
        return field
    rng = np.random.default_rng(0) if rng is None else rng
    if gaussian:
        field = calibrate_bonds(field, fields, rng)
    else:
        # the pseudo-likelihood fits single sites, which do not see a uniform tension on
        # the bonds (fit_pair_weights); the bands' bond lengths set it (unthresholded:
        # the weights start close)
        field = calibrate_bonds(fit_pair_weights(field, fields, rng), fields, rng, threshold=0.0)
    return calibrate_order(field, fields, rng) if order_weight else field


def _translation_invariant_lstsq(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Least-squares b ((K d, d): K blocks b_k (d, d)) of Y (n, d) ~ X b, X (n, K d) the K
    neighbours' displacements side by side, under sum_k b_k = I.

    A crystal's law does not change when every particle moves by the same vector, so a
    site's expected displacement given its neighbours moves with them: the coefficients
    sum to the identity (for the harmonic crystal, Phi's rows sum to zero). Unconstrained,
    the fit's sampling error put that sum's eigenvalues at 0.97-1.03 on a 3D film, and
    where nearly every site of a sample is redrawn (3D windows of 5-6 spacings, few sites
    held) each sweep multiplied the uniform mode by up to 1.025: after 400 sweeps the
    particles sat 7-23 px from their sites (a = 17 px; docs/scaling.md). With the constraint
    that mode is neutral (held only by the few held sites: it wandered 0.6 px over 400
    sweeps on that film, which moves no particle against its neighbours). Solved by
    eliminating the last block: Y - X_K = sum_(k<K) (X_k - X_K) b_k."""
    d = Y.shape[1]
    K = X.shape[1] // d
    last = X[:, (K - 1) * d:]
    rest = X[:, :(K - 1) * d] - np.tile(last, K - 1)
    head, *_ = np.linalg.lstsq(rest, Y - last, rcond=None)
    tail = np.eye(d) - head.reshape(K - 1, d, d).sum(axis=0)
    return np.vstack([head, tail])


def _histogram(r: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(r, edges)[0].astype(float)


def _cholesky(field: LatticeField) -> np.ndarray:
    d = field.dim
    return np.linalg.cholesky(field.cov + 1e-12 * np.eye(d))


def _redrawn_bands(field: LatticeField, fields: list, rng: np.random.Generator):
    """Yield (graph, band sites, redrawn displacements (n, d) px) for seam-like bands of up
    to 20 of ``fields`` (per frame (graph, displacements)): in each frame, for each axis,
    the sites within :data:`BAND_SPACINGS` of a plane through a random point normal to it,
    redrawn with :data:`BOND_SWEEPS` sweeps, the rest held."""
    chol = _cholesky(field)
    for g, u0 in fields[:: max(1, len(fields) // 20)]:
        inner = np.flatnonzero(g.cls >= 0)
        if len(inner) == 0:
            continue
        for axis in range(field.dim):
            coord = g.sites[inner, axis]
            cut = rng.uniform(coord.min(), coord.max())
            band = inner[np.abs(coord - cut) < BAND_SPACINGS * field.a]
            if len(band) == 0:
                continue
            u = u0.copy()
            groups = colour_groups(g, band, field.ordered)
            for _ in range(BOND_SWEEPS):
                _sweep(u, g, groups, field, chol, rng)
            yield g, band, u


def _band_psi6(g: Graph, band: np.ndarray, u: np.ndarray) -> np.ndarray:
    """|psi6| over first-shell bonds of the sites ``band``, displaced by ``u`` (n, 2) px."""
    nb1 = g.nb1[band]
    bonds = g.offset1[band] + u[np.maximum(nb1, 0)] - u[band][:, None, :]
    return _psi6(bonds, nb1 >= 0)


def calibrate_order(field: LatticeField, fields: list, rng: np.random.Generator) -> LatticeField:
    """The local-order weight (:attr:`LatticeField.order_weight`, 2D): the maximum
    pseudo-likelihood beta (Besag 1975, as the Gaussian part is fitted) of the field with
    one more term, exp(beta sum_j |psi6_j|), with the bond weights held. A field that
    matches the bonds' lengths need not match how a site's six bonds turn together, which
    is what |psi6| measures (docs/scaling.md: with the length weights alone, bands of
    seamless frames came out 0.2-0.7 % too ordered).

    A site's conditional law given the rest is its Gaussian times its bonds' weights times
    exp(beta S_i), S_i the sum of |psi6| over the site and its first-shell neighbours, so the
    pseudo-likelihood's score in beta is sum_i (S_i(data) - E_beta[S_i | rest]). Each
    expectation is taken by self-normalised importance sampling over
    :data:`ORDER_PROPOSALS` draws from the site's Gaussian conditional, the same draws for
    every beta, so the score is a smooth, decreasing function of beta whose root is found
    by Brent's method. Every site of up to 20 frames whose neighbours' neighbourhoods are
    complete too enters (``fields``: per frame (graph, displacements (n, 2) px))."""
    from scipy.optimize import brentq

    if field.dim != 2:
        return field
    chol = _cholesky(field)
    change, logw = [], []                   # per site and draw: S_i(draw) - S_i(data); bond log weight ratio
    for g, u in fields[:: max(1, len(fields) // 20)]:
        # sites whose first-shell neighbours' bonds are all known (their S_i is whole)
        whole = (g.cls >= 0) & np.all(g.nb1 >= 0, axis=1)
        whole &= np.all(g.nb1[np.maximum(g.nb1, 0)] >= 0, axis=(1, 2))
        for c in np.unique(g.cls[whole]):
            rows = np.flatnonzero(whole & (g.cls == c))
            mean = u[g.nb[rows]].reshape(len(rows), -1) @ field.coef[c].T
            first = g.nb1[rows] >= 0
            held = np.where(first, field.log_weight(_bond_lengths(u, g, rows, u[rows])), 0.0).sum(1)
            d_k, w_k = [], []
            for _ in range(ORDER_PROPOSALS):
                v = mean + rng.standard_normal(mean.shape) @ chol[c].T
                w_k.append(np.where(first, field.log_weight(_bond_lengths(u, g, rows, v)), 0.0).sum(1) - held)
                d_k.append(_order_change(u, g, rows, v))
            change.append(np.array(d_k).T)
            logw.append(np.array(w_k).T)
    change, logw = np.concatenate(change), np.concatenate(logw)

    def score(beta: float) -> float:
        lw = logw + beta * change
        w = np.exp(lw - lw.max(1, keepdims=True))
        return -float(np.mean((w * change).sum(1) / w.sum(1)))

    lo, hi = -ORDER_BOUND, ORDER_BOUND
    at_lo, at_hi = score(lo), score(hi)
    field.order_trace = ((lo, -at_lo), (0.0, -score(0.0)), (hi, -at_hi))
    if at_lo * at_hi > 0:               # no root within the bound: the nearer end
        field.order_weight = lo if abs(at_lo) < abs(at_hi) else hi
    else:
        field.order_weight = float(brentq(score, lo, hi, xtol=1e-4))
    return field


def fit_pair_weights(field: LatticeField, fields: list, rng: np.random.Generator) -> LatticeField:
    """The bond weights of a field without its Gaussian part (``field.gaussian`` False):
    the sites' law is the product over first-shell bonds of exp(w(r)), a pair interaction
    on the lattice's bonds, and w is its maximum pseudo-likelihood estimate (Besag 1975).

    A site's conditional law given the rest is exp(sum_j w(|x_j - x|)) over its first-shell
    neighbours j, normalised over the site's place, and the normaliser is a sum over a grid
    about the centre of the site's neighbours (:data:`PAIR_GRID` points either side per
    axis, :data:`PAIR_HALF_SD` standard deviations of the sites' offsets from that centre).
    w is piecewise linear on :data:`PAIR_NODES` nodes over the data's bond lengths (below the
    shortest: forbidden; beyond the longest: the last node's value), with a small penalty on
    its curvature, and the pseudo-likelihood, concave in w, is maximised by L-BFGS over
    :data:`PAIR_SITES` sites (2000 in 2D left the fit's result on a film varying by 0.005 in
    its bands' |psi6| between draws of the sites; 8000 did not). In 3D the grid is coarser
    (13 points per axis, one standard deviation apart): on the LAMMPS WCA crystal 21 points
    per axis gave the same weights (the parabola's curvature -0.483 px^-2 with either, WCA's
    own -0.522; a residual of 0.04 about WCA's after a linear term with either). For a
    crystal whose particles interact in pairs within the first shell (soft disks, and WCA particles at crystal
    densities) this family holds the crystal's own law at fixed topology: with the soft
    disks' own pair potential, redrawn bands of their crystal keep its |psi6| within a
    standard error (benchmarks/lattice_field_bands.py --true-pair).

    Single sites do not determine the part of w linear in r, a uniform tension on the
    bonds: to first order a site's bond lengths sum to a constant wherever it moves in its
    cage (its bond directions sum to zero), so that part only changes the normaliser.
    Here it comes out wrong (on the harmonic crystal's exact samples the parabola's vertex
    off by 0.1-0.4 px over draws of the sites; on the soft disks a falling tail) and :func:`fit_field` sets it with
    the inversion on bands (:func:`calibrate_bonds`), where the held surroundings make the
    tension count. ``fields``: per frame (graph, displacements (n, d) px)."""
    from scipy import sparse
    from scipy.optimize import minimize

    d = field.dim
    picks = [(k, i) for k, (g, _) in enumerate(fields)
             for i in np.flatnonzero((g.cls >= 0) & np.all(g.nb1 >= 0, axis=1))]
    if not picks:
        raise ValueError("fit_pair_weights: no site with its first shell complete")
    chosen = [picks[j] for j in rng.choice(len(picks), min(PAIR_SITES[d], len(picks)), replace=False)]
    nbr = np.stack([fields[k][0].offset1[i] + fields[k][1][fields[k][0].nb1[i]] for k, i in chosen])  # (S, K1, d)
    own = np.stack([fields[k][1][i] for k, i in chosen])                                              # (S, d)
    centre = nbr.mean(1)
    half = PAIR_HALF_SD * float(np.sqrt(np.mean((own - centre) ** 2)))
    axis = np.linspace(-half, half, 2 * PAIR_GRID[d] + 1)
    grid = np.stack(np.meshgrid(*[axis] * d, indexing="ij"), -1).reshape(-1, d)                     # (G, d)
    r_data = np.linalg.norm(nbr - own[:, None], axis=-1)                                              # (S, K1)
    lo, hi = float(r_data.min()), float(r_data.max())
    nodes = np.linspace(lo, hi, PAIR_NODES)

    def hats(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, K1) bond lengths -> each bond's two hat functions: node indices and
        weights, (rows, 2 K1) each (bonds beyond ``hi`` take the last node's value)."""
        r = np.minimum(r, hi)
        k = np.clip(np.searchsorted(nodes, r, side="right") - 1, 0, PAIR_NODES - 2)
        frac = np.clip((r - nodes[k]) / (nodes[k + 1] - nodes[k]), 0.0, 1.0)
        return np.concatenate([k, k + 1], axis=1), np.concatenate([1.0 - frac, frac], axis=1)

    # the grid points a site can take (no bond shorter than the data's shortest), as a
    # sparse (points, nodes) matrix of summed hat functions, built a block of sites at a time
    cols, vals, counts = [], [], []
    for b in range(0, len(chosen), 250):
        pts = centre[b:b + 250, None] + grid                                                  # (s, G, d)
        r = np.linalg.norm(nbr[b:b + 250, None] - pts[:, :, None], axis=-1)                  # (s, G, K1)
        ok = np.all(r >= lo, axis=-1)
        k, w = hats(r[ok])
        cols.append(k.astype(np.int32))
        vals.append(w.astype(np.float32))
        counts.append(ok.sum(1))
    counts = np.concatenate(counts)
    k_data, f_data = hats(r_data[counts > 0])        # a site with no grid point left has no law
    t_data = np.bincount(k_data.ravel(), f_data.ravel(), PAIR_NODES)
    counts = counts[counts > 0]
    width = 2 * nbr.shape[1]
    t_grid = sparse.csr_matrix((np.concatenate(vals).ravel(), np.concatenate(cols).ravel(),
                                np.arange(0, counts.sum() * width + 1, width)), shape=(int(counts.sum()), PAIR_NODES))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    owner = np.repeat(np.arange(len(counts)), counts)
    curve = np.diff(np.eye(PAIR_NODES), 2, axis=0)
    n = len(counts)

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        e = (t_grid @ w.astype(np.float32)).astype(float)
        top = np.maximum.reduceat(e, starts)
        p = np.exp(e - top[owner])
        z = np.add.reduceat(p, starts)
        p /= z[owner]
        expected = t_grid.T @ p
        c = curve @ w
        value = float(np.sum(top + np.log(z))) - t_data @ w + PAIR_SMOOTH * n * float(c @ c)
        return value / n, (expected - t_data + 2.0 * PAIR_SMOOTH * n * curve.T @ c) / n

    res = minimize(objective, np.zeros(PAIR_NODES), jac=True, method="L-BFGS-B",
                   bounds=[(-50.0, 50.0)] * PAIR_NODES, options={"maxiter": 2000})
    w = res.x - res.x.max()
    edges = np.linspace(lo, hi, 8 * (PAIR_NODES - 1) + 1)
    field.bond_edges = edges
    field.bond_log_weight = np.interp(0.5 * (edges[1:] + edges[:-1]), nodes, w)
    return field


def calibrate_bonds(field: LatticeField, fields: list, rng: np.random.Generator,
                    threshold: float = BOND_THRESHOLD) -> LatticeField:
    """The bond weights (:attr:`LatticeField.bond_log_weight`) that give redrawn sites the
    data's first-shell bond lengths, by iterative Boltzmann inversion (Reith et al. 2003)
    on the data itself, in the geometry of a seam: in each frame, for each axis, the sites
    within :data:`BAND_SPACINGS` of a plane through a
    random point normal to it are redrawn (:data:`BOND_SWEEPS` sweeps, the rest held), and
    each bin's log weight moves by log(data's bonds / the bands' bonds), soft-thresholded
    at ``threshold`` standard errors, :data:`BOND_ITERATIONS` times (a field without its
    Gaussian part starts from its pseudo-likelihood weights, :func:`fit_pair_weights`); the
    weights are the mean of the later half of the iterates. With one band per frame and
    the last iterate, the calibration's noise alone moved the healed 2D faces' |psi6|
    between +0.002 and +0.006 over the bulk. Weights calibrated on scattered single sites
    instead, held on every side, left the healed bands' |psi6| 0.006-0.009 above the bulk
    in 2D. ``fields``: per frame (graph, displacements (n, d) px)."""
    data = np.concatenate([_bond_lengths(u, g, np.flatnonzero(g.cls >= 0), u[g.cls >= 0])[g.nb1[g.cls >= 0] >= 0]
                           for g, u in fields])
    lo, hi = np.quantile(data, [0.0, 0.999])
    edges = np.linspace(lo, hi, BOND_BINS + 1)
    kernel = np.array([1.0, 2.0, 3.0, 2.0, 1.0])      # the asymmetry is smooth, the counts' noise is not
    want = np.convolve(_histogram(data, edges), kernel, "same")
    # a field without its Gaussian starts from its pseudo-likelihood weights
    start = np.zeros(BOND_BINS) if field.gaussian else field.log_weight(0.5 * (edges[1:] + edges[:-1]))
    field.bond_edges, field.bond_log_weight = edges, start
    history = []
    for it in range(BOND_ITERATIONS):
        got = np.zeros(BOND_BINS)
        for g, band, u in _redrawn_bands(field, fields, rng):
            got += _histogram(_bond_lengths(u, g, band, u[band])[g.nb1[band] >= 0], edges)
        got = np.convolve(got, kernel, "same")
        fit = (want > 0) & (got > 0)
        step = np.zeros(BOND_BINS)
        step[fit] = np.log(want[fit] / want.sum()) - np.log(got[fit] / got.sum())
        # soft-thresholded in standard errors of the log ratio (Poisson counts, the
        # kernel's weight 9): only what the counts resolve is corrected
        se = np.zeros(BOND_BINS)
        se[fit] = np.sqrt(9.0 / want[fit] + 9.0 / got[fit])
        step = np.sign(step) * np.maximum(np.abs(step) - threshold * se, 0.0)
        step[want == 0] = -20.0          # never seen in the data
        field.bond_log_weight = np.clip(field.bond_log_weight + step, -20.0, 20.0)
        history.append(field.bond_log_weight.copy())
    # the later iterates averaged (Polyak 1990): each carries the noise of one histogram
    field.bond_log_weight = np.mean(history[len(history) // 2:], axis=0)
    return field


def heal(pos: np.ndarray, sites: np.ndarray, box: np.ndarray, field: LatticeField, band: np.ndarray,
         rng: np.random.Generator, *, sweeps: int = SWEEPS) -> tuple[np.ndarray, int]:
    """Redraw the displacements of the particles ``band`` ((N,) bool) of a periodic crystal
    from ``field`` by Metropolis-within-Gibbs sampling, the rest held.

    pos : (N, d) px; sites : (N, d) px, each particle's ideal lattice site (one particle per
        site); box : (d,) px, whole lattice periods (a tiled film).
    Returns (new positions (N, d) px wrapped into the box, particles redrawn). Particles
    whose neighbourhood is incomplete or of a class the film did not show (beside a vacancy
    or an interstitial, a stacking the windows do not have) are held.
    """
    pos = np.asarray(pos, float)
    box = np.asarray(box, float)
    g, sig = graph(sites, field.a, box)
    g.cls = _classify(g, sig, field.signatures)
    movable = np.flatnonzero(band & (g.cls >= 0))
    if len(movable) == 0:
        return np.mod(pos, box), 0
    u = _wrapped(pos, sites, box)
    groups = colour_groups(g, movable, field.ordered)
    chol = _cholesky(field)
    for _ in range(int(sweeps)):
        _sweep(u, g, groups, field, chol, rng)
    out = pos.copy()
    out[movable] = sites[movable] + u[movable]
    return np.mod(out, box), int(len(movable))


def harmonic_samples(sites: np.ndarray, box: np.ndarray, a: float, count: int, kt_over_k: float,
                     seed: int = 0) -> np.ndarray:
    """Exact samples of the crystal on ``sites`` (N, d) px, periodic in ``box`` (d,) px, with
    central springs k between first-shell neighbours (within :data:`FIRST_SHELL` a), a known
    answer for :func:`fit_field` and :func:`heal`: precision Phi / kT with Phi_ii = k sum_R
    e_R e_R^T and Phi_(i,i+R) = -k e_R e_R^T, so that u_i given the rest is
    N(Phi_ii^-1 sum_R k e_R e_R^T u_(i+R), kT Phi_ii^-1) (triangular lattice: Phi_ii = 3 k I;
    fcc and hcp: 4 k I) and the second shell does not enter.

    Returns displacements (count, N, d) px, each sample's mean removed. Dense Cholesky: a
    few thousand sites at most."""
    g, _ = graph(sites, a, box)
    n, d = sites.shape
    Q = np.zeros((d * n, d * n))
    idx = np.arange(n)
    for k in range(g.nb1.shape[1]):
        j = g.nb1[:, k]
        has = j >= 0
        e = g.offset1[:, k] / np.maximum(np.linalg.norm(g.offset1[:, k], axis=1, keepdims=True), 1e-12)
        block = np.einsum("ni,nj->nij", e, e) / kt_over_k * has[:, None, None]
        for p in range(d):
            for q in range(d):
                np.add.at(Q, (d * idx + p, d * idx + q), block[:, p, q])
                np.add.at(Q, (d * idx[has] + p, d * j[has] + q), -block[has, p, q])
    Q += 1e-6 * np.eye(d * n)          # pins the translations
    L = np.linalg.cholesky(Q)
    z = np.random.default_rng(seed).standard_normal((d * n, count))
    u = np.linalg.solve(L.T, z).T.reshape(count, n, d)
    return u - u.mean(1, keepdims=True)


def harmonic_crystal(n1: int, n2: int, count: int, kt_over_k: float, a: float, seed: int = 0):
    """:func:`harmonic_samples` of a triangular crystal of n1 sites per row and n2 rows (n2
    even) in its periodic box (n1 a, n2 h), h = a sqrt(3) / 2. Returns (sites (N, 2) px,
    displacements (count, N, 2) px, box (2,) px)."""
    h = a * math.sqrt(3) / 2
    rows, cols = np.meshgrid(np.arange(n2), np.arange(n1), indexing="ij")
    sites = np.column_stack([(cols + 0.5 * (rows % 2)).ravel() * a, rows.ravel() * h])
    box = np.array([n1 * a, n2 * h])
    return sites, harmonic_samples(sites, box, a, count, kt_over_k, seed), box
