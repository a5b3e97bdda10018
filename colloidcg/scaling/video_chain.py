"""The macroscopic SDE's chain from a video (issue 19, item 6): the path a user takes.

A small field of view of a quench is filmed, tracked, a particle model is trained on the
tracks, its frames are upsampled with the model, patches of the upsampled snapshots are
evolved with the model (partial evolution) and the macroscopic SDE is fitted to their
increments (``colloidcg macro train``), then run for a large system. With a known truth:

- :func:`quench_video` simulates a quench of monodisperse soft disks
  (:class:`~.simulators.SoftDiskSimulator`, the dynamics of :mod:`colloidcg.synthetic`,
  from uniformly random positions) in a periodic sample larger than the field of view,
  and renders the field of view with :mod:`colloidcg.synthetic.render` (pixel-integrated
  Gaussian spots, uneven background, Poisson and read noise, 8 bit), so the video's
  sample is the same system as the direct large simulations it is compared with;
- :func:`run_chain` tracks it (:func:`colloidcg.tracking.track`, automatic
  parameters), trains the model (:func:`colloidcg.train.train_tracks`, the open field of
  view, no box) and runs ``colloidcg macro train`` on the tracks (upsampled states,
  model-evolved patches) through the command line's own entry point.

Units: px and frames throughout (the video is calibrated 1 px = 1 um, 1 frame = 1 s, so
the model's units are px and frames too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ParameterError

__all__ = ["QuenchVideo", "quench_video", "ChainResult", "run_chain", "match_error", "interior_psi6"]


@dataclass
class QuenchVideo:
    """A rendered quench.

    frames : (T, W, W) uint8 video of the field of view; truth : DataFrame frame,
    particle (the sample's id), x, y (field-of-view px, x = column) of the particles inside
    the field of view; fov_px : W; sample_px : the periodic sample's side, px;
    n_sample : particles in the sample; psi6_sample : (T,) mean |psi6| of the whole
    sample per frame (the truth's observable, 6 nearest neighbours, periodic).
    """

    frames: np.ndarray
    truth: pd.DataFrame
    fov_px: int
    sample_px: float
    n_sample: int
    psi6_sample: np.ndarray


def quench_video(*, n_fov: int, frames: int, seed: int, area_fraction: float, diameter: float, diffusion: float,
                 kT: float, substeps: int, sample_factor: int = 4, photons: float = 200.0,
                 render_every: int = 1, progress: bool = False) -> QuenchVideo:
    """Simulate and render a quench filmed in a window of a larger periodic sample.

    n_fov : particles expected in the field of view (its side W = sqrt(n_fov pi d^2 / 4 /
    area_fraction), rounded up to whole px); the sample is ``sample_factor`` times the
    field of view's area (a square number: 4 = twice the side), periodic, holding
    round(sample_factor x n_fov) disks of ``diameter`` px placed uniformly at random (an
    infinite-temperature start), then advanced frame by frame (``substeps`` micro steps,
    D0 = ``diffusion`` px^2/frame, ``kT`` in units of eps) with noise keyed by ``seed``.
    Frame 0 is the random start. Rendering follows :class:`colloidcg.synthetic.SynthConfig`'s
    defaults (spot sigma 0.25 d, brightness spread 0.1, background 0.2 of ``photons``,
    unevenness 0.3, read noise 2, 8 bit); spots of particles near the window's edge are
    drawn whole (periodic images included). ``render_every`` n > 1 renders (and records
    the truth of) frames 0, n, 2n, ... only: the video then holds frames // n + 1 images,
    its i-th image frame i x n (``truth.frame`` is the simulation's frame), and
    ``psi6_sample`` is still per simulated frame.
    """
    from ..synthetic.render import background_field, digitise, fluorescence_spots
    from .observables import whole
    from .partial import full_step
    from .simulators import MicroState, SoftDiskSimulator, derive_key

    m = int(round(math.sqrt(sample_factor)))
    if m * m != sample_factor or m < 2:
        raise ParameterError(f"sample_factor: expected a square number >= 4, got {sample_factor!r}")
    for name, v in (("n_fov", n_fov), ("frames", frames)):
        if int(v) != v or v < 2:
            raise ParameterError(f"{name}: expected an integer >= 2, got {v!r}")
    W = int(math.ceil(math.sqrt(n_fov * math.pi / 4 * diameter ** 2 / area_fraction)))
    L = m * W
    n = int(round(area_fraction * L * L / (math.pi / 4 * diameter ** 2)))
    rng = np.random.default_rng(seed)
    sim = SoftDiskSimulator(diffusion=diffusion, kT=kT, substeps=substeps, diameter=diameter)
    box = np.array([L, L], float)
    state = MicroState(rng.uniform(0, L, (n, 2)), np.full(n, float(diameter)), box, np.arange(n, dtype=np.int64),
                       None, None)
    sigma = np.full(n, 0.25 * diameter)
    bright = rng.lognormal(0.0, 0.1, n)
    background = 0.2
    bg = photons * background * background_field(W, W, 0.3, rng)
    gain = 0.6 * 255 / (photons * (1.0 + background))
    pad = 4 * sigma[0] + 1
    if int(render_every) != render_every or render_every < 1:
        raise ParameterError(f"render_every: expected an integer >= 1, got {render_every!r}")
    shown = list(range(0, frames, int(render_every)))
    video = np.empty((len(shown), W, W), np.uint8)
    rows, psi = [], np.empty(frames)
    it = range(frames)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc="quench video", unit="frame")
    for f in it:
        if f > 0:
            state = full_step(sim, state, 1, derive_key(seed, 7, f))
        q = np.mod(state.pos, L)
        psi[f] = whole(state._replace(pos=q), ["psi6"])[0]
        if f % int(render_every):
            continue
        xs, ys, idx = [], [], []
        for sx in (-L, 0, L):
            for sy in (-L, 0, L):
                p = q + np.array([sx, sy])
                ok = np.flatnonzero((p[:, 0] > -0.5 - pad) & (p[:, 0] < W - 0.5 + pad)
                                    & (p[:, 1] > -0.5 - pad) & (p[:, 1] < W - 0.5 + pad))
                xs.append(p[ok, 0])
                ys.append(p[ok, 1])
                idx.append(ok)
        x, y, i = np.concatenate(xs), np.concatenate(ys), np.concatenate(idx)
        spots = fluorescence_spots(x, y, sigma[i], photons * bright[i], W, W)
        video[f // int(render_every)] = digitise(bg + spots, gain, 2.0, 8, rng)
        inside = (x >= -0.5) & (x < W - 0.5) & (y >= -0.5) & (y < W - 0.5)
        rows.append(pd.DataFrame({"frame": f, "particle": i[inside], "x": x[inside], "y": y[inside]}))
    return QuenchVideo(video, pd.concat(rows, ignore_index=True), W, float(L), n, psi)


def match_error(tracks: pd.DataFrame, truth: pd.DataFrame, radius: float) -> dict:
    """Tracked positions against the truth, frame by frame (nearest pairs within
    ``radius`` px, one-to-one by increasing distance): RMS error per axis (px), recall
    (matched truth rows / truth rows) and precision (matched / tracked rows)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    err, matched, n_t = [], 0, 0
    by = {int(f): g for f, g in truth.groupby("frame")}
    for f, g in tracks.groupby("frame"):
        a = g[["x", "y"]].to_numpy(float)
        b = by[int(f)][["x", "y"]].to_numpy(float) if int(f) in by else np.zeros((0, 2))
        n_t += len(a)
        if len(b) == 0 or len(a) == 0:
            continue
        d = cdist(b, a)
        cost = np.where(d <= radius, d, 1e6)
        r, c = linear_sum_assignment(cost)
        ok = cost[r, c] < 1e6
        matched += int(ok.sum())
        err.append(b[r[ok]] - a[c[ok]])
    n_r = len(truth[truth["frame"].isin(tracks["frame"].unique())])
    e = np.concatenate(err) if err else np.zeros((0, 2))
    return {"rms_error_per_axis_px": float(np.sqrt(np.mean(e ** 2))) if len(e) else math.nan,
            "recall": matched / max(n_r, 1), "precision": matched / max(n_t, 1)}


def interior_psi6(tracks: pd.DataFrame, edge: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """psi6 of an open field of view, per frame: the mean |psi6_i| (6 nearest neighbours,
    among all particles in view, no periodic images) over the particles at least ``edge``
    px inside their frame's field of view (:func:`colloidcg.data.frame_fields_of_view`,
    which follows a subtracted drift), so that their neighbours are in view. Returns
    (frames, z (T,), counts (T,) of particles averaged)."""
    from ..data import frame_fields_of_view
    from .observables import psi6_local

    if not edge >= 0:
        raise ParameterError(f"edge: expected a distance >= 0 px, got {edge!r}")
    which, fov = frame_fields_of_view(tracks, ["x", "y"])
    side = fov[0, :, 1] - fov[0, :, 0]
    if np.any(side <= 2 * edge):
        raise ParameterError(f"edge: {edge:g} px leaves no interior in a field of view of {side.tolist()} px")
    view = dict(zip(which.tolist(), fov))
    frames, z, n = [], [], []
    for f, g in tracks.groupby("frame", sort=True):
        pos = g[["x", "y"]].to_numpy(float)
        lo, hi = view[int(f)][:, 0] + edge, view[int(f)][:, 1] - edge
        inner = np.all((pos >= lo) & (pos <= hi), axis=1)
        if len(pos) < 7 or not inner.any():
            continue
        frames.append(int(f))
        z.append(float(np.abs(psi6_local(pos, None)[inner]).mean()))
        n.append(int(inner.sum()))
    return np.array(frames), np.array(z), np.array(n)


@dataclass
class ChainResult:
    """What :func:`run_chain` made: tracks (the tracked table), tracking (its
    :func:`match_error` against the truth), model_dir, macro_dir (``colloidcg macro
    train``'s folder), report (its report.json) and seconds per stage."""

    tracks: pd.DataFrame
    tracking: dict
    model_dir: Path
    macro_dir: Path
    report: dict
    seconds: dict


def run_chain(video: QuenchVideo, work: Path, *, factor: int, steps: int, snapshots: int, patches: int = 4,
              epochs: int = 8, cutoff: float = 24.0, seed: int = 0, diameter: float | None = None,
              match_radius: float = 8.0, fits: int = 10, progress: bool = False) -> ChainResult:
    """Track ``video``, train the model on the tracks, and run ``colloidcg macro train``
    (upsampled states, model-evolved patches, lambda = K) with ``--factor factor --steps
    steps --snapshots snapshots --patches patches --no-patch-curve --seed seed``; the
    tracks, the model and the macro folder are written under ``work``.

    cutoff : the model's pair cutoff, px. diameter : the tracker's feature size, px (None:
    estimated by the tracker). epochs : training epochs (lr 1e-2, localisation noise
    estimated from the tracks). match_radius : px, the largest tracked-to-true distance
    counted as a match in ``tracking``. fits : SDE fits averaged (``--fits``). Returns a
    :class:`ChainResult`.
    """
    import time

    from ..outputs import write_table
    from ..tracking import track
    from ..train import TrainConfig, train_tracks

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    sec = {}
    t0 = time.perf_counter()
    over = {} if diameter is None else {"diameter": diameter}
    tr = track(video.frames, progress=progress, **over)
    tracks = tr.tracks[["frame", "particle", "x", "y"]].copy()
    sec["tracking"] = time.perf_counter() - t0
    tracking = match_error(tracks, video.truth, radius=match_radius)
    path = work / "tracks.parquet"
    write_table(path, tracks, {"meta": {"fps": 1.0, "um_per_px": 1.0}})
    t0 = time.perf_counter()
    model_dir = work / "model"
    train_tracks(tracks, {"fps": 1.0, "um_per_px": 1.0},
                 TrainConfig(epochs=epochs, lr=1e-2, cutoff=cutoff, seed=seed, progress=progress), out_dir=model_dir)
    sec["training"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    macro_dir, report = macro_train_chain(work, factor=factor, steps=steps, snapshots=snapshots, patches=patches,
                                          seed=seed, fits=fits)
    sec["macro_train"] = time.perf_counter() - t0
    return ChainResult(tracks, tracking, model_dir, macro_dir, report, sec)


def macro_train_chain(work: Path, *, factor: int, steps: int, snapshots: int, patches: int = 4, seed: int = 0,
                      fits: int = 10) -> tuple[Path, dict]:
    """The last step of :func:`run_chain` alone: ``colloidcg macro train`` on ``work``'s
    model and tracks (as run_chain wrote them), into ``work / "macro"`` (replaced).
    Returns (the macro folder, its report)."""
    import json

    from ..cli import main as cli_main

    work = Path(work)
    macro_dir = work / "macro"
    code = cli_main(["macro", "train", str(work / "model"), "--init", str(work / "tracks.parquet"), "--factor",
                     str(factor), "--snapshots", str(snapshots), "--steps", str(steps), "--patches", str(patches),
                     "--no-patch-curve", "--seed", str(seed), "--fits", str(fits), "-o", str(macro_dir),
                     "--overwrite"])
    if code != 0:
        raise RuntimeError(f"colloidcg macro train exited with {code}")
    return macro_dir, json.loads((macro_dir / "report.json").read_text())
