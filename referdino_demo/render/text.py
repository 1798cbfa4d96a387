"""The font for labels, banners and plot legends: DejaVu Sans, shipped with matplotlib, so every platform
draws the same glyphs whether or not OpenCV is installed.

Expressions are free text (any script, emoji). Characters the font has no glyph for would be drawn as
empty boxes, so `drawable_text` replaces them with `?` and drops invisible ones (joiners, variation
selectors): the label stays readable and nothing raises.
"""

from __future__ import annotations

import unicodedata
from functools import cache, lru_cache

from matplotlib import font_manager, ft2font
from PIL import ImageFont

MISSING_GLYPH = "?"


@cache
def font_path() -> str:
    """Path of the DejaVu Sans TrueType file (matplotlib's default font)."""
    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)


@lru_cache(maxsize=32)
def load_font(size: int) -> ImageFont.FreeTypeFont:
    """The label font at `size` pixels per em, cached."""
    return ImageFont.truetype(font_path(), max(1, int(size)))


@cache
def _face() -> ft2font.FT2Font:
    return ft2font.FT2Font(font_path())


def drawable_text(text: str, max_chars: int | None = None) -> str:
    """`text` on one line, with characters the font cannot draw replaced by `?`.

    Whitespace (newlines, tabs) becomes a space; a missing mark or format character (zero-width joiner,
    variation selector, combining accent) is dropped rather than replaced, since it has no width anyway.
    With `max_chars`, a longer result is cut to that many characters, the last one an ellipsis.
    """
    face = _face()
    out = []
    for ch in text:
        if ch.isspace():
            out.append(" ")
        elif face.get_char_index(ord(ch)):
            out.append(ch)
        elif unicodedata.category(ch) not in ("Mn", "Me", "Cf"):
            out.append(MISSING_GLYPH)
    line = "".join(out)
    if max_chars is not None and len(line) > max_chars:
        line = line[:max_chars - 1].rstrip() + "\u2026"
    return line
