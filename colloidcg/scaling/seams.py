"""Checks of an upsampled system: is a seam visible, and how close do pairs come?

Both read the tracks schema that :func:`~colloidcg.scaling.upsample` writes (frame = sample,
x, y [, z] in px, ``seam_distance`` in px, optionally a size column) and work on any
periodic snapshot, so a direct simulation can be measured the same way.

- :func:`seam_profile`: per particle, the neighbours within ``r_bond`` (local density) and
  the local bond order (2D: |psi6| over the same neighbours; 3D: Steinhardt q6 over the 12
  nearest neighbours, as the macroscopic observable ``q6``), binned by distance to the
  nearest seam and minus the same in the bulk (``seam_distance`` > 3 ``r_bond``), per sample; mean and standard
  error over samples. A seam is visible where a bin's mean is more than about 2 standard
  errors from 0 (issue 19's criterion).
- :func:`seam_check`: the same for the band within one nearest-neighbour distance of a
  seam, with its size in standard errors also for a single sample (over its tiles), as
  :func:`~colloidcg.scaling.upsample` records and warns on.
- :func:`closest_by_pair`: the smallest distance of every pair of sizes over all samples,
  to compare with the data's own closest approach.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from ..neighbours import pairs
from ..structure.order import psi_k


def _positions(frame: pd.DataFrame) -> np.ndarray:
    cols = ["x", "y", "z"] if "z" in frame.columns else ["x", "y"]
    return frame[cols].to_numpy(float)


def seam_profile(tracks: pd.DataFrame, box, r_bond: float, edges: Sequence[float] = (0.0, 16.0),
                 bulk_px: float | None = None, distance: str = "seam_distance",
                 reference: dict[str, float] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The seam's imprint on local density and order.

    Parameters
    ----------
    tracks : upsampled samples (frame, x, y [, z], seam_distance; px).
    box : periodic box side(s), px.
    r_bond : neighbour distance, px (about the first minimum of g(r)).
    edges : bin edges of the distance to the nearest seam, px.
    bulk_px : the bulk is the particles farther than this from every seam, px (default
        3 ``r_bond``).
    distance : the column of distances to bin by: ``seam_distance`` (each particle's own,
        when its seam was made) or, for a crystal film, ``site_seam_distance`` (its lattice
        site's: faces in the lattice's registry pick particles by their displacement when
        binned by their own distance, docs/scaling.md).
    reference : {measure: value} to subtract instead of each sample's bulk (a direct
        simulation's or the film's own mean, where the tiles hold no bulk: 3D films).

    Returns
    -------
    {"density": (mean, se), "psi6" (2D) or "q6" (3D): (mean, se)}, each of shape
    (len(edges) - 1,): the bin's mean over its particles minus the bulk's mean
    (``seam_distance`` > ``bulk_px``), averaged over samples, and the standard error of that
    average over samples (NaN with one sample).
    """
    box = np.asarray(box, float)
    two_d = "z" not in tracks.columns
    diffs: dict[str, list] = {name: [] for name in _measures(two_d)}
    for _, g in tracks.groupby("frame"):
        values = _local(g, box, r_bond, two_d)
        seam = g[distance].to_numpy(float)
        bulk = seam > (3 * r_bond if bulk_px is None else bulk_px)
        which = np.digitize(seam, edges) - 1
        for name, val in values.items():
            ref = reference[name] if reference is not None else np.nanmean(val[bulk]) if bulk.any() else np.nan
            diffs[name].append([np.nanmean(val[which == b]) - ref if np.any(which == b) else np.nan
                                for b in range(len(edges) - 1)])
    out = {}
    for name, rows in diffs.items():
        a = np.array(rows, float)
        se = a.std(0, ddof=1) / math.sqrt(len(a)) if len(a) > 1 else np.full(a.shape[1], np.nan)
        out[name] = (a.mean(0), se)
    return out


class SeamVisibleWarning(UserWarning):
    """An upsampled snapshot's seams differ from its bulk beyond chance (:func:`seam_check`)."""


#: :func:`seam_check` calls a seam visible where a difference this unlikely by chance (the
#: two-sided probability of 3 standard errors of a normal) is measured.
SEAM_FALSE_ALARM = 0.0027

