"""Why carried S loses its encoder's frame-0 ranking on the vacancy control (issue 20).

    python benchmarks/rearrangements_carried_diagnosis.py --aux-weight 1 --seed 0 [--n-s 1] [--s-heat work]

Trains one model as ``benchmarks/rearrangements.py --case vacancy --s-memory carried
--epochs 10 --cutoff 14.3`` does (frames before the softness split), carries S along all
120 frames from each particle's entry (frame 0 here: the lattice is in view throughout;
this is the S the benchmark scores, ``S.parquet`` holds and training windows start from),
and reports on the softness baseline's test rows (ROC AUC, sign fixed on its training rows):

- S at entry (the encoder at frame 0), the carried S, the accumulated production
  S_t - S_entry alone, and the encoder applied to each row's own frame;
- the spread over particles of S at entry and of the accumulated production at frames
  10-119, and the production split into the rows next to a shear (a step > 1 px at t or
  t + 1: the shears' heat) and the quiet rows (everything else);
- the per-particle mean production rate of the quiet rows: its mean and spread, and its
  correlation with the pair count (neighbours within the model's cutoff at frame 0) and
  with the exposure ceiling.

Units: S and dS in k_B (dS per frame), lengths px. 4-7 min on 2 shared cores.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import rearrangements as bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aux-weight", type=float, default=0.0, help="auxiliary-loss weight (0: self-supervised)")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-s", type=int, default=1, help="entropic variables (S0 is diagnosed)")
    ap.add_argument("--s-heat", default="drift", choices=["drift", "work"],
                    help="how carried S books heat (TrainConfig.s_heat), in training and along the tracks")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from colloidcg.core.graph import find_pairs
    from colloidcg.data import from_tracks
    from colloidcg.neighbours import count_within
    from colloidcg.rearrangements import detect, softness_baseline
    from colloidcg.rearrangements.scoring import score_against_softness
    from colloidcg.train import TrainConfig, fit
    from colloidcg.train.carried import carry_along

    tracks = bench.soft_spot_system()
    res = detect(tracks, lag=2, cutoff=13.0)
    soft = softness_baseline(res.table, 2)
    t = res.table
    labels = t[["frame", "particle", "rearranging"]]
    early = tracks[tracks["frame"] < soft.split_frame]
    traj = from_tracks(early, None, fps=1.0, um_per_px=1.0, labels=labels[labels["frame"] < soft.split_frame])
    fitted = fit(traj, TrainConfig(epochs=args.epochs, patience=args.epochs, aux_weight=args.aux_weight, horizon=2,
                                   edge=0, progress=False, seed=args.seed, s_memory="carried", cutoff=14.3,
                                   n_s=args.n_s, s_heat=args.s_heat))
    model = fitted.model
    dtype = next(model.parameters()).dtype
    whole = from_tracks(tracks, None, fps=1.0, um_per_px=1.0).to(dtype=dtype)
    car = carry_along(model, whole, float(fitted.report["localisation_noise"]) ** 2, heat=args.s_heat)
    S, dS = car.S[..., 0].numpy(), np.nan_to_num(car.dSdt[..., 0].numpy()) * whole.dt
    with torch.no_grad():
        enc = np.stack([model.initial_S(r, find_pairs(r, model.cutoff, whole.box), whole.box)[:, 0].numpy()
                        for r in whole.pos])
    fi = {f: k for k, f in enumerate(whole.frames)}
    pi = {p: k for k, p in enumerate(whole.particles)}
    rf = np.array([fi[f] for f in t["frame"]])
    rp = np.array([pi[p] for p in t["particle"]])
    vals = {"S at entry (encoder, frame 0)": S[0][rp], "S carried (scored)": S[rf, rp],
            "accumulated production S_t - S_entry": S[rf, rp] - S[0][rp],
            "encoder on the row's own frame": enc[rf, rp], "exposure ceiling": bench.vacancy_exposure(t)}
    rep = score_against_softness(t, vals, soft=soft, fix_sign=list(vals))
    tag = f"aux weight {args.aux_weight:g}, seed {args.seed}, n_s {args.n_s}, s_heat {args.s_heat}"
    print(f"\n### Carried S on the vacancy control ({tag})\n")
    print("| predictor (softness's test rows) | ROC AUC +- s.e. | sign |\n|---|---:|---:|")
    for sc in [rep.softness, *rep.scores]:
        print(f"| {sc.name} | {sc.auc:.3f} +- {sc.se:.3f} | {sc.sign:+.0f} |")

    T = S.shape[0]
    pos = whole.pos.numpy()
    step = np.zeros(S.shape)
    step[1:] = np.linalg.norm(pos[1:] - pos[:-1], axis=-1)
    jump = step > 1.0
    near = jump.copy()
    near[:-1] |= jump[1:]            # the rate at t is used from t to t + 1
    quiet = ~near
    # accumulated before frame f (rates of frames < f): acc_all[f] = S_f - S_entry
    def before(m):
        c = np.cumsum(np.where(m, dS, 0.0), 0)
        return np.concatenate([np.zeros_like(c[:1]), c[:-1]])

    acc_all, acc_shear, acc_quiet = before(np.ones_like(near)), before(near), before(quiet)
    print(f"\nsplit frame {soft.split_frame}; spread (std over particles, k_B) of S at entry {S[0].std():.2f}\n")
    print("| frame | std S carried | std accumulated | from shear rows | from quiet rows | mean accumulated |")
    print("|---:|---:|---:|---:|---:|---:|")
    for f in (10, 30, 60, 90, T - 1):
        print(f"| {f} | {S[f].std():.2f} | {acc_all[f].std():.2f} | {acc_shear[f].std():.2f} | "
              f"{acc_quiet[f].std():.2f} | {acc_all[f].mean():+.2f} |")
    rate = np.where(quiet, dS, 0.0).sum(0) / quiet.sum(0)
    pairs = count_within(pos[0], float(model.cutoff))
    expo = bench.vacancy_exposure(pd.DataFrame({"particle": np.asarray(whole.particles)}))
    print(f"\nquiet rows: mean dS per frame {dS[quiet].mean():+.3f} (std over rows {dS[quiet].std():.3f}); "
          f"shear rows: {dS[near].mean():+.3f} ({dS[near].std():.3f}); per-particle quiet rate: mean "
          f"{rate.mean():+.3f}, std over particles {rate.std():.3f}, correlation with the pair count "
          f"{np.corrcoef(rate, pairs)[0, 1]:+.2f}, with the exposure {np.corrcoef(rate, expo)[0, 1]:+.2f}, "
          f"with S at entry {np.corrcoef(rate, S[0])[0, 1]:+.2f}")
    if args.s_heat == "drift":
        parts = term_rates(model, whole, car.S, float(fitted.report["localisation_noise"]) ** 2)
        print("\nThe drift's dS split into its terms along the same carried path (k_B per frame; quiet rows; "
              "accumulated S_119 - S_entry):\n")
        print("| term | mean per quiet row | std over particles of the quiet rate | accumulated mean | "
              "accumulated std | corr(quiet rate, S at entry) |\n|---|---:|---:|---:|---:|---:|")
        for name, key in [*TERMS.items(), ("sum (the carried dS)", None)]:
            x = sum(parts.values()) if key is None else parts[key]
            qr = np.where(quiet, x, 0.0).sum(0) / quiet.sum(0)
            acc = x[1:T - 1].sum(0)
            print(f"| {name} | {x[quiet[:, :] & (np.arange(T) > 0)[:, None]].mean():+.4f} | {qr.std():.4f} | "
                  f"{acc.mean():+.2f} | {acc.std():.2f} | {np.corrcoef(qr, S[0])[0, 1]:+.2f} |")


TERMS = {"substrate friction heating": "sub_heat", "substrate fluctuation (Ito)": "sub_ito",
         "pair friction heating": "pair_heat", "pair friction fluctuation (Ito)": "pair_ito",
         "heat conduction (Fourier)": "cond", "heat conduction fluctuation (Ito)": "cond_ito"}


def _term_drift(which: str):
    """dynamics.drift with dS/dt restricted to one term of :data:`TERMS` (dv/dt unchanged)."""
    from colloidcg.core import dynamics

    full = dynamics.drift

    def drift(t, v, k_B, substrate, ito=True):
        dv, _ = full(t, v, k_B, substrate, ito)
        pair = dynamics.pair_drift
        if which == "sub_heat":
            s = dynamics.substrate_drift(t, v, 0.0, False)[1]
        elif which == "sub_ito":
            s = dynamics.substrate_drift(t, v, k_B, True)[1] - dynamics.substrate_drift(t, v, 0.0, False)[1]
        elif which == "cond":
            s = pair(t, k_B, False, False)[1]
        elif which == "pair_heat":
            s = pair(t, k_B, False, True)[1] - pair(t, k_B, False, False)[1]
        elif which == "cond_ito":
            s = pair(t, k_B, True, False)[1] - pair(t, k_B, False, False)[1]
        else:   # pair_ito
            s = (pair(t, k_B, True, True)[1] - pair(t, k_B, True, False)[1]
                 - pair(t, k_B, False, True)[1] + pair(t, k_B, False, False)[1])
        return dv, s.unsqueeze(-1) * t.w
    return drift


def term_rates(model, whole, S, loc_var: float):
    """{term: (T, N) k_B per frame}: the drift heat's dS/dt split into the terms of
    :data:`TERMS`, each evaluated along the same carried S path ``S`` (T, N, n_s), at the
    same posterior velocities as :func:`colloidcg.train.carried.carry_along` (every
    particle is in view in every frame of the control). Their sum is the carried dS/dt."""
    from unittest import mock

    import torch

    from colloidcg.core.config import State
    from colloidcg.core.graph import find_pairs
    from colloidcg.core.loss import transition_mean_cov
    from colloidcg.train import carried as C

    T, N, _ = whole.pos.shape
    out = {k: np.zeros((T, N)) for k in TERMS.values()}
    prev = None
    with torch.no_grad():
        for t in range(1, T):
            r, v = whole.pos[t], whole.vel[t]
            mom = transition_mean_cov(model, State(r, v, S[t], None), find_pairs(r, model.cutoff, whole.box),
                                      whole.dt, whole.box)
            if prev is None:
                vh, p = C.entry_posterior(mom.terms, v, loc_var, whole.dt, model.k_B)
            else:
                vh, p = C.velocity_posterior(prev, v, loc_var, whole.dt)
            for key in out:
                with mock.patch.object(C.dynamics, "drift", _term_drift(key)):
                    out[key][t] = C.latent_entropy_rate(model, mom.terms, vh, p, whole.dt)[:, 0].numpy() * whole.dt
            prev = mom
    return out


if __name__ == "__main__":
    main()
