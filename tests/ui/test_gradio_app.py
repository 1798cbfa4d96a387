"""The Gradio app, launched with the tiny random model and driven through `gradio_client` like an API user.

Clips are synthetic (written here). Model calls are counted with forward pre-hooks on the predictor's modules, so
the tests can tell a re-render from a re-run.
"""

import csv
import dataclasses
import html
import importlib.util
import json
import math
import pickle
import random
import re
import socket
import sys
import types
import zipfile
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from referdino_demo.errors import ConfigError, VideoReadError
from referdino_demo.examples import synthetic_clip
from referdino_demo.io import probe_video, write_video
from referdino_demo.io.video_reader import DecodeCounts, decode_counts
from referdino_demo.result_view import EFFECT_NAMES
from referdino_demo.ui.gradio_app import EFFECT_CHOICES, build_demo
from referdino_demo.ui.config import CONTROLS, AppConfig, RunOptions, check_number
from referdino_demo.ui.session import Backend, PredictorRegistry, View, gpu_seconds, message
from referdino_demo.ui.workspace import Workspace

from known_result import KNOWN_SIZE, PICKED, known_segmentation

REPO = Path(__file__).resolve().parents[2]
CONFIG = AppConfig(default_checkpoint="tiny-random", max_frames=16, max_duration_s=6.0, max_upload_mb=1.0,
                   max_expressions=4, short_side=128)
TWO = "the red ball\nthe blue square"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(demo, config: AppConfig) -> str:
    _, url, _ = demo.queue(default_concurrency_limit=2).launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
        max_file_size=config.max_upload_bytes)
    return url


@pytest.fixture(scope="module")
def registry():
    return PredictorRegistry()


