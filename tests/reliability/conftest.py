"""Fixtures of the reliability suite: the generated corpus, the tiny predictor, and an app launched the way
`app.py` launches it (the default workspace inside Gradio's upload folder), with Gradio's folders pointed at this
test's temporary folder so that leftovers can be counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import corpus


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    return corpus.make_videos(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def predictor():
    from referdino_demo.predictor import ReferDinoPredictor

    return ReferDinoPredictor.from_pretrained("tiny-random")


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, predictor) -> dict[str, Path]:
    return corpus.make_checkpoints(tmp_path_factory.mktemp("checkpoints"), predictor.model)


@pytest.fixture(scope="module")
def gradio_dir(tmp_path_factory):
    """GRADIO_TEMP_DIR (uploads, served files) for this module's apps; sessions end within a second of a client
    closing (heartbeat interval 0.25 s)."""
    folder = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder))
        patch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.25")
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        yield folder


@pytest.fixture(scope="module")
def client(app, tmp_path_factory):
    """A gradio_client of the module's `app` fixture."""
    client = app.client(tmp_path_factory.mktemp("downloads"))
    yield client
    client.close()
