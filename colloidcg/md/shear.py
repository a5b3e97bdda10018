"""Statistics of a steadily sheared melt (Lees-Edwards box, flow along x, gradient along y).

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
  these statistics, with the imposed rate.

The learned model cannot be trained or rolled out on these tracks yet: its periodic
geometry (:func:`colloidcg.core.driver.minimum_image`) is rectangular and fixed in time,
so a sheared box (a tilt that changes every frame, a velocity jump of rate * L_y across
y) is not represented; see docs/simulation.md.
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


def velocity_profile(tracks: pd.DataFrame, fps: float, bins: int = 8) -> tuple[pd.DataFrame, float]:
    """Finite-difference velocity along x against y (see module docstring).

    tracks : frame, particle, x, y, z (length units; unwrapped). fps : frames per time unit.
    Returns (profile, rate): profile rows per y bin (equal counts): ``y`` (mean y of the
    bin), ``vx`` (mean velocity, length/time), ``se`` (its standard error over particles
    and frames), ``n``; rate (1/time), the slope of the least-squares line v_x(y)."""
    if bins < 2:
        raise ParameterError(f"bins: must be >= 2, got {bins}")
    pos, _ = _positions(tracks)
    if pos.shape[0] < 2:
        raise ParameterError("tracks: the velocity profile needs at least 2 frames")
    vx = (np.diff(pos[..., 0], axis=0) * fps).ravel()
    y = (0.5 * (pos[1:, :, 1] + pos[:-1, :, 1])).ravel()
    rate = float(np.polyfit(y, vx, 1)[0])
    edges = np.quantile(y, np.linspace(0, 1, bins + 1))
    k = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = k == b
        v = vx[sel]
        rows.append({"y": float(y[sel].mean()), "vx": float(v.mean()),
                     "se": float(v.std(ddof=1) / np.sqrt(max(len(v), 1))), "n": int(sel.sum())})
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
