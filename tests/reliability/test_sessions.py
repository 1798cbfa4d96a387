"""Sessions sharing files, and what the page tells about the server. Two users who upload the same bytes under the same
name share one upload path (Gradio's cache is keyed by content): a session that ends never deletes an upload, which
another session may have uploaded, be about to send, or be using; Gradio's cache cleanup (`delete_cache`) deletes
uploads by age. The page's config (`/config`) names files only: no upload, temporary, repository or checkpoint
folder."""

import re
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from referdino_demo.ui.config import AppConfig
from referdino_demo.ui.session import PredictorRegistry

from . import raw_api
from .corpus import SHORT_SIDE
from .harness import App, segment

REPO = Path(__file__).resolve().parents[2]


def wait_until(condition, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_session_that_ends_never_deletes_an_upload_another_session_needs(gradio_dir, videos, tmp_path):
    app = App(AppConfig(default_checkpoint="tiny-random", short_side=SHORT_SIDE, max_frames=8), PredictorRegistry(),
              gradio_dir)
    try:
        first, second = app.client(tmp_path / "first"), app.client(tmp_path / "second")
        segment(first, videos["small"], "the ball")  # uploads small.mp4 and uses it
        waiting = raw_api.upload(app.url, videos["small"])  # another user uploads the same file, not sent yet
        assert Path(waiting["path"]).is_file() and Path(waiting["path"]).name == "small.mp4"
        assert len([p for p in app.demo.upload_file_set if Path(p).name == "small.mp4"]) == 1  # one shared path

        first_folder = app.workspace.folder(first.session_hash)
        assert first_folder.is_dir()
        first.close()  # the first session ends: its results go (its unload event ran)...
        assert wait_until(lambda: not first_folder.exists())
        assert Path(waiting["path"]).is_file()  # ...the shared upload stays

        event, data = raw_api.call(app.url, "segment", raw_api.segment_data(waiting, max_frames=8), "waiting-user")
        assert event == "complete", data
        segment(second, videos["small"], "the box")  # one more user of it
        again = second.predict(threshold=0.3, opacity=0.5, expression="the box", candidate=1, frame=1,
                               api_name="/rerender")
        assert again[4]["view"]["expression"] == "the box"  # the summary, after the videos and frame images
        second.close()
        assert wait_until(lambda: not app.workspace.folder(second.session_hash).exists())
        assert Path(waiting["path"]).is_file()
        assert waiting["path"] in app.demo.upload_file_set  # Gradio's cache cleanup deletes it by age
        assert app.demo.delete_cache == (1800, 3600)
    finally:
        app.close()


@pytest.fixture(scope="module")
def app_with_files(gradio_dir, checkpoints, tmp_path_factory):
    """Examples, and local checkpoint files of the server in the menu."""
    config = AppConfig(default_checkpoint=str(checkpoints["truncated"]), short_side=SHORT_SIDE, max_frames=8,
                       extra_checkpoints=(str(checkpoints["mismatched_config"]), str(checkpoints["missing"])),
                       examples_dir=REPO / "examples", example_cache=tmp_path_factory.mktemp("example-cache"))
    app = App(config, PredictorRegistry(), gradio_dir)
    yield app
    app.close()


def absolute_paths(text: str, folders) -> list[str]:
    """The places in `text` where one of `folders` appears."""
    return [folder for folder in folders if re.search(re.escape(str(folder)) + r"(/|\b)", text)]


def server_folders(gradio_dir) -> list[str]:
    return [str(gradio_dir), str(REPO), tempfile.gettempdir() + "/", str(Path.home()) + "/"]


def test_the_page_config_names_files_only(app_with_files, gradio_dir, checkpoints):
    config = httpx.get(f"{app_with_files.url}config").text
    assert absolute_paths(config, server_folders(gradio_dir)) == []
    assert "red_ball.mp4" in config and "crossing.mp4" in config  # the examples, by name
    assert "local:truncated.pth" in config and "local:mismatched" in config  # the checkpoints, by name
    assert str(checkpoints["truncated"]) not in config


def test_clicking_an_example_loads_its_video_and_expressions(app_with_files):
    """The page's own call (the examples' event is private): the video comes back as a file the page can send,
    with the example's result (computed once, then kept in the example cache)."""
    app = app_with_files
    index = raw_api.fn_index(app.demo, "example")
    # example index, then the page's run settings: checkpoint, query_decay, num_candidates, threshold, opacity,
    # stride, max_frames, short_side, dtype, and the state
    raw_api.queue_join(app.url, index, [0, "tiny-random", 0.5, 5, 0.5, 0.5, 1, 8, SHORT_SIDE, "auto", None],
                       "example-click")
    message = raw_api.queue_result(app.url, "example-click")
    assert message["success"], message
    video, expressions = message["output"]["data"][:2]
    assert len(list(app.config.example_cache.glob("*.npz"))) == 1
    assert Path(video["path"]).read_bytes() == (REPO / "examples" / "red_ball.mp4").read_bytes()
    assert expressions == app.config.examples()[0][1]
    event, data = raw_api.call(app.url, "segment", raw_api.segment_data(
        {"path": video["path"], "meta": {"_type": "gradio.FileData"}}, "the red ball", max_frames=8,
        checkpoint="tiny-random"), "example-click")
    assert event == "complete", data


def test_messages_name_files_only(app_with_files, gradio_dir, videos):
    """Errors about server files name the file, never its folder (checkpoint errors: test_untrusted_files.py)."""
    app = app_with_files
    for name, expected in [("text_file", "notes.mp4"), ("empty_file", "empty.mp4")]:
        event, data = raw_api.call(app.url, "segment", raw_api.segment_data(
            raw_api.upload(app.url, videos[name]), checkpoint="tiny-random", max_frames=8), "names")
        assert event == "error" and expected in data["error"], data
        assert absolute_paths(data["error"], server_folders(gradio_dir)) == []