#: :func:`seam_check` judges against a bulk of at least this many particles per sample.
MIN_BULK = 20


def film_reference(frames: Sequence[np.ndarray], views: np.ndarray, r_bond: float, margin: float | None = None
                   ) -> dict[str, tuple[float, float, int]]:
    """A crystal film's own local structure, for judging seams where the tiles hold no bulk
    (:func:`seam_check`'s ``reference``): neighbours within ``r_bond`` and the bond order
    (:func:`seam_profile`'s measures) of the particles inside their frame's view (the
    tiled windows' region) and farther than ``margin`` px (default ``r_bond``, so that their
    neighbourhoods are whole: a close-packed crystal's 12 nearest lie within its first
    shell) inside the convex hull of the frame's particles (:func:`whole_neighbourhoods`).

    ``frames``: positions (N_t, d) px of up to 20 frames (open, no box); ``views``: (T, d, 2)
    px, each frame's lower and upper bound per axis. Returns {measure: (mean over frames,
    its standard error over frames, number of frames)}; frames follow one another, so the
    error is a lower bound where the crystal's structure persists over the film."""
    margin = float(r_bond) if margin is None else float(margin)
    two_d = np.asarray(frames[0]).shape[1] == 2
    per: dict[str, list] = {name: [] for name in _measures(two_d)}
    step = max(1, int(math.ceil(len(frames) / 20)))
    for p, view in zip(frames[::step], views[::step]):
        p = np.asarray(p, float)
        inner = np.all((p > view[:, 0]) & (p < view[:, 1]), axis=1) & whole_neighbourhoods(p, margin)
        if inner.sum() < MIN_BULK:
            continue
        for name, val in _local(p, None, r_bond, two_d).items():
            per[name].append(float(np.nanmean(val[inner])))
    return {name: mean_and_error(vals) for name, vals in per.items()}


