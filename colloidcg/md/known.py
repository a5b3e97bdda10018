"""Known answers from LAMMPS truth: train on a short MD window, roll out 10x longer, and
compare with the continued MD through the same :mod:`colloidcg.evaluate` code.

- :func:`ideal_gas_answer`: the Langevin ideal gas; the rollout's MSD and VACF (of
  finite-difference velocities) against the exact ones (and against the continued MD),
  and the model's diffusion coefficient (slope of its MSD) against kT damp / m.
- :func:`star_melt_answer`: the DPD-thermostatted star-polymer melt coarse-grained to one
  particle per star; a momentum-conserving model (no substrate friction) trained on the
  first window; MSD, VACF and g(r) relative RMS errors of the rollout against the continued
  MD, and the rollout's total momentum over time (it must stay at its initial value).

``size``: "short" (the default test suite: small systems, seconds) or "full" (the slow
tests and the README's numbers: minutes). Both return a dict of measured numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import evaluate as ev
from .coarse import read_md_tracks
from .lammps import ideal_gas, ideal_gas_exact, ideal_gas_msd, ideal_gas_vacf_frame_averaged, star_melt

SIZES = {
    "ideal_gas": {"short": dict(n=300, train_frames=30, epochs=4),
                  "full": dict(n=1000, train_frames=200, epochs=10)},
    # frames every 0.1 tau (20 steps), so the stars' velocity relaxation (~0.15 tau) is
    # resolved (the momentum-conserving model's likelihood reads frame averages with each
    # star's mean-field pair-friction rate, colloidcg.core.loss). The pair functions reach
    # 5 sigma, about 1.9 star spacings (~26 neighbours): a star hands its momentum to the
    # beads of every star its arms overlap, and a shorter range (3.2 sigma, ~6 neighbours)
    # keeps it among a few neighbours that then move together (MSD 44 % off at 4.1 sigma,
    # 103 % at 3.2); 125 stars make a box wide enough for that range (1.3 x cutoff < L / 2).
    # The rollout takes 4 pair-splitting steps per frame, so that its recorded velocities
    # are frame averages (displacement / dt) as the MD's finite differences are (at one
    # step per frame they are the instantaneous velocities: <v^2> 16 % higher).
    # transport "msd": a star's velocity relaxation has memory on the scale of a frame (its
    # arms): the likelihood's Markovian friction matches the one-frame correlation and then
    # relaxes too slowly (MSD 12-13 % off); one factor on the friction, fitted to the training
    # window's MSD (colloidcg.train.transport), is the Markovian closure (factor ~1.25)
    "star_melt": {"short": dict(n_stars=27, arms=3, beads=3, train_frames=20, epochs=3, equilibrate=5000,
                                dump_every=20, substeps=4, train={"cutoff": 2.5, "transport": "msd"}),
                  "full": dict(n_stars=125, arms=4, beads=4, train_frames=100, epochs=30, equilibrate=20000,
                               dump_every=20, substeps=4, train={"cutoff": 5.0, "lr": 1e-2, "batch_frames": 8,
                                                                "loc_noise": "none", "transport": "msd"})},
}


def _split(df, n_train: int):
    train = df[df["frame"] < n_train].reset_index(drop=True)
    cont = df[df["frame"] >= n_train - 1].reset_index(drop=True)
    return train, cont


def _train_and_roll(train, side, cont_frames: int, cfg, workdir: Path, seed: int, substeps: int = 1):
    from ..simulate import simulate
    from ..train import train_tracks

    res = train_tracks(train, side, cfg, workdir / "model")
    mcfg = json.loads((workdir / "model" / "config.json").read_text())
    start = int(train["frame"].max())
    sim = simulate(res.model, mcfg, train, side, steps=cont_frames - 1, frame=start, seed=seed, substeps=substeps)
    return res, sim


def ideal_gas_answer(workdir, size: str = "short", seed: int = 3, dim: int = 3, **train_options) -> dict:
    """Measured numbers of the ideal-gas known answer (see module docstring)."""
    from ..train import TrainConfig

    p = SIZES["ideal_gas"][size]
    work = Path(workdir)
    W = p["train_frames"]
    T, damp = 1.0, 1.0
    rec = ideal_gas(work / "md", n=p["n"], density=0.05, dim=dim, temperature=T, damp=damp, timestep=0.01,
                    frames=11 * W, dump_every=25, equilibrate=500, seed=seed)
    df, side = read_md_tracks(rec["dump"])
    train, cont = _split(df, W)
    fdt = rec["frame_dt"]
    fps = 1.0 / fdt
    # MD positions carry no localisation noise; lr and batch as in the free-particle known
    # answer of tests/test_known_answers.py (with lr 3e-3, 4 frames per batch and cutoff 2
    # the model's D came out 6 % high on the full size)
    cfg = TrainConfig.from_dict({"epochs": p["epochs"], "progress": False, "cutoff": 1.0, "n_pair": 0, "seed": seed,
                                 "lr": 1e-2, "batch_frames": 8, "loc_noise": "none", **train_options})
    res, sim = _train_and_roll(train, side, cont["frame"].nunique(), cfg, work, seed)
    out = {"size": size, "n": p["n"], "dim": dim, "train_frames": W, "rollout_frames": int(sim.tracks["frame"].nunique()),
           "frame_dt": fdt, "exact": ideal_gas_exact(dim, T, damp)}
    lag = max(5, W // 2)
    for name, tr in (("md", cont), ("model", sim.tracks)):
        m = ev.msd(tr, 1.0, fps, max_lag=lag)
        v = ev.vacf(tr, 1.0, fps, max_lag=10)
        out[f"{name}_msd_rel_rms_vs_exact"] = ev.rel_rms(m["msd"], ideal_gas_msd(m["t"], dim, T, damp), pointwise=True)
        out[f"{name}_vacf_rel_rms_vs_exact"] = ev.rel_rms(v["vacf"], ideal_gas_vacf_frame_averaged(v["lag"], fdt, dim, T, damp))
        # D from the MSD slope beyond 3 friction times (exact: MSD = 2 d D (t - damp))
        late = m["t"] > 3 * damp
        out[f"{name}_D"] = float(np.mean(m["msd"][late] / (2 * dim * (m["t"][late] - damp))))
    metrics, _, _ = ev.compare(cont, sim.tracks, 1.0, fps, max_lag=lag, box_px=side["meta"]["box_px"])
    out["model_vs_md"] = {k: metrics[k] for k in ("msd_rel_rms", "vacf_rel_rms", "rdf_rel_rms")}
    out["D_rel_error"] = out["model_D"] / out["exact"]["D"] - 1
    out["train_report"] = {k: res.report.get(k) for k in ("epochs_run", "best_epoch", "best_val_score")}
    return out


def total_momentum(tracks) -> np.ndarray:
    """(T, d) sum over particles of the tracks' vx, vy [, vz] per frame (equal masses)."""
    cols = [c for c in ("vx", "vy", "vz") if c in tracks.columns]
    return tracks.groupby("frame")[cols].sum().to_numpy()


