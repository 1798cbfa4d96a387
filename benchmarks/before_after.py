"""Ours against the code before the CPU work on shared machines, in alternating runs:
`python -m benchmarks.before_after [--config swin_b] [--frames 4] [--rounds 3]`.

"Before" is `benchmarks.stages` with transformers' Swin forward, torch's linear layers and no frame streams
(`--swin transformers --linears torch --streams off`), everything else equal: same random weights, same frames, same threads. The two variants run in
turns, each in a fresh process, and each cell is the median over `--rounds`, so that load from other work moves
both alike. Prints seconds per stage and the speed-up (before / ours).
"""

from __future__ import annotations

import argparse
import os
import statistics

from .common import run_isolated
from .run import BEFORE
SHOWN = ("backbone", "encoder", "decoder", "pixel_decoder", "mask_decoder")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="swin_b")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = ["--config", args.config, "--frames", str(args.frames), "--no-flops"]
    runs: dict[str, list[dict]] = {"before": [], "ours": []}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        runs["before"].append(run_isolated("benchmarks.stages", *base, *BEFORE))
        runs["ours"].append(run_isolated("benchmarks.stages", *base))

    def median(name: str, key: str) -> float:
        return statistics.median(run["seconds"][key] if key in run["seconds"] else run[key] for run in runs[name])

    print(f"## {args.config}, {args.frames} frames at 360x640: before vs ours, median of {args.rounds} alternating "
          f"rounds (load average {load:.2f} before, {os.getloadavg()[0]:.2f} after)")
    print(f"{'':8s} " + " ".join(f"{name:>13s}" for name in (*SHOWN, "model_seconds")))
    for name in runs:
        print(f"{name:8s} " + " ".join(f"{median(name, key):13.3f}" for key in (*SHOWN, "model_seconds")))
    print(f"{'speed-up':8s} " + " ".join(f"{median('before', key) / median('ours', key):12.2f}x"
                                         for key in (*SHOWN, "model_seconds")))


if __name__ == "__main__":
    main()
