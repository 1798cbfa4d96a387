"""A probability map drawn over one frame: colour from a matplotlib colormap, transparency from the
probability itself (so low-probability regions stay clear), and the threshold contour on top so the user
sees where the mask threshold cuts.
"""

from __future__ import annotations

import matplotlib
import numpy as np

from referdino_demo.errors import ConfigError
from referdino_demo.postprocess import above_threshold, probabilities
from referdino_demo.render._pixels import check_frame, mask_edge


class HeatmapRenderer:
    """Probability heatmap with alpha = `opacity * probability` and an optional threshold contour.

    colormap: a matplotlib colormap name ("inferno", "magma", "viridis", "jet", ...).
    opacity: alpha where the probability is 1, in [0, 1].
    contour: draw the boundary of `probability > threshold` in the expression's colour.
    contour_thickness: contour width in pixels, drawn just inside the thresholded region.
    """

    def __init__(self, colormap: str = "inferno", opacity: float = 0.6, contour: bool = True,
                 contour_thickness: int = 2):
        if not 0.0 <= opacity <= 1.0:
            raise ConfigError(f"opacity must be in [0, 1], got {opacity}")
        if colormap not in matplotlib.colormaps:
            raise ConfigError(f"unknown colormap {colormap!r}; try 'inferno', 'magma', 'viridis' or 'jet'")
        self.colormap, self.opacity = colormap, opacity
        self.contour, self.contour_thickness = contour, contour_thickness
        # (256, 3) lookup table: indexing is much faster than calling the colormap per pixel
        self._lut = (matplotlib.colormaps[colormap](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.float32)

    def render_frame(self, frame: np.ndarray, logits: np.ndarray, threshold: float = 0.5,
                     color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
        """Blend the probability `sigmoid(logits)` over `frame`; returns a new `(H, W, 3)` uint8 RGB frame.

        frame: `(H, W, 3)` uint8 RGB, left unchanged.
        logits: `(H, W)` mask logits at the frame size; the contour is the mask's own boundary
            (`postprocess.above_threshold`, as every mask), not a second rule on probabilities.
        threshold: the mask threshold whose contour is drawn, in [0, 1].
        color: RGB contour colour (the expression's palette colour).
        """
        frame = check_frame(frame)
        logits = np.asarray(logits, np.float32)
        if logits.shape != frame.shape[:2]:
            raise ConfigError(f"logits must be (H, W) = {frame.shape[:2]} like the frame, got {logits.shape}")
        inside = above_threshold(logits, threshold)
        prob = probabilities(logits)
        heat = self._lut[np.round(prob * 255).astype(np.uint8)]  # (H, W, 3)
        alpha = (self.opacity * prob)[..., None]
        out = np.round(frame * (1.0 - alpha) + heat * alpha).astype(np.uint8)
        if self.contour and self.contour_thickness > 0:
            out[mask_edge(inside, self.contour_thickness)] = color
        return out
