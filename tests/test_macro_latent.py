"""The latent-state likelihood of block states (colloidcg.scaling.latent).

- block paths: each block state is the particle-weighted mean of K different systems,
  every partition uses each system once, and their partial increments are those of
  block_pairs (z1 - z0 one member's own increment);
- without a fast part the filter's likelihood is exactly the partial-increment likelihood
  (the increments' Gaussian splits into the members' mean and their scatter), up to the
  constant d log(K) / 2 per block state and step;
- on a stationary Ornstein-Uhlenbeck process seen through white noise (the fast part),
  the latent fit recovers the process's restoring rate and noise, where the fit
  conditioned on z_t learns the fast part's regression to the mean (3x too fast) and the
  smoothed state flattens the drift (tests/test_macro.py);
- learn_block and `macro train --states block` use it by default (tests/test_macro.py);
  refusals.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colloidcg.errors import ParameterError
from colloidcg.scaling.latent import BlockPaths, block_paths, kalman_nll
from colloidcg.scaling.macro import MacroSDE, SDEConfig, block_draw, fast_variance, fit_sde, gaussian_nll

torch.set_num_threads(1)

THETA, DT, V, R, K = 0.2, 1.0, 1e-3, 1e-3, 8


def ou_systems(n, steps, seed):
    """n systems of a stationary OU process (rate THETA, variance V per system) about 0.6,
    observed with white noise of variance R at every step: (n, steps, 1)."""
    rng = np.random.default_rng(seed)
    a = math.exp(-THETA * DT)
    x = np.zeros((n, steps))
    x[:, 0] = rng.normal(0.0, math.sqrt(V), n)
    for k in range(steps - 1):
        x[:, k + 1] = a * x[:, k] + math.sqrt(V * (1 - a * a)) * rng.standard_normal(n)
    return (0.6 + x + math.sqrt(R) * rng.standard_normal((n, steps)))[..., None]


def linear_sde(slope, sigma, fast_var, d=1, lam_area=float(K)):
    cfg = SDEConfig(names=[f"z{i}" for i in range(d)], dt=DT, area_px2=lam_area, tile_area_px2=1.0,
                    z_mean=[0.6] * d, z_scale=[1.0] * d, drift_scale=[1.0] * d, noise_scale=[sigma] * d,
                    z0=[0.6] * d, fast_var=fast_var)
    sde = MacroSDE(cfg)
    with torch.no_grad():
        sde.drift_net.linear.weight.copy_(torch.as_tensor(slope, dtype=torch.float64) * torch.eye(d))
        sde.drift_net.linear.bias.zero_()
    return sde


def test_block_paths_are_weighted_means_of_k_different_systems():
    rng = np.random.default_rng(0)
    n, steps = 21, 6
    z = rng.normal(size=(n, steps, 2))
    w = rng.integers(50, 70, (n, steps)).astype(float)
    data = block_paths(z, w, blocks=4, repeats=3, seed=2)
    assert data.mean.shape == (3 * 5, steps, 2) and data.increments.shape == (15, 4, steps - 1, 2)
    assert data.blocks == 4
    # each path's members: recover them from the increments (every system's are distinct)
    inc = np.diff(z, axis=1)
    for b in range(15):
        members = [int(np.argmin(np.abs(inc - data.increments[b, k]).sum((1, 2)))) for k in range(4)]
        np.testing.assert_array_equal(data.increments[b], inc[members])
        assert len(set(members)) == 4
        np.testing.assert_allclose(data.mean[b], (w[members, :, None] * z[members]).sum(0) / w[members].sum(0)[:, None],
                                   rtol=1e-13)
        if b % 5 == 4:                     # a partition: its five block states use 20 different systems
            group = [int(np.argmin(np.abs(inc - data.increments[c, k]).sum((1, 2))))
                     for c in range(b - 4, b + 1) for k in range(4)]
            assert len(set(group)) == 20
    z0, z1 = data.pairs()
    assert z0.shape == (15 * 4 * (steps - 1), 2)
    np.testing.assert_allclose(z0.reshape(15, 4, steps - 1, 2), np.broadcast_to(data.mean[:, None, :-1], (15, 4, steps - 1, 2)))
    np.testing.assert_allclose((z1 - z0).reshape(15, 4, steps - 1, 2), data.increments, rtol=0, atol=1e-15)
    sub = data.take([3, 3, 0])
    np.testing.assert_array_equal(sub.mean[1], data.mean[3])
    with pytest.raises(ParameterError, match="at least 4 small systems"):
        block_paths(z[:3], blocks=4)
    with pytest.raises(ParameterError, match="blocks"):
        block_paths(z, blocks=1)


def test_without_a_fast_part_the_filter_is_the_partial_increment_likelihood():
    """R = 0 and no jitter: the filtered state is the observed block state, and the NLL of
    the block paths equals that of their partial increments (gaussian_nll, lambda = K,
    summed) less d log(K) / 2 per block state and step, for any drift and noise (here
    random networks of one and two variables, lambda = K and lambda = 3)."""
    for d in (1, 2):
        z = np.concatenate([ou_systems(32, 7, seed=1 + k) for k in range(d)], axis=2)
        _check_split(z, d)


def _check_split(z, d):
    data = block_paths(z, blocks=K, repeats=2, seed=0)
    torch.manual_seed(0)
    sde = linear_sde(-0.3, 0.01, None, d=d)
    with torch.no_grad():
        for p in sde.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z0, z1 = data.pairs()
    B, T = data.mean.shape[0], data.mean.shape[1] - 1
    for lam in (float(K), 3.0):
        with torch.no_grad():
            k = float(kalman_nll(sde, data, lam=lam, jitter=0.0)) * B * T
            g = float(gaussian_nll(sde, torch.as_tensor(z0), torch.as_tensor(z1 - z0), lam, 0.0)) * len(z0)
        assert k == pytest.approx(g - 0.5 * d * math.log(K) * B * T, rel=1e-10, abs=1e-8)


def test_the_likelihood_peaks_at_the_true_restoring_rate():
    """With the fast part as observation noise the likelihood of OU block paths is highest
    at the process's own rate (1 - e^-THETA = 0.18 per step) among linear drifts, not at
    the 0.59 that increments conditioned on z_t give (regression to the mean)."""
    z = ou_systems(240, 30, seed=2)
    data = block_paths(z, blocks=K, repeats=4, seed=1)
    fv = [R / K]
    sig = math.sqrt(V * (1 - math.exp(-2 * THETA * DT)) / K)
    rates = np.array([0.06, 0.12, 0.18, 0.27, 0.4, 0.59])
    with torch.no_grad():
        nll = [float(kalman_nll(linear_sde(-r, sig, fv), data, lam=float(K))) for r in rates]
    assert rates[int(np.argmin(nll))] == pytest.approx(1 - math.exp(-THETA * DT), abs=0.01)
    plain = block_draw(z, blocks=K, sets_per_step=40, seed=1)
    slope = np.polyfit(plain.z0[:, 0], (plain.z1 - plain.z0)[:, 0], 1)[0]
    assert slope < -0.45                     # the plain conditioning's regression to the mean


def test_latent_fit_recovers_the_ou_drift_and_noise():
    """The whole fit (fit_sde with latent=: the errors-in-variables start, then the
    filter's likelihood) on OU block paths: drift slope about the mean within 25 % of
    -(1 - e^-THETA) (measured -0.18 to -0.22 over four data seeds), sigma within 10 % of
    the process's (0.94-1.02), where the plain fit's slope is about -0.59."""
    z = ou_systems(400, 30, seed=3)
    fv = fast_variance(z) / K
    data = block_paths(z, blocks=K, repeats=2, seed=1)
    z0, z1 = data.pairs()
    sde, rep = fit_sde(z0, z1, dt=DT, names=["z"], lam=float(K), area_px2=float(K), tile_area_px2=1.0,
                       fast_var=fv, latent=data, latent_lr=1e-2, latent_iterations=60, seed=0)
    zq = torch.linspace(0.585, 0.615, 7, dtype=torch.float64)[:, None]
    with torch.no_grad():
        mu = sde.drift(zq)[:, 0].numpy()
        sg = sde.sigma(zq)[:, 0, 0].numpy()
    slope = np.polyfit(zq[:, 0].numpy(), mu, 1)[0]
    assert slope == pytest.approx(-(1 - math.exp(-THETA * DT)), rel=0.25)
    assert sg.mean() == pytest.approx(math.sqrt(V * (1 - math.exp(-2 * THETA * DT)) / K), rel=0.1)
    assert rep.latent_val_nll is not None and rep.latent_val_nll <= rep.latent_train_nll + 1.0
    with pytest.raises(ParameterError, match="exclude each other"):
        fit_sde(z0, z1, dt=DT, names=["z"], latent=data, paths=np.zeros((3, 2, 1)))


def test_learn_block_latent_refusals():
    from colloidcg.scaling.macro import learn_block
    with pytest.raises(ParameterError, match="latent"):
        learn_block([[None]] * 4, steps=1, observables=["psi6"], blocks=2, latent=True, smooth_state=True)
    with pytest.raises(ParameterError, match="latent"):
        learn_block([[None]] * 4, steps=1, observables=["psi6"], blocks=2, latent=True, fast_part=False)
    with pytest.raises(ParameterError, match="expected True, False or 'auto'"):
        learn_block([[None]] * 4, steps=1, observables=["psi6"], blocks=2, latent="always")
    assert isinstance(block_paths(np.zeros((4, 3, 1)), blocks=2), BlockPaths)
