"""Trajectory from tracks: shapes, units, finite differences, masks, clear errors."""

import numpy as np
import pandas as pd
import pytest
import torch

from colloidcg.data import from_tracks, to_tracks
from colloidcg.errors import ColloidcgError, ParameterError


def tracks(T=5, N=4, seed=0):
    rng = np.random.default_rng(seed)
    pos = np.cumsum(rng.normal(0, 1, (T, N, 2)), 0) + 50
    return pd.DataFrame({"frame": np.repeat(np.arange(T), N), "particle": np.tile(np.arange(N) + 10, T),
                         "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()}), pos


def test_units_velocities_and_round_trip():
    df, pos = tracks()
    tr = from_tracks(df, {"meta": {"fps": 20.0, "um_per_px": 0.5}})
    assert tr.pos.shape == (5, 4, 2) and tr.dt == pytest.approx(0.05)
    assert torch.allclose(tr.pos, torch.as_tensor(pos * 0.5))
    want = (pos[1:] - pos[:-1]) * 0.5 * 20.0
    assert torch.allclose(tr.vel[1:], torch.as_tensor(want))
    assert not bool(tr.mask[0].any()) and bool(tr.mask[1:].all())
    back = to_tracks(tr.pos, tr.um_per_px, tr.fps, particles=tr.particles)
    assert np.allclose(back[["x", "y"]].to_numpy(), df[["x", "y"]].to_numpy())
    assert (back["particle"].to_numpy() == df["particle"].to_numpy()).all()


def test_missing_particles_and_edge_mask():
    df, _ = tracks(T=6, N=5)
    df = df[~((df["frame"] == 3) & (df["particle"] == 11))]
    tr = from_tracks(df, edge=0.0)
    k = list(tr.particles).index(11)
    assert not bool(tr.present[3, k]) and not bool(tr.mask[3, k]) and not bool(tr.mask[4, k])
    assert bool(tr.mask[5, k])
    tr2 = from_tracks(df, edge=1e6)
    assert not bool(tr2.mask.any())


def test_periodic_box_unwraps_velocity():
    df = pd.DataFrame({"frame": [0, 1, 2], "particle": [0, 0, 0], "x": [9.8, 0.1, 0.4], "y": [1.0, 1.0, 1.0]})
    tr = from_tracks(df, box_px=[10.0, 10.0])
    assert torch.allclose(tr.vel[1:, 0, 0], torch.tensor([0.3, 0.3], dtype=torch.float64))


def test_labels_are_aligned():
    df, _ = tracks()
    df["rearranging"] = (df["particle"] == 12) & (df["frame"] == 2)
    tr = from_tracks(df)
    k = list(tr.particles).index(12)
    assert tr.rearranging[2, k] == 1 and tr.rearranging.sum() == 1


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.assign(x=np.where(d.index == 3, np.nan, d["x"])), "NaN"),
    (lambda d: d[d["frame"] < 2], "at least 3"),
    (lambda d: d.drop(columns="y"), "missing column"),
])
def test_bad_input_messages(mutate, match):
    df, _ = tracks()
    with pytest.raises(ColloidcgError, match=match):
        from_tracks(mutate(df))


def test_non_positive_dt():
    df, _ = tracks()
    with pytest.raises(ParameterError, match="dt"):
        from_tracks(df, fps=0.0)
    with pytest.raises(ParameterError, match="fps"):
        from_tracks(df, fps=-3.0)
