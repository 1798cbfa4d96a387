"""Tests for referdino_demo/render/: overlay and heatmap renderers, the untrained banner, overlay/heatmap
videos (probed for what browsers need), single-frame renders and the score plot/table.

Results are built directly as ExpressionResult objects whose stride-4 logits are at the frame size, so
upsampling is the identity and the expected masks are known: a disc of radius 8 moving 4 px per frame,
logit = 0.75 * (8 - distance to the centre), i.e. the 0.5-threshold mask is exactly "distance < 8".
"""

import io
from fractions import Fraction

import numpy as np
import pytest
from matplotlib.figure import Figure

from referdino_demo.errors import ReferDinoError
from referdino_demo.io import exact_frame_rate, probe_video, read_video
from referdino_demo.render import (
    PALETTE,
    BannerRenderer,
    HeatmapRenderer,
    OverlayRenderer,
    color_for,
    hex_color,
    plot_scores,
    render_frame,
    render_heatmap_frame,
    render_heatmap_video,
    render_overlay_video,
    scores_table,
)
from referdino_demo.render.plot import LEGEND_CHARS
from referdino_demo.render.text import drawable_text
from referdino_demo.results import ExpressionResult, VideoSegmentation

RADIUS, SLOPE = 8, 0.75


def centre(t, k):
    """(cy, cx) of expression k's disc in processed frame t."""
    return 20 + 4 * k, 14 + 4 * t + 12 * k


def distance(size, t, k):
    yy, xx = np.mgrid[:size[0], :size[1]]
    cy, cx = centre(t, k)
    return np.hypot(yy - cy, xx - cx)


def make_segmentation(size=(47, 65), num_frames=6, fps=29.97 / 2, stride=2,
                      expressions=("the red car", "a dog"), untrained=False):
    """VideoSegmentation with one moving disc per expression (query 0) and a static second candidate."""
    height, width = size
    results = {}
    for k, text in enumerate(expressions):
        shown = [SLOPE * (RADIUS - distance(size, t, k)) for t in range(num_frames)]
        other = [np.full(size, -9.0)] * num_frames
        logits = np.stack([shown, other]).astype(np.float16)  # (K=2, T, H, W)
        scores = np.stack([0.9 - 0.1 * np.arange(num_frames) / num_frames - 0.2 * k,
                           np.full(num_frames, 0.05)], 1).astype(np.float32)  # (T, Q=2)
        boxes = np.zeros((num_frames, 2, 4), np.float32)
        for t in range(num_frames):
            cy, cx = centre(t, k)
            boxes[t, 0] = (cx / width, cy / height, 2 * RADIUS / width, 2 * RADIUS / height)
        results[text] = ExpressionResult(text, size, scores, boxes, np.array([0, 1]), logits, untrained=untrained)
    return VideoSegmentation(results=results, frame_size=size, fps=fps,
                             frame_indices=np.arange(num_frames) * stride, untrained=untrained)


def grey_frames(segmentation, value=100):
    height, width = segmentation.frame_size
    return [np.full((height, width, 3), value, np.uint8) for _ in range(segmentation.num_frames)]


@pytest.fixture(scope="module")
def segmentation():
    return make_segmentation()


def test_the_synthetic_masks_are_the_discs(segmentation):
    for k, result in enumerate(segmentation):
        for t in range(segmentation.num_frames):
            np.testing.assert_array_equal(result.mask(t, 0.5), distance(segmentation.frame_size, t, k) < RADIUS)


def test_to_detections_carries_the_mask_box_and_score_of_a_frame(segmentation):
    result = segmentation[1]
    for t in (0, segmentation.num_frames - 1):
        detections = result.to_detections(t)
        assert len(detections) == 1 and detections.data["expression"].tolist() == [result.expression]
        np.testing.assert_array_equal(detections.mask[0], distance(segmentation.frame_size, t, 1) < RADIUS)
        np.testing.assert_allclose(detections.xyxy[0], result.boxes_xyxy()[t])
        assert detections.confidence[0] == pytest.approx(result.frame_scores[t])


