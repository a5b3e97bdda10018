"""simulate(): rollouts from a frame of a tracks table, with the video halo prescribed."""

import numpy as np
import pandas as pd
import pytest

from colloidcg.errors import ColloidcgError, ParameterError
from colloidcg.simulate import simulate
from colloidcg.train import TrainConfig, train_tracks


def brownian_tracks(n=80, frames=12, side=100.0, seed=0):
    rng = np.random.default_rng(seed)
    r = rng.uniform(0, side, (n, 2))
    rows = []
    for f in range(frames):
        rows.append(pd.DataFrame({"frame": f, "particle": np.arange(n), "x": r[:, 0], "y": r[:, 1]}))
        r = r + rng.normal(0, 0.3, r.shape)
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def trained():
    tracks = brownian_tracks()
    cfg = TrainConfig(epochs=1, batch_frames=8, cutoff=12.0, progress=False, val_rollout_steps=3,
                      loc_noise="none")
    fit = train_tracks(tracks, {"fps": 10.0, "um_per_px": 0.5}, cfg)
    return tracks, fit.model, {"calibration": fit.report["calibration"]}


def test_halo_follows_the_data_and_is_left_out(trained):
    tracks, model, cfg = trained
    sim = simulate(model, cfg, tracks, steps=6, frame=2, seed=1, keep_halo=True)
    t = sim.tracks
    assert sim.parameters["n_boundary"] > 0 and sim.parameters["n_particles"] > 0
    halo = t[t["boundary"]].merge(tracks, on=["frame", "particle"], suffixes=("", "_data"))
    assert len(halo) == 7 * sim.parameters["n_boundary"]
    np.testing.assert_allclose(halo[["x", "y"]].to_numpy(), halo[["x_data", "y_data"]].to_numpy(), atol=1e-9)
    inner = t[~t["boundary"]].merge(tracks, on=["frame", "particle"], suffixes=("", "_data"))
    later = inner[inner["frame"] > 2]
    assert np.abs(later["x"] - later["x_data"]).max() > 1e-3      # the interior is simulated, not copied
    plain = simulate(model, cfg, tracks, steps=6, frame=2, seed=1)
    assert "boundary" not in plain.tracks.columns
    assert plain.tracks["particle"].nunique() == sim.parameters["n_particles"]
    again = simulate(model, cfg, tracks, steps=6, frame=2, seed=1)
    pd.testing.assert_frame_equal(plain.tracks, again.tracks)    # seeded: reproduced exactly


def test_halo_zero_simulates_everyone_and_bad_arguments(trained):
    tracks, model, cfg = trained
    sim = simulate(model, cfg, tracks, steps=3, halo=0)
    assert sim.parameters["n_boundary"] == 0 and sim.tracks["particle"].nunique() == 80
    with pytest.raises(ParameterError, match="frame: 40"):
        simulate(model, cfg, tracks, steps=3, frame=40)
    with pytest.raises(ParameterError, match="steps"):
        simulate(model, cfg, tracks, steps=0)
    with pytest.raises(ColloidcgError, match="halo"):
        simulate(model, cfg, tracks, steps=3, halo=1e3)


def test_fast_mode_reports_table_errors_and_stays_close(trained):
    tracks, model, cfg = trained
    exact = simulate(model, cfg, tracks, steps=3, frame=2, seed=4)
    fast = simulate(model, cfg, tracks, steps=3, frame=2, seed=4, fast=True)
    assert fast.parameters["tabulation_max_rel_error"] < 1e-4
    assert fast.parameters["eos_table_max_rel_error"] < 1e-2
    diff = (fast.tracks[["x", "y"]].to_numpy() - exact.tracks[["x", "y"]].to_numpy())
    assert abs(diff).max() < 1e-2                                          # px, same noise
    assert type(model.pairfn).__name__ == "PairFunctions"                   # the model itself is untouched
