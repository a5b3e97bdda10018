"""Linking and the non-locating part of track(): reproducible particle ids, the
garbage-collector guard, and the quality verdict's shortcuts equal to the plain path."""

from __future__ import annotations

import gc
import sys
import weakref

import cv2
import numpy as np
import pandas as pd
import pytest

from colloidcg.tracking.link import first_appearance_ids, gc_frozen
from colloidcg.tracking.quality import _disc_mask, assess, calibrate_ep, step_covariances

link_module = sys.modules["colloidcg.tracking.link"]   # the package re-exports link()


def _crowded_births(n_groups: int = 12, seed: int = 0):
    """Features of 3 frames with known identities (column ``truth``): in each group two
    particles 3 px apart, and in frame 1 two new particles appear between them, within
    the search range of both, so that each group is one subnet of 2 sources and 4
    destinations whose 2 unclaimed destinations start tracks (the case where trackpy
    numbers new tracks in the order of a Python set)."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        x0, y0 = 40.0 * (g % 4) + 20, 40.0 * (g // 4) + 20
        a = np.array([x0, y0])
        b = np.array([x0 + 3.0, y0])
        born = [np.array([x0 + 1.5, y0 + 1.6]), np.array([x0 + 1.6, y0 - 1.5])]
        for t in range(3):
            pts = [(2 * g, a), (2 * g + 1, b)]
            if t >= 1:
                pts += [(100 + 2 * g, born[0]), (101 + 2 * g, born[1])]
            for ident, p in pts:
                q = p + rng.normal(0, 0.05, 2)
                rows.append((t, q[0], q[1], ident))
    f = pd.DataFrame(rows, columns=["frame", "x", "y", "truth"])
    # rows in frame order, shuffled within each frame
    f["key"] = rng.random(len(f))
    return f.sort_values(["frame", "key"]).drop(columns="key").reset_index(drop=True)


def test_link_recovers_identities_and_numbers_tracks_by_first_appearance():
    f = _crowded_births()
    out = link_module.link(f, search_range=2.5, memory=0)
    assert len(out) == len(f)
    # the partition is the true one: each true particle is one track and vice versa
    pairs = out[["truth", "particle"]].drop_duplicates()
    assert len(pairs) == out["truth"].nunique() == out["particle"].nunique()
    # ids are 0, 1, 2, ... in order of first appearance (rows are in frame order)
    ids = out["particle"].to_numpy()
    _, first = np.unique(ids, return_index=True)
    assert np.array_equal(ids[np.sort(first)], np.arange(len(first)))
    assert np.all(np.diff(out["frame"].to_numpy()) >= 0)


def test_link_ids_do_not_depend_on_memory_layout():
    f = _crowded_births(seed=1)
    ref = link_module.link(f, search_range=2.5, memory=3)["particle"].to_numpy()
    keep = []
    for k in range(1, 4):      # other objects in the heap: trackpy's sets iterate otherwise
        keep.append([object() for _ in range(997 * k)])
        again = link_module.link(f, search_range=2.5, memory=3)["particle"].to_numpy()
        assert np.array_equal(again, ref)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labellings of the same rows group them identically."""
    pairs = np.unique(np.c_[a, b], axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_frame_by_frame_linking_is_trackpys_and_falls_back_on_oversize_groups():
    """FrameLinker, fed one frame at a time (as track() does while later frames are being
    located), links exactly as trackpy.link does on the whole table; a group of candidate
    links too large for trackpy is relinked with the adaptive search range, as trackpy's
    own adaptive linking does."""
    import trackpy as tp

    rng = np.random.default_rng(3)
    # a Brownian lattice, 10 frames, with gaps (memory) and noise detections
    g = np.stack(np.meshgrid(np.arange(12) * 6.0, np.arange(12) * 6.0), -1).reshape(-1, 2)
    rows = []
    pos = g.copy()
    for t in range(10):
        pos = pos + rng.normal(0, 0.6, pos.shape)
        seen = rng.random(len(pos)) > 0.05
        junk = rng.uniform(0, 70, (3, 2))
        for x, y in np.r_[pos[seen], junk]:
            rows.append((t, x, y))
    f = pd.DataFrame(rows, columns=["frame", "x", "y"])
    linker = link_module.FrameLinker(2.5, memory=2)
    for t in range(10):
        linker.add(f[f.frame == t])
    out = linker.tracks()
    ref = tp.link(f[["frame", "y", "x"]], 2.5, memory=2)
    assert np.array_equal(out[["frame", "x", "y"]].to_numpy(), f[["frame", "x", "y"]].to_numpy())
    assert _same_partition(out["particle"].to_numpy(), ref["particle"].reindex(f.index).to_numpy())
    pd.testing.assert_frame_equal(out, link_module.link(f, 2.5, 2))
    with pytest.raises(ValueError, match="increasing order"):
        linker.add(f[f.frame == 3])
    # an oversize group: a lattice (7 x 7, spacing 6 px) linked with a range of two spacings
    g7 = g.reshape(12, 12, 2)[:7, :7].reshape(-1, 2)
    dense = pd.DataFrame([(t, x, y) for t in range(2) for x, y in g7 + rng.normal(0, 0.6, g7.shape)],
                         columns=["frame", "x", "y"])
    with pytest.raises(tp.SubnetOversizeException):
        tp.link(dense[["frame", "y", "x"]], 12.0, memory=0)
    out = link_module.link(dense, 12.0, 0)
    ref = tp.link(dense[["frame", "y", "x"]], 12.0, memory=0, adaptive_stop=0.5,
                  adaptive_step=0.9, link_strategy="auto")
    assert _same_partition(out["particle"].to_numpy(), ref["particle"].reindex(dense.index).to_numpy())


def _random_features(seed: int, dim: int = 2):
    """Frames of drifting particles with missed detections and noise detections; the
    search range and step are drawn so that many groups hold several sources."""
    rng = np.random.default_rng(seed)
    n, frames, side = int(rng.integers(60, 250)), int(rng.integers(4, 9)), 100.0 if dim == 2 else 40.0
    step, search_range, memory = rng.uniform(0.5, 1.5), rng.uniform(2.0, 4.0), int(rng.integers(0, 4))
    pos = rng.uniform(0, side, (n, dim))
    rows = []
    for t in range(frames):
        pos = pos + rng.normal(0, step, pos.shape)
        seen = rng.random(n) > rng.uniform(0, 0.3)
        junk = rng.uniform(0, side, (int(rng.integers(0, 15)), dim))
        rows += [(t, *p) for p in np.r_[pos[seen], junk]]
    f = pd.DataFrame(rows, columns=["frame"] + ["x", "y", "z"][:dim])
    return f, search_range, memory


def test_linking_equals_trackpys_on_random_frames_with_groups_births_and_memory():
    """The tracks are trackpy.link's, row for row (the same partition into tracks), in 2D
    and 3D, with memory, births, noise detections and groups of several sources (solved
    as assignment problems here, by trackpy's recursive or numba linker there)."""
    import trackpy as tp

    solved = compared = 0
    orig = link_module.FrameLinker._solve_groups

    def counting(self, g, *args):
        nonlocal solved
        solved += len(np.unique(g))
        return orig(self, g, *args)

    link_module.FrameLinker._solve_groups = counting
    try:
        for seed in range(24):
            dim = 3 if seed % 4 == 3 else 2
            f, search_range, memory = _random_features(seed, dim)
            pos = ["z", "y", "x"] if dim == 3 else ["y", "x"]
            try:
                ref = tp.link(f[["frame"] + pos], search_range, memory=memory, pos_columns=pos)
            except tp.SubnetOversizeException:
                continue
            out = link_module.link(f, search_range, memory)
            assert np.array_equal(out[["frame"] + pos].to_numpy(), f[["frame"] + pos].to_numpy())
            assert _same_partition(out["particle"].to_numpy(),
                                   ref["particle"].reindex(f.index).to_numpy()), seed
            compared += 1
    finally:
        link_module.FrameLinker._solve_groups = orig
    assert compared >= 20 and solved > 100      # the assignment solver was exercised


def test_first_appearance_ids():
    assert first_appearance_ids(np.array([7, 7, 3, 9, 3, 0, 9])).tolist() == [0, 0, 1, 2, 1, 3, 2]
    assert first_appearance_ids(np.array([], np.int64)).tolist() == []


def test_gc_frozen_restores_the_collector_and_collects_new_cycles():
    if gc.get_freeze_count():
        pytest.skip("objects are frozen already in this process")

    class Node:
        pass

    with gc_frozen():
        assert gc.get_freeze_count() > 0
        with gc_frozen():                       # nested: nothing unfrozen early
            pass
        assert gc.get_freeze_count() > 0
        a, b = Node(), Node()
        a.other, b.other = b, a                 # a cycle made inside
        dead = weakref.ref(a)
        del a, b
        gc.collect()
        assert dead() is None                   # new objects are still collected
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    gc.freeze()                                 # a caller's own freeze survives
    try:
        n = gc.get_freeze_count()
        with gc_frozen():
            pass
        # not emptied (an unfreeze would leave 0); a few frozen objects may be freed
        # meanwhile by their reference counts (another thread's), so not exactly n
        assert gc.get_freeze_count() > n // 2, (gc.get_freeze_count(), n)
    finally:
        gc.unfreeze()


def test_disc_mask_is_opencvs_circles():
    rng = np.random.default_rng(3)
    for radius in (1, 2, 5, 9, 16):
        shape = (41, 57)
        xy = np.c_[rng.uniform(-20, 77, 40), rng.uniform(-20, 61, 40)]
        xy[:6] = np.round(xy[:6]) + 0.5         # exact halves round to even, as round()
        ref = np.zeros(shape, np.uint8)
        for x, y in xy:
            cv2.circle(ref, (int(round(x)), int(round(y))), radius, 1, -1)
        assert np.array_equal(_disc_mask(shape, xy, radius), ref.astype(bool))


def _random_walks(n=60, t=30, seed=4):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2)) + np.cumsum(rng.normal(0, 0.3, (t, n, 2)), axis=0)
    obs = xy + rng.normal(0, 0.05, xy.shape)
    fr, pid = np.meshgrid(np.arange(t), np.arange(n), indexing="ij")
    df = pd.DataFrame({"frame": fr.ravel(), "particle": pid.ravel(), "x": obs[..., 0].ravel(),
                       "y": obs[..., 1].ravel(), "signal": 50.0, "ep": 0.05})
    return df.sample(frac=1.0, random_state=0).reset_index(drop=True)   # any row order


