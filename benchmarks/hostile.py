"""The worst request of each kind, measured: `python -m benchmarks.hostile [--cases a,b]`.

Each case runs in its own process with the tiny model loaded, and prints the time until the request was refused (or
answered) and how much the process's peak memory grew; the reference line is an ordinary request in the same run.
A bounded request costs about what the ordinary one costs, whatever its size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import peak_rss_mb, run_isolated

SHORT_SIDE = 128


def _video(folder: Path) -> np.ndarray:
    from referdino_demo.examples import synthetic_clip

    return synthetic_clip("red_ball", 4, (96, 128))


def ordinary(predictor, folder):
    predictor.segment(_video(folder), "the red ball", short_side=SHORT_SIDE)


def text_100kb(predictor, folder):
    """One expression of 100 KB (30 KB raised the app's memory by 1.5 GB before the cut-first masks)."""
    predictor.segment(_video(folder), "the red ball rolling " * 5000, short_side=SHORT_SIDE)


def text_official_mask_30kb(predictor, folder):
    """Reference: the official build-then-cut sub-sentence mask of a 30 KB expression (what was done before)."""
    import torch
    from transformers.models.grounding_dino.modeling_grounding_dino import (
        generate_masks_with_special_tokens_and_transfer_map as build_whole)

    from referdino_demo.preprocess.text import SPECIAL_TOKEN_IDS

    ids = predictor.tokenizer(["the red ball rolling " * 1500], return_tensors="pt")["input_ids"]
    build_whole(ids, torch.tensor(SPECIAL_TOKEN_IDS))


def lines_20000(predictor, folder):
    """20,000 distinct lines in one request (refused after 22 s before counting while reading)."""
    predictor.segment(_video(folder), "\n".join(f"object number {i}" for i in range(20_000)), short_side=SHORT_SIDE)


def strip_16000x16(predictor, folder):
    """A 16000x16 video: few pixels, a 360000x360 model input at the official short side."""
    predictor.segment(np.zeros((4, 16, 16000, 3), np.uint8), "the red ball", short_side=360)


def options_nan(predictor, folder):
    predictor.segment(_video(folder), "the red ball", short_side=SHORT_SIDE, query_decay=float("nan"))


def checkpoint_huge_ffn(predictor, folder):
    """A saved folder whose config declares ffn_dim 10^7 (allocated until killed before the bounds)."""
    from referdino_demo.checkpoints import load_model, save_model

    path = folder / "huge"
    save_model(predictor.model, path)
    config = json.loads((path / "config.json").read_text())
    config["ffn_dim"] = 10**7
    (path / "config.json").write_text(json.dumps(config))
    load_model(path)


def checkpoint_expanded_tensor(predictor, folder):
    """An official-format .pth with a 1 KB tensor that declares 10^7 x 256 elements (zero strides)."""
    import torch

    from referdino_demo.checkpoints import load_model

    path = folder / "expanded.pth"
    state = {"transformer.decoder.layers.0.linear1.weight": torch.zeros(256).expand(10**7, 256),
             "backbone.0.patch_embed.proj.weight": torch.zeros(96, 3, 4, 4)}
    torch.save({"model_state_dict": state}, path)
    load_model(path)


CASES = {f.__name__: f for f in (ordinary, text_100kb, text_official_mask_30kb, lines_20000, strip_16000x16,
                                 options_nan, checkpoint_huge_ffn, checkpoint_expanded_tensor)}


def measure(case: str) -> dict:
    from referdino_demo.errors import ReferDinoError
    from referdino_demo.predictor import ReferDinoPredictor

    predictor = ReferDinoPredictor.from_pretrained("tiny-random")
    with tempfile.TemporaryDirectory() as folder:
        ordinary(predictor, Path(folder))  # warm-up: the reference peak includes one ordinary request
        before = peak_rss_mb()
        start = time.perf_counter()
        try:
            CASES[case](predictor, Path(folder))
            outcome = "answered"
        except ReferDinoError as err:
            outcome = f"refused: {type(err).__name__}"
        seconds = time.perf_counter() - start
    return {"case": case, "seconds": seconds, "peak_growth_mb": peak_rss_mb() - before, "outcome": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, in this process (used by the table)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case)))
        return
    rows = [run_isolated("benchmarks.hostile", "--case", name) for name in args.cases.split(",")]
    reference = next((r["seconds"] for r in rows if r["case"] == "ordinary"), None)
    print("\n## Worst requests, tiny model (each in its own process, after one ordinary request)")
    print(f"{'case':28s} {'seconds':>8s} {'x ordinary':>10s} {'peak growth MiB':>16s}  outcome")
    for row in rows:
        ratio = f"{row['seconds'] / reference:10.2f}" if reference else f"{'-':>10s}"
        print(f"{row['case']:28s} {row['seconds']:8.3f} {ratio} {row['peak_growth_mb']:16.0f}  {row['outcome']}")


if __name__ == "__main__":
    main()
