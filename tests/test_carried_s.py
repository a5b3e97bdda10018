"""S as carried state (issue 20): the noise-aware heat is the expected heating of the
latent motion (Gaussian conditioning checked by Monte Carlo, the quadratic form's trace
checked against sampled velocities, no steady cooling from frame averaging); a known
answer: with localisation noise added to truth tracks the mean dS/dt along the data stays
within 20 % of the noise-free one where the plain drift does not; a one-frame carried
window is the one-step likelihood; carried S follows its own rate and is encoded on entry;
training with carried S runs; ``train_tracks`` writes S.parquet and scores it on the
softness baseline's test rows; the carried production splits among S components exactly by
the heat weights; (slow) the free-Langevin known answer holds with carried S."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from colloidcg.core.loss import TransitionMoments, transition_nll
from colloidcg.core.model import State
from colloidcg.data import from_tracks
from colloidcg.errors import ParameterError
from colloidcg.train import TrainConfig, build_model, fit, make_transition
from colloidcg.train.carried import (carried_table, carried_window_terms, carry_along, latent_entropy_rate,
                                     velocity_posterior)

from test_known_answers import soft_disk_tracks
from test_train import FAST, langevin

torch.set_num_threads(1)


def test_velocity_posterior_is_gaussian_conditioning_on_the_likelihoods_noise_model():
    """Monte Carlo of the one-step residual: latent innovation xi ~ N(0, Sigma) plus the
    localisation errors of three frames. The posterior mean's squared error per coordinate
    equals the posterior variance p, and its error is uncorrelated with the residual."""
    g = torch.Generator().manual_seed(0)
    dt, sigma, c = 0.5, 0.3, torch.tensor([0.4])
    Sigma = torch.tensor([[0.20, 0.05], [0.05, 0.10]], dtype=torch.float64)
    M = 400_000
    eps = sigma * torch.randn(3, M, 2, generator=g, dtype=torch.float64)     # eps_{t-1}, eps_t, eps_{t+1}
    xi = torch.randn(M, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(Sigma).T
    m_lat = torch.tensor([1.0, -2.0], dtype=torch.float64)
    v_lat = m_lat + xi                                                      # latent v_{t+1}
    v_obs = v_lat + (eps[2] - eps[1]) / dt
    mean = m_lat + c * (eps[1] - eps[0]) / dt                               # from the noisy v_t
    mom = TransitionMoments(mean, Sigma.expand(M, 2, 2), c.expand(M), None, None)
    v_hat, p = velocity_posterior(mom, v_obs, sigma ** 2, dt)
    err = v_hat - v_lat
    assert float(err.mean(0).abs().max()) < 5e-3
    mse = float(err.square().mean())
    assert abs(mse / float(p[0]) - 1) < 0.01
    rho = v_obs - mean
    cross = (err.unsqueeze(-1) * rho.unsqueeze(-2)).mean(0)                  # E[err rho^T] = 0
    assert float(cross.abs().max()) < 0.01 * float(rho.square().mean())
    # without noise the observation is the latent velocity
    v0, p0 = velocity_posterior(mom, v_obs, 0.0, dt)
    assert torch.equal(v0, v_obs) and float(p0.abs().max()) == 0.0


@pytest.mark.parametrize("dim", [2, 3])
def test_noise_heat_is_the_expected_heating_of_sampled_velocities(dim):
    """For an Euler-Maruyama model (instantaneous velocities) latent_entropy_rate(v_hat, p)
    equals the mean of the plain drift's dS/dt over velocities drawn from N(v_hat, p I):
    the trace term is the quadratic form's expectation (pairs and substrate)."""
    torch.manual_seed(1)
    n = 30
    r = torch.rand(n, dim, dtype=torch.float64) * 4.0
    traj = from_tracks(pd.DataFrame({"frame": np.repeat(np.arange(3), n), "particle": np.tile(np.arange(n), 3),
                                     "x": np.tile(r[:, 0].numpy(), 3) + np.random.default_rng(0).normal(0, 0.1, 3 * n),
                                     "y": np.tile(r[:, 1].numpy(), 3) + np.random.default_rng(1).normal(0, 0.1, 3 * n),
                                     **({"z": np.tile(r[:, 2].numpy(), 3)} if dim == 3 else {})}))
    cfg = TrainConfig(n_pair=0, frame_average=False).validate()
    model = build_model(traj, cfg, 1.5)
    with torch.no_grad():
        for prm in model.pairfn.coef.parameters():      # sizeable pair friction
            prm.add_(0.3 * torch.randn_like(prm))
        r0 = traj.pos[1]
        pairs = model.pairs(r0)
        assert pairs.shape[0] > 20
        S = model.initial_S(r0, pairs) + 0.1 * torch.randn(n, 1, dtype=torch.float64)
        v_hat = 0.5 * torch.randn(n, dim, dtype=torch.float64)
        p = 0.2 + torch.rand(n, dtype=torch.float64)
        t = model.terms_of(r0, v_hat, S, pairs, None, None)
        want = latent_entropy_rate(model, t, v_hat, p, traj.dt)
        # M copies of the configuration, far apart, each with its own sampled velocities
        M = 1500
        g = torch.Generator().manual_seed(2)
        rr = (r0.unsqueeze(0) + 100.0 * torch.arange(M, dtype=torch.float64).view(-1, 1, 1)).reshape(-1, dim)
        pp = (pairs.unsqueeze(0) + n * torch.arange(M).view(-1, 1, 1)).reshape(-1, 2)
        v = v_hat + p.sqrt().unsqueeze(-1) * torch.randn(M, n, dim, generator=g, dtype=torch.float64)
        _, _, dS = model.drift(State(rr, v.reshape(-1, dim), S.repeat(M, 1)), pp)
        dS = dS.view(M, n, -1)
        mc, se = dS.mean(0), dS.std(0) / math.sqrt(M)
        plain = model.drift(State(r0, v_hat, S), pairs)[2]
    z_want, z_plain = float(((want - mc) / se).abs().max()), float(((plain - mc) / se).abs().max())
    print(f"d={dim}: largest |z| of the noise-aware rate {z_want:.2f}, of the plain drift {z_plain:.1f}")
    assert z_want < 4.5
    assert z_plain > 10      # the plain drift misses the heating