def test_quality_with_precomputed_covariances_is_the_plain_verdict():
    tracks = _random_walks()
    c = step_covariances(tracks)
    kw = dict(diameter=8.0, search_range=2.0, n_frames=30, noise=5.0)
    assert assess(tracks, covariances=c, **kw) == assess(tracks, **kw)
    assert calibrate_ep(tracks, covariances=c) == calibrate_ep(tracks)
    # known truth: the per-axis mean squared step is 2 D + 2 sigma^2 = 0.09 + 0.005
    assert c[0] == pytest.approx(0.095, rel=0.1)


def test_track_timings_add_up():
    from colloidcg.synthetic import SynthConfig, make_video
    from colloidcg.tracking import track

    frames, _, _ = make_video(SynthConfig.preset("dense", n_frames=3, seed=1, width=160,
                                                 height=160), progress=False)
    r = track(frames, progress=False, processes=1)
    stages = ("parameters", "locating", "linking", "quality", "other")
    assert set(r.timings) == set(stages) | {"total"}
    assert sum(r.timings[k] for k in stages) == pytest.approx(r.timings["total"], abs=1e-9)
    assert all(r.timings[k] >= 0 for k in stages if k != "other")


def test_track_iter_freezes_nothing_while_suspended():
    """The collector's freeze covers only linking and the verdict, after the last yield:
    a track_iter generator suspended between frames leaves nothing frozen. (Held across
    the yields, it kept the whole heap, 275 000 objects, out of collection for as long
    as a caller, such as a GUI, held the generator unfinished; other tests met it as
    "objects are frozen already".)"""
    from colloidcg.synthetic import SynthConfig, make_video
    from colloidcg.tracking import track_iter

    if gc.get_freeze_count():
        pytest.skip("objects are frozen already in this process")
    frames, _, _ = make_video(SynthConfig.preset("dense", n_frames=4, seed=2, width=160,
                                                 height=160), progress=False)
    steps = track_iter(frames, processes=1)
    assert next(steps) == 1
    assert gc.get_freeze_count() == 0
    steps.close()
    assert gc.get_freeze_count() == 0
    done = track_iter(frames, processes=1)
    try:
        while True:
            next(done)
    except StopIteration as stop:
        assert len(stop.value.tracks)
    assert gc.get_freeze_count() == 0
