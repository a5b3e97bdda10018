"""Cells: objects that fill the plane and are bounded by thin walls.

2D foams and bubble rafts, concentrated emulsions and confluent layers are imaged as
cells (bright in bright field, with dark walls; or dark cells between bright walls)
that touch their neighbours along a wall. They are not spots: a cell's interior is
flat, so a spot finder puts several maxima in each cell or takes the wall junctions
for particles (trackpy's own foam example segments the bubbles for that reason). Here
each frame is segmented instead:

1. uneven light is removed (the frame less a heavily smoothed copy) and the frame is
   lightly smoothed (sigma 1 px);
2. the threshold between wall and interior is Otsu's, over the frame;
3. the interior is split into cells by a watershed of its distance to the walls, one
   basin per maximum of that distance standing at least ``H_FRACTION`` of the typical
   cell radius above its saddle (so a narrow neck splits two cells and a bumpy wall
   does not);
4. cells touching the frame's edge (their centroid would be cut), and cells far from
   the typical area or not convex enough (the merged cells and scraps a broken wall
   or the frame's unlit parts give), are dropped.

A cell's position is the centroid of its interior weighted by how far each pixel is
from the wall level towards the cell's plateau (0 at the threshold, 1 on the plateau):
pixels on a wall's blurred edge count in proportion, so the position moves smoothly
when a wall moves by a fraction of a pixel.

:func:`cell_evidence` decides whether a frame shows cells at all (used by
:func:`colloidcg.tracking.track` where the blob scan cannot tell particles from the
holes between them). Cells and spots differ in the profile of their interior: a cell
is flat up to a thin wall, so most of its pixels lie near its plateau, while a spot
(Gaussian, Airy or a bright-field ring's centre) falls off towards its edge.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import ndimage

from .locate import FEATURE_COLUMNS

#: Walls are found by a grey closing with a disc of this many cell diameters in radius
#: (:func:`_prepared`): wider than a wall, narrower than a cell.
WALL_SCALE = 0.3
#: Cells are grown this far (px) into their walls for the centroid (:func:`_measure`).
EDGE_PX = 3
#: A pixel is wall where it lies this many noise standard deviations below that mean.
WALL_NOISE = 3.0
#: A basin of the distance map is its own cell if its maximum stands this fraction of
#: the typical cell radius above the saddle to its neighbour.
H_FRACTION = 0.25
#: A region enclosed by walls is split only when its area exceeds this many times the
#: median region's (of those of at least MIN_AREA_PX px) ...
SPLIT_AREA = 1.6
MIN_AREA_PX = 12
#: ... and it is not convex (its area over its convex hull's is below this): a cell
#: larger than most but convex is one cell.
SPLIT_SOLIDITY = 0.9
#: Cells kept: area within these factors of the median cell's ...
AREA_RANGE = (0.2, 5.0)
#: ... and at least this convex (area over the area of the convex hull).
MIN_SOLIDITY = 0.8
#: A pixel counts as on its cell's plateau when its raw grey level lies above this
#: fraction of the way from its wall's level to the cell's 90th percentile
#: (:func:`cell_evidence`).
PLATEAU_LEVEL = 0.6
#: A frame shows cells when at least MIN_CELLS cells are kept, the median kept cell has
#: at least MIN_NEIGHBOURS others within NEIGHBOUR_RANGE interior diameters (cells fill
#: the plane: 5-6 in a foam), and in the median cell at least MIN_FLAT of the pixels are
#: on the plateau. Measured (both polarities of the 6 issue scenes, 24 conditions of
#: the tracking benchmark, the shared data's real files): cells of 5 synthetic foams
#: (interior 9-32 px, walls 1.2-4 px) and the real foam: flat 0.93-1.0, 5-8 neighbours;
#: Gaussian, Airy and ring spots, JPEG blocks and real colloids segmented as if cells:
#: flat 0.26-0.72, but the flat background between dilute spots, taken as dark cells,
#: up to 0.93, with 14-63 such "cells" and at most 1 neighbour each. No non-foam frame
#: met the three together. Where walls are fainter than about 3 times the pixel noise
#: (a foam with 30 grey levels of wall contrast and noise of 10) the cells' flatness
#: falls to 0.72 and they are not recognised (give ``objects="cells"``).
MIN_CELLS = 20
MIN_NEIGHBOURS = 4
#: ... and the median kept cell's eccentricity (of its second moments, 0 for a disc) is at
#: least MIN_ECC: a foam's cells are irregular polygons (0.18-0.34 in the foams of
#: ``benchmarks/tracking_cells.py``, 0.30 in the shared bubble raft), whereas touching
#: flat discs (trackpy.artificial flat tops and sharp discs near contact, 12-20 px:
#: 0.01-0.03) are particles, which the spot path locates (12 px discs, four seeds of
#: ``benchmarks/tracking_artificial.py --touching``: recall 0.81-0.87 as cells, 1.000 at
#: 0.104-0.146 px as spots). A regular honeycomb foam would fall under it too (give
#: ``objects="cells"``).
MIN_ECC = 0.1
#: Each located cell needs at least this many other kept cells within NEIGHBOUR_RANGE
#: diameters, and to be linked so to at least MIN_GROUP cells (:func:`locate_cells`; on
#: the real raft the smudges on the empty bath had 0-2 and formed groups of up to 7).
MIN_CELL_NEIGHBOURS = 2
MIN_GROUP = 10
NEIGHBOUR_RANGE = 1.8
MIN_FLAT = 0.8


def _prepared(frame: np.ndarray, invert: bool, scale: float) -> np.ndarray:
    """The frame as float32, cells bright, lightly smoothed (sigma 1 px), less its grey
    closing by a disc of radius ``scale`` px: the closing fills every dark line
    narrower than the disc with the level of the interiors on either side, so walls
    come out negative by their depth and interiors near 0, however the light varies
    and whatever lies next to them (a black top-hat, Soille, Morphological Image
    Analysis, 2003)."""
    import cv2

    img = np.asarray(frame, np.float32)
    if invert:
        img = -img
    img = cv2.GaussianBlur(img, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
    r = max(2, int(round(scale)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return img - cv2.morphologyEx(img, cv2.MORPH_CLOSE, disc, borderType=cv2.BORDER_REFLECT)


def _otsu(img: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(img[::2, ::2] if img.size > 250_000 else img))


def segment(frame: np.ndarray, invert: bool = False, diameter: float | None = None
            ) -> tuple[np.ndarray, np.ndarray, float]:
    """Label the cells of a 2D frame.

    Parameters
    ----------
    frame : ndarray (Y, X)
    invert : bool
        Cells dark between bright walls.
    diameter : float, optional
        Typical cell diameter (px); it sets the disc of the grey closing
        (:data:`WALL_SCALE` diameters). None: 1/16 of the frame's smaller side.

    Returns
    -------
    labels : ndarray (Y, X) int32
        0 on walls, k >= 1 on cell k (all basins, before any cell is dropped).
    img : ndarray (Y, X) float32
        The prepared frame (cells bright).
    threshold : float
        The wall / interior threshold in ``img``'s units.
    """
    import cv2
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    from .params import noise_level

    scale = WALL_SCALE * (diameter if diameter else min(np.shape(frame)) / 16)
    img = _prepared(frame, invert, scale)
    # a wall lies below the interiors' level (the median: most pixels are interior; the
    # closing lifts it above 0 by the noise's local maxima) by more than WALL_NOISE times
    # the pixel noise after the 1 px smoothing (white noise: 0.28 of the raw's)
    t = float(np.median(img)) - WALL_NOISE * 0.282 * noise_level(np.asarray(frame, np.float32))
    inside = (img > t).astype(np.uint8)
    # each region enclosed by walls is a cell; only a region much larger than the
    # typical one (a wall too faint to close) is split, by a watershed of its distance
    # to the walls with one basin per maximum standing H_FRACTION of the typical cell
    # radius above its saddle
    regions, n = ndimage.label(inside)
    area = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    typical = float(np.median(area[area >= MIN_AREA_PX])) if (area >= MIN_AREA_PX).any() else 0.0
    large = np.flatnonzero(area > SPLIT_AREA * typical) + 1 if typical else np.zeros(0, int)
    if len(large):     # of those, the ones with a neck: not convex enough
        from skimage.measure import regionprops

        props = regionprops(np.where(np.isin(regions, large), regions, 0))
        large = np.array([r.label for r in props if r.solidity < SPLIT_SOLIDITY], int)
    if not len(large):
        return regions.astype(np.int32), img, t
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    dist = cv2.GaussianBlur(dist, (0, 0), 1.0)
    r_typ = math.sqrt(typical / math.pi)
    q = np.rint(dist * 8).astype(np.int32)      # h-maxima on integer steps (exact, fast)
    split = np.isin(regions, large)
    seeds, _ = ndimage.label(h_maxima(q, max(1, int(round(H_FRACTION * r_typ * 8)))) & split)
    # whole regions keep their own label; a split one's basins grow from its seeds
    markers = np.where(split, np.where(seeds > 0, seeds + n, 0), regions)
    labels = watershed(-dist, markers, mask=inside.astype(bool))
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)
    return labels, img, t


def _measure(labels: np.ndarray, img: np.ndarray, raw: np.ndarray, t: float,
             invert: bool = False) -> dict[str, np.ndarray]:
    """Per label (1..n): area, weighted centroid, moments, plateau, flat share, and
    whether it touches the frame's edge; arrays of length n. ``raw``: the frame as
    recorded (float64; ``invert``: its cells are dark).

    The centroid and moments are taken over the label grown by EDGE_PX into the walls
    (up to the wall's middle, not into another cell), each pixel weighted linearly by
    its raw grey level between the wall's (the 10th percentile of the grown region)
    and the plateau's (the median of the label): a wall's blurred edge then counts
    in proportion to how much of the pixel is interior, and a symmetric blur moves
    no centroid.
    """
    from skimage.measure import regionprops
    from skimage.segmentation import expand_labels

    n = int(labels.max())
    ny, nx = labels.shape
    out = {k: np.full(n, np.nan) for k in ("area", "x", "y", "plateau", "contrast", "flat",
                                           "solidity", "mass", "raw_mass", "size", "ecc")}
    out["edge"] = np.zeros(n, bool)
    # scraps far below the typical area are left unmeasured (NaN: never kept); the
    # measurement costs about 1 ms a label and a frame can hold more scraps than cells
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    sized = area[area >= MIN_AREA_PX]
    floor = max(MIN_AREA_PX, 0.5 * AREA_RANGE[0] * float(np.median(sized))) if len(sized) else np.inf
    grown = expand_labels(labels, EDGE_PX)
    lit = -raw if invert else raw      # oriented: cells bright
    big = {r.label: r for r in regionprops(grown, intensity_image=lit)}
    for r in regionprops(labels, intensity_image=img):
        k = r.label - 1
        y0, x0, y1, x1 = r.bbox
        out["edge"][k] = y0 == 0 or x0 == 0 or y1 == ny or x1 == nx
        if out["edge"][k] or area[k] < floor:
            continue
        vals = r.image_intensity[r.image]
        g = big[r.label]
        gv = g.image_intensity[g.image]
        rv = lit[r.slice][r.image]
        top = _quantile(rv, 0.5)
        low = _quantile(gv, 0.1)
        if not top > low:
            continue
        w = np.clip((gv - low) / (top - low), 0.0, None)
        yy, xx = np.nonzero(g.image)
        gy0, gx0 = g.bbox[:2]
        sw = float(w.sum())
        cy = float((w * yy).sum() / sw) + gy0
        cx = float((w * xx).sum() / sw) + gx0
        dy, dx = yy + gy0 - cy, xx + gx0 - cx
        myy, mxx, mxy = (w * dy * dy).sum() / sw, (w * dx * dx).sum() / sw, (w * dx * dy).sum() / sw
        out["area"][k] = area[k]
        out["x"][k], out["y"][k] = cx, cy
        out["plateau"][k] = _quantile(vals, 0.9)
        out["contrast"][k] = top - low
        # flatness from the raw grey levels between the wall's and the cell's 90th
        # percentile (the prepared frame is flat on spots too: the closing leaves them;
        # smoothed grey levels made noisy spots look flatter, 0.72 -> 0.91)
        hi = _quantile(rv, 0.9)
        out["flat"][k] = float(np.mean(rv > low + PLATEAU_LEVEL * (hi - low))) if hi > low else 0.0
        out["solidity"][k] = r.solidity
        out["mass"][k] = float(np.sum(vals - t))
        out["raw_mass"][k] = float(np.sum(raw[r.slice][r.image]))
        out["size"][k] = math.sqrt(mxx + myy)
        out["ecc"][k] = math.sqrt((mxx - myy) ** 2 + 4 * mxy ** 2) / max(mxx + myy, 1e-12)
    return out


def _quantile(a: np.ndarray, q: float) -> float:
    """The q-quantile of a (the lower of the two middle values; no interpolation)."""
    k = int(q * (len(a) - 1))
    return float(np.partition(a, k)[k])


def _kept(m: dict[str, np.ndarray]) -> np.ndarray:
    """Cells kept: not at the edge, convex enough, of typical area."""
    ok = ~m["edge"] & (m["area"] >= MIN_AREA_PX) & (m["solidity"] >= MIN_SOLIDITY)
    if not ok.any():
        return ok
    med = float(np.median(m["area"][ok]))
    return ok & (m["area"] >= AREA_RANGE[0] * med) & (m["area"] <= AREA_RANGE[1] * med)


def locate_cells(frame: np.ndarray, frame_no: int, invert: bool = False,
                 diameter: float | None = None, roi=None) -> pd.DataFrame:
    """The cells of one 2D frame, one row each, in :data:`FEATURE_COLUMNS`.

    ``x``, ``y`` (px): the weighted centroid of the interior (module docstring);
    ``mass``: the interior's summed height above the wall threshold; ``size`` (px): its
    radius of gyration; ``ecc``: the eccentricity of its second moments (0 for a round
    cell, as trackpy's); ``signal``: the interior's raw grey level above its walls'
    (the median of the cell less the 10th percentile of the cell grown into its walls);
    ``raw_mass``: the summed raw grey levels; ``ep``: NaN (not estimated for cells; the
    quality verdict measures the localisation noise from the tracks). ``roi`` (x0, y0,
    x1, y1): crop, positions in full-frame coordinates.
    """
    raw = np.asarray(frame)
    x0, y0 = 0, 0
    if roi is not None:
        x0, y0, x1, y1 = roi
        raw = raw[y0:y1, x0:x1]
    labels, img, t = segment(raw, invert, diameter)
    raw = raw.astype(np.float64)
    m = _measure(labels, img, raw, t, invert)
    k = _kept(m)
    if k.any() and diameter:
        # the frame's own no-sample mask (black borders, a tank's walls; the spot path's
        # rule, :func:`colloidcg.tracking.params.sample_mask`, with the cells' median wall
        # contrast as the peak): per frame, because a raft on a moving bath carries its
        # cells over areas that held none in the first frame
        from .params import sample_mask

        mask = sample_mask(-raw if invert else raw, int(diameter),
                           float(np.median(m["contrast"][k])))
        if mask is not None:
            h, w = mask.shape
            idx = np.flatnonzero(k)
            xi = np.clip(np.rint(m["x"][idx]).astype(int), 0, w - 1)
            yi = np.clip(np.rint(m["y"][idx]).astype(int), 0, h - 1)
            k[idx[~mask[yi, xi]]] = False
    if k.sum() > 2 and diameter:
        # a cell lies in a foam: one with fewer than MIN_CELL_NEIGHBOURS kept cells
        # within NEIGHBOUR_RANGE diameters, or in a group of fewer than MIN_GROUP cells
        # so linked, is a scrap (smudges on an empty bath, texture on a tank's wall)
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        from ..neighbours import Tree

        idx = np.flatnonzero(k)
        xy = np.c_[m["x"][idx], m["y"][idx]]
        own = np.maximum(2 * np.sqrt(m["area"][idx] / math.pi), float(diameter))   # a large
        i, j, r = Tree(xy).distances_to(Tree(xy), NEIGHBOUR_RANGE * float(own.max()))
        near = r <= NEIGHBOUR_RANGE * 0.5 * (own[i] + own[j])   # cell's neighbours lie farther
        i, j = i[near], j[near]
        few = np.bincount(i, minlength=len(idx)) - 1 < MIN_CELL_NEIGHBOURS
        keep = ~few[i] & ~few[j]
        graph = coo_matrix((np.ones(keep.sum()), (i[keep], j[keep])), shape=(len(idx),) * 2)
        _, group = connected_components(graph, directed=False)
        size = np.bincount(group)[group]
        k[idx[few | (size < MIN_GROUP)]] = False
    n = int(k.sum())
    return pd.DataFrame({"frame": np.full(n, frame_no, np.int64), "y": m["y"][k] + y0,
                         "x": m["x"][k] + x0, "mass": m["mass"][k], "size": m["size"][k],
                         "ecc": m["ecc"][k], "signal": m["contrast"][k],
                         "raw_mass": m["raw_mass"][k], "ep": np.full(n, np.nan)},
                        columns=FEATURE_COLUMNS)


def cell_evidence(frame: np.ndarray, invert: bool = False) -> dict[str, float]:
    """How much a 2D frame looks like cells of the given polarity.

    The frame is segmented twice: first as if cells were 1/16 of the frame across, then at
    the cell diameter that found (when it found cells).

    Returns a dict: ``n`` (cells kept), ``neighbours`` (median number of other kept
    cells within :data:`NEIGHBOUR_RANGE` diameters of a kept cell's centroid), ``flat``
    (median share of a kept cell's pixels on its plateau), ``diameter`` (px: diameter
    of a disc of the median kept cell's interior area), ``eccentricity`` (the median
    kept cell's) and ``cells`` (1.0 when all of :data:`MIN_CELLS`,
    :data:`MIN_NEIGHBOURS`, :data:`MIN_FLAT` and :data:`MIN_ECC` are met, else 0.0).
    """
    raw = np.asarray(frame, np.float64)
    diameter = None
    for _ in range(2):
        labels, img, t = segment(raw, invert, diameter)
        m = _measure(labels, img, raw, t, invert)
        k = _kept(m)
        n = int(k.sum())
        if n < MIN_CELLS:
            break
        diameter = float(2 * math.sqrt(np.median(m["area"][k]) / math.pi))
    dia = float(2 * math.sqrt(np.median(m["area"][k]) / math.pi)) if n else float("nan")
    # neighbours: kept cells whose centroid lies within NEIGHBOUR_RANGE diameters
    neighbours = 0.0
    if n >= 2:
        from ..neighbours import Tree

        xy = np.c_[m["x"][k], m["y"][k]]
        i, _, _ = Tree(xy).distances_to(Tree(xy), NEIGHBOUR_RANGE * dia)
        neighbours = float(np.median(np.bincount(i, minlength=n) - 1))
    flat = float(np.median(m["flat"][k])) if n else 0.0
    ecc = float(np.median(m["ecc"][k])) if n else 0.0
    ok = n >= MIN_CELLS and neighbours >= MIN_NEIGHBOURS and flat >= MIN_FLAT and ecc >= MIN_ECC
    return {"n": float(n), "neighbours": neighbours, "flat": flat, "diameter": dia,
            "eccentricity": ecc, "cells": float(ok)}
