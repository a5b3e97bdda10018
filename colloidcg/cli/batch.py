"""``colloidcg batch ROOT -o OUT``: every video under a folder through the pipeline, on Dask."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "batch", help="run the pipeline on every video under a folder (Dask; resumable)",
        description="Find every video under ROOT (movies, multi-frame TIFFs, .cine files, Photron .cih "
                    "headers, folders of frames) and run the chosen stages on each, in parallel on Dask: an embedded "
                    "local cluster, or a running scheduler given with --scheduler. A colloidcg.toml "
                    "in any folder sets calibration and parameters ([calibration], [track], "
                    "[rearrangements], [train], [evaluate]) for the videos below it; the nearest "
                    "file wins. Results go to OUT/<video path>/<stage>/ with a stage.json record "
                    "(parameters, version, input hashes); rerunning skips stages whose inputs and "
                    "parameters are unchanged and redoes failed or changed ones. Writes "
                    "OUT/summary.csv and OUT/report.html (self-contained). Exit code 1 when any "
                    "video failed.")
    p.add_argument("root", metavar="ROOT", help="folder holding the videos (searched recursively)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (new, empty, or an earlier batch output to resume; not inside ROOT)")
    p.add_argument("--config", metavar="CFG.toml", default=None,
                   help="configuration for every video (colloidcg.toml format); a colloidcg.toml "
                        "under ROOT overrides it key by key (default: none)")
    from ..batch.stages import DEFAULT_STAGES

    default = ",".join(DEFAULT_STAGES)
    p.add_argument("--stages", default=default,
                   help=f"comma-separated stages to run (default: {default}; add macro for the "
                        "macroscopic SDE of large systems, options in the configuration's [macro] table)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of the embedded local cluster (default: CPU count, at "
                        "most the number of videos)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (start it "
                        "with `dask scheduler`, workers with `dask worker ADDRESS`); ROOT and OUT "
                        "must be on a file system all workers see at the same path (default: an embedded local "
                        "cluster)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads each task may use (torch in training, OpenCV in tracking, "
                        "rearrangement threads); default with the local cluster: CPU count / "
                        "workers; with --scheduler: 1 (give the cores of one machine divided by "
                        "the workers on it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..batch import run_batch

    res = run_batch(args.root, args.output, config=args.config, stages=args.stages,
                    workers=args.workers, scheduler=args.scheduler, threads=args.threads,
                    progress=not args.quiet)
    t = res.rows
    n_videos = t["video"].nunique()
    counts = t["status"].value_counts().to_dict()
    print(f"{n_videos} videos, {len(t)} stage runs in {res.wall_s:.1f} s: "
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    bad = t[t["status"].isin(["failed", "stale"])]
    for _, r in bad.iterrows():
        print(f"  {r['status']}: {r['video']} [{r['stage']}]: {r['error']}")
    for f, why in (res.skipped or {}).items():
        print(f"  skipped: {f}: {why}")
    print(f"summary: {res.summary}\nreport:  {res.report}")
    return 1 if res.n_failed else 0
