"""A warning banner across the top of a frame, e.g. for results of a model with untrained weights."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from referdino_demo.errors import ConfigError
from referdino_demo.render._pixels import check_frame
from referdino_demo.render.text import drawable_text, load_font

UNTRAINED_TEXT = "UNTRAINED WEIGHTS - results are random"
PARTIAL_TEXT = "PARTIAL CHECKPOINT (strict=False) - not the trained model"


class BannerRenderer:
    """An opaque band with centred text at the top of the frame; warning yellow by default, a colour the
    expression palette does not use, so the banner is never mistaken for a mask or a label.

    text: the message; shrunk to fit the frame width.
    background, text_color: RGB colours.
    height: band height as a fraction of the frame height (at least 12 px, at most the frame).
    """

    def __init__(self, text: str = UNTRAINED_TEXT, background: tuple[int, int, int] = (255, 210, 0),
                 text_color: tuple[int, int, int] = (0, 0, 0), height: float = 0.1):
        if not 0.0 < height <= 1.0:
            raise ConfigError(f"height must be a fraction of the frame height in (0, 1], got {height}")
        self.text, self.background, self.text_color, self.height = drawable_text(text), background, text_color, height

    def render_frame(self, frame: np.ndarray) -> np.ndarray:
        """Return a new `(H, W, 3)` uint8 RGB frame with the banner; `frame` is left unchanged."""
        frame = check_frame(frame)
        rows, width = frame.shape[:2]
        band_h = min(rows, max(12, round(rows * self.height)))
        band = Image.new("RGB", (width, band_h), self.background)
        size = max(1, int(band_h * 0.7))
        text_w = load_font(size).getlength(self.text)
        if text_w > width * 0.95:  # glyph widths scale with the font size
            size = max(1, int(size * width * 0.95 / text_w))
        ImageDraw.Draw(band).text((width / 2, band_h / 2), self.text, fill=self.text_color, font=load_font(size),
                                  anchor="mm")
        out = frame.copy()
        out[:band_h] = np.asarray(band)
        return out
