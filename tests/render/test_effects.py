"""Tests for referdino_demo/render/effects.py: each effect on a synthetic frame with a known mask (pixels inside and
outside behave as documented, the input frame is unchanged), option checks, and effect videos (exact frame counts,
H.264 or alpha, atomic on mismatch).

The frame is seeded noise, whose blur and tile means are easy to tell from the frame; the mask is a rectangle.
Segmentations for the videos are built by hand with logits at the frame size (upsampling is the identity): a
12 x 16 rectangle of logit +6 on -6 moving 3 px right per frame.
"""

import av
import numpy as np
import pytest
from PIL import Image, ImageFilter

from referdino_demo.errors import ConfigError, ReferDinoError
from referdino_demo.io import probe_video, read_video
from referdino_demo.io.video_writer import iter_decoded
from referdino_demo.render.effects import (
    BlurRenderer,
    ColorFillRenderer,
    CutoutRenderer,
    DesaturateRenderer,
    PixelateRenderer,
    SpotlightRenderer,
    render_effect_frame,
    render_effect_video,
)
from referdino_demo.results import ExpressionResult, VideoSegmentation

H, W = 48, 64
FRAME = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
MASK = np.zeros((H, W), bool)
MASK[12:36, 16:48] = True


def away_from_edge(distance):
    """(inside, outside): pixels more than `distance` (in x or y) from the mask's edge."""
    inside, outside = np.zeros((H, W), bool), np.ones((H, W), bool)
    inside[12 + distance: 36 - distance, 16 + distance: 48 - distance] = True
    outside[max(0, 12 - distance): 36 + distance, max(0, 16 - distance): 48 + distance] = False
    return inside, outside


def render(effect, frame=FRAME, mask=MASK):
    before = frame.copy()
    out = effect.render_frame(frame, mask)
    np.testing.assert_array_equal(frame, before)  # the input is never changed
    assert out.dtype == np.uint8 and out is not frame
    return out.astype(int)


def blurred(radius):
    return np.asarray(Image.fromarray(FRAME).filter(ImageFilter.GaussianBlur(radius))).astype(int)


def test_blur_background_keeps_the_object_and_blurs_the_rest():
    out = render(BlurRenderer(6, feather=0))
    np.testing.assert_array_equal(out[MASK], FRAME[MASK])
    np.testing.assert_array_equal(out[~MASK], blurred(6)[~MASK])
    assert out[~MASK].std() < FRAME[~MASK].std() / 3  # noise averaged away


def test_blur_with_a_feathered_edge_blends_only_near_the_edge():
    out = render(BlurRenderer(6, feather=8))  # window 9: up to 4 px either side of the edge blend
    inside, outside = away_from_edge(4)
    np.testing.assert_array_equal(out[inside], FRAME[inside])
    np.testing.assert_array_equal(out[outside], blurred(6)[outside])
    band = ~inside & ~outside
    low, high = np.minimum(FRAME, blurred(6))[band], np.maximum(FRAME, blurred(6))[band]
    assert ((out[band] >= low - 1) & (out[band] <= high + 1)).all()  # a mix of the two looks


def test_blur_the_object_instead():
    out = render(BlurRenderer(6, target="object", feather=0))
    np.testing.assert_array_equal(out[~MASK], FRAME[~MASK])
    np.testing.assert_array_equal(out[MASK], blurred(6)[MASK])


