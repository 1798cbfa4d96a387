"""Synthetic example clips: rendered scenes with moving objects, ours to redistribute.

`python -m referdino_demo.examples DIR` writes the app's example videos (small H.264 MP4s) into DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .errors import ConfigError

SCENES = {
    "red_ball": ("the red ball moving to the left", "the blue square"),
    "crossing": ("the yellow car driving right", "the green truck driving left"),
}


def _background(height: int, width: int, t: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    sky = np.stack([90 + 60 * y / height, 140 + 40 * np.sin(x / 40 + t / 6), 200 - 50 * y / height], -1)
    return Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))


def synthetic_clip(scene: str = "red_ball", num_frames: int = 24, size: tuple[int, int] = (180, 320)) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of a scene from `SCENES`; deterministic."""
    if scene not in SCENES:
        raise ConfigError(f"unknown scene {scene!r}; choose from {sorted(SCENES)}")
    height, width = size
    frames = []
    for t in range(num_frames):
        # Draw at 4x and downsample: cheap anti-aliasing.
        image = _background(height, width, t).resize((width * 4, height * 4))
        draw = ImageDraw.Draw(image)
        s, u = 4, t / max(num_frames - 1, 1)
        if scene == "red_ball":
            cx, cy, r = (0.85 - 0.7 * u) * width, (0.55 + 0.15 * np.sin(6 * u)) * height, 0.12 * height
            draw.ellipse([s * (cx - r), s * (cy - r), s * (cx + r), s * (cy + r)], fill=(220, 30, 30))
            bx, by, b = 0.2 * width + 0.1 * width * u, 0.3 * height, 0.1 * height
            draw.rectangle([s * (bx - b), s * (by - b), s * (bx + b), s * (by + b)], fill=(40, 60, 220))
        else:
            for x, y, color in (((0.1 + 0.7 * u) * width, 0.45 * height, (240, 210, 40)),
                                ((0.9 - 0.7 * u) * width, 0.7 * height, (40, 160, 60))):
                w, h = 0.18 * width, 0.1 * height
                draw.rounded_rectangle([s * (x - w / 2), s * (y - h / 2), s * (x + w / 2), s * (y + h / 2)],
                                       radius=s * 6, fill=color)
        frames.append(np.asarray(image.resize((width, height), Image.LANCZOS)))
    return np.stack(frames)


def write_examples(directory: str | Path, fps: float = 12.0) -> list[Path]:
    from .io.video_writer import write_video

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [write_video(directory / f"{scene}.mp4", synthetic_clip(scene), fps) for scene in SCENES]


if __name__ == "__main__":
    for path in write_examples(sys.argv[1] if len(sys.argv) > 1 else "examples"):
        print(path)
