"""Configuration of a synthetic colloid video: one dataclass, validated up front."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ParameterError

MODES = ("fluorescence", "brightfield")


@dataclass
class SynthConfig:
    """Everything that defines a synthetic video. Lengths in px, times in frames.

    Field of view and length
        n_frames, width, height: the video is (n_frames, height, width).
    Particles
        diameter: px. For bidisperse systems the MEAN of the two species' diameters
        (small = 2 d/(1 + size_ratio), large = size_ratio * small; 50:50 by number).
        area_fraction: sum of disk areas / box area (0 < phi <= 0.9).
        bidisperse, size_ratio.
    Dynamics
        diffusion: D0, free-particle diffusion coefficient, px^2/frame.
        thermal_ratio: kT/eps, thermal over repulsive energy (typical overlap ~ sqrt).
        inertia: momentum relaxation time m/zeta in frames. 0 = overdamped Brownian
            dynamics; > 0 = underdamped Langevin (BAOAB) with friction rate
            gamma = 1/inertia and mass m = zeta * inertia (zeta = kT/D0), so the long-time
            free diffusion is still D0; truth then has velocities vx, vy.
        drift: stage drift (vx, vy), px/frame, added to every position (truth includes it).
        shear_amplitude: strain amplitude gamma0 of an imposed oscillatory simple shear
            gamma(t) = gamma0 sin(2 pi t / shear_period), flow along x, zero at the centre
            row of the field of view (Lees-Edwards boundaries). Particles at the top/bottom
            edge move by +/- gamma0 * height/2 px.
        shear_period: frames.
        events: number of randomly planted localised shear transformations, or a list of
            (frame, x, y, radius, strain) tuples: the particles within ``radius`` px of
            (x, y) (FOV px) in frame ``frame - 1`` are displaced by an Eshelby-like pure
            shear of that strain, spread over the interval to ``frame``, where the truth
            marks them ``planted``; the dynamics then relaxes the surroundings.
        event_radius: px (default 2.5 * diameter); event_strain: local shear strain
            (default 0.6: with duration 3 this gives lasting neighbour changes, i.e. a
            plastic rearrangement, with one-frame steps under 3 px at 16 px diameter).
        event_duration: frames over which each event's strain is spread (default 3); the
            particles are marked ``planted`` in each of frames frame .. frame+duration-1.
            Spreading a strong event over several frames keeps per-frame steps small.
        substeps: integration substeps per frame (None: chosen from the stiffness).
        equilibration: frames simulated (and discarded) before frame 0.
        margin: px of simulated sample around the field of view (None: 3 diameters).
    Rendering
        mode: "fluorescence" (pixel-integrated Gaussian spots) or "brightfield" (rings).
        spot_sigma: spot standard deviation as a fraction of each particle's diameter.
        brightness_cv: per-particle relative brightness spread.
        photons: expected photons at a spot peak (fluorescence) or in the background
            (bright-field); sets the shot noise.
        background: fluorescence background level as a fraction of ``photons``.
        unevenness: relative amplitude of the smooth background variation.
        read_noise: Gaussian read noise, photo-electrons (std).
        bit_depth: 8 or 16.
    Calibration and seed
        fps (frames/s), um_per_px (micrometres per pixel), seed (None = fresh entropy).
    """

    n_frames: int = 100
    width: int = 256
    height: int = 256
    diameter: float = 16.0
    area_fraction: float = 0.8
    bidisperse: bool = False
    size_ratio: float = 1.4
    diffusion: float = 0.05
    thermal_ratio: float = 1e-3
    inertia: float = 0.0
    drift: tuple[float, float] = (0.0, 0.0)
    shear_amplitude: float = 0.0
    shear_period: float = 50.0
    events: int | Sequence[Sequence[float]] = 0
    event_radius: float | None = None
    event_strain: float = 0.6
    event_duration: int = 3
    substeps: int | None = None
    equilibration: int = 30
    margin: float | None = None
    mode: str = "fluorescence"
    spot_sigma: float = 0.25
    brightness_cv: float = 0.1
    photons: float = 200.0
    background: float = 0.2
    unevenness: float = 0.3
    read_noise: float = 2.0
    bit_depth: int = 8
    fps: float = 100.0
    um_per_px: float = 0.1
    seed: int | None = 0

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "SynthConfig":
        """A named configuration, with keyword overrides.

        ``"dense"``: 512 x 512 px, 100 frames, bidisperse, phi = 0.8, mean diameter 16 px
        (13.3 / 18.7 px), about 1050 particles in view; fluorescence, 8-bit.
        ``"accuracy"``: 256 x 256 px, 20 frames, bidisperse, phi = 0.8, diameter 16 px,
        fluorescence with noise (photons 150, read noise 3), 16-bit, for localisation error.
        ``"sample"``: the shipped sample video (256 x 256, 50 frames, dense, mild shear and
        drift so particles cross the edges).
        ``"dilute"``: phi = 0.05, for free diffusion checks.
        """
        try:
            base = dict(PRESETS[name])
        except KeyError:
            raise ParameterError(
                f"preset: unknown name {name!r}; expected one of {', '.join(PRESETS)}") from None
        base.update(overrides)
        return cls(**base)

    # --------------------------------------------------------------- validation
    def validate(self) -> "SynthConfig":
        """Check every parameter; raise :class:`ParameterError` naming the first bad one."""
        def num(name, lo=None, hi=None, lo_open=False, integer=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (
                    isinstance(v, float) and not math.isfinite(v)):
                raise ParameterError(f"{name}: expected a finite number, got {v!r}")
            if integer and int(v) != v:
                raise ParameterError(f"{name}: expected an integer, got {v!r}")
            if lo is not None and (v <= lo if lo_open else v < lo):
                raise ParameterError(f"{name}: expected {'>' if lo_open else '>='} {lo}, got {v!r}")
            if hi is not None and v > hi:
                raise ParameterError(f"{name}: expected <= {hi}, got {v!r}")

        num("n_frames", 1, 100_000, integer=True)
        num("width", 8, 8192, integer=True)
        num("height", 8, 8192, integer=True)
        num("diameter", 2.0, 200.0)
        num("area_fraction", 0.0, 0.9, lo_open=True)
        num("size_ratio", 1.0, 3.0)
        num("diffusion", 0.0, 25.0, lo_open=True)
        num("thermal_ratio", 0.0, 1.0, lo_open=True)
        num("inertia", 0.0, 1000.0)
        num("shear_amplitude", 0.0, 0.5)
        num("shear_period", 0.0, None, lo_open=True)
        num("event_strain", 0.0, 2.0)
        num("event_duration", 1, 1000, integer=True)
        num("equilibration", 0, 100_000, integer=True)
        num("spot_sigma", 0.02, 2.0)
        num("brightness_cv", 0.0, 0.5)
        num("photons", 0.0, 1e7, lo_open=True)
        num("background", 0.0, 100.0)
        num("unevenness", 0.0, 0.9)
        num("read_noise", 0.0, 1e5)
        num("fps", 0.0, None, lo_open=True)
        num("um_per_px", 0.0, None, lo_open=True)
        if self.event_radius is not None:
            num("event_radius", 0.0, None, lo_open=True)
        if self.substeps is not None:
            num("substeps", 1, 10_000, integer=True)
        if self.margin is not None:
            num("margin", 0.0, None)
        if self.bit_depth not in (8, 16):
            raise ParameterError(f"bit_depth: expected 8 or 16, got {self.bit_depth!r}")
        if self.mode not in MODES:
            raise ParameterError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.bidisperse, bool):
            raise ParameterError(f"bidisperse: expected True or False, got {self.bidisperse!r}")
        try:
            dx, dy = (float(v) for v in self.drift)
        except (TypeError, ValueError):
            raise ParameterError(f"drift: expected two numbers (vx, vy) in px/frame, got {self.drift!r}") from None
        if not (math.isfinite(dx) and math.isfinite(dy)) or max(abs(dx), abs(dy)) > 0.5 * self.diameter:
            raise ParameterError(
                f"drift: expected finite |vx|, |vy| <= diameter/2 px/frame, got {self.drift!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or self.seed < 0):
            raise ParameterError(f"seed: expected a non-negative integer or None, got {self.seed!r}")
        self.event_list()  # validates events
        return self

    def event_list(self) -> list[tuple[int, float, float, float, float]] | int:
        """The planted events as validated tuples, or their number when random."""
        ev = self.events
        if isinstance(ev, bool):
            raise ParameterError(f"events: expected a count or a list of (frame, x, y, radius, strain), got {ev!r}")
        if isinstance(ev, (int,)) or (isinstance(ev, float) and ev.is_integer()):
            if ev < 0 or ev > 10_000:
                raise ParameterError(f"events: expected a count in 0..10000, got {ev!r}")
            if ev > 0 and self.n_frames < 1 + self.event_duration:
                raise ParameterError(
                    f"events: planting events needs n_frames >= event_duration + 1 = {1 + self.event_duration}")
            return int(ev)
        out = []
        try:
            items = list(ev)
        except TypeError:
            raise ParameterError(f"events: expected a count or a list of (frame, x, y, radius, strain), got {ev!r}") from None
        for k, e in enumerate(items):
            try:
                f, x, y, r, s = (float(v) for v in e)
            except (TypeError, ValueError):
                raise ParameterError(
                    f"events[{k}]: expected (frame, x, y, radius, strain), got {e!r}") from None
            if not f.is_integer() or not 1 <= f < self.n_frames:
                raise ParameterError(f"events[{k}]: frame must be an integer in 1..{self.n_frames - 1}, got {e[0]!r}")
            if not (-0.5 <= x < self.width - 0.5 and -0.5 <= y < self.height - 0.5):
                raise ParameterError(f"events[{k}]: (x, y) must lie in the {self.width}x{self.height} field of view, got ({x}, {y})")
            if not (0 < r <= 0.5 * min(self.width, self.height) + 10 * self.diameter):
                raise ParameterError(f"events[{k}]: radius must be > 0 and smaller than the field of view, got {r}")
            if not (0 <= s <= 2):
                raise ParameterError(f"events[{k}]: strain must be in 0..2, got {s}")
            out.append((int(f), x, y, r, s))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of all parameters."""
        d = dataclasses.asdict(self)
        d["drift"] = [float(v) for v in self.drift]
        if not isinstance(self.events, (int, float)):
            d["events"] = [list(map(float, e)) for e in self.events]
        return d


PRESETS: dict[str, dict[str, Any]] = {
    "dense": dict(n_frames=100, width=512, height=512, diameter=16.0, area_fraction=0.8,
                  bidisperse=True, diffusion=0.05, mode="fluorescence", bit_depth=8),
    "accuracy": dict(n_frames=20, width=256, height=256, diameter=16.0, area_fraction=0.8,
                     bidisperse=True, diffusion=0.05, mode="fluorescence", photons=150.0,
                     read_noise=3.0, bit_depth=16),
    "sample": dict(n_frames=50, width=256, height=256, diameter=16.0, area_fraction=0.8,
                   bidisperse=True, diffusion=0.1, drift=(0.3, 0.15), shear_amplitude=0.04,
                   shear_period=50.0, events=3, event_strain=0.6, event_duration=3,
                   mode="fluorescence", bit_depth=8, seed=1),
    "dilute": dict(n_frames=100, width=256, height=256, diameter=8.0, area_fraction=0.05,
                   diffusion=0.5, mode="fluorescence", bit_depth=8),
}
