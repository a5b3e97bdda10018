"""Seeded synthetic colloid videos with exact ground truth.

Brownian (or underdamped Langevin) dynamics of 2D soft disks, mono- or bidisperse, in a
periodic box larger than the field of view, optionally with stage drift, oscillatory shear
and planted localised rearrangements; rendered as fluorescence spots or bright-field rings
with realistic background and noise.

>>> from colloidcg.synthetic import SynthConfig, make_video
>>> frames, truth, meta = make_video(SynthConfig.preset("dense"))   # doctest: +SKIP

Lengths are in pixels and times in frames throughout; ``meta`` carries fps and um_per_px.
"""

from .config import PRESETS, SynthConfig
from .video import SyntheticVideo, make_video, write_synthetic

__all__ = ["SynthConfig", "PRESETS", "SyntheticVideo", "make_video", "write_synthetic"]
