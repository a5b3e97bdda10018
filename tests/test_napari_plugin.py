"""The napari plugin: manifest, reader on every format, the Track, Rearrangements and Model
widgets end to end, the overlay drawn on screen, and bad files as notifications.

GUI tests run under xvfb (pytest-xvfb) with napari's ``make_napari_viewer`` fixture.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

# One Qt binding in the process: pytest-qt prefers PyQt6 when it is installed while qtpy
# (napari) prefers PyQt5; in an environment that still has PyQt5 beside the extra's PyQt6,
# make qtpy take PyQt6 too.
if importlib.util.find_spec("PyQt6") is not None:
    os.environ.setdefault("QT_API", "pyqt6")

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


def _dock(viewer, name):
    """The widget as a user opens it: Plugins > colloidcg > NAME (napari hands it a proxy
    of the viewer)."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _names(viewer):
    return [lay.name for lay in viewer.layers]


@functools.lru_cache(maxsize=None)
def _small_video(n_frames=24, size=128, seed=3):
    """A dense synthetic video (with two planted rearrangements when long enough) and its
    truth; rendered once per session for each size (the tests only read it)."""
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
    assert reader.accepts_directories and {"*.cine", "*.parquet"} <= set(reader.filename_patterns)
    writers = {tuple(w.layer_types): w.filename_extensions for w in mf.contributions.writers}
    assert writers == {("tracks",): [".parquet"], ("points",): [".parquet"]}
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


def test_reader_norpix_seq(make_napari_viewer, tmp_path):
    """A StreamPix .seq opens in napari through the plugin, every frame the file's."""
    from streampix import write_streampix

    data = np.random.default_rng(4).integers(0, 4096, (5, 24, 30)).astype(np.uint16)
    viewer = make_napari_viewer()
    layer = _open(viewer, write_streampix(tmp_path / "cam.seq", data, fps=1000.0))
    assert layer.data.shape == (5, 24, 30) and viewer.dims.nsteps[0] == 5
    np.testing.assert_array_equal(np.asarray(layer.data[3]), data[3])


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
    # a corrupt tracks table: the reader says why; so does the Track widget
    bad_tracks = tmp_path / "tracks.parquet"
    bad_tracks.write_bytes(b"PAR1 not really")
    n = len(notes)
    assert napari_get_reader(str(bad_tracks)) is None
    assert len(notes) == n + 1 and "tracks.parquet" in notes[-1]
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "other.parquet")
    n = len(notes)
    assert napari_get_reader(str(tmp_path / "other.parquet")) is None      # not a colloidcg table
    assert len(notes) == n + 1 and "other.parquet" in notes[-1]
    w = _dock(viewer, "Track")
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