def test_a_frame_of_the_segmentation_is_one_detection_per_expression_in_palette_order(segmentation):
    t = 2
    detections = segmentation.to_detections(t, threshold=0.5)
    assert detections.class_id.tolist() == list(range(len(segmentation)))
    assert detections.data["expression"].tolist() == segmentation.expressions
    for k, result in enumerate(segmentation):
        np.testing.assert_array_equal(detections.mask[k], distance(segmentation.frame_size, t, k) < RADIUS)
        assert detections.confidence[k] == pytest.approx(result.frame_scores[t])
    given = np.zeros((len(segmentation), *segmentation.frame_size), bool)  # masks a renderer already has
    np.testing.assert_array_equal(segmentation.to_detections(t, masks=given).mask, given)


def test_the_overlay_draws_detections_as_it_draws_masks(segmentation):
    frame = np.full((*segmentation.frame_size, 3), 100, np.uint8)
    renderer = OverlayRenderer(show_boxes=True)
    detections = segmentation.to_detections(1)
    by_masks = renderer.render_frame(frame, list(detections.mask), segmentation.expressions, detections.xyxy,
                                     scores=detections.confidence)
    np.testing.assert_array_equal(renderer.annotate(frame, detections), by_masks)
    assert (by_masks != frame).any()


# -- overlay ---------------------------------------------------------------------------------------------
def test_overlay_colours_appear_inside_the_masks_only():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    before = frame.copy()
    first = np.zeros((40, 50), bool)
    first[5:15, 5:20] = True
    second = np.zeros((40, 50), bool)
    second[25:35, 30:45] = True
    renderer = OverlayRenderer(opacity=0.5, outline=2, show_labels=False)
    out = renderer.render_frame(frame, [first, second], ["a", "b"])

    np.testing.assert_array_equal(frame, before)  # input unchanged
    assert out is not frame and out.dtype == np.uint8 and out.shape == frame.shape
    np.testing.assert_array_equal(out[~(first | second)], frame[~(first | second)])
    for mask, colour in ((first, PALETTE[0]), (second, PALETTE[1])):  # RGB colour i for mask i, not BGR
        inner = np.zeros_like(mask)
        inner[np.nonzero(mask)[0].min() + 2:np.nonzero(mask)[0].max() - 1,
              np.nonzero(mask)[1].min() + 2:np.nonzero(mask)[1].max() - 1] = True
        expected = 0.5 * frame[inner].astype(float) + 0.5 * np.array(colour)
        assert np.abs(out[inner] - expected).max() <= 1  # translucent fill
        assert (out[mask & ~inner] == colour).all()  # 2-px outline just inside the mask


def test_overlay_ids_pick_the_palette_colour_and_opacity_one_paints_it():
    frame = np.zeros((20, 20, 3), np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[4:12, 4:12] = True
    out = OverlayRenderer(opacity=1.0, outline=0, show_labels=False).render_frame(frame, [mask], ["x"], ids=[3])
    assert (out[mask] == PALETTE[3]).all()
    assert (out[~mask] == 0).all()


def test_overlay_fills_the_whole_mask_even_when_the_given_box_does_not_contain_it():
    frame = np.zeros((30, 30, 3), np.uint8)
    mask = np.zeros((30, 30), bool)
    mask[15:25, 15:25] = True
    renderer = OverlayRenderer(opacity=1.0, outline=0, show_labels=False)
    out = renderer.render_frame(frame, [mask], ["x"], boxes=np.array([[0, 0, 5, 5]]))
    assert (out[mask] == PALETTE[0]).all()


def test_overlay_outline_boxes_and_labels_stay_near_the_mask_and_use_its_colour():
    frame = np.full((120, 160, 3), 90, np.uint8)
    mask = np.zeros((120, 160), bool)
    mask[60:100, 60:120] = True
    empty = np.zeros_like(mask)
    out = OverlayRenderer(show_boxes=True).render_frame(frame, [mask, empty], ["the red car", "nothing"],
                                                        scores=[0.87, 0.1])
    changed = (out != frame).any(-1)
    assert changed[mask].all()
    assert not changed[:, :50].any() and not changed[105:].any()  # far from the mask and its label
    assert (out == PALETTE[0]).all(-1).sum() > 50  # outline, box and label background in colour 0
    assert not (out == PALETTE[1]).all(-1).any()  # the empty mask gets neither box nor label


@pytest.mark.parametrize("label", ["漢字の車 🚗", "<b>html</b> & 'q'", "", "multi\nline\ttext", "e\u0301\u200d"])
def test_labels_with_any_text_render(label):
    frame = np.full((64, 96, 3), 30, np.uint8)
    mask = np.zeros((64, 96), bool)
    mask[30:50, 30:60] = True
    out = OverlayRenderer().render_frame(frame, [mask], [label], scores=[0.5])
    assert out.shape == frame.shape


def test_drawable_text_keeps_drawable_characters_and_replaces_the_rest():
    assert drawable_text("the red car <b>") == "the red car <b>"
    assert drawable_text("Größe Жук") == "Größe Жук"
    assert drawable_text("漢\nx") == "? x"  # DejaVu Sans has no CJK glyphs
    assert drawable_text("the red car", max_chars=11) == "the red car"
    assert drawable_text("the red car", max_chars=8) == "the red\u2026"


def test_overlay_rejects_mismatched_inputs():
    frame = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="one entry per mask"):
        OverlayRenderer().render_frame(frame, [np.zeros((10, 10), bool)], [])
    with pytest.raises(ValueError, match="like the frame"):
        OverlayRenderer().render_frame(frame, [np.zeros((5, 5), bool)], ["a"])
    with pytest.raises(ValueError, match="uint8"):
        OverlayRenderer().render_frame(frame.astype(float), [], [])


