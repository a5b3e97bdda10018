"""The crystal's displacement field (colloidcg.scaling.lattice_field) against a harmonic
crystal whose conditional law is known exactly.

A triangular crystal with central nearest-neighbour springs k at temperature kT has the
precision matrix Q = Phi / kT, Phi the dynamical matrix: Phi_ii = k sum_R e_R e_R^T = 3 k I
over the 6 bonds, Phi_(i,i+R) = -k e_R e_R^T. So u_i given the rest is Gaussian with mean
sum_R (e_R e_R^T / 3) u_(i+R) and covariance kT / (3 k) I, and the second shell does not
enter. Samples are drawn exactly (:func:`lattice_field.harmonic_crystal`: Cholesky of Q,
the translations pinned by a small ridge).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from colloidcg.scaling import lattice_field as lf

A = 16.0
H = A * math.sqrt(3) / 2
KT_OVER_K = 0.6                      # px^2: conditional variance 0.2 px^2


def harmonic_samples(n1: int, n2: int, count: int, seed: int):
    """``count`` exact samples of the harmonic crystal (:func:`lf.harmonic_crystal`)."""
    return lf.harmonic_crystal(n1, n2, count, KT_OVER_K, A, seed)


def exact_coef() -> np.ndarray:
    """(2, 24): the harmonic crystal's conditional regression coefficients."""
    coef = np.zeros((2, 24))
    for c, (di, dj) in enumerate(lf.SHELLS[:6]):
        e = np.array([di * A + 0.5 * A * dj, dj * H])
        e /= np.linalg.norm(e)
        coef[:, 2 * c:2 * c + 2] = np.outer(e, e) / 3.0
    return coef


@pytest.fixture(scope="module")
def crystal():
    sites, u, box = harmonic_samples(12, 12, 160, seed=0)
    frames = [sites + x + np.array([3.0, 5.0]) for x in u]
    return sites, u, box, frames


def test_the_fitted_conditional_law_is_the_harmonic_crystals(crystal):
    """Fitted on open views of the exact samples (edges left out): the first shell's
    coefficients e e^T / 3 to 0.02, the second shell's 0 to 0.02, the conditional variance
    kT / 3k to 4 %; the bond weights of a Gaussian field are flat where the data has bonds
    (calibration reproduces the data without them)."""
    _, _, _, frames = crystal
    field = lf.fit_field(frames, A, H, rng=np.random.default_rng(1))
    np.testing.assert_allclose(field.coef, exact_coef(), atol=0.02)
    np.testing.assert_allclose(field.cov, np.eye(2) * KT_OVER_K / 3.0, rtol=0.04, atol=0.004)
    assert field.samples == 160 * 72        # each frame's sites whose two shells lie in its 12 x 12
    centres = 0.5 * (field.bond_edges[1:] + field.bond_edges[:-1])
    core = np.abs(centres - A) < 1.5 * math.sqrt(KT_OVER_K)         # within about 2 bond-length sd
    assert np.max(np.abs(field.bond_log_weight[core])) < 0.25, field.bond_log_weight[core]


def _bond_variance(pos, box, which):
    """Variance (px^2) of first-shell bond lengths, for bonds that cross x = box_x / 2
    and x = 0 ("across"), from sites within 2 spacings of those lines ("band") or farther
    than 2.5 spacings ("bulk")."""
    keys, u = lf._displacements(pos, A, H, np.zeros(2))
    nb = lf._neighbours(keys, (int(round(box[0] / A)), int(round(box[1] / H))))
    r = lf._bond_lengths(u, nb, None, np.arange(len(pos)), u, lf._bond_vectors(A, H))
    x = np.mod(pos[:, 0], box[0])
    half = 0.5 * box[0]
    d = np.minimum(np.abs(x - half), np.minimum(x, box[0] - x))
    near = d < 0.6 * A
    bond_x = x[:, None] + lf._bond_vectors(A, H)[None, :, 0]
    crossing = ((x[:, None] < half) != (bond_x < half)) | (bond_x < 0) | (bond_x >= box[0])
    if which == "across":
        return float(np.var(r[near[:, None] & crossing]))
    return float(np.var(r[(d < 2 * A) if which == "band" else (d > 2.5 * A)]))


