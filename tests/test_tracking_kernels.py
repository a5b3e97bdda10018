"""The tracking kernels' own small numerical helpers against numpy (exact where numpy is)."""

import numpy as np

from colloidcg.tracking.refine import (_median_inplace, _normal_equations,
                                       _normal_equations_offset, _solve_free, _sort_small)
from colloidcg.tracking.uncertainty import _invert


def test_median_and_sort_equal_numpy_exactly_with_ties():
    rng = np.random.default_rng(0)
    for t in range(3000):
        n = int(rng.integers(1, 80))
        a = rng.normal(size=n) if t % 2 else rng.integers(0, 4, size=n).astype(float)
        assert _median_inplace(a.copy(), n) == np.median(a)
        b = a.copy()
        _sort_small(b, n)
        assert np.array_equal(b, np.sort(a))
    # only the first n values count
    a = np.array([3.0, 1.0, 2.0, -100.0, 100.0])
    assert _median_inplace(a.copy(), 3) == 2.0
    assert _median_inplace(a.copy(), 4) == 1.5


def test_inverse_of_4x4_matches_numpy_and_refuses_non_positive_determinants():
    rng = np.random.default_rng(1)
    refused = 0
    for t in range(500):
        m = rng.normal(size=(4, 4))
        if t % 2:
            m = m @ m.T + 0.1 * np.eye(4)          # a Fisher-like matrix
        out = np.full((4, 4), 7.0)
        ok = _invert(m, out)
        assert ok == (np.linalg.det(m) > 0)
        if ok:
            want = np.linalg.inv(m)
            assert np.abs(out - want).max() <= 1e-10 * np.abs(want).max()
        else:
            refused += 1
            assert np.all(out == 7.0)               # untouched
    assert refused > 50
    singular = np.ones((4, 4))
    assert not _invert(singular, np.zeros((4, 4)))
    nan = np.eye(4)
    nan[2, 1] = np.nan
    assert not _invert(nan, np.zeros((4, 4)))


def test_written_out_normal_equations_equal_the_table_driven_ones():
    """The default fit's normal equations (x, y, A, s and a background offset), written
    out, equal the general table-driven sums for any Gram matrices and projections."""
    rng = np.random.default_rng(2)
    free = np.array([1, 1, 1, 1, 1, 0, 0], np.int64)
    for _ in range(200):
        gx, gy = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
        Gx, Gy, TT = gx @ gx.T, gy @ gy.T, rng.normal(size=(5, 5))
        a, b0 = rng.uniform(0.1, 1e4), rng.normal(scale=50.0)
        mod_c = np.array([a, b0, 0.0, 0.0])
        want_j, want_r = np.zeros((7, 7)), np.zeros(7)
        _normal_equations(a, mod_c, free, 2, TT, Gx, Gy, want_j, want_r)
        got_j, got_r = np.zeros((7, 7)), np.zeros(7)
        _normal_equations_offset(a, b0, TT, Gx, Gy, got_j, got_r)
        upper = np.triu(np.ones((5, 5), bool))
        scale = np.abs(want_j[:5, :5]).max()
        assert np.abs(got_j[:5, :5] - want_j[:5, :5])[upper].max() <= 1e-12 * scale
        assert np.abs(got_r[:5] - want_r[:5]).max() <= 1e-12 * (np.abs(want_r[:5]).max() + scale)


def test_solve_of_the_free_block_matches_numpy():
    """Cholesky on the free parameters' block (upper triangle given): the same step as
    numpy's solver, 0 for the held parameters, and False for a matrix that is not
    positive definite."""
    rng = np.random.default_rng(3)
    work, idx, step = np.empty((2, 8, 8)), np.empty(7, np.int64), np.empty(7)
    for t in range(300):
        free = (rng.random(7) < 0.7).astype(np.int64)
        free[0] = 1
        k = np.flatnonzero(free)
        m = rng.normal(size=(7, 7))
        jtj = m @ m.T + 0.1 * np.eye(7)
        jtr = rng.normal(size=7)
        lower_junk = np.tril(rng.normal(size=(7, 7)), -1)   # only the upper triangle is read
        assert _solve_free(np.triu(jtj) + lower_junk, jtr, free, step, work, idx)
        want = np.zeros(7)
        want[k] = np.linalg.solve(jtj[np.ix_(k, k)], jtr[k])
        assert np.abs(step - want).max() <= 1e-9 * (np.abs(want).max() + 1)
    bad = -np.eye(7)
    assert not _solve_free(bad, np.ones(7), np.ones(7, np.int64), step, work, idx)


def test_blob_strength_rows_equal_the_per_pixel_strength_edges_included():
    from colloidcg.tracking.params import _doh, _doh_row, _doh_track

    rng = np.random.default_rng(2)
    g = rng.normal(size=(23, 31)).astype(np.float32)
    row = np.empty(31)
    for v in range(23):
        _doh_row(g, v, 2.5, row)
        assert np.array_equal(row, [_doh(g, v, u, 2.5) for u in range(31)])
    # the kept maxima: per pixel and polarity the strongest over the scales, its scale and z
    best, scale, z = (np.zeros((2, 23, 31), np.float32) for _ in range(3))
    want = np.zeros((2, 23, 31))
    want_s = np.zeros((2, 23, 31))
    for s in (1.0, 2.0, 3.0):
        gs = (g * s + rng.normal(size=g.shape)).astype(np.float32)
        _doh_track(gs, s, s, 0.5, best, scale, z)
        b = np.array([[_doh(gs, v, u, s) for u in range(31)] for v in range(23)])
        for k, bk in enumerate((b, -b)):
            up = bk > want[k]
            want[k][up], want_s[k][up] = bk[up], s
    assert np.array_equal(best, want.astype(np.float32))
    assert np.array_equal(scale, want_s.astype(np.float32))
    assert np.array_equal(z, (want / 0.5).astype(np.float32))
    # both polarities and every scale were kept somewhere
    assert all((scale[k] == s).any() for k in range(2) for s in (1.0, 2.0, 3.0))


def test_part_pairs_hold_every_pair_the_rules_compare_and_drop_parts_is_unchanged():
    from colloidcg.neighbours import pairs
    from colloidcg.tracking.params import PART_REACH, _part_pairs, _parts_kept, drop_parts
    from colloidcg.tracking.refine import pairs_csr

    rng = np.random.default_rng(3)
    for t in range(40):
        n = int(rng.integers(2, 400))
        scales = rng.choice([1.0, 1.6, 2.5, 4.0, 10.0, 25.0], size=n,
                            p=[0.2, 0.3, 0.3, 0.15, 0.04, 0.01] if t % 2 else None)
        b = np.c_[rng.uniform(0, 300, (n, 2)).round(), scales, rng.uniform(1, 10, n)]
        b = b[np.argsort(-b[:, 3])]
        found = _part_pairs(b)
        key = set(map(tuple, np.sort(found, axis=1)))
        assert len(key) == len(found)                      # each pair once
        assert all(i != j for i, j in key)
        # every pair within PART_REACH of its larger scale is there
        allp, dist = pairs(b[:, :2], PART_REACH * b[:, 2].max(), distances=True)
        need = dist <= PART_REACH * np.maximum(b[allp[:, 0], 2], b[allp[:, 1], 2])
        assert set(map(tuple, allp[need])) <= key
        # and the kept blobs equal those of one reach for all
        ptr, nbr = pairs_csr(allp, n)
        want = b[_parts_kept(b, ptr, nbr, np.argsort(-b[:, 2], kind="stable"))]
        assert np.array_equal(drop_parts(b), want)
