"""Tests for referdino_demo/export/cutout.py: RGBA PNG cut-outs in a zip (colours kept, alpha = the mask), one per
processed frame, atomic on frames out of step.

Segmentations are built by hand with logits at the frame size (upsampling is the identity): expression k is a
rectangle of logit +6 on -6, moving 2 px right per frame, so its masks are known.
"""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from referdino_demo.errors import ReferDinoError
from referdino_demo.export.cutout import export_cutout_zip
from referdino_demo.results import ExpressionResult, VideoSegmentation

SIZE, FRAMES = (30, 44), 4


def rectangle(t, k):
    mask = np.zeros(SIZE, bool)
    mask[4 + 12 * k: 12 + 12 * k, 3 + 2 * t: 15 + 2 * t] = True
    return mask


def make_segmentation():
    results = {}
    for k, text in enumerate(["the cup", "a spoon"]):
        logits = np.where([[rectangle(t, k) for t in range(FRAMES)]], 6.0, -6.0).astype(np.float16)  # (1, T, H, W)
        results[text] = ExpressionResult(text, SIZE, np.full((FRAMES, 1), 0.9, np.float32),
                                         np.zeros((FRAMES, 1, 4), np.float32), np.array([0]), logits)
    return VideoSegmentation(results, SIZE, 8.0, np.arange(FRAMES) * 3, source="/data/uploads/kitchen.mp4")


def frames(n=FRAMES):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(n)]


def read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        images = {name: Image.open(io.BytesIO(archive.read(name))) for name in names if name.endswith(".png")}
        return names, json.loads(archive.read("info.json")), images


@pytest.mark.parametrize("expression, objects, name", [(1, [1], "a spoon"), ("the cup", [0], "the cup"),
                                                       (None, [0, 1], None)])
def test_each_frame_is_an_rgba_cutout_of_the_object(tmp_path, expression, objects, name):
    path = export_cutout_zip(make_segmentation(), iter(frames()), tmp_path / "cut.zip", expression=expression)
    names, info, images = read_zip(path)
    assert names == ["info.json"] + [f"{t:05d}.png" for t in range(FRAMES)]
    assert (info["expression"], info["threshold"], info["feather"], info["frame_indices"]) == (name, 0.5, 0.0,
                                                                                              [0, 3, 6, 9])
    assert info["source"] == "kitchen.mp4"  # no server folders in an export
    for t, frame in enumerate(frames()):
        image = images[f"{t:05d}.png"]
        assert image.mode == "RGBA" and image.size == (SIZE[1], SIZE[0])
        rgba = np.asarray(image)
        np.testing.assert_array_equal(rgba[..., :3], frame)
        np.testing.assert_array_equal(rgba[..., 3], np.any([rectangle(t, k) for k in objects], 0) * 255)


def test_feathering_softens_the_alpha_edge(tmp_path):
    path = export_cutout_zip(make_segmentation(), frames(), tmp_path / "cut.zip", feather=4)
    alpha = np.asarray(read_zip(path)[2]["00000.png"])[..., 3]
    # rectangle 0 in frame 0 starts at column 3: the 5-wide window of column c holds c of its columns (c <= 5)
    np.testing.assert_array_equal(alpha[8, :8], np.round(np.clip(np.arange(8) / 5, 0, 1) * 255))


@pytest.mark.parametrize("count", [FRAMES - 1, FRAMES + 1])
def test_frames_out_of_step_leave_no_zip(tmp_path, count):
    with pytest.raises(ReferDinoError, match="pass the frames that were segmented"):
        export_cutout_zip(make_segmentation(), frames(count), tmp_path / "cut.zip")
    assert list(tmp_path.iterdir()) == []
