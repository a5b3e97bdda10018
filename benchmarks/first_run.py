"""What a fresh install's first ``colloidcg.tracking.track`` costs: numba compiling the
tracking kernels, against the same call once they are cached.

Each row runs in a fresh Python process with its own, initially empty numba cache
folder (``NUMBA_CACHE_DIR``), tracking a small synthetic video (6 frames of 96 x 96 px,
about 60 particles) on one core:

- ``cold``: the first call, which compiles every kernel it meets and writes the cache;
- ``cached``: a second process on the same cache folder, which only loads them.

The difference is what every new user's first run, and every clean-clone CI run, pays
once. Timings are wall clock; on a machine shared with other work they vary by 2x, so
run it on a quiet machine and compare rows of one run.

    python benchmarks/first_run.py
    python benchmarks/first_run.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

_CHILD = r"""
import json, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
from colloidcg.synthetic import SynthConfig, make_video
from colloidcg.tracking import track
video = make_video(SynthConfig(n_frames=6, width=96, height=96, diameter=8.0,
                               area_fraction=0.6, seed=0), progress=False).frames
t1 = time.perf_counter()
track(video, progress=False, processes=1)
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "track": t2 - t1}))
"""


def _run(cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="cold/cached pairs (default 1)")
    args = ap.parse_args(argv)
    rows = []
    for k in range(max(1, args.repeats)):
        with tempfile.TemporaryDirectory() as cache:
            rows.append(("cold", k, _run(cache)))
            rows.append(("cached", k, _run(cache)))
    print(f"{'run':8s} {'pair':>4s} {'import + video (s)':>19s} {'track (s)':>10s}")
    for name, k, r in rows:
        print(f"{name:8s} {k:4d} {r['import']:19.1f} {r['track']:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
