"""Speed of the metriplectic core: training step and stochastic rollout step.

Setup (issue 4): 2D, about 12 neighbours per particle, pair networks with 2 hidden layers
of width 50, float32, 2 threads. Each (mode, N) runs in its own process so that its peak
memory (RSS) is its own.

    python benchmarks/core.py                 # table over N = 1e3, 1e4, 1e5, 1e6
    python benchmarks/core.py --sizes 1000 10000 --json
    python benchmarks/core.py --sizes 10000 1000000 --compare /tmp/before
        # side by side with another checkout of colloidcg (e.g. `git worktree add
        # /tmp/before <commit>`), run alternately in the same session

Training step: forward (drift, covariance), Gaussian NLL, backward, Adam step.
Rollout step: neighbour search with a Verlet skin (amortised), drift, noise, update,
with the pair functions and the equation of state tabulated (errors printed) unless
--no-tabulate; frame-averaged models (the default) take the exact-OU step. The workers run
with glibc allocator settings that keep freed memory (printed; --default-malloc for none).
With --json the last line is one JSON object with train_particle_steps_per_s and
rollout_particle_steps_per_s at N = 1e4 and rollout_peak_rss_gb_1e6.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time


def _system(n: int, dtype):
    import torch
    rho = 1.0
    h = math.sqrt(12.0 / (math.pi * rho))
    side = int(math.ceil(math.sqrt(n)))
    L = side / math.sqrt(rho)
    g = torch.Generator().manual_seed(0)
    ij = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)[:n]
    r = (ij.to(dtype) + 0.5 + 0.2 * (torch.rand(n, 2, generator=g, dtype=dtype) - 0.5)) / math.sqrt(rho)
    v = torch.randn(n, 2, generator=g, dtype=dtype)
    box = torch.tensor([L, L], dtype=dtype)
    return r, v, box, h


#: glibc returns large freed blocks to the system and faults them in again on the next
#: step; for rollouts of 10^5-10^6 particles that costs 20-50 % of the time. These settings
#: (documented glibc tunables, read at process start) keep freed memory for reuse.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296",
              "MALLOC_TOP_PAD_": "1073741824"}


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _tabulated(model, st, pairs, box):
    """The fast model and its table errors (pair functions, equation of state over this
    state's range), with this checkout's API or the one before the core redesign
    (colloidcg.core.tabulate, which installed the tables in the model)."""
    if hasattr(model, "tabulated"):
        dens = model.density_of(st, pairs, box)
        fast, errors = model.tabulated((st.S, dens))
        eos = errors.pop("density", None)
        return fast, max(errors.values()), eos
    from colloidcg.core.tabulate import tabulate, tabulate_eos
    err = tabulate(model)
    return model, err, tabulate_eos(model, st.S, model.compute(st, pairs, box).dens)


def worker(mode: str, n: int, steps: int, tab: bool) -> dict:
    import resource

    import torch
    torch.set_num_threads(2)
    from colloidcg.core import MetriplecticModel, ModelConfig, State, find_pairs, rollout, transition_nll
    from colloidcg.train import TrainConfig
    dtype = torch.float32
    r, v, box, h = _system(n, dtype)
    # the architecture training builds, learned pair energy included
    model = MetriplecticModel(ModelConfig(dim=2, cutoff=h, width=50, depth=2, tau=1.0,
                                          n_pair=TrainConfig().n_pair)).to(dtype)
    out = {"mode": mode, "n": n}
    if mode == "train":
        pairs = find_pairs(r, h, box)
        out["neighbours"] = 2 * pairs.shape[0] / n
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        v_next = v + 0.1 * torch.randn_like(v)
        valid = torch.ones(n, dtype=torch.bool)

        def one():
            opt.zero_grad()
            S = model.initial_S(r, pairs, box)
            loss, _ = transition_nll(model, State(r, v, S), v_next, valid, pairs, 0.01, box)
            loss.backward()
            opt.step()
        one()
        t0 = time.perf_counter()
        for _ in range(steps):
            one()
        dt = time.perf_counter() - t0
    else:
        with torch.no_grad():
            pairs = find_pairs(r, h, box)
            S = model.initial_S(r, pairs, box)
            st = State(r, v * 0.05, S)
            out["tabulation_max_rel_error"] = out["eos_table_max_rel_error"] = None
            if tab:
                model, out["tabulation_max_rel_error"], out["eos_table_max_rel_error"] = \
                    _tabulated(model, st, pairs, box)
            rollout(model, st, 1, 0.01, box=box, seed=0)          # warm-up
            t0 = time.perf_counter()
            res = rollout(model, st, steps, 0.01, box=box, seed=0, record_every=steps)
            dt = time.perf_counter() - t0
        out["neighbour_builds"] = res.n_neighbour_builds
        out["scheme"] = "exact-OU (frame-averaged)" if model.frame_averaged else "Euler-Maruyama"
    out["seconds_per_step"] = dt / steps
    out["particle_steps_per_s"] = n * steps / dt
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    p.add_argument("--train-max-n", type=int, default=100000,
                   help="largest N for the training benchmark (memory of the autograd graph)")
    p.add_argument("--no-tabulate", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--default-malloc", action="store_true",
                   help="run the workers with glibc's default allocator settings (see below)")
    p.add_argument("--compare", metavar="CHECKOUT", default=None,
                   help="also run every case with the colloidcg of this folder (a git worktree of "
                        "another commit), alternating with this one, and print both side by side")
    p.add_argument("--worker", nargs=3, metavar=("MODE", "N", "STEPS"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), int(a.worker[2]), not a.no_tabulate)))
        return 0
    load = _load()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sources = [("this", here)] + ([("compare", os.path.abspath(a.compare))] if a.compare else [])
    rows = []
    for n in a.sizes:
        for mode in ("train", "rollout"):
            if mode == "train" and n > a.train_max_n:
                continue
            steps = max(10, min(50, int(2e5 / n))) if mode == "rollout" else max(2, min(20, int(3e4 / n)))
            for label, src in sources:
                cmd = [sys.executable, __file__, "--worker", mode, str(n), str(steps)]
                if a.no_tabulate:
                    cmd.append("--no-tabulate")
                env = dict(os.environ) if a.default_malloc else {**os.environ, **MALLOC_ENV}
                env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")   # that checkout's colloidcg
                res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if res.returncode != 0:
                    rows.append({"mode": mode, "n": n, "source": label, "error": res.stderr.strip().splitlines()[-1:]})
                else:
                    rows.append({**json.loads(res.stdout.strip().splitlines()[-1]), "source": label})
    alloc = "glibc defaults" if a.default_malloc else " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items())
    print(f"allocator: {alloc}; load average before: {load}")
    if a.compare:
        print(f"this = {here}; compare = {os.path.abspath(a.compare)}")
    print(f"{'mode':8s} {'N':>9s} {'source':>8s} {'s/step':>10s} {'particle-steps/s':>17s} {'peak RSS GB':>12s} "
          f"{'nl builds':>10s}")
    for r in rows:
        if "error" in r:
            print(f"{r['mode']:8s} {r['n']:9d} {r['source']:>8s}  failed: {r['error']}")
            continue
        print(f"{r['mode']:8s} {r['n']:9d} {r['source']:>8s} {r['seconds_per_step']:10.4f} "
              f"{r['particle_steps_per_s']:17.0f} {r['peak_rss_gb']:12.2f} {r.get('neighbour_builds', ''):>10}")
    print(f"load average after: {_load()}")
    tab = [r.get("tabulation_max_rel_error") for r in rows if r.get("tabulation_max_rel_error") is not None]
    if tab:
        print(f"tabulated pair functions: max relative error {max(tab):.2e}")
    eos = [r.get("eos_table_max_rel_error") for r in rows if r.get("eos_table_max_rel_error") is not None]
    if eos:
        print(f"tabulated equation of state U, T, P, kappa: max relative error {max(eos):.2e}")
    if a.json:
        pick = lambda mode, n, key: next((r.get(key) for r in rows if r["mode"] == mode and r["n"] == n  # noqa: E731
                                          and r["source"] == "this"), None)
        print(json.dumps({"train_particle_steps_per_s": pick("train", 10000, "particle_steps_per_s"),
                          "rollout_particle_steps_per_s": pick("rollout", 10000, "particle_steps_per_s"),
                          "rollout_peak_rss_gb_1e6": pick("rollout", 1000000, "peak_rss_gb")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
