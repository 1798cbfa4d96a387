"""The app in a real browser: Playwright (sync API) driving Debian's Chromium against the launched app with the
tiny random model. Checks what only a browser can: the result video decodes (videoWidth > 0), the slider
redraws, the Downloads tab writes its files when opened, the Effects tab's videos play and the cut-out's alpha
reaches the page, errors reach the page, markup in expressions stays text, and the page looks right (a 1280x900
screenshot is saved in the test's temporary folder; with REFERDINO_UPDATE_SCREENSHOT=1 it replaces
`docs/screenshot.png`, the README's picture).

Needs `apt-get install chromium` (Playwright's own browser download is not used).
"""

import os
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright

from referdino_demo.ui.gradio_app import build_demo
from referdino_demo.ui.config import CONTROLS, AppConfig, RunOptions
from referdino_demo.ui.session import Backend, PredictorRegistry
from referdino_demo.ui.workspace import Workspace

from known_result import KNOWN_SIZE, PICKED, known_segmentation

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "examples" / "red_ball.mp4"  # 24 frames, 320x180
DOCS_SCREENSHOT = REPO / "docs" / "screenshot.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
TIMEOUT_MS = 90_000
expect.set_options(timeout=TIMEOUT_MS)  # a CPU run of the tiny model takes seconds, not milliseconds
VIDEO_READY = """async (selector) => {
    const video = document.querySelector(selector);
    if (video.readyState < 2) {
        await new Promise((resolve, reject) => {
            video.addEventListener("loadeddata", resolve, {once: true});
            video.addEventListener("error", () => reject(new Error("video error " + video.error?.code)), {once: true});
        });
    }
    return {width: video.videoWidth, height: video.videoHeight, duration: video.duration};
}"""


FIRST_FRAME = """async (selector) => {
    const video = document.querySelector(selector);
    video.pause();
    if (video.currentTime !== 0) {
        const seeked = new Promise((resolve) => video.addEventListener("seeked", resolve, {once: true}));
        video.currentTime = 0;
        await seeked;
    }
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}"""


# The alpha of each pixel of an image or a (paused) video as Chromium draws it on a canvas, row by row
ALPHA = """(selector) => {
    const element = document.querySelector(selector);
    const canvas = document.createElement("canvas");
    canvas.width = element.videoWidth || element.naturalWidth;
    canvas.height = element.videoHeight || element.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(element, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    return {width: canvas.width, alpha: Array.from(pixels.filter((_, i) => i % 4 === 3))};
}"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed; the browser tests need it: apt-get install chromium")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("sessions"))


@pytest.fixture(scope="module")
def registry():
    return PredictorRegistry()


@pytest.fixture(scope="module")
def model_runs(registry):
    """Forward calls of the tiny model's backbone (one per chunk of a run)."""
    runs = []
    registry.get("tiny-random").model.backbone.register_forward_pre_hook(lambda *_: runs.append(1))
    return runs


@pytest.fixture(scope="module")
def url(workspace, registry, model_runs, tmp_path_factory):
    config = AppConfig(default_checkpoint="tiny-random", short_side=128, examples_dir=REPO / "examples",
                       example_cache=tmp_path_factory.mktemp("example-cache"))
    # the examples' results computed before the page opens, with the page's default settings (what app.py's
    # start-up thread does)
    Backend(config, registry, Workspace(tmp_path_factory.mktemp("warm"))).warm_examples(RunOptions(
        "tiny-random", query_decay=CONTROLS["query_decay"].default, max_frames=config.max_frames, short_side=128))
    assert len(list(config.example_cache.glob("*.npz"))) == 2
    demo = build_demo(config, registry, workspace)
    _, address, _ = demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                                        quiet=True, max_file_size=config.max_upload_bytes)
    yield address
    demo.close()


@pytest.fixture(scope="module")
def page(url):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        yield page
        browser.close()


def segment(page, expressions: str, video: Path | None = CLIP) -> None:
    if video is not None:
        page.locator("#input-video input[type=file]").set_input_files(str(video))
        expect(page.locator("#input-video video")).to_have_count(1)
    page.locator("#expressions textarea").fill(expressions)
    page.locator("#segment-button").click()


def close_toasts(page) -> None:
    for button in page.locator("[data-testid=toast-close]").all():
        button.click()


def overlay_src(page) -> str:
    return page.locator("#overlay-video video").get_attribute("src") or ""


def test_chromium_is_installed():
    assert Path(chromium()).is_file()


def test_page_shows_the_model_in_use_and_the_examples(page):
    expect(page.locator("#model-status")).to_contain_text("tiny-random (UNTRAINED random weights) on CPU")
    expect(page.locator("#model-status")).to_contain_text("Untrained random weights")
    expect(page.get_by_text("Examples (synthetic clips)")).to_be_visible()


