"""Tracking on microscopy this project's own renderer did not make.

Each failure class of automatic tracking has a synthetic analogue from the independent
scene renderer (:mod:`colloidcg.synthetic.scenes`, written apart from
``colloidcg.synthetic.render``), scored against its truth; real files from
``../shared/data`` are used where they exist. The quality verdict is checked to say
"ok" on good data and never on meaningless data.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from colloidcg.errors import TrackingError
from colloidcg.synthetic import scenes
from colloidcg.tracking import track
from colloidcg.tracking.accuracy import score_tracks
from colloidcg.tracking.params import suggest_search_range
from colloidcg.tracking.quality import assess, calibrate_ep


def _track(frames, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return track(frames, progress=False, processes=1, **kw)


def _score(result, scene, diameter):
    t = result.tracks
    return score_tracks(t, scene.truth, scene.frames.shape[1:], margin=diameter,
                        match_radius=0.5 * diameter)


def test_mixed_contrast_analogue_tracks_both_populations():
    sc = scenes.scene_mixed_contrast(n_frames=10, seed=1)
    r = _track(sc.frames)
    assert r.params.contrast == "both" and r.params.sources["contrast"] == "estimated"
    s = _score(r, sc, sc.info["diameter"])
    assert s.recall >= 0.99 and s.precision >= 0.99, s
    assert s.rms_error <= 0.25, s
    # both populations, with the right sign
    truth0 = sc.truth[sc.truth.frame == 0]
    f0 = r.tracks[r.tracks.frame == 0]
    d, j = cKDTree(f0[["x", "y"]].to_numpy()).query(truth0[["x", "y"]].to_numpy())
    hit = d < 2
    assert np.all(f0["contrast"].to_numpy()[j[hit]] == np.sign(truth0["contrast"].to_numpy()[hit]))
    assert set(f0["contrast"]) == {-1, 1}
    # tracks span the video for particles that stay in view
    lengths = r.tracks.groupby("particle").size()
    assert (lengths == 10).sum() >= 0.8 * r.tracks.groupby("frame").size().median()
    assert r.quality.status == "ok", r.quality.reasons


def test_mixed_contrast_real_video(shared_data):
    """../shared/data/mixed_contrast: both contrasts, and the tracks of the particles that
    stay in view run the whole 51 frames (the source's hand-set trackpy settings give 45
    detections a frame and 33 full-length tracks)."""
    r = _track(shared_data / "mixed_contrast" / "colloids.mp4")
    t = r.tracks
    assert r.params.contrast == "both"
    counts = t.groupby("contrast").size()
    assert counts.get(1, 0) > 500 and counts.get(-1, 0) > 500
    per_frame = t.groupby("frame").size()
    assert 38 <= per_frame.median() <= 60, per_frame.median()
    lengths = t.groupby("particle").size()
    assert (lengths == 51).sum() >= 25, lengths.sort_values().tail(30).tolist()
    assert r.params.search_range >= 4.5      # the steps reach 4-5 px
    assert r.quality.status == "ok", r.quality.reasons


def test_fluorescence_on_black_mjpeg_background():
    """Near-black clipped background with JPEG block artefacts: the noise floor comes from
    the background's own peaks, so block artefacts are not particles."""
    sc = scenes.scene_fluorescence_mjpeg(n_frames=8, seed=2)
    r = _track(sc.frames)
    assert r.params.diameter in (7, 9)
    s = _score(r, sc, sc.info["diameter"])
    assert s.recall >= 0.99 and s.precision >= 0.99, s
    # 0.153 px measured; the bound without the JPEG loss is 0.119 px
    assert s.rms_error <= 0.17, s


def _errors_and_ep(result, scene, radius=4.0):
    errs, eps = [], []
    for k, g in result.tracks.groupby("frame"):
        tt = scene.truth[scene.truth.frame == k]
        d, j = cKDTree(tt[["x", "y"]].to_numpy()).query(g[["x", "y"]].to_numpy())
        ok = d < radius
        errs.append(g[["x", "y"]].to_numpy()[ok] - tt[["x", "y"]].to_numpy()[j[ok]])
        eps.append(g["ep"].to_numpy()[ok])
    return np.vstack(errs), np.concatenate(eps)


