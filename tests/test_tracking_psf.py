"""Localisation of spots that are not Gaussian, against known truth.

Images from the independent renderer :mod:`colloidcg.synthetic.scenes`: bright-field
ring spots (a bright centre inside a dark ring) and broad Airy spots, at area fraction
0.7, where the joint Gaussian fit alone has outliers (rings: p99 error 0.3-0.9 px) or,
for Airy spots so broad that the holes between them are as strong blobs as the spots,
took the holes for the particles (recall 0.01).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import colloidcg.tracking.locate as locate_mod
from colloidcg.synthetic import scenes
from colloidcg.tracking import TrackParams, suggest_parameters
from colloidcg.tracking.accuracy import score_localisation
from colloidcg.tracking.locate import locate_frame
from colloidcg.tracking.psf import radial_profile, render_profile

D = 10.0
#: What the ring-spot test asks (the Gaussian fit alone: 0.19 px RMS, p99 0.43 px on the
#: benchmark's ring condition at this width)
RMS_MAX, P99_MAX = 0.15, 0.35


def _render(psf, sigma_over_d, background, seed, n_frames=2, shape=(144, 144)):
    return scenes.frames(shape, n_frames, 0.7, (D,), step_px=0.3, rng=seed, psf=psf,
                         sigma_over_d=sigma_over_d, photons=50 * D ** 2, background=background,
                         read_noise=2.0)


def _locate_all(frames, p):
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [locate_frame(f, k, p.diameter, p.separation, p.minmass, p.invert,
                              contrast=p.contrast) for k, f in enumerate(frames)]
    return pd.concat(parts, ignore_index=True)


def _score(frames, truth, found):
    return score_localisation(found, truth, frames.shape[1:], margin=D, match_radius=0.5 * D)


@pytest.fixture(scope="module")
def ring():
    frames, truth = _render("ring", 0.35, 100.0, seed=3)
    return frames, truth, suggest_parameters(frames[0])


def test_ring_spots_accuracy_and_ep(ring):
    """Ring-shaped spots (sigma/d 0.35, dark ring at 0.45 d): RMS under the 0.15 px
    target (Cramér-Rao bound 0.11 px) without outliers, and the reported ep within 30 %
    of a calibrated one (median ep / median error = 0.85 for Gaussian errors)."""
    frames, truth, p = ring
    assert p.contrast == "bright"
    s = _score(frames, truth, _locate_all(frames, p))
    assert s.recall >= 0.99 and s.precision >= 0.99, s
    assert s.rms_error <= RMS_MAX and s.p99_error <= P99_MAX, s
    assert 0.85 * 0.7 <= s.ep_ratio <= 0.85 * 1.3, s


def test_ring_spots_gaussian_fit_alone_is_worse(ring, monkeypatch):
    """The same frames with the Gaussian fit alone (its failed-fit fallback included):
    outliers, a larger RMS. Shows that the test above measures the profile step."""
    frames, truth, p = ring
    monkeypatch.setattr(locate_mod, "PSF_PROFILE", False)
    s = _score(frames, truth, _locate_all(frames, p))
    assert s.rms_error > RMS_MAX and s.p99_error > P99_MAX, s


@pytest.fixture(scope="module")
def broad_airy():
    """One frame of Airy spots with sigma/d = 0.35 at area fraction 0.7 (160 x 160 px,
    178 particles, 93 % of them touching a neighbour) and its automatic parameters."""
    frames, truth = _render("airy", 0.35, 10.0, seed=1, n_frames=1, shape=(160, 160))
    return frames, truth, suggest_parameters(frames[0])


def _touching(truth):
    """The true particles with a neighbour closer than 1.1 diameters."""
    from colloidcg.neighbours import nearest

    return truth[nearest(truth[["x", "y"]].to_numpy())[0] < 1.1 * D]


def test_broad_airy_spots_are_not_taken_for_their_holes(broad_airy):
    """Airy spots with sigma/d = 0.35 at area fraction 0.7: the blob scan finds the holes
    between spots about as strong as the spots (contrast ambiguity 0.86); the spot model's
    residual tells them apart. Touching pairs often merge into one band-pass peak; the
    joint fit finds the partner and :func:`locate.merged_partners` keeps it, so recall and
    precision reach the 0.99 target, over all particles and over the touching ones.
    (The RMS does not: 0.29 px for a Cramér-Rao bound of 0.18 px; the fit's model of an
    Airy spot is a Gaussian.)"""
    frames, truth, p = broad_airy
    assert p.contrast == "bright"
    found = _locate_all(frames, p)
    s = _score(frames, truth, found)
    assert s.precision >= 0.99 and s.recall >= 0.99, s
    assert s.median_error <= 0.3, s          # the holes: 4.9 px
    touching = _touching(truth)
    assert len(touching) >= 0.9 * len(truth)
    assert _score(frames, touching, found).recall >= 0.99


def test_merged_partners_are_true_particles(broad_airy, monkeypatch):
    """The same frame without :func:`locate.merged_partners`: partners of merged peaks
    are lost (recall of touching particles under 0.99), and every spot that the rule
    adds in the scored region (more than a diameter from the edges) is a true particle
    (matched within half a diameter to one no other spot took)."""
    from colloidcg.tracking.accuracy import match_one_to_one

    frames, truth, p = broad_airy
    with_rule = _locate_all(frames, p)
    monkeypatch.setattr(locate_mod, "MERGED_PARTNER_LIGHT", np.inf)
    without = _locate_all(frames, p)
    assert _score(frames, _touching(truth), without).recall < 0.99
    a, b = with_rule[["x", "y"]].to_numpy(), without[["x", "y"]].to_numpy()
    h, w = frames.shape[1:]
    scored = (a[:, 0] > D) & (a[:, 0] < w - 1 - D) & (a[:, 1] > D) & (a[:, 1] < h - 1 - D)
    new = np.array([np.hypot(*(b - q).T).min() > 1.0 for q in a]) & scored
    assert new.sum() >= 3
    i_f, _ = match_one_to_one(a, truth[["x", "y"]].to_numpy(), 0.5 * D)
    matched = np.zeros(len(a), bool)
    matched[i_f] = True
    assert matched[new].all()


def test_radial_profile_recovers_a_known_profile():
    """The least-squares profile of overlapping copies of a known radial shape, each
    scaled by its weight, is that shape (the overlaps are separated, not averaged in)."""
    rng = np.random.default_rng(0)
    shape = (80, 80)
    x, y = rng.uniform(10, 70, 30), rng.uniform(10, 70, 30)
    weight = rng.uniform(0.5, 1.5, 30)
    scale = np.ones(30)
    r = np.arange(0, 8.01, 0.5)
    truth = -np.exp(-0.5 * ((r - 4.0) / 1.0) ** 2)      # a dark ring at 4 px
    truth[-1] = 0.0
    img = render_profile(shape, x, y, weight, scale, truth)
    knots, gain = radial_profile(img, x, y, weight, scale, 8.0)
    assert np.allclose(knots[:-1], truth[:-1], atol=1e-6)
    assert gain > 0.999
    noise = rng.normal(0, 1, shape)
    _, gain_noise = radial_profile(noise, x, y, weight, scale, 8.0)
    assert gain_noise < 0.01          # noise alone: no profile to speak of


def test_gaussian_spots_are_left_to_the_gaussian_fit():
    """On Gaussian spots the profile explains under MIN_GAIN of the residual, so the
    positions are the joint fit's, bit for bit."""
    frames, truth = _render("gauss_pixel", 0.25, 10.0, seed=2, n_frames=1, shape=(112, 112))
    p = suggest_parameters(frames[0], TrackParams())
    a = _locate_all(frames, p)
    locate_mod.PSF_PROFILE = False
    try:
        b = _locate_all(frames, p)
    finally:
        locate_mod.PSF_PROFILE = True
    assert np.array_equal(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy())


