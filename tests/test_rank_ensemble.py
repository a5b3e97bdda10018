"""The rearrangement benchmark's --restarts (rank-averaged training restarts of a learned
predictor, benchmarks/rearrangements.py: rank_ensemble) and --cache plumbing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from bench_helpers import load_benchmark


def _bench():
    return load_benchmark("rearrangements")


rank_ensemble = _bench().rank_ensemble


def test_ensemble_is_the_mean_of_the_members_ranks():
    """Known answer: the ensemble is the mean of the members' normalised ranks (ties
    averaged), so its AUC is that of the mean rank, and it can beat every member: two
    members that each see half of the signal, with independent noise."""
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.random(n) < 0.2
    a = y * 1.0 + rng.normal(0, 1.5, n)
    b = y * 1.0 + rng.normal(0, 1.5, n)
    b[:50] = np.round(b[:50])                          # some ties
    ens = rank_ensemble([a, b])
    want = (rankdata(a) + rankdata(b)) / (2 * n)
    np.testing.assert_allclose(ens, want, rtol=0, atol=1e-12)
    auc_a, auc_b, auc_e = (roc_auc_score(y, v) for v in (a, b, ens))
    assert auc_e > max(auc_a, auc_b) + 0.02
    # one member: the ranking (and so the AUC) is that member's
    assert roc_auc_score(y, rank_ensemble([a])) == pytest.approx(auc_a, abs=1e-12)


def test_alignment_flips_a_member_of_the_opposite_sign_without_labels():
    """A restart whose S came out negated adds up with align (the default) and cancels
    without it; alignment is by correlation with the first member, so it does not depend
    on which rows are labelled."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=500)
    b = -(a + rng.normal(0, 0.3, 500))
    aligned = rank_ensemble([a, b])
    assert np.corrcoef(aligned, a)[0, 1] > 0.95
    flat = rank_ensemble([a, b], align=False)
    assert abs(np.corrcoef(flat, a)[0, 1]) < 0.5
    # the first member sets the sign: reversing it reverses the ensemble
    np.testing.assert_allclose(rank_ensemble([-a, b]) + aligned, 1 + 1 / 500, atol=1e-12)


def test_nan_rows_and_bad_input():
    a = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    b = np.array([5.0, 4.0, 3.0, np.nan, 1.0])
    out = rank_ensemble([a, b], align=False)
    assert np.isnan(out[2]) and np.isnan(out[3])
    np.testing.assert_allclose(out[[0, 1, 4]], [(1 + 3) / 6, (2 + 2) / 6, (3 + 1) / 6])
    with pytest.raises(ValueError):
        rank_ensemble([])
    with pytest.raises(ValueError):
        rank_ensemble([np.zeros(3), np.zeros(4)])


def test_benchmark_one_restart_is_the_single_model_and_cache_round_trips(tmp_path):
    """--restarts 1 scores the single model's values unchanged; with --cache a second call
    reads the stored values instead of training, and refuses a table with other rows."""
    B = _bench()
    n = 30
    table = pd.DataFrame({"frame": np.repeat(np.arange(3), 10), "particle": np.tile(np.arange(10), 3)})
    calls = []

    def fake(tracks, tab, soft, seed=0, aux_weight=0.0, **kw):
        calls.append(seed)
        r = np.random.default_rng(seed)
        return {"S": r.normal(size=n), "S_carried": r.normal(size=n), "dSdt": r.normal(size=n),
                "S_frame0": r.normal(size=n), "cutoff": 14.3, "val_nll": 1.0 + seed}

    B.learned_s = fake
    m = fake(None, table, None, seed=5)
    one = B.ensemble_values([m], frame0=True)
    assert one["S carried"] is m["S_carried"] and set(one) == {"S", "S carried", "dS/dt", "S frame 0"}
    two = B.ensemble_values([m, fake(None, table, None, seed=6)], frame0=False)
    assert set(two) == {"S", "S carried", "dS/dt"} and np.all((two["S"] > 0) & (two["S"] <= 1))
    calls.clear()
    case = {"name": "vacancy", "tracks": None, "soft": None, "res": SimpleNamespace(table=table)}
    B.CACHE = str(tmp_path)
    v1 = B.cached_learned_s(case, 105, 0.0, "carried", 10, True)
    v2 = B.cached_learned_s(case, 105, 0.0, "carried", 10, True)
    assert calls == [105]
    for k in ("S", "S_carried", "dSdt", "S_frame0"):
        np.testing.assert_array_equal(v1[k], v2[k])
    assert v2["val_nll"] == 106.0 and v2["cutoff"] == 14.3
    B.cached_learned_s(case, 106, 0.0, "carried", 10, True)      # another seed: trained
    assert calls == [105, 106]
    other = {**case, "res": SimpleNamespace(table=table.assign(particle=table["particle"] + 1))}
    with pytest.raises(SystemExit):
        B.cached_learned_s(other, 105, 0.0, "carried", 10, True)
