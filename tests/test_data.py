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


def test_halo_follows_each_frames_field_of_view():
    """Drift-subtracted tracks of a camera whose view moves 3 px per frame along x: the halo
    is measured from each frame's own view, so no scored particle has neighbours out of view
    within the halo; measured from the bounding box of all frames, particles at the view's
    edge were scored."""
    from colloidcg.data import frame_fields_of_view, near_edge
    from colloidcg.train.fitting import with_edge_halo
    rng = np.random.default_rng(1)
    lattice = rng.uniform(-40.0, 200.0, (2800, 2))             # about 0.05 particles per px^2
    rows, view = [], 100.0
    for t in range(20):
        p = lattice + rng.normal(0, 0.2, lattice.shape)
        seen = np.nonzero((p[:, 0] >= 3.0 * t) & (p[:, 0] < 3.0 * t + view) & (p[:, 1] >= 0) & (p[:, 1] < view))[0]
        rows.append(pd.DataFrame({"frame": t, "particle": seen, "x": p[seen, 0], "y": p[seen, 1],
                                  "x_image": p[seen, 0] - 3.0 * t, "y_image": p[seen, 1]}))
    df = pd.concat(rows)
    edge = 10.0
    tr = from_tracks(df, edge=edge)
    assert tr.frame_fov.shape == (20, 2, 2)
    assert np.allclose(tr.frame_fov[:, 0, 0].numpy(), 3.0 * np.arange(20), atol=0.5)
    assert np.allclose(np.diff(tr.frame_fov[:, 0].numpy(), axis=1), view, atol=1.0)
    assert tr.fov[0][1] - tr.fov[0][0] > view + 50            # the union is wider than any view
    x = tr.pos[..., 0].numpy()
    left = x - 3.0 * np.arange(20)[:, None]                   # distance to the view's left edge
    scored = tr.mask.numpy()
    assert scored.sum() > 500
    assert left[scored].min() >= edge - 1.5 and (view - left[scored]).min() >= edge - 1.5
    union = tr.present.numpy() & ~near_edge(tr.pos, tr.fov, edge).numpy()
    assert left[union].min() < 2.0                            # what the union's halo let through
    # training's halo (with_edge_halo) and one frame's view (simulate) follow the frames too
    halo = with_edge_halo(tr, 12.0, 10.0).mask.numpy()
    assert left[halo].min() >= 12.0 - 1.5
    one = near_edge(tr.pos[7], tr.frame_fov[7], edge).numpy()
    assert np.array_equal(one, near_edge(tr.pos, tr.frame_fov, edge).numpy()[7])
    # without image positions (drift subtracted elsewhere, as trackpy's subtract_drift does):
    # the drift is read off the frames' centres, a steady one exactly, ends included
    frames, fov = frame_fields_of_view(df.drop(columns=["x_image"]), ["x", "y"])
    assert np.array_equal(frames, np.arange(20))
    assert np.allclose(fov[:, 0, 0], 3.0 * np.arange(20), atol=1.0)
    assert np.allclose(fov[:, 0, 1] - fov[:, 0, 0], view, atol=1.5)
    # a static camera: every frame's view is the extent of all frames, as before
    static = df.assign(x=df["x_image"]).drop(columns=["x_image"])
    _, fov = frame_fields_of_view(static, ["x", "y"])
    assert np.ptp(fov[:, 0, 0]) < 1.0 and abs(fov[0, 0, 0] - static["x"].min()) < 1.0
    assert abs(fov[0, 0, 1] - static["x"].max()) < 1.0
    # upsampling's windows: the region 90 % of the frames reach, inside the full extent
    _, inner = frame_fields_of_view(df, ["x", "y"], share=0.9)
    assert np.all(inner[:, :, 0] >= tr.frame_fov.numpy()[:, :, 0] - 1e-9)
    assert np.all(inner[:, :, 1] <= tr.frame_fov.numpy()[:, :, 1] + 1e-9)
    assert np.all(np.diff(inner[:, 0], axis=1) < np.diff(tr.frame_fov.numpy()[:, 0], axis=1))
    with pytest.raises(ParameterError, match="share"):
        frame_fields_of_view(df, ["x", "y"], share=1.0)
