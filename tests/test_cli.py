"""The command-line contract: outputs, provenance, refusals and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from colloidcg.cli import build_parser, main


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    from colloidcg.synthetic import SynthConfig, write_synthetic

    d = tmp_path_factory.mktemp("synth")
    write_synthetic(d, SynthConfig.preset("accuracy", n_frames=6, width=160, height=160, seed=2))
    return d


def test_every_subcommand_has_help(capsys):
    sub = [a for a in build_parser()._actions if a.dest == "command"][0]
    assert {"info", "synth", "track", "demo"} <= set(sub.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: colloidcg " + name in capsys.readouterr().out


def test_track_contract(small_video, tmp_path):
    out = tmp_path / "out"
    assert main(["track", str(small_video / "video.tif"), "-o", str(out), "--quiet"]) == 0
    t = pd.read_parquet(out / "tracks.parquet")
    assert {"frame", "particle", "x", "y", "mass", "size", "ecc", "signal"} <= set(t.columns)
    side = json.loads((out / "tracks.json").read_text())
    assert side["stage"] == "track" and side["colloidcg_version"]
    assert side["inputs"]["video"].endswith("video.tif")
    assert side["units"]["x"] == "px" and side["units"]["fps"] == pytest.approx(100.0)
    assert side["parameters"]["diameter"] % 2 == 1
    assert side["parameters"]["sources"]["diameter"] == "estimated"
    # Truth agreement through the CLI too.
    truth = pd.read_parquet(small_video / "truth.parquet")
    from colloidcg.tracking.accuracy import score_tracks

    s = score_tracks(t, truth, (160, 160), margin=16, match_radius=4)
    assert s.recall >= 0.98 and s.precision >= 0.98


def test_track_given_parameters_are_recorded(small_video, tmp_path):
    out = tmp_path / "o"
    assert main(["track", str(small_video / "video.tif"), "-o", str(out), "--quiet", "--diameter", "13",
                 "--search-range", "4", "--no-invert", "--frames", "1", "5", "--fps", "50"]) == 0
    side = json.loads((out / "tracks.json").read_text())
    assert side["parameters"]["diameter"] == 13 and side["parameters"]["sources"]["diameter"] == "given"
    assert side["parameters"]["search_range"] == 4
    assert side["units"]["fps"] == 50
    assert sorted(pd.read_parquet(out / "tracks.parquet").frame.unique()) == [1, 2, 3, 4]


def test_refuses_to_overwrite(small_video, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "tracks.parquet").write_bytes(b"precious")
    code = main(["track", str(small_video / "video.tif"), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert (out / "tracks.parquet").read_bytes() == b"precious"
    assert main(["track", str(small_video / "video.tif"), "-o", str(out), "--quiet", "--overwrite"]) == 0
    assert len(pd.read_parquet(out / "tracks.parquet")) > 0
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def _one_line_error(capsys, args, *expect):
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for e in expect:
        assert e in err
    return err


def test_bad_inputs_give_one_line_errors(small_video, tmp_path, capsys):
    v = str(small_video / "video.tif")
    o = str(tmp_path / "x")
    _one_line_error(capsys, ["track", str(tmp_path / "missing.avi"), "-o", o], "missing.avi", "no such file")
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 50)
    _one_line_error(capsys, ["track", str(bad), "-o", o], "corrupt.tif")
    trunc = tmp_path / "trunc.tif"
    tifffile.imwrite(trunc, np.zeros((20, 64, 64), np.uint16))
    trunc.write_bytes(trunc.read_bytes()[:30000])
    _one_line_error(capsys, ["track", str(trunc), "-o", o], "trunc.tif")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(capsys, ["track", str(empty), "-o", o], "empty", "no image frames")
    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, np.full((6, 64, 64), 100, np.uint16))
    _one_line_error(capsys, ["track", str(blank), "-o", o], "blank.tif: frame 0 is blank")
    _one_line_error(capsys, ["track", v, "-o", o, "--diameter", "12"], "diameter", "odd")
    _one_line_error(capsys, ["track", v, "-o", o, "--diameter", "-5"], "diameter", "positive odd")
    _one_line_error(capsys, ["track", v, "-o", o, "--frames", "3", "40"], "frames", "outside", "video.tif")
    assert not (tmp_path / "x").exists()


def test_info_prints_calibration_and_sources(small_video, capsys):
    assert main(["info", str(small_video / "video.tif")]) == 0
    out = capsys.readouterr().out
    assert "frames      6" in out and "fps         100" in out and "from file" in out
    assert main(["info", str(small_video / "video.tif"), "--fps", "7"]) == 0
    assert "from flag" in capsys.readouterr().out


def test_info_prints_provenance(small_video, tmp_path, capsys):
    out = tmp_path / "o"
    main(["track", str(small_video / "video.tif"), "-o", str(out), "--quiet"])
    capsys.readouterr()
    assert main(["info", str(out / "tracks.parquet")]) == 0
    text = capsys.readouterr().out
    assert "stage      track" in text and "diameter" in text and "video.tif" in text