@pytest.mark.parametrize("seed", [0, 1])
def test_merged_airy_pairs_split_with_nothing_left_between(seed, monkeypatch):
    """25 touching pairs of Airy spots (sigma/d 0.35, 10 px apart, random orientation),
    each detected as one spot at the pair's midpoint (a merged band-pass peak). The
    crowded joint fit finds the partners in its residual, and
    :func:`refine._prune_redundant` removes the spots left between them: the fit ends
    with exactly one spot per particle, matched one-to-one within half a diameter.
    Without the pruning, spots remain between partners."""
    import colloidcg.tracking.refine as refine_mod
    from colloidcg.tracking.accuracy import match_one_to_one
    from colloidcg.tracking.locate import CROWDED_OPTIONS

    rng = np.random.default_rng(seed)
    c = (np.arange(5) + 0.5) * 26.0 + 2
    gx, gy = np.meshgrid(c, c)
    centre = np.c_[gx.ravel(), gy.ravel()] + rng.uniform(-1, 1, (25, 2))
    th = rng.uniform(0, np.pi, 25)
    half = 0.5 * D * np.c_[np.cos(th), np.sin(th)]
    pos = np.vstack([centre + half, centre - half])
    img = scenes.render(pos, D, (134, 134), psf="airy", sigma_over_d=0.35,
                        photons=50 * D ** 2, background=10.0, read_noise=2.0, rng=rng,
                        bit_depth=None)

    def fit():
        return refine_mod.refine_jointly(img, centre[:, 0], centre[:, 1], 3.5,
                                         **CROWDED_OPTIONS)

    r = fit()
    found = np.c_[r["x"], r["y"]]
    i_f, _ = match_one_to_one(found, pos, 0.5 * D)
    assert len(found) == len(pos) and len(i_f) == len(pos)
    monkeypatch.setattr(refine_mod, "PRUNE_FRACTION", 0.0)
    assert len(fit()["x"]) > len(pos)


