"""Markup in user text reaches the page only as text, in the toasts too (Gradio renders toast messages as HTML):
Chromium (Playwright) shows the characters `<img ...>` literally, creates no element and runs no handler."""

import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from .harness import App
from referdino_demo.ui.config import AppConfig
from referdino_demo.ui.session import PredictorRegistry

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
PAYLOAD = "<img src=x onerror=window.__xss=1><b>bold</b>"


def test_markup_in_toasts_and_labels_is_shown_as_text(gradio_dir, videos):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the browser tests need Chromium: apt-get install chromium"
    app = App(AppConfig(default_checkpoint="tiny-random", short_side=128), PredictorRegistry(), gradio_dir)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(app.url)
            page.locator("#input-video input[type=file]").set_input_files(str(videos["small"]))
            expect(page.locator("#input-video video")).to_have_count(1)

            # an error whose message quotes the user's text
            page.locator("#expressions textarea").fill("<>!")
            page.locator("#segment-button").click()
            toast = page.locator("[data-testid=toast-body]")
            expect(toast.first).to_contain_text("'<>!' is empty or has no letters or digits")

            # a warning (the note on a cut expression) quoting markup, and the result's labels
            long_text = PAYLOAD + " the red ball" * 150
            page.locator("#expressions textarea").fill(long_text)
            page.locator("#segment-button").click()
            expect(page.locator("#result-info")).to_contain_text("2 frames")
            expect(toast.filter(has_text="expression cut to 256 tokens").first).to_contain_text(PAYLOAD)
            expect(page.locator("#result-info")).to_contain_text(PAYLOAD)
            assert page.locator("[data-testid=toast-body] img, [data-testid=toast-body] b").count() == 0
            assert page.locator("#result-info img, #result-info b").count() == 0
            assert page.evaluate("() => window.__xss") is None
            browser.close()
    finally:
        app.close()
