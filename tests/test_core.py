"""The five guarantees of the metriplectic core, on random states and random weights (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from colloidcg.core import MetriplecticModel, ModelConfig, State, find_pairs, rollout
from colloidcg.core.graph import NeighbourList, minimum_image
from colloidcg.core.terms import REGISTRY
from colloidcg.core.terms.base import energy_of, force_of
from core_helpers import dense_L, dense_M, em_step, flat, gradients, unflat

H = 1.0
torch.set_num_threads(1)
SETTINGS = dict(max_examples=12, deadline=None, derandomize=True)


def pair_terms(seed):
    """Half of the seeds (independently of the parity that switches the deviatoric energy
    on) get a learned pair energy with 4 terms."""
    return 4 * ((seed // 2) % 2)


def random_model(seed, dim=2, n_s=1, substrate=True, k_B=0.7, deviatoric=False, width=12, n_pair=None,
                 **config):
    """A float64 model with small random networks, its weights moved away from their
    initialisation; ``config``: further ModelConfig fields (e.g. per-particle sizes)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=dim, cutoff=H, n_s=n_s, substrate=substrate, k_B=k_B, width=width,
                      energy_width=10, encoder_width=10, deviatoric=deviatoric,
                      n_pair=pair_terms(seed) if n_pair is None else n_pair, **config)
    m = MetriplecticModel(cfg).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def random_state(seed, n, dim, n_s, size):
    g = torch.Generator().manual_seed(seed + 1000)
    r = torch.rand(n, dim, generator=g, dtype=torch.float64) * size
    v = torch.randn(n, dim, generator=g, dtype=torch.float64)
    S = torch.randn(n, n_s, generator=g, dtype=torch.float64)
    return State(r, v, S)


cases = st.tuples(st.integers(0, 10_000), st.sampled_from([2, 3]), st.sampled_from([1, 2]),
                  st.booleans())


# ----------------------------------------------------------------- graph
@given(st.integers(0, 1000), st.sampled_from([2, 3]), st.booleans())
@settings(**SETTINGS)
def test_pairs_match_brute_force(seed, dim, periodic):
    rng = np.random.default_rng(seed)
    L = 4.0
    r = torch.as_tensor(rng.uniform(0, L, (60, dim)))
    box = torch.full((dim,), L, dtype=torch.float64) if periodic else None
    pairs = find_pairs(r, 1.3, box)
    rij = minimum_image(r[:, None] - r[None], box)
    dist = rij.norm(dim=-1)
    iu = torch.triu_indices(60, 60, 1)
    close = dist[iu[0], iu[1]] < 1.3
    want = {(int(a), int(b)) for a, b in iu.T[close]}
    assert {tuple(p) for p in pairs.tolist()} == want


def test_verlet_list_rebuilds_only_when_needed():
    box = torch.tensor([5.0, 5.0], dtype=torch.float64)
    nl = NeighbourList(1.0, 0.4, box)
    r = torch.rand(50, 2, dtype=torch.float64) * 5
    nl.update(r)
    nl.update(r + 0.1)          # moved 0.14 < skin/2: reuse
    assert nl.n_builds == 1
    nl.update(r + 0.3)          # moved 0.42 > skin/2: rebuild
    assert nl.n_builds == 2


# ----------------------------------------------------------------- guarantee 1: momentum
@given(cases)
@settings(**SETTINGS)
def test_momentum_conserved_every_step_with_noise(case):
    seed, dim, n_s, _ = case
    m = random_model(seed, dim, n_s, substrate=False)
    L = 3.5
    box = torch.full((dim,), L, dtype=torch.float64)
    s = random_state(seed, 40 if dim == 2 else 60, dim, n_s, L)
    assert_momentum_conserved(m, s, box, torch.Generator().manual_seed(seed), 5)


def assert_momentum_conserved(m, s, box, gen, steps):
    """Take ``steps`` noisy steps of 0.01 from state ``s`` in the periodic ``box``; each
    must keep the total momentum to 1e-12 of sum m|v|. Returns the last state."""
    nl = NeighbourList(H, 0.2, box)
    mass = float(m.mass.detach())
    for _ in range(steps):
        p0, scale = mass * s.v.sum(0), mass * s.v.abs().sum()
        with torch.no_grad():
            s = em_step(m, s, nl.update(s.r), 0.01, generator=gen, box=box)
        assert float((mass * s.v.sum(0) - p0).abs().max()) <= 1e-12 * float(scale)
    return s


