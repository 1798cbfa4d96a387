"""The synthetic example clips and their true masks."""

import numpy as np
import pytest

from referdino_demo.examples import SCENES, synthetic_clip, synthetic_masks, write_effect_pictures

# Each object's colour, told apart from the sky-like background by one strong channel
OBJECT_PIXELS = {
    "the red ball moving to the left": lambda rgb: (rgb[:, 0] > 180) & (rgb[:, 1] < 90),
    "the blue square": lambda rgb: (rgb[:, 2] > 180) & (rgb[:, 0] < 90),
    "the yellow car driving right": lambda rgb: (rgb[:, 0] > 200) & (rgb[:, 1] > 180) & (rgb[:, 2] < 100),
    "the green truck driving left": lambda rgb: (rgb[:, 1] > 130) & (rgb[:, 0] < 80) & (rgb[:, 2] < 100),
}


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_each_true_mask_covers_its_object_and_nothing_else(scene):
    frames, masks = synthetic_clip(scene, 10, (90, 160)), synthetic_masks(scene, 10, (90, 160))
    assert list(masks) == list(SCENES[scene])
    for expression, mask in masks.items():
        assert mask.shape == frames.shape[:3] and mask.any((1, 2)).all()
        looks_like = OBJECT_PIXELS[expression]
        assert looks_like(frames[mask]).mean() > 0.85  # inside: the object's colour (edge pixels are blends)
        assert looks_like(frames[~mask]).mean() < 0.002  # outside: hardly ever
    first, second = masks.values()
    assert not (first & second).any()


def test_the_effect_pictures_are_written(tmp_path):
    from PIL import Image

    paths = write_effect_pictures(tmp_path)
    assert {p.stem for p in paths} == {"original", "blur", "pixelate", "fill", "desaturate", "spotlight", "cutout"}
    original = np.asarray(Image.open(tmp_path / "original.png"))
    for path in paths[1:]:
        image = np.asarray(Image.open(path))
        assert image.shape[:2] == original.shape[:2] and (image[..., :3] != original).any() or image.shape[-1] == 4
    assert Image.open(tmp_path / "cutout.png").mode == "RGBA"
