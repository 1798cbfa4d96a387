"""Faults: a model that fails to load, a job over its memory budget, a job that runs out of memory, an export that
fails half-way, and a client that leaves mid-job. Each ends cleanly: the user is told what happened, the job's memory
and files are freed, and the next job succeeds."""

import json
import re
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from benchmarks.load import RunCounter
from referdino_demo.cli import main
from referdino_demo.errors import InputLimitError, MemoryBudgetError
from referdino_demo.io import iter_video
from referdino_demo.predictor import ReferDinoPredictor
from referdino_demo.ui.config import AppConfig, RunOptions
from referdino_demo.ui.session import Backend, PredictorRegistry
from referdino_demo.ui.workspace import Workspace

from .corpus import SHORT_SIDE, encode
from .harness import App, leftover_files, segment

CONFIG = AppConfig(default_checkpoint="tiny-random", max_frames=48, max_duration_s=10.0, short_side=SHORT_SIDE)


class OutOfMemoryOnce:
    """Replaces one model method: allocates a tensor (watched through a weak reference), then raises `error`, or
    with `error=None` asks torch's allocator for 40 TB (a real allocation failure)."""

    def __init__(self, model, method: str, error: BaseException):
        self.model, self.method, self.error = model, method, error
        self.allocated: weakref.ref | None = None

    def __enter__(self):
        def fail(*args, **kwargs):
            setattr(self.model, self.method, original)  # once: the next job runs normally
            big = torch.ones(4, 1024, 1024)  # what the failed job was holding
            self.allocated = weakref.ref(big)
            if self.error is None:
                torch.empty(10**13)
            raise self.error

        original = getattr(self.model, self.method)
        setattr(self.model, self.method, fail)
        return self

    def __exit__(self, *exc):
        self.model.__dict__.pop(self.method, None)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    return encode(tmp_path_factory.mktemp("faults") / "forty.mp4", 40, size=(64, 48))


# -- memory budget: estimated before any model work -------------------------------------------------------------
def test_a_job_over_its_memory_budget_is_refused_with_the_numbers_before_any_model_work(predictor, videos,
                                                                                          model_calls):
    with pytest.raises(MemoryBudgetError) as error:
        predictor.segment(videos["small"], "the ball", short_side=SHORT_SIDE, memory_budget_mb=1)
    assert isinstance(error.value, InputLimitError)
    assert re.fullmatch(r"this job needs an estimated [\d,]+ MB \(2 frames of 64x48, model input 170x128, "
                        r"1 expression\), over the memory budget of 1 MB\. Lower the number of frames \(max frames, "
                        r"or a larger stride\), the model input short side \(now 128 px\) or the number of "
                        r"expressions", str(error.value))
    assert model_calls == []
    plain = predictor.segment(videos["small"], "the ball", short_side=SHORT_SIDE)
    budgeted = predictor.segment(videos["small"], "the ball", short_side=SHORT_SIDE, memory_budget_mb=4096)
    np.testing.assert_array_equal(plain[0].candidate_logits, budgeted[0].candidate_logits)  # results unchanged


def test_the_estimate_grows_with_frames_size_and_expressions(predictor, long_clip):
    info = iter_video(long_clip).info
    base = predictor.estimate_memory_mb(info, 1, short_side=128)
    assert predictor.estimate_memory_mb(iter_video(long_clip, max_frames=10).info, 1, short_side=128) < base
    assert predictor.estimate_memory_mb(info, 4, short_side=128) > base
    assert predictor.estimate_memory_mb(info, 1, short_side=360) > 4 * base
    assert predictor.estimate_memory_mb(info, 1, short_side=128, text_tokens=8) < base  # default: 256 tokens


def test_an_extreme_aspect_ratio_is_caught_by_the_long_side_cap_and_the_budget(predictor, tmp_path):
    strip = encode(tmp_path / "strip.mkv", 2, size=(4000, 2), codec="libvpx")  # 8,000 pixels, within max_pixels
    with pytest.raises(InputLimitError, match=r"model input would be 256000x128, over the cap of 1920 px"):
        predictor.segment(strip, "the ball", short_side=SHORT_SIDE)
    with pytest.raises(MemoryBudgetError, match=r"2 frames of 4000x2, model input 256000x128"):  # cap lifted
        predictor.segment(strip, "the ball", short_side=SHORT_SIDE, max_long_side=None, memory_budget_mb=2048)


# -- out of memory during the run -----------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [None, MemoryError(), torch.OutOfMemoryError("CUDA out of memory. Tried to")],
                         ids=["allocator", "MemoryError", "torch.OutOfMemoryError"])
