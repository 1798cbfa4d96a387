"""Masks as PNG images in a zip: per-expression binary masks, or DAVIS-style indexed palette images.

`export_png_zip` layout::

    expressions.json          {"00_the-red-car": "the red car", ...}
    info.json                 fps, frame size, threshold, source frame index of every processed frame, ...
    00_the-red-car/00000.png  mode "L", 0 background / 255 mask, one per processed frame (0 .. T-1)
    01_a-dog/00000.png

`export_palette_zip` layout (the DAVIS / YouTube-VOS annotation convention that benchmark tools read)::

    expressions.json          {"1": "the red car", "2": "a dog"}   (object id -> expression)
    info.json
    00000.png                 mode "P" with the DAVIS palette: 0 background, expression i has id i + 1

PNG files are named by processed frame index; `info.json` maps them to source frames (`frame_indices`).
"""

from __future__ import annotations

import io
import json
import os
import re
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from referdino_demo.errors import ReferDinoError
from referdino_demo.output_files import atomic_write
from referdino_demo.mask_chunks import DEFAULT_CHUNK, iter_logit_chunks, iter_mask_chunks
from referdino_demo.results import VideoSegmentation


def _davis_palette() -> list[int]:
    """The PASCAL VOC / DAVIS palette: the bits of id are spread over r, g, b from the most significant bit
    (1 -> (128, 0, 0), 2 -> (0, 128, 0), 3 -> (128, 128, 0), 4 -> (0, 0, 128), ...)."""
    palette = []
    for index in range(256):
        rgb, value = [0, 0, 0], index
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << bit
            value >>= 3
        palette += rgb
    return palette


DAVIS_PALETTE: list[int] = _davis_palette()  # 768 ints: r, g, b of ids 0 .. 255


def expression_folders(segmentation: VideoSegmentation) -> list[str]:
    """A filesystem-safe, unique folder name per expression: `"{index:02d}_{ascii slug}"`."""
    width = max(2, len(str(len(segmentation) - 1)))
    return [f"{i:0{width}d}_{_slug(text)}" for i, text in enumerate(segmentation.expressions)]


def export_png_zip(segmentation: VideoSegmentation, path: str | os.PathLike, *, threshold: float = 0.5,
                   multi_target: float | None = None, chunk: int = DEFAULT_CHUNK) -> Path:
    """Write per-expression, per-frame 0/255 PNG masks of `masks(threshold, multi_target)` to the zip `path`."""
    folders = expression_folders(segmentation)
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        write_json(archive, "expressions.json", dict(zip(folders, segmentation.expressions, strict=True)))
        write_json(archive, "info.json", _info(segmentation, threshold, multi_target))
        for start, masks in iter_mask_chunks(segmentation, threshold, multi_target, chunk):  # (E, t, H, W)
            for folder, expression_masks in zip(folders, masks, strict=True):
                for offset, mask in enumerate(expression_masks):
                    image = Image.fromarray(mask.astype(np.uint8) * 255)  # 2-D uint8: mode "L"
                    write_png(archive, f"{folder}/{start + offset:05d}.png", image)
    return Path(path)


def export_palette_zip(segmentation: VideoSegmentation, path: str | os.PathLike, *, threshold: float = 0.5,
                       multi_target: float | None = None, chunk: int = DEFAULT_CHUNK) -> Path:
    """Write one indexed PNG per frame (id = expression index + 1, 0 = background) to the zip `path`.

    Where masks overlap, the pixel goes to the expression with the higher probability (ties: the lower id).
    """
    if len(segmentation) > 255:
        raise ReferDinoError(f"an indexed PNG holds at most 255 objects, got {len(segmentation)} expressions; "
                             f"use export_png_zip instead")
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        write_json(archive, "expressions.json", {str(i + 1): t for i, t in enumerate(segmentation.expressions)})
        write_json(archive, "info.json", _info(segmentation, threshold, multi_target))
        logit_streams = [iter_logit_chunks(result, multi_target, chunk) for result in segmentation]
        for start, masks in iter_mask_chunks(segmentation, threshold, multi_target, chunk):  # (E, t, H, W)
            if len(masks):
                logits = np.stack([next(stream)[1] for stream in logit_streams])  # (E, t, H, W)
                winner = np.where(masks, logits, -np.inf).argmax(0)  # (t, H, W)
                ids = np.where(masks.any(0), winner + 1, 0).astype(np.uint8)
            else:
                ids = np.zeros(masks.shape[1:], np.uint8)
            for offset, frame_ids in enumerate(ids):
                image = Image.frombytes("P", frame_ids.shape[::-1], frame_ids.tobytes())
                image.putpalette(DAVIS_PALETTE)
                write_png(archive, f"{start + offset:05d}.png", image)
    return Path(path)


def _slug(text: str, max_length: int = 48) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:max_length].rstrip("-")
    return slug or "expression"


def _info(segmentation: VideoSegmentation, threshold: float, multi_target: float | None) -> dict:
    return {**segmentation.export_info(), "threshold": threshold, "multi_target": multi_target}


def write_json(archive: zipfile.ZipFile, name: str, data: dict) -> None:
    """`data` as indented UTF-8 JSON at `name` in `archive`."""
    archive.writestr(name, json.dumps(data, ensure_ascii=False, indent=2))


def write_png(archive: zipfile.ZipFile, name: str, image: Image.Image) -> None:
    """`image` as a PNG at `name` in `archive`, stored as it is (PNG is compressed already)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    archive.writestr(name, buffer.getvalue(), compress_type=zipfile.ZIP_STORED)  # PNG is compressed already
