"""The macroscopic SDE (colloidcg.scaling.macro), its observables and closure encoder.

Known answers (fast):
- an Ornstein-Uhlenbeck process: drift and diffusion recovered from increments whose
  covariance is lambda = 16 times the process's (as partial increments are), to a few %;
- the predicted stationary variance scales as 1 / area (4x against 16x, within 25 %,
  and the OU value sigma^2 / (2 theta) / F);
- lambda = K recovers the large system's fluctuations from patch increments, lambda = 1
  overestimates them K-fold;
- psi6 of a perfect triangular lattice is 1; observables and closure codes are additive
  over patches (a patch's inner particles with a halo give the whole system's per-particle
  values exactly); codes are permutation and rotation invariant;
- a saved SDE loads in a fresh process and gives the same ensemble;
- psi6_coherence is 1 on a lattice and falls beside a grain boundary where psi6 is 1;
- block states: the K increments of one block state average to its own increment;
  `macro train --states block` describes K boxes, starts from the tables' mean z and
  refuses what it cannot use (one line each);
- the chain from video (short): tracking recovers the rendered positions, every
  upsampled snapshot of the video has the box of K windows, and the learned SDE orders
  as the filmed quench does.

The full soft-disk known answer (learning from 1/16 of the area, 20 direct large runs) is
benchmarks/macro.py; its reduced version here is marked slow (about 5 minutes): block
states meet the mean target (at its threshold with the one-step drift, 5x asserted with
the multi-step drift, the smoothed state and the latent-state likelihood, the default
since session 44: tests/test_macro_latent.py), upsampled states with halo patches do not
(strict xfail).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from colloidcg.errors import ParameterError
from colloidcg.scaling.closure import ClosureEncoder, local_features
from colloidcg.scaling.macro import (BaggedSDE, Encoder, block_increments, block_pairs, fit_bagged, fit_sde, load_sde,
                                     partial_increments)
from colloidcg.scaling.observables import check_names, labels, patch_mean, per_particle, whole
from colloidcg.scaling.simulators import MicroState

torch.set_num_threads(1)

THETA, MEAN, SIGMA, DT = 0.2, 0.6, 0.01, 1.0


def ou_increments(n, lam, seed=0):
    """Exact OU transitions over DT from uniform starts, covariance times ``lam``."""
    rng = np.random.default_rng(seed)
    z0 = rng.uniform(0.3, 0.9, (n, 1))
    var = SIGMA ** 2 / (2 * THETA) * (1 - math.exp(-2 * THETA * DT)) * lam
    z1 = MEAN + (z0 - MEAN) * math.exp(-THETA * DT) + math.sqrt(var) * rng.standard_normal((n, 1))
    return z0, z1


@pytest.fixture(scope="module")
def ou_sde():
    z0, z1 = ou_increments(3000, 16.0)
    sde, rep = fit_sde(z0, z1, dt=DT, names=["z"], lam=16.0, area_px2=16.0, tile_area_px2=1.0, start=[0.4],
                       iterations=150)
    return sde, rep


def test_sde_recovers_ou_drift_and_diffusion(ou_sde):
    sde, rep = ou_sde
    z = torch.linspace(0.35, 0.85, 11, dtype=torch.float64)[:, None]
    with torch.no_grad():
        mu = sde.drift(z)[:, 0].numpy()
        sig = sde.sigma(z)[:, 0, 0].numpy()
    rate = (1 - math.exp(-THETA * DT)) / DT            # the Euler drift of the exact transition
    true_mu = -rate * (z[:, 0].numpy() - MEAN)
    true_sig = math.sqrt(SIGMA ** 2 / (2 * THETA) * (1 - math.exp(-2 * THETA * DT)) / DT)
    # slope and offset of the fitted drift, and sigma, to a few %
    slope = np.polyfit(z[:, 0].numpy(), mu, 1)[0]
    assert slope == pytest.approx(-rate, rel=0.06)
    assert np.max(np.abs(mu - true_mu)) < 0.06 * np.max(np.abs(true_mu))
    np.testing.assert_allclose(sig, true_sig, rtol=0.05)
    assert rep.n_increments == 3000


def test_variance_scales_as_inverse_area(ou_sde):
    sde, _ = ou_sde
    # factor relative to the tile (area 1); the SDE describes area 16
    v = {}
    for f in (4.0, 16.0):
        z = sde.simulate(steps=400, runs=400, factor=f, z0=[MEAN], seed=int(f))
        v[f] = z[:, 100:, 0].var(0).mean()
    assert v[4.0] / v[16.0] == pytest.approx(4.0, rel=0.25)
    rate = (1 - math.exp(-THETA * DT)) / DT
    true_sig2 = SIGMA ** 2 * (1 - math.exp(-2 * THETA * DT)) / (2 * THETA * DT)
    stationary = true_sig2 / (2 * rate - rate ** 2 * DT)        # Euler-Maruyama's stationary variance
    for f in (4.0, 16.0):
        assert v[f] == pytest.approx(stationary * 16.0 / f, rel=0.25)


def test_runs_that_leave_the_fitted_states_are_flagged(ou_sde, ou_bag):
    """The fit records the range of z its increments cover (both ends), and outside_data
    flags exactly the runs that go more than a quarter of that range beyond it: none of
    the OU runs started inside (they stay near the mean), every run started far outside,
    a run pushed out by hand at one step alone; a bag's range is its members' union."""
    sde, _ = ou_sde
    z0, z1 = ou_increments(3000, 16.0)
    assert sde.config.extra["z_min"] == pytest.approx([min(z0.min(), z1.min())])
    assert sde.config.extra["z_max"] == pytest.approx([max(z0.max(), z1.max())])
    inside = sde.simulate(steps=50, runs=20, factor=16, z0=[0.4], seed=1)
    assert not sde.outside_data(inside).any()
    far = sde.simulate(steps=5, runs=4, factor=16, z0=[3.0], seed=1)
    assert sde.outside_data(far).all()
    lo, hi = sde.config.extra["z_min"][0], sde.config.extra["z_max"][0]
    edited = inside.copy()
    edited[3, 7, 0] = hi + 0.26 * (hi - lo)
    edited[5, 2, 0] = hi + 0.24 * (hi - lo)                 # within the margin: not flagged
    assert np.flatnonzero(sde.outside_data(edited)).tolist() == [3]
    bag, _ = ou_bag
    assert bag.config.extra["z_min"] == pytest.approx([min(m.config.extra["z_min"][0] for m in bag.members)])
    assert bag.config.extra["z_max"] == pytest.approx([max(m.config.extra["z_max"][0] for m in bag.members)])


def test_lambda_K_recovers_large_system_fluctuations():
    """Patch increments (K = 16 times the large system's covariance, its mean): lambda = K
    gives the large system's stationary variance; lambda = 1 gives K times too much."""
    K = 16.0
    z0, z1 = ou_increments(2000, K, seed=3)
    stationary = SIGMA ** 2 / (2 * THETA)
    got = {}
    for lam in (1.0, K):
        sde, _ = fit_sde(z0, z1, dt=DT, names=["z"], lam=lam, area_px2=1.0, iterations=60, seed=1)
        z = sde.simulate(steps=300, runs=300, z0=[MEAN], seed=2)
        got[lam] = z[:, 100:, 0].var(0).mean()
    assert got[K] == pytest.approx(stationary, rel=0.25)
    assert got[1.0] / got[K] == pytest.approx(K, rel=0.25)
    assert abs(math.log(got[K] / stationary)) < abs(math.log(got[1.0] / stationary))


def _round_trip(sde, folder, steps, runs, seed):
    """Save ``sde`` in ``folder``, load it in a new Python process and run it at factor 4:
    the runs must equal this process's exactly. Returns the loaded object's class name."""
    sde.save(folder)
    here = sde.simulate(steps=steps, runs=runs, factor=4.0, seed=seed)
    code = ("import json; from colloidcg.scaling.macro import load_sde; "
            f"s = load_sde({str(folder)!r}); "
            f"print(type(s).__name__, json.dumps(s.simulate(steps={steps}, runs={runs}, factor=4.0, "
            f"seed={seed}).tolist()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, arr = out.stdout.split(" ", 1)
    np.testing.assert_array_equal(np.array(json.loads(arr)), here)
    return name


def fast_part_paths(n, steps, r, seed=0):
    """n systems over ``steps`` macro steps of DT: a common rising mean path plus exact OU
    deviations (THETA, SIGMA), observed as z = x + e with e ~ N(0, r) fresh at every step:
    (n, steps + 1, 1)."""
    rng = np.random.default_rng(seed)
    a = math.exp(-THETA * DT)
    y = np.zeros((n, steps + 1))
    y[:, 0] = rng.normal(0.0, SIGMA / math.sqrt(2 * THETA), n)
    for k in range(steps):
        y[:, k + 1] = a * y[:, k] + SIGMA * math.sqrt((1 - a * a) / (2 * THETA)) * rng.standard_normal(n)
    mean = 0.4 + 0.3 * (1 - np.exp(-np.arange(steps + 1) / 8.0))
    return (mean + y + math.sqrt(r) * rng.standard_normal((n, steps + 1)))[..., None]


def test_fast_part_is_measured_from_successive_increments():
    """z = x + e (x: a rising mean path plus OU deviations of variance SIGMA^2 / (2 THETA) =
    2.5e-4; e: white, variance r): fast_variance recovers r to 10 % (the slow part's own
    lag-1 covariance, -(1 - e^-THETA)^2 var = -8e-6 here, is the expected bias), gives about
    0 without a fast part, and refuses a single system. Particle counts as weights: a
    system of twice the particles has half the fast variance, and r refers to the mean
    count."""
    from colloidcg.scaling.macro import fast_variance
    r = 4e-4
    z = fast_part_paths(400, 30, r)
    got = float(fast_variance(z)[0])
    assert got == pytest.approx(r, rel=0.1)
    from colloidcg.scaling.macro import increment_moments
    _, var, lag2 = increment_moments(z)
    assert abs(float(lag2[0])) < 0.05                   # white at the step: lag 2 uncorrelated
    assert float(fast_variance(fast_part_paths(400, 30, 0.0, seed=1))[0]) < 0.05 * r
    # half the systems with twice the particles (half the fast variance): r of the mean count, 1.5
    zw = fast_part_paths(400, 30, 0.0, seed=2)
    w = np.where(np.arange(400) < 200, 2.0, 1.0)[:, None] * np.ones((1, 31))
    e = np.random.default_rng(3).standard_normal(zw.shape) * np.sqrt(r / w)[..., None]
    assert float(fast_variance(zw + e, w)[0]) == pytest.approx(r / 1.5, rel=0.12)
    with pytest.raises(ParameterError, match="across systems"):
        fast_variance(z[:1])
    with pytest.raises(ParameterError, match="steps >= 4"):
        fast_variance(z[:, :3])


def test_fast_part_is_kept_out_of_the_diffusion_and_added_to_the_runs(tmp_path):
    """Exact transitions of a weakly restoring OU process (theta 0.02) from spread states,
    seen through a fast part (variance r at each end, 2 r = sigma^2 dt: half the
    increments' spread): told r, the fit's sigma is the process's (within 10 %), where
    without it sigma holds both (sqrt 2 too large). (The fast part of the start state also
    biases the drift's slope, by r over the states' spread; with a strong drift that bias
    takes a visible share of the residual variance, hence the weak one here.) The runs
    return the slow state plus a fresh fast part at every step: their stationary variance
    exceeds the same SDE's without the fast part by c r (c = the covariance scale of the
    area run), to 10 %. Saved and loaded, the fast part comes along."""
    rng = np.random.default_rng(5)
    n, lam, theta, r = 2500, 16.0, 0.02, 0.5 * SIGMA ** 2 * DT
    sig = SIGMA * math.sqrt((1 - math.exp(-2 * theta * DT)) / (2 * theta * DT))    # of the exact transition
    x0 = rng.uniform(0.3, 0.9, (n, 1))
    x1 = MEAN + (x0 - MEAN) * math.exp(-theta * DT) + sig * math.sqrt(lam * DT) * rng.standard_normal((n, 1))
    e = rng.standard_normal((2, n, 1)) * math.sqrt(lam * r)
    z0, z1 = x0 + e[0], x1 + e[1]
    kw = dict(dt=DT, names=["z"], lam=lam, area_px2=16.0, tile_area_px2=1.0, start=[0.6], iterations=150)
    with_fast, _ = fit_sde(z0, z1, fast_var=[r], **kw)
    without, _ = fit_sde(z0, z1, **kw)
    zq = torch.linspace(0.4, 0.8, 9, dtype=torch.float64)[:, None]
    with torch.no_grad():
        s_fast = with_fast.sigma(zq)[:, 0, 0].numpy()
        s_all = without.sigma(zq)[:, 0, 0].numpy()
    np.testing.assert_allclose(s_fast, sig, rtol=0.1)
    np.testing.assert_allclose(s_all, math.sqrt(sig ** 2 + 2 * r / DT), rtol=0.1)
    assert with_fast.config.fast_var == [r] and without.config.fast_var is None
    # the runs at 4x the tile (c = 4) carry a fast part of variance c r: measured on them as
    # on data, by their successive increments
    from colloidcg.scaling.macro import fast_variance
    run = dict(steps=40, runs=3000, factor=4.0, z0=[0.6])
    assert float(fast_variance(with_fast.simulate(seed=1, **run))[0]) == pytest.approx(4.0 * r, rel=0.1)
    assert float(fast_variance(without.simulate(seed=1, **run))[0]) < 0.2 * 4.0 * r
    with_fast.save(tmp_path / "sde")
    back = load_sde(tmp_path / "sde")
    assert back.config.fast_var == [r]
    np.testing.assert_array_equal(back.simulate(seed=3, steps=3, runs=5), with_fast.simulate(seed=3, steps=3, runs=5))
    with pytest.raises(ParameterError, match="fast_var"):
        fit_sde(z0, z1, fast_var=[-1.0], **kw)


def test_smoothed_block_states_are_three_point_means_free_of_regression_to_the_mean():
    """block_draw(smooth=True): from the third macro step on, the state an increment starts
    from is the mean of the block state's own z at t - 1, t, t + 1 (exactly), before that
    z_t; the increments themselves are unchanged. On a stationary OU process (a = e^-THETA)
    seen through white noise of the slow part's own variance (block states of K = 8), the
    least-squares slope of increment on state is what theory gives for each: conditioned on
    z_t, -(v (1 - a) + r) / (v + r), the fast part's regression to the mean (-0.59 against
    the process's -(1 - a) = -0.18); on the three-point mean, -v a (1 - a) / 3 / (v (3 + 4a +
    2a^2) / 9 + r / 3), free of it but attenuated (-0.04: the mean reaches one step into the
    increment). Why the smoothing is an option (`smooth_state`), not the default."""
    from colloidcg.scaling.macro import block_draw
    n, steps, r, sets = 1000, 60, 1e-3, 200
    a = math.exp(-THETA * DT)
    rng = np.random.default_rng(6)
    x = np.zeros((n, steps))
    x[:, 0] = rng.normal(0, math.sqrt(1e-3), n)
    for k in range(steps - 1):
        x[:, k + 1] = a * x[:, k] + math.sqrt(1e-3 * (1 - a * a)) * rng.standard_normal(n)
    z = (0.6 + x + math.sqrt(r) * rng.standard_normal((n, steps)))[..., None]
    plain = block_draw(z, blocks=8, sets_per_step=sets, seed=1)
    smooth = block_draw(z, blocks=8, sets_per_step=sets, seed=1, smooth=True)
    np.testing.assert_allclose(plain.z1 - plain.z0, smooth.z1 - smooth.z0, rtol=0, atol=1e-14)
    per = sets * 8                     # increments per macro step
    np.testing.assert_array_equal(smooth.z0[:2 * per], plain.z0[:2 * per])
    rng_pick = np.random.default_rng(1)            # block_draw's own picks, redrawn
    picks = [rng_pick.choice(n, 8, replace=False) for _ in range(3 * sets)]
    for j, pick in enumerate(picks[2 * sets:]):     # macro step 2: the mean over steps 1, 2, 3
        assert smooth.paths[2 * sets + j, 0, 0] == pytest.approx(z[pick, 1:4, 0].mean(), abs=1e-15)
    v, rb = 1e-3 / 8, r / 8
    slope = {name: np.polyfit(d.z0[2 * per:, 0], (d.z1 - d.z0)[2 * per:, 0], 1)[0]
             for name, d in (("plain", plain), ("smooth", smooth))}
    assert slope["plain"] == pytest.approx(-(v * (1 - a) + rb) / (v + rb), rel=0.1)
    # (standard error of each slope about 0.013: 11 800 block states)
    assert slope["smooth"] == pytest.approx(-v * a * (1 - a) / 3 / (v * (3 + 4 * a + 2 * a * a) / 9 + rb / 3),
                                            abs=0.04)


def test_saved_sde_loads_in_a_fresh_process(ou_sde, tmp_path):
    sde, _ = ou_sde
    assert _round_trip(sde, tmp_path / "m", steps=20, runs=5, seed=7) == "MacroSDE"
    assert load_sde(tmp_path / "m").covariance_scale(4.0) == pytest.approx(4.0)


def test_sde_refusals(tmp_path):
    z0, z1 = ou_increments(50, 1.0)
    with pytest.raises(ParameterError, match="lambda"):
        fit_sde(z0, z1, dt=1.0, names=["z"], lam=0.0)
    with pytest.raises(ParameterError, match="increments"):
        fit_sde(z0, z1[:, :0], dt=1.0, names=["z"])
    from colloidcg.errors import ColloidcgError
    with pytest.raises(ColloidcgError, match="not a macro SDE folder"):
        load_sde(tmp_path)


# ---------------------------------------------------------------------- bagging
@pytest.fixture(scope="module")
def ou_bag():
    z0, z1 = ou_increments(1000, 16.0, seed=4)
    return fit_bagged((z0, z1), fits=3, dt=DT, names=["z"], lam=16.0, area_px2=16.0, tile_area_px2=1.0,
                      start=[0.4], iterations=60)


def test_bagged_sde_averages_its_members_and_recovers_ou(ou_bag):
    """The bagged SDE's drift is the members' mean drift and its diffusion the mean of
    sigma sigma^T (exactly), each member fitted on its own bootstrap resample (members
    differ); together they recover the OU process's drift and noise."""
    bag, reports = ou_bag
    assert isinstance(bag, BaggedSDE) and len(bag.members) == 3 and len(reports) == 3
    z = torch.linspace(0.35, 0.85, 11, dtype=torch.float64)[:, None]
    with torch.no_grad():
        mus = torch.stack([m.drift(z) for m in bag.members])
        covs = torch.stack([m.sigma(z) @ m.sigma(z).transpose(1, 2) for m in bag.members])
        torch.testing.assert_close(bag.drift(z), mus.mean(0), rtol=0, atol=1e-15)
        L = bag.sigma(z)
        torch.testing.assert_close(L @ L.transpose(1, 2), covs.mean(0), rtol=1e-12, atol=1e-18)
    assert float((mus[0] - mus[1]).abs().max()) > 0                 # resampled: not one fit thrice
    rate = (1 - math.exp(-THETA * DT)) / DT
    mu = bag.drift(z)[:, 0].detach().numpy()
    assert np.polyfit(z[:, 0].numpy(), mu, 1)[0] == pytest.approx(-rate, rel=0.08)
    true_sig = math.sqrt(SIGMA ** 2 / (2 * THETA) * (1 - math.exp(-2 * THETA * DT)) / DT)
    np.testing.assert_allclose(L[:, 0, 0].detach().numpy(), true_sig, rtol=0.06)
    assert bag.config.extra["fits"] == 3


def test_bagged_sde_saves_and_loads_in_a_fresh_process(ou_bag, tmp_path):
    bag, _ = ou_bag
    assert _round_trip(bag, tmp_path / "b", steps=10, runs=4, seed=3) == "BaggedSDE"


def test_one_fit_is_the_plain_fit_and_bad_fits_refused():
    z0, z1 = ou_increments(200, 1.0, seed=5)
    one, reps = fit_bagged((z0, z1), fits=1, seed=2, dt=DT, names=["z"], iterations=20)
    ref, _ = fit_sde(z0, z1, seed=2, dt=DT, names=["z"], iterations=20, start=z0[0])
    assert type(one).__name__ == "MacroSDE" and len(reps) == 1
    np.testing.assert_array_equal(one.simulate(steps=3, runs=2, seed=1), ref.simulate(steps=3, runs=2, seed=1))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ParameterError, match="fits"):
            fit_bagged((z0, z1), fits=bad, dt=DT, names=["z"])


# ---------------------------------------------------------------------- observables
def triangular(nx, ny, a=16.0):
    """A perfect triangular lattice in its periodic box (nx x ny, ny even)."""
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    pos = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2)
    box = np.array([nx * a, ny * a * math.sqrt(3) / 2])
    return MicroState(pos, np.full(len(pos), a), box, np.arange(len(pos)), None, None)


