"""Particle graph: neighbour pairs within a cutoff, open or periodic boundaries.

Pairs are stored once per unordered pair, ``pairs[:, 0] < pairs[:, 1]``, as a (P, 2)
``torch.long`` tensor on the positions' device. They are found with the project's one
neighbour search, :mod:`colloidcg.neighbours` (a k-d tree with periodic box support), on
the CPU and moved to the positions' device; this is the only CPU step of a rollout and it is
amortised by a Verlet skin (Verlet 1967): pairs are searched within ``cutoff + skin`` and
reused until some particle has moved more than ``skin / 2`` since the last search, which
guarantees that no pair closer than ``cutoff`` is missed.
"""

from __future__ import annotations

import torch

from .. import neighbours

from .driver import VerletList, minimum_image, search_pairs, wrap

__all__ = ["find_pairs", "NeighbourList", "minimum_image", "wrap"]


def find_pairs(r: torch.Tensor, radius: float, box: torch.Tensor | None = None,
               shear: torch.Tensor | None = None) -> torch.Tensor:
    """All unordered pairs closer than ``radius``.

    Parameters
    ----------
    r : (N, d) positions (any device, any float dtype).
    radius : search radius, in the units of ``r``.
    box : (d,) periodic box lengths or None.
    shear : Lees-Edwards state (offset, velocity jump) of a sheared box
        (:mod:`.driver`), or None. The search then runs in the box's sheared
        coordinates s = (x - (delta / L_y) y, y, z), in which the images form a
        rectangular lattice (as in a tilted LAMMPS cell), within radius times the largest
        stretch of that map, and keeps the pairs whose sheared minimum image is closer than
        ``radius``.

    Returns
    -------
    (P, 2) long tensor on ``r.device`` with ``i < j``, sorted by i then j.
    """
    if shear is not None and box is not None:
        return _find_pairs_sheared(r, radius, box, shear)
    pos = r.detach().to("cpu", torch.float64).numpy()
    b = None if box is None else box.detach().to("cpu", torch.float64).numpy()
    pairs = torch.as_tensor(neighbours.pairs(pos, radius, b, sort=False), dtype=torch.long)
    if pairs.shape[0] > 1:
        # one sort of the key i N + j (torch's sort is several times faster than np.argsort
        # on 10^7 pairs)
        _, order = torch.sort(pairs[:, 0] * len(pos) + pairs[:, 1])
        pairs = pairs[order]
    return pairs.to(r.device)


def _find_pairs_sheared(r: torch.Tensor, radius: float, box: torch.Tensor, shear: torch.Tensor) -> torch.Tensor:
    """:func:`find_pairs` in a Lees-Edwards box (see there)."""
    r64 = r.detach().to("cpu", torch.float64)
    b64 = box.detach().to("cpu", torch.float64)
    sh = shear.detach().to("cpu", torch.float64)
    lx, ly = float(b64[0]), float(b64[1])
    off = float(sh[0]) - lx * round(float(sh[0]) / lx)          # the same images, |tilt| <= L_x / 2
    sh = torch.tensor([off, float(sh[1])], dtype=torch.float64)
    rw = wrap(r64, b64, sh)
    eps = off / ly
    s = rw.clone()
    s[:, 0] = rw[:, 0] - eps * rw[:, 1]
    # largest singular value of the map r -> s, [[1, -eps], [0, 1]]
    stretch = (1.0 + 0.5 * eps * eps + abs(eps) * (1.0 + 0.25 * eps * eps) ** 0.5) ** 0.5
    if radius * stretch >= 0.5 * float(b64.min()):
        # a box too small for the tree's one-image rule: all pairs (torch, O(N^2))
        return search_pairs(rw, radius, b64, 1024, sh).to(r.device)
    cand = torch.as_tensor(neighbours.pairs(torch.remainder(s, b64).numpy(), radius * stretch, b64.numpy(),
                                            sort=False), dtype=torch.long).reshape(-1, 2)
    if cand.shape[0] > 0:
        rij = minimum_image(rw[cand[:, 0]] - rw[cand[:, 1]], b64, sh)
        cand = cand[(rij * rij).sum(-1) < radius * radius]
        lo, hi = torch.minimum(cand[:, 0], cand[:, 1]), torch.maximum(cand[:, 0], cand[:, 1])
        cand = torch.stack([lo, hi], 1)
    if cand.shape[0] > 1:
        _, order = torch.sort(cand[:, 0] * len(rw) + cand[:, 1])
        cand = cand[order]
    return cand.to(r.device)


class NeighbourList(VerletList):
    """Verlet neighbour list with a skin over :func:`find_pairs` (k-d tree), for rollouts.

    Parameters
    ----------
    cutoff : interaction range h (all pair functions vanish beyond it).
    skin : extra search distance; the list is rebuilt when a particle has moved more
        than ``skin / 2`` since the last build.
    box : (d,) periodic box lengths or None.

    Attributes
    ----------
    pairs : (P, 2) long tensor of candidate pairs (distance < cutoff + skin at the build).
    n_builds : how many searches have been done (for diagnostics and tests).

    Sheared boxes: pass the Lees-Edwards state to :meth:`update` (:class:`~.driver.VerletList`).
    """

    def __init__(self, cutoff: float, skin: float, box: torch.Tensor | None = None):
        super().__init__(cutoff, skin, box, search=find_pairs)
