"""ReferDINO in the browser: `python app.py` (also the Hugging Face Space entry point).

    python app.py                                   # the default Hub checkpoint, downloaded on first use
    python app.py --checkpoint /path/to/ryt_swinb.pth
    python app.py --random-weights                  # untrained tiny model: try the UI without any download

Environment: REFERDINO_CHECKPOINT (default checkpoint), REFERDINO_RANDOM_WEIGHTS=1, REFERDINO_MAX_FRAMES,
REFERDINO_MAX_DURATION_S, REFERDINO_MAX_UPLOAD_MB, REFERDINO_MAX_PIXELS, REFERDINO_MEMORY_BUDGET_MB (0: none),
REFERDINO_CONCURRENCY, REFERDINO_QUEUE_SIZE, REFERDINO_FRAME_CACHE_MB, REFERDINO_CACHE (example results),
REFERDINO_DEVICE, REFERDINO_VOCAB, REFERDINO_NON_STRICT=1, REFERDINO_ONEDNN=0 (torch's linear layers); Gradio's
own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT apply when --host / --port are not given. Importing this file loads no
model and starts no server.
"""

import referdino_demo  # first: it sets OpenMP's spin count, read once when `spaces` or anything else loads torch

try:  # ZeroGPU: `spaces` must be imported before anything initialises CUDA
    import spaces  # noqa: F401
except ImportError:
    spaces = None

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

from referdino_demo.hub import CHECKPOINT_ENV, TINY_RANDOM, default_checkpoint
from referdino_demo.errors import ReferDinoError
from referdino_demo.options import option_type
from referdino_demo.ui.gradio_app import build_demo
from referdino_demo.ui.config import AppConfig, environment_flag
from referdino_demo.ui.session import PredictorRegistry

DEFAULTS = AppConfig()
log = logging.getLogger("app")

ROOT = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="ReferDINO referring video object segmentation in the browser")
    parser.add_argument("--version", action="version", version=f"referdino-demo {referdino_demo.__version__}")
    parser.add_argument("--checkpoint", default=default_checkpoint(),
                        help=f"Hub name, released file, local .pth/folder or '{TINY_RANDOM}' (env {CHECKPOINT_ENV})")
    parser.add_argument("--random-weights", action="store_true", default=environment_flag("REFERDINO_RANDOM_WEIGHTS"),
                        help=f"development mode: load '{TINY_RANDOM}' (untrained) and mark every result")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for a LAN)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860, or the next free one)")
    parser.add_argument("--share", action="store_true", help="also serve on a temporary public gradio.live link")
    parser.add_argument("--max-frames", type=int, default=int(env("REFERDINO_MAX_FRAMES", 96)),
                        help="frame budget; longer clips are subsampled evenly")
    parser.add_argument("--max-duration", type=float, default=float(env("REFERDINO_MAX_DURATION_S", 120)),
                        help="longest accepted clip in seconds")
    parser.add_argument("--max-upload-mb", type=float, default=float(env("REFERDINO_MAX_UPLOAD_MB", 200)),
                        help="largest upload; the server refuses bigger files (HTTP 413)")
    parser.add_argument("--max-pixels", type=int, default=int(env("REFERDINO_MAX_PIXELS", DEFAULTS.max_pixels)),
                        help="largest frame, width x height (default 3840x2160)")
    parser.add_argument("--memory-budget-mb", type=float,
                        default=float(env("REFERDINO_MEMORY_BUDGET_MB", DEFAULTS.memory_budget_mb)),
                        help="refuse a job whose estimated peak memory is larger (0: no budget)")
    parser.add_argument("--concurrency", type=int, default=int(env("REFERDINO_CONCURRENCY", 1)),
                        help="segmentations run at the same time (each holds a model's activations)")
    parser.add_argument("--queue-size", type=int, default=int(env("REFERDINO_QUEUE_SIZE", 32)),
                        help="requests that may wait in the queue; more are refused with 'queue is full'")
    parser.add_argument("--frame-cache-mb", type=option_type("frame_cache_mb"),
                        default=env("REFERDINO_FRAME_CACHE_MB", str(DEFAULTS.frame_cache_mb)),
                        help="decoded frames each result keeps in memory for redrawing (beyond it they are decoded "
                             "again)")
    parser.add_argument("--device", default=env("REFERDINO_DEVICE"), help="cuda, mps or cpu (default: the best)")
    parser.add_argument("--vocab", default=env("REFERDINO_VOCAB"),
                        help="local bert-base-uncased vocab.txt for offline use (default: the Hugging Face cache)")
    parser.add_argument("--non-strict", action="store_true", default=environment_flag("REFERDINO_NON_STRICT"),
                        help="load checkpoints with keys that do not fit (the rest keeps random values; results are "
                             "marked partial)")
    return parser.parse_args(argv)


def make_config(args: argparse.Namespace) -> AppConfig:
    checkpoint = TINY_RANDOM if args.random_weights else args.checkpoint
    return AppConfig(default_checkpoint=checkpoint, extra_checkpoints=(args.checkpoint,), max_frames=args.max_frames,
                     max_duration_s=args.max_duration, max_upload_mb=args.max_upload_mb,
                     concurrency=args.concurrency, examples_dir=ROOT / "examples", max_pixels=args.max_pixels,
                     memory_budget_mb=args.memory_budget_mb or None, frame_cache_mb=args.frame_cache_mb)


def preload(registry: PredictorRegistry, checkpoint: str) -> None:
    """Load `checkpoint` now and log when it is ready; a failure is only printed: the page shows the same message
    and offers tiny-random."""
    begin = time.monotonic()
    try:
        registry.get(checkpoint)
    except ReferDinoError as err:
        print(f"app: {err}", file=sys.stderr)
        return
    # benchmarks.coldstart times the app's start by this line
    log.info("model ready: %s loaded in %.1f s", checkpoint, time.monotonic() - begin)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    config = make_config(args)
    registry = PredictorRegistry(device=args.device, vocab=args.vocab, strict=not args.non_strict)
    if spaces is not None and os.environ.get("SPACES_ZERO_GPU"):
        preload(registry, config.default_checkpoint)  # ZeroGPU wants the weights in the main process before serving
    else:  # while the server starts, so the first Segment does not wait for the weights
        threading.Thread(target=preload, args=(registry, config.default_checkpoint), name="preload",
                         daemon=True).start()
    demo = build_demo(config, registry, warm_examples=True)  # example results: computed once, kept on disk
    # Segment runs at most `concurrency` at a time (its own limit); redrawing is cheaper and may overlap.
    # allowed_paths: an example click returns a clip of examples/, which Gradio copies into its cache only from an
    # allowed folder (the working folder is one, but `python /elsewhere/app.py` runs from another); inputs must still
    # be uploads.
    demo.queue(default_concurrency_limit=max(2, config.concurrency), max_size=args.queue_size).launch(
        server_name=args.host, server_port=args.port, share=args.share, max_file_size=config.max_upload_bytes,
        footer_links=["api", "gradio", "settings"], allowed_paths=[str(config.examples_dir)])


if __name__ == "__main__":
    main()