def test_dense_bidisperse_meets_the_target_with_calibrated_ep():
    """Issue 15's dense bidisperse 8-bit case (Gaussians sampled at pixel centres, sigma
    0.28 d, soft particles overlapping down to 0.8 x contact, drift): its target, recall
    and precision >= 0.99 and RMS <= 0.15 px (the bound with the neighbours fitted is
    0.12 px; 0.36 px when the issue was filed, 0.17-0.24 px with a free width per spot,
    0.142-0.144 px over seeds 3-5 since each population's width is shared), and the
    reported ep (the fit's standard error) within 30 % of the real error."""
    sc = scenes.scene_dense_bidisperse(n_frames=8, seed=3)
    r = _track(sc.frames)
    s = _score(r, sc, 12.0)
    assert s.recall >= 0.99 and s.precision >= 0.99 and s.rms_error <= 0.15, s
    e, ep = _errors_and_ep(r, sc)
    # ep is a per-axis standard deviation: for Gaussian errors the median distance
    # from the truth is 1.177 ep
    assert abs(1.177 * np.median(ep) / np.median(np.hypot(*e.T)) - 1) < 0.3


def test_width_populations_finds_the_sizes():
    """Fitted widths of one, two or three sizes with 3 % scatter: the populations, their
    widths and every spot's membership are recovered; one broad size is one population."""
    from colloidcg.tracking.refine import width_populations

    rng = np.random.default_rng(0)
    for true in ([2.5], [2.0, 3.0], [2.0, 3.0, 4.5]):
        lab = rng.integers(0, len(true), 300)
        s = np.asarray(true)[lab] * (1 + 0.03 * rng.standard_normal(300))
        widths, labels = width_populations(s)
        assert len(widths) == len(true)
        assert np.allclose(widths, true, rtol=0.02), widths
        assert np.mean(labels == lab) > 0.99
    # a unimodal spread (12 %) is one population, however wide
    widths, labels = width_populations(3.0 * np.exp(0.12 * rng.standard_normal(400)))
    assert len(widths) == 1 and np.all(labels == 0)


def test_shared_widths_fit_overlapping_spots_of_two_sizes():
    """Overlapping pairs of a narrow (2.0 px) and a wide (2.9 px) spot, 2.6 mean widths
    apart, rendered with the fit's own model on a flat background with weak noise: from
    starts 0.4 px off, the fit with shared widths gives every spot its own population's
    width (2 %) and every position to 0.04 px, better than free widths per spot."""
    from colloidcg.tracking.refine import refine_jointly, render_spots

    rng = np.random.default_rng(1)
    gx, gy = np.meshgrid(np.arange(6), np.arange(6))
    c = np.c_[gx.ravel(), gy.ravel()] * 20.0 + 14
    ang = rng.uniform(0, np.pi, len(c))
    u = np.c_[np.cos(ang), np.sin(ang)] * 3.2
    pos = np.r_[c - u, c + u]
    sig = np.r_[np.full(len(c), 2.0), np.full(len(c), 2.9)]
    amp = 100 * 2 * np.pi * sig ** 2
    img = 10 + render_spots((128, 128), np.c_[pos, amp, sig]) + rng.normal(0, 0.5, (128, 128))
    start = pos + rng.uniform(-0.4, 0.4, pos.shape)
    err = {}
    for shared in (False, True):
        r = refine_jointly(img, start[:, 0], start[:, 1], 2.4, n_sweeps=4, stage1_sweeps=4,
                           tol=1e-4, background_passes=2, add_missed=False,
                           shared_widths=shared)
        err[shared] = np.hypot(r["x"] - pos[:, 0], r["y"] - pos[:, 1])
    assert len(np.unique(r["sigma"])) == 2
    assert np.allclose(r["sigma"], sig, rtol=0.02)
    assert err[True].max() < 0.04, err[True].max()
    assert np.median(err[True]) < np.median(err[False])


