"""Bright interstitial gaps of dense bright-field packings: told from particles by shape.

In bright field a particle images as a bright centre inside a dark ring, and in a dense
monolayer the gaps between particles are lit as brightly as the centres. The band-pass
finds both. Mass cannot tell them apart (in a random packing some gaps are as massive
as a particle), but shape can: a particle's light inside its own dark ring is radially
symmetric about its centre, while a gap is bounded by the rings of the two to six
particles around it, at irregular distances, so its light is not.

For every candidate the image is sampled on a polar grid (:data:`N_ANGLES` directions,
0.5 px steps). Its *asymmetry* ``q`` is the variance of the samples about their mean
over angles (less what the frame's white noise contributes), over the variance of that
azimuthal mean over radii, both out to the ring radius ``R``. ``R`` is the minimum of
the candidates' median azimuthal profile (taken again from the more symmetric half of
them). Particles give q ~ 1e-3-1e-2 (the dense bright-field analogue: 1e-3 median,
0.02 at most), gaps 0.06-100 (median 1).

A candidate is a gap when

1. the frame holds ring-shaped particles: the most symmetric quarter of the
   candidates has q <= :data:`RING_SYMMETRY`. Light isolated by its own dark ring is
   symmetric; in a packing of Gaussian spots (no ring) the profile's minimum is the hole
   between neighbours, whose light enters every disc unevenly (q of 0.06-0.3 for the
   quarter; then nothing is dropped here);
2. a candidate at least :data:`GAP_RATIO` times more symmetric lies within 2 R of it:
   two particles whose dark rings would cross cannot both be there (the ring lies inside
   the particle; touching particles are 2 R / 0.84 = 2.4 R apart for a ring at 0.42 d),
   while the gap of three touching particles lies 1.4 R from each and that of four
   1.7 R;
3. it sits inside a packing: at least three candidates that much more symmetric lie
   within 3 R of it (in the random packing at area fraction 0.78, 99 % of the gaps have
   3-6). A particle that merely touches one other one (a dilute field, a pair in the
   focal transition) is never dropped.

Also a gap, inside a packing or not: a candidate whose angular variance is at least
:data:`HALO_ASYMMETRY` times its radial variance with such a more symmetric candidate
within 3 ring radii (rule 3's reach). Away from a packing the light around each particle
beyond its dark ring makes band-pass maxima of that kind; :func:`lit_halos` finds those
that are not enclosed by three particles before the fit, so that they are not fitted as
spots among the particles.

Each particle therefore stands by its own light, compared with the others of its frame,
rather than by a brightness threshold of one renderer.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Directions of the polar grid (the samples of one radius).
N_ANGLES = 24
#: Radial step of the polar grid (px).
RADIAL_STEP = 0.5
#: A frame holds ring-shaped (bright-field) particles when the most symmetric quarter of
#: its candidates has an asymmetry q at or below this. Measured: ring particles 0.001
#: (both renderers' bright field, stuck.tif), 0.007-0.03 (the real bright-field and
#: mixed-contrast videos); packings of Gaussian spots 0.06-0.07 (dark spheres in a dish)
#: and 0.24-0.29 (the dense bidisperse analogue).
RING_SYMMETRY = 0.04
#: ... and when their common ring radius is under this fraction of the distance between
#: neighbouring particles (peers of like symmetry). A bright-field ring lies inside the
#: particle (0.42 d in the analogue: 0.40-0.42 of the distance in a dense packing); in a
#: packing of Gaussian spots the darkest radius is the hole between neighbours, at half
#: their distance (a pair) to 0.58 (a triangle): 0.55-0.7 measured.
RING_INSIDE = 0.5
#: A gap is at least this many times less symmetric than the particles bounding it;
#: particles of one frame spread by a factor of about 10 (5th to 95th percentile),
#: and gaps lie a factor 50 or more above their typical particle.
GAP_RATIO = 10.0
#: ... and itself asymmetric: at least this much angular variance (beyond the noise's)
#: for each unit of radial variance inside the ring radius. Gaps of the dense bright-field
#: analogue: 0.06-100 (1 % under 0.14); ring-shaped particles overlapping their
#: neighbours (bright-field ring spots of sigma 0.35 d at area fraction 0.7): up to 0.07,
#: and 5 % of them are 10 times less symmetric than a neighbour (many particles' q sits at
#: the floor, where the noise accounts for all of their angular variance).
GAP_ASYMMETRY = 0.1
#: A candidate beside one or two ring-shaped particles, not in a packing, is their lit
#: surroundings (:func:`lit_halos`) when its angular variance is at least this many times
#: its radial variance inside the ring radius. Measured (bright-field rings, sigma 0.2 d,
#: area fraction 0.3, two frames): such candidates 0.46 and more (91-95 % above 1), the
#: particles of the same frames all under 0.1 where their disc is inside the frame.
HALO_ASYMMETRY = 1.0
#: Fewest candidates judged in a frame for the rule to run (the quarter statistic and
#: the median profile need a population).
MIN_CANDIDATES = 12
#: In frames with more candidates than this, the frame-level gates (1 and the ring's
#: position) are first judged on the candidates nearest the frame's centre, and the
#: whole frame is sampled only where that block does not clearly rule the rule out
#: (fluorescence packings of 1000 spots: 66 -> 13 ms a frame).
GATE_BLOCK = 160
#: ... clearly: the block's most symmetric quarter above twice RING_SYMMETRY, or its
#: ring radius at or above this fraction of the peer distance (RING_INSIDE with a margin
#: of twice the block's scatter: ring particles of the analogue 0.40-0.50; the project's
#: dense fluorescence preset 0.60-0.63 on blocks, 0.625 on whole frames).
BLOCK_RING_INSIDE = 0.55


def polar_samples(img: np.ndarray, x: np.ndarray, y: np.ndarray, r_max: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image on a polar grid around each point, by bilinear interpolation.

    Parameters
    ----------
    img : ndarray (Y, X)
    x, y : ndarray (N,)
        Centres (px; pixel centres at integers).
    r_max : float
        Largest radius (px).

    Returns
    -------
    r : ndarray (K,)
        Radii (px), 0 to ``r_max`` in steps of :data:`RADIAL_STEP`.
    samples : ndarray (N, K, N_ANGLES) float32
        Interpolated grey levels (outside the frame: the nearest edge pixel).
    keep : ndarray (N, K, N_ANGLES)
        The share of one pixel's white-noise variance each sample carries (the sum of
        its squared bilinear weights, 0.25-1).
    """
    r = np.arange(0.0, r_max + 1e-9, RADIAL_STEP)
    th = np.arange(N_ANGLES) * (2 * math.pi / N_ANGLES)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    samples = np.empty((len(x), len(r), N_ANGLES), np.float32)
    keep = np.empty((len(x), len(r), N_ANGLES))
    _polar_bilinear(np.ascontiguousarray(img, dtype=np.float32), x, y, r, np.cos(th),
                    np.sin(th), samples, keep)
    return r, samples, keep


