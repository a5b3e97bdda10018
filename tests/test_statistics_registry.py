"""The table of statistics: one entry is all a new statistic needs."""

import numpy as np
import pandas as pd
import pytest

from colloidcg import evaluate as ev
from colloidcg.batch import report_html

FPS, UM = 10.0, 0.5


def walkers(seed, n=60, T=24, step=1.0):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 200, (1, n, 2)) + np.cumsum(rng.normal(0, step, (T, n, 2)), 0)
    return pd.DataFrame({"frame": np.repeat(np.arange(T), n), "particle": np.tile(np.arange(n), T),
                         "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})


def mean_step(tracks, st):
    """Mean step length per frame (um) against time (s): a toy statistic."""
    pos, frames = ev.dense(tracks, st.um_per_px)
    step = np.linalg.norm(pos[1:] - pos[:-1], axis=-1)
    return pd.DataFrame({"lag": frames[1:], "t": frames[1:] / st.fps, "step": np.nanmean(step, axis=1)})


@pytest.fixture
def toy():
    stat = ev.register(ev.Statistic(
        "mean_step", mean_step, "Mean step", "mean step length per frame", {"t": "s", "step": "um"},
        "t", "step", "time ({T})", "mean step ({L})", error=ev.rel_rms_on("step", "lag"),
        metric="mean_step_rel_rms", metric_label="mean step relative RMS error", napari=True))
    yield stat
    ev.unregister("mean_step")
    assert "mean_step" not in ev.STATISTICS


def test_builtin_table_matches_what_compare_reports():
    assert list(ev.STATISTICS) == ["msd", "vacf", "rdf", "van_hove", "non_gaussian", "rearrangement_rate"]
    keys = [k for s in ev.STATISTICS.values() for k, _ in s.metric_rows()]
    assert keys == ["msd_rel_rms", "vacf_rel_rms", "rdf_rel_rms", "van_hove_rel_rms",
                    "non_gaussian_abs_diff", "rearrangement_rate_data", "rearrangement_rate_sim"]
    for s in ev.STATISTICS.values():       # every curve says what its columns are in
        if not s.scalar:
            assert s.x in s.units and s.y in s.units and s.x_label and s.y_label


def test_a_registered_statistic_reaches_statistics_compare_plots_and_report(toy, tmp_path):
    a, b = walkers(0), walkers(1, step=1.2)
    st = ev.statistics(a, UM, FPS)
    assert list(st["mean_step"].columns) == ["lag", "t", "step"]
    metrics, sd, ss = ev.compare(a, b, UM, FPS)
    want = ev.rel_rms_on("step")(sd["mean_step"], ss["mean_step"])
    assert metrics["mean_step_rel_rms"] == pytest.approx(want) and 0.1 < want < 0.3
    rec = ev.write_report(a, b, tmp_path, UM, FPS)
    assert (tmp_path / "mean_step.png").stat().st_size > 1000
    assert "mean_step.png" in rec["plots"] and "mean_step" in rec["curves"]
    assert ("mean_step_rel_rms", "mean step relative RMS error") in report_html.metric_rows()
    assert ("evaluate", "mean_step.png", "Mean step: model vs data") in report_html.pictures()


def test_without_the_toy_nothing_of_it_remains(tmp_path):
    a = walkers(2)
    assert "mean_step" not in ev.statistics(a, UM, FPS)
    names = [p.name for p in ev.plot_comparison(*ev.compare(a, a, UM, FPS)[1:], tmp_path)]
    assert names == ["msd.png", "vacf.png", "rdf.png", "van_hove.png", "non_gaussian.png"]


def test_register_checks_the_entry():
    with pytest.raises(ValueError, match="metric name"):
        ev.register(ev.Statistic("bad", mean_step, "Bad", x="t", y="step", error=ev.rel_rms_on("step")))
    with pytest.raises(ValueError, match="y column"):
        ev.register(ev.Statistic("bad", mean_step, "Bad", x="t"))
    assert "bad" not in ev.STATISTICS


def test_napari_comparison_plot_draws_the_marked_statistics(toy):
    pytest.importorskip("napari")
    pytest.importorskip("qtpy")
    from qtpy.QtWidgets import QApplication

    try:
        app = QApplication.instance() or QApplication([])
    except Exception as e:  # no display
        pytest.skip(f"Qt cannot start: {e}")
    from napari_colloidcg._plots import ComparisonPlot

    a = walkers(3)
    _, sd, ss = ev.compare(a, walkers(4), UM, FPS)
    plot = ComparisonPlot()
    plot.show(sd, ss, ("um", "s"))
    assert len(plot.figure.axes) == 3          # msd, g(r) and the toy
    assert plot.figure.axes[2].get_ylabel() == "mean step (um)"
    del app
