"""Time ``j_and_f`` on one 100-frame 480x854 (DAVIS 480p) expression: ``python -m benchmarks.bench_metrics``.

Two kinds of random masks: ellipse blobs (object-like, the realistic case) and independent pixel noise (the
worst case for F: nearly every pixel is a boundary pixel).
"""

from __future__ import annotations

import time

import numpy as np

from referdino_demo.evaluation import j_and_f

SHAPE = (100, 480, 854)


def _blobs(rng: np.random.Generator) -> np.ndarray:
    # Object-like masks: the union of three random ellipses per frame.
    _, h, w = SHAPE
    yy, xx = np.ogrid[:h, :w]
    masks = np.zeros(SHAPE, dtype=bool)
    for frame in masks:
        for cy, cx, ry, rx in rng.uniform((0, 0, 20, 20), (h, w, 150, 200), size=(3, 4)):
            frame |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return masks


def _best_time(pred: np.ndarray, gt: np.ndarray, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        j_and_f(pred, gt)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    rng = np.random.default_rng(0)
    cases = {
        "blobs": (_blobs(rng), _blobs(rng)),
        "pixel noise": (rng.random(SHAPE) < 0.5, rng.random(SHAPE) < 0.5),
    }
    for name, (pred, gt) in cases.items():
        print(f"j_and_f {name:>11}, {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}: {_best_time(pred, gt):.3f} s (best of 3)")


if __name__ == "__main__":
    main()
