"""Tests for colloidcg.synthetic: physics of the simulator, fidelity of the renderer,
files written, parameter checks and the ``synth`` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy.spatial import cKDTree

from colloidcg.errors import OutputExistsError, ParameterError
from colloidcg.outputs import read_table
from colloidcg.synthetic import SynthConfig, make_video, write_synthetic
from colloidcg.synthetic.render import fluorescence_spots
from colloidcg.synthetic.video import _event_kick
from colloidcg.synthetic.dynamics import Box

SMALL = dict(width=64, height=64, n_frames=6, diameter=10.0, equilibration=5)


def _pairs_displacement(truth: pd.DataFrame, lag: int) -> pd.DataFrame:
    later = truth.copy()
    later["frame"] -= lag
    return truth.merge(later, on=["particle", "frame"], suffixes=("", "_1"))


# ----------------------------------------------------------------- reproducibility
def test_same_seed_same_video_different_seed_different():
    a = make_video(SynthConfig(seed=5, events=2, **SMALL))
    b = make_video(SynthConfig(seed=5, events=2, **SMALL))
    c = make_video(SynthConfig(seed=6, events=2, **SMALL))
    np.testing.assert_array_equal(a.frames, b.frames)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    pd.testing.assert_frame_equal(a.events, b.events)
    assert not np.array_equal(a.frames, c.frames)


def test_overrides_equal_config():
    a = make_video(SynthConfig(**SMALL), seed=2)
    b = make_video(SynthConfig(seed=2, **SMALL))
    np.testing.assert_array_equal(a.frames, b.frames)


# ----------------------------------------------------------------- packing physics
@pytest.mark.parametrize("bidisperse", [False, True])
def test_area_fraction_and_no_large_overlaps(bidisperse):
    phi = 0.85
    cfg = SynthConfig(width=160, height=160, n_frames=2, area_fraction=phi, bidisperse=bidisperse,
                      diameter=12.0, seed=1)
    v = make_video(cfg)
    lx, ly = v.meta["box"]
    d = np.array(v.meta["diameters"])
    mean_area = np.mean(np.pi / 4 * d ** 2)
    assert v.meta["n_simulated"] * mean_area / (lx * ly) == pytest.approx(phi, rel=0.01)
    fr = v.truth[v.truth.frame == 1]
    # the area fraction seen in the field of view (disk areas of centres in view)
    seen = np.sum(np.pi / 4 * fr.diameter ** 2) / (cfg.width * cfg.height)
    assert seen == pytest.approx(phi, rel=0.08)
    if bidisperse:
        assert np.isclose(d[1] / d[0], 1.4) and np.isclose(d.mean(), 12.0)
        assert abs(np.mean(fr.diameter == d[0]) - 0.5) < 0.1
    # overlaps between neighbours: thermal (~sqrt(kT/eps) = 3 %), never large
    xy = fr[["x", "y"]].to_numpy()
    pairs = cKDTree(xy).query_pairs(d.max(), output_type="ndarray")
    r = np.linalg.norm(xy[pairs[:, 0]] - xy[pairs[:, 1]], axis=1)
    sig = 0.5 * (fr.diameter.to_numpy()[pairs[:, 0]] + fr.diameter.to_numpy()[pairs[:, 1]])
    ov = np.clip(1 - r / sig, 0, None)
    assert ov.max() < 0.15
    assert ov[ov > 0].mean() < 0.05


# ----------------------------------------------------------------- dynamics physics
def test_free_particle_msd_is_4_D0_t():
    D0 = 0.5
    v = make_video(SynthConfig(width=256, height=256, n_frames=40, diameter=4.0,
                               area_fraction=0.01, diffusion=D0, seed=3, equilibration=0))
    for lag in (1, 2, 5):
        m = _pairs_displacement(v.truth, lag)
        msd = np.mean((m.x_1 - m.x) ** 2 + (m.y_1 - m.y) ** 2)
        assert msd == pytest.approx(4 * D0 * lag, rel=0.08), lag


def test_underdamped_langevin_equipartition_and_velocities():
    tau, D0 = 2.0, 0.05
    v = make_video(SynthConfig(width=256, height=256, n_frames=40, area_fraction=0.5,
                               inertia=tau, diffusion=D0, seed=4))
    assert {"vx", "vy"} <= set(v.truth.columns)
    # <v^2> per component = kT/m = D0/tau (m = zeta tau, zeta = kT/D0)
    assert v.truth.vx.var() == pytest.approx(D0 / tau, rel=0.1)
    assert v.truth.vy.var() == pytest.approx(D0 / tau, rel=0.1)
    # truth velocities agree with positions: the displacement over one frame correlates
    # with the mean of the velocities at its two ends
    m = _pairs_displacement(v.truth, 1)
    vbar = 0.5 * (m.vx + m.vx_1)
    assert np.corrcoef(m.x_1 - m.x, vbar)[0, 1] > 0.8
    bd = make_video(SynthConfig(**SMALL))
    assert "vx" not in bd.truth.columns


def test_drift_shifts_truth_by_drift():
    base = dict(width=96, height=96, n_frames=8, diameter=10.0, seed=9)
    a = make_video(SynthConfig(**base))
    drift = np.array([0.7, -0.4])
    b = make_video(SynthConfig(drift=tuple(drift), **base))
    for f in (0, 3, 7):
        pa = a.truth[a.truth.frame == f][["x", "y"]].to_numpy() + drift * f
        pb = b.truth[b.truth.frame == f][["x", "y"]].to_numpy()
        inner = (pa > 5).all(axis=1) & (pa < 90).all(axis=1)
        dist, _ = cKDTree(pb).query(pa[inner])
        assert inner.sum() > 20
        assert dist.max() < 1e-9


def test_oscillatory_shear_is_affine_on_average():
    cfg = SynthConfig(width=200, height=200, n_frames=13, diffusion=0.005, shear_amplitude=0.1,
                      shear_period=24, seed=2)
    v = make_video(cfg)
    strain = np.array(v.meta["strain"])
    yc = (cfg.height - 1) / 2
    for f in (0, 5, 9):
        m = _pairs_displacement(v.truth, 1)
        m = m[m.frame == f]
        slope = np.polyfit(m.y - yc, m.x_1 - m.x, 1)[0]
        assert slope == pytest.approx(strain[f + 1] - strain[f], abs=0.1 * abs(strain[f + 1] - strain[f]) + 2e-4)


def test_particles_enter_and_leave_field_of_view():
    v = make_video(SynthConfig(width=64, height=64, n_frames=30, diameter=10.0,
                               drift=(0.8, 0.3), seed=1))
    t = v.truth
    W = H = 64
    assert t.x.min() >= -0.5 and t.x.max() < W - 0.5
    assert t.y.min() >= -0.5 and t.y.max() < H - 0.5
    spans = t.groupby("particle").frame.agg(["min", "max"])
    assert (spans["min"] > 0).any() and (spans["max"] < 29).any()
    # linking is well posed: one-frame steps far below half a diameter
    m = _pairs_displacement(t, 1)
    assert np.hypot(m.x_1 - m.x, m.y_1 - m.y).max() < 0.5 * 10.0


# ----------------------------------------------------------------- planted events
def test_planted_event_moves_the_particles_in_its_region():
    ev = (4, 40.0, 40.0, 14.0, 0.5)
    cfg = SynthConfig(width=80, height=80, n_frames=7, diameter=10.0, diffusion=0.005,
                      events=[ev], event_duration=1, seed=11)
    v = make_video(cfg)
    table = v.events
    assert list(table.columns) == ["event_id", "frame", "x", "y", "radius", "strain", "angle",
                                   "duration"]
    assert table.iloc[0][["frame", "x", "y", "radius", "strain"]].tolist() == list(ev)
    t = v.truth
    assert t.planted[t.frame != 4].sum() == 0
    m = _pairs_displacement(t, 1)
    m = m[m.frame == 3]
    # the planted set is exactly the particles within the radius in the frame before
    near = np.hypot(m.x - ev[1], m.y - ev[2]) < ev[3]
    np.testing.assert_array_equal(m.planted_1.to_numpy(), near.to_numpy())
    # and they moved as the Eshelby-like shear says
    box = Box(1e6, 1e6, 0.0)
    u, _ = _event_kick(m[["x", "y"]].to_numpy(), box, np.array(ev[1:3]), ev[3], ev[4],
                       table.angle.iloc[0])
    step = np.stack([m.x_1 - m.x, m.y_1 - m.y], axis=1)
    big = np.linalg.norm(u, axis=1) > 0.5
    assert big.sum() >= 3
    assert np.median(np.linalg.norm(step[big] - u[big], axis=1) / np.linalg.norm(u[big], axis=1)) < 0.5
    assert np.linalg.norm(step[near], axis=1).mean() > 3 * np.linalg.norm(step[~near], axis=1).mean()


def test_event_duration_spreads_the_strain():
    ev = (3, 40.0, 40.0, 14.0, 0.6)
    cfg = SynthConfig(width=80, height=80, n_frames=8, diameter=10.0, diffusion=0.005,
                      events=[ev], event_duration=3, seed=11)
    t = make_video(cfg).truth
    per_frame = t.groupby("frame").planted.sum()
    assert (per_frame.loc[[3, 4, 5]] > 0).all()
    assert per_frame.drop([3, 4, 5]).sum() == 0


def test_random_events_are_inside_video():
    v = make_video(SynthConfig(events=4, **SMALL))
    e = v.events
    assert len(e) == 4 and e.event_id.tolist() == [0, 1, 2, 3]
    assert e.frame.between(1, SMALL["n_frames"] - 1).all()
    assert v.truth.planted.any()


# ----------------------------------------------------------------- rendering
def test_isolated_spot_centroid_matches_truth():
    cfg = SynthConfig(width=200, height=200, n_frames=3, diameter=8.0, area_fraction=0.02,
                      photons=1e5, read_noise=0.0, background=0.0, unevenness=0.0,
                      brightness_cv=0.0, bit_depth=16, seed=7)
    v = make_video(cfg)
    sigma = cfg.spot_sigma * cfg.diameter
    h = int(np.ceil(4 * sigma))
    checked = 0
    for f in range(cfg.n_frames):
        fr = v.truth[v.truth.frame == f]
        xy = fr[["x", "y"]].to_numpy()
        d, _ = cKDTree(xy).query(xy, k=2)
        img = v.frames[f].astype(float)
        for (x, y), nn in zip(xy, d[:, 1]):
            if nn < 3 * cfg.diameter or not (h + 1 < x < 198 - h and h + 1 < y < 198 - h):
                continue
            cx, cy = int(round(x)), int(round(y))
            patch = img[cy - h:cy + h + 1, cx - h:cx + h + 1]
            yy, xx = np.mgrid[cy - h:cy + h + 1, cx - h:cx + h + 1]
            assert np.sum(patch * xx) / patch.sum() == pytest.approx(x, abs=0.05)
            assert np.sum(patch * yy) / patch.sum() == pytest.approx(y, abs=0.05)
            checked += 1
    assert checked >= 5


def test_pixel_integrated_spot_is_exact():
    x, y, s = np.array([10.3]), np.array([12.8]), np.array([1.5])
    img = fluorescence_spots(x, y, s, np.array([1.0]), 25, 25)
    assert img.sum() == pytest.approx(2 * np.pi * s[0] ** 2, rel=1e-4)
    yy, xx = np.mgrid[0:25, 0:25]
    assert np.sum(img * xx) / img.sum() == pytest.approx(10.3, abs=1e-3)
    assert np.sum(img * yy) / img.sum() == pytest.approx(12.8, abs=1e-3)


@pytest.mark.parametrize("bits,dtype", [(8, np.uint8), (16, np.uint16)])
def test_bit_depth_and_dtype(bits, dtype):
    v = make_video(SynthConfig(bit_depth=bits, **SMALL))
    assert v.frames.dtype == dtype
    assert v.frames.shape == (SMALL["n_frames"], SMALL["height"], SMALL["width"])
    assert v.frames.max() <= 2 ** bits - 1 and v.frames.max() > 0.3 * (2 ** bits - 1)


def test_brightfield_rings_dark_edge_bright_centre():
    cfg = SynthConfig(width=128, height=128, n_frames=2, diameter=16.0, area_fraction=0.3,
                      mode="brightfield", seed=2)
    v = make_video(cfg)
    img = v.frames[0].astype(float)
    fr = v.truth[(v.truth.frame == 0) & v.truth.x.between(10, 117) & v.truth.y.between(10, 117)]
    xi, yi = fr.x.round().astype(int), fr.y.round().astype(int)
    centre = img[yi, xi]
    a = 0.85 * fr.diameter / 2
    edge = np.mean([img[(fr.y + a * np.sin(t)).round().astype(int), (fr.x + a * np.cos(t)).round().astype(int)]
                    for t in np.linspace(0, 2 * np.pi, 8, endpoint=False)], axis=0)
    assert np.median(img) > 0.3 * 255  # grey background
    assert np.mean(centre > edge) > 0.9


# ----------------------------------------------------------------- presets
def test_dense_preset_numbers():
    cfg = SynthConfig.preset("dense")
    assert (cfg.width, cfg.height, cfg.area_fraction) == (512, 512, 0.8)
    small = 2 * cfg.diameter / 2.4
    mean_area = np.pi / 4 * small ** 2 * (1 + 1.4 ** 2) / 2
    assert 950 < cfg.area_fraction * 512 * 512 / mean_area < 1100
    with pytest.raises(ParameterError, match="preset"):
        SynthConfig.preset("nope")


# ----------------------------------------------------------------- parameters
@pytest.mark.parametrize("kw,name", [
    (dict(area_fraction=1.5), "area_fraction"),
    (dict(area_fraction=0), "area_fraction"),
    (dict(bit_depth=12), "bit_depth"),
    (dict(mode="phase"), "mode"),
    (dict(width=0), "width"),
    (dict(n_frames=2.5), "n_frames"),
    (dict(diffusion=-1), "diffusion"),
    (dict(drift=(1.0,)), "drift"),
    (dict(events=[(0, 1, 1, 5, 0.2)]), "events"),
    (dict(events=[(2, 500, 1, 5, 0.2)]), "events"),
    (dict(events=-1), "events"),
    (dict(seed=-3), "seed"),
    (dict(photons=float("nan")), "photons"),
])
def test_bad_parameters_raise_parameter_error(kw, name):
    with pytest.raises(ParameterError, match=name):
        make_video(SynthConfig(**{**SMALL, **kw}))


# ----------------------------------------------------------------- files
def test_write_synthetic_files_and_metadata(tmp_path):
    cfg = SynthConfig(events=2, fps=50.0, um_per_px=0.2, **SMALL)
    paths = write_synthetic(tmp_path / "out", cfg)
    with tifffile.TiffFile(paths["video"]) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["finterval"] == pytest.approx(1 / 50.0)
        assert tif.imagej_metadata["unit"] == "micron"
        xres = tif.pages[0].tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(1 / 0.2, rel=1e-5)
        frames = tif.asarray()
    np.testing.assert_array_equal(frames, make_video(cfg).frames)
    truth, side = read_table(paths["truth"], required=["frame", "particle", "x", "y", "diameter", "planted"])
    assert side["meta"]["fps"] == 50.0 and side["meta"]["um_per_px"] == 0.2
    assert side["units"]["x"] == "px"
    assert side["parameters"]["events"] == 2
    ev, _ = read_table(paths["events"], required=["event_id", "frame", "x", "y", "radius", "strain"])
    assert len(ev) == 2
    json.dumps(side)


def test_write_synthetic_refuses_overwrite(tmp_path):
    cfg = SynthConfig(**SMALL)
    write_synthetic(tmp_path, cfg)
    before = (tmp_path / "video.tif").read_bytes()
    with pytest.raises(OutputExistsError, match="video.tif"):
        write_synthetic(tmp_path, SynthConfig(**{**SMALL, "seed": 1}))
    assert (tmp_path / "video.tif").read_bytes() == before
    write_synthetic(tmp_path, SynthConfig(**{**SMALL, "seed": 1}), overwrite=True)
    assert (tmp_path / "video.tif").read_bytes() != before
    assert not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------- CLI
def test_cli_synth(tmp_path, capsys):
    from colloidcg.cli import main

    out = tmp_path / "v"
    args = ["synth", "-o", str(out), "--frames", "4", "--width", "48", "--height", "40",
            "--diameter", "8", "--bidisperse", "--drift", "0.2", "0.1", "--events", "1",
            "--bit-depth", "16", "--fps", "25", "--um-per-px", "0.5", "--seed", "3", "--quiet"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    with tifffile.TiffFile(out / "video.tif") as tif:
        a = tif.asarray()
        assert tif.imagej_metadata["finterval"] == pytest.approx(0.04)
    assert a.shape == (4, 40, 48) and a.dtype == np.uint16
    truth, side = read_table(out / "truth.parquet")
    assert side["parameters"]["bidisperse"] is True
    assert (out / "events.parquet").exists()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert main(["synth", "-o", str(tmp_path / "w"), "--area-fraction", "1.2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colloidcg synth: error: area_fraction")
    assert not (tmp_path / "w" / "video.tif").exists()


def test_cli_preset_with_override(tmp_path):
    from colloidcg.cli import build_parser
    from colloidcg.cli.synth import config_from_args

    args = build_parser().parse_args(["synth", "-o", str(tmp_path), "--preset", "dense",
                                      "--frames", "7", "--monodisperse"])
    cfg = config_from_args(args)
    assert (cfg.width, cfg.n_frames, cfg.bidisperse) == (512, 7, False)
