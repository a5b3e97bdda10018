"""Statistics against known answers (free Brownian walkers, ideal gas), and the report."""

import json

import numpy as np
import pandas as pd
import pytest

from colloidcg import evaluate as ev
from colloidcg.cli import main
from colloidcg.outputs import provenance, write_table

D, FPS, UM = 0.3, 10.0, 0.5     # um^2/s, frames/s, um/px


def brownian(n=400, T=60, seed=0, L=400.0):
    rng = np.random.default_rng(seed)
    step = np.sqrt(2 * D / FPS) / UM                       # px per frame per axis
    pos = rng.uniform(0, L, (1, n, 2)) + np.cumsum(rng.normal(0, step, (T, n, 2)), 0)
    return pd.DataFrame({"frame": np.repeat(np.arange(T), n), "particle": np.tile(np.arange(n), T),
                         "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})


@pytest.fixture(scope="module")
def data():
    return brownian()


def test_msd_is_4Dt(data):
    m = ev.msd(data, UM, FPS, max_lag=10)
    assert np.allclose(m["msd"], 4 * D * m["t"], rtol=0.05)


@pytest.mark.parametrize("case", ["complete", "gaps", "3d"])
def test_msd_is_trackpy_emsd(case):
    """msd is trackpy.motion.emsd's estimator (each particle's all-origins MSD, weighted
    by its independent measurements) on complete tracks, on tracks of unequal lengths
    with gaps (including every other frame missing, so odd lags of that particle have no
    pairs) and in 3D."""
    import trackpy

    rng = np.random.default_rng(3)
    T, n = 40, 30
    pos = np.cumsum(rng.normal(size=(T, n, 3)), 0)
    df = pd.DataFrame({"frame": np.repeat(np.arange(T), n) + 7, "particle": np.tile(np.arange(n), T) * 3,
                       "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel(), "z": pos[..., 2].ravel()})
    dims = ["x", "y", "z"] if case == "3d" else ["x", "y"]
    df = df[["frame", "particle"] + dims]
    if case == "gaps":
        p, f = df["particle"] // 3, df["frame"] - 7
        df = df[~((p % 4 == 0) & f.between(10, 14)) & ~((p % 5 == 1) & (f > 25 + p % 7))
                & ~((p % 3 == 2) & (f < 5 + p)) & ~((p % 7 == 3) & (f % 2 == 1))]
    m = ev.msd(df, UM, FPS, max_lag=25)
    e = trackpy.motion.emsd(df, mpp=UM, fps=FPS, max_lagtime=25, pos_columns=dims)
    assert m["lag"].tolist() == list(range(1, 26))
    np.testing.assert_allclose(m["t"], np.asarray(e.index, float), rtol=1e-12)
    np.testing.assert_allclose(m["msd"], np.asarray(e, float), rtol=1e-10)


def test_vacf_of_finite_difference_velocities(data):
    c = ev.vacf(data, UM, FPS, max_lag=5)
    assert c["vacf"].iloc[0] == pytest.approx(4 * D * FPS, rel=0.05)
    assert np.all(np.abs(c["vacf_norm"].iloc[1:]) < 0.03)


def test_rdf_ideal_gas_is_one():
    rng = np.random.default_rng(5)
    n, T = 1500, 8
    pos = rng.uniform(0, 400, (T, n, 2))
    gas = pd.DataFrame({"frame": np.repeat(np.arange(T), n), "particle": np.tile(np.arange(n), T),
                        "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})
    g = ev.rdf(gas, UM, r_max=20.0, bins=10)
    assert np.allclose(g["g"], 1.0, atol=0.08)
    gp = ev.rdf(gas, UM, r_max=20.0, bins=10, box_px=[400.0, 400.0])   # freud, periodic
    assert np.allclose(gp["g"], 1.0, atol=0.08)


def test_non_gaussian_and_van_hove_of_brownian(data):
    a2 = ev.non_gaussian(data, UM, FPS, max_lag=5)
    assert np.all(np.abs(a2["alpha2"]) < 0.05)
    vh = ev.van_hove(data, UM, lags=(4,))
    sigma2 = 2 * D * 4 / FPS
    gauss = np.exp(-vh["dx"] ** 2 / (2 * sigma2)) / np.sqrt(2 * np.pi * sigma2)
    assert ev.rel_rms(vh["p"].to_numpy(), gauss.to_numpy()) < 0.05


def test_rearrangement_rate_and_rel_rms():
    df = brownian(n=10, T=5)
    df["rearranging"] = (df["particle"] == 0)
    assert ev.rearrangement_rate(df, FPS) == pytest.approx(0.1 * FPS)
    assert ev.rel_rms(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert ev.rel_rms(np.array([1.1, 2.2]), np.array([1.0, 2.0]), pointwise=True) == pytest.approx(0.1)


def test_compare_same_process_small_errors(tmp_path, data):
    sim = brownian(seed=1)
    rec = ev.write_report(data, sim, tmp_path, UM, FPS)
    assert rec["msd_rel_rms"] < 0.05 and rec["rdf_rel_rms"] < 0.25
    assert (tmp_path / "metrics.json").exists()
    for name in ("msd.png", "vacf.png", "rdf.png", "van_hove.png", "non_gaussian.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_cli_evaluate(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    side = provenance("test", {}, {}, meta={"fps": FPS, "um_per_px": UM})
    write_table(a, brownian(n=100, T=20), side)
    write_table(b, brownian(n=100, T=20, seed=3), side)
    assert main(["evaluate", str(a), str(b), "-o", str(tmp_path / "rep")]) == 0
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["fps"] == FPS and m["msd_rel_rms"] < 0.2
    assert main(["evaluate", str(a), str(b), "-o", str(tmp_path / "rep")]) == 2   # refuses to overwrite


def test_compare_short_tables():
    """Fewer than 8 frames: the van Hove lags collapse to one; compare still works."""
    short = brownian(n=100, T=6, seed=1)
    metrics, sd, _ = ev.compare(short, short)
    assert sorted(sd["van_hove"]["lag"].unique()) == [1]
    assert metrics["van_hove_rel_rms"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["msd_rel_rms"] == pytest.approx(0.0, abs=1e-12)