def test_psi6_of_a_triangular_lattice_is_one():
    s = triangular(8, 8)
    np.testing.assert_allclose(per_particle(s, ["psi6", "ordered_fraction"]), 1.0, atol=1e-12)
    assert labels(s, ["area_fraction"])["area_fraction"] == pytest.approx(math.pi / (2 * math.sqrt(3)), rel=1e-12)
    rng = np.random.default_rng(0)
    gas = s._replace(pos=rng.uniform(0, 1, s.pos.shape) * s.box)
    assert whole(gas, ["psi6"])[0] < 0.6


def test_psi6_coherence_is_one_on_a_lattice_and_low_between_grains():
    """Coherence is 1 on a perfect lattice; next to a 30-degree grain boundary (two lattices,
    one rotated, meeting along a line) it falls where psi6 is still 1, and deep inside each
    grain it stays 1; in a gas it is far below psi6."""
    s = triangular(12, 12)
    np.testing.assert_allclose(per_particle(s, ["psi6_coherence"]), 1.0, atol=1e-12)
    big = triangular(30, 30)
    c = big.box / 2
    t = math.pi / 6
    rot = (big.pos - c) @ np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) + c
    lower, upper = big.pos[big.pos[:, 1] < c[1]], rot[rot[:, 1] >= c[1] + 8.0]
    pos = np.concatenate([lower, upper])
    two = MicroState(pos, None, None, np.arange(len(pos)), None, None)
    f = per_particle(two, ["psi6", "psi6_coherence"])
    dy, dx = pos[:, 1] - c[1], np.abs(pos[:, 0] - c[0])
    inside = (np.abs(np.abs(dy) - 100) < 10) & (dx < 60)
    # a row or two from the boundary, all six nearest neighbours in the own grain
    near = (np.abs(np.abs(dy - 4.0) - 24) < 10) & (dx < 100) & (f[:, 0] > 1 - 1e-9)
    assert inside.sum() > 10 and near.sum() > 10
    np.testing.assert_allclose(f[inside], 1.0, atol=1e-9)
    assert f[near, 1].mean() < 0.8
    gas = s._replace(pos=np.random.default_rng(0).uniform(0, 1, s.pos.shape) * s.box)
    g = whole(gas, ["psi6", "psi6_coherence"])
    assert g[1] < 0.5 * g[0]


