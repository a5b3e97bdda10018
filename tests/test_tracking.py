"""Tracking accuracy against known truth, automatic parameters, real files, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import trackpy as tp

from colloidcg.errors import ParameterError, TrackingError
from colloidcg.synthetic import SynthConfig, make_video
from colloidcg.tracking import TrackParams, refine_jointly, track
from colloidcg.tracking.accuracy import score_tracks
from colloidcg.tracking.link import add_velocities
from colloidcg.tracking.params import suggest_minmass, suggest_search_range

tp.quiet()


@pytest.fixture(scope="module")
def dense():
    """Area fraction 0.8, bidisperse (13.3/18.7 px), fluorescence noise, 16-bit."""
    return make_video(SynthConfig.preset("accuracy", n_frames=8, seed=3))


@pytest.fixture(scope="module")
def dense_result(dense):
    frames, truth, meta = dense
    return track(frames, progress=False, processes=1)


def test_dense_accuracy_with_automatic_parameters(dense, dense_result):
    frames, truth, _ = dense
    s = score_tracks(dense_result.tracks, truth, frames.shape[1:], margin=16, match_radius=4)
    assert set(dense_result.params.sources.values()) == {"estimated"}
    assert s.recall >= 0.99 and s.precision >= 0.99
    assert s.link_accuracy >= 0.99
    assert s.rms_error <= 0.15


def test_dense_detection_and_linking(dense, dense_result):
    frames, truth, _ = dense
    s = score_tracks(dense_result.tracks, truth, frames.shape[1:], margin=16, match_radius=4)
    assert s.recall >= 0.99 and s.precision >= 0.99 and s.link_accuracy >= 0.99
    assert s.rms_error <= 0.2


def test_joint_refinement_beats_centroids(dense, dense_result):
    frames, truth, _ = dense
    p = dense_result.params
    plain = track(frames, progress=False, processes=1, diameter=p.diameter, minmass=p.minmass,
                  separation=p.separation, search_range=p.search_range, refine=False)
    s_plain = score_tracks(plain.tracks, truth, frames.shape[1:], margin=16, match_radius=4)
    s_joint = score_tracks(dense_result.tracks, truth, frames.shape[1:], margin=16, match_radius=4)
    assert s_joint.rms_error < 0.9 * s_plain.rms_error


def test_dark_particles_detected_and_tracked(dense):
    frames, truth, _ = dense
    inverted = np.iinfo(frames.dtype).max - frames[:4]
    r = track(inverted, progress=False, processes=1)
    assert r.params.invert is True
    s = score_tracks(r.tracks, truth[truth.frame < 4], frames.shape[1:], margin=16, match_radius=4)
    assert s.recall >= 0.99 and s.precision >= 0.99 and s.rms_error <= 0.2


def _spots(points, amp, sigma, shape, bg=10.0):
    from scipy.special import erf

    img = np.full(shape, bg)
    u = np.arange(shape[1])
    v = np.arange(shape[0])
    k = np.sqrt(2) * sigma
    for (x, y), a in zip(points, amp):
        gx = 0.5 * (erf((u + 0.5 - x) / k) - erf((u - 0.5 - x) / k))
        gy = 0.5 * (erf((v + 0.5 - y) / k) - erf((v - 0.5 - y) / k))
        img += a * np.outer(gy, gx)
    return img


def test_refinement_exact_on_noise_free_overlapping_spots():
    # A triangular cluster of strongly overlapping spots (4.2 sigma apart), all in view.
    rng = np.random.default_rng(2)
    pts = np.array([[30.3, 30.1], [45.9, 30.7], [38.2, 43.6], [53.4, 43.9], [22.6, 43.2]])
    pts += rng.normal(0, 0.3, pts.shape)
    img = _spots(pts, [3000, 3300, 2800, 3100, 2900], 3.7, (80, 80))
    start = pts + rng.normal(0, 0.4, pts.shape)
    r = refine_jointly(img, start[:, 0], start[:, 1], 3.5, add_missed=False)
    err = np.hypot(r["x"] - pts[:, 0], r["y"] - pts[:, 1])
    assert err.max() < 0.005
    np.testing.assert_allclose(r["sigma"], 3.7, atol=0.01)


def test_minmass_threshold_separates_noise_from_particles():
    rng = np.random.default_rng(0)
    noise = rng.lognormal(np.log(50), 0.3, 300)
    parts = rng.lognormal(np.log(2000), 0.15, 500)
    t = suggest_minmass(np.r_[noise, parts])
    assert (noise > t).mean() < 0.01 and t < parts.min()
    # Unimodal: keep everything particle-like.
    assert suggest_minmass(parts) < parts.min()


def test_search_range_follows_displacements():
    rng = np.random.default_rng(0)
    p0 = np.stack(np.meshgrid(np.arange(0, 300, 15.0), np.arange(0, 300, 15.0)), -1).reshape(-1, 2)
    small = suggest_search_range(p0, p0 + rng.normal(0, 0.3, p0.shape), 15)
    large = suggest_search_range(p0, p0 + rng.normal(0, 1.5, p0.shape), 15)
    assert small >= 1 and small < large and large <= 0.5 * 15   # half the particle distance


def test_velocities_by_finite_differences():
    t = pd.DataFrame({"frame": np.r_[0:5, 0:2], "particle": [0] * 5 + [1] * 2,
                      "x": np.r_[np.arange(5) * 2.0, [1.0, 4.0]], "y": np.r_[np.arange(5) ** 2.0, [0, 0]]})
    v = add_velocities(t)
    p0 = v[v.particle == 0].sort_values("frame")
    np.testing.assert_allclose(p0.vx, 2.0)
    np.testing.assert_allclose(p0.vy, [1, 2, 4, 6, 7])   # central inside, one-sided at ends
    np.testing.assert_allclose(v[v.particle == 1].vx, 3.0)


def test_drift_subtraction_recovers_stage_drift():
    frames, truth, _ = make_video(SynthConfig.preset("accuracy", n_frames=12, seed=5, drift=(0.4, -0.25),
                                                     bit_depth=8, photons=300))
    r = track(frames, progress=False, processes=1, subtract_drift=True)
    slope = np.polyfit(r.drift.index.to_numpy(), r.drift[["x", "y"]].to_numpy(), 1)[0]
    np.testing.assert_allclose(slope, [0.4, -0.25], atol=0.03)
    assert {"x_image", "y_image"} <= set(r.tracks.columns)


def test_frame_range_and_roi(dense):
    frames, truth, _ = dense
    r = track(frames, progress=False, processes=1, frames=(2, 5), roi=(40, 30, 200, 220))
    t = r.tracks
    assert sorted(t.frame.unique()) == [2, 3, 4]
    assert t.x.min() >= 39.5 and t.x.max() < 199.5 and t.y.min() >= 29.5 and t.y.max() < 219.5


# ---------------------------------------------------------------- real data
def test_stuck_particles_noise_floor(shared_data):
    r = track(shared_data / "stuck.tif", progress=False, processes=1)
    t = r.tracks
    full = t.groupby("particle").filter(lambda g: len(g) == 5)
    assert full.particle.nunique() >= 35          # ~44 particles, all immobile
    # Apparent motion of particles that do not move = localisation noise floor.
    floor = np.sqrt(full.groupby("particle")[["x", "y"]].var(ddof=1).mean().mean())
    print(f"stuck.tif noise floor: {floor:.4f} px per axis over {full.particle.nunique()} particles")
    assert floor < 0.1


def test_brightfield_automatic_parameters(shared_data):
    r = track(shared_data / "brightfield", progress=False, processes=1)
    assert (r.tracks.groupby("particle").size() == 50).sum() == 5


def test_brightfield_rings_tracked(shared_data):
    # Rings (dark edge, bright centre): located as inverted blobs the size of the ring,
    # without the Gaussian-spot refinement (see README, "Bright-field rings").
    r = track(shared_data / "brightfield", progress=False, processes=1, invert=True,
              diameter=21, refine=False)
    t = r.tracks
    long = t.groupby("particle").size()
    assert (long == 50).sum() == 5       # the five colloids, each followed through all 50 frames
    # Found positions sit on particles (strong ring contrast within 9 px), not on the
    # background, whose contrast is that of random places in the frame.
    from colloidcg.io import open_video

    img = open_video(shared_data / "brightfield")[0].astype(float)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]

    def contrast(x, y):
        return img[np.hypot(xx - x, yy - y) < 9].std()

    rng = np.random.default_rng(0)
    typical = np.median([contrast(*rng.uniform(20, 480, 2)) for _ in range(40)])
    for x, y in t[t.frame == 0][["x", "y"]].to_numpy():
        assert contrast(x, y) > 4 * typical


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("d", [8, -3, 0, 2.5])
def test_bad_diameter(dense, d):
    with pytest.raises(ParameterError, match="diameter must be a positive odd integer"):
        track(dense[0], progress=False, diameter=d)


def test_frame_range_outside(dense):
    with pytest.raises(ParameterError, match=r"frames: range 5..50 is outside"):
        track(dense[0], progress=False, frames=(5, 50))


def test_no_particles():
    rng = np.random.default_rng(0)
    flat = rng.normal(100, 0.5, (3, 64, 64)).astype(np.uint16)
    with pytest.raises(TrackingError, match="no particles found"):
        track(flat, progress=False, diameter=9, minmass=1e6)


def test_unknown_parameter():
    with pytest.raises(ParameterError, match="unknown tracking parameter"):
        TrackParams.from_dict({"diamter": 9})


def test_track_iter_steps_match_track_and_stop_early(dense, dense_result):
    import multiprocessing

    from colloidcg.tracking import track_iter

    frames, truth, meta = dense
    steps = track_iter(frames, processes=1, meta={"fps": 50.0})
    seen = []
    while True:
        try:
            seen.append(next(steps))
        except StopIteration as done:
            result = done.value
            break
    assert seen == list(range(1, len(frames) + 1))
    pd.testing.assert_frame_equal(result.tracks, dense_result.tracks)
    assert result.meta["fps"] == 50.0 and result.meta["n_frames"] == len(frames)
    # stopping after four frames (the three probed ones, located first in this process,
    # and one from the workers) shuts the worker processes down (children left by
    # earlier tests in this process, still exiting, are not this generator's)
    before = set(multiprocessing.active_children())
    steps = track_iter(np.concatenate([frames] * 4), processes=2)
    assert [next(steps) for _ in range(4)] == [1, 2, 3, 4]
    assert len(set(multiprocessing.active_children()) - before) == 2
    steps.close()
    assert set(multiprocessing.active_children()) - before == set()


def test_probed_frames_in_parallel_give_what_probing_first_gives(dense, dense_result):
    """With two workers the probed frames are located in parallel and a worker left idle
    locates another frame with the guessed decision meanwhile: kept when the probes agree,
    located again when they do not. Either way every frame is located exactly as by
    probing first in one process, and the decision sees the probes' merged findings."""
    from colloidcg.tracking.locate import iter_locate_probed

    frames = dense[0][:6]
    p = dense_result.params
    kw = dict(diameter=p.diameter, separation=p.separation, minmass=p.minmass,
              invert=p.invert, spot_profile=True, gap_check=True)
    probed, rest = [0, 3, 5], [1, 2, 4]
    # a decision that visibly changes the rest: no particle passes minmass
    strict = dict(spot_profile=False, gap_check=False, minmass=1e12)
    seen = []

    def decide(found):
        seen.append(found)
        return strict

    def run(guess, processes):
        out = list(iter_locate_probed(frames, probed, rest, decide, guess,
                                      processes=processes, progress=False, **kw))
        return {int(f["frame"].iloc[0]) if len(f) else None: f for f in out}, len(out)

    serial, n = run({}, 1)
    assert n == 6 and sorted(k for k in serial if k is not None) == probed
    for guess in (strict, dict(spot_profile=False, gap_check=False)):   # right, wrong
        par, n = run(guess, 2)
        assert n == 6 and par.keys() == serial.keys()
        for k in probed:
            pd.testing.assert_frame_equal(par[k], serial[k])
    assert len(seen) == 3 and all(s == seen[0] for s in seen)
    assert set(seen[0]) == {"profile_gain", "rings"}
    assert dense_result.params.sources["spot_profile"] == "estimated"