def test_frame_averaged_free_particles_do_not_cool_along_their_tracks():
    """Frame averages of a Langevin velocity spread less than k_B T / m (2 / x of it for
    x = gamma dt >> 1): the plain drift along them books a steady cooling of d k_B gamma.
    The latent (instantaneous) velocity's heating balances it: mean dS/dt ~ 0."""
    traj = from_tracks(langevin(n=60, frames=60, gamma=5.0))
    model = build_model(traj, TrainConfig(n_pair=0, loc_noise="none").validate(), 3.0)
    assert model.frame_averaged
    car = carry_along(model, traj, 0.0)
    rate = car.dSdt[2:].sum(-1)
    with torch.no_grad():
        gamma = float(model.compute(State(traj.pos[5], traj.vel[5], car.S[5]), model.pairs(traj.pos[5])).diss.gamma0.mean())
        scale = 2 * model.k_B * gamma            # the Ito term's size, d k_B gamma0
        plain = torch.stack([model.drift(State(traj.pos[t], traj.vel[t], car.S[t]), model.pairs(traj.pos[t]))[2]
                             for t in range(2, traj.n_frames)]).sum(-1)
    assert abs(float(rate.mean())) < 0.05 * scale
    assert float(plain.mean()) < -0.5 * scale


def _noisy(df, sigma, seed):
    rng = np.random.default_rng(seed)
    out = df.copy()
    out["x"] = out["x"] + rng.normal(0, sigma, len(out))
    out["y"] = out["y"] + rng.normal(0, sigma, len(out))
    return out