def fcc(n, a=22.6):
    """A periodic fcc crystal of n^3 cubic cells (4 n^3 particles, nearest-neighbour distance
    a / sqrt 2 = 16 px)."""
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cells = np.array([[i, j, k] for i in range(n) for j in range(n) for k in range(n)])
    pos = ((cells[:, None, :] + base[None]) * a).reshape(-1, 3)
    return MicroState(pos, np.full(len(pos), 16.0), np.full(3, n * a), np.arange(len(pos)), None, None)


def hcp(nx, ny, nz, b=16.0):
    """A periodic hcp crystal (layers A B A B ..., nearest-neighbour distance b px)."""
    pos = []
    for k in range(nz):
        shift = np.array([0.5 * b, b / (2 * math.sqrt(3))]) if k % 2 else np.zeros(2)
        for j in range(ny):
            for i in range(nx):
                xy = np.array([i * b + 0.5 * b * (j % 2), j * b * math.sqrt(3) / 2]) + shift
                pos.append([*xy, k * b * math.sqrt(2 / 3)])
    box = np.array([nx * b, ny * b * math.sqrt(3) / 2, nz * b * math.sqrt(2 / 3)])
    return MicroState(np.mod(pos, box), None, box, np.arange(len(pos)), None, None)


def test_q6_and_solid_fraction_known_values():
    """Steinhardt q6 over 12 nearest neighbours: fcc 0.57452, hcp 0.48476 (Steinhardt,
    Nelson & Ronchetti 1983), every particle solid-like; unchanged by a rotation (open
    system); a uniform random gas is far below (q6 ~ 0.28) and not solid-like."""
    f = fcc(3)
    v = per_particle(f, ["q6", "solid_fraction"])
    np.testing.assert_allclose(v[:, 0], 0.57452, atol=5e-6)
    np.testing.assert_array_equal(v[:, 1], 1.0)
    h = hcp(6, 6, 6)
    v = per_particle(h, ["q6", "solid_fraction"])
    np.testing.assert_allclose(v[:, 0], 0.48476, atol=5e-6)
    np.testing.assert_array_equal(v[:, 1], 1.0)
    rng = np.random.default_rng(0)
    gas = f._replace(pos=rng.uniform(0, 1, (2000, 3)) * f.box, size=None, ids=np.arange(2000))
    g = per_particle(gas, ["q6", "solid_fraction"])
    assert g[:, 0].mean() < 0.35 and g[:, 1].mean() < 0.01
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    op = gas._replace(box=None)
    np.testing.assert_allclose(per_particle(op._replace(pos=op.pos @ rot.T), ["q6", "solid_fraction"]),
                               per_particle(op, ["q6", "solid_fraction"]), atol=1e-9)
    # a crystal with thermal noise (0.05 spacings rms) stays solid-like
    warm = f._replace(pos=f.pos + rng.normal(0, 0.8, f.pos.shape))
    assert whole(warm, ["solid_fraction"])[0] == 1.0


def test_q6_by_the_addition_theorem_and_order_coherence():
    """q6_local (Legendre P6 of bond-pair angles) equals q6 from the 13 harmonics to
    rounding, on fcc, hcp, a gas, open and periodic. order_coherence: 1 on one crystal (2D
    lattice and fcc, also turned), low on a gas (about 1/sqrt(N)) and in between for two
    grains at 15 degrees to each other (|1 + exp(6i 15 deg)| / 2 = 0.71 in 2D)."""
    from colloidcg.scaling.observables import local_order, order_coherence, q6_local, q6_norm, q6m_local
    rng = np.random.default_rng(3)
    for st in (fcc(3), hcp(4, 4, 4)):
        np.testing.assert_allclose(q6_local(st.pos, st.box), q6_norm(q6m_local(st.pos, st.box)[0]), atol=1e-12)
        assert order_coherence(st.pos, st.box) == pytest.approx(1.0, abs=1e-9)
    gas = rng.uniform(0, 100, (800, 3))
    for box in (None, np.full(3, 100.0)):
        np.testing.assert_allclose(local_order(gas, box), q6_norm(q6m_local(gas, box)[0]), atol=1e-12)
        assert order_coherence(gas, box) < 0.15
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    # open, jittered (no ties among neighbours): the surface particles' bond order is off
    p = fcc(4).pos + rng.normal(0, 0.3, (256, 3))
    assert order_coherence(p @ rot.T, None) == pytest.approx(order_coherence(p, None), abs=1e-9)
    assert order_coherence(p, None) > 0.9
    # 2D: a triangular lattice, and two half-planes of it turned 15 degrees apart
    i, j = np.meshgrid(np.arange(-20, 20), np.arange(-20, 20), indexing="ij")
    lat = np.stack([(i + 0.5 * (j % 2)) * 10.0, j * 10.0 * np.sqrt(3) / 2], -1).reshape(-1, 2)
    assert order_coherence(lat, None) > 0.98
    t = np.radians(15.0)
    turned = lat @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]).T
    two = np.concatenate([lat[lat[:, 0] < 0], turned[turned[:, 0] > 5.0]])
    assert 0.6 < order_coherence(two, None) < 0.8
    assert order_coherence(rng.uniform(0, 400, (1600, 2)), None) < 0.1


def test_patch_values_in_3d_are_the_whole_systems():
    """q6 and the solid-like flag reach two neighbour shells: a patch with a 3-diameter halo
    gives its inner particles their whole-system values (half a crystal, half a gas)."""
    from colloidcg.scaling.partial import cut_patch
    f = fcc(7)
    rng = np.random.default_rng(1)
    pos = f.pos + rng.normal(0, 1.0, f.pos.shape)
    gas = pos[:, 0] > f.box[0] / 2
    pos[gas] = rng.uniform(0, 1, (gas.sum(), 3)) * np.array([0.5, 1, 1]) * f.box + [f.box[0] / 2, 0, 0]
    s = f._replace(pos=pos)
    full = per_particle(s, ["q6", "solid_fraction"])
    assert full[~gas, 1].mean() > 0.9 and full[gas, 1].mean() < 0.1
    for c in ([0.25, 0.5, 0.5], [0.5, 0.1, 0.9]):
        st, rows, mask, _, periodic = cut_patch(s, np.array(c) * f.box, 60.0, 48.0)
        assert not periodic and mask.sum() > 50
        np.testing.assert_allclose(per_particle(st, ["q6", "solid_fraction"])[mask],
                                   full[rows[mask]], atol=1e-12)


