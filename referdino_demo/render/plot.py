"""Per-frame scores: a matplotlib figure (for `gr.Plot`, notebooks, files) and a plain table (for
`gr.LinePlot` or a CSV), both without pandas.

Figures are built as `matplotlib.figure.Figure` objects, never through `pyplot`: no global figure
registry to leak memory in a long-running server, and it works on the Agg backend without a display.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from referdino_demo.mask_chunks import DEFAULT_CHUNK, iter_frame_stats
from referdino_demo.render.palette import hex_color
from referdino_demo.render.text import drawable_text
from referdino_demo.results import VideoSegmentation

LEGEND_CHARS = 60  # longer expressions are cut with an ellipsis so the legend leaves room for the plot


def plot_scores(segmentation: VideoSegmentation, *, ax: Axes | None = None, threshold: float | None = None,
                time_axis: bool = False, figsize: tuple[float, float] = (6.4, 2.8)) -> Figure:
    """Score of the shown query per processed frame, one line per expression in its palette colour.

    segmentation: the result; y is `ExpressionResult.frame_scores` in [0, 1].
    ax: draw into these axes (their figure is returned); default: a new `Figure` of `figsize` inches.
    threshold: a dashed horizontal reference line at this score (e.g. the multi-target threshold).
    time_axis: x in seconds (`frame / fps`) instead of the processed frame index.
    """
    if ax is None:
        figure = Figure(figsize=figsize, layout="constrained")
        ax = figure.add_subplot()
    else:
        figure = ax.figure
    x = np.arange(segmentation.num_frames) / (segmentation.fps if time_axis else 1.0)
    for i, result in enumerate(segmentation):
        ax.plot(x, result.frame_scores, color=hex_color(i), linewidth=1.5, label=_legend_text(result.expression))
    if threshold is not None:
        ax.axhline(threshold, color="0.4", linestyle="--", linewidth=1.0, label=f"threshold {threshold:g}")
    ax.set_ylim(0.0, 1.0)
    if len(x) > 1:
        ax.set_xlim(x[0], x[-1])
    ax.set_xlabel("time (s)" if time_axis else "processed frame")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize="small")
    return figure


def scores_table(segmentation: VideoSegmentation, *, threshold: float = 0.5, multi_target: float | None = None,
                 chunk: int = DEFAULT_CHUNK) -> list[dict]:
    """One dict per (frame, expression), frame-major: frame (processed index), time_s, expression, score
    (shown query) and mask_area (pixels of `masks(threshold, multi_target)`)."""
    return [{"frame": row["frame_index"], "time_s": row["time_s"], "expression": row["expression"],
             "score": row["score"], "mask_area": row["mask_area_px"]}
            for row in iter_frame_stats(segmentation, threshold, multi_target, chunk)]


def _legend_text(expression: str) -> str:
    # "$" would start mathtext (and raise on bad TeX); a leading "_" hides a legend entry
    text = drawable_text(expression, LEGEND_CHARS).replace("$", r"\$")
    return " " + text if text.startswith("_") else text
