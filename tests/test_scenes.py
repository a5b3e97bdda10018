"""The independent scene renderer (colloidcg.synthetic.scenes): conventions, packings, PSFs,
noise path and the analogue scenes of issue 15's failure classes."""

import numpy as np
import pytest

from colloidcg.synthetic import scenes as S


def _centroid(img):
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    m = img.sum()
    return (img * xx).sum() / m, (img * yy).sum() / m


@pytest.mark.parametrize("psf", S.PSFS)
def test_pixel_centres_at_integers(psf):
    # a spot at (x, y) = (34, 28): x is the column, y the row, centre of pixel [28, 34]
    kw = dict(ring_depth=0.0) if psf == "ring" else {}
    img = S.expected_image([[34.0, 28.0]], 8.0, (57, 71), psf=psf, photons=1000.0, **kw)
    assert np.unravel_index(np.argmax(img), img.shape) == (28, 34)
    cx, cy = _centroid(img)
    assert cx == pytest.approx(34.0, abs=1e-9) and cy == pytest.approx(28.0, abs=1e-9)
    # sub-pixel: the centroid of a (wide enough) spot follows the position
    img = S.expected_image([[34.3, 27.8]], 8.0, (57, 71), psf=psf, photons=1000.0, **kw)
    cx, cy = _centroid(img)
    assert cx == pytest.approx(34.3, abs=2e-3) and cy == pytest.approx(27.8, abs=2e-3)


def test_trackpy_agrees_on_the_convention():
    tp = pytest.importorskip("trackpy")
    rng = np.random.default_rng(3)
    truth = np.array([[15.3, 22.7], [40.0, 12.0], [33.6, 40.2]])
    img = S.render(truth, 9.0, (56, 60), psf="gauss_pixel", photons=20000, background=5,
                   read_noise=0.5, bit_depth=16, rng=rng)
    f = tp.locate(img, 11, minmass=100).sort_values("x")
    assert len(f) == 3
    got = f[["x", "y"]].to_numpy()
    np.testing.assert_allclose(got, truth[np.argsort(truth[:, 0])], atol=0.08)


@pytest.mark.parametrize("phi,diam,frac", [(0.5, (10.0,), None), (0.74, (8.4, 12.0), None),
                                           (0.85, (8.0,), None), (0.8, (8.4, 12.0), (0.3, 0.7))])
def test_packing_fraction_and_no_overlaps(phi, diam, frac):
    pos, d = S.random_packing((120, 140), phi, diam, fractions=frac, rng=1)
    assert S.area_fraction(pos, d, (120, 140), margin=max(diam)) == pytest.approx(phi, abs=0.01)
    assert S.min_gap(pos, d) >= 0
    assert set(np.unique(d)) == set(diam)
    if frac is not None:
        assert np.mean(d == diam[1]) == pytest.approx(frac[1], abs=0.02)
    assert pos.shape == (len(d), 2)


def test_packing_too_dense_is_refused():
    with pytest.raises(ValueError):
        S.random_packing((50, 50), 0.95, (8.0,), rng=0)


def test_brownian_steps_no_overlaps_and_drift():
    pos, d = S.random_packing((100, 100), 0.7, (8.4, 12.0), rng=2)
    traj = S.brownian_steps(pos, d, (100, 100), 4, 0.5, rng=3, drift=(0.2, -0.1))
    assert traj.shape == (4, len(pos), 2)
    np.testing.assert_array_equal(traj[0], pos)
    for t in range(4):
        assert S.min_gap(traj[t] - np.array([0.2, -0.1]) * t, d) >= 0
    still = S.brownian_steps(pos, d, (100, 100), 4, 0.5, rng=3)
    shift = np.arange(4)[:, None, None] * np.array([0.2, -0.1])[None, None, :]
    np.testing.assert_allclose(traj - still, np.broadcast_to(shift, traj.shape), atol=1e-12)


