"""Decoded frames kept in memory within a byte budget, so that a clip is decoded once for the model and its
frames drawn on afterwards without decoding it again.

`FrameCache` wraps a `VideoFrames` and is iterated the same way, `(index, timestamp_s, frame)` with frames
`(H, W, 3)` uint8 RGB. Frames are kept as they pass, from the first one on, while their total size fits the
budget; once every frame is kept, nothing is decoded again. Beyond the budget the frames that did not fit are
decoded again on each pass, and `frame(index)` decodes up to `index` (remembering the last one).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence

import numpy as np

from referdino_demo.errors import VideoReadError
from referdino_demo.io.clip import Frame, VideoFrames, VideoInfo


class FrameCache:
    """The frames of `frames` (a `VideoFrames`), the first ones kept in memory up to `budget_mb` megabytes."""

    def __init__(self, frames: VideoFrames, budget_mb: float):
        self.source = frames
        self.budget_bytes = int(budget_mb * 2**20)
        self._kept: list[np.ndarray] = []
        self._kept_bytes = 0
        self._full = False  # a frame did not fit: later frames are not kept either (the kept ones stay a prefix)
        self._last: tuple[int, np.ndarray] | None = None  # the last frame decoded on demand beyond the kept ones
        self._lock = threading.Lock()

    @property
    def info(self) -> VideoInfo:
        return self.source.info

    @property
    def source_indices(self) -> np.ndarray:
        return self.source.source_indices

    @property
    def timestamps_s(self) -> np.ndarray:
        return self.source.timestamps_s

    def __len__(self) -> int:
        return len(self.source)

    @property
    def kept(self) -> int:
        """How many frames (the first ones) are in memory."""
        return len(self._kept)

    @property
    def complete(self) -> bool:
        """Every frame is in memory: iterating decodes nothing."""
        return len(self._kept) == len(self.source)

    def __iter__(self) -> Iterator[Frame]:
        if self.complete:
            return ((index, float(self.timestamps_s[index]), frame) for index, frame in enumerate(self._kept))
        return self._decode()

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` (0 .. T-1): from memory, or decoded again up to it."""
        if not 0 <= index < len(self):
            raise VideoReadError(f"frame {index} does not exist; the clip has {len(self)} frames (0 to "
                                 f"{len(self) - 1})")
        if index < len(self._kept):
            return self._kept[index]
        if self._last is None or self._last[0] != index:
            found = next(itertools.islice(self, index, None), None)
            if found is None or found[0] != index:
                raise VideoReadError(f"frame {index} of {self.info.source} could not be decoded again; the file "
                                     "changed or is damaged")
            self._last = (index, found[2])
        return self._last[1]

    def subset(self, positions: Sequence[int]) -> "FrameCache":
        """Only the frames at `positions` (ascending), renumbered, keeping those already in memory (see
        `VideoFrames.subset`: the clip a decode really delivered when corrupt packets lost frames)."""
        subset = FrameCache(self.source.subset(positions), self.budget_bytes / 2**20)
        for new, old in enumerate(positions):
            if old >= len(self._kept):
                break
            subset._keep(new, self._kept[old])
        return subset

    def _decode(self) -> Iterator[Frame]:
        for index, time_s, frame in self.source:
            self._keep(index, frame)
            yield index, time_s, frame

    def _keep(self, index: int, frame: np.ndarray) -> None:
        with self._lock:
            if self._full or index != len(self._kept):
                return  # kept already, or a frame before it is missing
            if self._kept_bytes + frame.nbytes > self.budget_bytes:
                self._full = True
                return
            self._kept.append(frame)
            self._kept_bytes += frame.nbytes
