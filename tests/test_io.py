"""Every reader, on files the tests write and on the real files in ../shared/data."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import tifffile

from colloidcg.errors import ColloidcgError, VideoError
from colloidcg.io import open_video, read_config
from streampix import write_streampix


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
    t = v.meta.timestamps
    assert len(t) == 15 and t[0] == 0
    # This file's stamps are 1/9000 s apart although its header says 90 000 fps (it was
    # saved with a frame skip): the stamps are the time base, as for movies, and the
    # header's claim is reported beside them.
    assert np.all(np.diff(t) > 0)
    np.testing.assert_allclose(np.diff(t), np.diff(t).mean(), rtol=1e-3)
    assert v.meta.fps == pytest.approx(1.0 / np.median(np.diff(t))) and v.meta.sources["fps"] == "file"
    assert v.meta.fps == pytest.approx(9000, rel=1e-3)
    assert v.meta.header["fps"] == pytest.approx(90000)
    assert any("claims 90000 fps" in n for n in v.meta.notes), v.meta.notes


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


# ---------------------------------------------------------------- honest movie readers
def _level_frames(n: int, shape=(32, 48)) -> np.ndarray:
    """Frames whose central block has grey level 20 + k * (230 // n): it names the frame."""
    f = np.full((n, *shape), 128, np.uint8)
    for k in range(n):
        f[k, 8:24, 8:40] = 20 + k * (230 // n)
        f[k, :4, : 4 + k % 40] = 255           # and something that moves
    return f


def _frame_number(img: np.ndarray, n: int) -> int:
    return int(round((float(img[12:20, 16:32].mean()) - 20) / (230 // n)))


def _encode(path, frames, codec, pts, time_base, rate, options=None, pix_fmt=None):
    """Encode greyscale frames with the given presentation timestamps (PyAV)."""
    from fractions import Fraction

    import av

    tb = Fraction(time_base)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate, options=options or {})
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = pix_fmt or {"mjpeg": "yuvj420p", "ffv1": "gray"}.get(codec, "yuv420p")
        s.time_base = tb
        s.codec_context.time_base = tb
        for img, t in zip(frames, pts):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="gray")
            vf.pts, vf.time_base = int(t), tb
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.fixture(scope="module")
def lying_avi(tmp_path_factory):
    """The issue's case: an MJPEG AVI whose header claims 3001 frames at 100 fps and that
    holds 121 frames 0.25 s apart (the muxer writes empty chunks for the gaps)."""
    path = tmp_path_factory.mktemp("avi") / "lying.avi"
    return _encode(path, _level_frames(121), "mjpeg", np.arange(121) * 25, "1/100", 100)


def _decode_all(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(c.streams.video[0])]


def test_avi_whose_header_claims_more_frames_is_read_by_timestamps(lying_avi):
    import av

    with av.open(str(lying_avi)) as c:                      # what the header claims
        s = c.streams.video[0]
        assert (s.frames, float(s.average_rate)) == (3001, 100.0)
    v = open_video(lying_avi)
    assert len(v) == 121
    np.testing.assert_allclose(v.meta.timestamps, np.arange(121) * 0.25)
    np.testing.assert_allclose(v.times, np.arange(121) * 0.25)
    assert v.meta.fps == pytest.approx(4.0) and v.meta.sources["fps"] == "file"
    assert v.meta.header == {"n_frames": 3001, "fps": 100.0}
    assert any("3001 frames" in n for n in v.meta.notes)
    assert any("100 fps" in n for n in v.meta.notes)
    side = v.meta.as_dict()                     # what output sidecars record
    assert side["n_frames"] == 121 and side["fps"] == 4.0 and side["header"]["n_frames"] == 3001
    # in order: every frame, each one itself
    seq = [v[i] for i in range(len(v))]
    assert [_frame_number(f, 121) for f in seq] == list(range(121))
    truth = _decode_all(lying_avi)
    assert len(truth) == 121 and all(np.array_equal(a, b) for a, b in zip(seq, truth))
    with pytest.raises(IndexError, match=r"lying.avi: frame 121 is outside 0..120"):
        v[121]


def test_movie_random_access_is_repeatable_whatever_was_read_before(lying_avi):
    v = open_video(lying_avi)
    ref = open_video(lying_avi)[50]
    for before in (120, 49, 51, 0, 50, 119):
        v[before]
        np.testing.assert_array_equal(v[50], ref)
    rng = np.random.default_rng(3)
    seq = [open_video(lying_avi)[i] for i in range(121)]   # a fresh reader each time
    for i in rng.permutation(121):
        np.testing.assert_array_equal(v[i], seq[i])


def test_frame_range_beyond_the_real_count_names_file_parameter_and_count(lying_avi):
    from colloidcg.errors import ParameterError
    from colloidcg.tracking import track

    with pytest.raises(ParameterError, match=r"frames.*lying.avi.*0\.\.120.*121"):
        track(open_video(lying_avi), frames=(2990, 3001), progress=False, diameter=9)


def test_info_reports_decoded_frames_and_the_header_claim(lying_avi, capsys):
    from colloidcg.cli import main

    assert main(["info", str(lying_avi)]) == 0
    out = capsys.readouterr().out
    assert "frames      121 (decoded; the container header claims 3001)" in out
    assert "fps         4 " in out and "median step of the frame timestamps" in out
    assert "the container header claims 100 fps" in out
    assert "121 in file, 0 .. 30 s" in out and "(regular)" in out


@pytest.mark.parametrize("ext,codec", [("mkv", "ffv1"), ("mp4", "libx264"), ("mkv", "libx264")])
def test_variable_frame_rate_movie(tmp_path, ext, codec):
    steps = np.where(np.arange(39) % 3 == 2, 100, 40)              # ms: 40, 40, 100, ...
    pts = np.r_[0, np.cumsum(steps)]
    frames = _level_frames(40)
    opts = {"bf": "2", "g": "12", "qp": "0"} if codec == "libx264" else None
    path = _encode(tmp_path / f"vfr.{ext}", frames, codec, pts, "1/1000", 25, opts)
    v = open_video(path)
    assert len(v) == 40
    np.testing.assert_allclose(v.meta.timestamps, pts / 1000, atol=1e-9)
    assert v.meta.fps == pytest.approx(25.0)                      # median step 40 ms
    seq = [v[i] for i in range(40)]
    assert [_frame_number(f, 40) for f in seq] == list(range(40))
    if codec == "ffv1":
        for a, b in zip(seq, frames):
            np.testing.assert_array_equal(a, b)
    for i in np.random.default_rng(0).permutation(40):
        np.testing.assert_array_equal(v[i], seq[i])


@pytest.mark.parametrize("ext,bf,method", [
    ("mp4", 3, "packets"), ("mkv", 3, "packets"), ("avi", 3, "decoded order"),
    ("mp4", 0, "container index"), ("avi", 0, "packets")])
def test_h264_random_access_is_exact(tmp_path, ext, bf, method):
    """H.264 with B-frames: frames are decoded out of order, and AVI keeps no presentation
    times for them (frames are then numbered in output order). Without B-frames, AVI
    still shifts H.264's presentation times one step past its index's decoding times:
    the index is checked against the decoder and the packets' own times are used."""
    frames = _level_frames(60)
    path = _encode(tmp_path / f"b.{ext}", frames, "libx264", np.arange(60), "1/25", 25,
                   {"bf": str(bf), "g": "16", "qp": "10"})
    truth = _decode_all(path)
    v = open_video(path)
    assert v._backend.index.method == method
    assert len(v) == len(truth) == 60 and v.meta.fps == pytest.approx(25)
    np.testing.assert_allclose(v.times, np.arange(60) / 25)
    for i in np.random.default_rng(1).permutation(60):
        np.testing.assert_array_equal(v[i], truth[i])
    assert [_frame_number(v[i], 60) for i in range(60)] == list(range(60))


def test_movie_pickles_with_its_index(lying_avi):
    v = open_video(lying_avi)
    w = pickle.loads(pickle.dumps(v))
    assert len(w) == 121 and w.meta.header == v.meta.header
    np.testing.assert_array_equal(w._backend.index.pts, v._backend.index.pts)
    np.testing.assert_array_equal(w[77], v[77])


def test_real_mp4_timestamps_and_random_access(shared_data):
    path = shared_data / "mixed_contrast" / "colloids.mp4"
    v = open_video(path)
    assert (len(v), v.frame_shape) == (51, (302, 324))
    assert v.meta.fps == pytest.approx(50) and not v.meta.notes
    np.testing.assert_allclose(v.times, np.arange(51) / 50)
    truth = _decode_all(path)
    for i in np.random.default_rng(2).permutation(51):
        np.testing.assert_array_equal(v[i], truth[i])


def test_real_foam_tiff_folder(shared_data):
    v = open_video(shared_data / "foam")
    assert len(v) == 9 and v.meta.format == "image folder"
    assert v[8].shape == v.frame_shape


# ---------------------------------------------------------------- TIFF axis labels
def test_imagej_stack_labelled_channels_is_read_as_time(tmp_path):
    data = np.arange(12 * 20 * 30, dtype=np.uint16).reshape(12, 20, 30)
    path = tmp_path / "c12.tif"
    tifffile.imwrite(path, data, imagej=True)           # what a user writes without axes
    with tifffile.TiffFile(path) as t:                   # tifffile labels the axis "C"
        assert t.series[0].axes == "CYX" and t.imagej_metadata["channels"] == 12
    v = open_video(path)
    assert len(v) == 12 and v.frame_shape == (20, 30)
    for i in (0, 11, 5):
        np.testing.assert_array_equal(v[i], data[i])
    assert any("axis C" in n and "time" in n for n in v.meta.notes)


def test_channel_axis_with_channel_metadata_stays_channels(tmp_path):
    data = np.arange(6 * 20 * 30, dtype=np.uint16).reshape(6, 20, 30)
    path = tmp_path / "composite.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"mode": "composite"})
    v = open_video(path)
    assert len(v) == 1
    np.testing.assert_array_equal(v[0], data[0])
    assert len(open_video(path, tiff_axis="T")) == 6


def test_ambiguous_channel_axis_is_refused_with_a_way_to_choose(tmp_path, capsys):
    from colloidcg.cli import main

    data = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    path = tmp_path / "c3.tif"
    tifffile.imwrite(path, data, imagej=True)
    with pytest.raises(VideoError, match=r"c3.tif: .*only non-spatial axis is C .*3 entries.*"
                                         r"--tiff-axis") as err:
        open_video(path)
    assert "\n" not in str(err.value)
    v = open_video(path, tiff_axis="T")
    assert len(v) == 3
    np.testing.assert_array_equal(v[2], data[2])
    z = open_video(path, tiff_axis="Z")
    assert len(z) == 1 and z.frame_shape == (3, 20, 30)
    np.testing.assert_array_equal(z[0], data)
    c = open_video(path, tiff_axis="C")
    assert len(c) == 1 and c.frame_shape == (20, 30)
    with pytest.raises(ColloidcgError, match="tiff_axis"):
        open_video(path, tiff_axis="X")
    # the command line: an error of one line, then the flag
    assert main(["info", str(path)]) != 0
    assert "--tiff-axis" in capsys.readouterr().err
    assert main(["info", str(path), "--tiff-axis", "T"]) == 0
    out = capsys.readouterr().out
    assert "frames      3" in out and "tiff_axis" in out and "flag" in out
    # colloidcg.toml beside the video
    (tmp_path / "colloidcg.toml").write_text('[calibration]\ntiff_axis = "T"\n')
    v = open_video(path)
    assert len(v) == 3 and v.meta.sources["tiff_axis"].startswith("colloidcg.toml")
    (tmp_path / "colloidcg.toml").write_text('[calibration]\ntiff_axis = "time"\n')
    with pytest.raises(ColloidcgError, match=r"colloidcg.toml.*calibration.tiff_axis"):
        open_video(path)


def test_z_only_stack_is_time_unless_told_otherwise(tmp_path):
    data = np.arange(5 * 8 * 9, dtype=np.uint8).reshape(5, 8, 9)
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})
    assert len(open_video(path)) == 5
    z = open_video(path, tiff_axis="Z")
    assert len(z) == 1 and z.frame_shape == (5, 8, 9)


def test_channel_labelled_stack_is_tracked_and_batched_as_a_video(tmp_path):
    """The tracking and batch paths see the 12 frames too (batch discovery counts them)."""
    from colloidcg.batch.discover import find_videos
    from colloidcg.synthetic import make_video
    from colloidcg.tracking import track

    syn = make_video(n_frames=12, width=96, height=96, diameter=10.0, area_fraction=0.3, seed=1)
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, syn.frames, imagej=True)
    tifffile.imwrite(tmp_path / "single.tif", syn.frames[0])
    assert find_videos(tmp_path) == [path]
    res = track(open_video(path), progress=False, processes=1, min_length=1)
    assert res.tracks["frame"].nunique() == 12


