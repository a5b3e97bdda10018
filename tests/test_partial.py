"""Partial evolution with a frozen halo (issue 19): known answers.

- With noise keyed by particle / pair identity, one micro step of every interior particle of
  a patch equals its step in the whole periodic system (to rounding; asserted to 1e-5
  relative), for synthetic's soft disks and for the learned model (Euler-Maruyama and
  exact-OU, 2D and 3D), including patches that wrap across the box edge and patches whose
  halo spans the box.
- Over k micro steps the error spreads inward from the frozen halo by at most one
  interaction range per step (soft disks): particles deeper than (k - 1) ranges stay exact.
- Over a macro step of many micro steps the patch interior's mean-square displacement
  matches the whole system's within its statistical error; on small patches the frozen
  halo confines the particles beside it (MSD low), which a mobile buffer layer removes.
- Malformed input is refused with a one-line ParameterError.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colloidcg.errors import ParameterError
from colloidcg.scaling.partial import cut_patch, full_step, partial_evolution
from colloidcg.scaling.simulators import (PAIR, PARTICLE, MicroSimulator, MicroState, ModelSimulator,
                                          SoftDiskSimulator, SoftSphereSimulator, keyed_normals)
from colloidcg.synthetic.dynamics import Box, fire_relax

torch.set_num_threads(1)
D = 16.0          # disk diameter, px


def disk_snapshot(n_side: int = 12, phi: float = 0.8, seed: int = 0) -> MicroState:
    """A FIRE-relaxed random packing of n_side^2 disks of diameter D at area fraction phi,
    with shuffled, non-contiguous identities."""
    rng = np.random.default_rng(seed)
    n = n_side * n_side
    L = float(np.sqrt(n * np.pi * D * D / 4 / phi))
    pos = fire_relax(rng.uniform(0, L, (n, 2)), np.full(n, D), Box(L, L, 0.0))
    ids = rng.permutation(n).astype(np.int64) * 7 + 3
    return MicroState(np.mod(pos, L), None, np.array([L, L]), ids, None, None)


def displacement(after: np.ndarray, before: np.ndarray, box) -> np.ndarray:
    d = np.asarray(after) - np.asarray(before)
    if box is not None:
        d -= box * np.round(d / box)
    return d


def assert_same_step(ps, snap: MicroState, full: MicroState, rtol: float = 1e-5) -> None:
    """The patch's interior displacements (and velocities, S) equal the full system's."""
    a = displacement(ps.after.pos[ps.inner_mask], ps.before.pos[ps.inner_mask], ps.before.box)
    b = displacement(full.pos[ps.inner], snap.pos[ps.inner], snap.box)
    scale = np.abs(b).max()
    assert scale > 0
    assert np.abs(a - b).max() <= rtol * scale
    for name in ("vel", "S"):
        x, y = getattr(ps.after, name), getattr(full, name)
        if y is not None:
            x, y = x[ps.inner_mask], y[ps.inner]
            assert np.abs(x - y).max() <= rtol * max(np.abs(y).max(), 1e-12), name


@pytest.fixture(scope="module")
def disks() -> MicroState:
    return disk_snapshot()


# ----------------------------------------------------------------------------- keyed noise
def test_keyed_normals_are_a_function_of_their_counter():
    ids = np.arange(20000, dtype=np.int64) * 3 + 1
    z = keyed_normals(11, 5, PARTICLE, ids, None, 2)
    perm = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(keyed_normals(11, 5, PARTICLE, ids[perm], None, 2), z[perm])
    # standard normal: mean 0, variance 1, uncorrelated channels and steps (4e4 numbers)
    assert abs(z.mean()) < 4 / np.sqrt(z.size)
    assert abs(z.var() - 1) < 4 * np.sqrt(2 / z.size)
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 4 / np.sqrt(len(z))
    z2 = keyed_normals(11, 6, PARTICLE, ids, None, 2)
    assert abs(np.corrcoef(z.ravel(), z2.ravel())[0, 1]) < 4 / np.sqrt(z.size)
    p = keyed_normals(11, 5, PAIR, ids, ids + 1, 2)
    assert abs(np.corrcoef(z.ravel(), p.ravel())[0, 1]) < 4 / np.sqrt(z.size)
    # tails: kurtosis of a normal is 3
    assert abs(np.mean(z ** 4) - 3) < 0.15


def test_simulators_satisfy_the_protocol():
    from colloidcg.core import MetriplecticModel, ModelConfig
    assert isinstance(SoftDiskSimulator(diffusion=0.05, kT=1e-3, diameter=D), MicroSimulator)
    assert isinstance(SoftSphereSimulator(diffusion=0.05, kT=1e-3, diameter=D), MicroSimulator)
    assert isinstance(ModelSimulator(MetriplecticModel(ModelConfig(dim=2))), MicroSimulator)


# ----------------------------------------------------------------------------- soft disks
def test_soft_disk_patch_step_equals_full_step(disks):
    sim = SoftDiskSimulator(diffusion=0.05, kT=1e-3, diameter=D, substeps=1)
    steps = partial_evolution(sim, [disks], patch=70.0, steps=1, patches_per_snapshot=4, seed=1)
    L = disks.box[0]
    assert all(ps.n_patches == pytest.approx(L * L / 70.0 ** 2) for ps in steps)
    for ps in steps:
        assert ps.before.box is None                     # open system
        assert len(ps.inner) > 5
        assert_same_step(ps, disks, full_step(sim, disks, 1, ps.key))
        # the halo did not move
        np.testing.assert_array_equal(ps.after.pos[~ps.inner_mask], ps.before.pos[~ps.inner_mask])


def test_soft_disk_patch_across_the_corner_and_spanning_the_box(disks):
    """A patch centred on the box corner wraps over both edges; a patch whose halo reaches
    around the box is simulated in the periodic box, every outside particle frozen."""
    sim = SoftDiskSimulator(diffusion=0.05, kT=1e-3, diameter=D, substeps=1)
    L = disks.box[0]
    for centre, side, periodic in ((np.array([1.0, L - 2.0]), 64.0, False), (np.array([40.0, 90.0]), 130.0, True)):
        before, rows, mask, frozen, per = cut_patch(disks, centre, side, 2 * D)
        assert per == periodic
        d = displacement(disks.pos[rows[mask]], centre, disks.box)
        assert np.all(np.abs(d) < side / 2)
        outside = np.ones(len(disks.pos), bool)
        outside[rows[mask]] = False
        assert np.all(np.abs(displacement(disks.pos[outside], centre, disks.box)).max(1) >= side / 2)
        np.testing.assert_array_equal(frozen, ~mask)
        after = sim.advance(before, 1, frozen=frozen, key=99)
        full = full_step(sim, disks, 1, 99)
        a = displacement(after.pos[mask], before.pos[mask], before.box)
        b = displacement(full.pos[rows[mask]], disks.pos[rows[mask]], disks.box)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


def test_soft_disk_error_spreads_one_range_per_micro_step(disks):
    """After k micro steps, interior particles deeper than (k - 1) interaction ranges (plus
    their motion) from the frozen halo still equal the full system's; nearer ones do not."""
    sim = SoftDiskSimulator(diffusion=0.05, kT=1e-3, diameter=D, substeps=1)
    k, side = 3, 124.0
    centre = np.array([30.0, 150.0])
    before, rows, mask, frozen, per = cut_patch(disks, centre, side, 2 * D)
    assert not per
    after = sim.advance(before, k, frozen=frozen, key=5)
    full = full_step(sim, disks, k, 5)
    a = displacement(after.pos[mask], before.pos[mask], None)
    b = displacement(full.pos[rows[mask]], disks.pos[rows[mask]], disks.box)
    depth = side / 2 - np.abs(before.pos[mask] - centre).max(1)
    deep = depth > (k - 1) * D + 1.0
    err = np.abs(a - b).max(1)
    assert deep.sum() > 5 and (~deep).sum() > 5
    assert err[deep].max() <= 1e-5 * np.abs(b).max()
    assert err[depth < 0.5 * D].max() > 1e-3 * np.abs(b).max()     # the halo's influence is real


