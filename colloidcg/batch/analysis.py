"""What the batch report shows about measured tracks: particle count, short-time diffusion
coefficient, MSD and g(r), computed with :mod:`colloidcg.evaluate` and drawn as PNGs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from ..outputs import atomic_write_bytes, atomic_write_json


def short_time_d(msd: pd.DataFrame, dim: int, max_points: int = 5) -> tuple[float, float]:
    """(D, offset) from a least-squares line MSD(t) = 2 d D t + offset over the first lags.

    The offset absorbs the localisation noise (2 d sigma^2, Savin & Doyle 2005), so D is
    not biased by it. Units: those of ``msd`` (um^2 and s when calibrated). NaN when fewer
    than two finite lags exist.
    """
    m = msd[np.isfinite(msd["msd"]) & (msd["lag"] > 0)].sort_values("lag").head(max_points)
    if len(m) < 2:
        return float("nan"), float("nan")
    slope, offset = np.polyfit(m["t"].to_numpy(float), m["msd"].to_numpy(float), 1)
    return float(slope / (2 * dim)), float(offset)


def _save_plot(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def track_statistics(tracks: pd.DataFrame, out_dir, um_per_px: float | None, fps: float | None) -> dict:
    """Write ``msd.png``, ``gr.png`` and ``statistics.json`` into ``out_dir``; return the numbers.

    Without calibration, lengths stay in px and times in frames (the units are recorded).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..evaluate import STATISTICS, _dims, msd, rdf

    out_dir = Path(out_dir)
    um = um_per_px or 1.0
    f = fps or 1.0
    lu = "um" if um_per_px else "px"
    tu = "s" if fps else "frame"
    dim = len(_dims(tracks))
    n_frames = int(tracks["frame"].nunique())
    rec = {"n_particles": int(tracks["particle"].nunique()), "n_frames": n_frames,
           "n_positions": int(len(tracks)),
           "particles_per_frame": float(len(tracks) / max(n_frames, 1)),
           "D": float("nan"), "D_units": f"{lu}^2/{tu}", "units": {"length": lu, "time": tu}}
    if n_frames >= 3:
        m = msd(tracks, um, f, max_lag=max(2, n_frames // 2))
        D, off = short_time_d(m, dim)
        rec.update(D=D, msd_offset=off, msd={"t": m["t"].tolist(), "msd": m["msd"].tolist()})
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        ax.loglog(m["t"], m["msd"], "o-", ms=3, label="data")
        if np.isfinite(D):
            ax.loglog(m["t"], 2 * dim * D * m["t"] + off, "--", lw=1,
                      label=f"fit, D = {D:.3g} {lu}$^2$/{tu}")
        ax.set_xlabel(STATISTICS["msd"].axis_labels(lu, tu)[0])
        ax.set_ylabel(STATISTICS["msd"].axis_labels(lu, tu)[1])
        ax.legend(frameon=False, fontsize=8)
        _save_plot(fig, out_dir / "msd.png")
    try:
        g = rdf(tracks, um)
    except (ValueError, IndexError):
        g = None
    if g is not None and len(g):
        rec["gr"] = {"r": g["r"].tolist(), "g": g["g"].tolist()}
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        ax.plot(g["r"], g["g"], "-")
        ax.axhline(1.0, color="0.6", lw=0.8)
        xl, yl = STATISTICS["rdf"].axis_labels(lu, tu)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        _save_plot(fig, out_dir / "gr.png")
    atomic_write_json(out_dir / "statistics.json", rec)
    return {k: rec[k] for k in ("n_particles", "n_frames", "particles_per_frame", "D", "D_units")}