def _own_light_reference(residual, x, y, amplitude, sigma, weight, scale, knots, radius,
                         knot_px=0.5, n_iter=5, noise_gain=1.0):
    """own_light_centroids written with numpy per spot (the compiled loop's specification)."""
    import math

    from scipy.special import erf

    h, w = residual.shape
    ox, oy = np.array(x, dtype=float), np.array(y, dtype=float)
    ep = np.full(len(ox), np.nan)
    for i in range(len(x)):
        rad = radius * scale[i]
        half = int(math.ceil(rad)) + 2
        cu, cv = int(round(x[i])), int(round(y[i]))
        u0, u1 = max(0, cu - 2 * half), min(w, cu + 2 * half + 1)
        v0, v1 = max(0, cv - 2 * half), min(h, cv + 2 * half + 1)
        if u1 - u0 < 3 or v1 - v0 < 3:
            continue
        u, v = np.arange(u0, u1, dtype=float), np.arange(v0, v1, dtype=float)
        s = math.sqrt(2.0) * sigma[i]
        gx = 0.5 * (erf((u + 0.5 - x[i]) / s) - erf((u - 0.5 - x[i]) / s))
        gy = 0.5 * (erf((v + 0.5 - y[i]) / s) - erf((v - 0.5 - y[i]) / s))
        r = np.hypot(u[None, :] - x[i], v[:, None] - y[i]) / (knot_px * scale[i])
        k = np.minimum(r.astype(np.int64), len(knots) - 1)
        f = r - k
        prof = np.where(k < len(knots) - 1, knots[k] * (1 - f) + knots[np.minimum(k + 1, len(knots) - 1)] * f, 0.0)
        own = np.maximum(residual[v0:v1, u0:u1] + amplitude[i] * gy[:, None] * gx[None, :] + weight[i] * prof, 0.0)
        cx, cy = float(x[i]), float(y[i])
        for _ in range(n_iter):
            disc = (u[None, :] - cx) ** 2 + (v[:, None] - cy) ** 2 <= rad * rad
            tot = (own * disc).sum()
            if tot <= 0:
                break
            nx_, ny_ = ((own * disc).sum(0) * u).sum() / tot, ((own * disc).sum(1) * v).sum() / tot
            moved = math.hypot(nx_ - cx, ny_ - cy)
            cx, cy = nx_, ny_
            if moved < 1e-3:
                break
        if math.hypot(cx - x[i], cy - y[i]) < half:
            d2 = (u[None, :] - cx) ** 2 + (v[:, None] - cy) ** 2
            disc = d2 <= rad * rad
            tot = float((own * disc).sum())
            if tot > 0:
                ox[i], oy[i] = cx, cy
                rim = np.abs(np.sqrt(d2) - rad) < 0.5
                b = math.pi * rad * rad * float(own[rim].mean()) / tot if rim.any() else 0.0
                ep[i] = (math.sqrt(float(np.mean(residual[v0:v1, u0:u1][disc] ** 2)) * 0.5
                                   * float((d2 * disc).sum()) * noise_gain) / tot / (1.0 - min(max(b, 0.0), 0.8)))
    return ox, oy, ep


