"""Tests for colloidcg.structure: Voronoi cells with open boundaries, |psi6| against freud,
coordination, radial structure functions against brute force, g(r) and its first minimum,
field of view and spacing, and input checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import ConvexHull, Voronoi

from colloidcg.errors import ColloidcgError, ParameterError
from colloidcg.structure import (DEFAULT_RADII, DEFAULT_WIDTH, cutoff_from_gr, descriptors,
                                 feature_names, first_minimum, fov_from_shape, frame_pairs, prepare,
                                 radial_distribution, voronoi_2d)
from colloidcg.structure.radial import TRUNCATE

A = 10.0


def hex_lattice(nx, ny, a=A, origin=(20.0, 20.0)):
    jj, ii = np.meshgrid(np.arange(nx), np.arange(ny))
    return np.column_stack([(jj * a + (ii % 2) * a / 2 + origin[0]).ravel(),
                            (ii * a * np.sqrt(3) / 2 + origin[1]).ravel()])


def tracks_from(pos: np.ndarray) -> pd.DataFrame:
    """(T, N, d) positions -> tracks table."""
    T, n, d = pos.shape
    df = pd.DataFrame({"frame": np.repeat(np.arange(T), n), "particle": np.tile(np.arange(n), T)})
    for k, ax in enumerate("xyz"[:d]):
        df[ax] = pos[..., k].ravel()
    return df


# ----------------------------------------------------------------- Voronoi
def test_voronoi_areas_equal_scipy_cells_and_unbounded_cells_are_nan():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (500, 2))
    fov = np.array([[0.0, 100.0], [0.0, 100.0]])
    area, indptr, indices = voronoi_2d(pts, fov)
    vor = Voronoi(pts)
    n_checked = 0
    for k in range(len(pts)):
        reg = vor.regions[vor.point_region[k]]
        if -1 in reg:
            assert np.isnan(area[k])
            continue
        if np.isnan(area[k]):
            continue
        n_checked += 1
        assert area[k] == pytest.approx(ConvexHull(vor.vertices[reg]).volume, rel=1e-10)
    assert n_checked > 300
    # neighbours: the Delaunay/Voronoi neighbours scipy reports as ridges
    ridges = {tuple(sorted(r)) for r in vor.ridge_points}
    mine = {tuple(sorted((k, j))) for k in range(len(pts)) for j in indices[indptr[k]:indptr[k + 1]]}
    assert mine == ridges


def test_valid_voronoi_cells_cannot_be_changed_by_unseen_particles():
    # cells declared exact in a cropped view equal the cells of the full system
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 200, (2000, 2))
    full, _, _ = voronoi_2d(pts, np.array([[0.0, 200.0], [0.0, 200.0]]))
    fov = np.array([[50.0, 150.0], [60.0, 140.0]])
    inside = ((pts >= fov[:, 0]) & (pts <= fov[:, 1])).all(axis=1)
    crop, _, _ = voronoi_2d(pts[inside], fov)
    ok = ~np.isnan(crop)
    assert ok.sum() > 0.6 * inside.sum()
    np.testing.assert_allclose(crop[ok], full[inside][ok], rtol=1e-10)


def test_hex_lattice_descriptors_are_exact():
    p = hex_lattice(16, 16)
    df = tracks_from(p[None].repeat(2, axis=0))
    out = descriptors(df, cutoff=1.2 * A, diameter=A)
    ok = out["voronoi_area"].notna()
    assert ok.sum() > 100
    np.testing.assert_allclose(out.loc[ok, "voronoi_area"], np.sqrt(3) / 2 * A ** 2, rtol=1e-9)
    np.testing.assert_allclose(out.loc[ok, "psi6"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(out.loc[ok, "area_fraction"], np.pi / (2 * np.sqrt(3)), rtol=1e-9)
    assert (out.loc[ok, "coordination"] == 6).all()
    # the hull is never valid
    hull = ConvexHull(p).vertices
    assert out["voronoi_area"].iloc[hull].isna().all()


def test_psi6_equals_freud_hexatic_with_the_same_neighbours():
    freud = pytest.importorskip("freud")
    rng = np.random.default_rng(2)
    p = hex_lattice(14, 14) + rng.normal(0, 1.2, (196, 2))
    df = tracks_from(p[None])
    out = descriptors(df, cutoff=13.0)
    _, indptr, indices = voronoi_2d(p, prepare(df).fov)
    src = np.repeat(np.arange(len(p)), np.diff(indptr))
    box = freud.box.Box(1000, 1000, is2D=True)
    pts3 = np.column_stack([p - p.mean(0), np.zeros(len(p))])
    nl = freud.locality.NeighborList.from_arrays(len(p), len(p), src, indices,
                                                 pts3[indices] - pts3[src])
    hex_ = freud.order.Hexatic(k=6).compute((box, pts3), neighbors=nl)
    ok = out["psi6"].notna().to_numpy()
    assert ok.sum() > 80
    # freud works in single precision
    np.testing.assert_allclose(out["psi6"].to_numpy()[ok], np.abs(hex_.particle_order)[ok], atol=1e-4)


def test_area_fraction_from_diameter_column_and_descriptors_keep_rows():
    rng = np.random.default_rng(3)
    p = hex_lattice(10, 10)
    pos = p[None] + rng.normal(0, 0.3, (3, len(p), 2))
    df = tracks_from(pos)
    df["diameter"] = np.where(df["particle"] % 2 == 0, 8.0, 9.0)
    df = df.sample(frac=1.0, random_state=0)
    out = descriptors(df, cutoff=13.0)
    assert list(out.index) == list(df.index)
    ok = out["voronoi_area"].notna()
    np.testing.assert_allclose(out.loc[ok, "area_fraction"],
                               np.pi * df.loc[ok, "diameter"] ** 2 / 4 / out.loc[ok, "voronoi_area"])
    assert "mass" not in out.columns and set(feature_names()) <= set(out.columns)


# ----------------------------------------------------------------- radial structure functions
def test_radial_structure_functions_equal_brute_force():
    rng = np.random.default_rng(4)
    pos = rng.uniform(0, 120, (2, 150, 2))
    df = tracks_from(pos)
    out = descriptors(df, cutoff=15.0)
    a = prepare(df).spacing
    radii = np.array(DEFAULT_RADII) * a
    w = DEFAULT_WIDTH * a
    for f in range(2):
        p = pos[f]
        d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        x = d[..., None] - radii
        g = np.where(np.abs(x) < TRUNCATE * w, np.exp(-x ** 2 / (2 * w ** 2)), 0.0).sum(1)
        mine = out.loc[out["frame"] == f, feature_names()].to_numpy()
        np.testing.assert_allclose(mine, g, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(out.loc[out["frame"] == f, "coordination"], (d <= 15.0).sum(1))


def test_nonuniform_radii_use_the_general_kernel():
    rng = np.random.default_rng(5)
    df = tracks_from(rng.uniform(0, 100, (1, 120, 2)))
    a = prepare(df).spacing
    radii = (0.8, 1.0, 1.7)
    out = descriptors(df, cutoff=15.0, radii=radii, width=0.2)
    p = df[["x", "y"]].to_numpy()
    d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    x = d[..., None] - np.array(radii) * a
    w = 0.2 * a
    g = np.where(np.abs(x) < TRUNCATE * w, np.exp(-x ** 2 / (2 * w ** 2)), 0.0).sum(1)
    np.testing.assert_allclose(out[feature_names(radii)].to_numpy(), g, rtol=1e-12)
    with pytest.raises(ParameterError, match="radii"):
        descriptors(df, cutoff=15.0, radii=())
    with pytest.raises(ParameterError, match="width"):
        descriptors(df, cutoff=15.0, width=0)


def test_3d_descriptors_coordination_and_radial_functions():
    g = np.stack(np.meshgrid(*[np.arange(6) * A] * 3, indexing="ij"), -1).reshape(-1, 3)
    df = tracks_from(g[None])
    out = descriptors(df, cutoff=1.2 * A)
    assert "voronoi_area" not in out.columns and "psi6" not in out.columns
    interior = ((g > 0) & (g < 5 * A)).all(1)
    assert (out.loc[interior, "coordination"] == 6).all()
    assert set(feature_names()) <= set(out.columns)


# ----------------------------------------------------------------- g(r)
def test_gr_of_uniform_points_is_one():
    rng = np.random.default_rng(6)
    df = tracks_from(rng.uniform(0, 400, (20, 1500, 2)))
    fr = prepare(df, fov=[(0, 400), (0, 400)])
    r, g = radial_distribution(fr, r_max=40.0, bin_width=2.0)
    assert np.abs(g[r > 4].mean() - 1.0) < 0.02
    assert np.abs(g[r > 4] - 1).max() < 0.1


def test_first_minimum_rule():
    r = np.linspace(0, 3, 601)
    g = 1 + 1.5 * np.exp(-((r - 1.0) / 0.1) ** 2) - 0.6 * np.exp(-((r - 1.4) / 0.1) ** 2) \
        + 0.4 * np.exp(-((r - 2.0) / 0.15) ** 2)
    g[r < 0.8] = 0
    assert first_minimum(r, g, smooth_bins=0.5) == pytest.approx(1.4, abs=0.01)
    # flat zero between shells (a crystal): the middle of the flat stretch
    g2 = np.where((r > 0.9) & (r < 1.1), 5.0, 0.0) + np.where((r > 1.6) & (r < 1.9), 5.0, 0.0)
    assert first_minimum(r, g2, smooth_bins=0.5) == pytest.approx(1.35, abs=0.02)
    # no minimum below 1: None
    assert first_minimum(r, np.exp(-r)) is None


def test_cutoff_from_gr_on_a_noisy_lattice_and_gas_fallback():
    rng = np.random.default_rng(7)
    p = hex_lattice(24, 24)
    fr = prepare(tracks_from(p[None] + rng.normal(0, 0.6, (10, len(p), 2))))
    cut, rule = cutoff_from_gr(fr)
    assert rule == "first minimum of g(r)"
    assert cut > 1.25 * A and cut < 1.55 * A
    gas = prepare(tracks_from(rng.uniform(0, 500, (10, 300, 2))), fov=[(0, 500), (0, 500)])
    cut2, rule2 = cutoff_from_gr(gas)
    assert rule2.startswith("1.5 x mean spacing") and cut2 == pytest.approx(1.5 * gas.spacing)


def test_gr_needs_room():
    df = tracks_from(np.random.default_rng(8).uniform(0, 10, (2, 30, 2)))
    with pytest.raises(ColloidcgError, match="field of view too small"):
        radial_distribution(prepare(df), r_max=50.0)


# ----------------------------------------------------------------- frames, fov, pairs
def test_spacing_and_inferred_fov_match_the_lattice_density():
    p = hex_lattice(30, 30)
    fr = prepare(tracks_from(p[None]))
    a_true = np.sqrt(np.sqrt(3) / 2) * A  # (area per particle)^(1/2) of a hex lattice
    assert fr.spacing == pytest.approx(a_true, rel=0.02)
    assert fr.fov_inferred
    assert (fr.fov[:, 0] < p.min(0)).all() and (fr.fov[:, 1] > p.max(0)).all()


def test_fov_from_shape_uses_pixel_centres():
    np.testing.assert_array_equal(fov_from_shape((100, 200)), [[-0.5, 199.5], [-0.5, 99.5]])
    np.testing.assert_array_equal(fov_from_shape((5, 100, 200))[2], [-0.5, 4.5])


def test_image_coordinates_are_used_when_drift_was_subtracted():
    p = hex_lattice(8, 8)
    df = tracks_from(np.stack([p, p + 3.0]))
    df["x_image"], df["y_image"] = df["x"], df["y"]
    df.loc[df["frame"] == 1, ["x", "y"]] -= 3.0
    fr = prepare(df)
    np.testing.assert_allclose(fr.pos[fr.frame == 1], p + 3.0)


def test_pairs_are_the_same_whatever_the_chunk_size():
    rng = np.random.default_rng(9)
    fr = prepare(tracks_from(rng.uniform(0, 100, (7, 200, 2))))
    def collect(rows):
        out = set()
        for ch in frame_pairs(fr, 12.0, chunk_rows=rows):
            assert (fr.frame[ch.i] == fr.frame[ch.j]).all() and (ch.i < ch.j).all()
            assert ((ch.i >= ch.lo) & (ch.j < ch.hi)).all()
            out |= set(zip(ch.i.tolist(), ch.j.tolist()))
        return out
    assert collect(150) == collect(10_000)


@pytest.mark.parametrize("make, pattern", [
    (lambda d: d.assign(frame=d["frame"] + 0.5), "whole numbers"),
    (lambda d: d.iloc[:0], "no rows"),
    (lambda d: d.assign(x=d["x"].astype(object).where(d.index != 2, "a")), "numeric"),
    (lambda d: "not a table", "expected a pandas DataFrame"),
])
def test_prepare_rejects_bad_tables(make, pattern):
    df = tracks_from(hex_lattice(4, 4)[None].repeat(2, 0))
    with pytest.raises(ColloidcgError, match=pattern):
        prepare(make(df))


def test_prepare_rejects_a_fov_that_misses_particles():
    df = tracks_from(hex_lattice(4, 4)[None])
    with pytest.raises(ParameterError, match="outside"):
        prepare(df, fov=[(0, 30), (0, 30)])
    with pytest.raises(ParameterError, match="lo < hi"):
        prepare(df, fov=[(100, 0), (0, 100)])
