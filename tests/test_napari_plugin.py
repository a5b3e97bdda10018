"""The napari plugin: manifest, reader on every format, the Track, Rearrangements and Model
widgets end to end, the overlay drawn on screen, and bad files as notifications.

GUI tests run under xvfb (pytest-xvfb) with napari's ``make_napari_viewer`` fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

napari = pytest.importorskip("napari")
tifffile = pytest.importorskip("tifffile")

pytestmark = [pytest.mark.gui,
              pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend")]

PLUGIN = "colloidcg"
WAIT_MS = 120_000


@pytest.fixture(scope="module", autouse=True)
def _qt_can_start():
    """Skip (not abort the whole run) where Qt cannot open a display: a missing X server
    or missing xcb libraries make QApplication abort the process. With
    COLLOIDCG_REQUIRE_GUI set (CI) that is a failure instead."""
    code = "from qtpy.QtWidgets import QApplication; QApplication([])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=os.environ.copy())
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        why = ("Qt cannot start a GUI here (.ci/system-deps.sh installs xvfb and Qt's xcb "
               f"libraries): {' / '.join(tail)}")
        if os.environ.get("COLLOIDCG_REQUIRE_GUI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture
def notes():
    """Messages of the napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    got: list[str] = []

    def grab(n):
        got.append(str(n.message))

    notification_manager.notification_ready.connect(grab)
    yield got
    notification_manager.notification_ready.disconnect(grab)


def _wait_idle(qtbot, widget, timeout=WAIT_MS):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def _small_video(n_frames=24, size=128, seed=3):
    """A dense synthetic video (with two planted rearrangements when long enough) and its truth."""
    from colloidcg.synthetic import SynthConfig, make_video

    events = [(6, size / 2, size / 2, 30.0, 1.0), (11, size / 3, 2 * size / 3, 30.0, 1.0)]
    cfg = SynthConfig.preset("sample", n_frames=n_frames, width=size, height=size, seed=seed,
                             events=events if n_frames > 12 else 0, event_duration=2,
                             shear_amplitude=0.0, drift=(0.0, 0.0))
    return make_video(cfg)


# ---------------------------------------------------------------------------- manifest
def test_manifest_valid_and_registered():
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    mf = pm.get_manifest(PLUGIN)
    assert mf.display_name == "colloidcg"
    assert {w.display_name for w in mf.contributions.widgets} == {"Track", "Rearrangements", "Model"}
    assert [s.key for s in mf.contributions.sample_data] == ["dense"]
    reader = mf.contributions.readers[0]
    assert reader.accepts_directories and "*.cine" in reader.filename_patterns
    # what `npe2 validate colloidcg --imports` checks: the installed manifest parses and
    # every python_name it names imports
    npe2.PluginManifest.from_distribution(PLUGIN).validate_imports()


# ---------------------------------------------------------------------------- reader
def _tiff(path, data, um=0.25, axes="TYX", **meta):
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / um, 1 / um),
                     metadata={"axes": axes, "finterval": 0.02, "unit": "micron", **meta})
    return path


@pytest.fixture
def frames8():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 255, (6, 40, 52), dtype=np.uint8)
    f[:, 0, 0] = np.arange(6) * 40
    return f


def _open(viewer, path):
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert len(layers) == 1
    return layers[0]


def test_reader_tiff_lazy_with_micrometre_scale(make_napari_viewer, tmp_path, frames8):
    import dask.array as da

    viewer = make_napari_viewer()
    for name in ("v.tif", "v.tiff"):
        layer = _open(viewer, _tiff(tmp_path / name, frames8))
        assert isinstance(layer.data, da.Array) and layer.data.chunks[0] == (1,) * 6
        assert layer.data.shape == (6, 40, 52)
        np.testing.assert_allclose(layer.scale, (1.0, 0.25, 0.25))
        np.testing.assert_array_equal(np.asarray(layer.data[3]), frames8[3])
        assert layer.metadata["colloidcg"]["meta"]["fps"] == pytest.approx(50.0)
    assert viewer.dims.nsteps[0] == 6


