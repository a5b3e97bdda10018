"""Tracking 3D stacks (confocal-like volumes): joint anisotropic Gaussian fits, the
contrast of dense stacks, and trackpy's anisotropic rows under pandas 3.

The stacks are drawn by trackpy's own generator (``trackpy.artificial.draw_spots`` in 3D)
and by ``benchmarks/tracking_3d.py``'s blurred-sphere renderer; neither is the fit's model.
``python benchmarks/tracking_3d.py`` has the whole table.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from bench_helpers import load_benchmark
from colloidcg.tracking import TrackParams, suggest_parameters, track
from colloidcg.tracking.refine3d import _paint, fit_spots_3d

pytest.importorskip("trackpy.artificial")
B = load_benchmark("tracking_3d")
SHAPE = (28, 64, 64)


def _track(frames, params=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return track(frames, params, progress=False, processes=1)


@pytest.fixture(scope="module")
def elongated():
    """Gaussian spots twice as long along z as across, near contact (trackpy.artificial)."""
    return B.render("gauss", (4.0, 2.0, 2.0), 1.1, seed=1, shape=SHAPE, n_frames=3)


def test_fit_is_exact_without_noise():
    """Spots drawn as the fit's own model (voxel-integrated anisotropic Gaussians, two
    of them overlapping) are found from starts 0.4 voxel off, widths included: to 1e-5
    voxel alone, to the sweeps' tolerance (1e-3) for the overlapping pair."""
    img = np.full(SHAPE, 10.0)
    truth = np.array([[12.3, 30.2, 30.7], [13.1, 33.6, 31.4], [15.6, 20.4, 45.2]])
    for z, y, x in truth:
        _paint(img, z, y, x, 5000.0, 2.2, 1.3, 1.0)
    start = truth + np.array([0.4, -0.3, 0.35])
    r = fit_spots_3d(img, start[:, 0], start[:, 1], start[:, 2], (1.8, 1.6))
    assert r["ok"].all()
    got = np.c_[r["z"], r["y"], r["x"]]
    assert np.abs(got[2] - truth[2]).max() < 1e-5
    assert np.abs(got - truth).max() < 1e-3
    assert r["sigma_z"][0] == pytest.approx(2.2, abs=1e-3) and r["sigma_xy"][0] == pytest.approx(1.3, abs=1e-3)


def test_elongated_spots_near_contact_are_located_to_hundredths(elongated):
    """2:1 spots near contact: Gaussians chosen, every particle found, per-axis RMS under 0.05 voxel (0.032 /
    0.014 / 0.014 in the benchmark; trackpy's centroids with hand-set masks 0.10 / 0.06 /
    0.06) and ep calibrated within 30 % on every axis. Before: trackpy's anisotropic rows
    of NaN positions crashed the search-range estimate."""
    frames, truth = elongated
    r = _track(frames)
    assert r.params.spot_model == "gauss"
    assert np.isfinite(r.tracks[["z", "y", "x"]].to_numpy()).all()
    s = B.score(r.tracks, truth, SHAPE, B.feature_diameter("gauss", (4.0, 2.0, 2.0)))
    assert s["recall"] >= 0.99 and s["precision"] >= 0.99, s
    assert (s["rms"] < 0.05).all(), s
    assert ((s["ep_ratio"] > 0.7) & (s["ep_ratio"] < 1.3)).all(), s


def test_centroids_alone_are_worse(elongated):
    """The same stacks with ``refine=False`` (trackpy's centroids with the same masks): the
    test above measures the fit."""
    frames, truth = elongated
    p = suggest_parameters(frames[0])
    p.refine = False
    s = B.score(_track(frames, p).tracks, truth, SHAPE, B.feature_diameter("gauss", (4.0, 2.0, 2.0)))
    assert s["rms"].max() > 0.05, s


