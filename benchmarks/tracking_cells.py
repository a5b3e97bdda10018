"""Cells (foams, bubble rafts): colloidcg.track with automatic parameters against trackpy
with hand-set parameters, over synthetic foams of known cell centroids, and on the
shared data's real bubble raft.

    python benchmarks/tracking_cells.py [--frames 6] [--seeds 0,1]

Each synthetic condition (``colloidcg.synthetic.foam``) varies one factor around a base
foam (cells about 24 px across with 2 px walls, a 0.7 px blur, read noise 2 grey levels
and shot noise, 8-bit; one row through JPEG at quality 50). Scored over cells at least one cell diameter from the edges:
recall, precision, RMS error against the centroid of each cell's rendered interior,
link accuracy, and whether ``track`` chose cells by itself. trackpy: ``tp.batch`` on the
bright cells with the cell size as diameter, separation 0.8 of it, and minmass split
on the truth of the first frame (its best case); ``tp.link`` with colloidcg's search
range. The real foam has no truth: the table gives detections per frame and the
tracks that last all 9 frames (about 470 bubbles are visible in the raft).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

CONDITIONS = [
    ("base", {}),
    ("small cells (d 12, wall 1.2)", dict(cell_diameter=12, wall_px=1.2)),
    ("large cells (d 40, wall 3)", dict(cell_diameter=40, wall_px=3, shape=(384, 384))),
    ("thick walls (4 px, blur 1.2)", dict(wall_px=4, psf_sigma=1.2)),
    ("faint walls (contrast 30)", dict(wall=170)),
    ("noisy (read 8)", dict(read_noise=8.0)),
    ("irregular cells (1 Lloyd step)", dict(lloyd_steps=1)),
    ("dark cells, bright walls", dict(invert=True)),
    ("JPEG quality 50", dict(jpeg=50)),
    ("fast shear (0.02 per frame)", dict(shear_per_frame=0.02)),
]


def _jpeg(frames, quality: int):
    """Each frame through OpenCV's JPEG encoder and decoder (8-bit, grey)."""
    import cv2
    import numpy as np

    return np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, quality])[1],
                                  cv2.IMREAD_GRAYSCALE) for f in frames])


def _trackpy(frames, truth, d, search_range):
    import trackpy as tp

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from tracking_conditions import trackpy_params

    t0 = truth[truth.frame == 0]
    diameter, separation, minmass = trackpy_params(frames[0].astype(float), t0, d, d, 0.3 * d)
    f = tp.batch(list(frames), diameter, minmass=minmass, separation=separation, processes=1)
    return tp.link(f, search_range, memory=3)


def run(n_frames: int, seeds: list[int]) -> list[dict]:
    from colloidcg.synthetic.foam import FoamConfig, make_foam_video
    from colloidcg.tracking import track
    from colloidcg.tracking.accuracy import score_tracks

    rows = []
    for name, kw in CONDITIONS:
        kw = dict(kw)
        invert = kw.pop("invert", False)
        jpeg = kw.pop("jpeg", None)
        for seed in seeds:
            cfg = FoamConfig(n_frames=n_frames, seed=seed, **kw)
            frames, truth = make_foam_video(cfg)
            if invert:
                frames = 255 - frames
            if jpeg:
                frames = _jpeg(frames, jpeg)
            d = cfg.cell_diameter
            t = time.perf_counter()
            r = track(frames, progress=False)
            dt = time.perf_counter() - t
            s = score_tracks(r.tracks, truth, frames.shape[1:], d, 0.3 * d)
            tp_frames = 255 - frames if invert else frames
            st = score_tracks(_trackpy(tp_frames, truth, d, r.params.search_range), truth,
                              frames.shape[1:], d, 0.3 * d)
            rows.append(dict(condition=name, seed=seed, objects=r.params.objects, recall=s.recall,
                             precision=s.precision, rms=s.rms_error, link=s.link_accuracy,
                             seconds_per_frame=dt / len(frames), tp_recall=st.recall,
                             tp_precision=st.precision, tp_rms=st.rms_error))
            print(f"{name} seed {seed}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def run_real(shared: Path) -> dict | None:
    from colloidcg.tracking import track

    foam = shared / "data" / "foam"
    if not foam.is_dir():
        return None
    t = time.perf_counter()
    r = track(foam, progress=False)
    dt = time.perf_counter() - t
    per = r.tracks.groupby("frame").size()
    full = int((r.tracks.groupby("particle").size() == per.index.nunique()).sum())
    return dict(objects=r.params.objects, contrast=r.params.contrast, diameter=r.params.diameter,
                per_frame=(int(per.min()), int(per.max())), full=full, status=r.quality.status,
                seconds=dt, timings=r.timings)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6, help="frames per synthetic video")
    ap.add_argument("--seeds", default="0,1", help="seeds, comma-separated")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import trackpy as tp

    tp.quiet()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = run(args.frames, seeds)
    print(f"Synthetic foams (colloidcg.synthetic.foam), {args.frames} frames, seeds {args.seeds}; "
          "mean over seeds; trackpy with hand-set parameters (minmass split on the truth)\n")
    print("| condition | found as cells | recall | precision | RMS (px) | link acc | s/frame "
          "| trackpy recall | precision | RMS (px) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    import numpy as np

    for name, _ in CONDITIONS:
        g = [r for r in rows if r["condition"] == name]

        def mean(k):
            return float(np.nanmean([r[k] for r in g]))

        cells = sum(r["objects"] == "cells" for r in g)
        print(f"| {name} | {cells}/{len(g)} | {mean('recall'):.3f} | {mean('precision'):.3f} | "
              f"{mean('rms'):.3f} | {mean('link'):.3f} | {mean('seconds_per_frame'):.2f} | "
              f"{mean('tp_recall'):.3f} | {mean('tp_precision'):.3f} | {mean('tp_rms'):.3f} |")
    real = run_real(Path(__file__).resolve().parents[2] / "shared")
    if real is not None:
        lo, hi = real["per_frame"]
        print(f"\nReal bubble raft (../shared/data/foam, 9 frames of 768 x 768 px): found as "
              f"{real['objects']} ({real['contrast']}), cell diameter {real['diameter']} px, "
              f"{lo}-{hi} cells a frame, {real['full']} tracks through all 9 frames, quality "
              f"{real['status']}, {real['seconds']:.1f} s (parameters "
              f"{real['timings']['parameters']:.1f} s, locating {real['timings']['locating']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
