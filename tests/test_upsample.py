"""Hierarchical upsampling (colloidcg.scaling) against a direct simulation of the large system.

A small periodic bidisperse soft-disk liquid (colloidcg.synthetic dynamics, 150 particles,
area fraction 0.7) is simulated; a model is trained on its trajectory (8 epochs; 24 for the
slow comparisons, whose seams take the relaxing model's structure); snapshots
at 4x and 16x the area are built by upsampling and compared with a direct simulation of
the large system (both slow; the default suite checks the exact invariants on 8 samples at
4x): g(r) relative RMS error <= 0.05, area fraction within
0.5 %, composition kept, no pair closer than 0.9 x the small data's closest approach for
that pair of sizes, and no seam: the band within one mean diameter of a seam differs from
the bulk (seam_distance > 72 px) by less than 2 standard errors (over samples) in the
number of neighbours within 24 px and in |psi6|, and by at most SEAM_DENSITY_BOUND and
SEAM_PSI6_BOUND; and 16-48 px from a seam within 2 standard errors in density (the ridge
at the relaxed band's edge, met since session 16).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from colloidcg import evaluate as ev
from colloidcg.cli import main
from colloidcg.errors import ColloidcgError, ParameterError
from colloidcg.scaling import side_steps, upsample
from colloidcg.scaling.seams import SeamVisibleWarning, closest_by_pair, seam_check_summary, seam_profile
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


def _small_system(epochs):
    df, side = soft_disks(N_SMALL, 100, 5, seed=0)
    res = train_tracks(df, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=epochs, lr=1e-2, progress=False, loc_noise="none", cutoff=24.0,
                                   size_column="diameter", seed=0), box_px=[side, side])
    return df, side, res.model, {"calibration": res.report["calibration"]}


@pytest.fixture(scope="module")
def small():
    """The small system (100 frames, one every 5 simulated frames) and a model trained on it
    quickly (8 epochs)."""
    return _small_system(8)


@pytest.fixture(scope="module")
def small_trained():
    """The same small system with a model trained 24 epochs, for the slow tests against a
    direct simulation. The seam relaxation gives the seams the model's own structure: with
    the 8-epoch model the band within a diameter of a seam held 0.08-0.11 more neighbours
    than the bulk at K = 16 on 2 of 4 upsampling seeds (+2.0 to +2.7 SE, 10 samples; session
    39's packages), with the 24-epoch one every seed lies within 1.8 SE (-0.08 to -0.002)."""
    return _small_system(24)


def closest_by_species(df, box):
    """{(small, large) diameter pair: smallest distance} over every frame, px."""
    return closest_by_pair(df, box, "diameter", r_max=30.0)


def test_closest_by_pair_without_sizes_is_one_minimum_over_all_frames():
    """Without a size column the result has one key, (None, None), holding the smallest
    distance of any frame (minimum image), not one entry per frame."""
    box = np.array([100.0, 100.0])
    df = pd.DataFrame({"frame": [0, 0, 0, 1, 1, 1], "particle": [0, 1, 2, 0, 1, 2],
                       "x": [10.0, 17.0, 60.0, 1.0, 96.0, 50.0], "y": [10.0, 10.0, 60.0, 50.0, 50.0, 20.0]})
    out = closest_by_pair(df, box)
    assert list(out) == [(None, None)]
    assert out[(None, None)] == pytest.approx(5.0)       # frame 1, across the periodic edge


def seam_profiles(tracks, box, r_bond=24.0, edges=(0, 4, 8, 12, 16, 24)):
    return seam_profile(tracks, box, r_bond, edges)


def area_fraction(tracks, box):
    return float(tracks.groupby("frame")["diameter"].apply(lambda s: np.sum(np.pi / 4 * s ** 2)).mean()
                 / np.prod(box))


#: Seam bounds asserted (band within one mean diameter of a seam minus the bulk, mean over
#: samples): |density difference| (neighbours within 24 px; bulk 5.30) and |psi6
#: difference| (bulk 0.459; K = 4, 10 samples, seed 0). Measured with an 8-epoch model and 10
#: samples per seed (K = 4, seeds 0-11; before session 31): density -0.084 +- 0.020 (mean +- SE
#: over seeds, range -0.224 to +0.008), |psi6| -0.016 +- 0.004 (range -0.049 to +0.001); K = 16,
#: seeds 0-3: density -0.058 +- 0.013, |psi6| -0.019 +- 0.004. Session 39, 16x, seeds 0-3:
#: +0.026 to +0.106 with the 8-epoch model, -0.077 to -0.002 with the 24-epoch one.
SEAM_DENSITY_BOUND = 0.25
SEAM_PSI6_BOUND = 0.04


def check_against_direct(small, factor, samples, frames_direct, seed):
    df, side, model, cfg = small
    up = upsample(model, cfg, df, factor=factor, samples=samples, seed=seed)
    big, bside = soft_disks(N_SMALL * factor, frames_direct, 25, seed=1)
    m = int(round(math.sqrt(factor)))
    np.testing.assert_allclose(up.box_px, [m * side] * 2, rtol=1e-12)
    u = up.tracks
    # g(r) against the direct large simulation
    g_up = ev.rdf(u, box_px=up.box_px, max_frames=samples, r_max=60.0, bins=30)
    g_big = ev.rdf(big, box_px=[bside, bside], max_frames=frames_direct, r_max=60.0, bins=30)
    err_g = ev.rel_rms(g_up["g"], g_big["g"])
    # area fraction and composition: exact by construction (no particle dropped), checked
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
    diff = {name: float(mean[0]) for name, (mean, se) in prof.items()}
    z = {name: float(mean[0] / max(se[0], 1e-12)) for name, (mean, se) in prof.items()}
    fine = seam_profiles(u, up.box_px)
    shown = {name: np.round(mean / np.maximum(se, 1e-12), 2) for name, (mean, se) in fine.items()}
    print(f"x{factor}, {samples} samples, seed {seed}: g(r) rel. RMS {err_g:.4f}; area fraction {phi_up:.5f} "
          f"vs direct {phi_big:.5f}; large fraction {frac_up:.4f} vs {frac_small:.4f}; closest pair / data's "
          f"closest {worst:.3f}; seam band (0-16 px) minus bulk: density {diff['density']:+.4f} "
          f"({z['density']:+.2f} SE), psi6 {diff['psi6']:+.4f} ({z['psi6']:+.2f} SE); "
          f"profile (0-4-8-12-16-24 px) diff/SE density {shown['density']}, psi6 {shown['psi6']}; "
          f"{up.parameters['seconds']} s; relaxation {up.parameters['seam_relaxation']}")
    assert err_g <= 0.05
    assert abs(phi_up / phi_big - 1) <= 0.005
    assert abs(frac_up - frac_small) < 1e-12
    assert worst >= 0.9
    assert abs(diff["density"]) <= SEAM_DENSITY_BOUND
    assert abs(diff["psi6"]) <= SEAM_PSI6_BOUND
    # the tiles: K per sample, each one whole frame of the small system (none dropped)
    counts = u.groupby(["frame", "tile"]).size()
    assert len(counts) == samples * factor and (counts == N_SMALL).all()
    return up, z


@pytest.fixture(scope="module")
def up4_short(small):
    """K = 4, 8 samples (seed 0), the default relaxation: a few seconds, for the exact
    invariants of the method."""
    df, side, model, cfg = small
    return upsample(model, cfg, df, factor=4, samples=8, seed=0)


def test_upsample_4x_exact_invariants(small, up4_short):
    """What the method keeps exactly: two 2 x 2 doublings' worth of box, every tile whole
    (no particle dropped), so the area fraction and the composition of the input; no pair
    closer than 0.9 x the data's closest approach for its pair of sizes; and the input's
    g(r) (the small system's own, which differs from a direct large simulation's by 0.015)
    within the issue's 0.05."""
    df, side, model, cfg = small
    up = up4_short
    u = up.tracks
    assert up.parameters["side_steps"] == [2]
    assert set(u["frame"]) == set(range(8))
    np.testing.assert_allclose(up.box_px, [2 * side] * 2, rtol=1e-12)
    assert up.parameters["seam_relaxation"]["particles_dropped"] == 0
    counts = u.groupby(["frame", "tile"]).size()
    assert len(counts) == 8 * 4 and (counts == N_SMALL).all()
    # each sample: four whole frames of the input, so the input's area fraction and
    # composition exactly (the input's frames all hold the same 150 diameters)
    phi_small = float(np.sum(np.pi / 4 * df[df["frame"] == 0]["diameter"] ** 2)) / side ** 2
    assert phi_small == pytest.approx(PHI, rel=1e-12)
    assert area_fraction(u, up.box_px) == pytest.approx(phi_small, rel=1e-12)
    for _, g in u.groupby("frame"):
        np.testing.assert_array_equal(np.sort(g["diameter"].to_numpy()),
                                      np.sort(np.tile(df[df["frame"] == 0]["diameter"].to_numpy(), 4)))
    # positions wrapped into the box
    assert ((u[["x", "y"]] >= 0) & (u[["x", "y"]] < up.box_px[0])).all().all()
    # closest approach per pair of species
    data_min = closest_by_species(df, [side, side])
    up_min = closest_by_species(u, up.box_px)
    assert set(up_min) == set(data_min)
    assert min(up_min[k] / data_min[k] for k in up_min) >= 0.9, (up_min, data_min)
    # the input's own structure
    g_up = ev.rdf(u, box_px=up.box_px, max_frames=8, r_max=60.0, bins=30)
    g_small = ev.rdf(df, box_px=[side, side], max_frames=100, r_max=60.0, bins=30)
    assert ev.rel_rms(g_up["g"], g_small["g"]) <= 0.05
    rel = up.parameters["seam_relaxation"]
    assert 0.25 <= rel["k_B_scale"] < 1.0          # calibrated: the trained model runs hot here
    assert rel["particles_relaxed"] > 0 and rel["model_steps"] == 3 and rel["band_edge"] == "reflect"
    assert rel["seam_overlaps"] == "reinsert" and rel["particles_reinserted"] > 0
    # the default is adaptive: on this soft liquid 3 frames of the band heal the pilots' seams
    pilots = rel["adaptive"]
    assert pilots["steps"] == 3 and pilots["tiles"] == 4 * pilots["pilots"] and not pilots["unhealed"]
    assert abs(pilots["z"]) < pilots["threshold"] and rel["band_px"] == pytest.approx(24.0)
    assert rel["healing"] is None


@pytest.fixture(scope="module")
def up4(small_trained):
    """K = 4, 60 samples (seed 0) against a direct simulation of 600 particles: enough to
    resolve the seam deficit (about 45 s)."""
    return check_against_direct(small_trained, 4, samples=60, frames_direct=20, seed=0)


@pytest.mark.slow
def test_upsample_4x_matches_direct_simulation(up4):
    up, _ = up4
    assert up.parameters["side_steps"] == [2]
    assert set(up.tracks["frame"]) == set(range(60))


@pytest.mark.slow
def test_upsample_no_seam_within_two_standard_errors(up4):
    """The issue's criterion: no seam in density or |psi6| within 2 standard errors (60
    samples resolve the seam the model's own temperature left: -4.4 SE in |psi6| with
    ``relax_temperature=1``)."""
    up, z = up4
    assert abs(z["density"]) <= 2.0 and abs(z["psi6"]) <= 2.0, z
    rel = up.parameters["seam_relaxation"]
    assert 0.25 <= rel["k_B_scale"] < 1.0          # calibrated: the trained model runs hot here


@pytest.mark.slow
def test_upsample_no_ridge_at_the_band_edge(up4):
    """The issue's criterion over the rest of the profile: 16-48 px from a seam, the band's
    outer part and the held layer beyond it. Met since pairs placed too close across a seam
    are reinserted into gaps on their own side instead of pushed apart (pushing made a
    density wave) and the band, its edge reflecting, is relaxed for 3 frames (10 frames
    gave it the model's own structure: 2-3 % more neighbours within 24 px)."""
    up, _ = up4
    mean, se = seam_profiles(up.tracks, up.box_px, edges=(16, 48))["density"]
    assert abs(mean[0]) <= 2.0 * se[0], (mean, se)


@pytest.mark.slow
def test_upsample_16x_matches_direct_simulation(small_trained):
    """One seed (3), 10 samples: g(r), area fraction, closest pairs and no seam within 2
    standard errors."""
    up, z = check_against_direct(small_trained, 16, samples=10, frames_direct=12, seed=3)
    assert up.parameters["side_steps"] == [2, 2]
    assert abs(z["density"]) <= 2.0 and abs(z["psi6"]) <= 2.0, z


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
    with pytest.raises(ParameterError, match="tiling: 'oriented' .* no periodic box"):
        upsample(model, open_cfg, wide, factor=4, seed=1, relax_steps=0, tiling="oriented")
    assert up.box_px[0] == pytest.approx(up.box_px[1])
    with pytest.raises(ColloidcgError, match="field of view"):
        upsample(model, open_cfg, wide[wide["x"] < 40], factor=4)
    with pytest.raises(ParameterError, match="frame: 999"):
        upsample(model, cfg, df, factor=4, frame=999)
    with pytest.raises(ColloidcgError, match="size"):
        upsample(model, cfg, df.drop(columns="diameter"), factor=4)



def test_windows_of_a_drifting_field_of_view(small):
    """Tracks with the drift subtracted: each frame's field of view is the camera's window
    moved by that frame's drift, so the union over frames is wider than any one frame.
    Windows are cut inside the frame they come from, and the tiled seams show no gap; cut
    from the union they held empty strips and the seams lost a fifth of their neighbours
    (-0.54 of the bulk's). What stays is a deficit of 0.10-0.22 neighbours (24 samples,
    upsampling seeds 2-5: -1.4 to -2.6 standard errors); with 8 samples the standard error
    itself scatters, and seed 2 gave -3.3 SE on the packages of session 38."""
    from colloidcg.data import frame_fields_of_view
    df, side, model, cfg = small
    open_cfg = {"calibration": {**cfg["calibration"], "box_px": None}}
    w = 0.6 * side
    shift = np.linspace(0.0, 0.3 * side, df["frame"].nunique())   # the camera's drift, px along x
    x = df["x"].to_numpy() % side
    seen = (x >= shift[df["frame"].to_numpy()]) & (x < shift[df["frame"].to_numpy()] + w)
    drifting = df[seen].assign(x=x[seen], y=df["y"].to_numpy()[seen] % side * 0.999)
    drifting = drifting[drifting["y"] < w]
    # the tracker's image positions: the camera's view is [0, w) in each frame
    drifting = drifting.assign(x_image=drifting["x"] - shift[drifting["frame"].to_numpy()], y_image=drifting["y"])
    frames, fov = frame_fields_of_view(drifting, ["x", "y"])
    assert fov.shape == (df["frame"].nunique(), 2, 2)
    assert np.all(fov[:, 0, 1] - fov[:, 0, 0] <= w) and np.ptp(fov[:, 0, 0]) > 0.25 * side
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeamVisibleWarning)
        up = upsample(model, open_cfg, drifting, factor=4, samples=24, seed=2)
    assert 0.9 * w <= up.parameters["tile_px"][0] <= w    # the union of the frames is w + 0.3 side wide
    check = up.parameters["seam_check"]["density"]
    print("drifting field of view, seam check:", check)
    # one frame's tiles have the video's window, so every frame's samples have one box
    for f in (0, 99):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeamVisibleWarning)
            one = upsample(model, open_cfg, drifting, factor=4, samples=1, seed=2, frame=f, relax_steps=0)
        assert one.parameters["tile_px"] == up.parameters["tile_px"]
    assert abs(check["z"]) < 3.5 and abs(check["difference"]) < 0.3, check

