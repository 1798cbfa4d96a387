"""Overlay and heatmap videos of a `VideoSegmentation`, and the same drawing for one frame (a UI slider).

The videos are H.264 yuv420p MP4 written by `VideoWriter` at `segmentation.fps`, one output frame per
processed frame, with the source's sound when given its `audio` (`io/audio.py`). `frames` are the processed
frames again (the caller re-reads the video with the same stride, start/end and max_frames), consumed lazily
while masks are computed a chunk at a time, so memory does not grow with the video length. If `frames` has
fewer or more frames than the segmentation, a `ReferDinoError` is raised and nothing is left at `path` (the
writer is atomic).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from referdino_demo.errors import ReferDinoError
from referdino_demo.io.audio import AudioTrack
from referdino_demo.io.video_writer import VideoWriter
from referdino_demo.render._pixels import check_frame
from referdino_demo.render.banner import PARTIAL_TEXT, UNTRAINED_TEXT, BannerRenderer
from referdino_demo.mask_chunks import DEFAULT_CHUNK, iter_logit_chunks, iter_mask_chunks
from referdino_demo.render.heatmap import HeatmapRenderer
from referdino_demo.render.overlay import OverlayRenderer
from referdino_demo.render.palette import color_for
from referdino_demo.results import ExpressionResult, VideoSegmentation


def render_overlay_video(segmentation: VideoSegmentation, frames: Iterable[np.ndarray], path: str | os.PathLike, *,
                         threshold: float = 0.5, multi_target: float | None = None, opacity: float = 0.5,
                         show_boxes: bool = False, show_labels: bool = True, untrained_banner: bool | None = None,
                         chunk: int = DEFAULT_CHUNK, audio: AudioTrack | None = None) -> Path:
    """Write every expression's masks over `frames` to the MP4 `path`; returns `path`.

    segmentation: the result to draw (T processed frames, E expressions; expression i in colour i).
    frames: T `(H, W, 3)` uint8 RGB frames in processed order (any iterable, read lazily).
    path: destination `.mp4`.
    threshold, multi_target: as in `ExpressionResult.masks`.
    opacity, show_boxes, show_labels: see `OverlayRenderer`; boxes are the model's boxes.
    untrained_banner: draw the "UNTRAINED WEIGHTS" banner; None: when the segmentation is untrained.
    chunk: frames per mask computation (memory vs. overhead).
    audio: the sound to play along, e.g. `AudioTrack.of(segmentation.frames)`; None: a silent video.
    """
    renderer = OverlayRenderer(opacity=opacity, show_boxes=show_boxes, show_labels=show_labels)
    banner = _banner(segmentation, untrained_banner)
    chunks = ((start, np.moveaxis(masks, 0, 1)) for start, masks in  # (t, E, H, W): per frame
              iter_mask_chunks(segmentation, threshold, multi_target, chunk))

    def draw(frame: np.ndarray, index: int, masks: np.ndarray) -> np.ndarray:
        return _overlay(renderer, banner, frame, segmentation.to_detections(index, masks=masks))

    return _write(segmentation, frames, path, chunks, draw, audio)


def render_heatmap_video(segmentation: VideoSegmentation, frames: Iterable[np.ndarray], path: str | os.PathLike, *,
                         expression: int | str = 0, threshold: float = 0.5, colormap: str = "inferno",
                         opacity: float = 0.6, contour: bool = True, untrained_banner: bool | None = None,
                         chunk: int = DEFAULT_CHUNK, audio: AudioTrack | None = None) -> Path:
    """Write one expression's probability heatmap (shown query) over `frames` to the MP4 `path`.

    `expression` is an index or the expression text; the contour of `probability > threshold` is drawn
    in that expression's palette colour. Other arguments as in `render_overlay_video` and
    `HeatmapRenderer`. Returns `path`.
    """
    index, result = _expression(segmentation, expression)
    renderer = HeatmapRenderer(colormap=colormap, opacity=opacity, contour=contour)
    banner = _banner(segmentation, untrained_banner)

    def draw(frame: np.ndarray, _: int, logits: np.ndarray) -> np.ndarray:
        out = renderer.render_frame(frame, logits, threshold, color_for(index))
        return out if banner is None else banner.render_frame(out)

    return _write(segmentation, frames, path, iter_logit_chunks(result, None, chunk), draw, audio)


def render_frame(segmentation: VideoSegmentation, frame: np.ndarray, index: int, threshold: float = 0.5, *,
                 multi_target: float | None = None, opacity: float = 0.5, show_boxes: bool = False,
                 show_labels: bool = True, untrained_banner: bool | None = None) -> np.ndarray:
    """Processed frame `index` (`frame`, `(H, W, 3)` uint8 RGB) drawn like `render_overlay_video`."""
    _check_index(segmentation, index)
    renderer = OverlayRenderer(opacity=opacity, show_boxes=show_boxes, show_labels=show_labels)
    frame = _checked(segmentation, frame, index)
    return _overlay(renderer, _banner(segmentation, untrained_banner), frame,
                    segmentation.to_detections(index, threshold, multi_target))


def render_heatmap_frame(segmentation: VideoSegmentation, frame: np.ndarray, index: int, *,
                         expression: int | str = 0, threshold: float = 0.5, colormap: str = "inferno",
                         opacity: float = 0.6, contour: bool = True,
                         untrained_banner: bool | None = None) -> np.ndarray:
    """Processed frame `index` drawn like `render_heatmap_video`."""
    _check_index(segmentation, index)
    position, result = _expression(segmentation, expression)
    renderer = HeatmapRenderer(colormap=colormap, opacity=opacity, contour=contour)
    logits = result.upsampled_logits([index])[0, 0]
    out = renderer.render_frame(_checked(segmentation, frame, index), logits, threshold, color_for(position))
    banner = _banner(segmentation, untrained_banner)
    return out if banner is None else banner.render_frame(out)


# -- helpers ---------------------------------------------------------------------------------------------
def _write(segmentation: VideoSegmentation, frames: Iterable[np.ndarray], path: str | os.PathLike,
           chunks: Iterator[tuple[int, Iterable[np.ndarray]]],
           draw: Callable[[np.ndarray, int, np.ndarray], np.ndarray], audio: AudioTrack | None) -> Path:
    """Pair each frame with its per-frame data from `chunks`, draw it and encode it (with `audio`)."""
    height, width = segmentation.frame_size
    total = segmentation.num_frames
    frames = iter(frames)
    with VideoWriter(path, segmentation.fps, (width, height), audio=audio) as writer:
        for start, per_frame in chunks:
            for offset, data in enumerate(per_frame):
                index = start + offset
                frame = next(frames, None)
                if frame is None:
                    raise ReferDinoError(
                        f"the frames ran out after {index} frames, but the segmentation has {total} processed "
                        f"frames; pass the frames that were segmented, read with the same stride, start/end "
                        f"and max_frames")
                writer.write(draw(_checked(segmentation, frame, index), index, data))
        if next(frames, None) is not None:
            raise ReferDinoError(
                f"more frames than the segmentation's {total} processed frames were given; pass the frames "
                f"that were segmented, read with the same stride, start/end and max_frames")
    return Path(path)


def _overlay(renderer: OverlayRenderer, banner: BannerRenderer | None, frame: np.ndarray,
             detections) -> np.ndarray:
    """One frame's `Detections` (one per expression, `VideoSegmentation.to_detections`) drawn, then the banner."""
    out = renderer.annotate(frame, detections)
    return out if banner is None else banner.render_frame(out)


