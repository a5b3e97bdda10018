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

With ``--s-heat work`` it also carries S with the heat-conduction terms left out (a
probe, not an option of the code) and scores the conduction's share; for every heat it
reports each value's AUC on the training rows with the sign fixed there (the sign's
stability), the AUC of carried S and S at entry over four bins of test frames, and what S
does for the likelihood: the summed one-step NLL per frame over the training frames with
the carried S, with S at entry, and with S replaced by its mean over particles (no
structure), split into quiet rows and rows next to a shear. ``--untrained`` scores the
freshly initialised encoder of the same seed at frame 0 (before any training). It prints
the validation NLL of every epoch and the heat weights; ``--save DIR`` keeps the trained
model, ``--load DIR`` diagnoses a kept one without training. ``--budget`` prints only the
control's shear-budget oracle (no training): the exposure ceiling plus or minus the
shear amplitude a site has already received, and the label rate by spent budget;
``--features`` only what the encoder's features rank at frame 0 (no training);
``--variance-probe`` only what the self-supervised signal itself can rank (no training):
regressions from the frame-0 features to each site's velocity variance over the training
frames, the per-site quantity a Gaussian likelihood rewards S for following.

With n_s > 1 the other variables' S at entry and carried S are scored too (the benchmark
scores S0 only). Units: S and dS in k_B (dS per frame), lengths px, NLL in nats. 4-7 min on 2 shared cores.
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


