"""Object mattes for effects and cut-outs: one expression's masks (or the union of all) a chunk at a time, paired
with the processed frames; soft alpha edges and RGBA cut-outs.

Effects and cut-outs show one object, so they take `expression` (an index or the text) or None for every
expression at once. Like `mask_chunks`, nothing here holds more than one chunk of frames.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
from scipy import ndimage

from referdino_demo.errors import ConfigError, ReferDinoError
from referdino_demo.mask_chunks import DEFAULT_CHUNK, iter_mask_chunks
from referdino_demo.results import VideoSegmentation

Data = TypeVar("Data")


def iter_object_masks(segmentation: VideoSegmentation, expression: int | str | None = 0, threshold: float = 0.5,
                      multi_target: float | None = None,
                      chunk: int = DEFAULT_CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(start, masks)` with `(t, H, W)` bool masks of frames `start .. start + t - 1`: those of
    `segmentation[expression].masks(threshold, multi_target)`, or with `expression=None` their union over every
    expression."""
    if expression is not None:
        result = segmentation[expression]
        segmentation = dataclasses.replace(segmentation, results={result.expression: result})
    for start, masks in iter_mask_chunks(segmentation, threshold, multi_target, chunk):  # (E, t, H, W)
        yield start, masks.any(0)


def iter_frames_with(segmentation: VideoSegmentation, frames: Iterable[np.ndarray],
                     chunks: Iterable[tuple[int, Iterable[Data]]]) -> Iterator[tuple[int, np.ndarray, Data]]:
    """Yield `(index, frame, data)` for every processed frame: `frames` (the T processed `(H, W, 3)` uint8 RGB frames
    again, read lazily) paired with the per-frame items of `chunks` (`(start, items)` as `iter_mask_chunks` yields).

    Raises `ReferDinoError` when `frames` has fewer or more frames than the segmentation, or a frame of another
    size, so a writer around this loop is aborted instead of finishing a video that is out of step.
    """
    height, width = segmentation.frame_size
    total = segmentation.num_frames
    frames = iter(frames)
    for start, items in chunks:
        for index, data in enumerate(items, start):
            frame = next(frames, None)
            if frame is None:
                raise ReferDinoError(
                    f"the frames ran out after {index} frames, but the segmentation has {total} processed frames; "
                    f"pass the frames that were segmented, read with the same stride, start/end and max_frames")
            frame = np.asarray(frame)
            if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                raise ReferDinoError(f"frame {index} is a {frame.shape} {frame.dtype} array, but the segmentation "
                                     f"was made on ({height}, {width}, 3) uint8 RGB frames; pass the original frames")
            yield index, frame, data
    if next(frames, None) is not None:
        raise ReferDinoError(f"more frames than the segmentation's {total} processed frames were given; pass the "
                             f"frames that were segmented, read with the same stride, start/end and max_frames")


def soft_mask(mask: np.ndarray, feather: float = 0.0) -> np.ndarray:
    """`(H, W)` bool mask -> `(H, W)` float32 alpha in [0, 1] whose edge ramps linearly over about `feather` pixels.

    The mask is averaged over a square window of side `2 * r + 1`, r = `round(feather / 2)`: across a straight edge
    alpha rises in equal steps over that many pixels, centred on the edge, and a pixel whose window is all inside
    (all outside) the mask keeps alpha 1 (0). `feather` < 1 gives the hard mask. The frame border is not an edge:
    a mask touching it stays opaque there.
    """
    if not (math.isfinite(feather) and feather >= 0):
        raise ConfigError(f"feather must be a width in pixels >= 0, got {feather}")
    alpha = np.asarray(mask, bool).astype(np.float32)
    radius = round(feather / 2)
    if radius == 0 or alpha.min() == alpha.max():  # hard, empty or full: nothing to soften
        return alpha
    # a box filter turns a step into an exact linear ramp and leaves pixels away from the edge exactly 0 or 1
    return np.clip(ndimage.uniform_filter(alpha, 2 * radius + 1, mode="nearest"), 0.0, 1.0)


def cutout(frame: np.ndarray, mask: np.ndarray, feather: float = 0.0) -> np.ndarray:
    """`(H, W, 3)` uint8 RGB frame and `(H, W)` bool mask -> `(H, W, 4)` uint8 RGBA: the frame's colours unchanged
    (straight alpha) and alpha `round(255 * soft_mask(mask, feather))`."""
    return np.dstack([frame, np.round(soft_mask(mask, feather) * 255).astype(np.uint8)])