# ---------------------------------------------------------------- Photron .cih / .mraw
@pytest.mark.parametrize("bits", [8, 16])
def test_photron_mraw_written_by_pymraw(tmp_path, bits):
    """A Photron recording written by pyMRAW (header .cih, frames in the .mraw beside it):
    every frame read exactly, lazily, frame rate from the header; pickles by path."""
    pyMRAW = pytest.importorskip("pyMRAW")
    top = 255 if bits == 8 else 4095
    data = np.random.default_rng(bits).integers(0, top, (7, 24, 40)).astype(np.uint8 if bits == 8 else np.uint16)
    _, cih = pyMRAW.save_mraw(data, str(tmp_path / "run.cih"), bit_depth=bits,
                              info_dict={"Record Rate(fps)": 20000})
    v = open_video(cih)
    assert v.meta.format == "mraw" and len(v) == 7 and v.meta.frame_shape == (24, 40)
    assert v.meta.dtype == data.dtype and v.meta.fps == 20000 and v.meta.sources["fps"] == "file"
    for i in (6, 0, 3):
        np.testing.assert_array_equal(v[i], data[i])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(v))[5], data[5])


def _pack12(frames: np.ndarray) -> bytes:
    """12-bit packing as Photron writes it: two pixels in three bytes, high bits first."""
    flat = frames.astype(np.uint16).ravel()
    a, b = flat[0::2], flat[1::2]
    out = np.empty((len(a), 3), np.uint8)
    out[:, 0] = a >> 4
    out[:, 1] = ((a & 0xF) << 4) | (b >> 8)
    out[:, 2] = b & 0xFF
    return out.tobytes()