def vacancy_control():
    """(tracks, rearrangements table, softness baseline) of the benchmark's vacancy control,
    labelled as ``benchmarks/rearrangements.py --case vacancy`` labels it (lag 2 frames,
    D2min cutoff 13 px)."""
    from colloidcg.rearrangements import detect, softness_baseline

    tracks = bench.soft_spot_system()
    res = detect(tracks, lag=2, cutoff=13.0)
    return tracks, res.table, softness_baseline(res.table, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--aux-weight", type=float, default=0.0, help="auxiliary-loss weight (0: self-supervised)")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-s", type=int, default=1, help="entropic variables (S0 is diagnosed)")
    ap.add_argument("--s-heat", default="drift", choices=["drift", "work"],
                    help="how carried S books heat (TrainConfig.s_heat), in training and along the tracks")
    ap.add_argument("--ordered-s", action="store_true",
                    help="heat weights sorted ascending (ModelConfig.ordered_s): S0 receives the least heat")
    ap.add_argument("--s0-heat-share", type=float, default=0.0, dest="s0_heat_share", metavar="W",
                    help="S0's fixed share of the heat (ModelConfig.s0_heat_share; default 0: learned)")
    ap.add_argument("--untrained", action="store_true",
                    help="also score the untrained encoder of the same seed at frame 0")
    ap.add_argument("--save", default=None, help="save the trained model to this folder (with its report)")
    ap.add_argument("--load", default=None,
                    help="diagnose the model saved by --save in this folder instead of training one")
    ap.add_argument("--budget", action="store_true",
                    help="only the control's shear-budget oracle (no training): what a memory of past "
                         "shears adds to the exposure ceiling, and with which sign")
    ap.add_argument("--features", action="store_true",
                    help="only what the encoder's features can rank at entry (no training): the smooth "
                         "neighbour weight and a logistic fit on all features, by cutoff")
    ap.add_argument("--variance-probe", action="store_true",
                    help="only what the self-supervised signal supports (no training): regressions of "
                         "each site's training-frame velocity variance on its frame-0 features, by "
                         "regularisation")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.budget or args.features or args.variance_probe:
        if args.budget:
            shear_budget_oracle()
        if args.features:
            encoder_features_at_entry()
        if args.variance_probe:
            variance_probe()
        return
    import torch

    torch.set_num_threads(1)
    from colloidcg.core.graph import find_pairs
    from colloidcg.data import from_tracks
    from colloidcg.neighbours import count_within
    from colloidcg.rearrangements.scoring import auc, score_against_softness
    from colloidcg.train import TrainConfig
    from colloidcg.train.carried import carry_along

    tracks, t, soft = vacancy_control()
    labels = t[["frame", "particle", "rearranging"]]
    early = tracks[tracks["frame"] < soft.split_frame]
    traj = from_tracks(early, None, fps=1.0, um_per_px=1.0, labels=labels[labels["frame"] < soft.split_frame])
    model, report = fit_or_load(traj, TrainConfig(epochs=args.epochs, patience=args.epochs, aux_weight=args.aux_weight,
                                                  horizon=2, edge=0, progress=False, seed=args.seed,
                                                  s_memory="carried", cutoff=14.3, n_s=args.n_s,
                                                  s_heat=args.s_heat, ordered_s=args.ordered_s,
                                                  s0_heat_share=args.s0_heat_share),
                                args.load, args.save)
    print("training (validation NLL per epoch, the best epoch is kept): "
          + ", ".join(f"{h['epoch']}: {h['val_nll']:.4f}" for h in report["history"])
          + f"; best epoch {report['best_epoch']}; heat weights w "
          + " / ".join(f"{x:.3f}" for x in model.heat_weights.detach().tolist()))
    dtype = next(model.parameters()).dtype
    whole = from_tracks(tracks, None, fps=1.0, um_per_px=1.0).to(dtype=dtype)
    car = carry_along(model, whole, float(report["localisation_noise"]) ** 2, heat=args.s_heat)
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
    S_all = car.S.numpy()
    for a in range(1, S_all.shape[-1]):       # the other entropic variables (not scored by the benchmark)
        vals[f"S{a} at entry (heat weight {float(model.heat_weights[a]):.3f})"] = S_all[0, rp, a]
        vals[f"S{a} carried"] = S_all[rf, rp, a]
    loc_var = float(report["localisation_noise"]) ** 2
    S_nc = None
    if args.s_heat == "work":
        S_nc = carried_without_conduction(model, whole, loc_var)
        vals["S carried without heat conduction (probe)"] = S_nc[rf, rp]
        vals["conduction's share S_t - S_t(no conduction)"] = S[rf, rp] - S_nc[rf, rp]
    if args.untrained:
        vals["untrained encoder of the same seed, frame 0"] = untrained_entry(traj, whole.particles, args)[rp]
    rep = score_against_softness(t, vals, soft=soft, fix_sign=list(vals))
    tag = f"aux weight {args.aux_weight:g}, seed {args.seed}, n_s {args.n_s}, s_heat {args.s_heat}"
    train_rows, test_rows = soft.rows(t)
    y = t["rearranging"].to_numpy(bool)
    print(f"\n### Carried S on the vacancy control ({tag})\n")
    print("| predictor (softness's test rows) | ROC AUC +- s.e. | sign | AUC on the training rows (sign fixed there) |"
          "\n|---|---:|---:|---:|")
    for sc in [rep.softness, *rep.scores]:
        v = soft.softness(t) if sc is rep.softness else vals[sc.name]
        ok = train_rows & np.isfinite(v)
        print(f"| {sc.name} | {sc.auc:.3f} +- {sc.se:.3f} | {sc.sign:+.0f} | {auc(sc.sign * v[ok], y[ok]):.3f} |")
    fr = t["frame"].to_numpy()
    sg_c, sg_e = rep["S carried (scored)"].sign, rep["S at entry (encoder, frame 0)"].sign
    print("\nby test frames (AUC, signs as above): " + "; ".join(
        f"{lo}-{hi - 1}: carried {auc(sg_c * vals['S carried (scored)'][m], y[m]):.3f}, "
        f"entry {auc(sg_e * vals['S at entry (encoder, frame 0)'][m], y[m]):.3f}"
        for lo, hi in ((60, 75), (75, 90), (90, 105), (105, 120))
        for m in [test_rows & (fr >= lo) & (fr < hi)]))

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
    if S_nc is not None:
        print(f"\nspread (std over particles, k_B) of the conduction's share at frames 60 / {T - 1}: "
              f"{np.std(S[60] - S_nc[60]):.2f} / {np.std(S[T - 1] - S_nc[T - 1]):.2f}; correlation of S at entry "
              f"with the exposure {np.corrcoef(S[0], expo)[0, 1]:+.2f}, of the accumulated production at frame "
              f"{T - 1} {np.corrcoef(S[T - 1] - S[0], expo)[0, 1]:+.2f}, of its part without conduction "
              f"{np.corrcoef(S_nc[T - 1] - S[0], expo)[0, 1]:+.2f}")
    nll = likelihood_use(model, whole, car.S, loc_var, soft.split_frame, near)
    print(f"\nWhat S does for the likelihood (training frames 1-{soft.split_frame - 2}): summed one-step NLL per "
          f"frame (nats; {near[1:soft.split_frame - 1].mean() * 100:.1f} % of the rows are next to a shear), "
          "minus that with S replaced by its mean over particles:\n")
    print("| S used | all rows | quiet rows | rows next to a shear |\n|---|---:|---:|---:|")
    base = nll["S's mean over particles (no structure)"]
    for name, (x, sh) in nll.items():
        d = x - base[0]
        n_f = soft.split_frame - 2
        print(f"| {name} | {d.sum() / n_f:+.3f} | {d[~sh].sum() / n_f:+.3f} | {d[sh].sum() / n_f:+.3f} |")
    print(f"(the NLL itself, with the carried S: {nll['carried S (scored)'][0].sum() / (soft.split_frame - 2):.1f} "
          "nats per frame)")
    if args.s_heat == "drift":
        parts = term_rates(model, whole, car.S, float(report["localisation_noise"]) ** 2)
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