def test_dense_stack_contrast_is_read_from_a_plane_not_the_projection():
    """Flat-topped beads near contact: their maximum projection is bright nearly
    everywhere and the contrast came out dark (every fit then failed); a plane through
    them shows bright particles (a 56 x 56 px field: the same depth and packing as the
    80 x 80 one where it was found, a third of the rendering)."""
    frames, truth = B.render("hat", (6.0, 4.0, 4.0), 1.1, seed=0, shape=(32, 56, 56), n_frames=1)
    p = suggest_parameters(frames[0])
    assert p.contrast == "bright" and not p.invert


def test_blurred_spheres_beat_centroids():
    """Blurred dyed spheres (radius 5 px, z step twice the pixel, PSF 1.2 / 3 px) apart:
    fitted as blurred balls, every particle found and each axis under 0.08 voxel (0.05 in
    the benchmark; as Gaussians 0.06-0.14 over four realisations, trackpy's hand-set
    centroids 0.12-0.16)."""
    frames, truth = B.render("sphere", (5.0, 1.2, 3.0, 2.0), 1.3, seed=2, shape=(24, 72, 72), n_frames=2)
    r = _track(frames)
    assert r.params.spot_model == "ball" and r.params.sources["spot_model"] == "estimated"
    s = B.score(r.tracks, truth, (24, 72, 72), B.feature_diameter("sphere", (5.0, 1.2, 3.0, 2.0)))
    assert s["recall"] >= 0.99 and s["precision"] >= 0.99, s
    assert (s["rms"] < 0.08).all(), s
    assert math.isfinite(s["ep_ratio"][0])


def _sphere_stack(size, seed, shape):
    """Two frames of dyed spheres near contact (spacing 1.05): frames, truth, diameter."""
    frames, truth = B.render("sphere", size, 1.05, seed=seed, shape=shape, n_frames=2)
    return frames, truth, B.feature_diameter("sphere", size)


def _assert_found(frames, truth, dia, max_rms, model=None):
    """Track ``frames``: every particle found (recall and precision >= 0.99), each axis's
    RMS error under ``max_rms`` voxel, and the spot ``model`` chosen when given."""
    r = _track(frames)
    if model is not None:
        assert r.params.spot_model == model
    s = B.score(r.tracks, truth, frames.shape[1:], dia)
    assert s["recall"] >= 0.99 and s["precision"] >= 0.99, s
    assert (s["rms"] < max_rms).all(), s


@pytest.mark.slow
def test_dense_spheres_with_spots_the_starts_missed():
    """Dyed spheres near contact (spacing 1.05 diameters): trackpy's 3D centroids leave
    out the spheres centred within a radius of a face of the stack and partners merged
    into one maximum; their light, left out of the joint fit, pulled the neighbours'
    (0.13-0.26 voxel on some axis over three realisations, recall 0.976 on one). Found in
    the fit's residual and fitted too, the redundant start between two partners pruned:
    every particle found and each axis under 0.07 voxel (0.038-0.060 over seeds 0-2).
    The control (slow, below) runs the same track without the search."""
    frames, truth, dia = _sphere_stack((5.0, 1.2, 3.0, 2.0), 1, (24, 72, 72))
    _assert_found(frames, truth, dia, 0.07)


@pytest.mark.slow
def test_dense_spheres_control_without_the_residual_search(monkeypatch):
    """The control of the test above (slow: a second whole track): the same stack
    without the search of the residual misses the spheres' light (rms > 0.1 voxel)."""
    import colloidcg.tracking.refine3d as r3

    frames, truth, dia = _sphere_stack((5.0, 1.2, 3.0, 2.0), 1, (24, 72, 72))
    monkeypatch.setattr(r3, "MISSED_ROUNDS", 0)
    c = B.score(_track(frames).tracks, truth, frames.shape[1:], dia)
    assert c["rms"].max() > 0.1, c


