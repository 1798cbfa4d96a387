"""`ResultView`, the one result view of the app, the notebook panel and the CLI, on the tiny random model: what it
decodes, what it memoises, what it writes and under which names."""

import dataclasses

import numpy as np
import pytest

from referdino_demo.errors import ConfigError
from referdino_demo.examples import synthetic_clip
from referdino_demo.frame_selection import FrameSelection
from referdino_demo.io import probe_video, write_video
from referdino_demo.io.video_reader import decode_counts
from referdino_demo.predictor import ReferDinoPredictor
from referdino_demo.result_view import EXPORTS, RenderSettings, ResultView

SHORT = 128
FRAMES = 8
TWO = ["the red ball", "the blue square"]


@pytest.fixture(scope="module")
def predictor():
    return ReferDinoPredictor.from_pretrained("tiny-random")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", synthetic_clip("red_ball", FRAMES, (72, 128)), 12)


@pytest.fixture(scope="module")
def segmentation(predictor, video):
    return predictor.segment(video, TWO, short_side=SHORT)


def files(folder) -> set[str]:
    return {path.name for path in folder.rglob("*") if path.is_file()}


def test_drawing_decodes_nothing_while_the_frames_fit(segmentation, tmp_path):
    view = ResultView(segmentation, tmp_path)
    before = decode_counts()
    for threshold in (0.5, 0.3):
        settings = RenderSettings(threshold, opacity=0.7, expression="the blue square")
        view.overlay_video(settings), view.heatmap_video(settings)
        for index in range(FRAMES):
            view.overlay_frame(index, settings), view.heatmap_frame(index, settings)
    view.export(EXPORTS, RenderSettings(0.3))
    assert decode_counts() == before
    assert view.frames.complete and view.frames.kept == FRAMES


def test_beyond_the_budget_frames_are_decoded_on_demand(predictor, video, tmp_path):
    segmentation = predictor.segment(video, TWO, short_side=SHORT, frame_cache_mb=0)
    view = ResultView(segmentation, tmp_path, frame_cache_mb=0)
    assert view.frames.kept == 0
    before = decode_counts()
    view.overlay_video(RenderSettings(0.4))
    assert (decode_counts() - before).passes == 1
    before = decode_counts()
    view.overlay_frame(5), view.heatmap_frame(5)
    assert (decode_counts() - before).passes == 1  # one decode up to frame 5, remembered for the heatmap
    np.testing.assert_array_equal(view.frame(5), list(FrameSelection().open(video))[5][2])


def test_frames_the_model_could_not_hand_over_are_decoded_once_then_kept(segmentation, video, tmp_path):
    """The app's ZeroGPU path: the model ran in another process, the result comes with the opened frames only."""
    view = ResultView(dataclasses.replace(segmentation, frames=FrameSelection().open(video)), tmp_path)
    before = decode_counts()
    view.overlay_video(RenderSettings(0.4))
    assert (decode_counts() - before).passes == 1 and view.frames.complete
    before = decode_counts()
    view.heatmap_video(RenderSettings(0.4)), view.overlay_frame(2)
    assert decode_counts() == before


def test_drawings_are_memoised_by_the_settings_they_depend_on(segmentation, tmp_path):
    view = ResultView(segmentation, tmp_path, versioned=True)  # a drawing made again lands in a fresh folder
    first = RenderSettings(0.5, opacity=0.5, expression="the red ball")
    overlay, heatmap, csv = view.overlay_video(first), view.heatmap_video(first), view.write("csv", first)
    # the heatmap shows another expression: only the heatmap depends on it
    other = dataclasses.replace(first, expression="the blue square")
    assert view.overlay_video(other) == overlay and view.write("csv", other) == csv
    assert view.heatmap_video(other) != heatmap
    # the opacity: the videos change, the masks do not
    lighter = dataclasses.replace(first, opacity=0.9)
    assert view.write("csv", lighter) == csv and view.overlay_video(lighter) != overlay
    assert view.heatmap_video(first) == heatmap  # still kept (the newest two per kind)
    assert view.overlay_frame(3, first) is view.overlay_frame(3, other)  # frames too
    assert view.heatmap_frame(3, first) is not view.heatmap_frame(3, other)
    assert view.heatmap_frame(3, RenderSettings(0.5, opacity=0.5)) is view.heatmap_frame(3, first)  # None: the first