def test_known_answer_noise_aware_heat_within_20_percent_of_noise_free():
    """Known answer: dense soft disks (particle truth, periodic), the same model along the
    same tracks with and without localisation noise of sigma = 0.5 and 1 x the typical
    step per frame and axis: the mean dS/dt along the data stays within 20 % of the
    noise-free one with the noise-aware heat, and not with the plain drift."""
    df, side = soft_disk_tracks(80, 0.7, False, 30, seed=0, equilibration=100)
    clean = from_tracks(df, box_px=[side, side])
    torch.manual_seed(0)
    model = build_model(clean, TrainConfig(loc_noise="none").validate(), 18.0)
    step = float(clean.vel[2:].square().mean().sqrt()) * clean.dt
    ref = carry_along(model, clean, 0.0).dSdt[2:].sum(-1)
    ref_mean = float(ref.mean())
    assert abs(ref_mean) > 3 * float(ref.std()) / math.sqrt(ref.numel())   # a measurable heat rate
    for k, ratio in enumerate((0.5, 1.0)):
        noisy = from_tracks(_noisy(df, ratio * step, k), box_px=[side, side])
        aware = float(carry_along(model, noisy, (ratio * step) ** 2).dSdt[2:].sum(-1).mean())
        plain = float(carry_along(model, noisy, 0.0).dSdt[2:].sum(-1).mean())
        print(f"noise {ratio} x step: mean dS/dt clean {ref_mean:.4g}, noise-aware {aware:.4g}, plain {plain:.4g}")
        assert abs(aware - ref_mean) <= 0.2 * abs(ref_mean)
        assert abs(plain - ref_mean) > 0.3 * abs(ref_mean)         # the plain drift misses the target


def test_one_frame_carried_window_is_the_one_step_likelihood():
    """With a window of one frame nothing is carried: its NLL is the one-step NLL of the
    encoded S, to rounding."""
    df, side = soft_disk_tracks(40, 0.65, False, 8, seed=1, equilibration=20)
    traj = from_tracks(df, box_px=[side, side])
    model = build_model(traj, TrainConfig().validate(), 18.0)
    tr = make_transition(traj, 3, 18.0, s_window=1)
    S = model.initial_S(tr.r, tr.pairs, traj.box)
    want, _ = transition_nll(model, State(tr.r, tr.v, S), tr.v_next, tr.valid, tr.pairs, traj.dt, traj.box,
                             loc_var=0.01)
    got, aux = carried_window_terms(model, tr.carried, traj.dt, traj.box, 0.01)
    assert aux is None
    assert torch.equal(tr.carried.index, tr.index)
    assert abs(float(got) - float(want)) < 1e-10 * abs(float(want))


def test_carried_S_follows_its_rate_and_is_encoded_on_entry():
    """S_{t+1} = S_t + dt dS/dt_t along every track; a particle entering at frame 5 gets the
    encoder's S of frame 5's configuration, is held through its first frame (no velocity
    yet), and its first dS/dt is NaN."""
    df = langevin(n=30, frames=12, L=12.0)
    late = (df["particle"] == 7) & (df["frame"] < 5)
    traj = from_tracks(df[~late])
    model = build_model(traj, TrainConfig(n_pair=0).validate(), 3.0)
    car = carry_along(model, traj, 0.004)
    both = traj.present[1:] & traj.present[:-1]
    step = car.S[1:] - car.S[:-1] - traj.dt * torch.nan_to_num(car.dSdt[:-1])
    assert float(step[both].abs().max()) < 1e-12
    j = int(np.flatnonzero(traj.particles == 7)[0])
    assert bool(torch.isnan(car.S[:5, j]).all())
    here = torch.nonzero(traj.present[5]).squeeze(-1)
    enc = model.initial_S(traj.pos[5, here], None)
    assert torch.allclose(car.S[5, j], enc[int((here == j).nonzero())], atol=1e-12)
    assert bool(torch.isnan(car.dSdt[5, j]).all()) and torch.equal(car.S[6, j], car.S[5, j])
    table = carried_table(model, traj, 0.004)
    assert len(table) == int(traj.present.sum()) and list(table.columns) == ["frame", "particle", "S0", "dSdt"]


