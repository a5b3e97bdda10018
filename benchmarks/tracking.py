"""Speed and accuracy of tracking: plain trackpy versus colloidcg on a dense synthetic video.

The video is ``SynthConfig.preset("dense")``: 512 x 512 px frames, about 1000
bidisperse particles (13.3 / 18.7 px, area fraction 0.8), fluorescence-like Gaussian
spots (sigma = d / 4) with shot and read noise, 8 bit, with its ground truth.

Rows:

- ``trackpy.batch + tp.link``: plain trackpy (centroids), in parallel over frames
  (``processes='auto'``), with hand-set good parameters: the diameter, separation and
  minmass that colloidcg suggests for plain trackpy, and its search range; the time is
  ``trackpy.batch`` plus ``trackpy.link``.
- ``colloidcg.tracking.track``: everything automatic (parameter estimation, locating
  with the joint overlap-aware fit in parallel over frames, linking, stubs,
  velocities); the time is the whole call.
- ``locating only``: the same without linking (trackpy.batch; colloidcg's parameter
  estimation and ``locate_many``), to show where the time goes: both rows above link
  with trackpy, which takes about as long as locating.

Below the table: how the fastest ``track`` run spent its time
(``TrackResult.timings``: parameter estimation, locating, linking, quality verdict,
other), its cost beyond locating per frame, and ``tp.link``'s own time per frame in the
fastest trackpy run, the reference for that cost (issue 15, item 6: parameter
estimation at most 10 % of the tracking time).

Both run once on one frame first (not timed), so numba's JIT compilation (and cache
loading) is excluded; the timed runs are repeated and the fastest is reported (the
machine may be shared). Accuracy counts particles at least 16 px from every edge,
matched within 4 px (:func:`colloidcg.tracking.accuracy.score_tracks`).

    python benchmarks/tracking.py                 # 40 frames
    python benchmarks/tracking.py --frames 100 --repeats 1
    python benchmarks/tracking.py --condition "issue 15 case"   # another renderer, crowded

With ``--condition NAME`` the same table is measured on a 512 x 512 px video of one of the
conditions below (:func:`tracking_conditions.speed_video`), drawn by the independent
renderer: crowded bidisperse spots, bright-field rings, Airy spots and so on, where the
locator takes paths the dense preset does not (shared widths and the partner search,
own-light positions).

Conditions mode (issue 15, item 4): accuracy over many imaging conditions, rendered by
the independent renderer :mod:`colloidcg.synthetic.scenes` (not the renderer colloidcg is
developed against), with the Cramér-Rao bound of each condition
(:mod:`colloidcg.tracking.crb`); see ``benchmarks/tracking_conditions.py``:

    python benchmarks/tracking.py --conditions quick            # ~3 min on 2 cores
    python benchmarks/tracking.py --conditions full --scenes    # longer
    python benchmarks/tracking.py --conditions quick --json     # machine output
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40, help="frames in the video (default 40)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic video")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per method (fastest kept)")
    ap.add_argument("--conditions", choices=("quick", "full"), default=None,
                    help="accuracy table over imaging conditions instead of the speed table")
    ap.add_argument("--scenes", action="store_true",
                    help="with --conditions: also the analogue scenes of issue 15's failure classes")
    ap.add_argument("--only", default=None,
                    help="with --conditions: condition names to run, separated by semicolons")
    ap.add_argument("--json", action="store_true", help="with --conditions: print JSON")
    ap.add_argument("--condition", default=None,
                    help="the speed table on a 512 x 512 px video of this imaging condition (a name "
                         "from --conditions, e.g. 'issue 15 case'), rendered by colloidcg.synthetic.scenes, "
                         "instead of the dense preset")
    args = ap.parse_args(argv)
    if args.conditions or args.scenes:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from tracking_conditions import run_conditions

        return run_conditions(args.conditions or "quick", scenes=args.scenes,
                              as_json=args.json, only=args.only, seed=args.seed)

    import numpy as np
    import trackpy as tp

    from colloidcg.synthetic import SynthConfig, make_video
    from colloidcg.tracking import TrackParams, suggest_parameters, track
    from colloidcg.tracking.accuracy import score_tracks
    from colloidcg.tracking.locate import locate_many

    tp.quiet()
    warnings.simplefilter("ignore")
    if args.condition:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from tracking_conditions import speed_video

        frames, truth, cond = speed_video(args.condition, args.frames, args.seed)
        what = f"Condition {cond.name!r} ({cond.describe()}), rendered by colloidcg.synthetic.scenes"
    else:
        cfg = SynthConfig.preset("dense", n_frames=args.frames, seed=args.seed)
        frames, truth, _ = make_video(cfg, progress=False)
        what = f"Dense synthetic video (area fraction {cfg.area_fraction})"
    n, shape = len(frames), frames.shape[1:]
    n_true = truth.groupby("frame").size().mean()

    # Hand-set parameters for plain trackpy: what colloidcg suggests for it.
    tpp = suggest_parameters(frames[0], TrackParams(refine=False))
    auto = track(frames[:3], progress=False)          # only for the search range
    search_range = auto.params.search_range

    spent = {}          # per method: the stage times of its fastest run so far

    def run_trackpy():
        t0 = time.perf_counter()
        f = tp.batch(frames, tpp.diameter, minmass=tpp.minmass, separation=tpp.separation,
                     invert=bool(tpp.invert),
                     processes="auto")
        t1 = time.perf_counter()
        linked = tp.link(f, search_range, memory=3)
        t2 = time.perf_counter()
        if t2 - t0 < spent.get("trackpy", {}).get("total", float("inf")):
            spent["trackpy"] = {"batch": t1 - t0, "link": t2 - t1, "total": t2 - t0}
        return linked

    def run_colloidcg():
        r = track(frames, progress=False)
        if r.timings["total"] < spent.get("colloidcg", {}).get("total", float("inf")):
            spent["colloidcg"] = r.timings
        return r.tracks

    def run_trackpy_locate():
        return tp.batch(frames, tpp.diameter, minmass=tpp.minmass, separation=tpp.separation,
                        invert=bool(tpp.invert), processes="auto")

    def run_colloidcg_locate():
        # the probes as track() decides them on this video (the 3-frame run above)
        p = suggest_parameters(frames[0])
        return locate_many(frames, range(n), progress=False, diameter=p.diameter,
                           separation=p.separation, minmass=p.minmass, invert=p.invert,
                           roi=None, refine=True, spot_profile=auto.params.spot_profile,
                           gap_check=auto.params.gap_check)

    # warm-up on one frame: numba compilation / cache loading, not timed
    tp.batch(frames[:1], tpp.diameter, minmass=tpp.minmass, separation=tpp.separation,
             invert=bool(tpp.invert), processes=1)
    track(frames[:2], progress=False, processes=1)

    rows = []
    for name, fn in (("trackpy.batch + tp.link", run_trackpy),
                     ("colloidcg.tracking.track (auto)", run_colloidcg),
                     ("  locating only: trackpy.batch", run_trackpy_locate),
                     ("  locating only: colloidcg", run_colloidcg_locate)):
        best, tracks = float("inf"), None
        for _ in range(max(1, args.repeats)):
            t0 = time.perf_counter()
            tracks = fn()
            best = min(best, time.perf_counter() - t0)
        linked = "particle" in tracks
        if not linked:
            tracks = tracks.assign(particle=np.arange(len(tracks)))
        s = score_tracks(tracks, truth, shape, margin=16, match_radius=4)
        rows.append((name, n / best, s.recall, s.precision, s.rms_error,
                     s.link_accuracy if linked else float("nan")))

    print(f"{what}: {n} frames of {shape[1]} x {shape[0]} px, {n_true:.0f} particles per frame; "
          f"{os.cpu_count()} cores; best of {args.repeats} run(s), JIT warm-up excluded.")
    print(f"trackpy parameters: diameter={tpp.diameter}, separation={tpp.separation:.3g}, "
          f"minmass={tpp.minmass:.4g}, search_range={search_range:.3g}")
    head = f"{'method':34s} {'frames/s':>9s} {'recall':>8s} {'precision':>9s} {'RMS (px)':>9s} {'link acc':>9s}"
    print(head)
    print("-" * len(head))
    for name, fps, rec, prec, rms, link in rows:
        link_s = f"{link:9.4f}" if np.isfinite(link) else f"{'-':>9s}"
        print(f"{name:34s} {fps:9.1f} {rec:8.4f} {prec:9.4f} {rms:9.4f} {link_s}")
    tm, tq = spent["colloidcg"], spent["trackpy"]
    print("\ncolloidcg.tracking.track, its fastest run: "
          + ", ".join(f"{k} {tm[k]:.2f} s ({100 * tm[k] / tm['total']:.1f} %)"
                      for k in ("parameters", "locating", "linking", "quality", "other")))
    print(f"beyond locating: {1e3 * (tm['total'] - tm['locating']) / n:.1f} ms/frame "
          f"(linking {1e3 * tm['linking'] / n:.1f}); trackpy's tp.link alone: "
          f"{1e3 * tq['link'] / n:.1f} ms/frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
