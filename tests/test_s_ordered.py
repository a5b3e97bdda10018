"""Ordered entropic variables (``ModelConfig.ordered_s``): the heat weights sorted
ascending, so S0 is the variable that receives the least heat and keeps its encoded value
longest (docs/model.md, "S as carried state"), and a share of the heat fixed for S0
(``ModelConfig.s0_heat_share``). Exact invariants only: the order is a
relabelling of the free weights, it changes nothing where they are already ascending, and
each component's carried increment is w_a times one per-particle amount."""

from __future__ import annotations

import json

import pytest
import torch

from colloidcg.core.persist import load_model, save_model
from colloidcg.data import from_tracks
from colloidcg.errors import ColloidcgError
from colloidcg.train import TrainConfig, build_model
from colloidcg.train.carried import carry_along

from test_train import langevin


def _model(traj, ordered: bool, raw_w):
    torch.manual_seed(0)
    model = build_model(traj, TrainConfig(n_pair=0, n_s=3, ordered_s=ordered).validate(), 3.0)
    with torch.no_grad():
        model.raw_w.copy_(torch.tensor(raw_w, dtype=model.raw_w.dtype))
    return model


@pytest.mark.parametrize("heat", ["drift", "work"])
def test_ordered_s_gives_S0_the_least_heat_and_is_only_a_relabelling(heat):
    traj = from_tracks(langevin(n=30, frames=10, L=12.0))
    descending = [1.2, 0.3, -1.0]
    free = _model(traj, False, descending)
    ordered = _model(traj, True, descending)
    w_free, w = free.heat_weights.detach(), ordered.heat_weights.detach()
    # a permutation of the free weights, ascending
    assert torch.equal(w, torch.sort(w_free).values)
    assert bool((w[1:] > w[:-1]).all())
    # exact: each component's carried increment is w_a times one per-particle amount, so
    # S0's is the smallest in magnitude, by the ratio of the weights
    car = carry_along(ordered, traj, 0.004, heat=heat)
    inc = car.S[-1] - car.S[0]
    assert float(inc.abs().max()) > 1e-3
    ratio = inc[:, 0] / inc[:, 2]
    assert float((ratio - w[0] / w[2]).abs().max()) < 1e-10
    # where the free weights are already ascending, ordering changes nothing, to the bit
    ascending = [-1.0, 0.3, 1.2]
    a, b = _model(traj, False, ascending), _model(traj, True, ascending)
    assert torch.equal(carry_along(a, traj, 0.004, heat=heat).S, carry_along(b, traj, 0.004, heat=heat).S)


def test_ordered_s_is_saved_and_old_models_load_unordered(tmp_path):
    traj = from_tracks(langevin(n=20, frames=4, L=10.0))
    model = _model(traj, True, [1.2, 0.3, -1.0])
    save_model(model, tmp_path / "m")
    back, _ = load_model(tmp_path / "m")
    assert back.ordered_s and torch.equal(back.heat_weights, model.heat_weights)
    path = tmp_path / "m" / "config.json"
    cfg = json.loads(path.read_text())
    del cfg["model"]["ordered_s"]            # a model saved before the option existed
    path.write_text(json.dumps(cfg))
    old, _ = load_model(tmp_path / "m")
    assert not old.ordered_s
    assert torch.equal(old.heat_weights, torch.softmax(old.raw_w, 0))
    cfg["model"]["ordered_s"] = "yes"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ColloidcgError, match="model.ordered_s"):
        load_model(tmp_path / "m")


def test_cli_and_batch_ordered_s_reach_the_saved_model(tmp_path):
    """``colloidcg train --ordered-s`` is saved in the model's config (and a model trained
    without it says false); the loaded model's heat weights are ascending. A batch
    [train] table passes ``ordered_s`` the same way."""
    from colloidcg.batch.stages import train_config
    from colloidcg.cli import main
    from colloidcg.outputs import provenance, write_table

    tracks = tmp_path / "tracks.parquet"
    side = provenance("test", {}, {}, meta={"fps": 10.0, "um_per_px": 0.2})
    write_table(tracks, langevin(n=30, frames=8), side)
    common = ["--epochs", "1", "--quiet", "--edge", "0", "--cutoff", "0.6", "--n-s", "2"]
    for flag, ordered in ((["--ordered-s"], True), ([], False)):
        out = tmp_path / f"model_{ordered}"
        assert main(["train", str(tracks), "-o", str(out), *common, *flag]) == 0
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["model"]["ordered_s"] is ordered and cfg["train"]["model"]["ordered_s"] is ordered
        assert cfg["model"]["n_s"] == 2
        back, _ = load_model(out)
        assert back.ordered_s is ordered
        if ordered:
            with torch.no_grad():
                w, free = back.heat_weights, torch.softmax(back.raw_w, 0)
            assert float(w[0]) <= float(w[1])
            assert torch.equal(w, torch.sort(free).values)
    assert train_config({"n_s": 2, "ordered_s": True}).model.ordered_s
    assert not train_config({"n_s": 2}).model.ordered_s


