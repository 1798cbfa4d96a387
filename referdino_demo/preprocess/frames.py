"""Frame preprocessing exactly as the official scripts do it.

`torchvision.transforms.Resize(short_side)` on a PIL image (bilinear with PIL's antialiasing, long side
truncated to an int, no max size), `ToTensor`, then ImageNet `Normalize`. No padding: all frames of a
video share one size.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, InputLimitError
from ..options import DEFAULT_SHORT_SIDE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) after resizing the short side to `short_side`, as torchvision computes it."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def check_input_size(height: int, width: int, short_side: int, max_long_side: int | None, source: str) -> None:
    """Raise `InputLimitError` when resizing a `width`x`height` video to `short_side` makes a long side over
    `max_long_side` (None: no cap)."""
    h, w = resized_size(height, width, short_side)
    if max_long_side is not None and max(h, w) > max_long_side:
        raise InputLimitError(
            f"video {source} is {width}x{height} (aspect {max(h, w) / min(h, w):.3g}:1): at short side {short_side} "
            f"the model input would be {w}x{h}, over the cap of {max_long_side} px on the long side. Crop it to a "
            f"less elongated frame, lower the short side, or raise max_long_side")


def preprocess_frames(frames: np.ndarray, short_side: int = DEFAULT_SHORT_SIDE) -> torch.Tensor:
    """RGB uint8 frames (T, H, W, 3) -> normalised float32 model input (T, 3, h, w)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    h, w = resized_size(frames.shape[1], frames.shape[2], short_side)
    resized = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])
    pixels = torch.from_numpy(resized).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return pixels.sub(mean).div(std)
