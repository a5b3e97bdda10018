"""Training with a sampler (issue 18): the default FrameSampler is the plain loop over whole
frames; fit trains on any TransitionSampler (here: a sub-window with a prescribed halo);
TrainConfig embeds the ModelConfig and reads flat legacy keys."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from colloidcg.core.loss import transition_nll
from colloidcg.core.model import ModelConfig, State
from colloidcg.data import from_tracks
from colloidcg.errors import ColloidcgError, ParameterError
from colloidcg.train import (FrameSampler, LossOptions, TrainConfig, Transition, TransitionBatch,
                             TransitionSampler, batch_loss, build_model, fit, make_transition)

from test_train import FAST, langevin

torch.set_num_threads(1)


def test_fit_is_the_plain_loop_over_whole_frames():
    """fit with the default FrameSampler takes exactly the steps of a loop written out here
    against the core alone: same frames in the same order, same losses, bit for bit."""
    traj = from_tracks(langevin(n=40, frames=20))
    cfg = TrainConfig(**{**FAST, "epochs": 2, "batch_frames": 3, "loc_noise": "none"})
    res = fit(traj, cfg)

    tr = traj.to(dtype=torch.float64)
    torch.manual_seed(cfg.seed)
    model = build_model(tr, cfg, cfg.cutoff)
    from colloidcg.core.graph import find_pairs
    usable = []
    for t in range(1, tr.n_frames - 1):
        idx = torch.nonzero(tr.present[t] & tr.present[t + 1]).squeeze(-1)
        if bool((tr.mask[t, idx] & tr.mask[t + 1, idx]).any()):
            usable.append(t)
    n_val = max(1, round(cfg.val_fraction * len(usable)))
    train_t = usable[:-n_val]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=cfg.epochs * math.ceil(len(train_t) / cfg.batch_frames), eta_min=cfg.lr * cfg.lr_final_fraction)
    gen = np.random.default_rng(cfg.seed)
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = gen.permutation(train_t)
        losses = []
        for b in range(0, len(order), cfg.batch_frames):
            total = 0.0
            frames = [int(t) for t in order[b: b + cfg.batch_frames]]
            for t in frames:
                idx = torch.nonzero(tr.present[t] & tr.present[t + 1]).squeeze(-1)
                r = tr.pos[t, idx]
                pairs = find_pairs(r, cfg.cutoff, tr.box)
                S = model.initial_S(r, pairs, tr.box)
                nll, _ = transition_nll(model, State(r, tr.vel[t, idx], S), tr.vel[t + 1, idx],
                                        tr.mask[t, idx] & tr.mask[t + 1, idx], pairs, tr.dt, tr.box)
                total = total + nll
            loss = total / len(frames)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()), cfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
    assert [h["train_nll"] for h in res.history] == history
    assert res.report["n_train_frames"] == len(train_t) and res.report["n_val_frames"] == n_val


def test_frame_sampler_batches_are_whole_frames_in_seeded_order():
    traj = from_tracks(langevin(n=30, frames=16))
    cfg = TrainConfig(**{**FAST, "batch_frames": 4, "max_frames_per_epoch": 7, "seed": 5})
    s = FrameSampler()
    s.setup(traj, 3.0, cfg)
    assert s.train_frames + s.validation_frames == list(range(1, 15))
    gen = np.random.default_rng(5)
    for epoch in range(2):
        order = [int(t) for t in gen.permutation(s.train_frames)[:7]]
        batches = list(s.epoch(epoch))
        assert [t for b in batches for t in b.frames] == order
        assert [len(b) for b in batches] == [4, 3] and s.steps_per_epoch() == 2
    tr = s.frames.get(4)
    idx = torch.nonzero(traj.present[4] & traj.present[5]).squeeze(-1)
    assert torch.equal(tr.index, idx) and torch.equal(tr.v_next, traj.vel[5, idx])
    assert tr.prescribed.sum() == 0 and tr.window is None and tr.labels is None
    assert [b.frames for b in s.validation()] == [[t] for t in s.validation_frames]


class StripSampler(TransitionSampler):
    """A patch: the particles with x below ``x_max`` (um), those within ``halo`` of that
    edge prescribed (in the transitions, not scored); every other frame validates."""

    def __init__(self, x_max, halo):
        self.x_max, self.halo = x_max, halo
        self.seen = []

    def setup(self, traj, cutoff, config):
        self.traj, self.cutoff = traj, cutoff
        ts = list(range(1, traj.n_frames - 1))
        self.train_frames, self.validation_frames = ts[:-3], ts[-3:]

    def transition(self, t):
        tr = self.traj
        both = tr.present[t] & tr.present[t + 1]
        idx = torch.nonzero(both & (tr.pos[t, :, 0] < self.x_max)).squeeze(-1)
        inner = tr.pos[t, idx, 0] < self.x_max - self.halo
        return make_transition(tr, t, self.cutoff, index=idx, valid=inner)

    def steps_per_epoch(self):
        return math.ceil(len(self.train_frames) / 2)

    def epoch(self, epoch):
        for b in range(0, len(self.train_frames), 2):
            batch = TransitionBatch([self.transition(t) for t in self.train_frames[b: b + 2]])
            self.seen.append(batch)
            yield batch

    def validation(self):
        for t in self.validation_frames:
            yield TransitionBatch([self.transition(t)])


def test_fit_trains_on_a_custom_sampler_with_prescribed_particles():
    traj = from_tracks(langevin(n=80, frames=16, L=60.0))
    s = StripSampler(x_max=30.0, halo=3.0)
    res = fit(traj, TrainConfig(**{**FAST, "epochs": 2, "loc_noise": "none"}), sampler=s)
    assert len(res.history) == 2 and all(math.isfinite(h["train_nll"]) and math.isfinite(h["val_nll"])
                                         for h in res.history)
    assert res.report["n_train_frames"] == len(s.train_frames) == 11
    tr = s.seen[0].transitions[0]
    assert isinstance(tr, Transition) and 0 < int(tr.prescribed.sum()) < tr.n < traj.n_particles
    assert bool((traj.pos[tr.frame, tr.index, 0] < 30.0).all())
    # the prescribed particles' own transitions are not scored: changing their next
    # velocity leaves the loss unchanged, changing a scored one's does not
    opts = LossOptions(traj.dt, traj.box)
    base = float(batch_loss(res.model, TransitionBatch([tr]), opts))
    halo_changed = dataclasses.replace(tr, v_next=torch.where(tr.prescribed[:, None], tr.v_next + 5.0, tr.v_next))
    assert float(batch_loss(res.model, TransitionBatch([halo_changed]), opts)) == base
    inner_changed = dataclasses.replace(tr, v_next=torch.where(tr.valid[:, None], tr.v_next + 5.0, tr.v_next))
    assert float(batch_loss(res.model, TransitionBatch([inner_changed]), opts)) > base + 1.0


def test_a_sub_system_with_a_multistep_window_follows_the_same_particles():
    traj = from_tracks(langevin(n=40, frames=12))
    idx = torch.arange(0, 40, 2)
    valid = torch.arange(20) >= 5
    tr = make_transition(traj, 3, 3.0, index=idx, valid=valid, multistep=3)
    w = tr.window
    assert w is not None and w.steps == 3 and set(w.index.tolist()) <= set(idx.tolist())
    assert not bool(w.interior[torch.isin(w.index, idx[:5])].any())


def test_train_config_embeds_the_model_config():
    cfg = TrainConfig()
    assert isinstance(cfg.model, ModelConfig) and cfg.model.n_pair == 8 and cfg.n_pair == 8
    # the architecture options live once, in ModelConfig: TrainConfig has no fields of its own for them
    assert {f.name for f in dataclasses.fields(TrainConfig)}.isdisjoint(
        {"n_s", "n_kernel", "n_pair", "width", "depth", "substrate", "deviatoric", "frame_average"})
    # flat keywords (the options before the embedding) set the embedded ModelConfig
    flat = TrainConfig(n_pair=0, width=16, epochs=2)
    assert flat.model == dataclasses.replace(TrainConfig().model, n_pair=0, width=16) and flat.epochs == 2
    assert dataclasses.replace(flat, epochs=3).model.width == 16
    other = dataclasses.replace(flat)
    other.width = 20                    # copies do not share their ModelConfig
    assert flat.width == 16 and other.model.width == 20


def test_train_config_from_dict_reads_flat_legacy_keys_and_names_unknown_ones():
    legacy = {"epochs": 5, "n_s": 2, "n_kernel": 3, "n_pair": 0, "width": 20, "depth": 3, "substrate": False,
              "deviatoric": True, "frame_average": False, "cutoff_factors": [1.5, 2.5], "select": "val_msd"}
    cfg = TrainConfig.from_dict(legacy).validate()
    m = cfg.model
    assert (m.n_s, m.n_kernel, m.n_pair, m.width, m.depth, m.substrate, m.deviatoric, m.frame_average) == \
        (2, 3, 0, 20, 3, False, True, False)
    assert cfg.cutoff_factors == (1.5, 2.5) and cfg.epochs == 5 and cfg.select == "val_msd"
    # what a model folder stores reads back as the same options (JSON round trip)
    stored = json.loads(json.dumps(cfg.to_dict()))
    assert set(stored["model"]) >= {"n_s", "n_pair", "frame_average"} and "theta_ref" not in stored["model"]
    assert TrainConfig.from_dict(stored) == cfg
    assert TrainConfig.from_dict({"model": {"n_pair": 2}, "lr": 0.01}).model.n_pair == 2
    with pytest.raises(ParameterError, match=r"^f: train\.n_layers: unknown option 'n_layers'; expected one of .*n_pair"):
        TrainConfig.from_dict({"n_layers": 3}, "f: train.")
    with pytest.raises(ParameterError, match=r"model\.bogus: unknown option"):
        TrainConfig.from_dict({"model": {"bogus": 1}})
    with pytest.raises(ParameterError, match="n_pair: given twice"):
        TrainConfig.from_dict({"n_pair": 1, "model": {"n_pair": 2}})
    with pytest.raises(ParameterError, match=r"model\.theta_ref: set by training from the data"):
        TrainConfig(model=ModelConfig(theta_ref=2.0)).validate()
    with pytest.raises(ParameterError, match=r"^n_pair: expected an integer"):
        TrainConfig.from_dict({"model": {"n_pair": -1}}).validate()
    with pytest.raises(ParameterError, match=r"^substrate: expected true or false"):
        TrainConfig(substrate="yes").validate()


def test_batch_train_tables_take_flat_and_nested_architecture_keys(tmp_path):
    from colloidcg.batch.discover import check_tables
    from colloidcg.batch.stages import train_config

    cfg = train_config({"epochs": 2, "n_s": 2, "model": {"n_pair": 0}, "cutoff_factors": [1.5]})
    assert cfg.model.n_s == 2 and cfg.model.n_pair == 0 and cfg.cutoff_factors == (1.5,) and not cfg.progress
    check_tables(tmp_path / "colloidcg.toml", {"train": {"n_s": 2, "model": {"width": 8}}})
    with pytest.raises(ColloidcgError, match=r"train\.n_layers"):
        check_tables(tmp_path / "colloidcg.toml", {"train": {"n_layers": 2}})
    with pytest.raises(ColloidcgError, match=r"model\.n_layers"):
        check_tables(tmp_path / "colloidcg.toml", {"train": {"model": {"n_layers": 2}}})


def test_every_option_has_help_and_its_unit_is_in_it():
    for f in dataclasses.fields(TrainConfig):
        info = TrainConfig.describe(f.name)
        assert info.help, f.name
        assert info.unit is None or info.unit in info.help, f.name
    from colloidcg.train.config import architecture_keys
    for name in architecture_keys():
        info = TrainConfig.describe(name)
        assert info.help and info.default == getattr(TrainConfig().model, name), name
