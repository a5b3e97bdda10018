"""Speed and accuracy of the rearrangement stage.

    python benchmarks/rearrangements.py            # full: 1000 particles x 100/300/1000 frames
    python benchmarks/rearrangements.py --quick    # 1000 particles x 50/100/200 frames
    python benchmarks/rearrangements.py --quick --skip-speed --learned-s 3   # S vs softness

Speed: a 2D hex lattice of 1000 particles (spacing 10 px) with thermal jitter and planted
local shear transformations. For each length it times, separately, D2min (given lag and
cutoff), the structural descriptors, event grouping, and the whole stage with every
parameter measured from the data (``detect`` with defaults: g(r) cutoff, MSD lag,
D2min threshold, D2min, events, descriptors). Wall and CPU seconds are printed; cost per
particle-frame shows the scaling (flat = linear).

Accuracy:
- the softness baseline's ROC AUC (logistic regression on radial structure functions,
  trained on the first half of the frames, scored on the second) on (a) a synthetic
  soft-disk glass with planted shear transformations (colloidcg.synthetic truth) and
  (b) a control where rearrangements sit at vacancies, so that structure predicts them;
- agreement of rearranging labels from the tracked sample video with those from its
  true trajectories, same parameters (precision, recall);
- with ``--learned-s N``: the learned model's S on the control, trained on the same
  training frames and scored on the same test rows as the softness baseline, N seeds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colloidcg.rearrangements import d2min, detect, find_events, softness_baseline  # noqa: E402
from colloidcg.rearrangements.scoring import softness_test_rows  # noqa: E402
from colloidcg.structure import descriptors  # noqa: E402

SPACING = 10.0


def lattice_system(n_frames: int, nx: int = 40, ny: int = 25, noise: float = 0.3,
                   events_per_100_frames: float = 4.0, seed: int = 0) -> pd.DataFrame:
    """1000-particle hex lattice, Gaussian jitter, local shears planted at random."""
    rng = np.random.default_rng(seed)
    jj, ii = np.meshgrid(np.arange(nx), np.arange(ny))
    p0 = np.column_stack([(jj * SPACING + (ii % 2) * SPACING / 2).ravel(),
                          (ii * SPACING * np.sqrt(3) / 2).ravel()]) + 20.0
    n = len(p0)
    disp = np.zeros((n_frames, n, 2))
    n_ev = max(1, int(events_per_100_frames * n_frames / 100))
    lo, hi = p0.min(0) + 3 * SPACING, p0.max(0) - 3 * SPACING
    for f, x, y in zip(rng.integers(1, n_frames, n_ev), rng.uniform(lo[0], hi[0], n_ev),
                       rng.uniform(lo[1], hi[1], n_ev)):
        d = p0 - (x, y)
        w = np.exp(-np.square(d).sum(1) / 8.0 ** 2)
        disp[f:] += 8.0 * np.column_stack([d[:, 0], -d[:, 1]]) / 8.0 * w[:, None]
    pos = p0[None] + disp + rng.normal(0, noise, (n_frames, n, 2))
    return pd.DataFrame({"frame": np.repeat(np.arange(n_frames), n),
                         "particle": np.tile(np.arange(n), n_frames),
                         "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})


def timed(fn, *args, **kw):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w0, time.process_time() - c0


def speed(sizes) -> None:
    print(f"\n## Speed: 1000 particles, 2D (machine: {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.1f} at start)\n")
    lag, cutoff = 3, 13.5
    warm = lattice_system(20)
    detect(warm, lag=2, cutoff=cutoff)  # compile the numba kernels (cached on disk afterwards)
    print("| frames | rows | D2min s | descriptors s | events s | whole stage, defaults: wall s | CPU s "
          "| CPU us per particle-frame |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for T in sizes:
        df = lattice_system(T)
        _, t_d2, _ = timed(d2min, df, lag, cutoff)
        _, t_desc, _ = timed(descriptors, df, cutoff)
        res, t_all, c_all = timed(detect, df)
        _, t_ev, _ = timed(find_events, res.table, res.parameters["cutoff_px"])
        print(f"| {T} | {len(df)} | {t_d2:.2f} | {t_desc:.2f} | {t_ev:.2f} | {t_all:.2f} | {c_all:.2f} "
              f"| {1e6 * c_all / len(df):.2f} |")
    p = res.parameters
    print(f"\nlast run's measured defaults: cutoff {p['cutoff_px']:.2f} px, lag {p['lag_frames']} frames, "
          f"threshold {p['threshold']:.4g} (d2min_norm); {p['n_rearranging']} rearranging rows in "
          f"{p['n_events']} events")


def _vacancy_lattice(rng) -> tuple[np.ndarray, np.ndarray]:
    """(sites (576, 2) px, indices of the 40 vacant sites) of the control's lattice."""
    jj, ii = np.meshgrid(np.arange(24), np.arange(24))
    full = np.column_stack([(jj * SPACING + (ii % 2) * SPACING / 2).ravel(),
                            (ii * SPACING * np.sqrt(3) / 2).ravel()]) + 20.0
    return full, rng.choice(len(full), 40, replace=False)