def fit_or_load(traj, cfg, load: str | None, save: str | None):
    """(model, fit report with its history): the model saved in folder ``load`` by an earlier
    run, or trained on ``traj`` with ``cfg`` (and saved to folder ``save`` when given)."""
    import json

    from colloidcg.core.persist import load_model, save_model
    from colloidcg.outputs import atomic_write_json
    from colloidcg.train import fit

    if load:
        return load_model(load)[0], json.loads((Path(load) / "fit_report.json").read_text())
    fitted = fit(traj, cfg)
    report = {**fitted.report, "history": fitted.history}
    if save:
        save_model(fitted.model, save)
        atomic_write_json(Path(save) / "fit_report.json", report)
    return fitted.model, report


def shear_budget_oracle() -> None:
    """Print what a memory of past shears tells about the next ones on the vacancy control
    (its generating rule replayed; labels from the data as the benchmark makes them).

    Each of the 40 vacancies shears exactly twice, at random frames 5-117, so a site whose
    vacancies have spent their shears will not shear again. The exposure ceiling is each
    site's summed shear amplitude (px; :func:`rearrangements.vacancy_exposure`); "past" is
    the amplitude of the shears that already hit the site before or at the row's frame.
    Scored like every predictor: ROC AUC on the softness baseline's test rows, sign fixed on
    its training rows; then the label rate of the exposed test rows by the spent fraction
    past / (2 x exposure) of their shear budget."""
    from colloidcg.rearrangements.scoring import score_against_softness

    tracks, t, soft = vacancy_control()
    rng = np.random.default_rng(0)               # the control's own draws, in its order
    full, vac = bench._vacancy_lattice(rng)
    keep = np.ones(len(full), bool)
    keep[vac] = False
    p0, T = full[keep], int(tracks["frame"].max()) + 1
    past = np.zeros((T, len(p0)))
    for s in full[vac]:
        amp = np.linalg.norm(bench._shear_amplitude(p0, s), axis=1)
        for f in rng.choice(np.arange(5, T - 2), 2, replace=False):
            past[f:] += amp
    expo = bench.vacancy_exposure(t)
    c = past[t["frame"].to_numpy(), t["particle"].to_numpy()]
    vals = {"exposure (the ceiling)": expo}
    for a in (-1.0, -0.5, -0.25, 0.25, 0.5, 1.0):
        vals[f"exposure {a:+g} x past"] = expo + a * c
    rep = score_against_softness(t, vals, soft=soft, fix_sign=list(vals))
    print("\n### The vacancy control's shear budget (oracle, no training)\n")
    print("| predictor (softness's test rows; past: shear amplitude already received, px) | ROC AUC +- s.e. | sign |")
    print("|---|---:|---:|")
    for k in vals:
        print(f"| {k} | {rep[k].auc:.3f} +- {rep[k].se:.3f} | {rep[k].sign:+.0f} |")
    test = soft.rows(t)[1]
    y = t["rearranging"].to_numpy(bool)
    exposed = expo > 0.5
    spent = np.where(exposed, c / (2 * np.where(exposed, expo, 1.0)), np.nan)
    print("\n| exposed test rows (exposure > 0.5 px), spent fraction of the shear budget | rows | rearranging |")
    print("|---|---:|---:|")
    for lo, hi, name in ((-1, 0.01, "none"), (0.01, 0.4, "0.01-0.4"), (0.4, 0.6, "about half"),
                         (0.6, 0.99, "0.6-0.99"), (0.99, 9, "all")):
        m = test & exposed & (spent > lo) & (spent <= hi)
        print(f"| {name} | {int(m.sum())} | {100 * y[m].mean():.2f} % |")
    m = test & ~exposed
    print(f"| (unexposed rows) | {int(m.sum())} | {100 * y[m].mean():.2f} % |")


