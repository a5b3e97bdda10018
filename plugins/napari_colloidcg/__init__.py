"""napari plugin for colloidcg: a thin GUI over the library, no physics of its own.

- Reader: every video format :func:`colloidcg.io.open_video` reads, served lazily; and
  colloidcg's results: tracks, rearrangements, events and simulated tables, model folders
  and bundles (into the Model widget), a batch OUT folder or one video's results in it.
- Writer: Tracks and Points layers to the tracks schema (Parquet + JSON sidecar).
- ``python -m napari_colloidcg.prefer``: colloidcg as napari's reader for video endings.
- Sample data: the videos shipped in ``sample_videos/``.
- Widgets: Track (live detection preview, tracking in a worker thread), Rearrangements
  (D2min colours, events table), Model (training with a live loss curve, S on the
  footage, rollouts against the observed tracks, export); their docks share one tab group.

The manifest is ``napari.yaml``, registered through the ``napari.manifest`` entry point.
"""

from ._reader import napari_get_reader

__all__ = ["napari_get_reader", "TrackWidget", "RearrangementsWidget", "ModelWidget"]


def __getattr__(name):   # the widgets import Qt: only on demand
    if name == "TrackWidget":
        from ._track_widget import TrackWidget
        return TrackWidget
    if name == "RearrangementsWidget":
        from ._rearrangements_widget import RearrangementsWidget
        return RearrangementsWidget
    if name == "ModelWidget":
        from ._model_widget import ModelWidget
        return ModelWidget
    raise AttributeError(name)