def test_track_widget_preview_histogram_links_and_validation(sample_viewer, qtbot):
    from scipy.spatial import cKDTree

    from colloidcg.samples import sample_dir
    from napari_colloidcg._track_widget import LINKS, PREVIEW

    viewer = sample_viewer
    w = _dock(viewer, "Track")
    assert w.image.value.name == viewer.layers[0].name
    w.auto()
    _wait_idle(qtbot, w)
    qtbot.waitUntil(lambda: w.preview_layer is not None and not w.busy, timeout=WAIT_MS)
    pts = w.preview_layer.data
    assert set(np.unique(pts[:, 0])) == {0.0}
    np.testing.assert_allclose(w.preview_layer.scale, viewer.layers[0].scale)
    frame = np.asarray(viewer.layers[0].data[0]).astype(float)
    yy, xx = np.rint(pts[:, 1]).astype(int), np.rint(pts[:, 2]).astype(int)
    assert frame[yy, xx].mean() > 2.5 * np.percentile(frame, 10)
    truth = pd.read_parquet(sample_dir() / "truth.parquet")
    t0 = truth[truth["frame"] == 0]
    d, _ = cKDTree(t0[["y", "x"]].to_numpy()).query(pts[:, 1:])
    assert np.all(d < 1.0)
    d2, _ = cKDTree(pts[:, 1:]).query(t0[["y", "x"]].to_numpy())
    assert np.mean(d2 < 1.0) >= 0.98
    # features on the preview: every column of the located table
    assert {"mass", "size", "ecc", "ep", "signal"} <= set(w.preview_layer.features.columns)

    # mass histogram of every candidate spot, with the minmass line
    assert len(w.mass_plot.mass) >= len(pts) * 0.5 and w.mass_plot.minmass == pytest.approx(w.minmass.value)
    # link preview: arrows from frame 0 to where each particle is in frame 1, within the
    # search range; the truth moves every particle by less than that
    links = w.links_layer
    assert links is not None and links.name == LINKS and len(links.data) > 0.9 * len(pts)
    assert set(np.unique(links.data[:, 0, 0])) == {0.0}
    steps = links.features["step_px"].to_numpy()
    sr = links.metadata["colloidcg"]["search_range"]
    assert sr > 0 and np.all(steps <= sr + 1e-9)
    assert "linked to frame 1" in w.status.value

    # a parameter change redraws the preview: minmass at the median mass keeps about half
    mass = w.preview_layer.metadata["colloidcg"]["table"]["mass"].to_numpy()
    w.minmass.value = float(np.median(mass))
    qtbot.waitUntil(lambda: not w.busy and 0.3 < len(w.preview_layer.data) / len(mass) < 0.7,
                    timeout=WAIT_MS)
    assert w.mass_plot.minmass == pytest.approx(float(np.median(mass)))

    # validated as the user types: an even diameter clears the rings and says why
    n_before, d0 = len(w.preview_layer.data), int(w.diameter.value)
    w.diameter.value = d0 + 1
    _wait_idle(qtbot, w)
    assert "odd" in w.status.value and str(d0 + 1) in w.status.value
    assert len(w.preview_layer.data) == 0 and not w.track_button.enabled
    w.diameter.value = d0
    qtbot.waitUntil(lambda: not w.busy and len(w.preview_layer.data) == n_before, timeout=WAIT_MS)
    assert "odd" not in w.status.value and w.track_button.enabled

    # another frame on the slider: the preview follows
    viewer.dims.set_current_step(0, 7)
    qtbot.waitUntil(lambda: not w.busy and set(np.unique(w.preview_layer.data[:, 0])) == {7.0},
                    timeout=WAIT_MS)
    # a deleted preview stays deleted (through napari's proxy of the viewer)
    viewer.layers.remove(PREVIEW)
    viewer.dims.set_current_step(0, 9)
    w.minmass.value = float(np.median(mass)) * 0.9
    qtbot.wait(200)
    _wait_idle(qtbot, w)
    assert PREVIEW not in _names(viewer) and not w.live.value


def test_track_all_twice_save_load_and_cancel(sample_viewer, qtbot, tmp_path, notes):
    from colloidcg.outputs import read_table
    from colloidcg.samples import sample_dir
    from colloidcg.tracking.accuracy import score_tracks

    viewer = sample_viewer
    w = _dock(viewer, "Track")
    w.processes.value = 1
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
    assert w.params().spot_profile is None and w.params().gap_check is None    # auto
    w.gap_check.value = "off"
    assert w.params().gap_check is False
    w.gap_check.value = "auto"
    lengths = {}
    for min_length in (40, 3):            # twice: the second run replaces the first layer
        w.min_length.value = min_length
        w.track_all()
        _wait_idle(qtbot, w)
        tracks = w.result.tracks
        layer = w.tracks_layer
        assert [n for n in _names(viewer) if "tracks" in n] == [f"{viewer.layers[0].name} tracks"]
        assert len(layer.data) == len(tracks)
        lengths[min_length] = tracks.groupby("particle").size().min()
    assert lengths[40] >= 40 and lengths[3] < 40          # each run's own setting
    assert layer.color_by == "track_id"
    assert {"mass", "size", "ecc", "ep", "signal", "vx", "vy"} <= set(layer.features.columns)
    assert set(np.unique(layer.data[:, 1]).astype(int)) == set(range(50))
    truth = pd.read_parquet(sample_dir() / "truth.parquet")
    score = score_tracks(tracks, truth, (256, 256), margin=8.0, match_radius=3.0)
    assert score.recall > 0.98 and score.precision > 0.98
    assert score.rms_error < 0.3 and score.link_accuracy > 0.99
    assert w.result.params.sources["spot_profile"] == "estimated"    # auto: decided by track
    # the tracking quality verdict, when the library gives one
    quality = w.result.sidecar().get("quality")
    if quality:
        assert not w.quality.native.isHidden() and quality["status"] in w.quality.value
    else:
        assert w.quality.native.isHidden()

    out = w.save_tracks(tmp_path)
    df, meta = read_table(out)
    assert len(df) == len(tracks) and meta["units"]["um_per_px"] == pytest.approx(0.1)
    n = len(notes)
    assert w.save_tracks(tmp_path) is None            # exists: refused, said in the GUI's words
    assert len(notes) == n + 1 and "exists" in notes[-1] and "--overwrite" not in notes[-1]
    from colloidcg.errors import TrackingError
    from napari_colloidcg._common import gui_message
    said = gui_message(TrackingError("no particles found; give --diameter, --minmass and --invert"))
    assert "--" not in said and "'diameter (px)'" in said and "'minmass'" in said
    viewer.layers.remove(w.tracks_layer.name)
    loaded = w.load_tracks(out)
    assert loaded.name in _names(viewer) and len(loaded.data) == len(tracks)
    np.testing.assert_allclose(loaded.scale, viewer.layers[0].scale)


