"""The table of video formats is the one place that says what is read: open_video, batch
discovery, ``colloidcg info``, the napari reader and its manifest all follow it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from colloidcg.batch.discover import discover, find_videos
from colloidcg.cli import main
from colloidcg.errors import ColloidcgError, VideoError
from colloidcg.io import BackendSpec, backend_spec, backends, open_video, register_backend, unregister_backend
from colloidcg.io import readers

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- two made-up formats
class NpyVideoBackend:
    """A whole video in one numpy .npy file, under the ending .fakevid."""

    kind = "npy video"

    def __init__(self, path: Path):
        try:
            self._a = np.load(path, mmap_mode="r")
        except Exception as exc:
            raise VideoError(f"{path}: not a .fakevid file ({exc.__class__.__name__})") from None
        self.path, self.n_frames, self.is_stack = path, len(self._a), False
        self.dtype = self._a.dtype
        self.native = {"fps": 25.0}

    def read(self, i: int) -> np.ndarray:
        return np.array(self._a[i])

    def close(self) -> None:
        pass


class NpyFolderBackend:
    """A folder of one-frame .npy files."""

    kind = "npy folder"

    def __init__(self, path: Path):
        self.files = sorted(p for p in path.iterdir() if p.suffix == ".npy")
        self.path, self.n_frames, self.is_stack, self.native = path, len(self.files), False, {}
        self.dtype = np.load(self.files[0]).dtype

    def read(self, i: int) -> np.ndarray:
        return np.load(self.files[i])

    def close(self) -> None:
        pass


@pytest.fixture
def fake_formats():
    specs = [BackendSpec("npy video", NpyVideoBackend, (".fakevid",), "file", "a test format"),
             BackendSpec("npy folder", NpyFolderBackend, (".npy",), "folder", "a test folder format")]
    for s in specs:
        register_backend(s)
    try:
        yield specs
    finally:
        for s in specs:
            unregister_backend(s.name)
    assert [s.name for s in backends()] == ["tiff", "movie", "image folder", "cine", "mraw", "seq"]


def _fakevid(path: Path, n: int = 4) -> np.ndarray:
    data = (np.arange(n * 6 * 7) % 251).astype(np.uint8).reshape(n, 6, 7)
    with open(path, "wb") as fh:
        np.save(fh, data)
    return data


# ---------------------------------------------------------------- the table as shipped
def test_builtin_table_and_derived_names():
    names = [s.name for s in backends()]
    assert names == ["tiff", "movie", "image folder", "cine", "mraw", "seq"]
    for s in backends():
        assert s.reader.kind == s.name          # what VideoMeta.format reports
        assert s.layout in ("file", "folder") and s.description
        assert all(e.startswith(".") and e == e.lower() for e in s.extensions)
    assert readers.TIFF_EXTS == backend_spec("tiff").extensions == (".tif", ".tiff")
    assert readers.MOVIE_EXTS == backend_spec("movie").extensions
    assert readers.CINE_EXTS == backend_spec("cine").extensions == (".cine",)
    assert readers.FRAME_EXTS == backend_spec("image folder").extensions
    assert readers.file_extensions() == (readers.TIFF_EXTS + readers.MOVIE_EXTS + readers.CINE_EXTS
                                         + backend_spec("mraw").extensions + backend_spec("seq").extensions)
    assert readers.backend_for(Path("x.MP4")) is readers.MovieBackend


def test_discovery_accepts_exactly_the_tables_endings(tmp_path):
    """One file of every ending the file formats claim (unreadable: still a video, the
    batch reports it) and one of endings nobody claims; a folder of two frames for every
    frame ending, and one of an unclaimed ending."""
    others = (".txt", ".gif", ".npy", ".json", ".tifx")
    for ext in readers.file_extensions() + others:
        (tmp_path / f"x{ext}").write_bytes(b"\x00not really" * 10)
    for ext in readers.frame_extensions() + (".gif",):
        d = tmp_path / f"frames{ext.replace('.', '_')}"
        d.mkdir()
        for k in range(2):
            if ext in readers.TIFF_EXTS:
                tifffile.imwrite(d / f"f{k}{ext}", np.zeros((5, 6), np.uint8))
            else:
                (d / f"f{k}{ext}").write_bytes(b"an image")
    found = find_videos(tmp_path)
    files = {p.suffix for p in found if p.is_file()}
    folders = {p.name for p in found if p.is_dir()}
    assert files == set(readers.file_extensions())
    assert folders == {f"frames{e.replace('.', '_')}" for e in readers.frame_extensions()}
    with pytest.raises(ColloidcgError, match="no videos found") as err:
        discover(tmp_path / "frames_gif")
    for ext in readers.file_extensions() + readers.frame_extensions():
        assert ext in str(err.value)


def test_unsupported_file_names_it_and_the_tables_endings(tmp_path):
    p = tmp_path / "notes.gif"
    p.write_bytes(b"GIF89a")
    with pytest.raises(VideoError) as err:
        open_video(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: unsupported video format '.gif'; expected a folder of frames or")
    assert all(e in msg for e in readers.file_extensions())


def test_register_refuses_bad_entries():
    spec = backend_spec("movie")
    with pytest.raises(ValueError, match="registered already"):
        register_backend(spec)
    with pytest.raises(ValueError, match=r"\.avi already read by movie"):
        register_backend(BackendSpec("other movie", NpyVideoBackend, (".avi",), "file", "x"))
    with pytest.raises(ValueError, match="layout"):
        register_backend(BackendSpec("odd", NpyVideoBackend, (".odd",), "stream", "x"))
    with pytest.raises(ValueError, match="lower-case"):
        register_backend(BackendSpec("odd", NpyVideoBackend, (".ODD",), "file", "x"))
    assert [s.name for s in backends()] == ["tiff", "movie", "image folder", "cine", "mraw", "seq"]


# ---------------------------------------------------------------- a registered format is picked up
def test_registered_format_is_opened_discovered_and_described(tmp_path, fake_formats, capsys):
    data = _fakevid(tmp_path / "run1.fakevid")
    frames = tmp_path / "npyframes"
    frames.mkdir()
    for k in range(3):
        np.save(frames / f"f{k}.npy", data[k])
    (tmp_path / "lone").mkdir()
    np.save(tmp_path / "lone" / "only.npy", data[0])

    v = open_video(tmp_path / "run1.fakevid")
    assert v.meta.format == "npy video" and len(v) == 4 and v.meta.fps == 25.0
    np.testing.assert_array_equal(v[2], data[2])
    f = open_video(frames)               # a folder: the folder format that claims its contents
    assert f.meta.format == "npy folder" and len(f) == 3
    np.testing.assert_array_equal(f[1], data[1])

    skipped: list = []
    assert find_videos(tmp_path, skipped=skipped) == [tmp_path / "npyframes", tmp_path / "run1.fakevid"]
    assert [p.name for p, _ in skipped] == ["only.npy"]

    assert main(["info", str(tmp_path / "run1.fakevid")]) == 0
    out = capsys.readouterr().out
    assert "format      npy video (a test format)" in out and "frames      4" in out
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert ".fakevid" in helptext and "npy video" in helptext and "a test folder format" in helptext

    (tmp_path / "nope.gif").write_bytes(b"GIF89a")
    with pytest.raises(VideoError, match=r"nope.gif: unsupported video format .*\.cine, .*\.fakevid"):
        open_video(tmp_path / "nope.gif")


class ListedFramesBackend(NpyFolderBackend):
    kind = "listed frames"


def test_folder_format_with_its_own_detection_goes_first_when_asked(tmp_path):
    spec = BackendSpec("listed frames", ListedFramesBackend, (".npy",), "folder", "frames named in frames.lst",
                       detect=lambda p: (p / "frames.lst").is_file())
    d = tmp_path / "listed"
    d.mkdir()
    (d / "frames.lst").write_text("f0.npy\n")
    np.save(d / "f0.npy", np.ones((4, 5), np.uint16))
    (d / "extra.png").write_bytes(b"a picture the image folder reader would claim")
    register_backend(spec, before="image folder")
    try:
        assert [s.name for s in backends()][:3] == ["tiff", "movie", "listed frames"]
        v = open_video(d)
        assert v.meta.format == "listed frames" and len(v) == 1 and v.dtype == np.uint16
        assert find_videos(tmp_path) == [d]          # one frame: a video all the same, as claimed
    finally:
        unregister_backend("listed frames")
    assert find_videos(tmp_path) == []               # one .png alone is no video
    assert readers.spec_for(d).name == "image folder"


def test_registered_format_in_the_napari_reader(tmp_path, fake_formats):
    pytest.importorskip("dask")
    _reader = pytest.importorskip("napari_colloidcg._reader")
    data = _fakevid(tmp_path / "v.fakevid", 3)
    read = _reader.napari_get_reader(str(tmp_path / "v.fakevid"))
    assert read is not None
    (layer,) = read()
    assert layer[2] == "image" and layer[0].shape == data.shape
    np.testing.assert_array_equal(np.asarray(layer[0][1]), data[1])
    assert _reader.napari_get_reader(str(tmp_path / "v.unknown")) is None


def test_napari_manifest_patterns_agree_with_the_table():
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((ROOT / "plugins" / "napari_colloidcg" / "napari.yaml").read_text())
    (reader,) = manifest["contributions"]["readers"]
    patterns = set(reader["filename_patterns"]) - {"*.parquet"}     # colloidcg's own tables
    assert patterns == {f"*{e}" for e in readers.file_extensions()}
    assert reader["accepts_directories"] is any(s.layout == "folder" for s in backends())
    _reader = pytest.importorskip("napari_colloidcg._reader")
    assert _reader.VIDEO_EXTS == readers.file_extensions()


def test_docs_list_every_format():
    text = (ROOT / "docs" / "reading-video.md").read_text()
    for spec in backends():
        for ext in spec.extensions:
            assert f"`{ext}`" in text, (spec.name, ext)
    assert "## Adding a format" in text