@njit(cache=True)
def _polar_bilinear(img, x, y, r, cos, sin, samples, keep):
    """Bilinear samples of ``img`` at (x + r cos, y + r sin), the pixel indices clamped to
    the frame (scipy.ndimage.map_coordinates(order=1, mode="nearest") gives the same;
    this fused loop is ~10x faster at the ~10^5 points a frame needs), and each sample's
    sum of squared weights."""
    ny, nx = img.shape
    for i in range(x.shape[0]):
        for k in range(r.shape[0]):
            for t in range(cos.shape[0]):
                px = x[i] + r[k] * cos[t]
                py = y[i] + r[k] * sin[t]
                fx0 = math.floor(px)
                fy0 = math.floor(py)
                fx = px - fx0
                fy = py - fy0
                u0 = min(max(int(fx0), 0), nx - 1)
                u1 = min(max(int(fx0) + 1, 0), nx - 1)
                v0 = min(max(int(fy0), 0), ny - 1)
                v1 = min(max(int(fy0) + 1, 0), ny - 1)
                top = (1 - fx) * img[v0, u0] + fx * img[v0, u1]
                bot = (1 - fx) * img[v1, u0] + fx * img[v1, u1]
                samples[i, k, t] = (1 - fy) * top + fy * bot
                keep[i, k, t] = ((1 - fx) ** 2 + fx ** 2) * ((1 - fy) ** 2 + fy ** 2)