def test_running_out_of_memory_is_explained_and_the_memory_freed(predictor, videos, error):
    with OutOfMemoryOnce(predictor.model, "decode_masks", error) as injected:
        with pytest.raises(MemoryBudgetError) as raised:
            predictor.segment(videos["small"], ["the ball", "the box"], short_side=SHORT_SIDE, max_frames=8)
    kind = "RuntimeError" if error is None else type(error).__name__  # torch's CPU allocator raises RuntimeError
    assert str(raised.value).startswith(f"out of memory on CPU ({kind}) while segmenting 2 "
                                        "expressions (short side 128 px, max frames 8); the job's memory was freed")
    assert injected.allocated is not None and injected.allocated() is None  # freed while the error is still held
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert predictor.segment(videos["small"], "the ball", short_side=SHORT_SIDE).num_frames == 2  # next job works


def test_other_runtime_errors_are_not_disguised_as_out_of_memory(predictor, videos):
    with OutOfMemoryOnce(predictor.model, "decode_masks", RuntimeError("shape mismatch in the mask head")):
        with pytest.raises(RuntimeError, match="shape mismatch in the mask head"):
            predictor.segment(videos["small"], "the ball", short_side=SHORT_SIDE)


def test_cli_export_running_out_of_memory_leaves_complete_files_only(videos, tmp_path, capsys, monkeypatch):
    from referdino_demo.io import video_writer

    written = []
    real_write = video_writer.VideoWriter.write

    def write(self, frame):
        written.append(1)
        if len(written) == 2:
            raise MemoryError
        return real_write(self, frame)

    monkeypatch.setattr(video_writer.VideoWriter, "write", write)
    out = tmp_path / "out"
    code = main(["segment", str(videos["ntsc"]), "-e", "the ball", "--out", str(out), "--checkpoint", "tiny-random",
                 "--short-side", str(SHORT_SIDE), "--export", "rle,overlay"])
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("referdino")]
    assert code == 1 and lines == ["referdino: error: out of memory (MemoryError); lower --max-frames or --short-side, "
                                   "raise --stride, or pass fewer expressions (files already written are complete)"]
    assert sorted(p.name for p in out.iterdir()) == ["masks_rle.json"]  # no overlay.mp4, no hidden partial file
    assert json.loads((out / "masks_rle.json").read_text(encoding="utf-8"))["info"]["num_frames"] == 5


# -- the app ---------------------------------------------------------------------------------------------------------
class FlakyLoader:
    """Loads predictors like the app does, but the first `failures` loads raise the given errors."""

    def __init__(self, *failures: BaseException):
        self.failures, self.calls = list(failures), 0

    def __call__(self, name, **kwargs):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return ReferDinoPredictor.from_pretrained(name, **kwargs)


@pytest.fixture
def app_with(gradio_dir):
    apps = []

    def launch(config=CONFIG, loader=None):
        app = App(config, PredictorRegistry(loader=loader), gradio_dir)
        apps.append(app)
        return app

    yield launch
    for app in apps:
        app.close()


def test_a_model_loading_failure_is_reported_and_the_next_job_loads_again(app_with, videos, tmp_path):
    loader = FlakyLoader(RuntimeError("CUDA error: an illegal memory access was encountered"), MemoryError())
    app = app_with(loader=loader)
    client = app.client(tmp_path)
    with pytest.raises(Exception, match=r"could not load checkpoint tiny-random \(RuntimeError: CUDA error: an "
                                        r"illegal memory access was encountered\)\. Try again.*tiny-random"):
        segment(client, videos["small"], "the ball")
    with pytest.raises(Exception, match="not enough memory to load checkpoint tiny-random"):
        segment(client, videos["small"], "the ball")
    assert app.registry.loaded() == [] and not app.workspace.folder(client.session_hash).exists()
    assert "**2 frames**" in segment(client, videos["small"], "the ball")["info"]
    assert loader.calls == 3 and app.registry.loaded() == ["tiny-random"]
    client.close()


def test_app_job_over_the_memory_budget_is_refused_and_a_smaller_one_runs(app_with, predictor, videos, long_clip,
                                                                          tmp_path):
    from referdino_demo.preprocess.text import caption_for, tokenize

    tokens = tokenize(caption_for("the ball"), predictor.tokenizer).input_ids.shape[1]
    small = predictor.estimate_memory_mb(iter_video(videos["small"]).info, 1, short_side=SHORT_SIDE, text_tokens=tokens)
    # the least the long job can need: with its mask features computed twice and its frames decoded again, not kept
    large = predictor.estimate_memory_mb(iter_video(long_clip).info, 1, short_side=SHORT_SIDE, text_tokens=tokens,
                                         feature_budget_mb=0, frame_cache_mb=0)
    budget = (small + large) / 2
    app = app_with(AppConfig(default_checkpoint="tiny-random", max_frames=48, max_duration_s=10.0,
                             short_side=SHORT_SIDE, memory_budget_mb=budget))
    client = app.client(tmp_path)
    with pytest.raises(Exception, match=rf"needs an estimated {large:,.0f} MB \(40 frames of 64x48, model input "
                                        rf"170x128, 1 expression\), over the memory budget of {budget:,.0f} MB\. "
                                        r"Lower the number of frames"):
        segment(client, long_clip, "the ball")
    assert "**2 frames**" in segment(client, videos["small"], "the ball")["info"]
    client.close()