def _banner(segmentation: VideoSegmentation, untrained_banner: bool | None) -> BannerRenderer | None:
    if untrained_banner is None:
        untrained_banner = (segmentation.untrained or bool(segmentation.partial_load)
                            or any(result.untrained for result in segmentation))
    if not untrained_banner:
        return None
    partial = segmentation.partial_load and not segmentation.untrained
    return BannerRenderer(PARTIAL_TEXT if partial else UNTRAINED_TEXT)


def _expression(segmentation: VideoSegmentation, expression: int | str) -> tuple[int, ExpressionResult]:
    """(position, result) of an expression given by index or text."""
    names = segmentation.expressions
    if isinstance(expression, str):
        if expression not in names:
            raise ReferDinoError(f"no expression {expression!r}; expressions: {names}")
        expression = names.index(expression)
    if not 0 <= expression < len(names):
        raise ReferDinoError(f"expression index {expression} is out of range; there are {len(names)} "
                             f"expressions: {names}")
    return expression, segmentation[expression]


def _check_index(segmentation: VideoSegmentation, index: int) -> None:
    if not 0 <= index < segmentation.num_frames:
        raise ReferDinoError(f"frame {index} does not exist; the segmentation has {segmentation.num_frames} "
                             f"processed frames (0 to {segmentation.num_frames - 1})")


def _checked(segmentation: VideoSegmentation, frame: np.ndarray, index: int) -> np.ndarray:
    frame = check_frame(frame, f"frame {index}")
    if frame.shape[:2] != tuple(segmentation.frame_size):
        raise ReferDinoError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]} (WxH) but the segmentation "
                             f"was made at {segmentation.frame_size[1]}x{segmentation.frame_size[0]}; pass the "
                             f"original frames, not resized ones")
    return frame