def radial_asymmetry(img: np.ndarray, x: np.ndarray, y: np.ndarray, r_max: float,
                     noise: float) -> tuple[np.ndarray, float, np.ndarray]:
    """Asymmetry q of each candidate's light inside the common ring radius R.

    q = (variance of the polar samples about their mean over angles - the white noise's
    share) / (variance of that mean over radii), for radii 1 px to R. R is where the
    median azimuthal profile of the candidates is lowest (out to ``r_max``), taken
    first over all candidates, then over the more symmetric half.

    Parameters
    ----------
    img : ndarray (Y, X)
        Frame, particles bright.
    x, y : ndarray (N,)
        Candidate centres (px).
    r_max : float
        Largest ring radius considered (px).
    noise : float
        Standard deviation of the frame's pixel noise (grey levels).

    Returns
    -------
    q : ndarray (N,)
        Dimensionless, >= 1e-3 (floor).
    R : float
        The common ring radius (px); NaN when the median profile has no ring (it does not
        rise again beyond its darkest radius by more than ``noise``).
    own : ndarray (N,)
        Each candidate's own ring radius (px): where its azimuthal mean is lowest,
        1 px to ``r_max`` (for a particle of a mixture, its own size's ring).
    """
    r, s, keep = polar_samples(img, x, y, r_max)
    mean = s.mean(axis=2)                                    # (N, K)
    dev2 = ((s - mean[..., None]) ** 2).mean(axis=2)         # (N, K)
    noise2 = noise ** 2 * keep.mean(axis=2) * (1 - 1 / N_ANGLES)

    def q_within(R):
        k = (r >= 1.0) & (r <= R)
        asym = (dev2[:, k] - noise2[:, k]).mean(axis=1)
        m = mean[:, r <= R]
        sym = ((m - m.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)
        return np.maximum(asym, 1e-3 * sym) / np.maximum(sym, 1e-12)

    lo = int(np.searchsorted(r, 1.0))

    def ring(rows):
        prof = np.median(mean[rows], axis=0)
        k = lo + int(np.argmin(prof[lo:]))
        # a ring: the profile rises again beyond its darkest radius by more than the
        # pixel noise (an isolated Gaussian spot falls all the way out: no ring)
        ringed = k < len(r) - 1 and prof[k + 1:].max() - prof[k] > noise
        return float(r[k]), ringed

    R, ringed = ring(slice(None))
    q = q_within(R)
    R, ringed = ring(q <= np.median(q))
    own = r[lo + np.argmin(mean[:, lo:], axis=1)]
    return q_within(R), (R if ringed else float("nan")), own


def _ring_gates(img, x, y, r_max, noise, asymmetry=None, among=None):
    """The frame-level quantities of the rule for candidates (x, y): ``(q, R, own,
    inside, q25, ratio)`` with ``inside`` the candidates whose disc the frame holds,
    ``q25`` their most symmetric quarter's bound and ``ratio`` the ring radius over the
    median peer distance of that quarter; None where there is no ring or too few
    candidates are inside. ``asymmetry``: :func:`radial_asymmetry` of the candidates,
    if already computed. ``among`` ((N,) bool): the quarter is taken among these
    candidates only (default all)."""
    from ..neighbours import nearest

    n = len(x)
    q, R, own = radial_asymmetry(img, x, y, r_max, noise) if asymmetry is None else asymmetry
    if not np.isfinite(R):
        return None
    h, w = img.shape
    inside = (x >= R + 1) & (x <= w - 2 - R) & (y >= R + 1) & (y <= h - 2 - R)
    if inside.sum() < MIN_CANDIDATES:
        return None
    pool = inside if among is None else inside & among
    if pool.sum() < MIN_CANDIDATES:
        return None
    q25 = float(np.percentile(q[pool], 25))
    # the ring lies inside the particle: under half the distance to the nearest peer (a
    # candidate of like symmetry). In a packing of Gaussian spots the darkest radius is
    # the hole between neighbours, at half their distance or beyond
    score = -np.log(np.maximum(q, 1e-12))   # q = 0: a perfectly symmetric candidate
    dist, idx = nearest(np.c_[x, y], k=min(n - 1, 12))
    peer = np.abs(score[idx] - score[:, None]) <= math.log(GAP_RATIO)
    spacing = np.where(peer.any(axis=1), dist[np.arange(n), peer.argmax(axis=1)], np.inf)
    quarter = pool & (q <= q25)
    return q, R, own, inside, q25, float(R / np.median(spacing[quarter]))


def bright_gaps(img: np.ndarray, x: np.ndarray, y: np.ndarray, diameter: float,
                noise: float | None = None) -> np.ndarray:
    """Mask of the candidates that are lit gaps between bright-field particles.

    Parameters
    ----------
    img : ndarray (Y, X)
        Frame, particles bright (as located).
    x, y : ndarray (N,)
        Candidate centres (px).
    diameter : float
        The feature diameter (px) used to find them; ring radii up to 1.5 of it are
        searched.
    noise : float, optional
        Pixel noise (grey levels); measured on ``img`` if not given.

    Returns
    -------
    ndarray (N,) bool
        True for the gaps (see the module notes for the rule).
    """
    judged = _judge(img, x, y, diameter, noise)
    if judged is None:
        return np.zeros(len(x), bool)
    q, inside, (close, near) = judged
    # (and, inside a packing or not, light as asymmetric as the lit surroundings of
    # :func:`lit_halos` within 3 ring radii of a particle: in a loose packing some lie
    # just beyond two ring radii of every particle, 9-10 px for a ring of 4.5 px)
    return inside & (((q >= GAP_ASYMMETRY) & (close >= 1) & (near >= 3))
                     | ((q >= HALO_ASYMMETRY) & (near >= 1)))


def _dominant_neighbours(x, y, q, R, own):
    """(close, near): (N,) counts of the candidates at least GAP_RATIO times more
    symmetric than each candidate within 2 and within 3 of their own ring radii (rules 2
    and 3 of the module notes). Candidates whose disc the frame cuts still count as
    particles around the others. Each particle's reach is its own ring radius (a
    mixture's sizes differ), 1-1.5 times the common one ``R``."""
    from ..neighbours import pairs as close_pairs

    n = len(x)
    score = -np.log(np.maximum(q, 1e-12))   # q = 0: a perfectly symmetric candidate
    margin = math.log(GAP_RATIO)
    ring = np.clip(own, R, 1.5 * R)
    pr = close_pairs(np.c_[x, y], 3 * float(ring.max()))
    close, near = np.zeros(n, int), np.zeros(n, int)
    if len(pr):
        dist = np.hypot(x[pr[:, 0]] - x[pr[:, 1]], y[pr[:, 0]] - y[pr[:, 1]])
        for i, j in (pr.T, pr[:, ::-1].T):       # j the more symmetric of the pair
            dominant = score[j] - score[i] > margin
            np.add.at(close, i, dominant & (dist < 2 * ring[j]))
            np.add.at(near, i, dominant & (dist < 3 * ring[j]))
    return close, near


def lit_halos(img: np.ndarray, x: np.ndarray, y: np.ndarray, diameter: float,
              noise: float | None = None, mass: np.ndarray | None = None) -> np.ndarray:
    """Mask of the candidates that are the lit surroundings of bright-field particles
    away from a packing: not particles, and to be left out of the fit.

    Beyond a bright-field particle's dark ring the field is lit again; where two or three
    particles stand apart (not touching), the band-pass finds maxima in that light
    between them (rings of sigma 0.2 d at area fraction 0.3: 1.5 such candidates a
    particle, a fifth to a third of a particle's mass). They are not enclosed by a
    packing, so rule 3 of :func:`bright_gaps` keeps them, and fitted as spots among the
    particles they pull the fit (RMS 0.15-1.5 px there, precision 0.58-0.94). Their light
    is far from radially symmetric: a candidate is such a halo when the frame holds
    ring-shaped particles (rule 1), a candidate at least GAP_RATIO times more symmetric
    lies within 3 of its ring radii but fewer than three do (not a gap of a packing:
    those stay in the fit, which models their light, and :func:`bright_gaps` drops them
    after it), and its angular variance is at least
    :data:`HALO_ASYMMETRY` times its radial variance. Parameters as :func:`bright_gaps`;
    ``mass`` ((N,) the candidates' band-passed masses): rule 1's symmetric quarter is taken
    among the more massive half. Far apart (area fraction 0.1) the band-pass makes
    several maxima in the light around each particle, three quarters of the candidates,
    and the quarter of all of them was not symmetric (q 0.77); particles are 4-5 times
    more massive than these.
    """
    among = None
    if mass is not None:
        mass = np.asarray(mass, dtype=np.float64)
        among = mass >= np.median(mass)
    judged = _judge(img, x, y, diameter, noise, among)
    if judged is None:
        return np.zeros(len(x), bool)
    q, inside, (_, near) = judged
    return inside & (q >= HALO_ASYMMETRY) & (near >= 1) & (near < 3)


def _judge(img, x, y, diameter, noise, among=None):
    """What the rules of :func:`bright_gaps` and :func:`lit_halos` read: (q, inside,
    counts) per candidate, counts the dominant neighbours within 2 and 3 ring radii
    (:func:`_dominant_neighbours`), or None where the frame-level gates rule rings
    out (too few candidates, no ring, the most symmetric quarter not symmetric, the ring
    not inside the particles)."""
    if len(x) < MIN_CANDIDATES:
        return None
    x, y, r_max, noise = _inputs(img, x, y, diameter, noise)
    if _block_rules_out(img, x, y, r_max, noise):
        return None
    gates = _ring_gates(img, x, y, r_max, noise, among=among)
    if gates is None:
        return None
    q, R, own, inside, q25, ratio = gates
    if q25 > RING_SYMMETRY or not ratio < RING_INSIDE:
        return None
    return q, inside, _dominant_neighbours(x, y, q, R, own)


def _block_rules_out(img, x, y, r_max, noise) -> bool:
    """In a frame of more than twice GATE_BLOCK candidates, whether the frame-level gates
    judged on the GATE_BLOCK candidates nearest its centre clearly rule the rule out
    (no ring, the most symmetric quarter above twice RING_SYMMETRY, or the ring radius
    at or beyond BLOCK_RING_INSIDE of the peer distance); then :func:`bright_gaps`
    drops nothing in the frame. False for smaller frames."""
    if len(x) <= 2 * GATE_BLOCK:
        return False
    block = np.argsort(np.hypot(x - np.median(x), y - np.median(y)))[:GATE_BLOCK]
    gates = _ring_gates(img, x[block], y[block], r_max, noise)
    return gates is None or gates[4] > 2 * RING_SYMMETRY or gates[5] >= BLOCK_RING_INSIDE


def rings_possible(img: np.ndarray, x: np.ndarray, y: np.ndarray, diameter: float,
                   noise: float | None = None) -> bool:
    """Whether the frame may hold ring-shaped (bright-field) particles, so that
    :func:`bright_gaps` can drop anything in it.

    False only where :func:`bright_gaps` would drop nothing in this frame because the
    rule's frame-level gates rule rings out with the block gate's margins
    (:data:`GATE_BLOCK`): on the central block first, as bright_gaps judges them (in a
    frame of more than twice GATE_BLOCK candidates), then on the whole frame: no darkest
    radius with light beyond it, or the most symmetric quarter above twice
    :data:`RING_SYMMETRY`, or the ring radius at or beyond :data:`BLOCK_RING_INSIDE` of
    the peer distance. Too few candidates to judge: True. Parameters as
    :func:`bright_gaps`.
    """
    if len(x) < MIN_CANDIDATES:
        return True
    x, y, r_max, noise = _inputs(img, x, y, diameter, noise)
    if _block_rules_out(img, x, y, r_max, noise):
        return False
    asymmetry = radial_asymmetry(img, x, y, r_max, noise)
    gates = _ring_gates(img, x, y, r_max, noise, asymmetry)
    if gates is None:   # no ring at all, or too few candidates whose disc the frame holds
        return bool(np.isfinite(asymmetry[1]))
    return gates[4] <= 2 * RING_SYMMETRY and gates[5] < BLOCK_RING_INSIDE


def _inputs(img, x, y, diameter, noise):
    """The candidates as float arrays, the largest ring radius searched (1.5 diameters)
    and the pixel noise (measured on ``img`` when None)."""
    from .params import noise_level

    if noise is None:
        noise = noise_level(img)
    return np.asarray(x, float), np.asarray(y, float), 1.5 * float(diameter), noise
