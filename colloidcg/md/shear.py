"""Statistics of a steadily sheared melt (Lees-Edwards box, flow along x, gradient along y),
and its known answer: a learned model trained on sheared tracks and rolled out under the
same shear.

A sheared LAMMPS run (:func:`.lammps.star_melt` with ``shear_rate``) is read by
:mod:`.trajectory` with its tilt; the tracks' positions are unwrapped in the infinite
sheared system (an image across y is shifted along x by the tilt), so a particle's x
displacement carries the streaming part rate * y * t. From such tracks:

- :func:`velocity_profile`: the mean finite-difference velocity along x in bins of the
  (unwrapped) y, and the shear rate fitted to it (least squares over all particles and
  frames); for steady simple shear, v_x(y) = rate * y + const;
- :func:`transverse_non_gaussian`: the non-Gaussian parameter alpha_2(t) of the
  displacements in the (y, z) plane, which the flow does not advect, computed by
  :func:`colloidcg.evaluate.non_gaussian` (d = 2: alpha_2 = <dr^4> / (2 <dr^2>^2) - 1);
- :func:`sheared_melt_md`: the MD side of the sheared known answer: a run, read, and
  these statistics, with the imposed rate;
- :func:`sheared_melt_answer`: the known answer itself, as
  :func:`colloidcg.md.known.star_melt_answer` under shear: one particle per star, a
  momentum-conserving model (no substrate) trained on the first window in the
  Lees-Edwards box the sidecar records (``meta.lees_edwards``: the tilt of every frame and
  the rate), rolled out 10x longer under the same shear (the image offset continued from
  the starting frame's tilt; :class:`colloidcg.core.driver.LeesEdwards`), and compared
  with the continued MD: the fitted shear rate and the velocity profile's relative RMS
  error (in the MD's y bins), the transverse non-Gaussian parameter (largest absolute
  difference over the lags), MSD of the (y, z) displacements, and the total momentum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ParameterError


def _positions(tracks: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(T, N, 3) positions and (T,) frames of a tracks table with every particle in every frame."""
    cols = ["x", "y", "z"]
    if not set(cols) <= set(tracks.columns):
        raise ParameterError("tracks: a sheared melt's tracks need x, y and z columns")
    tr = tracks.sort_values(["frame", "particle"])
    frames = np.unique(tr["frame"].to_numpy())
    n = tr["particle"].nunique()
    if len(tr) != len(frames) * n:
        raise ParameterError("tracks: every particle must be present in every frame")
    return tr[cols].to_numpy(float).reshape(len(frames), n, 3), frames


def velocity_profile(tracks: pd.DataFrame, fps: float, bins: int = 8,
                     edges=None) -> tuple[pd.DataFrame, float]:
    """Finite-difference velocity along x against y (see module docstring).

    tracks : frame, particle, x, y, z (length units; unwrapped). fps : frames per time unit.
    edges : (bins + 1,) y bin edges to use (e.g. another table's, to compare two profiles
    bin by bin; the outer bins take every y beyond them); default: equal-count bins.
    Returns (profile, rate): profile rows per y bin: ``y`` (mean y of the bin), ``vx`` (mean
    velocity, length/time), ``se`` (its standard error over particles and frames), ``n``,
    ``lo``, ``hi`` (the bin's edges); rate (1/time), the slope of the least-squares line
    v_x(y)."""
    if edges is None and bins < 2:
        raise ParameterError(f"bins: must be >= 2, got {bins}")
    pos, _ = _positions(tracks)
    if pos.shape[0] < 2:
        raise ParameterError("tracks: the velocity profile needs at least 2 frames")
    vx = (np.diff(pos[..., 0], axis=0) * fps).ravel()
    y = (0.5 * (pos[1:, :, 1] + pos[:-1, :, 1])).ravel()
    rate = float(np.polyfit(y, vx, 1)[0])
    if edges is None:
        edges = np.quantile(y, np.linspace(0, 1, bins + 1))
    else:
        edges = np.asarray(edges, float)
        if edges.ndim != 1 or len(edges) < 3 or np.any(np.diff(edges) <= 0):
            raise ParameterError("edges: expected at least 3 increasing y values")
        bins = len(edges) - 1
    k = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = k == b
        v = vx[sel]
        rows.append({"y": float(y[sel].mean()) if sel.any() else float("nan"),
                     "vx": float(v.mean()) if sel.any() else float("nan"),
                     "se": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan"),
                     "n": int(sel.sum()), "lo": float(edges[b]), "hi": float(edges[b + 1])})
    return pd.DataFrame(rows), rate


def transverse_non_gaussian(tracks: pd.DataFrame, fps: float, max_lag: int = 50) -> pd.DataFrame:
    """alpha_2(t) of the (y, z) displacements (:func:`colloidcg.evaluate.non_gaussian`
    on the table with y, z renamed x, y): columns lag, t, alpha2."""
    from .. import evaluate as ev

    if not {"y", "z"} <= set(tracks.columns):
        raise ParameterError("tracks: the transverse non-Gaussian parameter needs y and z columns")
    plane = tracks[["frame", "particle", "y", "z"]].rename(columns={"y": "x", "z": "y"})
    return ev.non_gaussian(plane, 1.0, fps, max_lag)


