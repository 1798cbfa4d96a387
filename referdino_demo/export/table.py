"""Per-frame numbers as CSV: one row per (processed frame, expression).

Columns: frame_index, source_frame_index, time_s (frame_index / fps), expression, expression_index, score
(shown query), mask_area_px, mask_area_fraction (of H * W), box_x1, box_y1, box_x2, box_y2 (the shown
query's box, pixels of the original frame). (Named `table` so it does not shadow the stdlib `csv`.)
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from referdino_demo.output_files import atomic_write
from referdino_demo.mask_chunks import DEFAULT_CHUNK, iter_frame_stats
from referdino_demo.results import VideoSegmentation

COLUMNS = ("frame_index", "source_frame_index", "time_s", "expression", "expression_index", "score",
           "mask_area_px", "mask_area_fraction", "box_x1", "box_y1", "box_x2", "box_y2")


def export_csv(segmentation: VideoSegmentation, path: str | os.PathLike, *, threshold: float = 0.5,
               multi_target: float | None = None, chunk: int = DEFAULT_CHUNK) -> Path:
    """Write the per-frame table (columns above) for `masks(threshold, multi_target)` to `path`."""
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(iter_frame_stats(segmentation, threshold, multi_target, chunk))
    return Path(path)