@pytest.mark.slow
def test_binary_mixture_of_spheres_gets_two_radii(monkeypatch):
    """A 50:50 mixture of dyed spheres of radius 4 and 5.5 px near contact: each ball
    gets its population's radius, every particle found and each axis under 0.08 voxel
    (0.041-0.056 on seeds 1 and 2 of this stack, 0.06-0.08 on seed 0, where two small
    spheres touching along z are split from the large ball first fitted between them).
    The control fits one shared radius: 0.15-0.16. Slow (two tracks of a 32 x 96 x 96
    stack, about a minute), as is the same mixture on a smaller stack (the next test)."""
    import colloidcg.tracking.refine3d as r3

    frames, truth, dia = _sphere_stack(((4.0, 5.5), 1.2, 3.0, 2.0), 1, (32, 96, 96))
    _assert_found(frames, truth, dia, 0.08, model="ball")
    monkeypatch.setattr(r3, "RADIUS_SWEEPS", 0)
    c = B.score(_track(frames).tracks, truth, frames.shape[1:], dia)
    assert c["rms"].min() > 0.12, c


@pytest.mark.slow
def test_small_spheres_touching_along_z_are_split_from_a_large_ball():
    """The mixture on a small stack (24 x 72 x 72, seed 1): two small spheres touching
    along z were fitted as one large ball between them (0.20 voxel along z); tested as two
    small balls where light shows beyond both ends, they are split: every particle found,
    each axis under 0.08 voxel (0.047 / 0.050 / 0.044). The control (slow, below) never
    tests a split."""
    frames, truth, dia = _sphere_stack(((4.0, 5.5), 1.2, 3.0, 2.0), 1, (24, 72, 72))
    _assert_found(frames, truth, dia, 0.08, model="ball")


@pytest.mark.slow
def test_small_spheres_control_without_splits(monkeypatch):
    """The control of the test above (slow: a second whole track): never testing a
    split leaves the large ball between two small spheres (rms > 0.12 voxel)."""
    import colloidcg.tracking.refine3d as r3

    frames, truth, dia = _sphere_stack(((4.0, 5.5), 1.2, 3.0, 2.0), 1, (24, 72, 72))
    monkeypatch.setattr(r3, "SPLIT_END_LIGHT", math.inf)
    c = B.score(_track(frames).tracks, truth, frames.shape[1:], dia)
    assert c["rms"][0] > 0.12, c


@pytest.mark.slow
def test_resolved_spheres_under_a_long_psf_are_balls():
    """Dyed spheres (radius 5 px) near contact under a PSF 4.5 px long along z: the first
    frame's start list merges neighbours, the fits are rough and balls and Gaussians leave
    residuals within 10 % of each other; the balls' radius (3.5 blur widths) says resolved
    spheres, and balls are chosen: every particle found, each axis under 0.1 voxel (0.073 /
    0.058 / 0.060). The control (slow, below) needs the 10 % gain."""
    frames, truth, dia = _sphere_stack((5.0, 1.5, 4.5, 2.0), 5, (32, 96, 96))
    _assert_found(frames, truth, dia, 0.1, model="ball")


@pytest.mark.slow
def test_resolved_spheres_control_needs_the_gain(monkeypatch):
    """The control of the test above (slow: a second whole track): asked for a 10 %
    lower residual, the fit keeps Gaussians, whose z extent sets a separation that merges
    spheres touching along z (recall 0.88, 0.44 / 0.35 / 0.37)."""
    import colloidcg.tracking.refine3d as r3

    frames, truth, dia = _sphere_stack((5.0, 1.5, 4.5, 2.0), 5, (32, 96, 96))
    monkeypatch.setattr(r3, "BALL_RESOLVED", math.inf)
    c = _track(frames)
    assert c.params.spot_model == "gauss"
    assert B.score(c.tracks, truth, frames.shape[1:], dia)["recall"] < 0.95


