"""The napari Model widget's training fields show TrainConfig's defaults and help texts
(one source for the CLI, the widget and the library)."""

from __future__ import annotations

import pytest

from test_napari_plugin import _qt_can_start   # skip (CI: fail) where Qt cannot open a display

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures(_qt_can_start.__name__),
              pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend")]


def test_model_widget_training_fields_are_TrainConfig_defaults(make_napari_viewer):
    from napari_colloidcg._model_widget import ModelWidget

    from colloidcg.train import TrainConfig

    w = ModelWidget(make_napari_viewer())
    cfg = TrainConfig()
    for field, name in ((w.epochs, "epochs"), (w.batch_frames, "batch_frames"), (w.lr, "lr"), (w.seed, "seed")):
        assert field.value == pytest.approx(getattr(cfg, name)), name
        assert field.tooltip == TrainConfig.describe(name).help, name
    assert w.sizes.value is bool(cfg.size_column)
