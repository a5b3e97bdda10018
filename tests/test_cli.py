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
    # Gaussian spots: the two probes found nothing on the probed frames and stay off
    assert side["parameters"]["spot_profile"] is False and side["parameters"]["gap_check"] is False
    assert side["parameters"]["sources"]["gap_check"] == "estimated"
    # Truth agreement through the CLI too.
    truth = pd.read_parquet(small_video / "truth.parquet")
    from colloidcg.tracking.accuracy import score_tracks

    s = score_tracks(t, truth, (160, 160), margin=16, match_radius=4)
    assert s.recall >= 0.98 and s.precision >= 0.98


def test_track_given_parameters_are_recorded(small_video, tmp_path):
    out = tmp_path / "o"
    assert main(["track", str(small_video / "video.tif"), "-o", str(out), "--quiet", "--diameter", "13",
                 "--search-range", "4", "--no-invert", "--frames", "1", "5", "--fps", "50",
                 "--spot-profile", "on", "--gap-check", "off"]) == 0
    side = json.loads((out / "tracks.json").read_text())
    assert side["parameters"]["diameter"] == 13 and side["parameters"]["sources"]["diameter"] == "given"
    assert side["parameters"]["spot_profile"] is True and side["parameters"]["gap_check"] is False
    assert side["parameters"]["sources"]["spot_profile"] == "given"
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


# --- help text: every flag says what it is, its default and its unit (issue 17) ---

def _subparsers():
    import argparse

    sub = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)][0]
    return sub.choices


def _help_of(parser, action) -> str:
    return parser._get_formatter()._get_help_string(action) or ""


def test_every_flag_has_help_with_its_default():
    import argparse

    switches = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
                argparse._VersionAction)
    for name, sp in _subparsers().items():
        for a in sp._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                continue
            flag = f"colloidcg {name} {'/'.join(a.option_strings) or a.metavar or a.dest}"
            h = _help_of(sp, a)
            assert h.strip() and h != argparse.SUPPRESS, f"{flag}: no help text"
            if not a.option_strings or a.required or isinstance(a, switches):
                continue
            assert "default" in h.lower(), f"{flag}: the help does not say the default: {h!r}"
            d = a.default
            if d is not None and not isinstance(d, bool) and d != "":
                shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
                assert shown in h or f"{d:g}" in h if isinstance(d, float) else shown in h, \
                    f"{flag}: default {d!r} not in its help {h!r}"
        # the rendered --help shows it too (the formatter is the one argparse uses)
        assert "usage: colloidcg " + name in sp.format_help()


def test_train_defaults_are_TrainConfig_defaults():
    from colloidcg.train import TrainConfig

    args = build_parser().parse_args(["train", "t.parquet", "-o", "m"])
    cfg = TrainConfig()
    for key in ("epochs", "batch_frames", "lr", "seed", "aux_weight", "multistep", "n_s", "n_kernel",
                "n_pair", "select", "dtype", "device", "loc_noise", "size_column", "s_memory",
                "s_window", "s_heat"):
        assert getattr(args, key) == getattr(cfg, key), key
    # --s-heat reaches the options TrainConfig is built from; a bad value is refused
    from colloidcg.cli.train import CONFIG_FLAGS
    assert "s_heat" in CONFIG_FLAGS
    assert build_parser().parse_args(["train", "t.parquet", "-o", "m", "--s-heat", "work"]).s_heat == "work"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "t.parquet", "-o", "m", "--s-heat", "heat"])
    assert tuple(args.cutoff_factors) == cfg.cutoff_factors
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert f"(default: {cfg.epochs})" in " ".join(text.split())


def test_train_help_texts_are_TrainConfig_help_texts():
    """Each training flag's help is the option's help in TrainConfig's field metadata
    (architecture options: TrainConfig.describe), so it is written once."""
    from colloidcg.train import TrainConfig

    sp = _subparsers()["train"]
    flags = {a.dest: a for a in sp._actions}
    for name in ("epochs", "batch_frames", "seed", "multistep", "n_s", "n_kernel", "n_pair", "select",
                 "dtype", "device", "size_column", "deviatoric"):
        assert flags[name].help.startswith(TrainConfig.describe(name).help), name
    assert flags["frame_average"].option_strings == ["--no-frame-average"]
    assert flags["substrate"].option_strings == ["--no-substrate"]
    # --cutoff states the rule select_cutoff applies, in flag names, with the unit
    cutoff = " ".join(_help_of(sp, flags["cutoff"]).split())
    for part in ("um", "--cutoff-factors", "median nearest-neighbour distance", "held-out NLL", "short fit"):
        assert part in cutoff, part