def test_cli(small, tmp_path, capsys):
    df, side, model, cfg = small
    from colloidcg.core.persist import save_model
    from colloidcg.outputs import provenance, read_table, write_table
    mdir = save_model(model, tmp_path / "model", {"calibration": cfg["calibration"]})
    init = tmp_path / "small.parquet"
    write_table(init, df[df["frame"] < 5], provenance("test", {}, {}))
    out = tmp_path / "big.parquet"
    assert main(["upsample", str(mdir), "--init", str(init), "--factor", "4", "--samples", "2",
                 "--relax-steps", "2", "--band-edge", "held", "--seam-overlaps", "push", "--tiling", "oriented",
                 "--tiling-candidates", "8", "-o", str(out)]) == 0
    cap = capsys.readouterr()
    err = cap.err      # the progress bar: 2 samples x 1 doubling x 2 model frames
    assert "seam relaxation (model frames)" in err and "4/4" in err, err
    assert "seam relaxation: 2 model frames of a band of 24 px\n" in cap.out, cap.out
    # the default: adaptive, its pilots and their verdict said in one line
    assert main(["upsample", str(mdir), "--init", str(init), "--factor", "4", "--quiet", "-o",
                 str(tmp_path / "default.parquet")]) == 0
    said = capsys.readouterr().out
    assert "seam relaxation: 3 model frames of a band of 24 px (adaptive: 8 pilot doublings" in said, said
    # the liquid has no crystal orientation spanning a tile: auto tiling places tiles at random
    assert "tiling: random (auto: the input's order coherence 0." in said and "below 0.5" in said, said
    assert "after 3 frames, healed)" in said
    # the final seam check, said in one line (one sample: over its 4 tiles)
    check = read_table(tmp_path / "default.parquet")[1]["parameters"]["seam_check"]
    assert f"seam check: {seam_check_summary(check)}\n" in said and "neighbours" in seam_check_summary(check)
    big, side_meta = read_table(out)
    assert side_meta["parameters"]["tiling"]["method"] == "oriented"
    assert side_meta["parameters"]["tiling"]["candidates"] == 8
    assert side_meta["parameters"]["seam_relaxation"]["band_edge"] == "held"
    assert side_meta["parameters"]["seam_relaxation"]["seam_overlaps"] == "push"
    assert side_meta["parameters"]["seam_relaxation"]["particles_reinserted"] == 0
    assert {"frame", "particle", "x", "y", "diameter", "seam_distance", "tile"} <= set(big.columns)
    assert set(big["frame"]) == {0, 1}
    assert side_meta["meta"]["box_px"] == pytest.approx([2 * side] * 2)
    assert side_meta["parameters"]["seam_relaxation"]["model_steps"] == 2
    assert main(["upsample", str(mdir), "--init", str(init), "--factor", "8", "-o",
                 str(tmp_path / "x.parquet")]) == 2
    assert not (tmp_path / "x.parquet").exists()
    # a sidecar box different from the model's: a one-line refusal naming the file (exit 2)
    wrong = tmp_path / "wrong.parquet"
    write_table(wrong, df[df["frame"] < 5], provenance("test", {}, {}, meta={"box_px": [1.5 * side, side]}))
    assert main(["upsample", str(mdir), "--init", str(wrong), "--factor", "4", "-o",
                 str(tmp_path / "y.parquet")]) == 2
    assert main(["upsample", str(mdir), "--init", str(init), "--factor", "4", "--seed", "-1", "-o",
                 str(tmp_path / "y.parquet")]) == 2
    assert main(["upsample", str(mdir), "--init", str(init), "--factor", "4", "--tiling", "matched",
                 "--tiling-candidates", "0", "-o", str(tmp_path / "y.parquet")]) == 2
    assert not (tmp_path / "y.parquet").exists()