def test_soft_disk_noise_follows_identity_not_order(disks):
    """Reordering the particles of a state changes nothing."""
    sim = SoftDiskSimulator(diffusion=0.05, kT=1e-3, diameter=D, substeps=2)
    perm = np.random.default_rng(3).permutation(len(disks.pos))
    a = sim.advance(disks, 2, frozen=None, key=8)
    b = sim.advance(disks._replace(pos=disks.pos[perm], ids=disks.ids[perm]), 2, frozen=None, key=8)
    np.testing.assert_allclose(b.pos, a.pos[perm], rtol=0, atol=1e-10)


def test_patch_msd_matches_full_system(disks):
    """Macro step of 10 frames (40 micro steps): the mean interior MSD of patches equals the
    whole system's MSD of the same particles with the same noise within the statistical
    error of that MSD."""
    sim = SoftDiskSimulator(diffusion=0.05, kT=1e-3, diameter=D, substeps=4)
    steps = partial_evolution(sim, [disks], patch=80.0, steps=10, patches_per_snapshot=6, seed=2)
    mp, mf = [], []
    for ps in steps:
        full = full_step(sim, disks, 10, ps.key)
        mp.append((displacement(ps.after.pos[ps.inner_mask], ps.before.pos[ps.inner_mask], None) ** 2).sum(1))
        mf.append((displacement(full.pos[ps.inner], disks.pos[ps.inner], disks.box) ** 2).sum(1))
    mp, mf = np.concatenate(mp), np.concatenate(mf)
    se = mf.std() / np.sqrt(len(mf))
    assert mf.mean() > 0.5        # the particles moved (px^2)
    assert abs(mp.mean() - mf.mean()) < 2 * se


