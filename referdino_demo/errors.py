"""Exceptions raised by referdino-demo.

Every error a user can cause is a `ReferDinoError` subclass whose message says what failed, the value
seen, what was expected and what to do next. The UI shows `str(err)`; the CLI prints it on one line.
"""


class ReferDinoError(Exception):
    """Base class of every error referdino-demo raises on purpose."""


class VideoReadError(ReferDinoError):
    """A video cannot be opened or decoded (missing, corrupt, not a video, no frames)."""


class ExpressionError(ReferDinoError):
    """An expression list or expression is unusable (empty, only whitespace, too many)."""


class UnknownExpressionError(ReferDinoError, KeyError):
    """A result was asked for an expression that was not segmented (also a KeyError, as for a dict)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputLimitError(ReferDinoError):
    """An input is over a configured limit (resolution, duration, file size, frame count)."""


class CheckpointNotFoundError(ReferDinoError):
    """A checkpoint cannot be found locally and cannot be downloaded."""


class CheckpointMismatchError(ReferDinoError):
    """A checkpoint does not fit the model: unexpected, missing or wrongly shaped keys, or not a ReferDINO file."""


class NoCandidateAtPointError(ReferDinoError):
    """A click picked no object: none of an expression's kept candidate queries covers the clicked point at the
    mask threshold. The message gives the point, the threshold and the candidates' best probability there, and
    suggests keeping more candidates (`num_candidates`) on the next run."""


class OutputError(ReferDinoError):
    """An output cannot be written: the folder is a file, not writable, or the disk is full."""


class ConfigError(ReferDinoError, ValueError):
    """A configuration value is invalid or two values are inconsistent."""


class MemoryBudgetError(InputLimitError):
    """A job needs more memory than it may use: its estimated peak is over the memory budget (refused before any
    model work), or the run itself ran out of memory (memory freed before this is raised). The message gives the
    numbers and what to lower."""


class ModelLoadError(ReferDinoError):
    """A checkpoint was found but the model could not be built from it for another reason than its content (an I/O
    or device error); the message gives the cause, and the next attempt loads it again."""


class JobCancelledError(ReferDinoError):
    """A job stopped early because its user left (the browser session ended) before the result was ready; nothing
    it wrote is kept."""


def one_line(err: BaseException | str, limit: int | None = None) -> str:
    """`str(err)` on one line (runs of whitespace become one space), cut after `limit` characters."""
    text = " ".join(str(err).split())
    return text if limit is None or len(text) <= limit else text[:limit] + "..."
