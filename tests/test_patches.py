"""Training on patches of a large system (issue 19's seam): with a halo of twice the
interaction range a patch's scored particles have exactly their whole-frame likelihood
terms; fit trains on patches; a patch narrower than twice the range is refused."""

import math

import numpy as np
import pytest
import torch

from colloidcg.core.loss import transition_nll
from colloidcg.core.model import State
from colloidcg.data import from_tracks
from colloidcg.errors import ParameterError
from colloidcg.train import PatchSampler, TrainConfig, build_model, fit, make_transition

from test_train import FAST

torch.set_num_threads(1)
CUTOFF = 3.0


def _tracks(n=500, frames=8, L=40.0, seed=0):
    """Random positions with small random steps: every particle has ~7 neighbours within
    the range, so the terms of a particle depend on its surroundings."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, L, (n, 2)) + np.cumsum(rng.normal(0, 0.05, (frames, n, 2)), 0)
    return pd.DataFrame({"frame": np.repeat(np.arange(frames), n), "particle": np.tile(np.arange(n), frames),
                         "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})


def _model(traj, cfg):
    torch.manual_seed(0)
    model = build_model(traj, cfg, CUTOFF)
    with torch.no_grad():                           # every network matters
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def _nll(model, tr, traj):
    S = model.initial_S(tr.r, tr.pairs, traj.box)
    return float(transition_nll(model, State(tr.r, tr.v, S, tr.size), tr.v_next, tr.valid, tr.pairs,
                                traj.dt, traj.box)[0].detach())


@pytest.mark.parametrize("periodic", [True, False])
def test_a_patch_with_a_halo_of_twice_the_range_has_the_whole_frame_terms(periodic):
    traj = from_tracks(_tracks(), {}, box_px=[40.0, 40.0] if periodic else None)
    cfg = TrainConfig(**{**FAST, "cutoff": CUTOFF})
    model = _model(traj, cfg)
    t = 3
    centre = torch.tensor([6.0, 20.0] if periodic else [20.0, 20.0], dtype=torch.float64)  # across the box edge
    got = {}
    for label, halo in (("2h", None), ("h/2", 0.5 * CUTOFF)):
        s = PatchSampler(side=10.0)
        s.setup(traj, CUTOFF, cfg)
        if halo is not None:
            s.halo = halo                            # thinner than setup allows, to show the difference
        patch = s.patch(t, centre)
        assert patch.valid.sum() > 10 and (~patch.valid).sum() > 0
        # the whole frame, scoring only the patch's scored particles
        whole = make_transition(traj, t, CUTOFF)
        scored = torch.zeros(traj.n_particles, dtype=torch.bool)
        scored[patch.index[patch.valid]] = True
        whole.valid = whole.valid & scored[whole.index]
        assert int(whole.valid.sum()) == int(patch.valid.sum())
        got[label] = (_nll(model, patch, traj), _nll(model, whole, traj))
    a, b = got["2h"]
    assert math.isclose(a, b, rel_tol=1e-12)
    a, b = got["h/2"]                               # too thin a halo: the terms differ
    assert abs(a - b) > 1e-6 * abs(b)


def test_fit_trains_on_patches_and_validates_on_whole_frames():
    traj = from_tracks(_tracks(n=300, frames=12, L=30.0), {}, box_px=[30.0, 30.0])
    cfg = TrainConfig(**{**FAST, "cutoff": CUTOFF, "epochs": 3, "batch_frames": 4, "loc_noise": "none"})
    sampler = PatchSampler(side=8.0, patches_per_frame=3)
    res = fit(traj, cfg, sampler=sampler)
    frames = fit(traj, cfg)                                  # the same data on whole frames
    untrained = fit(traj, TrainConfig.from_dict({**cfg.to_dict(), "lr": 1e-9}))
    assert len(res.history) == 3 and all(math.isfinite(h["train_nll"]) for h in res.history)
    # validated on the same whole frames: patches teach the model what whole frames do
    val_p, val_f, val_0 = (r.history[-1]["val_nll"] for r in (res, frames, untrained))
    gain = val_0 - val_f
    assert gain > 0, (val_0, val_f)
    assert val_p < val_0 - 0.5 * gain and abs(val_p - val_f) < gain, (val_p, val_f, val_0)
    assert res.report["n_val_frames"] == frames.report["n_val_frames"]
    batches = list(sampler.epoch(0))
    assert sum(len(b) for b in batches) <= len(sampler.train_frames) * 3
    for b in batches:
        for tr in b:
            assert tr.n < traj.n_particles and bool(tr.valid.any())


def test_a_patch_narrower_than_twice_the_range_is_refused():
    traj = from_tracks(_tracks(n=100, frames=5, L=20.0))
    cfg = TrainConfig(**{**FAST, "cutoff": CUTOFF})
    with pytest.raises(ParameterError, match="twice the interaction range"):
        PatchSampler(side=5.0).setup(traj, CUTOFF, cfg)
    with pytest.raises(ParameterError, match="side"):
        PatchSampler(side=-1.0)
    with pytest.raises(ParameterError, match="thinner than twice the interaction range"):
        PatchSampler(side=10.0, halo=CUTOFF).setup(traj, CUTOFF, cfg)
    assert PatchSampler(side=np.float32(8.0)).side == 8.0


def test_a_patch_halo_is_not_scored_by_the_auxiliary_loss():
    import pandas as pd
    df = _tracks(n=200, frames=8, L=30.0)
    df["rearranging"] = (df["particle"] % 5 == 0).astype(float)
    traj = from_tracks(df, {}, box_px=[30.0, 30.0])
    cfg = TrainConfig(**{**FAST, "cutoff": CUTOFF})
    s = PatchSampler(side=8.0)
    s.setup(traj, CUTOFF, cfg)
    p = s.patch(3, torch.tensor([15.0, 15.0], dtype=torch.float64))
    assert p.labels is not None and bool(torch.isnan(p.labels[~p.valid]).all())
    assert not bool(torch.isnan(p.labels[p.valid]).any())
    assert isinstance(df, pd.DataFrame)
