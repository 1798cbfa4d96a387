"""Where the time goes: floating-point operations per stage against the machine's matmul throughput.

`FlopCounting` hooks count each stage's operations with `torch.utils.flop_counter.FlopCounterMode`, which counts
matrix products, convolutions and attention (2 per multiply-add) and nothing else: elementwise work, norms,
softmax and the deformable sampling (`embedding_bag` gathers) cost time but count 0. A stage's achieved GFLOP/s
against `matmul_gflops` (a large matmul on the same machine, same threads, same run, the faster of torch's and
oneDNN's) says how far it is from what the machine can do: near 1 it is compute-bound matmuls; low, its time goes
to memory traffic or small ops.
`TimeSplit` says which: the share of each stage's time in matmul kernels and in the deformable sampling (memory-bound
gathers), from a profiled pass.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from referdino_demo.model.schedule import StageHooks

from .common import synchronize


if hasattr(torch.ops.mkldnn, "_linear_pointwise"):  # the oneDNN linear layers (`model/layers.py`) count as matmuls
    @register_flop_formula(torch.ops.mkldnn._linear_pointwise)
    def _onednn_linear_flops(x_shape, w_shape, *args, **kwargs) -> int:
        return 2 * math.prod(x_shape[:-1]) * w_shape[0] * w_shape[1]


def matmul_gflops(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048,
                  repeats: int = 10) -> dict[str, float]:
    """GFLOP/s of a `size` x `size` matmul on `device` (median of `repeats` after a warm-up): torch's `mm` and, on
    a CPU in float32, the oneDNN path the model's linear layers take (`model/layers.linear`; on AMD CPUs torch's
    MKL runs AVX2 code, oneDNN AVX-512)."""
    from referdino_demo.model.layers import linear

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    kernels = {"torch.mm": lambda: torch.mm(a, b)}
    if torch.device(device).type == "cpu" and dtype == torch.float32:
        kernels["oneDNN linear"] = lambda: linear(a, b)
    rates = {}
    with torch.inference_mode():
        for name, kernel in kernels.items():
            times = []
            for index in range(repeats + 2):
                synchronize(device)
                start = time.perf_counter()
                kernel()
                synchronize(device)
                if index >= 2:
                    times.append(time.perf_counter() - start)
            rates[name] = 2 * size**3 / statistics.median(times) / 1e9
    return rates


class FlopCounting(StageHooks):
    """Adds each stage's floating-point operations to `flops[name]` (stage names as `STAGES`)."""

    frame_streams = False  # the counting mode sees the calling thread only

    def __init__(self, flops: dict[str, int]):
        super().__init__()
        self.flops = flops

    @contextlib.contextmanager
    def stage(self, name: str):
        with FlopCounterMode(display=False) as counter:
            yield
        self.flops[name] = self.flops.get(name, 0) + counter.get_total_flops()


# The kernels that do a stage's counted operations: matrix products, convolutions, attention.
MATMUL_KERNELS = frozenset({
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise", "aten::mkldnn_convolution",
    "aten::thnn_conv2d", "aten::_slow_conv2d_forward", "aten::_scaled_dot_product_flash_attention_for_cpu"})


class TimeSplit(StageHooks):
    """Splits each stage's time into its parts: "matmul" (the `MATMUL_KERNELS`' own time), "sampling" (inside
    `model.deformable.PROFILER_LABEL`) and "total", in seconds added to `split[name]`, from one `torch.profiler` run
    around `profiled()` (CPU). Profiling slows small ops down, so the benchmarks use the parts' shares of "total",
    not their seconds."""

    frame_streams = False  # its stage ranges nest the operations of the calling thread only

    def __init__(self, split: dict[str, dict[str, float]]):
        super().__init__()
        self.split = split

    def stage(self, name: str):
        return torch.profiler.record_function(f"{_STAGE}{name}")

    @contextlib.contextmanager
    def profiled(self):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            yield
        for event in profile.events():
            if event.name.startswith(_STAGE):
                parts = self.split.setdefault(event.name.removeprefix(_STAGE),
                                              {"matmul": 0.0, "sampling": 0.0, "total": 0.0})
                parts["total"] += event.cpu_time_total / 1e6
                for inner in _descendants(event):
                    if inner.name in MATMUL_KERNELS:
                        parts["matmul"] += inner.self_cpu_time_total / 1e6
                    elif inner.name == _sampling_label():
                        parts["sampling"] += inner.cpu_time_total / 1e6


_STAGE = "stage "


def _sampling_label() -> str:
    from referdino_demo.model.deformable import PROFILER_LABEL

    return PROFILER_LABEL


def _descendants(event):
    """Every event inside `event` (children first found, then theirs), skipping below a sampling range: its time
    counts once, as sampling."""
    stack = list(event.cpu_children)
    while stack:
        inner = stack.pop()
        yield inner
        if inner.name != _sampling_label():
            stack.extend(inner.cpu_children)


def flop_table(seconds: dict[str, float], flops: dict[str, int], matmul: dict[str, float],
               dtype: str = "float32", split: dict[str, dict[str, float]] | None = None) -> str:
    """One line per stage with operations: GFLOP, seconds, achieved GFLOP/s and its share of the fastest matmul in
    `matmul` (`matmul_gflops`); with a `TimeSplit`'s `split`, also the shares of the stage's time in matmul kernels
    and in deformable sampling, and the GFLOP/s of the matmul kernels alone (what the stage would reach if all its
    time went to them)."""
    peak_gflops = max(matmul.values())
    header = f"{'stage':18s} {'GFLOP':>8s} {'seconds':>8s} {'GFLOP/s':>8s} {'of matmul':>9s}"
    if split:
        header += f" {'in matmul':>9s} {'matmul GFLOP/s':>14s} {'of matmul':>9s} {'sampling':>8s}"
    lines = [header]
    for name, count in flops.items():
        if name not in seconds:
            continue
        achieved = count / seconds[name] / 1e9
        line = f"{name:18s} {count / 1e9:8.2f} {seconds[name]:8.3f} {achieved:8.1f} {achieved / peak_gflops:9.1%}"
        if split and name in split and split[name]["total"] > 0:
            parts = split[name]
            in_matmul, sampling = parts["matmul"] / parts["total"], parts["sampling"] / parts["total"]
            kernels = count / (in_matmul * seconds[name]) / 1e9 if in_matmul > 0 else float("nan")
            line += f" {in_matmul:9.1%} {kernels:14.1f} {kernels / peak_gflops:9.1%} {sampling:8.1%}"
        lines.append(line)
    total_flops = sum(flops.values())
    total_seconds = sum(seconds[name] for name in flops if name in seconds)
    achieved = total_flops / total_seconds / 1e9
    lines.append(f"{'model':18s} {total_flops / 1e9:8.2f} {total_seconds:8.3f} {achieved:8.1f} "
                 f"{achieved / peak_gflops:9.1%}")
    rates = ", ".join(f"{name} {rate:.1f}" for name, rate in matmul.items())
    lines.append(f"{dtype} matmul 2048x2048 on this machine now, GFLOP/s: {rates}")
    return "\n".join(lines)
