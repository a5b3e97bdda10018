"""Hierarchical upsampling (colloidcg.scaling) against a direct simulation of the large system.

A small periodic bidisperse soft-disk liquid (colloidcg.synthetic dynamics, 150 particles,
area fraction 0.7) is simulated; a model is trained quickly on its trajectory; snapshots
at 4x (default) and 16x (slow) the area are built by upsampling and compared with a direct
simulation of the large system: g(r) relative RMS error <= 0.05, area fraction within
0.5 %, composition kept, no pair closer than 0.9 x the small data's closest approach for
that pair of sizes, and no seam in the density (neighbours within 24 px) and |psi6|
across the seams: the band within one mean diameter of a seam agrees with the bulk
(seam_distance > 72 px) within 2 standard errors (over samples).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from colloidcg import evaluate as ev
from colloidcg.cli import main
from colloidcg.errors import ColloidcgError, ParameterError
from colloidcg.neighbours import pairs
from colloidcg.scaling import side_steps, upsample
from colloidcg.structure.order import psi_k
from colloidcg.train import TrainConfig, train_tracks

torch.set_num_threads(1)

PHI = 0.7
N_SMALL = 150
DIAMETER = 16.0


def soft_disks(n, frames, every, seed, equilibration=2000, phi=PHI):
    """Bidisperse (1 : 1.4, equal numbers) overdamped harmonic soft disks in a periodic
    square box at area fraction ``phi`` (D0 = 0.5 px^2/frame, kT = 0.01 eps, 6 substeps per
    frame), recorded every ``every`` frames after ``equilibration`` frames. Returns (tracks
    with a diameter column, px; box side px)."""
    from colloidcg.synthetic.dynamics import Box, Integrator, random_packing
    rng = np.random.default_rng(seed)
    small = 2 * DIAMETER / 2.4
    diam = rng.permutation(np.resize(np.array([small, 1.4 * small]), n))
    side = math.sqrt(np.sum(np.pi / 4 * diam ** 2) / phi)
    box = Box(side, side, yc=side / 2)
    pos = random_packing(n, diam, box, rng)
    integ = Integrator(diam, box, 0.5, 1e-2, 0.0, lambda t: (0.0, 0.0), rng)
    nsub, out = 6, []
    for f in range(-equilibration, frames * every):
        if f >= 0 and f % every == 0:
            out.append(pos.copy())
        for k in range(nsub):
            pos, _ = integ.step(pos, None, f + k / nsub, 1.0 / nsub)
    out = np.array(out)
    t = len(out)
    df = pd.DataFrame({"frame": np.repeat(np.arange(t), n), "particle": np.tile(np.arange(n), t),
                       "x": out[..., 0].ravel(), "y": out[..., 1].ravel(), "diameter": np.tile(diam, t)})
    return df, side


@pytest.fixture(scope="module")
def small():
    """The small system (100 frames, one every 5 simulated frames) and a model trained on it."""
    df, side = soft_disks(N_SMALL, 100, 5, seed=0)
    res = train_tracks(df, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=8, lr=1e-2, progress=False, loc_noise="none", cutoff=24.0,
                                   size_column="diameter", seed=0), box_px=[side, side])
    return df, side, res.model, {"calibration": res.report["calibration"]}


def closest_by_species(df, box):
    """{(small, large) diameter pair: smallest distance} over every frame, px."""
    out = {}
    for _, g in df.groupby("frame"):
        p = g[["x", "y"]].to_numpy()
        s = g["diameter"].to_numpy()
        pr, d = pairs(np.mod(p, box), 30.0, box, distances=True)
        key = pd.Series(d).groupby([np.minimum(s[pr[:, 0]], s[pr[:, 1]]), np.maximum(s[pr[:, 0]], s[pr[:, 1]])]).min()
        for k, v in key.items():
            out[k] = min(out.get(k, np.inf), v)
    return out


def seam_profiles(tracks, box, r_bond=24.0, edges=(0, 4, 8, 12, 16, 24)):
    """Per-particle local density (neighbours within ``r_bond`` px) and |psi6| (same
    neighbours), binned by distance to the nearest seam (``edges`` px), minus the same in
    the bulk (seam_distance > 3 r_bond), per sample. Returns {name: (mean difference per
    bin, standard error per bin)} over samples."""
    diffs = {"density": [], "psi6": []}
    for _, g in tracks.groupby("frame"):
        p = g[["x", "y"]].to_numpy()
        pr = pairs(p, r_bond, box)
        src = np.concatenate([pr[:, 0], pr[:, 1]])
        dst = np.concatenate([pr[:, 1], pr[:, 0]])
        # minimum-image bond vectors: psi_k takes positions; shift dst to the image nearest src
        d = p[dst] - p[src]
        d -= np.asarray(box) * np.round(d / np.asarray(box))
        pos2 = np.concatenate([p, p[src] + d])
        dst2 = len(p) + np.arange(len(src))
        psi = np.abs(psi_k(pos2, src, dst2, len(pos2), 6)[:len(p)])
        dens = np.bincount(src, minlength=len(p)).astype(float)
        seam = g["seam_distance"].to_numpy()
        bulk = seam > 3 * r_bond
        which = np.digitize(seam, edges) - 1
        for name, val in (("density", dens), ("psi6", psi)):
            ref = np.nanmean(val[bulk])
            diffs[name].append([np.nanmean(val[which == b]) - ref for b in range(len(edges) - 1)])
    out = {}
    for name, rows in diffs.items():
        a = np.array(rows)
        out[name] = (a.mean(0), a.std(0, ddof=1) / math.sqrt(len(a)))
    return out


def area_fraction(tracks, box):
    return float(tracks.groupby("frame")["diameter"].apply(lambda s: np.sum(np.pi / 4 * s ** 2)).mean()
                 / np.prod(box))


def check_against_direct(small, factor, samples, frames_direct):
    df, side, model, cfg = small
    up = upsample(model, cfg, df, factor=factor, samples=samples, seed=3)
    big, bside = soft_disks(N_SMALL * factor, frames_direct, 25, seed=1)
    m = int(round(math.sqrt(factor)))
    np.testing.assert_allclose(up.box_px, [m * side] * 2, rtol=1e-12)
    u = up.tracks
    # g(r) against the direct large simulation
    g_up = ev.rdf(u, box_px=up.box_px, max_frames=samples, r_max=60.0, bins=30)
    g_big = ev.rdf(big, box_px=[bside, bside], max_frames=frames_direct, r_max=60.0, bins=30)
    err_g = ev.rel_rms(g_up["g"], g_big["g"])
    # area fraction and composition
    phi_up, phi_big = area_fraction(u, up.box_px), area_fraction(big, [bside, bside])
    large = df["diameter"].max()
    frac_small = float(np.mean(df[df["frame"] == 0]["diameter"] == large))
    frac_up = float(np.mean(u["diameter"] == large))
    # closest approach
    data_min = closest_by_species(df, [side, side])
    up_min = closest_by_species(u, up.box_px)
    worst = min(up_min[k] / data_min[k] for k in up_min)
    # the band within one mean diameter of the seams against the bulk: one comparison per
    # quantity (bin by bin, five bins each, a perfect method would fail one bin in four)
    prof = seam_profiles(u, up.box_px, edges=(0, 16))
    z = {name: np.abs(mean) / np.maximum(se, 1e-12) for name, (mean, se) in prof.items()}
    fine = seam_profiles(u, up.box_px)
    shown = {name: np.round(mean / np.maximum(se, 1e-12), 2) for name, (mean, se) in fine.items()}
    print(f"x{factor}: g(r) rel. RMS {err_g:.4f}; area fraction {phi_up:.5f} vs direct {phi_big:.5f}; "
          f"large fraction {frac_up:.4f} vs {frac_small:.4f}; closest pair / data's closest {worst:.3f}; "
          f"seam band (0-16 px) |diff|/SE density {z['density'][0]:.2f}, psi6 {z['psi6'][0]:.2f}; "
          f"profile (0-4-8-12-16-24 px) diff/SE density {shown['density']}, psi6 {shown['psi6']}; "
          f"{up.parameters['seconds']} s; relaxation {up.parameters['seam_relaxation']}")
    assert err_g <= 0.05
    assert abs(phi_up / phi_big - 1) <= 0.005
    assert abs(frac_up - frac_small) < 1e-12
    assert worst >= 0.9
    for name in z:
        assert np.all(z[name] <= 2.0), name
    return up


def test_upsample_4x_matches_direct_simulation(small):
    up = check_against_direct(small, 4, samples=10, frames_direct=20)
    assert up.parameters["side_steps"] == [2]
    assert set(up.tracks["frame"]) == set(range(10))


@pytest.mark.slow
def test_upsample_16x_matches_direct_simulation(small):
    up = check_against_direct(small, 16, samples=10, frames_direct=12)
    assert up.parameters["side_steps"] == [2, 2]


def test_side_steps_and_bad_factors():
    assert side_steps(4, 2) == [2]
    assert side_steps(16, 2) == [2, 2]
    assert side_steps(36, 2) == [2, 3]
    assert side_steps(8, 3) == [2]
    for bad in (2, 8, 12, 1, 0):
        with pytest.raises(ParameterError, match="factor"):
            side_steps(bad, 2)
    with pytest.raises(ParameterError, match="not a cube"):
        side_steps(16, 3)


def test_seeded_and_open_field_of_view(small):
    df, side, model, cfg = small
    a = upsample(model, cfg, df, factor=4, seed=5, frame=7, relax_steps=2)
    b = upsample(model, cfg, df, factor=4, seed=5, frame=7, relax_steps=2)
    pd.testing.assert_frame_equal(a.tracks, b.tracks)
    assert a.parameters["frame"] == 7
    # an open field of view: a square window of a wider frame, tiled (no box anywhere)
    open_cfg = {"calibration": {**cfg["calibration"], "box_px": None}}
    wide = df[(df["x"] % side) < side].copy()
    wide["x"] = wide["x"] % side
    wide["y"] = (wide["y"] % side) * 0.6
    wide = wide[wide["y"] < 0.6 * side]
    up = upsample(model, open_cfg, wide, factor=4, seed=1, relax_steps=2)
    assert up.parameters["tile"].startswith("square window")
    assert up.box_px[0] == pytest.approx(up.box_px[1])
    with pytest.raises(ColloidcgError, match="field of view"):
        upsample(model, open_cfg, wide[wide["x"] < 40], factor=4)
    with pytest.raises(ParameterError, match="frame: 999"):
        upsample(model, cfg, df, factor=4, frame=999)
    with pytest.raises(ColloidcgError, match="size"):
        upsample(model, cfg, df.drop(columns="diameter"), factor=4)


def test_cli(small, tmp_path):
    df, side, model, cfg = small
    from colloidcg.core.persist import save_model
    from colloidcg.outputs import provenance, read_table, write_table
    mdir = save_model(model, tmp_path / "model", {"calibration": cfg["calibration"]})
    init = tmp_path / "small.parquet"
    write_table(init, df[df["frame"] < 5], provenance("test", {}, {}))
    out = tmp_path / "big.parquet"
    assert main(["upsample", str(mdir), "--init", str(init), "--factor", "4", "--samples", "2",
                 "--relax-steps", "2", "-o", str(out)]) == 0
    big, side_meta = read_table(out)
    assert {"frame", "particle", "x", "y", "diameter", "seam_distance"} <= set(big.columns)
    assert set(big["frame"]) == {0, 1}
    assert side_meta["meta"]["box_px"] == pytest.approx([2 * side] * 2)
    assert side_meta["parameters"]["seam_relaxation"]["model_steps"] == 2
    assert main(["upsample", str(mdir), "--init", str(init), "--factor", "8", "-o",
                 str(tmp_path / "x.parquet")]) == 2
    assert not (tmp_path / "x.parquet").exists()