def test_own_light_centroids_equal_their_numpy_specification_at_edges_and_half_pixels():
    from colloidcg.tracking.psf import own_light_centroids

    rng = np.random.default_rng(0)
    h, w = 120, 140
    residual = rng.normal(0, 1, (h, w))
    n = 80
    x, y = rng.uniform(-3, w + 2, n), rng.uniform(-3, h + 2, n)
    # half-pixel centres (rounding), corners and a spot off the frame
    x[:6] = [10.5, 20.5, 31.5, 0.0, 139.0, -30.0]
    y[:6] = [10.5, 11.5, 12.5, 0.0, 119.0, 50.0]
    args = (residual, x, y, rng.uniform(5, 50, n), rng.uniform(1, 3, n), rng.uniform(0, 5, n),
            rng.uniform(0.8, 1.2, n), rng.normal(0, 1, 12), 4.0)
    got = own_light_centroids(*args, noise_gain=1.3)
    want = _own_light_reference(*args, noise_gain=1.3)
    assert np.isnan(got[2][5]) and got[0][5] == -30.0          # no window: kept, ep NaN
    assert np.isfinite(got[2]).sum() > 60
    for g, r in zip(got, want):
        assert np.array_equal(np.isnan(g), np.isnan(r))
        assert np.nanmax(np.abs(g - r)) < 1e-9


# ----------------------------------------------------------------------------- template fit
def _ring_knots(amp_scale, knot_px=0.5, r_max=9.0):
    """A dark ring at 4.5 px (depth 0.6 of a peak of ``amp_scale``, width 1 px) as a
    radial profile on knots, the last 0."""
    from colloidcg.tracking.psf import KNOT_PX
    assert knot_px == KNOT_PX
    r = np.arange(0.0, r_max + 1e-9, knot_px)
    k = -0.6 * amp_scale * np.exp(-0.5 * ((r - 4.5) / 1.0) ** 2)
    k[-1] = 0.0
    return k


def _template_image(shape, x, y, amp, sigma, weight, knots):
    from colloidcg.tracking.refine import render_spots
    spots = np.c_[x, y, amp, np.full(len(x), sigma)]
    return render_spots(shape, spots) + render_profile(shape, x, y, weight, np.ones(len(x)), knots)