def _stack3d(n_frames=4, shape=(20, 40, 40), seed=0):
    """(T, Z, Y, X) uint8 stack of Gaussian spheres drifting by (0, 0.3, 0.2) px/frame."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(np.arange(4, shape[0] - 3, 6), np.arange(6, shape[1] - 5, 8),
                             np.arange(6, shape[2] - 5, 8), indexing="ij"), -1).reshape(-1, 3).astype(float)
    g += rng.uniform(-1, 1, g.shape)
    zz, yy, xx = np.indices(shape)
    out = []
    for t in range(n_frames):
        img = np.zeros(shape)
        for z, y, x in g + t * np.array([0.0, 0.3, 0.2]):
            img += np.exp(-((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5 ** 2))
        out.append(np.clip(img * 200 + rng.normal(10, 2, shape), 0, 255).astype(np.uint8))
    return np.stack(out), g


def test_track_widget_tracks_zstacks(make_napari_viewer, qtbot):
    stack, centres = _stack3d()
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack")
    w = _dock(viewer, "Track")
    w.processes.value = 1
    w.auto()
    _wait_idle(qtbot, w)
    qtbot.waitUntil(lambda: w.preview_layer is not None and not w.busy, timeout=WAIT_MS)
    assert w.preview_layer.data.shape[1] == 4            # frame, z, y, x
    w.live.value = False
    w.track_all()
    _wait_idle(qtbot, w)
    layer = w.tracks_layer
    assert layer is not None and layer.data.shape[1] == 5   # particle, frame, z, y, x
    tracks = w.result.tracks
    full = tracks.groupby("particle").size()
    assert (full == 4).sum() >= 0.5 * len(centres)
    assert "z" in layer.features.columns


# ---------------------------------------------------------------------------- screenshot
def test_overlay_is_drawn(make_napari_viewer, qtbot):
    sv = _small_video(n_frames=3, size=96)
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(sv.frames, name="video", contrast_limits=(0, 255))
    viewer.dims.set_current_step(0, 0)
    w = _dock(viewer, "Track")
    w.show_links.value = False
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


def test_layout_fits_a_laptop_screen_and_follows_the_theme(make_napari_viewer, qtbot):
    """Track, Rearrangements and Model from the Plugins menu: one tab group, each dock
    shorter than a 1366 x 768 screen, plots in the theme's colours; Qt 6 (napari shows a
    deprecation toast on Qt 5)."""
    import qtpy
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme
    from qtpy.QtWidgets import QDockWidget

    assert qtpy.API_NAME in ("PyQt6", "PySide6")
    viewer = make_napari_viewer(show=True)
    widgets = [_dock(viewer, name) for name in ("Track", "Rearrangements", "Model")]
    qtbot.waitUntil(lambda: all(w._tabified for w in widgets), timeout=10_000)
    main = viewer.window._qt_window
    docks = [d for d in main.findChildren(QDockWidget) if d.property("colloidcg_dock")]
    assert len(docks) == 3
    assert all(len(main.tabifiedDockWidgets(d)) == 2 for d in docks)
    for w in widgets:
        assert w.native.sizeHint().height() <= 620, (type(w).__name__, w.native.sizeHint().height())
    model = widgets[2]
    for theme in ("dark", "light"):
        viewer.theme = theme
        bg = get_theme(theme).background.as_hex()
        for plot in (model.loss_plot, model.comparison, widgets[0].mass_plot):
            assert to_hex(plot.figure.get_facecolor()) == to_hex(bg)
            ax = plot.figure.axes[0]
            assert to_hex(ax.xaxis.label.get_color()) == to_hex(get_theme(theme).text.as_hex())


# ---------------------------------------------------------------------------- Rearrangements and Model
@pytest.fixture
def tracked_small(make_napari_viewer, qtbot):
    """Viewer with a small synthetic video (an in-memory layer) tracked by the widget."""
    sv = _small_video()
    viewer = make_napari_viewer()
    image = viewer.add_image(sv.frames, name="small", scale=(1, 0.1, 0.1),
                             metadata={"colloidcg": {"meta": {"fps": 100.0, "um_per_px": 0.1}}})
    viewer.dims.set_current_step(0, 0)
    tw = _dock(viewer, "Track")
    tw.processes.value = 1
    tw.live.value = False
    tw.track_all()                 # no auto first: tracking estimates the parameters
    _wait_idle(qtbot, tw)
    assert tw.tracks_layer is not None
    assert tw.result.params.sources["diameter"] == "estimated"
    assert tw.diameter.value == tw.result.params.diameter       # and shows them
    return viewer, image, tw, sv


def test_rearrangements_widget_twice_and_follows_new_tracks(tracked_small, qtbot):
    viewer, image, tw, sv = tracked_small
    w = _dock(viewer, "Rearrangements")
    assert w.tracks.value.name == tw.tracks_layer.name
    for _ in range(2):                      # twice: the layers are replaced, not added
        w.compute()
        _wait_idle(qtbot, w)
        assert _names(viewer).count("D2min") == 1 and _names(viewer).count("rearrangement events") == 1
        assert not any(n.endswith("]") for n in _names(viewer))
    assert w.result is not None
    lay = w.d2min_layer
    frames = np.unique(lay.data[:, 0]).astype(int)
    lag = w.result.parameters["lag_frames"]
    assert len(frames) >= 24 - lag - 1
    # colours follow D2min: the most rearranging point is drawn in the colormap's top colour
    fc = lay.face_color
    v = lay.features["log10_d2min_norm"].to_numpy()
    assert not np.allclose(fc[np.argmax(v)], fc[np.argmin(v)])
    assert {"d2min", "d2min_norm", "rearranging", "edge", "mass", "size", "ep"} <= set(lay.features.columns)
    assert w.colour_bar.limits == pytest.approx(lay.metadata["colloidcg"]["limits"])
    ev = w.result.events
    assert len(ev) >= 1 and w.table.rowCount() == len(ev)
    assert len(w.events_layer.data) == int((ev["frame_end"] - ev["frame_start"] + 1).sum())
    assert {"event_id", "n_particles", "peak_d2min"} <= set(w.events_layer.features.columns)
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

    # tracking again (other parameters) replaces the tracks layer; D2min uses the new tracks
    tw.min_length.value = 20
    tw.track_all()
    _wait_idle(qtbot, tw)
    new = tw.result.tracks
    assert _names(viewer).count("small tracks") == 1
    assert w.tracks.value.name == "small tracks"
    before = w.result
    w.compute()
    _wait_idle(qtbot, w)
    assert w.result is not before            # computed anew (a failure would keep the old one)
    assert len(w.result.table) == len(new)


def test_model_widget_end_to_end(tracked_small, qtbot, tmp_path, notes):
    from colloidcg.export import is_bundle, load_model

    viewer, image, tw, _ = tracked_small
    rw = _dock(viewer, "Rearrangements")
    rw.descriptors.value = True
    rw.compute()
    _wait_idle(qtbot, rw)
    w = _dock(viewer, "Model")
    w.config_overrides = dict(val_rollout_steps=4, max_frames_per_epoch=6, width=16)
    w.epochs.value = 2
    w.batch_frames.value = 6
    seen, status = [], []
    w._signal.record.connect(lambda r: (seen.append(r["epoch"]), status.append(w.status.value)))
    w.train()
    assert not w.train_button.enabled and w.cancel_button.enabled
    _wait_idle(qtbot, w)
    assert seen == [1, 2] and [r["epoch"] for r in w.loss_plot.records] == [1, 2]
    assert w.model is not None and w.report["epochs_run"] == 2
    assert w.model_config["calibration"]["um_per_px"] == pytest.approx(0.1)
    assert any("left" in s and "/2" in s for s in status)        # epoch k/2 ... about N s left
    assert w.eta_seconds is not None

    # S on every tracked particle-frame, twice (one layer); the field-of-view halo hidden;
    # the AUC of S beside the softness baseline's
    tracks = tw.result.tracks
    for _ in range(2):
        w.show_S()
        _wait_idle(qtbot, w)
    assert _names(viewer).count("S (model)") == 1
    lay = w.s_layer
    assert len(lay.data) == len(tracks)
    s = lay.features["S"].to_numpy()
    assert np.isfinite(s).all() and s.std() > 0
    edge = lay.features["edge"].to_numpy(bool)
    halo = lay.metadata["colloidcg"]["edge_px"]
    x, y = lay.features["x"].to_numpy(), lay.features["y"].to_numpy()
    inside = (x > halo + 0.5) & (x < 128 - halo - 1.5) & (y > halo + 0.5) & (y < 128 - halo - 1.5)
    assert edge.any() and not edge[inside].any()
    np.testing.assert_array_equal(lay.shown, ~edge)
    w.mask_edge.value = False
    assert lay.shown.all()
    assert {"mass", "size", "ep"} <= set(lay.features.columns)
    auc = w.auc
    assert 0.0 <= auc["S_auc"] <= 1.0 and auc["n_test"] > 0
    assert "AUC of S" in w.auc_label.value and "softness baseline" in w.auc_label.value

    # rollout from the frame on screen, twice (one layer), and the statistics beside
    viewer.dims.set_current_step(0, 4)
    w.steps.value = 6
    for _ in range(2):
        w.simulate_from_frame()
        _wait_idle(qtbot, w)
    assert _names(viewer).count("simulation") == 1
    sim = w.simulation.tracks
    assert sim["frame"].min() == 4 and sim["frame"].max() == 10
    assert w.simulation_layer is not None and tw.tracks_layer is not None
    assert "x" in w.simulation_layer.features.columns
    assert len(w.comparison.figure.axes) == 2
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
    # again: refused in the GUI's words while the bundle exists, replaced when confirmed
    n = len(notes)
    w.export(bundle)
    _wait_idle(qtbot, w)
    assert len(notes) == n + 1 and "exists" in notes[-1] and "--overwrite" not in notes[-1]
    w.export(bundle, overwrite=True)
    _wait_idle(qtbot, w)
    assert is_bundle(bundle) and "exported" in w.status.value

    # cancel: stops after the current epoch and keeps the best model so far
    w.epochs.value = 200
    w.train()
    qtbot.waitUntil(lambda: len(w.history) >= 1, timeout=WAIT_MS)
    w.cancel()
    _wait_idle(qtbot, w)
    assert w.report["cancelled"] and w.report["epochs_run"] < 200


def test_rollout_overlay_follows_the_drift_at_every_frame(tracked_small, qtbot, tmp_path):
    """Drift-subtracted tracks (x_image = x + drift): the rollout is drawn where the footage
    shows the particles at every frame, not only at the start frame."""
    from colloidcg.outputs import write_table

    viewer, image, tw, _ = tracked_small
    df = tw.result.tracks.copy()
    drift = {"x": 0.3, "y": 0.15}                 # px per frame, as on the sample video
    for c, v in drift.items():
        df[f"{c}_image"] = df[c] + v * df["frame"]
    path = write_table(tmp_path / "drift" / "tracks.parquet", df, tw.result.sidecar())
    viewer.open(str(path), plugin=PLUGIN)
    w = _dock(viewer, "Model")
    w.tracks.value = viewer.layers["drift tracks"]
    w.config_overrides = dict(val_rollout_steps=4, max_frames_per_epoch=6, width=16)
    w.epochs.value = 1
    w.train()
    _wait_idle(qtbot, w)
    viewer.dims.set_current_step(0, 3)
    w.steps.value = 15
    w.simulate_from_frame()
    _wait_idle(qtbot, w)
    sim = w.simulation.tracks
    lay = w.simulation_layer
    shown = pd.DataFrame(lay.data[:, 1:], columns=["frame", "y", "x"])
    shown["particle"] = lay.data[:, 0].astype(int)
    m = shown.merge(sim[["frame", "particle", "x", "y"]], on=["frame", "particle"], suffixes=("", "_sim"))
    assert len(m) == len(sim)
    for c, v in drift.items():
        np.testing.assert_allclose(m[c] - m[f"{c}_sim"], v * m["frame"], atol=1e-6)
    # and so the markers sit on the footage's particles: exactly at the start frame, and
    # at the last frame nearer than with the start frame's offset alone (the old overlay)
    from scipy.spatial import cKDTree

    def median_distance(frame, shift=(0.0, 0.0)):
        obs = df[df["frame"] == frame][["y_image", "x_image"]].to_numpy()
        at = m[m["frame"] == frame][["y", "x"]].to_numpy() + np.asarray(shift)
        return float(np.median(cKDTree(obs).query(at)[0]))

    assert median_distance(3) < 1e-6
    last = int(sim["frame"].max())
    behind = (-drift["y"] * (last - 3), -drift["x"] * (last - 3))
    assert median_distance(last) < median_distance(last, behind)


def test_auto_keeps_the_colloidcg_toml_track_values(make_napari_viewer, qtbot, tmp_path):
    from napari_colloidcg import napari_get_reader

    sv = _small_video(n_frames=3, size=96)
    tifffile.imwrite(tmp_path / "video.tif", sv.frames, imagej=True, metadata={"axes": "TYX"})
    (tmp_path / "colloidcg.toml").write_text("[track]\nminmass = 1234.5\n")
    viewer = make_napari_viewer()
    for data, kwargs, _ in napari_get_reader(str(tmp_path / "video.tif"))(str(tmp_path / "video.tif")):
        viewer.add_image(data, **kwargs)
    w = _dock(viewer, "Track")
    w.auto()
    _wait_idle(qtbot, w)
    assert w.minmass.value == pytest.approx(1234.5)          # from the file
    assert w.diameter.value % 2 == 1 and w.diameter.value > 3   # estimated


def test_model_widget_trains_with_per_particle_sizes(tracked_small, qtbot):
    viewer, image, tw, _ = tracked_small
    w = _dock(viewer, "Model")
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


# ---------------------------------------------------------------------------- results read back in
@pytest.fixture(scope="module")
def batch_out(tmp_path_factory):
    """OUT of a batch over one small video, as ``colloidcg batch`` lays it out: the video's
    track/, rearrangements/, train/ and evaluate/ stage folders, with a short training."""
    from colloidcg.rearrangements import detect
    from colloidcg.simulate import simulate
    from colloidcg.structure.frames import fov_from_shape
    from colloidcg.tracking import track
    from colloidcg.train import TrainConfig, train_tracks

    root = tmp_path_factory.mktemp("batch")
    sv = _small_video()
    video = root / "videos" / "v1.tif"
    video.parent.mkdir()
    _tiff(video, sv.frames, um=0.1)
    out = root / "OUT"
    vdir = out / "v1.tif"
    res = track(str(video), progress=False, processes=1)
    res.save(vdir / "track")
    rr = detect(res.tracks, fov=fov_from_shape(sv.frames.shape[1:]))
    rr.save(vdir / "rearrangements")
    fit = train_tracks(res.tracks, res.sidecar(), TrainConfig(epochs=1, max_frames_per_epoch=6, width=16,
                                                               val_rollout_steps=4, progress=False),
                       out_dir=vdir / "train")
    from colloidcg.export import load_model
    from colloidcg.outputs import provenance, write_table
    model, cfg = load_model(vdir / "train")
    sim = simulate(model, cfg, res.tracks, res.sidecar(), steps=5, frame=1, seed=0)
    (vdir / "evaluate").mkdir()
    write_table(vdir / "evaluate" / "sim.parquet", sim.tracks,
                provenance("simulate", {"model": str(vdir / "train")}, sim.parameters, sim.meta))
    (out / "batch.json").write_text("{}")
    return {"out": out, "video_dir": vdir, "video": video, "tracks": res.tracks, "rr": rr,
            "sim": sim.tracks, "fit": fit}


def test_reader_tracks_table_gives_tracks_and_points_with_features(make_napari_viewer, batch_out):
    viewer = make_napari_viewer()
    layers = viewer.open(str(batch_out["video_dir"] / "track" / "tracks.parquet"), plugin=None)  # no plugin named
    tracks = batch_out["tracks"]
    kinds = sorted(type(lay).__name__ for lay in layers)
    assert kinds == ["Points", "Tracks"]
    tr = next(lay for lay in layers if type(lay).__name__ == "Tracks")
    pts = next(lay for lay in layers if type(lay).__name__ == "Points")
    assert len(tr.data) == len(pts.data) == len(tracks)
    assert set(tracks.columns) <= set(tr.features.columns)
    assert set(tracks.columns) <= set(pts.features.columns)
    np.testing.assert_allclose(tr.scale, (1.0, 0.1, 0.1))
    # ready for the widgets: the Rearrangements widget computes D2min on it
    assert tr.metadata["colloidcg"]["kind"] == "tracks"
    pd.testing.assert_frame_equal(tr.metadata["colloidcg"]["tracks"], tracks, check_dtype=False)


def test_reader_rearrangements_events_and_simulation(make_napari_viewer, batch_out):
    viewer = make_napari_viewer()
    rd = batch_out["video_dir"] / "rearrangements"
    (d2,) = viewer.open(str(rd / "rearrangements.parquet"), plugin=None)
    table = batch_out["rr"].table
    ok = np.isfinite(table["d2min_norm"]) & (table["d2min_norm"] > 0)
    assert len(d2.data) == int(ok.sum())
    assert {"d2min", "d2min_norm", "rearranging", "log10_d2min_norm", "mass"} <= set(d2.features.columns)
    (ev,) = viewer.open(str(rd / "events.parquet"), plugin=None)
    events = batch_out["rr"].events
    assert len(ev.data) == int((events["frame_end"] - events["frame_start"] + 1).sum())
    assert {"event_id", "n_particles"} <= set(ev.features.columns)
    layers = viewer.open(str(batch_out["video_dir"] / "evaluate" / "sim.parquet"), plugin=None)
    sim = next(lay for lay in layers if type(lay).__name__ == "Tracks")
    assert sim.metadata["colloidcg"]["kind"] == "simulation" and "simulation" in sim.name
    assert len(sim.data) == len(batch_out["sim"])


def test_reader_model_folder_and_bundle_load_into_the_model_widget(make_napari_viewer, batch_out, tmp_path):
    from colloidcg.export import export_bundle

    from napari_colloidcg._model_widget import ModelWidget

    viewer = make_napari_viewer()
    mdir = batch_out["video_dir"] / "train"
    assert viewer.open(str(mdir), plugin=PLUGIN) == []        # no layers: a model
    (mw,) = _model_widgets(viewer)
    assert isinstance(mw, ModelWidget) and mw.model is not None and str(mw.model_dir) == str(mdir)
    bundle = export_bundle(mdir, tmp_path / "bundle")
    assert viewer.open(str(bundle), plugin=PLUGIN) == []
    assert _model_widgets(viewer) == [mw]                      # the same dock, the new model
    assert str(mw.model_dir) == str(bundle) and "loaded" in mw.status.value


def _model_widgets(viewer):
    """The Model widgets docked in the viewer's window."""
    from napari_colloidcg._model_widget import ModelWidget

    return [w for w in viewer.window.dock_widgets.values() if isinstance(w, ModelWidget)]