def mean_and_error(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, standard error of the mean, count) of ``values``; NaN where there are too few."""
    v = np.asarray(values, float)
    return (float(v.mean()) if len(v) else math.nan,
            float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan, len(v))


def whole_neighbourhoods(pos: np.ndarray, margin: float) -> np.ndarray:
    """(N,) bool: the particles of an open frame (positions (N, d) px) farther than
    ``margin`` px inside the convex hull of all of them, whose neighbourhoods the view's
    edge does not cut (a field of view is convex, and a turned one is not axis-aligned)."""
    from scipy.spatial import ConvexHull

    pos = np.asarray(pos, float)
    hull = ConvexHull(pos)
    # each facet: unit normal n (outward) and offset b, n . x + b <= 0 inside
    depth = -(pos @ hull.equations[:, :-1].T + hull.equations[:, -1])
    return depth.min(axis=1) > margin


def seam_check(tracks: pd.DataFrame, box, r_bond: float, shell: float, distance: str = "seam_distance",
               reference: dict | Callable[[], dict] | None = None,
               baseline: Callable[[float, float], dict] | None = None) -> dict:
    """Is a seam visible in ``tracks`` (upsampled samples, px, with the ``distance`` column,
    ``seam_distance`` or a crystal film's ``site_seam_distance`` (:func:`seam_profile`), and,
    for fewer than 3 samples, ``tile``)?

    The band is the particles within ``shell`` px of a seam (one nearest-neighbour
    distance), the bulk those farther than 3 ``r_bond``; neighbours are counted within
    ``r_bond`` (and |psi6| over them, 2D; q6 over the 12 nearest neighbours, 3D). Where
    tiles are too small to hold a bulk that far (fewer than :data:`MIN_BULK` particles per
    sample: small 3D cubes), the bulk is those farther than ``shell`` + ``r_bond``, whose
    neighbourhoods do not reach the band; recorded as "bulk_px". Per measure: the band's mean minus the bulk's
    and its standard error, over samples when there are 3 or more (:func:`seam_profile`);
    with fewer, over the tiles: each tile's band mean minus its bulk mean (at least 4 tiles
    with both; neighbouring particles are correlated, so the spread over particles would
    understate the error). Returns {"shell_px", "r_bond_px", "binned_by" (``distance``),
    "samples", "density": {"difference", "se", "z"}, "psi6" (2D) or "q6" (3D): {...},
    "threshold", "visible": any |z| above the threshold}; a measure that cannot be judged is None.

    ``reference``: a crystal film's own structure (:func:`film_reference`, or a function
    giving it, called only when needed), against which the
    band is judged where the tiles hold no bulk (3D film windows of 5-6 spacings: every
    site lies within 3 of a face): per sample the band's mean minus the film's, its error
    over samples and the reference's combined; recorded as "against": "film".

    ``baseline``: for a crystal film judged against the bulk, a function of (``shell``, the
    bulk's distance px) giving {measure: (difference, standard error, windows)}: the same
    band-minus-bulk difference in the film's own windows where they sit in their frames,
    untiled (:func:`~colloidcg.scaling.upsample.film_window_baseline`). A film's windows
    carry its persistent structure (defects, a strained or less ordered edge region) at the
    same place in every sample, which the samples' spread cannot see; the baseline is
    subtracted, its error added in quadrature, and recorded as "baseline".
    """
    box = np.asarray(box, float)
    frames = tracks["frame"].nunique()
    seam = tracks[distance].to_numpy(float)
    enough = lambda px: np.sum(seam > px) >= MIN_BULK * frames  # noqa: E731
    bulk_px = 3.0 * r_bond if enough(3.0 * r_bond) else float(shell + r_bond)
    out: dict = {"shell_px": float(shell), "r_bond_px": float(r_bond), "bulk_px": bulk_px, "binned_by": distance,
                 "samples": int(frames)}
    n_tiles = 0
    out["against"] = "bulk"
    if callable(reference) and not enough(bulk_px):
        reference = reference()
    if not enough(bulk_px) and reference is not None and frames >= 3:
        out["against"] = "film"
        rows = {}
        band = seam < shell
        values = _per_particle(tracks, box, r_bond)
        key = tracks["frame"].to_numpy()
        for name, val in values.items():
            ref, ref_se, _ = reference.get(name, (math.nan, math.nan, 0))
            per = np.array([np.nanmean(val[band & (key == f)]) for f in np.unique(key) if np.any(band & (key == f))])
            if len(per) < 3 or not np.isfinite(ref):
                rows[name] = (math.nan, math.nan)
                continue
            se = math.sqrt(float(per.std(ddof=1)) ** 2 / len(per) + (ref_se if np.isfinite(ref_se) else 0.0) ** 2)
            rows[name] = (float(per.mean() - ref), se)
    elif not enough(bulk_px):
        rows = {name: (math.nan, math.nan) for name in _measures("z" not in tracks.columns)}
    elif frames >= 3:
        rows = {name: (float(mean[0]), float(se[0]))
                for name, (mean, se) in seam_profile(tracks, box, r_bond, edges=(0.0, shell),
                                                     bulk_px=bulk_px, distance=distance).items()}
    else:
        rows = {}
        for name, obs in tile_differences(tracks, box, r_bond, shell, bulk_px, distance=distance).items():
            n_tiles = max(n_tiles, len(obs))
            rows[name] = ((float(np.mean(obs)), float(np.std(obs, ddof=1) / math.sqrt(len(obs))))
                          if len(obs) >= 4 else (math.nan, math.nan))
    if baseline is not None and out["against"] == "bulk" and any(np.isfinite(m) for m, _ in rows.values()):
        base = baseline(float(shell), float(bulk_px))
        out["baseline"] = {name: {"difference": b[0], "se": b[1], "windows": b[2]} for name, b in base.items()}
        for name, (m, e) in list(rows.items()):
            b, be, n = base.get(name, (math.nan, math.nan, 0))
            if np.isfinite(b) and np.isfinite(be):
                rows[name] = (m - b, math.sqrt(e ** 2 + be ** 2))
    # the 3-sigma level of a normal, for a standard error from n observations (Student t, n - 1
    # degrees of freedom: with 4 tiles a 3-sigma z happens by chance 6 % of the time)
    n_obs = frames if frames >= 3 else n_tiles
    out["threshold"] = float(student_t.ppf(1.0 - SEAM_FALSE_ALARM / 2, n_obs - 1)) if n_obs >= 2 else None
    for name, (m, e) in rows.items():
        out[name] = {"difference": m, "se": e, "z": m / e if e > 0 else None} \
            if np.isfinite(m) and np.isfinite(e) else None
    zs = [abs(v["z"]) for v in out.values() if isinstance(v, dict) and v.get("z") is not None]
    out["visible"] = bool(zs) and out["threshold"] is not None and max(zs) > out["threshold"]
    return out


def seam_check_summary(check: dict | None) -> str:
    """One line on a :func:`seam_check` result, for the command line."""
    if not check:
        return "not run"
    parts = []
    for name, label in (("density", "neighbours"), ("psi6", "|psi6|"), ("q6", "q6")):
        m = check.get(name)
        if isinstance(m, dict) and m.get("z") is not None:
            parts.append(f"{label} {m['difference']:+.3g} ({m['z']:+.1f} SE)")
    if not parts:
        return (f"not judged: fewer than {MIN_BULK} particles per sample farther than {check['bulk_px']:.3g} px "
                "from every seam (tiles too small for a bulk)")
    verdict = "VISIBLE" if check["visible"] else "not visible"
    against = ("the crystal film's own interior (tiles too small for a bulk)" if check.get("against") == "film"
               else "the bulk")
    by = " (by lattice site)" if check.get("binned_by") == "site_seam_distance" else ""
    return (f"{verdict}: within {check['shell_px']:.3g} px of a seam{by} against {against}, " + ", ".join(parts)
            + (f" (visible beyond {check['threshold']:.2g} SE)" if check.get("threshold") else ""))


def tile_differences(tracks: pd.DataFrame, box, r_bond: float, shell: float, bulk_px: float,
                     values: dict[str, np.ndarray] | None = None, distance: str = "seam_distance"
                     ) -> dict[str, np.ndarray]:
    """Per tile of every sample (``frame`` and ``tile`` columns): the mean over its particles
    within ``shell`` px of a seam minus the mean over its particles farther than ``bulk_px``,
    of the neighbours within ``r_bond`` px ("density") and the bond order (2D |psi6| "psi6", 3D
    "q6"); tiles without both are left out. ``values``: {measure: (rows,) per-row values} already
    computed, instead of those two; ``distance``: the column of seam distances
    (:func:`seam_profile`). Neighbouring particles are correlated, so the spread of
    these per-tile differences, not that over particles, gives a standard error.
    Returns {measure: (n_tiles,) array}."""
    box = np.asarray(box, float)
    seam = tracks[distance].to_numpy(float)
    values = _per_particle(tracks, box, r_bond) if values is None else values
    band, bulk = seam < shell, seam > bulk_px
    key = (tracks["frame"].astype(str) + ":" + tracks["tile"].astype(str)).to_numpy() \
        if "tile" in tracks.columns else None
    out = {}
    for name, val in values.items():
        obs = []
        for t in np.unique(key) if key is not None else []:
            here = key == t
            if (band & here).any() and (bulk & here).any():
                obs.append(np.mean(val[band & here]) - np.mean(val[bulk & here]))
        out[name] = np.asarray(obs, float)
    return out


def _per_particle(tracks: pd.DataFrame, box: np.ndarray, r_bond: float) -> dict[str, np.ndarray]:
    """Per row of ``tracks`` (in order): neighbours within ``r_bond`` and the bond order."""
    two_d = "z" not in tracks.columns
    out = {name: np.full(len(tracks), np.nan) for name in _measures(two_d)}
    for rows in tracks.groupby("frame").indices.values():
        for name, v in _local(tracks.iloc[rows], box, r_bond, two_d).items():
            out[name][rows] = v
    return out


def local_means(tracks: pd.DataFrame, box, r_bond: float) -> dict[str, float]:
    """{measure: mean over samples of the sample's mean} of :func:`seam_profile`'s measures
    (neighbours within ``r_bond`` px, |psi6| in 2D or q6 in 3D) in periodic ``tracks`` (px):
    a seamless system's values, such as a direct simulation's, for ``seam_profile``'s
    ``reference``."""
    box = np.asarray(box, float)
    two_d = "z" not in tracks.columns
    per = [_local(g, box, r_bond, two_d) for _, g in tracks.groupby("frame")]
    return {name: float(np.mean([np.nanmean(v[name]) for v in per])) for name in _measures(two_d)}


def neighbour_counts(pos: np.ndarray, box: np.ndarray, r: float, pr: np.ndarray | None = None) -> np.ndarray:
    """(N,) number of neighbours within ``r`` px of each particle (N, d) px (periodic
    ``box``); ``pr``: the (M, 2) pairs within ``r`` when already found."""
    pr = pairs(pos, r, box) if pr is None else pr
    return (np.bincount(pr[:, 0], minlength=len(pos)) + np.bincount(pr[:, 1], minlength=len(pos))).astype(float)


def _measures(two_d: bool) -> list[str]:
    """The seam measures: neighbour count and the local bond order of the dimension."""
    return ["density", "psi6"] if two_d else ["density", "q6"]


def local_measures(pos: np.ndarray, box, r_bond: float) -> dict[str, np.ndarray]:
    """Per particle of one configuration (positions (N, d) px; ``box`` (d,) px periodic, or
    None for an open frame, whose edge particles then lack neighbours): the neighbours
    within ``r_bond`` px ("density") and the bond order ("psi6" |psi6| over them in 2D, "q6"
    over the 12 nearest in 3D), the seam check's measures. Returns {measure: (N,)}."""
    pos = np.asarray(pos, float)
    return _local(pos, None if box is None else np.asarray(box, float), r_bond, pos.shape[1] == 2)


def _local(g: pd.DataFrame | np.ndarray, box: np.ndarray | None, r_bond: float, two_d: bool
           ) -> dict[str, np.ndarray]:
    """One sample's (or, ``box`` None, one open frame's: positions (N, d) px) per-particle
    neighbour counts within ``r_bond`` and |psi6| (2D) or q6 (3D, over the 12 nearest
    neighbours; NaN in a sample of 12 particles or fewer)."""
    from .observables import Q6_NEIGHBOURS, q6_local

    p = _positions(g) if isinstance(g, pd.DataFrame) else np.asarray(g, float)
    p = p if box is None else np.mod(p, box)
    pr = pairs(p, r_bond, box)
    values = {"density": neighbour_counts(p, box, r_bond, pr)}
    if not two_d:
        values["q6"] = (q6_local(p, box) if len(p) > Q6_NEIGHBOURS
                        else np.full(len(p), np.nan))
    else:
        src = np.concatenate([pr[:, 0], pr[:, 1]])
        dst = np.concatenate([pr[:, 1], pr[:, 0]])
        # psi_k takes positions: each bond's far end is placed at its minimum image
        d = p[dst] - p[src]
        if box is not None:
            d -= box * np.round(d / box)
        pos2 = np.concatenate([p, p[src] + d])
        values["psi6"] = np.abs(psi_k(pos2, src, len(p) + np.arange(len(src)), len(pos2), 6)[:len(p)])
    return values


def closest_by_pair(tracks: pd.DataFrame, box, size_column: str | None = None,
                    r_max: float | None = None) -> dict[tuple, float]:
    """{(smaller size, larger size): smallest distance over all frames} (px); without a size
    column the key is (None, None). ``r_max``: search distance (default: twice the largest
    size, or 30 px without sizes)."""
    box = np.asarray(box, float)
    if r_max is None:
        r_max = 2.0 * float(tracks[size_column].max()) if size_column else 30.0
    out: dict[tuple, float] = {}
    for _, g in tracks.groupby("frame"):
        pr, d = pairs(np.mod(_positions(g), box), r_max, box, distances=True)
        if not len(d):
            continue
        if not size_column:
            # one key, set here: a Series keyed by (None, None) indexes it as (nan, nan), which
            # never equals itself, so every frame would add a key of its own
            out[(None, None)] = min(out.get((None, None), np.inf), float(d.min()))
            continue
        s = g[size_column].to_numpy(float)
        a, b = s[pr[:, 0]], s[pr[:, 1]]
        for k, v in pd.Series(d).groupby([np.minimum(a, b), np.maximum(a, b)]).min().items():
            out[k] = min(out.get(k, np.inf), float(v))
    return out