@pytest.mark.parametrize("seed", [0, pytest.param(4, marks=pytest.mark.slow)])
def test_black_borders_and_container_wall(seed):
    """Dense dark spheres whose bright gaps are blobs too, black letterbox bands and a
    dish wall: the particles are found as dark, and nothing where the frame shows no
    sample."""
    sc = scenes.scene_dark_dish(n_frames=4, seed=seed)
    r = _track(sc.frames)
    assert r.params.contrast == "dark"
    assert r.quality.metrics["no_sample_fraction"] > 0.1
    s = _score(r, sc, sc.info["diameter"])
    assert s.recall >= 0.97 and s.precision >= 0.97, s
    mask = sc.info["sample_mask"]
    h, w = mask.shape
    t = r.tracks
    xi = np.clip(np.rint(t["x"]).astype(int), 0, w - 1)
    yi = np.clip(np.rint(t["y"]).astype(int), 0, h - 1)
    assert np.mean(~mask[yi, xi]) < 0.04      # before the mask: 10 % of detections


def test_contrast_estimate_on_real_and_synthetic_cases(shared_data):
    """The contrast estimate on the real files and both renderers' bright-field rings."""
    from colloidcg.io import open_video
    from colloidcg.synthetic import SynthConfig, make_video
    from colloidcg.tracking import suggest_parameters

    expect = {"mixed_contrast/colloids.mp4": "both", "stuck.tif": "bright", "brightfield": "bright"}
    for name, contrast in expect.items():
        assert suggest_parameters(np.asarray(open_video(shared_data / name)[0])).contrast == contrast, name
    for preset in ("dense", "dilute"):
        frames, _, _ = make_video(SynthConfig.preset(preset, seed=1, n_frames=2, mode="brightfield"))
        assert suggest_parameters(frames[0]).contrast == "bright", preset


def test_dense_brightfield_gaps_are_not_particles():
    """Dense bright-field packing whose lit gaps are as bright and compact as the particle
    centres (precision 0.61 when they were taken for particles): the gaps are told apart
    by the radial symmetry of each candidate's light inside the particles' dark ring
    (colloidcg.tracking.gaps), and every particle is kept."""
    sc = scenes.scene_dense_brightfield(n_frames=3, seed=5)
    r = _track(sc.frames)
    s = _score(r, sc, sc.info["diameter"])
    assert s.recall >= 0.99 and s.precision >= 0.99 and s.rms_error <= 0.15, s


def test_brightfield_gaps_of_a_mixture():
    """The same with two particle sizes (10 and 14 px) and a second seed: each particle's
    reach is its own ring radius, so the larger particles' wider gaps go too."""
    sc = scenes.scene_dense_brightfield(n_frames=3, seed=3, diameter=(10.0, 14.0),
                                        area_fraction=0.76)
    r = _track(sc.frames)
    s = _score(r, sc, sc.info["diameter"])
    assert s.recall >= 0.99 and s.precision >= 0.97, s


def test_gap_rule_keeps_every_particle_of_gaussian_packings():
    """Packings of Gaussian spots have no lit gaps: with the true positions as candidates
    the gap rule drops none (their darkest radius is the hole between neighbours, beyond
    half the neighbour distance; in the overlapping bidisperse case the spots are far
    from radially symmetric). The dark spheres of the dish analogue are checked through
    the whole tracker in test_black_borders_and_container_wall."""
    from colloidcg.synthetic import SynthConfig, make_video
    from colloidcg.tracking.gaps import bright_gaps

    f, tr = scenes.frames((160, 160), 1, 0.7, (10.0,), rng=0, psf="gauss_pixel", photons=5000,
                          background=10, read_noise=2, bit_depth=None)
    cases = [(f[0].astype(float), tr)]
    sc = scenes.scene_dense_bidisperse(n_frames=1, seed=3)
    cases.append((sc.frames[0].astype(float), sc.truth))
    frames, truth, _ = make_video(SynthConfig.preset("accuracy", n_frames=1, width=160,
                                                     height=160, seed=2))
    cases.append((frames[0].astype(float), truth))
    for img, t0 in cases:
        t0 = t0[t0.frame == 0]
        assert not bright_gaps(img, t0["x"].to_numpy(), t0["y"].to_numpy(), 11).any()


