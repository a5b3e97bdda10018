"""napari's Model widget shows the carried S (issue 20): read from the model folder's
S.parquet when it covers the tracks, computed along the tracks otherwise (the same numbers),
with dS/dt beside it; the encoded S of each frame on request.

GUI test: run under xvfb (``xvfb-run -a python -m pytest tests/test_napari_carried_s.py``)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest

if importlib.util.find_spec("PyQt6") is not None:
    os.environ.setdefault("QT_API", "pyqt6")

napari = pytest.importorskip("napari")

from test_napari_plugin import _qt_can_start  # noqa: E402  (skips where Qt cannot start)

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures(_qt_can_start.__name__),
              pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend")]

WAIT_MS = 120_000


def test_model_widget_colours_by_carried_S(make_napari_viewer, qtbot, tmp_path):
    import torch

    from colloidcg.data import from_tracks
    from colloidcg.train import TrainConfig, train_tracks
    from colloidcg.train.carried import carried_table
    from napari_colloidcg._common import tracks_data
    from napari_colloidcg._model_widget import S_SOURCES, ModelWidget

    from test_train import FAST, langevin

    torch.set_num_threads(1)
    df = langevin(n=20, frames=12, L=10.0)
    late = (df["particle"] == 3) & (df["frame"] < 4)              # enters at frame 4
    df = df[~late].reset_index(drop=True)
    mdir = tmp_path / "model"
    train_tracks(df, None, TrainConfig(**{**FAST, "epochs": 1}, n_pair=0, loc_noise=0.01), mdir,
                 fps=1.0, um_per_px=1.0)
    stored = pd.read_parquet(mdir / "S.parquet")
    assert len(stored) == len(df)

    viewer = make_napari_viewer()
    viewer.add_tracks(tracks_data(df.sort_values(["particle", "frame"])), name="tracks")
    w = ModelWidget(viewer)
    assert w.load_model(mdir) is not None
    w.tracks.value = viewer.layers["tracks"]
    assert S_SOURCES[w.s_source.value] == "carried"

    def shown():
        w.show_S()
        qtbot.waitUntil(lambda: not w.busy and w.s_layer is not None, timeout=WAIT_MS)
        qtbot.waitUntil(lambda: not w.busy, timeout=WAIT_MS)
        f = w.s_layer.features
        return f.sort_values(["frame", "particle"]).reset_index(drop=True)

    # read from S.parquet: the stored numbers, one point per tracked row, coloured by S
    f = shown()
    ref = stored.sort_values(["frame", "particle"]).reset_index(drop=True)
    assert len(w.s_layer.data) == len(df)
    np.testing.assert_array_equal(f["S"].to_numpy(), ref["S0"].to_numpy())
    np.testing.assert_array_equal(f["dSdt"].to_numpy(), ref["dSdt"].to_numpy())
    assert w.s_layer.face_color.shape[0] == len(df)
    assert not np.allclose(w.s_layer.face_color, w.s_layer.face_color[0])   # colours vary with S

    # without S.parquet: carried along the layer's tracks, the same numbers
    (mdir / "S.parquet").unlink()
    f2 = shown()
    np.testing.assert_allclose(f2["S"].to_numpy(), ref["S0"].to_numpy(), rtol=1e-9, atol=1e-9)
    assert np.isnan(f2.loc[(f2["particle"] == 3) & (f2["frame"] == 4), "dSdt"]).all()   # first frame
    traj = from_tracks(df, None, fps=1.0, um_per_px=1.0)
    direct = carried_table(w.model, traj, 0.01 ** 2).sort_values(["frame", "particle"])
    np.testing.assert_allclose(f2["S"].to_numpy(), direct["S0"].to_numpy(), rtol=1e-12, atol=1e-12)

    # the encoder's S of each frame instead: no memory, no dS/dt
    w.s_source.value = next(k for k, v in S_SOURCES.items() if v == "encoded")
    f3 = shown()
    assert "dSdt" not in f3.columns
    frame5 = df[df["frame"] == 5].sort_values("particle")
    with torch.no_grad():
        enc = w.model.initial_S(torch.tensor(frame5[["x", "y"]].to_numpy(float), dtype=torch.float64))[:, 0]
    np.testing.assert_allclose(f3.loc[f3["frame"] == 5, "S"].to_numpy(), enc.numpy(), rtol=1e-10, atol=1e-10)
    assert not np.allclose(f3.loc[f3["frame"] == 9, "S"].to_numpy(), f2.loc[f2["frame"] == 9, "S"].to_numpy())


def test_edge_rows_follow_the_image_not_the_drift_free_positions():
    """Drift-free tracks keep the image positions: the rows the Model widget leaves out of
    its S scores as edge rows are those near the footage's border in the image, whatever
    the drift."""
    from napari_colloidcg._model_widget import _fov, _near_edge
    x_img = np.array([2.0, 50.0, 97.0, 50.0])
    df = pd.DataFrame({"frame": [5] * 4, "particle": range(4), "x": x_img + 30.0, "y": [50.0] * 4,
                       "x_image": x_img, "y_image": [50.0] * 4})
    fov = _fov(df, (10, 100, 100))
    assert fov == [(-0.5, 99.5), (-0.5, 99.5)]
    assert _near_edge(df, fov, 5.0).tolist() == [True, False, True, False]
    assert _fov(df, None)[0] == (2.0, 97.0)                   # no footage: the image positions' extent
