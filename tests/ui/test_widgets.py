"""The notebook panel driven from Python, as a front-end would: clicks and slider values, then what it shows."""

import base64
import csv
import datetime
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from referdino_demo.examples import synthetic_clip
from referdino_demo.io import probe_video, write_video
from referdino_demo.io.video_reader import decode_counts
from referdino_demo.predictor import ReferDinoPredictor
from referdino_demo.ui.widgets import ReferDinoPanel

SHORT = 128
FRAMES = 6


@pytest.fixture(scope="module")
def predictor():
    return ReferDinoPredictor.from_pretrained("tiny-random")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "red ball.mp4"
    return write_video(path, synthetic_clip("red_ball", num_frames=FRAMES, size=(72, 128)), 12)


@pytest.fixture
def panel(predictor, video, tmp_path):
    panel = ReferDinoPanel(predictor, output_dir=tmp_path / "out", short_side=SHORT)
    panel.path.value = str(video)
    panel.expressions.value = "the red ball\nthe blue square"
    return panel


@pytest.fixture
def ran(panel):
    panel.run_button.click()
    assert panel.segmentation is not None, texts(panel)
    return panel


def texts(panel, stream=None) -> str:
    return "".join(o["text"] for o in panel.messages.outputs if stream in (None, o["name"]))


def png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image)


def test_run_shows_video_frames_and_plot(ran, tmp_path):
    assert texts(ran, "stderr") == "" and "segmented 6 frames x 2 expressions" in texts(ran)
    assert "UNTRAINED" in texts(ran)  # tiny-random results are labelled
    assert ran.progress.value == 1.0 and not ran.run_button.disabled
    # The overlay video is an H.264 MP4 a browser (and Colab) plays.
    assert ran.video.format == "mp4"
    file = tmp_path / "played.mp4"
    file.write_bytes(ran.video.value)
    probe = probe_video(file)
    assert probe.codec == "h264" and probe.pix_fmt == "yuv420p" and probe.num_frames == FRAMES
    assert ran.frame.max == FRAMES - 1 and not ran.frame.disabled
    assert png(ran.overlay_image.value).shape[:2] == (72, 128)
    assert png(ran.heatmap_image.value).shape[:2] == (72, 128)
    assert list(ran.heatmap_expression.options) == ["the red ball", "the blue square"]
    assert png(ran.plot.value).shape[1] > 300  # the score plot figure


def test_threshold_and_frame_rerender_without_a_model_call_or_a_decode(ran, model_calls):
    decoded = decode_counts()
    overlay, heatmap, video = ran.overlay_image.value, ran.heatmap_image.value, ran.video.value
    ran.threshold.value = 0.8  # tiny-random probabilities sit around 0.4-0.7: the masks empty out
    assert ran.overlay_image.value != overlay and ran.video.value != video
    assert ran.heatmap_image.value != heatmap  # the contour of probability > threshold is gone
    at_08 = ran.overlay_image.value
    ran.frame.value = 3
    assert ran.overlay_image.value != at_08
    ran.heatmap_expression.value = "the blue square"
    assert model_calls == [] and decode_counts() == decoded  # the frames decoded for the model were kept
    assert texts(ran, "stderr") == ""


def test_pruning_change_applies_on_the_next_run(ran, model_calls, predictor):
    config = predictor.model.config
    assert ran.segmentation[0].scores.shape[1] == config.query_counts()[-1]
    ran.query_decay.value = 1.0
    assert model_calls == [] and "press Run" in texts(ran)
    ran.run_button.click()
    assert "backbone" in model_calls and "decoder" in model_calls
    assert ran.segmentation[0].scores.shape[1] == config.replace(query_decay=1.0).query_counts()[-1] == 300


@pytest.mark.parametrize("expressions, video, message", [
    ("", None, "no expression given"),
    (" \n  \n", None, "no expression given"),
    ("the red ball", "", "no video chosen"),
    ("the red ball", "/no/such/video.mp4", "video.mp4"),
])
def test_input_errors_show_one_readable_line(panel, model_calls, expressions, video, message):
    panel.expressions.value = expressions
    if video is not None:
        panel.path.value = video
    panel.run_button.click()
    errors = texts(panel, "stderr")
    assert errors.startswith("Error: ") and message in errors and errors.count("\n") == 1
    assert "Traceback" not in texts(panel)
    assert model_calls == [] and panel.segmentation is None
    assert panel.status.value == "error" and not panel.run_button.disabled


