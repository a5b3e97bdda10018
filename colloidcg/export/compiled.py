"""The model itself, compiled with TorchScript, for bundles.

:func:`compile_model` scripts the model's integrator (:mod:`colloidcg.core.integrators`),
which holds the model: the same modules colloidcg trains and simulates with, compiled, not
a copy of their equations. A bundle stores it as ``torchscript/model.pt``; it loads with
``torch.jit.load`` in a Python that has only torch. :func:`check_agreement` compares the
compiled and the eager model on a test configuration before a bundle is written (a smoke
test: they run the same code, so any difference is a compiler problem).

Units are the model's: lengths um, times s (see :data:`SIGNATURES`).
"""

from __future__ import annotations

import math

import torch

#: The compiled module's methods, with shapes and units; written into bundle.json and
#: docs/export.md. N particles, d dimensions (2 or 3), n_s entropic variables per particle,
#: P pairs. ``ts`` is ``torch.jit.load("torchscript/model.pt")``, ``ts.model`` the model.
COMMON = {
    "r": "(N, d) positions, um",
    "v": "(N, d) velocities, um/s",
    "S": "(N, n_s) entropic variables, dimensionless (units of k_B)",
    "pairs": "(P, 2) int64 particle index pairs i < j, every pair closer than the cutoff at least "
             "(from ts.model.pairs(r, box); farther pairs are dropped)",
    "box": "(d,) periodic box lengths in um, or None for open boundaries",
    "size": "optional (N,) per-particle sizes in the units of the tracks column the model was "
            "trained with (bundle.json architecture: size_column, size_scale); required by models "
            "with per-particle sizes (size_scale > 0), whose pair ranges are h (a_i + a_j) / 2, "
            "a = min(size / size_scale, 1); ignored by models without",
}
SIGNATURES = {
    "ts.model.pairs(r, box=None) -> pairs": "every pair i < j closer than the cutoff, sorted (all-pairs "
                                            "search in blocks of rows, O(N^2))",
    "ts.model.encode(r, pairs, box=None) -> S": "(N, n_s) entropic variables from the local structure "
                                                "(the rotation-, translation- and permutation-invariant encoder)",
    "ts.model.drift_rates(r, v, S, pairs, box=None, size=None) -> (drdt, dvdt, dSdt)":
        "deterministic part of dx = [L dE/dx + M dS/dx + k_B div M] dt + dx~: drdt (N, d) um/s (= v), "
        "dvdt (N, d) um/s^2, dSdt (N, n_s) 1/s",
    "ts.model.noise_covariance(r, v, S, pairs, dt, box=None, size=None) -> cov_v":
        "(N, d, d) um^2/s^2: covariance of each particle's velocity noise over dt (s), 2 k_B M_vv dt",
    "ts.model.noise_sample(r, v, S, pairs, dt, generator=None, box=None, size=None) -> (dv, dS)":
        "one noise increment over dt: dv (N, d) um/s, dS (N, n_s), covariance 2 k_B M dt",
    "ts.model.energy(r, v, S, pairs, box=None, size=None) -> (E, e)":
        "total energy () and per-particle energy (N,) m|v|^2/2 + U(S, V) [+ half of each of its pairs' "
        "energy] [+ deviatoric part], in the model energy unit (mass unit x um^2/s^2; k_B = 1); "
        "conserved by the deterministic dynamics",
    "ts.init(r, v, S, pairs, box, size, dt, generator, noise) -> carry":
        "the integrator's carried state from a recorded one (v: frame-averaged velocities, um/s; "
        "frame-averaged models draw the hidden instantaneous velocity); carry = (r, u, S, v_avg, force, dr)",
    "ts.step(carry, pairs, box, size, dt, generator, noise) -> carry":
        "one step of dt (s); carry.dr / dt is the step's averaged velocity, what rollouts record",
}


def compile_model(model) -> torch.jit.ScriptModule:
    """The model's integrator (holding the model), compiled with TorchScript, on the CPU."""
    import copy
    import warnings

    from ..core.integrators import integrator_for
    m = copy.deepcopy(model).to("cpu").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # TorchScript is deprecated upstream, still supported
        return torch.jit.script(integrator_for(m))


def check_agreement(model, compiled) -> dict:
    """Largest relative differences between ``compiled`` and the eager ``model`` on a test
    configuration (drift, covariance, energy, encoder, one noisy step); raise when they
    exceed 1e-9 (float64) or 1e-4 (float32): a compiler problem, not a user error."""
    from ..core.config import State
    p = next(model.parameters())
    dtype = p.dtype
    c = model.config
    gen = torch.Generator().manual_seed(12345)
    n = 24
    side = c.cutoff * (n / 5.0) ** (1.0 / c.dim)          # ~5 neighbours within the cutoff
    r = (torch.rand(n, c.dim, generator=gen, dtype=torch.float64) * side).to(dtype)
    vs = math.sqrt(max(c.theta_ref, 1e-30))
    v = (torch.randn(n, c.dim, generator=gen, dtype=torch.float64) * vs).to(dtype)
    import copy
    m = copy.deepcopy(model).to("cpu")           # the caller's model stays where it is
    size = (c.size_scale * torch.where(torch.rand(n, generator=gen) < 0.5, 1.0, 1 / 1.4)).to(dtype) \
        if c.size_scale > 0 else None
    with torch.no_grad():
        pairs = compiled.model.pairs(r, None)
        S = m.initial_S(r, pairs, None)
        S = S + 0.1 * torch.randn(S.shape, generator=gen, dtype=torch.float64).to(dtype)
        st = State(r, v, S, size)
        ns = m.compute(st, pairs, None)
        ref = {"drift": m.drift(st, pairs, None, ns=ns),
               "cov": (m.velocity_covariance(ns, 0.01),),
               "energy": (m.total_energy(st, pairs, None),),
               "encoder": (m.initial_S(r, pairs, None),)}
        got = {"drift": compiled.model.drift_rates(r, v, S, pairs, None, size),
               "cov": (compiled.model.noise_covariance(r, v, S, pairs, 0.01, None, size),),
               "energy": (compiled.model.energy(r, v, S, pairs, None, size)[0],),
               "encoder": (compiled.model.encode(r, pairs, None),)}
        from ..core.integrators import integrator_for
        eager = integrator_for(m)
        steps = []
        for integ in (eager, compiled):
            g = torch.Generator().manual_seed(7)
            carry = integ.init(r, v, S, pairs, None, size, 0.01, g, True)
            carry = integ.step(carry, pairs, None, size, 0.01, g, True)
            steps.append((carry.r, carry.u, carry.S))
        ref["step"], got["step"] = steps
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    diffs = {}
    for key in ref:
        worst = 0.0
        for a, b in zip(ref[key], got[key]):
            scale = float(a.abs().max()) or 1.0
            worst = max(worst, float((a - b).abs().max()) / scale)
        diffs[key] = worst
    bad = {k: d for k, d in diffs.items() if not d <= tol}
    if bad:
        raise RuntimeError(f"the compiled model disagrees with the eager one ({bad}, tolerance {tol})")
    return diffs
