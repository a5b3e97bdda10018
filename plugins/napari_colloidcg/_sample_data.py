"""napari sample data: the videos shipped in ``sample_videos/`` (File > Open Sample)."""

from __future__ import annotations


def dense_sample() -> list[tuple]:
    """The dense fluorescent monolayer: 50 frames of 256 x 256 px, 0.1 um/px, 100 fps.

    Its ground truth (``truth.parquet``) and planted events (``events.parquet``) sit next
    to the video in :func:`colloidcg.samples.sample_dir`.
    """
    from colloidcg.io import open_video
    from colloidcg.samples import sample_video

    from ._reader import video_layer_data

    return [video_layer_data(open_video(sample_video("dense")), name="dense sample")]
