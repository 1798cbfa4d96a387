"""Masks as COCO run-length encoding in one JSON file, readable by `pycocotools.mask.decode` and
`supervision.rle_to_mask` without this package.

File layout (UTF-8 JSON)::

    {
      "info": {"format": "referdino-demo/coco-rle", "version": 1, "fps": 14.985, "width": W, "height": H,
               "num_frames": T, "threshold": 0.5, "multi_target": null, "source": "clip.mp4" | null,
               "checkpoint": "...", "untrained": false, "frame_indices": [source frame of each processed frame]},
      "expressions": [{"expression_index": 0, "expression": "the red car", "query": 3}, ...],
      "annotations": [  # one per (processed frame, expression), frame-major
        {"expression": "the red car", "expression_index": 0, "frame_index": 0, "source_frame_index": 0,
         "score": 0.87, "bbox": [x, y, w, h], "area": 1234,
         "segmentation": {"size": [H, W], "counts": "compressed RLE string"}}, ...]
    }

`bbox` is the mask's tight box in COCO's convention (pixels, width = x_max - x_min + 1; `[0, 0, 0, 0]`
for an empty mask); `score` is the shown query's score in that frame; `area` the mask's pixel count.
The RLE counts runs of 0s then 1s in column-major (Fortran) order, and the string is COCO's LEB128-like
encoding (supervision's `mask_to_rle(..., compressed=True)`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import supervision as sv

from referdino_demo.errors import ConfigError
from referdino_demo.output_files import atomic_write
from referdino_demo.mask_chunks import DEFAULT_CHUNK, iter_mask_chunks
from referdino_demo.results import VideoSegmentation

FORMAT = "referdino-demo/coco-rle"
VERSION = 1


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) bool mask -> `{"size": [H, W], "counts": str}`, pycocotools' compressed RLE."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or not mask.size:
        raise ConfigError(f"expected a non-empty (H, W) mask, got shape {mask.shape}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": sv.mask_to_rle(mask, compressed=True)}


def decode_rle(rle: dict) -> np.ndarray:
    """`{"size": [H, W], "counts": str | bytes | list[int]}` -> (H, W) bool mask."""
    height, width = rle["size"]
    return sv.rle_to_mask(rle["counts"], resolution_wh=(int(width), int(height)))


def mask_bbox(mask: np.ndarray) -> list[int]:
    """COCO `[x, y, w, h]` of the mask's pixels, `[0, 0, 0, 0]` when it is empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def export_coco_rle(segmentation: VideoSegmentation, path: str | os.PathLike, *, threshold: float = 0.5,
                    multi_target: float | None = None, chunk: int = DEFAULT_CHUNK) -> Path:
    """Write `masks(threshold, multi_target)` of every expression as COCO RLE JSON (layout above).

    Annotations are written as they are computed, a chunk of frames at a time, so memory stays bounded.
    """
    results = list(segmentation)
    scores = [result.frame_scores for result in results]
    header = {
        "info": {"format": FORMAT, "version": VERSION, **segmentation.export_info(), "threshold": threshold,
                 "multi_target": multi_target},
        "expressions": [{"expression_index": i, "expression": r.expression, "query": int(r.query)}
                        for i, r in enumerate(results)],
    }
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as file:
        file.write(json.dumps(header, ensure_ascii=False)[:-1] + ', "annotations": [')  # header without its "}"
        separator = "\n"
        for start, masks in iter_mask_chunks(segmentation, threshold, multi_target, chunk):  # (E, t, H, W)
            for offset in range(masks.shape[1]):
                index = start + offset
                for e, result in enumerate(results):
                    mask = masks[e, offset]
                    annotation = {
                        "expression": result.expression, "expression_index": e, "frame_index": index,
                        "source_frame_index": int(segmentation.frame_indices[index]),
                        "score": round(float(scores[e][index]), 6), "bbox": mask_bbox(mask),
                        "area": int(mask.sum()), "segmentation": encode_rle(mask)}
                    file.write(separator + json.dumps(annotation, ensure_ascii=False))
                    separator = ",\n"
        file.write("\n]}\n")
    return Path(path)
