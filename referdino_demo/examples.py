"""Synthetic example clips: rendered scenes with moving objects, ours to redistribute, with each object's true
mask (for tests and pictures whose masks must be known).

`python -m referdino_demo.examples DIR` writes the app's example videos (small H.264 MP4s) into DIR;
`python -m referdino_demo.examples --pictures DIR` the README's pictures of the mask effects.
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


def _shapes(scene: str, t: int, num_frames: int, height: int, width: int) -> list[tuple[str, list[float], tuple]]:
    """The objects of frame `t`, in `SCENES[scene]` order: (kind, [x0, y0, x1, y1] pixels, RGB colour)."""
    u = t / max(num_frames - 1, 1)
    if scene == "red_ball":
        cx, cy, r = (0.85 - 0.7 * u) * width, (0.55 + 0.15 * np.sin(6 * u)) * height, 0.12 * height
        bx, by, b = 0.2 * width + 0.1 * width * u, 0.3 * height, 0.1 * height
        return [("ellipse", [cx - r, cy - r, cx + r, cy + r], (220, 30, 30)),
                ("rectangle", [bx - b, by - b, bx + b, by + b], (40, 60, 220))]
    w, h = 0.18 * width, 0.1 * height
    return [("rounded", [x - w / 2, y - h / 2, x + w / 2, y + h / 2], color)
            for x, y, color in (((0.1 + 0.7 * u) * width, 0.45 * height, (240, 210, 40)),
                                ((0.9 - 0.7 * u) * width, 0.7 * height, (40, 160, 60)))]


def _draw(draw: ImageDraw.ImageDraw, kind: str, box: list[float], fill, scale: int) -> None:
    box = [scale * v for v in box]
    if kind == "ellipse":
        draw.ellipse(box, fill=fill)
    elif kind == "rectangle":
        draw.rectangle(box, fill=fill)
    else:
        draw.rounded_rectangle(box, radius=scale * 6, fill=fill)


def _check_scene(scene: str) -> None:
    if scene not in SCENES:
        raise ConfigError(f"unknown scene {scene!r}; choose from {sorted(SCENES)}")


def synthetic_clip(scene: str = "red_ball", num_frames: int = 24, size: tuple[int, int] = (180, 320)) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of a scene from `SCENES`; deterministic."""
    _check_scene(scene)
    height, width = size
    frames = []
    for t in range(num_frames):
        # Draw at 4x and downsample: cheap anti-aliasing.
        image = _background(height, width, t).resize((width * 4, height * 4))
        draw = ImageDraw.Draw(image)
        for kind, box, color in _shapes(scene, t, num_frames, height, width):
            _draw(draw, kind, box, color, 4)
        frames.append(np.asarray(image.resize((width, height), Image.LANCZOS)))
    return np.stack(frames)


def synthetic_masks(scene: str = "red_ball", num_frames: int = 24,
                    size: tuple[int, int] = (180, 320)) -> dict[str, np.ndarray]:
    """The true mask of each object of `synthetic_clip(scene, num_frames, size)`: expression -> (T, H, W) bool
    (the pixels the object covers at least half of; a later object hides an earlier one, as in the drawing)."""
    _check_scene(scene)
    height, width = size
    masks = {expression: np.zeros((num_frames, height, width), bool) for expression in SCENES[scene]}
    for t in range(num_frames):
        shapes = _shapes(scene, t, num_frames, height, width)
        coverage = []
        for kind, box, _ in shapes:
            image = Image.new("L", (width * 4, height * 4))
            _draw(ImageDraw.Draw(image), kind, box, 255, 4)
            coverage.append(np.asarray(image.resize((width, height), Image.BOX)) >= 128)
        for k, expression in enumerate(SCENES[scene]):
            masks[expression][t] = coverage[k] & ~np.any(coverage[k + 1:], 0) if k + 1 < len(coverage) \
                else coverage[k]
    return masks


def write_examples(directory: str | Path, fps: float = 12.0) -> list[Path]:
    from .io.video_writer import write_video

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [write_video(directory / f"{scene}.mp4", synthetic_clip(scene), fps) for scene in SCENES]


def write_effect_pictures(directory: str | Path, scene: str = "red_ball", frame: int = 12) -> list[Path]:
    """One PNG per mask effect (`render/effects.py`) on a frame of a scene, with the first object's true mask
    (`synthetic_masks`): the README's pictures, showing what each effect does, not what a model found."""
    from .render import (BlurRenderer, ColorFillRenderer, CutoutRenderer, DesaturateRenderer, PixelateRenderer,
                         SpotlightRenderer)

    image, mask = synthetic_clip(scene)[frame], next(iter(synthetic_masks(scene).values()))[frame]
    effects = {"blur": BlurRenderer(6), "pixelate": PixelateRenderer(12), "fill": ColorFillRenderer((255, 255, 255)),
               "desaturate": DesaturateRenderer(), "spotlight": SpotlightRenderer(), "cutout": CutoutRenderer(feather=2)}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "original.png"]
    Image.fromarray(image).save(paths[0])
    for name, effect in effects.items():
        paths.append(directory / f"{name}.png")
        Image.fromarray(effect.render_frame(image, mask)).save(paths[-1])
    return paths


if __name__ == "__main__":
    # python -m referdino_demo.examples [DIR]: the example clips; --pictures DIR: the effect pictures
    if sys.argv[1:2] == ["--pictures"]:
        written = write_effect_pictures(sys.argv[2] if len(sys.argv) > 2 else "docs/effects")
    else:
        written = write_examples(sys.argv[1] if len(sys.argv) > 1 else "examples")
    for path in written:
        print(path)