# -- heatmap ---------------------------------------------------------------------------------------------
def logit(probability: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(probability) - np.log1p(-probability)


def test_heatmap_alpha_is_opacity_times_probability():
    probability = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (8, 1))  # grows along x
    renderer = HeatmapRenderer(opacity=0.6, contour=False)
    black = renderer.render_frame(np.zeros((8, 64, 3), np.uint8), logit(probability), 0.5)
    white = renderer.render_frame(np.full((8, 64, 3), 255, np.uint8), logit(probability), 0.5)
    # out = frame * (1 - a) + heat * a, so white - black = 255 * (1 - a), whatever the colormap
    alpha = 1 - (white.astype(float) - black).mean((0, 2)) / 255
    np.testing.assert_allclose(alpha, 0.6 * probability[0], atol=2 / 255)
    assert (np.diff(alpha) > -1e-9).all() and alpha[0] < 0.01


def test_heatmap_contour_is_drawn_at_the_threshold_boundary():
    yy, xx = np.mgrid[:61, :61]
    radius = np.hypot(yy - 30, xx - 30)
    probability = np.clip(1 - radius / 20, 0, 1)  # > 0.5 inside radius 10, > 0.25 inside radius 15
    frame = np.full((61, 61, 3), 50, np.uint8)
    renderer = HeatmapRenderer(opacity=0.0, contour=True, contour_thickness=2)  # contour only
    for threshold, cut in ((0.5, 10), (0.25, 15)):
        out = renderer.render_frame(frame, logit(probability), threshold, color_for(2))
        changed = (out != frame).any(-1)
        assert (out[changed] == PALETTE[2]).all()
        assert (radius[changed] < cut).all() and (radius[changed] > cut - 2 * np.sqrt(2) - 1e-6).all()
        assert changed[(radius < cut) & (radius >= cut - 1)].all()  # the outermost ring is all contour


# -- banner ----------------------------------------------------------------------------------------------
def test_banner_covers_the_top_only_and_shows_text():
    frame = np.full((200, 300, 3), 40, np.uint8)
    out = BannerRenderer(height=0.1).render_frame(frame)
    assert (frame == 40).all()
    assert (out[20:] == 40).all()
    band = out[:20]
    assert (band == (255, 210, 0)).all(-1).mean() > 0.5 and (band == 0).all(-1).any()  # yellow band, black text


