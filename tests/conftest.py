"""Shared fixtures: real data from ../shared/data (skipped when absent), small videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real microscopy data not available ({SHARED_DATA} is absent)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def write_movie():
    """Function (path, frames (T, Y, X) uint8, codec, fps) that encodes a movie with PyAV."""
    return _write_movie


def _write_movie(path: Path, frames: np.ndarray, codec: str, fps: int = 25) -> Path:
    """Encode greyscale uint8 frames (T, Y, X) with PyAV."""
    import av

    pix = {"ffv1": "gray", "png": "gray", "rawvideo": "gray"}.get(codec, "yuv420p")
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = pix
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="gray")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.fixture(scope="session")
def tracker_compiled() -> None:
    """Track a tiny synthetic video once in this process, so that numba compiles the
    tracker's kernels and caches them on disk (``cache=True``) before a test starts Dask
    worker processes: on a fresh checkout each worker otherwise compiles them itself (40-50 s
    each, `python benchmarks/first_run.py`), two at once on two cores."""
    from colloidcg.synthetic import SynthConfig, make_video
    from colloidcg.tracking import track

    video = make_video(SynthConfig(n_frames=4, width=64, height=64, diameter=8.0, area_fraction=0.3, seed=0))
    track(video.frames, progress=False, processes=1)
