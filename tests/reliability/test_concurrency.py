"""Eight simultaneous `gradio_client` users with the tiny model: all complete; never more model runs at once than the
configured concurrency (counted inside the predictor); each user gets the results of its own video and expressions;
peak memory stays within the concurrency times the per-job estimate (printed); no file of theirs is left afterwards
(their uploads are Gradio's: its cache cleanup deletes them by age)."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.load import RunCounter
from referdino_demo.io import iter_video, probe_video
from referdino_demo.ui.config import AppConfig
from referdino_demo.ui.session import PredictorRegistry

from .corpus import SHORT_SIDE, encode
from .harness import App, downloads, leftover_files, outputs, segment

pytestmark = pytest.mark.slow

USERS = 8
CONFIG = AppConfig(default_checkpoint="tiny-random", max_frames=16, max_duration_s=10.0, short_side=SHORT_SIDE,
                   concurrency=2)


class PeakRss:
    """Samples this process's resident memory every 20 ms."""

    def __init__(self):
        self.start = self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


def test_eight_simultaneous_users_are_isolated_limited_bounded_and_leave_nothing(gradio_dir, tmp_path, capsys):
    registry = PredictorRegistry()
    predictor = registry.get("tiny-random")
    counter = RunCounter(predictor)
    app = App(CONFIG, registry, gradio_dir)
    # user i: a clip of its own length and width, and an expression naming it
    users = [(encode(tmp_path / f"user{i}.mp4", 4 + i % 3, size=(64 + 16 * i, 48)), f"object number {i} here")
             for i in range(USERS)]
    estimates = [predictor.estimate_memory_mb(iter_video(clip).info, 1, short_side=SHORT_SIDE) for clip, _ in users]
    barrier = threading.Barrier(USERS)

    def user(i: int) -> float:
        clip, expression = users[i]
        frames, width = 4 + i % 3, 64 + 16 * i
        client = app.client(tmp_path / f"downloads{i}")
        try:
            barrier.wait(timeout=60)
            started = time.perf_counter()
            out = segment(client, clip, expression)
            latency = time.perf_counter() - started
            assert f"**{frames} frames** ({width}×48" in out["info"] and expression in out["info"]
            assert not any(f"object number {j} " in out["info"] for j in range(USERS) if j != i)
            assert [e["expression"] for e in out["summary"]["expressions"]] == [expression]
            probe = probe_video(out["overlay"])
            assert (probe.num_frames, probe.width) == (frames, width)
            assert Image.open(out["frame_overlay"]).size == (width, 48)
            rle = json.loads(downloads(client, expression)["masks_rle.json"].read_text("utf-8"))
            assert [e["expression"] for e in rle["expressions"]] == [expression]
            again = outputs(client.predict(threshold=0.3, opacity=0.5, expression=expression, candidate=1, frame=0,
                                           api_name="/rerender"))
            assert expression in again["info"] and probe_video(again["overlay"]).width == width
            return latency
        finally:
            client.close()

    memory = PeakRss()
    started = time.perf_counter()
    with ThreadPoolExecutor(USERS) as pool:
        latencies = sorted(pool.map(user, range(USERS)))
    wall = time.perf_counter() - started
    growth = memory.stop()
    bound = sum(sorted(estimates)[-CONFIG.concurrency:]) + 300  # + the app's own working memory
    with capsys.disabled():
        print(f"\n{USERS} users, concurrency {CONFIG.concurrency}: all done in {wall:.1f} s; latency p50 "
              f"{latencies[USERS // 2]:.2f} s, max {latencies[-1]:.2f} s; model runs at once: {counter.peak}; "
              f"peak RSS growth {growth:.0f} MB (bound {bound:.0f} MB)")
    assert counter.total == USERS
    assert counter.peak == CONFIG.concurrency  # the limit is reached and never passed
    assert growth < bound

    deadline = time.monotonic() + 20
    while (list(app.workspace.root.iterdir()) or app.workspace.active_jobs()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftover_files(app.workspace.root) == [] and app.workspace.active_jobs() == 0
    assert list(app.workspace.root.iterdir()) == []
    # what is left are the users' uploads, for Gradio's cache cleanup (users may share an upload: same bytes, same path)
    assert {str(p) for p in leftover_files(gradio_dir)} <= set(app.demo.upload_file_set)
    app.close()
