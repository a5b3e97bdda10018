"""``colloidcg synth``: write a synthetic colloid video with its ground truth."""

from __future__ import annotations

import argparse

from ._common import add_output

#: CLI option name -> SynthConfig field, for options that map one to one.
_FIELDS = {
    "frames": "n_frames", "width": "width", "height": "height", "diameter": "diameter",
    "area_fraction": "area_fraction", "size_ratio": "size_ratio", "diffusion": "diffusion",
    "thermal_ratio": "thermal_ratio", "inertia": "inertia",
    "shear_amplitude": "shear_amplitude", "shear_period": "shear_period",
    "events": "events", "event_radius": "event_radius", "event_strain": "event_strain",
    "event_duration": "event_duration",
    "equilibration": "equilibration", "mode": "mode", "spot_sigma": "spot_sigma",
    "brightness_cv": "brightness_cv", "photons": "photons", "background": "background",
    "unevenness": "unevenness", "read_noise": "read_noise", "bit_depth": "bit_depth",
    "fps": "fps", "um_per_px": "um_per_px", "seed": "seed",
}

_EPILOG = """\
presets (options given explicitly override them):
  dense     512x512 px, 100 frames, bidisperse (13.3/18.7 px), area fraction 0.8:
            about 1000 particles in view
  accuracy  256x256 px, 20 frames, dense, fluorescence noise, 16-bit
  sample    the shipped sample video (256x256, 50 frames, dense, drift, mild shear, 3 events)
  dilute    area fraction 0.05, diameter 8 px, D0 0.5 px^2/frame

writes OUT_DIR/video.tif (ImageJ TIFF: fps and um/px in its metadata), OUT_DIR/truth.parquet
(+ truth.json: frame, particle, x, y, diameter, [vx, vy,] planted; x = column, y = row in
pixels) and OUT_DIR/events.parquet when events are planted.

example:
  colloidcg synth -o dense_video --preset dense --seed 7
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate a synthetic colloid video with ground-truth trajectories",
        description="Simulate soft disks (Brownian or Langevin dynamics, optional drift, "
                    "oscillatory shear and planted local rearrangements) and render them "
                    "as a noisy fluorescence or bright-field video, with the exact "
                    "trajectories as truth. Lengths in pixels, times in frames.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_output(p, help="output folder (created if needed)")
    p.add_argument("--preset", choices=["dense", "accuracy", "sample", "dilute"], default=None,
                   help="start from a named configuration (see below; default: none, the defaults given "
                        "with each option)")
    g = p.add_argument_group("field of view and particles")
    g.add_argument("--frames", type=int, metavar="N", help="number of frames (default 100)")
    g.add_argument("--width", type=int, metavar="W", help="image width, px (default 256)")
    g.add_argument("--height", type=int, metavar="H", help="image height, px (default 256)")
    g.add_argument("--diameter", type=float, metavar="PX",
                   help="particle diameter, px; mean of the two sizes if bidisperse (default 16)")
    g.add_argument("--area-fraction", type=float, metavar="F",
                   help="area fraction of the disks, up to 0.9 (default 0.8)")
    g.add_argument("--bidisperse", action="store_true", default=None,
                   help="50:50 mixture of two sizes (ratio --size-ratio; default: monodisperse)")
    g.add_argument("--monodisperse", action="store_false", dest="bidisperse", default=None,
                   help="one size only (the default unless a preset says otherwise)")
    g.add_argument("--size-ratio", type=float, metavar="R", help="large/small diameter (default 1.4)")
    g = p.add_argument_group("dynamics")
    g.add_argument("--diffusion", type=float, metavar="D0",
                   help="free diffusion coefficient, px^2/frame (default 0.05)")
    g.add_argument("--thermal-ratio", type=float, metavar="T",
                   help="thermal / repulsive energy kT/eps (default 1e-3)")
    g.add_argument("--inertia", type=float, metavar="TAU",
                   help="momentum relaxation time m/zeta in frames; > 0 gives underdamped "
                        "Langevin dynamics and truth velocities (default 0: Brownian)")
    g.add_argument("--drift", type=float, nargs=2, metavar=("DX", "DY"),
                   help="stage drift, px/frame (default 0 0)")
    g.add_argument("--shear-amplitude", type=float, metavar="A",
                   help="oscillatory shear strain amplitude (default 0: none); the top and "
                        "bottom rows move by +-A*height/2 px")
    g.add_argument("--shear-period", type=float, metavar="P", help="shear period, frames (default 50)")
    g.add_argument("--events", type=int, metavar="N",
                   help="number of planted local shear transformations at random places and "
                        "times (default 0)")
    g.add_argument("--event-radius", type=float, metavar="PX",
                   help="radius of a planted event, px (default 2.5 diameters)")
    g.add_argument("--event-strain", type=float, metavar="S", help="local strain of an event (default 0.6)")
    g.add_argument("--event-duration", type=int, metavar="N",
                   help="frames over which an event's strain is spread (default 3)")
    g.add_argument("--equilibration", type=int, metavar="N",
                   help="frames simulated before recording starts (default 30)")
    g = p.add_argument_group("imaging")
    g.add_argument("--mode", choices=["fluorescence", "brightfield"],
                   help="image kind (default fluorescence)")
    g.add_argument("--spot-sigma", type=float, metavar="F",
                   help="fluorescence spot sigma as a fraction of the diameter (default 0.25)")
    g.add_argument("--brightness-cv", type=float, metavar="CV",
                   help="per-particle brightness spread (default 0.1)")
    g.add_argument("--photons", type=float, metavar="P",
                   help="expected photons at a spot peak (fluorescence) or in the background "
                        "(bright-field); sets the shot noise (default 200)")
    g.add_argument("--background", type=float, metavar="B",
                   help="fluorescence background as a fraction of --photons (default 0.2)")
    g.add_argument("--unevenness", type=float, metavar="U",
                   help="relative amplitude of the smooth background variation (default 0.3)")
    g.add_argument("--read-noise", type=float, metavar="R",
                   help="Gaussian read noise, photo-electrons (default 2)")
    g.add_argument("--bit-depth", type=int, choices=[8, 16], help="8 or 16 (default 8)")
    g = p.add_argument_group("calibration and reproducibility")
    g.add_argument("--fps", type=float, help="frame rate stored in the file (default 100)")
    g.add_argument("--um-per-px", type=float, help="pixel size in micrometres stored in the file (default 0.1)")
    g.add_argument("--seed", type=int, help="random seed; same seed, same video (default 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def config_from_args(args) -> "object":
    """The :class:`~colloidcg.synthetic.SynthConfig` described by parsed arguments."""
    from ..synthetic import SynthConfig

    over = {field: getattr(args, opt) for opt, field in _FIELDS.items()
            if getattr(args, opt, None) is not None}
    if args.bidisperse is not None:
        over["bidisperse"] = args.bidisperse
    if args.drift is not None:
        over["drift"] = tuple(args.drift)
    if args.preset:
        return SynthConfig.preset(args.preset, **over)
    return SynthConfig(**over)


def run(args) -> int:
    from ..synthetic import write_synthetic

    cfg = config_from_args(args).validate()
    paths = write_synthetic(args.output, cfg, overwrite=args.overwrite, progress=not args.quiet)
    import pandas as pd

    truth = pd.read_parquet(paths["truth"])
    per_frame = truth.groupby("frame").size()
    msg = (f"wrote {paths['video']} ({cfg.n_frames} frames, {cfg.height}x{cfg.width} px, "
           f"{cfg.bit_depth}-bit {cfg.mode}), {paths['truth']} "
           f"({per_frame.mean():.0f} particles per frame, {truth['particle'].nunique()} tracks)")
    if "events" in paths:
        msg += f", {paths['events']}"
    print(msg)
    return 0