def test_mobile_buffer_removes_the_frozen_halo_bias(disks):
    """Beside a frozen halo a particle is more confined than in the whole system: on a small
    patch (60 px, under 4 diameters) over 20 frames the interior MSD reads low by several
    standard errors of its paired difference; a mobile buffer of 2 ranges removes most of
    that bias."""
    sim = SoftDiskSimulator(diffusion=0.05, kT=1e-3, diameter=D, substeps=4)
    bias, se = {}, {}
    for buf in (0.0, 2 * D):
        steps = partial_evolution(sim, [disks], patch=60.0, steps=20, patches_per_snapshot=6, buffer=buf, seed=2)
        diff = []
        for ps in steps:
            assert ps.before.box is None
            assert np.array_equal(ps.frozen_mask[ps.inner_mask], np.zeros(len(ps.inner), bool))
            assert (~ps.frozen_mask & ~ps.inner_mask).any() == (buf > 0)
            full = full_step(sim, disks, 20, ps.key)
            a = (displacement(ps.after.pos[ps.inner_mask], ps.before.pos[ps.inner_mask], None) ** 2).sum(1)
            b = (displacement(full.pos[ps.inner], disks.pos[ps.inner], disks.box) ** 2).sum(1)
            diff.append(a - b)
        diff = np.concatenate(diff)
        bias[buf], se[buf] = diff.mean(), diff.std() / np.sqrt(len(diff))
    assert bias[0.0] < -3 * se[0.0]
    assert abs(bias[2 * D]) < 0.2 * abs(bias[0.0])


# ----------------------------------------------------------------------------- learned model
def _model(dim: int, frame_average: bool, substrate: bool = True, seed: int = 0):
    from colloidcg.core import MetriplecticModel, ModelConfig
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=dim, cutoff=12.0, frame_average=frame_average, substrate=substrate, n_pair=2)
    return MetriplecticModel(cfg).double()


