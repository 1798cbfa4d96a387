"""Effects and cut-outs of `ResultView` (result_view.py) on a segmentation built by hand from the true masks of a
synthetic clip (`examples.synthetic_masks`): what they draw, which object, their memo keys and file names, exact
frame counts; and that they never run the model (the tiny random model, spied on)."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from referdino_demo.errors import ConfigError
from referdino_demo.examples import synthetic_clip, synthetic_masks
from referdino_demo.io import probe_video, write_video
from referdino_demo.io.video_reader import decode_counts, iter_video
from referdino_demo.io.video_writer import alpha_video_suffix
from referdino_demo.mattes import soft_mask
from referdino_demo.render.effects import EFFECTS, BlurRenderer, ColorFillRenderer, CutoutRenderer, make_effect
from referdino_demo.result_view import EFFECT_NAMES, EXPORTS, RenderSettings, ResultView
from referdino_demo.results import ExpressionResult, VideoSegmentation

FRAMES, SIZE = 6, (48, 80)
CLIP = synthetic_clip("red_ball", FRAMES, SIZE)
TRUE = synthetic_masks("red_ball", FRAMES, SIZE)  # expression -> (T, H, W) bool
BALL, SQUARE = list(TRUE)[:2]


def known_segmentation() -> VideoSegmentation:
    """Each expression's official candidate (rank 0) is its own true mask, rank 1 the other object's: logits at the
    frame size (upsampling is the identity), +6 on the object, -6 elsewhere."""
    results = {}
    for own, other in ((BALL, SQUARE), (SQUARE, BALL)):
        logits = np.where(np.stack([TRUE[own], TRUE[other]]), 6.0, -6.0).astype(np.float16)  # (K=2, T, H, W)
        results[own] = ExpressionResult(own, SIZE, np.tile([[0.9, 0.8]], (FRAMES, 1)).astype(np.float32),
                                        np.zeros((FRAMES, 2, 4), np.float32), np.array([0, 1]), logits)
    return VideoSegmentation(results, SIZE, 12.0, np.arange(FRAMES), frames=iter_video(CLIP, fps=12))


@pytest.fixture
def view(tmp_path):
    return ResultView(known_segmentation(), tmp_path)


def test_the_export_table_names_every_effect():
    assert EFFECT_NAMES == tuple(EFFECTS)  # the table loads without the renderers; the names must agree
    assert {kind: EXPORTS[kind].file_name for kind in ("cutout", "effect:blur", "effect:cutout")} == {
        "cutout": "cutout.zip", "effect:blur": "effect_blur.mp4", "effect:cutout": f"cutout{alpha_video_suffix()}"}
    with pytest.raises(ConfigError, match="unknown effect 'glow'; choose from blur, pixelate, fill, desaturate, "
                                          "spotlight, cutout"):
        make_effect("glow")
    with pytest.raises(ConfigError, match="effect 'spotlight' has no option target; its options are dim, feather"):
        make_effect("spotlight", target="object")


def test_an_effect_frame_shows_the_first_expression_unless_told(view):
    fill = ColorFillRenderer((255, 0, 255), target="object")
    for t in (0, 3):
        first = view.effect_frame(t, fill)
        np.testing.assert_array_equal(first, fill.render_frame(CLIP[t], TRUE[BALL][t]))
        np.testing.assert_array_equal(view.effect_frame(t, fill, expression=1),
                                      fill.render_frame(CLIP[t], TRUE[SQUARE][t]))
        by_settings = view.effect_frame(t, fill, RenderSettings(effect_expression=SQUARE))
        np.testing.assert_array_equal(by_settings, fill.render_frame(CLIP[t], TRUE[SQUARE][t]))
    cut = view.effect_frame(2, "cutout", RenderSettings(feather=4))  # a name: made with the settings' feather
    assert cut.shape == (*SIZE, 4)
    np.testing.assert_array_equal(cut[..., 3], np.round(soft_mask(TRUE[BALL][2], 4) * 255))
    np.testing.assert_array_equal(cut[..., :3], CLIP[2])


def test_effect_drawings_are_memoised_by_effect_and_object(view):
    blur = view.effect_frame(1, BlurRenderer(3))
    assert view.effect_frame(1, BlurRenderer(3), expression=BALL) is blur  # equal options, the same object
    assert view.effect_frame(1, BlurRenderer(4)) is not blur
    assert view.effect_frame(1, BlurRenderer(3), expression=SQUARE) is not blur
    video = view.effect_video("blur", RenderSettings(feather=2))
    assert view.effect_video("blur", RenderSettings(feather=2), expression=0) == video
    assert video.stat().st_mtime_ns == view.effect_video("blur", RenderSettings(feather=2)).stat().st_mtime_ns
    with pytest.raises(ConfigError, match="effect must be a renderer"):
        view.effect_frame(0, object())


def test_an_effect_video_and_its_export_are_drawn_once(view, monkeypatch):
    """`write("effect:NAME")` and `effect_video` share one memo: an equal effect on the same object is one file."""
    from referdino_demo.render import effects

    drawn = []
    render = effects.render_effect_video
    monkeypatch.setattr(effects, "render_effect_video", lambda *args, **kwargs: drawn.append(args[3].key()) or
                        render(*args, **kwargs))
    exported = view.write("effect:blur", RenderSettings(feather=4))  # blur's own default feather
    assert view.effect_video("blur") == exported
    assert view.effect_video(BlurRenderer(), expression=BALL) == exported
    cutout = view.effect_video("cutout", RenderSettings(0.4))
    assert view.export(["effect:cutout"], RenderSettings(0.4)) == [cutout]
    assert drawn == [BlurRenderer().key(), CutoutRenderer().key()]
    view.write("effect:blur", RenderSettings(feather=2))  # another drawing
    assert len(drawn) == 3


def test_a_candidate_choice_moves_the_effect_to_the_picked_object(view):
    cut = CutoutRenderer()
    np.testing.assert_array_equal(view.effect_frame(4, cut)[..., 3] > 0, TRUE[BALL][4])
    rows, cols = np.nonzero(TRUE[SQUARE][4])
    outcome = view.pick(BALL, 4, cols[0], rows[0])  # a click on the square: the ball's rank-1 candidate
    assert outcome.rank == 1
    np.testing.assert_array_equal(view.effect_frame(4, cut)[..., 3] > 0, TRUE[SQUARE][4])
    assert view.undo()
    np.testing.assert_array_equal(view.effect_frame(4, cut)[..., 3] > 0, TRUE[BALL][4])


def test_the_cutout_zip_has_the_true_mask_as_alpha(view):
    path = view.write("cutout", RenderSettings(effect_expression=SQUARE))
    assert path.name == "cutout.zip"
    with zipfile.ZipFile(path) as archive:
        for t in range(FRAMES):
            rgba = np.asarray(Image.open(io.BytesIO(archive.read(f"{t:05d}.png"))))
            np.testing.assert_array_equal(rgba[..., 3], np.where(TRUE[SQUARE][t], 255, 0))




def test_a_bad_feather_is_refused():
    for bad in (-1, "wide", float("nan"), True):
        with pytest.raises(ConfigError, match="feather"):
            RenderSettings(feather=bad)
    assert RenderSettings(feather="2.5").feather == 2.5


@pytest.fixture(scope="module")
def predictor():
    from referdino_demo.predictor import ReferDinoPredictor

    return ReferDinoPredictor.from_pretrained("tiny-random")


def test_effects_never_run_the_model_nor_decode_and_keep_every_frame(predictor, model_calls, tmp_path):
    video = write_video(tmp_path / "clip.mp4", CLIP, 12)
    segmentation = predictor.segment(video, [BALL, SQUARE], short_side=128)
    model_calls.clear()
    view = ResultView(segmentation, tmp_path / "out")
    before = decode_counts()
    settings = RenderSettings(0.4, feather=2)
    for name in EFFECT_NAMES:
        path = view.effect_video(name, settings, expression=SQUARE)
        probe = probe_video(path)
        assert (probe.num_frames, probe.alpha) == (FRAMES, name == "cutout")
        assert view.effect_frame(FRAMES - 1, name, settings).shape == (*SIZE, 4 if name == "cutout" else 3)
    view.export(["cutout", "effect:spotlight"], settings)
    assert model_calls == [] and decode_counts() == before
    names = {EXPORTS[f"effect:{name}"].file_name for name in EFFECT_NAMES}
    assert {path.name for path in (tmp_path / "out").iterdir()} == names | {"cutout.zip"}
