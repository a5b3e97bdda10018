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

from .driver import VerletList, minimum_image, wrap

__all__ = ["find_pairs", "NeighbourList", "minimum_image", "wrap"]


def find_pairs(r: torch.Tensor, radius: float, box: torch.Tensor | None = None) -> torch.Tensor:
    """All unordered pairs closer than ``radius``.

    Parameters
    ----------
    r : (N, d) positions (any device, any float dtype).
    radius : search radius, in the units of ``r``.
    box : (d,) periodic box lengths or None.

    Returns
    -------
    (P, 2) long tensor on ``r.device`` with ``i < j``, sorted by i then j.
    """
    pos = r.detach().to("cpu", torch.float64).numpy()
    b = None if box is None else box.detach().to("cpu", torch.float64).numpy()
    pairs = torch.as_tensor(neighbours.pairs(pos, radius, b, sort=False), dtype=torch.long)
    if pairs.shape[0] > 1:
        # one sort of the key i N + j (torch's sort is several times faster than np.argsort
        # on 10^7 pairs)
        _, order = torch.sort(pairs[:, 0] * len(pos) + pairs[:, 1])
        pairs = pairs[order]
    return pairs.to(r.device)


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
    """

    def __init__(self, cutoff: float, skin: float, box: torch.Tensor | None = None):
        super().__init__(cutoff, skin, box, search=find_pairs)