def test_healing_a_seam_restores_the_crystals_bonds():
    """Two independent samples spliced at x = box / 2 (and at the wrap): the bonds across the
    seams have the wrong length spread (their ends were displaced independently). Healed
    (a band of 2 spacings either side redrawn, 150 sweeps of the fitted Gaussian law), their variance is the bulk's to
    10 %; healing a seamless sample leaves its band's bond variance where it was, to 5 %
    (the redrawn band is a sample of the same law)."""
    sites, u, box = harmonic_samples(16, 12, 40, seed=3)
    rng = np.random.default_rng(4)
    frames = [sites + x for x in u[:16]]
    field = lf.fit_field(frames, A, H, rng=rng)
    field.bond_log_weight[:] = 0.0          # a Gaussian field's (calibrated: flat up to noise, above)
    left = sites[:, 0] < 0.5 * box[0]
    x = sites[:, 0]
    band = np.minimum(np.abs(x - 0.5 * box[0]), np.minimum(x, box[0] - x)) < lf.BAND_SPACINGS * A
    before, after, bulk, control, control_before = [], [], [], [], []
    for k in range(16, 40, 2):
        spliced = sites + np.where(left[:, None], u[k], u[k + 1])
        healed, n = lf.heal(spliced, box, field, band, rng)
        assert n == band.sum()
        before.append(_bond_variance(spliced, box, "across"))
        after.append(_bond_variance(healed, box, "across"))
        bulk.append(_bond_variance(healed, box, "bulk"))
        one = sites + u[k]
        control_before.append(_bond_variance(one, box, "band"))
        control.append(_bond_variance(lf.heal(one, box, field, band, rng)[0], box, "band"))
    before, after, bulk = np.mean(before), np.mean(after), np.mean(bulk)
    assert before > 1.25 * bulk, (before, bulk)
    assert after == pytest.approx(bulk, rel=0.10), (after, bulk)
    assert np.mean(control) == pytest.approx(np.mean(control_before), rel=0.05)


def test_healing_holds_what_it_cannot_place():
    """A particle sharing its site (an interstitial) and its neighbours are held; held
    particles do not move at all; positions come back inside the box."""
    sites, u, box = harmonic_samples(8, 8, 2, seed=5)
    pos = sites + u[0]
    extra = sites[10] + np.array([2.0, 1.0])
    pos = np.vstack([pos, extra])
    field = lf.fit_field([sites + x for x in harmonic_samples(8, 8, 40, seed=6)[1]], A, H)
    band = np.ones(len(pos), bool)
    band[:5] = False
    healed, n = lf.heal(pos, box, field, band, np.random.default_rng(0))
    keys = lf._keys(lf.lattice_site(pos - lf.site_of(pos, A, H), A, H), A, H)
    nb = lf._neighbours(keys, (8, 8))
    held = ~(band & np.all(nb >= 0, axis=1))
    assert held[10] and held[-1] and held[:5].all() and n == int((~held).sum())
    np.testing.assert_array_equal(healed[held], np.mod(pos[held], box))
    assert np.all((healed >= 0) & (healed < box))


@pytest.mark.parametrize("n1,n2", [(12, 12), (13, 14), (16, 10)])
def test_colour_groups_hold_no_two_neighbours(n1, n2):
    """Sites drawn together are never neighbours, also across the wrap of a box whose sides
    are not multiples of 3 sites; every movable site is in exactly one group."""
    sites, _, box = harmonic_samples(n1, n2, 1, seed=0)
    keys = lf._keys(sites, A, H)
    nb = lf._neighbours(keys, (n1, n2))
    movable = np.flatnonzero(np.arange(len(sites)) % 5 != 0)
    groups = lf._colour_groups(keys, movable, nb, (n1, n2))
    assert np.array_equal(np.sort(np.concatenate(groups)), movable)
    for g in groups:
        assert not np.isin(nb[g], g).any()
