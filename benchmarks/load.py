"""Load test of the Gradio app: `python -m benchmarks.load [--users 1,4,8] [--requests 3] [--concurrency 2]`.

Launches the app in this process (as `app.py` does: the model event limited to `--concurrency` runs, the default
workspace inside Gradio's upload folder), then for each user count starts that many `gradio_client` users at once,
each sending `--requests` /segment calls in a row with its own expression. Prints per user count: request latency
p50/p95, throughput, the process's peak resident memory (server and clients together), the most model runs seen at
once, and the result files left in Gradio's folder once every user has left (should be 0; uploads are shared by
content between users and left to Gradio's cache expiry, so they are counted apart). Defaults: the tiny random model
on the CPU, a 12-frame 180x320 clip at model short side 160.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import clip, peak_rss_mb


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1,4,8", help="comma-separated numbers of simultaneous users")
    parser.add_argument("--requests", type=int, default=3, help="/segment calls per user, one after the other")
    parser.add_argument("--concurrency", type=int, default=2, help="model runs at the same time (app --concurrency)")
    parser.add_argument("--checkpoint", default="tiny-random")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", default="180x320", help="clip height x width")
    parser.add_argument("--short-side", type=int, default=160)
    parser.add_argument("--device", default=None)
    return parser.parse_args(argv)


class RunCounter:
    """Wraps `predictor.segment` to count the model runs in progress; `peak` is the most seen at once,
    `total` the number started (also used by the reliability tests)."""

    def __init__(self, predictor):
        self.running = self.peak = self.total = 0
        self._lock = threading.Lock()
        original = predictor.segment

        def counted(*args, **kwargs):
            with self._lock:
                self.running += 1
                self.total += 1
                self.peak = max(self.peak, self.running)
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.running -= 1

        predictor.segment = counted

    def reset(self) -> None:
        with self._lock:
            self.peak = self.running


class RssSampler:
    """Peak resident memory (MiB) of this process, sampled every 20 ms between start() and stop()."""

    @staticmethod
    def now() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def start(self) -> None:
        self.peak, self._stop = self.now(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def files_in(folder: Path, uploads: set[str] = frozenset()) -> int:
    """Files under `folder` that are not in `uploads` (os.walk skips folders removed meanwhile)."""
    return sum(str(Path(root) / name) not in uploads for root, _, files in os.walk(folder) for name in files)


def main(argv=None) -> None:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="referdino-load-"))  # everything this run writes; removed at the end
    gradio_dir = work / "gradio"
    os.environ.update(GRADIO_TEMP_DIR=str(gradio_dir), GRADIO_ANALYTICS_ENABLED="False",
                      GRADIO_HEARTBEAT_INTERVAL="0.25")  # before gradio is imported: sessions end quickly

    from gradio_client import Client, handle_file

    from referdino_demo.io import write_video
    from referdino_demo.ui.gradio_app import build_demo
    from referdino_demo.ui.config import AppConfig
    from referdino_demo.ui.session import PredictorRegistry

    height, width = (int(v) for v in args.size.split("x"))
    video = write_video(work / "clip.mp4", clip(args.frames, (height, width)), 12)
    config = AppConfig(default_checkpoint=args.checkpoint, max_frames=max(args.frames, 2), short_side=args.short_side,
                       concurrency=args.concurrency)
    registry = PredictorRegistry(device=args.device)
    counter = RunCounter(registry.get(args.checkpoint))
    demo = build_demo(config, registry)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.queue(default_concurrency_limit=max(2, args.concurrency), max_size=256).launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
        max_file_size=config.max_upload_bytes)

    def one_user(index: int, count: int, barrier: threading.Barrier) -> list[float]:
        client = Client(url, verbose=False, download_files=tempfile.mkdtemp(dir=work, prefix="client-"))
        latencies = []
        try:
            barrier.wait(timeout=120)
            for request in range(count):
                started = time.perf_counter()
                client.predict(video=handle_file(str(video)), expressions=f"object {index} request {request}",
                               short_side=args.short_side, api_name="/segment")
                latencies.append(time.perf_counter() - started)
        finally:
            client.close()
        return latencies

    print(f"referdino-demo load test: checkpoint {args.checkpoint}, clip {args.frames} frames {width}x{height}, "
          f"short side {args.short_side}, concurrency {args.concurrency}, {args.requests} requests per user, "
          f"{os.cpu_count()} CPUs")
    one_user(-1, 1, threading.Barrier(1))  # warm-up, not measured
    print(f"{'users':>5} {'requests':>8} {'p50 s':>7} {'p95 s':>7} {'req/s':>7} {'peak RSS MiB':>12} "
          f"{'runs at once':>12} {'results left':>12} {'uploads kept':>12}")
    sampler = RssSampler()
    for users in (int(u) for u in args.users.split(",")):
        counter.reset()
        sampler.start()
        barrier = threading.Barrier(users)
        started = time.perf_counter()
        with ThreadPoolExecutor(users) as pool:
            latencies = [t for result in pool.map(lambda i: one_user(i, args.requests, barrier), range(users))
                         for t in result]
        wall = time.perf_counter() - started
        peak = sampler.stop()
        deadline = time.monotonic() + 20  # every user has left: their sessions' files should go
        uploads = set(demo.upload_file_set)
        while files_in(gradio_dir, uploads) and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"{users:5d} {len(latencies):8d} {statistics.median(latencies):7.2f} {percentile(latencies, 0.95):7.2f} "
              f"{len(latencies) / wall:7.2f} {peak:12.0f} {counter.peak:12d} {files_in(gradio_dir, uploads):12d} "
              f"{len(uploads):12d}")
    print(f"process peak RSS over the whole run: {peak_rss_mb():.0f} MiB")
    demo.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