def test_photron_mraw_12_bit_packed_frames_are_unpacked_one_at_a_time(tmp_path):
    pyMRAW = pytest.importorskip("pyMRAW")
    data = np.random.default_rng(3).integers(0, 4096, (5, 16, 24)).astype(np.uint16)
    _, cih = pyMRAW.save_mraw(data, str(tmp_path / "r12.cih"), bit_depth=16)
    text = (tmp_path / "r12.cih").read_text().replace("Color Bit : 16", "Color Bit : 12")
    (tmp_path / "r12.cih").write_text(text)
    (tmp_path / "r12.mraw").write_bytes(_pack12(data))
    v = open_video(tmp_path / "r12.cih")
    assert v.meta.dtype == np.uint16 and len(v) == 5
    for i in (4, 1):
        np.testing.assert_array_equal(v[i], data[i])


def test_photron_mraw_bad_files_are_named(tmp_path):
    pyMRAW = pytest.importorskip("pyMRAW")
    data = np.zeros((4, 8, 8), np.uint16)
    _, cih = pyMRAW.save_mraw(data, str(tmp_path / "a.cih"), bit_depth=16)
    mraw = tmp_path / "a.mraw"
    mraw.write_bytes(mraw.read_bytes()[:300])
    with pytest.raises(VideoError, match=r"a\.mraw: 300 bytes, expected 512 .*truncated"):
        open_video(cih)
    mraw.unlink()
    with pytest.raises(VideoError, match=r"a\.cih: its frames file a\.mraw is missing"):
        open_video(cih)
    pyMRAW.save_mraw(data, str(tmp_path / "c.cih"), bit_depth=16)
    colour = (tmp_path / "c.cih").read_text().replace("Color Type : Mono", "Color Type : Color")
    (tmp_path / "c.cih").write_text(colour)
    with pytest.raises(VideoError, match="only monochrome"):
        open_video(tmp_path / "c.cih")
    (tmp_path / "d.cih").write_text("not a header at all\n")
    with pytest.raises(VideoError, match=r"d\.cih: not a readable Photron"):
        open_video(tmp_path / "d.cih")


