"""Pictures of results (matplotlib, Agg backend: works without a display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _figure(size=(6.4, 6.4)):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=size, dpi=100)


def plot_tracks(image: np.ndarray, tracks: pd.DataFrame, path: str | Path, title: str = "",
                tail: int = 20) -> Path:
    """The first frame with each trajectory's first ``tail`` positions drawn over it (PNG)."""
    import io

    plt, fig = _figure()
    ax = fig.add_subplot(111)
    ax.imshow(image, cmap="gray", interpolation="nearest")
    t0 = int(tracks["frame"].min())
    seg = tracks[(tracks["frame"] >= t0) & (tracks["frame"] < t0 + tail)]
    n_frames = int(seg["frame"].max()) - t0 + 1 if len(seg) else 0
    for i, (_, g) in enumerate(seg.groupby("particle")):
        ax.plot(g["x"].to_numpy(), g["y"].to_numpy(), lw=0.8,
                label=f"path of each particle over frames {t0}-{t0 + n_frames - 1}" if i == 0 else None)
    first = tracks[tracks["frame"] == t0]
    ax.plot(first["x"], first["y"], "r+", ms=4, mew=0.6,
            label=f"position in frame {t0} ({len(first)} particles)")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    ax.set_title(title or f"{tracks['particle'].nunique()} tracks")
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    from .outputs import atomic_write_bytes as write

    return write(path, buf.getvalue())


def plot_training_history(history: list[dict], out_dir) -> list[Path]:
    """``loss.png`` (training and validation NLL per epoch) and ``validation.png`` (rollout
    MSD relative RMS error per epoch) in ``out_dir``; returns their paths. The NLL is the
    negative log-likelihood of one frame-to-frame step of one particle (natural log, nats)."""
    import io

    from .outputs import atomic_write_bytes

    out_dir = Path(out_dir)
    ep = [h["epoch"] for h in history]
    written = []
    names = {"train_nll": "training frames", "val_nll": "validation frames (held out)",
              "val_msd_rel_rms": "rollout over validation frames"}
    for name, keys, ylabel, title in (
            ("loss.png", ("train_nll", "val_nll"),
             "negative log-likelihood\nper particle and frame step (nats)", "training loss (lower is better)"),
            ("validation.png", ("val_msd_rel_rms",),
             "relative RMS error of the MSD\n(model rollout vs data)", "validation (lower is better)")):
        plt, fig = _figure((4.8, 3.6))
        ax = fig.add_subplot(111)
        for k in keys:
            ax.plot(ep, [h.get(k, float("nan")) for h in history], "o-", ms=3, label=names[k])
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(frameon=False)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(atomic_write_bytes(out_dir / name, buf.getvalue()))
    return written