# -- videos ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, fps, stride", [((47, 65), 29.97 / 2, 2), ((48, 64), 25.0, 1)])
def test_overlay_video_is_browser_playable_with_one_frame_per_processed_frame(tmp_path, size, fps, stride):
    seg = make_segmentation(size=size, fps=fps, stride=stride)
    frames = (frame for frame in grey_frames(seg))  # a lazy iterator, as when re-reading the video
    path = render_overlay_video(seg, frames, tmp_path / "overlay.mp4", show_labels=False)
    assert path == tmp_path / "overlay.mp4"
    probe = probe_video(path)
    assert (probe.codec, probe.pix_fmt) == ("h264", "yuv420p")
    assert probe.num_frames == seg.num_frames
    assert probe.fps == exact_frame_rate(seg.fps) and float(probe.fps) == pytest.approx(seg.fps, rel=1e-4)
    assert probe.width % 2 == 0 and probe.height % 2 == 0
    if stride == 2:
        assert probe.fps == Fraction(15000, 1001)

    _, decoded = read_video(path)
    for t, image in enumerate(decoded):  # the disc of expression 0 is tinted crimson, the far corner is not
        cy, cx = centre(t, 0)
        r, g, b = image[cy, cx].astype(int)
        assert r > g + 40 and r > b + 40
        assert np.abs(image[size[0] - 3, size[1] - 3].astype(int) - 100).max() < 12


def test_frames_are_read_in_step_with_the_mask_chunks(tmp_path, segmentation, monkeypatch):
    pulled, seen = [], []
    original = ExpressionResult.upsampled_logits

    def spy(self, frames=None, queries=None):
        seen.append(len(pulled))
        return original(self, frames, queries)

    def frames():
        for frame in grey_frames(segmentation):
            pulled.append(1)
            yield frame

    monkeypatch.setattr(ExpressionResult, "upsampled_logits", spy)
    render_overlay_video(segmentation, frames(), tmp_path / "o.mp4", chunk=2)
    assert seen == [0, 0, 2, 2, 4, 4]  # two expressions per chunk; never more than one chunk read ahead


def test_heatmap_video_by_name_and_index(tmp_path, segmentation):
    by_name = render_heatmap_video(segmentation, grey_frames(segmentation), tmp_path / "a.mp4", expression="a dog")
    by_index = render_heatmap_video(segmentation, grey_frames(segmentation), tmp_path / "b.mp4", expression=1)
    for path in (by_name, by_index):
        probe = probe_video(path)
        assert (probe.codec, probe.pix_fmt, probe.num_frames) == ("h264", "yuv420p", segmentation.num_frames)
    with pytest.raises(ReferDinoError, match="no expression 'a cat'"):
        render_heatmap_video(segmentation, grey_frames(segmentation), tmp_path / "c.mp4", expression="a cat")
    assert not (tmp_path / "c.mp4").exists()


def test_untrained_segmentation_gets_a_banner_on_every_frame(tmp_path):
    trained, untrained = make_segmentation(), make_segmentation(untrained=True)
    for index in (0, 5):
        plain = render_frame(trained, grey_frames(trained)[0], index)
        warned = render_frame(untrained, grey_frames(untrained)[0], index)
        assert np.abs(warned[:4].astype(int) - plain[:4]).mean() > 50  # banner area differs
        np.testing.assert_array_equal(warned[12:], plain[12:])
    _, decoded = read_video(render_overlay_video(untrained, grey_frames(untrained), tmp_path / "u.mp4"))
    assert all((frame[:3].mean((0, 1)) > (200, 150, -1)).all() and frame[:3, :, 2].mean() < 80 for frame in decoded)
    forced = render_frame(trained, grey_frames(trained)[0], 0, untrained_banner=True)
    np.testing.assert_array_equal(forced, render_frame(untrained, grey_frames(untrained)[0], 0))


@pytest.mark.parametrize("count", [5, 7])
def test_frame_count_mismatch_raises_and_leaves_no_file(tmp_path, segmentation, count):
    frames = grey_frames(segmentation) + grey_frames(segmentation)
    path = tmp_path / "overlay.mp4"
    with pytest.raises(ReferDinoError, match="ran out" if count < 6 else "more frames"):
        render_overlay_video(segmentation, frames[:count], path, chunk=4)
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"previous render")
    with pytest.raises(ReferDinoError):
        render_heatmap_video(segmentation, frames[:count], path)
    assert path.read_bytes() == b"previous render"  # an older file survives a failed render


