"""``colloidcg demo``: the whole pipeline on the shipped sample video."""

from __future__ import annotations

from pathlib import Path

from ._common import add_output, config_default


#: Training epochs of the demo.
DEMO_EPOCHS = 15
#: torch threads while the demo trains and simulates. The sample's ~200 particles give
#: tensors too small to share between cores: one thread is as fast as two on an idle
#: machine, and on a busy one two threads wait for each other (OpenMP spinning) and made
#: training 3-10x slower (a 4.5-minute demo on 2 shared cores).
DEMO_TORCH_THREADS = 1


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the pipeline on the shipped sample video and report",
        description="Runs every stage on sample_videos/dense (a synthetic dense, sheared "
                    "monolayer with known truth, 50 frames of 256 x 256 px): tracking and its "
                    "accuracy against the truth, rearrangements (D2min, events, softness "
                    "baseline), training the metriplectic model, a rollout from the second "
                    "frame, the model-versus-data report and an exported bundle, with pictures "
                    "and the time of each stage. Under a minute on 2 cores (torch runs on one "
                    "thread here: the sample is too small to gain from more).")
    add_output(p, required=False, help="output folder (default: colloidcg_demo)")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help="training epochs")
    p.add_argument("--seed", type=int, default=0, help="seed of training and rollout (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(DEMO_TORCH_THREADS)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> int:
    import time

    import pandas as pd
    import trackpy

    from ..errors import ParameterError
    from ..evaluate import write_report
    from ..export import export_bundle
    from ..io import open_video
    from ..outputs import atomic_write_json, check_writable, provenance, write_table
    from ..plots import plot_tracks
    from ..rearrangements import (Rearrangements, busiest_frame, detect, fov_from_shape,
                                  plot_d2min_frame, softness_baseline)
    from ..samples import sample_dir
    from ..simulate import simulate
    from ..tracking import track
    from ..tracking.accuracy import score_tracks
    from ..train import MODEL_FILES, TrainConfig, train_tracks

    if args.epochs < 1:
        raise ParameterError(f"--epochs: must be >= 1, got {args.epochs}")
    trackpy.quiet()
    out = Path(args.output or "colloidcg_demo")
    sample = sample_dir("dense")
    dirs = {k: out / k for k in ("track", "rearrangements", "model", "simulate", "report", "bundle")}
    check_writable([dirs["track"] / "tracks.parquet", out / "tracking_accuracy.json", out / "tracks.png",
                    *Rearrangements.output_paths(dirs["rearrangements"]), out / "d2min.png",
                    *(dirs["model"] / f for f in MODEL_FILES), dirs["simulate"] / "sim.parquet",
                    dirs["report"] / "metrics.json", dirs["bundle"] / "bundle.json"], args.overwrite)
    video_path = sample / "video.tif"
    start = [time.perf_counter(), time.process_time()]
    clock = list(start)

    def took() -> str:
        """Wall and CPU time since the last call (the stage's), for the stage's last line."""
        now = [time.perf_counter(), time.process_time()]
        wall, cpu = now[0] - clock[0], now[1] - clock[1]
        clock[:] = now
        return f"    took {wall:.1f} s ({cpu:.1f} s CPU in this process)"

    print(f"[1/6] tracking {video_path}")
    with open_video(video_path) as video:
        result = track(video, {"subtract_drift": True}, progress=not args.quiet)  # the sample drifts
        tracks_path = result.save(dirs["track"], overwrite=args.overwrite)
        first = video[0]
    truth = pd.read_parquet(sample / "truth.parquet")
    d = float(result.params.diameter)
    in_image = result.tracks.drop(columns=["x", "y"]).rename(columns={"x_image": "x", "y_image": "y"})
    score = score_tracks(in_image, truth, first.shape, margin=d, match_radius=d / 4)
    atomic_write_json(out / "tracking_accuracy.json", score.as_dict())
    png = plot_tracks(first, in_image, out / "tracks.png", title="sample_videos/dense: tracks")
    t = result.tracks
    print(f"    {t['particle'].nunique()} trajectories, {len(t)} positions -> {tracks_path}")
    print(f"    against the known truth (particles >= {d:g} px from the edges): recall {score.recall:.4f}, "
          f"precision {score.precision:.4f}, RMS error {score.rms_error:.3f} px, "
          f"link accuracy {score.link_accuracy:.4f}; picture: {png}")
    print(took())

    print("[2/6] rearrangements (D2min, events, structural descriptors)")
    rea = detect(in_image, fov=fov_from_shape(first.shape))  # D2min ignores the drift; the edges need image px
    soft = softness_baseline(rea.table, rea.parameters["lag_frames"])
    rea.save(dirs["rearrangements"], inputs={"tracks": tracks_path}, overwrite=args.overwrite,
             softness_baseline=soft.summary())
    busy = busiest_frame(rea.table)
    with open_video(video_path) as video:
        busy_image = video[busy]
    d2png = plot_d2min_frame(rea.table, busy, out / "d2min.png", image=busy_image,
                             lag=rea.parameters["lag_frames"], fps=result.meta.get("fps"))
    p = rea.parameters
    print(f"    lag {p['lag_frames']} frames, cutoff {p['cutoff_px']:.1f} px, threshold "
          f"{p['threshold']:.3g} (d2min_norm); {int(rea.table['rearranging'].sum())} rearranging "
          f"particle-frames in {len(rea.events)} events; softness baseline ROC AUC {soft.auc:.2f}")
    print(f"    picture of D2min on frame {busy}: {d2png}")
    print(took())

    print(f"[3/6] training the metriplectic model ({args.epochs} epochs; the interaction range chosen "
          f"among {', '.join(f'{f:g}' for f in config_default(TrainConfig, 'cutoff_factors'))} x the nearest-neighbour distance "
          f"by short fits)")
    labels = rea.table[["frame", "particle", "rearranging"]]
    # the sample is bidisperse: pair ranges follow each particle's tracked size
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed, progress=not args.quiet, size_column="size")
    fit = train_tracks(t, result.sidecar(), cfg, dirs["model"], labels=labels, source=str(tracks_path))
    rep = fit.report
    auc = (rep.get("rearrangement_auc") or {}).get("S")
    print(f"    {rep['epochs_run']} epochs, best validation rollout MSD error {rep['best_val_score']:.3g}"
          + (f", ROC AUC of S for next rearrangements {auc:.2f}" if auc is not None else "")
          + f" -> {dirs['model']}")
    print(f"    cutoff {rep['cutoff']:.3g} um ({rep['cutoff'] / rep['cutoff_selection']['nn_distance']:.3g} x the "
          f"nearest-neighbour distance); loss and validation curves: {dirs['model']}/loss.png, "
          f"validation.png")
    print(took())

    print("[4/6] simulating from the second frame")
    cal = {"calibration": rep["calibration"]}
    n_steps = int(t["frame"].max()) - int(t["frame"].min()) - 1
    sim = simulate(fit.model, cal, t, result.sidecar(), steps=n_steps, seed=args.seed,
                   name=str(tracks_path))
    sim_path = write_table(dirs["simulate"] / "sim.parquet", sim.tracks,
                           provenance("simulate", {"model": dirs["model"], "init": tracks_path},
                                      sim.parameters, units={"x": "px", "y": "px", "frame": "frame"},
                                      meta=sim.meta))
    print(f"    {sim.parameters['n_particles']} particles, {n_steps} frames -> {sim_path}")
    print(took())

    print("[5/6] model against data")
    um, fps = rep["calibration"]["um_per_px"], rep["calibration"]["fps"]
    m = write_report(t, sim.tracks, dirs["report"], um_per_px=um, fps=fps,
                     extra={"data": str(tracks_path), "sim": str(sim_path)})
    print(f"    relative RMS errors: MSD {m['msd_rel_rms']:.3g}, velocity autocorrelation "
          f"{m['vacf_rel_rms']:.3g}, g(r) {m['rdf_rel_rms']:.3g}; plots in {dirs['report']}/")
    print(took())

    print("[6/6] exporting the model as a bundle (weights, description, TorchScript)")
    bundle = export_bundle(dirs["model"], dirs["bundle"], overwrite=args.overwrite,
                           metrics={k: m[k] for k in ("msd_rel_rms", "vacf_rel_rms", "rdf_rel_rms")})
    print(f"    {bundle}: load with colloidcg.load_model or torch.jit.load (torchscript/model.pt); "
          "roll out with torch alone: python rollout.py --help")
    print(took())
    wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
    print(f"done in {wall:.0f} s ({cpu:.0f} s CPU in this process; tracking also uses worker processes): "
          f"results in {out}/")
    return 0
