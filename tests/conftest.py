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
