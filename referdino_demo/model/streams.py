"""Frame streams: a per-frame stage run on parts of a chunk at once, each part in its own thread.

Why: a CPU stage's operations are parallel regions of OpenMP threads that meet at the end of every region, a few
thousand times a run. When another process holds one of the cores, each meeting waits for a time slice, and a stage
of small operations runs 10-50x slower; spinning less (`threads.OPENMP_DEFAULTS`) trades that against waking
sleeping threads on a quiet machine. Frames are independent up to the tracker, so a chunk can instead be split into
parts of consecutive frames that run side by side, each in a thread of its own with a torch thread count of 1: no
thread waits for another inside a stage, and torch releases the GIL inside its operations. `benchmarks.neighbour`
compares both.

`FrameStreams(threads, count)` splits into at most `min(count, MAX_STREAMS)` parts, one stream each (count: by
default one per thread), and each stream gets its share of the threads, at least 1. One part runs in the calling
thread as it is, so on a GPU, with one stream, or for a one-frame chunk, nothing changes.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

# More streams would contend for the GIL between operations; measured only on 2 cores (`benchmarks.neighbour`).
# Above it, each stream runs OpenMP threads of its own.
MAX_STREAMS = 4
STREAMS_ENV = "REFERDINO_FRAME_STREAMS"  # "0": per-frame stages run in the calling thread (OpenMP threads only)

_enabled = os.environ.get(STREAMS_ENV, "1") != "0"
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()

Result = TypeVar("Result")


def set_frame_streams(enabled: bool) -> None:
    """Let CPU runs split chunks into frame streams (the default; `REFERDINO_FRAME_STREAMS=0` in the environment
    makes the default off) or always run every frame in the calling thread."""
    global _enabled
    _enabled = enabled


class FrameStreams:
    """Splits chunks of frames into parts and runs a function on the parts at once.

    threads: the torch threads the work may use, shared among the parts' threads (the first `threads % parts`
    get one more), at least 1 each. count: the streams, by default one per thread; 1 runs every part in the
    calling thread, one after the other. More streams than threads over-subscribe the CPUs, which stream threads
    afford: they do not spin while they wait.
    """

    def __init__(self, threads: int = 1, count: int | None = None):
        self.threads = max(1, threads)
        self.count = max(1, self.threads if count is None else count)

    @classmethod
    def for_device(cls, device: torch.device, allowed: bool = True, count: int | None = None) -> "FrameStreams":
        """`count` streams (default: one per torch thread of the calling thread) over the calling thread's torch
        threads on a CPU, if `allowed` and not switched off by `set_frame_streams`; a single stream elsewhere."""
        if torch.device(device).type != "cpu" or not (allowed and _enabled):
            return cls(1)
        return cls(torch.get_num_threads(), count)

    def split(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """frames (t, ...) -> views of at most `min(count, MAX_STREAMS, t)` consecutive parts, of sizes that
        differ by at most one (larger first)."""
        count = max(1, min(self.count, MAX_STREAMS, frames.shape[0]))
        base, extra = divmod(frames.shape[0], count)
        return list(torch.split(frames, [base + (index < extra) for index in range(count)]))

    def map(self, function: Callable[..., Result], *parts: Sequence) -> list[Result]:
        """[function(*args) for args in zip(*parts)], the calls at once, each in its own thread (the first in the
        calling thread) with its share of the torch threads, and the calling thread's grad, inference and CPU
        autocast modes (thread-local in torch). Waits for every call; then raises the first call's error, if any."""
        calls = list(zip(*parts))
        if len(calls) == 1 or self.count == 1:
            return [function(*args) for args in calls]
        modes = _Modes.of_calling_thread()
        base, extra = divmod(self.threads, len(calls))
        shares = [max(1, base + (index < extra)) for index in range(len(calls))]
        futures = [_executor().submit(modes.run, share, function, args) for share, args in zip(shares[1:], calls[1:])]
        try:
            first = modes.run(shares[0], function, calls[0])
        finally:
            concurrent.futures.wait(futures)
        return [first, *(future.result() for future in futures)]


@dataclass(frozen=True)
class _Modes:
    """The thread-local torch modes a stream inherits from the thread that started it."""

    grad: bool
    inference: bool
    autocast: bool
    autocast_dtype: torch.dtype

    @classmethod
    def of_calling_thread(cls) -> "_Modes":
        return cls(torch.is_grad_enabled(), torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu"),
                   torch.get_autocast_dtype("cpu"))

    def run(self, threads: int, function: Callable[..., Result], args: tuple) -> Result:
        """function(*args) in these modes with `threads` torch threads; the thread's own count is restored after."""
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with (torch.inference_mode(self.inference), torch.set_grad_enabled(self.grad),
                  torch.autocast("cpu", dtype=self.autocast_dtype, enabled=self.autocast)):
                return function(*args)
        finally:
            torch.set_num_threads(previous)


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """The process's stream threads, started as needed and kept (a thread's torch state is made once)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="referdino-stream")
        return _pool
