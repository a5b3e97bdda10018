"""Reading microscopy video: one lazy :class:`Video` for every format.

>>> from colloidcg.io import open_video
>>> video = open_video("experiment.tif")           # doctest: +SKIP
>>> video.meta.fps, video.meta.um_per_px, len(video), video[0].shape   # doctest: +SKIP

Which back-end reads which files is one table, :func:`backends` (entries are
:class:`BackendSpec`; :func:`register_backend` adds a format).
"""

from .config import CONFIG_NAME, find_config, read_config
from .readers import BackendSpec, backend_spec, backends, register_backend, unregister_backend
from .video import Video, VideoMeta, open_video

__all__ = ["open_video", "Video", "VideoMeta", "read_config", "find_config", "CONFIG_NAME",
           "BackendSpec", "backends", "backend_spec", "register_backend", "unregister_backend"]