def test_frames_of_the_wrong_size_are_rejected(tmp_path, segmentation):
    frames = [np.zeros((48, 64, 3), np.uint8)] * segmentation.num_frames
    with pytest.raises(ReferDinoError, match="64x48"):
        render_overlay_video(segmentation, frames, tmp_path / "o.mp4")


# -- single frames ---------------------------------------------------------------------------------------
def test_render_frame_matches_the_masks_at_the_threshold(segmentation):
    frame = grey_frames(segmentation)[0]
    for threshold in (0.5, 0.9):
        out = render_frame(segmentation, frame, 3, threshold, show_labels=False)
        tinted = (out != frame).any(-1)
        for result in segmentation:
            assert tinted[result.mask(3, threshold)].all()
        far = np.ones(segmentation.frame_size, bool)
        far[:, :60] = False
        assert not tinted[far].any()
    smaller = render_frame(segmentation, frame, 3, 0.9, show_labels=False, opacity=1.0)
    larger = render_frame(segmentation, frame, 3, 0.1, show_labels=False, opacity=1.0)
    assert (larger != frame).any(-1).sum() > (smaller != frame).any(-1).sum()
    with pytest.raises(ReferDinoError, match="frame 6 does not exist"):
        render_frame(segmentation, frame, 6)


def test_render_heatmap_frame_draws_the_expression_contour(segmentation):
    frame = grey_frames(segmentation)[0]
    out = render_heatmap_frame(segmentation, frame, 2, expression=1, threshold=0.5, opacity=0.0)
    contour = (out != frame).any(-1)
    assert contour.any() and (out[contour] == color_for(1)).all()
    assert (distance(segmentation.frame_size, 2, 1)[contour] < RADIUS).all()


# -- plot and table --------------------------------------------------------------------------------------
def test_plot_scores_draws_one_palette_line_per_expression(segmentation):
    figure = plot_scores(segmentation, threshold=0.2)
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    lines = ax.get_lines()
    assert len(lines) == len(segmentation) + 1  # + the threshold line
    for i, result in enumerate(segmentation):
        assert lines[i].get_color() == hex_color(i)
        np.testing.assert_array_equal(lines[i].get_xdata(), np.arange(segmentation.num_frames))
        np.testing.assert_allclose(lines[i].get_ydata(), result.frame_scores)
    assert ax.get_ylim() == (0.0, 1.0)
    timed = plot_scores(segmentation, time_axis=True).axes[0].get_lines()[0].get_xdata()
    np.testing.assert_allclose(timed, np.arange(segmentation.num_frames) / segmentation.fps)


def test_plot_scores_into_given_axes_and_with_tricky_labels():
    seg = make_segmentation(expressions=("costs $5 and $\\frac", "_leading underscore"))
    figure = Figure()
    ax = figure.add_subplot()
    assert plot_scores(seg, ax=ax) is figure
    figure.savefig(io.BytesIO(), format="png")  # unescaped, mathtext would raise on "$\frac"
    assert len(ax.get_legend().get_texts()) == 2


def test_long_expressions_are_cut_in_the_legend():
    seg = make_segmentation(expressions=("word " * 1000, "a dog"))
    texts = [t.get_text() for t in plot_scores(seg).axes[0].get_legend().get_texts()]
    assert texts[1] == "a dog" and texts[0].startswith("word word") and texts[0].endswith("\u2026")
    assert len(texts[0]) == LEGEND_CHARS


def test_scores_table_rows(segmentation):
    rows = scores_table(segmentation, threshold=0.5)
    assert len(rows) == segmentation.num_frames * len(segmentation)
    assert set(rows[0]) == {"frame", "time_s", "expression", "score", "mask_area"}
    for row in rows:
        k = segmentation.expressions.index(row["expression"])
        assert row["mask_area"] == int((distance(segmentation.frame_size, row["frame"], k) < RADIUS).sum())
        assert row["time_s"] == pytest.approx(row["frame"] / segmentation.fps, abs=1e-6)
        assert row["score"] == pytest.approx(segmentation[k].frame_scores[row["frame"]], abs=1e-6)
    assert sum(r["mask_area"] for r in scores_table(segmentation, threshold=0.9)) < sum(r["mask_area"] for r in rows)