@pytest.mark.slow
def test_flat_topped_beads_as_blurred_balls_and_as_gaussians():
    """Flat-topped beads near contact (trackpy.artificial ``hat``): as blurred balls, the
    model chosen, under 0.03 voxel with ep calibrated within 30 % (0.011 / 0.008 / 0.007 in
    the benchmark); as Gaussians (given) 0.02-0.06."""
    frames, truth = B.render("hat", (6.0, 4.0, 4.0), 1.1, seed=1, shape=(32, 80, 80), n_frames=2)
    dia = B.feature_diameter("hat", (6.0, 4.0, 4.0))
    r = _track(frames)
    assert r.params.spot_model == "ball"
    s = B.score(r.tracks, truth, (32, 80, 80), dia)
    assert s["recall"] >= 0.99 and s["precision"] >= 0.99, s
    assert (s["rms"] < 0.03).all(), s
    assert ((s["ep_ratio"] > 0.7) & (s["ep_ratio"] < 1.3)).all(), s
    g = B.score(_track(frames, TrackParams(spot_model="gauss")).tracks, truth, (32, 80, 80), dia)
    assert g["rms"].max() > 1.5 * s["rms"].max(), (g, s)


def test_spot_model_is_checked():
    from colloidcg.errors import ParameterError

    with pytest.raises(ParameterError, match="spot_model must be one of"):
        TrackParams(spot_model="disc").validate(3)
    with pytest.raises(ParameterError, match="for 3D stacks"):
        TrackParams(spot_model="ball").validate(2)


def test_ep_z_travels_with_the_tracks(elongated):
    frames, _ = elongated
    p = TrackParams(diameter=(9, 5, 5), separation=(4.0, 2.0, 2.0))
    t = _track(frames, p).tracks
    assert {"ep", "ep_z"} <= set(t.columns)
    assert (t["ep_z"] > t["ep"]).mean() > 0.9        # the long axis is the less certain one


def test_dim_stacks_keep_noise_out():
    """2:1 spots at a tenth of the light (peak 20 grey levels over noise of 3-4): the
    minmass must stay above what white noise reaches (before: 39 % of the detections were
    noise); every particle found, each axis under 0.2 voxel (0.07-0.14 in the benchmark;
    trackpy's hand-set centroids 0.14-0.20)."""
    frames, truth = B.render("gauss", (4.0, 2.0, 2.0), 1.5, seed=1, shape=SHAPE, n_frames=3, peak=20.0)
    s = B.score(_track(frames).tracks, truth, SHAPE, B.feature_diameter("gauss", (4.0, 2.0, 2.0)))
    assert s["recall"] >= 0.98 and s["precision"] >= 0.98, s
    assert (s["rms"] < 0.2).all(), s


def test_ball_profile_table_matches_the_exact_profile():
    """The ball fits read the profile from a table (cubic Hermite): within 2e-6 of the
    exact profile (unit amplitude) and its r-derivative (times the blur), from sharp to
    wide blurs; d/dR is exact against finite differences of the profile, and the scaling
    identity s d/ds = -(r d/dr + R d/dR) that the fits use for d/ds holds."""
    from colloidcg.tracking.refine3d import _ball, _ball_dR, _ball_table, _hermite

    h = 1e-5
    for R, s in ((5.0, 1.2), (0.1, 0.3), (8.0, 0.3), (3.0, 2.5)):
        tab, inv_h = _ball_table(R, s, 30.0)
        for r in np.linspace(0.0, 29.0, 3001):
            v, dv = _ball(r, R, s)
            hv, hdv = _hermite(tab, 0, inv_h, r)
            assert abs(hv - v) < 2e-6 and abs(hdv - dv) * s < 2e-6, (R, s, r)
        for r in (0.0, 0.4 * R, R, R + s, R + 3 * s):
            fd = (_ball(r, R + h, s)[0] - _ball(r, R - h, s)[0]) / (2 * h)
            assert _ball_dR(r, R, s)[0] == pytest.approx(fd, abs=1e-8)
            fs = (_ball(r, R, s + h)[0] - _ball(r, R, s - h)[0]) / (2 * h)
            assert -(r * _ball(r, R, s)[1] + R * _ball_dR(r, R, s)[0]) / s == pytest.approx(fs, abs=1e-8)
        assert _hermite(tab, 0, inv_h, 1e3) == (tab[-1, 0], 0.0)


