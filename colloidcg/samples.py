"""The sample videos that ship in ``sample_videos/`` (made by :mod:`colloidcg.synthetic`)."""

from __future__ import annotations

import os
from pathlib import Path

#: Name -> synthetic preset that regenerates it byte for byte.
SAMPLES = {"dense": "sample"}


def sample_dir(name: str = "dense") -> Path:
    """Folder holding ``video.tif`` and ``truth.parquet`` of a shipped sample.

    The repository's ``sample_videos/<name>`` is used when present (a source checkout or
    editable install). Otherwise the sample is regenerated, identically, from its seeded
    synthetic preset into ``$COLLOIDCG_CACHE`` (default ``~/.cache/colloidcg``).
    """
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; expected one of {', '.join(SAMPLES)}")
    here = Path(__file__).resolve().parent.parent / "sample_videos" / name
    if (here / "video.tif").exists():
        return here
    cache = Path(os.environ.get("COLLOIDCG_CACHE", Path.home() / ".cache" / "colloidcg")) / name
    if not (cache / "video.tif").exists():
        from .synthetic import SynthConfig, write_synthetic

        write_synthetic(cache, SynthConfig.preset(SAMPLES[name]), overwrite=True)
    return cache


def sample_video(name: str = "dense") -> Path:
    """Path of a sample's ``video.tif``."""
    return sample_dir(name) / "video.tif"
