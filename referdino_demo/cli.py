"""The `referdino` command (also `python -m referdino_demo`).

    referdino segment VIDEO -e "the dog" [-e ...] --out DIR [--export png,rle,csv,overlay,heatmap,cutout,effect:blur]
    referdino download [--checkpoint NAME]
    referdino evaluate --benchmark {ytvos,davis,mevis} --data-root DIR --out DIR

Errors a user can fix print one line and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .hub import CHECKPOINT_ENV, DEFAULT_CHECKPOINT, HUB_REPO, RELEASED, TINY_RANDOM, default_checkpoint
from .console import OneLineParser, run_reporting_errors
from .errors import ConfigError
from .options import (DEFAULT_FRAME_CACHE_MB, DEFAULT_MAX_LONG_SIDE, DEFAULT_QUERY_DECAY, DEFAULT_SHORT_SIDE,
                      QUERY_DECAY_HELP, QUERY_DECAY_LABEL, option_type)
from .result_view import EFFECT_NAMES, EXPORTS, check_exports

DEFAULT_EXPORTS = "png,rle,csv,overlay"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="referdino", description="ReferDINO referring video object segmentation")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    seg = commands.add_parser("segment", help="segment the objects described by expressions in a video")
    seg.add_argument("video", help="video file (mp4, webm, mov, ...)")
    seg.add_argument("-e", "--expression", action="append", required=True,
                     help="what to segment; repeat for several objects")
    seg.add_argument("--out", required=True, type=Path, help="output folder")
    seg.add_argument("--checkpoint", default=default_checkpoint(),
                     help=f"'{TINY_RANDOM}', a Hub name or released file ({', '.join(RELEASED)}), or a local path "
                          f"(default: ${CHECKPOINT_ENV} or {HUB_REPO}/{DEFAULT_CHECKPOINT})")
    seg.add_argument("--vocab", type=Path, help="local bert-base-uncased vocab.txt (default: the Hub cache)")
    seg.add_argument("--non-strict", action="store_true",
                     help="load a checkpoint with keys that do not fit: the rest keeps random values, listed, and "
                          "results are marked partial")
    seg.add_argument("--stride", type=option_type("stride"), default=1, help="keep every N-th frame")
    seg.add_argument("--start", type=option_type("start_s"), help="start time in seconds")
    seg.add_argument("--end", type=option_type("end_s"), help="end time in seconds")
    seg.add_argument("--max-frames", type=option_type("max_frames"),
                     help="frame budget: longer clips are subsampled evenly")
    seg.add_argument("--short-side", type=option_type("short_side"), default=DEFAULT_SHORT_SIDE,
                     help=f"model input short side (official: {DEFAULT_SHORT_SIDE})")
    seg.add_argument("--max-long-side", type=option_type("max_long_side"), default=DEFAULT_MAX_LONG_SIDE,
                     help=f"refuse videos whose model input long side would exceed this (default "
                          f"{DEFAULT_MAX_LONG_SIDE})")
    seg.add_argument("--threshold", type=option_type("threshold"), default=0.5, help="mask probability threshold")
    seg.add_argument("--multi-target", type=option_type("multi_target"), metavar="SCORE",
                     help="union of every query whose mean score exceeds SCORE (MeViS rule, official 0.2)")
    seg.add_argument("--query-decay", type=option_type("query_decay"),
                     help=f"{QUERY_DECAY_LABEL}: {QUERY_DECAY_HELP}; in (0, 1] (default {DEFAULT_QUERY_DECAY})")
    seg.add_argument("--memory-budget-mb", type=option_type("memory_budget_mb"), default="auto",
                     help="refuse jobs estimated above this many MB (default: 90%% of the free memory)")
    seg.add_argument("--frame-cache-mb", type=option_type("frame_cache_mb"), default=DEFAULT_FRAME_CACHE_MB,
                     help=f"decoded frames kept in memory for the video exports; beyond it the video is decoded "
                          f"again (default {DEFAULT_FRAME_CACHE_MB:g})")
    seg.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: the best available)")
    seg.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    seg.add_argument("--export", default=DEFAULT_EXPORTS, type=option_type("export", parse_exports),
                     help=f"comma-separated: {', '.join(f'{kind} ({e.file_name})' for kind, e in EXPORTS.items())}")
    seg.add_argument("--feather", type=option_type("feather"), metavar="PX",
                     help=f"soft edge width in pixels of the effects ({', '.join(EFFECT_NAMES)}) and the cut-out "
                          f"(default: each effect's own)")
    seg.add_argument("--effect-expression", metavar="TEXT_OR_INDEX",
                     help="the expression whose object the effects and the cut-out show: its text or its index "
                          "among the -e options, from 0 (default: the first)")
    seg.add_argument("--no-audio", action="store_true",
                     help="render the videos without the source's sound (default: keep the sound of the time the "
                          "processed frames cover)")
    seg.set_defaults(handler=run_segment)

    download = commands.add_parser("download", help="fetch a checkpoint and the tokenizer into the HF cache")
    download.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                          help=f"released file name ({', '.join(RELEASED)})")
    download.add_argument("--repo", default=HUB_REPO)
    download.set_defaults(handler=run_download)

    from .evaluation.cli import add_evaluate_parser

    add_evaluate_parser(commands)
    return parser


def parse_exports(text: str) -> list[str]:
    return check_exports(name.strip() for name in text.split(",") if name.strip())


def effect_expression(text: str | None, expressions: list[str]) -> str | None:
    """The expression `--effect-expression` names (its text, or its index among `expressions`), else
    `ConfigError` listing them; None for None."""
    from .preprocess.text import clean_expression

    if text is None:
        return None
    cleaned = clean_expression(text)
    if cleaned in expressions:
        return cleaned
    if cleaned.isdigit() and int(cleaned) < len(expressions):
        return expressions[int(cleaned)]
    choices = ", ".join(f"{i} {e!r}" for i, e in enumerate(expressions))
    raise ConfigError(f"--effect-expression {text!r} is none of the expressions; give one's text or index: {choices}")


def run_segment(args) -> int:
    from tqdm import tqdm

    from .frame_selection import FrameSelection
    from .output_files import check_output_folder, output_errors
    from .predictor import ReferDinoPredictor, pick_device, pick_dtype, validate_expressions
    from .preprocess.frames import check_input_size
    from .result_view import RenderSettings, ResultView

    # Everything a user can get wrong is checked here, in seconds, before the checkpoint loads (seconds to minutes)
    # and long before the exports are written. The video opened here is the one segmented (one scan, one decode).
    expressions = validate_expressions(args.expression)
    check_output_folder(args.out)
    pick_dtype(pick_device(args.device), args.dtype)
    settings = RenderSettings(args.threshold, multi_target=args.multi_target, feather=args.feather,
                              effect_expression=effect_expression(args.effect_expression, expressions),
                              audio=not args.no_audio)
    video = FrameSelection(stride=args.stride, start_s=args.start, end_s=args.end,
                           max_frames=args.max_frames).open(args.video)
    check_input_size(video.info.height, video.info.width, args.short_side, args.max_long_side, Path(args.video).name)
    predictor = ReferDinoPredictor.from_pretrained(args.checkpoint, device=args.device, dtype=args.dtype,
                                                   vocab=args.vocab, strict=not args.non_strict)
    print(f"model: {predictor.describe()}", file=sys.stderr)
    with tqdm(total=100, unit="%", desc="segmenting", file=sys.stderr) as bar:
        def progress(fraction: float, message: str) -> None:
            bar.set_postfix_str(message)
            bar.update(round(100 * fraction) - bar.n)

        segmentation = predictor.segment(
            video, expressions, short_side=args.short_side, max_long_side=args.max_long_side,
            query_decay=args.query_decay, multi_target=args.multi_target, memory_budget_mb=args.memory_budget_mb,
            frame_cache_mb=args.frame_cache_mb, progress=progress)
    for note in segmentation.notes:
        print(f"note: {note}", file=sys.stderr)
    with output_errors(args.out):
        for path in ResultView(segmentation, args.out).export(args.export, settings):
            print(path)
    for result in segmentation:
        print(f"{result.expression!r}: query {result.query}, mean score {result.mean_scores[result.query]:.3f}",
              file=sys.stderr)
    return 0


def run_download(args) -> int:
    from .hub import download_checkpoint, load_hub_tokenizer
    from .preprocess.text import TOKENIZER_REPO

    print(download_checkpoint(args.checkpoint, args.repo))
    load_hub_tokenizer(TOKENIZER_REPO)
    return 0


def main(argv: list[str] | None = None) -> int:
    # Paths and expressions from a command line may hold bytes that are not UTF-8 (as surrogates): print them back
    # as the same bytes rather than fail on them.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    args = build_parser().parse_args(argv)
    return run_reporting_errors("referdino", args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