@pytest.mark.parametrize("frame_average,substrate", [(True, True), (False, True), (False, False)])
def test_model_patch_step_equals_full_step(disks, frame_average, substrate):
    """The learned model (exact-OU / Euler-Maruyama with and without substrate noise),
    px -> um at 0.5 um/px, 2 fps: interior positions, velocities and S after one step."""
    from colloidcg.core.integrators import ExactOU, EulerMaruyama, integrator_for
    m = _model(2, frame_average, substrate)
    assert isinstance(integrator_for(m, local=True), ExactOU if frame_average else EulerMaruyama)
    sim = ModelSimulator(m, {"calibration": {"um_per_px": 0.5, "fps": 2.0}}, substeps=1)
    assert sim.interaction_range == 24.0
    rng = np.random.default_rng(1)
    snap = sim.prepare(disks._replace(vel=rng.normal(0, 0.3, disks.pos.shape)))
    assert snap.S is not None
    steps = partial_evolution(sim, [snap], patch=60.0, steps=1, patches_per_snapshot=2, seed=3)
    for ps in steps:
        assert ps.before.box is None and len(ps.inner) > 5
        assert_same_step(ps, snap, full_step(sim, snap, 1, ps.key))


def test_model_patch_step_equals_full_step_3d():
    rng = np.random.default_rng(4)
    L, n = 30.0, 900
    m = _model(3, True, seed=1)
    m.update_config(cutoff=2.4)
    sim = ModelSimulator(m, {"calibration": {"um_per_px": 1.0, "fps": 1.0}})
    snap = sim.prepare(MicroState(rng.uniform(0, L, (n, 3)), None, np.full(3, L), np.arange(n, dtype=np.int64),
                                  rng.normal(0, 0.1, (n, 3)), None))
    (ps,) = partial_evolution(sim, [snap], patch=6.0, steps=1, seed=0)
    assert ps.before.box is None and ps.n_patches == pytest.approx(125.0) and len(ps.inner) > 5
    assert_same_step(ps, snap, full_step(sim, snap, 1, ps.key))


# ----------------------------------------------------------------------------- soft spheres (3D)
def sphere_snapshot(n_side: int = 9, phi: float = 0.5, seed: int = 0) -> MicroState:
    """n_side^3 spheres of diameter D at volume fraction phi, random positions pushed apart by
    200 overdamped steps of the soft-sphere forces, shuffled identities."""
    rng = np.random.default_rng(seed)
    n = n_side ** 3
    L = float((n * np.pi / 6 * D ** 3 / phi) ** (1 / 3))
    sim = SoftSphereSimulator(diffusion=0.05, kT=1e-3, diameter=D)
    pos = rng.uniform(0, L, (n, 3))
    for _ in range(200):
        pos = np.mod(pos + np.clip(sim._forces(pos, np.full(n, D), np.full(3, L)) * 40.0, -1, 1), L)
    ids = rng.permutation(n).astype(np.int64) * 5 + 2
    return MicroState(pos, None, np.full(3, L), ids, None, None)


def test_soft_sphere_forces_are_the_harmonic_potentials_gradient():
    """Forces equal minus the numerical gradient of U = sum (1 - r / sigma)^2 / 2 over
    overlapping pairs (sigma the mean diameter), minimum image; they sum to zero."""
    from colloidcg.neighbours import pairs
    rng = np.random.default_rng(1)
    L = 60.0
    pos, diam = rng.uniform(0, L, (80, 3)), rng.uniform(12.0, 20.0, 80)
    box = np.full(3, L)
    sim = SoftSphereSimulator(diffusion=0.05, kT=1e-3, interaction_range=20.0)

    def energy(p):
        pr, r = pairs(p, 20.0, box, distances=True)
        sig = 0.5 * (diam[pr[:, 0]] + diam[pr[:, 1]])
        return 0.5 * np.sum(np.clip(1 - r / sig, 0, None) ** 2)

    f = sim._forces(pos, diam, box)
    assert np.abs(f).max() > 1e-3
    np.testing.assert_allclose(f.sum(0), 0.0, atol=1e-12)
    h = 1e-6
    for i in rng.choice(80, 6, replace=False):
        for k in range(3):
            a, b = pos.copy(), pos.copy()
            a[i, k] += h
            b[i, k] -= h
            assert f[i, k] == pytest.approx(-(energy(a) - energy(b)) / (2 * h), abs=1e-7)


