"""Writing output files safely: atomic writes (beside the destination under a hidden name, renamed on success), an
output folder checked before a long job, and operating-system errors while writing as one `OutputError`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder; on success it replaces `path`, on error it is deleted,
    so a failed or interrupted export never leaves a half-written file (an older file stays intact)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Raise `OutputError` unless `folder` is a folder that can be written, or can be created: checked before
    a long job rather than after it. Nothing is created here."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is not a folder" if existing == folder else f"is inside {existing.name}, which is not a folder"
        raise OutputError(f"output folder {folder} {what}; choose a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} cannot be written ({existing} is read-only for this user); "
                          "choose another folder")
    return folder


@contextmanager
def output_errors(folder: str | os.PathLike) -> Iterator[None]:
    """Turn an operating-system error while writing into `folder` (disk full, permissions) into `OutputError`."""
    try:
        yield
    except OSError as err:
        raise OutputError(f"cannot write into {Path(folder)}: {err.strerror or err}; free some space or choose "
                          "another folder (files already finished are complete)") from err