def test_low_photon_minmass_keeps_dim_particles():
    """200 photons a particle (peak 5 e on 1 e of background, 2 e read noise; area
    fraction 0.7): the white-noise floor (the largest mass white noise reaches on an empty
    frame) lay above a quarter of the particles (recall 0.72 in the conditions table).
    Noise between particles loses most of its mass to the band-pass; the floor drawn on
    the frame's own fitted model (params.context_mass_floor) is lower and keeps
    precision >= 0.99. At this signal the particles' and the noise's masses overlap:
    recall 0.96-1.00 over four realisations (0.99-1.00 with a threshold 25 % lower,
    where precision stays >= 0.99 on three of them)."""
    from colloidcg.tracking import suggest_parameters
    from colloidcg.tracking.accuracy import score_localisation
    from colloidcg.tracking.locate import locate_frame
    from colloidcg.tracking.params import noise_level, noise_mass_floor

    rng = np.random.default_rng(13)
    frames, truth = scenes.frames((192, 192), 1, 0.7, (10.0,), rng=rng, psf="gauss_pixel",
                                  photons=200.0, background=1.0, read_noise=2.0, bit_depth=16)
    p = suggest_parameters(frames[0])
    white = noise_mass_floor(frames[0].shape, noise_level(frames[0].astype(float)),
                             p.diameter, p.separation)
    assert p.minmass < white
    found = locate_frame(frames[0], 0, p.diameter, p.separation, p.minmass, p.invert)
    s = score_localisation(found, truth, frames.shape[1:], margin=10, match_radius=5)
    assert s.recall >= 0.95 and s.precision >= 0.99, s


def test_unrelated_frames_are_never_ok():
    """Blobs re-drawn at random every frame at low signal: the frames cannot be linked.
    Either tracking refuses (no particles, or frames named as unrelated), or the verdict
    says unreliable; never "ok"."""
    # 4 frames: the verdict and its reasons (frame correlation 0.00, a fifth of the steps
    # near the search range) are those of 8 frames, at 40 % of the time
    for snr, seed in ((1.5, 0), (4.0, 1)):
        sc = scenes.scene_uncorrelated(n_frames=4, seed=seed, snr=snr)
        try:
            r = _track(sc.frames, min_length=2)
        except TrackingError as e:       # no particles, or none that can be linked
            assert "no particles" in str(e) or "unrelated" in str(e), e
            continue
        assert r.quality.status == "unreliable", r.quality.as_dict()


def test_quality_ok_on_the_project_video_and_bad_on_a_too_small_diameter():
    from colloidcg.synthetic import SynthConfig, make_video

    frames, truth, _ = make_video(SynthConfig.preset("dense", seed=8, n_frames=12, width=192,
                                                     height=192))
    good = _track(frames)
    assert good.quality.status == "ok", good.quality.reasons
    assert good.quality.metrics["frame_correlation"] > 0.5
    # half the frames for the bad settings (their thousands of spurious spots cost 10x
    # the good run): the verdict and its reason are the same (snr 1.7 on 6 frames, 1.9 on 12)
    bad = _track(frames[:6], diameter=3, separation=1.5, minmass=1.0)
    assert bad.quality.status != "ok"
    assert bad.quality.metrics["close_pairs"] > 0.05 or bad.quality.metrics["snr"] < 3


def test_pure_noise_is_unreliable():
    rng = np.random.default_rng(0)
    noise = rng.normal(100, 10, (12, 128, 128)).clip(0, 255).astype(np.uint8)
    try:
        r = _track(noise, diameter=7, min_length=2)
    except TrackingError:
        return
    assert r.quality.status == "unreliable", r.quality.as_dict()


def test_search_range_from_displacements_ignores_unrelated_detections():
    """Dilute particles stepping ~4 px, with as many noise detections re-drawn every
    frame: the self part of the van Hove function still gives a range that covers the
    steps (nearest-neighbour distances alone would be swamped by the noise)."""
    rng = np.random.default_rng(1)
    p0 = rng.uniform(0, 400, (60, 2))
    p0s, p1s = [], []
    for _ in range(10):
        p1 = p0 + rng.normal(0, 1.5, p0.shape)
        p0s.append(np.vstack([p0, rng.uniform(0, 400, (60, 2))]))
        p1s.append(np.vstack([p1, rng.uniform(0, 400, (60, 2))]))
        p0 = p1
    sr = suggest_search_range(p0s, p1s, spacing=10.0)
    steps = np.hypot(*rng.normal(0, 1.5, (2, 100000)))
    assert np.percentile(steps, 99) <= sr <= 3 * np.percentile(steps, 99.9), sr


