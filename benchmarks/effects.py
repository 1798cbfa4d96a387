"""Cost per frame of the mask effects and of the videos they write: `python -m benchmarks.effects`.

Prints a table of milliseconds per frame at 480p (854 x 480) by default: each renderer's `render_frame` alone
(median over the frames), then whole videos through `render_effect_video` (mask upsampling from stride-4 logits,
the effect and the encoder together): H.264 MP4, VP9 WebM with alpha and ProRes 4444 MOV.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from referdino_demo.examples import synthetic_clip
from referdino_demo.mattes import soft_mask
from referdino_demo.render.effects import (
    BlurRenderer,
    ColorFillRenderer,
    CutoutRenderer,
    DesaturateRenderer,
    PixelateRenderer,
    SpotlightRenderer,
    render_effect_video,
)
from referdino_demo.results import ExpressionResult, VideoSegmentation

EFFECTS = {
    "blur background (radius 12, feather 4)": BlurRenderer(),
    "pixelate background (block 16)": PixelateRenderer(),
    "fill background (solid colour)": ColorFillRenderer(),
    "desaturate background (feather 4)": DesaturateRenderer(),
    "spotlight (dim 0.6, feather 8)": SpotlightRenderer(),
    "cut-out RGBA (feather 0)": CutoutRenderer(),
    "cut-out RGBA (feather 4)": CutoutRenderer(feather=4),
}
VIDEOS = {
    "video: spotlight -> H.264 .mp4": (SpotlightRenderer(), ".mp4"),
    "video: cut-out -> VP9 alpha .webm": (CutoutRenderer(feather=4), ".webm"),
    "video: cut-out -> ProRes 4444 .mov": (CutoutRenderer(feather=4), ".mov"),
}


def disc_segmentation(num_frames: int, size: tuple[int, int]) -> VideoSegmentation:
    """One expression whose stride-4 logits are a disc of a third of the height moving right, like a model's."""
    height, width = size
    yy, xx = np.mgrid[: height // 4, : width // 4]
    logits = np.stack([2.0 * (height / 12 - np.hypot(yy - height / 8, xx - width / 8 - t)) for t in range(num_frames)])
    result = ExpressionResult("the ball", size, np.full((num_frames, 1), 0.9, np.float32),
                              np.zeros((num_frames, 1, 4), np.float32), np.array([0]),
                              np.clip(logits, -20, 20)[None].astype(np.float16))
    return VideoSegmentation({"the ball": result}, size, 24.0, np.arange(num_frames))


def time_effects(frames: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Median ms per `render_frame` call of each effect, and of `soft_mask` alone."""
    rows = {}
    for name, effect in {"soft mask alone (feather 4)": None, **EFFECTS}.items():
        times = []
        for frame, mask in zip(frames, masks, strict=True):
            start = time.perf_counter()
            soft_mask(mask, 4) if effect is None else effect.render_frame(frame, mask)
            times.append(time.perf_counter() - start)
        rows[name] = 1000 * statistics.median(times)
    return rows


def time_videos(segmentation: VideoSegmentation, frames: np.ndarray, folder: Path) -> dict[str, float]:
    """ms per frame of whole `render_effect_video` runs."""
    rows = {}
    for name, (effect, suffix) in VIDEOS.items():
        start = time.perf_counter()
        render_effect_video(segmentation, frames, folder / f"out{suffix}", effect)
        rows[name] = 1000 * (time.perf_counter() - start) / len(frames)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="frames per measurement (default 24)")
    parser.add_argument("--size", default="854x480", help="WIDTHxHEIGHT (default 854x480)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    frames = synthetic_clip("red_ball", args.frames, (height, width))
    segmentation = disc_segmentation(args.frames, (height, width))
    masks = segmentation[0].masks()
    rows = time_effects(frames, masks)
    with tempfile.TemporaryDirectory() as folder:
        rows.update(time_videos(segmentation, frames, Path(folder)))
    print(f"{width}x{height}, {args.frames} frames")
    print(f"{'what':<40} {'ms/frame':>9}")
    for name, ms in rows.items():
        print(f"{name:<40} {ms:>9.1f}")


if __name__ == "__main__":
    main()
