"""The one colour palette of the package: expression i is drawn in `PALETTE[i % len(PALETTE)]` everywhere
(overlay fill and label, heatmap contour, score plot line), so a colour means the same thing in every view.

Colours are RGB tuples of ints in 0..255. Colour 0 is the crimson of the official ReferDINO demo.
"""

from __future__ import annotations

PALETTE: tuple[tuple[int, int, int], ...] = (
    (220, 20, 60),  # crimson
    (0, 130, 200),  # blue
    (60, 180, 75),  # green
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
    (170, 110, 40),  # brown
    (128, 128, 0),  # olive
    (0, 0, 128),  # navy
)


def color_for(index: int) -> tuple[int, int, int]:
    """RGB colour of expression `index`."""
    return PALETTE[index % len(PALETTE)]


def hex_color(index: int) -> str:
    """`"#rrggbb"` colour of expression `index` (for matplotlib, HTML and Gradio)."""
    return "#{:02x}{:02x}{:02x}".format(*color_for(index))


def text_color_on(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `background` (Rec. 601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)
