"""Exceptions raised by referdino-demo.

Every error a user can cause is a ``ReferDinoError`` subclass whose message says what failed, the value
seen, what was expected and what to do next. The UI shows ``str(err)``; the CLI prints it on one line.
"""


class ReferDinoError(Exception):
    """Base class of every error referdino-demo raises on purpose."""


class VideoReadError(ReferDinoError):
    """A video cannot be opened or decoded (missing, corrupt, not a video, no frames)."""


class ExpressionError(ReferDinoError):
    """An expression list or expression is unusable (empty, only whitespace, too many)."""


class InputLimitError(ReferDinoError):
    """An input is over a configured limit (resolution, duration, file size, frame count)."""


class CheckpointNotFoundError(ReferDinoError):
    """A checkpoint cannot be found locally and cannot be downloaded."""


class CheckpointMismatchError(ReferDinoError):
    """A checkpoint does not fit the model: unexpected, missing or wrongly shaped keys, or not a ReferDINO file."""


class ConfigError(ReferDinoError, ValueError):
    """A configuration value is invalid or two values are inconsistent."""