# ---------------------------------------------------------------- NorPix StreamPix .seq

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_norpix_seq_frames_and_timestamps(tmp_path, dtype):
    """A StreamPix sequence: every frame read back exactly, the per-frame timestamps as
    the time base (fps = their median step), the header's suggested rate kept beside them."""
    rng = np.random.default_rng(3)
    hi = 255 if dtype == np.uint8 else 4095          # 12-bit camera data in 16-bit words
    data = rng.integers(0, hi + 1, (6, 20, 36)).astype(dtype)
    path = write_streampix(tmp_path / "run.seq", data, fps=2000.0, step=1 / 1000.0)
    fast = open_video(write_streampix(tmp_path / "fast.seq", data, fps=1e5))   # 10 us apart
    np.testing.assert_allclose(np.diff(fast.meta.timestamps), 1e-5, rtol=1e-9)
    # the older layout (StreamPix 5 and before): 1024-byte header, millisecond stamps
    old = open_video(write_streampix(tmp_path / "old.seq", data, fps=100.0, version=4))
    np.testing.assert_array_equal(old[4], data[4])
    np.testing.assert_allclose(old.meta.timestamps, np.arange(6) / 100.0, rtol=1e-12)
    v = open_video(path)
    assert v.meta.format == "seq" and len(v) == 6 and v.frame_shape == (20, 36) and v.dtype == dtype
    for i in (3, 0, 5):
        np.testing.assert_array_equal(v[i], data[i])
    again = pickle.loads(pickle.dumps(v))               # batch workers reopen it by path
    np.testing.assert_array_equal(again[2], data[2])
    np.testing.assert_array_equal(np.asarray(v.to_dask()[4]), data[4])
    np.testing.assert_allclose(v.meta.timestamps, np.arange(6) / 1000.0, rtol=1e-12)
    assert v.meta.fps == pytest.approx(1000.0, rel=1e-3) and v.meta.sources["fps"] == "file"
    assert v.meta.header["fps"] == pytest.approx(2000.0)
    assert any("claims 2000 fps" in n for n in v.meta.notes), v.meta.notes
    # the same rate in header and stamps: no note
    same = open_video(write_streampix(tmp_path / "same.seq", data, fps=500.0))
    assert same.meta.fps == pytest.approx(500.0, rel=1e-3) and not same.meta.notes