def test_block_increments_average_to_the_block_states_own_increment():
    """Exact invariant of the block construction: the K increments drawn from one block
    state start at its particle-weighted mean z and average to its own whole increment;
    the encoder route equals the values route."""
    rng = np.random.default_rng(0)
    z = rng.uniform(0.3, 0.8, (10, 4, 2))
    w = rng.integers(50, 70, (10, 4)).astype(float)
    z0, z1 = block_pairs(z, w, blocks=4, sets_per_step=3, seed=1)
    assert z0.shape == z1.shape == (3 * 3 * 4, 2)
    pick_rng = np.random.default_rng(1)
    row = 0
    for t in range(3):
        for _ in range(3):
            pick = pick_rng.choice(10, 4, replace=False)
            zbar0 = (w[pick, t, None] * z[pick, t]).sum(0) / w[pick, t].sum()
            np.testing.assert_allclose(z0[row:row + 4], np.broadcast_to(zbar0, (4, 2)), atol=1e-15)
            np.testing.assert_allclose((z1[row:row + 4] - z0[row:row + 4]).mean(0),
                                       (z[pick, t + 1] - z[pick, t]).mean(0), atol=1e-15)
            row += 4
    # from states: whole-system encodings of small periodic systems
    trajs = [[liquid(60, seed=10 * i + k) for k in range(3)] for i in range(5)]
    enc = Encoder(["psi6"])
    a0, a1 = block_increments(enc, trajs, blocks=2, sets_per_step=2, seed=3)
    zz = np.array([[enc.whole(s) for s in tr] for tr in trajs])
    b0, b1 = block_pairs(zz, np.full((5, 3), 60.0), blocks=2, sets_per_step=2, seed=3)
    np.testing.assert_allclose(a0, b0, atol=1e-15)
    np.testing.assert_allclose(a1, b1, atol=1e-15)
    with pytest.raises(ParameterError, match="blocks"):
        block_pairs(z, blocks=1)
    with pytest.raises(ParameterError, match="equally long"):
        block_increments(enc, [trajs[0], trajs[1][:2]], blocks=2)
    with pytest.raises(ParameterError, match="weights"):
        block_pairs(z, w[:, :2], blocks=2)


def test_observable_names_the_data_cannot_give_are_refused():
    with pytest.raises(ParameterError, match="psi6 is a 2D hexatic order; the data are 3D .3D: q6, solid"):
        check_names(["psi6"], 3)
    with pytest.raises(ParameterError, match="q6 is a 3D bond order; the data are 2D"):
        check_names(["psi6", "q6"], 2)
    assert check_names(["q6", "solid_fraction", "area_fraction"], 3) == (["q6", "solid_fraction"], ["area_fraction"])
    with pytest.raises(ParameterError, match="mean_S needs"):
        check_names(["mean_S"], 2, has_S=False)
    with pytest.raises(ParameterError, match="area_fraction needs"):
        check_names(["psi6", "area_fraction"], 2, has_size=False)
    with pytest.raises(ParameterError, match="constant label"):
        check_names(["area_fraction"], 2)
    assert check_names(["psi6", "area_fraction"], 2) == (["psi6"], ["area_fraction"])


def liquid(n=400, seed=0):
    rng = np.random.default_rng(seed)
    side = math.sqrt(n) * 16.0
    from colloidcg.synthetic.dynamics import Box, fire_relax
    pos = fire_relax(rng.uniform(0, side, (n, 2)), np.full(n, 16.0), Box(side, side, side / 2))
    return MicroState(np.mod(pos, side), np.full(n, 16.0), np.array([side, side]), np.arange(n), None, None)


def test_patch_values_are_the_whole_systems_per_particle_values():
    """Inner particles of a patch with a 2-diameter halo (A's cut_patch) have exactly the
    per-particle values they have in the whole system, and the particle-weighted mean of
    patches tiling the box is the whole system's value (additivity)."""
    from colloidcg.scaling.partial import cut_patch
    s = liquid()
    enc = Encoder(["psi6", "ordered_fraction"], ClosureEncoder(15, 2, spacing=16.0))
    full = enc.per_particle(s)
    side = s.box[0] / 2
    total, count = np.zeros(4), 0
    for cx in (0.5, 1.5):
        for cy in (0.5, 1.5):
            st, rows, mask, _, periodic = cut_patch(s, np.array([cx, cy]) * side, side, 48.0)
            assert not periodic
            np.testing.assert_allclose(enc.per_particle(st)[mask], full[rows[mask]], atol=1e-12)
            total += enc.patch(st, mask) * mask.sum()
            count += mask.sum()
            np.testing.assert_allclose(patch_mean(st, mask, ["psi6"]), full[rows[mask], 0].mean(), atol=1e-12)
    assert count == len(s.pos)
    np.testing.assert_allclose(total / count, enc.whole(s), atol=1e-12)


def test_closure_codes_are_permutation_and_rotation_invariant():
    s = liquid(200, seed=1)
    enc = ClosureEncoder(15, 3, spacing=16.0)
    c = enc.codes(s)
    perm = np.random.default_rng(2).permutation(len(s.pos))
    np.testing.assert_allclose(enc.codes(s._replace(pos=s.pos[perm]))[np.argsort(perm)], c, atol=1e-10)
    # rotate an open copy by 90 degrees plus a shift: interior particles keep their codes
    open_s = s._replace(box=None)
    rot = open_s._replace(pos=np.stack([-s.pos[:, 1], s.pos[:, 0]], 1) + 3.0)
    inner = np.all((s.pos > 60) & (s.pos < s.box - 60), axis=1)
    np.testing.assert_allclose(enc.codes(rot)[inner], enc.codes(open_s)[inner], atol=1e-10)
    assert local_features(s, 16.0).shape == (200, 15)


def test_partial_increments_form():
    """z1 = z(x0) + z_I(x1) - z_I(x0) from PatchSteps (A's partial evolution with the soft
    disks): an unmoved patch (zero steps of motion) gives z1 = z0 exactly."""
    from colloidcg.scaling.partial import PatchStep, cut_patch
    s = liquid(200, seed=2)
    enc = Encoder(["psi6"])
    st, rows, mask, frozen, _ = cut_patch(s, s.box / 2, 100.0, 40.0)
    moved = st._replace(pos=st.pos + np.where(mask[:, None], 0.3, 0.0))
    ps = [PatchStep(0, s.box / 2, 100.0, rows[mask], st, st, mask, 5.0, 0, rows, frozen),
          PatchStep(0, s.box / 2, 100.0, rows[mask], st, moved, mask, 5.0, 0, rows, frozen)]
    z0, z1 = partial_increments(enc, [s], ps)
    np.testing.assert_allclose(z1[0], z0[0], atol=1e-14)
    np.testing.assert_allclose(z1[1] - z0[1], enc.patch(moved, mask) - enc.patch(st, mask), atol=1e-14)


# ---------------------------------------------------------------------- command line
def model_folder(path, dim=2, box=None, cutoff=20.0):
    """An untrained float64 model saved as colloidcg train would (calibration 1 um/px, 1 fps)."""
    from colloidcg.core import MetriplecticModel, ModelConfig
    from colloidcg.core.persist import save_model
    torch.manual_seed(0)
    m = MetriplecticModel(ModelConfig(dim=dim, cutoff=cutoff, theta_ref=0.7, tau=0.3)).double()
    save_model(m, path, {"calibration": {"um_per_px": 1.0, "fps": 1.0, "box_px": box}})
    return path


def tracks_file(path, frames=4, n=200, seed=0, box=True):
    import pandas as pd

    from colloidcg.outputs import write_table
    s = liquid(n, seed)
    rng = np.random.default_rng(seed)
    rows = [pd.DataFrame({"frame": f, "particle": np.arange(n),
                          "x": np.mod(s.pos[:, 0] + rng.normal(0, 0.3, n), s.box[0]),
                          "y": np.mod(s.pos[:, 1] + rng.normal(0, 0.3, n), s.box[1])}) for f in range(frames)]
    write_table(path, pd.concat(rows, ignore_index=True), {"meta": {"box_px": s.box.tolist()} if box else {}})
    return path, s.box


def test_cli_macro_train_and_simulate(tmp_path, capsys):
    from colloidcg.cli import main
    from colloidcg.outputs import read_table
    tr, box = tracks_file(tmp_path / "t.parquet")
    model = model_folder(tmp_path / "model", box=box.tolist())
    out = tmp_path / "macro"
    assert main(["macro", "train", str(model), "--init", str(tr), "-o", str(out), "--factor", "4",
                 "--snapshots", "2", "--steps", "1", "--patches", "6", "--buffer", "0", "--no-patch-curve",
                 "--fits", "1", "--fit-iterations", "20"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_patches_K"] == pytest.approx(4.0)         # patch = the tile's side, box 4x its area
    assert rep["fit"]["iterations"] == 20
    assert rep["lambda"] == pytest.approx(4.0) and rep["variables"] == ["psi6"]
    for name in ("sde.json", "sde.pt", "increments.png", "lambda_sweep.png", "patch_curve.png"):
        assert (out / name).is_file()
    table = tmp_path / "m.parquet"
    assert main(["macro", "simulate", str(out), "--factor", "16", "--steps", "5", "--runs", "3",
                 "-o", str(table)]) == 0
    df, meta = read_table(table)
    assert list(df.columns) == ["run", "step", "time", "psi6"]
    assert len(df) == 3 * 6
    assert meta["parameters"]["covariance_scale"] == pytest.approx(0.25)     # fitted for 4x, run at 16x
    assert isinstance(meta["parameters"]["runs_outside_fitted_states"], int)
    assert table.with_suffix(".png").is_file()
    # refused: an existing table without --overwrite
    assert main(["macro", "simulate", str(out), "--factor", "16", "--steps", "5", "-o", str(table)]) == 2


@pytest.mark.parametrize("extra, dim, message", [
    (["--factor", "8"], 2, "not a square"),
    (["--patch", "30"], 2, "smaller than twice"),
    (["--observables", "psi6,area_fraction"], 2, "area_fraction needs per-particle sizes"),
    (["--observables", "psi6", "--factor", "8"], 3, "psi6 is a 2D"),
    (["--lambda", "-1"], 2, "--lambda"),
])
def test_cli_macro_train_refusals(tmp_path, capsys, extra, dim, message):
    from colloidcg.cli import main
    tr, box = tracks_file(tmp_path / "t.parquet", frames=1)
    model = model_folder(tmp_path / "model", dim=dim, box=box.tolist() if dim == 2 else None)
    code = main(["macro", "train", str(model), "--init", str(tr), "-o", str(tmp_path / "o")] + extra)
    err = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if "error:" in ln]
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()


def test_cli_macro_train_refuses_tracks_without_box_or_field_of_view(tmp_path, capsys):
    import pandas as pd

    from colloidcg.cli import main
    from colloidcg.outputs import write_table
    model = model_folder(tmp_path / "model")
    df = pd.DataFrame({"frame": [0, 0, 0], "particle": [0, 1, 2], "x": [1.0, 10.0, 20.0], "y": [1.0, 5.0, 9.0]})
    write_table(tmp_path / "t.parquet", df, {})
    code = main(["macro", "train", str(model), "--init", str(tmp_path / "t.parquet"), "-o", str(tmp_path / "o"),
                 "--factor", "4"])
    err = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if "error:" in ln]
    assert code == 2 and len(err) == 1 and "no periodic box" in err[0]