def test_training_with_carried_S_lowers_the_likelihood_and_options_are_checked():
    traj = from_tracks(langevin(n=24, frames=16))
    res = fit(traj, TrainConfig(**{**FAST, "epochs": 3, "batch_frames": 4}, s_memory="carried", s_window=3, n_pair=0))
    h = res.history
    assert all(math.isfinite(r["val_nll"]) for r in h)
    assert h[-1]["train_nll"] < h[0]["train_nll"]
    with pytest.raises(ParameterError, match="s_memory"):
        TrainConfig(s_memory="remembered").validate()
    with pytest.raises(ParameterError, match="s_window"):
        TrainConfig(s_window=0).validate()
    with pytest.raises(ParameterError, match="covariance"):
        TrainConfig(s_memory="carried", covariance="full").validate()


def _vacancy_lattice(nx, n_vac, seed):
    """(rng after the draw, (n, 2) remaining sites, (n_vac, 2) vacancies) of a hex lattice
    with spacing 10 px and ``n_vac`` vacancies drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    jj, ii = np.meshgrid(np.arange(nx), np.arange(nx))
    full = np.column_stack([(jj * 10.0 + (ii % 2) * 5.0).ravel(), (ii * 10.0 * np.sqrt(3) / 2).ravel()]) + 20.0
    vac = rng.choice(len(full), n_vac, replace=False)
    keep = np.ones(len(full), bool)
    keep[vac] = False
    return rng, full[keep], full[vac]


def _vacancy_tracks(nx=14, frames=40, n_vac=10, seed=0):
    """A small hex lattice with vacancies whose neighbours shear now and then (the
    benchmark's vacancy control, smaller), with thermal jitter; px and frames."""
    rng, p0, vacancies = _vacancy_lattice(nx, n_vac, seed)
    pos = np.repeat(p0[None], frames, 0)
    for s in vacancies:
        for f in rng.choice(np.arange(3, frames - 2), 2, replace=False):
            d = p0 - s
            pos[f:] += np.column_stack([d[:, 0], -d[:, 1]]) * np.exp(-np.square(d).sum(1) / 64.0)[:, None]
    pos = pos + rng.normal(0, 0.25, pos.shape)
    n = len(p0)
    return pd.DataFrame({"frame": np.repeat(np.arange(frames), n), "particle": np.tile(np.arange(n), frames),
                         "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})


def test_train_tracks_writes_S_parquet_and_scores_it_on_the_softness_rows(tmp_path):
    """The model folder's S.parquet has one row per tracked row (S0, dSdt) and a sidecar
    with units; report.json scores S0 and dSdt on exactly the softness baseline's test rows
    with the baseline's AUC and SE beside them (scored again here from S.parquet: equal)."""
    from colloidcg.outputs import read_table
    from colloidcg.rearrangements import detect
    from colloidcg.rearrangements.scoring import score_against_softness
    from colloidcg.train import train_tracks

    tracks = _vacancy_tracks()
    table = detect(tracks, lag=2, cutoff=13.0).table
    out = tmp_path / "model"
    train_tracks(tracks, None, TrainConfig(epochs=1, cutoff=13.0, edge=0.0, n_pair=0, progress=False,
                                           val_rollout_steps=3, horizon=2), out, labels=table,
                 fps=1.0, um_per_px=1.0, labels_lag=2)
    S, side = read_table(out / "S.parquet")
    assert len(S) == len(tracks) and {"S0", "dSdt"} <= set(S.columns)
    assert side["units"]["dSdt"].startswith("k_B per frame")
    rep = json.loads((out / "report.json").read_text())["carried_s_auc"]
    assert {"softness", "S0", "dSdt"} <= set(rep) and rep["lag"] == 2
    again = score_against_softness(table, S[["frame", "particle", "S0", "dSdt"]], 2, fix_sign=["S0"])
    assert rep["S0"]["auc"] == pytest.approx(again["S0"].auc, abs=1e-12)
    assert rep["softness"]["auc"] == pytest.approx(again["softness"].auc, abs=1e-12)
    assert rep["S0"]["softness_auc"] == pytest.approx(rep["softness"]["auc"], abs=1e-12)   # same rows
    assert rep["S0"]["n_test"] == rep["softness"]["n_test"] > 0


def test_carried_window_starts_from_S_carried_since_entry_and_aux_gradient_reaches_the_entry_encoder():
    """Training's carried windows (``s_start`` entry) start from S as carry_along carries it
    along the data: the start value is carry_along's S at the window's frame exactly, and
    its gradient is that of the encoder at each particle's entry frame (the auxiliary loss
    reaches the initial-S encoder; the carried increments are held fixed). A particle that
    enters at frame 4 is encoded from frame 4's configuration."""
    from colloidcg.train import AuxiliaryLoss
    from colloidcg.train.carried import CarriedStart, entry_frames, make_carried_window

    df = langevin(n=30, frames=12, L=12.0)
    late = (df["particle"] == 7) & (df["frame"] < 4)
    gone = (df["particle"] == 3) & (df["frame"] == 2)                      # leaves and comes back at 3
    traj = from_tracks(df[~late & ~gone])
    j7, j3 = (int(np.flatnonzero(traj.particles == p)[0]) for p in (7, 3))
    ent = entry_frames(traj.present)
    assert int(ent[8, j7]) == 4 and int(ent[8, j3]) == 3 and int(ent[1, j3]) == 0 and int(ent[2, j3]) == -1
    model = build_model(traj, TrainConfig(n_pair=0).validate(), 3.0)
    with torch.no_grad():                                  # dS/dt that moves S measurably
        for prm in model.pairfn.coef.parameters():
            prm.add_(0.3 * torch.randn(prm.shape, generator=torch.Generator().manual_seed(2), dtype=prm.dtype))
    start = CarriedStart(traj, 0.004)
    start.refresh(model)
    car = carry_along(model, traj, 0.004)
    t = 7
    w = make_carried_window(traj, t, 3, 3.0)
    assert w.t == t and bool((w.index == j7).any()) and bool((w.index == j3).any())
    S = start.start_S(model, t, w.index)
    assert torch.equal(S.detach(), car.S[t, w.index])
    assert float((car.S[t, w.index] - car.S[ent[t, w.index].clamp_min(0), w.index]).abs().max()) > 1e-6
    # gradient: that of the encoder at the entry frames (frame 0, 3 for particle 3, 4 for particle 7)
    c = torch.randn(S.shape, generator=torch.Generator().manual_seed(3), dtype=S.dtype)
    enc_params = list(model.encoder.parameters())
    got = torch.autograd.grad((c * S).sum(), enc_params)
    ref = 0.0
    for f in (0, 3, 4):
        here = torch.nonzero(traj.present[f]).squeeze(-1)
        enc = model.initial_S(traj.pos[f, here], None)
        rows = torch.nonzero(ent[t, w.index] == f).squeeze(-1)
        pos = torch.searchsorted(here, w.index[rows])
        ref = ref + (c[rows] * enc[pos]).sum()
    want = torch.autograd.grad(ref, enc_params)
    assert max(float((a - b).abs().max()) for a, b in zip(got, want)) < 1e-12
    assert max(float(a.abs().max()) for a in got) > 0
    # the auxiliary loss of a carried window reaches the encoder through that start
    w.labels = (torch.rand(3, w.index.numel(), generator=torch.Generator().manual_seed(4)) < 0.3).to(S.dtype)
    aux = AuxiliaryLoss.new(1, 1.0, torch.tensor(2.0, dtype=S.dtype))
    _, a = carried_window_terms(model, w, traj.dt, None, 0.004, aux, start)
    g = torch.autograd.grad(a, enc_params, allow_unused=True)
    assert all(x is not None for x in g) and max(float(x.abs().max()) for x in g) > 0
    with pytest.raises(ParameterError, match="s_start"):
        TrainConfig(s_start="frame").validate()


def test_multistep_window_of_a_carried_transition_starts_from_the_carried_S():
    """With carried S (``s_start`` entry) and ``multistep`` > 1, the K-step term of a
    transition starts from the S carried since each particle's entry frame, as its carried
    one-step window does; it used to encode S afresh at the window's first frame."""
    from colloidcg.core.loss import multistep_nll
    from colloidcg.train.carried import CarriedStart
    from colloidcg.train.objective import LossOptions, window_nll
    from colloidcg.train.sampler import make_window

    traj = from_tracks(langevin(n=30, frames=12, L=12.0))
    model = build_model(traj, TrainConfig(n_pair=0).validate(), 3.0)
    with torch.no_grad():                                  # dS/dt that moves S measurably
        for prm in model.pairfn.coef.parameters():
            prm.add_(0.3 * torch.randn(prm.shape, generator=torch.Generator().manual_seed(2), dtype=prm.dtype))
    start = CarriedStart(traj, 0.004)
    t = 6
    w = make_window(traj, t, 3, 3.0)
    opts = LossOptions(dt=traj.dt, loc_var=0.004, carry=start)
    got = window_nll(model, w, opts, frame=t)
    S_t = carry_along(model, traj, 0.004).S[t, w.index]
    valid = w.interior.unsqueeze(0).expand(w.steps, -1)
    want = multistep_nll(model, w.r, w.v, S_t, valid, w.pairs, traj.dt, None, loc_var=0.004,
                         prescribed=~w.interior, size=w.size)
    assert float(got) == pytest.approx(float(want), rel=1e-12)
    encoded = window_nll(model, w, LossOptions(dt=traj.dt, loc_var=0.004))
    assert abs(float(encoded) - float(got)) > 1e-6 * abs(float(got))


def _vacancy_exposure(nx=14, n_vac=10, seed=0):
    """(n,) each remaining site's exposure in :func:`_vacancy_tracks` (same arguments): the
    summed shear amplitude (px) its vacancies give it, the structural truth of that system."""
    _, p0, vacancies = _vacancy_lattice(nx, n_vac, seed)
    return sum(np.linalg.norm(p0 - s, axis=1) * np.exp(-np.square(p0 - s).sum(1) / 64.0) for s in vacancies)


@pytest.mark.slow
def test_carried_S_with_aux_recovers_the_planted_structure_and_keeps_it_along_the_data():
    """A small vacancy lattice (14 x 14 sites, 10 vacancies whose neighbours shear twice
    each at random frames): S trained carried with the auxiliary loss on frames < 30, then
    carried along all 40 frames from frame 0. Known truth: each site's exposure to its
    vacancies' shears. The heat of the shears raises the carried S of exposed sites; the
    increasing read-out makes the encoder put them high too, so the encoded S and the
    carried S rank the sites the same way. (Measured, seeds 1 / 2: correlation with the
    exposure 0.44 / 0.39 encoded, 0.74 / 0.73 at the last frame; with the previous
    training, a free-signed read-out and windows encoded at their first frame, -0.56 /
    -0.45 encoded and 0.74 / 0.73 at the last frame: the sign flipped along the data.
    About 60 s on 2 loaded cores; the exact start-S test above is the short version.)"""
    from colloidcg.rearrangements import detect

    tracks = _vacancy_tracks(frames=40, seed=1)
    exposure = _vacancy_exposure(seed=1)
    table = detect(tracks, lag=2, cutoff=13.0).table
    early = table[table["frame"] < 30]
    traj = from_tracks(tracks[tracks["frame"] < 30], fps=1.0, um_per_px=1.0,
                       labels=early[["frame", "particle", "rearranging"]])
    res = fit(traj, TrainConfig(epochs=4, cutoff=13.0, edge=0.0, n_pair=0, progress=False, val_rollout_steps=3,
                                horizon=2, s_memory="carried", s_window=2, aux_weight=1.0, seed=0,
                                batch_frames=4))
    whole = from_tracks(tracks, fps=1.0, um_per_px=1.0)
    car = carry_along(res.model, whole, float(res.report["localisation_noise"]) ** 2)
    assert np.array_equal(whole.particles, np.arange(len(exposure)))
    S0, S_last = car.S[0, :, 0].numpy(), car.S[-1, :, 0].numpy()
    assert np.corrcoef(S0, exposure)[0, 1] > 0.2            # encoded: exposed (soft) sites high
    assert np.corrcoef(S_last, exposure)[0, 1] > 0.5        # and still so after 39 frames of carrying


@pytest.mark.parametrize("heat", ["drift", "work"])
def test_carried_production_is_shared_among_components_by_the_heat_weights(heat):
    """Exact invariant of the GENERIC heat bookkeeping, T . dS = q with theta = w . T: every
    channel moves S_i along the heat weights w, so along the data each component's carried
    increment S_t^a - S_entry^a is w_a times one per-particle amount (n_s = 3, unequal w),
    whether the heat is the drift's or the first law's (heat conduction included in both).
    With n_s > 1 a component therefore produces w_a of the entropy a single S would: with the
    drift heat the trained encoder shrank that component's encoded spread in step; with the
    first-law heat on the vacancy control it did not, and S0 of n_s = 2 keeps its entry
    ranking (docs/model.md)."""
    traj = from_tracks(langevin(n=30, frames=12, L=12.0))
    torch.manual_seed(0)
    model = build_model(traj, TrainConfig(n_pair=0, n_s=3).validate(), 3.0)
    with torch.no_grad():
        model.raw_w.copy_(torch.tensor([-1.0, 0.3, 1.2], dtype=model.raw_w.dtype))
    w = model.heat_weights.detach()
    assert float(w.max() / w.min()) > 5
    car = carry_along(model, traj, 0.004, heat=heat)
    steps = (car.S[1:] - car.S[:-1]) / w
    assert float(steps.abs().amax((0, 2)).min()) > 1e-3      # every particle's S did move
    per = (car.S[-1] - car.S[0]) / w
    assert float((per - per[:, :1]).abs().max()) < 1e-12 * float(per.abs().max())
    rate = torch.nan_to_num(car.dSdt) / w
    assert float((rate - rate[..., :1]).abs().max()) < 1e-12 * float(rate.abs().max())


@pytest.mark.slow
def test_free_langevin_known_answer_holds_with_carried_S():
    """The core known answer (free Langevin, gamma dt = 1, exact MSD and VACF of frame
    averages; tests/test_known_answers.py) trained with s_memory carried: both within 5 %.
    About 3-6 min on 2 loaded cores."""
    from colloidcg import evaluate as ev
    from test_known_answers import langevin_truth, langevin_tracks, rollout_free

    traj = from_tracks(langevin_tracks(200, 150, 1.0, 1.0, seed=1))
    res = fit(traj, TrainConfig(epochs=10, batch_frames=8, lr=1e-2, cutoff=3.0, edge=0.0, progress=False,
                                loc_noise="none", s_memory="carried", seed=1))
    sim = rollout_free(res.model, traj, 1000, 160, seed=2)
    msd_true, vacf_true = langevin_truth(1.0, 1.0, 30)
    e_msd = ev.rel_rms(ev.msd(sim, max_lag=30)["msd"].to_numpy(), msd_true, pointwise=True)
    e_vacf = ev.rel_rms(ev.vacf(sim, max_lag=30)["vacf"].to_numpy(), vacf_true)
    print(f"carried S, free Langevin: MSD rel. RMS {e_msd:.4f}, VACF rel. RMS {e_vacf:.4f}")
    assert e_msd <= 0.05
    assert e_vacf <= 0.05