def test_box_from_sidecar_first_and_mismatch_refused(small):
    df, side, model, cfg = small
    # the sidecar's box is used; a different calibration box is refused, naming the file
    meta = {"meta": {"box_px": [side, side]}}
    up = upsample(model, cfg, df, meta, factor=4, seed=0, relax_steps=0, frame=3)
    assert up.box_px == pytest.approx([2 * side] * 2)
    wide = df.copy()
    wide["x"] = np.mod(wide["x"], side) * 1.5         # the same frames in a 1.5x wider box
    with pytest.raises(ColloidcgError, match=r"wide\.parquet: sidecar meta\.box_px .* differs"):
        upsample(model, cfg, wide, {"meta": {"box_px": [1.5 * side, side]}}, factor=4, name="wide.parquet")
    # no sidecar: the model's box, and positions that fold onto each other in it are refused
    with pytest.raises(ColloidcgError, match=r"wide\.parquet: positions outside the periodic box"):
        upsample(model, cfg, wide, None, factor=4, name="wide.parquet")
    # unwrapped tracks of the right box are accepted
    assert (df["x"] < 0).any() or (df["x"] >= side).any() or (df["y"] < 0).any() or (df["y"] >= side).any()


def test_held_layer_one_deterministic_step_equals_whole_system(small):
    """One noise-free step of the band with its held layer equals, for the band's particles,
    the same step of the whole system."""
    import copy
    from colloidcg.core import State
    from colloidcg.core.integrate import rollout
    import importlib
    U = importlib.import_module("colloidcg.scaling.upsample")

    df, side, model, cfg = small
    model = copy.deepcopy(model).double()
    src = U._source(df, None, cfg, "diameter", None, 24.0, 2, "tracks")
    rng = np.random.default_rng(0)
    parts = [U._base(src, rng) for _ in range(4)]
    big, new, _ = U.tile_configurations(parts, 2)
    band = 24.0
    one, n = U._relax(model, big, new, band_px=band, cutoff_px=24.0, steps=1, um=1.0, fps=1.0, seed=0,
                      noise=False)
    mobile = new < band
    assert n == mobile.sum() > 0
    box = torch.tensor(big.box, dtype=torch.float64)
    r0 = torch.tensor(big.pos, dtype=torch.float64)
    with torch.no_grad():
        S0 = model.initial_S(r0, None, box)
        whole = rollout(model, State(r0, torch.tensor(big.vel), S0, torch.tensor(big.size)), 1, 1.0, box=box,
                        noise=False)
    ref = np.mod(whole.r[-1].numpy(), big.box)
    d = one.pos[mobile] - ref[mobile]
    d -= big.box * np.round(d / big.box)
    assert np.abs(d).max() < 1e-10
    np.testing.assert_allclose(one.vel[mobile], whole.v[-1].numpy()[mobile], rtol=0, atol=1e-10)
    assert np.abs(one.pos[mobile] - big.pos[mobile]).max() > 1e-3      # it did move
    # the old 1.3 x range layer is too thin: the band's step differs from the whole system's
    sub = new < band + 1.3 * 24.0
    idx = np.nonzero(sub)[0]
    with torch.no_grad():
        rs = r0[idx]
        thin = rollout(model, State(rs, torch.tensor(big.vel[idx]), model.initial_S(rs, None, box),
                                    torch.tensor(big.size[idx])), 1, 1.0, box=box, noise=False,
                       boundary=torch.tensor(~mobile[idx]))
    dt_ = np.mod(thin.r[-1].numpy(), big.box)[mobile[idx]] - ref[idx][mobile[idx]]
    dt_ -= big.box * np.round(dt_ / big.box)
    assert np.abs(dt_).max() > 1e-8


def test_separate_sees_pairs_with_an_inactive_particle():
    from colloidcg.scaling import ClosestApproach, separate
    box = np.array([100.0, 100.0])
    pos = np.array([[50.0, 50.0], [55.0, 50.0], [10.0, 10.0], [12.0, 10.0]])
    closest = ClosestApproach(None, np.array([[10.0]]), None)
    active = np.array([True, False, False, False])
    new, keep, moved = separate(pos, None, box, closest, active=active)
    assert keep.all() and moved == 1
    np.testing.assert_allclose(new[1], pos[1])                  # the inactive one stays
    assert np.linalg.norm(new[1] - new[0]) == pytest.approx(10.0)
    np.testing.assert_allclose(new[2:], pos[2:])                # pairs without an active particle: untouched


def test_bad_input_is_one_line_error(small):
    from colloidcg.scaling.upsample import _frames
    df, side, model, cfg = small
    with pytest.raises(ColloidcgError, match="no rows"):
        upsample(model, cfg, df.iloc[:0], factor=4)
    with pytest.raises(ColloidcgError, match="one particle per frame"):
        upsample(model, cfg, df[df["particle"] == 0], factor=4)
    for bad in (np.nan, 0.0, -1.0):
        d = df.copy()
        d.loc[d.index[5], "diameter"] = bad
        with pytest.raises(ColloidcgError, match="size column"):
            upsample(model, cfg, d, factor=4)
    with pytest.raises(ParameterError, match="seed"):
        upsample(model, cfg, df, factor=4, seed=-1)
    with pytest.raises(ParameterError, match="seam_field: must be one of auto, gibbs, pair, none, got 'springs'"):
        upsample(model, cfg, df, factor=4, seam_field="springs")
    # tracks saved every other frame: velocities from the previous frame present, per frame
    every2 = df[df["frame"] % 2 == 0]
    pos, vel, _ = _frames(every2, "diameter", None, np.array([side, side]), "t")
    p4 = every2[every2["frame"] == 4][["x", "y"]].to_numpy()
    p2 = every2[every2["frame"] == 2][["x", "y"]].to_numpy()
    np.testing.assert_allclose(vel[2], (p4 - p2) / 2, atol=1e-12)
    assert np.abs(vel[2]).max() > 0


def test_relaxation_temperature_recovers_the_models_own(small):
    """Known truth: on frames drawn from the model's own rollouts (k_B as trained), the
    calibration returns a k_B scale of 1 (on the simulated data: about 0.5)."""
    import importlib
    from colloidcg.core import State, rollout
    U = importlib.import_module("colloidcg.scaling.upsample")

    df, side, model, cfg = small
    src = U._source(df, None, cfg, "diameter", None, 24.0, 2, "tracks")
    box = torch.tensor([side, side], dtype=torch.float64)
    pos, vel, size = [], [], []
    for k, t in enumerate((10, 35, 60, 85)):
        r0 = torch.tensor(src.pos[t])
        with torch.no_grad():
            res = rollout(model, State(r0, torch.tensor(src.vel[t]), model.initial_S(r0, None, box),
                                       torch.tensor(src.size[t])), 30, 1.0, box=box, seed=100 + k)
        pos.append(np.mod(res.r[-1].numpy(), side))
        vel.append(res.v[-1].numpy())
        size.append(src.size[t])
    own = U._Source(pos, vel, size, src.box, None, None)
    k_B = model.k_B
    cal = U.relaxation_temperature(model, own, steps=10, cutoff_px=24.0, um=1.0, fps=1.0, seed=7)
    assert model.k_B == k_B                                   # restored
    assert abs(cal["k_B_scale"] - 1.0) < 0.2, cal
    tried = list(cal["grid"].values())               # interpolated between tried scales
    assert min(tried) <= cal["first_shell_g"] <= max(tried), cal


def test_relax_temperature_option(small, tmp_path):
    df, side, model, cfg = small
    k_B = model.k_B
    up = upsample(model, cfg, df, factor=4, seed=2, frame=5, relax_steps=1, relax_temperature=1)
    rel = up.parameters["seam_relaxation"]
    assert rel["k_B_scale"] == 1.0 and rel["temperature_calibration"]["rollout_first_shell_g"] == {}
    assert model.k_B == k_B
    for bad in (0, -1.0, float("nan"), "hot", True):
        with pytest.raises(ParameterError, match="relax_temperature"):
            upsample(model, cfg, df, factor=4, relax_temperature=bad)
    from colloidcg.core.persist import save_model
    from colloidcg.outputs import provenance, write_table
    mdir = save_model(model, tmp_path / "model", {"calibration": cfg["calibration"]})
    init = tmp_path / "small.parquet"
    write_table(init, df[df["frame"] < 3], provenance("test", {}, {}))
    for bad in ("-1", "nan", "warm"):
        assert main(["upsample", str(mdir), "--init", str(init), "--factor", "4", "--relax-temperature", bad,
                     "-o", str(tmp_path / "z.parquet")]) == 2
    assert not (tmp_path / "z.parquet").exists()


def test_reflect_into_band_exact():
    """A particle outside the band is mirrored at the band's edge along the axis of its
    nearest seam line (distance 2 band - d), its velocity along that axis reversed; the
    particles inside are untouched."""
    from colloidcg.scaling.upsample import reflect_into_band
    period = np.array([100.0, 100.0])
    pos = np.array([[3.0, 50.0], [27.0, 40.0], [60.0, 128.0], [150.0, 178.0], [50.0, 47.0]])
    vel = np.arange(10.0).reshape(5, 2) + 1.0
    p, v = pos.copy(), vel.copy()
    n = reflect_into_band(p, v, period, 24.0)
    assert n == 3
    np.testing.assert_array_equal(p[0], pos[0])                     # inside: untouched
    np.testing.assert_array_equal(v[0], vel[0])
    np.testing.assert_allclose(p[1], [21.0, 40.0])                  # 27 from the line x = 0 -> 21
    np.testing.assert_allclose(v[1], [-vel[1, 0], vel[1, 1]])
    np.testing.assert_allclose(p[2], [60.0, 120.0])                 # 28 below y = 100 -> 20
    np.testing.assert_allclose(v[2], [vel[2, 0], -vel[2, 1]])
    np.testing.assert_array_equal(p[3], pos[3])                     # 22 from the line y = 200: inside
    np.testing.assert_allclose(p[4], [50.0, 1.0])                   # 47 from y = 0 (50 from x = 0) -> 1
    # every particle ends inside the band (within band of some seam line)
    off = p - period * np.round(p / period)
    assert np.all(np.min(np.abs(off), axis=1) <= 24.0)


