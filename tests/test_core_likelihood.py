"""The likelihoods: the multistep NLL (K = 1 is the one-step NLL; exact K-step densities for
free particles), the frame-averaging coefficients, and the exact-OU step (exact free-particle
statistics, energy conservation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from colloidcg.core import MetriplecticModel, ModelConfig, State, find_pairs, multistep_nll, transition_nll
from core_helpers import ou_step
from colloidcg.core.ou import coefficients

torch.set_num_threads(1)


def model(seed=0, frame_average=True, substrate=True, k_B=0.8):
    torch.manual_seed(seed)
    m = MetriplecticModel(ModelConfig(dim=2, cutoff=1.0, width=12, energy_width=10, encoder_width=10,
                                      frame_average=frame_average, substrate=substrate, k_B=k_B)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
        m.raw_gamma0.fill_(0.4) if substrate else None
    return m


def sequence(m, n, K, size, seed=0, box=None):
    """A (K+1)-frame sequence: a short stochastic rollout of the model itself."""
    from colloidcg.core import rollout
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    v = torch.randn(n, 2, generator=g, dtype=torch.float64)
    S = m.initial_S(r, None, box).detach()
    with torch.no_grad():
        out = rollout(m, State(r, v, S), K, 0.1, box=box, seed=seed)
    return out.r, out.v, S


@pytest.mark.parametrize("frame_average", [True, False])
def test_multistep_with_one_step_is_transition_nll(frame_average):
    m = model(1, frame_average)
    r_seq, v_seq, S0 = sequence(m, 30, 1, 2.5)
    pairs = find_pairs(r_seq[0], 1.0)
    assert pairs.shape[0] > 20
    valid = torch.ones(1, 30, dtype=torch.bool)
    valid[0, :3] = False
    for loc in (0.0, 1e-3):
        with torch.no_grad():
            one, _ = transition_nll(m, State(r_seq[0], v_seq[0], S0), v_seq[1], valid[0], pairs, 0.1,
                                    loc_var=loc)
            k1 = multistep_nll(m, r_seq, v_seq, S0, valid, pairs, 0.1, loc_var=loc)
        assert math.isfinite(float(one))
        assert float(k1) == pytest.approx(float(one), rel=1e-12)


def ou_average_cov(x, lag):
    """Cov of unit-interval averages of a unit-variance OU process with rate x, ``lag``
    intervals apart: int_0^1 int_0^1 e^{-x |lag + a - b|} da db
    = int_{-1}^{1} (1 - |w|) e^{-x |lag + w|} dw, by quadrature (kink split off)."""
    f = lambda w: (1 - abs(w)) * math.exp(-x * abs(lag + w))  # noqa: E731
    pts = [-lag] if -1 < -lag < 1 else None
    return integrate.quad(f, -1, 1, points=pts, epsabs=1e-15, epsrel=1e-13, limit=200)[0]


def _exact_free_nll(v0, vk, k, mean_factor, var):
    """Mean NLL of vk ~ N(mean_factor v0, var I) in 2D."""
    res = vk - mean_factor * v0
    return float((0.5 * res.square().sum(-1) / var + math.log(2 * math.pi * var)).mean())


@pytest.mark.parametrize("frame_average", [True, False])
def test_multistep_matches_exact_k_step_density_of_free_particles(frame_average):
    """Free particles (no neighbours, S-independent friction): the model's velocities are a
    linear Gaussian process, and the K-step NLL must equal the exact marginal densities of
    v_{t+k} given v_t, k = 1..K, computed here independently: for frame averages by
    quadrature of the Ornstein-Uhlenbeck covariance, for Euler-Maruyama from the AR(1)."""
    m = model(2, frame_average)
    with torch.no_grad():
        m.raw_alpha0.fill_(0.0)                  # friction rate independent of temperature
    K, n, dt = 4, 50, 0.1
    g = torch.Generator().manual_seed(3)
    r = torch.arange(n, dtype=torch.float64).unsqueeze(-1).repeat(1, 2) * 10.0   # far apart
    v_seq = torch.randn(K + 1, n, 2, generator=g, dtype=torch.float64)
    r_seq = r + torch.cumsum(v_seq, 0) * dt
    S0 = m.initial_S(r, None).detach()
    pairs = find_pairs(r, 1.0)
    assert pairs.shape[0] == 0
    valid = torch.ones(K, n, dtype=torch.bool)
    got = float(multistep_nll(m, r_seq, v_seq, S0, valid, pairs, dt).detach())
    with torch.no_grad():
        ns = m.compute(State(r, v_seq[0], S0), pairs)
    gamma = float(ns.diss.gamma0[0])
    s2 = float(m.config.k_B * ns.thermo.theta[0] / ns.m)          # kT/m
    assert torch.allclose(ns.diss.gamma0, ns.diss.gamma0[0]) and torch.allclose(ns.thermo.theta, ns.thermo.theta[0])
    want = []
    for k in range(1, K + 1):
        if frame_average:
            c0, ck = ou_average_cov(gamma * dt, 0), ou_average_cov(gamma * dt, k)
            factor, var = ck / c0, s2 * (c0 - ck ** 2 / c0)
        else:
            phi = 1 - gamma * dt
            q = 2 * s2 * gamma * dt                        # EM noise variance per step
            factor, var = phi ** k, q * sum(phi ** (2 * j) for j in range(k))
        want.append(_exact_free_nll(v_seq[0], v_seq[k], k, factor, var))
    assert got == pytest.approx(float(np.mean(want)), rel=1e-9)


def test_frame_average_coefficients_against_quadrature():
    """rho1, the variance of a frame average and the one-frame conditional variance from
    :mod:`colloidcg.core.ou` against numerical integration of the OU kernel e^{-x|s|}."""
    for x in (1e-5, 0.05, 1.0, 7.0):
        c0, c1 = ou_average_cov(x, 0), ou_average_cov(x, 1)
        co = coefficients(torch.tensor([x], dtype=torch.float64))
        assert float(co.phi2) * 2 == pytest.approx(c0, rel=1e-8)
        assert float(co.rho1) == pytest.approx(c1 / c0, rel=1e-8)
        # G = Var(v1 | v0) / Sigma with Sigma = 2 x (EM variance of one frame, units s2)
        assert float(co.G) == pytest.approx((c0 - c1 ** 2 / c0) / (2 * x), rel=1e-7)


def test_exact_ou_step_conserves_free_particle_energy_and_samples_maxwell():
    """Free particles: each step conserves every particle's energy m|u|^2/2 + U(S) to
    rounding (heat goes into U exactly), and the instantaneous velocity's variance relaxes
    to kT/m per component with kT = k_B theta."""
    m = model(4, True, k_B=0.5)
    n = 4000
    r = torch.arange(n, dtype=torch.float64).unsqueeze(-1).repeat(1, 2) * 10.0
    S = m.initial_S(r, None).detach()
    g = torch.Generator().manual_seed(0)
    st = State(r, 3.0 * torch.randn(n, 2, generator=g, dtype=torch.float64), S)
    pairs = find_pairs(r, 1.0)

    def energy(s):
        ns = m.compute(s, pairs)
        return (0.5 * ns.m * s.v.square().sum(-1) + ns.thermo.U).detach(), ns

    E0, ns0 = energy(st)
    with torch.no_grad():
        for _ in range(60):
            st, dr = ou_step(m, st, pairs, 0.2, generator=g)
    E1, ns1 = energy(st)
    assert float((E1 - E0).abs().max()) <= 1e-10 * float(E0.abs().max())
    kT_over_m = float((m.config.k_B * ns1.thermo.theta / ns1.m).mean().detach())
    assert float(st.v.square().mean()) == pytest.approx(kT_over_m, rel=0.05)