def test_bad_frames_and_absurd_diameter_are_named(tmp_path):
    """A NaN pixel, a blank video and a diameter larger than the frame: one-line errors
    that name the file, the frame and the cause (not "no particles found")."""
    import tifffile

    from colloidcg.errors import ParameterError, TrackingError
    from colloidcg.synthetic import SynthConfig, make_video

    frames, _, _ = make_video(SynthConfig.preset("dilute", seed=1, n_frames=6, width=128, height=128))
    nan = frames.astype(np.float32)
    nan[3, 40, 50] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, nan)
    with pytest.raises(TrackingError, match=r"nan\.tif: frame 3 has 1 non-finite"):
        track(path, progress=False)
    black = tmp_path / "black.tif"
    tifffile.imwrite(black, np.zeros((4, 64, 64), np.uint8), photometric="minisblack")
    with pytest.raises(TrackingError, match=r"black\.tif: frame 0 is blank"):
        track(black, progress=False)
    with pytest.raises(ParameterError, match="diameter: 999 px is more than half of the 128 px"):
        track(frames, progress=False, diameter=999)


def test_interstices_of_a_packing_are_dropped_and_small_particles_kept():
    """The lit gaps at the centroids of a triangular packing go; a small particle caged by
    three large ones in contact (size ratio 1.4: it sits at 0.86 of their spacing) stays,
    and so does a particle that is merely fainter than its lattice neighbours."""
    from colloidcg.tracking.locate import interstices

    d = 12.0
    i, j = np.meshgrid(np.arange(12), np.arange(12))
    lattice = np.c_[(i + 0.5 * (j % 2)).ravel() * d, j.ravel() * d * np.sqrt(3) / 2]
    up = lattice + [0.5 * d, d / (2 * np.sqrt(3))]            # centroids of the up triangles
    inner = (up[:, 0] < 10 * d) & (up[:, 1] < 9 * d)
    pts = np.r_[lattice, up[inner]]
    mass = np.r_[np.full(len(lattice), 600.0), np.full(inner.sum(), 300.0)]
    mass[40] = 460.0                                          # a fainter real particle
    drop = interstices(pts[:, 0], pts[:, 1], mass)
    assert drop[len(lattice):].all()
    assert not drop[:len(lattice)].any()
    # a small particle (d_s = d / 1.4) in a vacancy of the large ones' lattice, pushed
    # into contact with two of them (10.3 px, 0.86 of their spacing): kept
    small = lattice[40] + [-0.5 * (d - 0.5 * (d + d / 1.4)) * 2, 0.0]
    pts = np.r_[np.delete(lattice, 40, axis=0), [small]]
    mass = np.r_[np.full(len(lattice) - 1, 600.0), 300.0]
    assert not interstices(pts[:, 0], pts[:, 1], mass).any()