def test_band_edge_reflect_keeps_the_band_inside(small):
    """With the band's edge reflecting, every relaxed particle ends within the band of a new
    seam line (up to the pushes after the relaxation, at most a few tenths of a px here);
    with the default held layer, band particles cross the edge and stay out."""
    df, side, model, cfg = small
    out = {}
    for edge in ("held", "reflect"):
        up = upsample(model, cfg, df, factor=4, seed=4, frame=7, relax_steps=3, relax_temperature=1.0, band_edge=edge)
        u = up.tracks
        assert up.parameters["seam_relaxation"]["band_edge"] == edge
        p = u[["x", "y"]].to_numpy()
        off = p - side * np.round(p / side)                 # the new seam lines: multiples of the tile's side
        now = np.min(np.abs(off), axis=1)
        band = u["seam_distance"].to_numpy() < 24.0
        out[edge] = now[band].max()
    assert out["reflect"] <= 24.5, out
    assert out["held"] > 26.0, out
    with pytest.raises(ParameterError, match="band_edge"):
        upsample(model, cfg, df, factor=4, band_edge="open")
    with pytest.raises(ParameterError, match="seam_overlaps"):
        upsample(model, cfg, df, factor=4, seam_overlaps="drop")


def test_reinsert_across_seams_moves_particles_within_their_part_at_their_seam_distance(small):
    """Exact invariants of the reinsertion: no particle added or removed, each stays in its
    part at its own distance to the new seams (within the tolerance), sizes, velocities and
    tiles travel with it; and of the 10-30 pairs placed closer than the push distance
    across a seam, at most one is left."""
    import importlib
    U = importlib.import_module("colloidcg.scaling.upsample")
    from colloidcg.neighbours import pairs as all_pairs

    df, side, model, cfg = small
    src = U._source(df, None, cfg, "diameter", None, 24.0, 2, "tracks")
    push = U.closest_approach(src.pos[:20], src.size[:20], src.box, quantile=0.02)
    rng = np.random.default_rng(3)

    def too_close(c, part):
        pr, d = all_pairs(c.pos, push.largest(c.size), c.box, distances=True)
        i, j = pr[:, 0], pr[:, 1]
        return int(np.sum((d < push(c.size[i], c.size[j])) & (part[i] != part[j])))

    for _ in range(3):
        c, new, part = U.tile_configurations([U._base(src, rng) for _ in range(4)], 2)
        out, new2, n = U.reinsert_across_seams(c, new, part, 2, push, rng)
        before, after = too_close(c, part), too_close(out, part)
        assert before >= 10 and n >= before // 2
        assert after <= 1, (before, after)     # what is left (here at most one) goes to separate()
        assert len(out.pos) == len(c.pos)
        moved = np.any(out.pos != np.mod(c.pos, c.box), axis=1)
        assert moved.sum() == n
        where, dist = U._part_frame(out.pos, c.box / 2, 2)
        np.testing.assert_array_equal(where, part)
        np.testing.assert_allclose(new2, dist, atol=1e-9)
        assert np.abs(new2 - new).max() <= U.REINSERT_TOL_PX + 1e-9
        np.testing.assert_array_equal(out.size, c.size)
        np.testing.assert_array_equal(out.vel, c.vel)
        np.testing.assert_array_equal(out.tiles(), c.tiles())
        np.testing.assert_allclose(out.seam[moved], new2[moved])      # seams of this level only


def hex_crystal(nx=8, ny=8, a=16.0, noise=0.0, seed=0):
    """A triangular crystal of spacing ``a`` px commensurate with its periodic rectangular
    box (nx per row, ny rows, ny even), positions (nx ny, 2) px jittered by ``noise`` px.
    Returns (positions, box (2,) px)."""
    box = np.array([nx * a, ny * a * math.sqrt(3) / 2])
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    pos = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2)
    return np.mod(pos + np.random.default_rng(seed).normal(0.0, noise, pos.shape), box), box


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("rotate", [False, True], ids=["matched", "oriented"])
def test_matched_tiling_continues_a_crystal_across_the_seams(m, rotate):
    """Registry-matched tiling (match_parts, by symmetries or by turned windows) on a
    perfect periodic crystal tile under random shifts and reflections: every seam
    continues the lattice (no pair closer than the spacing, |psi6| at the seams that of the
    bulk, 1, every particle kept); random tiling of the same parts makes pairs far closer
    than the spacing and lowers |psi6| at the seams."""
    import importlib
    U = importlib.import_module("colloidcg.scaling.upsample")
    from colloidcg.neighbours import nearest
    from colloidcg.scaling.observables import psi6_local

    a = 16.0
    pos, box = hex_crystal(a=a)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        parts = [U._transform(U.Configuration(pos, np.zeros_like(pos), None, box, np.full(len(pos), np.inf)), rng)
                 for _ in range(m * m)]
        for tiling in ("random", "matched"):
            use, rep = U.match_parts(parts, m, rng, rotate=rotate) if tiling == "matched" else (parts, None)
            cfg, new, _ = U.tile_configurations(use, m)
            assert len(cfg.pos) == m * m * len(pos)
            psi = np.abs(psi6_local(cfg.pos, cfg.box))
            closest = float(nearest(cfg.pos, 1, box=cfg.box)[0].min())
            seam, bulk = psi[new < a].mean(), psi[new >= 2 * a].mean()
            assert bulk == pytest.approx(1.0, abs=1e-9)
            if tiling == "matched":
                assert closest == pytest.approx(a, rel=1e-6)
                assert seam == pytest.approx(1.0, abs=1e-6)
                assert rep["parts_matched"] == m * m - 1 and rep["score"] == pytest.approx(1.0, abs=1e-6)
            else:
                assert closest < 0.8 * a and seam < 0.95, (seed, closest, seam)


def test_registry_correction_recovers_a_small_offset():
    """The matched shift's correction: a periodic crystal displaced by a known 2.3 px offset
    (under a quarter spacing), with anchors on the true lattice sites (thermal jitter 0.5
    px), gives the offset back to the jitter over the square root of the anchors; a
    liquid's correction is small against a spacing."""
    import importlib
    U = importlib.import_module("colloidcg.scaling.upsample")
    pos, box = hex_crystal(nx=12, ny=12, a=16.0)
    rng = np.random.default_rng(4)
    delta = np.array([2.3, -1.1])
    anchors = np.mod(pos[rng.choice(len(pos), 40, replace=False)] + rng.normal(0, 0.5, (40, 2)), box)
    got = U._registry_correction(np.mod(pos - delta, box), anchors, box)
    np.testing.assert_allclose(got, delta, atol=0.3)
    liquid = rng.uniform(0, 1, (144, 2)) * box
    assert np.hypot(*U._registry_correction(liquid, anchors, box)) < 4.0


def test_rotated_window_is_a_rigid_cut_of_the_periodic_pattern():
    """rotated_window: at angle 0 from a point onto itself it returns the configuration
    (same particles, box, sizes, tiles); at any angle it cuts a perfect crystal's pattern
    without a defect (every nearest distance the spacing, psi6 turned by 6 theta), keeps
    the box's share of particles, lands the chosen point where asked, and turns velocities
    with positions."""
    import importlib
    U = importlib.import_module("colloidcg.scaling.upsample")
    from colloidcg.neighbours import nearest
    from colloidcg.scaling.observables import psi6_local

    a = 16.0
    pos, box = hex_crystal(a=a)
    n = len(pos)
    rng = np.random.default_rng(4)
    vel = rng.normal(size=(n, 2))
    cfg = U.Configuration(pos, vel, rng.uniform(10, 20, n), box, np.full(n, np.inf), np.arange(n) % 3, 3)
    same = U.rotated_window(cfg, 0.0, pos[5], pos[5])
    order = np.lexsort(same.pos.T)
    ref = np.lexsort(pos.T)
    np.testing.assert_allclose(same.pos[order], pos[ref], atol=1e-9)
    np.testing.assert_allclose(same.vel[order], vel[ref], atol=1e-12)
    np.testing.assert_array_equal(same.size[order], cfg.size[ref])
    np.testing.assert_array_equal(same.tiles()[order], cfg.tiles()[ref])
    for theta in (0.3, 1.0, 2.5):
        to = np.array([0.4, 0.7]) * box
        w = U.rotated_window(cfg, theta, pos[7], to)
        assert np.all((w.pos >= 0) & (w.pos < box)) and np.array_equal(w.box, box)
        assert np.min(np.linalg.norm(w.pos - to, axis=1)) < 1e-9          # the chosen particle lands there
        d = nearest(w.pos, 1)[0]
        assert d.min() == pytest.approx(a, rel=1e-9)                       # no defect inside the window
        inner = np.all((w.pos > 1.5 * a) & (w.pos < box - 1.5 * a), axis=1)
        psi = psi6_local(w.pos, None)[inner]
        np.testing.assert_allclose(np.angle(psi * np.exp(-6j * theta)), 0.0, atol=1e-9)
        assert abs(len(w.pos) - n) <= 2 * (box.sum() / a)                  # the cut edges' share
        j = np.argmin(np.linalg.norm(w.pos - to, axis=1))
        k = 7
        R = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        np.testing.assert_allclose(w.vel[j], R @ vel[k], atol=1e-12)


