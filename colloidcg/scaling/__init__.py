"""Learning large systems from small ones (issue 19; Chen et al., "Scalable learning of
macroscopic stochastic dynamics").

- :mod:`.upsample`: hierarchical upsampling, :func:`upsample` — large-system snapshots
  built from a small observed or simulated one by tiling, overlap removal and seam
  relaxation with the learned model.
- :mod:`.stacking`, :mod:`.lattice_field`: one crystal seen through an open view: its
  close-packed layers and their stacking, and its thermal displacement field (fitted to
  the film), from which the sites along a tiled film's seams are redrawn.
- :mod:`.simulators`: the microscopic simulators (:class:`SoftDiskSimulator`, the
  synthetic soft disks; :class:`ModelSimulator`, the learned model) behind one
  :class:`MicroSimulator` interface, with noise keyed by particle and pair identity.
- :mod:`.partial`: partial evolution, :func:`partial_evolution` — patches of a large
  snapshot advanced by one macroscopic step with their surroundings frozen as a halo.
- :mod:`.observables`, :mod:`.closure`, :mod:`.macro`: additive observables, learned
  closure variables and the macroscopic SDE (:func:`learn_macro`, :class:`MacroSDE`;
  :func:`block_increments`, its increments from block states of small periodic systems,
  :func:`learn_block`, the SDE fitted on them, and :func:`fast_variance`, the part of z
  that decorrelates within a macro step, kept out of the diffusion).
- :mod:`.latent`: the latent-state likelihood of block states' whole paths (an extended
  Kalman filter with the fast part as observation noise), :func:`learn_block`'s default fit.
- :mod:`.video_chain`: the chain from a video with a known truth (a rendered quench,
  tracked, trained on, ``colloidcg macro train``), for the benchmark and its test.

See docs/scaling.md for the method, the references and what was measured.
"""

from .macro import (MacroLearned, MacroSDE, SDEConfig, block_increments, fast_variance, fit_sde, learn_block,
                    learn_macro, load_sde)
from .partial import PatchStep, full_step, partial_evolution
from .simulators import MicroSimulator, MicroState, ModelSimulator, SoftDiskSimulator
from .upsample import (ClosestApproach, Configuration, Upsampled, closest_approach, match_parts, separate,
                       relaxation_summary, side_steps, tile_configurations, upsample)

__all__ = ["ClosestApproach", "Configuration", "MacroLearned", "MacroSDE", "MicroSimulator", "MicroState",
           "ModelSimulator", "PatchStep", "SDEConfig", "SoftDiskSimulator", "Upsampled", "block_increments",
           "closest_approach", "fast_variance",
           "fit_sde", "full_step", "learn_block", "learn_macro", "load_sde", "match_parts", "partial_evolution", "relaxation_summary",
           "separate", "side_steps",
           "tile_configurations", "upsample"]
