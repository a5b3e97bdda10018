"""The core, training and rollouts on CUDA: the same numbers as on the CPU (float64), the
momentum guarantee, seeded rollouts that reproduce, the fast mode's tables, and a model
trained on the GPU that loads on the CPU. Skipped (with the reason) where torch sees no
CUDA device; on such a machine, asking for one is a clear error (tested here too)."""

from __future__ import annotations

import pytest
import torch

from colloidcg.cli import main
from colloidcg.core import State, find_pairs, rollout
from colloidcg.core.integrate import deterministic_on
from colloidcg.core.persist import load_model, save_model
from colloidcg.data import from_tracks
from colloidcg.errors import ParameterError
from colloidcg.train import TrainConfig, fit
from test_core import H, assert_momentum_conserved, random_model, random_state
from test_train import FAST, langevin

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here (torch.cuda.is_available() "
                                "is False); run on a GPU machine")


def _to(state: State, device) -> State:
    return State(state.r.to(device), state.v.to(device), state.S.to(device),
                 None if state.size is None else state.size.to(device))


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available, so asking for it is no error")
def test_asking_for_cuda_without_it_is_a_clear_error(tmp_path, capsys):
    traj = from_tracks(langevin(frames=10))
    with pytest.raises(ParameterError, match="device: 'cuda' requested but CUDA is not available"):
        fit(traj, TrainConfig(**FAST, device="cuda"))
    model_dir = tmp_path / "m"
    save_model(random_model(0), model_dir)
    tracks = tmp_path / "t.parquet"
    langevin(frames=5).to_parquet(tracks)
    code = main(["simulate", str(model_dir), "--init", str(tracks), "--steps", "2", "--device", "cuda",
                 "-o", str(tmp_path / "sim.parquet")])
    assert code != 0
    assert "--device: 'cuda' requested but CUDA is not available" in capsys.readouterr().err


def test_rollouts_on_cuda_switch_deterministic_algorithms_on_and_back():
    """Only the setting is switched (no GPU needed): on for CUDA, restored after, even on
    an error; untouched on the CPU."""
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_on("cpu"):
        assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError, match="inside"):
        with deterministic_on("cuda:0"):
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled()
            raise RuntimeError("inside")
    assert not torch.are_deterministic_algorithms_enabled()


@needs_cuda
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_drift_and_noise_amplitude_on_cuda_match_the_cpu(seed):
    dim = 2 + seed % 2
    m = random_model(seed, dim, n_s=1 + (seed // 2) % 2, deviatoric=bool(seed % 2))
    s = random_state(seed, 30, dim, m.config.n_s, 2.5)
    pairs = find_pairs(s.r, H)
    with torch.no_grad():
        cpu = m.drift(s, pairs)
    m.to("cuda")
    sc = _to(s, "cuda")
    pc = find_pairs(sc.r, H)
    assert pc.device.type == "cuda" and torch.equal(pc.cpu(), pairs)
    with torch.no_grad():
        gpu = m.drift(sc, pc)
    for a, b in zip(cpu, gpu):
        scale = float(a.abs().max()) + 1e-300
        assert float((a - b.cpu()).abs().max()) <= 1e-10 * scale


@needs_cuda
@pytest.mark.parametrize("dim", [2, 3])
def test_momentum_conserved_on_cuda_with_noise(dim):
    m = random_model(7, dim, 1, substrate=False).to("cuda")
    L = 3.5
    box = torch.full((dim,), L, dtype=torch.float64, device="cuda")
    s = _to(random_state(7, 40 if dim == 2 else 60, dim, 1, L), "cuda")
    s = assert_momentum_conserved(m, s, box, torch.Generator(device="cuda").manual_seed(7), 5)
    assert s.v.device.type == "cuda"


@needs_cuda
@pytest.mark.parametrize("fast", [False, True])
def test_seeded_rollout_on_cuda_reproduces(fast):
    m = random_model(3, 2, 1).to("cuda")
    L = 4.0
    box = torch.full((2,), L, dtype=torch.float64, device="cuda")
    s = _to(random_state(3, 50, 2, 1, L), "cuda")
    if fast:
        dens = m.density_of(s, find_pairs(s.r, 1.0, box), box)
        m, errors = m.tabulated((s.S, dens))
        assert errors["pair_functions"] < 1e-3
        assert m.pairfn.table.cells.device.type == "cuda"
    a = rollout(m, s, 20, 0.01, box=box, seed=5)
    b = rollout(m, s, 20, 0.01, box=box, seed=5)
    c = rollout(m, s, 20, 0.01, box=box, seed=6)
    assert not torch.are_deterministic_algorithms_enabled()   # rollout restored the setting
    assert a.r.device.type == "cuda"
    assert bool(torch.isfinite(a.r).all())
    assert torch.equal(a.r, b.r) and torch.equal(a.S, b.S)
    assert not torch.equal(a.r, c.r)


@needs_cuda
def test_model_trained_on_cuda_loads_and_agrees_on_the_cpu(tmp_path):
    traj = from_tracks(langevin(frames=30))
    res = fit(traj, TrainConfig(**FAST, device="cuda", loc_noise="none"))
    assert next(res.model.parameters()).device.type == "cuda"
    assert res.history[-1]["train_nll"] < res.history[0]["train_nll"]
    save_model(res.model, tmp_path / "m")
    cpu_model, _ = load_model(tmp_path / "m", device="cpu")
    r, v = traj.pos[1], traj.vel[1]
    with torch.no_grad():
        S = cpu_model.initial_S(r)
        pairs = find_pairs(r, cpu_model.config.cutoff)
        want = cpu_model.drift(State(r, v, S), pairs)
        got = res.model.drift(_to(State(r, v, S), "cuda"), pairs.to("cuda"))
    for a, b in zip(want, got):
        assert float((a - b.cpu()).abs().max()) <= 1e-10 * (float(a.abs().max()) + 1e-300)
