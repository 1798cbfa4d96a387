"""Per-frame data of a whole `VideoSegmentation`, computed a chunk of frames at a time.

Masks at the original size are large ((T, H, W) bool is 2 GB for 1000 frames of 1080p), so renderers and
exporters never build them for the whole video: they walk these generators, which keep one chunk of
`chunk` frames per expression in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from referdino_demo.errors import ReferDinoError
from referdino_demo.results import ExpressionResult, VideoSegmentation

DEFAULT_CHUNK = 16


def check_lengths(segmentation: VideoSegmentation) -> None:
    """Raise unless every expression has one result per processed frame."""
    total = segmentation.num_frames
    for result in segmentation:
        if result.num_frames != total:
            raise ReferDinoError(f"expression {result.expression!r} has {result.num_frames} frames but the "
                                 f"segmentation has {total} processed frames (frame_indices)")


def iter_mask_chunks(segmentation: VideoSegmentation, threshold: float = 0.5, multi_target: float | None = None,
                     chunk: int = DEFAULT_CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(start, masks)` with masks `(E, t, H, W)` bool for frames `start .. start + t - 1`.

    E is the number of expressions, in `segmentation` order; the masks are exactly those of
    `ExpressionResult.masks(threshold, multi_target)`.
    """
    check_lengths(segmentation)
    height, width = segmentation.frame_size
    streams = [result.iter_masks(threshold, multi_target, chunk) for result in segmentation]
    for start in range(0, segmentation.num_frames, chunk):
        parts = [next(stream)[1] for stream in streams]
        t = min(chunk, segmentation.num_frames - start)
        yield start, np.stack(parts) if parts else np.zeros((0, t, height, width), bool)


def iter_logit_chunks(result: ExpressionResult, multi_target: float | None = None,
                      chunk: int = DEFAULT_CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(start, logits)` with `(t, H, W)` float32 mask logits at the original size: the shown
    query's, or with `multi_target` the maximum over `queries_above(multi_target)`."""
    queries = None if multi_target is None else result.queries_above(multi_target)
    for start in range(0, result.num_frames, chunk):
        yield start, result.upsampled_logits(slice(start, start + chunk), queries).max(0)


def iter_frame_stats(segmentation: VideoSegmentation, threshold: float = 0.5, multi_target: float | None = None,
                     chunk: int = DEFAULT_CHUNK) -> Iterator[dict]:
    """Yield one dict per (frame, expression), frame-major, with the keys:

    frame_index (processed, 0 .. T-1), source_frame_index (in the decoded source), time_s (frame_index / fps),
    expression, expression_index, score (of the shown query), mask_area_px, mask_area_fraction, and
    box_x1, box_y1, box_x2, box_y2 (the shown query's box, pixels of the original frame).
    """
    height, width = segmentation.frame_size
    results = list(segmentation)
    scores = [result.frame_scores for result in results]
    boxes = [result.boxes_xyxy() for result in results]  # (T, 4) each
    for start, masks in iter_mask_chunks(segmentation, threshold, multi_target, chunk):
        areas = masks.sum((2, 3))  # (E, t)
        for offset in range(masks.shape[1]):
            index = start + offset
            for e, result in enumerate(results):
                x1, y1, x2, y2 = (round(float(v), 3) for v in boxes[e][index])
                yield {
                    "frame_index": index,
                    "source_frame_index": int(segmentation.frame_indices[index]),
                    "time_s": round(index / segmentation.fps, 6),
                    "expression": result.expression,
                    "expression_index": e,
                    "score": round(float(scores[e][index]), 6),
                    "mask_area_px": int(areas[e, offset]),
                    "mask_area_fraction": round(int(areas[e, offset]) / (height * width), 6),
                    "box_x1": x1, "box_y1": y1, "box_x2": x2, "box_y2": y2,
                }
