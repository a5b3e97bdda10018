"""An energy term added in one module: a harmonic tether defined here, registered, and taken
up by the model, its guarantees, the compiled export, saving and the training report
without any other change (docs/architecture.md, "Adding an energy term")."""

from __future__ import annotations

import math

import pytest
import torch

from colloidcg.core import MetriplecticModel, ModelConfig, State, find_pairs
from colloidcg.core.persist import load_model, save_model
from colloidcg.core.terms import REGISTRY
from colloidcg.core.terms.base import EnergyTerm
from colloidcg.core.types import PairGeometry, TermOut, Thermo
from colloidcg.errors import ColloidcgError
from colloidcg.export.compiled import check_agreement, compile_model
from core_helpers import dense_L, dense_M, gradients

torch.set_num_threads(1)


class Tether(EnergyTerm):
    """sum over pairs of k theta_ref (1 - q_ij)^2 / 2: a soft repulsion within the range."""

    name = "test_tether"

    def __init__(self, k: float = 1.0):
        super().__init__()
        self.k = float(k)
        self.scale = 1.0

    def configure(self, config) -> None:
        self.scale = float(config.theta_ref)

    def evaluate(self, geom: PairGeometry, S: torch.Tensor, thermo: Thermo) -> TermOut:
        gap = 1.0 - geom.q
        c = self.k * self.scale
        return TermOut(None, 0.5 * c * gap.square(), -c * gap / geom.h, None)

    def report(self) -> dict:
        return {"k": self.k}


@pytest.fixture
def tether():
    REGISTRY[Tether.name] = Tether
    yield
    REGISTRY.pop(Tether.name, None)


