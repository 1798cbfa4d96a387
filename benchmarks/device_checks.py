"""Checks for an accelerator (run by `benchmarks/gpu_check.sh`; any device works, the CPU included):

    python -m benchmarks.device_checks agreement --device cuda   # bf16 / fp16 results against fp32
    python -m benchmarks.device_checks compile --device cuda     # should the app offer torch.compile?

`agreement` runs the predictor on the parity fixture (`../shared/parity`: the official tiny config with random
weights, its frames and expression) in float32 and in each reduced precision, and prints how far the results
move: the chosen query, the largest change of a mean score, and the share of mask pixels that agree. `compile`
times Swin-B's backbone (half of its model time) eager and under `torch.compile`: the first call (compilation), a
call at a new input size (recompilation: every clip size is one) and the steady state, then prints the decision
by the rule in `COMPILE_RULE`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from .common import SHORT_SIDE, build, clip, synchronize

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "parity"
# Offer torch.compile only if it pays back within one typical request: steady state at least this much faster,
# and a recompilation (each new clip size) no longer than this many seconds.
COMPILE_RULE = {"min_speedup": 1.2, "max_recompile_s": 10.0}


def agreement(device: str, fixture: Path = FIXTURE) -> None:
    from referdino_demo.parity import build_model
    from referdino_demo.predictor import ReferDinoPredictor
    from referdino_demo.preprocess.text import load_tokenizer

    model, meta = build_model(fixture)
    tokenizer = load_tokenizer(fixture / "vocab.txt")
    frames = np.load(fixture / "frames.npy")
    options = dict(short_side=meta["preprocessing"]["resize_short_side"], max_long_side=None, memory_budget_mb=None)
    results = {}
    for dtype in ("float32", "bfloat16", "float16"):
        predictor = ReferDinoPredictor(model, tokenizer, device=device, dtype=dtype)
        results[dtype] = predictor.segment(frames, meta["text"]["expression"], **options)[0]
    reference = results["float32"]
    print(f"## reduced precision against float32 on {device} (parity fixture: {len(frames)} frames)")
    print(f"{'dtype':9s} {'same query':>10s} {'max |d mean score|':>18s} {'mask pixels agreeing':>20s}")
    for dtype, result in results.items():
        if dtype == "float32":
            continue
        # each at its own chosen query, as a user sees it
        agree = (result.masks() == reference.masks()).mean()
        scores = np.abs(result.mean_scores - reference.mean_scores).max()
        print(f"{dtype:9s} {str(result.query == reference.query):>10s} {scores:18.2e} {agree:20.4%}")


def _timed(function, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


@torch.inference_mode()
def compile_decision(device: str, config: str = "swin_b", frames: int = 4, repeats: int = 3) -> None:
    from referdino_demo.preprocess.frames import preprocess_frames

    model = build(config, device)
    pixels = preprocess_frames(clip(frames), SHORT_SIDE[config]).to(device)
    other = preprocess_frames(clip(frames, (480, 640)), SHORT_SIDE[config]).to(device)  # another size: another graph
    eager = model.backbone
    compiled = torch.compile(model.backbone)
    _timed(lambda: eager(pixels), device)  # warm-up
    eager_s = statistics.median(_timed(lambda: eager(pixels), device) for _ in range(repeats))
    print(f"## torch.compile of the {config} backbone on {device}, {frames} frames of 360x640 at short side "
          f"{SHORT_SIDE[config]}")
    try:
        first_s = _timed(lambda: compiled(pixels), device)
    except Exception as err:  # noqa: BLE001 - a compiler failure is a finding, not a crash of the check
        reason = " ".join(str(err).split())[:300]
        print(f"eager {eager_s:.3f} s; compilation failed: {type(err).__name__}: {reason}")
        print("decision: do not offer torch.compile (it does not compile this model here)")
        return
    steady_s = statistics.median(_timed(lambda: compiled(pixels), device) for _ in range(repeats))
    recompile_s = _timed(lambda: compiled(other), device)
    speedup = eager_s / steady_s
    offer = speedup >= COMPILE_RULE["min_speedup"] and recompile_s <= COMPILE_RULE["max_recompile_s"]
    print(f"eager {eager_s:.3f} s; compiled: first call {first_s:.1f} s, steady {steady_s:.3f} s "
          f"({speedup:.2f}x), a new clip size {recompile_s:.1f} s")
    print(f"decision: {'offer' if offer else 'do not offer'} torch.compile (rule: at least "
          f"{COMPILE_RULE['min_speedup']}x and a recompilation within {COMPILE_RULE['max_recompile_s']:g} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=("agreement", "compile"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default="swin_b", help="the model of the compile check")
    args = parser.parse_args()
    if args.check == "agreement":
        agreement(args.device)
    else:
        compile_decision(args.device, args.config)


if __name__ == "__main__":
    main()
