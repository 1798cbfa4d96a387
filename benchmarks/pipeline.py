"""The predictor on a synthetic clip: `python -m benchmarks.pipeline --config tiny --frames 30 --expressions 2`.

Prints one JSON line: seconds, frames/second and peak RSS of this process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from referdino_demo.predictor import ReferDinoPredictor
from referdino_demo.preprocess.text import synthetic_tokenizer

from .common import SHORT_SIDE, build, clip, peak_rss_mb

EXPRESSIONS = ["the red ball", "the blue square", "the sky", "the ground", "a bird", "a car", "a tree", "a cloud"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--expressions", type=int, default=1)
    parser.add_argument("--size", type=int, nargs=2, default=(180, 320))
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--feature-budget-mb", default="auto", help='MB, or "auto" (the predictor\'s default)')
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--short-side", type=int, help="model input short side (default: the config's)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs; the median is reported")
    args = parser.parse_args()
    short_side = args.short_side or SHORT_SIDE[args.config]
    predictor = ReferDinoPredictor(build(args.config), synthetic_tokenizer(), device=args.device)
    frames = clip(args.frames, tuple(args.size))
    # Warm up on two frames (lazy initialisation), then measure.
    predictor.segment(frames[:2], EXPRESSIONS[: args.expressions], short_side=short_side)
    baseline = peak_rss_mb()
    budget = args.feature_budget_mb if args.feature_budget_mb == "auto" else float(args.feature_budget_mb)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = predictor.segment(frames, EXPRESSIONS[: args.expressions], short_side=short_side,
                                   chunk_size=args.chunk_size, feature_budget_mb=budget)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    print(json.dumps({"config": args.config, "frames": args.frames, "expressions": args.expressions,
                      "short_side": short_side, "seconds": seconds, "fps": args.frames / seconds,
                      "peak_rss_mb": peak_rss_mb(),
                      "rss_before_mb": baseline, "mask_feature_passes": result.timings["mask_feature_passes"],
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