def test_ball_fit_is_exact_without_noise():
    """Blurred balls painted with the exact profile (two of them overlapping), fitted as
    balls (the tabulated profile, free shape, then the shared shape) from starts 0.3-0.35
    voxel off: positions to 1e-4 voxel, radius, blur and z scale to 1e-4."""
    from colloidcg.tracking.refine3d import _ball

    shape, (R, s, k) = (24, 56, 56), (4.0, 1.2, 2.0)
    truth = np.array([[10.3, 20.2, 21.7], [12.1, 26.4, 25.9], [13.6, 38.4, 36.2]])
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    img = np.full(shape, 10.0)
    profile = np.vectorize(lambda r: _ball(r, R, s)[0])
    for c in truth:
        img += 1000.0 * profile(np.sqrt((k * (z - c[0])) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2))
    start = truth + np.array([0.3, -0.3, 0.35])
    w = math.sqrt(R * R / 5 + s * s)
    r = fit_spots_3d(img, start[:, 0], start[:, 1], start[:, 2], (w / k, w), model="ball", add_missed=False)
    assert r["model"] == "ball" and r["ok"].all()
    assert np.abs(np.c_[r["z"], r["y"], r["x"]] - truth).max() < 1e-4
    assert np.abs(r["radius"] - R).max() < 1e-4
    assert r["blur"] == pytest.approx(s, abs=1e-4) and r["z_scale"] == pytest.approx(k, abs=1e-4)


def test_spheres_through_a_computed_confocal_psf():
    """Another renderer: dyed spheres (radius 0.75 um, voxels 250 x 150 x 150 nm) near
    contact, imaged through a confocal PSF computed by vector diffraction theory (NA 1.4,
    index-matched, 1 AU pinhole; the ``psf`` package), with photon and read noise: the
    ball model is chosen, every particle found and each axis under 0.1 voxel (0.05-0.08
    on seeds 0-2 of this small stack; trackpy's hand-set centroids 0.1-0.2 in
    ``benchmarks/tracking_3d_confocal.py``)."""
    pytest.importorskip("psf")
    C = load_benchmark("tracking_3d_confocal")
    c = next(c for c in C.CONDITIONS if c.name == "r 0.75 um, NA 1.4, near contact")
    frames, truth = C.render(c, 0, shape=(24, 64, 64), n_frames=2)
    r = _track(frames)
    assert r.params.spot_model == "ball"
    s = B.score(r.tracks, truth, frames.shape[1:], C.feature_diameter(c))
    assert s["recall"] >= 0.99 and s["precision"] >= 0.99, s
    assert (s["rms"] < 0.1).all(), s


def test_a_ball_whose_radius_fit_failed_gets_the_radius_that_explains_its_light():
    """A large ball of a two-radius mixture, next to a small one, whose radius-free fit
    failed: it is fitted with each population's radius and keeps the one that leaves the
    least residual (the large one, its centre to 1e-3 voxel). It used to join the most
    common population, the small one."""
    import colloidcg.tracking.refine3d as r3

    shape, (s, k) = (24, 48, 48), (1.2, 2.0)
    truth = np.array([[11.2, 20.3, 19.6, 5.6], [12.1, 29.8, 28.7, 4.0]])
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    img = np.full(shape, 10.0)
    for c in truth:
        r = np.sqrt((k * (z - c[0])) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
        img += 800.0 * np.vectorize(lambda q, R=c[3]: r3._ball(q, R, s)[0])(r)
    par = np.zeros((2, 8))
    par[:, :3] = truth[:, :3] + np.array([0.2, -0.2, 0.25])
    par[:, 3], par[:, 4], par[:, 5], par[:, 6], par[:, 7] = 800.0, 10.0, 4.0, s, k
    start = par[:, :3].copy()
    canvas = np.zeros(shape)
    r3._paint_all(canvas, par, True)
    ep, ok = np.full((2, 3), np.nan), np.array([False, True])
    r3._choose_radius(img, canvas, par, start, ep, ok, 0, np.array([4.0, 5.6]))
    assert par[0, 5] == 5.6 and ok[0]
    assert np.abs(par[0, :3] - truth[0, :3]).max() < 1e-3
