"""Upsampling a crystal against a direct simulation of the large crystal
(benchmarks/upsample_crystal.py): ``tiling="auto"`` sees one crystal and places its tiles
in registry, and the adaptive relaxation leaves such seams alone.

All slow (``python -m pytest -m slow tests/test_upsample_crystal.py``): the 2D soft-disk
crystal (area fraction 0.85, 144 -> 2304 disks, K = 16, 4 samples; measured g(r) 0.033,
|psi6| 0.840 against the direct 0.846, seams -7.0 / -2.0 SE in neighbours / |psi6|), the
3D fcc soft-sphere crystal (volume fraction 0.70, 256 -> 2048; g(r) 0.042) and LAMMPS's
Brownian WCA crystals, 2D and 3D (g(r) 0.033 and 0.049). The default run tests matched
tiling on crystals in tests/test_upsample.py and tests/test_upsample_3d.py.
"""

from __future__ import annotations

import pytest

from bench_helpers import load_benchmark

B = load_benchmark("upsample_crystal")


def check(out, g_bound=0.05, order_bound=0.01):
    row = out["rows"]["auto"]
    assert row["method"] == "matched"
    assert row["g_error"] <= g_bound, row
    assert abs(row["order"] - out["order_direct"]) <= order_bound, (row, out["order_direct"])
    assert row["closest_ratio"] >= 0.9
    assert not row["seam_check"]["visible"], row["seam_check"]
    return row


@pytest.mark.slow
def test_2d_crystal_upsampled_in_registry_matches_the_large_crystal():
    """g(r) within 0.05 and |psi6| within 0.01 of the direct large crystal, no seam the
    check sees; random tiles of the same crystal (the control) miss g(r) by 4x and their
    seams show in |psi6|."""
    out = B.known_answer(2, samples=4, seed=0, report=None)
    check(out)
    random = out["rows"]["random"]
    assert random["g_error"] > 0.15 and random["seam_check"]["psi6"]["z"] < -5, random


@pytest.mark.slow
def test_3d_fcc_crystal_upsampled_in_registry_matches_the_large_crystal():
    check(B.known_answer(3, samples=4, seed=0, tilings=("auto",), report=None))


@pytest.mark.slow
@pytest.mark.parametrize("dim", [2, 3])
def test_lammps_crystal_upsampled_in_registry_matches_the_large_crystal(dim):
    from colloidcg.md.lammps import lammps_available
    ok, why = lammps_available()
    if not ok:
        pytest.skip(f"LAMMPS: {why}")
    check(B.known_answer(dim, truth="lammps", samples=4, seed=0, tilings=("auto",), report=None))