def test_oriented_candidates_continue_a_lattice_at_any_angle():
    """The turned windows match_parts tries (``tiling="oriented"``) take the placed
    neighbours' lattice orientation, whatever it is, and continue it: a periodic crystal
    at 0 degrees placed in a cell surrounded by the same lattice turned by 17 or 41
    degrees has psi6 of the surrounding phase, and no particle nearer any placed one than
    the spacing (symmetry-matched candidates reach 4 orientations and cannot)."""
    import importlib
    U = importlib.import_module("colloidcg.scaling.upsample")
    from colloidcg.neighbours import nearest
    from colloidcg.scaling.observables import psi6_local

    a = 16.0
    pos, box = hex_crystal(a=a)
    n = len(pos)
    base = U.Configuration(pos, np.zeros((n, 2)), None, box, np.full(n, np.inf))
    big = 5 * box
    lo = 2 * box                                   # the candidate's cell, in the middle of the big box
    for deg in (17.0, 41.0):
        th = math.radians(deg)
        R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        ij = np.stack(np.meshgrid(np.arange(-40, 41), np.arange(-40, 41), indexing="ij"), -1).reshape(-1, 2)
        lat = (ij[:, :1] * np.array([a, 0.0]) + ij[:, 1:] * np.array([a / 2, a * math.sqrt(3) / 2])) @ R.T
        lat = lat + lo + 0.37 * box
        lat = lat[np.all((lat >= 0) & (lat < big), axis=1)]
        dist = U._box_distance(lat, lo, box, big)
        keep = (dist > 0) & (dist < 8 * a)         # the placed lattice around the cell, not inside it
        P = lat[keep]
        lattice = (dist[keep] >= a) & (dist[keep] < 4 * a)
        cands = list(U._oriented_candidates(base, P, lattice, dist[keep], lo, box, big, a, 8,
                                            np.random.default_rng(1)))
        assert len(cands) == 8
        for c in cands:
            Q = c.pos + lo
            inner = np.all((c.pos > 1.5 * a) & (c.pos < box - 1.5 * a), axis=1)
            psi = psi6_local(c.pos, None)[inner]
            np.testing.assert_allclose(np.angle(psi * np.exp(-6j * th)), 0.0, atol=1e-6)
            across = nearest(P, 1, query=Q)[0]
            assert across.min() == pytest.approx(a, rel=1e-6), deg
            assert nearest(Q, 1)[0].min() == pytest.approx(a, rel=1e-6)
        syms = [(np.asarray(p), np.array(f, bool)) for p in U._symmetries(box) for f in np.ndindex(2, 2)]
        for c in U._symmetry_candidates(base, P[dist[keep] < a], syms, box, 8, np.random.default_rng(1)):
            inner = np.all((c.pos > 1.5 * a) & (c.pos < box - 1.5 * a), axis=1)
            off = np.angle(psi6_local(c.pos, box)[inner] * np.exp(-6j * th))
            assert np.abs(off).min() > 1.0, deg                    # never the neighbours' orientation


def test_upsample_tiling_option(small):
    """``tiling="matched"`` through upsample (relax_steps 0, a jittered crystal in its own
    periodic box, diameters for the model's size column): recorded in the parameters, the
    seams keep the crystal's |psi6| (within 0.05 of the bulk) where random tiling loses it,
    and fewer particles need reinserting; "auto" matches this crystal, and the adaptive
    relaxation then relaxes nothing; bad values are one-line errors."""
    import importlib
    up_mod = importlib.import_module("colloidcg.scaling.upsample")
    from colloidcg.scaling.observables import psi6_local

    df, side, model, cfg = small
    a = 16.0
    frames = []
    for f in range(4):
        p, box = hex_crystal(a=a, noise=0.3, seed=f)
        frames.append(pd.DataFrame({"frame": f, "particle": np.arange(len(p)), "x": p[:, 0], "y": p[:, 1],
                                    "diameter": 16.0}))
    tracks = pd.concat(frames, ignore_index=True)
    crystal_cfg = {"calibration": {**cfg["calibration"], "box_px": None}}
    meta = {"meta": {"box_px": box.tolist()}}
    out = {}
    for tiling in ("random", "matched", "oriented", "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeamVisibleWarning)      # asserted below
            up = upsample(model, crystal_cfg, tracks, meta, factor=16, samples=2, seed=1, relax_steps=0,
                          tiling=tiling)
        assert up.parameters["tiling"]["method"] == ("matched" if tiling == "auto" else tiling)
        gap = []
        for _, g in up.tracks.groupby("frame"):
            psi = np.abs(psi6_local(g[["x", "y"]].to_numpy(), np.asarray(up.box_px)))
            seam = g["seam_distance"].to_numpy()
            gap.append(psi[seam < a].mean() - psi[seam >= 2 * a].mean())
        out[tiling] = (float(np.mean(gap)), up.parameters)
    print({k: (v[0], v[1]["seam_relaxation"]["particles_reinserted"], v[1]["tiling"]) for k, v in out.items()})
    # measured (seed 1, 2 samples): seam band minus bulk |psi6| -0.025 matched (the overlap
    # treatment after the placement moves some particles), -0.31 random
    assert out["matched"][0] > -0.05 and out["oriented"][0] > -0.05 and out["random"][0] < -0.15
    # auto: one crystal orientation spans every frame (coherence 0.99), so matched, with the
    # same draws as matched asked for
    auto = out["auto"][1]["tiling"]
    assert auto["requested"] == "auto" and auto["order_coherence"] > 0.95
    assert out["auto"][0] == out["matched"][0]
    # the adaptive relaxation leaves one crystal's registered seams alone (no pilots)
    plain = upsample(model, crystal_cfg, tracks, meta, factor=4, samples=1, seed=1)
    rel = plain.parameters["seam_relaxation"]
    assert rel["model_steps"] == 0 and rel["adaptive"] is None and rel["crystal_tiles"]["order_coherence"] > 0.95
    assert "the tiles are one crystal" in up_mod.relaxation_summary(rel)
    assert not plain.parameters["seam_check"]["visible"]
    rel = {k: v[1]["seam_relaxation"]["particles_reinserted"] for k, v in out.items()}
    assert rel["matched"] < 0.2 * rel["random"]
    # the crystal tile is too small for a bulk 3 bond lengths from its seams: the check
    # judges against the bulk beyond shell + bond length, and sees the random tiles' grain
    # boundaries only
    checks = {k: v[1]["seam_check"] for k, v in out.items()}
    assert checks["random"]["bulk_px"] == pytest.approx(checks["random"]["shell_px"] + checks["random"]["r_bond_px"])
    assert checks["random"]["visible"] and checks["random"]["psi6"]["z"] < -5
    assert not checks["matched"]["visible"] and not checks["oriented"]["visible"]
    assert out["matched"][1]["tiling"]["candidates"] == 32
    assert out["matched"][1]["tiling"]["seam_order_chosen"] > out["matched"][1]["tiling"]["seam_order_candidates_mean"]
    with pytest.raises(ParameterError, match="tiling"):
        upsample(model, crystal_cfg, tracks, meta, factor=4, relax_steps=0, tiling="best")
    with pytest.raises(ParameterError, match="tiling_candidates"):
        upsample(model, crystal_cfg, tracks, meta, factor=4, relax_steps=0, tiling="matched", tiling_candidates=0)


def _open_view(frames: list, side: float = 300.0) -> pd.DataFrame:
    """Tracks of the positions (n, 2) px of each frame inside the open view [0, side)^2,
    disks of diameter 16 px."""
    rows = []
    for f, p in enumerate(frames):
        p = p[np.all((p >= 0) & (p < side), 1)]
        rows.append(pd.DataFrame({"frame": f, "particle": np.arange(len(p)), "x": p[:, 0], "y": p[:, 1],
                                  "diameter": 16.0}))
    return pd.concat(rows, ignore_index=True)


def _seam_order_gaps(up, near: float) -> np.ndarray:
    """Per sample of ``up``: mean |psi6| within ``near`` px of a seam minus beyond 2 ``near``."""
    from colloidcg.scaling.observables import local_order

    gaps = []
    for _, g in up.tracks.groupby("frame"):
        q = local_order(g[["x", "y"]].to_numpy(), np.asarray(up.box_px))
        seam = g["seam_distance"].to_numpy()
        gaps.append(q[seam < near].mean() - q[seam >= 2 * near].mean())
    return np.array(gaps)


def test_a_crystal_film_is_tiled_into_one_crystal(small):
    """One triangular crystal filmed in an open field of view at 0.3 rad to the image axes
    (0.4 px jitter): auto tiling sees it (order coherence near 1), turns the frames so a
    lattice vector lies along x, and cuts windows of n a x 2 k h midway between lattice
    planes, in registry with a lattice site of each frame: wrapped, such a window continues
    its lattice, and every window is the same crystal in the same registry, so windows are
    placed as they are and the film becomes one crystal (measured, seeds 1-2, 4 samples, no
    relaxation: |psi6| within a spacing of a seam +0.002 from the bulk's (0.003-0.014 below
    with session 38's matched placement), against 0.32 below with random windows; every sample exactly 4 x 224 disks). Windows of an open field of
    view that are matched without being one crystal's (here: forced on the liquid's) are
    cut again from their frame, never shifted cyclically (which put the window's own cut
    edge inside it, unmarked)."""
    import importlib
    U = importlib.import_module("colloidcg.scaling.upsample")
    from colloidcg.neighbours import nearest

    df, side, model, cfg = small
    a, theta = 16.0, 0.3
    i, j = np.meshgrid(np.arange(-30, 30), np.arange(-30, 30), indexing="ij")
    lattice = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2)
    turn = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    film = _open_view([lattice @ turn.T + 150 + np.random.default_rng(f).normal(0, 0.4, lattice.shape)
                       for f in range(4)])
    open_cfg = {"calibration": {**cfg["calibration"], "box_px": None}}
    gaps = {}
    for tiling in ("random", "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeamVisibleWarning)
            # the Gaussian field: these sites are jittered independently, as no pair
            # interaction does (the 2D default, a pair field, left them -0.031 at the seams)
            up = upsample(model, open_cfg, film, factor=4, samples=4, seed=1, relax_steps=0, tiling=tiling,
                          seam_field="gibbs")
        for _, g in up.tracks.groupby("frame"):
            assert float(nearest(g[["x", "y"]].to_numpy(), 1, box=np.asarray(up.box_px))[0].min()) > 0.8 * a
        gaps[tiling] = float(np.mean(_seam_order_gaps(up, a)))
        params = up.parameters
    info = params["tiling"]
    assert info["method"] == "matched" and info["order_coherence"] > 0.95
    assert info["crystal_film"]["turned_deg"] == pytest.approx(-math.degrees(theta), abs=0.2)
    np.testing.assert_allclose(info["crystal_film"]["lattice_px"], [a, a * math.sqrt(3)], rtol=2e-3)
    assert params["n_particles"] == [4 * 224] * 4                      # 14 x 16 disks per window
    assert "a crystal film: turned -17.2 deg, windows 224.0 x 221.7 px" in U.tiling_summary(info)   # 8 x 16 sqrt 3
    assert gaps["random"] < -0.28 and gaps["auto"] > -0.03, gaps
    assert not params["seam_check"]["visible"]
    # judged by lattice site: every particle at its site's distance to the nearest window
    # face, a / 4 + k a / 2 across the rows or h / 2 + k h between them (exact)
    assert params["seam_check"]["binned_by"] == "site_seam_distance"
    a_fit, two_h = info["crystal_film"]["lattice_px"]
    site_d = up.tracks["site_seam_distance"].to_numpy()
    allowed = np.union1d(0.25 * a_fit + 0.5 * a_fit * np.arange(20), 0.5 * two_h / 2 + two_h / 2 * np.arange(20))
    assert np.abs(site_d[:, None] - allowed[None]).min(axis=1).max() < 1e-6
    assert np.abs(site_d - up.tracks["seam_distance"].to_numpy()).max() < 3.0    # a site is within its jitter
    # matched windows of a field of view that is not one crystal: cut again in registry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeamVisibleWarning)
        liquid = upsample(model, open_cfg, df, factor=4, samples=1, seed=1, relax_steps=0, tiling="matched")
        plain = upsample(model, open_cfg, df, factor=4, samples=1, seed=1, relax_steps=0, tiling="random")
    assert liquid.parameters["tiling"]["crystal_film"] is None
    # 2 nearest-neighbour spacings narrower than the field of view, room to move into registry
    assert 20.0 < plain.parameters["tile_px"][0] - liquid.parameters["tile_px"][0] < 40.0
    pos = [f[["x", "y"]].to_numpy() for _, f in film.groupby("frame")]
    src = U._Source(pos, [np.zeros_like(p) for p in pos], [None] * 4, None,
                    np.array([[[0.0, 300.0], [0.0, 300.0]]] * 4), 200.0)
    w0 = U._window(src, 1, np.array([40.0, 60.0]))
    inside = np.all((src.pos[1] >= [40, 60]) & (src.pos[1] < [240, 260]), axis=1)
    np.testing.assert_allclose(np.sort(w0.pos[:, 0]), np.sort(src.pos[1][inside, 0] - 40.0))
    assert w0.origin[0] == 1 and U._window(src, 1, np.array([299.0, 299.0])) is None


def test_a_crystal_films_windows_are_put_on_one_lattice(small):
    """Exact: a perfect triangular crystal filmed through an open view at 0.3 rad, each
    frame under its own small affine deformation (strain and rotation up to 3e-3, as a
    window's part of a thermal crystal carries at one moment, with a drift): every window
    is put on the film's common lattice (its affine displacement from the ideal sites
    taken out), so the tiled film is that lattice exactly, across the seams too: every
    nearest-neighbour distance is a or sqrt(a^2 / 4 + h^2) to 1e-6 px. Left in, the
    deformations put bonds up to 0.6 px off (measured)."""
    from scipy.spatial import cKDTree

    df, side, model, cfg = small
    a, theta = 16.0, 0.3
    i, j = np.meshgrid(np.arange(-30, 30), np.arange(-30, 30), indexing="ij")
    lattice = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2)
    turn = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    rng = np.random.default_rng(3)
    frames = []
    for f in range(6):
        deform = np.eye(2) + rng.uniform(-3e-3, 3e-3, (2, 2))
        frames.append(lattice @ (turn @ deform).T + 150 + rng.uniform(-3, 3, 2))
    film = _open_view(frames)
    open_cfg = {"calibration": {**cfg["calibration"], "box_px": None}}
    up = upsample(model, open_cfg, film, factor=4, samples=3, seed=2, relax_steps=0, seam_field="none")
    assert up.parameters["tiling"]["crystal_film"]["windows_on_common_lattice"]
    a_fit, h_fit = up.parameters["tiling"]["crystal_film"]["lattice_px"]
    h_fit /= 2
    bonds = (a_fit, math.hypot(0.5 * a_fit, h_fit))
    for _, g in up.tracks.groupby("frame"):
        p = g[["x", "y"]].to_numpy()
        dist = cKDTree(p, boxsize=up.box_px).query(p, 7)[0][:, 1:]
        off = np.min(np.abs(dist[..., None] - np.array(bonds)), axis=-1)
        assert off.max() < 1e-6, off.max()
        assert np.sum(g["seam_distance"].to_numpy() < a) > 100            # the seams are in there
        # on their sites, the particles' own distances to the faces are their sites'
        np.testing.assert_allclose(g["site_seam_distance"], g["seam_distance"], atol=1e-6)


