"""Why self-supervised carried S stays below softness on the natural glass (issue 20, case 2).

    python benchmarks/rearrangements_glass_diagnosis.py [--seed 0] [--aux-weight 0] [--epochs 8]

Trains one model as ``benchmarks/rearrangements.py --case glass --s-memory carried
--epochs 8`` does (the bidisperse glass of :func:`rearrangements.glass_video`, true
trajectories, positions only, trained on the frames before the softness split, cutoff
selected by training), carries S along all frames from each particle's entry, and reports
on the softness baseline's test rows (ROC AUC, sign fixed on its training rows):

- the carried S (what the benchmark scores), S at entry, the encoder applied to each row's
  own frame, and the freshly initialised encoder of the same seed at entry;
- size alone and minus the local area fraction beside them, and how S at entry correlates
  (Spearman, over the particles of the first frame) with each particle's diameter and local
  area fraction, and with its rearranging over the training frames;
- what S does for the likelihood: the summed one-step NLL per frame over the training
  frames with the carried S, with S at entry and with S replaced by its mean over
  particles (no structure), split into the rows inside a labelled rearrangement's window
  (the step t -> t + 1 inside [t0, t0 + lag] of a row labelled at t0) and the others.

Units: S in k_B, lengths px, NLL in nats. About 8 min on 2 shared cores (the glass is
simulated first, as the benchmark does).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import rearrangements as bench  # noqa: E402
from rearrangements_carried_diagnosis import fit_or_load, likelihood_use  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--aux-weight", type=float, default=0.0, help="auxiliary-loss weight (0: self-supervised)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--glass-frames", type=int, default=300)
    ap.add_argument("--glass-seed", type=int, default=1)
    ap.add_argument("--save", default=None, help="save the trained model to this folder (with its report)")
    ap.add_argument("--load", default=None, help="diagnose the model saved by --save instead of training one")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    from scipy.stats import spearmanr

    torch.set_num_threads(1)
    from colloidcg.core.graph import find_pairs
    from colloidcg.data import from_tracks
    from colloidcg.rearrangements import softness_baseline
    from colloidcg.rearrangements.scoring import score_against_softness
    from colloidcg.train import TrainConfig
    from colloidcg.train.calibrate import build_model
    from colloidcg.train.carried import carry_along
    from colloidcg.train.fitting import seed_everything, with_edge_halo

    vid = bench.glass_video(args.glass_frames, args.glass_seed)
    fov = [(-0.5, vid.meta["width"] - 0.5), (-0.5, vid.meta["height"] - 0.5)]
    tracks = vid.truth[["frame", "particle", "x", "y", "diameter"]]
    res = bench.glass_labels(tracks, fov)
    lag = int(res.parameters["lag_frames"])
    soft = softness_baseline(res.table, lag)
    t = res.table
    labels = t[["frame", "particle", "rearranging"]]
    xy = tracks[["frame", "particle", "x", "y"]]
    early = xy[xy["frame"] < soft.split_frame]
    traj = from_tracks(early, None, fps=1.0, um_per_px=1.0, labels=labels[labels["frame"] < soft.split_frame])
    cfg = TrainConfig(epochs=args.epochs, patience=args.epochs, aux_weight=args.aux_weight, horizon=lag, edge=0,
                      progress=False, seed=args.seed, s_memory="carried")
    model, report = fit_or_load(traj, cfg, args.load, args.save)
    cutoff = float(model.config.cutoff)
    print(f"trained: cutoff {cutoff:.1f} px, best epoch {report['best_epoch']}, held-out NLL "
          f"{report['best_val_nll']:.5f} per row")

    dtype = next(model.parameters()).dtype
    whole = from_tracks(xy, None, fps=1.0, um_per_px=1.0).to(dtype=dtype)
    loc_var = float(report["localisation_noise"]) ** 2
    car = carry_along(model, whole, loc_var)
    S = car.S[..., 0].numpy()
    with torch.no_grad():
        enc = np.stack([model.initial_S(r, find_pairs(r, model.cutoff, whole.box), whole.box)[:, 0].numpy()
                        for r in whole.pos])
        seed_everything(args.seed)
        tr = with_edge_halo(traj, 0, cutoff)
        fresh = build_model(tr, cfg, cutoff).eval()
        r0 = whole.pos[0]
        untrained = fresh.initial_S(r0, find_pairs(r0, fresh.cutoff, whole.box), whole.box)[:, 0].numpy()
    fi = {f: k for k, f in enumerate(whole.frames)}
    pi = {p: k for k, p in enumerate(whole.particles)}
    rf = np.array([fi[f] for f in t["frame"]])
    rp = np.array([pi[p] for p in t["particle"]])
    present = np.isfinite(whole.pos.numpy()[..., 0])
    entry = np.argmax(present, axis=0)               # each particle's first frame
    S_entry = S[entry, np.arange(S.shape[1])]
    vals = {"S carried (scored)": S[rf, rp], "S at entry": S_entry[rp],
            "encoder on the row's own frame": enc[rf, rp], "untrained encoder, frame 0": untrained[rp],
            "size alone": t["diameter"].to_numpy(float), "minus local area fraction": -t["area_fraction"].to_numpy(float)}
    rep = score_against_softness(t, vals, soft=soft, fix_sign=list(vals))
    tag = "self-supervised" if args.aux_weight == 0 else f"aux weight {args.aux_weight:g}"
    print(f"\n### Carried S on the glass ({tag}, seed {args.seed}, {args.epochs} epochs)\n")
    print("| predictor (softness's test rows) | ROC AUC +- s.e. | sign |\n|---|---:|---:|")
    for sc in [rep.softness, *rep.scores]:
        print(f"| {sc.name} | {sc.auc:.3f} +- {sc.se:.3f} | {sc.sign:+.0f} |")

    # what S at entry encodes: Spearman correlations over the particles of frame 0
    f0 = t["frame"].to_numpy() == t["frame"].min()
    train_rows = soft.rows(t)[0]
    y = t["rearranging"].to_numpy(float)
    rate = np.full(len(whole.particles), np.nan)
    ok = train_rows & np.isfinite(y)
    rate_s = np.bincount(rp[ok], weights=y[ok], minlength=len(rate)) / np.maximum(
        np.bincount(rp[ok], minlength=len(rate)), 1)
    rate[np.bincount(rp[ok], minlength=len(rate)) > 0] = rate_s[np.bincount(rp[ok], minlength=len(rate)) > 0]
    d0 = t["diameter"].to_numpy(float)[f0]
    a0 = t["area_fraction"].to_numpy(float)[f0]
    s0 = S_entry[rp[f0]]
    u0 = untrained[rp[f0]]
    m = np.isfinite(a0)
    print("\nSpearman correlation over the particles of the first frame (non-edge area fraction only):\n")
    print("| with | S at entry | untrained encoder |\n|---|---:|---:|")
    for name, x, mm in (("diameter", d0, np.ones_like(m)), ("local area fraction", a0, m),
                        ("rearranging rate over the training rows", rate[rp[f0]], np.isfinite(rate[rp[f0]]))):
        print(f"| {name} | {spearmanr(s0[mm], x[mm])[0]:+.2f} | {spearmanr(u0[mm], x[mm])[0]:+.2f} |")
    print(f"spread (std over particles) of S at entry {np.nanstd(S_entry):.2f} k_B; of S carried at the last frame "
          f"{np.nanstd(S[-1]):.2f}; of the production S_T - S_entry {np.nanstd(S[-1] - S_entry):.2f}")

    # rows inside a labelled rearrangement's window: the step f -> f + 1 lies in [t0, t0 + lag]
    lab = np.zeros(S.shape, bool)
    yb = t["rearranging"].to_numpy(bool)
    lab[rf[yb], rp[yb]] = True
    near = np.zeros_like(lab)
    for k in range(lag):
        near[k:] |= lab[:lab.shape[0] - k]
    nll = likelihood_use(model, whole, car.S, loc_var, soft.split_frame, near)
    n_f = soft.split_frame - 2
    print(f"\nWhat S does for the likelihood (training frames 1-{soft.split_frame - 2}): summed one-step NLL per "
          f"frame (nats; {near[1:soft.split_frame - 1].mean() * 100:.1f} % of the rows are inside a labelled "
          "window), minus that with S replaced by its mean over particles:\n")
    print("| S used | all rows | other rows | rows inside a labelled window |\n|---|---:|---:|---:|")
    base = nll["S's mean over particles (no structure)"][0]
    for name, (x, sh) in nll.items():
        d = x - base
        print(f"| {name} | {d.sum() / n_f:+.3f} | {d[~sh].sum() / n_f:+.3f} | {d[sh].sum() / n_f:+.3f} |")
    print(f"(the NLL itself, with the carried S: {nll['carried S (scored)'][0].sum() / n_f:.1f} nats per frame)")


if __name__ == "__main__":
    main()
