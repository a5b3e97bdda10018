"""Why carried S loses its encoder's frame-0 ranking on the vacancy control (issue 20).

    python benchmarks/rearrangements_carried_diagnosis.py --aux-weight 1 --seed 0 [--n-s 1]

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
                                   n_s=args.n_s))
    model = fitted.model
    dtype = next(model.parameters()).dtype
    whole = from_tracks(tracks, None, fps=1.0, um_per_px=1.0).to(dtype=dtype)
    car = carry_along(model, whole, float(fitted.report["localisation_noise"]) ** 2)
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
    tag = f"aux weight {args.aux_weight:g}, seed {args.seed}, n_s {args.n_s}"
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


if __name__ == "__main__":
    main()