def sheared_melt_md(workdir, *, shear_rate: float = 0.1, n_stars: int = 27, arms: int = 3, beads: int = 3,
                    frames: int = 200, dump_every: int = 20, equilibrate: int = 5000,
                    shear_equilibrate: int = 4000, seed: int = 2, max_lag: int = 20) -> dict:
    """The MD side of the sheared known answer: run the sheared star melt, read it one
    particle per star, and return the imposed and fitted shear rates, the velocity
    profile, and alpha_2 of the first and second half of the run (its stationarity)."""
    from .coarse import read_md_tracks
    from .lammps import star_melt

    rec = star_melt(Path(workdir) / "md", n_stars=n_stars, arms=arms, beads=beads, frames=frames,
                    dump_every=dump_every, equilibrate=equilibrate, seed=seed, shear_rate=shear_rate,
                    shear_equilibrate=shear_equilibrate)
    df, side = read_md_tracks(rec["dump"], "molecule")
    fps = side["meta"]["fps"]
    prof, rate = velocity_profile(df, fps)
    half = frames // 2
    a1 = transverse_non_gaussian(df[df["frame"] < half], fps, max_lag)
    a2 = transverse_non_gaussian(df[df["frame"] >= half], fps, max_lag)
    return {"imposed_rate": shear_rate, "box_rate": side["meta"]["lees_edwards"]["shear_rate"],
            "profile_rate": rate, "profile": prof.to_dict("list"),
            "alpha2_first_half": a1["alpha2"].to_numpy(), "alpha2_second_half": a2["alpha2"].to_numpy(),
            "alpha2_halves_abs_diff": float(np.nanmean(np.abs(a1["alpha2"].to_numpy() - a2["alpha2"].to_numpy()))),
            "tracks": df, "sidecar": side, "run": rec}


#: Sizes of :func:`sheared_melt_answer` (as :data:`colloidcg.md.known.SIZES` for the star
#: melt, plus the shear): the rate is 0.1 / tau (strain 2 over the short answer's 11
#: windows, a streaming velocity across the box about twice the stars' thermal speed
#: sqrt(kT / M) in the full one).
SIZES = {
    "short": dict(n_stars=27, arms=3, beads=3, train_frames=20, epochs=3, equilibrate=5000, shear_equilibrate=2000,
                  dump_every=20, substeps=4, shear_rate=0.1, max_lag=10, train={"cutoff": 2.5}),
    # the unsheared full answer's system and pair range (colloidcg.md.known.SIZES: 5 sigma,
    # which the 125 stars' box allows; at 3.2 sigma with 64 stars the transverse MSD was 73 % off)
    "full": dict(n_stars=125, arms=4, beads=4, train_frames=100, epochs=30, equilibrate=20000, shear_equilibrate=10000,
                 dump_every=20, substeps=4, shear_rate=0.1, max_lag=50,
                 train={"cutoff": 5.0, "lr": 1e-2, "batch_frames": 8, "loc_noise": "none"}),
}


