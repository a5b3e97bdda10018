"""Loss and validation plots for ``colloidcg train``."""

from __future__ import annotations

import io
from pathlib import Path


def plot_history(history: list[dict], out_dir) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..outputs import atomic_write_bytes

    out_dir = Path(out_dir)
    ep = [h["epoch"] for h in history]
    written = []
    for name, keys, ylabel in (("loss.png", ("train_nll", "val_nll"), "NLL per particle"),
                               ("validation.png", ("val_msd_rel_rms",), "rollout MSD rel. RMS error")):
        fig, ax = plt.subplots(figsize=(4.5, 3.4))
        for k in keys:
            ax.plot(ep, [h[k] for h in history], "o-", ms=3, label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.legend(frameon=False)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(atomic_write_bytes(out_dir / name, buf.getvalue()))
    return written