def test_app_job_running_out_of_memory_frees_it_and_the_next_job_runs(app_with, videos, tmp_path):
    app = app_with()
    client = app.client(tmp_path)
    model = app.registry.get("tiny-random").model
    with OutOfMemoryOnce(model, "mask_features", torch.OutOfMemoryError("CUDA out of memory")) as injected:
        with pytest.raises(Exception, match=r"out of memory on CPU \(OutOfMemoryError\) .*the job's memory was freed"):
            segment(client, videos["small"], "the ball")
    assert injected.allocated() is None
    assert not app.workspace.folder(client.session_hash).exists() and app.workspace.active_jobs() == 0
    assert "**2 frames**" in segment(client, videos["small"], "the ball")["info"]
    client.close()


def test_app_rendering_out_of_memory_is_reported_and_leaves_no_partial_files(app_with, videos, tmp_path, monkeypatch):
    from referdino_demo.result_view import ResultView

    app = app_with()
    client = app.client(tmp_path)
    real = ResultView.heatmap_video
    monkeypatch.setattr(ResultView, "heatmap_video", lambda self, settings: (_ for _ in ()).throw(MemoryError))
    with pytest.raises(Exception, match="Out of memory: the server could not finish this job"):
        segment(client, videos["small"], "the ball")
    folder = app.workspace.folder(client.session_hash)
    assert not any(folder.rglob("*heatmap*")) and not any(p.name.startswith(".") for p in folder.rglob("*"))
    monkeypatch.setattr(ResultView, "heatmap_video", real)
    assert "**2 frames**" in segment(client, videos["small"], "the ball")["info"]
    client.close()


def test_a_client_leaving_mid_job_stops_the_job_frees_everything_and_the_next_job_runs(app_with, long_clip, videos,
                                                                                        gradio_dir, tmp_path):
    app = app_with(AppConfig(default_checkpoint="tiny-random", max_frames=48, max_duration_s=10.0,
                             short_side=SHORT_SIDE, concurrency=1))
    model = app.registry.get("tiny-random").model
    started, chunks = threading.Event(), []

    def gate(module, args):  # hold the first chunk until the client has gone
        chunks.append(1)
        if len(chunks) == 1:
            started.set()
            deadline = time.monotonic() + 30
            while not any(job.cancelled for job in list(app.workspace._jobs.values())):
                assert time.monotonic() < deadline, "the session never ended"
                time.sleep(0.02)

    hook = model.backbone.register_forward_pre_hook(gate)
    try:
        leaving = app.client(tmp_path / "a")
        leaving.submit(video=_upload(long_clip), expressions="the ball", api_name="/segment")
        assert started.wait(30)
        session = leaving.session_hash
        leaving.close()  # the browser tab closes: no more heartbeat
        deadline = time.monotonic() + 30
        while app.workspace.active_jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.workspace.active_jobs() == 0
        assert len(chunks) < 5  # stopped at the next chunk, not after all 40 frames
        assert not app.workspace.folder(session).exists()

        staying = app.client(tmp_path / "b")  # the only model slot is free again
        assert "**2 frames**" in segment(staying, videos["small"], "the ball")["info"]
        staying.close()
    finally:
        hook.remove()
    deadline = time.monotonic() + 15
    while list(app.workspace.root.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(app.workspace.root.iterdir()) == []  # both sessions' results are gone
    # what is left are uploads, which Gradio's cache expiry deletes (another session may share them)
    assert {str(p) for p in leftover_files(gradio_dir)} <= set(app.demo.upload_file_set)


def _upload(path):
    from gradio_client import handle_file

    return handle_file(str(path))



def test_the_backend_keeps_its_concurrency_whoever_calls_it(videos, tmp_path):
    """Gradio's queue frees a cancelled request's slot while its thread still runs the model; the backend's own
    limit holds anyway (here five threads call it directly, with no queue at all)."""
    registry = PredictorRegistry()
    counter = RunCounter(registry.get("tiny-random"))
    backend = Backend(AppConfig(default_checkpoint="tiny-random", concurrency=1), registry, Workspace(tmp_path))
    options = RunOptions("tiny-random", short_side=SHORT_SIDE)
    threads = [threading.Thread(target=backend.segment, args=(str(videos["ntsc"]), f"object {i}", options, f"s{i}"))
               for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert counter.total == 5 and counter.peak == 1
    assert backend.workspace.active_jobs() == 0 and len(list(tmp_path.iterdir())) == 5  # one folder per session
