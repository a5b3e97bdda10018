"""The one g(r) (colloidcg.structure.rdf.gr) with each edge treatment: ideal gas and lattice."""

import numpy as np
import pandas as pd
import pytest

from colloidcg import evaluate as ev
from colloidcg.structure import prepare, radial_distribution
from colloidcg.structure.rdf import EDGE_TREATMENTS, gr

L = 60.0


def gas_frames(n=900, frames=12, seed=0, vary=False):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, L, (n + (int(rng.integers(-n // 2, n // 2)) if vary else 0), 2))
            for _ in range(frames)]


def kwargs(edge):
    return {"periodic": {"box": [L, L]}, "exclude": {"fov": [(0, L), (0, L)]},
            "random": {"fov": [(0, L), (0, L)], "rng": 1}}[edge]


@pytest.mark.parametrize("edge", EDGE_TREATMENTS)
def test_ideal_gas_is_one_within_its_error(edge):
    edges = np.linspace(0, 8.0, 17)
    r, g, sigma = gr(gas_frames(), edges, edge, **kwargs(edge))
    assert r.shape == g.shape == sigma.shape == (16,)
    use = r > 1.0                       # the first bins hold a handful of pairs
    z = (g[use] - 1.0) / sigma[use]
    assert np.all(np.abs(z) < 5), z
    assert abs(np.average(g[use], weights=sigma[use] ** -2) - 1.0) < 0.01


def test_periodic_ideal_gas_with_a_particle_number_that_changes_between_frames():
    """freud's RDF accumulated over frames normalised by the last frame's N (g of this gas
    came out 0.2-5x); gr normalises frame by frame."""
    edges = np.linspace(0, 8.0, 17)
    _, g, sigma = gr(gas_frames(vary=True), edges, "periodic", box=[L, L])
    assert np.all(np.abs(g[2:] - 1.0) < 5 * sigma[2:])


def square_lattice(a, n):
    ij = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
    return ij * a


@pytest.mark.parametrize("edge", EDGE_TREATMENTS)
def test_square_lattice_peaks_at_the_shell_distances(edge):
    a, n = 1.013, 30
    p = square_lattice(a, n) + 0.25
    side = n * a
    kw = {"periodic": {"box": [side, side]},
          "exclude": {"fov": [(0, side), (0, side)]},
          "random": {"fov": [(0, side), (0, side)], "rng": 2}}[edge]
    edges = np.linspace(0, 3.2, 81)         # bins of 0.04
    r, g, _ = gr([p], edges, edge, **kw)
    shells = a * np.sqrt([1, 2, 4, 5, 8, 9])
    want = np.zeros(len(r), bool)
    want[np.searchsorted(edges, shells) - 1] = True
    assert np.array_equal(g > 0, want)      # g is zero except at the lattice distances
    # four nearest neighbours: rho * integral of g over the first shell
    first = np.searchsorted(edges, a) - 1
    rho = 1 / a ** 2
    z = rho * g[first] * np.pi * (edges[first + 1] ** 2 - edges[first] ** 2)
    # random: the ~100 random pairs in that 0.04-wide bin carry ~7 % noise
    assert z == pytest.approx(4.0, rel=0.2 if edge == "random" else 1e-9)


def test_bad_edge_and_missing_geometry():
    with pytest.raises(ValueError, match="edge must be one of"):
        gr([np.zeros((3, 2))], [0, 1], "mirror")
    with pytest.raises(ValueError, match="periodic box"):
        gr([np.zeros((3, 2))], [0, 1], "periodic")
    with pytest.raises(ValueError, match="field of view"):
        gr([np.zeros((3, 2))], [0, 1], "exclude")


def test_former_callers_use_it():
    """structure.radial_distribution (px, edges excluded) and evaluate.rdf (um, random
    points or periodic) give what gr gives on the same frames."""
    frames = gas_frames(n=400, frames=4, seed=3)
    df = pd.DataFrame({"frame": np.repeat(np.arange(4), 400), "particle": np.tile(np.arange(400), 4),
                       "x": np.concatenate(frames)[:, 0], "y": np.concatenate(frames)[:, 1]})
    fr = prepare(df, fov=[(0, L), (0, L)])
    r, g = radial_distribution(fr, r_max=6.0, bin_width=0.5)
    _, g2, _ = gr([f[np.lexsort((np.arange(400),))] for f in frames], np.arange(0, 6.25, 0.5),
                  "exclude", fov=[(0, L), (0, L)])
    assert np.allclose(g, g2)
    um = 0.5
    e = ev.rdf(df, um, r_max=3.0, bins=6, box_px=[L, L])
    _, g3, _ = gr([f * um for f in frames], np.linspace(0, 3.0, 7), "periodic", box=[L * um, L * um])
    assert np.allclose(e["g"], g3)
    ex = ev.rdf(df, um, r_max=3.0, bins=6, edge="exclude", fov_px=[(0, L), (0, L)])
    assert np.allclose(ex["g"], 1.0, atol=0.15)