def test_a_crystal_films_own_edge_structure_is_not_taken_for_a_seam(small):
    """A film whose crystal is less ordered in a ring near the edge of the view (jitter
    1.2 px there, 0.3 px inside, the same place in every frame, as a real film's strained
    or defective region persists): its windows' faces lie in that ring, so a tiled sample's
    band along the seams is less ordered than its bulk although nothing was done at the
    seams (the windows tiled as cut; independent jitter has no correlations to break).
    Against the bulk alone the check calls the seams visible; with the baseline of the
    film's own windows where they sit in their frames (``film_window_baseline``) it does
    not, and the baseline holds the ring's deficit (measured: |psi6| -0.150, -74 SE,
    against the bulk alone; the baseline -0.157 over 6 windows; judged with it +0.007,
    +1.0 SE)."""
    from colloidcg.scaling.seams import seam_check

    df, side, model, cfg = small
    a, theta = 16.0, 0.3
    i, j = np.meshgrid(np.arange(-30, 30), np.arange(-30, 30), indexing="ij")
    lattice = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2)
    turn = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    placed = lattice @ turn.T
    sd = np.where(np.hypot(placed[:, 0], placed[:, 1]) > 80.0, 1.2, 0.3)[:, None]
    film = _open_view([placed + 150 + sd * np.random.default_rng(f).normal(0, 1, placed.shape) for f in range(6)])
    open_cfg = {"calibration": {**cfg["calibration"], "box_px": None}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeamVisibleWarning)
        up = upsample(model, open_cfg, film, factor=4, samples=4, seed=1, relax_steps=0, seam_field="none")
    check = up.parameters["seam_check"]
    alone = seam_check(up.tracks, up.box_px, check["r_bond_px"], check["shell_px"], distance="site_seam_distance")
    assert alone["visible"] and alone["psi6"]["difference"] < -0.02, alone
    assert check["baseline"]["psi6"]["difference"] < -0.02 and check["baseline"]["psi6"]["windows"] >= 6
    assert not check["visible"] and abs(check["psi6"]["difference"]) < 0.01, check


@pytest.mark.slow
def test_a_thermal_crystal_films_seams_are_redrawn_from_its_displacement_field(small):
    """A film of a crystal whose neighbours' thermal displacements are correlated, as in
    every crystal (exact samples of a harmonic triangular crystal, kT / k = 2 px^2, seen
    through a 300 px view at 0.3 rad): tiled as cut (``seam_field="none"``), neighbours
    across a window's face keep displacements that were not correlated, and |psi6| within a
    spacing of a seam is below the bulk's (measured -0.008 +- 0.002, 6 samples, with the
    windows on the common lattice since session 47; -0.030 +- 0.007 before, when each
    window's long-wavelength strain came along too); with the sites within 2 spacings of
    every seam redrawn from the Gaussian displacement field fitted to the film, -0.004 +-
    0.005. The fit finds the crystal's conditional law
    (the neighbours explain 61 % of a site's displacement variance; exactly: residual sd
    sqrt(2 / 3) px), and its bond weights stay flat, as they must for a Gaussian crystal.
    ``seam_field="pair"`` (a pair interaction on the bonds, whose family holds this
    crystal's springs) heals the seams as well (-0.006 +- 0.005)."""
    from colloidcg.scaling import relaxation_summary
    from colloidcg.scaling.lattice_field import harmonic_crystal

    df, side, model, cfg = small
    sites, u, box = harmonic_crystal(40, 40, 12, 2.0, 16.0, seed=7)
    theta = 0.3
    turn = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    film = _open_view([(sites + x - 0.5 * box) @ turn.T + 150 for x in u])
    open_cfg = {"calibration": {**cfg["calibration"], "box_px": None}}
    gaps, params = {}, {}
    for how in ("none", "gibbs", "pair"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SeamVisibleWarning)
            up = upsample(model, open_cfg, film, factor=4, samples=6, seed=1, relax_steps=0, seam_field=how)
        gap = _seam_order_gaps(up, 16.0)
        gaps[how] = (float(np.mean(gap)), float(np.std(gap, ddof=1) / math.sqrt(len(gap))))
        params[how] = up.parameters
    assert gaps["none"][0] < -0.004, gaps
    for how in ("gibbs", "pair"):
        assert abs(gaps[how][0]) < 2.5 * gaps[how][1] and abs(gaps[how][0]) < 0.012, (how, gaps)
    fitted = params["gibbs"]["tiling"]["crystal_film"]["displacement_field"]
    assert fitted["variance_explained"] == pytest.approx(0.61, abs=0.05)
    np.testing.assert_allclose(fitted["residual_sd_px"], math.sqrt(2.0 / 3.0), rtol=0.05)
    redrawn = params["gibbs"]["seam_relaxation"]["seam_field"]
    assert redrawn["method"] == "gibbs" and redrawn["particles_redrawn"] > 0
    assert params["none"]["seam_relaxation"]["seam_field"] is None            # nothing fitted
    assert params["gibbs"]["n_particles"] == params["none"]["n_particles"]     # sites are moved, never added
    assert params["pair"]["seam_relaxation"]["seam_field"]["method"] == "pair"
    assert params["pair"]["tiling"]["crystal_film"]["displacement_field"]["gaussian"] is False
    assert "pair interaction" in relaxation_summary(params["pair"]["seam_relaxation"])