def encoder_features_at_entry() -> None:
    """Print what the structural encoder's invariant features (:func:`colloidcg.core.encoder.invariant_features`)
    of frame 0 can rank on the vacancy control, by the encoder's radius (the model's cutoff,
    px): the smooth neighbour weight sum_j (1 - r_ij / h)^2 alone, and a class-balanced
    logistic regression on all features fitted on the softness baseline's training rows
    (labels: an upper reference for a read-out, not self-supervised); from the frame-0
    positions and from their mean over frames 0-4 (localisation noise averaged down)."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from colloidcg.core.encoder import StructuralEncoder
    from colloidcg.core.graph import find_pairs
    from colloidcg.rearrangements.scoring import score_against_softness

    tracks, t, soft = vacancy_control()
    pid, y, train = t["particle"].to_numpy(), t["rearranging"].to_numpy(bool), soft.rows(t)[0]
    print("\n### What the encoder's features rank at entry (frame 0, no training)\n")
    print("| positions | encoder radius (px) | neighbour weight alone | logistic fit on all features (labels) |")
    print("|---|---:|---:|---:|")
    for frames in (1, 5):
        xy = tracks[tracks["frame"] < frames].groupby("particle")[["x", "y"]].mean()
        r = torch.tensor(xy.to_numpy(float))
        for h in (14.3, 17.0, 19.0, 21.0, 24.0):
            F = StructuralEncoder(2).double().features(r, find_pairs(r, h, None), h, None).numpy()
            X = F[xy.index.get_indexer(pid)]
            fit = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
            fit.fit(X[train], y[train])
            rep = score_against_softness(t, {"w": X[:, 8], "fit": fit.decision_function(X)}, soft=soft,
                                         fix_sign=["w", "fit"])
            print(f"| {'frame 0' if frames == 1 else 'mean of frames 0-4'} | {h:g} | {rep['w'].auc:.3f} | "
                  f"{rep['fit'].auc:.3f} |")


def variance_probe() -> None:
    """Print how well each site's own training-frame velocity variance, and regressions of
    it on the encoder's frame-0 features (cutoff 14.3 px), rank the sites on the softness
    baseline's test rows (sign fixed on its training rows).

    A Gaussian one-step likelihood rewards S, through the temperature it sets, for following
    each site's velocity variance; over the training frames that variance is a noisy
    target (which vacancies happened to shear before the split is random). The
    regressions show how much of the exposure ceiling that target supports, and how
    much a flexible read-out loses by fitting its noise: ridge fits over the
    regularisation strength (fitted on all sites: no labels are used), a 5-fold
    cross-validated ridge, and two-layer MLPs (scikit-learn's, ReLU) by
    width and L2 penalty."""
    import torch
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.model_selection import cross_val_predict
    from sklearn.neural_network import MLPRegressor

    from colloidcg.core.encoder import StructuralEncoder
    from colloidcg.core.graph import find_pairs
    from colloidcg.rearrangements.scoring import score_against_softness

    tracks, t, soft = vacancy_control()
    wide = tracks.sort_values(["particle", "frame"])
    n_frames = tracks["frame"].nunique()
    pos = wide[["x", "y"]].to_numpy(float).reshape(-1, n_frames, 2)   # (N, T, 2) px
    steps = np.diff(pos[:, :soft.split_frame], axis=1)                   # training frames only
    log_var = np.log(np.square(steps).sum(-1).mean(1))                  # (N,) log px^2 / frame^2
    r0 = torch.tensor(pos[:, 0])
    h = 14.3
    F = StructuralEncoder(2).double().features(r0, find_pairs(r0, h, None), h, None).numpy()
    X = (F - F.mean(0)) / (F.std(0) + 1e-12)
    pid = t["particle"].to_numpy()
    values = {"the site's own training-frame variance": log_var[pid],
              "the smooth neighbour weight alone (frame 0)": F[pid, 8]}
    for alpha in (1e-3, 10.0, 100.0, 1000.0):
        fit = Ridge(alpha=alpha).fit(X, log_var)
        values[f"ridge, alpha {alpha:g}"] = (X @ fit.coef_)[pid]
    values["ridge, alpha by leave-one-out, 5-fold predictions"] = cross_val_predict(
        RidgeCV(alphas=np.logspace(-3, 3, 13)), X, log_var, cv=5)[pid]
    for width in (4, 32):
        for l2 in (1e-4, 1.0):
            fit = MLPRegressor(hidden_layer_sizes=(width, width), alpha=l2, max_iter=3000, random_state=0)
            values[f"MLP {width}x{width}, L2 {l2:g}"] = fit.fit(X, log_var).predict(X)[pid]
    rep = score_against_softness(t, values, soft=soft, fix_sign=list(values))
    print("\n### What the self-supervised signal supports at entry (no training)\n")
    print(f"softness {rep['softness'].auc:.3f} +- {rep['softness'].se:.3f}; target = softness + 2 s.e.\n")
    print("| read-out of the frame-0 features -> log velocity variance of the training frames | ROC AUC |")
    print("|---|---:|")
    for k in values:
        print(f"| {k} | {rep[k].auc:.3f} |")


def carried_without_conduction(model, whole, loc_var: float) -> np.ndarray:
    """(T, N) S0 carried with the first-law heat as :func:`colloidcg.train.carried.carry_along`
    does, with the heat-conduction terms left out (a probe, k_B)."""
    from unittest import mock

    from colloidcg.core.scatter import dot
    from colloidcg.train import carried as C

    def first_law_only(model, terms, k_now, k_next, dr, late, dt):
        q = k_now - k_next + dot(terms.force, dr)
        if late is not None:
            q = q + late
        return (q / (terms.thermo.theta * dt)).unsqueeze(-1) * terms.w, q

    with mock.patch.object(C, "work_entropy_rate", first_law_only):
        return C.carry_along(model, whole, loc_var, heat="work").S[..., 0].numpy()


def likelihood_use(model, whole, S, loc_var: float, split: int, near: np.ndarray) -> dict:
    """{S used: (per-row NLL (nats), rows marked by ``near`` (bool))}, concatenated over
    the training frames 1..split-2 and the particles present at t - 1, t and t + 1: the
    one-step NLL of each row's next velocity with the carried S ``S`` (T, N, n_s), with S at
    each particle's entry (its first frame) and with S replaced by its mean over the
    particles present; ``near`` (T, N) marks the rows next to an event (a shear, a labelled
    rearrangement). Also prints the temperature contrast the carried S sets (std / mean of
    theta over the particles present, median over the frames)."""
    import torch

    from colloidcg.core.config import State
    from colloidcg.core.graph import find_pairs
    from colloidcg.core.loss import moments_nll, transition_mean_cov

    present = torch.isfinite(whole.pos[..., 0])
    entry = present.to(torch.int64).argmax(0)
    S_entry = S[entry, torch.arange(S.shape[1])]
    out = {"carried S (scored)": [], "S at entry (not carried)": [],
           "S's mean over particles (no structure)": []}
    sh, contrast = [], []
    with torch.no_grad():
        for f in range(1, split - 1):
            ok = (present[f] & present[f - 1] & present[f + 1] & torch.isfinite(S[f, :, 0])
                  & torch.isfinite(S_entry[:, 0]) & torch.isfinite(whole.vel[f + 1][:, 0]))
            r, v, Sf = whole.pos[f][ok], whole.vel[f][ok], S[f][ok]
            pairs = find_pairs(r, model.cutoff, whole.box)
            valid = torch.ones(r.shape[0], dtype=torch.bool)
            for name, Su in zip(out, (Sf, S_entry[ok], Sf.mean(0, keepdim=True).expand_as(Sf))):
                mom = transition_mean_cov(model, State(r, v, Su, None), pairs, whole.dt, whole.box)
                out[name].append(moments_nll(mom, whole.vel[f + 1][ok], valid, whole.dt, loc_var).numpy())
                if name.startswith("carried"):
                    theta = mom.terms.thermo.theta
                    contrast.append(float(theta.std() / theta.mean()))
            sh.append(near[f][ok.numpy()])
    sh = np.concatenate(sh)
    print(f"the temperature contrast the carried S sets: std / mean of theta over the particles present, "
          f"median over the training frames {np.median(contrast):.4f}")
    return {k: (np.concatenate(x), sh) for k, x in out.items()}


def untrained_entry(traj, whole_particles, args) -> np.ndarray:
    """(N,) S0 at frame 0 of the encoder as training initialises it (same seed and settings)."""
    import torch

    from colloidcg.core.graph import find_pairs
    from colloidcg.train import TrainConfig
    from colloidcg.train.calibrate import build_model
    from colloidcg.train.fitting import seed_everything, with_edge_halo

    cfg = TrainConfig(epochs=1, aux_weight=args.aux_weight, horizon=2, edge=0, progress=False, seed=args.seed,
                      s_memory="carried", cutoff=14.3, n_s=args.n_s, s_heat=args.s_heat, ordered_s=args.ordered_s,
                      s0_heat_share=args.s0_heat_share)
    tr = with_edge_halo(traj, 0, 14.3)
    if not np.array_equal(np.asarray(tr.particles), np.asarray(whole_particles)):
        raise RuntimeError("the training frames and the whole film order their particles differently")
    seed_everything(args.seed)
    model = build_model(tr, cfg, 14.3).eval()
    with torch.no_grad():
        r = tr.pos[0].to(next(model.parameters()).dtype)
        return model.initial_S(r, find_pairs(r, model.cutoff, tr.box), tr.box)[:, 0].numpy()


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