def test_locating_holds_blas_to_one_thread_and_restores_it(monkeypatch):
    """A frame's small matrix products run on one BLAS thread (frames are located in
    parallel already); the caller's BLAS setting is back afterwards."""
    import importlib

    importlib.import_module("cv2")   # OpenCV brings its own OpenBLAS: loaded before the check
    from threadpoolctl import threadpool_info, threadpool_limits

    import colloidcg.tracking.psf as psf
    from colloidcg.synthetic import scenes
    from colloidcg.tracking.locate import locate_frame

    def blas_threads():
        return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("numpy is linked to no BLAS that threadpoolctl can control")
    seen = []
    real = psf.radial_profile

    def spy(*args, **kwargs):
        seen.append(blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(psf, "radial_profile", spy)    # (locate imports it per call)
    frames, _ = scenes.frames((96, 96), 1, 0.6, (8.0,), rng=0, photons=2000, background=5)
    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        for _ in range(2):   # the second call reuses the first's controller
            f = locate_frame(frames[0], 0, diameter=9, separation=6.0, minmass=50.0,
                             invert=False)
        after = blas_threads()
    assert len(f) > 10 and seen, (len(f), seen)
    assert all(t == [1] * len(t) for t in seen), seen
    assert after == before


def test_probes_are_decided_on_the_first_frame_and_change_nothing_they_skip(dense, dense_result):
    """Gaussian spots: on the first, middle and last frames the radial profile explains
    nothing and the gap test's gates rule rings out, so neither runs on the other frames, and the tracks are exactly
    those with both forced on. Ring-shaped bright-field spots with lit gaps: both stay on."""
    from colloidcg.synthetic import scenes

    p = dense_result.params
    assert p.spot_profile is False and p.gap_check is False
    assert p.sources["spot_profile"] == p.sources["gap_check"] == "estimated"
    assert dense_result.quality.metrics["probed_profile_gain"] < 0.025
    frames = dense[0][:3]
    fixed = dict(diameter=p.diameter, separation=p.separation, minmass=p.minmass,
                 search_range=p.search_range, invert=p.invert, progress=False, processes=1)
    off = track(frames, **fixed).tracks
    on = track(frames, spot_profile=True, gap_check=True, **fixed)
    assert on.params.sources["spot_profile"] == "given"
    pd.testing.assert_frame_equal(off, on.tracks)
    sc = scenes.scene_dense_brightfield(n_frames=3, seed=5)
    ring = track(sc.frames, progress=False, processes=1).params
    assert ring.spot_profile is True and ring.gap_check is True
    with pytest.raises(ParameterError, match="spot_profile"):
        track(frames, spot_profile="yes", progress=False)


def test_model_update_ignores_unfilled_profile_entries_when_their_weight_is_zero():
    """The model image's update with b = 0 never reads the second profile: entries of it
    beyond the window it was filled for may hold anything (here NaN and inf)."""
    from colloidcg.tracking.refine import _add_outer

    canvas = np.zeros((20, 20))
    g = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    junk = np.full(9, np.nan)
    junk[::2] = np.inf
    _add_outer(canvas, 10, 10, 4, 2.0, g, g, 0.0, junk, junk)
    assert np.isfinite(canvas).all()
    np.testing.assert_allclose(canvas[6:15, 6:15], 2.0 * np.outer(g, g), rtol=0, atol=0)


def test_locating_is_repeatable():
    """The same frame gives the same particles whatever was located before it (scratch
    memory left by earlier frames once put NaN into the model image now and then)."""
    from colloidcg.scaling.video_chain import quench_video
    from colloidcg.tracking.locate import locate_frame

    v = quench_video(n_fov=36, frames=16, seed=2, area_fraction=0.85, diameter=16.0,
                     diffusion=0.25, kT=0.002, substeps=3)
    kw = dict(diameter=15, separation=10.0, minmass=307.79, invert=False)
    runs = [[locate_frame(f, i, **kw) for i, f in enumerate(v.frames)] for _ in range(2)]
    for a, b in zip(*runs):
        pd.testing.assert_frame_equal(a, b)
        assert np.isfinite(a[["x", "y", "ep"]].to_numpy()).all()


def test_close_pairs_are_counted_within_frames_only():
    """The close-pair share counts detections whose nearest neighbour in the same frame is
    nearer than half a diameter; a detection alone in its frame, at the place of one in
    the next frame, is not close."""
    from colloidcg.tracking.quality import assess

    tracks = pd.DataFrame({"frame": [0, 0, 0, 1, 2, 2],
                           "particle": [0, 1, 2, 0, 0, 1],
                           "x": [10.0, 13.0, 40.0, 10.0, 10.0, 30.0],
                           "y": [10.0, 10.0, 40.0, 10.0, 10.0, 30.0]})
    q = assess(tracks, diameter=10.0, search_range=3.0, n_frames=3, noise=1.0)
    assert q.metrics["close_pairs"] == round(2 / 6, 5)      # metrics are rounded
