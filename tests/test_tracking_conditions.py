"""Smoke test of the conditions benchmark (benchmarks/tracking_conditions.py): one small
condition end to end, and the target verdict."""

import importlib.util
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("trackpy")
_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "tracking_conditions.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("tracking_conditions", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look the module up
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def test_verdict(bench):
    s = SimpleNamespace(recall=1.0, precision=1.0, rms_error=0.1)
    assert bench._verdict(s, 0.05) == "met"
    s.rms_error = 0.3
    assert bench._verdict(s, 0.2) == "bound"
    assert bench._verdict(s, 0.05) == "MISSED: RMS"
    s.rms_error = 0.158                   # the 1/3-photon condition: bound 0.146
    assert bench._verdict(s, 0.146) == "MISSED: RMS (near the bound)"
    assert bench._verdict(s, 0.12) == "MISSED: RMS"
    s.recall = 0.9
    assert bench._verdict(s, 0.2).startswith("MISSED: recall")
    assert bench._verdict(None, 0.1) == "error"


def test_one_condition_end_to_end(bench):
    c = bench.Condition("smoke", diameter=9.0, area_fraction=0.6)
    row = bench.run_condition(c, n_frames=3, seed=0)
    assert 0 < row["crb_median_axis"] < 0.1 and row["crb_rms_radial"] > row["crb_median_axis"]
    tp_ = row["methods"]["trackpy"]
    assert tp_["error"] is None and tp_["score"]["recall"] > 0.95
    assert tp_["params"]["diameter"] == 9
    assert set(row["methods"]) == {"colloidcg", "trackpy"}
    md = bench.markdown([row], [], "quick", 1.0)
    assert "| smoke | colloidcg |" in md and "trackpy" in md
    names = [c.name for c in bench.quick_conditions()]
    assert len(names) == len(set(names)) and "issue 15 case" in names
    assert math.isfinite(row["methods"]["trackpy"]["score"]["rms_error"])
