"""Masks of several expressions drawn over one frame, with supervision's annotators (fill, boxes, labels).

supervision draws in place on BGR arrays; we are RGB throughout. Rather than convert each frame to BGR and back
(two full-frame copies, a fifth of the drawing time at 480p), the renderer gives supervision its palette with red
and blue swapped and draws on an RGB copy: supervision's BGR is then our RGB, the caller's frame is never modified
and the palette's RGB colours come out as given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

from referdino_demo.errors import ConfigError
from referdino_demo.render._pixels import check_frame, mask_edge
from referdino_demo.render.palette import PALETTE, text_color_on
from referdino_demo.render.text import drawable_text, font_path

DEFAULT_LABEL_FRACTION = 1 / 32  # label text height relative to the frame's shorter side
MIN_LABEL_PX = 10
LABEL_CHARS = 48  # longer expressions are cut with an ellipsis so a label stays on the frame


class OverlayRenderer:
    """Translucent masks, outlines, optional boxes and labels ("the red car 0.87") in palette colours.

    opacity: fill opacity in [0, 1] (0: outline only).
    colors: RGB colours; mask `i` is drawn in `colors[ids[i] % len(colors)]`. Default `PALETTE`.
    outline: thickness in pixels of an outline drawn just inside each mask (0: none).
    show_boxes: draw a box per mask (the given `boxes`, else the mask's bounding box).
    show_labels: draw a label per mask: the expression text and, when given, the score.
    label_scale: label size relative to the default (text 1/32 of the shorter frame side, >= 10 px).
    """

    def __init__(self, opacity: float = 0.5, colors: Sequence[tuple[int, int, int]] | None = None, *,
                 outline: int = 2, show_boxes: bool = False, show_labels: bool = True, label_scale: float = 1.0):
        if not 0.0 <= opacity <= 1.0:
            raise ConfigError(f"opacity must be in [0, 1], got {opacity}")
        if label_scale <= 0:
            raise ConfigError(f"label_scale must be > 0, got {label_scale}")
        colors = tuple(tuple(int(v) for v in c) for c in (PALETTE if colors is None else colors))
        if not colors or any(len(c) != 3 for c in colors):
            raise ConfigError(f"colors must be a non-empty list of (r, g, b) tuples, got {colors}")
        self.opacity, self.outline, self.label_scale = opacity, outline, label_scale
        self.show_boxes, self.show_labels = show_boxes, show_labels
        # color_lookup=CLASS with class_id = palette index: colour i stays colour i whatever is drawn
        self._colors = colors
        self._palette = sv.ColorPalette([sv.Color(*c[::-1]) for c in colors])  # swapped: see the module docstring
        self._text_palette = sv.ColorPalette([sv.Color(*text_color_on(c)[::-1]) for c in colors])
        lookup = sv.ColorLookup.CLASS
        self._fill = sv.MaskAnnotator(color=self._palette, opacity=opacity, color_lookup=lookup)
        self._boxes = sv.BoxAnnotator(color=self._palette, thickness=2, color_lookup=lookup)
        self._labelers: dict[int, sv.RichLabelAnnotator] = {}  # by font size; loading a font is not free

    def render_frame(self, frame: np.ndarray, masks: Sequence[np.ndarray], labels: Sequence[str],
                     boxes: np.ndarray | None = None, *, scores: Sequence[float] | None = None,
                     ids: Sequence[int] | None = None) -> np.ndarray:
        """Draw `masks` over `frame` (see `annotate`); returns a new `(H, W, 3)` uint8 RGB frame.

        masks: n `(H, W)` bool masks, one per expression. labels: n expression texts, drawn verbatim (glyphs the
        font lacks become `?`). boxes: optional `(n, 4)` xyxy pixel boxes (e.g. the model's); default: each mask's
        bounding box. scores: optional n scores in [0, 1], appended to the labels with two decimals. ids: palette
        index of each mask (default `0 .. n-1`: expression i gets colour i).
        """
        frame = check_frame(frame)
        n = len(masks)
        if len(labels) != n or (scores is not None and len(scores) != n) or (ids is not None and len(ids) != n):
            raise ConfigError(f"masks, labels, scores and ids must have one entry per mask: got {n} masks, "
                              f"{len(labels)} labels, {None if scores is None else len(scores)} scores, "
                              f"{None if ids is None else len(ids)} ids")
        if n == 0:
            return frame.copy()
        mask = np.stack([np.asarray(m, bool) for m in masks])  # (n, H, W)
        if mask.shape[1:] != frame.shape[:2]:
            raise ConfigError(f"masks must be (H, W) = {frame.shape[:2]} like the frame, got {mask.shape[1:]}")
        xyxy = sv.mask_to_xyxy(mask) if boxes is None else np.asarray(boxes, np.float32).reshape(n, 4)
        detections = sv.Detections(
            xyxy=xyxy.astype(np.float32), mask=mask, class_id=np.arange(n) if ids is None else np.asarray(ids, int),
            confidence=None if scores is None else np.asarray(scores, np.float32),
            data={"expression": np.array(list(labels), dtype=object)})
        return self.annotate(frame, detections)

    def annotate(self, frame: np.ndarray, detections: sv.Detections) -> np.ndarray:
        """Draw supervision `Detections` over `frame` (e.g. `VideoSegmentation.to_detections`); a new frame.

        detections: `mask` (n, H, W) bool, filled and outlined; `class_id` (n,) palette index of each; `xyxy` (n, 4)
        pixel boxes, drawn with `show_boxes`; optional `confidence` (n,) appended to the labels; `data["expression"]`
        (n,) label texts. Boxes and labels are drawn for non-empty masks only, at `xyxy` with `show_boxes`, else at
        the mask's bounding box.
        """
        frame = check_frame(frame)
        if not len(detections):
            return frame.copy()
        if detections.mask is None or detections.class_id is None:
            raise ConfigError("detections to draw need a mask and a class_id (the palette index) for each")
        if detections.mask.shape[1:] != frame.shape[:2]:
            raise ConfigError(f"masks must be (H, W) = {frame.shape[:2]} like the frame, got "
                              f"{detections.mask.shape[1:]}")
        mask = detections.mask
        # fills and outlines get mask-derived boxes: supervision may crop mask drawing to the boxes
        filled = sv.Detections(xyxy=sv.mask_to_xyxy(mask).astype(np.float32), mask=mask,
                               class_id=detections.class_id)
        keep = mask.any((1, 2))
        shown = (detections if self.show_boxes else filled)[keep]

        scene = frame.copy()  # RGB, which supervision takes for BGR (the palette is swapped to match)
        if self.opacity > 0:
            self._fill.annotate(scene, filled)
        if self.outline > 0:  # numpy, not PolygonAnnotator: contour tracing is slow without OpenCV
            for m, i in zip(mask, detections.class_id, strict=True):
                scene[mask_edge(m, self.outline)] = self._colors[i % len(self._colors)]
        if self.show_boxes and len(shown):
            self._boxes.annotate(scene, shown)
        if self.show_labels and len(shown):
            self._labeler(frame.shape[:2]).annotate(scene, shown, labels=self._label_texts(detections, keep))
        return scene

    @staticmethod
    def _label_texts(detections: sv.Detections, keep: np.ndarray) -> list[str]:
        texts = detections.data.get("expression", [""] * len(detections))
        scores = detections.confidence
        return [drawable_text(str(texts[i]), LABEL_CHARS) + ("" if scores is None else f" {float(scores[i]):.2f}")
                for i in np.flatnonzero(keep)]

    def _labeler(self, size_hw: tuple[int, int]) -> sv.RichLabelAnnotator:
        px = max(MIN_LABEL_PX, round(self.label_scale * min(size_hw) * DEFAULT_LABEL_FRACTION))
        if px not in self._labelers:
            self._labelers[px] = sv.RichLabelAnnotator(
                color=self._palette, text_color=self._text_palette, font_path=font_path(), font_size=px,
                text_padding=max(2, px // 4), text_position=sv.Position.TOP_LEFT, smart_position=True,
                color_lookup=sv.ColorLookup.CLASS)
        return self._labelers[px]