def test_norpix_seq_bad_files_are_named(tmp_path):
    data = np.zeros((3, 8, 8), np.uint8)
    colour = write_streampix(tmp_path / "colour.seq", data, fps=100.0, fmt=200)
    with pytest.raises(VideoError, match=r"colour\.seq: not a readable NorPix \.seq file: expected an "
                                         r"uncompressed monochrome"):
        open_video(colour)
    packed = write_streampix(tmp_path / "jpeg.seq", data, fps=100.0, compression=1)
    with pytest.raises(VideoError, match=r"jpeg\.seq: .*uncompressed"):
        open_video(packed)
    (tmp_path / "junk.seq").write_bytes(b"\0" * 9000)
    with pytest.raises(VideoError, match=r"junk\.seq: not a readable NorPix"):
        open_video(tmp_path / "junk.seq")
    whole = write_streampix(tmp_path / "cut.seq", data, fps=100.0)
    whole.write_bytes(whole.read_bytes()[:-100])      # the last frame's block cut short
    v = open_video(whole)
    assert len(v) == 2 and any("truncated" in n for n in v.meta.notes), v.meta.notes
    empty = tmp_path / "empty.seq"
    empty.write_bytes(whole.read_bytes()[:8192])
    with pytest.raises(VideoError, match=r"empty\.seq: .*no complete frame"):
        open_video(empty)


def test_norpix_seq_tracked_from_the_command_line_and_found_by_batch(tmp_path):
    """A synthetic 16-bit video saved as a StreamPix sequence: `colloidcg track` reads it at
    the timestamps' rate and finds the particles where the truth has them; batch discovery
    takes the file as a video."""
    from colloidcg.batch.discover import find_videos
    from colloidcg.cli import main
    from colloidcg.synthetic import SynthConfig, make_video
    from colloidcg.tracking.accuracy import score_tracks

    frames, truth, _ = make_video(SynthConfig.preset("dilute", seed=2, n_frames=6, width=128, height=128))
    frames = np.clip(frames, 0, 65535).astype(np.uint16)
    (tmp_path / "cam").mkdir()
    path = write_streampix(tmp_path / "cam" / "run.seq", frames, fps=250.0)
    assert main(["track", str(path), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    tracks = pd.read_parquet(tmp_path / "out" / "tracks.parquet")
    side = json.loads((tmp_path / "out" / "tracks.json").read_text())
    assert side["units"]["fps"] == pytest.approx(250.0, rel=1e-3)
    s = score_tracks(tracks, truth, frames.shape[1:], margin=8, match_radius=3)
    assert s.recall >= 0.98 and s.precision >= 0.98 and s.rms_error <= 0.2, s
    assert [p.name for p in find_videos(tmp_path / "cam")] == ["run.seq"]
