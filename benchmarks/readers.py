"""Speed of the movie readers: opening (indexing), reading in order, random access.

    python benchmarks/readers.py                  # 512 x 512 px x 600 frames (~2 min)
    python benchmarks/readers.py --quick          # 256 x 256 px x 150 frames
    python benchmarks/readers.py --shared         # also ../shared/data/mixed_contrast/colloids.mp4

Writes a few movies of a moving textured pattern with PyAV: H.264 in MP4 with B-frames
(GOP 48) and without, MJPEG in AVI (every frame a keyframe), the issue's kind of MJPEG AVI
whose header claims 25x more frames than it holds (empty chunks for the gaps), and FFV1 in
MKV. For each, prints how the frame index was made and what it cost, then frames/s:

- ``in order``: ``video[i]`` for i = 0 .. T-1 in a freshly opened Video (the running
  decoder continues; no seeking);
- ``random``: ``video[i]`` in a random permutation of all frames (each read seeks to the
  keyframe at or before the frame and decodes forward to its timestamp);
- ``plain PyAV``: ``container.decode()`` with ``to_ndarray("gray")``, the ceiling for
  reading in order.

Random access on long-GOP H.264 costs about GOP/2 decoded frames per read; that is the
format, not the reader. No asserts: this prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def _frames(n: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    out = np.empty((n, size, size), np.uint8)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 6, (size, size)).astype(np.float32)
    for k in range(n):
        img = 128 + 50 * np.sin((xx + 1.5 * k) / 6) * np.cos((yy - k) / 9) + noise
        out[k] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _write(path: Path, frames: np.ndarray, codec: str, pts, rate: int, options=None) -> Path:
    import av

    tb = Fraction(1, rate)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate, options=options or {})
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = {"mjpeg": "yuvj420p", "ffv1": "gray"}.get(codec, "yuv420p")
        s.time_base = tb
        s.codec_context.time_base = tb
        for img, t in zip(frames, pts):
            vf = av.VideoFrame.from_ndarray(img, format="gray")
            vf.pts, vf.time_base = int(t), tb
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def _plain(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        t0 = time.perf_counter()
        n = sum(1 for f in c.decode(s) if f.to_ndarray(format="gray") is not None)
        return n / (time.perf_counter() - t0)


def bench(path: Path, label: str, repeat: int = 2) -> dict:
    from colloidcg.io import open_video
    from colloidcg.io import readers

    readers._INDEX_CACHE.clear()
    t0 = time.perf_counter()
    v = open_video(path)
    t_open = time.perf_counter() - t0
    n = len(v)
    v.close()
    seq, rnd, plain = 0.0, 0.0, 0.0
    for _ in range(repeat):               # best of: other processes share the cores
        v = open_video(path)              # fresh decoder, index from the cache
        t0 = time.perf_counter()
        for i in range(n):
            v[i]
        seq = max(seq, n / (time.perf_counter() - t0))
        order = np.random.default_rng(1).permutation(n)
        t0 = time.perf_counter()
        for i in order:
            v[i]
        rnd = max(rnd, n / (time.perf_counter() - t0))
        plain = max(plain, _plain(path))
    return dict(movie=label, frames=n, claimed=v.meta.header.get("n_frames"),
                index=v._backend.index.method, open_s=t_open, in_order=seq, random=rnd,
                plain=plain)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="256 x 256 px x 150 frames")
    ap.add_argument("--shared", action="store_true", help="add ../shared/data/mixed_contrast/colloids.mp4")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many passes (default 2)")
    a = ap.parse_args(argv)
    n, size = (150, 256) if a.quick else (600, 512)
    frames = _frames(n, size)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        cases = [
            ("H.264 MP4, B-frames, GOP 48", "h264b.mp4", "libx264", np.arange(n), 25,
             {"bf": "3", "g": "48", "crf": "18"}),
            ("H.264 MP4, no B-frames, GOP 48", "h264.mp4", "libx264", np.arange(n), 25,
             {"bf": "0", "g": "48", "crf": "18"}),
            ("MJPEG AVI", "mjpeg.avi", "mjpeg", np.arange(n), 25, None),
            ("MJPEG AVI, header claims 25x", "lying.avi", "mjpeg", np.arange(n) * 25, 100, None),
            ("FFV1 MKV", "ffv1.mkv", "ffv1", np.arange(n), 25, None),
        ]
        for label, name, codec, pts, rate, opts in cases:
            path = _write(d / name, frames, codec, pts, rate, opts)
            rows.append(bench(path, label, a.repeat))
            print(".", end="", file=sys.stderr, flush=True)
        if a.shared:
            p = Path(__file__).resolve().parents[2] / "shared" / "data" / "mixed_contrast" / "colloids.mp4"
            if p.is_file():
                rows.append(bench(p, "shared colloids.mp4 (MPEG-4)", a.repeat))
    print(file=sys.stderr)
    print(f"frames {size} x {size} px; frames/s (higher is better)")
    print(f"{'movie':<32} {'frames':>6} {'claimed':>7} {'index':<16} {'open s':>7} "
          f"{'in order':>9} {'random':>8} {'plain PyAV':>10}")
    for r in rows:
        print(f"{r['movie']:<32} {r['frames']:>6} {str(r['claimed']):>7} {r['index']:<16} "
              f"{r['open_s']:>7.3f} {r['in_order']:>9.0f} {r['random']:>8.0f} {r['plain']:>10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