def test_reproducible_by_seed():
    a, ta = S.frames((64, 64), 2, 0.6, (9.0,), rng=5, photons=800, background=3, read_noise=1)
    b, tb = S.frames((64, 64), 2, 0.6, (9.0,), rng=5, photons=800, background=3, read_noise=1)
    c, _ = S.frames((64, 64), 2, 0.6, (9.0,), rng=6, photons=800, background=3, read_noise=1)
    np.testing.assert_array_equal(a, b)
    assert ta.equals(tb)
    assert not np.array_equal(a, c)
    assert list(ta.columns) == ["frame", "particle", "x", "y", "diameter", "contrast"]
    assert a.shape == (2, 64, 64) and a.dtype == np.uint8


def test_psf_normalisation():
    pos = [[30.2, 29.7]]
    gp = S.expected_image(pos, 10.0, (61, 61), psf="gauss_pixel", photons=5000.0)
    assert gp.sum() == pytest.approx(5000.0, rel=1e-6)
    gc = S.expected_image(pos, 10.0, (61, 61), psf="gauss_centre", photons=5000.0)
    assert gc.sum() == pytest.approx(5000.0, rel=1e-4)
    ai = S.expected_image(pos, 10.0, (61, 61), psf="airy", photons=5000.0)
    assert ai.sum() == pytest.approx(5000.0 * 0.938, rel=0.01)    # cut at the third dark ring
    rg = S.expected_image(pos, 10.0, (61, 61), psf="ring", photons=5000.0, ring_depth=0.0)
    assert rg.sum() == pytest.approx(5000.0, rel=1e-3)
    # amplitude is the peak of the continuous profile
    pk = S.expected_image([[30.0, 30.0]], 10.0, (61, 61), psf="gauss_centre", amplitude=77.0)
    assert pk.max() == pytest.approx(77.0)
    # Poisson counts: mean image sum = photons + background
    rng = np.random.default_rng(0)
    sums = [S.render(pos, 10.0, (61, 61), psf="gauss_pixel", photons=5000.0, background=2.0,
                     bit_depth=None, rng=rng).sum() for _ in range(200)]
    assert np.mean(sums) == pytest.approx(5000 + 2 * 61 * 61, rel=0.005)
    assert np.std(sums) == pytest.approx(np.sqrt(5000 + 2 * 61 * 61), rel=0.15)


def test_bit_depth_clip_and_jpeg():
    pos, d = S.random_packing((96, 96), 0.5, (8.0,), rng=0)
    kw = dict(psf="gauss_pixel", amplitude=300.0, background=10.0, read_noise=2.0)
    a8 = S.render(pos, d, (96, 96), bit_depth=8, rng=1, **kw)
    assert a8.dtype == np.uint8 and a8.max() == 255              # clipped
    a16 = S.render(pos, d, (96, 96), bit_depth=16, rng=1, **kw)
    assert a16.dtype == np.uint16 and a16.max() > 255
    un = S.render(pos, d, (96, 96), bit_depth=8, clip=False, rng=1, **kw)
    assert un.max() > 255 and np.all(un == np.round(un))
    jp = S.render(pos, d, (96, 96), bit_depth=8, jpeg_quality=50, rng=1, **kw)
    diff = np.abs(jp.astype(float) - a8)
    assert jp.dtype == np.uint8 and diff.mean() > 0.5 and diff.mean() < 15
    with pytest.raises(ValueError):
        S.render(pos, d, (96, 96), bit_depth=16, jpeg_quality=50, rng=1, **kw)


# ---------------------------------------------------------------- analogue scenes

def _in_view(truth, shape, frame=0):
    t = truth[truth.frame == frame]
    return t[t.x.between(-0.5, shape[1] - 0.5) & t.y.between(-0.5, shape[0] - 0.5)]


def test_scene_mixed_contrast():
    fr, truth, info = S.scene_mixed_contrast(n_frames=2, seed=1)
    assert fr.shape == (2, 302, 324) and fr.dtype == np.uint8
    assert abs(np.median(fr) - 146) <= 3
    t = _in_view(truth, fr.shape[1:])
    assert set(t.contrast) == {1.0, -1.0}
    assert 30 <= len(t) <= 50
    img = fr[0].astype(float)
    for c in (1.0, -1.0):
        core = [img[int(round(y)), int(round(x))] for x, y in
                t[t.contrast == c][["x", "y"]].to_numpy()
                if 5 < x < fr.shape[2] - 5 and 5 < y < fr.shape[1] - 5]
        assert (np.median(core) > 230) if c > 0 else (np.median(core) < 80)