def sheared_melt_answer(workdir, size: str = "short", seed: int = 5, md_dir=None, shear_rate: float | None = None,
                        **train_options) -> dict:
    """Measured numbers of the sheared star-melt known answer (module docstring).

    ``size``: "short" (seconds of MD; the default tests) or "full" (minutes; the README's
    numbers). ``md_dir``: an existing sheared star_melt run folder to reuse (its dump must
    hold 11 windows); ``shear_rate`` (1/tau): default the size's; ``train_options``:
    TrainConfig options that replace the defaults used here.

    Returns a dict: the imposed, box (tilt) and fitted shear rates of the continued MD and
    of the rollout (``rate_rel_error``), the velocity profiles in the MD's y bins and their
    relative RMS difference (``profile_rel_rms``, RMS of the difference over the RMS of the
    MD profile), alpha_2 of the (y, z) displacements of both (``non_gaussian_max_abs_diff``
    over lags 1..max_lag), the relative RMS error of the transverse MSD, the rollout's
    total momentum drift (relative to sqrt(N) |v|_rms; exact conservation gives rounding),
    and the training report."""
    import json

    from .. import evaluate as ev
    from ..simulate import simulate
    from ..train import TrainConfig, train_tracks
    from .coarse import read_md_tracks
    from .known import total_momentum
    from .lammps import star_melt

    if size not in SIZES:
        raise ParameterError(f"size: expected one of {sorted(SIZES)}, got {size!r}")
    p = SIZES[size]
    rate_in = p["shear_rate"] if shear_rate is None else float(shear_rate)
    work = Path(workdir)
    W = p["train_frames"]
    if md_dir is None:
        rec = star_melt(work / "md", n_stars=p["n_stars"], arms=p["arms"], beads=p["beads"], frames=11 * W,
                        dump_every=p["dump_every"], equilibrate=p["equilibrate"], seed=seed, shear_rate=rate_in,
                        shear_equilibrate=p["shear_equilibrate"])
    else:
        rec = json.loads((Path(md_dir) / "run.json").read_text())
    df, side = read_md_tracks(rec["dump"], "molecule")
    if "lees_edwards" not in side["meta"]:
        raise ParameterError(f"md_dir: {rec['dump']} is not a sheared run (no xy tilt)")
    df = df[df["frame"] < 11 * W]
    train = df[df["frame"] < W].reset_index(drop=True)
    cont = df[df["frame"] >= W - 1].reset_index(drop=True)
    fps = side["meta"]["fps"]
    cfg = TrainConfig.from_dict({"epochs": p["epochs"], "progress": False, "substrate": False, "seed": seed,
                                 **p["train"], **train_options})
    res = train_tracks(train, side, cfg, work / "model")
    mcfg = json.loads((work / "model" / "config.json").read_text())
    start = int(train["frame"].max())
    sim = simulate(res.model, mcfg, train, side, steps=cont["frame"].nunique() - 1, frame=start, seed=seed,
                   substeps=p["substeps"])
    tr_sim = sim.tracks
    prof_md, rate_md = velocity_profile(cont, fps)
    edges = np.r_[prof_md["lo"].to_numpy(), prof_md["hi"].to_numpy()[-1]]
    prof_sim, rate_sim = velocity_profile(tr_sim, fps, edges=edges)
    lag = p["max_lag"]
    a_md = transverse_non_gaussian(cont, fps, lag)["alpha2"].to_numpy()
    a_sim = transverse_non_gaussian(tr_sim, fps, lag)["alpha2"].to_numpy()
    plane = {name: tr[["frame", "particle", "y", "z"]].rename(columns={"y": "x", "z": "y"})
             for name, tr in (("md", cont), ("model", tr_sim))}
    m_md = ev.msd(plane["md"], 1.0, fps, max_lag=lag)["msd"].to_numpy()
    m_sim = ev.msd(plane["model"], 1.0, fps, max_lag=lag)["msd"].to_numpy()
    # g(r) in the sheared box: each table's offset per frame (the data's from its sidecar,
    # the rollout's continued by simulate), the sheared minimum image
    box = side["meta"]["box_px"]
    g_md = ev.rdf(cont, box_px=box, tilt_px=side["meta"]["lees_edwards"]["tilt_xy"])
    g_sim = ev.rdf(tr_sim, box_px=box, r_max=float(g_md["r"].iloc[-1] + 0.5 * (g_md["r"].iloc[1] - g_md["r"].iloc[0])),
                   tilt_px=sim.meta["lees_edwards"]["tilt_xy"])
    P = total_momentum(tr_sim)
    n = tr_sim["particle"].nunique()
    v_scale = float(np.sqrt((tr_sim[["vx", "vy", "vz"]].to_numpy() ** 2).sum(1).mean())) * fps
    P = P * fps
    diff = prof_sim["vx"].to_numpy() - prof_md["vx"].to_numpy()
    return {"size": size, "n_stars": p["n_stars"], "arms": p["arms"], "beads": p["beads"],
            "box": side["meta"]["box_px"], "train_frames": W, "rollout_frames": int(tr_sim["frame"].nunique()),
            "frame_dt": 1 / fps, "cutoff": res.model.config.cutoff, "substeps": p["substeps"],
            "imposed_rate": rate_in, "box_rate": side["meta"]["lees_edwards"]["shear_rate"],
            "md_rate": rate_md, "model_rate": rate_sim, "rate_rel_error": rate_sim / rate_md - 1.0,
            "profile_y": prof_md["y"].tolist(), "profile_md": prof_md["vx"].tolist(),
            "profile_model": prof_sim["vx"].tolist(), "profile_md_se": prof_md["se"].tolist(),
            "profile_rel_rms": float(np.sqrt(np.nanmean(diff ** 2) / np.nanmean(prof_md["vx"].to_numpy() ** 2))),
            "alpha2_md": a_md.tolist(), "alpha2_model": a_sim.tolist(),
            "non_gaussian_max_abs_diff": float(np.nanmax(np.abs(a_sim - a_md))),
            "non_gaussian_mean_abs_diff": float(np.nanmean(np.abs(a_sim - a_md))),
            "transverse_msd_rel_rms": ev.rel_rms(m_sim, m_md, pointwise=True),
            "rdf_rel_rms": ev.rel_rms(g_sim["g"].to_numpy(), g_md["g"].to_numpy()),
            "momentum_drift_rel": float(np.abs(P[1:] - P[1]).max() / (np.sqrt(n) * v_scale)),
            "train_report": {k: res.report.get(k) for k in ("epochs_run", "best_epoch", "best_val_score")}}
