"""Per-particle sizes (pair range h (a_i + a_j) / 2): the core's guarantees hold unchanged,
the forces are still -dE/dr, and unit sizes reproduce the model without sizes exactly."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from colloidcg.core import State, find_pairs
from colloidcg.errors import ColloidcgError
from core_helpers import dense_L, dense_M, gradients, ou_step
from test_core import assert_momentum_conserved, random_model

H = 1.0
torch.set_num_threads(1)
SETTINGS = dict(max_examples=10, deadline=None, derandomize=True)
cases = st.tuples(st.integers(0, 10_000), st.sampled_from([2, 3]), st.sampled_from([1, 2]),
                  st.booleans())


def sized_model(seed, dim=2, n_s=1, substrate=True, k_B=0.7, deviatoric=False, size_scale=2.0):
    return random_model(seed, dim, n_s, substrate=substrate, k_B=k_B, deviatoric=deviatoric,
                        size_scale=size_scale, size_column="diameter")


def sized_state(seed, n, dim, n_s, side):
    """Random state with a binary mixture of sizes 1.4 and 2 (reduced 0.7 and 1)."""
    g = torch.Generator().manual_seed(seed + 1000)
    r = torch.rand(n, dim, generator=g, dtype=torch.float64) * side
    v = torch.randn(n, dim, generator=g, dtype=torch.float64)
    S = torch.randn(n, n_s, generator=g, dtype=torch.float64)
    size = torch.where(torch.rand(n, generator=g) < 0.5, 1.4, 2.0).to(torch.float64)
    return State(r, v, S, size)


@given(cases)
@settings(**SETTINGS)
def test_forces_are_minus_energy_gradient_with_sizes(case):
    seed, dim, n_s, substrate = case
    m = sized_model(seed, dim, n_s, substrate=substrate, deviatoric=bool(seed % 2))
    s = sized_state(seed, 9, dim, n_s, 1.3)
    pairs = find_pairs(s.r, H)
    r = s.r.clone().requires_grad_(True)
    E = m.total_energy(State(r, s.v, s.S, s.size), pairs)
    g, = torch.autograd.grad(E, r)
    F = m.compute(s, pairs).force       # pair forces and the deviatoric part
    assert torch.allclose(F.detach(), -g, rtol=1e-9, atol=1e-11 * float(g.abs().max()))


@given(cases)
@settings(**SETTINGS)
def test_first_and_second_law_with_sizes(case):
    seed, dim, n_s, substrate = case
    m = sized_model(seed, dim, n_s, substrate=substrate, k_B=0.0)
    s = sized_state(seed, 7, dim, n_s, 1.2)
    pairs = find_pairs(s.r, H)
    gE, gS = (t.detach() for t in gradients(m, s, pairs))
    M = dense_M(m, s, pairs).detach()
    L = dense_L(m, 7)
    _, dv, dS = m.drift(s, pairs)
    drift = torch.cat([s.v.reshape(-1), dv.reshape(-1), dS.reshape(-1)]).detach()
    assert torch.allclose(drift, L @ gE + M @ gS, rtol=1e-10, atol=1e-12 * float(drift.abs().max()))
    assert abs(float(gE @ drift)) <= 1e-9 * float(gE.norm() * drift.norm())
    assert float((M @ gE).norm()) <= 1e-12 * float(M.norm() * gE.norm())
    assert float(gS @ M @ gS) >= 0.0
    assert float(torch.linalg.eigvalsh(M).min()) >= -1e-10 * float(M.abs().max())


@given(cases)
@settings(**SETTINGS)
def test_momentum_conserved_with_sizes(case):
    seed, dim, n_s, _ = case
    m = sized_model(seed, dim, n_s, substrate=False)
    L = 3.5
    box = torch.full((dim,), L, dtype=torch.float64)
    s = sized_state(seed, 40 if dim == 2 else 60, dim, n_s, L)
    s = assert_momentum_conserved(m, s, box, torch.Generator().manual_seed(seed), 4)
    assert s.size is not None          # the sizes travel with the state


def test_small_pairs_interact_over_a_shorter_range():
    """Two small particles (reduced size 0.7) at 0.8 h do not interact; two large ones do."""
    m = sized_model(3, 2, 1, substrate=False, k_B=0.0)
    r = torch.tensor([[0.0, 0.0], [0.8, 0.0]], dtype=torch.float64)
    v = torch.zeros(2, 2, dtype=torch.float64)
    S = torch.zeros(2, 1, dtype=torch.float64)
    pairs = find_pairs(r, H)
    small = m.compute(State(r, v, S, torch.full((2,), 1.4, dtype=torch.float64)), pairs)
    large = m.compute(State(r, v, S, torch.full((2,), 2.0, dtype=torch.float64)), pairs)
    assert small.geom.pairs.shape[0] == 0 and float(small.force.detach().abs().max()) == 0.0
    assert large.geom.pairs.shape[0] == 1 and float(large.force.detach().abs().max()) > 0.0
    assert math.isclose(float(large.geom.q[0]), 0.8, rel_tol=1e-12)


@given(cases)
@settings(**SETTINGS)
def test_invariance_with_sizes(case):
    """Rotating, translating and permuting the particles (sizes permuted with them)."""
    seed, dim, n_s, substrate = case
    m = sized_model(seed, dim, n_s, substrate=substrate)
    s = sized_state(seed, 12, dim, n_s, 1.6)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(seed))

    def evaluate(st_):
        pairs = find_pairs(st_.r, H)
        ns = m.compute(st_, pairs)
        _, dv, dS = m.drift(st_, pairs, ns=ns)
        return m.total_energy(st_, pairs).detach(), dv.detach(), dS.detach()

    E0, a0, s0 = evaluate(s)
    E1, a1, s1 = evaluate(State((s.r @ Q.T + 3.0)[perm], (s.v @ Q.T)[perm], s.S[perm], s.size[perm]))
    tol = dict(rtol=1e-9, atol=1e-10)
    assert torch.allclose(E1, E0, **tol)
    assert torch.allclose(a1, (a0 @ Q.T)[perm], **tol)
    assert torch.allclose(s1, s0[perm], **tol)


def test_unit_sizes_reproduce_the_model_without_sizes():
    plain = sized_model(5, 2, 1, size_scale=0.0)
    sized = sized_model(5, 2, 1, size_scale=2.0)
    s = sized_state(5, 20, 2, 1, 2.0)
    pairs = find_pairs(s.r, H)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    with torch.no_grad():
        a = ou_step(plain, State(s.r, s.v, s.S), pairs, 0.05, generator=gen())[0]
        b = ou_step(sized, State(s.r, s.v, s.S, torch.full((20,), 2.0, dtype=torch.float64)), pairs, 0.05,
                    generator=gen())[0]
    for x, y in ((a.r, b.r), (a.v, b.v), (a.S, b.S)):
        assert torch.equal(x, y)


def test_model_with_sizes_needs_them():
    m = sized_model(0)
    s = sized_state(0, 5, 2, 1, 1.0)
    with pytest.raises(ColloidcgError, match="size"):
        m.compute(State(s.r, s.v, s.S), find_pairs(s.r, H))


def _pair_tracks():
    """Two far-apart pairs: small disks (size 0.7) 0.7 apart, large ones (size 1) 1.0 apart,
    three frames; the tracker-like size column is noisy around the true size."""
    import numpy as np
    import pandas as pd
    xy = np.array([[0.0, 0.0], [0.7, 0.0], [5.0, 5.0], [6.0, 5.0]])
    true = np.array([0.7, 0.7, 1.0, 1.0])
    rows = []
    for f in range(3):
        for p in range(4):
            rows.append((f, p, xy[p, 0], xy[p, 1], true[p] * (1.0 + 0.05 * (f - 1))))
    return pd.DataFrame(rows, columns=["frame", "particle", "x", "y", "size"]), true


def test_sizes_from_tracks_are_per_particle_medians():
    from colloidcg.data import from_tracks
    df, true = _pair_tracks()
    traj = from_tracks(df, size_column="size")
    assert torch.allclose(traj.size, torch.as_tensor(true))
    assert from_tracks(df).size is None
    with pytest.raises(ColloidcgError, match="size_column"):
        from_tracks(df, size_column="diameter")


def test_nearest_neighbour_distance_in_contact_units_with_sizes():
    """Cutoff candidates are multiples of the nearest-neighbour distance in units of the
    pair's contact distance: both pairs are at contact, 1.0 in those units."""
    from colloidcg.data import from_tracks
    from colloidcg.train import median_nn_distance
    df, _ = _pair_tracks()
    assert math.isclose(median_nn_distance(from_tracks(df)), 0.85, rel_tol=1e-9)
    assert math.isclose(median_nn_distance(from_tracks(df, size_column="size")), 1.0, rel_tol=1e-9)
