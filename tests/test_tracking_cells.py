"""Cells (foams, bubble rafts): segmented between walls, estimated where the blob scan
cannot tell particles from the holes between them; against synthetic foams with known
cell centroids and the shared data's real bubble raft."""

import json

import numpy as np
import pytest

from colloidcg.errors import ParameterError, TrackingError
from colloidcg.synthetic.foam import FoamConfig, make_foam_video
from colloidcg.tracking import TrackParams, track
from colloidcg.tracking.accuracy import score_tracks
from colloidcg.tracking.cells import cell_evidence, locate_cells


def _score(r, truth, frames, cell):
    return score_tracks(r.tracks, truth, frames.shape[1:], cell, 0.3 * cell)


@pytest.mark.parametrize("dark", [False, True])
def test_synthetic_foam_is_tracked_as_cells_of_either_contrast(dark):
    """Bright cells with dark walls, and the same inverted: found as cells, with the
    cells' interior polarity, every cell once, at its rendered interior's centroid,
    linked without a swap."""
    frames, truth = make_foam_video(FoamConfig(n_frames=5, seed=1))
    if dark:
        frames = 255 - frames
    r = track(frames, progress=False, processes=1)
    p = r.params
    assert (p.objects, p.sources["objects"]) == ("cells", "estimated")
    assert p.contrast == ("dark" if dark else "bright")
    s = _score(r, truth, frames, 24.0)
    assert s.recall >= 0.99 and s.precision >= 0.99, s
    assert s.rms_error < 0.2, s                  # measured 0.124 px (cells ~20 px across)
    assert s.link_accuracy >= 0.99, s
    assert r.quality.status == "ok", r.quality.reasons
    assert r.tracks["ep"].isna().all()           # not estimated for cells (documented)


def test_foam_cell_centroid_moves_with_a_subpixel_wall_shift():
    """The weighted centroid follows the walls smoothly: moving every generator by a
    fraction of a pixel moves the found cells by the truth's shift to within 0.05 px."""
    cfg = FoamConfig(n_frames=2, seed=3, shear_per_frame=0.0, step_px=0.0, read_noise=0.0,
                     gain=0.0, eight_bit=False)
    frames, truth = make_foam_video(cfg)     # two noise-free frames of the same foam
    a = locate_cells(frames[0], 0)
    b = locate_cells(frames[1], 1)
    assert np.allclose(np.sort(a["x"]), np.sort(b["x"]), atol=1e-9)   # deterministic
    # a whole-foam shift of 0.3 px: render the shifted generators by shifting the image
    from scipy import ndimage

    shifted = ndimage.shift(frames[0], (0.0, 0.3), order=3, mode="nearest")
    c = locate_cells(shifted, 0)
    from colloidcg.neighbours import nearest

    d, j = nearest(c[["x", "y"]].to_numpy(), query=a[["x", "y"]].to_numpy())
    ok = d < 2
    dx = c["x"].to_numpy()[j[ok]] - a["x"].to_numpy()[ok]
    assert ok.mean() > 0.95
    assert abs(np.median(dx) - 0.3) < 0.05, np.median(dx)


@pytest.mark.parametrize("kw, recall, rms", [
    (dict(cell_diameter=40, wall_px=3, shape=(384, 384)), 0.99, 0.35),   # measured 1.0, 0.26
    (dict(cell_diameter=12, wall_px=1.2), 0.98, 0.15),                   # measured 0.992, 0.091
])
def test_foam_cell_sizes(kw, recall, rms):
    """Large cells and small cells with thin walls: the limits the README gives."""
    frames, truth = make_foam_video(FoamConfig(n_frames=3, seed=1, **kw))
    r = track(frames, progress=False, processes=1)
    assert r.params.objects == "cells"
    s = _score(r, truth, frames, kw["cell_diameter"])
    assert s.recall >= recall and s.precision >= 0.99, s
    assert s.rms_error < rms, s


def test_spot_frames_are_not_taken_for_cells(shared_data):
    """No polarity of spot images meets the cell evidence: a dense synthetic packing,
    the dense bright-field scene with lit gaps, and the real mixed-contrast and
    bright-field frames."""
    from colloidcg.io import open_video
    from colloidcg.synthetic import SynthConfig, make_video, scenes

    cases = {"dense": make_video(SynthConfig.preset("dense", n_frames=1, seed=0),
                                 progress=False)[0][0],
             "dense bright field": scenes.scene_dense_brightfield(n_frames=1, seed=0).frames[0],
             "mixed contrast": np.asarray(open_video(shared_data / "mixed_contrast/colloids.mp4")[0]),
             "bright field": np.asarray(open_video(shared_data / "brightfield")[0])}
    for name, frame in cases.items():
        frame = np.asarray(frame, float)
        if frame.ndim == 3:
            frame = frame.mean(axis=-1)
        for dark in (False, True):
            e = cell_evidence(frame, invert=dark)
            assert not e["cells"], (name, dark, e)
    # and the whole estimate keeps spots
    r = track(cases["dense"][None].repeat(3, axis=0), progress=False, processes=1)
    assert r.params.objects == "spots"


