"""Statistics of any tracks table, the same code for measured and simulated tracks.

All functions take a trackpy-schema table (frame, particle, x, y [, z] in px) plus the
calibration (``um_per_px``, ``fps``) and return physical units (um, s):

- :func:`msd`: ensemble mean squared displacement (``trackpy.motion.emsd``);
- :func:`vacf`: velocity autocorrelation <v(t) . v(t + lag)> of finite-difference
  velocities (``tidynamics.acf`` per particle track, averaged over particles);
- :func:`rdf`: radial distribution g(r) (:func:`colloidcg.structure.rdf.gr`: minimum
  image in a periodic box; for an open field of view, pair counts normalised by those of
  uniform random points in the same field of view, which corrects for the edges);
- :func:`van_hove`: self part of the van Hove function, displacement-component histogram;
- :func:`non_gaussian`: alpha_2(t) = d/(d+2) <dr^4>/<dr^2>^2 - 1 (Rahman 1964);
- :func:`rearrangement_rate`: rearranging particles per particle per second, from a
  ``rearranging`` column.

:func:`compare` computes all of them for two tables and their relative RMS errors;
:func:`write_report` writes ``metrics.json`` and PNG plots.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ColloidcgError

DIMS = ("x", "y", "z")


def _dims(tracks: pd.DataFrame) -> list[str]:
    return [c for c in DIMS if c in tracks.columns]


def _check(tracks: pd.DataFrame, name: str = "tracks") -> None:
    need = ["frame", "particle", "x", "y"]
    miss = [c for c in need if c not in tracks.columns]
    if miss:
        raise ColloidcgError(f"{name}: missing column(s) {', '.join(miss)}")
    if tracks["frame"].nunique() < 3:
        raise ColloidcgError(f"{name}: fewer than 3 frames; statistics need at least 3")
    if not np.isfinite(tracks[_dims(tracks)].to_numpy(float)).all():
        raise ColloidcgError(f"{name}: NaN or infinite positions")


def dense(tracks: pd.DataFrame, um_per_px: float = 1.0):
    """(T, N, d) positions in um with NaN where missing, plus frame numbers."""
    dims = _dims(tracks)
    f = tracks["frame"].to_numpy().astype(np.int64)
    parts, col = np.unique(tracks["particle"].to_numpy(), return_inverse=True)
    f0 = f.min()
    T = int(f.max() - f0 + 1)
    out = np.full((T, len(parts), len(dims)), np.nan)
    out[f - f0, col] = tracks[dims].to_numpy(float) * um_per_px
    return out, np.arange(f0, f0 + T)


def msd(tracks: pd.DataFrame, um_per_px: float = 1.0, fps: float = 1.0, max_lag: int = 100) -> pd.DataFrame:
    """Ensemble MSD: columns lag (frames), t (s), msd (um^2)."""
    import trackpy
    dims = _dims(tracks)
    pos_columns = dims
    em = trackpy.motion.emsd(tracks[["frame", "particle"] + dims], mpp=um_per_px, fps=fps,
                             max_lagtime=max_lag, pos_columns=pos_columns)
    lagt = np.asarray(em.index, float)
    return pd.DataFrame({"lag": np.rint(lagt * fps).astype(int), "t": lagt, "msd": np.asarray(em, float)})


def vacf(tracks: pd.DataFrame, um_per_px: float = 1.0, fps: float = 1.0, max_lag: int = 50) -> pd.DataFrame:
    """Velocity autocorrelation of finite-difference velocities (um^2/s^2) and normalised."""
    import tidynamics
    pos, _ = dense(tracks, um_per_px)
    vel = (pos[1:] - pos[:-1]) * fps
    T = vel.shape[0]
    L = min(max_lag, T - 1)
    acc = np.zeros(L + 1)
    cnt = np.zeros(L + 1)
    for n in range(vel.shape[1]):
        v = vel[:, n]
        ok = np.isfinite(v).all(1)
        if ok.sum() < 2:
            continue
        # longest contiguous run per particle keeps tidynamics' FFT estimate exact
        idx = np.flatnonzero(ok)
        breaks = np.flatnonzero(np.diff(idx) > 1)
        for seg in np.split(idx, breaks + 1):
            if len(seg) < 2:
                continue
            a = tidynamics.acf(v[seg])          # mean over time origins, per lag
            k = min(L + 1, len(a))
            w = len(seg) - np.arange(k)
            acc[:k] += a[:k] * w
            cnt[:k] += w
    c = np.where(cnt > 0, acc / np.maximum(cnt, 1), np.nan)
    return pd.DataFrame({"lag": np.arange(L + 1), "t": np.arange(L + 1) / fps, "vacf": c,
                         "vacf_norm": c / c[0]})


def rdf(tracks: pd.DataFrame, um_per_px: float = 1.0, r_max: float | None = None, bins: int = 60,
        box_px=None, max_frames: int = 20, seed: int = 0, edge: str | None = None,
        fov_px=None) -> pd.DataFrame:
    """g(r) averaged over up to ``max_frames`` evenly spaced frames: columns r (um), g
    (dimensionless).

    A thin caller of :func:`colloidcg.structure.rdf.gr`. ``edge`` (default: ``"periodic"``
    when ``box_px`` is given, else ``"random"``):

    - ``"periodic"``: minimum image in the box ``box_px`` (px side lengths); r_max is cut
      to just below half the shortest side;
    - ``"random"``: pair counts over those of as many uniform random points (two sets per
      frame, seeded by ``seed``) in ``fov_px`` ((d, 2) px bounds; default each frame's
      bounding box of the particles), which corrects for the edges of an open field of
      view;
    - ``"exclude"``: only particles at least r_max from every edge of ``fov_px`` (default
      the bounding box of all positions) are centres.

    ``r_max`` in um, default 5 median nearest-neighbour distances of the first frame used;
    ``bins`` equal bins from 0 to r_max.
    """
    from .neighbours import nearest
    from .structure.rdf import gr

    pos, _ = dense(tracks, um_per_px)
    d = pos.shape[-1]
    frames = np.linspace(0, pos.shape[0] - 1, min(max_frames, pos.shape[0])).astype(int)
    if edge is None:
        edge = "periodic" if box_px is not None else "random"
    if r_max is None:
        p0 = pos[frames[0]][np.isfinite(pos[frames[0]]).all(1)]
        r_max = 5.0 * float(np.median(nearest(p0)[0]))
    box = fov = None
    if edge == "periodic":
        if box_px is None:
            raise ColloidcgError("rdf: edge='periodic' needs the periodic box box_px")
        box = np.asarray(box_px, float)[:d] * um_per_px
        # the minimum image needs r_max below half the box; small MD boxes reach it
        r_max = min(r_max, 0.4999 * float(box.min()))
    if fov_px is not None:
        fov = np.asarray(fov_px, float)[:d] * um_per_px
    elif edge == "exclude":
        fin = pos[np.isfinite(pos).all(-1)]
        fov = np.c_[fin.min(0), fin.max(0)]
    edges = np.linspace(0, r_max, bins + 1)
    r, g, _ = gr((pos[t] for t in frames), edges, edge, box=box, fov=fov, rng=seed)
    return pd.DataFrame({"r": r, "g": g})


def _displacements(tracks, um_per_px, lag):
    pos, _ = dense(tracks, um_per_px)
    dr = pos[lag:] - pos[:-lag]
    return dr[np.isfinite(dr).all(-1)]


def van_hove(tracks: pd.DataFrame, um_per_px: float = 1.0, lags=(1, 10), bins: int = 41) -> pd.DataFrame:
    """Self van Hove G_s(dx, lag): probability density of displacement components (um^-1)."""
    rows = []
    for lag in sorted(set(int(x) for x in lags)):   # each lag once (short tables give (1, 1))
        dr = _displacements(tracks, um_per_px, lag)
        if dr.size == 0:
            continue
        comp = dr.reshape(-1)
        s = float(np.std(comp)) or 1.0
        edges = np.linspace(-5 * s, 5 * s, bins + 1)
        h, _ = np.histogram(comp, edges, density=True)
        for c_, v in zip(0.5 * (edges[1:] + edges[:-1]), h):
            rows.append({"lag": lag, "dx": c_, "p": v})
    return pd.DataFrame(rows, columns=["lag", "dx", "p"])


def non_gaussian(tracks: pd.DataFrame, um_per_px: float = 1.0, fps: float = 1.0, max_lag: int = 50) -> pd.DataFrame:
    """alpha_2(t) = d/(d+2) <dr^4>/<dr^2>^2 - 1."""
    pos, _ = dense(tracks, um_per_px)
    d = pos.shape[-1]
    out = []
    for lag in range(1, min(max_lag, pos.shape[0] - 1) + 1):
        dr = pos[lag:] - pos[:-lag]
        r2 = np.square(dr).sum(-1)
        r2 = r2[np.isfinite(r2)]
        if r2.size == 0:
            continue
        out.append({"lag": lag, "t": lag / fps, "alpha2": d / (d + 2) * np.mean(r2 ** 2) / np.mean(r2) ** 2 - 1})
    return pd.DataFrame(out, columns=["lag", "t", "alpha2"])


def rearrangement_rate(tracks: pd.DataFrame, fps: float = 1.0) -> float:
    """Rearranging particle-frames per particle-frame, times fps (1/s); NaN without labels."""
    if "rearranging" not in tracks.columns:
        return float("nan")
    lab = tracks["rearranging"].to_numpy(float)
    lab = lab[np.isfinite(lab)]
    return float(np.mean(lab > 0.5) * fps) if lab.size else float("nan")


def rel_rms(model: np.ndarray, data: np.ndarray, pointwise: bool = False) -> float:
    """Relative RMS error of ``model`` against ``data`` on their common finite points.

    pointwise=False: sqrt(mean((m - d)^2) / mean(d^2)) (curves that cross zero: VACF, g(r));
    pointwise=True: sqrt(mean(((m - d) / d)^2)) (positive curves: MSD).
    """
    m = np.asarray(model, float)
    d = np.asarray(data, float)
    n = min(len(m), len(d))
    m, d = m[:n], d[:n]
    ok = np.isfinite(m) & np.isfinite(d)
    if pointwise:
        ok &= d != 0
    if not ok.any():
        return float("nan")
    if pointwise:
        return float(np.sqrt(np.mean(((m[ok] - d[ok]) / d[ok]) ** 2)))
    return float(np.sqrt(np.mean((m[ok] - d[ok]) ** 2) / np.mean(d[ok] ** 2)))


def statistics(tracks: pd.DataFrame, um_per_px: float = 1.0, fps: float = 1.0, max_lag: int | None = None,
               box_px=None, r_max: float | None = None) -> dict:
    """All statistics of one table (DataFrames and scalars)."""
    _check(tracks)
    T = int(tracks["frame"].max() - tracks["frame"].min() + 1)
    L = max_lag or max(2, T // 2)
    return {
        "msd": msd(tracks, um_per_px, fps, L),
        "vacf": vacf(tracks, um_per_px, fps, min(L, 50)),
        "rdf": rdf(tracks, um_per_px, r_max=r_max, box_px=box_px),
        "van_hove": van_hove(tracks, um_per_px, lags=(1, max(1, min(10, T // 4)))),
        "non_gaussian": non_gaussian(tracks, um_per_px, fps, min(L, 50)),
        "rearrangement_rate": rearrangement_rate(tracks, fps),
    }


def compare(data: pd.DataFrame, sim: pd.DataFrame, um_per_px: float = 1.0, fps: float = 1.0,
            max_lag: int | None = None, box_px=None) -> tuple[dict, dict, dict]:
    """Statistics of both tables and their relative RMS errors (common lags / bins).

    Returns (metrics, stats_data, stats_sim); metrics holds msd_rel_rms (pointwise),
    vacf_rel_rms, rdf_rel_rms, van_hove_rel_rms, non_gaussian_abs_diff, rates.
    """
    _check(data, "data")
    _check(sim, "simulation")
    Td = int(data["frame"].max() - data["frame"].min() + 1)
    Ts = int(sim["frame"].max() - sim["frame"].min() + 1)
    L = max_lag or max(2, min(Td, Ts) // 2)
    sd = statistics(data, um_per_px, fps, L, box_px)
    r_max = float(sd["rdf"]["r"].iloc[-1] + 0.5 * (sd["rdf"]["r"].iloc[1] - sd["rdf"]["r"].iloc[0]))
    ss = statistics(sim, um_per_px, fps, L, box_px, r_max=r_max)
    m1 = sd["msd"].merge(ss["msd"], on="lag", suffixes=("_d", "_s"))
    v1 = sd["vacf"].merge(ss["vacf"], on="lag", suffixes=("_d", "_s"))
    vh = sd["van_hove"].merge(ss["van_hove"], on=["lag", "dx"], how="inner", suffixes=("_d", "_s"))
    ng = sd["non_gaussian"].merge(ss["non_gaussian"], on="lag", suffixes=("_d", "_s"))
    # van Hove: evaluate the simulation's histogram on the data's bins
    vh_err = []
    for lag in sd["van_hove"]["lag"].unique():
        dd = sd["van_hove"][sd["van_hove"]["lag"] == lag]
        dr = _displacements(sim, um_per_px, int(lag)).reshape(-1)
        if dr.size == 0:
            continue
        step = float(dd["dx"].iloc[1] - dd["dx"].iloc[0])
        edges = np.r_[dd["dx"].to_numpy() - step / 2, dd["dx"].iloc[-1] + step / 2]
        hs = np.histogram(dr, edges)[0] / (dr.size * step)
        vh_err.append(rel_rms(hs, dd["p"].to_numpy()))
    metrics = {
        "msd_rel_rms": rel_rms(m1["msd_s"], m1["msd_d"], pointwise=True),
        "vacf_rel_rms": rel_rms(v1["vacf_s"], v1["vacf_d"]),
        "rdf_rel_rms": rel_rms(ss["rdf"]["g"], sd["rdf"]["g"]),
        "van_hove_rel_rms": float(np.nanmean(vh_err)) if vh_err else float("nan"),
        "non_gaussian_abs_diff": float(np.nanmean(np.abs(ng["alpha2_s"] - ng["alpha2_d"]))) if len(ng) else float("nan"),
        "rearrangement_rate_data": sd["rearrangement_rate"],
        "rearrangement_rate_sim": ss["rearrangement_rate"],
        "max_lag_frames": L,
        "units": {"length": "um", "time": "s"},
    }
    del vh
    return metrics, sd, ss


def plot_comparison(sd: dict, ss: dict, out_dir, labels=("data", "model"), fps: float | None = None) -> list[Path]:
    """PNG plots of each statistic, model against data. Returns the written paths. ``fps``
    (frames per second) gives the van Hove lags in seconds too."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .outputs import atomic_write_bytes
    import io

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(atomic_write_bytes(out_dir / name, buf.getvalue()))

    specs = [("msd", "t", "msd", "lag time (s)", "mean squared displacement (µm$^2$)", True,
              "mean squared displacement"),
             ("vacf", "t", "vacf_norm", "lag time (s)", "velocity autocorrelation / its value at 0",
              False, "velocity autocorrelation (normalised)"),
             ("rdf", "r", "g", "pair distance r (µm)", "radial distribution g(r)", False,
              "radial distribution function"),
             ("non_gaussian", "t", "alpha2", "lag time (s)", r"non-Gaussian parameter $\alpha_2$", False,
              "non-Gaussian parameter of the displacements")]
    for key, x, y, xl, yl, loglog, title in specs:
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        for st, lab, sty in ((sd, labels[0], "o"), (ss, labels[1], "-")):
            df = st[key]
            if len(df):
                ax.plot(df[x], df[y], sty, ms=3, label=lab)
        if loglog:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(title, fontsize=10)
        ax.legend(frameon=False)
        save(fig, f"{key}.png")
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for st, lab, sty in ((sd, labels[0], "o"), (ss, labels[1], "-")):
        df = st["van_hove"]
        for lag in df["lag"].unique():
            dd = df[df["lag"] == lag]
            lag_text = f"{lag} frame{'s' if lag != 1 else ''}" + (f" ({lag / fps:.3g} s)" if fps else "")
            ax.semilogy(dd["dx"], dd["p"].where(dd["p"] > 0), sty, ms=3, label=f"{lab}, lag {lag_text}")
    ax.set_xlabel("displacement along x or y, $\\Delta x$ (µm)")
    ax.set_ylabel("self van Hove $G_s(\\Delta x, t)$ (µm$^{-1}$)")
    ax.set_title("distribution of displacements over a lag t", fontsize=10)
    ax.legend(frameon=False, fontsize=7)
    save(fig, "van_hove.png")
    return written


def write_report(data: pd.DataFrame, sim: pd.DataFrame, out_dir, um_per_px: float = 1.0, fps: float = 1.0,
                 box_px=None, extra: dict | None = None) -> dict:
    """Compare two tables; write metrics.json and PNG plots into ``out_dir``."""
    from .outputs import atomic_write_json
    metrics, sd, ss = compare(data, sim, um_per_px, fps, box_px=box_px)
    plots = plot_comparison(sd, ss, out_dir, fps=fps)
    rec = dict(metrics)
    rec["plots"] = [p.name for p in plots]
    rec["curves"] = {k: {"data": sd[k].to_dict(orient="list"), "model": ss[k].to_dict(orient="list")}
                     for k in ("msd", "vacf", "rdf", "non_gaussian")}
    if extra:
        rec.update(extra)
    atomic_write_json(Path(out_dir) / "metrics.json", _finite(rec))
    return rec


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not math.isfinite(float(obj)):
        return None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj
