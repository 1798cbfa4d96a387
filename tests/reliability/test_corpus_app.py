"""The bad-input corpus against the app, through `gradio_client` like any API user: each bad input gives a
`gr.Error` with the same specific message as the Python API (markup escaped, files named without their folders),
leaves no files, and the next request of the same session works; valid-but-unusual inputs give results of the right
frame count and size, whose exports name the video without its folder. When the session ends, nothing it produced is
left on the server, and its uploads only in Gradio's cache, which deletes them by age (other users may share them)."""

import json
import re
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from .corpus import HUNDRED, MARKUP, SCRIPTS, THOUSAND_WORDS, VIDEO_ERRORS, VIDEO_SUCCESSES
from .harness import App, downloads, leftover_files, segment
from referdino_demo.io import probe_video
from referdino_demo.ui.config import AppConfig
from referdino_demo.ui.session import PredictorRegistry
from referdino_demo.preprocess.text import MAX_EXPRESSION_CHARS

CONFIG = AppConfig(default_checkpoint="tiny-random", max_frames=16, max_duration_s=6.0, max_upload_mb=2.0,
                   max_expressions=4, short_side=128)


@pytest.fixture(scope="module")
def app(gradio_dir):
    app = App(CONFIG, PredictorRegistry(), gradio_dir)
    yield app
    app.close()


def runs(app, client) -> list[Path]:
    folder = app.workspace.folder(client.session_hash)
    return sorted(folder.iterdir()) if folder.exists() else []


def assert_result(client, out, frames: int, size: tuple[int, int]):
    height, width = size
    assert f"**{frames} frames** ({width}×{height}" in out["info"]
    assert out["summary"]["num_frames"] == frames
    probe = probe_video(out["overlay"])
    assert probe.num_frames == frames and (probe.height, probe.width) == (height + height % 2, width + width % 2)
    assert Image.open(out["frame_overlay"]).size == (width, height)
    rle = json.loads(downloads(client)["masks_rle.json"].read_text(encoding="utf-8"))
    assert rle["info"]["num_frames"] == frames
    assert {tuple(a["segmentation"]["size"]) for a in rle["annotations"]} == {size}


ABSOLUTE_PATH = re.compile(r"(^|[\s'\"(=])/\w[^\s/'\"]*/")  # "/" + a folder + "/", not inside a word or URL


def assert_no_server_path(text: str):
    assert not ABSOLUTE_PATH.search(text) and tempfile.gettempdir() + "/" not in text, text


def refused(client, video, expressions, message: str) -> str:
    with pytest.raises(Exception, match=message) as error:
        segment(client, video, expressions)
    text = str(error.value)
    assert "Traceback" not in text and "Something went wrong" not in text
    assert_no_server_path(text)
    return text


@pytest.mark.parametrize("case", VIDEO_ERRORS, ids=[c.name for c in VIDEO_ERRORS])
def test_bad_video_gives_its_message_leaves_nothing_and_the_next_request_works(app, client, videos, case):
    before = runs(app, client)
    refused(client, videos[case.name], "the ball", case.message)
    assert runs(app, client) == before  # no folder for a refused request
    assert_result(client, segment(client, videos["small"], "the ball"), 2, (48, 64))


@pytest.mark.parametrize("case", VIDEO_SUCCESSES, ids=[c.name for c in VIDEO_SUCCESSES])
def test_unusual_but_valid_video_gives_results_at_its_size(client, videos, case):
    out = segment(client, videos[case.name], "the ball")
    assert_result(client, out, case.frames, case.size)
    assert_exports_name_files_only(client, out, videos[case.name].name)


def assert_exports_name_files_only(client, out, video_name: str):
    """The exports (RLE JSON, CSV, PNG zip with its info.json) and the summary name the video without its folder."""
    files = downloads(client)
    rle = json.loads(files["masks_rle.json"].read_text(encoding="utf-8"))
    assert rle["info"]["source"] == video_name
    texts = [files["masks_rle.json"].read_text(encoding="utf-8"), files["scores.csv"].read_text(encoding="utf-8"),
             out["info"]]
    with zipfile.ZipFile(files["masks.zip"]) as archive:
        texts += [archive.read(n).decode("utf-8") for n in archive.namelist() if n.endswith((".json", ".txt"))]
    for text in texts:
        assert_no_server_path(text)


@pytest.mark.parametrize("expressions, message", [
    ("", "no expression given"),
    (" \n\t \u3000 \n", "no expression given"),
    ("🐶🚗", "has no letters or digits"),
    ("the red\x00 ball \x1b[31m", r"control characters \(U\+0000, U\+001B\)"),
    ("\n".join(HUNDRED), "more than 4 expressions given; at most 4 per video"),
], ids=["empty", "whitespace", "emoji_only", "control_characters", "a_hundred"])
def test_bad_expressions_give_their_message(app, client, videos, expressions, message):
    before = runs(app, client)
    refused(client, videos["small"], expressions, message)
    assert runs(app, client) == before


def test_markup_in_an_error_message_is_escaped(client, videos):
    text = refused(client, videos["small"], "<>!", "has no letters or digits")
    assert "&lt;&gt;!" in text and "<>" not in text


def test_long_other_script_and_markup_expressions_succeed_and_are_shown_as_text(client, videos):
    out = segment(client, videos["small"], "\n".join([THOUSAND_WORDS, SCRIPTS, MARKUP]))
    assert_result(client, out, 2, (48, 64))
    assert [e["expression"] for e in out["summary"]["expressions"]] == [THOUSAND_WORDS[:MAX_EXPRESSION_CHARS],
                                                                        SCRIPTS, MARKUP]  # full texts
    assert "note: expression cut to 256 tokens" in out["info"]
    assert "красная машина" in out["info"] and "赤い車" in out["info"] and "🐶" in out["info"]
    assert "&lt;script&gt;" in out["info"] and "<script>" not in out["info"] and "<img" not in out["info"]


def test_when_the_session_ends_nothing_it_produced_is_left_and_its_uploads_are_gradios(app, client, gradio_dir):
    assert runs(app, client)  # this session has results on the server...
    uploads = [p for p in leftover_files(gradio_dir) if not p.is_relative_to(app.workspace.root)]
    assert any(p.suffix == ".mp4" for p in uploads)
    client.close()  # ...until it leaves: Gradio's heartbeat stops and the session's unload event runs
    deadline = time.monotonic() + 15
    while list(app.workspace.root.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(app.workspace.root.iterdir()) == []  # no file, no folder
    assert re.fullmatch(r"referdino-app-\w+", app.workspace.root.name) and app.workspace.root.parent == gradio_dir
    # Uploads may be shared with other sessions (same bytes, same name, same path): Gradio's cache cleanup
    # (delete_cache, by age) deletes them, never the end of one session.
    assert {str(p) for p in uploads} <= set(app.demo.upload_file_set) and app.demo.delete_cache
