"""Hierarchical upsampling: large-system snapshots built from small observed or simulated ones.

The method (after the hierarchical upsampling of Chen et al., "Scalable learning of
macroscopic stochastic dynamics", carried from lattices to off-lattice particles):

1. **Tiles.** A tile is one configuration of the input tracks table: a frame of a periodic
   box (the table's sidecar ``meta.box_px``, else the model's ``calibration.box_px``; both
   given and different: refused; positions that fold onto each other when wrapped into
   the box: refused) under a random cyclic shift, or, for an open field of view, a square (cube in 3D) window cut
   inside the field of view at a random place. Each tile gets a random symmetry of its box:
   reflections of any axis, and exchanges of axes whose sides are equal (the 8 symmetries
   of a square, 48 of a cube; a rectangular periodic box is only reflected, since a 90 degree
   rotation would swap its sides).
2. **Doubling.** ``m^d`` independent configurations (m = 2 while the remaining side factor
   is even, else the remaining odd factor) are placed side by side in a box m times larger
   per axis. Every placed configuration is drawn afresh (its own tiles, shifts and
   symmetries), so the large system is not a periodic repetition.
   With ``tiling="matched"``, each configuration after the first of a doubling takes
   the best of ``tiling_candidates`` symmetries and registry shifts instead of a random
   one, scored by the local bond order (|psi6| in 2D, q6 in 3D) along its seams with
   those already placed (:func:`match_parts`): an ordered tile then continues its
   neighbour's lattice. ``tiling="auto"`` (the default) matches where one crystal
   orientation spans the input (:func:`choose_tiling`) and places tiles at random
   otherwise. With
   ``tiling="oriented"`` (2D, periodic tiles) the candidates are windows cut from the
   configuration's periodic pattern turned to any angle (:func:`rotated_window`), at the
   orientation of the placed neighbours' lattice, so that tiles whose lattices point
   anywhere are turned to continue it (a square box's symmetries reach 4 orientations).
3. **Overlaps at the seams**: a pair across a new seam closer than the data's
   ``push_quantile`` (2 % in 2D; in 3D 0, the closest approach itself:
   :data:`PUSH_QUANTILE`) quantile of near-shell distances for that pair of sizes loses
   one of its particles to the largest gap of its own part at its own distance to the
   seams (:func:`reinsert_across_seams`; ``seam_overlaps="push"``: the pair is pushed
   apart symmetrically instead, which leaves a density wave along the seam). Any pair
   near the seams still closer than the data's closest approach is then pushed apart, up
   to 50 sweeps; pairs still closer than 0.9 x the closest approach after that lose one
   particle (the number dropped is reported; 0 in the tests).
4. **Seam relaxation with the learned model.** The particles within ``band`` of the new
   seams are rolled out for ``relax_steps`` (3) frames with :func:`colloidcg.core.integrate.rollout`
   in the large periodic box, reflected back into the band when they leave it
   (``band_edge="reflect"``), the particles in the next 2.1 x ``cutoff`` wide layer held
   fixed as prescribed boundary particles (the rest of the system does not enter; a band
   particle's terms depend on particles up to 2 x ``cutoff`` away, so one deterministic
   step of the band equals that of the whole system). All
   seam windows of a level go into one rollout: the windows along the seams overlap at
   the seam crossings and are relaxed together there. The overlap removal is repeated after
   the rollout for pairs the model brought closer than the closest approach. The model
   runs with its k_B scaled by a factor calibrated on the input
   (:func:`relaxation_temperature`): a trained model's stationary structure is not the
   data's (the test model runs hot: |psi6| 0.015-0.02 low), and the relaxed seams took it
   on; the relaxation samples, so its temperature is set to what keeps the input's first
   coordination shell.
5. Repeat 2-4 until the target area factor K = m_total^d.

Per-particle sizes travel with their particles, so a mixture keeps its composition
exactly (K copies' worth of each species, less dropped particles). Positions are in px
(the tracks' unit), the model is run in its own units (um, s) from the model's calibration.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import permutations, product

import numpy as np
import pandas as pd
import torch

from ..errors import ColloidcgError, ParameterError
from ..evaluate import rel_rms
from .lattice_field import BAND_SPACINGS, SWEEPS, heal
from .seams import (MIN_BULK, SEAM_FALSE_ALARM, SeamVisibleWarning, film_reference, neighbour_counts, seam_check,
                    tile_differences)

__all__ = ["Configuration", "Upsampled", "ClosestApproach", "upsample", "side_steps", "relaxation_summary",
           "closest_approach", "separate", "tile_configurations", "match_parts", "rotated_window",
           "relaxation_temperature"]

#: Most distinct sizes treated as discrete species (more: sizes are continuous).
MAX_SPECIES = 8


# ----------------------------------------------------------------------------- data types
@dataclass
class Configuration:
    """One periodic configuration, px.

    pos : (N, d) float64 positions in [0, box), px.
    vel : (N, d) float64 velocities, px/frame (zeros where the input had none).
    size : (N,) float64 per-particle size (the size column's unit), or None.
    box : (d,) float64 periodic side lengths, px.
    seam : (N,) float64 distance of each particle to the nearest seam it was placed
        beside, px, measured when that seam was made (inf: never beside a seam).
    tile : (N,) int64 index of the level-0 tile each particle came from (0..n_tiles-1),
        or None (all from one tile).
    n_tiles : number of level-0 tiles placed in the configuration.
    origin : (source frame index, (d,) lower corner px) of a level-0 window cut from an
        open field of view, which is not periodic (None: periodic).
    wrap : (N,) float64 distance of each particle to the window's own faces, px, for a
        level-0 window of a crystal film (periodic by construction, but its faces are cuts
        through a crystal whose displacements on either side are not correlated, so they
        are seams), or None. The doubling that places the window marks them as seams
        (``seam``) and separates pairs too close across them, wherever the cyclic shift has
        moved them; the relaxation's band follows the tiles' faces only (its reflecting
        edge is measured from them).
    """

    pos: np.ndarray
    vel: np.ndarray
    size: np.ndarray | None
    box: np.ndarray
    seam: np.ndarray
    tile: np.ndarray | None = None
    n_tiles: int = 1
    origin: tuple | None = None
    wrap: np.ndarray | None = None

    def tiles(self) -> np.ndarray:
        """(N,) int64 tile index of each particle (zeros when ``tile`` is None)."""
        return np.zeros(len(self.pos), np.int64) if self.tile is None else self.tile

    def subset(self, keep: np.ndarray, pos: np.ndarray | None = None) -> "Configuration":
        """The particles ``keep`` ((N,) bool), with new positions ``pos`` (N, d) if given."""
        pos = self.pos if pos is None else pos
        return Configuration(pos[keep], self.vel[keep], None if self.size is None else self.size[keep],
                             self.box, self.seam[keep], self.tiles()[keep], self.n_tiles)


@dataclass
class Upsampled:
    """Result of :func:`upsample`.

    tracks : DataFrame, tracks schema: frame (= sample index), particle, x, y [, z] (px,
        wrapped into the box), vx, vy [, vz] (px/frame), the model's size column when it
        has sizes, seam_distance (px, distance to the nearest seam when it was made) and
        tile (index of the level-0 tile the particle came from, 0..K-1 within a sample).
    box_px : (d,) list, the periodic box of every sample, px.
    parameters : what was done: factor, steps of the doubling, relaxation settings,
        particles relaxed/displaced/dropped (totals over all samples and levels), closest
        approach, timings (for the sidecar).
    """

    tracks: pd.DataFrame
    box_px: list
    parameters: dict = field(default_factory=dict)


class ClosestApproach:
    """The data's closest approach for each pair of sizes, px.

    Discrete sizes (at most :data:`MAX_SPECIES` distinct values, or none): a table of the
    smallest distance seen per pair of species. Continuous sizes: the smallest ratio of
    distance to mean size (s_i + s_j)/2 seen, times that pair's mean size.
    """

    def __init__(self, species: np.ndarray | None, table: np.ndarray | None, ratio: float | None):
        self.species, self.table, self.ratio = species, table, ratio

    def __call__(self, si: np.ndarray | None, sj: np.ndarray | None) -> np.ndarray:
        """(P,) closest approach for pairs with sizes ``si``, ``sj`` (None: no sizes)."""
        if self.table is not None:
            if self.species is None:
                return np.full(1 if si is None else len(si), self.table[0, 0])
            a = np.clip(np.searchsorted(self.species, si), 0, len(self.species) - 1)
            b = np.clip(np.searchsorted(self.species, sj), 0, len(self.species) - 1)
            return self.table[a, b]
        return self.ratio * 0.5 * (si + sj)

    def largest(self, size: np.ndarray | None) -> float:
        """The largest closest approach of any pair of the sizes ``size``, px."""
        if self.table is not None:
            return float(self.table.max())
        return float(self.ratio * np.max(size))

    def as_dict(self) -> dict:
        if self.table is not None:
            return {"species": None if self.species is None else self.species.tolist(),
                    "closest_px": self.table.tolist()}
        return {"distance_over_mean_size": self.ratio}


# ----------------------------------------------------------------------------- pieces
def side_steps(factor: int, dim: int) -> list[int]:
    """The per-axis multipliers of the doubling steps for an area (volume) factor.

    ``factor`` must be m^dim for an integer m >= 2: 2 while m is even, then the odd rest
    in one step (16 in 2D: [2, 2]; 36: [2, 3]). Raises ParameterError otherwise.
    """
    word = "square" if dim == 2 else "cube"
    if isinstance(factor, bool) or int(factor) != factor or factor < 2:
        raise ParameterError(f"factor: must be an integer {word} >= {2 ** dim} (the area factor K), got {factor}")
    factor = int(factor)
    m = round(factor ** (1.0 / dim))
    if m ** dim != factor or m < 2:
        near = [k ** dim for k in (max(2, m - 1), max(2, m), m + 1)]
        raise ParameterError(f"factor: {factor} is not a {word}; tiling needs K = m^{dim} "
                             f"(e.g. {', '.join(str(n) for n in sorted(set(near)))})")
    steps = []
    while m % 2 == 0:
        steps.append(2)
        m //= 2
    if m > 1:
        steps.append(m)
    return steps


def closest_approach(frames: list[np.ndarray], sizes: list[np.ndarray | None], box=None,
                     quantile: float = 0.0) -> ClosestApproach:
    """The closest approach per pair of sizes in ``frames`` ((N_t, d) px each, minimum image
    in ``box`` when given), with ``sizes`` (N_t,) or None per frame.

    ``quantile`` 0 gives the smallest distance seen; q > 0 the q-quantile of the distances
    of the pairs within 1.2 median nearest-neighbour distances (the near side of the first
    shell), per pair of species (continuous sizes: of distance over mean size).
    """
    from ..neighbours import nearest, pairs

    all_sizes = None if sizes[0] is None else np.concatenate(sizes)
    species = None
    if all_sizes is not None:
        species = np.unique(all_sizes)
        if len(species) > MAX_SPECIES:
            species = None
    nn = np.median(np.concatenate([nearest(p, 1, box=box)[0] for p in frames if len(p) > 1]))
    radius = 1.2 * nn
    if box is not None:
        radius = min(radius, 0.499 * float(np.min(box)))
    keys, dists = [], []
    continuous = all_sizes is not None and species is None
    c = 1 if species is None else len(species)
    for p, s in zip(frames, sizes):
        pr, d = pairs(p, radius, box, sort=False, distances=True)
        if len(pr) == 0:
            continue
        if continuous:
            d = d / (0.5 * (s[pr[:, 0]] + s[pr[:, 1]]))
            keys.append(np.zeros(len(d), np.int64))
        elif species is None:
            keys.append(np.zeros(len(d), np.int64))
        else:
            a = np.searchsorted(species, s[pr[:, 0]])
            b = np.searchsorted(species, s[pr[:, 1]])
            keys.append(np.minimum(a, b) * c + np.maximum(a, b))
        dists.append(d)
    if not dists:
        raise ColloidcgError("tracks: no two particles within 1.2 nearest-neighbour distances; "
                         "cannot tell the closest approach")
    per = pd.Series(np.concatenate(dists)).groupby(np.concatenate(keys)).quantile(float(quantile))
    if continuous:
        return ClosestApproach(None, None, float(per.iloc[0]))
    table = np.full((c, c), np.inf)
    for k, v in per.items():
        i, j = divmod(int(k), c)
        table[i, j] = table[j, i] = float(v)
    if not np.isfinite(table).all():
        # a pair of species never seen this close: scale the closest pair seen by mean size
        ok = np.isfinite(table)
        mean = 0.5 * (species[:, None] + species[None, :])
        ratio = float(np.min(table[ok] / mean[ok]))
        table = np.where(ok, table, ratio * mean)
    return ClosestApproach(species, table, None)


def separate(pos: np.ndarray, size: np.ndarray | None, box: np.ndarray, closest: ClosestApproach, *,
             sweeps: int = 50, drop_below: float = 0.9,
             floor: ClosestApproach | None = None,
             active: np.ndarray | None = None,
             group: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Push apart pairs closer than ``closest`` for their sizes; drop one of the pairs still
    closer than ``drop_below`` x ``floor`` (default ``closest``) after ``sweeps`` sweeps.
    ``active`` (N,) bool: only pairs with at least one active particle are looked at, their
    neighbours looked up among all particles; only active particles are moved or dropped
    (an active particle paired with an inactive one takes the whole push); default all.
    ``group`` (N,) int: pairs from one group (one part placed beside a seam) are pushed only
    when closer than ``floor``, and then to it; default: every pair is pushed to ``closest``.

    pos : (N, d) px in the periodic ``box`` (d,) px. Returns (new positions wrapped into the
    box, (N,) bool mask of the particles kept, number of particles displaced).
    """
    from ..neighbours import Tree

    pos = np.mod(pos, box)
    reach = closest.largest(size)
    if active is not None and not np.all(active):
        act = np.nonzero(active)[0]
        if len(act) == 0:
            return pos, np.ones(len(pos), bool), 0
        # candidates: the active particles and every particle within twice the reach of one
        near = Tree(pos, box).within(2.0 * reach, query=pos[act])
        idx = np.unique(np.concatenate([act] + [np.asarray(n, np.int64) for n in near]))
        sub, kept, n_moved = _separate(pos[idx], None if size is None else size[idx], box, closest,
                                       sweeps, drop_below, floor, np.asarray(active, bool)[idx],
                                       None if group is None else group[idx], reach)
        pos[idx] = sub
        keep = np.ones(len(pos), bool)
        keep[idx] = kept
        return pos, keep, n_moved
    return _separate(pos, size, box, closest, sweeps, drop_below, floor, np.ones(len(pos), bool), group, reach)


def _separate(pos, size, box, closest, sweeps, drop_below, floor, movable, group, reach):
    from ..neighbours import Tree

    floor = closest if floor is None else floor
    moved = np.zeros(len(pos), bool)
    w = movable.astype(float)
    for _ in range(sweeps):
        tree = Tree(pos, box)
        pr = tree.pairs(reach, sort=False)
        if len(pr) == 0:
            break
        pr = pr[movable[pr[:, 0]] | movable[pr[:, 1]]]
        if len(pr) == 0:
            break
        i, j = pr[:, 0], pr[:, 1]
        sep = tree.separations(i, j)               # r_j - r_i, minimum image
        d = np.sqrt(np.square(sep).sum(1))
        # one value per pair (without sizes the closest approach is a single number)
        target = np.broadcast_to(closest(None if size is None else size[i], None if size is None else size[j]),
                                 d.shape)
        bad = d < target
        if group is not None:     # same side of a seam: only pairs closer than the floor
            low = floor(None if size is None else size[i], None if size is None else size[j])
            bad &= (group[i] != group[j]) | (d < low)
            target = np.where(group[i] != group[j], target, low)
        if not bad.any():
            break
        i, j, sep, d, target = i[bad], j[bad], sep[bad], d[bad], target[bad]
        unit = sep / np.maximum(d, 1e-12)[:, None]
        share = 1.0 / (w[i] + w[j])                # 1/2 each, or all to the movable one
        push = (target - d)[:, None] * unit * share[:, None]
        delta = np.zeros_like(pos)
        for k in range(pos.shape[1]):
            delta[:, k] = (np.bincount(j, push[:, k] * w[j], len(pos))
                           - np.bincount(i, push[:, k] * w[i], len(pos)))
        moved[i[movable[i]]] = True
        moved[j[movable[j]]] = True
        pos = np.mod(pos + delta, box)
    keep = np.ones(len(pos), bool)
    tree = Tree(pos, box)
    pr, d = tree.pairs(reach, sort=True, distances=True)
    if len(pr):
        i, j = pr[:, 0], pr[:, 1]
        target = floor(None if size is None else size[i], None if size is None else size[j])
        for a, b in pr[d < drop_below * target]:
            if keep[a] and keep[b] and (movable[a] or movable[b]):
                keep[b if movable[b] else a] = False
    return pos, keep, int(moved.sum())


def _symmetries(box: np.ndarray) -> list[np.ndarray]:
    """Axis permutations that map the box onto itself (equal sides only)."""
    d = len(box)
    out = []
    for p in permutations(range(d)):
        if np.allclose(box[list(p)], box, rtol=1e-9, atol=0):
            out.append(np.array(p))
    return out


def _transform(cfg: Configuration, rng: np.random.Generator, shift: bool = True) -> Configuration:
    """A random cyclic shift and a random symmetry of the box (reflections, exchanges of
    equal sides) applied to a periodic configuration."""
    box = cfg.box
    s = rng.uniform(0, 1, len(box)) * box if shift else 0.0
    perms = _symmetries(box)
    perm = perms[rng.integers(len(perms))]
    flip = rng.integers(0, 2, len(box)).astype(bool)
    return _apply(cfg, s, perm, flip)


def _apply(cfg: Configuration, shift, perm: np.ndarray, flip: np.ndarray) -> Configuration:
    """The cyclic shift ``shift`` ((d,) px, or 0.0), then the axis permutation ``perm`` (d,)
    and the reflections ``flip`` ((d,) bool) of the box, applied to a periodic configuration."""
    box = cfg.box
    pos = np.mod(cfg.pos + shift, box)
    pos = pos[:, perm]
    vel = cfg.vel[:, perm].copy()
    pos[:, flip] = box[flip] - pos[:, flip]
    vel[:, flip] *= -1.0
    # each particle keeps its distance to the window's own faces (``wrap``) wherever the
    # shift moves them
    return Configuration(np.mod(pos, box), vel, cfg.size, box, cfg.seam, cfg.tile, cfg.n_tiles, cfg.origin,
                         cfg.wrap)


def tile_configurations(parts: list[Configuration], m: int) -> tuple[Configuration, np.ndarray, np.ndarray]:
    """Place ``m^d`` configurations with equal boxes side by side in a box m times larger.

    Returns (the placed configuration, (N,) distance of each particle to the nearest new
    seam, px, (N,) index of the part each particle came from). The configuration's ``seam``
    is the smaller of that distance and the parts' own seam distances. Parts that are
    crystal-film windows (``wrap``) add their own faces: to ``seam``, and to the placed
    configuration's ``wrap`` (the distance to the nearest new seam or window face, for the
    overlap separation); the new seams returned, which the relaxation's band follows, are
    the parts' faces alone.
    """
    box = parts[0].box
    d = len(box)
    pos, vel, size, seam, new, label, tile, wrap = [], [], [], [], [], [], [], []
    n_tiles = max(part.n_tiles for part in parts)
    for k, part in enumerate(parts):
        idx = np.array(np.unravel_index(k, (m,) * d))
        u = np.mod(part.pos, box)
        dist = np.min(np.minimum(u, box - u), axis=1)
        own = dist if part.wrap is None else np.minimum(dist, part.wrap)
        pos.append(u + idx * box)
        vel.append(part.vel)
        size.append(part.size)
        seam.append(np.minimum(part.seam, own))
        new.append(dist)
        wrap.append(own)
        label.append(np.full(len(u), k))
        tile.append(part.tiles() + k * n_tiles)
    sz = None if parts[0].size is None else np.concatenate(size)
    films = any(part.wrap is not None for part in parts)
    return (Configuration(np.concatenate(pos), np.concatenate(vel), sz, box * m, np.concatenate(seam),
                          np.concatenate(tile), n_tiles * len(parts), wrap=np.concatenate(wrap) if films else None),
            np.concatenate(new), np.concatenate(label))


#: Matched tiling (:func:`match_parts`): (symmetry, cyclic shift) candidates tried for each
#: placed part, and the half-width of the scored band along the new seams, in median
#: nearest-neighbour spacings of the parts.
MATCH_CANDIDATES = 32
MATCH_BAND = 1.5
TILINGS = ("auto", "random", "matched", "oriented")
#: How a registered crystal film's seams are healed (:func:`upsample`'s ``seam_field``)
SEAM_FIELDS = ("auto", "gibbs", "pair", "none")
#: ``tiling="auto"``: matched tiling where the input frames' median order coherence
#: (:func:`~colloidcg.scaling.observables.order_coherence`) reaches this, that is where one
#: orientation of the crystal spans a tile (one grain: near 1; two grains of equal size
#: about 0.6 on average; a liquid about 1/sqrt(N)); random tiling below.
AUTO_COHERENCE = 0.5
#: Matched windows of an open field of view (:func:`_window_candidates`): at most this many
#: bond steps bring a window's shift under a spacing, and the windows are cut this many
#: nearest-neighbour spacings narrower than the field of view, so that such a shift fits.
WINDOW_REDUCTIONS = 8
WINDOW_MARGIN = 2.0


def choose_tiling(frames: list[np.ndarray], box: np.ndarray | None, most: int = 20) -> tuple[str, float | None]:
    """``tiling="auto"``: ("matched" or "random", the median order coherence of up to
    ``most`` evenly spaced ``frames`` ((N, d) px each, periodic ``box`` (d,) px or None);
    None where no frame has enough particles for the bond order)."""
    from .observables import Q6_NEIGHBOURS, order_coherence

    need = 7 if frames[0].shape[1] == 2 else Q6_NEIGHBOURS + 1
    step = max(1, int(math.ceil(len(frames) / most)))
    values = [order_coherence(p, box) for p in frames[::step] if len(p) >= need]
    if not values:
        return "random", None
    c = float(np.median(values))
    return ("matched" if c >= AUTO_COHERENCE else "random"), c


def _box_distance(pos: np.ndarray, lo: np.ndarray, side: np.ndarray, big: np.ndarray) -> np.ndarray:
    """(N,) distance, px, of positions (N, d) to the axis-aligned cell [lo, lo + side) in the
    periodic box ``big`` (d,) (0 inside it)."""
    centre = lo + 0.5 * side
    off = np.mod(pos - centre + 0.5 * big, big) - 0.5 * big
    return np.sqrt(np.square(np.maximum(np.abs(off) - 0.5 * side, 0.0)).sum(1))


def _rotation(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def rotated_window(cfg: Configuration, theta: float, point_from: np.ndarray, point_to: np.ndarray) -> Configuration:
    """A box-sized window cut from the periodic continuation of ``cfg`` (2D), rotated.

    The infinite periodic pattern of ``cfg`` (box (2,) px) is rotated by ``theta`` (rad,
    anticlockwise) about the box centre and translated so that the point ``point_from``
    (2,) px of the pattern lands on ``point_to`` (2,) px; the particles inside [0, box)
    are kept. A periodic configuration has no seams of its own, so the window has none
    inside; its edges are cut, and its particle count is the box's share of the pattern
    (it differs from ``len(cfg.pos)`` by the particles the cut edges take or leave).
    Velocities rotate with the positions; sizes, seam distances (a rigid motion keeps
    them) and tile labels travel with their particles.
    """
    box = np.asarray(cfg.box, float)
    c = 0.5 * box
    R = _rotation(theta)
    y = R.T @ (np.asarray(point_to, float) - c) + c      # the unrotated point that lands on point_to
    u = np.mod(cfg.pos + (y - np.asarray(point_from, float)), box)
    reach = 0.5 * float(np.hypot(*box))                   # the window lies within this of c
    lo = np.floor((c - reach) / box).astype(int)
    hi = np.floor((c + reach) / box).astype(int)
    shifts = np.array([(i, j) for i in range(lo[0], hi[0] + 1) for j in range(lo[1], hi[1] + 1)], float) * box
    n = len(u)
    img = (u[None, :, :] + shifts[:, None, :]).reshape(-1, 2)
    rot = (img - c) @ R.T + c
    inside = np.all((rot >= 0.0) & (rot < box), axis=1)
    src = np.tile(np.arange(n), len(shifts))[inside]
    size = None if cfg.size is None else cfg.size[src]
    return Configuration(rot[inside], cfg.vel[src] @ R.T, size, box, cfg.seam[src], cfg.tiles()[src], cfg.n_tiles)


def match_parts(parts: list[Configuration], m: int, rng: np.random.Generator, *,
                candidates: int = MATCH_CANDIDATES, band: float = MATCH_BAND,
                rotate: bool = False, recut=None) -> tuple[list[Configuration], dict]:
    """Registry-matched tiling: choose each part's symmetry (or orientation) and shift so
    that its seams with the parts already placed mismatch least (2D and 3D; turned
    windows, ``rotate=True``, 2D only).

    The ``m^d`` parts (equal periodic boxes, placed by :func:`tile_configurations` in
    ravel order of an m x m grid of cells) are placed one after another. The first keeps
    its configuration; for every later one ``candidates`` transforms are tried, and the
    best is kept.

    ``rotate=False`` (``tiling="matched"``): each symmetry of the box (:func:`_symmetries`
    and reflections: 8 for a square, 48 for a cube) with an equal share of cyclic shifts, each shift
    putting a random particle of the part onto the place of a random particle of an
    already placed neighbour within the scored band (taken in that part's own cell
    coordinates: where the neighbour's periodic continuation has a particle), so that a
    crystal continued across the seam is in registry when the orientations agree. A square
    box's symmetries reach only 4 orientations of a hexagonal lattice. A window of an open
    field of view (a part with an ``origin``) is not periodic, so it is not shifted
    cyclically: ``recut(frame, lo)`` (a :class:`Configuration` or None) cuts it again from
    its frame, moved by the shift that puts its particle nearest a placed neighbour's
    particle just across the seam onto that particle's place, so that the particle itself
    falls outside the window and the window's lattice continues the neighbour's; windows
    that would leave the field of view are skipped.

    ``rotate=True`` (``tiling="oriented"``): the part's periodic pattern, as it is and
    mirrored, is rotated by the angle that brings its mean psi6 phase onto that of the
    placed particles along its seams (psi6 turns by 6 theta under a rotation by theta),
    and a window of the cell is cut from it (:func:`rotated_window`) with half the
    candidates for each hand, each translated so that a random particle of the part lands
    on a lattice site continuing a placed neighbour's lattice: p - b for a placed particle
    p within one spacing of a shared face and a bond b to one of its 6 nearest placed
    neighbours, where that site lies inside the cell. Any orientation is reached, so
    polycrystalline tiles whose grains point anywhere in 0-60 degrees are turned to
    continue their neighbours. The window's particle count is the cell's share of the
    pattern, so the number of particles of a tiled system varies by what the cut edges
    take or leave.

    A candidate's score is the mean local bond order (:func:`~colloidcg.scaling.observables.local_order`:
    |psi6_i| over 6 nearest neighbours in 2D, q6_i over 12 in 3D, taken among the placed
    parts and the candidate together, in the periodic large box) of the particles within
    ``band`` median nearest-neighbour spacings of a seam between the candidate and a
    placed part, leaving out those within that distance of a cell not yet placed (their
    neighbours are missing).

    A crystal tile tiled this way continues its lattice across the seams (in 3D a cubic
    crystal whose axes lie along the box's: every symmetry of the cube is one of the
    lattice's, and the anchoring shift puts it in registry); in a liquid the choice favours
    seams of slightly higher local order than chance (docs/scaling.md).
    Returns (the parts, transformed; {"score": mean over placed parts of the chosen
    candidate's score, "candidates_mean": mean over parts of all candidates' mean score
    (what a random choice gives on average), "parts_matched"}).
    """
    from ..neighbours import nearest
    from .observables import local_order

    box = np.asarray(parts[0].box, float)
    d = len(box)
    if rotate and d != 2:
        raise ParameterError(f"tiling: 'oriented' turns tiles to the psi6 phase of their neighbours, a 2D "
                             f"order; the tiles are {d}D (use tiling='matched' or 'random')")
    if int(candidates) != candidates or candidates < 1:
        raise ParameterError(f"tiling candidates: must be a positive integer, got {candidates}")
    big = box * m
    n_cells = m ** d
    cells = [np.array(np.unravel_index(k, (m,) * d)) for k in range(n_cells)]
    ref = np.mod(parts[0].pos, box)
    spacing = float(np.median(nearest(ref, 1, box=box)[0])) if len(ref) > 1 else float(np.min(box)) / 4
    sb = float(band) * spacing
    reach = sb + 2.0 * spacing          # neighbours of a scored particle lie within this of the seam
    syms = [(np.asarray(p), np.array(f, bool)) for p in _symmetries(box)
            for f in np.ndindex(*(2,) * d)]
    out = [parts[0]]
    placed = [0]
    chosen, means = [], []
    for k in range(1, n_cells):
        cell = cells[k]
        lo = cell * box
        P = np.concatenate([np.mod(out[c].pos, box) + cells[c] * box for c in placed])
        to_cand = _box_distance(P, lo, box, big)
        void = [c for c in range(n_cells) if c not in placed and c != k]

        def to_void(x):
            if not void:
                return np.full(len(x), np.inf)
            return np.min([_box_distance(x, cells[c] * box, box, big) for c in void], axis=0)

        near = to_cand < reach
        Pn = P[near]
        score_P = (to_cand[near] < sb) & (to_void(Pn) >= sb)
        # the faces of the candidate's cell shared with placed cells
        shared = [(a, side) for a in range(d) for side in (0, 1)
                  if int(np.ravel_multi_index(tuple(np.mod(cell + (2 * side - 1) * np.eye(d, dtype=int)[a], m)),
                                              (m,) * d)) in placed]
        base = parts[k]
        if rotate:
            # the placed particles' orientation: those within reach of the cell but more than
            # a spacing from it and from cells not yet placed (all their neighbours present)
            lattice = (to_cand >= spacing) & (to_cand < reach)
            lattice[lattice] = to_void(P[lattice]) >= spacing
        cands = (_oriented_candidates(base, P, lattice, to_cand, lo, box, big, spacing, int(candidates), rng)
                 if rotate else _symmetry_candidates(base, Pn[to_cand[near] < sb], syms, box, int(candidates), rng,
                                                     lo=lo, big=big, recut=recut))
        best, best_score, scores = None, -np.inf, []
        for cand in cands:
            q = cand.pos
            face = np.full(len(q), np.inf)
            for a, side in shared:
                face = np.minimum(face, q[:, a] if side == 0 else box[a] - q[:, a])
            keep = face < reach
            Q = q[keep] + lo
            score_Q = (face[keep] < sb) & (to_void(Q) >= sb)
            allp = np.concatenate([Pn, Q])
            if len(allp) < 16 or not (score_P.any() or score_Q.any()):
                value = 0.0
            else:
                value = float(local_order(allp, big)[np.concatenate([score_P, score_Q])].mean())
            scores.append(value)
            if value > best_score:
                best, best_score = cand, value
        if best is None:        # no candidate (every recut window left the field of view)
            best, best_score = base, float("nan")
        out.append(best)
        placed.append(k)
        chosen.append(best_score)
        if scores:
            means.append(float(np.mean(scores)))
    chosen = [c for c in chosen if np.isfinite(c)]
    return out, {"score": float(np.mean(chosen)) if chosen else None,
                 "candidates_mean": float(np.mean(means)) if means else None, "parts_matched": len(chosen)}


def _symmetry_candidates(base: Configuration, anchors_big: np.ndarray, syms: list, box: np.ndarray,
                         candidates: int, rng: np.random.Generator, *, lo=None, big=None, recut=None):
    """``tiling="matched"`` candidates of :func:`match_parts`: each symmetry with an equal
    share of cyclic shifts putting a random particle onto a placed neighbour's periodic
    continuation (``anchors_big``: placed particles within the scored band, big-box px);
    for a window of an open field of view (``base.origin`` and ``recut``), windows cut again
    from its frame (:func:`_window_candidates`)."""
    d = len(box)
    per = max(1, int(math.ceil(candidates / len(syms))))
    if base.origin is not None and recut is not None:
        # the placed particles in the candidate cell's coordinates (nearest image)
        rel = anchors_big - lo
        rel -= big * np.round((rel - 0.5 * box) / big)
        yield from _window_candidates(base.origin, rel, syms, per, recut, rng)
        return
    anchors = np.mod(anchors_big, box)
    for perm, flip in syms:
        turned = _apply(base, 0.0, perm, flip)
        for _ in range(per):
            if len(anchors):
                shift = anchors[rng.integers(len(anchors))] - turned.pos[rng.integers(len(turned.pos))]
                shift = shift + _registry_correction(np.mod(turned.pos + shift, box), anchors, box)
            else:
                shift = rng.uniform(0, 1, d) * box
            yield _apply(turned, shift, np.arange(d), np.zeros(d, bool))


def _registry_correction(pos: np.ndarray, anchors: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(d,) px: the mean offset from each anchor's nearest particle of ``pos`` to the anchor
    (periodic ``box``), over the anchors within a quarter of the median nearest-neighbour
    spacing of ``pos`` of their particle.

    One anchor pair puts a crystal in registry up to both particles' thermal displacements
    (their relative rms); the mean over the tens of anchors along a seam puts it there up
    to that over their square root. In a liquid the offsets point anywhere and their mean
    is small."""
    from ..neighbours import Tree

    if len(pos) < 2 or len(anchors) < 2:
        return np.zeros(len(box))
    tree = Tree(pos, box)
    dist, idx = tree.nearest(1, anchors)
    off = anchors - pos[idx]
    off -= box * np.round(off / box)
    close = dist < 0.25 * float(np.median(tree.nearest(1)[0]))
    return off[close].mean(axis=0) if close.any() else np.zeros(len(box))


def _window_candidates(origin: tuple, anchors: np.ndarray, syms: list, per: int, recut, rng: np.random.Generator):
    """Matched candidates for a window of an open field of view (:func:`match_parts`):
    for each symmetry (``syms``: (perm, flip)), ``per`` windows cut again from the frame
    ``origin[0]``, each moved so that the window's particle nearest a random placed
    particle ``anchors`` (k, d) (cell px, just outside the cell) lands on it (the same
    translation in the frame, undone through the symmetry's linear part)."""
    t, lo0 = origin
    lo0 = np.asarray(lo0, float)
    d = len(lo0)
    first = recut(t, lo0)
    if first is None:
        return
    for perm, flip in syms:
        turned = _apply(first, 0.0, perm, flip)
        sign = np.where(flip, -1.0, 1.0)
        for _ in range(per):
            if not len(anchors):
                yield turned
                continue
            a = anchors[rng.integers(len(anchors))]
            j = int(np.argmin(np.sum((turned.pos - a) ** 2, axis=1)))
            delta = a - turned.pos[j]
            # a lies outside the window, so its nearest lattice site may be an extrapolated
            # one, q_j + w for bonds w of q_j: the window then moves by less than a spacing
            near = np.argsort(np.sum((turned.pos - turned.pos[j]) ** 2, axis=1))[1:2 * d + 3]
            bonds = turned.pos[near] - turned.pos[j]
            bonds = np.concatenate([bonds, -bonds])
            for _ in range(WINDOW_REDUCTIONS):
                w = bonds[int(np.argmin(np.sum((delta - bonds) ** 2, axis=1)))]
                if np.sum((delta - w) ** 2) >= np.sum(delta ** 2):
                    break
                delta = delta - w
            back = np.empty_like(delta)
            back[perm] = sign * delta            # the symmetry's linear part, inverted
            cand = recut(t, lo0 - back)
            if cand is not None:
                yield _apply(cand, 0.0, perm, flip)


def _oriented_candidates(base: Configuration, P: np.ndarray, lattice: np.ndarray, dist_P: np.ndarray,
                         lo: np.ndarray, box: np.ndarray, big: np.ndarray, spacing: float, candidates: int,
                         rng: np.random.Generator):
    """``tiling="oriented"`` candidates of :func:`match_parts` (its docstring): rotated
    windows of ``base``'s pattern, both hands, at the mean psi6 phase of the placed
    particles ``P`` (big-box px) selected by ``lattice`` ((N,) bool), each anchored on a
    lattice site continuing a placed neighbour's lattice inside the cell [lo, lo + box)
    (``dist_P``: (N,) the placed particles' distances to it, px)."""
    from ..structure.order import bond_order
    from .observables import knn, psi6_local

    psi, target = None, 0j
    if len(P) > 6:
        sep, _, _ = knn(P, big, 6)
        psi = bond_order(sep, 6).mean(axis=1)
        if lattice.any():
            target = complex(psi[lattice].mean())
    edge = np.flatnonzero(dist_P < spacing)
    sites = np.empty((0, 2))
    if len(edge) and psi is not None:
        cand_sites = (P[edge, None, :] - sep[edge]).reshape(-1, 2)
        off = np.mod(cand_sites - lo, big)
        sites = off[np.all(off < box, axis=1)]
    per_hand = max(1, int(math.ceil(candidates / 2)))
    for mirror in (False, True):
        hand = _apply(base, 0.0, np.arange(2), np.array([mirror, False]))
        own = complex(np.mean(psi6_local(np.mod(hand.pos, box), box))) if len(hand.pos) > 6 else 0j
        theta = (np.angle(target) - np.angle(own)) / 6.0 if abs(target) > 0 and abs(own) > 0 else \
            rng.uniform(0, np.pi / 3)
        for _ in range(per_hand):
            to = sites[rng.integers(len(sites))] if len(sites) else rng.uniform(0, 1, 2) * box
            yield rotated_window(hand, theta, np.mod(hand.pos[rng.integers(len(hand.pos))], box), to)


def _part_frame(pos: np.ndarray, part_box: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(N,) index of the part (as :func:`tile_configurations` numbers them) each position
    (N, d) px lies in, and (N,) its distance to the part's nearest face (the new seams), px."""
    cell = np.clip(np.floor(pos / part_box).astype(np.int64), 0, m - 1)
    u = pos - cell * part_box
    dist = np.min(np.minimum(u, part_box - u), axis=1)
    return np.ravel_multi_index(tuple(cell.T), (m,) * pos.shape[1]), dist


#: Reinsertion (:func:`reinsert_across_seams`): candidate sites are a grid of this spacing
#: (px) within REINSERT_RADIUS_PX of the particle, at its own distance to the new seams
#: within REINSERT_TOL_PX; at most REINSERT_SWEEPS passes.
REINSERT_GRID_PX = 1.0
REINSERT_RADIUS_PX = 48.0
REINSERT_TOL_PX = 2.0
REINSERT_SWEEPS = 5


#: Nearest neighbours per site examined first by :func:`_clearance`.
CLEARANCE_NEIGHBOURS = 16


def _clearance(sites: np.ndarray, others: np.ndarray, need: np.ndarray, box: np.ndarray,
               cap: float) -> np.ndarray:
    """(S,) min_j (|site - x_j| - need_j) over the particles ``others`` (M, d) px for each of
    ``sites`` (S, d) px, distances by the minimum image in the periodic ``box`` (d,) px;
    values at or above ``cap`` may be returned as any value >= cap.

    A periodic k-d tree gives each site's nearest :data:`CLEARANCE_NEIGHBOURS`; a farther
    particle cannot lower a site's clearance below d_k - max(need), so only sites whose
    clearance that bound (or ``cap``) does not settle are compared with every particle.
    The values are those of the full comparison to the last bit. (In 3D the full
    comparison of some 10^5 sites with 10^2-10^3 particles per reinserted particle took
    25 s per 1024-particle snapshot.)
    """
    from scipy.spatial import cKDTree

    def exact(rows, cols):
        # cols (M,): every particle for each row; (R, k): each row's own nearest k
        sep = others[cols] - sites[rows][:, None, :]
        sep -= box * np.round(sep / box)
        return np.sqrt(np.square(sep).sum(-1)) - need[cols]

    m = len(others)
    k = min(CLEARANCE_NEIGHBOURS, m)
    if len(sites) * m <= 4096 or k == m:
        return exact(np.arange(len(sites)), np.arange(m)).min(1)

    def wrapped(a):
        a = np.mod(a, box)
        return np.where(a >= box, 0.0, a)        # np.mod of a tiny negative number rounds up to the side

    dist, idx = cKDTree(wrapped(others), boxsize=box).query(wrapped(sites), k=k)
    gap = exact(np.arange(len(sites)), idx).min(1)
    bound = dist[:, -1] - need.max()
    open_ = (gap > bound) & (bound < cap)
    if open_.any():
        rows = np.nonzero(open_)[0]
        gap[rows] = exact(rows, np.arange(m)).min(1)
    return gap


#: Cell side (px) of the coarse pass of :func:`_best_site`, and the fewest sites worth it.
BEST_SITE_CELL_PX = 3.0
BEST_SITE_MIN_SITES = 2000


def _best_site(sites: np.ndarray, others: np.ndarray, need: np.ndarray, box: np.ndarray, cap: float) -> int:
    """Index of the site of largest clearance min(:func:`_clearance`, ``cap``) among
    ``sites`` (S, d) px, the first one where several share it: exactly
    ``argmax(minimum(_clearance(sites, ...), cap))``, found in two passes.

    The clearance is 1-Lipschitz in the site's position (a minimum of distances less
    constants), so a site within delta of a site of clearance c has at most c + delta. Sites
    are grouped in cubic cells of :data:`BEST_SITE_CELL_PX`; the first site of each cell is
    evaluated, and then every site of the cells whose representative's clearance plus the
    cell's largest distance to it reaches the best representative's value: every site that
    can reach the maximum is among them. (In 3D a reinsertion offers some 10^4-10^5 sites
    and a 2048-sphere snapshot of WCA spheres spent 25 s in the full evaluation.)
    """
    if len(sites) < BEST_SITE_MIN_SITES:
        return int(np.argmax(np.minimum(_clearance(sites, others, need, box, cap), cap)))
    key = np.floor(sites / BEST_SITE_CELL_PX).astype(np.int64)
    key -= key.min(0)
    flat = np.ravel_multi_index(tuple(key.T), tuple(key.max(0) + 1))
    _, first, cell = np.unique(flat, return_index=True, return_inverse=True)
    rep = sites[first]
    spread = np.zeros(len(first))
    np.maximum.at(spread, cell, np.sqrt(np.square(sites - rep[cell]).sum(1)))
    value = np.minimum(_clearance(rep, others, need, box, cap), cap)
    open_ = value + spread + 1e-9 >= value.max()             # a margin for rounding: never fewer
    rows = np.nonzero(open_[cell])[0]                       # in the sites' own order
    fine = np.minimum(_clearance(sites[rows], others, need, box, cap), cap)
    return int(rows[np.argmax(fine)])


def reinsert_across_seams(cfg: Configuration, new_seam: np.ndarray, part: np.ndarray, m: int,
                          push: ClosestApproach, rng: np.random.Generator) -> tuple[Configuration, np.ndarray, int]:
    """Resolve pairs placed too close across a new seam by moving one particle of each pair
    into the largest gap of its own part at its own distance to the seams, instead of
    pushing the pair apart.

    Pushing moves particles away from a seam and makes a density wave (a dip at the seam,
    a crest behind it) that a few relaxation frames do not spread out (docs/scaling.md).
    Here each pair across a new seam closer than ``push`` for its sizes (closest pairs
    first, each particle in one pair per pass) loses one of its two particles, chosen at
    random, which is put back at the site of largest clearance min_j (|x - x_j| -
    push(s, s_j)) among a grid (:data:`REINSERT_GRID_PX`) of sites inside its own part,
    within :data:`REINSERT_RADIUS_PX` of where it was and at its own distance to the new
    seams within :data:`REINSERT_TOL_PX` (the clearance counted up to the largest push
    distance). Particles are only moved, never added or
    removed, and stay in their part, so counts per tile, composition and area fraction
    are kept exactly, and the number density along the seam normal as well (within the
    tolerance). Up to :data:`REINSERT_SWEEPS` passes; pairs left are for :func:`separate`.

    cfg : the placed configuration (px); new_seam : (N,) distance to the nearest new
    seam, px; part : (N,) the part index of each particle; m : parts per axis. Returns
    (configuration with moved particles (velocity kept, ``seam`` updated), (N,) updated
    distance to the new seams, number of particles moved).
    """
    from ..neighbours import Tree

    box = cfg.box
    reach = push.largest(cfg.size)
    # only particles near the new seams take part: a too-close pair across a seam lies
    # within ``reach`` of it, sites within reach + tol, their neighbours within 2 reach + tol
    take = np.nonzero(new_seam < 3.0 * reach + 2.0 * REINSERT_TOL_PX)[0]
    all_pos = np.mod(cfg.pos, box)
    all_new, all_seam = new_seam.copy(), cfg.seam.copy()
    pos = all_pos[take].copy()
    size = None if cfg.size is None else cfg.size[take]
    part = part[take]
    d = pos.shape[1]
    part_box = box / m
    new_seam = all_new[take].copy()
    origin = new_seam.copy()              # a particle moved twice stays at its first distance
    seam = all_seam[take].copy()
    sz = (lambda idx: None) if size is None else (lambda idx: size[idx])  # noqa: E731
    look = 2.0 * REINSERT_RADIUS_PX + reach
    g = np.arange(-REINSERT_RADIUS_PX, REINSERT_RADIUS_PX + 0.5 * REINSERT_GRID_PX, REINSERT_GRID_PX)
    across = np.arange(-REINSERT_TOL_PX, REINSERT_TOL_PX + 0.5 * REINSERT_GRID_PX, REINSERT_GRID_PX)
    # a slab parallel to a face: the grid along the other axes, +-tol across (offsets from
    # the slab's centre; the slab's coordinate along its axis is set per particle)
    slab = np.stack(np.meshgrid(*([across] + [g] * (d - 1)), indexing="ij"), -1).reshape(-1, d)
    moved = np.zeros(len(pos), bool)
    for _ in range(REINSERT_SWEEPS):
        tree = Tree(pos, box)
        pr, dist = tree.pairs(reach, sort=True, distances=True)
        if len(pr) == 0:
            break
        i, j = pr[:, 0], pr[:, 1]
        target = np.broadcast_to(push(sz(i), sz(j)), dist.shape)
        bad = (dist < target) & (part[i] != part[j])
        if not bad.any():
            break
        order = np.argsort(dist[bad] / target[bad], kind="stable")
        busy = np.zeros(len(pos), bool)
        movers = []
        for a, b in zip(i[bad][order], j[bad][order]):
            if busy[a] or busy[b]:
                continue
            busy[a] = busy[b] = True
            movers.append(a if rng.random() < 0.5 else b)
        for k in movers:
            # sites at the particle's own distance to each face of its part, near the particle
            cell = np.array(np.unravel_index(part[k], (m,) * d))
            lo = cell * part_box
            sites = []
            for a in range(d):
                for face in (origin[k], part_box[a] - origin[k]):
                    if abs(pos[k, a] - (lo[a] + face)) > REINSERT_RADIUS_PX + REINSERT_TOL_PX:
                        continue                    # the slab lies beyond the radius: no site
                    site = pos[k] + slab[:, np.r_[np.arange(1, a + 1), 0, np.arange(a + 1, d)]]
                    site[:, a] = lo[a] + face + slab[:, 0]
                    sites.append(site)
            if not sites:
                continue
            sites = np.concatenate(sites)
            sites = sites[np.sqrt(np.square(sites - pos[k]).sum(1)) <= REINSERT_RADIUS_PX]
            sites = sites[np.all((sites >= 0) & (sites < box), axis=1)]
            sp, sd = _part_frame(sites, part_box, m)
            sites = sites[(sp == part[k]) & (np.abs(sd - origin[k]) <= REINSERT_TOL_PX)]
            if len(sites) == 0:
                continue
            # the tree is this pass's: a particle moved since is at most the radius from where it was
            if look < 0.499 * float(np.min(box)):
                near = np.asarray(tree.within(look, query=pos[k:k + 1])[0], np.int64)
            else:                                   # a small box: every particle
                near = np.arange(len(pos))
            near = near[near != k]
            off = pos[near] - pos[k]
            off -= box * np.round(off / box)
            near = near[np.square(off).sum(1) <= (REINSERT_RADIUS_PX + reach) ** 2]
            if len(near) == 0:
                continue
            need = np.broadcast_to(push(None if size is None else np.full(len(near), size[k]), sz(near)),
                                   (len(near),))
            # clearance counted up to the reach (the particles taken part are those that can
            # be nearer than that to a site)
            best = _best_site(sites, pos[near], need, box, reach)
            pos[k] = sites[best]
            _, dk = _part_frame(sites[best:best + 1], part_box, m)
            seam[k] = float(dk[0]) if seam[k] == new_seam[k] else min(seam[k], float(dk[0]))
            new_seam[k] = float(dk[0])
            moved[k] = True
    all_pos[take], all_new[take], all_seam[take] = pos, new_seam, seam
    out = Configuration(all_pos, cfg.vel, cfg.size, cfg.box, all_seam, cfg.tile, cfg.n_tiles, wrap=cfg.wrap)
    return out, all_new, int(moved.sum())


# ----------------------------------------------------------------------------- sources
@dataclass
class _Source:
    """Frames of the input: positions (N_t, d) px, velocities px/frame, sizes; the periodic
    box (px), or for an open field of view each frame's field of view ((T, d, 2) px, lower
    and upper bounds per axis, :func:`colloidcg.data.frame_fields_of_view`) and the window
    side (px; (d,) px for the rectangular windows of a crystal film, :func:`_crystal_film`,
    which are commensurate with the lattice and so periodic: ``periodic_windows``)."""

    pos: list
    vel: list
    size: list
    box: np.ndarray | None
    fov: np.ndarray | None
    window: float | np.ndarray | None
    periodic_windows: bool = False
    #: cubic fcc films: (the lattice planes' spacing (d,) px, each frame's phase (T, d) px):
    #: windows are cut midway between lattice planes (:func:`_cubic_film`)
    planes: tuple | None = None
    #: registered crystal films (:func:`_crystal_film`, :func:`_stacked_film`): (each
    #: frame's first lower corner (T, d) px, the number of corners (T, d), the step between
    #: corners (d,) px, a function of a window's positions (n, d) px, in window
    #: coordinates, giving the shift (d,) px that puts its own lattice where the frame's
    #: registry has it, and one giving the mask of particles whose lattice site lies in the
    #: window, :func:`_site_window`): every window is cut in the lattice's registry and
    #: placed as it is
    registered: tuple | None = None
    #: registered crystal films (2D, 3D close packed): (the crystal's displacement field,
    #: fitted to the film, :class:`~colloidcg.scaling.lattice_field.LatticeField`; a function
    #: of a tiled system's positions (N, d) px giving their ideal lattice sites), from which
    #: the sites along the seams are redrawn (``seam_field`` "gibbs" or "pair")
    displacement: tuple | None = None
    #: registered 2D crystal films: a function of a window's positions (n, 2) px, in window
    #: coordinates, giving them with the window's affine displacement (its mean shift,
    #: strain and rotation against the film's ideal lattice) taken out (:func:`_crystal_film`)
    unstrain: Callable | None = None
    #: registered crystal films (2D, 3D close packed): a function of a tiled system's
    #: positions (N, d) px giving their ideal lattice sites (N, d) px, whose distance to the
    #: windows' faces is the output's ``site_seam_distance``
    sites: Callable | None = None


def _frames(tracks: pd.DataFrame, size_col: str | None, frame: int | None, box: np.ndarray | None,
            name: str):
    cols = ["x", "y"] + (["z"] if "z" in tracks.columns else [])
    if len(tracks) == 0:
        raise ColloidcgError(f"{name}: no rows; nothing to tile")
    if size_col and size_col not in tracks.columns:
        raise ColloidcgError(f"{name}: the model was trained with per-particle sizes (column {size_col!r}) "
                             "but the tracks have no such column")
    if not np.isfinite(tracks[cols].to_numpy(float)).all():
        raise ColloidcgError(f"{name}: NaN or infinite positions; drop or fill them first")
    if size_col:
        sz = pd.to_numeric(tracks[size_col], errors="coerce").to_numpy(float)
        if not (np.isfinite(sz) & (sz > 0)).all():
            raise ColloidcgError(f"{name}: the size column {size_col!r} has NaN, infinite or non-positive "
                                 "values; every particle needs a positive size")
    all_frames = np.unique(tracks["frame"].to_numpy())
    if frame is not None:
        if frame not in set(all_frames.tolist()):
            raise ParameterError(f"frame: {frame} is not in {name} (frames {all_frames[0]}..{all_frames[-1]})")
        use = [int(frame)]
    else:
        use = [int(f) for f in all_frames]
    by = {int(f): g for f, g in tracks.groupby("frame", sort=True)}
    # the previous frame present in the table (tracks saved every n frames: a gap of n)
    order = [int(f) for f in all_frames]
    before = dict(zip(order[1:], order[:-1]))
    pos, vel, size = [], [], []
    for f in use:
        g = by[f]
        p = g[cols].to_numpy(float)
        v = np.zeros_like(p)
        fp = before.get(f)
        if fp is not None:
            prev = by[fp]
            j = g[["particle"]].merge(prev[["particle"] + cols], on="particle", how="left")
            q = j[cols].to_numpy(float)
            ok = np.isfinite(q).all(1)
            disp = p[ok] - q[ok]
            if box is not None:
                disp -= box * np.round(disp / box)
            v[ok] = disp / float(f - fp)
        pos.append(p)
        vel.append(v)
        size.append(g[size_col].to_numpy(float) if size_col else None)
    if max(len(p) for p in pos) < 2:
        raise ColloidcgError(f"{name}: at most one particle per frame; nothing to tile")
    return pos, vel, size


def _check_box(pos: list, box: np.ndarray, name: str) -> None:
    """Refuse positions that do not fit the periodic ``box``. Positions outside [0, box) are
    allowed (unwrapped tracks) as long as wrapping them into the box does not put particles
    on top of each other: a frame (up to 20, evenly spaced) whose closest pair, wrapped, is
    closer than half its closest pair unwrapped is refused (tracks from a wider box)."""
    from ..neighbours import nearest

    step = max(1, len(pos) // 20)
    for p in pos[::step]:
        if len(p) < 2 or ((p >= 0) & (p < box)).all():
            continue
        wrapped = float(np.min(nearest(np.mod(p, box), 1, box=box)[0]))
        unwrapped = float(np.min(nearest(p, 1)[0]))
        if wrapped < 0.5 * unwrapped:
            raise ColloidcgError(f"{name}: positions outside the periodic box {box.tolist()} px fall on top of "
                                 f"others when wrapped into it (closest pair {wrapped:.3g} px, "
                                 f"{unwrapped:.3g} px unwrapped); tracks from another box?")


#: Open fields of view: windows are cut from the region whose edges this share of the frames
#: have particles out to (:func:`colloidcg.data.frame_fields_of_view`), not from the
#: tracker's sparse edge margin.
WINDOW_SHARE = 0.9


def _source(tracks, meta, model_config, size_col, frame, cutoff_px, dim, name) -> _Source:
    from ..data import frame_fields_of_view, meta_box

    cal = model_config.get("calibration", {}) or {}
    side_box = meta_box(meta)
    cal_box = cal.get("box_px")
    if side_box is not None and cal_box is not None:
        a, b = np.asarray(side_box, float).reshape(-1), np.asarray(cal_box, float).reshape(-1)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-6, atol=0):
            raise ColloidcgError(f"{name}: sidecar meta.box_px {a.tolist()} px differs from the model's "
                                 f"calibration box_px {b.tolist()} px; tracks from another box?")
    box = side_box if side_box is not None else cal_box
    box = None if box is None else np.asarray(box, float).reshape(-1)
    d = 3 if "z" in tracks.columns else 2
    if d != dim:
        raise ColloidcgError(f"{name}: {d}D tracks but the model is {dim}D")
    if box is not None and len(box) != d:
        raise ColloidcgError(f"{name}: the periodic box {box.tolist()} has {len(box)} sides for {d}D tracks")
    pos, vel, size = _frames(tracks, size_col, frame, box, name)
    if box is not None:
        if float(np.min(box)) <= 2 * cutoff_px:
            raise ColloidcgError(f"{name}: the periodic box {box.tolist()} px is not wider than twice the "
                                 f"model's interaction range ({cutoff_px:g} px); nothing to tile")
        _check_box(pos, box, name)
        pos = [np.mod(p, box) for p in pos]
        return _Source(pos, vel, size, box, None, None)
    # each frame's field of view: with the drift subtracted the camera's view moves with the
    # drift, and windows cut from the union of all frames held empty strips (tiled, the seams
    # met along a gap: the demo's sheared packing, drift 7-13 px over 50 frames, -0.62
    # neighbours within a seam's shell, -31 standard errors; docs/scaling.md). Every frame's
    # view has the same size, so every sample of a video has the same box (also when tiles
    # come from one frame: macro train upsamples one frame at a time)
    frames, every = frame_fields_of_view(tracks, ["x", "y", "z"][:d], share=WINDOW_SHARE)
    window = float(np.min(every[0, :, 1] - every[0, :, 0]))       # every frame's view has one size
    fov = every if frame is None else every[np.searchsorted(frames, int(frame))][None]
    if not np.isfinite(window) or window <= 2 * cutoff_px:
        raise ColloidcgError(f"{name}: no periodic box (sidecar meta.box_px or model calibration) and a field of "
                             f"view of {window:g} px, not wider than twice the model's interaction range "
                             f"({cutoff_px:g} px); nothing to tile")
    return _Source(pos, vel, size, None, fov, window)


def _base(src: _Source, rng: np.random.Generator) -> Configuration:
    """One level-0 tile: a random frame, shifted (periodic) or windowed (open, inside that
    frame's field of view), with a random symmetry of its box (a registered crystal film's
    window: cut in registry and moved onto its own lattice, no symmetry)."""
    t = int(rng.integers(len(src.pos)))
    p, v, s = src.pos[t], src.vel[t], src.size[t]
    if src.box is not None:
        cfg = Configuration(p, v, s, src.box, np.full(len(p), np.inf))
        return _transform(cfg, rng, shift=True)
    if src.registered is not None:
        first, count, step, local, member = src.registered
        lo = first[t] + rng.integers(0, count[t]) * step
        cfg = _site_window(src, t, lo, member)
        if cfg is not None:
            # the window's own lattice, not the frame's: a long-wavelength thermal
            # displacement moves a window's part of the crystal as a whole, and windows so
            # moved would meet off registry
            room = src.fov[t]
            moved = np.clip(lo + local(cfg.pos), room[:, 0], room[:, 1] - src.window)
            recut = _site_window(src, t, moved, member)
            cfg = cfg if recut is None else recut
            if src.unstrain is not None:
                q = np.clip(src.unstrain(cfg.pos), 0.0, np.nextafter(cfg.box, 0.0))
                cfg = Configuration(q, cfg.vel, cfg.size, cfg.box, cfg.seam,
                                    wrap=np.min(np.minimum(q, cfg.box - q), axis=1))
        if cfg is None:
            raise ColloidcgError("tracks: fewer than two particles in a window of the crystal film; nothing to tile")
        return cfg
    fov = src.fov[t]
    lo = fov[:, 0] + rng.uniform(0, 1, len(fov)) * (fov[:, 1] - fov[:, 0] - src.window)
    if src.planes is not None:
        # midway between lattice planes, so that the window's two cut edges meet as a
        # lattice continued when it is wrapped
        step, phase = src.planes
        cut = phase[t] + 0.5 * step
        lo = cut + np.floor((lo - cut) / step) * step
        lo = np.where(lo < fov[:, 0], lo + step, lo)
    cfg = _window(src, t, lo)
    if cfg is None:
        raise ColloidcgError("tracks: fewer than two particles in a window of the field of view; nothing to tile")
    return _transform(cfg, rng, shift=src.periodic_windows)


def _narrow_windows(src: _Source, cutoff_px: float, name: str) -> _Source:
    """``src`` with its windows :data:`WINDOW_MARGIN` median nearest-neighbour spacings
    narrower than the field of view, so that matched windows can be cut again in registry
    (:func:`_window_candidates`); unchanged where that leaves a window not wider than twice
    the interaction range."""
    from ..neighbours import nearest

    p = src.pos[0]
    spacing = float(np.median(nearest(p, 1)[0])) if len(p) > 1 else 0.0
    window = src.window - WINDOW_MARGIN * spacing
    if window <= 2 * cutoff_px:
        return src
    return _Source(src.pos, src.vel, src.size, None, src.fov, window)


def _window(src: _Source, t: int, lo: np.ndarray) -> Configuration | None:
    """The square (cube) window of side ``src.window`` px with lower corner ``lo`` (d,) px
    cut from frame ``t`` of an open field of view, in window coordinates; None when it
    holds fewer than two particles."""
    p, v, s = src.pos[t], src.vel[t], src.size[t]
    lo = np.asarray(lo, float)
    inside = np.all((p >= lo) & (p < lo + src.window), axis=1)
    if inside.sum() < 2:
        return None
    side = np.broadcast_to(np.asarray(src.window, float), lo.shape).copy()
    q = p[inside] - lo
    wrap = np.min(np.minimum(q, side - q), axis=1) if src.periodic_windows else None
    return Configuration(q, v[inside], None if s is None else s[inside], side,
                         np.full(int(inside.sum()), np.inf), origin=None if src.periodic_windows else (t, lo),
                         wrap=wrap)


def _site_window(src: _Source, t: int, lo: np.ndarray, member) -> Configuration | None:
    """A registered crystal film's window (:data:`_Source.registered`) with lower corner
    ``lo`` (d,) px cut from frame ``t`` by lattice site rather than by position: a particle
    belongs to it where ``member`` (a function of window-coordinate positions (n, d) px,
    giving a boolean mask) puts its lattice site inside the window, and one jittered just
    across a face is held at the face (moved by its overshoot, a fraction of a pixel). So
    every window holds the same sites, once each. Cut by position, a particle jittered
    across a face (planes 2.2 px from the cut in a 3D layer) was in two windows or in none,
    and tiled windows met with a pair 3 px apart or a hole; wrapped to the opposite face
    instead of held, it would sit on the site the next window fills. None when it holds
    fewer than two particles."""
    side = np.broadcast_to(np.asarray(src.window, float), np.shape(lo)).copy()
    keep = _site_members(src, t, lo, member)
    if len(keep) < 2:
        return None
    q = np.clip(src.pos[t][keep] - np.asarray(lo, float), 0.0, np.nextafter(side, 0.0))
    s = src.size[t]
    return Configuration(q, src.vel[t][keep], None if s is None else s[keep], side, np.full(len(keep), np.inf),
                         wrap=np.min(np.minimum(q, side - q), axis=1))


def _site_members(src: _Source, t: int, lo: np.ndarray, member) -> np.ndarray:
    """Indices into frame ``t`` of the particles whose lattice site lies in the window with
    lower corner ``lo`` (:func:`_site_window`)."""
    side = np.broadcast_to(np.asarray(src.window, float), np.shape(lo))
    q = src.pos[t] - np.asarray(lo, float)
    near = np.all((q > -0.5 * side) & (q < 1.5 * side), axis=1)
    return np.flatnonzero(near)[member(q[near])]


def film_window_baseline(src: _Source, r_bond: float, shell: float, bulk_px: float,
                         most: int = 20) -> dict[str, tuple[float, float, int]]:
    """A registered crystal film's own windows, where they sit in their frames (untiled,
    their faces no seams): per window, the mean over its particles whose lattice site lies
    within ``shell`` px of a face minus that over those farther than ``bulk_px`` px, of the
    seam check's measures (:func:`~colloidcg.scaling.seams.local_measures`: neighbours within
    ``r_bond`` px, |psi6| or q6), computed in the frame, with the particles within
    ``r_bond`` of the frame's edge left out (their neighbourhoods are cut). Every corner of
    up to ``most`` frames, each window cut and moved onto its own lattice as
    :func:`_base` cuts it. Returns {measure: (mean over windows, standard error, windows)}:
    what a seamless crystal's windows show, the baseline of :func:`~colloidcg.scaling.seams.seam_check`.
    Frames follow one another, so the error is a lower bound where the structure persists."""
    from .seams import local_measures, mean_and_error, whole_neighbourhoods

    first, count, step, local, member = src.registered
    window = np.asarray(src.window, float)
    per: dict[str, list] = {}
    for t in range(0, len(src.pos), max(1, int(math.ceil(len(src.pos) / most)))):
        p, view = src.pos[t], src.fov[t]
        values = local_measures(p, None, r_bond)
        whole = whole_neighbourhoods(p, r_bond)
        for u in np.ndindex(*count[t]):
            lo = first[t] + np.array(u) * step
            keep = _site_members(src, t, lo, member)
            if len(keep) < 2:
                continue
            lo = np.clip(lo + local(np.clip(p[keep] - lo, 0.0, window)), view[:, 0], view[:, 1] - window)
            keep = _site_members(src, t, lo, member)
            d = seam_line_distance(src.sites(p[keep] - lo), window)
            band, bulk = (d < shell) & whole[keep], (d > bulk_px) & whole[keep]
            if band.sum() < MIN_BULK or bulk.sum() < MIN_BULK:
                continue
            for name, v in values.items():
                per.setdefault(name, []).append(float(np.nanmean(v[keep][band]) - np.nanmean(v[keep][bulk])))
    return {name: mean_and_error(vals) for name, vals in per.items()}


#: Crystal films (:func:`_crystal_film`): bonds within this angle of a lattice direction
#: give the lattice vectors' mean.
FILM_BOND_TOLERANCE_DEG = 15.0


def plane_spacing(frames: list, axis: int, guess: float, most: int = 5) -> float:
    """The spacing of lattice planes normal to ``axis`` in ``frames`` (positions (n, d) px,
    turned so that the planes are normal to that axis): the period, within 4 % of
    ``guess`` px, at which the planes' density wave |sum exp(2 pi i x / spacing)|^2 summed
    over up to ``most`` frames is strongest. Mean bonds are cut short by the first-shell
    filter that keeps an edge particle's second shell out (1-1.5 % at a Lindemann ratio of
    0.16, 0.35 % in a 2D crystal at area fraction 0.85: over 30 spacings a 1.7 px misfit at
    the window's wrap); the planes' own period is not."""
    grid = guess * np.linspace(0.96, 1.04, 161)
    power = np.zeros(len(grid))
    for q in frames[::max(1, int(math.ceil(len(frames) / most)))]:
        power += np.abs(np.exp(2j * math.pi * q[None, :, axis] / grid[:, None]).sum(axis=1)) ** 2
    return float(grid[int(np.argmax(power))])


def _crystal_film(src: _Source, cutoff_px: float, field: str | None = "gibbs") -> tuple[_Source, dict] | None:
    """One 2D crystal filmed in an open field of view, as periodic tiles: every frame turned
    (about the origin) so that a lattice vector lies along x, and rectangular windows of
    n a x 2 k h (a the spacing along x, h the row spacing: a triangular lattice repeats
    after two rows) cut inside the largest axis-aligned square of the turned field of view,
    midway between lattice planes and in registry with a lattice site of the frame, then
    moved onto the window's own lattice (:data:`_Source.registered`). Such a window
    continues its lattice when wrapped, every window is the same crystal in the same
    registry, so windows are placed as they are, and a film of one crystal becomes one
    crystal.

    The orientation is the mean psi6 phase over up to 20 frames; a and h start from the means
    of the bond vectors (6 nearest neighbours) within :data:`FILM_BOND_TOLERANCE_DEG` of the
    lattice directions (thermal displacements average out of a mean bond, not out of a
    nearest distance) and are refined to the lattice planes' period (:func:`plane_spacing`). Returns (the turned source, {"turned_deg", "lattice_px": [a, 2 h],
    "window_px"}) or None where the windows would not be wider than twice the interaction
    range or the bonds do not show a triangular lattice. ``field``: also fit the crystal's
    displacement field (:data:`_Source.displacement`), of the kind :func:`upsample`'s
    ``seam_field`` names ("gibbs" or "pair"; None: no field)."""
    from .observables import knn, psi6_local
    from .stacking import lattice_site, nearest_lattice_offset, site_of

    step = max(1, int(math.ceil(len(src.pos) / 20)))
    used = [p for p in src.pos[::step] if len(p) > 12]
    if not used:
        return None
    theta = float(np.angle(np.sum([psi6_local(p, None).sum() for p in used]))) / 6.0
    c, s_ = math.cos(-theta), math.sin(-theta)
    R = np.array([[c, -s_], [s_, c]])
    bonds = np.concatenate([knn(p @ R.T, None, 6)[0].reshape(-1, 2) for p in used])
    length = np.hypot(bonds[:, 0], bonds[:, 1])
    first = length < 1.25 * np.median(length)          # edge particles' 6 nearest reach the second shell
    ang = np.degrees(np.arctan2(bonds[:, 1], bonds[:, 0]))
    along = first & (np.abs(ang) < FILM_BOND_TOLERANCE_DEG)
    rising = first & (np.abs(ang - 60.0) < FILM_BOND_TOLERANCE_DEG)
    if along.sum() < 10 or rising.sum() < 10:
        return None
    turned = [p @ R.T for p in src.pos]
    a = 2.0 * plane_spacing(turned, 0, 0.5 * float(bonds[along, 0].mean()))    # sites lie on x = x0 (mod a / 2)
    h = plane_spacing(turned, 1, float(bonds[rising, 1].mean()))
    period = np.array([a, 2.0 * h])
    # windows in the lattice's registry: corners at a site o of each frame (from the
    # triangular lattice's two density waves) + (a / 4, h / 2), midway between the planes
    # x = o_x (mod a / 2) and y = o_y (mod h), + whole periods (a, 0), (0, 2 h): every
    # window is the same crystal in the same registry, placed as it is
    origin = np.array([site_of(q, a, h) for q in turned])
    lo, hi = _view_cube(src, R)
    first, periods, count = _registered_corners(lo, hi, origin + np.array([0.25 * a, 0.5 * h]), period)
    window = periods * period
    if np.any(window <= 2 * cutoff_px):
        return None
    site = -np.array([0.25 * a, 0.5 * h])            # a lattice site in window coordinates

    def local(q):
        """The shift that puts the window's own lattice site on ``site`` (nearest image)."""
        own = site_of(q, a, h)
        return nearest_lattice_offset(own - site, a, h)

    def member(q):
        """Particles whose nearest lattice site lies inside the window."""
        at = lattice_site(q - site, a, h) + site
        return np.all((at >= 0) & (at < window), axis=1)

    def tiled_sites(p):
        """Ideal sites (N, 2) px of a tiled system of these windows: one lattice, a site at
        ``site``."""
        return site + lattice_site(p - site, a, h)

    def unstrain(q):
        """A window's positions (n, 2) px less their affine displacement from the ideal
        sites (least squares: a mean displacement, strain and rotation).

        A window holds its part of the crystal's long-wavelength strain and rotation at
        that moment (thermal phonons, and the fitted a, h and orientation's own error), and
        its faces meet windows of other moments: over a window of 29 spacings the gradients
        of the soft-disk films (sd 1.2-2.1e-3, docs/scaling.md) open or close a seam by
        0.3-0.5 px. Tiled as one crystal, every window is put on the common lattice."""
        s = tiled_sites(q)
        x = np.column_stack([s - s.mean(0), np.ones(len(s))])
        return q - x @ np.linalg.lstsq(x, q - s, rcond=None)[0]

    frames = [(q, o + lattice_site(q - o, a, h)) for q, o in zip(turned[::step], origin[::step])]
    fitted = _film_field(frames, a, field) if field else None
    out = _Source(turned, [v @ R.T for v in src.vel], src.size, None, np.stack([lo, hi], axis=2), window,
                  periodic_windows=True, registered=(first, count, period, local, member),
                  displacement=None if fitted is None else (fitted, tiled_sites), unstrain=unstrain,
                  sites=tiled_sites)
    return out, {"turned_deg": math.degrees(-theta), "lattice_px": period.tolist(), "window_px": window.tolist(),
                 "windows_on_common_lattice": True,
                 **({} if fitted is None else {"displacement_field": fitted.as_dict()})}


def _film_field(frames: list, a: float, kind: str = "gibbs"):
    """The crystal's displacement field fitted to ``frames`` ((positions, ideal sites) px
    pairs; :func:`~colloidcg.scaling.lattice_field.fit_field`; ``kind`` "pair": without its
    Gaussian part, a pair interaction on the first-shell bonds), None where no site has its
    neighbourhood in view."""
    from .lattice_field import fit_field

    try:
        return fit_field(frames, a, gaussian=kind != "pair")
    except ValueError:
        return None


def _view_cube(src: _Source, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper corners (T, d) px, in turned coordinates (``p @ R.T``), of the
    largest axis-aligned square (cube) about each frame's view centre whose turned corners
    stay in the view (half side s reaches s sum_j |R_jk| along the frame's axis k)."""
    width = src.fov[:, :, 1] - src.fov[:, :, 0]                                  # (T, d)
    side = np.min(width / np.abs(R).sum(axis=0)[None, :], axis=1)
    centre = (0.5 * (src.fov[:, :, 0] + src.fov[:, :, 1])) @ R.T
    return centre - 0.5 * side[:, None], centre + 0.5 * side[:, None]


def _registered_corners(lo: np.ndarray, hi: np.ndarray, start: np.ndarray,
                        step: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window corners start + u step (u integer per axis) inside [lo, hi) (T, k) px: each
    frame's first corner (T, k), the whole steps a window may span in every frame (k,),
    and the corners each frame has room for (T, k) (at least 1 wherever steps >= 1)."""
    first = start + np.ceil((lo - start) / step) * step
    steps = np.floor((hi - first) / step).astype(int).min(axis=0)
    count = np.floor((hi - steps * step - first) / step).astype(int) + 1
    return first, steps, count


def _turned_film(src: _Source, turned: list, R: np.ndarray, step: np.ndarray, period: np.ndarray,
                 cutoff_px: float) -> _Source | None:
    """The turned source of a cubic fcc film (:func:`_cubic_film`):
    frames ``turned`` (each ``p @ R.T``), lattice planes spaced ``step`` (d,) px along the
    turned axes (each frame's phase from the mean of exp(2 pi i x / step)), windows of
    whole ``period`` (d,) px inside the largest axis-aligned box about each view's centre
    whose turned corners stay in the view (half side h reaches h sum_j |R_jk| along the
    frame's axis k). None where a window would not be wider than twice the interaction range."""
    d = len(step)
    phase = np.array([[step[k] / (2 * math.pi) * float(np.angle(np.exp(2j * math.pi * q[:, k] / step[k]).sum()))
                       for k in range(d)] for q in turned])
    lo, hi = _view_cube(src, R)
    window = np.floor(float((hi - lo)[:, 0].min()) / period) * period
    if np.any(window <= 2 * cutoff_px):
        return None
    fov = np.stack([lo, hi], axis=2)
    return _Source(turned, [v @ R.T for v in src.vel], src.size, None, fov, window,
                   periodic_windows=True, planes=(step, phase))


#: 3D crystal films (:func:`_crystal_film_3d`): the share of first-shell bonds that must lie
#: within FILM_FCC_TOLERANCE_DEG of the fitted fcc bond directions. fcc keeps 0.97-1 up to
#: a Lindemann ratio of 0.16 (thermal jitter of 1.5 px per axis on 15.6 px bonds); hcp at
#: most 0.78 (a quarter of its bonds lie 45-48 degrees from the nearest fcc bond), so an
#: hcp or randomly stacked crystal is not taken for fcc.
FILM_FCC_SHARE = 0.85
FILM_FCC_TOLERANCE_DEG = 25.0
#: the smallest density-wave amplitude |mean exp(2 pi i x / (a / 2))| along each cubic axis
#: of an fcc film (0.8 under thermal jitter of 1.4 px per axis, a Lindemann ratio of 0.16)
FILM_PLANE_COHERENCE = 0.5
#: the 12 nearest-neighbour directions of fcc, cubic axes along x, y, z
_FCC_BONDS = np.array([v for v in product((-1.0, 0.0, 1.0), repeat=3)
                       if sum(abs(c) for c in v) == 2.0]) / math.sqrt(2.0)


def fcc_orientation(bonds: np.ndarray, starts: int = 400) -> tuple[np.ndarray, float, float]:
    """The rotation that turns first-shell bond vectors of an fcc crystal onto the ideal fcc
    bonds with cubic axes along x, y, z. bonds: (n, 3) px. Returns (R (3, 3), such that
    ``bonds @ R.T`` lie along the ideal bonds; the share of bonds within
    :data:`FILM_FCC_TOLERANCE_DEG` of one; the cubic cell side a px, sqrt 2 times the mean
    over those bonds of the bond projected on its ideal direction, so that thermal
    displacements across the bond average out). The search:
    :func:`~colloidcg.scaling.stacking.lattice_orientation`."""
    from .stacking import lattice_orientation

    R, share, along = lattice_orientation(bonds, _FCC_BONDS, FILM_FCC_TOLERANCE_DEG, starts)
    return R, share, math.sqrt(2.0) * along


def _first_shell_bonds(src: _Source) -> tuple[np.ndarray, int] | None:
    """First-shell bond vectors (n, 3) px of up to 20 frames of an open 3D view (12 nearest
    neighbours, those shorter than 1.3 x the median: an edge particle's 12 nearest reach
    the second shell) and the frame stride; None with fewer than 100 bonds."""
    from .observables import knn

    stride = max(1, int(math.ceil(len(src.pos) / 20)))
    used = [p for p in src.pos[::stride] if len(p) > 26]
    if not used:
        return None
    bonds = np.concatenate([knn(p, None, 12)[0].reshape(-1, 3) for p in used])
    length = np.linalg.norm(bonds, axis=1)
    bonds = bonds[length < 1.3 * np.median(length)]
    return (bonds, stride) if len(bonds) >= 100 else None


def _crystal_film_3d(src: _Source, cutoff_px: float, field: str | None = "gibbs") -> tuple[_Source, dict] | None:
    """One crystal imaged in an open 3D field of view (a confocal stack), as periodic tiles:
    close-packed layers of any stacking, fcc included, as layered windows placed in
    registry (:func:`_stacked_film`); where that cannot be done (too few layers to label, a
    view too thin for two), an fcc crystal as cubic windows (:func:`_cubic_film`). None for
    anything else (bcc, a glass, a liquid).

    Layered windows are preferred for fcc too: on a direct simulation of an fcc film (3360
    spheres at volume fraction 0.70, K = 8; docs/scaling.md) they gave g(r) 0.033 where
    cubic windows, larger (115 px against 98 x 85 x 80 px) but matched by symmetry and
    anchor shifts rather than cut in registry, gave 0.050. ``field``: layered windows also
    get the crystal's displacement field (:func:`_stacked_film`)."""
    found = _first_shell_bonds(src)
    if found is None:
        return None
    bonds, stride = found
    return _stacked_film(src, bonds, cutoff_px, field) or _cubic_film(src, bonds, stride, cutoff_px)


def _cubic_film(src: _Source, bonds: np.ndarray, stride: int, cutoff_px: float) -> tuple[_Source, dict] | None:
    """One fcc crystal imaged in an open 3D field of view as cubic windows: the 2D film's
    method (:func:`_crystal_film`) with the cubic cell. Every frame is
    turned so that the crystal's cubic axes lie along x, y, z (:func:`fcc_orientation`,
    fitted to the first-shell ``bonds`` (n, 3) px of frames ``stride`` apart), and cubic
    windows of n a (a the cubic cell side) are cut inside the largest axis-aligned cube of
    the turned field of view, midway between the lattice planes (spaced a / 2 along each
    cubic axis). Wrapped, such a window continues its lattice, and every symmetry of the
    cube is one of the lattice's, so it is tiled as a periodic fcc box is (matched registry,
    48 symmetries). Returns (the turned source, {"turned_deg" (the rotation's angle),
    "axes" (R's rows, the cubic axes in the frame's coordinates), "lattice_px": [a, a, a], a
    refined to the lattice planes' period, "window_px", "fcc_bond_share",
    "plane_coherence"}) or None where the bonds are not fcc's (hcp, random stacking, a
    glass: :data:`FILM_FCC_SHARE`), its cubic planes are missing (bcc:
    :data:`FILM_PLANE_COHERENCE`) or the window would not be wider than twice the
    interaction range."""
    from scipy.spatial.transform import Rotation

    R, share, a_bonds = fcc_orientation(bonds)
    if share < FILM_FCC_SHARE:
        return None
    turned = [p @ R.T for p in src.pos]
    # the bonds' a is the guess; the planes' period (:func:`plane_spacing`), a / 2 along
    # each cubic axis, averaged, is the answer
    a = float(np.mean([2.0 * plane_spacing(turned, k, 0.5 * a_bonds) for k in range(3)]))
    # the cubic planes a / 2 apart must be there: bcc's bonds pass the fcc test (share 0.87
    # at 0.8 px jitter, its densest planes being distorted close-packed ones), its planes do not
    coherence = min(float(np.mean([abs(np.exp(4j * math.pi * q[:, k] / a).mean()) for q in turned[::stride]]))
                    for k in range(3))
    if coherence < FILM_PLANE_COHERENCE:
        return None
    out = _turned_film(src, turned, R, np.full(3, 0.5 * a), np.full(3, a), cutoff_px)
    if out is None:
        return None
    return out, {"turned_deg": math.degrees(float(Rotation.from_matrix(R).magnitude())), "axes": R.tolist(),
                 "lattice_px": [a] * 3, "window_px": out.window.tolist(), "fcc_bond_share": share,
                 "plane_coherence": coherence}


def _stacked_film(src: _Source, bonds: np.ndarray, cutoff_px: float, field: str | None = "gibbs") -> tuple[_Source, dict] | None:
    """One close-packed crystal of any stacking (fcc, hcp, random) imaged in an open 3D
    field of view, as periodic tiles.

    The frames are turned so that the close-packed layers lie normal to z and a lattice
    vector along x (:func:`~colloidcg.scaling.stacking.close_packed_orientation`, fitted to
    the first-shell ``bonds`` (n, 3) px); a, the row spacing h and the layer spacing c are
    refined to the lattice planes' periods (:func:`plane_spacing`: planes a / 2 apart along
    x, h / 3 along y in every layer, c along z), and each layer is labelled A, B or C
    (:func:`~colloidcg.scaling.stacking.stacking`, over every frame). A window
    is n_x a x n_y 2 h x n c, with n layers whose wrap is a pair of layers the crystal has
    (:func:`~colloidcg.scaling.stacking.periodic_layers`), cut midway between lattice
    planes in registry with a site of the reference layer, inside the largest cube of the
    turned view: wrapped, it continues its lattice and its stacking, and all windows, from
    any frame and any in-plane place, are the same crystal in the same registry. So they are
    placed as they are (no shift, no symmetry): a stacking sequence has no symmetry a
    random shift or reflection could be trusted to keep. Returns (the turned source,
    {"turned_deg", "axes", "lattice_px": [a, 2 h, c], "window_px", "close_packed_share",
    "stacking": the window's layers as letters, "wrap_exact": whether the layer below the
    window repeats its top one, "layer_coherence" and "label_residual_rad" (the layers'
    density-wave amplitude and their worst label's distance from a third of a turn),
    "view_stacking_hc": the stacking of the layers seen, in Jagodzinski's h / c
    notation}) or None where the bonds are not close packed, the layers
    cannot be labelled, or a window would not be wider than twice the interaction range.
    ``field``: also fit the crystal's displacement field (as :func:`_crystal_film`)."""
    from scipy.spatial.transform import Rotation

    from .stacking import (CP_COHERENCE, CP_SHARE, close_packed_orientation, jagodzinski, lattice_site,
                           nearest_lattice_offset, periodic_layers, site_of, stacking)

    R, share, a_bonds = close_packed_orientation(bonds)
    if share < CP_SHARE or not np.isfinite(a_bonds):
        return None
    turned = [p @ R.T for p in src.pos]
    a = 2.0 * plane_spacing(turned, 0, 0.5 * a_bonds)
    h = 3.0 * plane_spacing(turned, 1, a_bonds * math.sqrt(3.0) / 6.0)
    c = plane_spacing(turned, 2, a_bonds * math.sqrt(2.0 / 3.0))
    st = stacking(turned, a, h, c)
    if st is None or st.coherence < CP_COHERENCE:
        return None
    layer_z, origin = st.layer_z, st.origin
    lo, hi = _view_cube(src, R)
    # layers whose whole slab lies inside every frame's cube
    first = int(np.max(np.ceil((lo[:, 2] - layer_z) / c + 0.5)))
    last = int(np.min(np.floor((hi[:, 2] - layer_z) / c - 0.5)))
    run = periodic_layers(st, first, last)
    if run is None:
        return None
    i0, n_layers, exact = run
    # in plane: corners o + (a / 4, h / 6) + u (a, 0) + v (0, 2 h), midway between planes
    # and in the reference layer's registry; as many periods as fit in every frame's cube
    step = np.array([a, 2.0 * h])
    low, periods, count = _registered_corners(lo[:, :2], hi[:, :2], origin + np.array([0.25 * a, h / 6.0]), step)
    window = np.array([periods[0] * a, periods[1] * 2.0 * h, n_layers * c])
    if np.any(window <= 2 * cutoff_px):
        return None
    corner = np.column_stack([low, layer_z + (i0 - 0.5) * c])
    counts = np.column_stack([count, np.ones(len(count), int)])
    site = -np.array([0.25 * a, h / 6.0])            # a site of the reference layer, window coordinates
    # each window layer's lateral place against the reference layer's (a / 2, h / 3) per third
    places = {k: ((st.labels[k] - st.labels[st.reference]) % 3) * np.array([0.5 * a, h / 3.0])
              for k in range(i0, i0 + n_layers)}

    def local(q):
        """The shift (3,) that puts the window's own lattice (its layers' sites, each less its
        lateral place, and its layers' z) where the registry has it."""
        k = np.clip(np.floor(q[:, 2] / c).astype(int), 0, n_layers - 1) + i0
        flat = q[:, :2] - np.array([places[i] for i in k])
        own = site_of(flat, a, h)
        dz = c / (2 * math.pi) * float(np.angle(np.exp(2j * math.pi * (q[:, 2] - 0.5 * c) / c).sum()))
        return np.append(nearest_lattice_offset(own - site, a, h), dz)

    def member(q):
        """Particles whose layer is one of the window's and whose site in it lies inside."""
        k = np.floor(q[:, 2] / c).astype(int)
        inside = (k >= 0) & (k < n_layers)
        place = np.array([places[i0 + j] if 0 <= j < n_layers else (0.0, 0.0) for j in k]).reshape(-1, 2)
        at = lattice_site(q[:, :2] - place - site, a, h) + site + place
        return inside & np.all((at >= 0) & (at < window[:2]), axis=1)

    def tiled_sites(p):
        """Ideal sites (N, 3) px of a tiled system of these windows: layer j (its centre at
        (j + 1/2) c) is window layer j mod n, at its lateral place."""
        j = np.floor(p[:, 2] / c).astype(int)
        place = np.array([places[i0 + k] for k in np.mod(j, n_layers)]).reshape(-1, 2)
        lateral = site + place + lattice_site(p[:, :2] - site - place, a, h)
        return np.column_stack([lateral, (j + 0.5) * c])

    frames = []
    ref_place = st.labels[st.reference]
    for t in range(0, len(turned) if field else 0, max(1, int(math.ceil(len(turned) / 20)))):
        q = turned[t]
        k = np.round((q[:, 2] - layer_z[t]) / c).astype(int)
        known = np.array([i in st.labels for i in k.tolist()], bool)
        if known.sum() < 20:
            continue
        q, k = q[known], k[known]
        place = np.array([((st.labels[i] - ref_place) % 3) * np.array([0.5 * a, h / 3.0]) for i in k.tolist()])
        lateral = origin[t] + place + lattice_site(q[:, :2] - origin[t] - place, a, h)
        frames.append((q, np.column_stack([lateral, layer_z[t] + k * c])))
    fitted = _film_field(frames, a, field) if frames else None
    out = _Source(turned, [v @ R.T for v in src.vel], src.size, None, np.stack([lo, hi], axis=2), window,
                  periodic_windows=True, registered=(corner, counts, np.array([a, 2.0 * h, 0.0]), local, member),
                  displacement=None if fitted is None else (fitted, tiled_sites), sites=tiled_sites)
    return out, {"turned_deg": math.degrees(float(Rotation.from_matrix(R).magnitude())), "axes": R.tolist(),
                 "lattice_px": [a, 2.0 * h, c], "window_px": window.tolist(), "close_packed_share": share,
                 "stacking": st.sequence(i0, i0 + n_layers - 1), "wrap_exact": bool(exact),
                 "layer_coherence": st.coherence, "label_residual_rad": st.residual,
                 "view_stacking_hc": " ".join(jagodzinski([st.labels[k] for k in run]) for run in st.runs()),
                 **({} if fitted is None else {"displacement_field": fitted.as_dict()})}


# ----------------------------------------------------------------------------- relaxation
#: Held layer around the relaxed band, in interaction ranges: a particle's terms depend on
#: its neighbours within the range h and, through their densities and encoded S, on their
#: neighbours within another h (colloidcg/train/patches.py): 2 h, plus a 10 % skin.
HELD_LAYER = 2.0
HELD_SKIN = 0.1


def held_layer_px(cutoff_px: float) -> float:
    """Width of the layer held fixed around the relaxed band, px."""
    return (HELD_LAYER + HELD_SKIN) * cutoff_px


class _Temperature:
    """Context: the model's k_B scaled by ``scale`` inside the block, restored after."""

    def __init__(self, model, scale: float):
        self.model, self.scale = model, float(scale)

    def __enter__(self):
        self.k_B = self.model.k_B
        self.model.k_B = self.k_B * self.scale
        return self.model

    def __exit__(self, *exc):
        self.model.k_B = self.k_B
        return False


def reflect_into_band(pos: np.ndarray, vel: np.ndarray, period: np.ndarray, band_px: float) -> int:
    """Bring particles that left the band back into it, in place: a particle farther than
    ``band_px`` from every seam line (the multiples of ``period`` (d,) px along each axis)
    is reflected specularly at the band's edge along the axis of its nearest seam line,
    its velocity component along that axis reversed. pos, vel : (n, d) px, px/frame.
    Returns the number of particles reflected."""
    line = period * np.round(pos / period)
    off = pos - line                                    # (n, d) signed offset to the nearest line per axis
    axis = np.argmin(np.abs(off), axis=1)
    rows = np.arange(len(pos))
    o = off[rows, axis]
    out = np.abs(o) > band_px
    if not out.any():
        return 0
    r, a = rows[out], axis[out]
    folded = np.sign(o[out]) * np.maximum(2.0 * band_px - np.abs(o[out]), 0.0)
    pos[r, a] = line[r, a] + folded
    vel[r, a] *= -1.0
    return int(out.sum())


def _relax(model, cfg: Configuration, new_seam: np.ndarray, *, band_px: float, cutoff_px: float,
           steps: int, um: float, fps: float, seed: int, noise: bool = True,
           temperature: float = 1.0, period: np.ndarray | None = None,
           substeps: int = 1, observe=None, tick=None) -> tuple[Configuration, int]:
    """Roll out the particles within ``band_px`` of the new seams for ``steps`` frames, the
    next :func:`held_layer_px` wide layer held fixed (the rest of the system does not enter),
    the model's k_B scaled by ``temperature``. With ``period`` (d,) px, the spacing of the new seam lines (the parts' box), the
    band's particles are kept inside the band: after every frame a particle that left it is
    reflected back (:func:`reflect_into_band`), so that the rollout samples the band given
    the held layer and the band keeps its particles (a held particle never moves, so
    without this nothing would cross back inward: the band would lose particles to the
    held layer). Returns (configuration, number of particles moved)."""
    from ..core import State, rollout

    sub = np.nonzero(new_seam < band_px + held_layer_px(cutoff_px))[0]
    mobile = new_seam[sub] < band_px
    if steps == 0 or not mobile.any():
        return cfg, 0
    param = next(model.parameters())
    as_t = lambda a: torch.tensor(np.asarray(a), dtype=param.dtype, device=param.device)  # noqa: E731
    box = as_t(cfg.box * um)
    size = None if cfg.size is None else as_t(cfg.size[sub])
    boundary = as_t(~mobile).bool()
    pos, vel = cfg.pos[sub].copy(), cfg.vel[sub].copy()
    chunks = [steps] if period is None and observe is None else [1] * steps
    with torch.no_grad(), _Temperature(model, temperature):
        S = model.initial_S(as_t(pos * um), None, box)
        for k, n in enumerate(chunks):
            res = rollout(model, State(as_t(pos * um), as_t(vel * um * fps), S, size), n, 1.0 / fps, box=box,
                          seed=seed + k, noise=noise, boundary=boundary, substeps=substeps)
            pos = np.mod(res.r[-1].cpu().numpy() / um, cfg.box)
            vel = res.v[-1].cpu().numpy() / um / fps
            S = res.S[-1]
            if period is not None:
                m = np.nonzero(mobile)[0]
                p, v = pos[m], vel[m]
                reflect_into_band(p, v, np.asarray(period, float), band_px)
                pos[m], vel[m] = np.mod(p, cfg.box), v
            if tick is not None:
                tick(n)
            if observe is not None:
                whole = cfg.pos.copy()
                whole[sub] = pos
                if observe(whole):
                    break
    out_pos = cfg.pos.copy()
    out_vel = cfg.vel.copy()
    out_pos[sub] = pos
    out_vel[sub] = vel
    return Configuration(out_pos, out_vel, cfg.size, cfg.box, cfg.seam, cfg.tile, cfg.n_tiles), int(mobile.sum())


#: k_B scales tried when calibrating the relaxation temperature (:func:`relaxation_temperature`):
#: from 1 down while the model's rollouts are less ordered than the input, up otherwise.
TEMPERATURE_GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
#: Input frames rolled out per scale, and the fewest steps rolled out.
CALIBRATION_FRAMES = 4
CALIBRATION_MIN_STEPS = 10


def shell_histogram(pos: np.ndarray, box: np.ndarray | None, centres: np.ndarray, r_max: float, bins: int,
                    area: float) -> tuple[np.ndarray, np.ndarray]:
    """Pair counts and ideal-gas counts in ``bins`` shells up to ``r_max`` px around the
    ``centres`` (N,) bool particles of one configuration ``pos`` (N, d) px, neighbours
    among all particles (minimum image in ``box``; open: ``area`` is the field of view's
    area or volume, px^d, and the centres must lie at least ``r_max`` inside it). Returns
    ((bins,) pair counts, (bins,) ideal counts); their ratio summed over configurations
    is g(r)."""
    from ..neighbours import pairs

    d = pos.shape[1]
    edges = np.linspace(0.0, r_max, bins + 1)
    pr, dist = pairs(pos, r_max, box, sort=False, distances=True)
    w = centres[pr[:, 0]].astype(float) + centres[pr[:, 1]].astype(float)
    counts = np.histogram(dist, edges, weights=w)[0]
    shell = (np.pi * np.diff(edges ** 2)) if d == 2 else (4.0 / 3.0 * np.pi * np.diff(edges ** 3))
    ideal = int(centres.sum()) * (len(pos) - 1) / area * shell
    return counts, ideal


def input_stability(model, src: "_Source", um: float, fps: float, frames: int = 2):
    """:func:`colloidcg.core.stability.stable_substeps` of ``model`` at ``frames`` evenly
    spaced configurations of the input (a field of view's are open, a box's periodic)."""
    from ..core import State
    from ..core.stability import stable_substeps

    param = next(model.parameters())
    as_t = lambda a: torch.tensor(np.asarray(a), dtype=param.dtype, device=param.device)  # noqa: E731
    box = None if src.box is None else as_t(src.box * um)
    states = []
    for t in np.unique(np.linspace(0, len(src.pos) - 1, min(len(src.pos), frames)).round().astype(int)):
        p = np.mod(src.pos[t], src.box) if src.box is not None else src.pos[t]
        r = as_t(p * um)
        size = None if src.size[t] is None else as_t(src.size[t])
        with torch.no_grad():
            states.append(State(r, torch.zeros_like(r), model.initial_S(r, None, box), size))
    return stable_substeps(model, states, 1.0 / fps, box)


def relaxation_temperature(model, src: "_Source", *, steps: int, cutoff_px: float, um: float, fps: float,
                           seed: int, grid=TEMPERATURE_GRID, substeps: int = 1) -> dict:
    """The scale of the model's k_B under which its rollouts of the input keep the input's
    first coordination shell.

    ``CALIBRATION_FRAMES`` evenly spaced input frames are rolled out for max(``steps``,
    ``CALIBRATION_MIN_STEPS``) frames at scales of ``grid`` (open fields of view: the
    particles within :func:`held_layer_px` of the edge held fixed). The statistic is the
    mean of g(r) over the input's first peak (the bins from the first with g > 1 to the
    last before g falls below 1 again, up to the interaction range), from the second half
    of each rollout. Scales are tried from 1 down (rollouts less ordered than the input)
    or up (more ordered) until the statistic crosses the input's value; the scale is
    interpolated linearly there (the closest scale tried if it never does). ``substeps``:
    integration steps per frame, as the relaxation takes them. Returns
    {"k_B_scale", "first_shell_g" (input), "grid" {scale tried: rollout value}}.
    """
    from ..core import State, rollout

    n = len(src.pos)
    take = np.unique(np.linspace(0, n - 1, min(n, CALIBRATION_FRAMES)).round().astype(int))
    bins = 24
    n_steps = max(int(steps), CALIBRATION_MIN_STEPS)
    layer = held_layer_px(cutoff_px)

    def centres_and_area(p, t):
        """Shell centres and the area of input frame t's field of view."""
        if src.box is not None:
            return np.ones(len(p), bool), float(np.prod(src.box))
        lo, hi = src.fov[t, :, 0], src.fov[t, :, 1]
        return np.all((p > lo + layer) & (p < hi - layer), axis=1), float(np.prod(hi - lo))

    def g_of(configs):
        """g(r) of configurations given as (positions, input frame index) pairs."""
        c_sum, i_sum = np.zeros(bins), np.zeros(bins)
        for p, t in configs:
            cen, area = centres_and_area(p, t)
            if cen.sum() == 0:
                continue
            c, i = shell_histogram(p, src.box, cen, cutoff_px, bins, area)
            c_sum += c
            i_sum += i
        return c_sum / np.maximum(i_sum, 1e-300)

    step = max(1, n // 20)
    g0 = g_of([(np.mod(src.pos[t], src.box) if src.box is not None else src.pos[t], t)
               for t in range(0, n, step)])
    above = np.nonzero(g0 > 1.0)[0]
    if len(above) == 0 or model.k_B == 0.0:
        return {"k_B_scale": 1.0, "first_shell_g": None, "grid": {}}
    first = above[0]
    last = first
    while last + 1 < bins and g0[last + 1] > 1.0:
        last += 1
    peak = slice(first, last + 1)
    target = float(g0[peak].mean())
    param = next(model.parameters())
    as_t = lambda a: torch.tensor(np.asarray(a), dtype=param.dtype, device=param.device)  # noqa: E731
    box = None if src.box is None else as_t(src.box * um)
    values = {}

    def measure(scale):
        configs = []
        for k, t in enumerate(take):
            p = np.mod(src.pos[t], src.box) if src.box is not None else src.pos[t]
            r0 = as_t(p * um)
            size = None if src.size[t] is None else as_t(src.size[t])
            # open field of view: the particles near its edges held fixed (no free surface)
            boundary = None if src.box is not None else as_t(~centres_and_area(p, t)[0]).bool()
            with torch.no_grad(), _Temperature(model, scale):
                S0 = model.initial_S(r0, None, box)
                res = rollout(model, State(r0, as_t(src.vel[t] * um * fps), S0, size), n_steps, 1.0 / fps,
                              box=box, seed=seed + k, boundary=boundary, substeps=substeps)
            for r in res.r[n_steps // 2 + 1:]:
                q = r.cpu().numpy() / um
                configs.append((np.mod(q, src.box) if src.box is not None else q, t))
        values[float(scale)] = float(g_of(configs)[peak].mean())
        return values[float(scale)] - target

    grid = sorted(float(x) for x in grid)
    first_y = measure(1.0)
    order = [x for x in grid if x > 1.0] if first_y > 0 else [x for x in grid[::-1] if x < 1.0]
    for scale in order:
        if measure(scale) * first_y <= 0:
            break
    xs = np.array(sorted(values))
    ys = np.array([values[x] for x in xs]) - target
    best = float(xs[np.argmin(np.abs(ys))])
    for a, b, ya, yb in zip(xs[:-1], xs[1:], ys[:-1], ys[1:]):
        if ya == 0.0 or ya * yb < 0:
            best = float(a + (b - a) * ya / (ya - yb)) if ya != yb else float(a)
            break
    return {"k_B_scale": best, "first_shell_g": target, "grid": values}


# ----------------------------------------------------------------------------- healing time
#: ``relax_steps="auto"``: the seams are relaxed until the particles have moved, rms, sqrt(HEAL_MSD)
#: nearest-neighbour distances. Measured on LAMMPS Brownian dynamics of WCA disks
#: (benchmarks/results/upsample_lammps.md): LAMMPS's own dynamics left -0.03 to -0.05 of 4.6
#: neighbours at the seams after 0.14 d^2 and none after about 0.35 d^2; the model's
#: relaxation left -0.028 (-2.6 standard errors) at 0.15 d^2 and -0.013 (-0.7) at 0.3 d^2.
HEAL_MSD = 0.3
#: pilot doublings relaxed to measure it, and the most frames.
HEALING_PILOTS = 2
HEALING_MAX_FRAMES = 600


def input_rdf(src: "_Source", cutoff_px: float, bins: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The input's g(r): (bin edges (bins + 1,), pair counts (bins,), ideal-gas counts (bins,))
    from up to 20 input frames, ``bins`` bins up to 2 x ``cutoff_px`` (at most just under
    half a periodic box; an open field of view's shells centred at least that far inside it)."""
    r_max = 2.0 * cutoff_px
    if src.box is not None:
        r_max = min(r_max, 0.499 * float(np.min(src.box)))
    edges = np.linspace(0.0, r_max, bins + 1)
    counts, ideal = np.zeros(bins), np.zeros(bins)
    step = max(1, len(src.pos) // 20)
    for t in range(0, len(src.pos), step):
        p = src.pos[t]
        if src.box is not None:
            c, i = shell_histogram(np.mod(p, src.box), src.box, np.ones(len(p), bool), r_max, bins,
                                   float(np.prod(src.box)))
        else:
            lo, hi = src.fov[t, :, 0], src.fov[t, :, 1]
            cen = np.all((p > lo + r_max) & (p < hi - r_max), axis=1)
            if not cen.any():
                continue
            c, i = shell_histogram(p, None, cen, r_max, bins, float(np.prod(hi - lo)))
        counts += c
        ideal += i
    return edges, counts, ideal


def shell_distances(src: "_Source", cutoff_px: float, rdf=None) -> tuple[float, float]:
    """(the first peak of the input's g(r), its first minimum after the peak), px: the
    nearest-neighbour distance and the neighbour distance of the seam checks. g(r) of
    :func:`input_rdf` (60 bins up to 2 x ``cutoff_px``; ``rdf``: its result when already
    computed), smoothed over 3 bins; (``cutoff_px`` / 1.5, ``cutoff_px``) where no pair is
    in range."""
    edges, counts, ideal = input_rdf(src, cutoff_px) if rdf is None else rdf
    if not counts.any():
        # no pair within range (a field of view too small to centre a shell in): the usual
        # ratio of a model's range to the diameter (1.5), and the range
        return cutoff_px / 1.5, cutoff_px
    g = np.convolve(counts / np.maximum(ideal, 1e-300), np.ones(3) / 3, mode="same")
    mid = 0.5 * (edges[1:] + edges[:-1])
    peak = int(np.argmax(g))
    rising = np.nonzero(np.diff(g[peak:]) > 0)[0]
    low = peak + (int(rising[0]) if len(rising) else int(np.argmin(g[peak:])))
    return float(mid[peak]), float(mid[max(low, peak + 1)])


def seam_line_distance(pos: np.ndarray, period: np.ndarray) -> np.ndarray:
    """(N,) distance of each position (N, d) px to the nearest seam line of a level whose
    parts have side ``period`` (d,) px (the lines at multiples of ``period``)."""
    off = pos - period * np.round(pos / period)
    return np.min(np.abs(off), axis=1)


def healing_frames(place, relax, shell_px: float, r_bond_px: float, *, max_frames: int = HEALING_MAX_FRAMES,
                   pilots: int = HEALING_PILOTS, heal_msd: float = HEAL_MSD, input_g=None) -> dict:
    """Model frames of seam relaxation for ``relax_steps="auto"``: as many as the relaxation
    takes to move the particles, rms, sqrt(``heal_msd``) x ``shell_px`` (the input's
    nearest-neighbour distance) from where they were placed.

    Why a distance and not the seam itself: a seam heals when the particles along it have
    left the positions the tiling gave them for positions their neighbours select, which in
    a dense liquid means a good part of a cage size (:data:`HEAL_MSD`, measured on LAMMPS
    Brownian WCA disks, where a fresh seam lacks 0.35 of 4.6 neighbours). The mean squared
    displacement of a whole pilot is precise after a few frames; the seam's own neighbour
    deficit over a few pilots is not (its frame-to-frame noise is as large as what is left
    to heal).

    ``pilots`` first-level doublings are placed (``place(1)``) and relaxed (``relax``) frame
    by frame until the mean squared displacement of their relaxed particles reaches the
    target or ``max_frames``.
    Recorded per frame, for the report: that displacement and the neighbour deficit of the
    particles within ``shell_px`` of a seam line against those farther than 1.5
    ``r_bond_px`` (neighbours within ``r_bond_px``, pooled over pilots, up to the shortest
    pilot). ``input_g``: (bin edges, g(r)) of the input; the relaxed pilots' g(r) on the same
    bins is compared with it ("g_error", :func:`colloidcg.evaluate.rel_rms`; None without
    ``input_g``): how far the relaxation moved the structure from the data's. Returns
    {"frames" (the pilots' mean), "reached" (bool, every pilot), "target_msd_px2",
    "g_error", "pilot_frames", "msd_px2" (one list per pilot), "deficit"}.
    """
    target = heal_msd * shell_px ** 2
    msd, deficit, frames, reached, relaxed = [], [], [], True, []
    for _ in range(pilots):
        cfg, new, m = place(1)
        rows = []

        def observe(pos, box=cfg.box, period=cfg.box / m, start=cfg.pos.copy()):
            n = neighbour_counts(pos, box, r_bond_px)
            d = seam_line_distance(pos, period)
            band, bulk = d < shell_px, d > 1.5 * r_bond_px
            disp = pos - start
            disp -= box * np.round(disp / box)
            sq = np.sum(disp ** 2, axis=1)
            moving = sq > 0                      # the relaxed particles (the held layer never moves)
            rows.append((float(np.mean(sq[moving])) if moving.any() else 0.0, n[band].sum(), band.sum(),
                         n[bulk].sum(), bulk.sum()))
            return rows[-1][0] >= target

        observe(cfg.pos)
        relaxed.append(relax(cfg, new, m, max_frames, observe))
        a = np.array(rows)
        reached &= bool(a[-1, 0] >= target)
        frames.append(len(a) - 1)
        msd.append(a[:, 0])
        deficit.append(a[:, 1:])
    n = min(len(x) for x in msd)
    tot = sum(x[:n] for x in deficit)
    g_error = None
    if input_g is not None:
        edges, g_in = input_g
        c_sum, i_sum = np.zeros(len(g_in)), np.zeros(len(g_in))
        for c in relaxed:
            pc, pi = shell_histogram(np.mod(c.pos, c.box), c.box, np.ones(len(c.pos), bool), float(edges[-1]),
                                     len(g_in), float(np.prod(c.box)))
            c_sum += pc
            i_sum += pi
        g_error = rel_rms(c_sum / np.maximum(i_sum, 1e-300), g_in)
    return {"frames": int(round(np.mean(frames))), "reached": reached, "target_msd_px2": float(target),
            "g_error": g_error,
            "pilot_frames": frames, "msd_px2": [x.round(4).tolist() for x in msd],
            "deficit": (tot[:, 0] / np.maximum(tot[:, 1], 1) - tot[:, 2] / np.maximum(tot[:, 3], 1)).round(4).tolist()}


# ----------------------------------------------------------------------------- adaptive relaxation
#: ``relax_steps="adaptive"`` (the default): model frames of the band tried first, the
#: relaxation that soft liquids need (docs/scaling.md)
ADAPTIVE_STEPS = 3
#: first-level doublings placed and relaxed to judge it
ADAPTIVE_PILOTS = 8
#: the seams count as unhealed where they lack more than this share of the bulk's
#: neighbours, beyond chance (a 3-sigma Student t over the pilots' tiles). Measured by the
#: pilots (docs/scaling.md, "The adaptive default"): LAMMPS WCA disks 0.14-0.23 of 6.0
#: (2.4-3.8 %), WCA spheres 0.20-0.32 of 11.2 (1.8-2.9 %); the synthetic harmonic soft
#: disks -0.07 to +0.09 of 5.9, within 2 standard errors.
ADAPTIVE_DEFICIT = 0.015
#: :func:`seam_pilots` compares the seams with the particles farther than this many ``r_bond``
#: from every seam
PILOT_BULK = 1.0
#: the adaptive default escalates only where the healing pilots' whole-system relaxation
#: keeps the input's g(r) within this relative RMS error (up to twice the interaction
#: range): a model that does not simulate the input well (the Kob-Andersen mixture's,
#: docs/scaling.md) would replace the data's structure with its own
ADAPTIVE_G_TOLERANCE = 0.1


def seam_pilots(place, relax, shell_px: float, r_bond_px: float, *, steps: int = ADAPTIVE_STEPS,
                pilots: int = ADAPTIVE_PILOTS) -> dict:
    """Does ``steps`` frames of band relaxation heal the seams of this input?

    ``pilots`` first-level doublings are placed (``place(1)``) and relaxed (``relax``) for
    ``steps`` frames. Per tile of every pilot, the neighbours within ``r_bond_px`` of its
    particles within ``shell_px`` of a seam minus those of its particles farther than
    ``r_bond_px`` from every seam, whose neighbourhoods reach across none
    (:data:`PILOT_BULK`; :func:`~colloidcg.scaling.seams.tile_differences`). The final
    seam check's bulk lies 3 ``r_bond_px`` away; this nearer one holds more of a small
    tile's particles, which halved the error on the test soft disks (3D cubes of 256
    spheres have almost no bulk that far). The seams are unhealed
    when that deficit is beyond chance (more than a 3-sigma Student t's standard errors over
    the tiles) and larger than :data:`ADAPTIVE_DEFICIT` of the bulk's neighbours: the
    signature of steep contacts, whose fresh seams lack part of the first shell until the
    particles have moved a good part of their spacing. An excess of neighbours or a |psi6|
    deficit alone does not count (longer relaxation does not remove those: the model's own
    structure, or ordered tiles' grain boundaries).

    Returns {"steps", "pilots", "tiles", "difference" (neighbours, band minus bulk), "se",
    "z", "threshold", "bulk_px", "bulk_neighbours", "unhealed" (bool)}.
    """
    from scipy.stats import t as student_t

    tables, counts, box = [], [], None
    for k in range(pilots):
        cfg, new, m = place(1)
        cfg = relax(cfg, new, m, steps)
        box = cfg.box
        dim = cfg.pos.shape[1]
        cols = {"frame": np.full(len(cfg.pos), k), **{"xyz"[a]: cfg.pos[:, a] for a in range(dim)},
                "seam_distance": cfg.seam, "tile": cfg.tiles()}
        tables.append(pd.DataFrame(cols))
        counts.append(neighbour_counts(np.mod(cfg.pos, box), box, r_bond_px))
    pilot = pd.concat(tables, ignore_index=True)
    counts = np.concatenate(counts)
    bulk_px = PILOT_BULK * r_bond_px
    diff = tile_differences(pilot, box, r_bond_px, shell_px, bulk_px, values={"density": counts})["density"]
    bulk_n = counts[pilot["seam_distance"].to_numpy() > bulk_px]
    bulk = float(np.mean(bulk_n)) if len(bulk_n) else math.nan
    out = {"steps": int(steps), "pilots": int(pilots), "tiles": int(len(diff)), "difference": None, "se": None,
           "z": None, "threshold": None, "bulk_px": float(bulk_px), "bulk_neighbours": bulk, "unhealed": False}
    if len(diff) < 4 or not np.isfinite(bulk):
        return out                                  # cannot be judged: keep the default
    mean, se = float(np.mean(diff)), float(np.std(diff, ddof=1) / math.sqrt(len(diff)))
    threshold = float(student_t.ppf(1.0 - SEAM_FALSE_ALARM / 2, len(diff) - 1))
    z = mean / se if se > 0 else None
    beyond_chance = z is None or z < -threshold
    out.update(difference=mean, se=se, z=z, threshold=threshold,
               unhealed=bool(beyond_chance and mean < -ADAPTIVE_DEFICIT * bulk))
    return out


def tiling_summary(tiling: dict) -> str:
    """One line on how the tiles were placed, from an :class:`Upsampled`'s ``parameters["tiling"]``."""
    text = tiling["method"]
    if tiling.get("requested") == "auto":
        c = tiling.get("order_coherence")
        text += (" (auto: the input's bond order has no coherence to judge)" if c is None else
                 f" (auto: the input's order coherence {c:.2f} is {'at least' if c >= tiling['auto_threshold'] else 'below'}"
                 f" {tiling['auto_threshold']:g}, {'one crystal orientation spans a tile' if c >= tiling['auto_threshold'] else 'no single crystal'})")
    film = tiling.get("crystal_film")
    if film:
        text += (f"; a crystal film: turned {film['turned_deg']:.1f} deg, windows "
                 f"{' x '.join(f'{w:.1f}' for w in film['window_px'])} px commensurate with its lattice")
        if "displacement_field" in film:
            f = film["displacement_field"]
            text += (f"; seams redrawn from its displacement field (neighbours explain "
                     f"{100 * f['variance_explained']:.0f} % of a site's displacement variance)")
        if "stacking" in film:
            text += (f", close-packed layers {film['stacking']} (placed as cut, in registry; the layer "
                     f"below {'repeats' if film['wrap_exact'] else 'does not repeat'} the top one)")
    if "seam_order_chosen" in tiling:
        text += (f"; seam bond order {tiling['seam_order_chosen']:.3f} chosen, "
                 f"{tiling['seam_order_candidates_mean']:.3f} on average over the candidates")
    return text


def relaxation_summary(seam_relaxation: dict) -> str:
    """One line on the seam relaxation an :class:`Upsampled`'s ``parameters["seam_relaxation"]``
    records: how many model frames, over which band, what the adaptive pilots saw, and the
    sites of a crystal film redrawn from its displacement field."""
    band = seam_relaxation["band_px"]
    where = "the whole system" if band == "all" else f"a band of {band:.3g} px"
    text = f"{seam_relaxation['model_steps']} model frames of {where}"
    field = seam_relaxation.get("seam_field")
    redrawn = ""
    if field and field["method"] != "none":
        what = "pair interaction on the lattice's bonds" if field["method"] == "pair" else "displacement field"
        redrawn = (f"; {field['particles_redrawn']} sites within {field['band_px']:.3g} px of the seams redrawn "
                   f"from the crystal's {what} ({field['sweeps']} Gibbs sweeps)")
    if seam_relaxation.get("crystal_tiles"):
        return ("none (adaptive: the tiles are one crystal, order coherence "
                f"{seam_relaxation['crystal_tiles']['order_coherence']:.2f}, placed in registry; a relaxation "
                "would give the seams the model's structure rather than the data's)" + redrawn)
    pilots = seam_relaxation.get("adaptive")
    if pilots:
        seen = ("not judged" if pilots["difference"] is None else
                f"{pilots['difference']:+.3g} neighbours at the seams" +
                ("" if pilots["z"] is None else f" ({pilots['z']:+.1f} SE)"))
        if not pilots["unhealed"]:
            verdict = "healed)"
        elif pilots.get("escalated"):
            verdict = "unhealed: relaxed until the particles moved)"
        else:
            g_error = (seam_relaxation.get("healing") or {}).get("g_error")
            verdict = (f"unhealed, but relaxing the whole system moved g(r) {g_error:.2g} from the input's: "
                       "kept the band's frames)")
        text += f" (adaptive: {pilots['pilots']} pilot doublings {seen} after {pilots['steps']} frames, {verdict}"
    return text + redrawn


class _Bar:
    """A tqdm bar over model frames of seam relaxation, restarted for each phase (healing
    pilots, samples); does nothing when ``enabled`` is False."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = bool(enabled), None

    def start(self, total: int, desc: str) -> None:
        self.close()
        if self.enabled and total > 0:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=int(total), desc=desc, unit="frame", leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ----------------------------------------------------------------------------- entry point
#: Default ``push_quantile`` of :func:`upsample` per dimension (docs/scaling.md: 2D session
#: 16, 3D session 27: g(r) 0.054-0.065 with 0.02, 0.039-0.055 with 0).
PUSH_QUANTILE = {2: 0.02, 3: 0.0}


def upsample(model, model_config: dict, tracks: pd.DataFrame, meta: dict | None = None, *, factor: int,
             frame: int | None = None, samples: int = 1, seed: int = 0, relax_steps: int | str = "adaptive",
             relax_substeps: int | str = "auto", band: float | None = None, push_quantile: float | str = "auto",
             relax_temperature: float | str = "auto",
             band_edge: str = "reflect", seam_overlaps: str = "reinsert", tiling: str = "auto",
             tiling_candidates: int = MATCH_CANDIDATES, seam_field: str = "auto", name: str = "tracks",
             progress: bool = False) -> Upsampled:
    """Large-system snapshots built from ``tracks`` by hierarchical tiling (module docstring).

    Parameters
    ----------
    model : :class:`~colloidcg.core.model.MetriplecticModel` used to relax the seams.
    model_config : the model directory's config dict; its ``calibration`` gives um_per_px,
        fps and, for periodic training data, box_px (used when the sidecar has no box).
    tracks : tracks table (px, frames): frame, particle, x, y [, z] [, the model's size column].
    meta : the table's sidecar; its ``meta.box_px`` is the periodic box (else the model's
        calibration box_px; both given and different: ColloidcgError).
    factor : area (volume) factor K = m^d, m >= 2 integer.
    frame : draw every tile from this frame (default: tiles drawn from all frames at random).
    samples : number of independent large snapshots.
    seed : seed (>= 0) of the tiling's random numbers and of the relaxation noise.
    relax_steps : model frames of seam relaxation per doubling step (0: overlap removal
        only), "auto" (as many as healing takes, :func:`healing_frames`; meant for
        ``band="all"``) or "adaptive" (default): none where one crystal is tiled in
        registry (``tiling`` "matched" and the input's order coherence at least
        :data:`AUTO_COHERENCE`: measured, the relaxation only gave the seams the model's
        structure, g(r) error 0.03 -> 0.07 in 2D and 3D; recorded as
        ``seam_relaxation.crystal_tiles``), else :data:`ADAPTIVE_STEPS` (3) frames of the
        band, unless pilot doublings relaxed that long still lack neighbours at their seams
        (:func:`seam_pilots`: steep-contact, hard-sphere-like liquids), in which case
        "auto" and, where ``band`` is not given, ``band="all"``. Three frames give the
        seams of a soft liquid the input's structure within 2 standard errors in the tests;
        longer relaxations give the band the model's own structure, which is not the
        data's (docs/scaling.md). The choice is recorded in ``seam_relaxation.adaptive``.
    relax_substeps : integration steps per model frame in the relaxation and its temperature
        calibration; "auto" (default): as ``simulate(substeps="auto")`` chooses them at two
        input frames (:func:`colloidcg.core.stability.stable_substeps`; steep contact forces,
        WCA or Lennard-Jones particles, need several, and one step per frame melts the seams).
    band : half-width of the relaxed band along the seams, px (default: the model's
        interaction range).
    push_quantile : pairs placed across a seam closer than this quantile of the data's
        near-shell distances for their pair of sizes are resolved (``seam_overlaps``)
        before the relaxation (0: the closest approach); after the relaxation only pairs
        closer than the closest approach are pushed apart. "auto" (default):
        :data:`PUSH_QUANTILE` for the model's dimension, 0.02 in 2D and 0 in 3D (where
        most contacts near a seam cross it, and resolving those below 2 % thinned g(r)'s
        contact shell: docs/scaling.md).
    relax_temperature : scale of the model's k_B during the seam relaxation; "auto": the
        scale under which the model's rollouts of the input keep the input's first
        coordination shell (:func:`relaxation_temperature`); 1: the model as trained.
    seam_overlaps : "reinsert" (default): a pair placed too close across a new seam loses
        one particle to the largest gap of its own part at its own distance to the seams
        (:func:`reinsert_across_seams`), so no density wave is made; "push": the pair is
        pushed apart symmetrically (the method before session 16). Either way pairs still
        closer than the closest approach are then pushed apart (:func:`separate`).
    band_edge : "reflect" (default): a band particle that leaves the band is reflected
        back into it after every frame (:func:`reflect_into_band`), so the band keeps its
        particles and the rollout samples the band given the held layer; "held": the
        band's particles move freely among the held layer, which never moves (band
        particles that cross the band's edge stay where they went and none come back, so
        the band loses particles to the layer: docs/scaling.md).
    tiling : "auto" (default): "matched" where one orientation of the bond order spans the
        input's frames (median order coherence at least :data:`AUTO_COHERENCE`, a single
        crystal: :func:`choose_tiling`), else "random"; "random": every placed part gets a
        uniformly random symmetry and cyclic shift; "matched": the parts after the first of
        each doubling get the best of ``tiling_candidates`` symmetries and registry shifts,
        scored by the local bond order (|psi6| in 2D, q6 in 3D) of the particles along the
        new seams (:func:`match_parts`), so that ordered tiles continue their lattice across
        the seams instead of meeting at a grain boundary (one 2D crystal filmed in an open
        field of view, or one 3D fcc crystal, is turned and cut into windows commensurate
        with its lattice, :func:`_crystal_film`, :func:`_crystal_film_3d`; one of
        close-packed layers stacked otherwise, hcp or at random, into windows of whole
        layers placed as cut, :func:`_stacked_film`; other windows of an open field of view are cut again in
        registry rather than shifted); "oriented" (2D, a periodic box
        only): the same score over windows of each part's periodic pattern turned to the
        placed neighbours' lattice orientation, any angle (the particle count then varies by
        what the cut edges take or leave). The first part of each doubling keeps its random
        transform.
    tiling_candidates : candidates per placed part with ``tiling="matched"`` or
        ``"oriented"`` (default 32: 4 shifts for each of the 8 symmetries of a square box;
        16 for each hand).
    seam_field : the seams (and windows' faces) of a crystal film in registered windows
        (2D, or 3D close-packed layers of any stacking): "gibbs": once the sample is whole,
        the sites within :data:`~colloidcg.scaling.lattice_field.BAND_SPACINGS` lattice
        spacings of a seam get displacements redrawn from the crystal's displacement field,
        fitted to the film (:mod:`colloidcg.scaling.lattice_field`; recorded in
        ``seam_relaxation.seam_field`` and ``tiling.crystal_film.displacement_field``);
        "pair": the same with the field's law a pair interaction on the first-shell
        bonds alone (``fit_field(gaussian=False)``, fitted in 1-2 minutes); "auto"
        (default): "pair" (docs/scaling.md: the Gaussian field leaves the seams too
        ordered, 2D films by 0.3-0.6 %, 3D LAMMPS films by 0.2-0.4 %, +2.3 to +3.0 standard
        errors over runs, where the pair field's are within 1.5); "none": the windows' own
        displacements are kept, and neighbours across a face keep displacements that were
        not correlated (2D: |psi6| 0.025-0.03 low within a spacing). Other inputs
        (liquids, periodic boxes, cubic fcc windows) are not affected.
    name : the input's name in messages (a file name).
    progress : show tqdm bars over the model frames of seam relaxation (the healing pilots
        of ``relax_steps="auto"``, then the samples).

    Returns
    -------
    :class:`Upsampled`: ``samples`` snapshots, each in the periodic box m times the tile's
    side per axis (open input: m times the square window's side).
    """
    t_start = time.perf_counter()
    dim = int(model.config.dim)
    steps = side_steps(factor, dim)
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ParameterError(f"seed: must be an integer >= 0, got {seed}")
    if int(samples) != samples or samples < 1:
        raise ParameterError(f"samples: must be a positive integer, got {samples}")
    adaptive, auto_steps = relax_steps == "adaptive", relax_steps == "auto"
    if not (auto_steps or adaptive) and (isinstance(relax_steps, (bool, str)) or int(relax_steps) != relax_steps
                                         or relax_steps < 0):
        raise ParameterError(f"relax_steps: must be 'adaptive', 'auto' or an integer >= 0, got {relax_steps!r}")
    if adaptive:
        relax_steps = ADAPTIVE_STEPS
    if not (relax_substeps == "auto" or (isinstance(relax_substeps, (int, np.integer))
                                         and not isinstance(relax_substeps, bool) and relax_substeps >= 1)):
        raise ParameterError(f"relax_substeps: must be 'auto' or an integer >= 1, got {relax_substeps!r}")
    if push_quantile == "auto":
        push_quantile = PUSH_QUANTILE[dim]
    if isinstance(push_quantile, (bool, str)) or not 0.0 <= push_quantile < 1.0:
        raise ParameterError(f"push_quantile: must be 'auto' or a number in [0, 1), got {push_quantile!r}")
    if not (relax_temperature == "auto" or (isinstance(relax_temperature, (int, float))
                                            and not isinstance(relax_temperature, bool)
                                            and np.isfinite(relax_temperature) and relax_temperature > 0)):
        raise ParameterError(f"relax_temperature: must be 'auto' or a number > 0, got {relax_temperature!r}")
    if seam_overlaps not in ("reinsert", "push"):
        raise ParameterError(f"seam_overlaps: must be 'reinsert' or 'push', got {seam_overlaps!r}")
    if band_edge not in ("held", "reflect"):
        raise ParameterError(f"band_edge: must be 'held' or 'reflect', got {band_edge!r}")
    if tiling not in TILINGS:
        raise ParameterError(f"tiling: must be one of {', '.join(TILINGS)}, got {tiling!r}")
    if tiling == "oriented" and dim != 2:
        raise ParameterError(f"tiling: 'oriented' turns tiles to their neighbours' psi6 phase, a 2D order; the "
                             f"model is {dim}D (use tiling='matched' or 'random')")
    if seam_field not in SEAM_FIELDS:
        raise ParameterError(f"seam_field: must be one of {', '.join(SEAM_FIELDS)}, got {seam_field!r}")
    if seam_field == "auto":
        seam_field = "pair"
    if isinstance(tiling_candidates, bool) or int(tiling_candidates) != tiling_candidates or tiling_candidates < 1:
        raise ParameterError(f"tiling_candidates: must be a positive integer, got {tiling_candidates}")
    cal = model_config.get("calibration", {}) or {}
    um = float(cal.get("um_per_px") or 1.0)
    fps = float(cal.get("fps") or 1.0)
    cutoff_px = float(model.cutoff) / um
    band_px = cutoff_px if band is None else (np.inf if band == "all" else float(band))
    if not band_px > 0:
        raise ParameterError(f"band: must be > 0 px, got {band}")
    size_col = model.config.size_column or None
    src = _source(tracks, meta, model_config, size_col, frame, cutoff_px, dim, name)
    if tiling == "oriented" and src.box is None:
        raise ParameterError(f"tiling: 'oriented' turns each tile's periodic pattern, and {name} has no periodic "
                             "box (a field of view's windows are not periodic; use 'matched' or 'random')")
    requested, coherence = tiling, None
    if tiling == "auto":
        tiling, coherence = choose_tiling(src.pos, src.box)
    elif tiling == "matched":
        coherence = choose_tiling(src.pos, src.box)[1]
    one_crystal = tiling == "matched" and coherence is not None and coherence >= AUTO_COHERENCE
    film = None
    if tiling == "matched" and src.box is None:
        film = ((_crystal_film if dim == 2 else _crystal_film_3d)(src, cutoff_px,
                                                                  None if seam_field == "none" else seam_field)
                if one_crystal else None)
        if film is not None:
            src, film = film
        else:
            src = _narrow_windows(src, cutoff_px, name)
    crystal = None
    if adaptive and one_crystal:
        # one crystal, its tiles placed in registry: nothing a short relaxation heals, and
        # the relaxation gives the band the model's structure (docs/scaling.md)
        crystal = {"order_coherence": coherence}
        adaptive, relax_steps = False, 0

    def recut(t: int, lo: np.ndarray) -> Configuration | None:
        """A window of frame t with lower corner lo (px), None outside its field of view."""
        fov = src.fov[t]
        if np.any(lo < fov[:, 0]) or np.any(lo + src.window > fov[:, 1]):
            return None
        return _window(src, t, lo)
    closest = closest_approach(src.pos[:20] if len(src.pos) > 20 else src.pos,
                               src.size[:20] if len(src.size) > 20 else src.size,
                               src.box if src.box is not None else None)
    push = closest if not push_quantile else closest_approach(
        src.pos[:20], src.size[:20], src.box if src.box is not None else None, quantile=push_quantile)
    stability = None
    if relax_substeps == "auto":
        stability = input_stability(model, src, um, fps) if auto_steps or relax_steps > 0 else None
        relax_substeps = 1 if stability is None else stability.substeps
    relax_substeps = int(relax_substeps)
    if relax_temperature == "auto" and (auto_steps or relax_steps > 0):
        calibration = relaxation_temperature(model, src, steps=0 if auto_steps else int(relax_steps),
                                             cutoff_px=cutoff_px, um=um,
                                             fps=fps, seed=int(seed), substeps=relax_substeps)
    else:
        scale = 1.0 if relax_temperature == "auto" else float(relax_temperature)
        calibration = {"k_B_scale": scale, "first_shell_g": None, "grid": {}}
    k_B_scale = float(calibration["k_B_scale"])
    rng = np.random.default_rng(seed)
    stats = {"displaced": 0, "dropped": 0, "relaxed": 0, "displaced_after_relaxation": 0, "reinserted": 0,
             "healed": 0}
    match_scores = {"score": [], "candidates_mean": []}

    def place(level: int) -> tuple[Configuration, np.ndarray, int]:
        """Level ``level``'s parts tiled, overlaps across the new seams resolved: (the
        configuration, (N,) distance to the nearest new seam px, m)."""
        m = steps[level - 1]
        parts = []
        for _ in range(m ** dim):
            part = build(level - 1)
            parts.append(_transform(part, rng) if level > 1 and src.registered is None else part)
        # a close-packed film's windows are in registry as they are (:func:`_stacked_film`)
        if tiling != "random" and src.registered is None:
            parts, rep = match_parts(parts, m, rng, candidates=int(tiling_candidates), rotate=tiling == "oriented",
                                     recut=recut if src.box is None else None)
            for key in match_scores:
                if rep[key] is not None:
                    match_scores[key].append(rep[key])
        cfg, new, part = tile_configurations(parts, m)
        # a crystal film whose seams are redrawn from its displacement field: one particle
        # per site, so nothing is reinserted (a particle moved to a gap would leave a
        # vacancy and make an interstitial), and the field's own close pairs are the
        # crystal's, so only pairs closer than the data's closest approach are separated
        redrawn = src.displacement is not None and seam_field != "none"
        if redrawn and level == len(steps):
            # once, when the sample is whole: every seam (and window face) at once
            field, tiled_sites = src.displacement
            pos, n_healed = heal(cfg.pos, tiled_sites(cfg.pos), cfg.box, field, cfg.seam < BAND_SPACINGS * field.a,
                                 rng)
            cfg = Configuration(pos, cfg.vel, cfg.size, cfg.box, cfg.seam, cfg.tile, cfg.n_tiles, wrap=cfg.wrap)
            stats["healed"] += n_healed
        if seam_overlaps == "reinsert" and not redrawn:
            cfg, new, n_re = reinsert_across_seams(cfg, new, part, m, push, rng)
            stats["reinserted"] += n_re
        # only pairs across the new seams (and a film window's own faces) can be too close:
        # look near them alone
        near = (new if cfg.wrap is None else cfg.wrap) < push.largest(cfg.size) + min(band_px, cutoff_px)
        pos, keep, moved = separate(cfg.pos, cfg.size, cfg.box,
                                    push if seam_overlaps == "push" and not redrawn else closest,
                                    floor=closest, active=near, group=part)
        stats["displaced"] += moved
        stats["dropped"] += int((~keep).sum())
        return cfg.subset(keep, pos), new[keep], m

    bar = _Bar(progress)

    def relax(cfg: Configuration, new: np.ndarray, m: int, n_steps: int, observe=None) -> Configuration:
        cfg, n_relaxed = _relax(model, cfg, new, band_px=band_px, cutoff_px=cutoff_px, steps=int(n_steps),
                                um=um, fps=fps, seed=int(rng.integers(2 ** 31)), temperature=k_B_scale,
                                substeps=relax_substeps, observe=observe, tick=bar.update,
                                period=cfg.box / m if band_edge == "reflect" else None)
        stats["relaxed"] += n_relaxed
        if n_relaxed:
            near = new < band_px     # the relaxed particles; neighbours among all
            pos, keep, moved = separate(cfg.pos, cfg.size, cfg.box, closest, active=near)
            stats["displaced_after_relaxation"] += moved
            stats["dropped"] += int((~keep).sum())
            cfg = cfg.subset(keep, pos)
        return cfg

    def build(level: int) -> Configuration:
        if level == 0:
            return _base(src, rng)
        cfg, new, m = place(level)
        return relax(cfg, new, m, relax_steps)

    def reset_counts() -> None:
        """Forget what the pilots did: the counts recorded are the samples'."""
        for key in stats:
            stats[key] = 0
        for key in match_scores:
            match_scores[key].clear()

    # the input's g(r) and its shell distances: for the pilots, the healing and the seam check
    rdf = input_rdf(src, cutoff_px)
    shell_px, r_bond_px = shell_distances(src, cutoff_px, rdf)
    pilots = None
    if adaptive:
        bar.start(ADAPTIVE_PILOTS * ADAPTIVE_STEPS, "upsample: do 3 frames heal the seams? (pilot doublings)")
        pilots = seam_pilots(place, relax, shell_px, r_bond_px, steps=ADAPTIVE_STEPS, pilots=ADAPTIVE_PILOTS)
        pilots["escalated"] = False
        if pilots["unhealed"]:
            auto_steps = True
            if band is None:
                band_px = np.inf
        reset_counts()

    healing = None
    if auto_steps:
        edges, counts, ideal = rdf
        bar.start(HEALING_PILOTS * HEALING_MAX_FRAMES, "upsample: healing pilots (model frames, at most)")
        healing = healing_frames(place, relax, shell_px, r_bond_px,
                                 input_g=(edges, counts / np.maximum(ideal, 1e-300)) if counts.any() else None)
        healing.update(shell_px=shell_px, r_bond_px=r_bond_px)
        relax_steps = healing["frames"]
        reset_counts()
        if pilots is not None:
            # escalate only where the model keeps the data's structure over that relaxation
            kept = healing["g_error"] is None or healing["g_error"] <= ADAPTIVE_G_TOLERANCE
            pilots["escalated"] = kept
            if not kept:
                relax_steps, band_px = ADAPTIVE_STEPS, cutoff_px if band is None else band_px

    tables = []
    box_px = None
    n_each = []
    # model frames of relaxation per sample: each doubling of level l builds its m^d parts
    per_sample = sum(int(np.prod([steps[j] ** dim for j in range(lv + 1, len(steps))])) for lv in range(len(steps)))
    bar.start(int(samples) * per_sample * int(relax_steps), f"upsample x{factor}: {samples} sample(s), "
              "seam relaxation (model frames)")
    for k in range(int(samples)):
        cfg = build(len(steps))
        box_px = cfg.box
        n_each.append(len(cfg.pos))
        cols = {"frame": np.full(len(cfg.pos), k, np.int64), "particle": np.arange(len(cfg.pos), dtype=np.int64)}
        names = ["x", "y", "z"][:dim]
        for a, nm in enumerate(names):
            cols[nm] = cfg.pos[:, a]
        for a, nm in enumerate(names):
            cols["v" + nm] = cfg.vel[:, a]
        if size_col:
            cols[size_col] = cfg.size
        cols["seam_distance"] = cfg.seam
        if src.sites is not None:
            # every seam of a film is a window face, at multiples of the window's side
            cols["site_seam_distance"] = seam_line_distance(src.sites(cfg.pos), np.asarray(src.window, float))
        cols["tile"] = cfg.tiles()
        tables.append(pd.DataFrame(cols))
    bar.close()
    big = pd.concat(tables, ignore_index=True)
    # a film's seams binned by lattice site: by their own distance, faces in the lattice's
    # registry pick particles by their displacement, and a seamless crystal's windows show a
    # profile (up to 4.9 SE on LAMMPS films; docs/scaling.md). Windows tiled as cut keep
    # their own structure at their faces, which the film's untiled windows show too (the
    # baseline); redrawn bands are the field's, drawn from the whole film, and do not (the
    # baseline would have moved soft-disk films' verdicts by 0.008 either way), so they are
    # judged against the bulk alone
    check = seam_check(big, box_px, r_bond_px, shell_px,
                       distance="site_seam_distance" if "site_seam_distance" in big.columns else "seam_distance",
                       reference=None if src.sites is None else lambda: film_reference(src.pos, src.fov, r_bond_px),
                       baseline=None if src.sites is None or (src.displacement is not None and seam_field != "none")
                       else lambda shell, bulk: film_window_baseline(src, r_bond_px, shell, bulk))
    unjudged = unjudged_seam_warning(check, pilots, healing, name)
    if unjudged:
        warnings.warn(SeamVisibleWarning(unjudged), stacklevel=2)
    if check["visible"]:
        if healing is not None and np.isinf(band_px) and (pilots is None or pilots["escalated"]):
            remedy = ("the model's own structure differs from the data's there, or the tiles are ordered (their "
                      "seams are grain boundaries)")
        elif pilots is not None and pilots["unhealed"] and not pilots["escalated"]:
            remedy = (f"the pilot doublings' seams lacked neighbours after 3 frames, but relaxing the whole "
                      f"system until they healed moved g(r) {healing['g_error']:.2g} (relative RMS) from the "
                      f"input's, beyond {ADAPTIVE_G_TOLERANCE:g}: the model does not keep this input's structure, "
                      "so the seams were left with 3 frames (a better model, or relax_steps='auto' with "
                      "band='all' to force it)")
        elif pilots is not None and not pilots["unhealed"]:
            remedy = ("the pilot doublings' seams had their neighbours after 3 frames, so these are not the "
                      "missing contacts of a steep-contact liquid: in an ordered or slowly relaxing input (a dense "
                      "or sheared packing) the seams are grain boundaries; a longer relaxation "
                      "(relax_steps='auto', band='all') may anneal them or overshoot to the model's own structure")
        else:
            remedy = ("steep-contact (hard-sphere-like) liquids heal only after the particles have moved a good "
                      "part of their spacing: relax_steps='auto' with band='all' (--relax-steps auto --band all); "
                      "in an ordered tile the seams are grain boundaries")
        warnings.warn(SeamVisibleWarning(
            f"{name}: the seams of the upsampled system are visible: within {shell_px:.3g} px of a seam, "
            f"neighbours within {r_bond_px:.3g} px {_z_text(check.get('density'))} and "
            + ("|psi6| " + _z_text(check.get("psi6")) if dim == 2 else "q6 " + _z_text(check.get("q6")))
            + (" against the crystal film's own interior" if check.get("against") == "film" else " against the bulk")
            + f" (visible beyond {check['threshold']:.2g}); "
            f"{remedy} (docs/scaling.md)"), stacklevel=2)
    tile_side = (src.box if src.box is not None else np.broadcast_to(np.asarray(src.window, float), (dim,)))
    parameters = {
        "factor": int(factor), "side_steps": steps, "samples": int(samples), "seed": int(seed),
        "frame": frame, "tile": ("periodic box" if src.box is not None else
                                 "window of a crystal film, commensurate with its lattice" if film is not None
                                 else "square window of the field of view"),
        "tile_px": tile_side.tolist(), "n_source_frames": len(src.pos), "size_column": size_col,
        "n_particles": n_each,
        "closest_approach": closest.as_dict(),
        "push_quantile": push_quantile, "push_to": push.as_dict(),
        "tiling": {"method": tiling, "requested": requested, "crystal_film": film,
                   **({"order_coherence": coherence, "auto_threshold": AUTO_COHERENCE} if requested == "auto" else {}),
                   **({"candidates": int(tiling_candidates),
                       "seam_order_chosen": float(np.mean(match_scores["score"])),
                       "seam_order_candidates_mean": float(np.mean(match_scores["candidates_mean"]))}
                      if tiling != "random" and match_scores["score"] else {})},
        "seam_relaxation": {"model_steps": int(relax_steps), "substeps": relax_substeps,
                            "adaptive": pilots, "healing": healing, "crystal_tiles": crystal,
                            "stability": None if stability is None else stability.to_dict(),
                            "band_px": "all" if np.isinf(band_px) else band_px,     # strict JSON has no Infinity
                            "held_fixed_layer_px": held_layer_px(cutoff_px),
                            "k_B_scale": k_B_scale, "band_edge": band_edge,
                            "temperature_calibration": {"input_first_shell_g": calibration["first_shell_g"],
                                                        "rollout_first_shell_g": calibration["grid"]},
                            "seam_overlaps": seam_overlaps,
                            "particles_reinserted": stats["reinserted"],
                            "seam_field": (None if src.displacement is None else
                                           {"method": seam_field, "band_px": BAND_SPACINGS * src.displacement[0].a,
                                            "sweeps": SWEEPS, "particles_redrawn": stats["healed"]}),
                            "particles_relaxed": stats["relaxed"],
                            "particles_displaced": stats["displaced"],
                            "particles_displaced_after_relaxation": stats["displaced_after_relaxation"],
                            "particles_dropped": stats["dropped"]},
        "seam_check": check,
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    return Upsampled(big, [float(b) for b in box_px], parameters)


def unjudged_seam_warning(check: dict, pilots: dict | None, healing: dict | None, name: str) -> str | None:
    """The warning for samples the seam check cannot judge (tiles too small for a bulk)
    whose adaptive pilots saw the seams short of neighbours and were not healed: without
    it such an output would pass silently. None otherwise."""
    judged = any(isinstance(check.get(k), dict) for k in ("density", "psi6", "q6"))
    if judged or pilots is None or not pilots.get("unhealed") or pilots.get("escalated"):
        return None
    why = (f"relaxing the whole system until they healed moved g(r) {healing['g_error']:.2g} from the input's"
           if healing and healing.get("g_error") is not None else "they were not relaxed further")
    return (f"{name}: the seam check cannot judge these samples (fewer than {MIN_BULK} particles per sample "
            f"farther than {check['bulk_px']:.3g} px from every seam), but the pilot doublings' seams lacked "
            f"{-pilots['difference']:.3g} of the bulk's {pilots['bulk_neighbours']:.3g} neighbours "
            f"({pilots['z']:+.1f} standard errors) after 3 frames and {why}: the seams are likely visible "
            "(a larger tile, more frames of a denser input, or a better model; docs/scaling.md)")


def _z_text(measure: dict | None) -> str:
    return "not measured" if not measure or measure.get("z") is None else \
        f"{measure['difference']:+.3g} ({measure['z']:+.1f} standard errors)"