@pytest.mark.parametrize("command, flag, unit", [
    ("train", "--cutoff", "um"), ("train", "--edge", "um"), ("train", "--loc-noise", "um"),
    ("train", "--box", "um"), ("train", "--fps", "frames per second"), ("train", "--um-per-px", "um per px"),
    ("track", "--diameter", "px"), ("track", "--separation", "px"), ("track", "--search-range", "px"),
    ("track", "--memory", "frames"), ("track", "--roi", "px"),
    ("rearrangements", "--cutoff", "px"), ("rearrangements", "--lag", "frames"),
    ("simulate", "--steps", "frames"), ("simulate", "--substeps", "per frame"),
    ("evaluate", "--box", "px"), ("synth", "--diffusion", "px^2/frame"), ("synth", "--drift", "px/frame"),
    ("md-read", "--box", "length unit"), ("md-synth", "--temperature", "LJ units"),
])
def test_flags_name_their_units(command, flag, unit):
    sp = _subparsers()[command]
    action = next(a for a in sp._actions if flag in a.option_strings)
    assert unit in _help_of(sp, action), f"colloidcg {command} {flag}: no unit {unit!r}"


def test_simulate_help_says_output_is_a_parquet_file(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "-o SIM.parquet" in out and ".parquet" in out and "OUT_DIR" not in out


def test_evaluate_positionals_are_explained():
    sp = _subparsers()["evaluate"]
    pos = [a for a in sp._actions if not a.option_strings]
    assert [a.metavar for a in pos] == ["DATA.parquet", "SIM.parquet"]
    assert all("tracks" in a.help for a in pos)


def test_length_arguments_take_units():
    from colloidcg.cli._common import length

    assert length("2.5").unit is None and float(length("2.5")) == 2.5
    assert length("2.5um").unit == "um" and length("2.5 µm").unit == "um"
    assert length("24px").to_um(0.1) == pytest.approx(2.4)
    assert length("2.4um").to_px(0.1) == pytest.approx(24.0)
    for bad in ("-1", "3 nm", "px", "nan"):
        with pytest.raises(Exception):
            length(bad)


@pytest.fixture(scope="module")
def small_tracks(small_video, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracks") / "track"
    assert main(["track", str(small_video / "video.tif"), "-o", str(out), "--quiet"]) == 0
    return out / "tracks.parquet"


def test_train_box_without_unit_is_refused_where_um_and_px_differ(small_tracks, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train", str(small_tracks), "-o", str(out), "--box", "160", "160", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--box" in err and "give the unit" in err and "px" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_train_lengths_in_px_are_converted_and_info_prints_the_cutoff_with_its_unit(small_tracks, tmp_path,
                                                                                     capsys):
    from colloidcg.data import _meta_value

    um = _meta_value(json.loads(small_tracks.with_suffix(".json").read_text()), "um_per_px")
    assert um is not None and um != 1.0
    out = tmp_path / "model"
    assert main(["train", str(small_tracks), "-o", str(out), "--cutoff", "24px", "--epochs", "1",
                 "--quiet"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["cutoff"] == pytest.approx(24 * um)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("cutoff"))
    assert f"{24 * um:.4g} um" in line and "= 24 px" in line


def test_a_subcommand_imports_only_its_own_options():
    """`colloidcg track` builds its parser alone: torch (which `train`'s options import) is
    not loaded to track a video; `colloidcg --help` still lists every command."""
    import subprocess
    import sys

    code = ("import sys; from colloidcg.cli import build_parser, _command_module; "
            "p = build_parser(_command_module(['track', 'v.avi', '-o', 'x'])); "
            "print('torch' in sys.modules, ','.join(p._subparsers._group_actions[0].choices))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "track"]
    from colloidcg.cli import _command_module
    assert _command_module(["md-read", "x"]) == "md_read" and _command_module(["--version"]) is None
    assert _command_module(["trak"]) is None
    full = build_parser()._subparsers._group_actions[0].choices
    assert {"track", "train", "md-read", "macro", "batch"} <= set(full)