def fd_v2(tracks, fps: float) -> np.ndarray:
    """(T - 1,) mean squared finite-difference velocity |r(t + 1) - r(t)|^2 fps^2 per frame
    (unwrapped positions; every particle present in every frame)."""
    cols = [c for c in ("x", "y", "z") if c in tracks.columns]
    tr = tracks.sort_values(["frame", "particle"])
    pos = tr[cols].to_numpy(float).reshape(tr["frame"].nunique(), -1, len(cols))
    return (np.diff(pos, axis=0) ** 2).sum(-1).mean(-1) * fps ** 2


def star_melt_answer(workdir, size: str = "short", seed: int = 5, md_dir=None, **train_options) -> dict:
    """Measured numbers of the star-polymer known answer (see module docstring);
    ``md_dir``: an existing star_melt run folder to reuse (its dump must hold 11 windows);
    ``train_options``: TrainConfig options that replace the defaults used here."""
    from ..train import TrainConfig

    p = SIZES["star_melt"][size]
    work = Path(workdir)
    W = p["train_frames"]
    if md_dir is None:
        rec = star_melt(work / "md", n_stars=p["n_stars"], arms=p["arms"], beads=p["beads"], frames=11 * W,
                        dump_every=p["dump_every"], equilibrate=p["equilibrate"], seed=seed)
    else:
        rec = json.loads((Path(md_dir) / "run.json").read_text())
    df, side = read_md_tracks(rec["dump"], "molecule")
    df = df[df["frame"] < 11 * W]
    train, cont = _split(df, W)
    fps = side["meta"]["fps"]
    box = side["meta"]["box_px"]
    cfg = TrainConfig.from_dict({"epochs": p["epochs"], "progress": False, "substrate": False, "seed": seed,
                                 **p["train"], **train_options})
    res, sim = _train_and_roll(train, side, cont["frame"].nunique(), cfg, work, seed, p["substeps"])
    lag = max(5, W // 2)
    metrics, sd, ss = ev.compare(cont, sim.tracks, 1.0, fps, max_lag=lag, box_px=box)
    P = total_momentum(sim.tracks)
    v_scale = float(np.sqrt((sim.tracks[["vx", "vy", "vz"]].to_numpy() ** 2).sum(1).mean()))
    n = sim.tracks["particle"].nunique()
    v2_md, v2_sim = fd_v2(cont, fps), fd_v2(sim.tracks, fps)
    q = max(1, len(v2_sim) // 4)
    return {"size": size, "n_stars": p["n_stars"], "arms": p["arms"], "beads": p["beads"], "box": box,
            "train_frames": W, "rollout_frames": int(sim.tracks["frame"].nunique()), "frame_dt": 1 / fps,
            "cutoff": res.model.config.cutoff,
            "msd_rel_rms": metrics["msd_rel_rms"], "vacf_rel_rms": metrics["vacf_rel_rms"],
            "rdf_rel_rms": metrics["rdf_rel_rms"], "non_gaussian_abs_diff": metrics["non_gaussian_abs_diff"],
            # the rollout's temperature: <v^2> of finite differences over the MD's, first and last quarter
            "v2_ratio_first_quarter": float(v2_sim[:q].mean() / v2_md.mean()),
            "v2_ratio_last_quarter": float(v2_sim[-q:].mean() / v2_md.mean()),
            "substeps": p["substeps"],
            "transport_factor": (res.report.get("transport") or {}).get("factor"),
            # drift of the total momentum after the first recorded step, relative to the
            # momentum scale sqrt(N) |v|_rms (what independent velocities would sum to)
            "momentum_drift_rel": float(np.abs(P[1:] - P[1]).max() / (np.sqrt(n) * v_scale)),
            "momentum_initial_rel": float(np.abs(P[0]).max() / (np.sqrt(n) * v_scale)),
            "md_momentum_rel": float(np.abs(total_momentum(cont)).max() / (np.sqrt(n) * v_scale)),
            "train_report": {k: res.report.get(k) for k in ("epochs_run", "best_epoch", "best_val_score")}}