def test_real_bubble_raft(shared_data):
    """The trackpy-examples foam (a bubble raft on an oscillating bath): its bubbles are
    found as cells, about one detection per bubble, and followed through all 9 frames."""
    r = track(shared_data / "foam", progress=False)
    p = r.params
    assert (p.objects, p.contrast) == ("cells", "bright")
    t = r.tracks
    per_frame = t.groupby("frame").size()
    assert per_frame.between(300, 480).all(), per_frame.tolist()   # ~470 bubbles, ~350 found
    from colloidcg.neighbours import nearest

    for _, f in t.groupby("frame"):
        d, _ = nearest(f[["x", "y"]].to_numpy())
        assert d.min() > 0.5 * p.diameter          # no bubble found twice
    lengths = t.groupby("particle").size()
    assert (lengths == 9).sum() >= 200, lengths.value_counts().to_dict()
    assert r.quality.status != "unreliable", r.quality.reasons


def test_objects_parameter_is_checked():
    with pytest.raises(ParameterError, match="objects must be one of spots, cells"):
        TrackParams(objects="bubbles").validate()
    with pytest.raises(ParameterError, match="objects: 'cells'"):
        TrackParams(objects="cells", contrast="both").validate()
    with pytest.raises(ParameterError, match="objects: 'cells'"):
        TrackParams(objects="cells").validate(ndim=3)
    blank = np.random.default_rng(0).normal(100, 2, (3, 96, 96))
    with pytest.raises(TrackingError, match="objects: 'cells' was given, but no cells"):
        track(blank, progress=False, processes=1, objects="cells")


def test_cli_track_objects_cells(tmp_path):
    """`colloidcg track --objects cells` on a foam written as a TIFF stack: the tracks
    and tracks.json record the cells and that they were given."""
    import tifffile

    from colloidcg.cli import main

    frames, truth = make_foam_video(FoamConfig(n_frames=4, seed=2))
    tifffile.imwrite(tmp_path / "foam.tif", frames, photometric="minisblack")  # pages, not RGBA
    assert main(["track", str(tmp_path / "foam.tif"), "--objects", "cells", "--quiet",
                 "-o", str(tmp_path / "out")]) == 0
    meta = json.loads((tmp_path / "out" / "tracks.json").read_text())
    params = meta["parameters"]
    assert params["objects"] == "cells" and params["sources"]["objects"] == "given"
    import pandas as pd

    t = pd.read_parquet(tmp_path / "out" / "tracks.parquet")
    s = score_tracks(t, truth, frames.shape[1:], 24.0, 7.0)
    assert s.recall >= 0.99 and s.rms_error < 0.2, s


def test_cells_in_a_roi_and_in_16_bit():
    """A region of interest gives full-frame positions of the cells inside it, and a
    16-bit copy of the foam (grey levels x 200) gives the same cells as the 8-bit one."""
    frames, truth = make_foam_video(FoamConfig(n_frames=3, seed=5))
    roi = (40, 60, 216, 236)
    r = track(frames, progress=False, processes=1, roi=roi)
    assert r.params.objects == "cells"
    t = r.tracks
    assert t["x"].between(roi[0], roi[2]).all() and t["y"].between(roi[1], roi[3]).all()
    inner = truth[truth.x.between(roi[0] + 24, roi[2] - 24) & truth.y.between(roi[1] + 24, roi[3] - 24)]
    s = score_tracks(t, inner, frames.shape[1:], 0.0, 7.0)
    assert s.recall >= 0.99 and s.rms_error < 0.2, s
    wide = track((frames.astype(np.uint16) * 200), progress=False, processes=1)
    narrow = track(frames, progress=False, processes=1)
    assert wide.params.objects == "cells" and len(wide.tracks) == len(narrow.tracks)
    # the same to float32 rounding of the segmentation's filters (measured: at most 9e-4 px)
    assert np.allclose(np.sort(wide.tracks["x"]), np.sort(narrow.tracks["x"]), atol=5e-3)