def test_reader_batch_out_and_one_videos_results(make_napari_viewer, batch_out):
    for where in (batch_out["out"], batch_out["video_dir"]):
        viewer = make_napari_viewer()
        viewer.open(str(where), plugin=PLUGIN)
        names = _names(viewer)
        assert names[0] == "v1.tif" and type(viewer.layers[0]).__name__ == "Image"
        assert str(viewer.layers[0].metadata["colloidcg"]["path"]) == str(batch_out["video"])
        for want in ("v1.tif tracks", "v1.tif D2min", "v1.tif events", "v1.tif simulation"):
            assert want in names, (want, names)
        mws = _model_widgets(viewer)
        assert len(mws) == 1 and mws[0].model is not None
        # the widgets take it from there: D2min on the loaded tracks
        assert viewer.layers["v1.tif D2min"].metadata["colloidcg"]["source"] == "v1.tif tracks"
        viewer.close()


def test_writer_tracks_and_points_to_the_tracks_schema(make_napari_viewer, batch_out, tmp_path):
    from colloidcg.outputs import read_table

    viewer = make_napari_viewer()
    viewer.open(str(batch_out["video_dir"] / "track" / "tracks.parquet"), plugin=PLUGIN)
    tracks = batch_out["tracks"]
    out = tmp_path / "saved.parquet"
    tr_layer = viewer.layers["v1.tif tracks"]
    viewer.layers.selection = {tr_layer}
    paths = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert [str(p) for p in paths] == [str(out)]
    df, meta = read_table(out)
    assert list(df.columns[:4]) == ["frame", "particle", "x", "y"]
    a = df.sort_values(["particle", "frame"]).reset_index(drop=True)
    b = tracks.sort_values(["particle", "frame"]).reset_index(drop=True)
    for c in ("frame", "particle", "x", "y", "mass", "size", "ep"):
        np.testing.assert_allclose(a[c].to_numpy(float), b[c].to_numpy(float))
    assert meta["units"]["um_per_px"] == pytest.approx(0.1) and meta["stage"] == "napari layer"
    # a Points layer (moved points are saved where they were moved to)
    pts = viewer.layers["v1.tif tracks (points)"]
    moved = pts.data.copy()
    moved[0, -1] += 5.0
    pts.data = moved
    viewer.layers.selection = {pts}
    out2 = tmp_path / "points.parquet"
    viewer.layers.save(str(out2), selected=True, plugin=PLUGIN)
    df2, _ = read_table(out2)
    assert len(df2) == len(tracks) and {"mass", "particle"} <= set(df2.columns)
    assert df2["x"].iloc[0] == pytest.approx(moved[0, -1])
    # the saved table reads back in as tracks
    layers = viewer.open(str(out), plugin=PLUGIN)
    assert len(layers[0].data) == len(tracks)


