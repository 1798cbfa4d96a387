"""The examples in a real browser (Playwright driving Debian's Chromium, as in test_browser.py): the page lists them by
file name only (its config is public), and clicking one fills the video and the expressions, ready to segment."""

import re
import shutil
import socket
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from referdino_demo.ui.config import AppConfig
from referdino_demo.ui.gradio_app import build_demo
from referdino_demo.ui.session import PredictorRegistry
from referdino_demo.ui.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
expect.set_options(timeout=90_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is not installed; the browser tests need it: apt-get install chromium")
    config = AppConfig(default_checkpoint="tiny-random", short_side=128, max_frames=8, examples_dir=REPO / "examples")
    demo = build_demo(config, PredictorRegistry(), Workspace(tmp_path_factory.mktemp("sessions")))
    _, url, _ = demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                                    quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            yield page
            browser.close()
    finally:
        demo.close()


def test_clicking_an_example_fills_the_inputs_and_it_segments(page):
    example = page.get_by_text("crossing.mp4", exact=True)
    expect(example).to_be_visible()
    example.click()
    expect(page.locator("#input-video video")).to_have_count(1)
    expect(page.locator("#input-video video")).to_have_attribute("src", re.compile(r"crossing\.mp4$"))
    expect(page.locator("#expressions textarea")).to_have_value(re.compile(r"^the yellow car driving right\n"))
    page.locator("#segment-button").click()
    expect(page.locator("#overlay-video video")).to_have_attribute("src", re.compile(r"overlay\.mp4$"))
    expect(page.locator("#result-info")).to_contain_text("the yellow car driving right")