def test_upload_segment_and_the_overlay_video_plays(page, tmp_path):
    segment(page, "the red ball moving to the left\nthe blue square")
    expect(page.locator("#overlay-video video")).to_have_attribute("src", re.compile(r"overlay\.mp4$"))
    video = page.evaluate(VIDEO_READY, "#overlay-video video")
    assert video["width"] == 320 and video["height"] == 180 and video["duration"] > 1.5
    expect(page.locator("#result-info")).to_contain_text("24 frames")
    expect(page.locator("#result-info")).to_contain_text("UNTRAINED WEIGHTS")
    expect(page.locator("#score-plot img")).to_be_visible()
    close_toasts(page)
    page.mouse.move(0, 0)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.evaluate(FIRST_FRAME, "#overlay-video video")  # the same picture every run
    screenshot = DOCS_SCREENSHOT if os.environ.get("REFERDINO_UPDATE_SCREENSHOT") else tmp_path / "screenshot.png"
    page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 10_000


def test_moving_the_threshold_slider_redraws_the_result(page):
    before = overlay_src(page)
    assert before.endswith("overlay.mp4")
    slider = page.locator("#threshold input[type=range]")
    box = slider.bounding_box()
    slider.click(position={"x": box["width"] * 0.75, "y": box["height"] / 2})  # pointerup: the release event
    expect(page.locator("#threshold input[type=number]")).not_to_have_value("0.5")
    expect(page.locator("#overlay-video video")).not_to_have_attribute("src", before)
    assert page.evaluate(VIDEO_READY, "#overlay-video video")["width"] == 320

    page.get_by_role("tab", name="Inspect frame").click()
    image = page.locator("#frame-overlay img")
    first = image.get_attribute("src")
    frame = page.locator("#frame input[type=range]")
    box = frame.bounding_box()
    frame.click(position={"x": box["width"] * 0.8, "y": box["height"] / 2})
    expect(image).not_to_have_attribute("src", first)
    page.get_by_role("tab", name="Overlay").click()


def test_typing_a_value_in_the_threshold_box_redraws(page):
    page.get_by_role("tab", name="Inspect frame").click()
    image = page.locator("#frame-overlay img")
    before, video = image.get_attribute("src"), overlay_src(page)
    box = page.locator("#threshold input[type=number]")
    box.fill("0.07")
    box.press("Enter")
    expect(image).not_to_have_attribute("src", before)
    expect(page.locator("#threshold input[type=range]")).to_have_value("0.07")
    page.get_by_role("tab", name="Overlay").click()
    expect(page.locator("#overlay-video video")).not_to_have_attribute("src", video)