def _model(k_B=0.5, **cfg):
    torch.manual_seed(2)
    m = MetriplecticModel(ModelConfig(cutoff=1.0, width=12, energy_width=10, encoder_width=10, k_B=k_B,
                                      theta_ref=0.8, terms={"test_tether": {"k": 30.0}}, **cfg)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m


def _state(n=12, L=1.6, seed=3):
    g = torch.Generator().manual_seed(seed)
    return State(torch.rand(n, 2, generator=g, dtype=torch.float64) * L,
                 torch.randn(n, 2, generator=g, dtype=torch.float64),
                 torch.randn(n, 1, generator=g, dtype=torch.float64))


def test_new_term_is_part_of_energy_forces_and_laws(tether):
    m = _model(k_B=0.0, substrate=False)
    assert list(m.terms) == ["density", "test_tether"] and m.term_reports()["test_tether"] == {"k": 30.0}
    s = _state(7, 1.2)
    pairs = find_pairs(s.r, 1.0)
    r = s.r.clone().requires_grad_(True)
    E = m.total_energy(State(r, s.v, s.S), pairs)
    g, = torch.autograd.grad(E, r)
    F = m.compute(s, pairs).force.detach()
    assert torch.allclose(F, -g, rtol=1e-9, atol=1e-11 * float(g.abs().max()))
    assert float(F.sum(0).abs().max()) < 1e-12 * float(F.abs().sum())
    without = MetriplecticModel(m.config.replace(terms={})).double()
    without.load_state_dict(m.state_dict())
    assert not torch.allclose(without.compute(s, pairs).force, F)          # the tether acts
    # first and second law with the new term: L dE + M dS is the drift, dE/dt = 0, dS/dt >= 0
    gE, gS = (t.detach() for t in gradients(m, s, pairs))
    M, L = dense_M(m, s, pairs).detach(), dense_L(m, 7)
    dr, dv, dS = m.drift(s, pairs)
    drift = torch.cat([dr.reshape(-1), dv.reshape(-1), dS.reshape(-1)]).detach()
    assert torch.allclose(drift, L @ gE + M @ gS, rtol=1e-10, atol=1e-12 * float(drift.abs().max()))
    assert abs(float(gE @ drift)) <= 1e-9 * float(gE.norm() * drift.norm())
    assert float(gS @ M @ gS) >= 0


def test_new_term_compiles_saves_and_reloads(tether, tmp_path):
    m = _model()
    compiled = compile_model(m)
    diffs = check_agreement(m, compiled)                      # raises when they disagree
    assert max(diffs.values()) < 1e-9
    s = _state(30, 3.0)
    pairs = find_pairs(s.r, 1.0)
    E, _ = compiled.model.energy(s.r, s.v, s.S, pairs, None, None)
    assert math.isclose(float(E), float(m.total_energy(s, pairs).detach()), rel_tol=1e-12)
    save_model(m, tmp_path / "model")
    m2, cfg = load_model(tmp_path / "model")
    assert cfg["model"]["terms"] == {"test_tether": {"k": 30.0}} and "test_tether" in m2.terms
    fast, errors = m2.tabulated()
    assert "test_tether" not in errors                        # nothing to tabulate: kept as it is
    REGISTRY.pop(Tether.name)
    with pytest.raises(ColloidcgError, match=r"energy term\(s\) \['test_tether'\] that this colloidcg"):
        load_model(tmp_path / "model")


def test_unknown_term_name_is_refused():
    with pytest.raises(ValueError, match="unknown energy term"):
        MetriplecticModel(ModelConfig(terms={"no_such_term": {}}))


def test_model_folder_with_the_earlier_weight_names_loads(tmp_path):
    """Model folders saved before the energy terms were modules (weights kernel.*, pair.*,
    energy.*, pair_potential.*, raw_shear; no substrate parameters without a substrate)
    load with the same weights and the same forces."""
    import hashlib
    import io
    import json

    from colloidcg.core.persist import RENAMED

    m = MetriplecticModel(ModelConfig(cutoff=1.0, width=12, energy_width=10, encoder_width=10, n_pair=3,
                                      deviatoric=True, substrate=False)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folder = save_model(m, tmp_path / "old")
    old = {}
    for key, value in m.state_dict().items():
        if key in ("raw_gamma0", "raw_alpha0"):
            continue                                  # absent from models without a substrate
        for before, now in RENAMED:
            if key.startswith(now):
                key = before + key[len(now):]
                break
        old[key] = value
    assert "energy.mu" in old and "raw_shear" in old and "kernel.raw" in old
    buf = io.BytesIO()
    torch.save(old, buf)
    (folder / "model.pt").write_bytes(buf.getvalue())
    cfg = json.loads((folder / "config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (folder / "config.json").write_text(json.dumps(cfg))
    m2, _ = load_model(folder)
    s = _state(20, 2.0)
    pairs = find_pairs(s.r, 1.0)
    assert torch.equal(m2.compute(s, pairs).force, m.compute(s, pairs).force)


def test_training_options_refuse_an_unknown_term_before_any_work():
    from colloidcg.errors import ParameterError
    from colloidcg.train import TrainConfig

    with pytest.raises(ParameterError, match=r"\[train\] terms: expected energy terms among"):
        TrainConfig(model=ModelConfig(n_pair=8, terms={"no_such_term": {}})).validate("[train] ")


def test_a_new_term_calibrates_its_own_option(tether):
    """A term's calibrated value that is not a ModelConfig field is stored with its options
    (ModelConfig.terms) and reaches the term again when the model is loaded."""
    class Calibrated(Tether):
        name = "test_tether"

        def __init__(self, k: float = 1.0, ref: float = 1.0):
            super().__init__(k)
            self.ref = float(ref)

        def calibrate(self, neighbour_weight, w0=0.0):
            return {"ref": float(neighbour_weight.mean())}

    REGISTRY[Tether.name] = Calibrated
    m = _model()
    changes = m.calibrate(torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert changes["terms"]["test_tether"] == {"k": 30.0, "ref": 3.0}
    assert m.config.terms["test_tether"]["ref"] == 3.0
    again = MetriplecticModel(m.config)
    assert again.terms["test_tether"].ref == 3.0
