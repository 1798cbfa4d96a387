"""Opening input files safely (checkpoints, configs): only regular files (a FIFO, device, socket or folder given
where a file is expected is refused by its type before it is opened for reading, so nothing can block), and small
files read with a size bound."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import CheckpointMismatchError, CheckpointNotFoundError

_KINDS = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]


def kind_of(mode: int) -> str:
    """'a regular file', 'a folder', 'a named pipe (FIFO)', ... for an `st_mode`."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def regular_file(path: str | Path, what: str = "checkpoint file",
                 error: type[Exception] = CheckpointMismatchError) -> os.stat_result:
    """`os.stat(path)` (symlinks followed) if `path` is a regular file; otherwise `error` saying what it is.

    A missing path raises `CheckpointNotFoundError` when `error` is a checkpoint error, else `error`."""
    try:
        info = os.stat(path)
    except FileNotFoundError as err:
        missing = CheckpointNotFoundError if error is CheckpointMismatchError else error
        raise missing(f"the {what} {path} does not exist") from err
    except OSError as err:  # permission, a name too long, a loop of links
        raise error(f"the {what} {path} cannot be examined ({type(err).__name__}: {err.strerror or err})") from err
    if not stat.S_ISREG(info.st_mode):
        raise error(f"the {what} {path} is {kind_of(info.st_mode)}, not a regular file; pass the path of the "
                    "file itself")
    return info


def open_regular(path: str | Path, what: str = "checkpoint file",
                 error: type[Exception] = CheckpointMismatchError) -> BinaryIO:
    """A binary file object for the regular file `path`.

    Checked twice: by name first (for the message), then on the opened descriptor, so that a file swapped for a
    FIFO in between is still refused. The open is non-blocking, so even then it cannot wait for a writer; on a
    regular file the flag changes nothing."""
    regular_file(path, what, error)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise error(f"the {what} {path} cannot be opened ({type(err).__name__}: {err.strerror or err})") from err
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"the {what} {path} is {kind_of(mode)}, not a regular file; pass the path of the file itself")
    return os.fdopen(fd, "rb")


def read_small_file(path: str | Path, limit: int, error: type[Exception] = CheckpointMismatchError,
                    what: str = "file") -> bytes:
    """The bytes of the regular file `path`, which must not be larger than `limit` bytes."""
    with open_regular(path, what, error) as f:
        data = f.read(limit + 1)  # never more than the bound, whatever the file grew to since it was checked
    if len(data) > limit:
        raise error(f"the {what} {path} is larger than {limit:,} bytes, the most read for a {what}; "
                    "it is not one written by this package")
    return data
