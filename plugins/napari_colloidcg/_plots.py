"""Small matplotlib canvases for the widgets (Qt Agg backend, no pyplot global state)."""

from __future__ import annotations

import numpy as np


def _canvas(width: float, height: float):
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    canvas = FigureCanvasQTAgg(fig)
    canvas.setMinimumHeight(int(height * 80))
    return fig, canvas


class ColourBar:
    """A horizontal colour bar: colormap, limits, label and an optional marked value."""

    def __init__(self, height: float = 0.75):
        self.figure, self.canvas = _canvas(3.2, height)
        self.limits: tuple[float, float] | None = None

    def show(self, cmap: str, lo: float, hi: float, label: str, mark: float | None = None) -> None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        self.figure.clear()
        ax = self.figure.add_subplot(111)
        sm = ScalarMappable(norm=Normalize(lo, hi), cmap=cmap)
        cb = self.figure.colorbar(sm, cax=ax, orientation="horizontal")
        cb.set_label(label, fontsize=8)
        ax.tick_params(labelsize=7)
        if mark is not None and lo <= mark <= hi:
            ax.axvline(mark, color="cyan", lw=1.5)
        self.limits = (float(lo), float(hi))
        self.canvas.draw_idle()


class LossPlot:
    """Training and validation NLL against epoch, redrawn as records arrive."""

    def __init__(self):
        self.figure, self.canvas = _canvas(3.2, 2.0)
        self.records: list[dict] = []
        self.draw()

    def clear(self) -> None:
        self.records = []
        self.draw()

    def add(self, record: dict) -> None:
        self.records.append(dict(record))
        self.draw()

    def draw(self) -> None:
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        if self.records:
            ep = [r["epoch"] for r in self.records]
            ax.plot(ep, [r["train_nll"] for r in self.records], "o-", ms=3, label="train")
            val = [r.get("val_nll", np.nan) for r in self.records]
            if np.isfinite(val).any():
                ax.plot(ep, val, "s--", ms=3, label="validation")
            ax.legend(fontsize=7, frameon=False)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("NLL per particle", fontsize=8)
        ax.tick_params(labelsize=7)
        self.canvas.draw_idle()


class ComparisonPlot:
    """MSD (log-log) and g(r) of the model's rollout against the observed tracks."""

    def __init__(self):
        from qtpy.QtWidgets import QVBoxLayout, QWidget

        self.figure, self.canvas = _canvas(3.4, 4.6)
        self.widget = QWidget()
        self.widget.setObjectName("colloidcg model vs data")
        lay = QVBoxLayout(self.widget)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.canvas)
        self.curves: dict = {}
        self.show({}, {})

    def show(self, data: dict, model: dict, units: tuple[str, str] = ("um", "s")) -> None:
        """``data`` and ``model`` are :func:`colloidcg.evaluate.statistics` results."""
        L, T = units
        self.curves = {"data": data, "model": model}
        self.figure.clear()
        ax1 = self.figure.add_subplot(211)
        ax2 = self.figure.add_subplot(212)
        for st, lab, sty in ((data, "data", "o"), (model, "model", "-")):
            if "msd" in st and len(st["msd"]):
                m = st["msd"]
                ok = (m["t"] > 0) & (m["msd"] > 0)
                ax1.plot(m["t"][ok], m["msd"][ok], sty, ms=3, label=lab)
            if "rdf" in st and len(st["rdf"]):
                ax2.plot(st["rdf"]["r"], st["rdf"]["g"], sty, ms=3, label=lab)
        if data or model:
            ax1.set_xscale("log")
            ax1.set_yscale("log")
            ax1.legend(fontsize=7, frameon=False)
            ax2.legend(fontsize=7, frameon=False)
        ax1.set_xlabel(f"lag time ({T})", fontsize=8)
        ax1.set_ylabel(f"MSD ({L}$^2$)", fontsize=8)
        ax2.set_xlabel(f"r ({L})", fontsize=8)
        ax2.set_ylabel("g(r)", fontsize=8)
        for ax in (ax1, ax2):
            ax.tick_params(labelsize=7)
        self.canvas.draw_idle()