def test_reader_tzyx_stack(make_napari_viewer, tmp_path):
    data = np.arange(3 * 4 * 10 * 12, dtype=np.uint16).reshape(3, 4, 10, 12)
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(10, 10),
                     metadata={"axes": "TZYX", "spacing": 0.5, "unit": "um"})
    viewer = make_napari_viewer()
    layer = _open(viewer, path)
    assert layer.data.shape == (3, 4, 10, 12) and viewer.dims.nsteps[:2] == (3, 4)
    np.testing.assert_allclose(layer.scale, (1.0, 0.5, 0.1, 0.1))
    np.testing.assert_array_equal(np.asarray(layer.data[2]), data[2])


@pytest.mark.parametrize("ext,codec", [("avi", "ffv1"), ("mp4", "libx264"), ("mov", "png")])
def test_reader_movies(make_napari_viewer, tmp_path, frames8, ext, codec, write_movie):
    smooth = np.ascontiguousarray(np.repeat(np.repeat(frames8[:, ::4, ::4], 4, 1), 4, 2)[:, :40, :52])
    path = write_movie(tmp_path / f"m.{ext}", smooth, codec, fps=30)
    viewer = make_napari_viewer()
    layer = _open(viewer, path)
    assert layer.data.shape == (6, 40, 52) and viewer.dims.nsteps[0] == 6
    np.testing.assert_allclose(layer.scale, 1.0)       # a movie knows no pixel size
    assert layer.metadata["colloidcg"]["meta"]["fps"] == pytest.approx(30)
    assert np.asarray(layer.data[5]).shape == (40, 52)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_reader_folder_of_frames(make_napari_viewer, tmp_path, frames8, ext):
    import imageio.v3 as iio

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames8):
        (iio.imwrite if ext == "png" else tifffile.imwrite)(folder / f"f{i + 1}.{ext}", f)
    viewer = make_napari_viewer()
    layer = _open(viewer, folder)
    assert layer.data.shape == (6, 40, 52) and viewer.dims.nsteps[0] == 6
    assert [int(np.asarray(layer.data[i])[0, 0]) for i in range(6)] == list(np.arange(6) * 40)


def test_reader_cine(make_napari_viewer, shared_data):
    viewer = make_napari_viewer()
    layer = _open(viewer, shared_data / "cine_781.cine")
    assert layer.data.shape == (15, 256, 256) and layer.data.dtype == np.uint16
    assert viewer.dims.nsteps[0] == 15


def test_sample_data_is_the_shipped_video(make_napari_viewer):
    from colloidcg.io import open_video
    from colloidcg.samples import sample_video

    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "dense")
    assert len(layers) == 1 and layers[0].data.shape == (50, 256, 256)
    np.testing.assert_allclose(layers[0].scale, (1.0, 0.1, 0.1))
    np.testing.assert_array_equal(np.asarray(layers[0].data[7]), open_video(sample_video())[7])


def test_bad_files_give_notifications_not_errors(make_napari_viewer, tmp_path, notes, frames8):
    from napari_colloidcg import napari_get_reader
    from napari_colloidcg._track_widget import TrackWidget

    viewer = make_napari_viewer()
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + os.urandom(400))
    movie = tmp_path / "junk.mp4"
    movie.write_bytes(os.urandom(1000))
    truncated = tmp_path / "cut.tif"
    tifffile.imwrite(truncated, np.repeat(frames8, 4, axis=0))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    for bad in (corrupt, movie, truncated, empty):
        n = len(notes)
        assert napari_get_reader(str(bad)) is None
        assert len(notes) == n + 1 and bad.name in notes[-1], (bad, notes[n:])
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None       # not ours: silent
    assert napari_get_reader([str(corrupt), str(movie)]) is None
    # napari itself reports a file no reader can open; the viewer carries on
    with pytest.raises(Exception):
        viewer.open(str(corrupt), plugin=PLUGIN)
    assert len(viewer.layers) == 0
    # a corrupt tracks table in the Track widget
    w = TrackWidget(viewer)
    bad_tracks = tmp_path / "tracks.parquet"
    bad_tracks.write_bytes(b"PAR1 not really")
    n = len(notes)
    assert w.load_tracks(bad_tracks) is None
    assert len(notes) == n + 1 and "tracks.parquet" in notes[-1]
    assert len(viewer.layers) == 0


# ---------------------------------------------------------------------------- Track widget
@pytest.fixture
def sample_viewer(make_napari_viewer):
    from colloidcg.samples import sample_video

    viewer = make_napari_viewer()
    viewer.open(str(sample_video()), plugin=PLUGIN)
    viewer.dims.set_current_step(0, 0)
    return viewer


