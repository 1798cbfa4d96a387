"""Drawing segmentation results: renderers for one frame (overlay, heatmap, banner), videos and score plots.

Renderers work like supervision's annotators: options in the constructor, data at call time, the input
frame left unchanged, RGB `(H, W, 3)` uint8 in and out. Expression i is drawn in `PALETTE[i]` everywhere.
"""

from referdino_demo.render.banner import UNTRAINED_TEXT, BannerRenderer
from referdino_demo.render.effects import (EFFECTS, BlurRenderer, ColorFillRenderer, CutoutRenderer,
                                           DesaturateRenderer, PixelateRenderer, SpotlightRenderer, effect_options,
                                           make_effect, render_effect_frame, render_effect_video)
from referdino_demo.render.heatmap import HeatmapRenderer
from referdino_demo.render.overlay import OverlayRenderer
from referdino_demo.render.palette import PALETTE, color_for, hex_color
from referdino_demo.render.plot import plot_scores, scores_table
from referdino_demo.render.video import render_frame, render_heatmap_frame, render_heatmap_video, render_overlay_video

__all__ = [
    "EFFECTS",
    "PALETTE",
    "UNTRAINED_TEXT",
    "BannerRenderer",
    "BlurRenderer",
    "ColorFillRenderer",
    "CutoutRenderer",
    "DesaturateRenderer",
    "HeatmapRenderer",
    "OverlayRenderer",
    "PixelateRenderer",
    "SpotlightRenderer",
    "color_for",
    "effect_options",
    "hex_color",
    "make_effect",
    "plot_scores",
    "render_effect_frame",
    "render_effect_video",
    "render_frame",
    "render_heatmap_frame",
    "render_heatmap_video",
    "render_overlay_video",
    "scores_table",
]
