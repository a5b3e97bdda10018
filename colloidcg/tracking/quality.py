"""A verdict on tracks: can they be trusted, and if not, why not.

Automatic parameters can be wrong without any error being raised: a tracker always
returns *something*. :func:`assess` reads measurable signs of trouble from the tracks
and a few frames, and turns them into a :class:`Quality`: ``status`` is "ok",
"warning" or "unreliable", ``reasons`` says why in words a user can act on, and
``metrics`` holds every number the verdict was drawn from (all saved in
``tracks.json``).

The signs, and the thresholds (warning / unreliable) at which they count:

- ``snr``: median fitted peak height of the detections over the pixel noise
  (:func:`colloidcg.tracking.params.noise_level`): < 3 / < 1.5. Below about 2,
  detections are as likely to be noise as particles.
- ``close_pairs``: fraction of detections with another closer than half a diameter:
  > 0.05 / > 0.2. Two particles cannot overlap that much; such pairs are one particle
  found twice (rings, halos, a diameter too small).
- ``track_length``: median, over detections, of the length of the track holding them,
  as a fraction of the frames tracked: < 0.2 / < 0.05 (videos of 20 frames or more).
  Broken tracks mean a search range that is too small, or detections that come and go.
- ``steps_near_range``: fraction of linked steps longer than 0.8 x the search range:
  > 0.02 / > 0.1. Steps piling up at the search range mean it cuts the real
  displacement distribution.
- ``frame_correlation``: median correlation of consecutive band-passed frames, over
  the pixels around the detections: < 0.3 / < 0.1. Frames that are unrelated cannot be linked, whatever the tracker.
- ``contrast_ambiguity``: when the contrast was estimated, the typical strength of the
  weaker polarity's blobs over the stronger's: > 0.8 (warning only). Wide spots that
  overlap heavily leave holes between them that are blobs as strong as the spots.
- ``ep_tracks_ratio``: the tracks' own localisation noise (from the anticorrelation of
  successive steps, where it is well determined: :func:`calibrate_ep`) over the median
  reported ``ep``: > 2.5 (warning only). Over the 2D conditions benchmark it lies in
  0.51-1.65 (the motion's own step correlations bias it); dyed spheres near contact in
  3D stacks gave 6.6, where ``ep`` was 3-6 times too small (neighbours' misfit light).
- ``count_range``: detections per frame, each a running median over a tenth of the video
  (at least 3 frames), least over most: < 0.5 (warning only; videos of 10 frames or more
  with at least 20 detections in the busiest stretch). Particles that leave the field or
  the focus, or fade (photobleaching) further than :func:`colloidcg.tracking.track` can
  follow them with a minmass per frame, or under a given minmass; a warning only.
- ``noise_share``: share of the mean squared step that is localisation noise,
  2 sigma^2 / <dx^2> per axis, with sigma^2 from the anticorrelation of successive
  steps (:func:`localisation_noise`): > 0.8 (warning only: stuck particles are
  legitimately all noise) and "unreliable" when > 0.8 together with a low frame
  correlation, the signature of linking noise to noise.

Calibrated on cases with known truth in ``tests/test_tracking_robust.py``: dense and dilute
synthetic videos from two renderers say "ok"; videos of pure noise, frames
re-drawn at random, and a diameter far too small never do.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

#: (warning, unreliable) thresholds and the direction in which a metric is bad.
THRESHOLDS: dict[str, tuple[float, float, str]] = {
    "snr": (3.0, 1.5, "low"),
    "close_pairs": (0.05, 0.2, "high"),
    "track_length": (0.2, 0.05, "low"),
    "steps_near_range": (0.02, 0.1, "high"),
    "frame_correlation": (0.3, 0.1, "low"),
    "noise_share": (0.8, math.inf, "high"),
    "contrast_ambiguity": (0.8, math.inf, "high"),
    "ep_tracks_ratio": (2.5, math.inf, "high"),
    "count_range": (0.5, -math.inf, "low"),
}

MESSAGES = {
    "snr": "detections are faint: median signal-to-noise {v:.2g} (check --minmass, --diameter "
           "or the video's exposure)",
    "close_pairs": "{v:.0%} of detections have another closer than half a diameter: particles "
                   "found twice (try a larger --diameter or --separation)",
    "track_length": "tracks are short: the median detection is in a track spanning {v:.0%} of the "
                    "frames (try a larger --search-range or --memory, or check --minmass)",
    "steps_near_range": "{v:.1%} of linked steps are longer than 0.8 x the search range: it cuts "
                        "real displacements (try a larger --search-range)",
    "frame_correlation": "consecutive frames are nearly unrelated (correlation {v:.2f}): particles "
                         "move farther than their size between frames, or the frames are noise; "
                         "tracks cannot be trusted",
    "noise_share": "{v:.0%} of the mean squared step is localisation noise: the particles barely "
                   "move between frames, or the positions are noisy",
    "contrast_ambiguity": "bright and dark blobs are nearly equally strong (ratio {v:.2f}): the "
                          "estimated contrast may have taken the gaps between particles for "
                          "particles; check an overlay or give --contrast",
    "ep_tracks_ratio": "the tracks' own localisation noise is {v:.2g} times the median reported "
                       "ep: ep underestimates the position errors here (crowded or misfit "
                       "spots); take the noise from the tracks (metrics.localisation_noise_px)",
    "count_range": "detections per frame change over the video (the fewest {v:.0%} of the most, in "
                   "running medians): particles leave the field or the focus, or fade further than "
                   "can be followed (photobleaching; with a given --minmass, give a lower one); see "
                   "metrics.detections_per_frame",
}

STATUSES = ("ok", "warning", "unreliable")


@dataclass
class Quality:
    """The verdict on a set of tracks.

    status : "ok", "warning" or "unreliable"
    reasons : one sentence per sign of trouble, worst first
    metrics : every measured sign (``None`` where it could not be measured)
    """

    status: str = "ok"
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def frame_correlation(frames: Sequence[np.ndarray], diameter: int,
                      points: Sequence[np.ndarray] | None = None) -> float:
    """Median Pearson correlation of consecutive frames after trackpy's band-pass.

    Parameters
    ----------
    frames : sequence of ndarray (Y, X)
        Consecutive frames (at least two).
    diameter : int
        Feature diameter (px) of the band-pass.
    points : sequence of ndarray (N, 2), optional
        x, y (px) of the detections in each frame. When given, only the pixels within
        half a diameter of the first frame's detections count, so that the empty
        background's pixel noise does not swamp the particles in a dilute field.
    """
    from .locate import bandpass

    if len(frames) < 2:
        return float("nan")
    bp = [bandpass(np.asarray(f, np.float32), diameter) for f in frames]
    radius = max(1, int(diameter) // 2)
    cs = []
    for i, (a, b) in enumerate(zip(bp[:-1], bp[1:])):
        if points is not None:
            sel = _disc_mask(a.shape, np.asarray(points[i], float).reshape(-1, 2), radius)
            if sel.sum() < 10:
                continue
            a, b = a[sel], b[sel]
        a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
        den = math.sqrt(float(a @ a) * float(b @ b))
        if den > 0:
            cs.append(float(a @ b) / den)
    return float(np.median(cs)) if cs else float("nan")


def _disc_mask(shape: tuple[int, int], xy: np.ndarray, radius: int) -> np.ndarray:
    """Boolean (Y, X) mask of the filled discs of ``radius`` px (OpenCV's raster, as
    ``cv2.circle(..., -1)`` draws it) centred on the rounded points ``xy`` (N, 2: x, y; px)."""
    import cv2

    side = 2 * radius + 1
    stamp = np.zeros((side, side), np.uint8)
    cv2.circle(stamp, (radius, radius), radius, 1, -1)
    dy, dx = np.nonzero(stamp)
    mask = np.zeros(shape, bool)
    if not len(xy):
        return mask
    c = np.rint(xy).astype(np.int64)
    yy = (c[:, 1:2] + (dy - radius)).ravel()
    xx = (c[:, 0:1] + (dx - radius)).ravel()
    inside = (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1])
    mask[yy[inside], xx[inside]] = True
    return mask


def _by_track(tracks: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """particle (N,), frame (N,) and x, y [, z] (N, d; px), ordered by particle, then frame."""
    pos = [c for c in ("x", "y", "z") if c in tracks]
    p = tracks["particle"].to_numpy()
    f = tracks["frame"].to_numpy()
    order = np.lexsort((f, p))
    return p[order], f[order], tracks[pos].to_numpy(float)[order]


def step_covariances(tracks: pd.DataFrame, lags: Sequence[int] = (0, 1, 2)) -> dict[int, float]:
    """Covariance per axis of a track's successive displacements at the given lags, px^2.

    C(k) = <dx_t . dx_{t+k}> / d over all tracks, using only displacements between
    consecutive frames. C(0) is the mean squared step per axis.
    """
    return _step_covariances(*_by_track(tracks), lags)


def _step_covariances(p: np.ndarray, f: np.ndarray, xyz: np.ndarray,
                      lags: Sequence[int] = (0, 1, 2)) -> dict[int, float]:
    """:func:`step_covariances` of tracks given as the arrays of :func:`_by_track`."""
    step = xyz[1:] - xyz[:-1]
    ok = (p[1:] == p[:-1]) & (f[1:] == f[:-1] + 1)
    out = {}
    for k in lags:
        if len(step) <= k:
            out[k] = float("nan")
            continue
        a, b = step[:len(step) - k], step[k:]
        both = ok[:len(ok) - k] & ok[k:]
        if k:
            both &= (p[1:len(p) - k] == p[1 + k:]) & (f[k:len(f) - 1] == f[:len(f) - 1 - k] + k)
        out[k] = float((a[both] * b[both]).sum(axis=1).mean() / xyz.shape[1]) \
            if both.any() else float("nan")
    return out


def _noise_variance(c: dict[int, float]) -> float:
    """sigma^2 from step covariances: the smaller of -C(1) and C(2) - C(1).

    Static errors of variance sigma^2 add -sigma^2 to C(1) and nothing to C(2). The
    motion's own covariances c(k) bias the two estimates by -c(1) and c(2) - c(1). For
    overdamped colloids both biases are >= 0 (successive steps are never positively
    correlated, c(1) <= 0, and the anticorrelation of caging fades with the lag,
    c(2) >= c(1)), so each is an upper bound and the smaller is the tighter: -C(1) where
    the motion is nearly free, C(2) - C(1) in cages (as in training,
    :func:`colloidcg.train.estimate_localisation_noise`). Inertial (ballistic) motion
    between frames breaks the assumption and makes this an underestimate.
    """
    return min(-c[1], c[2] - c[1])


def localisation_noise(tracks: pd.DataFrame, covariances: dict[int, float] | None = None) -> float:
    """Localisation noise sigma (px per axis) from the tracks themselves
    (:func:`_noise_variance` of :func:`step_covariances`; ``covariances``: those, if
    already computed). NaN without enough steps."""
    c = step_covariances(tracks) if covariances is None else covariances
    if not (np.isfinite(c[1]) and np.isfinite(c[2])):
        return float("nan")
    return math.sqrt(max(0.0, _noise_variance(c)))


def calibrate_ep(tracks: pd.DataFrame, max_rel_error: float = 0.4,
                 covariances: dict[int, float] | None = None) -> tuple[float, str]:
    """Ratio of the tracks' own localisation noise to the median fitted ``ep``: a check.

    The localisation noise measured from the tracks (:func:`localisation_noise`) is free
    of the fit's noise model, but the motion's own step correlations bias it (over the
    conditions benchmark, scaling ``ep`` to it put median ep / error at 0.51-1.65), so
    :func:`colloidcg.tracking.track` reports the ratio (``quality.metrics.
    ep_tracks_ratio``) and does not apply it. The ratio is given only when the noise is
    well determined: its variance estimate must have a standard error (about sqrt(2)
    C(0) / sqrt(n) for n step pairs) below ``max_rel_error`` of itself.

    ``covariances``: :func:`step_covariances` of ``tracks``, if already computed.

    Returns
    -------
    scale : float
        The tracks' noise over the median ``ep`` (1.0 when not determined).
    how : str
        "tracks" or why not: "too few steps", "noise not resolved".
    """
    if "ep" not in tracks:
        return 1.0, "no ep"
    p, f, xyz = _by_track(tracks)
    c = _step_covariances(p, f, xyz) if covariances is None else covariances
    n_pairs = int(((p[2:] == p[:-2]) & (f[2:] == f[:-2] + 2)).sum())
    if n_pairs < 100 or not all(np.isfinite(c[k]) for k in (0, 1, 2)):
        return 1.0, "too few steps"
    var = _noise_variance(c)
    se = math.sqrt(2.0) * c[0] / math.sqrt(n_pairs)
    if var <= 0 or se > max_rel_error * var:
        return 1.0, "noise not resolved"
    ep = tracks["ep"].to_numpy(float)
    ep = ep[np.isfinite(ep)]
    typical = float(np.median(ep)) if len(ep) else 0.0     # robust to a few failed fits
    if typical <= 0:
        return 1.0, "no ep"
    return math.sqrt(var) / typical, "tracks"


def count_range(frame: np.ndarray, n_frames: int, first_frame: int | None = None,
                min_frames: int = 10, min_count: int = 20) -> tuple[float | None, list | None]:
    """(least over most of the running-median detections per frame, [first, least, most]
    of those medians): each frame's count of rows in ``frame`` (frame numbers of the
    detections; frames with none count 0), a running median over max(3, n_frames // 10)
    frames, made odd. (None, None) for fewer than ``min_frames`` frames or fewer than ``min_count``
    detections in the busiest stretch, where counting noise decides."""
    if n_frames < min_frames or len(frame) == 0:
        return None, None
    start = int(np.min(frame)) if first_frame is None else int(first_frame)
    from scipy.ndimage import median_filter

    counts = np.bincount(np.asarray(frame, np.int64) - start, minlength=n_frames)[:n_frames]
    w = max(3, n_frames // 10) | 1     # odd: the median is one detection count
    # windows wholly inside the video (window i covers frames i .. i + w - 1)
    runs = median_filter(counts.astype(float), size=w, mode="nearest")[w // 2:n_frames - w + 1 + w // 2]
    most = float(runs.max())
    if most < min_count:
        return None, None
    return float(runs.min() / most), [float(runs[0]), float(runs.min()), most]


def _grade(name: str, value) -> int:
    if value is None or not np.isfinite(value):
        return 0
    warn, bad, side = THRESHOLDS[name]
    worse = (lambda a, b: a < b) if side == "low" else (lambda a, b: a > b)
    return 2 if worse(value, bad) else 1 if worse(value, warn) else 0


def assess(tracks: pd.DataFrame, *, diameter: float, search_range: float, n_frames: int,
           noise: float, frames: Sequence[np.ndarray] | None = None,
           frame_numbers: Sequence[int] | None = None, origin: tuple[float, float] = (0, 0),
           contrast_ambiguity: float | None = None,
           covariances: dict[int, float] | None = None,
           first_frame: int | None = None) -> Quality:
    """Judge tracks from measurable signs (see the module docstring).

    Parameters
    ----------
    tracks : DataFrame
        frame, particle, x, y [, z] (px), signal (peak height, image units) where known.
        Image coordinates (before any drift subtraction).
    diameter : float
        Feature diameter (px; the largest axis for anisotropic 3D diameters).
    search_range : float
        Linking search range (px).
    n_frames : int
        Frames tracked.
    noise : float
        Pixel noise of the frames (image units).
    frames : sequence of ndarray, optional
        A few consecutive raw frames (oriented or not) for the frame correlation.
    frame_numbers : sequence of int, optional
        Their frame numbers in ``tracks``: the correlation then looks at the pixels
        around the detections only (see :func:`frame_correlation`).
    origin : (x0, y0)
        Position (px) in ``tracks`` coordinates of the frames' first pixel (a crop).
    contrast_ambiguity : float, optional
        :func:`colloidcg.tracking.params.contrast_ambiguity` of the first frame, when
        the contrast was estimated.
    covariances : dict, optional
        :func:`step_covariances` of ``tracks``, if already computed.
    first_frame : int, optional
        The first tracked frame's number (the tracked frames are first_frame ...
        first_frame + n_frames - 1); default: the smallest frame in ``tracks``.
    """
    from ..neighbours import nearest

    m: dict[str, Any] = {}
    if "signal" in tracks and noise > 0:
        sig = np.abs(tracks["signal"].to_numpy(float))
        sig = sig[np.isfinite(sig)]
        m["snr"] = float(np.median(sig) / noise) if len(sig) else None
    else:
        m["snr"] = None
    pos = [c for c in ("x", "y", "z") if c in tracks]
    frame = tracks["frame"].to_numpy()
    close = 0
    if len(tracks):
        xyz = tracks[pos].to_numpy(float)
        by_frame = np.argsort(frame, kind="stable")
        for i in np.split(by_frame, np.flatnonzero(np.diff(frame[by_frame])) + 1):
            if len(i) > 1:   # (the bound prunes the search: only close pairs count)
                d, _ = nearest(xyz[i], max_distance=0.5 * diameter)
                close += int((d < 0.5 * diameter).sum())
    m["close_pairs"] = close / len(tracks) if len(tracks) else None
    p, f, xyz_t = _by_track(tracks)
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]]) if len(p) else np.zeros(0, int)
    runs = np.diff(np.r_[starts, len(p)])
    lengths = np.repeat(runs, runs)              # per detection: the length of its track
    m["track_length"] = float(np.median(lengths) / n_frames) if n_frames >= 20 and len(lengths) else None
    linked = (p[1:] == p[:-1])
    steps = np.linalg.norm(xyz_t[1:] - xyz_t[:-1], axis=1)[linked & (f[1:] == f[:-1] + 1)]
    m["steps_near_range"] = float(np.mean(steps > 0.8 * search_range)) if len(steps) >= 20 else None
    points = None
    if frame_numbers is not None:
        xy = tracks[["x", "y"]].to_numpy(float)
        points = [xy[frame == k] - np.asarray(origin) for k in frame_numbers]
    m["frame_correlation"] = frame_correlation(frames, int(diameter) | 1, points) \
        if frames is not None and len(frames) >= 2 else None
    c = _step_covariances(p, f, xyz_t) if covariances is None else covariances
    sigma = localisation_noise(tracks, c)
    m["localisation_noise_px"] = sigma if np.isfinite(sigma) else None
    m["mean_squared_step_px2"] = c[0] if np.isfinite(c[0]) else None
    m["noise_share"] = float(min(1.0, 2 * sigma ** 2 / c[0])) \
        if np.isfinite(sigma) and np.isfinite(c[0]) and c[0] > 0 else None
    m["ep_tracks_ratio"], m["ep_tracks_check"] = None, "no ep"
    if "ep" in tracks:
        ep = tracks["ep"].to_numpy(float)
        ep = ep[np.isfinite(ep)]
        m["median_ep_px"] = float(np.median(ep)) if len(ep) else None
        scale, how = calibrate_ep(tracks, covariances=c)
        m["ep_tracks_ratio"], m["ep_tracks_check"] = (scale if how == "tracks" else None), how

    m["contrast_ambiguity"] = contrast_ambiguity
    m["count_range"], m["detections_per_frame"] = count_range(frame, n_frames, first_frame)
    grades = {k: _grade(k, m[k]) for k in THRESHOLDS}
    # noise to noise: steps all noise *and* frames unrelated
    if grades["noise_share"] and m["frame_correlation"] is not None \
            and m["frame_correlation"] < THRESHOLDS["frame_correlation"][0]:
        grades["noise_share"] = 2
    order = sorted((k for k in grades if grades[k]), key=lambda k: -grades[k])
    reasons = [MESSAGES[k].format(v=m[k]) for k in order]
    status = STATUSES[max(grades.values(), default=0)]
    return Quality(status=status, reasons=reasons,
                   metrics={k: (round(v, 5) if isinstance(v, float) else v) for k, v in m.items()})
