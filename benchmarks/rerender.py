"""What a redraw costs after Segment: `python -m benchmarks.rerender [--frames 24] [--size 480 854]`.

A synthetic clip (854x480 by default) is written as H.264, segmented with random weights, and redrawn through
`ResultView` as the app does on a slider release: the overlay and heatmap videos at new thresholds. It counts the
video decodes of the Segment and of the redraws (`io.video_reader.decode_counts`: decode passes and frames), with
the frames kept in memory (the default) and with none kept (`--frame-cache-mb 0`: every redraw decodes again),
and times each redraw per frame. Prints a table, then one JSON line (what `benchmarks.run` reads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from referdino_demo.io import write_video
from referdino_demo.io.video_reader import decode_counts
from referdino_demo.options import DEFAULT_FRAME_CACHE_MB
from referdino_demo.predictor import ReferDinoPredictor
from referdino_demo.preprocess.text import synthetic_tokenizer
from referdino_demo.result_view import RenderSettings, ResultView

from .common import SHORT_SIDE, build, clip, peak_rss_mb

EXPRESSIONS = ["the red ball", "the blue square"]
GOAL_MS = 30.0  # per frame and video, for a redraw to feel immediate on a short clip


def measure(predictor: ReferDinoPredictor, video: Path, folder: Path, short_side: int, frame_cache_mb: float,
            repeats: int) -> dict:
    """Segment `video`, then redraw both videos at `repeats` new thresholds; decode counts and ms per frame."""
    before = decode_counts()
    segmentation = predictor.segment(video, EXPRESSIONS, short_side=short_side, frame_cache_mb=frame_cache_mb)
    segment = decode_counts() - before
    view = ResultView(segmentation, folder, versioned=True, frame_cache_mb=frame_cache_mb)
    before = decode_counts()
    view.overlay_video(RenderSettings(0.5)), view.heatmap_video(RenderSettings(0.5))  # the first render
    first = decode_counts() - before
    seconds = {"overlay": [], "heatmap": [], "images": []}  # the videos per frame; the two images of one frame
    before = decode_counts()
    for step in range(repeats):
        settings = RenderSettings(0.45 - 0.05 * step, opacity=0.5)
        for kind, draw in (("overlay", view.overlay_video), ("heatmap", view.heatmap_video)):
            start = time.perf_counter()
            draw(settings)
            seconds[kind].append((time.perf_counter() - start) / segmentation.num_frames)
        start = time.perf_counter()
        view.overlay_frame(step % segmentation.num_frames, settings)
        view.heatmap_frame(step % segmentation.num_frames, settings)
        seconds["images"].append(time.perf_counter() - start)
    redraws = decode_counts() - before
    return {"frame_cache_mb": frame_cache_mb, "frames_kept": view.frames.kept,
            "segment_decodes": segment.passes, "segment_opens": segment.opens,
            "first_render_decodes": first.passes, "rerender_decodes": redraws.passes / repeats,
            "rerender_frames_decoded": redraws.frames / repeats,
            **{f"{kind}_ms": 1000 * statistics.median(values) for kind, values in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 854), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--short-side", type=int, help="model input short side (default: the config's)")
    parser.add_argument("--repeats", type=int, default=3, help="redraws at new thresholds; the median is reported")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    short_side = args.short_side or SHORT_SIDE[args.config]
    predictor = ReferDinoPredictor(build(args.config, args.device), synthetic_tokenizer(), device=args.device)
    height, width = args.size
    with tempfile.TemporaryDirectory(prefix="referdino-rerender-") as folder:
        folder = Path(folder)
        video = write_video(folder / "clip.mp4", clip(args.frames, (height, width)), 24)
        predictor.segment(video, EXPRESSIONS[:1], short_side=short_side, max_frames=2)  # warm-up
        runs = [measure(predictor, video, folder / f"cache{cache:g}", short_side, cache, args.repeats)
                for cache in (DEFAULT_FRAME_CACHE_MB, 0.0)]
    print(f"## redrawing a result: {args.frames} frames of {width}x{height}, {len(EXPRESSIONS)} expressions, "
          f"{args.config} model on {args.device}")
    print(f"{'frames kept':>12s} {'decodes: segment':>16s} {'first render':>12s} {'per redraw':>10s} "
          f"{'overlay ms/frame':>16s} {'heatmap ms/frame':>16s} {'one frame, 2 images ms':>22s}")
    for run in runs:
        print(f"{run['frames_kept']:>5d} of {args.frames:<4d} {run['segment_decodes']:16d} "
              f"{run['first_render_decodes']:12d} {run['rerender_decodes']:10.1f} {run['overlay_ms']:16.1f} "
              f"{run['heatmap_ms']:16.1f} {run['images_ms']:22.1f}")
    kept = runs[0]
    met = (kept["segment_decodes"] == 1 and kept["rerender_decodes"] == 0
           and kept["overlay_ms"] < GOAL_MS and kept["heatmap_ms"] < GOAL_MS)
    print(f"goal: 1 decode per Segment ({kept['segment_decodes']}), 0 per redraw while the frames fit "
          f"({kept['rerender_decodes']:g}), under {GOAL_MS:g} ms a frame ({'met' if met else 'not met'})")
    print(json.dumps({"config": args.config, "frames": args.frames, "width": width, "height": height,
                      "kept": kept, "not_kept": runs[1], "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