def test_shell_distances_and_seam_lines_exact():
    """The input's nearest-neighbour distance and first minimum on a jittered triangular
    lattice (spacing 20 px: peak at 20, minimum between 20 and 20 sqrt 3); seam-line
    distances and neighbour counts on hand-made positions."""
    from colloidcg.scaling.upsample import _Source, neighbour_counts, seam_line_distance, shell_distances
    rng = np.random.default_rng(0)
    a, nx, ny = 20.0, 16, 18
    box = np.array([nx * a, ny * a * math.sqrt(3) / 2])
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    lattice = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2)
    frames = [np.mod(lattice + rng.normal(0, 0.8, lattice.shape), box) for _ in range(5)]
    src = _Source(frames, [np.zeros_like(p) for p in frames], [None] * 5, box, None, None)
    peak, low = shell_distances(src, 24.0)
    assert abs(peak - a) <= 0.8 + 1e-9                       # bins of 0.8 px
    assert a < low < a * math.sqrt(3)
    pos = np.array([[1.0, 50.0], [99.0, 30.0], [50.0, 52.0], [25.0, 75.0]])
    np.testing.assert_allclose(seam_line_distance(pos, np.array([100.0, 100.0])), [1.0, 1.0, 48.0, 25.0])
    across = np.array([[1.0, 50.0], [199.0, 51.0], [50.0, 52.0], [25.0, 75.0]])   # a pair across the edge
    np.testing.assert_array_equal(neighbour_counts(across, np.array([200.0, 200.0]), 3.0), [1, 1, 0, 0])


@pytest.mark.slow
def test_relax_steps_auto_relaxes_until_the_particles_have_moved(small, tmp_path):
    """``relax_steps="auto"``: the pilot stops at the first frame whose mean squared
    displacement reaches HEAL_MSD nearest-neighbour distances squared, and every doubling
    is relaxed for that many frames; with ``band="all"`` every particle is relaxed. The
    CLI takes ``--relax-steps auto --band all`` and refuses other words."""
    from colloidcg.scaling.upsample import HEAL_MSD
    df, side, model, cfg = small
    up = upsample(model, cfg, df, factor=4, samples=2, seed=3, relax_steps="auto", band="all")
    rel = up.parameters["seam_relaxation"]
    h = rel["healing"]
    assert h["reached"] and rel["model_steps"] == h["frames"] == round(np.mean(h["pilot_frames"]))
    assert h["target_msd_px2"] == pytest.approx(HEAL_MSD * h["shell_px"] ** 2)
    for msd, frames in zip(h["msd_px2"], h["pilot_frames"]):     # each pilot stops where it first arrives
        assert len(msd) == frames + 1 and frames >= 1
        assert msd[0] == 0.0 and msd[-1] >= h["target_msd_px2"] > msd[-2]
    assert 12.0 < h["shell_px"] < 20.0 < h["r_bond_px"] < 32.0    # the diameters are 13.3 and 18.7 px
    assert len(h["deficit"]) == min(h["pilot_frames"]) + 1
    assert rel["band_px"] == "all" and rel["particles_relaxed"] == 2 * 4 * N_SMALL
    with pytest.raises(ParameterError, match="relax_steps"):
        upsample(model, cfg, df, factor=4, relax_steps="often")
    from colloidcg.core.persist import save_model
    from colloidcg.outputs import provenance, read_table, write_table
    mdir = save_model(model, tmp_path / "model", {"calibration": cfg["calibration"]})
    init = tmp_path / "small.parquet"
    write_table(init, df[df["frame"] < 5], provenance("test", {}, {}))
    out = tmp_path / "big.parquet"
    assert main(["upsample", str(mdir), "--init", str(init), "--factor", "4", "--relax-steps", "auto",
                 "--band", "all", "-o", str(out)]) == 0
    assert read_table(out)[1]["parameters"]["seam_relaxation"]["healing"]["reached"]
    for opt, bad in (("--relax-steps", "often"), ("--relax-steps", "-1"), ("--band", "most"), ("--band", "0")):
        with pytest.raises(SystemExit):
            main(["upsample", str(mdir), "--init", str(init), "--factor", "4", opt, bad, "-o",
                  str(tmp_path / "z.parquet")])


def test_seam_check_sees_a_planted_seam_and_not_a_seamless_system(small):
    """No seam: copies of one periodic frame side by side, each sample cyclically shifted
    at random (the pattern continues across the lines), judged over 6 samples; and one
    jittered triangular lattice with seam lines declared on a 4 x 4 grid, judged over its
    16 tiles. Neither is visible. A gap along the declared lines is: the band's neighbour
    deficit is negative and beyond the check's threshold."""
    from colloidcg.scaling.seams import seam_check
    df, side, model, cfg = small
    rng = np.random.default_rng(1)
    frames = []
    for k, f in enumerate([0, 20, 40, 60, 80, 99]):
        p = np.mod(df[df["frame"] == f][["x", "y"]].to_numpy() + rng.uniform(0, side, 2), side)
        pos = np.concatenate([p + side * np.array(o) for o in [(0, 0), (1, 0), (0, 1), (1, 1)]])
        off = pos - side * np.round(pos / side)
        frames.append(pd.DataFrame({"frame": k, "x": pos[:, 0], "y": pos[:, 1],
                                    "seam_distance": np.min(np.abs(off), axis=1)}))
    copies = pd.concat(frames, ignore_index=True)
    a, nx, ny = 16.0, 48, 56
    box = np.array([nx * a, ny * a * math.sqrt(3) / 2])
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    p = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2)
    p = np.mod(p + rng.normal(0, 1.0, p.shape), box)
    period = box / 4
    cell = np.floor(p / period)
    lattice = pd.DataFrame({"frame": 0, "x": p[:, 0], "y": p[:, 1],
                            "seam_distance": np.min(np.abs(p - period * np.round(p / period)), axis=1),
                            "tile": cell[:, 0] * 4 + cell[:, 1]})
    for tr, box, samples, r_bond in ((copies, [2 * side] * 2, 6, 24.0), (lattice, box, 1, 21.0)):
        c = seam_check(tr, box, r_bond, 16.0)
        assert c["samples"] == samples and not c["visible"], c
        assert abs(c["density"]["z"]) < 3 and abs(c["psi6"]["z"]) < 3
        thinned = tr[tr["seam_distance"] > 6.0]          # a gap 12 px wide along every line
        c = seam_check(thinned, box, r_bond, 16.0)
        assert c["visible"] and c["density"]["difference"] < 0 and c["density"]["z"] < -c["threshold"], c
    assert 3.0 < c["threshold"] < 4.0                       # Student t, 15 degrees of freedom
    # without tiles one sample cannot be judged
    assert seam_check(lattice.drop(columns="tile"), box, 21.0, 16.0)["density"] is None


def test_seam_pilots_see_a_seam_that_lacks_neighbours(small):
    """:func:`seam_pilots`, the adaptive default's test: pilot doublings of four copies of
    one periodic frame, shifted together (the pattern continues across the seams), are
    healed; the same with every particle within 5 px of a seam line removed (a seam short of
    contacts, as steep-contact tiles leave it) is not, and the relaxation it is given is
    the one passed."""
    from colloidcg.scaling.upsample import Configuration, seam_pilots, tile_configurations
    df, side, model, cfg = small
    box = np.array([side, side])
    rng = np.random.default_rng(4)
    asked = []

    def place(gap):
        def make(level):
            assert level == 1
            f = int(rng.integers(100))
            p = np.mod(df[df["frame"] == f][["x", "y"]].to_numpy() + rng.uniform(0, side, 2), side)
            part = Configuration(p, np.zeros_like(p), None, box, np.full(len(p), np.inf))
            big, new, _ = tile_configurations([part] * 4, 2)
            return big.subset(new >= gap), new[new >= gap], 2
        return make

    def relax(c, new, m, steps):
        asked.append(steps)
        return c

    healed = seam_pilots(place(0.0), relax, 16.0, 24.0, steps=3, pilots=4)
    gapped = seam_pilots(place(5.0), relax, 16.0, 24.0, steps=3, pilots=4)
    assert asked == [3] * 8
    assert healed["tiles"] == gapped["tiles"] == 16 and 3.0 < healed["threshold"] < 4.0
    assert not healed["unhealed"] and abs(healed["z"]) < healed["threshold"], healed
    assert gapped["unhealed"] and gapped["z"] < -gapped["threshold"], gapped
    assert gapped["difference"] < -0.015 * gapped["bulk_neighbours"]