def test_the_downloads_tab_writes_the_files_when_opened_and_they_follow_the_threshold(page, workspace):
    def written() -> list[Path]:
        return sorted(workspace.root.rglob("masks.zip"))

    assert written() == []  # neither Segment nor a redraw wrote an export
    page.get_by_role("tab", name="Downloads").click()
    files = page.locator("#downloads")
    for name in ("masks.zip", "masks_rle.json", "scores.csv", "overlay.mp4", "heatmap.mp4"):
        expect(files.get_by_role("cell", name=name, exact=True)).to_be_visible()
    assert len(written()) == 1
    slider = page.locator("#threshold input[type=range]")
    box = slider.bounding_box()
    slider.click(position={"x": box["width"] * 0.25, "y": box["height"] / 2})  # while the tab is open
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while len(written()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(written()) == 2  # the files followed the new threshold
    page.get_by_role("tab", name="Overlay").click()


def test_markup_in_an_expression_is_shown_as_text(page):
    text = "<b>bold</b> ball <img src=x onerror=window.__xss=1>"
    page.locator("#expressions textarea").fill(text)
    expect(page.locator("#stale")).to_contain_text("press Segment")  # a changed input needs a new run
    page.locator("#segment-button").click()
    expect(page.locator("#result-info")).to_contain_text(text)  # the new result, with the markup as text
    expect(page.locator("#stale")).not_to_contain_text("press Segment")
    assert page.locator("#result-info b, #result-info img").count() == 0
    assert page.evaluate("() => window.__xss") is None


def test_empty_expression_shows_the_error_in_the_page_and_the_app_keeps_working(page):
    close_toasts(page)
    before = overlay_src(page)
    segment(page, "   \n  ", video=None)
    expect(page.locator("[data-testid=toast-body]")).to_contain_text("no expression given")
    # the refused input leaves the last result as it was: no error badge on the outputs, the video still there
    expect(page.locator("#overlay-video video")).to_have_attribute("src", before)
    for output in ("#overlay-video", "#result-info", "#score-plot"):
        expect(page.locator(output)).not_to_contain_text("Error")
    expect(page.locator("#result-info")).to_contain_text("24 frames")
    segment(page, "the small blue square", video=None)
    expect(page.locator("#result-info")).to_contain_text("the small blue square")
    assert page.evaluate(VIDEO_READY, "#overlay-video video")["width"] == 320


def test_closing_the_page_removes_the_session_files(page, workspace):
    sessions = [folder for folder in workspace.root.iterdir() if any(folder.rglob("overlay.mp4"))]
    assert len(sessions) == 1
    page.close()
    deadline = time.monotonic() + 30
    while sessions[0].exists() and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not sessions[0].exists()


def test_clicking_an_example_fills_the_inputs_and_shows_its_cached_result(page, url, model_runs):
    """The examples are listed by file name only (the page's config is public), the expressions one per line; a
    click fills the video and the expressions and shows the result kept in the example cache, without the model.
    A fresh page, so nothing of the tests above is on it."""
    fresh = page.context.browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        fresh.goto(url)
        example = fresh.get_by_text("crossing.mp4", exact=True)
        expect(example).to_be_visible()
        row = fresh.locator("#examples tr", has=example)
        assert len(row.inner_text().strip().splitlines()) >= 3  # name, then each expression on its own line
        runs = len(model_runs)
        started = time.monotonic()
        example.click()
        expect(fresh.locator("#overlay-video video")).to_have_attribute("src", re.compile(r"overlay\.mp4$"),
                                                                       timeout=15_000)
        assert time.monotonic() - started < 15 and len(model_runs) == runs  # from the cache
        expect(fresh.locator("#result-info")).to_contain_text("the yellow car driving right")
        expect(fresh.locator("#score-plot img")).to_be_visible()
        expect(fresh.locator("#input-video video")).to_have_attribute("src", re.compile(r"crossing\.mp4$"))
        expect(fresh.locator("#expressions textarea")).to_have_value(re.compile(r"^the yellow car driving right\n"))
        fresh.locator("#segment-button").click()
        expect(fresh.locator("#overlay-video video")).to_have_attribute("src", re.compile(r"overlay\.mp4$"))
        expect(fresh.locator("#result-info")).to_contain_text("the yellow car driving right")
    finally:
        fresh.close()


CLICK = """([x, y]) => {
    const image = document.querySelector("#frame-overlay img");
    const box = image.getBoundingClientRect();
    // Gradio's own conversion (its image preview never scales an image up): box pixels to image pixels
    const scale = Math.min(box.width / image.naturalWidth, box.height / image.naturalHeight, 1);
    return {x: (box.width - image.naturalWidth * scale) / 2 + x * scale,
            y: (box.height - image.naturalHeight * scale) / 2 + y * scale,
            natural: [image.naturalWidth, image.naturalHeight]};
}"""


@pytest.fixture(scope="module")
def known_url(registry, tmp_path_factory):
    """An app whose only example (a 64x96 red_ball clip) has `known_segmentation` in the example cache, under the key
    a click with the page's default settings looks up."""
    from referdino_demo.examples import synthetic_clip
    from referdino_demo.io import write_video
    from referdino_demo.result_files import save_segmentation

    folder = tmp_path_factory.mktemp("known")
    config = AppConfig(default_checkpoint="tiny-random", short_side=128, examples_dir=folder / "examples",
                       example_cache=folder / "cache")
    config.examples_dir.mkdir()
    config.example_cache.mkdir()
    video = write_video(config.examples_dir / "red_ball.mp4", synthetic_clip("red_ball", 4, KNOWN_SIZE), 8)
    options = RunOptions("tiny-random", query_decay=CONTROLS["query_decay"].default,
                         num_candidates=int(CONTROLS["num_candidates"].default), max_frames=config.max_frames,
                         short_side=128)
    backend = Backend(config, registry, Workspace(folder / "prepare"))
    expressions, selection, _ = backend.prepare(str(video), config.examples()[0][1], options)
    save_segmentation(known_segmentation(), backend.examples.path("tiny-random", str(video), expressions,
                                                                  backend._cache_key(options, selection)))
    demo = build_demo(config, registry, Workspace(folder / "sessions"))
    _, address, _ = demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                                        quiet=True, max_file_size=config.max_upload_bytes)
    yield address
    demo.close()


