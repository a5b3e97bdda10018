"""One-to-one matching and localisation scoring (colloidcg.tracking.accuracy)."""

import numpy as np
import pandas as pd
import pytest

from colloidcg.tracking.accuracy import match_one_to_one, score_localisation


def test_hungarian_beats_greedy():
    # greedy nearest-first would pair found 0 with true 1 and leave true 0 unmatched
    true = np.array([[0.0, 0.0], [1.0, 0.0]])
    found = np.array([[0.9, 0.0], [1.8, 0.0]])
    i_f, i_t = match_one_to_one(found, true, radius=1.0)
    pairs = sorted(zip(i_f.tolist(), i_t.tolist()))
    assert pairs == [(0, 0), (1, 1)]
    assert len(match_one_to_one(found, true, radius=0.05)[0]) == 0


def test_score_counts_and_errors():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (400, 2))
    truth = pd.DataFrame({"frame": 0, "particle": np.arange(400), "x": xy[:, 0], "y": xy[:, 1]})
    found = truth.iloc[:380].copy()                      # 20 missed
    found["x"] += 0.1
    found["ep"] = 0.05
    extra = pd.DataFrame({"frame": 0, "x": [50.0], "y": [50.0], "ep": 0.05})   # maybe false
    s = score_localisation(found, truth, (101, 101), margin=10, match_radius=0.5)
    inside = (xy > 9.5).all(1) & (xy < 90.5).all(1)
    assert s.n_true == inside.sum()
    assert s.recall == pytest.approx(inside[:380].sum() / inside.sum())
    assert s.precision == 1.0
    assert s.rms_error == pytest.approx(0.1) and s.mean_dx == pytest.approx(0.1)
    assert s.ep_ratio == pytest.approx(0.5)
    s2 = score_localisation(pd.concat([found, extra]), truth, (101, 101), 10, 0.5)
    assert s2.n_found == s.n_found + 1
    # a region excludes true particles from recall only
    region = np.zeros((101, 101), bool)
    region[:, :50] = True
    s3 = score_localisation(found, truth, (101, 101), 10, 0.5, truth_region=region)
    assert s3.n_true < s.n_true and s3.n_found == s.n_found
