"""The napari reader on an upsampled system (``colloidcg upsample`` output): one Points
layer (frame slider = sample) with its features, local |psi6| among them, and the periodic
box as a Shapes rectangle.

GUI tests run under xvfb (pytest-xvfb) with napari's ``make_napari_viewer`` fixture
(locally: ``xvfb-run -a python -m pytest -q tests/test_napari_upsample.py``).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest

if importlib.util.find_spec("PyQt6") is not None:
    os.environ.setdefault("QT_API", "pyqt6")

napari = pytest.importorskip("napari")

from test_napari_plugin import _qt_can_start  # noqa: E402  (skip, in CI fail, where Qt cannot start)

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures(_qt_can_start.__name__),
              pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend")]


def _layers(layers):
    return {type(lay).__name__: lay for lay in layers}


@pytest.fixture(scope="module")
def upsampled(tmp_path_factory):
    """A real ``colloidcg upsample`` output: 60 soft disks, a model trained for one epoch,
    K = 4, three samples."""
    import torch

    from colloidcg.cli import main
    from colloidcg.core.persist import save_model
    from colloidcg.outputs import provenance, read_table, write_table
    from colloidcg.train import TrainConfig, train_tracks
    from test_upsample import soft_disks

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("upsample")
    df, side = soft_disks(60, 6, 5, seed=2, equilibration=200)
    res = train_tracks(df, {"fps": 1.0, "um_per_px": 1.0},
                       TrainConfig(epochs=1, lr=1e-2, progress=False, loc_noise="none", cutoff=24.0,
                                   size_column="diameter", seed=0), box_px=[side, side])
    mdir = save_model(res.model, tmp / "model", {"calibration": res.report["calibration"]})
    init = tmp / "small.parquet"
    write_table(init, df, provenance("test", {}, {}))
    out = tmp / "big.parquet"
    assert main(["upsample", str(mdir), "--init", str(init), "--factor", "4", "--samples", "3", "--seed", "1",
                 "--relax-steps", "2", "--relax-temperature", "1", "-o", str(out)]) == 0
    table, meta = read_table(out)
    return out, table, meta, side


def test_upsample_output_opens_as_points_with_features_and_box(make_napari_viewer, upsampled):
    out, table, meta, side = upsampled
    viewer = make_napari_viewer()
    layers = viewer.open(str(out), plugin=None)
    assert sorted(type(lay).__name__ for lay in layers) == ["Points", "Shapes"]
    got = _layers(layers)
    pts, box = got["Points"], got["Shapes"]
    # every particle of every sample, (frame = sample, y, x), the slider running over the samples
    assert len(pts.data) == len(table)
    np.testing.assert_array_equal(pts.data[:, 0], table["frame"].to_numpy())
    np.testing.assert_allclose(pts.data[:, 1:], table[["y", "x"]].to_numpy())
    assert viewer.dims.nsteps[0] == 3
    # the table's columns are features, and the points are drawn with the particles' diameters
    assert {"frame", "particle", "x", "y", "diameter", "seam_distance", "tile", "psi6_abs"} <= set(pts.features)
    np.testing.assert_allclose(pts.size, table["diameter"].to_numpy())
    psi = pts.features["psi6_abs"].to_numpy(float)
    assert np.isfinite(psi).all() and (psi >= 0).all() and (psi <= 1 + 1e-12).all()
    # four tiles per sample, every particle from one of them; seam distances within half a tile
    assert set(pts.features["tile"]) == {0, 1, 2, 3}
    assert (pts.features["seam_distance"] <= side / 2 + 1e-9).all()
    # the periodic box: a rectangle (y, x) from the origin to the sidecar's box
    assert meta["meta"]["box_px"] == pytest.approx([2 * side] * 2)
    assert box.shape_type == ["rectangle"]
    np.testing.assert_allclose(np.sort(box.data[0][:, 0]), [0, 0, 2 * side, 2 * side])
    np.testing.assert_allclose(np.sort(box.data[0][:, 1]), [0, 0, 2 * side, 2 * side])
    assert pts.metadata["colloidcg"]["kind"] == "upsample"


def _write_upsample(path, df, box):
    from colloidcg.outputs import provenance, write_table

    write_table(path, df, provenance("upsample", {}, {"size_column": None}, meta={"box_px": box}))


def test_psi6_feature_is_one_on_a_triangular_lattice_and_zero_on_a_square_one(make_napari_viewer, tmp_path):
    """Known truth: every particle of a periodic triangular lattice has |psi6| = 1, every
    particle of a square lattice (four neighbours at right angles) |psi6| = 0, minimum
    image across the box edges included."""
    a, nx, ny = 10.0, 12, 14                       # ny even: the lattice is periodic in y
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    x = (a * (i + 0.5 * (j % 2))).ravel() + 0.3
    y = (a * np.sqrt(3) / 2 * j).ravel() + 0.2
    box = [a * nx, a * np.sqrt(3) / 2 * ny]
    n = len(x)
    # a square-ish lattice in the same box (13 x 13 cells of 9.23 x 9.33 px): four
    # neighbours along the axes, the diagonal ones 40 % farther
    sq_a = np.sqrt(box[0] * box[1] / n)
    mx, my = int(round(box[0] / sq_a)), int(round(box[1] / sq_a))
    u, v = np.meshgrid(np.arange(mx), np.arange(my), indexing="ij")
    sx, sy = (u.ravel() + 0.5) * box[0] / mx, (v.ravel() + 0.5) * box[1] / my
    m = len(sx)
    df = pd.DataFrame({"frame": np.repeat([0, 1], [n, m]),
                       "particle": np.concatenate([np.arange(n), np.arange(m)]),
                       "x": np.concatenate([x, sx]), "y": np.concatenate([y, sy]),
                       "seam_distance": np.inf, "tile": 0})
    path = tmp_path / "lattice.parquet"
    _write_upsample(path, df, box)
    viewer = make_napari_viewer()
    got = _layers(viewer.open(str(path), plugin=None))
    psi = got["Points"].features["psi6_abs"].to_numpy(float)
    np.testing.assert_allclose(psi[:n], 1.0, atol=1e-9)
    spacing = (box[0] / mx, box[1] / my)
    assert abs(spacing[0] / spacing[1] - 1) < 0.05             # nearly square cells
    np.testing.assert_allclose(psi[n:], 0.0, atol=1e-9)
    # no size column: one marker size for all
    assert np.ptp(got["Points"].size) == 0 and got["Points"].size[0] > 0


def test_3d_upsample_output_has_points_coloured_by_q6_without_box(make_napari_viewer, tmp_path):
    """A 3D upsample output: one Points layer, no box rectangle, no psi6; coloured by each
    particle's q6 in its own sample: 0.5745 on a periodic fcc crystal (sample 1), far lower
    in a random gas (sample 0)."""
    rng = np.random.default_rng(1)
    a = 25.0
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cells = np.array([[i, j, k] for i in range(4) for j in range(4) for k in range(4)])
    lattice = ((cells[:, None, :] + base[None]) * a).reshape(-1, 3)
    n = len(lattice)
    p = np.concatenate([rng.uniform(0, 100, (n, 3)), lattice])
    df = pd.DataFrame({"frame": np.repeat([0, 1], n), "particle": np.tile(np.arange(n), 2), "x": p[:, 0],
                       "y": p[:, 1], "z": p[:, 2], "seam_distance": np.minimum(p[:, 0] % 50, 50 - p[:, 0] % 50),
                       "tile": 0})
    path = tmp_path / "cube.parquet"
    _write_upsample(path, df, [100.0, 100.0, 100.0])
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=None)
    assert [type(lay).__name__ for lay in layers] == ["Points"]
    pts = layers[0]
    assert "psi6_abs" not in pts.features
    np.testing.assert_allclose(pts.data[:, 1:], df[["z", "y", "x"]].to_numpy())
    q6 = pts.features["q6"].to_numpy()
    np.testing.assert_allclose(q6[n:], 0.57452, atol=5e-6)
    assert q6[:n].mean() < 0.35
