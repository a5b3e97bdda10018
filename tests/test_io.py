"""Every reader, on files the tests write and on the real files in ../shared/data."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile

from colloidcg.errors import ColloidcgError, VideoError
from colloidcg.io import open_video, read_config


@pytest.fixture
def frames8():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 255, (6, 40, 52), dtype=np.uint8)
    f[:, 0, 0] = np.arange(6) * 40        # a per-frame marker
    return f


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_stack_frames_and_calibration_from_file(tmp_path, dtype):
    rng = np.random.default_rng(1)
    data = rng.integers(0, np.iinfo(dtype).max, (5, 30, 40)).astype(dtype)
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "TYX", "finterval": 0.02, "unit": "micron"})
    v = open_video(path)
    assert len(v) == 5 and v.frame_shape == (30, 40) and v.dtype == dtype
    assert v.meta.fps == pytest.approx(50.0)
    assert v.meta.um_per_px == pytest.approx(0.25)
    assert v.meta.sources["fps"] == "file" and v.meta.sources["um_per_px"] == "file"
    for i in (0, 3, 4, 2):
        np.testing.assert_array_equal(v[i], data[i])
    np.testing.assert_array_equal(v[-1], data[-1])
    with pytest.raises(IndexError):
        v[5]


def test_tiff_hyperstack_gives_3d_frames(tmp_path):
    data = np.arange(3 * 4 * 10 * 12, dtype=np.uint16).reshape(3, 4, 10, 12)
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZYX", "spacing": 0.5, "unit": "um"},
                     resolution=(10, 10))
    v = open_video(path)
    assert len(v) == 3 and v.frame_shape == (4, 10, 12) and v.meta.ndim == 3
    np.testing.assert_array_equal(v[2], data[2])
    assert v.meta.um_per_slice == pytest.approx(0.5)
    assert v.to_dask().shape == (3, 4, 10, 12)


def test_rgb_tiff_becomes_grey(tmp_path):
    rgb = np.zeros((2, 8, 9, 3), np.uint8)
    rgb[..., 1] = 100
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    v = open_video(path)
    assert v.frame_shape == (8, 9)
    assert np.all(v[1] == round(0.587 * 100))


def test_planar_rgb_tiff_becomes_grey(tmp_path):
    """RGB stored as separate planes (axes (T,) S, Y, X), as tifffile writes a (3, Y, X) array."""
    planes = np.zeros((2, 3, 8, 9), np.uint8)
    planes[:, 0] = 50
    planes[1, 2] = 200
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, planes, photometric="rgb", planarconfig="separate")
    v = open_video(path)
    assert len(v) == 2 and v.frame_shape == (8, 9)
    assert np.all(v[0] == round(0.299 * 50))
    assert np.all(v[1] == round(0.299 * 50 + 0.114 * 200))


def test_folder_of_pngs_in_natural_order(tmp_path, frames8):
    import imageio.v3 as iio

    folder = tmp_path / "seq"
    folder.mkdir()
    for i, f in enumerate(frames8):
        iio.imwrite(folder / f"img_{i + 1}.png", f)   # img_1 .. img_6; img_10 would sort after 9
    v = open_video(folder)
    assert len(v) == 6
    for i in range(6):
        np.testing.assert_array_equal(v[i], frames8[i])


def test_folder_natural_sort_beats_lexicographic(tmp_path):
    import imageio.v3 as iio

    folder = tmp_path / "seq"
    folder.mkdir()
    for i in (1, 2, 10):
        iio.imwrite(folder / f"f{i}.png", np.full((4, 4), i, np.uint8))
    assert [open_video(folder)[k][0, 0] for k in range(3)] == [1, 2, 10]


@pytest.mark.parametrize("ext,codec,lossless", [("avi", "ffv1", True), ("mp4", "libx264", False),
                                                ("mov", "png", True)])
def test_movies_random_access(tmp_path, frames8, ext, codec, lossless, write_movie):
    smooth = np.repeat(np.repeat(frames8[:, ::4, ::4], 4, 1), 4, 2)[:, :40, :52]
    smooth = np.ascontiguousarray(np.clip(smooth.astype(int) // 2 + np.arange(6)[:, None, None] * 20, 0, 255).astype(np.uint8))
    path = write_movie(tmp_path / f"m.{ext}", smooth, codec, fps=30)
    v = open_video(path)
    assert len(v) == 6 and v.frame_shape == (40, 52) and v.meta.fps == pytest.approx(30)
    seq = [v[i] for i in range(6)]
    for i in (4, 1, 5, 0):                          # jumps backwards and forwards
        np.testing.assert_array_equal(v[i], seq[i])
    for i in range(6):
        err = np.abs(seq[i].astype(int) - smooth[i]).mean()
        assert err == 0 if lossless else err < 12


def test_cine_frame_rate_and_timestamps(shared_data):
    v = open_video(shared_data / "cine_781.cine")
    assert len(v) == 15 and v.frame_shape == (256, 256) and v.dtype == np.uint16
    assert v.meta.fps == pytest.approx(90000) and v.meta.sources["fps"] == "file"
    t = v.meta.timestamps
    assert len(t) == 15 and t[0] == 0
    # This file's stamps are 1/9000 s apart although its header says 90 000 fps (it was
    # saved with a frame skip); both are reported as recorded, and the spacing is regular.
    assert np.all(np.diff(t) > 0)
    np.testing.assert_allclose(np.diff(t), np.diff(t).mean(), rtol=1e-3)


def test_real_tiff_and_frame_folder(shared_data):
    v = open_video(shared_data / "stuck.tif")
    assert (len(v), v.frame_shape, v.dtype) == (5, (512, 512), np.uint16)
    b = open_video(shared_data / "brightfield")
    assert (len(b), b.frame_shape, b.dtype) == (50, (500, 500), np.uint8)
    assert b.meta.format == "image folder"


def test_calibration_from_toml_and_flags(tmp_path, frames8):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, frames8)
    (tmp_path / "colloidcg.toml").write_text("[calibration]\nfps = 200\num_per_px = 0.5\n")
    v = open_video(path)
    assert (v.meta.fps, v.meta.um_per_px) == (200, 0.5)
    assert v.meta.sources["fps"].startswith("colloidcg.toml")
    v2 = open_video(path, fps=10)
    assert v2.meta.fps == 10 and v2.meta.sources["fps"] == "flag"
    assert v2.meta.um_per_px == 0.5


def test_malformed_toml_names_file_and_key(tmp_path):
    cfg = tmp_path / "colloidcg.toml"
    cfg.write_text("[calibration]\nframe_rate = 3\n")
    with pytest.raises(ColloidcgError, match=r"colloidcg.toml.*calibration.frame_rate"):
        read_config(cfg)
    cfg.write_text("[calibration\nfps = 3\n")
    with pytest.raises(ColloidcgError, match="colloidcg.toml: malformed TOML"):
        read_config(cfg)
    cfg.write_text("[calibration]\nfps = -3\n")
    with pytest.raises(ColloidcgError, match="calibration.fps"):
        read_config(cfg)


def test_pickles_by_path(tmp_path, frames8):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, frames8)
    v = pickle.loads(pickle.dumps(open_video(path)))
    np.testing.assert_array_equal(v[3], frames8[3])


# ---------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="nope.tif: no such file"):
        open_video(tmp_path / "nope.tif")


def test_unknown_format(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(VideoError, match=r"notes.txt: unsupported video format '.txt'"):
        open_video(p)


def test_corrupt_tiff_and_movie(tmp_path):
    for name in ("bad.tif", "bad.mp4", "bad.cine"):
        p = tmp_path / name
        p.write_bytes(b"\x00garbage" * 100)
        with pytest.raises(VideoError, match=name):
            open_video(p)


def test_truncated_tiff(tmp_path, frames8):
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, np.repeat(frames8, 4, axis=0))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="t.tif"):
        v = open_video(p)
        [v[i] for i in range(len(v))]


def test_truncated_imagej_tiff_is_refused_not_read_as_one_frame(tmp_path, frames8, caplog):
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, np.repeat(frames8, 4, axis=0), imagej=True, metadata={"axes": "TYX"})
    assert len(open_video(p)) == 4 * len(frames8)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match=r"ij.tif: truncated .*declares %d images" % (4 * len(frames8))):
        open_video(p)
    assert not [r for r in caplog.records if r.name == "tifffile"]   # one error, no log noise


def test_truncated_movie(tmp_path, frames8, write_movie):
    p = write_movie(tmp_path / "t.avi", np.repeat(frames8, 5, axis=0), "ffv1")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="t.avi"):
        v = open_video(p)
        [v[i] for i in range(len(v))]


def test_zero_frames(tmp_path):
    import av

    p = tmp_path / "empty.avi"
    with av.open(str(p), "w") as c:
        s = c.add_stream("ffv1", rate=10)
        s.width, s.height, s.pix_fmt = 16, 16, "gray"
    with pytest.raises(VideoError, match="empty.avi"):
        open_video(p)
    folder = tmp_path / "nothing"
    folder.mkdir()
    with pytest.raises(VideoError, match="folder holds no image frames"):
        open_video(folder)