def block_tables(tmp_path, n_tables, frames=4, n=100, box=True):
    """``n_tables`` small periodic systems (tracks tables, frames 0..frames-1 one frame
    apart), each a different relaxed liquid with 0.3 px noise per frame."""
    return [tracks_file(tmp_path / f"b{k}.parquet", frames=frames, n=n, seed=10 + k, box=box)
            for k in range(n_tables)]


def test_cli_macro_train_block_states(tmp_path):
    """`macro train --states block` fits the SDE on block states of the --init tables: the
    SDE describes K small boxes (area K x the box's, lambda = K), starts from the tables'
    mean psi6 at their first frame (computed here independently), and is fitted on
    (T - 1) x sets x K increments."""
    import pandas as pd

    from colloidcg.cli import main
    from colloidcg.outputs import read_table
    tabs = block_tables(tmp_path, 5)
    box = tabs[0][1]
    model = model_folder(tmp_path / "model", box=box.tolist())
    out = tmp_path / "macro"
    assert main(["macro", "train", str(model), "--init", *[str(t) for t, _ in tabs], "-o", str(out),
                 "--states", "block", "--factor", "4", "--steps", "1", "--block-sets", "6", "--fits", "2",
                 "--horizon", "2", "--fit-iterations", "20", "--smooth-state"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["fast_part"]["smooth_state"] is True and rep["fast_part"]["latent_state"] is False
    assert rep["drift_fit"] == "one-step likelihood on the smoothed state, multi-step drift over 2 macro steps"
    assert rep["horizon_macro_steps"] == 2                          # the multi-step drift
    assert rep["fit"]["iterations"] == 20 and all(r["iterations"] == 20 for r in rep["fits"])
    assert rep["states"] == "block" and rep["systems"] == 5 and rep["frames"] == [0, 1, 2, 3]
    assert rep["n_patches_K"] == pytest.approx(4.0) and rep["lambda"] == pytest.approx(4.0)
    assert rep["fit"]["n_increments"] == 3 * 6 * 4
    assert rep["n_fits"] == 2 and len(rep["fits"]) == 2             # --fits 2: a bag of two fits
    assert [r["lambda"] for r in rep["lambda_sweep"]] == ["1", "K/4", "K/2", "K", "2K"]
    assert not (out / "patch_curve.png").exists() and (out / "increments.png").is_file()
    sde = load_sde(out)
    assert isinstance(sde, BaggedSDE) and len(sde.members) == 2
    # the fast part (4 frames: the fewest it is measured from), for the block state's area
    small_fast = rep["fast_part"]["variance_small_system"][0]
    assert sde.config.fast_var == pytest.approx([small_fast / 4]) and all(
        m.config.fast_var == sde.config.fast_var for m in sde.members)
    share, corr = rep["fast_part"]["share_of_increment_variance"][0], rep["fast_part"]["increment_lag1_correlation"][0]
    assert share == pytest.approx(min(max(-2 * corr, 0.0), 0.9))       # r = -lag-1 covariance, clipped
    assert sde.config.tile_area_px2 == pytest.approx(box[0] * box[1])
    assert sde.config.area_px2 == pytest.approx(4 * box[0] * box[1])
    first = []
    for t, _ in tabs:
        df, _ = read_table(t)
        g = df[df["frame"] == 0]
        st = MicroState(np.mod(g[["x", "y"]].to_numpy(float), box), None, box, g["particle"].to_numpy(), None, None)
        first.append(whole(st, ["psi6"])[0])
    assert sde.config.z0[0] == pytest.approx(float(np.mean(first)), abs=1e-12)
    table = tmp_path / "m.parquet"
    assert main(["macro", "simulate", str(out), "--factor", "16", "--steps", "3", "--runs", "2",
                 "-o", str(table)]) == 0
    df, meta = read_table(table)
    assert meta["parameters"]["covariance_scale"] == pytest.approx(0.25)      # fitted for 4 boxes, run at 16
    assert isinstance(df, pd.DataFrame) and len(df) == 2 * 4


def test_cli_macro_train_3d_block_states_evolve_q6(tmp_path):
    """3D tracks: ``macro train`` evolves the 3D bond order q6 by default (and the solid
    fraction on request), starting from the tables' mean q6 at frame 0 computed here; a
    2D observable is refused naming the data's dimension; ``macro simulate`` runs at 27x."""
    import pandas as pd

    from colloidcg.cli import main
    from colloidcg.outputs import read_table, write_table
    f = fcc(3)
    rng = np.random.default_rng(0)
    tabs, first = [], []
    for k in range(8):
        pos = f.pos + rng.normal(0, 1.0 + 0.3 * k, f.pos.shape)
        rows = [pd.DataFrame({"frame": fr, "particle": np.arange(len(pos)),
                              **dict(zip("xyz", np.mod(pos + rng.normal(0, 0.3, pos.shape), f.box).T))})
                for fr in range(3)]
        write_table(tmp_path / f"c{k}.parquet", pd.concat(rows, ignore_index=True), {"meta": {"box_px": f.box.tolist()}})
        tabs.append(str(tmp_path / f"c{k}.parquet"))
        first.append(whole(MicroState(rows[0][["x", "y", "z"]].to_numpy(float), None, f.box, np.arange(len(pos)),
                                      None, None), ["q6"])[0])
    model = model_folder(tmp_path / "model", dim=3, box=f.box.tolist())
    out = tmp_path / "macro"
    common = ["--states", "block", "--factor", "8", "--steps", "1", "--block-sets", "4", "--fits", "1",
              "--fit-iterations", "20"]
    assert main(["macro", "train", str(model), "--init", *tabs, "-o", str(out)] + common) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["variables"] == ["q6"] and rep["n_patches_K"] == pytest.approx(8.0)
    assert load_sde(out).config.z0[0] == pytest.approx(float(np.mean(first)), abs=1e-12)
    assert main(["macro", "train", str(model), "--init", *tabs, "-o", str(tmp_path / "m2"),
                 "--observables", "q6,solid_fraction"] + common) == 0
    assert json.loads((tmp_path / "m2" / "report.json").read_text())["variables"] == ["q6", "solid_fraction"]
    assert main(["macro", "train", str(model), "--init", *tabs, "-o", str(tmp_path / "m3"),
                 "--observables", "psi6"] + common) == 2
    table = tmp_path / "m.parquet"
    assert main(["macro", "simulate", str(out), "--factor", "27", "--steps", "3", "--runs", "2",
                 "-o", str(table)]) == 0
    df, _ = read_table(table)
    assert list(df.columns) == ["run", "step", "time", "q6"] and len(df) == 2 * 4


def test_cli_macro_train_block_states_latent(tmp_path, capsys):
    """`macro train --states block` fits the block states' paths by the latent-state
    likelihood by default (each member's filter NLL reported), the fast part kept, and
    saves the SDE as a bag that loads and runs; `--no-latent` fits the one-step
    likelihood of the same block states' increments instead."""
    from colloidcg.cli import main
    tabs = block_tables(tmp_path, 5)
    model = model_folder(tmp_path / "model", box=tabs[0][1].tolist())
    out = tmp_path / "macro"
    assert main(["macro", "train", str(model), "--init", *[str(t) for t, _ in tabs], "-o", str(out),
                 "--states", "block", "--factor", "4", "--steps", "1", "--block-sets", "3", "--fits", "2",
                 "--fit-iterations", "15"]) == 0
    assert "drift fitted by the latent-state likelihood" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    assert rep["fast_part"]["latent_state"] is True and rep["fast_part"]["smooth_state"] is False
    assert rep["drift_fit"] == "latent-state likelihood"
    assert all(math.isfinite(r["latent_val_nll"]) for r in rep["fits"])
    assert rep["fit"]["n_increments"] == 3 * 1 * 4 * 3             # 3 partitions of one block state, 4 members, 3 steps
    sde = load_sde(out)
    assert isinstance(sde, BaggedSDE) and sde.config.fast_var is not None
    assert np.isfinite(sde.simulate(steps=3, runs=4, factor=16.0)).all()
    assert main(["macro", "train", str(model), "--init", *[str(t) for t, _ in tabs], "-o", str(tmp_path / "plain"),
                 "--states", "block", "--factor", "4", "--steps", "1", "--block-sets", "3", "--fits", "1",
                 "--fit-iterations", "15", "--no-latent"]) == 0
    plain = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert plain["drift_fit"] == "one-step likelihood" and plain["fit"]["latent_val_nll"] is None
    assert plain["fit"]["n_increments"] == 3 * 3 * 4                # 3 steps x 3 sets x K


@pytest.mark.parametrize("states, n_tables, extra, message", [
    ("blocks", 4, [], "--states: expected 'upsampled' or 'block'"),
    ("block", 3, [], "need at least 4 small systems"),
    ("block", 4, ["--patch", "40"], "--patch: applies to --states upsampled only"),
    ("block", 4, ["--n-closure", "2"], "--n-closure: applies to --states upsampled only"),
    ("block", 4, ["--tiling", "oriented"], "--tiling: applies to --states upsampled only"),
    ("block", 4, ["--steps", "9"], "--steps: no frame 0 + 9"),
    ("block", 4, ["--fits", "0"], "--fits: must be >= 1"),
    ("block", 4, ["--horizon", "-1"], "--horizon: must be >= 0"),
    ("block", 4, ["--horizon", "soon"], "--horizon: expected an integer >= 0 or 'auto'"),
    ("upsampled", 1, ["--horizon", "auto"], "--horizon: applies to --states block only"),
    ("block", 4, ["--fit-iterations", "0"], "--fit-iterations: must be >= 1"),
    ("upsampled", 1, ["--horizon", "2"], "--horizon: applies to --states block only"),
    ("upsampled", 1, ["--no-fast-part"], "--no-fast-part: applies to --states block only"),
    ("upsampled", 1, ["--smooth-state"], "--smooth-state: applies to --states block only"),
    ("block", 4, ["--smooth-state", "--no-fast-part"], "--smooth-state: conditions on a state freed"),
    ("upsampled", 1, ["--no-latent"], "--no-latent: applies to --states block only"),
    ("upsampled", 2, [], "--init: --states upsampled takes one tracks table"),
])
def test_cli_macro_train_block_state_refusals(tmp_path, capsys, states, n_tables, extra, message):
    from colloidcg.cli import main
    tabs = block_tables(tmp_path, n_tables, frames=2)
    model = model_folder(tmp_path / "model", box=tabs[0][1].tolist())
    code = main(["macro", "train", str(model), "--init", *[str(t) for t, _ in tabs], "-o", str(tmp_path / "o"),
                 "--states", states, "--factor", "4", "--steps", "1"] + extra)
    err = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if "error:" in ln]
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_cli_macro_train_block_states_need_a_periodic_box(tmp_path, capsys):
    from colloidcg.cli import main
    tabs = block_tables(tmp_path, 4, frames=2, box=False)
    model = model_folder(tmp_path / "model")
    code = main(["macro", "train", str(model), "--init", *[str(t) for t, _ in tabs], "-o", str(tmp_path / "o"),
                 "--states", "block", "--factor", "4", "--steps", "1"])
    err = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if "error:" in ln]
    assert code == 2 and len(err) == 1 and "no periodic box" in err[0] and "block states" in err[0]