def test_track_widget_preview_sits_on_particles(sample_viewer, qtbot):
    from scipy.spatial import cKDTree

    from colloidcg.samples import sample_dir
    from napari_colloidcg._track_widget import TrackWidget

    viewer = sample_viewer
    w = TrackWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.image.value is viewer.layers[0]
    w.auto()
    _wait_idle(qtbot, w)
    qtbot.waitUntil(lambda: w.preview_layer is not None and not w.busy, timeout=WAIT_MS)
    pts = w.preview_layer.data
    assert set(np.unique(pts[:, 0])) == {0.0}
    np.testing.assert_allclose(w.preview_layer.scale, viewer.layers[0].scale)
    frame = np.asarray(viewer.layers[0].data[0]).astype(float)
    yy, xx = np.rint(pts[:, 1]).astype(int), np.rint(pts[:, 2]).astype(int)
    background = np.percentile(frame, 10)
    assert frame[yy, xx].mean() > 2.5 * background
    truth = pd.read_parquet(sample_dir() / "truth.parquet")
    t0 = truth[truth["frame"] == 0]
    d, _ = cKDTree(t0[["y", "x"]].to_numpy()).query(pts[:, 1:])
    assert np.all(d < 1.0)
    d2, _ = cKDTree(pts[:, 1:]).query(t0[["y", "x"]].to_numpy())
    assert np.mean(d2 < 1.0) >= 0.98

    # a parameter change redraws the preview: minmass at the median mass keeps about half
    mass = w.preview_layer.metadata["colloidcg"]["table"]["mass"].to_numpy()
    w.minmass.value = float(np.median(mass))
    qtbot.waitUntil(lambda: not w.busy and
                    0.3 < len(w.preview_layer.data) / len(mass) < 0.7, timeout=WAIT_MS)
    # another frame on the slider: the preview follows
    viewer.dims.set_current_step(0, 7)
    qtbot.waitUntil(lambda: not w.busy and
                    set(np.unique(w.preview_layer.data[:, 0])) == {7.0}, timeout=WAIT_MS)


def test_track_all_save_load_and_cancel(sample_viewer, qtbot, tmp_path, notes):
    from colloidcg.outputs import read_table
    from colloidcg.samples import sample_dir
    from colloidcg.tracking.accuracy import score_tracks
    from napari_colloidcg._track_widget import TrackWidget

    viewer = sample_viewer
    w = TrackWidget(viewer)
    viewer.window.add_dock_widget(w)
    # cancelled before it starts: no tracks
    aborted = []
    worker = w.track_all()
    worker.aborted.connect(lambda: aborted.append(True))
    w.cancel()
    _wait_idle(qtbot, w)
    assert aborted and w.result is None and w.tracks_layer is None
    assert w.track_button.enabled and not w.cancel_button.enabled

    w.auto()
    _wait_idle(qtbot, w)
    w.live.value = False
    w.track_all()
    _wait_idle(qtbot, w)
    assert w.result is not None
    tracks = w.result.tracks
    layer = w.tracks_layer
    assert layer in viewer.layers and layer.color_by == "track_id"
    assert len(layer.data) == len(tracks)
    assert set(np.unique(layer.data[:, 1]).astype(int)) == set(range(50))
    truth = pd.read_parquet(sample_dir() / "truth.parquet")
    score = score_tracks(tracks, truth, (256, 256), margin=8.0, match_radius=3.0)
    assert score.recall > 0.98 and score.precision > 0.98
    assert score.rms_error < 0.3 and score.link_accuracy > 0.99

    out = w.save_tracks(tmp_path)
    df, meta = read_table(out)
    assert len(df) == len(tracks) and meta["units"]["um_per_px"] == pytest.approx(0.1)
    n = len(notes)
    assert w.save_tracks(tmp_path) is None            # exists: refused, said so
    assert len(notes) == n + 1 and "exists" in notes[-1]
    viewer.layers.remove(layer)
    loaded = w.load_tracks(out)
    assert loaded in viewer.layers and len(loaded.data) == len(tracks)
    np.testing.assert_allclose(loaded.scale, viewer.layers[0].scale)