def test_exports_write_files_named_as_everywhere_and_show_links(ran, tmp_path):
    out = tmp_path / "out" / "red_ball"  # one folder per video, the file names of the CLI and the app
    written = {path.name for path in out.iterdir()}
    assert written == {"overlay.mp4"}  # the video shown; nothing else is written before an export button
    for kind in ("png", "palette", "rle", "csv", "overlay", "heatmap"):
        ran.export_buttons[kind].click()
    names = ["masks.zip", "palette.zip", "masks_rle.json", "scores.csv", "overlay.mp4", "heatmap.mp4"]
    assert sorted(path.name for path in out.iterdir()) == sorted(names)
    for name in names:
        assert name in ran.exports.value
    with zipfile.ZipFile(out / "masks.zip") as archive:
        assert sum(n.endswith(".png") for n in archive.namelist()) == 2 * FRAMES
    assert json.loads((out / "masks_rle.json").read_text())["info"]["num_frames"] == FRAMES
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 2 * FRAMES
    assert probe_video(out / "heatmap.mp4").codec == "h264"
    assert texts(ran, "stderr") == ""


def test_exports_before_a_run_explain_what_to_do(panel):
    panel._on_export("csv")  # the buttons are disabled until a result exists; the handler still guards
    assert "press Run first" in texts(panel, "stderr") and panel.export_buttons["csv"].disabled


def test_upload_fills_the_path(panel, video, tmp_path):
    content = video.read_bytes()
    panel.upload.value = ({"name": "upload.mp4", "type": "video/mp4", "size": len(content),
                           "content": memoryview(content),
                           "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)},)
    saved = tmp_path / "out" / "uploads" / "upload.mp4"
    assert panel.path.value == str(saved) and saved.read_bytes() == content
    panel.run_button.click()
    assert panel.segmentation.num_frames == FRAMES and panel.segmentation.source == str(saved)


def test_from_pretrained_displays_itself(tmp_path):
    panel = ReferDinoPanel.from_pretrained("tiny-random", output_dir=tmp_path)
    bundle = panel._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.widget.model_id
    assert "tiny-random" in panel.header.value and "UNTRAINED" in panel.header.value


def test_effects_tab_previews_the_frame_and_renders_the_video(ran, model_calls, tmp_path):
    from referdino_demo.render.effects import make_effect

    decoded = decode_counts()
    assert png(ran.effect_image.value).shape == (72, 128, 3)  # blur, the default, of frame 0
    ran.effect.value = "cutout"
    assert png(ran.effect_image.value).shape == (72, 128, 4) and ran.target.disabled  # RGBA; no target to choose
    ran.effect.value, ran.feather.value, ran.frame.value = "fill", 0.0, 2
    ran.effect_expression.value = "the blue square"
    ran.target.value = "object"
    view = ran.view
    expected = make_effect("fill", target="object", feather=0.0).render_frame(
        view.frame(2), view.segmentation["the blue square"].mask(2, ran.threshold.value))
    np.testing.assert_array_equal(png(ran.effect_image.value), expected)
    ran.effect_button.click()
    assert ran.effect_video.format == "mp4"
    file = tmp_path / "effect.mp4"
    file.write_bytes(ran.effect_video.value)
    assert probe_video(file).num_frames == FRAMES
    assert (tmp_path / "out" / "red_ball" / "effect_fill.mp4").is_file()
    assert model_calls == [] and decode_counts() == decoded and texts(ran, "stderr") == ""


def test_picking_a_point_shows_that_candidate_and_undo_takes_it_back(ran):
    view = ran.view
    result = view.original["the red ball"]
    rows, cols = np.nonzero(result.with_candidate(2).mask(1, 0.5) & ~result.mask(1, 0.5))
    ran.frame.value = 1
    overlay = ran.overlay_image.value
    ran.pick_x.value, ran.pick_y.value = int(cols[0]), int(rows[0])
    ran.pick_button.click()
    expected = result.candidate_at(1, cols[0], rows[0])
    assert expected.rank != 0 and view.choice("the red ball") == expected.rank
    assert expected.message in texts(ran, "stdout") and ran.overlay_image.value != overlay
    ran.undo_button.click()
    assert view.choice("the red ball") == 0 and ran.overlay_image.value == overlay
    ran.undo_button.click()
    assert "nothing to undo" in texts(ran)
    ran.threshold.value = 1.0  # no candidate covers any point
    ran.pick_button.click()
    assert texts(ran, "stderr").startswith("Error: no kept candidate of 'the red ball' covers (")
    assert view.choice("the red ball") == 0


def test_static_renderers_get_an_html_copy(ran):
    bundle = ran._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ran.widget.model_id
    page = bundle["text/html"]
    assert "ReferDINO" in page and "the red ball" in page
    image = page.split('src="data:image/png;base64,')[1].split('"')[0]
    assert png(base64.b64decode(image)).shape[:2] == (72, 128)


def test_apply_to_follows_the_effect_before_any_run(panel):
    """Spotlight and cut-out keep the object: "apply to" is off for them, before a result as after."""
    for name, disabled in (("cutout", True), ("blur", False), ("spotlight", True), ("fill", False)):
        panel.effect.value = name
        assert panel.target.disabled is disabled
