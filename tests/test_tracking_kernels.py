"""The tracking kernels' own small numerical helpers against numpy (exact where numpy is)."""

import numpy as np

from colloidcg.tracking.refine import _median_inplace, _sort_small
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