def test_template_fit_is_exact_without_noise_and_refuses_far_starts():
    """A spot drawn exactly as its template (pixel-integrated Gaussian + dark-ring
    profile) is found to 1e-4 px (the tolerance) from a start 0.3 px off, its own light taken from a
    residual and a joint-fit position that differ from it; a fit that would move more
    than TEMPLATE_MAX_MOVE keeps its start and is flagged; the x weights of the fit
    (template_kernel) are the template's numerical x derivative."""
    from colloidcg.tracking.psf import TEMPLATE_MAX_MOVE, template_kernel, template_positions

    shape = (40, 40)
    sigma, amp = 2.0, 2000.0
    peak = amp / (2 * np.pi * sigma ** 2)
    knots = _ring_knots(peak)
    tx, ty = np.array([19.37]), np.array([20.81])
    img = _template_image(shape, tx, ty, [amp], sigma, np.array([1.0]), knots) + 50.0
    jx, jy = tx + 0.2, ty - 0.15                    # the joint fit's position (own model there)
    residual = img - 50.0 - _template_image(shape, jx, jy, [amp], sigma, np.array([1.0]), knots)
    x, y, ep, ok = template_positions(residual, jx, jy, np.array([amp]), np.array([sigma]), np.array([1.0]),
                                      np.ones(1), knots, tx + 0.3, ty - 0.2, 3.5 * sigma)
    assert ok[0]
    assert abs(x[0] - tx[0]) < 1e-4 and abs(y[0] - ty[0]) < 1e-4
    assert ep[0] < 1e-4                                # no noise, no misfit
    far = 1.5 * TEMPLATE_MAX_MOVE
    x, y, ep, ok = template_positions(residual, jx, jy, np.array([amp]), np.array([sigma]), np.array([1.0]),
                                      np.ones(1), knots, tx + far, ty, 3.5 * sigma)
    assert not ok[0] and x[0] == tx[0] + far and np.isnan(ep[0])
    rho = 1.0 / amp
    kern = template_kernel(sigma, rho, knots, 3.5 * sigma)
    n = kern.shape[0] // 2
    h = 1e-5
    plus = _template_image((2 * n + 1,) * 2, np.array([n + h]), np.array([float(n)]), [1.0], sigma,
                           np.array([rho]), knots)
    minus = _template_image((2 * n + 1,) * 2, np.array([n - h]), np.array([float(n)]), [1.0], sigma,
                            np.array([rho]), knots)
    k = np.arange(-n, n + 1)
    r = np.hypot(k[None, :], k[:, None])
    # (pixels at a knot's radius left out: there the profile's slope jumps, and the
    # central difference averages its two sides)
    on_knot = np.abs(r / 0.5 - np.round(r / 0.5)) < 1e-9
    disc = (r <= 3.5 * sigma) & ~on_knot
    # (the rendered Gaussian's pixel integral is Simpson's rule: 3e-6 of the peak slope)
    np.testing.assert_allclose(kern[disc], ((plus - minus) / (2 * h))[disc], rtol=1e-3,
                               atol=1e-3 * np.abs(kern).max())


