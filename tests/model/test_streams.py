"""Frame streams: per-frame stages on parts of a chunk at once, one thread each."""

import threading

import numpy as np
import pytest
import torch

from referdino_demo.model import streams as streams_module
from referdino_demo.model.outputs import Trace
from referdino_demo.model.schedule import ChunkStages, StageHooks, run_schedule
from referdino_demo.model.streams import MAX_STREAMS, FrameStreams, set_frame_streams
from referdino_demo.preprocess.frames import preprocess_frames
from referdino_demo.preprocess.text import caption_for, synthetic_tokenizer, tokenize


@pytest.fixture
def torch_threads():
    """Sets the calling thread's torch thread count for a test, and restores it."""
    previous = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(previous)


@pytest.mark.parametrize("threads, frames, sizes", [
    (1, 5, [5]), (2, 5, [3, 2]), (3, 7, [3, 2, 2]), (4, 2, [1, 1]), (16, 9, [3, 2, 2, 2]), (2, 1, [1])])
def test_split_gives_consecutive_views_of_nearly_equal_size(threads, frames, sizes):
    chunk = torch.arange(frames * 2.0).reshape(frames, 2)
    parts = FrameStreams(threads).split(chunk)
    assert [part.shape[0] for part in parts] == sizes
    assert torch.equal(torch.cat(parts), chunk)
    assert all(part.untyped_storage().data_ptr() == chunk.untyped_storage().data_ptr() for part in parts)
    assert len(parts) <= MAX_STREAMS


def test_calls_run_at_once_each_with_its_share_of_the_threads(torch_threads):
    torch_threads(3)
    meeting = threading.Barrier(3, timeout=10)  # only passes if the three calls run at the same time

    def call(index):
        meeting.wait()
        return index, threading.get_ident(), torch.get_num_threads()

    caller = threading.get_ident()
    results = FrameStreams(7).map(call, range(3))
    assert [index for index, _, _ in results] == [0, 1, 2]
    assert results[0][1] == caller and len({ident for _, ident, _ in results}) == 3
    assert [threads for _, _, threads in results] == [3, 2, 2]
    assert torch.get_num_threads() == 3  # the calling thread's count is restored


def test_more_streams_than_threads_still_run_at_once_with_a_thread_each():
    meeting = threading.Barrier(2, timeout=10)

    def call(_):
        meeting.wait()
        return torch.get_num_threads()

    streams = FrameStreams(1, count=2)
    assert [part.shape[0] for part in streams.split(torch.zeros(5))] == [3, 2]
    assert streams.map(call, range(2)) == [1, 1]


def test_one_stream_runs_every_call_in_the_calling_thread():
    caller = threading.get_ident()
    results = FrameStreams(1).map(lambda a, b: (a + b, threading.get_ident()), [1, 2], [10, 20])
    assert results == [(11, caller), (22, caller)]


@pytest.mark.parametrize("inference", [True, False])
def test_the_streams_inherit_grad_inference_and_autocast_modes(inference):
    def modes(_):
        return (torch.is_grad_enabled(), torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu"),
                torch.get_autocast_dtype("cpu"))

    with torch.inference_mode(inference), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = modes(None)
        assert FrameStreams(2).map(modes, range(2)) == [expected, expected]
    with torch.no_grad():
        assert [mode[0] for mode in FrameStreams(2).map(modes, range(2))] == [False, False]


def test_gradients_flow_through_the_streams():
    x = torch.linspace(-1, 1, 6).reshape(6, 1).requires_grad_()
    streams = FrameStreams(2)
    parts = streams.map(lambda part: (part ** 2).sum(), streams.split(x))
    torch.stack(parts).sum().backward()
    assert torch.allclose(x.grad, 2 * x.detach())


def test_every_call_finishes_before_the_first_error_is_raised():
    finished = []
    release = threading.Event()

    def call(index):
        if index == 0:
            raise ValueError("the first part failed")
        release.wait(10)  # still running when the first call fails
        finished.append(index)

    timer = threading.Timer(0.2, release.set)
    timer.start()
    with pytest.raises(ValueError, match="first part"):
        FrameStreams(2).map(call, range(2))
    assert finished == [1]
    timer.join()


def test_streams_follow_the_device_the_switch_and_the_caller(torch_threads):
    torch_threads(2)

    def streams(device="cpu", **options):
        made = FrameStreams.for_device(torch.device(device), **options)
        return made.threads, made.count

    assert streams() == (2, 2) and streams(count=3) == (2, 3)
    assert streams("meta", count=3) == streams(allowed=False, count=3) == (1, 1)
    set_frame_streams(False)
    try:
        assert streams(count=3) == (1, 1)
    finally:
        set_frame_streams(True)


# -- the schedule with streams -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def video(tiny_model):
    rng = np.random.default_rng(3)
    pixels = preprocess_frames(rng.integers(0, 255, (5, 72, 128, 3), dtype=np.uint8), 128)
    tokenizer = synthetic_tokenizer()
    texts = [tiny_model.encode_text(tokenize(caption_for(e), tokenizer)) for e in ("the red ball", "the sky")]
    return pixels, texts


class KeepChunks(StageHooks):
    def __init__(self, trace=None):
        super().__init__(trace)
        self.chunks: list[ChunkStages] = []

    def chunk_detected(self, expression, chunk):
        self.chunks.append(chunk)


@torch.inference_mode()
def schedule(model, pixels, texts, chunk_size=5, keep_features=True, hooks=None):
    hooks = hooks or KeepChunks()
    chunks = lambda: (pixels[start:start + chunk_size] for start in range(0, pixels.shape[0], chunk_size))  # noqa
    videos = run_schedule(model, chunks, texts, keep_features=keep_features, hooks=hooks)
    return [(video.logits, video.boxes, hooks.masks(index)) for index, video in enumerate(videos)], hooks


@pytest.mark.parametrize("threads", [2, 3])
def test_streams_compute_what_one_thread_computes(tiny_model, video, torch_threads, threads):
    """Up to the rounding of the batched matrix products (the parts are smaller batches)."""
    pixels, texts = video
    torch_threads(1)
    alone, single = schedule(tiny_model, pixels, texts)
    torch_threads(threads)
    streamed, hooks = schedule(tiny_model, pixels, texts)
    for expected, actual in zip(alone, streamed):
        for a, b in zip(expected, actual):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    first = hooks.chunks[0]
    assert [part.num_frames for part in first.visual_parts] == [5 // threads + (i < 5 % threads)
                                                                for i in range(threads)]
    assert torch.allclose(first.visual.stage1, single.chunks[0].visual.stage1, rtol=1e-4, atol=1e-4)
    assert first.features.shape == single.chunks[0].features.shape
    recomputed, _ = schedule(tiny_model, pixels, texts, keep_features=False)
    for kept, again in zip(streamed, recomputed):  # the same parts, so the same numbers
        assert all(torch.equal(a, b) for a, b in zip(kept, again))


def test_a_trace_or_hooks_that_watch_the_thread_keep_every_stage_in_it(tiny_model, video, torch_threads, monkeypatch):
    pixels, texts = video
    torch_threads(2)

    def no_threads():
        raise AssertionError("a stage ran in a stream thread")

    monkeypatch.setattr(streams_module, "_executor", no_threads)
    _, traced = schedule(tiny_model, pixels, texts[:1], hooks=KeepChunks(Trace()))
    watching = KeepChunks()
    watching.frame_streams = False
    _, watched = schedule(tiny_model, pixels, texts[:1], hooks=watching)
    assert len(traced.chunks[0].visual_parts) == len(watched.chunks[0].visual_parts) == 1