# ----------------------------------------------------------------- guarantees 2, 3: degeneracy, laws
@given(cases)
@settings(**SETTINGS)
def test_first_and_second_law_in_deterministic_limit(case):
    seed, dim, n_s, substrate = case
    m = random_model(seed, dim, n_s, substrate=substrate, k_B=0.0)
    s = random_state(seed, 7, dim, n_s, 1.2)
    pairs = find_pairs(s.r, H)
    gE, gS = gradients(m, s, pairs)
    M = dense_M(m, s, pairs).detach()
    L = dense_L(m, 7)
    gE, gS = gE.detach(), gS.detach()
    dr, dv, dS = m.drift(s, pairs)
    drift = torch.cat([dr.reshape(-1), dv.reshape(-1), dS.reshape(-1)]).detach()
    # the matrix-free drift is L dE + M dS
    assert torch.allclose(drift, L @ gE + M @ gS, rtol=1e-10, atol=1e-12 * float(drift.abs().max()))
    # first law: dE/dt = dE/dx . drift = 0
    assert abs(float(gE @ drift)) <= 1e-9 * float(gE.norm() * drift.norm())
    # degeneracy: M dE = 0, L dS = 0; symmetry, antisymmetry
    assert float((M @ gE).norm()) <= 1e-12 * float(M.norm() * gE.norm())
    assert float((L @ gS).abs().max()) == 0.0
    assert torch.allclose(M, M.T, atol=1e-14 * float(M.abs().max()))
    assert torch.equal(L, -L.T)
    # second law: dS/dt = dS . M dS >= 0, M positive semidefinite, dS/dt from drift agrees
    sdot = float(gS @ M @ gS)
    assert sdot >= 0.0
    assert math.isclose(float(dS.detach().sum()), sdot, rel_tol=1e-9, abs_tol=1e-12)
    assert float(torch.linalg.eigvalsh(M).min()) >= -1e-10 * float(M.abs().max())


@given(cases)
@settings(max_examples=6, deadline=None, derandomize=True)
def test_ito_term_is_divergence_of_M_and_keeps_mean_energy(case):
    """The analytic k_B div M equals the autograd divergence of the dense M(x), and
    dE . div M + tr(Hess E . M) = div(M dE) = 0: to first order in dt the mean energy
    change of a stochastic step vanishes."""
    seed, dim, n_s, substrate = case
    m = random_model(seed, dim, n_s, substrate=substrate, k_B=0.6)
    n = 5
    s = random_state(seed, n, dim, n_s, 1.0)
    pairs = find_pairs(s.r, H)

    def Mfun(x):
        return dense_M(m, unflat(x, n, dim, n_s), pairs)

    x = flat(s).clone()
    J = torch.autograd.functional.jacobian(Mfun, x, vectorize=True)
    divM = torch.einsum("kll->k", J)
    gE, gS = gradients(m, s, pairs)
    M = Mfun(x)
    want = dense_L(m, n) @ gE + M @ gS + m.config.k_B * divM
    dr, dv, dS = m.drift(s, pairs)
    got = torch.cat([dr.reshape(-1), dv.reshape(-1), dS.reshape(-1)])
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-11 * float(want.detach().abs().max()))

    def Efun(x):
        return m.total_energy(unflat(x, n, dim, n_s), pairs)

    HE = torch.autograd.functional.hessian(Efun, x, vectorize=True)
    balance = gE @ divM + torch.trace(HE @ M)
    assert abs(float(balance.detach())) <= 1e-9 * float((gE.norm() * divM.norm() + HE.norm() * M.norm()).detach())


# ----------------------------------------------------------------- guarantee 4: FDT
@pytest.mark.parametrize("dim,n_s,substrate", [(2, 1, True), (3, 2, False)])
def test_noise_covariance_is_2kB_M_dt(dim, n_s, substrate):
    m = random_model(7, dim, n_s, substrate=substrate, k_B=0.8)
    n = 4
    s = random_state(3, n, dim, n_s, 0.9)
    pairs = find_pairs(s.r, H)
    dt = 0.01
    nsamp = 10_000
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        ns = m.compute(s, pairs)
        # batch the 10^4 draws by stacking independent calls
        draws = []
        for _ in range(nsamp):
            dv, dS = m.noise(s, pairs, dt, gen, ns=ns)
            draws.append(torch.cat([dv.reshape(-1), dS.reshape(-1)]))
        X = torch.stack(draws)
        want = (2 * m.config.k_B * dt * dense_M(m, s, pairs))[n * dim:, n * dim:]
    emp = X.T @ X / nsamp   # zero-mean noise: second moment is the covariance
    dg = torch.diagonal(want)
    se = torch.sqrt((dg[:, None] * dg[None, :] + want ** 2) / nsamp)
    z = (emp - want) / (se + 1e-300)
    assert float(X.mean(0).abs().max() / dg.sqrt().max()) < 5 / math.sqrt(nsamp)
    assert float(z.abs().max()) < 5.0
    assert float((emp - want).norm() / want.norm()) < 0.05


