"""Picture of D2min over one frame."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ColloidcgError
from ..outputs import atomic_write_bytes
from ..structure.frames import fov_from_shape


def busiest_frame(table: pd.DataFrame) -> int:
    """The frame with the most rearranging particles (the first such; the first frame
    with finite D2min when nothing rearranges)."""
    if "rearranging" in table.columns and table["rearranging"].any():
        counts = table.loc[table["rearranging"].astype(bool), "frame"].value_counts()
        return int(counts[counts == counts.max()].index.min())
    finite = table.loc[np.isfinite(table["d2min"].to_numpy(float)), "frame"]
    return int(finite.min() if len(finite) else table["frame"].min())


def plot_d2min_frame(table: pd.DataFrame, frame: int | None, path, image: np.ndarray | None = None,
                     column: str = "d2min", dpi: int = 120, lag: int | None = None,
                     fps: float | None = None) -> Path:
    """Draw the particles of one frame coloured by D2min and save a PNG.

    Colour is log-scaled ``column`` (default d2min, px^2) with a colour bar; particles
    labelled ``rearranging`` are outlined in red; particles with NaN D2min are small grey
    dots. With ``image`` (the video frame, 2D array) the points are drawn over it, pixel
    centres at integer coordinates as in the tracks (``x_image``, ``y_image`` are used
    when the table has them, i.e. when tracking subtracted the drift).

    Parameters
    ----------
    table : DataFrame  rearrangements table (frame, x, y, d2min[, rearranging])
    frame : int or None  frame to draw; None picks :func:`busiest_frame`
    path : str or Path  PNG file to write (atomically)
    image : (rows, cols) array, optional
    column : str  column to colour by
    dpi : int
    lag : int, optional  the D2min lag in frames, named in the title (and in s with ``fps``)
    fps : float, optional  frames per second

    Returns
    -------
    Path of the written file.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    for c in ("frame", "x", "y", column):
        if c not in table.columns:
            raise ColloidcgError(f"plot: the table lacks column '{c}'")
    if frame is None:
        frame = busiest_frame(table)
    sub = table[table["frame"] == frame]
    if sub.empty:
        raise ColloidcgError(f"plot: frame {frame} is not in the table "
                             f"(frames {table['frame'].min()}..{table['frame'].max()})")
    from ..structure.frames import image_axes

    xc, yc = image_axes(sub)  # image coordinates when tracking subtracted the drift
    x, y = sub[xc].to_numpy(float), sub[yc].to_numpy(float)
    v = sub[column].to_numpy(float)
    rr = sub["rearranging"].to_numpy(bool) if "rearranging" in sub.columns else np.zeros(len(sub), bool)

    if image is not None:
        img = np.asarray(image)
        if img.ndim == 3 and img.shape[-1] in (3, 4):
            img = img[..., :3].mean(axis=-1)
        if img.ndim != 2:
            raise ColloidcgError(f"plot: image must be a 2D frame, got shape {img.shape}")
        xr = (-0.5, img.shape[1] - 0.5)
        yr = (-0.5, img.shape[0] - 0.5)
    else:
        pad = 0.02 * max(np.ptp(x), np.ptp(y), 1.0)
        xr = (x.min() - pad, x.max() + pad)
        yr = (y.min() - pad, y.max() + pad)
    w_in = 7.0
    h_in = max(2.5, min(12.0, w_in * (yr[1] - yr[0]) / (xr[1] - xr[0])))
    fig = Figure(figsize=(w_in + 1.2, h_in), dpi=dpi)
    ax = fig.add_axes((0.1, 0.08, 0.74 * w_in / (w_in + 1.2), 0.84))
    cax = fig.add_axes((0.1 + 0.74 * w_in / (w_in + 1.2) + 0.03, 0.08, 0.025, 0.84))
    if image is not None:
        ax.imshow(img, cmap="gray", origin="upper", interpolation="nearest")
    # marker diameter ~0.8 mean spacing, in points
    area = (xr[1] - xr[0]) * (yr[1] - yr[0])
    spacing = np.sqrt(area / max(len(sub), 1))
    bbox = ax.get_position()
    pt_per_px = min(bbox.width * (w_in + 1.2) * 72 / (xr[1] - xr[0]), bbox.height * h_in * 72 / (yr[1] - yr[0]))
    s = ((0.6 if image is not None else 0.8) * spacing * pt_per_px) ** 2
    ok = np.isfinite(v) & (v > 0)
    if (~ok).any():
        ax.scatter(x[~ok], y[~ok], s=s / 9, c="0.6", lw=0, label="no D$^2_{min}$ (too few neighbours)")
    if ok.any():
        vmin, vmax = np.percentile(v[ok], [1, 99.9])
        vmax = max(vmax, vmin * 1.0001)
        sc = ax.scatter(x[ok], y[ok], c=v[ok], s=s, cmap="viridis", norm=LogNorm(vmin, vmax),
                        lw=0, alpha=0.9)
        cb = fig.colorbar(sc, cax=cax)
        cb.set_label("non-affine displacement D$^2_{min}$ (px$^2$)" if column == "d2min" else column)
    else:
        cax.set_visible(False)
    if rr.any():
        ax.scatter(x[rr], y[rr], s=s * 1.3, facecolors="none", edgecolors="red", lw=1.2,
                   label="rearranging (D$^2_{min}$ above the threshold)")
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_xlim(*xr)
    ax.set_ylim(yr[1], yr[0])  # image orientation: y (row) grows downwards
    ax.set_aspect("equal")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    over = ""
    if lag:
        secs = f", {lag / fps:.3g} s" if fps else ""
        over = f"\nD$^2_{{min}}$ from frame {frame} to {frame + lag} (lag {lag} frames{secs})"
    ax.set_title(f"frame {frame}: {int(rr.sum())} of {len(sub)} particles rearranging{over}", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def fov_from_sidecar(meta: dict, tracks: pd.DataFrame | None = None):
    """Field of view (px) of the video the tracks came from, or None when unknown.

    Uses the tracking ROI when one was set, else the frame shape of the video. With
    ``tracks``, None also when they are 3D or when their image positions (``x_image``,
    ``y_image`` after drift subtraction, else ``x``, ``y``) fall outside it: the sidecar
    then does not describe these coordinates.
    """
    if tracks is not None and "z" in tracks.columns:
        return None
    roi = (meta.get("parameters") or {}).get("roi")
    shape = (meta.get("video") or {}).get("frame_shape")
    if roi:
        x0, y0, x1, y1 = (float(v) for v in roi)
        fov = [(x0 - 0.5, x1 - 0.5), (y0 - 0.5, y1 - 0.5)]
    elif shape:
        fov = fov_from_shape(shape).tolist()
    else:
        return None
    if tracks is not None:
        pos = tracks[["x_image" if "x_image" in tracks else "x",
                      "y_image" if "y_image" in tracks else "y"]].to_numpy(float)
        lo, hi = np.array(fov)[:, 0], np.array(fov)[:, 1]
        if ((pos < lo) | (pos > hi)).any():
            return None
    return fov


def video_frame(meta: dict, frame: int):
    """Frame ``frame`` of the video a tracks sidecar ``meta`` names (to draw under the
    D2min map), or None when that video cannot be read."""
    path = (meta.get("video") or {}).get("path")
    if not path or not Path(path).exists():
        return None
    try:
        from ..io import open_video

        with open_video(path) as video:
            img = video[frame]
        return img if img.ndim == 2 else None
    except (ColloidcgError, OSError, IndexError):  # a picture without the frame is still useful
        return None
