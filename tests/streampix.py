"""Writes NorPix StreamPix .seq files for the reader tests (no camera recording of this
format is in the shared data)."""

from __future__ import annotations

import struct

import numpy as np


def write_streampix(path, frames, fps, t0=1_700_000_000.0, step=None, block=8192, fmt=100, compression=0,
                    version=5):
    """A StreamPix 6 sequence (header version 5): an 8192-byte header, then per frame the
    raw image, its timestamp (uint32 s, uint16 ms, uint16 us) and zero padding up to the
    ``block`` size the header records (StreamPix aligns frames to 8192 bytes). Little-endian
    throughout; the header fields in their published order. ``version`` < 5: the older
    layout, a 1024-byte header and stamps of s and ms only."""
    frames = np.asarray(frames)
    n, h, w = frames.shape
    image = h * w * frames.dtype.itemsize
    true_size = -(-(image + 8) // block) * block
    name = "Norpix seq".encode("utf-16-le").ljust(24, b"\0")
    fields = struct.pack("<L24sll512sLLLLLLLLLdlLLLlllLlHH", 0xFEED, name, version, 1024, b"colloidcg test".ljust(512, b"\0"),
                         w, h, 8 * frames.dtype.itemsize, 8 * frames.dtype.itemsize, image, fmt, n, 0,
                         true_size, fps, 0, 0, 0, 0, 0, 0, 0, compression, 0, 0, 0)
    step_us = round(1e6 / fps if step is None else 1e6 * step)
    with open(path, "wb") as f:
        f.write(fields.ljust(8192 if version >= 5 else 1024, b"\0"))
        for i, img in enumerate(frames):
            t_us = round(t0 * 1e6) + i * step_us
            sec, us = divmod(t_us, 1_000_000)
            stamp = struct.pack("<LHH", sec, us // 1000, us % 1000) if version >= 5 else \
                struct.pack("<LH", sec, us // 1000)
            f.write((img.astype(img.dtype.newbyteorder("<")).tobytes() + stamp).ljust(true_size, b"\0"))
    return path