def _shared(traj, share: float, raw_w=(0.4, -0.2, 0.7)):
    torch.manual_seed(0)
    model = build_model(traj, TrainConfig(n_pair=0, n_s=3, ordered_s=True, s0_heat_share=share).validate(), 3.0)
    with torch.no_grad():
        model.raw_w.copy_(torch.tensor(raw_w, dtype=model.raw_w.dtype))
    return model


@pytest.mark.parametrize("heat", ["drift", "work"])
def test_s0_heat_share_fixes_S0s_share_and_the_others_share_the_rest(heat):
    """``ModelConfig.s0_heat_share``: w_0 is the share, exactly, whatever the learned
    weights; the others are the learned (sorted) weights scaled to the rest; S0's carried
    increment is w_0 / w_a times each other's; the compiled model has the same weights."""
    traj = from_tracks(langevin(n=30, frames=10, L=12.0))
    model = _shared(traj, 0.05)
    w = model.heat_weights.detach()
    rest = torch.sort(torch.softmax(model.raw_w.detach()[1:], 0)).values
    assert float(w[0]) == 0.05
    assert torch.allclose(w[1:], 0.95 * rest, rtol=0, atol=1e-15)
    assert abs(float(w.sum()) - 1.0) < 1e-15
    car = carry_along(model, traj, 0.004, heat=heat)
    inc = car.S[-1] - car.S[0]
    assert float(inc.abs().max()) > 1e-3
    assert float((inc[:, 0] / inc[:, 1] - w[0] / w[1]).abs().max()) < 1e-10
    # raw_w[0] does not enter: the share is fixed, not learned
    other = _shared(traj, 0.05, raw_w=(-3.0, -0.2, 0.7))
    assert torch.equal(other.heat_weights, model.heat_weights)
    assert torch.equal(torch.jit.script(model).weights(), model.weights())


def test_s0_heat_share_is_saved_checked_and_reaches_the_model_from_the_cli(tmp_path):
    from colloidcg.cli import main
    from colloidcg.outputs import provenance, write_table

    traj = from_tracks(langevin(n=20, frames=4, L=10.0))
    model = _shared(traj, 0.1)
    save_model(model, tmp_path / "m")
    back, _ = load_model(tmp_path / "m")
    assert back.s0_share == 0.1 and torch.equal(back.heat_weights, model.heat_weights)
    path = tmp_path / "m" / "config.json"
    cfg = json.loads(path.read_text())
    for bad in (1.0, -0.1, "0.1"):
        cfg["model"]["s0_heat_share"] = bad
        path.write_text(json.dumps(cfg))
        with pytest.raises(ColloidcgError, match="model.s0_heat_share"):
            load_model(tmp_path / "m")
    del cfg["model"]["s0_heat_share"]         # a model saved before the option existed
    path.write_text(json.dumps(cfg))
    assert load_model(tmp_path / "m")[0].s0_share == 0.0
    for kw in ({"n_s": 1, "s0_heat_share": 0.1}, {"n_s": 2, "s0_heat_share": 1.0}):
        with pytest.raises(ColloidcgError, match="s0_heat_share"):
            TrainConfig(**kw).validate()
    tracks = tmp_path / "tracks.parquet"
    write_table(tracks, langevin(n=30, frames=8), provenance("test", {}, {}, meta={"fps": 10.0, "um_per_px": 0.2}))
    out = tmp_path / "trained"
    assert main(["train", str(tracks), "-o", str(out), "--epochs", "1", "--quiet", "--edge", "0",
                 "--cutoff", "0.6", "--n-s", "2", "--s0-heat-share", "0.1"]) == 0
    trained, _ = load_model(out)
    assert float(trained.heat_weights[0]) == 0.1
    from colloidcg.batch.stages import train_config
    assert train_config({"n_s": 2, "s0_heat_share": 0.1}).model.s0_heat_share == 0.1
