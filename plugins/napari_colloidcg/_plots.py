"""Small matplotlib canvases for the widgets (Qt Agg backend, no pyplot global state).

Every canvas takes its colours from napari's theme (background, text) and redraws when
the viewer's theme changes, so the plots are not white boxes on the dark theme.
"""

from __future__ import annotations

import numpy as np


def theme_colours(viewer=None) -> dict:
    """{"bg", "fg", "grid", "accent", "type"} of the viewer's napari theme (dark when unknown)."""
    from napari.utils.theme import get_theme

    name = str(getattr(viewer, "theme", "dark") or "dark") if viewer is not None else "dark"
    try:
        th = get_theme(name)
    except Exception:   # "system" or an unregistered theme name
        th = get_theme("dark")
    return {"bg": th.background.as_hex(), "fg": th.text.as_hex(), "grid": th.foreground.as_hex(),
            "accent": th.highlight.as_hex(), "type": str(th.type)}


def _canvas(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    canvas = FigureCanvasQTAgg(fig)
    canvas.setMinimumHeight(int(height * 80))
    canvas.setMaximumHeight(int(height * 110))
    return fig, canvas


class _Plot:
    """A figure on a Qt canvas, in the colours of the viewer's theme."""

    def __init__(self, width: float, height: float, viewer=None, layout: str | None = "constrained"):
        self.figure, self.canvas = _canvas(width, height, layout)
        self.viewer = viewer
        self.colours = theme_colours(viewer)
        if viewer is not None:
            try:
                viewer.events.theme.connect(self._on_theme)
            except Exception:   # a viewer without theme events (headless scripts)
                pass

    def _on_theme(self, *_):
        try:
            self.canvas.isVisible()
        except RuntimeError:   # the Qt canvas was deleted with its widget
            return
        self.colours = theme_colours(self.viewer)
        self.draw()

    def draw(self) -> None:   # subclasses redraw their content
        self.canvas.draw_idle()

    def style(self, *axes) -> None:
        c = self.colours
        self.figure.set_facecolor(c["bg"])
        for ax in axes:
            ax.set_facecolor(c["bg"])
            ax.tick_params(colors=c["fg"], labelsize=7, which="both")
            for sp in ax.spines.values():
                sp.set_color(c["fg"])
            ax.xaxis.label.set_color(c["fg"])
            ax.yaxis.label.set_color(c["fg"])
            ax.title.set_color(c["fg"])
            leg = ax.get_legend()
            if leg is not None:
                for t in leg.get_texts():
                    t.set_color(c["fg"])


class ColourBar(_Plot):
    """A horizontal colour bar: colormap, limits, label and an optional marked value."""

    def __init__(self, height: float = 0.75, viewer=None):
        self.limits: tuple[float, float] | None = None
        self._args = None
        super().__init__(3.2, height, viewer)
        self.canvas.setVisible(False)   # shown with its first content

    def show(self, cmap: str, lo: float, hi: float, label: str, mark: float | None = None) -> None:
        self._args = (cmap, float(lo), float(hi), label, mark)
        self.limits = (float(lo), float(hi))
        self.canvas.setVisible(True)
        self.draw()

    def draw(self) -> None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        self.figure.clear()
        if self._args is None:
            self.style()
            self.canvas.draw_idle()
            return
        cmap, lo, hi, label, mark = self._args
        ax = self.figure.add_subplot(111)
        sm = ScalarMappable(norm=Normalize(lo, hi), cmap=cmap)
        cb = self.figure.colorbar(sm, cax=ax, orientation="horizontal")
        cb.set_label(label, fontsize=8)
        if mark is not None and lo <= mark <= hi:
            ax.axvline(mark, color="cyan", lw=1.5)
        self.style(ax)
        cb.outline.set_edgecolor(self.colours["fg"])
        self.canvas.draw_idle()


class MassHistogram(_Plot):
    """Histogram of the located particles' mass on the frame on screen, with the minmass
    line: what minmass keeps (right of the line) and what it drops.

    Drawn once and then updated in place (a step outline and a line), so that redrawing
    it as the user types costs a few milliseconds on the main thread."""

    def __init__(self, viewer=None):
        self.mass = np.zeros(0)
        self.minmass: float | None = None
        self._artists = None
        super().__init__(3.2, 1.3, viewer, layout=None)   # fixed margins: cheap redraws
        self.draw()

    def show(self, mass, minmass: float | None) -> None:
        self.mass = np.asarray(mass, float)
        self.mass = self.mass[np.isfinite(self.mass) & (self.mass > 0)]
        self.minmass = None if minmass is None else float(minmass)
        self.update()

    def draw(self) -> None:
        """Build the axes (again: at start and when the theme changes)."""
        self.figure.clear()
        ax = self.figure.add_axes((0.13, 0.33, 0.84, 0.62))
        c = self.colours
        stairs = ax.stairs(np.zeros(1), np.array([1.0, 10.0]), fill=True, color=c["accent"], alpha=0.85)
        line = ax.axvline(1.0, color="orange", lw=1.5, visible=False)
        label = ax.text(0.02, 0.92, "", transform=ax.transAxes, fontsize=7, va="top", color=c["fg"])
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("mass of every candidate spot (minmass 0)", fontsize=7)
        ax.set_ylabel("spots", fontsize=7)
        self.style(ax)
        self._artists = (ax, stairs, line, label)
        self.update()

    def update(self) -> None:
        ax, stairs, line, label = self._artists
        if len(self.mass):
            lo = max(float(self.mass.min()), 1e-9)
            hi = max(float(self.mass.max()), lo * 1.01)
            edges = np.geomspace(lo, hi, 41)
            counts, _ = np.histogram(self.mass, edges)
            stairs.set_data(counts, edges)
            ax.set_xlim(lo, hi)
            ax.set_ylim(0, max(1, counts.max()) * 1.1)
        show = self.minmass is not None and self.minmass > 0 and len(self.mass) > 0
        line.set_visible(show)
        label.set_text(f"minmass {self.minmass:.4g}" if show else "")
        if show:
            line.set_xdata([self.minmass, self.minmass])
        self.canvas.draw_idle()


class LossPlot(_Plot):
    """Training and validation NLL against epoch, redrawn as records arrive."""

    def __init__(self, viewer=None):
        self.records: list[dict] = []
        super().__init__(3.2, 1.8, viewer)
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
            ax.plot(ep, [r["train_nll"] for r in self.records], "o-", ms=3, label="training")
            val = [r.get("val_nll", np.nan) for r in self.records]
            if np.isfinite(np.asarray(val, float)).any():
                ax.plot(ep, val, "s--", ms=3, label="validation")
            ax.legend(fontsize=7, frameon=False)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("neg. log-likelihood\nper particle-step", fontsize=7)
        self.style(ax)
        self.canvas.draw_idle()


class ComparisonPlot(_Plot):
    """The statistics marked ``napari`` in :data:`colloidcg.evaluate.STATISTICS` (MSD,
    g(r)) of the model's rollout against the observed tracks, one panel each."""

    def __init__(self, viewer=None):
        from qtpy.QtWidgets import QVBoxLayout, QWidget

        self.curves: dict = {}
        self._units = ("um", "s")
        super().__init__(3.2, 3.4, viewer)
        self.widget = QWidget()
        self.widget.setObjectName("colloidcg model vs data")
        lay = QVBoxLayout(self.widget)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.canvas)
        self.show({}, {})

    def show(self, data: dict, model: dict, units: tuple[str, str] = ("um", "s")) -> None:
        """``data`` and ``model`` are :func:`colloidcg.evaluate.statistics` results."""
        self.curves = {"data": data, "model": model}
        self._units = units
        self.draw()

    def draw(self) -> None:
        from colloidcg.evaluate import STATISTICS, draw_statistic

        L, T = self._units
        data, model = self.curves.get("data") or {}, self.curves.get("model") or {}
        stats = [s for s in STATISTICS.values() if s.napari and not s.scalar]
        self.figure.clear()
        axes = [self.figure.add_subplot(len(stats), 1, k + 1) for k in range(len(stats))]
        for ax, stat in zip(axes, stats):
            draw_statistic(ax, stat, ((data.get(stat.name), "data", "o"),
                                      (model.get(stat.name), "model", "-")))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, frameon=False)
            xl, yl = stat.axis_labels(L, T)
            ax.set_xlabel(xl, fontsize=8)
            ax.set_ylabel(yl, fontsize=8)
        self.style(*axes)
        self.canvas.draw_idle()