def test_cli_macro_simulate_refusals(tmp_path, capsys):
    from colloidcg.cli import main
    assert main(["macro", "simulate", str(tmp_path), "--factor", "4", "--steps", "3",
                 "-o", str(tmp_path / "m.parquet")]) == 2
    assert "not a macro SDE folder" in capsys.readouterr().err
    assert main(["macro", "simulate", str(tmp_path), "--factor", "0", "--steps", "3",
                 "-o", str(tmp_path / "m.parquet")]) == 2
    assert "--factor" in capsys.readouterr().err


# ---------------------------------------------------------------------- the full known answer (slow)
@pytest.fixture(scope="module")
def known_answer(tmp_path_factory):
    """benchmarks/macro.py (soft disks quenched to phi 0.85, kT 0.002; learned from 64-particle
    systems, predicted for 1024 against 20 direct runs), patch side l only."""
    from bench_helpers import load_benchmark

    mod = load_benchmark("macro")
    tmp = tmp_path_factory.mktemp("macro")
    assert mod.main(["--cache", str(tmp / "cache"), "--out", str(tmp / "out"), "--patch-mults", "1"]) == 0
    res = json.loads((tmp / "out" / "results.json").read_text())
    res["_benchmark"] = (mod, tmp)
    return res


@pytest.mark.slow
def test_known_answer_fluctuations_scale_as_inverse_area_and_lambda_K_is_right(known_answer):
    r = known_answer
    assert r["variance"]["pred_ratio_4x_over_16x"] == pytest.approx(4.0, rel=0.25)
    err = {k: v["log_var_error"] for k, v in r["lambda_sweep"].items()}
    # lambda = 1 and K/4 overestimate the 16x system's fluctuations 20x and 6x (measured);
    # lambda = K is within a factor 2 of the direct runs' variance
    assert err["K"] < err["1"] and err["K"] < err["K/4"] and err["K"] < math.log(2.0)


@pytest.mark.slow
def test_known_answer_block_states_beat_naive_and_meet_the_absolute_mean_target(known_answer):
    """Block states (periodic patches) against the issue's mean target: relative MSE <= 2e-3
    for every fit seed (met), and the naive baseline's median over the fit seeds at least 3x
    the block states'. The issue asks 5x; that is not reliably met: three training sets of
    64 small quenches gave ratios of medians 5.2 (this one, seeds 0-63), 5.7 and 3.4
    (docs/scaling.md), so what is asserted is what held on all three."""
    b = known_answer["block"]
    assert max(b["relmse"]) <= 2e-3
    assert b["ratio_of_medians"] >= 3.0
    # fluctuations of the block SDE scale as 1/area (issue: within 25 %), every seed
    assert all(abs(v / 4.0 - 1.0) <= 0.25 for v in b["var_ratio_4x_over_16x"])


@pytest.mark.slow
def test_known_answer_bagged_block_states_meet_the_absolute_target_and_beat_naive(known_answer):
    """The default fit of ``macro train`` (a bag of 10 fits, each on a bootstrap resample of
    its own block-state draw, drift and diffusion averaged) on the known answer's training
    set (quenches 0-63), against the naive baseline as before (median of 10 single fits):
    relative MSE <= 2e-3 (met) and better than naive by what held on every bag of three
    training sets of 64 quenches (docs/scaling.md, ``--stage bagging``): ratios 6.0-6.4,
    4.7-9.7 and 3.2-4.2 per bag; ratio of medians 6.2 +- 0.8, 6.2 +- 0.9 and 3.8 +- 0.4
    (bootstrap SE over the direct runs). The issue's 5x is met on two sets and missed on
    the third, so 3x is asserted; this set gives 6.0."""
    mod, tmp = known_answer["_benchmark"]
    assert mod.main(["--stage", "bagging", "--cache", str(tmp / "cache"), "--out", str(tmp / "out"),
                     "--fit-seeds", "10", "--bags", "1", "--sde-runs", "1000"]) == 0
    r = json.loads((tmp / "out" / "bagging_64.json").read_text())["bagging"]
    block = r["relmse"]["block_bagged"][0]
    assert block <= 2e-3
    assert r["median_relmse"]["naive_single"] / block >= 3.0
    # bagging the naive baseline too does not close the gap: its error is its conditioning
    assert r["median_relmse"]["naive_bagged"] / block >= 3.0


@pytest.mark.slow
def test_known_answer_multi_step_drift_beats_naive_fivefold(known_answer):
    """The issue's mean target with block states and the multi-step drift (a bag of 10,
    horizon 8 macro steps, bag seed 0) on the known answer's training set (quenches
    0-63), against the naive baseline (median of 10 single fits): relative MSE <= 2e-3
    and at least 5x better than naive. Measured (docs/scaling.md, ``--stage horizon``):
    7.3 +- 1.1 on this set with this bag; every bag of the four training sets 5.7-13.5."""
    mod, tmp = known_answer["_benchmark"]
    assert mod.main(["--stage", "horizon", "--horizons", "8", "--cache", str(tmp / "cache"), "--out",
                     str(tmp / "out"), "--fit-seeds", "10", "--sde-runs", "1000"]) == 0
    r = json.loads((tmp / "out" / "horizon_64.json").read_text())["horizon"]
    bag = r["bag"]["H8_seed0"]
    assert bag["relmse"] <= 2e-3
    assert r["naive_median"] / bag["relmse"] >= 5.0


@pytest.mark.slow
def test_known_answer_block_lambda_sweep_and_small_system_size(known_answer):
    """Item 4 on block states (``--stage block-curve``, the default bags of 10, 1000 runs; with
    bags of 3 the plateau's spread was 1.48x, at this test's bound): the
    mean's error falls from lambda = 1 to a plateau from K/2 to 2K (measured with bags of
    10: 3.5e-4 at 1, 1.15e-4, 1.03e-4, 0.97e-4 at K/2, K, 2K); the predicted variance falls
    as 1 / lambda (38, 10, 5.1, 2.6, 1.3 x the direct runs' at 1, K/4, K/2, K, 2K); small
    systems of l and 2l beat the naive SDE (6.6x, 4.5x) and 2l is no worse than l, while
    16-disk boxes (l/2) do not (2.8e-3 against naive 1.4e-3: the box orders as no large
    system does). docs/scaling.md."""
    mod, tmp = known_answer["_benchmark"]
    assert mod.main(["--stage", "block-curve", "--cache", str(tmp / "cache"), "--out", str(tmp / "out"),
                     "--fit-seeds", "10", "--sde-runs", "1000"]) == 0
    rows = json.loads((tmp / "out" / "block_curve_64.json").read_text())["block_curve"]["rows"]
    at = {(r["n_small"], r["lambda"]): r for r in rows}
    K = 16.0
    sweep = [at[(64, lam)] for lam in (1.0, K / 4, K / 2, K, 2 * K)]
    var = [r["var_over_direct"] for r in sweep]
    assert all(a > 1.5 * b for a, b in zip(var, var[1:])), var
    err = [r["relmse"] for r in sweep]
    assert err[0] > 1.5 * max(err[2:]) and max(err[2:]) < 1.5 * min(err[2:]), err
    naive = {n: at[(n, "naive (1)")]["relmse"] for n in (16, 64, 256)}
    assert at[(64, K)]["relmse"] <= 2e-3 and naive[64] / at[(64, K)]["relmse"] >= 3.0
    assert naive[256] / at[(256, 4.0)]["relmse"] >= 1.5 and at[(256, 4.0)]["relmse"] < 1.2 * at[(64, K)]["relmse"]
    assert at[(16, 64.0)]["relmse"] > naive[16]


@pytest.mark.slow
def test_known_answer_smoothed_block_states_beat_naive_fivefold(known_answer):
    """The issue's mean target with block states, the fast part kept apart and the drift
    conditioned on the smoothed state (``macro train --states block --smooth-state``; the
    benchmark's ``--stage bagging --fast-part --smooth-state``, one bag of 10 on the known
    answer's training set): relative MSE <= 2e-3 and at least 5x better than naive (the
    median of 10 single fits). Measured: 26 +- 5 on this set (bags 1.7-2.8e-5), 28 +- 6 on
    the set that misses 5x without the smoothing, and every bag of three training sets
    1.0-3.6e-5 against naive 6.1-6.4e-4 (docs/scaling.md)."""
    block, naive = one_block_bag(known_answer, ["--smooth-state"], "bagging_64_fast_smooth.json")
    assert block <= 2e-3 and naive / block >= 5.0


@pytest.mark.slow
def test_known_answer_latent_state_block_fit_beats_naive_fivefold(known_answer):
    """The issue's mean target with ``macro train --states block``'s default since session
    44, the latent-state likelihood (the benchmark's ``--stage bagging --fast-part
    --latent``, one bag of 10 on the known answer's training set): relative MSE <= 2e-3
    and at least 5x better than naive (the median of 10 single fits). Measured on three
    training sets: docs/scaling.md."""
    block, naive = one_block_bag(known_answer, ["--latent", "--bootstrap-only"], "bagging_64_fast_latent.json")
    assert block <= 2e-3 and naive / block >= 5.0


def one_block_bag(known_answer, flags, result):
    """The benchmark's ``--stage bagging --fast-part`` with ``flags``: one bag of 10 block
    fits and 10 naive single fits on the known answer's training set. Returns (the bag's
    relative MSE, the naive fits' median)."""
    mod, tmp = known_answer["_benchmark"]
    assert mod.main(["--stage", "bagging", "--fast-part", *flags, "--cache", str(tmp / "cache"), "--out",
                     str(tmp / "out"), "--fit-seeds", "10", "--bags", "1", "--sde-runs", "1000"]) == 0
    r = json.loads((tmp / "out" / result).read_text())["bagging"]
    return r["relmse"]["block_bagged"][0], r["median_relmse"]["naive_single"]


@pytest.mark.slow
def test_known_answer_block_states_with_the_fast_part_give_the_large_systems_variance(known_answer):
    """``macro train --states block``'s default since session 43 (``--stage block-curve
    --fast-part``: z's fast part measured from the small quenches' successive increments and
    kept out of sigma): at lambda = K the runs' variance at 16x is the direct runs' within
    25 % (2.6x without the fast part), the variance is smallest in error at lambda = K of
    the sweep, and the mean keeps its target (<= 2e-3 and 3x better than naive, as in the
    test without the fast part). docs/scaling.md."""
    mod, tmp = known_answer["_benchmark"]
    assert mod.main(["--stage", "block-curve", "--fast-part", "--cache", str(tmp / "cache"), "--out",
                     str(tmp / "out"), "--fit-seeds", "10", "--sde-runs", "1000"]) == 0
    rows = json.loads((tmp / "out" / "block_curve_64_fast.json").read_text())["block_curve"]["rows"]
    at = {(r["n_small"], r["lambda"]): r for r in rows}
    K = 16.0
    sweep = {lam: at[(64, lam)] for lam in (1.0, K / 4, K / 2, K, 2 * K)}
    assert sweep[K]["var_over_direct"] == pytest.approx(1.0, abs=0.25)
    log_err = {lam: abs(math.log(r["var_over_direct"])) for lam, r in sweep.items()}
    assert min(log_err, key=log_err.get) == K, log_err
    naive = at[(64, "naive (1)")]["relmse"]
    assert sweep[K]["relmse"] <= 2e-3 and naive / sweep[K]["relmse"] >= 3.0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: with upsampled states and halo patches the ensemble mean's "
                                       "relative MSE is 7.6e-3 against 6.3e-4 naive with the overlaps reinserted "
                                       "(9.1e-3 when they were pushed): tiles of 8 x 8 particles ordered "
                                       "independently meet at grain boundaries, psi6 0.16 lower within a diameter "
                                       "of a seam and equal to the tiles' beyond two, so the snapshots lie 0.078 "
                                       "below their tiles and their own mean is 1.2e-2 from the direct runs "
                                       "(docs/scaling.md)")
def test_known_answer_upsampled_halo_chain_mean_trajectory_beats_naive_fivefold(known_answer):
    r = known_answer
    assert r["relmse_ours"] <= 2e-3 and r["ratio_naive_over_ours"] >= 5.0


# ---------------------------------------------------------------------- the chain from video (short)
@pytest.mark.slow
def test_chain_from_a_tracked_video_end_to_end(tmp_path):
    """The user's path on a tiny video (colloidcg.scaling.video_chain): a quench of soft disks
    filmed in a window of a periodic sample, tracked, a model trained on the tracks,
    ``colloidcg macro train`` (upsampled 4x, patches evolved with the model), the SDE run.
    What must hold: tracking recovers the rendered positions; every upsampled snapshot is
    tiled from the video's one field-of-view window, so the patch (the window) is exactly
    1/K of the box (K = 4); the quench orders in the truth and the learned SDE orders too
    (its mean psi6 rises over the video's duration, from its first snapshot's value).
    The full comparison with direct large runs is benchmarks/macro.py --stage video.
    (The model trains 4 epochs: with 2, whether the SDE's mean rises depended on the seed
    and moved with small tracking changes; measured over training seeds 0-3, 2 and 4
    epochs, with and without the template fit of non-Gaussian spots: it rose in 14 of 16.)"""
    from colloidcg.scaling.video_chain import quench_video, run_chain
    v = quench_video(n_fov=36, frames=31, seed=2, area_fraction=0.85, diameter=16.0, diffusion=0.25, kT=0.002,
                     substeps=3)
    assert v.frames.shape == (31, v.fov_px, v.fov_px) and v.sample_px == 2 * v.fov_px
    assert v.psi6_sample[-1] > v.psi6_sample[0] + 0.1            # the truth orders after the quench
    r = run_chain(v, tmp_path / "chain", factor=4, steps=10, snapshots=3, patches=4, epochs=4, seed=0, fits=2)
    assert r.tracking["rms_error_per_axis_px"] < 0.4
    assert r.tracking["recall"] > 0.95 and r.tracking["precision"] > 0.98
    rep = r.report
    assert rep["states"] == "upsampled" and rep["snapshot_frames"] == [0, 15, 30]
    assert rep["upsampling"]["tile"] == "square window of the field of view"
    tile = rep["upsampling"]["tile_px"][0]
    # the video's window, less the margin that 10 % of the frames leave empty: about 36
    # particles per frame are 2-4 px from the image's edges at their closest
    assert v.fov_px - 12 < tile <= v.fov_px
    assert rep["n_patches_K"] == pytest.approx(4.0, rel=1e-9)     # every snapshot's box is 2 x the window
    assert rep["patches"] == 3 * 4
    sde = load_sde(r.macro_dir)
    z = sde.simulate(steps=3, runs=50, factor=4, seed=0)[..., 0]
    assert z.mean(0)[-1] > z.mean(0)[0]


def test_interior_psi6_of_a_lattice_window_is_one_and_the_edge_is_not():
    """psi6 of an open field of view over the particles at least ``edge`` inside it: a
    window of a triangular lattice gives 1 exactly with an edge of 1.5 spacings, and less
    with no edge (edge particles' nearest neighbours are not all bonds of the lattice)."""
    import pandas as pd

    from colloidcg.scaling.video_chain import interior_psi6
    s = triangular(12, 12)
    pos = s.pos[np.all(s.pos < s.box * 0.75, axis=1)]        # an open window: no periodic images
    df = pd.DataFrame({"frame": np.repeat([0, 3], len(pos)), "particle": np.tile(np.arange(len(pos)), 2),
                       "x": np.tile(pos[:, 0], 2), "y": np.tile(pos[:, 1], 2)})
    spacing = s.box[0] / 12
    f, z, n = interior_psi6(df, edge=1.5 * spacing)
    assert f.tolist() == [0, 3] and np.allclose(z, 1.0, atol=1e-12)
    assert 0 < n[0] < len(pos)
    _, z0, n0 = interior_psi6(df, edge=0.0)
    assert n0[0] == len(pos) and z0[0] < 0.95
    with pytest.raises(ParameterError, match="edge"):
        interior_psi6(df, edge=s.box[0])


def test_quench_video_renders_every_nth_frame():
    from colloidcg.scaling.video_chain import quench_video
    v = quench_video(n_fov=16, frames=11, seed=0, area_fraction=0.8, diameter=16.0, diffusion=0.25, kT=0.002,
                     substeps=3, render_every=5)
    assert v.frames.shape[0] == 3 and sorted(v.truth["frame"].unique()) == [0, 5, 10]
    assert len(v.psi6_sample) == 11
    with pytest.raises(ParameterError, match="render_every"):
        quench_video(n_fov=16, frames=11, seed=0, area_fraction=0.8, diameter=16.0, diffusion=0.25, kT=0.002,
                     substeps=3, render_every=0)


