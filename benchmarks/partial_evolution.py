"""Partial evolution (colloidcg.scaling.partial): cost and accuracy against the whole system.

    python benchmarks/partial_evolution.py cost          # patch vs whole system at 16x area
    python benchmarks/partial_evolution.py accuracy      # MSD and |psi6| increments, halo 2x and 3x
    python benchmarks/partial_evolution.py accuracy --phi 0.75 --steps 10 20 50

**cost**: a large periodic soft-disk system (4096 monodisperse disks of 16 px, area
fraction 0.8, FIRE-relaxed) and one patch of 1/16 of its area (K = 16, the size of the
small system one would learn from) with a halo of 2 x the interaction range; the time of
one macro step (``--frames``) of the patch (without and with mobile buffers of
``--buffers`` interaction ranges) and of the whole system, for synthetic's
overdamped soft disks (SoftDiskSimulator, 4 micro steps per frame) and for a learned model
(ModelSimulator; a random-init 2D MetriplecticModel, float32, h = 1.5 diameters, exact-OU,
1 step per frame). One torch thread.

**accuracy**: monodisperse soft disks (D0 = 0.05 px^2/frame, kT = 1e-3, synthetic's
defaults) quenched from a random packing at area fraction ``--phi`` into the
hexatic/crystal range and aged (``--age`` frames) so that |psi6| grows; snapshots every
``--every`` frames after that. For each snapshot, ``--patches`` patches of 1/16 of the
box (K = 16) are evolved by one macro step of each length in ``--steps`` with a frozen
halo of 2x and 3x the interaction range (``--halos``; and with mobile buffers of
``--buffers`` interaction ranges between patch and halo), and the whole system is evolved
with the same keyed noise. Compared over the interior particles of each patch: the mean-square
displacement and the increment of the mean |psi6_i| (freud's Hexatic, neighbours within
1.45 lattice spacings, computed with the halo / the rest of the system present). Printed:
the whole system's mean increment, the mean and RMS of (patch - whole) increments, and
the RMS of the whole system's increment across patches (the statistical scale).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

D = 16.0


def packing(n_side: int, phi: float, seed: int):
    from colloidcg.scaling.simulators import MicroState
    from colloidcg.synthetic.dynamics import Box, fire_relax
    rng = np.random.default_rng(seed)
    n = n_side * n_side
    L = float(np.sqrt(n * np.pi * D * D / 4 / phi))
    pos = fire_relax(rng.uniform(0, L, (n, 2)), np.full(n, D), Box(L, L, 0.0))
    return MicroState(np.mod(pos, L), None, np.array([L, L]), np.arange(n, dtype=np.int64), None, None)


def timed(fn, repeat: int = 1):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def cost(args) -> None:
    from colloidcg.core import MetriplecticModel, ModelConfig
    from colloidcg.scaling.partial import full_step, partial_evolution
    from colloidcg.scaling.simulators import ModelSimulator, SoftDiskSimulator

    snap = packing(64, 0.8, 0)
    L = snap.box[0]
    patch = L / 4
    print(f"whole system: {len(snap.pos)} disks, box {L:.0f} px; patch {patch:.0f} px (K = 16)")
    sims = [("soft disks", SoftDiskSimulator(diffusion=0.05, kT=1e-3, diameter=D, substeps=4), args.frames)]
    torch.manual_seed(0)
    m = MetriplecticModel(ModelConfig(dim=2, cutoff=1.5 * D, n_pair=2))
    sims.append(("learned model (exact-OU)", ModelSimulator(m, {}), args.model_frames))
    print(f"{'simulator':<26} {'frames':>6} {'buffer':>6} {'simulated N':>11} {'patch s':>9} {'whole s':>9} "
          f"{'ratio':>7}")
    for name, sim, frames in sims:
        s0 = sim.prepare(snap)
        tf, _ = timed(lambda: full_step(sim, s0, frames, 1), args.repeat)
        for buf in [0.0] + [b for b in args.buffers if b > 0]:
            tp, ps = timed(lambda: partial_evolution(sim, [s0], patch=patch, steps=frames, seed=1,
                                                     buffer=buf * sim.interaction_range), args.repeat)
            print(f"{name:<26} {frames:>6} {buf:>5}x {len(ps[0].rows):>11} {tp:>9.3f} {tf:>9.3f} {tf / tp:>7.1f}")


def hexatic(pos: np.ndarray, box, rc: float) -> np.ndarray:
    """(N,) |psi6_i| with neighbours within rc (freud), periodic ``box`` or open (box None)."""
    import freud
    if box is None:
        lo, hi = pos.min(0), pos.max(0)
        side = (hi - lo) + 4 * rc
        fb = freud.box.Box(float(side[0]), float(side[1]), is2D=True)
        fb.periodic = (False, False, False)
        p = pos - lo - 0.5 * (hi - lo)
    else:
        fb = freud.box.Box(float(box[0]), float(box[1]), is2D=True)
        p = pos - 0.5 * np.asarray(box)
    pts = np.column_stack([p, np.zeros(len(p))])
    h = freud.order.Hexatic(k=6)
    h.compute((fb, pts), neighbors={"r_max": rc, "exclude_ii": True})
    return np.abs(h.particle_order)


def accuracy(args) -> None:
    from colloidcg.scaling.partial import full_step, partial_evolution
    from colloidcg.scaling.simulators import SoftDiskSimulator

    sim = SoftDiskSimulator(diffusion=0.05, kT=1e-3, diameter=D, substeps=4)
    a = D * np.sqrt(np.pi / (2 * np.sqrt(3) * args.phi))          # triangular lattice spacing
    rc = 1.45 * a
    snap = packing(args.n_side, args.phi, args.seed)
    L = snap.box[0]
    patch = L / 4
    t0 = time.perf_counter()
    snap = sim.advance(snap, args.age, frozen=None, key=10 ** 6 + args.seed)
    snaps = []
    for k in range(args.snapshots):
        if k:
            snap = sim.advance(snap, args.every, frozen=None, key=10 ** 6 + 1000 * k + args.seed)
        snaps.append(snap)
    psi = [hexatic(s.pos, s.box, rc).mean() for s in snaps]
    print(f"{len(snap.pos)} disks, phi {args.phi}, box {L:.0f} px, patch {patch:.0f} px (K = 16); "
          f"aged {args.age} frames ({time.perf_counter() - t0:.0f} s); global |psi6| of the snapshots "
          + ", ".join(f"{p:.3f}" for p in psi))
    print(f"{'frames':>6} {'halo':>5} {'buffer':>6} | {'MSD whole':>10} {'bias':>10} {'rms diff':>10} {'rms whole':>10} | "
          f"{'d|psi6| whole':>13} {'bias':>10} {'rms diff':>10} {'rms whole':>10}")
    for steps in args.steps:
        variants = [(h, 0.0) for h in args.halos] + [(args.halos[0], b) for b in args.buffers if b > 0]
        rows = {v: [] for v in variants}
        for s, snap in enumerate(snaps):
            psi0 = hexatic(snap.pos, snap.box, rc)
            for p in range(args.patches):
                for k, (h, buf) in enumerate(variants):
                    (ps,) = partial_evolution(sim, [snap], patch=patch, steps=steps, halo=h * sim.interaction_range,
                                              buffer=buf * sim.interaction_range, seed=1000 * s + p)
                    if k == 0:
                        full = full_step(sim, snap, steps, ps.key)
                        dfull = full.pos[ps.inner] - snap.pos[ps.inner]
                        dfull -= snap.box * np.round(dfull / snap.box)
                        msd_f = float((dfull ** 2).sum(1).mean())
                        dpsi_f = float(hexatic(full.pos, full.box, rc)[ps.inner].mean() - psi0[ps.inner].mean())
                    m = ps.inner_mask
                    dp = ps.after.pos[m] - ps.before.pos[m]
                    msd_p = float((dp ** 2).sum(1).mean())
                    b = hexatic(ps.before.pos, None, rc)[m].mean()
                    dpsi_p = float(hexatic(ps.after.pos, None, rc)[m].mean() - b)
                    rows[(h, buf)].append((msd_f, msd_p, dpsi_f, dpsi_p))
        for (h, buf) in variants:
            r = np.array(rows[(h, buf)])
            dm, dq = r[:, 1] - r[:, 0], r[:, 3] - r[:, 2]
            print(f"{steps:>6} {h:>4}x {buf:>5}x | {r[:, 0].mean():>10.4f} {dm.mean():>+10.4f} {np.sqrt((dm ** 2).mean()):>10.4f} "
                  f"{r[:, 0].std():>10.4f} | {r[:, 2].mean():>+13.5f} {dq.mean():>+10.5f} "
                  f"{np.sqrt((dq ** 2).mean()):>10.5f} {r[:, 2].std():>10.5f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["cost", "accuracy"])
    ap.add_argument("--frames", type=int, default=20, help="cost: soft-disk macro step, frames")
    ap.add_argument("--model-frames", type=int, default=5, help="cost: learned-model macro step, frames")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--phi", type=float, default=0.8)
    ap.add_argument("--n-side", type=int, default=32, help="accuracy: n_side^2 disks")
    ap.add_argument("--age", type=int, default=2000, help="accuracy: frames after the quench")
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--snapshots", type=int, default=3)
    ap.add_argument("--patches", type=int, default=8)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--halos", type=float, nargs="+", default=[2.0, 3.0])
    ap.add_argument("--buffers", type=float, nargs="*", default=[1.0, 2.0], help="mobile buffers, ranges")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    {"cost": cost, "accuracy": accuracy}[args.what](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
