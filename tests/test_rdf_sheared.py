"""g(r) in a sheared (Lees-Edwards) box: the sheared minimum image of
colloidcg.structure.rdf.sheared_distances, and evaluate.rdf reading the offsets per frame."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from colloidcg import evaluate as ev
from colloidcg.structure.rdf import sheared_distances


def brute_force(p, r_max, box, offset, reach=6):
    """Sorted distances of every unordered pair whose nearest image (searched over
    (2 reach + 1)^d explicit images of the sheared lattice) is closer than r_max."""
    dim = p.shape[1]
    n = np.array(list(itertools.product(range(-reach, reach + 1), repeat=dim)), float)
    lattice = np.zeros((len(n), dim))
    lattice[:, 0] = n[:, 0] * box[0] + n[:, 1] * offset
    lattice[:, 1] = n[:, 1] * box[1]
    if dim == 3:
        lattice[:, 2] = n[:, 2] * box[2]
    i, j = np.triu_indices(len(p), 1)
    diff = p[j] - p[i]
    best = np.linalg.norm(diff[:, None, :] + lattice[None, :, :], axis=-1).min(1)
    return np.sort(best[best < r_max])


@pytest.mark.parametrize("dim", [2, 3])
def test_sheared_distances_are_the_nearest_images(dim):
    rng = np.random.default_rng(dim)
    box = np.array([6.0, 5.0, 7.0])[:dim]
    # positions anywhere, including outside the primary cell (unwrapped in the sheared system)
    p = rng.uniform(-8, 14, (40, dim))
    for offset in (0.0, 1.7, -2.9, 5.2):
        d = np.sort(sheared_distances(p, 2.4, box, offset))
        assert np.allclose(d, brute_force(p, 2.4, box, offset), rtol=0, atol=1e-12), offset


def sheared_lattice(nx=8, ny=6, a=1.0, offset=0.37):
    """(tracks table, box, offset) of a lattice b1 = (a, 0), b2 = (offset / ny, a) in a box
    nx a by ny a whose image across +y is shifted by ``offset``: consistent with the
    Lees-Edwards images, its closest pairs are min(a, |b2|, |b2 - b1|) apart."""
    pts = np.array([[i * a + j * offset / ny, j * a] for j in range(ny) for i in range(nx)])
    rows = [pd.DataFrame({"frame": f, "particle": np.arange(len(pts)), "x": pts[:, 0], "y": pts[:, 1]})
            for f in range(3)]
    return pd.concat(rows, ignore_index=True), [nx * a, ny * a], offset


def test_rdf_of_a_sheared_lattice_has_no_pair_closer_than_the_lattice():
    tracks, box, offset = sheared_lattice()
    b2 = np.array([offset / 6, 1.0])
    nearest = min(1.0, np.linalg.norm(b2), np.linalg.norm(b2 - [1.0, 0.0]))
    g = ev.rdf(tracks, box_px=box, r_max=2.5, bins=100, tilt_px=[offset] * 3)
    first = g["r"][g["g"] > 0].min()
    assert first >= nearest - 0.025                       # the first occupied bin holds the lattice spacing
    # the rectangular minimum image pairs the top row with the bottom row's unshifted copy:
    # spurious pairs at |(offset - offset / 6, a)| ... and closer, in x, to the wrong partner
    g_rect = ev.rdf(tracks, box_px=box, r_max=2.5, bins=100)
    assert not np.allclose(g_rect["g"].to_numpy(), g["g"].to_numpy())


def test_rdf_tilt_needs_an_offset_per_frame_number_and_a_box():
    tracks, box, offset = sheared_lattice()
    with pytest.raises(Exception, match="tilt_px"):
        ev.rdf(tracks, box_px=box, tilt_px=[offset])       # frames 0..2 need three offsets
    with pytest.raises(Exception, match="tilt_px"):
        ev.rdf(tracks, tilt_px=[offset] * 3, edge="random")
