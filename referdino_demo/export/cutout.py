"""The referred object cut out of every processed frame: RGBA PNG images (alpha = the mask) in a zip.

Layout::

    info.json     fps, frame size, threshold, feather, the expression, source frame index of every processed frame
    00000.png     mode "RGBA": the frame's colours, alpha 255 on the object and 0 elsewhere (soft over `feather` px)

PNG files are named by processed frame index; `info.json` maps them to source frames (`frame_indices`).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from referdino_demo.export.masks import write_json, write_png
from referdino_demo.mask_chunks import DEFAULT_CHUNK
from referdino_demo.mattes import cutout, iter_frames_with, iter_object_masks
from referdino_demo.output_files import atomic_write
from referdino_demo.results import VideoSegmentation


def export_cutout_zip(segmentation: VideoSegmentation, frames: Iterable[np.ndarray], path: str | os.PathLike, *,
                      expression: int | str | None = 0, threshold: float = 0.5, multi_target: float | None = None,
                      feather: float = 0.0, chunk: int = DEFAULT_CHUNK) -> Path:
    """Write one RGBA PNG per processed frame to the zip `path`; returns `path`.

    The mask is `expression`'s (an index or the text; None: the union of every expression's) at `threshold` and
    `multi_target`, as in `ExpressionResult.masks`; see `mattes.cutout` for the pixels. `frames` are the T processed
    `(H, W, 3)` uint8 RGB frames again, read lazily. If they are fewer or more than the segmentation's, a
    `ReferDinoError` is raised and nothing is left at `path`.
    """
    masks = iter_object_masks(segmentation, expression, threshold, multi_target, chunk)
    shown = None if expression is None else segmentation[expression].expression
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        write_json(archive, "info.json", {**segmentation.export_info(), "expression": shown, "threshold": threshold,
                                           "multi_target": multi_target, "feather": feather})
        for index, frame, mask in iter_frames_with(segmentation, frames, masks):
            write_png(archive, f"{index:05d}.png", Image.fromarray(cutout(frame, mask, feather)))
    return Path(path)