@pytest.mark.slow
def test_adaptive_relaxation_escalates_where_the_pilots_stay_unhealed(small, monkeypatch):
    """Where :func:`seam_pilots` reports unhealed seams, the adaptive default relaxes the
    whole system until the particles have moved (``relax_steps="auto"``, ``band="all"``),
    provided the healing pilots' relaxation keeps the input's g(r) within
    ``ADAPTIVE_G_TOLERANCE``; a band the caller gave is kept. Recorded in the sidecar's
    ``seam_relaxation``."""
    import importlib
    up_mod = importlib.import_module("colloidcg.scaling.upsample")   # the package exports the function
    df, side, model, cfg = small
    real = up_mod.seam_pilots

    def unhealed(*a, **k):
        out = real(*a, **k)
        return {**out, "unhealed": True}

    monkeypatch.setattr(up_mod, "seam_pilots", unhealed)
    # the fixture's 8-epoch model moves g(r) about 0.1 over a whole-system relaxation,
    # depending on the packages' random draws (0.12 on session 38's, under 0.1 before):
    # the escalation rule, not this model, is under test, so the tolerance is set above
    # that here and below the measured error further down
    monkeypatch.setattr(up_mod, "ADAPTIVE_G_TOLERANCE", 0.3)
    up = upsample(model, cfg, df[df["frame"] < 10], factor=4, samples=1, seed=2)
    rel = up.parameters["seam_relaxation"]
    assert rel["adaptive"]["unhealed"] and rel["adaptive"]["escalated"] and rel["band_px"] == "all"
    assert rel["healing"]["reached"] and rel["model_steps"] == rel["healing"]["frames"] > 3
    assert rel["particles_relaxed"] == 4 * N_SMALL
    g_error = rel["healing"]["g_error"]
    assert 0.0 < g_error <= up_mod.ADAPTIVE_G_TOLERANCE
    kept = upsample(model, cfg, df[df["frame"] < 10], factor=4, samples=1, seed=2, band=30.0)
    assert kept.parameters["seam_relaxation"]["band_px"] == 30.0
    assert kept.parameters["seam_relaxation"]["healing"] is not None
    # a model whose whole-system relaxation moves g(r) too far from the input's is not let
    # relax the whole system: the band's 3 frames stay, and the line says why
    monkeypatch.setattr(up_mod, "ADAPTIVE_G_TOLERANCE", 0.5 * g_error)
    refused = upsample(model, cfg, df[df["frame"] < 10], factor=4, samples=1, seed=2)
    rel = refused.parameters["seam_relaxation"]
    assert rel["adaptive"]["unhealed"] and not rel["adaptive"]["escalated"]
    assert rel["model_steps"] == 3 and rel["band_px"] == pytest.approx(24.0) and rel["healing"]["g_error"] > 0
    assert "kept the band's frames" in up_mod.relaxation_summary(rel)
    monkeypatch.setattr(up_mod, "seam_pilots", real)
    fixed = upsample(model, cfg, df[df["frame"] < 10], factor=4, samples=1, seed=2, relax_steps=3)
    assert fixed.parameters["seam_relaxation"]["adaptive"] is None
    with pytest.raises(ParameterError, match="'adaptive', 'auto' or an integer"):
        upsample(model, cfg, df, factor=4, relax_steps="sometimes")


@pytest.mark.slow
def test_lammps_wca_seams_heal_with_auto_relaxation():
    """Known answer from another simulator: LAMMPS Brownian dynamics of WCA disks
    (diameters 1 and 1.4, area fraction 0.7, benchmarks/upsample_lammps.py's small system),
    K = 4 (400 -> 1600), 10 samples, against a direct LAMMPS run of 1600. With 3 frames of
    the band (a soft liquid's relaxation) the seams stay visible and upsample warns; the
    adaptive default sees that on its pilot doublings and relaxes with ``relax_steps="auto",
    band="all"``, after which the seam check does not see them (3-sigma level),
    the band's neighbour deficit within one small diameter of a seam is at most a fifth of
    the default's and its |psi6| deficit at most half, and g(r) is within 0.05 (about 4
    minutes). Measured here: neighbours -0.014 (-0.3 SE), |psi6| -0.007 (-2.4 SE; at K =
    16 in the benchmark -0.5 SE)."""
    from colloidcg.md.lammps import lammps_available

    ok, why = lammps_available()
    if not ok:
        pytest.skip(f"LAMMPS unavailable: {why}")
    from bench_helpers import load_benchmark
    bench = load_benchmark("upsample_lammps")
    small, side, _ = bench.lammps_tracks("brownian", "small", 11, 1.0)
    big, bside, _ = bench.lammps_tracks("brownian", "large_x4", 111, 1.0)
    res = train_tracks(small, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=8, lr=1e-2, progress=False, loc_noise="none", cutoff=24.0,
                                   size_column="diameter", seed=0), box_px=[side, side])
    cfg = {"calibration": res.report["calibration"]}
    g_big = bench.rdf_of(ev, big, [bside, bside], None, 10)
    with pytest.warns(SeamVisibleWarning):
        plain = upsample(res.model, cfg, small, factor=4, samples=10, seed=0, relax_steps=3)
    assert plain.parameters["seam_check"]["density"]["z"] < -5
    with warnings.catch_warnings():
        warnings.simplefilter("error", SeamVisibleWarning)
        up = upsample(res.model, cfg, small, factor=4, samples=10, seed=0)       # the adaptive default
    rel = up.parameters["seam_relaxation"]
    print("pilots:", rel["adaptive"])
    assert rel["adaptive"]["unhealed"] and rel["band_px"] == "all" and rel["healing"]["reached"]
    before = seam_profile(plain.tracks, plain.box_px, 25.0, edges=(0.0, 16.0))
    after = seam_profile(up.tracks, up.box_px, 25.0, edges=(0.0, 16.0))
    for name, (mean, se) in after.items():
        print(f"{name}: {mean[0]:+.4f} ({mean[0] / se[0]:+.1f} SE); default {before[name][0][0]:+.4f}")
    assert abs(after["density"][0][0]) <= 0.2 * abs(before["density"][0][0])
    assert abs(after["psi6"][0][0]) <= 0.5 * abs(before["psi6"][0][0])
    err = ev.rel_rms(bench.rdf_of(ev, up.tracks, up.box_px, None, 10), g_big)
    print(f"g(r) relative RMS {err:.4f}, {up.parameters['seam_relaxation']['model_steps']} frames")
    assert err <= 0.05


def test_unjudged_seams_whose_pilots_stayed_unhealed_are_warned_about():
    """Samples whose tiles hold no bulk cannot be judged by the seam check; where the
    adaptive pilots saw their seams short of neighbours and the escalation was refused, the
    output is warned about instead of passing silently (a dilute real film did). Judged
    checks, healed or escalated pilots and no pilots give no such warning."""
    from colloidcg.scaling.upsample import unjudged_seam_warning
    unjudged = {"shell_px": 74.0, "r_bond_px": 78.0, "bulk_px": 152.0, "samples": 4, "threshold": 9.2,
                "density": None, "psi6": None, "visible": False}
    pilots = {"difference": -2.23, "bulk_neighbours": 10.55, "z": -16.9, "unhealed": True, "escalated": False}
    msg = unjudged_seam_warning(unjudged, pilots, {"g_error": 0.44}, "film.parquet")
    assert msg.startswith("film.parquet: the seam check cannot judge") and "2.23 of the bulk's 10.6" in msg
    assert "-16.9 standard errors" in msg and "g(r) 0.44" in msg
    judged = {**unjudged, "density": {"difference": -0.1, "se": 0.1, "z": -1.0}}
    assert unjudged_seam_warning(judged, pilots, {"g_error": 0.44}, "f") is None
    assert unjudged_seam_warning(unjudged, {**pilots, "unhealed": False}, None, "f") is None
    assert unjudged_seam_warning(unjudged, {**pilots, "escalated": True}, {"g_error": 0.05}, "f") is None
    assert unjudged_seam_warning(unjudged, None, None, "f") is None
    assert seam_check_summary(unjudged).startswith("not judged: fewer than 20 particles per sample farther than 152 px")
    visible = {**judged, "density": {"difference": -0.84, "se": 0.1, "z": -8.1}, "visible": True}
    assert seam_check_summary(visible) == ("VISIBLE: within 74 px of a seam against the bulk, neighbours -0.84 "
                                           "(-8.1 SE) (visible beyond 9.2 SE)")
    assert seam_check_summary(None) == "not run"


def test_a_film_windows_own_faces_are_new_seams():
    """A crystal film's window is periodic by construction, but its faces are cuts through
    a crystal whose displacements on either side are not correlated: each particle keeps its
    distance to them (``wrap``) through the cyclic shift and the symmetries, and the
    doubling that places the window marks them as seams and separates pairs too close
    across them (the relaxation's band stays on the tiles' faces; before session 39 a shift
    moved them into the tile unmarked, and pairs 0.34 x the data's closest approach sat
    there on the 2D film benchmark)."""
    import importlib
    U = importlib.import_module("colloidcg.scaling.upsample")

    box = np.array([100.0, 100.0])
    pos = np.array([[1.0, 50.0], [50.0, 50.0], [50.0, 98.0]])
    wrap = np.min(np.minimum(pos, box - pos), axis=1)                 # 1, 50, 2 px
    for w in (wrap, None):
        cfg = U.Configuration(pos, np.zeros_like(pos), None, box, np.full(3, np.inf), wrap=w)
        moved = U._apply(cfg, np.array([40.0, 30.0]), np.array([1, 0]), np.array([True, False]))
        assert (moved.wrap is None) if w is None else np.array_equal(moved.wrap, wrap)
        placed, new, part = U.tile_configurations([moved] * 4, 2)
        faces = np.min(np.minimum(moved.pos, box - moved.pos), axis=1)     # 20, 10, 28 px to the part's faces
        np.testing.assert_allclose(new[:3], faces)              # the relaxation's band: the tiles' faces
        own = faces if w is None else np.minimum(faces, wrap)
        np.testing.assert_allclose(placed.seam[:3], own)       # seams: the window's faces too
        assert (placed.wrap is None) if w is None else np.allclose(placed.wrap[:3], own)
    assert np.allclose(np.minimum(faces, wrap), [1.0, 10.0, 2.0])
