"""Results of the app's example clips, computed once per checkpoint and kept on disk, so that a visitor who clicks
an example sees its result at once instead of waiting for the model.

A result is filed under a key made of everything it depends on: the package version (so an upgrade computes the
examples again), the checkpoint, the clip (name, size and modification time), the expressions and the run settings.
A missing or damaged file is computed again; a folder that cannot be written only means the result is not kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .errors import ReferDinoError
from .result_files import ResultFileError, load_segmentation, save_segmentation
from .results import VideoSegmentation

log = logging.getLogger(__name__)
CACHE_ENV = "REFERDINO_CACHE"  # where cached example results go; default: the user's cache folder


def default_cache_folder() -> Path:
    """$REFERDINO_CACHE, else `$XDG_CACHE_HOME/referdino-demo` (`~/.cache/referdino-demo`)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "referdino-demo"


class ExampleCache:
    """`get(...)` returns the cached result of an example, computing and saving it on first use (thread-safe: two
    visitors clicking the same example at once wait for one computation)."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_cache_folder() / "examples"
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def path(self, checkpoint: str, video: str | os.PathLike, expressions: list[str], settings: dict) -> Path:
        """The file of this example's result: named by a hash of everything the result depends on."""
        clip = Path(video).stat()
        key = json.dumps({"package": __version__, "checkpoint": checkpoint, "video": Path(video).name,
                          "size": clip.st_size, "mtime_ns": clip.st_mtime_ns, "expressions": list(expressions),
                          "settings": settings}, sort_keys=True, default=str)
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"

    def get(self, checkpoint: str, video: str | os.PathLike, expressions: list[str], settings: dict,
            compute: Callable[[], VideoSegmentation]) -> VideoSegmentation:
        """The cached result, or `compute()` saved for next time."""
        path = self.path(checkpoint, video, expressions, settings)
        with self._lock:
            lock = self._locks.setdefault(path.name, threading.Lock())
        with lock:
            cached = self.cached(path)
            if cached is not None:
                return cached
            segmentation = compute()
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                save_segmentation(segmentation, path)
            except (OSError, ReferDinoError) as err:  # a read-only or full disk: serve it, just do not keep it
                log.warning("could not keep the example result in %s: %s", self.folder, err)
            return segmentation

    @staticmethod
    def cached(path: Path) -> VideoSegmentation | None:
        """The result saved at `path`, or None when there is none or it is damaged (then it is deleted)."""
        if not path.is_file():
            return None
        try:
            return load_segmentation(path)
        except ResultFileError as err:
            log.warning("%s; computing it again", err)
            path.unlink(missing_ok=True)
            return None
