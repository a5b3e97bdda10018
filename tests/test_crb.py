"""Cramér-Rao bound of spot localisation (colloidcg.tracking.crb) against Mortensen et al. 2010."""

import numpy as np
import pytest

from colloidcg.tracking.crb import crb_particles, crb_spot, mortensen_sigma


@pytest.mark.parametrize("sigma", [1.0, 1.5, 3.0])
def test_high_photon_limit_matches_mortensen(sigma):
    # no background: sigma_a / sqrt(N) with sigma_a^2 = sigma^2 + a^2 / 12
    n = 1e5
    cx, cy = crb_spot("gauss_pixel", diameter=sigma / 0.25, sigma_over_d=0.25, photons=n)
    expect = np.sqrt((sigma ** 2 + 1 / 12) / n)
    assert mortensen_sigma(sigma, n) == pytest.approx(expect)
    assert cx == pytest.approx(expect, rel=2e-3) and cy == pytest.approx(expect, rel=2e-3)
    # off-centre spots: the same bound
    cx, cy = crb_spot("gauss_pixel", diameter=sigma / 0.25, photons=n, x=0.37, y=-0.21)
    assert cx == pytest.approx(expect, rel=5e-3) and cy == pytest.approx(expect, rel=5e-3)


@pytest.mark.parametrize("b", [1.0, 10.0, 100.0])
def test_background_matches_mortensen_eq6(b):
    sigma, n = 1.6, 3000.0
    cx, _ = crb_spot("gauss_pixel", diameter=sigma / 0.25, photons=n, background=b)
    assert cx == pytest.approx(mortensen_sigma(sigma, n, b), rel=0.01)
    assert mortensen_sigma(sigma, n, b) > mortensen_sigma(sigma, n, 0.0)


def test_scaling_and_noise():
    a = crb_spot("gauss_centre", diameter=10, photons=1000, background=5)[0]
    b = crb_spot("gauss_centre", diameter=10, photons=4000, background=20)[0]
    assert b == pytest.approx(a / 2, rel=1e-6)                  # everything x4 -> bound / 2
    c = crb_spot("gauss_centre", diameter=10, photons=1000, background=5, read_noise=5)[0]
    assert c > a
    # clipping: saturated pixels carry no information
    s = crb_spot("gauss_centre", diameter=10, photons=1000, background=5, saturation=8.0)[0]
    assert s > a
    # other PSFs give finite bounds
    for psf in ("ring", "airy"):
        v = crb_spot(psf, diameter=10, photons=1000, background=5)
        assert np.all(np.isfinite(v)) and v[0] > 0


def test_crb_particles_isolated_equals_spot_and_crowding_costs():
    kw = dict(psf="gauss_pixel", sigma_over_d=0.3, photons=2000.0, background=4.0, read_noise=2.0)
    one = crb_particles([[30.2, 29.9]], 10.0, (61, 61), **kw)
    ref = crb_spot("gauss_pixel", diameter=10.0, sigma_over_d=0.3, photons=2000.0, background=4.0,
                   read_noise=2.0, x=0.2, y=-0.1)
    np.testing.assert_allclose(one[0], ref, rtol=1e-3)
    two = crb_particles([[30.2, 29.9], [39.2, 29.9]], 10.0, (61, 61), **kw)
    assert two[0, 0] > one[0, 0]           # the neighbour's photons add noise along x


def test_fitted_neighbours_bound():
    kw = dict(psf="gauss_pixel", sigma_over_d=0.3, photons=2000.0, background=4.0, read_noise=2.0)
    # isolated: the joint bound is the single-spot bound
    one_k = crb_particles([[30.2, 29.9]], 10.0, (61, 61), **kw)
    one_f = crb_particles([[30.2, 29.9]], 10.0, (61, 61), neighbours="fitted", **kw)
    np.testing.assert_allclose(one_f, one_k, rtol=1e-9)
    # strongly overlapping pair: estimating the neighbour too costs a lot along the pair axis
    pair = [[30.0, 30.0], [34.0, 30.0]]
    k = crb_particles(pair, 10.0, (61, 61), **kw)
    f = crb_particles(pair, 10.0, (61, 61), neighbours="fitted", **kw)
    assert f[0, 0] > 1.5 * k[0, 0] and f[0, 1] >= k[0, 1] * (1 - 1e-9)
    with pytest.raises(ValueError):
        crb_particles(pair, 10.0, (61, 61), neighbours="nope", **kw)
