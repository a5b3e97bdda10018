"""Screenshots of the napari plugin's widgets on the shipped sample video, for the README.

Writes ``docs/images/napari_track.png``, ``napari_rearrangements.png``,
``napari_model_S.png`` and ``napari_model.png`` (palette PNGs, to keep the repository
small), in a 1366 x 768 window with the widgets opened as from the Plugins menu. Every number in them
is computed by the widgets on ``sample_videos/dense``, as a user would: the Track
widget's auto parameters and Track all, the Rearrangements widget's defaults, and a short
training run of the Model widget.

    xvfb-run -a python docs/make_screenshots.py          # no display needed
    python docs/make_screenshots.py --out /tmp/shots     # on a desktop
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _wait(app, cond, timeout=600.0):
    t0 = time.perf_counter()
    while not cond():
        app.processEvents()
        time.sleep(0.005)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("a widget did not finish in time")
    for _ in range(20):   # let the canvas and docks repaint
        app.processEvents()
        time.sleep(0.01)


def _save(viewer, path: Path, colours: int = 192) -> Path:
    from PIL import Image

    from qtpy.QtWidgets import QApplication

    viewer.window.resize(1366, 768)      # a laptop screen (docks added may have grown it)
    for _ in range(20):
        QApplication.instance().processEvents()
    rgba = viewer.screenshot(canvas_only=False, flash=False)   # the whole window, docks included
    img = Image.fromarray(rgba[..., :3]).quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return path


def _raise(widget) -> None:
    """Bring a widget's dock tab to the front."""
    from qtpy.QtWidgets import QDockWidget

    w = widget.native
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    if w is not None:
        w.show()
        w.raise_()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "images"), help="folder for the PNGs (default docs/images)")
    ap.add_argument("--epochs", type=int, default=12, help="training epochs for the Model shot")
    args = ap.parse_args(argv)
    out = Path(args.out)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from colloidcg.samples import sample_video

    viewer = napari.Viewer(show=True, title="colloidcg in napari")
    app = QApplication.instance()
    viewer.window.resize(1366, 768)      # a laptop screen
    viewer.open(str(sample_video()), plugin="colloidcg")
    viewer.dims.set_current_step(0, 20)

    def dock(name):   # as a user opens it: Plugins > colloidcg > NAME (docks join one tab group)
        return viewer.window.add_plugin_dock_widget("colloidcg", name)[1]

    # Track: suggested parameters, live preview with the mass histogram and the links to the
    # next frame, then Track all
    track = dock("Track")
    rearr = dock("Rearrangements")
    model = dock("Model")
    _wait(app, lambda: model._tabified)
    _raise(track)
    track.auto()
    _wait(app, lambda: track.preview_layer is not None and not track.busy)
    track.subtract_drift.value = True     # the sample drifts (0.3, 0.15) px/frame
    track.track_all()
    _wait(app, lambda: not track.busy)
    track.tracks_layer.tail_length = 20
    track.tracks_layer.tail_width = 3
    viewer.layers.selection.active = track.tracks_layer
    viewer.reset_view()
    viewer.camera.zoom *= 1.6
    _wait(app, lambda: True)
    _save(viewer, out / "napari_track.png")

    # Rearrangements: D2min colours, events, the table's largest event
    track.live.value = False
    for lay in (track.preview_layer, track.links_layer, track.tracks_layer):
        if lay is not None:
            lay.visible = False
    _raise(rearr)
    rearr.descriptors.value = True        # for the softness baseline beside S's AUC
    rearr.compute()
    _wait(app, lambda: not rearr.busy)
    viewer.reset_view()
    if len(rearr.result.events):
        rearr.jump_to_event(int(np.argmax(rearr.result.events["peak_d2min"].to_numpy())))
    viewer.layers.selection.active = rearr.d2min_layer
    _wait(app, lambda: True)
    _save(viewer, out / "napari_rearrangements.png")

    # Model: a short training run, S on the footage, a rollout against the observed tracks
    rearr.d2min_layer.visible = False
    rearr.events_layer.visible = False
    _raise(model)
    model.config_overrides = {"max_frames_per_epoch": 24, "val_rollout_steps": 10}
    model.epochs.value = args.epochs
    model.train()
    _wait(app, lambda: not model.busy)
    model.show_S()
    _wait(app, lambda: not model.busy)
    model.sections.setCurrentIndex(1)
    viewer.dims.set_current_step(0, 30)
    viewer.layers.selection.active = model.s_layer
    viewer.reset_view()
    _wait(app, lambda: True)
    _save(viewer, out / "napari_model_S.png")
    viewer.dims.set_current_step(0, 10)
    model.steps.value = 20
    model.simulate_from_frame()
    _wait(app, lambda: not model.busy)
    model.s_layer.opacity = 0.6
    track.tracks_layer.visible = True
    track.tracks_layer.tail_length = 20
    viewer.dims.set_current_step(0, 30)
    viewer.layers.selection.active = model.simulation_layer
    viewer.reset_view()
    _wait(app, lambda: True)
    _save(viewer, out / "napari_model.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