def test_a_candidate_choice_changes_what_is_drawn_and_undo_takes_it_back(segmentation, tmp_path):
    view = ResultView(segmentation, tmp_path, versioned=True)
    result = segmentation["the blue square"]
    settings = RenderSettings(0.5, expression="the blue square")
    official, official_csv = view.heatmap_video(settings), view.write("csv", settings)
    view.choose("the blue square", 2)
    assert view.choice("the blue square") == 2 and view.choice("the red ball") == 0
    assert view.segmentation["the blue square"].query == result.candidates[2]
    assert view.segmentation["the red ball"].query == segmentation["the red ball"].query
    assert view.heatmap_video(settings) != official and view.write("csv", settings) != official_csv
    assert view.undo() and not view.undo()
    assert view.segmentation["the blue square"].query == result.query
    assert view.heatmap_video(settings) == official  # the same drawing as before the choice, not drawn again
    with pytest.raises(Exception, match="candidate 9 does not exist"):
        view.choose("the blue square", 9)
    assert view.choice("the blue square") == 0


def test_a_click_picks_the_candidate_under_it_and_undo_takes_it_back(segmentation, tmp_path):
    view = ResultView(segmentation, tmp_path)
    result = segmentation["the blue square"]
    rows, cols = np.nonzero(result.with_candidate(3).mask(2, 0.5))  # a pixel candidate 3 covers in frame 2
    outcome = view.pick("the blue square", 2, cols[0], rows[0])
    expected = result.candidate_at(2, cols[0], rows[0])  # the rule of the result itself
    assert (outcome.rank, outcome.previous_rank) == (expected.rank, 0)
    assert view.choice("the blue square") == expected.rank
    assert view.segmentation["the blue square"].query == result.candidates[expected.rank]
    assert view.undo() and view.choice("the blue square") == 0


def test_files_are_written_only_when_asked_for(segmentation, tmp_path):
    view = ResultView(segmentation, tmp_path)
    settings = RenderSettings(0.4)
    view.overlay_video(settings), view.overlay_frame(0, settings), view.heatmap_frame(0, settings), view.plot()
    assert files(tmp_path) == {"overlay.mp4"}  # the video a front end shows, nothing else
    with pytest.raises(ConfigError, match="unknown export gif; choose from png,palette,rle,csv,overlay,heatmap,"
                                          "cutout,effect:blur,"):
        view.export(["csv", "gif"], settings)
    assert files(tmp_path) == {"overlay.mp4"}  # a bad kind writes nothing
    assert [path.name for path in view.export(["csv", "rle"], settings)] == ["scores.csv", "masks_rle.json"]
    assert probe_video(tmp_path / "overlay.mp4").num_frames == FRAMES


def test_one_naming_scheme_for_the_cli_the_app_and_the_panel(predictor, segmentation, video, tmp_path, capsys):
    from referdino_demo.cli import main
    from referdino_demo.ui.session import APP_EXPORTS, SessionResult, View
    from referdino_demo.ui.widgets import ReferDinoPanel

    names = {kind: export.file_name for kind, export in EXPORTS.items()}
    assert main(["segment", str(video), "-e", TWO[0], "-e", TWO[1], "--out", str(tmp_path / "cli"), "--checkpoint",
                 "tiny-random", "--short-side", str(SHORT), "--export", ",".join(EXPORTS)]) == 0
    assert files(tmp_path / "cli") == set(names.values())

    app = SessionResult(ResultView(segmentation, tmp_path / "app", versioned=True))
    downloads = app.downloads(View(threshold=0.5))
    assert [path.name for path in downloads] == [names[kind] for kind in APP_EXPORTS]

    panel = ReferDinoPanel(predictor, output_dir=tmp_path / "panel")
    panel._set_result(segmentation)
    for button in panel.export_buttons.values():
        button.click()
    assert files(tmp_path / "panel" / "clip") == set(names.values())
    for name in ("scores.csv", "masks_rle.json"):  # the same result gives the same files
        app_file = next(path for path in downloads if path.name == name)
        assert (tmp_path / "panel" / "clip" / name).read_bytes() == app_file.read_bytes()
    capsys.readouterr()


def test_render_settings_are_checked_when_made():
    with pytest.raises(ConfigError, match="threshold"):
        RenderSettings(threshold=1.5)
    with pytest.raises(ConfigError, match="opacity"):
        RenderSettings(opacity=-0.1)
    assert RenderSettings("0.25").threshold == 0.25  # numeric text, as HTTP clients send it
