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

:func:`statistics`, :func:`compare`, :func:`plot_comparison`, :func:`write_report`, the
batch HTML report and napari's rollout plot all read one table, :data:`STATISTICS`: each
:class:`Statistic` names its function, its columns and their units, its axis labels, how
its model-versus-data error is computed and how it is drawn. Adding a statistic is one
:func:`register` call (see docs/statistics.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

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


def _independent_pairs(span: np.ndarray, lag: np.ndarray) -> np.ndarray:
    """Effective number of statistically independent squared displacements at ``lag``
    in a track of ``span`` consecutive frames (Qian, Sheetz & Elson, Biophys. J. 60, 910
    (1991), eq. B4; the weights trackpy's emsd gives each particle)."""
    n, t = np.asarray(span, float), np.asarray(lag, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > n / 2,
                        1 / (1 + ((n - t) ** 3 + 5 * t - 4 * (n - t) ** 2 * t - n) / (6 * (n - t) * t ** 2)),
                        6 * (n - t) ** 2 * t / (2 * n - t + 4 * n * t ** 2 - 5 * t ** 3))


def msd(tracks: pd.DataFrame, um_per_px: float = 1.0, fps: float = 1.0, max_lag: int = 100) -> pd.DataFrame:
    """Ensemble MSD: columns lag (frames), t (s), msd (um^2).

    ``trackpy.motion.emsd``'s estimator, to rounding (a test): each particle's MSD over all
    its time origins (the pairs its missing frames leave), averaged over particles weighted
    by their effective numbers of independent measurements at that lag (Qian et al. 1991;
    rescaled over lags where gaps leave a lag without pairs, as trackpy does). Computed here
    from (T, n, d) blocks of particles because emsd loops over particles in pandas, about 100
    times slower. Lags 1 .. max_lag that some particle spans.
    """
    dims = _dims(tracks)
    f = tracks["frame"].to_numpy().astype(np.int64)
    code = np.unique(tracks["particle"].to_numpy(), return_inverse=True)[1].ravel()
    pos = tracks[dims].to_numpy(float) * um_per_px
    n_part = int(code.max()) + 1 if len(code) else 0
    first = np.full(n_part, np.iinfo(np.int64).max)
    last = np.full(n_part, np.iinfo(np.int64).min)
    np.minimum.at(first, code, f)
    np.maximum.at(last, code, f)
    span = last - first + 1                                   # frames each track covers
    rows = np.bincount(code, minlength=n_part)                # frames it is seen in
    n_lag = int(min(max_lag, span.max() - 1)) if n_part else 0
    if n_lag < 1:
        return pd.DataFrame({"lag": np.zeros(0, int), "t": np.zeros(0), "msd": np.zeros(0)})
    num = np.zeros(n_lag)
    den = np.zeros(n_lag)
    lags = np.arange(1, n_lag + 1)
    order = np.argsort(code, kind="stable")
    f, code, pos = f[order] - first[code[order]], code[order], pos[order]
    longest = int(span.max())
    block = max(1, int(4_000_000 // (longest * len(dims))))  # at most ~32 MB per block
    for start in range(0, n_part, block):
        stop = min(start + block, n_part)
        lo, hi = np.searchsorted(code, [start, stop])
        arr = np.full((longest, stop - start, len(dims)), np.nan)
        arr[f[lo:hi], code[lo:hi] - start] = pos[lo:hi]       # each track from its own first frame
        sums = np.zeros((n_lag, stop - start))
        pairs = np.zeros((n_lag, stop - start))
        for k in lags:
            sq = np.square(arr[k:] - arr[:-k]).sum(-1)
            ok = np.isfinite(sq)
            sums[k - 1] = np.where(ok, sq, 0.0).sum(0)
            pairs[k - 1] = ok.sum(0)
        sp, seen = span[start:stop], rows[start:stop]
        inside = lags[:, None] <= sp[None, :] - 1             # lags each track spans
        w = np.where(inside, _independent_pairs(sp[None, :], lags[:, None]), 0.0) * (seen / sp)[None, :]
        gappy = seen < sp
        if gappy.any():                                       # no pairs: weight 0, the rest rescaled
            want = w[:, gappy].sum(0)
            w[:, gappy] = np.where(pairs[:, gappy] > 0, w[:, gappy], 0.0)
            have = w[:, gappy].sum(0)
            w[:, gappy] *= np.divide(want, have, out=np.zeros_like(want), where=have > 0)
        m = np.divide(sums, pairs, out=np.zeros_like(sums), where=pairs > 0)
        num += (m * w).sum(1)
        den += w.sum(1)
    keep = den > 0
    return pd.DataFrame({"lag": lags[keep], "t": lags[keep] / fps, "msd": num[keep] / den[keep]})


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
        fov_px=None, tilt_px=None) -> pd.DataFrame:
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
    ``bins`` equal bins from 0 to r_max. ``tilt_px``: a sheared (Lees-Edwards) box's offset
    per frame number (px; the sidecar's ``meta.lees_edwards.tilt_xy``, index = frame), for
    the sheared minimum image (``"periodic"`` only).
    """
    from .neighbours import nearest
    from .structure.rdf import gr

    pos, frame_numbers = dense(tracks, um_per_px)
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
    shear = None
    if tilt_px is not None:
        if edge != "periodic":
            raise ColloidcgError("rdf: tilt_px (a sheared box) needs edge='periodic'")
        if len(tilt_px) <= int(frame_numbers[frames].max()):
            raise ColloidcgError(f"rdf: tilt_px has {len(tilt_px)} offsets; the tracks reach frame "
                                 f"{int(frame_numbers[frames].max())} (one offset per frame number needed)")
        shear = [float(tilt_px[int(frame_numbers[t])]) * um_per_px for t in frames]
    r, g, _ = gr((pos[t] for t in frames), edges, edge, box=box, fov=fov, rng=seed, shear=shear)
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


# ----------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Settings:
    """What a statistic's function is given besides the tracks table.

    ``um_per_px`` (um per px) and ``fps`` (frames per s) convert the table's px and
    frames; ``max_lag`` (frames) bounds the lags of time-dependent statistics;
    ``n_frames`` is the number of frames the table spans; ``box_px`` the periodic box (px)
    or None, ``tilt_px`` its Lees-Edwards offset per frame number (px) when it is sheared;
    ``r_max`` (um) an explicit largest distance, or None. ``reference`` is the
    data's value of this same statistic while the model's is computed (so that the model
    is measured on the data's bins, lags or range), None otherwise.
    """

    um_per_px: float = 1.0
    fps: float = 1.0
    max_lag: int = 2
    n_frames: int = 3
    box_px: Any = None
    r_max: float | None = None
    reference: Any = None
    tilt_px: Any = None


@dataclass(frozen=True)
class Comparison:
    """What an error function is given besides the two values: both tables and the
    settings (lags, calibration)."""

    data: pd.DataFrame
    sim: pd.DataFrame
    settings: Settings


@dataclass(frozen=True)
class Statistic:
    """One row of :data:`STATISTICS`.

    Attributes
    ----------
    name : key in :func:`statistics`' result; the plot is ``{name}.png``.
    compute : ``(tracks, Settings) -> DataFrame`` (a curve) or ``-> float`` (a scalar).
    label : short name for captions and report rows ("MSD").
    title : plot title (the statistic in words).
    units : column -> unit of the computed table ({"t": "s", "msd": "um^2"}; a scalar's
        unit under "value"); units are um and s when calibrated, px and frames otherwise.
    x, y : the columns drawn (curves).
    x_label, y_label : axis labels; ``{L}`` and ``{T}`` stand for the length and time
        units (µm and s in the report).
    log_x, log_y : logarithmic axes (non-positive values are not drawn).
    group : column that splits a curve into several (the van Hove lag), with
        ``group_label(value, fps)`` naming each.
    error : ``(data_value, model_value, Comparison) -> float``, the model-versus-data
        error recorded as ``metric`` (see :func:`rel_rms_on`, :func:`mean_abs_diff_on`);
        None: no error (a scalar's values are recorded as ``{name}_data`` and ``{name}_sim``).
    metric, metric_label : its key in ``metrics.json`` and its row label in reports.
    curves : the curves go into ``metrics.json`` (``curves``).
    plot : drawn by :func:`plot_comparison` (curves only).
    napari : drawn in napari's rollout tab too.
    """

    name: str
    compute: Callable[[pd.DataFrame, Settings], Any]
    label: str
    title: str = ""
    units: Mapping[str, str] = field(default_factory=dict)
    x: str | None = None
    y: str | None = None
    x_label: str = ""
    y_label: str = ""
    log_x: bool = False
    log_y: bool = False
    group: str | None = None
    group_label: Callable[[Any, float | None], str] | None = None
    error: Callable[[Any, Any, Comparison], float] | None = None
    metric: str | None = None
    metric_label: str = ""
    curves: bool = True
    plot: bool = True
    napari: bool = False

    @property
    def scalar(self) -> bool:
        """True for a single number (no x/y columns)."""
        return self.x is None

    def axis_labels(self, length: str = "µm", time: str = "s") -> tuple[str, str]:
        """(x label, y label) with the units filled in."""
        def fill(t):
            return t.replace("{L}", length).replace("{T}", time)
        return fill(self.x_label), fill(self.y_label)

    def metric_rows(self) -> list[tuple[str, str]]:
        """(metrics.json key, label) of what :func:`compare` records for this statistic."""
        rows = []
        if self.error is not None and self.metric:
            rows.append((self.metric, self.metric_label or f"{self.label} error"))
        if self.scalar:
            u = self.units.get("value")
            unit = f" ({u})" if u else ""
            rows += [(f"{self.name}_data", f"{self.label}, data{unit}"),
                     (f"{self.name}_sim", f"{self.label}, model{unit}")]
        return rows


#: The statistics, in the order they are computed, reported and drawn.
STATISTICS: dict[str, Statistic] = {}


def register(stat: Statistic) -> Statistic:
    """Add ``stat`` to :data:`STATISTICS` (replacing one of the same name); returns it."""
    if stat.error is not None and not stat.metric:
        raise ValueError(f"statistic {stat.name!r}: an error needs a metric name")
    if not stat.scalar and not stat.y:
        raise ValueError(f"statistic {stat.name!r}: a curve needs its y column")
    STATISTICS[stat.name] = stat
    return stat


def unregister(name: str) -> Statistic:
    """Remove and return the statistic ``name``."""
    return STATISTICS.pop(name)


def rel_rms_on(column: str, on: str | None = "lag", pointwise: bool = False):
    """Error function: :func:`rel_rms` of the model's ``column`` against the data's, on
    the rows with equal ``on`` (None: row by row over the common length)."""
    def error(d: pd.DataFrame, m: pd.DataFrame, _ctx=None) -> float:
        if on is None:
            return rel_rms(m[column], d[column], pointwise=pointwise)
        j = d.merge(m, on=on, suffixes=("_d", "_s"))
        return rel_rms(j[f"{column}_s"], j[f"{column}_d"], pointwise=pointwise)
    return error


def mean_abs_diff_on(column: str, on: str = "lag"):
    """Error function: mean |model - data| of ``column`` on the rows with equal ``on``."""
    def error(d: pd.DataFrame, m: pd.DataFrame, _ctx=None) -> float:
        j = d.merge(m, on=on, suffixes=("_d", "_s"))
        return float(np.nanmean(np.abs(j[f"{column}_s"] - j[f"{column}_d"]))) if len(j) else float("nan")
    return error


def _van_hove_error(d: pd.DataFrame, m: pd.DataFrame, ctx: Comparison) -> float:
    """Mean over lags of the relative RMS error of the model's displacement histogram,
    re-binned on the data's bins."""
    err = []
    for lag in d["lag"].unique():
        dd = d[d["lag"] == lag]
        dr = _displacements(ctx.sim, ctx.settings.um_per_px, int(lag)).reshape(-1)
        if dr.size == 0:
            continue
        step = float(dd["dx"].iloc[1] - dd["dx"].iloc[0])
        edges = np.r_[dd["dx"].to_numpy() - step / 2, dd["dx"].iloc[-1] + step / 2]
        hs = np.histogram(dr, edges)[0] / (dr.size * step)
        err.append(rel_rms(hs, dd["p"].to_numpy()))
    return float(np.nanmean(err)) if err else float("nan")


def _rdf_stat(tracks: pd.DataFrame, st: Settings) -> pd.DataFrame:
    r_max = st.r_max
    ref = st.reference
    if r_max is None and ref is not None and len(ref) > 1:   # the model on the data's bins
        r_max = float(ref["r"].iloc[-1] + 0.5 * (ref["r"].iloc[1] - ref["r"].iloc[0]))
    return rdf(tracks, st.um_per_px, r_max=r_max, box_px=st.box_px, tilt_px=st.tilt_px)


def _lag_text(lag, fps) -> str:
    return f"lag {lag} frame{'s' if lag != 1 else ''}" + (f" ({lag / fps:.3g} s)" if fps else "")


for _stat in (
    Statistic("msd", lambda t, st: msd(t, st.um_per_px, st.fps, st.max_lag), "MSD",
              "mean squared displacement", {"lag": "frame", "t": "s", "msd": "um^2"},
              "t", "msd", "lag time ({T})", "MSD ({L}$^2$)", log_x=True, log_y=True,
              error=rel_rms_on("msd", "lag", pointwise=True), metric="msd_rel_rms",
              metric_label="MSD relative RMS error", napari=True),
    Statistic("vacf", lambda t, st: vacf(t, st.um_per_px, st.fps, min(st.max_lag, 50)),
              "Velocity autocorrelation", "velocity autocorrelation (normalised)",
              {"lag": "frame", "t": "s", "vacf": "um^2/s^2", "vacf_norm": ""},
              "t", "vacf_norm", "lag time ({T})", "velocity autocorrelation / its value at 0",
              error=rel_rms_on("vacf", "lag"), metric="vacf_rel_rms",
              metric_label="VACF relative RMS error"),
    Statistic("rdf", _rdf_stat, "g(r)", "radial distribution function", {"r": "um", "g": ""},
              "r", "g", "pair distance r ({L})", "g(r)",
              error=rel_rms_on("g", None), metric="rdf_rel_rms",
              metric_label="g(r) relative RMS error", napari=True),
    Statistic("van_hove", lambda t, st: van_hove(t, st.um_per_px, lags=(1, max(1, min(10, st.n_frames // 4)))),
              "Self van Hove", "distribution of displacements over a lag t",
              {"lag": "frame", "dx": "um", "p": "1/um"},
              "dx", "p", "displacement along x or y, $\\Delta x$ ({L})",
              "self van Hove $G_s(\\Delta x, t)$ ({L}$^{-1}$)", log_y=True, group="lag",
              group_label=_lag_text, error=_van_hove_error, metric="van_hove_rel_rms",
              metric_label="van Hove relative RMS error", curves=False),
    Statistic("non_gaussian", lambda t, st: non_gaussian(t, st.um_per_px, st.fps, min(st.max_lag, 50)),
              "Non-Gaussian parameter", "non-Gaussian parameter of the displacements",
              {"lag": "frame", "t": "s", "alpha2": ""},
              "t", "alpha2", "lag time ({T})", r"non-Gaussian parameter $\alpha_2$",
              error=mean_abs_diff_on("alpha2", "lag"), metric="non_gaussian_abs_diff",
              metric_label="non-Gaussian parameter, mean |difference|"),
    Statistic("rearrangement_rate", lambda t, st: rearrangement_rate(t, st.fps), "rearrangement rate",
              "rearranging particles per particle and second", {"value": "1/s"}),
):
    register(_stat)
del _stat


def statistics(tracks: pd.DataFrame, um_per_px: float = 1.0, fps: float = 1.0, max_lag: int | None = None,
               box_px=None, r_max: float | None = None, reference: dict | None = None,
               tilt_px=None) -> dict:
    """Every statistic of :data:`STATISTICS` for one table: {name: DataFrame or float}.

    ``max_lag`` in frames (default half the frames); ``r_max`` in um; ``reference``: the
    data's statistics when these are the model's (each statistic then measures on the
    data's bins, lags or range); ``tilt_px``: a sheared box's offset per frame number (px).
    """
    _check(tracks)
    T = int(tracks["frame"].max() - tracks["frame"].min() + 1)
    L = max_lag or max(2, T // 2)
    out = {}
    for name, stat in list(STATISTICS.items()):
        st = Settings(um_per_px, fps, L, T, box_px, r_max,
                      None if reference is None else reference.get(name), tilt_px)
        out[name] = stat.compute(tracks, st)
    return out


def compare(data: pd.DataFrame, sim: pd.DataFrame, um_per_px: float = 1.0, fps: float = 1.0,
            max_lag: int | None = None, box_px=None, tilt_data=None, tilt_sim=None) -> tuple[dict, dict, dict]:
    """Statistics of both tables and their model-versus-data errors (common lags / bins).

    ``tilt_data``, ``tilt_sim``: in a sheared (Lees-Edwards) box, each table's offset per
    frame number (px; the sidecars' ``meta.lees_edwards.tilt_xy``), for g(r)'s minimum image.

    Returns (metrics, stats_data, stats_sim); metrics holds each statistic's error under
    its ``metric`` name (msd_rel_rms (pointwise), vacf_rel_rms, rdf_rel_rms,
    van_hove_rel_rms, non_gaussian_abs_diff, ...), each scalar statistic's two values
    (``{name}_data``, ``{name}_sim``: the rearrangement rates), max_lag_frames and units.
    """
    _check(data, "data")
    _check(sim, "simulation")
    Td = int(data["frame"].max() - data["frame"].min() + 1)
    Ts = int(sim["frame"].max() - sim["frame"].min() + 1)
    L = max_lag or max(2, min(Td, Ts) // 2)
    sd = statistics(data, um_per_px, fps, L, box_px, tilt_px=tilt_data)
    ss = statistics(sim, um_per_px, fps, L, box_px, reference=sd, tilt_px=tilt_sim)
    ctx = Comparison(data, sim, Settings(um_per_px, fps, L, min(Td, Ts), box_px))
    metrics: dict = {}
    for name, stat in list(STATISTICS.items()):
        if stat.error is not None:
            metrics[stat.metric] = stat.error(sd[name], ss[name], ctx)
        if stat.scalar:
            metrics[f"{name}_data"] = sd[name]
            metrics[f"{name}_sim"] = ss[name]
    metrics["max_lag_frames"] = L
    metrics["units"] = {"length": "um", "time": "s"}
    return metrics, sd, ss


def plot_comparison(sd: dict, ss: dict, out_dir, labels=("data", "model"), fps: float | None = None) -> list[Path]:
    """PNG plots ``{name}.png`` of each curve statistic of :data:`STATISTICS`, model
    against data. Returns the written paths. ``fps`` (frames per second) gives the van
    Hove lags in seconds too."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .outputs import atomic_write_bytes
    import io

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, stat in list(STATISTICS.items()):
        if stat.scalar or not stat.plot:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        draw_statistic(ax, stat, ((sd.get(name), labels[0], "o"), (ss.get(name), labels[1], "-")), fps=fps)
        xl, yl = stat.axis_labels()
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(stat.title, fontsize=10)
        ax.legend(frameon=False, fontsize=7 if stat.group else None)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(atomic_write_bytes(out_dir / f"{name}.png", buf.getvalue()))
    return written


def draw_statistic(ax, stat: Statistic, series, fps: float | None = None) -> None:
    """Draw the curves of ``stat`` on the matplotlib axes ``ax``: ``series`` is a sequence
    of (value, label, style) (the value a DataFrame from :func:`statistics`, or None);
    the axes get the statistic's log scales (labels and titles are the caller's)."""
    for df, lab, sty in series:
        if df is None or not len(df):
            continue
        parts = ([(v, f"{lab}, {stat.group_label(v, fps) if stat.group_label else v}")
                  for v in df[stat.group].unique()] if stat.group else [(None, lab)])
        for v, text in parts:
            dd = df if v is None else df[df[stat.group] == v]
            xv, yv = dd[stat.x], dd[stat.y]
            keep = pd.Series(True, index=dd.index)
            if stat.log_x:
                keep &= xv > 0
            if stat.log_y:
                keep &= yv > 0
            ax.plot(xv.where(keep), yv.where(keep), sty, ms=3, label=text)   # NaN: a gap
    if stat.log_x:
        ax.set_xscale("log")
    if stat.log_y:
        ax.set_yscale("log")


def write_report(data: pd.DataFrame, sim: pd.DataFrame, out_dir, um_per_px: float = 1.0, fps: float = 1.0,
                 box_px=None, extra: dict | None = None, tilt_data=None, tilt_sim=None) -> dict:
    """Compare two tables; write metrics.json and PNG plots into ``out_dir`` (``tilt_*``:
    see :func:`compare`)."""
    from .outputs import atomic_write_json
    metrics, sd, ss = compare(data, sim, um_per_px, fps, box_px=box_px, tilt_data=tilt_data, tilt_sim=tilt_sim)
    plots = plot_comparison(sd, ss, out_dir, fps=fps)
    rec = dict(metrics)
    rec["plots"] = [p.name for p in plots]
    rec["curves"] = {k: {"data": sd[k].to_dict(orient="list"), "model": ss[k].to_dict(orient="list")}
                     for k, stat in STATISTICS.items() if not stat.scalar and stat.curves}
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