def test_soft_sphere_patch_step_equals_full_step():
    snap = sphere_snapshot()
    sim = SoftSphereSimulator(diffusion=0.05, kT=1e-3, diameter=D, substeps=1)
    steps = partial_evolution(sim, [snap], patch=50.0, steps=1, patches_per_snapshot=3, seed=2)
    L = snap.box[0]
    for ps in steps:
        assert ps.n_patches == pytest.approx((L / 50.0) ** 3)
        assert ps.before.box is None and len(ps.inner) > 5
        assert_same_step(ps, snap, full_step(sim, snap, 1, ps.key))
        np.testing.assert_array_equal(ps.after.pos[~ps.inner_mask], ps.before.pos[~ps.inner_mask])
    with pytest.raises(ParameterError, match="soft spheres are 3D"):
        sim.advance(disk_snapshot(), 1)


def test_soft_sphere_free_diffusion_and_noise_by_identity():
    """Non-overlapping spheres diffuse freely: per-axis variance 2 D0 t (4000 particles, 5
    frames); the same key gives each identity the same displacement in any order."""
    rng = np.random.default_rng(3)
    n, L = 4000, 4000.0
    s = MicroState(rng.uniform(0, L, (n, 3)), np.full(n, 1.0), np.full(3, L), np.arange(n, dtype=np.int64),
                   None, None)
    sim = SoftSphereSimulator(diffusion=0.3, kT=1e-2, diameter=1.0, substeps=4)
    a = sim.advance(s, 5, key=9)
    d = displacement(a.pos, s.pos, s.box)
    assert d.var() == pytest.approx(2 * 0.3 * 5, rel=4 * np.sqrt(2 / d.size))
    perm = rng.permutation(n)
    b = sim.advance(s._replace(pos=s.pos[perm], ids=s.ids[perm]), 5, key=9)
    np.testing.assert_allclose(b.pos, a.pos[perm], atol=1e-9)


# ----------------------------------------------------------------------------- refusals
def test_refusals(disks):
    sim = SoftDiskSimulator(diffusion=0.05, kT=1e-3, diameter=D)
    L = disks.box[0]
    bad = [
        (dict(patch=70.0, steps=1, halo=1.5 * D), "halo"),
        (dict(patch=1.9 * 2 * D / 2, steps=1), "patch"),
        (dict(patch=L + 1, steps=1), "patch"),
        (dict(patch=70.0, steps=0), "steps"),
        (dict(patch=70.0, steps=1, patches_per_snapshot=0), "patches_per_snapshot"),
    ]
    for kw, word in bad:
        with pytest.raises(ParameterError, match=f"^{word}:") as e:
            partial_evolution(sim, [disks], **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(ParameterError, match=r"^snapshots\[0\].box"):
        partial_evolution(sim, [disks._replace(box=None)], patch=70.0, steps=1)
    dup = disks._replace(ids=np.zeros(len(disks.pos), np.int64))
    with pytest.raises(ParameterError, match=r"ids: particle identities must be unique"):
        partial_evolution(sim, [dup], patch=70.0, steps=1)
    with pytest.raises(ParameterError, match="^snapshots:"):
        partial_evolution(sim, [], patch=70.0, steps=1)
    with pytest.raises(ParameterError, match="^frozen:"):
        sim.advance(disks, 1, frozen=np.zeros(3, bool), key=0)
    with pytest.raises(ParameterError, match="^diffusion:"):
        SoftDiskSimulator(diffusion=-1.0, kT=1e-3, diameter=D)
