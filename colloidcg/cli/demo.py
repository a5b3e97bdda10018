"""``colloidcg demo``: the whole pipeline on the shipped sample video."""

from __future__ import annotations

from pathlib import Path

from ._common import add_output


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the pipeline on the shipped sample video and report",
        description="Runs every available stage on sample_videos/dense (a synthetic dense "
                    "monolayer with known truth): tracking, then its accuracy against the truth, "
                    "with a picture of the tracks over the first frame.")
    add_output(p, required=False, help="output folder (default: colloidcg_demo)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:

    import pandas as pd
    import trackpy

    from ..io import open_video
    from ..outputs import atomic_write_json, check_writable
    from ..samples import sample_dir
    from ..tracking import track
    from ..tracking.accuracy import score_tracks
    from ..plots import plot_tracks

    trackpy.quiet()
    out = Path(args.output or "colloidcg_demo")
    sample = sample_dir("dense")
    track_dir = out / "track"
    check_writable([track_dir / "tracks.parquet", out / "tracking_accuracy.json"], args.overwrite)
    print(f"[1] tracking {sample / 'video.tif'}")
    with open_video(sample / "video.tif") as video:
        result = track(video, progress=not args.quiet)
        result.save(track_dir, overwrite=args.overwrite)
        first = video[0]
    truth = pd.read_parquet(sample / "truth.parquet")
    d = float(result.params.diameter)
    score = score_tracks(result.tracks, truth, first.shape, margin=d, match_radius=d / 4)
    atomic_write_json(out / "tracking_accuracy.json", score.as_dict())
    png = plot_tracks(first, result.tracks, out / "tracks.png", title="sample_videos/dense: tracks")
    t = result.tracks
    print(f"    {t['particle'].nunique()} trajectories, {len(t)} positions -> {track_dir / 'tracks.parquet'}")
    print(f"    against the known truth (particles >= {d:g} px from the edges): recall {score.recall:.4f}, "
          f"precision {score.precision:.4f}, RMS error {score.rms_error:.3f} px, "
          f"link accuracy {score.link_accuracy:.4f}")
    print(f"    picture: {png}")
    print(f"done: results in {out}/")
    return 0