def test_colloidcg_as_the_preferred_reader(make_napari_viewer, tmp_path, frames8):
    """`napari video.tif` asks which reader while two claim .tif; with colloidcg preferred
    (python -m napari_colloidcg.prefer) it opens lazily without asking."""
    import dask.array as da
    from napari.settings import get_settings

    from napari_colloidcg.prefer import prefer_colloidcg

    viewer = make_napari_viewer()
    path = _tiff(tmp_path / "v.tif", frames8)
    settings = get_settings()
    before = dict(settings.plugins.extension2reader)
    try:
        settings.plugins.extension2reader = {}
        with pytest.raises(Exception, match="Multiple plugins"):     # what makes napari ask
            viewer.open(str(path), plugin=None)
        mapping = prefer_colloidcg(settings)
        assert mapping["*.tif"] == mapping["*.cine"] == PLUGIN
        (layer,) = viewer.open(str(path), plugin=None)
        assert isinstance(layer.data, da.Array) and "colloidcg" in layer.metadata
        mapping = prefer_colloidcg(settings, undo=True)
        assert "*.tif" not in mapping
    finally:
        settings.plugins.extension2reader = before


def test_track_widget_finds_foam_cells(make_napari_viewer, qtbot, tmp_path):
    """Auto on a synthetic foam picks cells; the preview then shows one point per cell,
    and Track all links them (colloidcg.tracking.cells)."""
    from colloidcg.synthetic.foam import FoamConfig, make_foam_video
    from colloidcg.tracking.accuracy import score_tracks

    frames, truth = make_foam_video(FoamConfig(n_frames=4, seed=4, shape=(160, 160)))
    viewer = make_napari_viewer()
    viewer.add_image(frames, name="foam")
    w = _dock(viewer, "Track")
    w.auto()
    _wait_idle(qtbot, w)
    assert w.objects.value == "cells" and w.contrast.value == "bright"
    qtbot.waitUntil(lambda: w.preview_layer is not None and not w.busy, timeout=WAIT_MS)
    t0 = truth[truth.frame == 0]
    assert abs(len(w.preview_layer.data) - len(t0)) <= 0.05 * len(t0) + 2
    w.track_all()
    _wait_idle(qtbot, w)
    s = score_tracks(w.result.tracks, truth, frames.shape[1:], 24.0, 7.0)
    assert s.recall >= 0.98 and s.precision >= 0.98 and s.rms_error < 0.25, s