# ----------------------------------------------------------------- guarantee 5: invariance
def _rotation(dim, seed):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return Q


@given(cases)
@settings(**SETTINGS)
def test_invariance_rotation_translation_permutation(case):
    seed, dim, n_s, substrate = case
    m = random_model(seed, dim, n_s, substrate=substrate, deviatoric=bool(seed % 2))
    n = 12
    s = random_state(seed, n, dim, n_s, 1.6)
    Q = _rotation(dim, seed)
    shift = torch.randn(dim, dtype=torch.float64) * 5
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def evaluate(r, v, S):
        pairs = find_pairs(r, H)
        S_enc = m.initial_S(r, pairs)
        st_ = State(r, v, S)
        E = m.total_energy(st_, pairs)
        ns = m.compute(st_, pairs)
        _, dv, dS = m.drift(st_, pairs, ns=ns)
        return E.detach(), S_enc.detach(), ns.force.detach(), dv.detach(), dS.detach()

    E0, S0, F0, a0, s0 = evaluate(s.r, s.v, s.S)
    r1 = (s.r @ Q.T + shift)[perm]
    v1 = (s.v @ Q.T)[perm]
    E1, S1, F1, a1, s1 = evaluate(r1, v1, s.S[perm])
    tol = dict(rtol=1e-9, atol=1e-10)
    assert torch.allclose(E1, E0, **tol)
    assert torch.allclose(S1, S0[perm], **tol)
    assert torch.allclose(F1, (F0 @ Q.T)[perm], **tol)
    assert torch.allclose(a1, (a0 @ Q.T)[perm], **tol)
    assert torch.allclose(s1, s0[perm], **tol)


# ----------------------------------------------------------------- physics of the parts
@given(st.integers(0, 1000), st.sampled_from([1, 2]))
@settings(**SETTINGS)
def test_internal_energy_convex_monotone(seed, n_s):
    m = random_model(seed, 2, n_s)
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(200, n_s, generator=g, dtype=torch.float64) * 4
    dens = torch.rand(200, generator=g, dtype=torch.float64) * 5 + 0.05
    th = m.terms["density"].thermo(dens, S, m.heat_weights)
    assert bool((th.T > 0).all()) and bool((th.theta > 0).all()) and bool((th.kappa > 0).all())
    assert bool((th.P > 0).all())   # dU/d(density) > 0  <=>  pressure -dU/dV > 0
    x = torch.cat([S, (1 / dens).unsqueeze(-1)], -1)[:20]
    eos = m.terms["density"].eos
    c = m.config

    def u(xx):
        return c.theta_ref * eos(xx[:, :n_s], xx[:, n_s] / c.volume_ref, c.stiffness).sum()

    Hs = torch.autograd.functional.hessian(u, x)
    for a in range(20):
        blk = Hs[a, :, a, :]
        assert float(torch.linalg.eigvalsh(blk).min()) > -1e-10   # jointly convex in (S, V)


