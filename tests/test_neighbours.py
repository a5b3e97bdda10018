"""colloidcg.neighbours against brute force, open and periodic."""

import numpy as np
import pytest

from colloidcg import neighbours as nb


def brute(points, r, box=None):
    dv = points[None, :, :] - points[:, None, :]
    if box is not None:
        dv -= np.asarray(box) * np.round(dv / np.asarray(box))
    d = np.sqrt((dv ** 2).sum(-1))
    i, j = np.nonzero(np.triu(d <= r, k=1))
    return np.c_[i, j], d


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("periodic", [False, True])
def test_pairs_equal_brute_force_sorted(dim, periodic):
    rng = np.random.default_rng(dim)
    box = np.array([10.0, 12.0, 9.0][:dim]) if periodic else None
    pts = rng.uniform(-3, 13, (300, dim))   # periodic: outside the box too, wrapped
    want, d = brute(pts, 1.5, box)
    got, dist = nb.pairs(pts, 1.5, box, distances=True)
    assert got.dtype == np.int64 and got.shape == want.shape
    assert np.array_equal(got, want)                  # sorted by i then j, i < j
    assert np.allclose(dist, d[got[:, 0], got[:, 1]])
    unsorted = nb.pairs(pts, 1.5, box, sort=False)
    assert np.array_equal(np.sort(unsorted[:, 0] * 300 + unsorted[:, 1]), want[:, 0] * 300 + want[:, 1])


def test_periodic_radius_limit_and_wrap():
    pts = np.random.default_rng(0).uniform(0, 10, (50, 2))
    with pytest.raises(ValueError, match="half the periodic box"):
        nb.pairs(pts, 5.0, [10.0, 10.0])
    w = nb.wrap(np.array([[-1e-17, 10.0], [3.0, -2.5]]), [10.0, 10.0])
    assert np.all((w >= 0) & (w < 10.0))
    assert w[0, 0] == 0.0 and w[0, 1] == 0.0 and w[1, 1] == 7.5


@pytest.mark.parametrize("periodic", [False, True])
def test_nearest_excludes_self_and_matches_brute_force(periodic):
    rng = np.random.default_rng(1)
    box = [20.0, 20.0] if periodic else None
    pts = rng.uniform(0, 20, (200, 2))
    _, d = brute(pts, 0, box)
    np.fill_diagonal(d, np.inf)
    dist, idx = nb.nearest(pts, box=box)
    assert dist.shape == (200,) and np.allclose(dist, d.min(1)) and np.array_equal(idx, d.argmin(1))
    d3, i3 = nb.nearest(pts, k=3, box=box)
    assert d3.shape == (200, 3) and np.allclose(d3, np.sort(d, 1)[:, :3])
    assert not np.any(i3 == np.arange(200)[:, None])
    q = rng.uniform(0, 20, (30, 2))
    dq, iq = nb.nearest(pts, query=q, box=box)
    assert np.allclose(dq, np.linalg.norm(_min_image(q[:, None] - pts[iq][:, None], box), axis=-1)[:, 0])


def _min_image(dv, box):
    return dv if box is None else dv - np.asarray(box) * np.round(dv / np.asarray(box))


def test_coincident_points_drop_their_own_index():
    pts = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    d, i = nb.nearest(pts)
    assert d[0] == 0 and d[1] == 0 and i[0] == 1 and i[1] == 0
    d2, i2 = nb.nearest(pts, k=2)
    assert not np.any(i2 == np.arange(3)[:, None])


@pytest.mark.parametrize("periodic", [False, True])
def test_within_and_counts(periodic):
    rng = np.random.default_rng(2)
    box = [15.0, 15.0] if periodic else None
    pts = rng.uniform(0, 15, (150, 2))
    _, d = brute(pts, 0, box)
    hits = nb.within(pts, 2.0, box=box)
    for n, h in enumerate(hits):
        want = np.flatnonzero(d[n] <= 2.0)
        assert np.array_equal(h, want[want != n])
    assert np.array_equal(nb.count_within(pts, 2.0, box=box), [len(h) for h in hits])
    q = pts[:5] + 0.1
    assert np.array_equal(nb.count_within(pts, 2.0, query=q, box=box),
                          [len(h) for h in nb.within(pts, 2.0, query=q, box=box)])
    single = nb.Tree(pts, box).within(2.0, query=pts[0])
    assert np.array_equal(single, np.flatnonzero(d[0] <= 2.0))


def test_cross_distances():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 10, (40, 2)), rng.uniform(0, 10, (60, 2))
    i, j, d = nb.cross_distances(a, b, 1.0)
    full = np.linalg.norm(a[:, None] - b[None], axis=-1)
    assert len(i) == int((full <= 1.0).sum()) and np.allclose(d, full[i, j])


def test_few_points():
    for n in (0, 1):
        p = np.zeros((n, 2))
        assert nb.pairs(p, 1.0).shape == (0, 2)
        assert nb.pairs(p, 1.0, [5.0, 5.0], distances=True)[1].shape == (0,)