# ---------------------------------------------------------------------------- screenshot
def test_overlay_is_drawn(make_napari_viewer, qtbot):
    from napari_colloidcg._track_widget import TrackWidget

    sv = _small_video(n_frames=3, size=96)
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(sv.frames, name="video", contrast_limits=(0, 255))
    viewer.dims.set_current_step(0, 0)
    w = TrackWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.auto()
    _wait_idle(qtbot, w)
    qtbot.waitUntil(lambda: w.preview_layer is not None and not w.busy, timeout=WAIT_MS)
    viewer.reset_view()
    w.preview_layer.border_color = "red"
    w.preview_layer.visible = False
    without = viewer.screenshot(canvas_only=True, flash=False)
    w.preview_layer.visible = True
    with_points = viewer.screenshot(canvas_only=True, flash=False)
    assert without.shape == with_points.shape
    diff = np.abs(with_points[..., :3].astype(int) - without[..., :3].astype(int)).sum(-1) > 30
    assert diff.mean() > 0.01
    # where pixels changed they turned red (the ring colour), not something else
    changed = with_points[diff][:, :3].astype(int)
    assert np.mean(changed[:, 0] > changed[:, 1] + 60) > 0.8
    assert image.visible


# ---------------------------------------------------------------------------- Rearrangements and Model
@pytest.fixture
def tracked_small(make_napari_viewer, qtbot):
    """Viewer with a small synthetic video (an in-memory layer) tracked by the widget."""
    from napari_colloidcg._track_widget import TrackWidget

    sv = _small_video()
    viewer = make_napari_viewer()
    image = viewer.add_image(sv.frames, name="small", scale=(1, 0.1, 0.1),
                             metadata={"colloidcg": {"meta": {"fps": 100.0, "um_per_px": 0.1}}})
    viewer.dims.set_current_step(0, 0)
    tw = TrackWidget(viewer)
    viewer.window.add_dock_widget(tw)
    tw.processes.value = 1
    tw.track_all()                 # no auto first: tracking estimates the parameters
    _wait_idle(qtbot, tw)
    assert tw.tracks_layer is not None
    assert tw.result.params.sources["diameter"] == "estimated"
    assert tw.diameter.value == tw.result.params.diameter       # and shows them
    tw.live.value = False
    return viewer, image, tw, sv


def test_rearrangements_widget_end_to_end(tracked_small, qtbot):
    from napari_colloidcg._rearrangements_widget import RearrangementsWidget

    viewer, image, tw, sv = tracked_small
    w = RearrangementsWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.tracks.value is tw.tracks_layer
    w.compute()
    _wait_idle(qtbot, w)
    assert w.result is not None
    lay = w.d2min_layer
    frames = np.unique(lay.data[:, 0]).astype(int)
    lag = w.result.parameters["lag_frames"]
    assert len(frames) >= 24 - lag - 1
    # colours follow D2min: the most rearranging point is drawn in the colormap's top colour
    fc = lay.face_color
    v = lay.features["log10_d2min_norm"].to_numpy()
    assert not np.allclose(fc[np.argmax(v)], fc[np.argmin(v)])
    assert w.colour_bar.limits == pytest.approx(lay.metadata["colloidcg"]["limits"])
    ev = w.result.events
    assert len(ev) >= 1 and w.table.rowCount() == len(ev)
    assert len(w.events_layer.data) == int((ev["frame_end"] - ev["frame_start"] + 1).sum())
    # the planted events are found: each has a detected event near it in space and time
    for _, p in sv.events.iterrows():
        near = np.hypot(ev["x"] - p["x"], ev["y"] - p["y"]) < p["radius"]
        when = (ev["frame_start"] <= p["frame"] + 1) & (ev["frame_end"] >= p["frame"] - lag - 1)
        assert (near & when).any(), (p.to_dict(), ev)
    # clicking a row jumps to that event's frame and place
    row = len(ev) - 1
    e = ev.iloc[row]
    w.table.cellClicked.emit(row, 0)
    assert e["frame_start"] <= viewer.dims.current_step[0] <= e["frame_end"]
    np.testing.assert_allclose(getattr(viewer, "scene", viewer).camera.center[-2:], (e["y"] * 0.1, e["x"] * 0.1), atol=1e-6)
    sel = w.events_layer.selected_data
    assert sel and all(w.events_layer.features["event_id"].iloc[i] == e["event_id"] for i in sel)


