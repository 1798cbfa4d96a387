"""Pixel helpers shared by the renderers: the frame check and mask outlines."""

from __future__ import annotations

import numpy as np

from referdino_demo.errors import ConfigError


def check_frame(frame: np.ndarray, name: str = "frame") -> np.ndarray:
    """`frame` as an `(H, W, 3)` uint8 array, or a `ValueError` naming what was received."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ConfigError(f"{name} must be an (H, W, 3) uint8 RGB array, got {frame.shape} {frame.dtype}")
    return frame


def mask_edge(mask: np.ndarray, thickness: int) -> np.ndarray:
    """(H, W) bool: the pixels of `mask` within `thickness` pixels (4-neighbour steps) of its outside.

    The outline lies inside the mask, so drawing it never covers pixels outside. The frame border does not
    count as outside: a mask touching the border is not outlined there. Vectorised erosion, fast without
    OpenCV (supervision's contour tracing falls back to pure Python then).
    """
    eroded = mask
    for _ in range(thickness):
        p = np.pad(eroded, 1, mode="edge")
        eroded = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~eroded