@pytest.fixture(scope="module")
def model_calls(registry):
    """Names of the tiny model's parts that ran; tests clear it before the calls they check."""
    calls = []
    model = registry.get("tiny-random").model
    handles = [module.register_forward_pre_hook(lambda m, a, _n=name: calls.append(_n))
               for name, module in model.named_children()]
    yield calls
    for handle in handles:
        handle.remove()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    corrupt = folder / "corrupt.mp4"
    corrupt.write_text("this is not a video")
    big = folder / "big.mp4"
    big.write_bytes(np.random.default_rng(0).integers(0, 256, 3 * 2**20 // 2, dtype=np.uint8).tobytes())
    return {
        "clip": write_video(folder / "clip.mp4", synthetic_clip("red_ball", 12, (90, 160)), 12),  # 1 s
        "small": write_video(folder / "small.mp4", synthetic_clip("crossing", 4, (48, 80)), 12),
        "long": write_video(folder / "long.mp4", synthetic_clip("crossing", 96, (36, 64)), 12),  # 8 s > 6 s
        "many": write_video(folder / "many.mp4", synthetic_clip("red_ball", 24, (48, 80)), 12),  # > 16 frames
        "corrupt": corrupt,
        "big": big,  # 1.5 MB > 1 MB
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("sessions"))


@pytest.fixture(scope="module")
def app(registry, model_calls, workspace):
    demo = build_demo(CONFIG, registry, workspace)
    url = launch(demo, CONFIG)
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def session(app, tmp_path_factory):
    """One client (one browser session) that has segmented `clip` with two expressions."""
    return Client(app[1], verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture(scope="module")
def first(session, clips, model_calls):
    model_calls.clear()
    outputs = session.predict(video=handle_file(clips["clip"]), expressions=TWO, api_name="/segment")
    return named(outputs), list(model_calls)


SEGMENT_OUTPUTS = ("overlay", "heatmap", "frame_overlay", "frame_heatmap", "summary")  # /segment and /rerender


def named(values) -> dict:
    """/segment's or /rerender's outputs by name, with the summary's page text as "info"."""
    out = dict(zip(SEGMENT_OUTPUTS, values))
    return {**out, "info": out["summary"]["text"]}


def segment(client, video, expressions=TWO, **kwargs):
    video = None if video is None else handle_file(video)
    return named(client.predict(video=video, expressions=expressions, api_name="/segment", **kwargs))


def rerender(client, threshold=0.5, opacity=0.5, expression="the red ball", candidate=0, frame=0):
    return named(client.predict(threshold=threshold, opacity=opacity, expression=expression, candidate=candidate,
                                frame=frame, api_name="/rerender"))


def downloads(client, threshold=0.5, opacity=0.5, expression="the red ball") -> dict[str, Path]:
    """/downloads (what opening the Downloads tab calls): the export files by name."""
    files = client.predict(threshold=threshold, opacity=opacity, expression=expression, api_name="/downloads")
    return {Path(p).name: Path(p) for p in files}


def csv_rows(files: dict[str, Path]) -> list[dict]:
    with open(files["scores.csv"], newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def written(workspace, client, name: str) -> set[Path]:
    """The files `name` in the client's session folder (a new write is a new file: each goes in a fresh folder)."""
    return set(workspace.folder(client.session_hash).rglob(name))


def assert_playable(path, frames: int, size=(160, 90)):
    probe = probe_video(path)
    assert (probe.codec, probe.pix_fmt) == ("h264", "yuv420p")
    assert probe.num_frames == frames and (probe.width, probe.height) == size


# -- the API ----------------------------------------------------------------------------------------------
def test_only_the_documented_endpoints_are_public(session):
    api = session.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/segment", "/rerender", "/inspect_frame", "/downloads", "/effect"}
    assert not api["unnamed_endpoints"]
    names = [p["parameter_name"] for p in api["named_endpoints"]["/segment"]["parameters"]]
    assert names == ["video", "expressions", "checkpoint", "query_decay", "num_candidates", "threshold", "opacity",
                     "stride", "max_frames", "short_side", "dtype"]
    names = [p["parameter_name"] for p in api["named_endpoints"]["/effect"]["parameters"]]
    assert names == ["threshold", "expression", "frame", "effect", "target", "feather"]
    returns = {name: [r["label"] for r in api["named_endpoints"][name]["returns"]] for name in api["named_endpoints"]}
    assert returns == {"/segment": ["overlay_video", "heatmap_video", "frame_overlay", "frame_heatmap", "summary"],
                       "/rerender": ["overlay_video", "heatmap_video", "frame_overlay", "frame_heatmap", "summary"],
                       "/inspect_frame": ["frame_overlay", "frame_heatmap"], "/downloads": ["downloads"],
                       "/effect": ["effect_frame", "effect_video"]}


def test_segment_returns_playable_videos_plot_and_inspector_and_exports_on_request(first, session, workspace):
    out, calls = first
    assert "backbone" in calls and "mask_decoder" in calls  # the model ran
    assert_playable(out["overlay"], 12)
    assert_playable(out["heatmap"], 12)
    summary = out["summary"]  # plain data
    assert (summary["num_frames"], summary["width"], summary["height"], summary["untrained"]) == (12, 160, 90, True)
    assert summary["source"] == "clip.mp4" and summary["view"] == dict(threshold=0.5, opacity=0.5,
                                                                        expression="the red ball", frame=0)
    assert [e["expression"] for e in summary["expressions"]] == ["the red ball", "the blue square"]
    first_expression = summary["expressions"][0]
    assert len(first_expression["candidates"]) == 5 and first_expression["candidate"] == 0
    assert first_expression["query"] == first_expression["candidates"][0]["query"]
    assert Image.open(out["frame_overlay"]).size == (160, 90) and Image.open(out["frame_heatmap"]).size == (160, 90)
    assert "12 frames" in out["info"] and "UNTRAINED WEIGHTS" in out["info"]

    assert written(workspace, session, "masks.zip") == set()  # the exports wait for the Downloads tab
    files = downloads(session)
    assert set(files) == {"masks.zip", "masks_rle.json", "scores.csv", "overlay.mp4", "heatmap.mp4"}
    assert files["overlay.mp4"].read_bytes() == Path(out["overlay"]).read_bytes()  # the video shown, not redrawn
    with zipfile.ZipFile(files["masks.zip"]) as archive:
        pngs = [n for n in archive.namelist() if n.endswith(".png")]
        assert len(pngs) == 2 * 12
        assert Image.open(archive.open(pngs[0])).size == (160, 90)
    rle = json.loads(files["masks_rle.json"].read_text(encoding="utf-8"))
    assert rle["info"]["num_frames"] == 12 and rle["info"]["untrained"] is True
    assert len(rle["annotations"]) == 24 and {a["segmentation"]["size"][0] for a in rle["annotations"]} == {90}
    rows = csv_rows(files)
    assert len(rows) == 24 and {r["expression"] for r in rows} == {"the red ball", "the blue square"}


def test_rerender_changes_the_outputs_without_running_the_model_or_writing_exports(session, first, model_calls,
                                                                                    workspace):
    out, _ = first
    at_half = downloads(session)
    exports = written(workspace, session, "masks.zip")
    model_calls.clear()
    decoded = decode_counts()
    low = rerender(session, threshold=0.2)
    assert model_calls == [] and decode_counts() == decoded  # the frames decoded for the model were kept
    assert written(workspace, session, "masks.zip") == exports  # a redraw writes no export
    assert_playable(low["overlay"], 12)
    assert Path(low["overlay"]).read_bytes() != Path(out["overlay"]).read_bytes()
    at_low = downloads(session, threshold=0.2)
    area = [sum(float(r["mask_area_px"]) for r in csv_rows(files)) for files in (at_half, at_low)]
    assert area[1] > area[0]  # a lower threshold gives larger masks
    rle = json.loads(at_low["masks_rle.json"].read_text(encoding="utf-8"))
    assert rle["info"]["threshold"] == 0.2
    exports = written(workspace, session, "masks.zip")
    downloads(session, threshold=0.2)
    assert written(workspace, session, "masks.zip") == exports  # memoised: the same files, not written again

    # another candidate query for one expression: its scores change, the other expression's do not
    other = rerender(session, threshold=0.2, expression="the blue square", candidate=2, frame=3)
    assert model_calls == []
    assert other["summary"]["expressions"][1]["candidate"] == 2
    assert other["summary"]["expressions"][1]["query"] == other["summary"]["expressions"][1]["candidates"][2]["query"]
    before, after = csv_rows(at_low), csv_rows(downloads(session, threshold=0.2, expression="the blue square"))
    for expression, changed in (("the blue square", True), ("the red ball", False)):
        scores = [[r["score"] for r in rows if r["expression"] == expression] for rows in (before, after)]
        assert (scores[0] != scores[1]) is changed
    assert "| the blue square |" in other["info"]

    frame = session.predict(frame=5, threshold=0.5, opacity=0.8, expression="the red ball", api_name="/inspect_frame")
    assert model_calls == []
    assert all(Image.open(path).size == (160, 90) for path in frame)
    assert Path(frame[0]).read_bytes() != Path(other["frame_overlay"]).read_bytes()


def test_the_effect_endpoint_draws_the_frame_and_the_video_without_the_model(session, first, model_calls):
    model_calls.clear()
    frame, video = session.predict(threshold=0.5, expression="the red ball", frame=3, effect="cutout",
                                   target="background", feather=2, api_name="/effect")
    assert Image.open(frame).mode == "RGBA" and Image.open(frame).size == (160, 90)
    assert Path(video).name == "cutout.webm" and video_frames(video) == 12
    frame, video = session.predict(effect="spotlight", api_name="/effect")  # the defaults for the rest
    assert Image.open(frame).mode == "RGB"
    assert_playable(video, 12)
    assert model_calls == []
    with pytest.raises(Exception, match=r"Effect \(effect\) must be one of 'blur', .*got 'sparkle'"):
        session.predict(effect="sparkle", api_name="/effect")


def test_long_video_is_subsampled_to_the_frame_budget_and_the_user_told(app, clips, tmp_path):
    client = Client(app[1], verbose=False, download_files=str(tmp_path))
    out = segment(client, clips["many"], "the red ball")
    assert_playable(out["overlay"], 16, size=(80, 48))
    assert "subsampled from 24 to 16 frames" in out["info"]
    assert out["summary"]["num_frames"] == 15 + 1


def test_markup_in_expressions_is_shown_as_text(app, clips, tmp_path):
    client = Client(app[1], verbose=False, download_files=str(tmp_path))
    text = "<b>bold</b> ball <img src=x onerror=alert(1)>"
    out = segment(client, clips["small"], text)
    assert "&lt;b&gt;bold&lt;/b&gt;" in out["info"] and "<b>" not in out["info"] and "<img" not in out["info"]
    assert out["summary"]["expressions"][0]["expression"] == text  # the full text, as data


BAD_INPUTS = [  # (case, video key or None, expressions, expected message)
    ("no video", None, "the ball", "No video given"),
    ("unreadable file", "corrupt", "the ball", "Cannot open"),
    ("empty expression", "small", " \n \t ", "no expression given"),
    ("punctuation only", "small", "...", "no letters or digits"),
    ("too many expressions", "small", "\n".join(f"object {i}" for i in range(5)), "at most 4"),
    ("too long", "long", "the car", "over the limit of 6 s"),
]


@pytest.mark.parametrize("case, video, expressions, expected", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_a_clear_error_and_the_next_request_works(app, clips, tmp_path, case, video, expressions,
                                                                   expected):
    client = Client(app[1], verbose=False, download_files=str(tmp_path))
    with pytest.raises(Exception, match=expected) as error:
        segment(client, None if video is None else clips[video], expressions)
    assert "Traceback" not in str(error.value)
    out = segment(client, clips["small"], "the yellow car")
    assert_playable(out["overlay"], 4, size=(80, 48))


def test_upload_over_the_limit_is_refused(app, clips, tmp_path):
    client = Client(app[1], verbose=False, download_files=str(tmp_path))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        segment(client, clips["big"])
    with open(clips["big"], "rb") as file:  # the server refuses it too, whatever the client does
        response = httpx.post(f"{app[1]}gradio_api/upload", files={"files": ("big.mp4", file, "video/mp4")})
    assert response.status_code == 413
    out = segment(client, clips["small"], "the yellow car")
    assert_playable(out["overlay"], 4, size=(80, 48))


def test_rerender_before_any_result_says_what_to_do(app, tmp_path):
    client = Client(app[1], verbose=False, download_files=str(tmp_path))
    with pytest.raises(Exception, match="No result yet"):
        rerender(client, expression=None, candidate=None)
    with pytest.raises(Exception, match="No result yet"):
        client.predict(frame=0, threshold=0.5, opacity=0.5, expression=None, api_name="/inspect_frame")
    with pytest.raises(Exception, match="No result yet"):  # with the defaults, as the API page shows the call
        client.predict(api_name="/inspect_frame")
    with pytest.raises(Exception, match="No result yet"):
        client.predict(api_name="/downloads")
    with pytest.raises(Exception, match="No result yet"):
        client.predict(api_name="/effect")


def test_session_files_are_removed_when_the_session_ends(app, clips, workspace, tmp_path):
    demo, url = app
    client = Client(url, verbose=False, download_files=str(tmp_path))
    segment(client, clips["small"], "the yellow car")
    folder = workspace.root / client.session_hash
    runs = list(folder.iterdir())
    assert len(runs) == 1 and any(runs[0].rglob("overlay.mp4"))
    segment(client, clips["small"], "the green truck")  # a new result replaces the old one and its files
    assert not runs[0].exists() and len(list(folder.iterdir())) == 1
    demo.state_holder.delete_state(client.session_hash)  # what Gradio does when a session closes
    assert list(folder.iterdir()) == []


def test_offline_without_weights_the_app_says_what_to_do_and_offers_tiny_random(registry, clips, tmp_path,
                                                                               monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no download attempt, whatever the network
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    config = AppConfig(default_checkpoint="liangtm/referdino/ryt_mevis_swinb.pth", short_side=128)
    demo = build_demo(config, registry)
    try:
        client = Client(launch(demo, config), verbose=False, download_files=str(tmp_path))
        with pytest.raises(Exception) as error:
            segment(client, clips["small"], "the yellow car")
        text = str(error.value)
        assert "https://huggingface.co/liangtm/referdino/resolve/main/ryt_mevis_swinb.pth" in text
        assert "--checkpoint" in text and "tiny-random" in text
        assert text.count("without the weights") == 1  # the app's advice replaces the package's, not repeated
        out = segment(client, clips["small"], "the yellow car", checkpoint="tiny-random")
        assert_playable(out["overlay"], 4, size=(80, 48))
    finally:
        demo.close()


def test_a_result_whose_video_was_cleaned_up_draws_from_memory_or_asks_for_a_new_upload(registry, clips, workspace,
                                                                                         tmp_path):
    video = tmp_path / "upload.mp4"
    video.write_bytes(clips["small"].read_bytes())
    options = RunOptions("tiny-random", short_side=128)
    kept = Backend(CONFIG, registry, workspace).segment(str(video), "the car", options)
    not_kept = Backend(dataclasses.replace(CONFIG, frame_cache_mb=0), registry, workspace).segment(
        str(video), "the car", options)
    video.unlink()  # Gradio's cache cleanup removed the upload
    assert_playable(kept.render(View(threshold=0.3)).overlay_video, 4, size=(80, 48))  # its frames are in memory
    with pytest.raises(VideoReadError, match="upload it again"):
        not_kept.render(View(threshold=0.3))


def test_one_segment_decodes_its_video_once_and_redrawing_or_downloads_not_at_all(registry, clips, workspace):
    backend = Backend(CONFIG, registry, workspace)
    before = decode_counts()
    result, _ = backend.segment_and_render(str(clips["clip"]), TWO, RunOptions("tiny-random", short_side=128), View())
    assert decode_counts() - before == DecodeCounts(opens=2, passes=1, frames=12)  # the checks' scan, one decode
    before = decode_counts()
    result.choose("the blue square", 1)
    result.render(View(threshold=0.3, opacity=0.8, expression="the blue square", frame=5))
    assert len(result.downloads(View(threshold=0.3))) == 5
    assert decode_counts() == before


# -- option checks and server paths ------------------------------------------------------------------------------
def test_every_slider_offers_the_range_its_handler_accepts(registry, workspace):
    sliders = {block.label: block for block in build_demo(CONFIG, registry, workspace).blocks.values()
               if isinstance(block, gr.Slider)}
    for name, control in CONTROLS.items():
        if control.label not in sliders:
            continue
        slider, high = sliders[control.label], control.high or CONFIG.max_frames
        if name == "frame":
            continue  # its top is set by each result
        assert check_number(name, slider.minimum, high) == slider.minimum
        assert check_number(name, slider.maximum, high) == slider.maximum == high
        assert check_number(name, slider.value, high) == slider.value
    assert {"Mask threshold", "Max frames", "Pruning keep ratio (query_decay)"} <= set(sliders)


def test_the_app_accepts_no_value_the_package_refuses():
    """The app's ranges (what its sliders offer) lie within the package's option table (`options.OPTIONS`)."""
    from referdino_demo.options import OPTIONS, check_option

    shared = set(CONTROLS) & set(OPTIONS)
    assert {"query_decay", "num_candidates", "threshold", "opacity", "stride", "max_frames", "short_side"} <= shared
    for name in shared:
        control, high = CONTROLS[name], CONTROLS[name].high or CONFIG.max_frames
        low = control.low + (control.step if control.low_open else 0)
        for value in (low, high, (low + high) / 2 if control.kind is float else (low + high) // 2):
            assert check_option(name, value) == check_number(name, value, high)


def test_check_number_accepts_its_range_and_names_option_value_and_range_otherwise():
    rng = random.Random(0)
    for name, control in CONTROLS.items():
        high = control.high if control.high is not None else 7
        span = high - control.low
        for _ in range(200):
            value = control.low + span * rng.uniform(-0.5, 1.5)
            value = round(value) if control.kind is int and rng.random() < 0.7 else value
            inside = (value > control.low if control.low_open else value >= control.low) and value <= high
            inside = inside and (control.kind is float or float(value).is_integer())
            for sent in (value, str(value)):  # HTTP clients may send numbers as text
                if inside:
                    assert check_number(name, sent, high) == pytest.approx(value)
                else:
                    expected = rf"\({name}\) must be .*{high:g}, got {re.escape(repr(sent))}"
                    with pytest.raises(ConfigError, match=expected):
                        check_number(name, sent, high)
        for bad in (math.nan, math.inf, None, "", "x", True, [], {}):
            with pytest.raises(ConfigError, match=rf"\({name}\) must be"):
                check_number(name, bad, high)


@pytest.mark.parametrize("text, shown", [
    ("Cannot open /tmp/gradio/4f2a/my clip.mp4 as a video", "Cannot open my clip.mp4 as a video"),
    ("'/root/.cache/huggingface/hub/x.pth' cannot be read", "'x.pth' cannot be read"),
    ("http://127.0.0.1:7860/gradio_api/file=/tmp/g/a/overlay.mp4", "http://127.0.0.1:7860/gradio_api/file=overlay.mp4"),
    ("see https://huggingface.co/liangtm/referdino/resolve/main/x.pth", None),  # a URL stays whole
    ("30000/1001 fps, 3 MB/s, and/or ~/.cache/x, <b>bold</b>", None),  # not paths
    ("the folder /home/u/My Videos/clip.mp4", "the folder My Videos/clip.mp4"),  # no absolute path left
])
def test_messages_show_file_names_never_server_folders(text, shown):
    assert message(text) == html.escape(shown or text, quote=False)


# -- ZeroGPU ---------------------------------------------------------------------------------------------------
def test_with_spaces_installed_the_model_call_runs_under_spaces_gpu_with_a_duration_from_the_frame_count(
        registry, clips, workspace, monkeypatch):
    seen = {}

    def gpu(duration):
        def wrap(function):
            def run(*args):
                seen["duration"] = duration(*args)
                pickle.dumps(args)  # ZeroGPU sends the arguments to a GPU worker process...
                result = function(*args)
                seen["result"] = len(pickle.dumps(result))  # ...and the result back
                return result
            return run
        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    backend = Backend(CONFIG, registry, workspace)
    result = backend.segment(str(clips["many"]), "the red ball\nthe blue square",
                             RunOptions("tiny-random", short_side=128), session="zerogpu")
    assert seen["duration"] == gpu_seconds(16, 2) and seen["result"] > 0  # 24 frames cut to the budget of 16
    assert result.segmentation.num_frames == 16
    decoded = decode_counts()
    assert result.render(View()).overlay_video.is_file()
    assert (decode_counts() - decoded).passes == 1  # the model ran elsewhere: its frames are decoded here once...
    decoded = decode_counts()
    assert result.render(View(threshold=0.3)).heatmap_video.is_file()
    assert decode_counts() == decoded  # ...and kept


# -- app.py ------------------------------------------------------------------------------------------------
def test_app_entry_point_reads_flags_and_environment_and_loads_nothing_on_import(monkeypatch):
    spec = importlib.util.spec_from_file_location("referdino_app", REPO / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)  # would block here if importing launched the server
    monkeypatch.setenv("REFERDINO_CHECKPOINT", "/models/ryt_swinb.pth")
    monkeypatch.setenv("REFERDINO_MAX_FRAMES", "40")
    monkeypatch.setenv("REFERDINO_FRAME_CACHE_MB", "12.5")
    config = app.make_config(app.parse_args([]))
    assert config.default_checkpoint == "/models/ryt_swinb.pth" and config.max_frames == 40
    assert config.frame_cache_mb == 12.5 and app.make_config(app.parse_args(["--frame-cache-mb", "0"])).frame_cache_mb == 0
    assert ("ryt_swinb.pth (local file)", "local:ryt_swinb.pth") in config.checkpoint_choices()  # no server path
    assert config.checkpoint_for("local:ryt_swinb.pth") == "/models/ryt_swinb.pth"
    assert config.checkpoint_choice("/models/ryt_swinb.pth") == "local:ryt_swinb.pth"
    with pytest.raises(ConfigError, match=r"Checkpoint \(checkpoint\) must be one of .*got '/models/ryt_swinb.pth'"):
        config.checkpoint_for("/models/ryt_swinb.pth")  # the menu's values only: no path a client makes up
    assert len(config.examples()) == 2 and all(Path(video).is_file() for video, _ in config.examples())
    dev = app.make_config(app.parse_args(["--random-weights", "--checkpoint", "ryt_swinb.pth", "--concurrency", "3"]))
    assert dev.default_checkpoint == "tiny-random" and dev.concurrency == 3
    assert {"tiny-random", "liangtm/referdino/ryt_swinb.pth"} <= {value for _, value in dev.checkpoint_choices()}
    assert not hasattr(app, "demo")  # nothing built or loaded at import; `python app.py` does that


def test_non_strict_reaches_the_loader_only_when_asked(monkeypatch):
    spec = importlib.util.spec_from_file_location("referdino_app", REPO / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    seen = []

    def loader(name, **options):
        seen.append(options)
        return object()

    PredictorRegistry(loader=loader)._load("a.pth")
    PredictorRegistry(loader=loader, strict=False)._load("a.pth")
    assert seen == [{"device": None, "vocab": None}, {"device": None, "vocab": None, "strict": False}]
    assert app.parse_args(["--non-strict"]).non_strict and not app.parse_args([]).non_strict
    monkeypatch.setenv("REFERDINO_NON_STRICT", "1")
    assert app.parse_args([]).non_strict


def test_a_non_strict_app_keeps_its_example_results_apart(tmp_path):
    config = dataclasses.replace(CONFIG, examples_dir=tmp_path / "examples", example_cache=tmp_path / "cache")
    config.examples_dir.mkdir()
    video = write_video(config.examples_dir / "red_ball.mp4", synthetic_clip("red_ball", 4, KNOWN_SIZE), 8)
    options = RunOptions("tiny-random", short_side=config.short_side)
    paths = []
    for strict in (True, False, True):
        backend = Backend(config, PredictorRegistry(strict=strict), Workspace(tmp_path / "prepare"))
        expressions, selection, _ = backend.prepare(str(video), "the red ball", options)
        paths.append(backend.examples.path("tiny-random", str(video), expressions,
                                           backend._cache_key(options, selection)))
    assert paths[0] == paths[2] != paths[1]


# -- picking a candidate by clicking the frame ---------------------------------------------------------------------
def known_example(folder: Path, config: AppConfig, registry) -> Path:
    """Write a 64x96 red_ball clip into `config.examples_dir` and `known_segmentation` into the example cache under
    the key a click on that example with the page's default settings looks up; returns the clip."""
    from referdino_demo.result_files import save_segmentation

    video = write_video(Path(config.examples_dir) / "red_ball.mp4", synthetic_clip("red_ball", 4, KNOWN_SIZE), 8)
    options = RunOptions(config.checkpoint_for(config.checkpoint_choice(config.default_checkpoint)),
                         query_decay=CONTROLS["query_decay"].default,
                         num_candidates=int(CONTROLS["num_candidates"].default), max_frames=config.max_frames,
                         short_side=config.short_side)
    backend = Backend(config, registry, Workspace(folder / "prepare"))
    expressions, selection, _ = backend.prepare(str(video), config.examples()[0][1], options)
    config.example_cache.mkdir(parents=True, exist_ok=True)
    save_segmentation(known_segmentation(), backend.examples.path(options.checkpoint, str(video), expressions,
                                                                  backend._cache_key(options, selection)))
    return video


@pytest.fixture
def known(registry, tmp_path, monkeypatch):
    """The page's handlers on an app whose example has `known_segmentation` in its cache, after a click on that
    example with the page's default settings: `handlers`, `video` (the example clip), `run` (the run settings), `out`
    (the click's outputs), `state` (the result) and `toasts` (what the handlers showed, as (kind, text))."""
    from referdino_demo.ui.gradio_app import _Handlers

    config = dataclasses.replace(CONFIG, examples_dir=tmp_path / "examples", example_cache=tmp_path / "cache")
    config.examples_dir.mkdir()
    video = known_example(tmp_path, config, registry)
    handlers = _Handlers(Backend(config, registry, Workspace(tmp_path / "sessions")))
    toasts = []
    monkeypatch.setattr(gr, "Info", lambda text, *a, **k: toasts.append(("info", text)))
    monkeypatch.setattr(gr, "Warning", lambda text, *a, **k: toasts.append(("warning", text)))
    checkpoint = config.checkpoint_choice(config.default_checkpoint)
    run = dict(checkpoint=checkpoint, query_decay=CONTROLS["query_decay"].default,
               num_candidates=CONTROLS["num_candidates"].default, stride=1, max_frames=config.max_frames,
               short_side=config.short_side, dtype="auto")
    out = handlers.example(0, run["checkpoint"], run["query_decay"], run["num_candidates"], 0.5, 0.5, run["stride"],
                           run["max_frames"], run["short_side"], run["dtype"], None, None, None)
    return types.SimpleNamespace(handlers=handlers, video=video, run=run, out=out, state=out[2], toasts=toasts)


def test_clicking_the_frame_picks_the_candidate_under_it_and_undo_takes_it_back(known, tmp_path):
    from referdino_demo.ui.gradio_app import STALE

    handlers, video, run, out, state, toasts = (known.handlers, known.video, known.run, known.out, known.state,
                                                known.toasts)
    assert toasts == []
    first_overlay = np.asarray(Image.open(out[7]))
    assert state.segmentation.checkpoint == "hand-made"  # the hand-made result, from the example cache
    assert first_overlay.shape[:2] == KNOWN_SIZE  # the image's pixels are the frame's: a click's index needs no scaling
    assert state.view.choice(PICKED) == 0

    # filling in the example's clip (Gradio's copy of it) and expressions is not a change; a real change is
    copy = tmp_path / "gradio" / "red_ball.mp4"
    copy.parent.mkdir()
    copy.write_bytes(video.read_bytes())
    other = write_video(tmp_path / "gradio" / "other.mp4", synthetic_clip("crossing", 4, KNOWN_SIZE), 8)

    def stale(**changes):
        inputs = {"state": state, "video": {"path": str(copy)}, "expressions": out[1], **run, **changes}
        return handlers.mark_stale(**inputs)

    assert stale() == ""
    assert stale(expressions="the red ball") == STALE
    assert stale(num_candidates=3) == STALE and stale(num_candidates=3.0) == STALE
    assert stale(video=None) == STALE and stale(video={"path": str(other)}) == STALE
    assert stale(max_frames=-1) == STALE  # a value no run accepts
    assert stale(state=None) == ""  # no result: nothing to be stale

    def click(x, y):
        return handlers.pick(state, 0.5, 0.5, PICKED, 1, gr.SelectData(None, {"index": [x, y], "value": None}))

    view = (state, 0.5, 0.5, PICKED, 1)

    def frame_overlay():
        return np.asarray(Image.open(handlers.inspect_frame(state, 1, 0.5, 0.5, PICKED)[0]))

    before = frame_overlay()
    picked = click(72, 12)  # the top-right quarter: candidate 1's mask
    assert state.view.choice(PICKED) == 1 and state.view.choice("the blue square") == 0
    assert picked[3]["value"] == 1 and [rank for _, rank in picked[3]["choices"]] == [0, 1]
    assert toasts[-1][0] == "info" and "only candidate 1 covers (72, 12) in frame 1" in toasts[-1][1]
    assert "showing it instead of candidate 0" in toasts[-1][1]
    picked_overlay = np.asarray(Image.open(picked[4]))
    assert not np.array_equal(picked_overlay, before)
    assert (picked_overlay[:32, 48:] != before[:32, 48:]).any()  # the mask moved to the top-right quarter
    assert (picked_overlay[:32, :48] != before[:32, :48]).any()
    assert picked[0] != out[3] and picked[6] == state.summary()  # the video was redrawn, the summary is the new one

    toasts.clear()
    assert click(20, 50) == tuple(gr.skip() for _ in range(7))  # the bottom half: no candidate covers it
    assert toasts[0][0] == "warning" and "no kept candidate" in toasts[0][1] and "(20, 50)" in toasts[0][1]
    assert state.view.choice(PICKED) == 1  # unchanged

    undone = handlers.undo(*view)
    assert state.view.choice(PICKED) == 0 and undone[3]["value"] == 0
    assert np.array_equal(np.asarray(Image.open(undone[4])), before)
    toasts.clear()
    assert handlers.undo(*view) == tuple(gr.skip() for _ in range(7))
    assert toasts == [("info", "Nothing to undo: no candidate was picked or chosen since this result was made.")]
    assert handlers.undo(None, 0.5, 0.5, PICKED, 0) == tuple(gr.skip() for _ in range(7))  # no result yet
    assert "No result yet" in toasts[-1][1]


# -- effects -------------------------------------------------------------------------------------------------------
def image(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def video_frames(path) -> int:
    """The number of frames PyAV decodes from `path`."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_effects_draw_the_known_mask_on_the_frame_and_the_video_without_the_model(known, model_calls):
    """The preview follows each effect's rule on the known mask (candidate 0 of `PICKED`: the top-left quarter), the
    video has one frame per processed frame, the cut-out's alpha is the mask, and nothing runs the model."""
    from tests.io.test_alpha_video import decode_rgba

    handlers, state = known.handlers, known.state
    assert [name for _, name in EFFECT_CHOICES] == list(EFFECT_NAMES)  # the menu offers every effect
    assert known.out[11]["choices"] == known.out[10]["choices"] and known.out[11]["value"] == PICKED  # the menus
    model_calls.clear()
    decoded = decode_counts()
    frame, mask = state.view.frame(1), state.view.segmentation[PICKED].mask(1, 0.5)
    assert mask[:28, :44].all() and not mask[36:].any() and not mask[:, 52:].any()  # the top-left quarter

    def preview(effect, target="background", feather=0, expression=PICKED, threshold=0.5):
        """Opening the Effects tab at frame 1: (preview pixels, the video it shows)."""
        path, video, is_open = handlers.effects(state, threshold, expression, 1, effect, target, feather)
        assert is_open
        return image(path), video

    green = np.array([0, 255, 0], np.uint8)
    filled, video = preview("fill")
    assert video is None  # no video rendered yet
    assert filled.shape == (*KNOWN_SIZE, 3)
    assert (filled[mask] == frame[mask]).all() and (filled[~mask] == green).all()  # the background filled
    filled, _ = preview("fill", "object")
    assert (filled[mask] == green).all() and (filled[~mask] == frame[~mask]).all()
    softened, _ = preview("fill", feather=8)
    assert (softened[:20, :36] == frame[:20, :36]).all() and (softened[44:] == green).all()
    assert (np.diff(softened[20, 43:53, 0].astype(int)) < 0).all()  # across the right edge, the red fades out
    spotlit, _ = preview("spotlight", "object")  # the spotlight has no target: the object always stays lit
    assert (spotlit[:28, :44] == frame[:28, :44]).all()
    assert np.abs(spotlit[36:] - np.round(frame[36:] * 0.4)).max() <= 1  # darkened by dim 0.6

    cut, _ = preview("cutout")
    assert cut.shape == (*KNOWN_SIZE, 4)  # RGBA
    assert (cut[..., 3] == np.where(mask, 255, 0)).all() and (cut[mask][:, :3] == frame[mask]).all()
    assert known.toasts == []

    blur_frame, blur_video = handlers.effect_api(state, 0.5, PICKED, 1, "blur", "background", 0)
    assert (image(blur_frame)[mask] == frame[mask]).all() and (image(blur_frame)[~mask] != frame[~mask]).any()
    assert_playable(blur_video, 4, size=KNOWN_SIZE[::-1])
    assert video_frames(blur_video) == 4
    cut_frame, cut_video = handlers.effect_api(state, 0.5, PICKED, 1, "cutout", "background", 0)
    assert Path(cut_video).name == "cutout.webm" and video_frames(cut_video) == 4
    alpha = decode_rgba(cut_video)[..., 3].astype(int)  # (T, H, W): VP9 is lossy, the edge a little soft
    assert alpha.shape == (4, *KNOWN_SIZE)
    assert (alpha[:, :28, :44] >= 240).all() and (alpha[:, 36:] <= 15).all() and (alpha[:, :, 52:] <= 15).all()
    assert model_calls == [] and decode_counts() == decoded  # the frames kept in memory, the model not run


def test_the_effects_tab_keeps_a_video_while_it_matches_and_draws_only_while_open(known, model_calls):
    handlers, state = known.handlers, known.state
    folder = state.view.folder
    model_calls.clear()
    inputs = [state, 0.5, PICKED, 1, "fill", "background", 0]

    def shown(*changes):
        """The preview and the video the open tab shows with `changes` made to `inputs`."""
        return handlers.effects(*[*changes, *inputs[len(changes):]])[:2]

    first, _ = shown()
    pixels, video = image(first), handlers.render_effect(*inputs)
    assert Path(video).name == "effect_fill.mp4"
    assert shown() == (first, video)  # the same picture is the same file; the video still matches
    assert shown(state, 0.3)[1] is None  # another threshold: that video no longer shows it
    assert shown(state, 0.5, "the blue square")[1] is None
    assert shown(*inputs[:4], "blur")[1] is None and shown(*inputs[:6], 2)[1] is None
    assert shown()[1] == video and np.array_equal(image(shown()[0]), pixels)
    assert handlers.render_effect(*inputs) == video  # drawn once: not encoded again

    state.choose(PICKED, 1)  # the candidate covering the top-right quarter instead
    picked, after = shown()
    assert after is None
    filled, frame = image(picked), state.view.frame(1)
    assert (filled[:28, :44] == [0, 255, 0]).all() and (filled[:28, 52:] == frame[:28, 52:]).all()
    state.undo()
    assert shown()[1] == video

    # with the tab closed, a redraw or a change of the effect draws nothing
    files = sorted(folder.rglob("*"))
    assert handlers.refresh_effect(*inputs[:4], "pixelate", "object", 3, False) == (gr.skip(), gr.skip())
    assert sorted(folder.rglob("*")) == files
    refreshed = handlers.refresh_effect(*inputs[:4], "pixelate", "object", 3, True)
    assert refreshed[1] is None and image(refreshed[0]).shape == (*KNOWN_SIZE, 3)
    assert known.toasts == [] and model_calls == []


# (case, {index in [state, threshold, expression, frame, effect, target, feather]: value sent instead}, message)
EFFECT_REFUSALS = [
    ("unknown effect", {4: "sparkle"}, "Effect (effect) must be one of 'blur', 'pixelate', 'fill', 'desaturate', "
                                       "'spotlight', 'cutout', got 'sparkle'"),
    ("negative feather", {6: -1}, "Soft edge in pixels (feather) must be a number from 0 to 32, got -1"),
    ("feather as text", {6: "wide"}, "(feather) must be a number from 0 to 32, got 'wide'"),
    ("unknown target", {5: "sky"}, "Apply to (target) must be one of 'background', 'object', got 'sky'"),
    ("unknown expression", {2: "the cat"}, "Expression (expression) must be one of"),
    ("frame out of range", {3: 4}, "Frame (frame) must be a whole number from 0 to 3, got 4"),
    ("no result yet", {0: None}, "No result yet"),
]


@pytest.mark.parametrize("case, changes, expected", EFFECT_REFUSALS, ids=[c[0] for c in EFFECT_REFUSALS])
def test_a_refused_effect_input_warns_and_keeps_the_result(known, case, changes, expected):
    handlers, state, toasts = known.handlers, known.state, known.toasts
    inputs = [state, 0.5, PICKED, 1, "spotlight", "background", 4]
    before = handlers.effects(*inputs)
    video = handlers.render_effect(*inputs)
    bad = [changes.get(index, value) for index, value in enumerate(inputs)]
    assert handlers.render_effect(*bad) == gr.skip()  # the page: a warning, the video left as it was
    assert len(toasts) == 1 and toasts[0][0] == "warning" and expected in toasts[0][1]
    if bad[0] is None:
        assert handlers.effects(*bad) == (None, None, True)  # opening the tab before a result says nothing
    else:
        assert handlers.effects(*bad) == (gr.skip(),) * 3 and len(toasts) == 2
    with pytest.raises(gr.Error) as error:  # the API: an error
        handlers.effect_api(*bad)
    assert expected in error.value.message
    assert handlers.effects(*inputs) == (before[0], video, True)  # the result is as it was
    assert handlers.render_effect(*inputs) == video and state.view.choice(PICKED) == 0