def test_scene_fluorescence_mjpeg():
    fr, truth, info = S.scene_fluorescence_mjpeg(n_frames=2, seed=1)
    assert np.median(fr) <= 8 and np.mean(fr == 0) > 0.005          # near black, clipped
    assert 80 <= info["n_in_view"] <= 120
    # JPEG blocks: jumps across 8-px block edges exceed jumps inside blocks
    img = fr[0].astype(float)
    dx = np.abs(np.diff(img, axis=1))
    edge, inner = dx[:, 7::8].mean(), np.delete(dx, np.s_[7::8], axis=1).mean()
    assert edge > 1.2 * inner


def test_scene_dense_brightfield():
    fr, truth, info = S.scene_dense_brightfield(n_frames=1, shape=(128, 128), seed=1)
    img = fr[0].astype(float)
    t = _in_view(truth, img.shape)
    yy, xx = np.mgrid[0:128, 0:128]
    from scipy.spatial import cKDTree
    dist, _ = cKDTree(t[["x", "y"]].to_numpy()).query(np.column_stack([xx.ravel(), yy.ravel()]))
    dist = dist.reshape(img.shape)
    d = info["diameter"]
    centre = img[dist < 0.1 * d].mean()
    ring = img[(dist > 0.37 * d) & (dist < 0.47 * d)].mean()
    gap = img[dist > 0.6 * d].mean()
    assert centre > ring + 40 and gap > ring + 40 and gap > 150


def test_scene_uncorrelated():
    fr, truth, info = S.scene_uncorrelated(n_frames=3, shape=(128, 128), seed=1)
    a, b = (fr[0] - fr[0].mean()).ravel(), (fr[1] - fr[1].mean()).ravel()
    assert fr.dtype == np.uint8 and fr[0].std() > 12                  # white noise + grain
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1
    assert truth.groupby("particle").frame.nunique().max() == 1       # new particles each frame
    assert info["diameter"] == 15.0


def test_scene_dark_dish():
    fr, truth, info = S.scene_dark_dish(n_frames=1, seed=1)
    mask, b = info["sample_mask"], info["border_px"]
    assert not mask[:, :b].any() and not mask[:, -b:].any() and mask.mean() > 0.6
    assert np.median(fr[0][:, :b]) < 10                               # black borders
    assert np.percentile(fr[0][mask], 90) > 140                       # bright between particles
    assert not mask[0, -b - 1]                                        # the wall cuts a corner
    t = _in_view(truth, fr.shape[1:])
    assert set(t.contrast) == {-1.0}
    assert mask[np.round(t.y).astype(int).clip(0, 255), np.round(t.x).astype(int).clip(0, 319)].all()


def test_scene_dense_bidisperse():
    fr, truth, info = S.scene_dense_bidisperse(n_frames=3, shape=(128, 128), seed=1)
    assert fr.dtype == np.uint8
    assert set(truth.diameter) == {8.4, 12.0}
    t0 = truth[truth.frame == 0]
    assert S.area_fraction(t0[["x", "y"]].to_numpy(), t0.diameter.to_numpy(), (128, 128),
                           margin=12.0) == pytest.approx(0.74, abs=0.01)
    drift = (truth[truth.frame == 2][["x", "y"]].to_numpy() - t0[["x", "y"]].to_numpy()).mean(0)
    np.testing.assert_allclose(drift, 2 * np.array(info["drift_px_per_frame"]), atol=0.15)
    # soft particles (default softness 0.2): overlapping pairs, but never closer than 0.8 x contact
    xy, d = t0[["x", "y"]].to_numpy(), t0.diameter.to_numpy()
    assert S.min_gap(xy, d) < -1.0 and S.min_gap(xy, 0.8 * d) >= 0
    fr, truth, _ = S.scene_dense_bidisperse(n_frames=1, shape=(96, 96), seed=1, softness=0.0)
    t0 = truth[truth.frame == 0]
    assert S.min_gap(t0[["x", "y"]].to_numpy(), t0.diameter.to_numpy()) >= 0
