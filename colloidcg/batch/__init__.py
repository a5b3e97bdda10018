"""Batch processing of experiment folders on Dask distributed.

>>> from colloidcg.batch import run_batch
>>> res = run_batch("experiments/", "results/", stages="track,rearrangements")   # doctest: +SKIP
>>> res.n_failed, res.summary, res.report                                        # doctest: +SKIP

- :mod:`.discover`: the videos under a folder and the colloidcg.toml that applies to each;
- :mod:`.stages`: track, rearrangements, train, evaluate, export for one video;
- :mod:`.hashing`: content hashes and stage records (resumable, idempotent runs);
- :mod:`.runner`: Dask LocalCluster or a given scheduler, progress bars;
- :mod:`.summary`, :mod:`.report_html`: OUT/summary.csv and the self-contained OUT/report.html.
"""

from .discover import VideoJob, discover, find_videos
from .runner import BatchResult, parse_stages, run_batch
from .stages import STAGES

__all__ = ["run_batch", "BatchResult", "discover", "find_videos", "VideoJob", "STAGES", "parse_stages"]
