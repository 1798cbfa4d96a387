"""Shared CPUs: `python -m benchmarks.neighbour [--configs tiny,swin_t] [--rounds 3] [--spin-counts 2000,4000]
[--api] [--no-jobs]`.

1. Each config's model time (`benchmarks.stages`) alone ("quiet") and beside a neighbour: another process running a
   2-thread PyTorch loop of small matmuls with OpenMP's defaults, as another user's job would. Each variant is a set
   of the package's settings: "plain" runs as plain torch would (OpenMP threads with libgomp's long spin-wait:
   `REFERDINO_FRAME_STREAMS=0 REFERDINO_OPENMP_DEFAULTS=0`), "ours" with the package's defaults (per-frame stages
   in frame streams, `referdino_demo/model/streams.py`, and a short spin, `referdino_demo/threads.py`), and each of
   the two alone. Runs alternate, and each cell is the median over `--rounds`, so that a noisy machine moves every
   column alike; "quiet cost" is against "plain". "background CPUs" is what other processes used while the quiet
   runs ran. `--spin-counts` adds a row per `GOMP_SPINCOUNT` value (with streams): the trade-off between the quiet
   cost (idle threads that sleep sooner must be woken more often) and the cost beside the neighbour (threads that
   spin longer waste the shared cores). `--api` times the public API end to end instead
   (`ReferDinoPredictor.segment`, what the CLI and the app call; median of 3 calls after a warm-up per process).
2. Jobs in one process (`--jobs-config`, default Swin-T on 2 frames) through `ReferDinoPredictor.segment`, as the
   app's workers run them (`app.py --concurrency 2`): 1 job at a time, 2 at once sharing the `ThreadBudget` (half the
   threads each), and 2 at once each with every thread (as before the budget), in jobs/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# The frames of each config's runs (at `common.SHORT_SIDE`: the tiny model at 160, the others at 360).
FRAMES = {"tiny": 8, "swin_t": 4, "swin_b": 4}
SETTINGS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "REFERDINO_OPENMP_DEFAULTS", "REFERDINO_FRAME_STREAMS")

# The variants: settings over this environment's (label -> environment overrides).
PLAIN = {"REFERDINO_FRAME_STREAMS": "0", "REFERDINO_OPENMP_DEFAULTS": "0"}
VARIANTS = {"plain": PLAIN, "ours": {}, "streams only": {"REFERDINO_OPENMP_DEFAULTS": "0"},
            "spin only": {"REFERDINO_FRAME_STREAMS": "0"}}


def _environment(settings: dict[str, str]) -> dict[str, str]:
    """This environment without the `SETTINGS`, then `settings` (none: the package's own)."""
    return {**{k: v for k, v in os.environ.items() if k not in SETTINGS}, **settings}


def neighbour_loop(seconds: float, size: int = 256) -> None:
    """The neighbour: 2 torch threads multiplying `size` x `size` matrices for `seconds`."""
    import torch

    torch.set_num_threads(2)
    a, b = torch.randn(size, size), torch.randn(size, size)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(100):
            torch.mm(a, b)


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (0, 0 where unreadable)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def model_seconds(config: str, settings: dict[str, str], neighbour: bool, api: bool = False) -> tuple[float, float]:
    """(model seconds of one `benchmarks.stages` run under `settings`, or with `api` the seconds of one
    `ReferDinoPredictor.segment` call end to end; CPUs used by other processes meanwhile (quiet runs))."""
    env = _environment(settings)
    other = None
    if neighbour:
        other = subprocess.Popen([sys.executable, "-m", "benchmarks.neighbour", "--neighbour", "3600"],
                                 env=_environment(PLAIN))
        time.sleep(1.0)  # its threads are up and spinning
    from .common import run_isolated  # here: the neighbour itself needs only torch

    busy, children, start = _cpu_busy()[0], _children_cpu(), time.monotonic()
    try:
        run = (run_isolated("benchmarks.neighbour", "--segment", config, env=env) if api else
               run_isolated("benchmarks.stages", "--config", config, "--frames", str(FRAMES[config]), "--no-flops",
                            env=env))
    finally:
        if other is not None:
            other.kill()
            other.wait()
    background = (_cpu_busy()[0] - busy - (_children_cpu() - children)) / (time.monotonic() - start)
    return run["model_seconds"], background


def segment_call(config: str, frames: int):
    """A function that runs one `ReferDinoPredictor.segment` call (the public API end to end: preprocessing, model,
    scores, masks) of `config`, random weights, on `frames` frames."""
    from referdino_demo.predictor import ReferDinoPredictor
    from referdino_demo.preprocess.text import synthetic_tokenizer

    from .common import SHORT_SIDE, build, clip

    segmenter = ReferDinoPredictor(build(config), synthetic_tokenizer(), device="cpu")
    video = clip(frames)
    return lambda: segmenter.segment(video, "the red ball moving to the left", short_side=SHORT_SIDE[config])


def segment_seconds(config: str, repeats: int = 3) -> dict:
    """{"model_seconds": the median seconds of `repeats` `segment_call`s on the config's frames, after a warm-up}."""
    call = segment_call(config, FRAMES[config])
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {"model_seconds": statistics.median(times[1:])}


def neighbour_table(configs: list[str], rounds: int, spin_counts: tuple[int, ...] = (), api: bool = False) -> None:
    measured = "`ReferDinoPredictor.segment` seconds" if api else "model seconds"
    print(f"\n## {measured} beside a 2-thread PyTorch neighbour on {os.cpu_count()} CPUs (median of {rounds} "
          f"alternating rounds)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'config':8s} {'variant':12s} {'quiet s':>8s} {'neighbour s':>11s} {'ratio':>6s} {'quiet cost':>10s} "
          f"{'background CPUs':>15s}")
    variants = {**VARIANTS, **{f"spin {n}": {"GOMP_SPINCOUNT": str(n)} for n in spin_counts}}
    for config in configs:
        times: dict[tuple[str, bool], list[float]] = {}
        background: list[float] = []
        for _ in range(rounds):
            for label, settings in variants.items():
                for neighbour in (False, True):
                    seconds, others = model_seconds(config, settings, neighbour, api)
                    times.setdefault((label, neighbour), []).append(seconds)
                    if not neighbour:
                        background.append(others)
        plain = statistics.median(times["plain", False])
        for label in variants:
            quiet = statistics.median(times[label, False])
            busy = statistics.median(times[label, True])
            print(f"{config:8s} {label:12s} {quiet:8.3f} {busy:11.3f} {busy / quiet:6.2f} "
                  f"{quiet / plain - 1:+10.1%} {statistics.median(background):15.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def jobs_throughput(config: str, frames: int, jobs: int = 4) -> dict:
    """In this process, through `ReferDinoPredictor.segment` (what the app's worker threads call): `jobs` jobs
    (`config` on `frames` frames) one at a time, two at once sharing the process's `ThreadBudget`, and two at once
    each with every thread (the budget's share replaced by its total, as before it existed); -> jobs/s of each."""
    import threading
    from unittest import mock

    from referdino_demo import predictor as predictor_module
    from referdino_demo.threads import ThreadBudget

    call = segment_call(config, frames)
    budget = predictor_module.default_budget()

    def run(parallel: int, shared: bool) -> float:
        def worker(count: int) -> None:
            for _ in range(count):
                call()

        threads = [threading.Thread(target=worker, args=(jobs // parallel,)) for _ in range(parallel)]
        unshared = mock.patch.object(ThreadBudget, "share_of", lambda self, job: self.total)
        start = time.perf_counter()
        with contextlib.nullcontext() if shared else unshared:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return jobs / (time.perf_counter() - start)

    run(1, True)  # warm-up
    return {"threads": budget.total, "one_at_a_time": run(1, True), "two_budget": run(2, True),
            "two_unbudgeted": run(2, False)}


def jobs_table(config: str, frames: int) -> None:
    from .common import SHORT_SIDE, run_isolated

    run = run_isolated("benchmarks.neighbour", "--jobs", config, "--jobs-frames", str(frames),
                       env=_environment({}))
    one = run["one_at_a_time"]
    print(f"\n## Jobs in one process: {config}, {frames} frames at short side {SHORT_SIDE[config]}, a budget of "
          f"{run['threads']} threads")
    print(f"{'':34s} {'jobs/s':>7s} {'x one at a time':>15s}")
    for name, label in (("one_at_a_time", "1 at a time (all threads)"),
                        ("two_budget", "2 at once, thread budget (shared)"),
                        ("two_unbudgeted", "2 at once, no budget (each all)")):
        print(f"{label:34s} {run[name]:7.2f} {run[name] / one:15.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,swin_t")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spin-counts", default="", help="also these GOMP_SPINCOUNT values, comma-separated")
    parser.add_argument("--api", action="store_true", help="time the public API end to end "
                                                           "(`ReferDinoPredictor.segment`) instead of the model stages")
    parser.add_argument("--no-jobs", action="store_true", help="skip the jobs-in-one-process table")
    parser.add_argument("--jobs-config", default="swin_t", help="the model of the jobs table")
    parser.add_argument("--jobs-frames", type=int, default=2, help="frames per job in the jobs table")
    parser.add_argument("--neighbour", type=float, help=argparse.SUPPRESS)  # be the neighbour for this many seconds
    parser.add_argument("--jobs", help=argparse.SUPPRESS)  # the jobs measurement of this config, here
    parser.add_argument("--segment", help=argparse.SUPPRESS)  # `segment_seconds` of this config, here
    args = parser.parse_args()
    if args.neighbour:
        neighbour_loop(args.neighbour)
    elif args.jobs:
        print(json.dumps(jobs_throughput(args.jobs, args.jobs_frames)))
    elif args.segment:
        print(json.dumps(segment_seconds(args.segment)))
    else:
        neighbour_table(args.configs.split(","), args.rounds, tuple(int(n) for n in args.spin_counts.split(",") if n),
                        args.api)
        if not args.no_jobs:
            jobs_table(args.jobs_config, args.jobs_frames)


if __name__ == "__main__":
    main()