@pytest.mark.parametrize("size", [(48, 64), (45, 61)])  # tiles cut by the right and bottom edges too
def test_pixelate_background_gives_each_tile_its_mean(size):
    frame, mask = FRAME[:size[0], :size[1]], MASK[:size[0], :size[1]]
    out = render(PixelateRenderer(8), frame, mask)
    np.testing.assert_array_equal(out[mask], frame[mask])
    for y, x in zip(*np.nonzero(~mask)):
        tile = frame[y // 8 * 8: y // 8 * 8 + 8, x // 8 * 8: x // 8 * 8 + 8].reshape(-1, 3)
        assert np.abs(out[y, x] - tile.mean(0)).max() <= 0.5 + 1e-9, (y, x)


def test_color_fill_erases_the_background_or_the_object():
    out = render(ColorFillRenderer((10, 20, 30)))
    assert (out[~MASK] == (10, 20, 30)).all()
    np.testing.assert_array_equal(out[MASK], FRAME[MASK])
    out = render(ColorFillRenderer(target="object"))
    assert (out[MASK] == (0, 255, 0)).all()
    np.testing.assert_array_equal(out[~MASK], FRAME[~MASK])


@pytest.mark.parametrize("amount", [1.0, 0.5, 0.0])
def test_desaturate_background_moves_colours_towards_their_luma(amount):
    out = render(DesaturateRenderer(amount, feather=0))
    luma = FRAME @ np.array([0.299, 0.587, 0.114])
    expected = FRAME + amount * (luma[..., None] - FRAME)
    assert np.abs(out[~MASK] - expected[~MASK]).max() <= 0.5 + 1e-4
    np.testing.assert_array_equal(out[MASK], FRAME[MASK])
    if amount == 1.0:
        assert (out[~MASK].max(1) == out[~MASK].min(1)).all()  # grey: r = g = b


def test_spotlight_darkens_everything_but_the_object():
    out = render(SpotlightRenderer(dim=0.75, feather=4))
    inside, outside = away_from_edge(2)
    np.testing.assert_array_equal(out[inside], FRAME[inside])
    assert np.abs(out[outside] - FRAME[outside] * 0.25).max() <= 0.5 + 1e-4


def test_cutout_alpha_is_the_mask_and_feathering_ramps_it():
    rgba = render(CutoutRenderer())
    assert rgba.shape == (H, W, 4)
    np.testing.assert_array_equal(rgba[..., :3], FRAME)
    np.testing.assert_array_equal(rgba[..., 3], MASK * 255)
    alpha = render(CutoutRenderer(feather=6))[..., 3]
    # across the left edge (between columns 15 and 16), away from corners: 6 steps of 255/7
    np.testing.assert_array_equal(alpha[24, 10:22], np.round(np.clip((np.arange(10, 22) - 12) / 7, 0, 1) * 255))


@pytest.mark.parametrize("make, message", [
    (lambda: BlurRenderer(0), "radius must be a number > 0"),
    (lambda: BlurRenderer(target="sky"), "target must be one of"),
    (lambda: BlurRenderer(feather=-1), "feather must be a number >= 0"),
    (lambda: BlurRenderer(feather=float("nan")), "feather must be a number >= 0"),
    (lambda: PixelateRenderer(0), "block must be a tile size in pixels >= 1"),
    (lambda: PixelateRenderer(2.5), "block must be a tile size"),
    (lambda: ColorFillRenderer((300, 0, 0)), r"color must be \(r, g, b\) with integers in 0..255"),
    (lambda: ColorFillRenderer("red"), r"color must be \(r, g, b\)"),
    (lambda: DesaturateRenderer(1.5), "amount must be a number >= 0 and <= 1"),
    (lambda: SpotlightRenderer(dim=-0.1), "dim must be a number >= 0 and <= 1"),
    (lambda: CutoutRenderer(feather="4"), "feather must be a number >= 0"),
    (lambda: BlurRenderer().render_frame(FRAME, MASK[:-1]), r"mask must be an \(H, W\) = \(48, 64\) bool array"),
    (lambda: SpotlightRenderer().render_frame(FRAME, MASK.astype(np.uint8)), "bool array like the frame, got"),
    (lambda: CutoutRenderer().render_frame(FRAME[..., :2], MASK), r"frame must be an \(H, W, 3\) uint8 RGB"),
])
def test_bad_options_and_inputs_are_refused(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


# -- videos ----------------------------------------------------------------------------------------------------
FRAMES, SIZE = 6, (40, 56)


def rectangle(t):
    mask = np.zeros(SIZE, bool)
    mask[14:26, 4 + 3 * t: 20 + 3 * t] = True
    return mask


def segmentation():
    logits = np.where([[rectangle(t) for t in range(FRAMES)]], 6.0, -6.0).astype(np.float16)  # (1, T, H, W)
    result = ExpressionResult("the box", SIZE, np.full((FRAMES, 1), 0.9, np.float32),
                              np.zeros((FRAMES, 1, 4), np.float32), np.array([0]), logits)
    return VideoSegmentation({"the box": result}, SIZE, 12.0, np.arange(FRAMES))


def frames(n=FRAMES):
    return [np.full((*SIZE, 3), (200, 120, 40), np.uint8) for _ in range(n)]


def test_an_effect_video_has_one_frame_per_processed_frame(tmp_path):
    path = render_effect_video(segmentation(), iter(frames()), tmp_path / "spot.mp4", SpotlightRenderer(0.5, feather=0))
    probe = probe_video(path)
    assert (probe.codec, probe.pix_fmt, probe.num_frames, probe.fps, probe.alpha) == ("h264", "yuv420p", FRAMES, 12,
                                                                                     False)
    _, decoded = read_video(path)
    for t, frame in enumerate(decoded.astype(int)):
        inside, outside = np.zeros(SIZE, bool), np.ones(SIZE, bool)  # 2 px from the edge: clear of chroma bleeding
        inside[16:24, 6 + 3 * t: 18 + 3 * t] = True
        outside[12:28, 2 + 3 * t: 22 + 3 * t] = False
        assert np.abs(frame[inside] - (200, 120, 40)).mean() < 3
        assert np.abs(frame[outside] - (100, 60, 20)).mean() < 3


def test_the_frame_preview_matches_the_effect(tmp_path):
    out = render_effect_frame(segmentation(), frames(1)[0], 3, ColorFillRenderer((0, 0, 0)))
    np.testing.assert_array_equal(out.any(2), rectangle(3))
    with pytest.raises(ConfigError, match="frame 6 does not exist; the segmentation has 6 processed frames"):
        render_effect_frame(segmentation(), frames(1)[0], 6, ColorFillRenderer())
    with pytest.raises(ConfigError, match="pass the original frame"):
        render_effect_frame(segmentation(), np.zeros((20, 28, 3), np.uint8), 0, ColorFillRenderer())


@pytest.mark.parametrize("count, message", [(FRAMES - 1, "the frames ran out after 5 frames"),
                                            (FRAMES + 1, "more frames than the segmentation's 6")])
def test_an_effect_video_with_too_few_or_too_many_frames_leaves_nothing(tmp_path, count, message):
    with pytest.raises(ReferDinoError, match=message):
        render_effect_video(segmentation(), frames(count), tmp_path / "blur.mp4", BlurRenderer())
    assert list(tmp_path.iterdir()) == []


def test_a_cutout_needs_a_container_with_alpha(tmp_path):
    with pytest.raises(ConfigError, match=r"an MP4 \(H.264\) cannot hold an alpha channel; write cut.webm"):
        render_effect_video(segmentation(), frames(), tmp_path / "cut.mp4", CutoutRenderer())
    assert list(tmp_path.iterdir()) == []


def decoded_alpha(path):
    """(T, H, W) uint8 alpha planes of a VP9 (yuva420p) or ProRes 4444 (yuva444p12le) video."""
    with av.open(str(path)) as container:
        planes = []
        for frame in iter_decoded(container, container.streams.video[0]):
            plane, wide = frame.planes[3], frame.format.name.endswith("12le")
            values = np.frombuffer(bytes(plane), np.uint16 if wide else np.uint8).reshape(plane.height, -1)
            values = values[:, :plane.width]
            planes.append(np.round(values / 4095 * 255) if wide else values)
        return np.stack(planes).astype(int)


@pytest.mark.parametrize("suffix, codec, tolerance", [(".webm", "vp9", 12), (".mov", "prores", 1)])
def test_a_cutout_video_has_the_feathered_mask_as_alpha(tmp_path, suffix, codec, tolerance):
    path = render_effect_video(segmentation(), frames(), tmp_path / f"cut{suffix}", CutoutRenderer(feather=4))
    probe = probe_video(path)
    assert (probe.codec, probe.alpha, probe.num_frames, probe.width, probe.height) == (codec, True, FRAMES, 56, 40)
    alpha = decoded_alpha(path)
    for t in range(FRAMES):  # feather 4: the mask averaged over 5 x 5 windows, the frame border not an edge
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(rectangle(t), 2, mode="edge"), (5, 5))
        expected = np.round(windows.mean((2, 3)) * 255)
        assert np.abs(alpha[t] - expected).max() <= tolerance, t
        assert np.abs(alpha[t] - expected).mean() < 1
