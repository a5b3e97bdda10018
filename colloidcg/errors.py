"""User-facing errors.

Every problem caused by the user's input (a bad file, a bad parameter) is raised as a
:class:`ColloidcgError` whose message is one line naming the file or parameter and what
was expected. The command line prints that line and exits non-zero, with no traceback.
Programming errors stay ordinary exceptions so that they keep their tracebacks.
"""

from __future__ import annotations


class ColloidcgError(Exception):
    """An error in the user's input, with a message fit to show as is."""


class VideoError(ColloidcgError):
    """A video file that is missing, corrupt, truncated, empty or of an unknown kind."""


class ParameterError(ColloidcgError, ValueError):
    """A parameter outside its allowed range."""


class TrackingError(ColloidcgError):
    """Tracking could not produce a result (for example: no particles found)."""


class OutputExistsError(ColloidcgError):
    """An output would overwrite something the user already has."""
