"""Effects that use an object's mask: blur, pixelate, fill or desaturate the background (or the object), a
spotlight that darkens everything but the object, and a cut-out with the mask as alpha; plus the same over every
processed frame of a video.

Each effect is one renderer, like the others: options at construction, `render_frame(frame, mask)` at call time,
`(H, W, 3)` uint8 RGB in, a new frame out (`(H, W, 4)` RGBA for the cut-out), the input unchanged. `feather`
softens the mask's edge over about that many pixels (see `mattes.soft_mask`); pixels farther from the edge than
`feather / 2` are either exactly the input frame or exactly the effect's look.

`EFFECTS` names each effect as every front end does (`blur`, `pixelate`, `fill`, `desaturate`, `spotlight`,
`cutout`); `make_effect(name, **options)` builds one, `effect_options(name)` lists what it takes.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from referdino_demo.errors import ConfigError
from referdino_demo.io.audio import AudioTrack
from referdino_demo.io.video_writer import VideoWriter
from referdino_demo.mask_chunks import DEFAULT_CHUNK
from referdino_demo.mattes import cutout, iter_frames_with, iter_object_masks, soft_mask
from referdino_demo.render._pixels import check_frame
from referdino_demo.results import VideoSegmentation

TARGETS = ("background", "object")
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as PIL's "L" mode


class _Effect:
    """What every effect has: its `name` in `EFFECTS`, and `key()`, its options as a hashable tuple (two renderers
    with equal keys draw the same pixels), which memo keys use (`ResultView`)."""

    name = ""

    def key(self) -> tuple:
        return (self.name, *sorted(vars(self).items()))


class _MaskEffect(_Effect):
    """A look computed from the whole frame (`_look`), blended in where the soft mask selects: outside the mask
    for `target="background"`, inside for `target="object"`."""

    def __init__(self, target: str, feather: float):
        if target not in TARGETS:
            raise ConfigError(f"target must be one of {TARGETS}, got {target!r}")
        self.target = target
        self.feather = _number("feather", feather, 0.0)

    def render_frame(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """`frame` `(H, W, 3)` uint8 RGB with the effect where `mask` `(H, W)` bool selects; a new frame."""
        frame = check_frame(frame)
        weight = soft_mask(_check_mask(mask, frame), self.feather)  # (H, W), 1 on the object
        if self.target == "background":
            weight = 1.0 - weight
        source = frame.astype(np.float32)
        return np.round(source + (self._look(frame) - source) * weight[..., None]).astype(np.uint8)

    def _look(self, frame: np.ndarray) -> np.ndarray:
        """The effect applied to the whole frame: `(H, W, 3)` float32 or uint8."""
        raise NotImplementedError


class BlurRenderer(_MaskEffect):
    """Gaussian blur of the background (default) or of the object; `radius` is the blur's standard deviation in
    pixels (PIL's `GaussianBlur`)."""

    name = "blur"

    def __init__(self, radius: float = 12.0, *, target: str = "background", feather: float = 4.0):
        super().__init__(target, feather)
        self.radius = _number("radius", radius, 0.0, inclusive=False)

    def _look(self, frame: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(frame).filter(ImageFilter.GaussianBlur(self.radius)))


class PixelateRenderer(_MaskEffect):
    """Mosaic of the background (default) or of the object: each `block` x `block` tile of the frame, counted from
    the top-left corner, takes the tile's mean colour (tiles cut by the right or bottom edge: the mean of what is
    left)."""

    name = "pixelate"

    def __init__(self, block: int = 16, *, target: str = "background", feather: float = 0.0):
        super().__init__(target, feather)
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
            raise ConfigError(f"block must be a tile size in pixels >= 1, got {block!r}")
        self.block = int(block)

    def _look(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        tiles = np.asarray(Image.fromarray(frame).reduce(self.block))  # (ceil(H/b), ceil(W/b), 3) tile means
        return tiles.repeat(self.block, 0).repeat(self.block, 1)[:height, :width]


class ColorFillRenderer(_MaskEffect):
    """The background (default) or the object replaced by one solid RGB `color`: green by default, which editors
    without alpha support can key out."""

    name = "fill"

    def __init__(self, color: Sequence[int] = (0, 255, 0), *, target: str = "background", feather: float = 0.0):
        super().__init__(target, feather)
        if not (isinstance(color, (tuple, list)) and len(color) == 3 and all(
                isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)):
            raise ConfigError(f"color must be (r, g, b) with integers in 0..255, got {color!r}")
        self.color = tuple(int(c) for c in color)

    def _look(self, frame: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.array(self.color, np.float32), frame.shape)


class DesaturateRenderer(_MaskEffect):
    """The background (default) or the object drained of colour: `amount` 1 gives its grey (BT.601 luma), 0 leaves
    the frame as it is."""

    name = "desaturate"

    def __init__(self, amount: float = 1.0, *, target: str = "background", feather: float = 4.0):
        super().__init__(target, feather)
        self.amount = _number("amount", amount, 0.0, 1.0)

    def _look(self, frame: np.ndarray) -> np.ndarray:
        source = frame.astype(np.float32)
        grey = (source @ LUMA)[..., None]
        return source + self.amount * (grey - source)


class SpotlightRenderer(_MaskEffect):
    """Everything but the object darkened: outside the mask each channel is multiplied by `1 - dim`."""

    name = "spotlight"

    def __init__(self, dim: float = 0.6, *, feather: float = 8.0):
        super().__init__("background", feather)
        self.dim = _number("dim", dim, 0.0, 1.0)

    def _look(self, frame: np.ndarray) -> np.ndarray:
        return frame.astype(np.float32) * (1.0 - self.dim)


class CutoutRenderer(_Effect):
    """The object cut out: `render_frame` returns `(H, W, 4)` uint8 RGBA, see `mattes.cutout`."""

    name = "cutout"

    def __init__(self, *, feather: float = 0.0):
        self.feather = _number("feather", feather, 0.0)

    def render_frame(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """`frame` `(H, W, 3)` uint8 RGB and `mask` `(H, W)` bool -> a new `(H, W, 4)` uint8 RGBA frame."""
        frame = check_frame(frame)
        return cutout(frame, _check_mask(mask, frame), self.feather)


Effect = BlurRenderer | PixelateRenderer | ColorFillRenderer | DesaturateRenderer | SpotlightRenderer | CutoutRenderer
# Every effect by the name the CLI (`--export effect:NAME`), the app and the notebook panel use.
EFFECTS: dict[str, type[Effect]] = {effect.name: effect for effect in (
    BlurRenderer, PixelateRenderer, ColorFillRenderer, DesaturateRenderer, SpotlightRenderer, CutoutRenderer)}


def effect_options(name: str) -> tuple[str, ...]:
    """The options effect `name` takes (its constructor's parameters), e.g. `("radius", "target", "feather")`."""
    return tuple(inspect.signature(_effect_class(name)).parameters)


def has_target(name: str) -> bool:
    """Whether effect `name` applies to the background or the object as asked (its `target`); the spotlight and the
    cut-out always keep the object."""
    return "target" in effect_options(name)


def make_effect(name: str, **options) -> Effect:
    """The renderer of effect `name` (a key of `EFFECTS`) with `options` (see `effect_options`); `ConfigError` for
    an unknown name or option, naming the choices."""
    unknown = sorted(set(options) - set(effect_options(name)))
    if unknown:
        raise ConfigError(f"effect {name!r} has no option {', '.join(unknown)}; its options are "
                          f"{', '.join(effect_options(name))}")
    return _effect_class(name)(**options)


def _effect_class(name: str) -> type[Effect]:
    if name not in EFFECTS:
        raise ConfigError(f"unknown effect {name!r}; choose from {', '.join(EFFECTS)}")
    return EFFECTS[name]


def render_effect_video(segmentation: VideoSegmentation, frames: Iterable[np.ndarray], path: str | os.PathLike,
                        effect: Effect, *, expression: int | str | None = 0, threshold: float = 0.5,
                        multi_target: float | None = None, chunk: int = DEFAULT_CHUNK,
                        audio: AudioTrack | None = None) -> Path:
    """Write `effect` over every processed frame to the video `path` at `segmentation.fps`; returns `path`.

    The mask is `expression`'s (an index or the text; None: the union of every expression's) at `threshold` and
    `multi_target`, as in `ExpressionResult.masks`. `frames` are the T processed `(H, W, 3)` uint8 RGB frames
    again, read lazily while masks are computed `chunk` frames at a time. A `CutoutRenderer` needs a path that
    keeps alpha: `.webm` (VP9) or `.mov` (ProRes 4444), see `io.video_writer.alpha_video_suffix`; the other effects
    write `.mp4` (H.264), `.mov` or `.webm`. One output frame per processed frame: if `frames` has fewer or more,
    a `ReferDinoError` is raised and nothing is left at `path`. `audio`: the sound to play along (`io/audio.py`;
    Opus in a WebM), None for a silent video.
    """
    height, width = segmentation.frame_size
    masks = iter_object_masks(segmentation, expression, threshold, multi_target, chunk)
    with VideoWriter(path, segmentation.fps, (width, height), alpha=isinstance(effect, CutoutRenderer),
                     audio=audio) as writer:
        for _, frame, mask in iter_frames_with(segmentation, frames, masks):
            writer.write(effect.render_frame(frame, mask))
    return Path(path)


def render_effect_frame(segmentation: VideoSegmentation, frame: np.ndarray, index: int, effect: Effect, *,
                        expression: int | str | None = 0, threshold: float = 0.5,
                        multi_target: float | None = None) -> np.ndarray:
    """Processed frame `index` (`frame`, `(H, W, 3)` uint8 RGB) drawn like `render_effect_video`."""
    if not 0 <= index < segmentation.num_frames:
        raise ConfigError(f"frame {index} does not exist; the segmentation has {segmentation.num_frames} processed "
                          f"frames (0 to {segmentation.num_frames - 1})")
    frame = check_frame(frame, f"frame {index}")
    if frame.shape[:2] != tuple(segmentation.frame_size):
        raise ConfigError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]} (WxH) but the segmentation was made at "
                          f"{segmentation.frame_size[1]}x{segmentation.frame_size[0]}; pass the original frame")
    mask = np.zeros(segmentation.frame_size, bool)
    for result in list(segmentation) if expression is None else [segmentation[expression]]:
        mask |= result.mask(index, threshold, multi_target)
    return effect.render_frame(frame, mask)


def _check_mask(mask: np.ndarray, frame: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != frame.shape[:2] or mask.dtype != bool:
        raise ConfigError(f"mask must be an (H, W) = {frame.shape[:2]} bool array like the frame, got "
                          f"{mask.shape} {mask.dtype}")
    return mask


def _number(name: str, value: float, low: float, high: float = np.inf, *, inclusive: bool = True) -> float:
    """`value` as a float, or a `ConfigError` naming the range it must be in."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
          and np.isfinite(value) and (low <= value if inclusive else low < value) and value <= high)
    if not ok:
        bounds = f"{'>=' if inclusive else '>'} {low:g}" + ("" if high == np.inf else f" and <= {high:g}")
        raise ConfigError(f"{name} must be a number {bounds}, got {value!r}")
    return float(value)
