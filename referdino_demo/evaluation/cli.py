"""`referdino evaluate` and `python -m referdino_demo.evaluation`: benchmark evaluation from the terminal.

    referdino evaluate --benchmark mevis --data-root data/mevis --split valid_u --out out/mevis
    torchrun --nproc-per-node 8 -m referdino_demo.evaluation --benchmark ytvos --data-root data/ref_youtube_vos \\
        --out out/ytvos

Both take the same options; under torchrun every process runs the same command (see `distributed`).
Errors a user can fix print one line and exit 1 (usage errors, e.g. a number out of range: exit 2); options are
checked before the dataset is read, the dataset before the checkpoint loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..hub import CHECKPOINT_ENV, HUB_REPO
from ..console import OneLineParser
from ..errors import ConfigError
from ..options import DEFAULT_SHORT_SIDE, option_type
from .datasets import BENCHMARKS, DEFAULT_SPLITS

DESCRIPTION = ("Evaluate ReferDINO on Ref-YouTube-VOS, Ref-DAVIS17 or MeViS: write the predictions in each "
               "benchmark's layout, score splits with local ground truth, zip server submissions. Resumable; "
               "runs under torchrun.")
# The released checkpoint of each benchmark (no Ref-DAVIS17 one is released; the Ref-YouTube-VOS one is used,
# the ReferFormer convention).
BENCHMARK_CHECKPOINTS = {"ytvos": "ryt_swinb.pth", "davis": "ryt_swinb.pth", "mevis": "mevis_swinb.pth"}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The evaluation options, shared by the subcommand and the module entry point."""
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS,
                        help="ytvos (Ref-YouTube-VOS), davis (Ref-DAVIS17) or mevis (MeViS)")
    parser.add_argument("--data-root", required=True, type=Path,
                        help="benchmark folder, e.g. data/ref_youtube_vos, data/ref_davis, data/mevis")
    parser.add_argument("--split", help="split to run (default: " +
                        ", ".join(f"{b} {s}" for b, s in DEFAULT_SPLITS.items()) + ")")
    parser.add_argument("--out", required=True, type=Path, help="output folder (predictions, metrics, zip)")
    parser.add_argument("--checkpoint", help=f"'tiny-random', a Hub file or a local path (default: ${CHECKPOINT_ENV}"
                        " or the benchmark's released file: " +
                        ", ".join(f"{b} {c}" for b, c in BENCHMARK_CHECKPOINTS.items()) + ")")
    parser.add_argument("--vocab", type=Path, help="local bert-base-uncased vocab.txt (default: the Hub cache)")
    parser.add_argument("--threshold", type=option_type("threshold"), default=0.5,
                        help="mask probability threshold (official 0.5)")
    parser.add_argument("--obj-threshold", type=option_type("multi_target"), default=0.2,
                        help="MeViS: union of the queries whose mean score exceeds this (official 0.2)")
    parser.add_argument("--max-frames", type=option_type("max_frames"),
                        help="quick check: predict and score only the first N frames of each video")
    parser.add_argument("--short-side", type=option_type("short_side"), default=DEFAULT_SHORT_SIDE,
                        help=f"model input short side (official {DEFAULT_SHORT_SIDE})")
    parser.add_argument("--query-decay", type=option_type("query_decay"),
                        help="pruning keep ratio per decoder layer, in (0, 1] (default: the checkpoint's, 0.5)")
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda:LOCAL_RANK when available)")
    parser.add_argument("--dtype", default="float32",
                        help="float32 (default, as the official scripts), auto (bf16/fp16 on GPUs: faster), "
                             "bfloat16 or float16")
    parser.add_argument("--davis-root", type=Path, help="Ref-DAVIS17: the DAVIS 2017 tree (default DATA_ROOT/DAVIS)")
    parser.add_argument("--no-resume", action="store_true", help="recompute videos that are already complete")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `evaluate` subcommand to `subparsers` (from `parser.add_subparsers()`); its handler,
    `args.handler(args)`, returns the exit code."""
    parser = subparsers.add_parser("evaluate", help="evaluate on Ref-YouTube-VOS, Ref-DAVIS17 or MeViS",
                                   description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(handler=run_evaluate)
    return parser


def checkpoint_for(args) -> str:
    if args.checkpoint:
        return args.checkpoint
    return os.environ.get(CHECKPOINT_ENV, f"{HUB_REPO}/{BENCHMARK_CHECKPOINTS[args.benchmark]}")


def check_arguments(args) -> None:
    """Refuse a bad device, dtype, vocabulary or DAVIS tree (one line each) before the dataset is read or the
    checkpoint loads; numbers are checked while the arguments are parsed (`option_type`)."""
    from ..predictor import pick_device, pick_dtype
    from ..preprocess.text import load_tokenizer

    pick_dtype(pick_device(args.device), args.dtype)
    if args.vocab is not None:
        load_tokenizer(args.vocab)  # reads and checks the file; from_pretrained reads it again (milliseconds)
    if args.davis_root is not None and args.benchmark != "davis":
        raise ConfigError(f"--davis-root applies to --benchmark davis only, not {args.benchmark}")
    if args.davis_root is not None and not args.davis_root.is_dir():
        raise ConfigError(f"--davis-root {args.davis_root} is not a folder; pass the DAVIS 2017 tree (with "
                          "Annotations_unsupervised/480p and ImageSets/2017/val.txt) or leave it out")


def run_evaluate(args) -> int:
    """Evaluate as `args` says, in this process of a torchrun job (or alone); returns the exit code."""
    from ..predictor import ReferDinoPredictor
    from . import distributed
    from .datasets import open_dataset
    from .runner import evaluate

    check_arguments(args)
    context, device = distributed.init_distributed(args.device)
    try:
        dataset = open_dataset(args.benchmark, args.data_root, args.split, davis_root=args.davis_root)

        def load_predictor() -> ReferDinoPredictor:  # called by evaluate once the inputs are checked
            predictor = ReferDinoPredictor.from_pretrained(checkpoint_for(args), device=device, dtype=args.dtype,
                                                           vocab=args.vocab)
            if context.is_main:
                print(f"model: {predictor.describe()}; {dataset!r} over {context.world_size} process(es)",
                      file=sys.stderr)
            return predictor

        evaluate(load_predictor, dataset, args.out, threshold=args.threshold, resume=not args.no_resume,
                 rank=context.rank, world_size=context.world_size, progress=not args.no_progress,
                 obj_threshold=args.obj_threshold, max_frames=args.max_frames, short_side=args.short_side,
                 query_decay=args.query_decay)
    finally:
        distributed.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m referdino_demo.evaluation` (also under torchrun)."""
    parser = add_arguments(OneLineParser(prog="python -m referdino_demo.evaluation", description=DESCRIPTION))
    args = parser.parse_args(argv)
    from ..console import run_reporting_errors

    return run_reporting_errors("referdino evaluate", run_evaluate, args)


if __name__ == "__main__":
    sys.exit(main())
