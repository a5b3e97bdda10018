"""Structural descriptors of tracked particles: g(r) (:func:`gr`, the one g(r) of
colloidcg), Voronoi cells, coordination, psi6,
and the radial structure functions used for "softness" (Cubuk et al. 2015).

All inputs are trackpy-schema tracks in px; see :func:`descriptors` for the columns.
"""

from .descriptors import DescriptorAccumulator, descriptors
from .frames import Frames, fov_from_shape, prepare
from .neighbours import PairChunk, chunk_bounds, frame_pairs, map_chunks, pairs_in_frames
from .order import bond_order, pair_counts, psi_k
from .radial import DEFAULT_RADII, DEFAULT_WIDTH, feature_names
from .rdf import EDGE_TREATMENTS, cutoff_from_gr, first_minimum, gr, radial_distribution
from .voronoi import voronoi_2d, voronoi_frames

__all__ = [
    "descriptors", "DescriptorAccumulator", "Frames", "prepare", "fov_from_shape",
    "PairChunk", "frame_pairs", "chunk_bounds", "pairs_in_frames", "map_chunks", "bond_order", "pair_counts", "psi_k", "DEFAULT_RADII", "DEFAULT_WIDTH",
    "feature_names", "cutoff_from_gr", "first_minimum", "gr", "EDGE_TREATMENTS", "radial_distribution", "voronoi_2d", "voronoi_frames",
]
