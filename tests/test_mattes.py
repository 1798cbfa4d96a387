"""Tests for referdino_demo/mattes.py: soft mask edges, one expression's (or all expressions') masks by chunk, and
frames paired with per-frame data at exact counts.

Segmentations are built by hand with logits at the frame size (upsampling is the identity): expression k is a
square of logit +6 on -6, so its masks are known.
"""

import numpy as np
import pytest

from referdino_demo.errors import ConfigError, ReferDinoError, UnknownExpressionError
from referdino_demo.mattes import cutout, iter_frames_with, iter_object_masks, soft_mask
from referdino_demo.results import ExpressionResult, VideoSegmentation

SIZE, FRAMES = (20, 30), 5


def square(t, k):
    """(H, W) bool: expression k's 6 x 6 square in frame t."""
    mask = np.zeros(SIZE, bool)
    mask[2 + 3 * k: 8 + 3 * k, 2 + 4 * t: 8 + 4 * t] = True
    return mask


def make_segmentation(num_expressions=2):
    results = {}
    for k in range(num_expressions):
        logits = np.where([[square(t, k) for t in range(FRAMES)]], 6.0, -6.0).astype(np.float16)  # (1, T, H, W)
        results[f"object {k}"] = ExpressionResult(f"object {k}", SIZE, np.full((FRAMES, 1), 0.9, np.float32),
                                                  np.zeros((FRAMES, 1, 4), np.float32), np.array([0]), logits)
    return VideoSegmentation(results, SIZE, 10.0, np.arange(FRAMES))


def test_soft_mask_ramps_linearly_across_a_straight_edge():
    mask = np.zeros((9, 20), bool)
    mask[:, 10:] = True
    alpha = soft_mask(mask, 6)  # window 7: 6 intermediate steps centred on the edge
    expected = np.clip((np.arange(20) - 6) / 7, 0, 1)  # column c sees columns c-3 .. c+3
    np.testing.assert_allclose(alpha, np.tile(expected, (9, 1)), atol=1e-6)
    assert alpha.dtype == np.float32


@pytest.mark.parametrize("feather", [0, 0.9, 3, 8.5])
def test_pixels_away_from_the_edge_keep_the_mask(feather):
    rng = np.random.default_rng(1)
    mask = np.zeros((40, 50), bool)
    for _ in range(4):
        y, x = rng.integers(0, 35), rng.integers(0, 45)
        mask[y:y + rng.integers(3, 15), x:x + rng.integers(3, 15)] = True
    alpha = soft_mask(mask, feather)
    r = round(feather / 2)
    padded = np.pad(mask, r, mode="edge")  # the frame border is not an edge
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * r + 1, 2 * r + 1))
    homogeneous = windows.all((2, 3)) | ~windows.any((2, 3))
    np.testing.assert_array_equal(alpha[homogeneous], mask[homogeneous])
    assert ((alpha[~homogeneous] > 0) & (alpha[~homogeneous] < 1)).all()


def test_a_mask_touching_the_frame_border_stays_opaque_there_and_full_or_empty_masks_stay():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    assert (soft_mask(mask, 4)[:, 0] == 1).all()
    np.testing.assert_array_equal(soft_mask(np.ones((4, 4), bool), 9), 1)
    np.testing.assert_array_equal(soft_mask(np.zeros((4, 4), bool), 9), 0)


@pytest.mark.parametrize("feather", [-1, float("nan"), float("inf")])
def test_a_bad_feather_is_refused(feather):
    with pytest.raises(ConfigError, match="feather must be a width in pixels >= 0"):
        soft_mask(np.zeros((4, 4), bool), feather)


def test_cutout_keeps_the_colours_and_makes_the_mask_the_alpha():
    frame = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    rgba = cutout(frame, square(0, 0))
    assert rgba.shape == (*SIZE, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[..., :3], frame)
    np.testing.assert_array_equal(rgba[..., 3], square(0, 0) * 255)


@pytest.mark.parametrize("expression, objects", [(0, [0]), ("object 1", [1]), (-1, [1]), (None, [0, 1])])
def test_object_masks_are_one_expressions_or_the_union(expression, objects):
    chunks = list(iter_object_masks(make_segmentation(), expression, chunk=2))
    assert [start for start, _ in chunks] == [0, 2, 4]
    masks = np.concatenate([m for _, m in chunks])
    expected = [np.any([square(t, k) for k in objects], 0) for t in range(FRAMES)]
    np.testing.assert_array_equal(masks, expected)


def test_an_unknown_expression_is_named():
    with pytest.raises(UnknownExpressionError, match="no result for 'a cat'"):
        next(iter_object_masks(make_segmentation(), "a cat"))


def frames(n):
    return [np.full((*SIZE, 3), t, np.uint8) for t in range(n)]


def test_frames_are_paired_with_their_data_in_order():
    pairs = list(iter_frames_with(make_segmentation(), frames(FRAMES), [(0, "ab"), (2, "cd"), (4, "e")]))
    assert [(index, int(frame[0, 0, 0]), data) for index, frame, data in pairs] == [
        (0, 0, "a"), (1, 1, "b"), (2, 2, "c"), (3, 3, "d"), (4, 4, "e")]


@pytest.mark.parametrize("given, message", [
    (frames(FRAMES - 1), "the frames ran out after 4 frames, but the segmentation has 5 processed frames"),
    (frames(FRAMES + 1), "more frames than the segmentation's 5 processed frames were given"),
    (frames(2) + [np.zeros((20, 31, 3), np.uint8)], r"frame 2 is a \(20, 31, 3\) uint8 array"),
    (frames(2) + [np.zeros((*SIZE, 3), np.float32)], r"frame 2 is a \(20, 30, 3\) float32 array"),
])
def test_frames_out_of_step_with_the_segmentation_are_refused(given, message):
    with pytest.raises(ReferDinoError, match=message):
        list(iter_frames_with(make_segmentation(), given, iter_object_masks(make_segmentation(), 0, chunk=2)))