def test_clicking_an_object_in_the_inspected_frame_picks_its_candidate_and_undo_takes_it_back(page, known_url):
    """A click on the right half of the frame's overlay shows candidate 1 of the chosen expression (its mask covers
    that point), without the model; Undo pick shows candidate 0 again. Filling in the example is no input change."""
    page = page.context.browser.new_page(viewport={"width": 1280, "height": 900})  # a fresh page on the known app
    try:
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(known_url)
        page.get_by_text("red_ball.mp4", exact=True).click()
        expect(page.locator("#result-info")).to_contain_text("hand-made")
        candidate = page.locator("#candidate input")
        expect(candidate).to_have_value(re.compile(r"^#0: "))
        page.get_by_role("tab", name="Inspect frame").click()
        image = page.locator("#frame-overlay img")
        expect(image).to_have_attribute("src", re.compile(r"\.png$"))
        first = image.get_attribute("src")

        position = page.evaluate(CLICK, [72, 12])  # the top-right quarter: candidate 1's mask
        assert position["natural"] == [96, 64]  # the frame's own size: the click's index is in frame pixels
        image.click(position={"x": position["x"], "y": position["y"]})
        expect(candidate).to_have_value(re.compile(r"^#1: "))
        expect(image).not_to_have_attribute("src", first)
        toasts = page.locator("[data-testid=toast-body]")
        expect(toasts.filter(has_text="showing it instead of candidate 0")).to_have_count(1)

        picked = image.get_attribute("src")
        position = page.evaluate(CLICK, [20, 50])  # the bottom half: no candidate covers it
        image.click(position={"x": position["x"], "y": position["y"]})
        expect(toasts.filter(has_text="no kept candidate")).to_have_count(1)
        expect(candidate).to_have_value(re.compile(r"^#1: "))
        assert image.get_attribute("src") == picked

        page.locator("#undo-pick").click()
        expect(candidate).to_have_value(re.compile(r"^#0: "))
        expect(image).not_to_have_attribute("src", picked)
        expect(page.locator("#stale")).not_to_contain_text("press Segment")  # the example filled in is no change
    finally:
        page.close()


def alpha(page, selector: str) -> np.ndarray:
    """(H, W) alpha of the image or paused video `selector` as the page draws it."""
    drawn = page.evaluate(ALPHA, selector)
    return np.array(drawn["alpha"]).reshape(-1, drawn["width"])


def test_the_effects_tab_previews_and_renders_and_chromium_shows_the_cutouts_alpha(page, known_url, model_runs):
    """On the known result (candidate 0 of the first expression: the top-left quarter of a 96x64 clip of 4 frames
    at 8 fps), the Effects tab shows the effect on the inspected frame, Render video gives a video that plays, and
    the cut-out (a PNG, then a VP9 WebM with alpha, served as written) is transparent outside the mask."""
    page = page.context.browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(known_url)
        page.get_by_text("red_ball.mp4", exact=True).click()
        expect(page.locator("#result-info")).to_contain_text("hand-made")
        runs = len(model_runs)
        page.get_by_role("tab", name="Effects").click()
        preview, video = page.locator("#effect-frame img"), page.locator("#effect-video video")
        expect(page.locator("#effect-expression input")).to_have_value(PICKED)  # the result's first expression
        expect(preview).to_have_attribute("src", re.compile(r"effect_frame\.png$"))
        blurred = preview.get_attribute("src")
        expect(video).to_have_count(0)  # no video until asked for

        page.locator("#render-effect").click()
        expect(video).to_have_attribute("src", re.compile(r"effect_blur\.mp4$"))
        shown = page.evaluate(VIDEO_READY, "#effect-video video")
        assert (shown["width"], shown["height"]) == (96, 64) and shown["duration"] == pytest.approx(4 / 8, abs=0.1)

        page.locator("#effect input").click()
        page.get_by_role("option", name="cut out: transparent background").click()
        expect(preview).not_to_have_attribute("src", blurred)
        expect(video).to_have_count(0)  # the blur video does not show the cut-out
        expect(page.locator("#effect-target input").first).to_be_disabled()  # the cut-out keeps the object
        cut = alpha(page, "#effect-frame img")
        assert cut.shape == (64, 96)
        assert (cut[:28, :44] == 255).all() and (cut[36:] == 0).all() and (cut[:, 52:] == 0).all()

        page.locator("#render-effect").click()
        expect(video).to_have_attribute("src", re.compile(r"cutout\.webm$"))
        shown = page.evaluate(VIDEO_READY, "#effect-video video")
        assert (shown["width"], shown["height"]) == (96, 64) and shown["duration"] == pytest.approx(4 / 8, abs=0.1)
        page.evaluate(FIRST_FRAME, "#effect-video video")
        cut = alpha(page, "#effect-video video")  # Chromium decodes the VP9 alpha: the mask, a little soft
        assert (cut[:28, :44] >= 240).all() and (cut[36:] <= 15).all() and (cut[:, 52:] <= 15).all()
        assert len(model_runs) == runs
    finally:
        page.close()