def test_calibrate_ep_needs_resolved_noise():
    rng = np.random.default_rng(2)
    n, T, sigma = 300, 20, 0.1
    walk = rng.uniform(0, 1000, (1, n, 2)) + np.cumsum(rng.normal(0, 0.2, (T, n, 2)), axis=0)
    obs = walk + rng.normal(0, sigma, walk.shape)
    t = pd.DataFrame({"frame": np.repeat(np.arange(T), n), "particle": np.tile(np.arange(n), T),
                      "x": obs[..., 0].ravel(), "y": obs[..., 1].ravel(),
                      "ep": np.full(T * n, 0.03)})
    scale, how = calibrate_ep(t)
    assert how == "tracks" and abs(0.03 * scale / sigma - 1) < 0.15
    few = t[t.particle < 3]
    assert calibrate_ep(few) == (1.0, "too few steps")
    # the reported ep (0.03) is a third of the real noise (0.1): the verdict says so
    q = assess(t, diameter=7, search_range=2.0, n_frames=T, noise=1.0)
    assert abs(q.metrics["localisation_noise_px"] / sigma - 1) < 0.15
    assert q.status == "warning" and q.metrics["ep_tracks_ratio"] > 2.5
    assert any("ep underestimates" in r for r in q.reasons), q.reasons
    # ... and with an ep that matches the noise it does not
    q = assess(t.assign(ep=sigma), diameter=7, search_range=2.0, n_frames=T, noise=1.0)
    assert q.status == "ok" and abs(q.metrics["ep_tracks_ratio"] - 1) < 0.15, q


def test_particles_that_fade_are_followed_and_reported_when_not(monkeypatch):
    """Photobleaching: the same video with its light above the background falling as
    exp(-t / 6 frames), 8 % left at the end. The minmass estimated on the first frame lost
    the late frames' particles (94-96 a frame to frame 8, 21 in frame 12, none from frame
    14 of 16) and the verdict said "ok". Now the faded frames get a minmass of their own:
    recall 0.99-1.00 in every frame, every detection a true one, 0.066-0.103 px (the
    unfaded video: 0.066-0.082). With that switched off the verdict warns; the steady video
    is left alone."""
    import colloidcg.tracking as tracking
    from colloidcg.synthetic import SynthConfig, make_video
    from colloidcg.tracking.accuracy import score_localisation

    frames, truth, _ = make_video(SynthConfig.preset("dense", seed=8, n_frames=16, width=160, height=160))
    steady = _track(frames)
    assert steady.params.sources["minmass"] == "estimated"
    assert steady.quality.metrics["count_range"] > 0.8
    base = float(np.median(frames[0]))
    fade = np.exp(-np.arange(len(frames)) / 6.0)[:, None, None]
    faded = np.clip(np.rint(base + (frames.astype(float) - base) * fade), 0, 255).astype(frames.dtype)
    r = _track(faded)
    assert "per frame" in r.params.sources["minmass"]
    for k in range(len(frames)):
        s = score_localisation(r.tracks[r.tracks.frame == k], truth[truth.frame == k], (160, 160), 12, 4)
        assert s.recall >= 0.97 and s.precision >= 0.99 and s.rms_error < 0.13, (k, s)
    assert r.quality.status == "ok", r.quality.reasons

    monkeypatch.setattr(tracking, "FADING_TRIGGER", 0.0)
    lost = _track(faded)
    counts = lost.tracks.groupby("frame").size().reindex(range(len(frames)), fill_value=0)
    assert counts.iloc[-3:].max() < 0.2 * counts.iloc[:3].min()
    assert lost.quality.metrics["count_range"] < 0.5
    assert any("fade" in reason for reason in lost.quality.reasons), lost.quality.reasons
