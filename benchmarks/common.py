"""Helpers shared by the benchmarks: models at each size, inputs, timing and memory."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch

from referdino_demo.examples import synthetic_clip
from referdino_demo.model import ReferDinoConfig, ReferDinoModel
from referdino_demo.preprocess.text import caption_for, synthetic_tokenizer, tokenize

CONFIGS = {"tiny": ReferDinoConfig.tiny, "swin_t": ReferDinoConfig.swin_t, "swin_b": ReferDinoConfig.swin_b}
# The model input's short side per config: the official 360 for full-size models, less for the tiny one.
SHORT_SIDE = {"tiny": 160, "swin_t": 360, "swin_b": 360}


def build(config_name: str, device: str = "cpu") -> ReferDinoModel:
    """A random-weight model (same cost as trained weights)."""
    torch.manual_seed(0)
    return ReferDinoModel(CONFIGS[config_name]()).eval().to(device)


def clip(num_frames: int, size: tuple[int, int] = (360, 640)) -> np.ndarray:
    return synthetic_clip("red_ball", num_frames, size)


def text(expression: str = "the red ball moving to the left"):
    return tokenize(caption_for(expression), synthetic_tokenizer())


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def timer(results: dict, name: str, device="cpu"):
    synchronize(device)
    start = time.perf_counter()
    yield
    synchronize(device)
    results[name] = results.get(name, 0.0) + time.perf_counter() - start


def run_isolated(module: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run `python -m module args` in a fresh process (so peak memory is its own; in `env`, default this one's) and
    parse its JSON line."""
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])