def _shear_amplitude(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Displacement (px) of particles at ``p`` (N, 2) by a shear centred at ``s`` (2,)."""
    d = p - s
    w = np.exp(-np.square(d).sum(1) / 64.0)
    return np.column_stack([d[:, 0], -d[:, 1]]) * w[:, None]


def soft_spot_system(seed: int = 0) -> pd.DataFrame:
    """Control: shears centred on vacancies of a lattice, so structure predicts them."""
    rng = np.random.default_rng(seed)
    full, vac = _vacancy_lattice(rng)
    keep = np.ones(len(full), bool)
    keep[vac] = False
    p0, T = full[keep], 120
    pos = np.repeat(p0[None], T, 0)
    for s in full[vac]:
        for f in rng.choice(np.arange(5, T - 2), 2, replace=False):
            pos[f:] += _shear_amplitude(p0, s)
    pos = pos + rng.normal(0, 0.25, pos.shape)
    n = len(p0)
    return pd.DataFrame({"frame": np.repeat(np.arange(T), n), "particle": np.tile(np.arange(n), T),
                         "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})


def vacancy_ceiling_auc(table: pd.DataFrame, soft, lag: int, seed: int = 0) -> float:
    """ROC AUC of the best structural predictor of the vacancy control, on the test rows
    of the softness baseline ``soft`` trained with ``lag`` (frames from its split_frame +
    lag on, edge rows out).

    Which vacancy shears when is random, so no predictor of structure can know more than
    each site's exposure: the summed shear amplitude the vacancies near it would give it
    (the control's own generating rule). Any S or softness is bounded by this number.
    """
    from sklearn.metrics import roc_auc_score

    full, vac = _vacancy_lattice(np.random.default_rng(seed))
    keep = np.ones(len(full), bool)
    keep[vac] = False
    p0 = full[keep]
    exposure = sum(np.linalg.norm(_shear_amplitude(p0, full[v]), axis=1) for v in vac)
    test = softness_test_rows(table, soft)
    return float(roc_auc_score(table["rearranging"].to_numpy(bool)[test],
                               exposure[table["particle"].to_numpy()[test]]))


def neighbour_count_auc(tracks: pd.DataFrame, table: pd.DataFrame, soft, lag: int, radius: float,
                        first_frame: bool = False) -> float:
    """ROC AUC of minus the number of neighbours within ``radius`` px (fewer neighbours:
    nearer a vacancy) on the softness baseline's test rows: counted in each row's own frame,
    or (``first_frame``) in frame 0, before any shear has distorted the lattice."""
    from sklearn.metrics import roc_auc_score

    from colloidcg.neighbours import count_within

    count = {}
    for f, g in tracks.groupby("frame"):
        if first_frame and f > 0:
            break
        xy = g[["x", "y"]].to_numpy(float)
        n = count_within(xy, radius)
        count.update(zip(zip(np.full(len(g), f), g["particle"].to_numpy()), n))
    frames = np.zeros(len(table), int) if first_frame else table["frame"].to_numpy()
    c = np.array([count[k] for k in zip(frames, table["particle"].to_numpy())], float)
    test = softness_test_rows(table, soft)
    return float(roc_auc_score(table["rearranging"].to_numpy(bool)[test], -c[test]))


def learned_s_auc(tracks: pd.DataFrame, table: pd.DataFrame, soft, lag: int, seed: int = 0,
                  aux_weight: float = 1.0, epochs: int = 40) -> tuple[float, float, float]:
    """ROC AUC of the learned S on exactly the softness baseline's test rows and labels.

    The model sees only the frames before the baseline's split (its own validation split
    for model selection lies inside them); S on the test rows is the encoder's S of each
    frame, its sign fixed on the training rows (S is learned up to sign). Returns (AUC,
    AUC of the encoder's S of each particle's neighbourhood in frame 0 instead of the row's
    own frame, the model's cutoff, which is also the encoder's radius).
    """
    import torch
    from sklearn.metrics import roc_auc_score

    from colloidcg.data import from_tracks
    from colloidcg.train import TrainConfig, fit

    labels = table[["frame", "particle", "rearranging"]]
    early = tracks[tracks["frame"] < soft.split_frame]
    traj = from_tracks(early, None, fps=1.0, um_per_px=1.0, labels=labels[labels["frame"] < soft.split_frame])
    res = fit(traj, TrainConfig(epochs=epochs, patience=epochs, aux_weight=aux_weight, horizon=lag,
                                edge=0, progress=False, seed=seed))
    s_of = {}
    with torch.no_grad():
        for f, g in tracks.groupby("frame"):
            r = torch.tensor(g[["x", "y"]].to_numpy(float), dtype=torch.float64)
            s_of.update(zip(zip(np.full(len(g), f), g["particle"].to_numpy()),
                            res.model.initial_S(r)[:, 0].numpy()))
    use = np.isfinite(table["d2min"].to_numpy(float)) & ~table["edge"].to_numpy(bool)
    frame, y = table["frame"].to_numpy(), table["rearranging"].to_numpy(bool)
    aucs = []
    for frames in (frame, np.zeros_like(frame)):
        S = np.array([s_of.get(k, np.nan) for k in zip(frames, table["particle"])])
        train = use & (frame < soft.split_frame) & np.isfinite(S)
        test = use & (frame >= soft.split_frame + lag) & np.isfinite(S)
        sign = 1.0 if roc_auc_score(y[train], S[train]) >= 0.5 else -1.0
        aucs.append(float(roc_auc_score(y[test], sign * S[test])))
    return aucs[0], aucs[1], float(res.model.config.cutoff)


def accuracy(quick: bool, learned_seeds: int = 0) -> None:
    print("\n## Softness baseline (ROC AUC on held-out later frames; 0.5 = chance)\n")
    print("| system | rows | lag | rearranging rows (train / test) | ROC AUC +- s.e. |")
    print("|---|---:|---:|---:|---:|")
    try:
        from colloidcg.synthetic import SynthConfig, make_video

        T = 100 if quick else 300
        n_ev = T // 5
        vid = make_video(SynthConfig(n_frames=T, width=256, height=256, diameter=16.0,
                                     area_fraction=0.8, bidisperse=True, diffusion=0.1,
                                     events=n_ev, seed=3))
        res = detect(vid.truth, fov=[(-0.5, 255.5), (-0.5, 255.5)])
        lag = res.parameters["lag_frames"]
        s = softness_baseline(res.table, lag)
        print(f"| synthetic soft-disk glass, {T} frames, {n_ev} shears planted at random (truth) | "
              f"{len(res.table)} | {lag} | {s.n_train_pos} / {s.n_test_pos} | "
              f"{s.auc:.3f} +- {s.auc_se:.3f} |")
    except ImportError:
        print("| synthetic soft-disk glass | colloidcg.synthetic not importable | | | |")
    res = detect(soft_spot_system(), lag=2, cutoff=13.0)
    s = softness_baseline(res.table, 2)
    print(f"| control: shears at vacancies (structure predicts) | {len(res.table)} | 2 | "
          f"{s.n_train_pos} / {s.n_test_pos} | {s.auc:.3f} +- {s.auc_se:.3f} |")
    print(f"| control, structural ceiling: the true shear amplitude each site feels, same test rows | "
          f"{len(res.table)} | 2 | - / {s.n_test_pos} | {vacancy_ceiling_auc(res.table, s, 2):.3f} |")
    tracks = soft_spot_system()
    for first in (False, True):
        aucs = [neighbour_count_auc(tracks, res.table, s, 2, rc, first_frame=first) for rc in (11, 12, 13, 14, 15)]
        where = "frame 0 (before any shear)" if first else "the row's own frame"
        print(f"| control, minus the neighbours within 11 / 12 / 13 / 14 / 15 px, counted in {where}, "
              f"same test rows | "
              f"{len(res.table)} | 2 | - / {s.n_test_pos} | {' / '.join(f'{a:.3f}' for a in aucs)} |")
    if learned_seeds:
        for aux in (0.0, 1.0):
            runs = [learned_s_auc(tracks, res.table, s, 2, seed=k, aux_weight=aux) for k in range(learned_seeds)]
            what = "self-supervised" if aux == 0 else f"--aux-weight {aux:g}"
            for col, where in ((0, "its own frame"), (1, "frame 0")):
                aucs = [run[col] for run in runs]
                print(f"| control, learned S ({what}, 40 epochs on the training frames; cutoff "
                      f"{', '.join(f'{run[2]:.1f}' for run in runs)} px) of the neighbourhood in {where}, "
                      f"same test rows, seeds 0-{learned_seeds - 1} | {len(res.table)} | 2 | "
                      f"{s.n_train_pos} / {s.n_test_pos} | {np.mean(aucs):.3f} ({' / '.join(f'{a:.3f}' for a in aucs)}) |")

    print("\n## Labels from tracked video vs labels from true trajectories (same parameters)\n")
    sample = Path(__file__).resolve().parents[1] / "sample_videos" / "dense"
    try:
        import trackpy

        from colloidcg.neighbours import nearest
        from colloidcg.tracking import track
    except ImportError:
        print("colloidcg.tracking not importable: skipped")
        return
    trackpy.quiet()
    truth = pd.read_parquet(sample / "truth.parquet")
    tracks = track(sample / "video.tif", progress=False).tracks
    fov = [(-0.5, 255.5), (-0.5, 255.5)]
    ref = detect(truth, fov=fov, descriptors=False)
    p = ref.parameters
    got = detect(tracks, fov=fov, lag=p["lag_frames"], cutoff=p["cutoff_px"], threshold=p["threshold"],
                 descriptors=False)
    ta, tb = [], []
    for f, ga in ref.table.groupby("frame"):
        gb = got.table[got.table["frame"] == f]
        d, i = nearest(gb[["x", "y"]].to_numpy(), query=ga[["x", "y"]].to_numpy())
        ok = d < 3.0
        ta.append(ga["rearranging"].to_numpy()[ok])
        tb.append(gb["rearranging"].to_numpy()[i[ok]])
    ta, tb = np.concatenate(ta), np.concatenate(tb)
    tp = int((ta & tb).sum())
    print("| video | matched rows | rearranging (truth / tracked) | precision | recall |")
    print("|---|---:|---:|---:|---:|")
    print(f"| sample_videos/dense | {len(ta)} | {int(ta.sum())} / {int(tb.sum())} | "
          f"{tp / max(tb.sum(), 1):.3f} | {tp / max(ta.sum(), 1):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (50/100/200 frames)")
    ap.add_argument("--learned-s", type=int, default=0, metavar="SEEDS",
                    help="also train the model's S on the vacancy control's training frames, with "
                         "SEEDS seeds, and score it on the softness test rows (about 1 min per seed)")
    ap.add_argument("--skip-speed", action="store_true", help="accuracy tables only")
    args = ap.parse_args()
    if not args.skip_speed:
        speed((50, 100, 200) if args.quick else (100, 300, 1000))
    accuracy(args.quick, args.learned_s)


if __name__ == "__main__":
    main()
