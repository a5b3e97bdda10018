"""Close-packed stacking of 3D crystals: orientation, layers and their stacking sequence.

Colloidal crystals of spheres are stacks of close-packed (triangular) layers: each layer
sits in one of three lateral positions A, B, C, never the same as the layer below. fcc
stacks them ABCABC, hcp ABAB, and crystals grown by sedimentation or shear are randomly
stacked (rhcp; Pusey et al., Phys. Rev. Lett. 63, 2753 (1989)). An upsampled film of such a
crystal must keep its stacking sequence: this module finds the layers' normal and in-plane
axes from the first-shell bonds (:func:`close_packed_orientation`) and each layer's
lateral position (:func:`stacking`), in coordinates turned so that the layers are normal
to z and one in-plane lattice vector lies along x.

Conventions (turned coordinates, px): in-plane lattice vectors a1 = (a, 0) and
a2 = (a / 2, h), h = a sqrt(3) / 2; layer spacing c = a sqrt(2 / 3) for ideal packing. A
layer's sites lie at o + n1 a1 + n2 a2 + its offset: 0 (A), (a / 2, h / 3) (B) or
(a, 2 h / 3) (C). With the reciprocal vectors b1 = (2 pi / a, -pi / h) and b2 = (0,
2 pi / h), an offset of B turns both phases sum exp(i b . r) by 2 pi / 3 and one of C by
4 pi / 3: a layer's label relative to a reference layer is that turn in thirds.

Written here, not taken from freud: freud classifies particles' local environments but
does not fit a lattice orientation to a cloud of bonds, nor label layers of a stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: bonds within this angle of an ideal close-packed bond direction count as matched
CP_TOLERANCE_DEG = 20.0
#: the share of first-shell bonds that must match for a close-packed crystal (a liquid
#: matches about half: 18 caps of 20 degrees cover 54 % of the sphere)
CP_SHARE = 0.85
#: a layer's offset must lie within this of a third of a turn (rad, both phases) for its label
CP_LABEL_TOLERANCE = 0.6
#: the layers' mean in-plane density-wave amplitude |sum exp(i b . r)| / n (both b) below
#: which they are not triangular lattices: thermal jitter of 1.4 px per axis on 15.6 px
#: spacings (a Lindemann ratio of 0.16) leaves 0.8; bcc, whose bonds pass the 18-direction
#: test along [110] (its densest planes are distorted close-packed ones), falls far below
CP_COHERENCE = 0.5

_E = math.asin(math.sqrt(2.0 / 3.0))        # elevation of a bond to the next layer, 54.7 degrees
#: the 18 directions a first-shell bond of any close-packed stacking can take (layers
#: normal to z, a lattice vector along x): 6 in the layer, 6 up and 6 down at azimuths
#: 30 + 60 k degrees (a layer above in B takes three of them, one in C the other three)
CP_BONDS = np.array([[math.cos(math.radians(60 * k)), math.sin(math.radians(60 * k)), 0.0] for k in range(6)]
                    + [[math.cos(math.radians(30 + 60 * k)) * math.cos(_E), math.sin(math.radians(30 + 60 * k))
                        * math.cos(_E), s * math.sin(_E)] for s in (1.0, -1.0) for k in range(6)])


def lattice_orientation(bonds: np.ndarray, ideal: np.ndarray, tolerance_deg: float,
                        starts: int = 400) -> tuple[np.ndarray, float, float]:
    """The rotation that turns first-shell bond vectors onto a lattice's ideal bond directions.

    bonds : (n, 3) px; ideal : (k, 3) unit vectors. Returns (R (3, 3), such that ``bonds @
    R.T`` lie along the ideal directions; the share of bonds within ``tolerance_deg`` of
    their nearest ideal direction; the mean length of those bonds projected on it, px, in
    which thermal displacements across the bond average out).

    The rotation group is searched from ``starts`` seeded random rotations (a bond set is
    matched up to the lattice's point group, 48 for the cube, 24 for a close-packed stack,
    so one start in 24-48 lands near an equivalent answer), and the best is refined by
    assigning each bond to its nearest ideal direction and solving the orthogonal
    Procrustes problem (scipy's ``Rotation.align_vectors``) until the assignment stops
    changing."""
    from scipy.spatial.transform import Rotation

    u = bonds / np.linalg.norm(bonds, axis=1, keepdims=True)
    probe = u[np.random.default_rng(0).permutation(len(u))[:5000]]
    mats = Rotation.random(starts, random_state=0).as_matrix()                  # (s, 3, 3)
    score = np.einsum("sij,nj,ki->snk", mats, probe, ideal, optimize=True).max(axis=2).mean(axis=1)
    R = mats[int(np.argmax(score))]
    assign = None
    for _ in range(20):
        k = np.argmax((u @ R.T) @ ideal.T, axis=1)
        if assign is not None and np.array_equal(k, assign):
            break
        assign = k
        R = Rotation.align_vectors(ideal[k], u)[0].as_matrix()
    ok = np.sum((u @ R.T) * ideal[assign], axis=1) > math.cos(math.radians(tolerance_deg))
    length = float(np.mean(np.sum((bonds[ok] @ R.T) * ideal[assign[ok]], axis=1))) if ok.any() else float("nan")
    return R, float(np.mean(ok)), length


def close_packed_orientation(bonds: np.ndarray, starts: int = 400) -> tuple[np.ndarray, float, float]:
    """(R (3, 3) turning the layers normal to z and a lattice vector along x; the share of
    bonds within :data:`CP_TOLERANCE_DEG` of :data:`CP_BONDS`; the nearest-neighbour
    distance a px) for first-shell bonds (n, 3) px of a close-packed crystal of any
    stacking. fcc matches too (along one of its four [111] axes)."""
    return lattice_orientation(bonds, CP_BONDS, CP_TOLERANCE_DEG, starts)


@dataclass
class Stacking:
    """The layers of a close-packed crystal seen in turned frames (:func:`stacking`).

    layer_z : (T,) px, the unwrapped z of layer 0's centre in each frame (layer k lies at
        layer_z + k c); origin : (T, 2) px, a site of the reference layer in each frame (in
        plane, modulo the lattice); labels : {layer index: 0, 1 or 2}, each layer's lateral
        position relative to the reference layer (A = 0); residual : the largest distance
        (rad) of a labelled layer's
        phases from a third of a turn; reference : the reference layer's index;
        coherence : the layers' mean in-plane density-wave amplitude, the smaller of
        |sum exp(i b1 . r)| / n and |sum exp(i b2 . r)| / n pooled over layers and frames
        (1 for a perfect triangular lattice; :data:`CP_COHERENCE`).
    """

    layer_z: np.ndarray
    origin: np.ndarray
    labels: dict
    residual: float
    reference: int
    coherence: float

    def runs(self) -> list[list[int]]:
        """The runs of consecutive labelled layer indices, bottom to top."""
        out: list[list[int]] = []
        for k in sorted(self.labels):
            if out and k == out[-1][-1] + 1:
                out[-1].append(k)
            else:
                out.append([k])
        return out

    def sequence(self, first: int, last: int) -> str:
        """The labels of layers first..last (inclusive) as letters, '?' where unknown."""
        return "".join("ABC"[self.labels[k]] if k in self.labels else "?" for k in range(first, last + 1))


def jagodzinski(labels, cyclic: bool = False) -> str:
    """Jagodzinski's notation of a stacking sequence (labels 0, 1, 2 or letters A, B, C,
    bottom to top): each inner layer 'h' where the layers below and above it sit alike
    (hcp-like), 'c' where they differ (fcc-like); with ``cyclic`` every layer, the sequence
    wrapped. fcc is all 'c', hcp all 'h'. Invariant under relabelling A, B, C and under the
    mirror images a turned view may show (which reverse the string)."""
    lab = list(labels)
    if cyclic:
        lab = [lab[-1]] + lab + [lab[0]]
    return "".join("h" if lab[k - 1] == lab[k + 1] else "c" for k in range(1, len(lab) - 1))


def reciprocal(a: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """The in-plane reciprocal vectors b1, b2 (1/px) of the lattice a1 = (a, 0), a2 = (a/2, h)."""
    return np.array([2 * math.pi / a, -math.pi / h]), np.array([0.0, 2 * math.pi / h])


def site_origin(s1: complex, s2: complex, a: float, h: float) -> np.ndarray:
    """(2,) px: a site of the triangular lattice (a1 = (a, 0), a2 = (a / 2, h)), modulo the
    lattice, from its particles' sums s1 = sum exp(i b1 . r), s2 = sum exp(i b2 . r)
    (:func:`reciprocal`): the point o with b1 . o = arg s1 and b2 . o = arg s2."""
    oy = h * float(np.angle(s2)) / (2 * math.pi)
    return np.array([a / (2 * math.pi) * (float(np.angle(s1)) + math.pi * oy / h), oy])


def site_of(points: np.ndarray, a: float, h: float) -> np.ndarray:
    """(2,) px: a site of the triangular lattice a1 = (a, 0), a2 = (a / 2, h) that the
    ``points`` (n, 2) px sit on, modulo the lattice (:func:`site_origin` of their sums)."""
    b1, b2 = reciprocal(a, h)
    return site_origin(np.exp(1j * (points @ b1)).sum(), np.exp(1j * (points @ b2)).sum(), a, h)


def lattice_site(r: np.ndarray, a: float, h: float) -> np.ndarray:
    """(n, 2) px: the nearest site of the triangular lattice a1 = (a, 0), a2 = (a / 2, h)
    (a site at the origin) to each point of ``r`` (n, 2) px: the best of the skewed
    rounding and its eight neighbours."""
    r = np.asarray(r, float)
    n2 = np.round(r[:, 1] / h)
    n1 = np.round((r[:, 0] - 0.5 * a * n2) / a)
    best = np.full(len(r), np.inf)
    out = np.zeros_like(r)
    for d1 in (-1, 0, 1):
        for d2 in (-1, 0, 1):
            j, i = n2 + d2, n1 + d1
            site = np.column_stack([i * a + 0.5 * a * j, j * h])
            dist = np.sum((r - site) ** 2, axis=1)
            better = dist < best
            best[better] = dist[better]
            out[better] = site[better]
    return out


def nearest_lattice_offset(d: np.ndarray, a: float, h: float) -> np.ndarray:
    """(2,) px: ``d`` less the nearest vector of the triangular lattice a1 = (a, 0),
    a2 = (a / 2, h): the shortest representative of an offset known modulo the lattice."""
    d = np.asarray(d, float)
    return d - lattice_site(d[None], a, h)[0]


def stacking(turned: list, a: float, h: float, c: float, *, min_count: float = 6.0) -> Stacking | None:
    """Layers and their lateral positions in frames of one close-packed crystal.

    turned : frames of positions (n, 3) px in the crystal's turned coordinates (layers
    normal to z, a lattice vector along x: :func:`close_packed_orientation`); a : in-plane
    spacing, h : row spacing (a sqrt 3 / 2), c : layer spacing, px. Each frame's layers are
    its particles' z phases against c, unwrapped over the frames (a crystal drifting less
    than c / 2 per frame keeps its layer indices). A layer's label is the turn of its two
    in-plane phases against the reference layer's (the most populated one) in the same
    frame, pooled over the frames. Layers with fewer than ``min_count`` particles per frame
    are left unlabelled. None when the reference layer is missing in a frame or no layer
    but it can be labelled.
    """
    b1, b2 = reciprocal(a, h)
    raw = np.array([np.angle(np.exp(2j * math.pi * q[:, 2] / c).sum()) for q in turned])
    layer_z = c * np.unwrap(raw) / (2 * math.pi)
    index = [np.round((q[:, 2] - z0) / c).astype(int) for q, z0 in zip(turned, layer_z)]
    total: dict = {}
    for k in index:
        for i, n in zip(*np.unique(k, return_counts=True)):
            total[int(i)] = total.get(int(i), 0) + int(n)
    if not total:
        return None
    ref = max(total, key=total.get)
    turn1: dict = {}
    turn2: dict = {}
    origin = np.zeros((len(turned), 2))
    amp = np.zeros(3)                                   # sum |S1|, sum |S2|, particles
    for t, (q, k) in enumerate(zip(turned, index)):
        at = k == ref
        if at.sum() < 3:
            return None
        s1 = np.exp(1j * (q[:, :2] @ b1))
        s2 = np.exp(1j * (q[:, :2] @ b2))
        r1, r2 = s1[at].sum(), s2[at].sum()
        origin[t] = site_origin(r1, r2, a, h)
        for i in np.unique(k):
            sel = k == i
            a1, a2 = s1[sel].sum(), s2[sel].sum()
            turn1[int(i)] = turn1.get(int(i), 0) + a1 * np.conj(r1) / abs(r1)
            turn2[int(i)] = turn2.get(int(i), 0) + a2 * np.conj(r2) / abs(r2)
            amp += [abs(a1), abs(a2), sel.sum()]
    labels, worst = {}, 0.0
    for i, n in total.items():
        if n / len(turned) < min_count:
            continue
        d1, d2 = float(np.angle(turn1[i])), float(np.angle(turn2[i]))
        l1, l2 = int(round(3 * d1 / (2 * math.pi))) % 3, int(round(3 * d2 / (2 * math.pi))) % 3
        res = max(abs(math.remainder(d1 - 2 * math.pi * l1 / 3, 2 * math.pi)),
                  abs(math.remainder(d2 - 2 * math.pi * l2 / 3, 2 * math.pi)))
        if l1 != l2 or res > CP_LABEL_TOLERANCE:
            continue
        labels[i] = l1
        worst = max(worst, res)
    if len(labels) < 2:
        return None
    return Stacking(layer_z, origin, labels, worst, ref, float(min(amp[0], amp[1]) / amp[2]))


def periodic_layers(st: Stacking, first: int, last: int, shortest: int = 2) -> tuple[int, int, bool] | None:
    """The longest run of labelled layers i0 .. i0 + n - 1 inside first..last that repeats
    when wrapped: the layer after it (i0 + n, labelled) has the label of i0, so the wrapped
    junction is a pair of layers the crystal has. ``exact`` runs also have the layer before
    them (i0 - 1) labelled as the run's last, so that i0 keeps its neighbours' stacking
    (hcp-like or fcc-like). Takes the longest exact run at least half as long as the
    longest run, else the longest run; of equal runs the one nearest the middle. Returns (i0, n, exact) or None where no run of ``shortest``
    layers or more repeats."""
    mid = 0.5 * (first + last)
    runs = []
    for n in range(shortest, last - first + 2):
        for i0 in range(first, last - n + 2):
            if all(k in st.labels for k in range(i0, i0 + n + 1)) and st.labels[i0 + n] == st.labels[i0]:
                runs.append((i0, n, st.labels.get(i0 - 1) == st.labels[i0 + n - 1]))
    if not runs:
        return None
    longest = max(n for _, n, _ in runs)
    exact = [r for r in runs if r[2] and 2 * r[1] >= longest]
    pool = exact or [r for r in runs if r[1] == longest]
    return max(pool, key=lambda r: (r[1], -abs(r[0] + 0.5 * (r[1] - 1) - mid)))
