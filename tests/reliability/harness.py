"""Helpers of the reliability suite: launching the app as `app.py` does, and counting leftover files."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """A launched app: its URL, workspace and backend; `close()` stops it."""

    def __init__(self, config, registry, gradio_dir: Path, queue_size: int = 32):
        from referdino_demo.ui.gradio_app import build_demo, default_workspace

        assert os.environ.get("GRADIO_TEMP_DIR") == str(gradio_dir)
        self.config, self.registry, self.gradio_dir = config, registry, gradio_dir
        self.workspace = default_workspace(config)
        self.demo = build_demo(config, registry, self.workspace)
        # as app.py: the model event keeps its own limit (config.concurrency), the others share 2
        _, self.url, _ = self.demo.queue(default_concurrency_limit=max(2, config.concurrency),
                                         max_size=queue_size).launch(
            prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
            max_file_size=config.max_upload_bytes)

    def client(self, download_dir: Path):
        from gradio_client import Client

        return Client(self.url, verbose=False, download_files=str(download_dir))

    def close(self) -> None:
        self.demo.close()


def app_fixture(config):
    """A module-scoped `app` fixture: the app of `config` with the tiny model, closed after the module."""

    @pytest.fixture(scope="module")
    def app(gradio_dir):
        from referdino_demo.ui.session import PredictorRegistry

        launched = App(config, PredictorRegistry(), gradio_dir)
        yield launched
        launched.close()

    return app


def leftover_files(folder: Path) -> list[Path]:
    """Files under `folder` (os.walk skips folders that are being removed meanwhile)."""
    return sorted(Path(root) / name for root, _, files in os.walk(folder) for name in files)


SEGMENT_OUTPUTS = ("overlay", "heatmap", "frame_overlay", "frame_heatmap", "summary")


def outputs(values) -> dict:
    """/segment's or /rerender's outputs by name, with the summary's page text as "info"."""
    named = dict(zip(SEGMENT_OUTPUTS, values))
    return {**named, "info": named["summary"]["text"]}


def segment(client, video, expressions, **kwargs) -> dict:
    """/segment through `gradio_client`, outputs by name."""
    from gradio_client import handle_file

    video = None if video is None else handle_file(str(video))
    return outputs(client.predict(video=video, expressions=expressions, api_name="/segment", **kwargs))


def downloads(client, expression: str | None = None, threshold: float = 0.5) -> dict[str, Path]:
    """/downloads (what opening the Downloads tab calls): the export files by name."""
    files = client.predict(threshold=threshold, opacity=0.5, expression=expression, api_name="/downloads")
    return {Path(path).name: Path(path) for path in files}

