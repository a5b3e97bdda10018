"""Lees-Edwards (sliding-brick) boundaries of the learned model: exact geometry against a
brute-force image search, the velocity jump across the y boundary, the rectangular path at
rate 0, momentum conservation and an undisturbed uniform shear flow in rollouts, and the
sheared star-melt known answer (LAMMPS) end to end."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from colloidcg.core import MetriplecticModel, ModelConfig, State, rollout
from colloidcg.core import driver
from colloidcg.core.driver import LeesEdwards, minimum_image, search_pairs, shear_velocity, wrap, wrap_velocity
from colloidcg.core.graph import NeighbourList, find_pairs
from colloidcg.core.integrators import EulerMaruyama, PairSplitting

torch.set_num_threads(1)

_HAVE_LAMMPS, _WHY_NO_LAMMPS = __import__("colloidcg.md.lammps", fromlist=["x"]).lammps_available()
_needs_lammps = pytest.mark.skipif(not _HAVE_LAMMPS, reason=f"LAMMPS unavailable: {_WHY_NO_LAMMPS}")


def brute_force_images(r: torch.Tensor, box: torch.Tensor, offset: float, jump: float, reach: int = 2):
    """Nearest image of every j seen from every i by enumerating the sliding-brick images
    r_j + (n_x L_x + n_y delta, n_y L_y, n_z L_z) with velocity v_j + (n_y jump, 0, 0):
    (N, N, d) separations r_i - image and (N, N) the n_y of that image."""
    n, d = r.shape
    best = torch.full((n, n), float("inf"), dtype=r.dtype)
    sep = torch.zeros(n, n, d, dtype=r.dtype)
    ny_best = torch.zeros(n, n, dtype=r.dtype)
    ranges = [range(-reach, reach + 1)] * d
    for ns in itertools.product(*ranges):
        img = torch.zeros(d, dtype=r.dtype)
        img[0] = ns[0] * box[0] + ns[1] * offset
        img[1] = ns[1] * box[1]
        if d == 3:
            img[2] = ns[2] * box[2]
        rij = r[:, None] - (r[None] + img)
        dist = rij.norm(dim=-1)
        closer = dist < best
        best = torch.where(closer, dist, best)
        sep = torch.where(closer.unsqueeze(-1), rij, sep)
        ny_best = torch.where(closer, torch.full_like(ny_best, float(ns[1])), ny_best)
    return sep, best, ny_best


def small_model(seed=0, dim=3, cutoff=1.0, k_B=0.5, substrate=False):
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=dim, cutoff=cutoff, n_s=1, substrate=substrate, k_B=k_B, width=12, energy_width=10,
                      encoder_width=10, n_pair=0)
    m = MetriplecticModel(cfg).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("offset", [0.0, 0.37, 1.9, -2.6, 7.3])
def test_minimum_image_and_velocity_jump_match_brute_force_images(dim, offset):
    """Every pair closer than half the box: the sheared minimum image is the nearest of all
    sliding-brick images, and the velocity jump is n_y times rate L_y of that image."""
    box = torch.tensor([5.0, 4.0, 3.5][:dim], dtype=torch.float64)
    jump = 0.8
    g = torch.Generator().manual_seed(3)
    r = torch.rand(60, dim, generator=g, dtype=torch.float64) * box
    sh = torch.tensor([offset, jump], dtype=torch.float64)
    raw = r[:, None] - r[None]
    got = minimum_image(raw, box, sh)
    sep, best, ny = brute_force_images(r, box, offset, jump)
    near = best < 0.5 * float(box.min())
    assert int(near.sum()) > 200
    assert torch.allclose(got[near], sep[near], atol=1e-12, rtol=0)
    vj = shear_velocity(raw, box, sh)
    assert torch.allclose(vj[near][:, 0], jump * ny[near], atol=1e-12, rtol=0)
    assert float(vj[..., 1:].abs().max()) == 0.0


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("offset", [0.0, 0.9, -2.2])
def test_sheared_pair_search_finds_exactly_the_pairs_within_the_radius(dim, offset):
    """The k-d tree search in the deforming cell, the brute-force torch search and the
    brute-force images agree pair for pair (the tree path and, in a box too small for it,
    the fallback)."""
    box = torch.tensor([9.0, 8.0, 8.5][:dim], dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    r = torch.rand(150, dim, generator=g, dtype=torch.float64) * box
    # unwrapped positions (images of the primary ones) must give the same pairs
    k = torch.randint(-2, 3, (150,), generator=g).to(torch.float64)
    r_unw = r.clone()
    r_unw[:, 0] += k * offset + 9.0 * torch.randint(-1, 2, (150,), generator=g)
    r_unw[:, 1] += k * 8.0
    sh = torch.tensor([offset, 0.5], dtype=torch.float64)
    _, best, _ = brute_force_images(r, box, offset, 0.5)
    for radius in (1.5, 3.7):              # 3.7: beyond the tree's one-image rule: brute force
        truth = {(i, j) for i, j in torch.nonzero(best < radius).tolist() if i < j}
        for pos in (r, r_unw):
            tree = find_pairs(pos, radius, box, sh)
            brute = search_pairs(pos, radius, box, 64, sh)
            assert {tuple(p) for p in tree.tolist()} == truth
            assert torch.equal(tree, brute)


def test_wrap_keeps_pair_geometry_and_relative_velocities():
    """Wrapping unwrapped positions into the box (x shifted by the offset, vx by the jump
    for every box crossed along y) changes no pair's separation or relative velocity."""
    box = torch.tensor([6.0, 5.0, 4.0], dtype=torch.float64)
    sh = torch.tensor([2.3, 0.7], dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    r = (torch.rand(40, 3, generator=g, dtype=torch.float64) - 0.5) * 4 * box     # spans several boxes
    v = torch.randn(40, 3, generator=g, dtype=torch.float64)
    rw, vw = wrap(r, box, sh), wrap_velocity(v, r, box, sh)
    assert bool(((rw >= 0) & (rw <= box)).all())
    i, j = torch.triu_indices(40, 40, 1)
    for pos, vel in ((r, v), (rw, vw)):
        raw = pos[i] - pos[j]
        sep = minimum_image(raw, box, sh)
        rel = vel[i] - vel[j] - shear_velocity(raw, box, sh)
        if pos is r:
            sep0, rel0 = sep, rel
    near = sep0.norm(dim=-1) < 2.0
    assert torch.allclose(sep[near], sep0[near], atol=1e-12)
    assert torch.allclose(rel[near], rel0[near], atol=1e-12)


def test_pair_across_the_boundary_sees_the_velocity_jump():
    """Two particles on either side of the y boundary moving with the uniform shear flow
    v_x = rate y: the model's relative velocity (what its friction acts on) is rate y_ij,
    the flow's, not the lab-frame difference of about -rate L_y."""
    m = small_model(dim=3, cutoff=1.0)
    box = torch.tensor([4.0, 4.0, 4.0], dtype=torch.float64)
    rate, offset = 0.3, 1.1
    sh = torch.tensor([offset, rate * 4.0], dtype=torch.float64)
    r = torch.tensor([[2.0, 0.1, 1.0], [2.0 + offset - 0.2, 3.8, 1.0]], dtype=torch.float64)
    v = torch.zeros(2, 3, dtype=torch.float64)
    v[:, 0] = rate * r[:, 1]
    S = torch.zeros(2, 1, dtype=torch.float64)
    pairs = find_pairs(r, 1.0, box, sh)
    assert pairs.tolist() == [[0, 1]]
    t = m.terms_of(r, v, S, pairs, box, None, sh)
    assert torch.allclose(t.geom.dist, torch.tensor([0.13 ** 0.5], dtype=torch.float64))
    expect = torch.tensor([[rate * 0.3, 0.0, 0.0]], dtype=torch.float64)   # y_ij = 0.1 - (3.8 - 4) = 0.3
    assert torch.allclose(t.vij, expect, atol=1e-14)
    t_rect = m.terms_of(r, v, S, find_pairs(r, 1.0, box), box, None)
    assert t_rect.geom.pairs.shape[0] == 0 or not torch.allclose(t_rect.vij, expect)


def _lattice(n_side: int, a: float, dim: int = 3):
    g = torch.arange(n_side, dtype=torch.float64)
    grids = torch.meshgrid(*([g] * dim), indexing="ij")
    return (torch.stack([x.reshape(-1) for x in grids], -1) + 0.5) * a


@pytest.mark.parametrize("integrator", ["pair_splitting", "euler_maruyama"])
def test_rate_zero_reproduces_the_rectangular_rollout_bit_for_bit(integrator):
    m = small_model(seed=2, dim=3, cutoff=1.0)
    box = torch.full((3,), 3.0, dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    r = torch.rand(54, 3, generator=g, dtype=torch.float64) * box
    v = 0.5 * torch.randn(54, 3, generator=g, dtype=torch.float64)
    S = m.initial_S(r, None, box)
    integ = PairSplitting(m) if integrator == "pair_splitting" else EulerMaruyama(m)
    out = []
    for le in (None, LeesEdwards(0.0, 0.0)):
        nl = NeighbourList(1.0, 0.3, box)
        out.append(driver.run(integ, r, v, S, 30, 0.02, neighbours=nl, box=box, seed=4, substeps=2,
                              lees_edwards=le))
    for a, b in zip(out[0][:3], out[1][:3]):
        assert torch.equal(a, b)


def test_sheared_rollout_conserves_momentum_to_rounding():
    """Pair-only dynamics (no substrate) with noise in a sheared box: the total momentum of
    the recorded velocities (the unwrapped system's, streaming included) stays at its
    initial value to rounding, and so does the sum of peculiar momenta v_x - rate y (its
    change is rate P_y t, P_y = 0 here)."""
    m = small_model(seed=4, dim=3, cutoff=1.0, k_B=0.5)
    box = torch.full((3,), 3.2, dtype=torch.float64)
    rate = 0.4
    g = torch.Generator().manual_seed(1)
    r = torch.rand(60, 3, generator=g, dtype=torch.float64) * box
    v = 0.4 * torch.randn(60, 3, generator=g, dtype=torch.float64)
    v = v - v.mean(0)
    v[:, 0] += rate * (r[:, 1] - r[:, 1].mean())
    S = m.initial_S(r, None, box, LeesEdwards(rate, 0.7).state(0.0, box))
    res = rollout(m, State(r, v, S), 80, 0.05, box=box, seed=3, substeps=2, lees_edwards=LeesEdwards(rate, 0.7))
    assert res.n_neighbour_builds > 1
    P = res.v.sum(1)                                     # (T, d)
    scale = float(res.v.square().sum(-1).mean().sqrt()) * 60 ** 0.5
    assert float((P - P[0]).abs().max()) < 1e-11 * scale
    # peculiar momenta: the streaming velocity at each frame's mean y of the step
    y_mid = 0.5 * (res.r[1:, :, 1] + res.r[:-1, :, 1])
    pec = (res.v[1:, :, 0] - rate * y_mid).sum(1)
    pec0 = (v[:, 0] - rate * r[:, 1]).sum()
    assert float((pec - pec0).abs().max()) < 1e-10 * scale
    # the particles did cross the y boundary (the test exercises the jumps)
    assert float(res.r[..., 1].max()) > float(box[1]) or float(res.r[..., 1].min()) < 0.0


def _sheared_lattice_case(dim: int):
    """A model with a strong pair friction (rate x frame ~ 0.02 per pair), a simple cubic
    lattice of 5^d particles in its box, and the uniform shear flow v_x = rate y on it."""
    m = small_model(seed=6, dim=dim, cutoff=1.5)
    m.update_config(tau=m.config.tau / 100)
    n_side, L = 5, 5.0
    box = torch.full((dim,), L, dtype=torch.float64)
    r = _lattice(n_side, 1.0, dim)
    rate = 0.5
    v = torch.zeros_like(r)
    v[:, 0] = rate * r[:, 1]
    S = m.initial_S(r, None, box, torch.tensor([0.0, rate * L], dtype=torch.float64))
    return m, box, r, v, S, rate


@pytest.mark.parametrize("dim", [2, 3])
def test_noise_free_uniform_shear_flow_stays_uniform(dim):
    """An affinely sheared lattice moving with v_x = rate y is an exact solution of the
    noise-free pair dynamics (every particle sees the same lattice: conservative and
    friction forces cancel pair by pair): with Lees-Edwards boundaries the Euler-Maruyama
    rollout keeps it to rounding; a rectangular box breaks it at the y boundary (the
    control)."""
    m, box, r, v, S, rate = _sheared_lattice_case(dim)
    L = float(box[0])
    dt, steps = 0.05, 60
    integ = EulerMaruyama(m)
    nl = NeighbourList(m.cutoff, 0.3 * m.cutoff, box)
    rs, vs, _, _ = driver.run(integ, r, v, S, steps, dt, neighbours=nl, box=box, noise=False,
                              lees_edwards=LeesEdwards(rate, 0.0))
    t = dt * torch.arange(steps + 1, dtype=torch.float64).view(-1, 1)
    expect_r = r.unsqueeze(0).repeat(steps + 1, 1, 1)
    expect_r[..., 0] = expect_r[..., 0] + rate * r[:, 1] * t
    assert float((rs - expect_r).abs().max()) < 1e-10
    assert float((vs[1:] - v).abs().max()) < 1e-10
    # the strain reached is large: the offset wrapped around the box
    assert rate * L * dt * steps > 0.5 * L
    nl = NeighbourList(m.cutoff, 0.3 * m.cutoff, box)
    _, vs2, _, _ = driver.run(integ, r, v, S, steps, dt, neighbours=nl, box=box, noise=False)
    assert float((vs2[1:] - v).abs().max()) > 0.1 * rate * L


def test_pair_splitting_keeps_uniform_shear_within_its_splitting_error():
    """The pair sweep updates pairs one after another, so an exact uniform flow is kept to
    its splitting error only (about 1 % of the streaming velocity across the box here,
    at a friction of 0.02 per pair and frame); without the jump in the sweep's relative
    velocities, or in a rectangular box, the flow is broken at the boundary (~40 %)."""
    m, box, r, v, S, rate = _sheared_lattice_case(3)
    L = float(box[0])
    nl = NeighbourList(m.cutoff, 0.3 * m.cutoff, box)
    _, vs, _, _ = driver.run(PairSplitting(m), r, v, S, 60, 0.05, neighbours=nl, box=box, noise=False,
                             lees_edwards=LeesEdwards(rate, 0.0))
    assert float((vs[1:] - v).abs().max()) < 0.03 * rate * L
    nl = NeighbourList(m.cutoff, 0.3 * m.cutoff, box)
    _, vs2, _, _ = driver.run(PairSplitting(m), r, v, S, 60, 0.05, neighbours=nl, box=box, noise=False)
    assert float((vs2[1:] - v).abs().max()) > 0.2 * rate * L


def test_verlet_list_follows_the_moving_offset():
    """Particles at rest, offset moving: the list rebuilds as the images slide, and always
    holds every pair closer than the cutoff."""
    box = torch.tensor([6.0, 5.0, 5.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    r = torch.rand(80, 3, generator=g, dtype=torch.float64) * box
    le = LeesEdwards(0.2, 0.0)
    nl = NeighbourList(1.2, 0.4, box)
    for k in range(60):
        sh = le.state(0.5 * k, box)
        cand = {tuple(p) for p in nl.update(r, sh).tolist()}
        need = {tuple(p) for p in find_pairs(r, 1.2, box, sh).tolist()}
        assert need <= cand
    assert nl.n_builds > 5


@pytest.mark.slow
@_needs_lammps
def test_sheared_star_melt_known_answer_short(tmp_path):
    """(Slow since session 44, beside the full version: the default run keeps the sheared
    box's exact invariants above, under 15 minutes.) Sheared star melt, short: MD with xy shear, one particle per star, a momentum-conserving
    model trained on the first window in the Lees-Edwards box, rolled out 10x longer under
    the same shear. Momentum to rounding; the issue's non-Gaussian bound (0.15); the
    velocity profile's rate and shape loosely (3 epochs on 20 frames of 27 stars). Then the
    exported bundle's rollout.py (torch alone, the start frame's tilt as --shear-offset)
    reproduces colloidcg's sheared rollout from the same frame and seed to rounding."""
    import json
    import subprocess
    import sys

    from colloidcg.export import export_bundle
    from colloidcg.export.bundle import load_model
    from colloidcg.md.coarse import read_md_tracks
    from colloidcg.md.shear import sheared_melt_answer
    from colloidcg.simulate import simulate

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = sheared_melt_answer(tmp_path, "short")
    assert abs(out["box_rate"] - out["imposed_rate"]) < 1e-6
    assert out["rollout_frames"] == 10 * out["train_frames"] + 1
    assert out["momentum_drift_rel"] < 1e-9
    assert out["non_gaussian_max_abs_diff"] <= 0.15
    assert abs(out["rate_rel_error"]) < 0.25
    assert out["profile_rel_rms"] < 0.35
    assert 0 < out["rdf_rel_rms"] < 1                  # measured in the sheared box

    bundle = export_bundle(tmp_path / "model", tmp_path / "bundle")
    assert json.loads((Path(bundle) / "bundle.json").read_text())["calibration"]["lees_edwards"]["shear_rate"] \
        == pytest.approx(0.1, rel=1e-9)
    rec = json.loads((tmp_path / "md" / "run.json").read_text())
    df, side = read_md_tracks(rec["dump"], "molecule")
    start, steps = 19, 15
    init = df[(df["frame"] >= start - 2) & (df["frame"] <= start)]
    init[["frame", "particle", "x", "y", "z"]].to_csv(tmp_path / "init.csv", index=False)
    tilt = side["meta"]["lees_edwards"]["tilt_xy"][start]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, str(Path(bundle) / "rollout.py"), "--init", str(tmp_path / "init.csv"),
                    "--steps", str(steps), "--seed", "2", "--frame", str(start), "--substeps", "2",
                    "--shear-offset", repr(tilt), "-o", str(tmp_path / "ro.csv")], check=True, env=env,
                   capture_output=True)
    model, cfg = load_model(bundle)
    sim = simulate(model, cfg, init, side, steps=steps, frame=start, seed=2, substeps=2)
    a = pd.read_csv(tmp_path / "ro.csv").sort_values(["frame", "particle"])
    b = sim.tracks.sort_values(["frame", "particle"])
    assert len(a) == len(b) == (steps + 1) * out["n_stars"]
    assert np.abs(a[["x", "y", "z"]].to_numpy() - b[["x", "y", "z"]].to_numpy()).max() < 1e-9
    # the rollout did cross the y boundary (unwrapped y leaves the box)
    L = side["meta"]["box_px"][1]
    assert ((b["y"] < 0) | (b["y"] > L)).any()


@pytest.mark.slow
@_needs_lammps
def test_sheared_star_melt_known_answer_full(tmp_path):
    """The full sheared answer (125 stars of 4 x 4 beads, cutoff 5 sigma, 100 training
    frames, rollout 1000 frames, strain 10; about 6 minutes): the issue's targets under
    shear, the velocity profile (fitted rate within 5 %, profile within 10 % relative RMS)
    and the transverse non-Gaussian parameter within 0.15 at every lag, momentum to
    rounding; and the transverse MSD within 10 % (measured 6.1 %)."""
    from colloidcg.md.shear import sheared_melt_answer

    out = sheared_melt_answer(tmp_path, "full")
    assert out["momentum_drift_rel"] < 1e-9, out
    assert abs(out["rate_rel_error"]) <= 0.05, out
    assert out["profile_rel_rms"] <= 0.10, out
    assert out["non_gaussian_max_abs_diff"] <= 0.15, out
    assert out["transverse_msd_rel_rms"] <= 0.10, out
    assert out["rdf_rel_rms"] <= 0.10, out             # g(r) by the sheared minimum image (measured 0.049)