def test_template_fit_reaches_the_cramer_rao_bound_and_its_ep_is_calibrated():
    """Isolated ring-shaped spots drawn as their template, white noise: the template
    fit's RMS error per axis is within 15 % of the Cramér-Rao bound of the fitted disc
    (sigma_noise / sqrt(sum (A dT/dx)^2)); the own-light centroid of the same spots is
    far above it (it weights the pixels by light, not by how the light moves); and the
    fit's ep is within 15 % of its RMS error."""
    from colloidcg.tracking.psf import own_light_centroids, template_kernel, template_positions

    rng = np.random.default_rng(7)
    sigma, amp, noise = 2.0, 2000.0, 6.0
    peak = amp / (2 * np.pi * sigma ** 2)
    knots = _ring_knots(peak)
    side, step = 300, 30
    g = np.arange(step // 2, side - step // 2 + 1, step, dtype=float)
    gx, gy = np.meshgrid(g, g)
    tx = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    ty = gy.ravel() + rng.uniform(-0.5, 0.5, gy.size)
    n = len(tx)
    ones = np.ones(n)
    model = _template_image((side, side), tx, ty, np.full(n, amp), sigma, ones, knots)
    errs, eps, cents = [], [], []
    for rep in range(4):
        img = model + rng.normal(0.0, noise, model.shape)
        residual = img - model                       # the joint fit at the truth
        cx, cy, _ = own_light_centroids(residual, tx, ty, np.full(n, amp), np.full(n, sigma), ones, ones,
                                        knots, 1.8 * sigma)
        sx, sy = tx + rng.normal(0, 0.1, n), ty + rng.normal(0, 0.1, n)
        x, y, ep, ok = template_positions(residual, tx, ty, np.full(n, amp), np.full(n, sigma), ones, ones,
                                          knots, sx, sy, 3.5 * sigma)
        assert ok.all()
        errs.append(np.c_[x - tx, y - ty])
        cents.append(np.c_[cx - tx, cy - ty])
        eps.append(ep)
    e = np.concatenate(errs)
    rms_axis = float(np.sqrt((e ** 2).mean()))
    kern = template_kernel(sigma, 1.0 / amp, knots, 3.5 * sigma)
    crb = noise / (amp * float(np.sqrt((kern ** 2).sum())))
    assert rms_axis <= 1.15 * crb and rms_axis >= 0.85 * crb, (rms_axis, crb)
    cent_axis = float(np.sqrt((np.concatenate(cents) ** 2).mean()))
    assert cent_axis > 1.5 * rms_axis, (cent_axis, rms_axis)
    assert np.median(np.concatenate(eps)) == pytest.approx(rms_axis, rel=0.15)


@pytest.fixture(scope="module")
def dilute_rings():
    """Bright-field ring spots (sigma/d 0.2, dark ring at 0.45 d) at area fraction 0.3:
    the light beyond each dark ring makes maxima between particles standing apart."""
    frames, truth = scenes.frames((192, 192), 4, 0.3, (D,), step_px=0.3, rng=11, psf="ring",
                                  sigma_over_d=0.2, photons=50 * D ** 2, background=100.0, read_noise=2.0)
    return frames, truth


def test_lit_surroundings_of_rings_standing_apart_are_not_particles(dilute_rings, monkeypatch):
    """Tracked automatically, the dilute rings meet the 0.99 / 0.15 px target; without
    the lit-halo rule (colloidcg.tracking.gaps.lit_halos) the halos are fitted as spots,
    kept, and pull the particles' fits (precision and RMS both worse). The rule drops no
    particle: every dropped candidate lies farther than a third of a diameter from every
    true centre. (Measured: precision 0.985 and RMS 0.12 px with it, 0.51 and 1.6 px
    without.)"""
    from colloidcg.tracking import gaps, track

    frames, truth = dilute_rings
    res = track(frames, progress=False)
    s = _score(frames, truth, res.tracks)
    assert s.recall >= 0.99 and s.precision >= 0.97 and s.rms_error <= 0.15, s
    dropped = []
    real = gaps.lit_halos

    def spy(img, x, y, diameter, noise=None, mass=None):
        out = real(img, x, y, diameter, noise, mass)
        dropped.append(np.c_[x[out], y[out]])
        return out

    monkeypatch.setattr(locate_mod, "lit_halos", spy)
    p = res.params
    locate_frame(frames[0], 0, p.diameter, p.separation, p.minmass, p.invert, contrast=p.contrast,
                 gap_check=p.gap_check)
    d = np.concatenate(dropped)
    assert len(d) >= 20
    t0 = truth[truth["frame"] == 0][["x", "y"]].to_numpy()
    assert np.min(np.hypot(*(d[:, None, :] - t0[None, :, :]).transpose(2, 0, 1))) > D / 3
    monkeypatch.setattr(locate_mod, "lit_halos", lambda img, x, y, diameter, noise=None, mass=None:
                        np.zeros(len(x), bool))
    off = _score(frames, truth, track(frames, progress=False, params=p).tracks)
    assert off.precision < s.precision - 0.02 and off.rms_error > s.rms_error, (off, s)


def test_dyed_spheres_through_a_computed_widefield_psf():
    """Another renderer: dyed spheres (radius 0.5 um, 100 nm pixels) convolved in 3D with a
    widefield emission PSF from vector diffraction theory (NA 1.4; the ``psf`` package),
    Poisson noise. In focus: every particle found, RMS under 0.1 px (0.057-0.060 on seeds
    0-2; trackpy hand-set 0.39-0.45 in ``benchmarks/tracking_widefield.py``). Each at its
    own defocus |N(0, 0.2 um)|: still every particle found, under 0.2 px (0.10-0.14); the
    error grows with the spread because one profile serves every spot (README)."""
    pytest.importorskip("psf")
    from bench_helpers import load_benchmark
    from colloidcg.tracking import track

    W = load_benchmark("tracking_widefield")
    for name, rms_max in (("in focus, phi 0.3", 0.1), ("defocus sd 0.2 um, phi 0.3", 0.2)):
        c = next(c for c in W.CONDITIONS if c.name == name)
        frames, truth = W.render(c, 0, side=160, n_frames=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = track(frames, progress=False, processes=1)
        s = score_localisation(r.tracks, truth, frames.shape[1:], 10, 5)
        assert s.recall >= 0.99 and s.precision >= 0.99, (name, s)
        assert s.rms_error < rms_max, (name, s)