def test_multi_step_drift_follows_the_mean_trajectory_of_a_mixture():
    """Known truth: two populations relax from the same z at rates 0.3 and 0.05 per frame,
    z(t) = 0.3 + 0.5 (1 - exp(-r t)). At a given z the one-step drift averages whichever
    population is there, so its Euler path from the common start misses the mixture's mean
    trajectory (by 0.05-0.07); the drift refitted to the trajectories (refine_drift) follows the
    mean, which an autonomous drift can represent (it is monotone), to within 0.015, a
    twentieth of its range. A weight of 0 leaves a trajectory out: the drift then follows
    the other one."""
    import copy

    from colloidcg.scaling.macro import refine_drift
    t = np.arange(21)
    paths = np.array([0.3 + 0.5 * (1 - np.exp(-r * t)) for r in (0.3, 0.05)])       # (2, 21)
    rng = np.random.default_rng(0)
    noisy = paths[None] + 0.002 * rng.standard_normal((4, 2, 21))
    z0, z1 = noisy[..., :-1].reshape(-1, 1), noisy[..., 1:].reshape(-1, 1)

    def euler(sde, start, steps=20):
        r = [start]
        with torch.no_grad():
            for _ in range(steps):
                r.append(r[-1] + sde.dt * float(sde.drift(torch.tensor([[r[-1]]], dtype=torch.float64))[0, 0]))
        return np.array(r)

    mean = paths.mean(0)
    one, _ = fit_sde(z0, z1, dt=1.0, names=["z"], seed=0, iterations=80)
    multi = copy.deepcopy(one)
    refine_drift(multi, paths[:, :, None], iterations=150, lr=5e-3)
    miss_one = np.abs(euler(one, mean[0]) - mean).max()
    miss_multi = np.abs(euler(multi, mean[0]) - mean).max()
    assert miss_one > 0.03, miss_one
    assert miss_multi < 0.015, miss_multi
    # sigma is the likelihood fit's, untouched by the refit
    zz = torch.linspace(0.3, 0.8, 7, dtype=torch.float64)[:, None]
    with torch.no_grad():
        torch.testing.assert_close(one.sigma(zz), multi.sigma(zz), rtol=0, atol=0)
    # a weight of 0 removes a trajectory: weights (1, 0) follow the fast population alone
    fast = copy.deepcopy(one)
    refine_drift(fast, paths[:, :, None], weights=np.array([1.0, 0.0]), iterations=150, lr=5e-3)
    assert np.abs(euler(fast, paths[0, 0]) - paths[0]).max() < 0.005
    with pytest.raises(ParameterError, match="paths"):
        refine_drift(one, paths[:, :1, None])
    with pytest.raises(ParameterError, match="path_weights"):
        refine_drift(one, paths[:, :, None], weights=np.zeros(2))


def test_block_draw_paths_are_the_block_states_own_trajectories():
    """Exact: a BlockDraw has block_pairs' increments for the same seed; each block state's
    path starts at its increments' z0, its next value is their mean z1 (the K increments
    average to the block state's own increment), and it ends in NaN after the last step."""
    from colloidcg.scaling.macro import block_draw
    rng = np.random.default_rng(2)
    z = rng.uniform(0.3, 0.8, (9, 5, 1))
    w = rng.integers(50, 70, (9, 5)).astype(float)
    p0, p1 = block_pairs(z, w, blocks=3, sets_per_step=2, seed=4)
    d = block_draw(z, w, blocks=3, sets_per_step=2, seed=4, horizon=3)
    np.testing.assert_array_equal(d.z0, p0)             # particle-weighted: the same increments
    np.testing.assert_array_equal(d.z1, p1)
    p0, p1 = block_pairs(z, blocks=3, sets_per_step=2, seed=4)
    d = block_draw(z, blocks=3, sets_per_step=2, seed=4, horizon=3)     # equal counts: exact averages
    np.testing.assert_array_equal(d.z0, p0)
    np.testing.assert_array_equal(d.z1, p1)
    assert d.paths.shape == (4 * 2, 4, 1)
    for b in range(len(d.paths)):
        rows = d.state == b
        assert rows.sum() == 3
        np.testing.assert_allclose(d.paths[b, 0], d.z0[rows].mean(0), atol=1e-15)
        np.testing.assert_allclose(d.paths[b, 1], d.z1[rows].mean(0), atol=1e-15)
    t = np.repeat(np.arange(4), 2)                     # the macro step each block state starts at
    assert np.array_equal(np.isnan(d.paths[:, :, 0]).sum(1), np.maximum(t + 3 - 4, 0))
    with pytest.raises(ParameterError, match="horizon"):
        block_draw(z, w, blocks=3, horizon=0)


# ---------------------------------------------------------------------- horizon auto (colloidcg.scaling.horizon)
def observed_with_noise(seed, n=64, steps=21, noise=0.05):
    """(n, steps, 1) systems that all follow z(t) = 0.3 + 0.5 (1 - exp(-0.15 t)) exactly, each
    value seen with independent Gaussian noise (``noise``): the one-step drift regresses the
    next value on a noisy one, which biases it (errors in variables), while the paths over
    several steps average the noise out."""
    rng = np.random.default_rng(seed)
    m = 0.3 + 0.5 * (1 - np.exp(-0.15 * np.arange(steps)))
    return (m + noise * rng.standard_normal((n, steps)))[..., None]


def ou_systems(seed, n=128, steps=16, theta=0.2, mean=0.6, sigma=0.03):
    """(n, steps, 1) Ornstein-Uhlenbeck trajectories from near 0.3 (a Markov process in z:
    the one-step drift is exact)."""
    rng = np.random.default_rng(seed)
    z = np.empty((n, steps))
    z[:, 0] = 0.3 + sigma * rng.standard_normal(n)
    for k in range(steps - 1):
        z[:, k + 1] = z[:, k] + theta * (mean - z[:, k]) + sigma * rng.standard_normal(n)
    return z[..., None]


AUTO = dict(blocks=2, dt=1.0, candidates=(0, 4), folds=4, path_lr=5e-3, runs=100)


def test_horizon_choice_is_deterministic_given_the_seed_and_refuses_bad_input():
    from colloidcg.scaling.horizon import choose_horizon
    z = observed_with_noise(0, n=16, steps=8)
    kw = dict(AUTO, candidates=(0, 2, 30), folds=2, sets_per_step=4, iterations=20, path_iterations=10, runs=20)
    h1, r1 = choose_horizon(z, seed=3, **kw)
    h2, r2 = choose_horizon(z, seed=3, **kw)
    assert h1 == h2 and r1["scores"] == r2["scores"]          # bit for bit
    assert r1["candidates"] == [0, 2]                          # 30 > steps - 1 left out
    assert r1["chosen"] == h1 and np.array(r1["scores"]).shape == (2, 2)
    # the rule: the smallest candidate within one SE of the best mean score
    mean, se = np.array(r1["mean_score"]), np.array(r1["se_of_difference_to_best"])
    ok = [h for h, m, e in zip(r1["candidates"], mean, se) if m - mean.min() <= e]
    assert h1 == min(ok)
    for bad, msg in ((dict(folds=1), "folds"), (dict(folds=17), "folds"), (dict(candidates=(-1, 2)), "candidates")):
        with pytest.raises(ParameterError, match=msg):
            choose_horizon(z, seed=0, **{**kw, **bad})
    with pytest.raises(ParameterError, match="z: expected"):
        choose_horizon(z[:, :2], seed=0, **kw)


@pytest.mark.slow
def test_horizon_auto_takes_the_multi_step_drift_where_the_one_step_drift_is_biased():
    """Systems that follow one known path, each value seen with noise 0.05 (errors in
    variables bias the one-step drift): auto takes H = 4, whose held-out score is lower
    than the one-step drift's by more than its standard error. Measured on seeds 0-5 of
    this construction: H = 4 on 5 of 6 (H = 0 on seed 4, where the one-step drift scored
    better); this is seed 1 (scores 0.063 against 0.026, SE 0.004)."""
    from colloidcg.scaling.horizon import choose_horizon
    H, rep = choose_horizon(observed_with_noise(1), seed=1, sets_per_step=8, iterations=80, path_iterations=150,
                            **AUTO)
    mean, se = rep["mean_score"], rep["se_of_difference_to_best"]
    assert H == 4 and rep["best"] == 4
    assert mean[0] - mean[1] > se[0]


@pytest.mark.slow
def test_horizon_auto_keeps_the_one_step_drift_for_an_ou_process():
    """An Ornstein-Uhlenbeck process is Markov in z, so the one-step drift is exact: auto
    keeps H = 0 (the refitted drift's held-out score is within one standard error of
    it). Measured on seeds 0-4 of this construction: H = 0 on all five (the H = 4 score
    lower than H = 0's on two of them, by 2 and 14 %, within the standard error; higher on
    three)."""
    from colloidcg.scaling.horizon import choose_horizon
    H, rep = choose_horizon(ou_systems(0), seed=0, sets_per_step=32, iterations=300, path_iterations=100, **AUTO)
    mean, se = rep["mean_score"], rep["se_of_difference_to_best"]
    assert H == 0
    assert mean[0] - min(mean) <= se[0]


def test_cli_macro_train_block_states_horizon_auto(tmp_path, capsys):
    """`--horizon auto` chooses H by cross-validation over the --init systems and records
    the choice: the candidates longer than the tables (3 macro steps) are left out, the
    fitted horizon is the chosen one, and the choice is printed."""
    from colloidcg.cli import main
    tabs = block_tables(tmp_path, 5)
    model = model_folder(tmp_path / "model", box=tabs[0][1].tolist())
    out = tmp_path / "macro"
    assert main(["macro", "train", str(model), "--init", *[str(t) for t, _ in tabs], "-o", str(out),
                 "--states", "block", "--factor", "4", "--steps", "1", "--block-sets", "4", "--fits", "1",
                 "--horizon", "auto", "--fit-iterations", "20"]) == 0
    rep = json.loads((out / "report.json").read_text())
    choice = rep["horizon_choice"]
    assert choice["candidates"] == [0, 2] and choice["folds"] == 4
    assert rep["horizon_macro_steps"] == choice["chosen"] in (0, 2)
    assert np.array(choice["scores"]).shape == (4, 2)
    assert f"horizon auto: H = {choice['chosen']}" in capsys.readouterr().out