@given(st.integers(0, 1000), st.sampled_from([1, 3]))
@settings(**SETTINGS)
def test_closed_form_thermodynamics_match_autograd(seed, n_s):
    """T, P, theta and kappa in closed form (no autograd in the drift) equal the autograd
    derivatives of the network U(S, V)."""
    m = random_model(seed, 2, n_s)
    m.update_config(stiffness=7.0, volume_ref=0.3, theta_ref=2.0)
    g = torch.Generator().manual_seed(seed)
    S = (torch.randn(50, n_s, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    dens = (torch.rand(50, generator=g, dtype=torch.float64) * 5 + 0.05).requires_grad_(True)
    w = m.heat_weights
    term = m.terms["density"]
    u = 2.0 * term.eos(S, 1.0 / (dens * 0.3), 7.0)
    T, P = torch.autograd.grad(u.sum(), (S, dens), create_graph=True)
    theta = T @ w
    kappa = torch.autograd.grad(theta.sum(), S, create_graph=True)[0] @ w
    th = term.thermo(dens, S, w)
    for got, want in ((th.U, u), (th.T, T), (th.P, P), (th.theta, theta), (th.kappa, kappa)):
        assert torch.allclose(got, want, rtol=1e-11, atol=1e-12 * float(want.detach().abs().max()))


def test_kernel_and_coefficients_vanish_beyond_cutoff():
    m = random_model(1)
    q = torch.linspace(0, 1.5, 301, dtype=torch.float64)
    W, dW, coef = m.pairfn(q)
    assert bool((W[q >= 1] == 0).all()) and bool((dW[q >= 1] == 0).all())
    assert bool((coef[q >= 1] == 0).all()) and bool((coef >= 0).all())
    assert bool((dW <= 0).all())


@given(cases)
@settings(**SETTINGS)
def test_pair_energy_repulsive_and_forces_are_its_gradient(case):
    """The learned pair energy is >= 0, non-increasing and 0 beyond its largest contact
    distance (< h); the model's forces with it are exactly -dE/dr (periodic box)."""
    seed, dim, n_s, substrate = case
    m = random_model(seed, dim, n_s, substrate=substrate, n_pair=5)
    pot = m.terms["pair"].potential
    m_raw = pot.raw.detach().clone()
    q = torch.linspace(0, 1.2, 601, dtype=torch.float64)
    with torch.no_grad():
        phi, dphi = pot(q)
    b = pot.ranges().detach().to(q.dtype)
    assert bool((phi >= 0).all()) and bool((dphi <= 0).all()) and bool((phi[:-1] >= phi[1:]).all())
    assert bool((phi[q >= b.max()] == 0).all()) and bool((dphi[q >= b.max()] == 0).all())
    assert float(phi[0]) > 0
    L = 2.2
    box = torch.full((dim,), L, dtype=torch.float64)
    s = random_state(seed, 14 if dim == 2 else 24, dim, n_s, L)
    pairs = find_pairs(s.r, H, box)
    r = s.r.clone().requires_grad_(True)
    E = m.total_energy(State(r, s.v, s.S), pairs, box)
    g, = torch.autograd.grad(E, r)
    F = m.compute(s, pairs, box).force
    assert torch.allclose(F.detach(), -g, rtol=1e-9, atol=1e-11 * float(g.abs().max()))
    # the pair energy's part of the force is the pairwise sum of -phi'(r) e_ij
    with torch.no_grad():
        pot.raw.fill_(-200.0)                          # coefficients 0: no pair energy
        F0 = m.compute(s, pairs, box).force
        rij = minimum_image(s.r[pairs[:, 0]] - s.r[pairs[:, 1]], box)
        dist = rij.norm(dim=-1)
        pot.raw.copy_(m_raw)
        dphi = m.terms["pair"].phi(dist / H)[1]
        f = -(dphi / H / dist).unsqueeze(-1) * rij
        want = torch.zeros_like(F0).index_add_(0, pairs[:, 0], f).index_add_(0, pairs[:, 1], -f)
    assert float(want.abs().max()) > 0
    assert torch.allclose(F.detach() - F0, want, rtol=1e-9, atol=1e-11 * float(want.abs().max()))


def _lattice(dim, cells, a):
    """Positions of a triangular (2D) or simple cubic (3D) lattice of spacing ``a`` filling a
    periodic box, and the box; both lattices have isotropic second-rank fabric tensors."""
    if dim == 2:
        jj, ii = (g.ravel() for g in np.meshgrid(np.arange(cells), np.arange(2 * cells)))
        r = np.column_stack([(jj + 0.5 * (ii % 2)) * a, ii * a * math.sqrt(3) / 2]).astype(float)
        box = np.array([cells * a, 2 * cells * a * math.sqrt(3) / 2])
    else:
        r = np.stack(np.meshgrid(*[np.arange(cells)] * 3), -1).reshape(-1, 3) * a
        box = np.full(3, cells * a)
    return torch.as_tensor(r, dtype=torch.float64), torch.as_tensor(box, dtype=torch.float64)


@pytest.mark.parametrize("dim", [2, 3])
def test_deviatoric_energy_is_a_shear_energy(dim):
    """E_dev is zero for an unstrained lattice whatever its density (isotropic fabric), has no
    forces there, grows as strain^2 under a volume-preserving shear, and its forces are
    O(1) of the calibrated force scale theta_ref * stiffness / h, not of the thermal scale."""
    m = random_model(3, dim, 1, substrate=False, deviatoric=True, n_pair=0)
    m.update_config(stiffness=250.0)
    term = m.terms["deviatoric"]
    with torch.no_grad():
        term.raw_mu.fill_(math.log(math.e - 1))                    # mu = 1
    r0, box0 = _lattice(dim, 6, 0.45)
    pairs = find_pairs(r0, H * 1.01, box0)
    with torch.no_grad():
        m.calibrate(m.neighbour_weight(r0, pairs, box0))          # fabric_ref as training sets it

    def dev(r, pairs, box):
        return term.evaluate(m.geometry(r, pairs, box, None), None, None)

    def energy(strain, compress=1.0):
        A = torch.eye(dim, dtype=torch.float64) * compress
        A[0, 0] *= 1 + strain
        A[1, 1] /= 1 + strain                                     # det A = compress^dim
        r, box = r0 @ A.T, box0 * torch.diagonal(A)
        return dev(r, find_pairs(r, H, box), box).energy.detach()       # all per particle

    scale = m.config.theta_ref * m.config.stiffness
    for c in (0.9, 1.0, 1.1):                                     # isotropic compression or expansion
        assert float(energy(0.0, c).abs().max()) < 1e-12 * scale
    assert float(dev(r0, pairs, box0).force.detach().abs().max()) < 1e-10 * scale / H
    e1, e2 = float(energy(0.001).sum()), float(energy(0.002).sum())
    assert e1 > 0
    assert e2 / e1 == pytest.approx(4.0, rel=0.02)               # harmonic at small strain
    r = r0.clone()
    r[:, 0] *= 1.02
    r[:, 1] /= 1.02
    box = box0.clone()
    box[0] *= 1.02
    box[1] /= 1.02
    f = dev(r + 0.01 * torch.randn_like(r), find_pairs(r, H, box), box).force.detach()
    assert 1e-3 * scale / H < float(f.norm(dim=-1).mean()) < 10 * scale / H


@pytest.mark.parametrize("n_pair", [0, 4])
def test_tabulated_copy_matches_the_networks(n_pair):
    """The fast copy (pair functions, pair energy when the model has one, equation of
    state) gives the networks' forces and energy to its reported interpolation errors, and
    leaves the original untouched."""
    m = random_model(3, 2, 1, n_pair=n_pair)
    s = random_state(3, 60, 2, 1, 4.0)
    box = torch.tensor([4.0, 4.0], dtype=torch.float64)
    pairs = find_pairs(s.r, H, box)
    with torch.no_grad():
        exact = m.compute(s, pairs, box)
        E = m.total_energy(s, pairs, box)
        fast, errors = m.tabulated((s.S, exact.thermo.dens))
        table = fast.compute(s, pairs, box)
        E_tab = fast.total_energy(s, pairs, box)
    assert type(m.pairfn).__name__ == "PairFunctions" and type(fast.pairfn).__name__ == "TabulatedPairFunctions"
    assert set(errors) == {"pair_functions", "density"} | ({"pair"} if n_pair else set())
    assert 0 < errors["pair_functions"] < 1e-6 and 0 < errors["density"] < 1e-2
    if n_pair:
        assert 0 < errors["pair"] < 1e-3                       # kinks of dphi/dq at q = b_k
    fmax = float(exact.force.abs().max())
    assert float((table.force - exact.force).abs().max()) < 1e-4 * fmax
    assert abs(float(E_tab - E)) < 1e-5 * abs(float(E))
    assert float((table.thermo.theta - exact.thermo.theta).abs().max()) < 1e-4 * float(exact.thermo.theta.abs().max())


# ----------------------------------------------------------------- every energy term
def term_model(name, seed=4, dim=2):
    """A model with the energy term ``name`` switched on (with its calibrated scales)."""
    on = {"pair": {"n_pair": 4}, "deviatoric": {"deviatoric": True}}.get(name, {})
    terms = {} if name in ("density", "pair", "deviatoric") else {name: {}}   # by name, default options
    m = random_model(seed, dim, 1, substrate=True, n_pair=on.get("n_pair", 0),
                     deviatoric=on.get("deviatoric", False), terms=terms)
    assert name in m.terms, f"no configuration switches the term {name!r} on; add it to term_model"
    with torch.no_grad():
        m.update_config(stiffness=3.0)
        for p in m.terms[name].parameters():
            p.add_(0.5)                                        # away from small initial strengths
    return m


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("dim", [2, 3])
def test_every_energy_term_is_conservative_momentum_conserving_and_invariant(name, dim):
    """Each registered term's closed-form forces are minus the autograd gradient of its
    energy, sum to zero (momentum), and rotate with the configuration (invariance)."""
    m = term_model(name, dim=dim)
    L = 2.4
    box = torch.full((dim,), L, dtype=torch.float64)
    s = random_state(5, 30 if dim == 2 else 50, dim, 1, L)
    pairs = find_pairs(s.r, H, box)
    term = m.terms[name]
    r = s.r.clone().requires_grad_(True)
    g = m.geometry(r, pairs, box, None)
    dens = m.pairfn.at_zero() + torch.zeros(len(r), dtype=r.dtype).index_add(0, g.ij, torch.cat([g.W, g.W]))
    thermo = m.terms["density"].thermo(dens, s.S, m.heat_weights)
    out = term.evaluate(g, s.S, thermo)
    energy = energy_of(g, out)
    grad, = torch.autograd.grad(energy.sum(), r)
    F = force_of(g, out).detach()
    if name != "density":          # only U may depend on S (the temperatures come from U alone)
        S_req = s.S.clone().requires_grad_(True)
        e_S = energy_of(g, term.evaluate(g, S_req, thermo)).sum()
        gS = torch.autograd.grad(e_S, S_req, allow_unused=True)[0]
        assert gS is None or float(gS.abs().max()) == 0.0
    assert float(F.abs().max()) > 0 and float(energy.detach().abs().sum()) > 0
    assert torch.allclose(F, -grad, rtol=1e-9, atol=1e-10 * float(grad.abs().max()))
    assert float(F.sum(0).abs().max()) < 1e-11 * float(F.abs().sum())
    Q = _rotation(dim, 3)
    rq = s.r @ Q.T
    with torch.no_grad():
        gq = m.geometry(rq, find_pairs(rq, H), None, None)
        g0 = m.geometry(s.r, find_pairs(s.r, H), None, None)
        th0 = m.terms["density"].thermo(m.pairfn.at_zero() + torch.zeros(len(r), dtype=r.dtype).index_add(
            0, g0.ij, torch.cat([g0.W, g0.W])), s.S, m.heat_weights)
        o0, oq = term.evaluate(g0, s.S, th0), term.evaluate(gq, s.S, th0)
        e0, eq = energy_of(g0, o0), energy_of(gq, oq)
        f0, fq = force_of(g0, o0), force_of(gq, oq)
    assert torch.allclose(eq, e0, rtol=1e-10, atol=1e-12)
    assert torch.allclose(fq, f0 @ Q.T, rtol=1e-9, atol=1e-10 * float(f0.abs().max()))


# ----------------------------------------------------------------- integration
def test_rollout_reproducible_and_seed_dependent():
    m = random_model(5, 2, 1)
    s = random_state(5, 30, 2, 1, 3.0)
    box = torch.tensor([3.0, 3.0], dtype=torch.float64)
    a = rollout(m, s, 20, 0.005, box=box, seed=123)
    b = rollout(m, s, 20, 0.005, box=box, seed=123)
    c = rollout(m, s, 20, 0.005, box=box, seed=124)
    assert torch.equal(a.r, b.r) and torch.equal(a.S, b.S)
    assert not torch.equal(a.r, c.r)


def test_verlet_skin_does_not_change_deterministic_rollout():
    m = random_model(6, 2, 1)
    s = random_state(6, 40, 2, 1, 4.0)
    box = torch.tensor([4.0, 4.0], dtype=torch.float64)
    a = rollout(m, s, 30, 0.01, box=box, noise=False, skin=0.5)
    b = rollout(m, s, 30, 0.01, box=box, noise=False, skin=0.0)
    assert b.n_neighbour_builds == 30 and a.n_neighbour_builds < 30
    assert torch.allclose(a.r, b.r, atol=1e-12)


def test_boundary_particles_are_prescribed():
    m = random_model(8, 2, 1)
    s = random_state(8, 20, 2, 1, 2.0)
    boundary = torch.zeros(20, dtype=torch.bool)
    boundary[:5] = True
    out = rollout(m, s, 10, 0.01, boundary=boundary, seed=1)
    assert torch.equal(out.r[:, :5], s.r[:5].expand(11, 5, 2))
    assert not torch.equal(out.r[-1, 5:], s.r[5:])


@pytest.mark.slow
def test_long_stochastic_run_mean_energy_does_not_drift():
    """Ensemble of stochastic runs: the mean total energy stays at its initial value; the
    same runs without the Ito term drift (shows the test can see a drift)."""
    m = random_model(2, 2, 1, substrate=True, k_B=0.5)
    s = random_state(2, 24, 2, 1, 3.0)
    box = torch.tensor([3.0, 3.0], dtype=torch.float64)
    dt, steps, reps = 2e-3, 150, 16

    def run(ito):
        dE = []
        for rep in range(reps):
            gen = torch.Generator().manual_seed(rep)
            cur = s.clone()
            nl = NeighbourList(H, 0.3, box)
            E0 = float(m.total_energy(cur, nl.update(cur.r), box))
            with torch.no_grad():
                for _ in range(steps):
                    pairs = nl.update(cur.r)
                    ns = m.compute(cur, pairs, box)
                    _, dv, dS = m.drift(cur, pairs, box, ns=ns, ito=ito)
                    nv, nS = m.noise(cur, pairs, dt, gen, box, ns=ns)
                    v = cur.v + dv * dt + nv
                    cur = State(torch.remainder(cur.r + v * dt, box), v, cur.S + dS * dt + nS)
            dE.append(float(m.total_energy(cur, nl.update(cur.r), box)) - E0)
        dE = np.array(dE)
        return dE.mean(), dE.std(ddof=1) / np.sqrt(reps)

    mean_ito, se_ito = run(True)
    mean_no, se_no = run(False)
    print(mean_ito, se_ito, mean_no, se_no)
    assert abs(mean_ito) < 4 * se_ito + 1e-3
    assert abs(mean_no) > 4 * se_no


# ----------------------------------------------------------------- the pair-splitting step
def _lattice_terms(seed, side=4, k_B=0.7):
    """A side x side square lattice (spacing 0.9, periodic; 4 neighbours within the range
    1): equal densities, so every particle and pair has the same temperature. Returns
    (model, terms, v0, box)."""
    m = random_model(seed, 2, 1, substrate=False, k_B=k_B)
    g = torch.arange(side, dtype=torch.float64) * 0.9
    r = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2) + 0.05
    box = torch.full((2,), 0.9 * side, dtype=torch.float64)
    n = side * side
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    S = torch.zeros(n, 1, dtype=torch.float64)
    with torch.no_grad():
        t = m.terms_of(r, v, S, find_pairs(r, H, box), box, None)
    assert t.geom.i.shape[0] == 2 * n
    return m, t, v, box


def _em_friction(t, v, dt, k_B, xi):
    """The Euler-Maruyama increment of the pair friction and its noise from velocities v."""
    from colloidcg.core import dynamics
    t2 = t._replace(v=v, vij=v[t.geom.i] - v[t.geom.j])
    with_f, _ = dynamics.pair_drift(t2, k_B, False, False, True)
    without, _ = dynamics.pair_drift(t2, k_B, False, False, False)
    dv = (with_f - without) * dt
    if xi is not None:
        dv = dv + dynamics.noise(t2, v, dt, k_B, xi, None, True)[0]
    return dv


def test_pair_sweep_conserves_momentum_and_energy_and_heats():
    """One sweep: total momentum exact, kinetic energy lost = heat booked (to rounding), and
    without noise every particle gains heat (each pair's relative speed only decays)."""
    from colloidcg.core import dynamics
    m, t, v, _ = _lattice_terms(1)
    mass = t.m
    for dt in (1e-3, 0.3, 30.0):
        xi = dynamics.normal_numbers(t, 0, torch.Generator().manual_seed(2))[0]
        for noise_numbers in (xi, None):
            v1, heat = dynamics.pair_ou_sweep(t, v, dt, 0.0 if noise_numbers is None else m.k_B, noise_numbers)
            assert float((v1.sum(0) - v.sum(0)).abs().max()) <= 1e-13 * float(v.abs().sum())
            dke = 0.5 * mass * (v1.square().sum() - v.square().sum())
            assert abs(float(dke + heat.sum())) <= 1e-12 * float(0.5 * mass * v.square().sum())
            if noise_numbers is None:
                assert float(heat.min()) >= 0.0 and float(heat.sum()) > 0.0


def test_pair_sweep_is_euler_maruyama_for_small_steps():
    """The noise-free sweep's velocity change differs from the Euler-Maruyama friction
    increment by O(dt^2): the relative difference falls tenfold with dt."""
    from colloidcg.core import dynamics
    m, t, v, _ = _lattice_terms(2)
    errs = []
    for dt in (1e-3, 1e-4):
        v1, _ = dynamics.pair_ou_sweep(t, v, dt, m.k_B, None)
        em = _em_friction(t, v, dt, 0.0, None)
        errs.append(float((v1 - v - em).norm() / em.norm()))
    assert errs[0] < 0.05 and 7 < errs[0] / errs[1] < 13


def test_pair_sweep_keeps_the_temperature_at_any_step():
    """Discrete fluctuation-dissipation balance: repeated sweeps (frozen positions, equal
    temperatures) sample the relative velocities at k_B theta / m per degree of freedom
    whether the friction is resolved or not (rate x dt up to 20); Euler-Maruyama at the
    step where its stiffest mode has x dt = 1 runs measurably hot (the test can fail)."""
    from colloidcg.core import dynamics
    m, t, v0, _ = _lattice_terms(3, side=8)
    n = v0.shape[0]
    kT_m = float(m.k_B * t.thermo.theta[0] / t.m)
    assert torch.allclose(t.thermo.theta, t.thermo.theta[0].expand(n), rtol=1e-12)
    # the friction rate of the stiffest velocity mode: the largest eigenvalue of v -> -dv/dt
    A = torch.stack([_em_friction(t, e.view(n, 2), 1.0, 0.0, None).reshape(-1)
                     for e in torch.eye(2 * n, dtype=torch.float64)], 1)
    lam_max = float(torch.linalg.eigvals(-A).real.max())
    gen = torch.Generator().manual_seed(4)

    def temperature(step, dt, steps=300, burn=60):
        v, acc = v0.clone(), []
        for k in range(steps + burn):
            v = step(v, dt, dynamics.normal_numbers(t, 0, gen)[0])
            if k >= burn:
                acc.append(float((v - v.mean(0)).square().sum()) / ((n - 1) * 2 * kT_m))
        return np.mean(acc), np.std(acc) / np.sqrt(steps / 10)

    sweep = lambda v, dt, xi: dynamics.pair_ou_sweep(t, v, dt, m.k_B, xi)[0]  # noqa: E731
    em = lambda v, dt, xi: v + _em_friction(t, v, dt, m.k_B, xi)              # noqa: E731
    for x in (1.0, 20.0):
        T, se = temperature(sweep, x / lam_max)
        assert abs(T - 1) < max(4 * se, 0.03), (x, T, se)
    T_em, se_em = temperature(em, 1.0 / lam_max)
    assert T_em - 1 > 0.1 and T_em - 1 > 6 * se_em, (T_em, se_em)


@given(cases)
@settings(max_examples=3, deadline=None, derandomize=True)
def test_pair_splitting_step_conserves_momentum_and_compiles(case):
    """Every noisy step of the momentum-conserving model's integrator (PairSplitting, the
    choice of integrator_for without a substrate) keeps the total momentum to rounding, and
    the TorchScript-compiled step reproduces the eager one exactly."""
    from colloidcg.core.driver import VerletList, run
    from colloidcg.core.integrators import PairSplitting, integrator_for
    seed, dim, n_s, _ = case
    m = random_model(seed, dim, n_s, substrate=False)
    assert isinstance(integrator_for(m), PairSplitting)
    L = 3.5
    box = torch.full((dim,), L, dtype=torch.float64)
    s = random_state(seed, 40 if dim == 2 else 60, dim, n_s, L)
    out = []
    for integ in (PairSplitting(m), torch.jit.script(PairSplitting(m))):
        r, v, S, _ = run(integ, s.r, s.v, s.S, 4, 0.05, neighbours=VerletList(H, 0.2, box), box=box, seed=seed)
        p = v.sum(1)
        assert float((p[1:] - s.v.sum(0)).abs().max()) <= 1e-12 * float(s.v.abs().sum())
        out.append((r, v, S))
    assert all(torch.equal(a, b) for a, b in zip(*out))


@given(cases)
@settings(max_examples=4, deadline=None, derandomize=True)
def test_pair_friction_rate_is_the_drift_jacobian_diagonal(case):
    """dynamics.pair_friction_rate (the mean-field rate of the momentum-conserving models'
    frame-averaged likelihood) equals minus the trace / d of each particle's own block of
    d(dv/dt)/dv, from autograd (k_B = 0: no Ito terms, so the drift's velocity dependence
    is the pair friction alone)."""
    from colloidcg.core.dynamics import pair_friction_rate
    seed, dim, n_s, _ = case
    m = random_model(seed, dim, n_s, substrate=False, k_B=0.0)
    L = 3.0
    box = torch.full((dim,), L, dtype=torch.float64)
    s = random_state(seed, 12, dim, n_s, L)
    pairs = find_pairs(s.r, H, box)
    assert pairs.shape[0] > 0
    with torch.no_grad():
        rate = pair_friction_rate(m.compute(s, pairs, box))

    def dvdt(v):
        return m.drift(State(s.r, v, s.S), pairs, box)[1]

    J = torch.autograd.functional.jacobian(dvdt, s.v)           # (N, d, N, d)
    own = torch.stack([J[i, :, i, :].diagonal().sum() for i in range(s.r.shape[0])]) / dim
    assert torch.allclose(-own, rate, rtol=1e-9, atol=1e-12), (own, rate)
    assert float(rate.max()) > 0