def test_model_widget_end_to_end(tracked_small, qtbot, tmp_path):
    from colloidcg.export import is_bundle, load_model
    from napari_colloidcg._model_widget import ModelWidget

    viewer, image, tw, _ = tracked_small
    w = ModelWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.config_overrides = dict(val_rollout_steps=4, max_frames_per_epoch=6, width=16)
    w.epochs.value = 2
    w.batch_frames.value = 6
    seen = []
    w._signal.record.connect(lambda r: seen.append(r["epoch"]))
    w.train()
    assert not w.train_button.enabled and w.cancel_button.enabled
    _wait_idle(qtbot, w)
    assert seen == [1, 2] and [r["epoch"] for r in w.loss_plot.records] == [1, 2]
    assert w.model is not None and w.report["epochs_run"] == 2
    assert w.model_config["calibration"]["um_per_px"] == pytest.approx(0.1)

    # S on every tracked particle-frame
    w.show_S()
    _wait_idle(qtbot, w)
    tracks = tw.result.tracks
    assert len(w.s_layer.data) == len(tracks)
    s = w.s_layer.features["S"].to_numpy()
    assert np.isfinite(s).all() and s.std() > 0

    # rollout from the frame on screen, beside the observed tracks, and the statistics dock
    viewer.dims.set_current_step(0, 4)
    w.steps.value = 6
    w.simulate_from_frame()
    _wait_idle(qtbot, w)
    sim = w.simulation.tracks
    assert sim["frame"].min() == 4 and sim["frame"].max() == 10
    assert w.simulation_layer in viewer.layers and tw.tracks_layer in viewer.layers
    assert w.comparison is not None and len(w.comparison.figure.axes) == 2
    assert len(w.comparison.curves["model"]["msd"]) > 0 and np.isfinite(w.metrics["msd_rel_rms"])

    # export: a bundle that loads back and gives the same S
    bundle = tmp_path / "bundle"
    w.export(bundle)
    _wait_idle(qtbot, w)
    assert is_bundle(bundle)
    model2, cfg2 = load_model(bundle)
    import torch
    r = torch.as_tensor(tracks[tracks["frame"] == 0][["x", "y"]].to_numpy() * 0.1)
    with torch.no_grad():
        np.testing.assert_allclose(model2.initial_S(r).numpy(), w.model.initial_S(r).numpy(), rtol=1e-6)

    # cancel: stops after the current epoch and keeps the best model so far
    w.epochs.value = 200
    w.train()
    qtbot.waitUntil(lambda: len(w.history) >= 1, timeout=WAIT_MS)
    w.cancel()
    _wait_idle(qtbot, w)
    assert w.report["cancelled"] and w.report["epochs_run"] < 200


def test_auto_keeps_the_colloidcg_toml_track_values(make_napari_viewer, qtbot, tmp_path):
    from napari_colloidcg import napari_get_reader
    from napari_colloidcg._track_widget import TrackWidget

    sv = _small_video(n_frames=3, size=96)
    tifffile.imwrite(tmp_path / "video.tif", sv.frames, imagej=True, metadata={"axes": "TYX"})
    (tmp_path / "colloidcg.toml").write_text("[track]\nminmass = 1234.5\n")
    viewer = make_napari_viewer()
    for data, kwargs, _ in napari_get_reader(str(tmp_path / "video.tif"))(str(tmp_path / "video.tif")):
        viewer.add_image(data, **kwargs)
    w = TrackWidget(viewer)
    w.auto()
    _wait_idle(qtbot, w)
    assert w.minmass.value == pytest.approx(1234.5)          # from the file
    assert w.diameter.value % 2 == 1 and w.diameter.value > 3   # estimated


def test_model_widget_trains_with_per_particle_sizes(tracked_small, qtbot):
    from napari_colloidcg._model_widget import ModelWidget

    viewer, image, tw, _ = tracked_small
    w = ModelWidget(viewer)
    w.config_overrides = dict(val_rollout_steps=4, max_frames_per_epoch=6, width=16, cutoff=2.5)
    w.epochs.value = 1
    w.sizes.value = True
    w.train()
    _wait_idle(qtbot, w)
    assert w.model is not None and w.model.config.size_column == "size"
    assert w.model.config.size_scale == pytest.approx(np.percentile(
        tw.result.tracks.groupby("particle")["size"].median(), 95))
    viewer.dims.set_current_step(0, 4)
    w.steps.value = 3
    w.simulate_from_frame()
    _wait_idle(qtbot, w)
    assert np.isfinite(w.simulation.tracks[["x", "y"]].to_numpy()).all()
