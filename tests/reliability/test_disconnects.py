"""Clients that go away mid-job, whatever the way: a raw HTTP client hanging up the `/gradio_api/call` event stream, one
hanging up the queue's event stream (what the page and `gradio_client` read), and a `gradio_client` job cancelled.
Each job stops at its next chunk (the model runs fewer chunks than the clip has), its files and its session's folder
are deleted, the model slot is free again, and the next job runs."""

import threading
import time

import httpx
import pytest

from referdino_demo.ui.config import AppConfig

from . import raw_api
from .corpus import SHORT_SIDE, encode
from .harness import app_fixture, segment

FRAMES, CHUNK = 40, 8  # the predictor's default chunk: 5 chunks for the whole clip
CONFIG = AppConfig(default_checkpoint="tiny-random", max_frames=48, max_duration_s=10.0, short_side=SHORT_SIDE,
                   concurrency=1)


app = app_fixture(CONFIG)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return encode(tmp_path_factory.mktemp("disconnects") / "forty.mp4", FRAMES, size=(64, 48))


class FirstChunkGate:
    """Counts the model's chunks (forward pre-hook on the backbone) and holds the first one until the client of every
    running job has gone, so that the job can only notice it at its next chunk."""

    def __init__(self, app):
        self.app, self.chunks, self.started, self.client_gone = app, 0, threading.Event(), False
        self.hook = app.registry.get("tiny-random").model.backbone.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.chunks += 1
        if self.chunks == 1:
            self.started.set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(job.connected() for job in self.app.workspace.jobs()):
                time.sleep(0.02)
            self.client_gone = not any(job.connected() for job in self.app.workspace.jobs())

    def close(self):
        self.hook.remove()


def leave_call_stream(app, clip, session):
    """Raw HTTP: POST /gradio_api/call/segment, read the event stream until the job runs, hang up."""
    event = raw_api.start(app.url, "segment", raw_api.segment_data(raw_api.upload(app.url, clip), max_frames=48),
                          session)
    with httpx.stream("GET", f"{app.url}gradio_api/call/segment/{event}", timeout=30):
        yield


def leave_queue_stream(app, clip, session):
    """Raw HTTP as the page talks: POST /gradio_api/queue/join, read /gradio_api/queue/data, hang up."""
    data = raw_api.segment_data(raw_api.upload(app.url, clip), max_frames=48) + [None]  # + the State
    raw_api.queue_join(app.url, raw_api.fn_index(app.demo, "segment"), data, session)
    with httpx.stream("GET", f"{app.url}gradio_api/queue/data", params={"session_hash": session}, timeout=30):
        yield


def cancel_client_job(app, clip, session, tmp_path):
    """gradio_client: submit, then `Job.cancel()` (POST /gradio_api/cancel); the client itself stays."""
    from gradio_client import handle_file

    client = app.client(tmp_path)
    job = client.submit(video=handle_file(str(clip)), expressions="the ball", max_frames=48, api_name="/segment")
    yield client.session_hash
    job.cancel()
    client.close()


@pytest.mark.parametrize("leave", ["call_stream", "queue_stream", "cancel"])
def test_a_client_that_goes_mid_job_stops_it_at_the_next_chunk_and_its_files_go(app, clip, videos, tmp_path, leave):
    gate = FirstChunkGate(app)
    session = f"leaving-{leave}"
    try:
        if leave == "cancel":
            steps = cancel_client_job(app, clip, session, tmp_path / "a")
            session = next(steps)
        else:
            steps = {"call_stream": leave_call_stream, "queue_stream": leave_queue_stream}[leave](app, clip, session)
            next(steps)
        assert gate.started.wait(60)
        assert app.workspace.active_jobs() == 1
        next(steps, None)  # the client goes

        deadline = time.monotonic() + 30
        while app.workspace.active_jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gate.client_gone and app.workspace.active_jobs() == 0
        assert gate.chunks < FRAMES // CHUNK  # stopped at the next chunk, not after the whole clip
        assert not app.workspace.folder(session).exists()  # the job's files and the session's folder are gone
    finally:
        gate.close()

    staying = app.client(tmp_path / "b")  # the only model slot is free again
    assert "**2 frames**" in segment(staying, videos["small"], "the ball")["info"]
    staying.close()


def test_a_client_that_stays_gets_its_result(app, clip, tmp_path):
    """The check costs a finished job nothing: a raw client that reads its stream to the end gets every frame."""
    event, out = raw_api.call(app.url, "segment", raw_api.segment_data(raw_api.upload(app.url, clip), max_frames=48),
                              "staying-raw")
    assert event == "complete" and any("**40 frames**" in str(value) for value in out)
