"""Responsiveness of the napari plugin: live detection preview and opening a large TIFF.

Rows:

- ``preview after a parameter change``: the Track widget's minmass field is changed
  and the time until the detections of the current 512 x 512 frame are drawn as a
  Points layer is measured (the widget's ``last_preview_seconds``: from the change to
  the layer updated on the main thread; locating runs in a worker thread). The frame is
  ``SynthConfig.preset("dense")``: about 1000 bidisperse particles, area fraction 0.8.
- ``preview after moving the frame slider``: the same after the slider moves to another
  frame (the frame is read through the lazy reader).
- ``open a ~1 GB TIFF, first frame drawn`` (with ``--big-tiff``): a 4096 x 512 x 512
  uint8 ImageJ TIFF is written to a temporary folder, opened with the colloidcg reader
  and drawn (``viewer.screenshot``); the file is deleted afterwards. The page cache is
  warm (the file was just written), so this measures the reader and napari, not the disk.

The viewer is shown (on a display, or under ``xvfb-run``). Each preview row reports the
median and the largest of ``--repeats`` changes, after one untimed warm-up.

    xvfb-run -a python benchmarks/napari_plugin.py
    xvfb-run -a python benchmarks/napari_plugin.py --repeats 20 --big-tiff
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def _wait(app, cond, timeout=120.0):
    t0 = time.perf_counter()
    while not cond():
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the widget did not finish in time")


def _settle(app, seconds=0.15):
    """Let pending repaints finish (the histogram and link arrows drawn after the rings),
    as between two keystrokes or slider steps of a person."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        app.processEvents()
        time.sleep(0.005)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10, help="timed parameter changes (default 10)")
    ap.add_argument("--big-tiff", action="store_true", help="also time opening a ~1 GB TIFF")
    args = ap.parse_args(argv)

    import numpy as np
    import napari
    from qtpy.QtWidgets import QApplication

    from colloidcg.synthetic import SynthConfig, make_video
    from napari_colloidcg._track_widget import TrackWidget

    rows = []
    frames = make_video(SynthConfig.preset("dense"), n_frames=6).frames
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.add_image(frames, name="dense 512 x 512")
    viewer.dims.set_current_step(0, 0)
    w = TrackWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.auto()
    _wait(app, lambda: w.preview_layer is not None and not w.busy)
    n_particles = len(w.preview_layer.data)
    base = float(w.minmass.value)

    lat = []
    for k in range(args.repeats + 1):
        _settle(app)
        n0 = w.n_previews
        w.minmass.value = base * (1.0 + 0.01 * (k + 1))
        _wait(app, lambda: w.n_previews > n0 and not w.busy)
        lat.append(w.last_preview_seconds)
    rows.append(("preview after a parameter change", np.median(lat[1:]), max(lat[1:])))

    lat = []
    for k in range(args.repeats + 1):
        _settle(app)
        n0 = w.n_previews
        viewer.dims.set_current_step(0, 1 + k % (len(frames) - 1))
        _wait(app, lambda: w.n_previews > n0 and not w.busy)
        lat.append(w.last_preview_seconds)
    rows.append(("preview after moving the frame slider", np.median(lat[1:]), max(lat[1:])))
    viewer.close()

    if args.big_tiff:
        import tifffile

        with tempfile.TemporaryDirectory(prefix="colloidcg-bench-") as tmp:
            path = os.path.join(tmp, "big.tif")
            rng = np.random.default_rng(0)
            frame = rng.integers(0, 255, (512, 512), dtype=np.uint8)
            T = 4096
            tifffile.imwrite(path, (np.roll(frame, t, axis=1) for t in range(T)), shape=(T, 512, 512),
                             dtype=np.uint8, imagej=True, resolution=(10, 10),
                             metadata={"axes": "TYX", "finterval": 0.01, "unit": "micron"})
            size = os.path.getsize(path) / 1e9
            viewer = napari.Viewer(show=True)
            app.processEvents()
            t0 = time.perf_counter()
            viewer.open(path, plugin="colloidcg")
            viewer.screenshot(canvas_only=True, flash=False)
            dt = time.perf_counter() - t0
            rows.append((f"open a {size:.2f} GB TIFF, first frame drawn", dt, dt))
            viewer.close()

    print(f"\n512 x 512 frame with {n_particles} particles; {args.repeats} timed repeats\n")
    print(f"| {'what':<42} | median (s) | max (s) |")
    print(f"|{'-' * 44}|-----------:|--------:|")
    for name, med, mx in rows:
        print(f"| {name:<42} | {med:10.3f} | {mx:7.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
