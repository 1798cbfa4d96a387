"""Time every stage of the model on the same frames: `python -m benchmarks.stages --config tiny`.

Prints a table of each stage's floating-point operations and achieved GFLOP/s against the machine's matmul
throughput, with the share of each stage's time in matmul kernels and in deformable sampling (`benchmarks.flops`;
counted and profiled in two extra passes, `--no-flops` skips them), then one JSON line: seconds per
stage, frames/second end to end, peak RSS, and the counts behind the table.
"""

from __future__ import annotations

import argparse
import functools
import json

import numpy as np
import torch

from referdino_demo.io.video_reader import read_video
from referdino_demo.io.video_writer import write_video
from referdino_demo.model.deformable import set_deformable_sampler
from referdino_demo.model.fusion import set_fusion_attention
from referdino_demo.model.layers import set_onednn
from referdino_demo.model.schedule import STAGES, StageHooks, run_schedule
from referdino_demo.model.streams import set_frame_streams
from referdino_demo.postprocess import frame_scores, select_query
from referdino_demo.preprocess.frames import preprocess_frames
from referdino_demo.results import ExpressionResult

from .common import SHORT_SIDE, build, clip, peak_rss_mb, text, timer
from .flops import FlopCounting, TimeSplit, flop_table, matmul_gflops


class _Timing(StageHooks):
    """Adds each stage's seconds to `seconds[name]` (stage names as `STAGES`)."""

    def __init__(self, seconds: dict[str, float], device: str):
        super().__init__()
        self.seconds, self.device = seconds, device

    def stage(self, name: str):
        return timer(self.seconds, name, self.device)


@torch.inference_mode()
def time_stages(config: str, frames: int, query_decay: float | None, device: str = "cpu",
                dtype: torch.dtype = torch.float32, chunk_size: int = 8, repeats: int = 1,
                sampler: str = "gather", fusion: str = "reassociated", flops: bool = True, swin: str = "fast",
                linears: str = "onednn", streams: str = "on") -> dict:
    model = set_fusion_attention(set_deformable_sampler(build(config, device), sampler), fusion)
    model.backbone.swin_forward = swin
    set_onednn(linears == "onednn")
    set_frame_streams(streams == "on")
    raw = clip(frames)
    t: dict[str, float] = {}
    autocast = functools.partial(torch.autocast, torch.device(device).type, dtype=dtype,
                                 enabled=dtype != torch.float32)

    def run(hooks: StageHooks, seconds: dict[str, float]):
        with timer(seconds, "preprocess"):
            pixels = preprocess_frames(raw, SHORT_SIDE[config]).to(device)
        with hooks.stage("text"), autocast():
            features = model.encode_text(text())
        video, = run_schedule(model, lambda: (pixels[s:s + chunk_size] for s in range(0, frames, chunk_size)),
                              [features], query_decay=query_decay, autocast=autocast, hooks=hooks)
        return video, hooks

    for repeat in range(repeats + 1):  # the first pass warms up (lazy inits, allocator) and is discarded
        if repeat == 1:
            t.clear()
        video, hooks = run(_Timing(t, device), t)
    logits, boxes, masks = video.logits.float(), video.boxes.float(), hooks.masks(0).float()
    with timer(t, "postprocess"):
        scores = frame_scores(logits)
        query = select_query(scores)
        result = ExpressionResult("x", raw.shape[1:3], scores.cpu().numpy(), boxes.cpu().numpy(),
                                  np.array([query]), masks[:, [query]].transpose(0, 1).cpu().numpy().astype(np.float16))
        binary = result.masks()
    try:
        from referdino_demo.render import OverlayRenderer

        renderer = OverlayRenderer()
        with timer(t, "render"):
            rendered = [renderer.render_frame(f, [m], ["x"]) for f, m in zip(raw, binary)]
    except ImportError:  # the renderers are optional for model-only timing
        rendered = list(raw)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        with timer(t, "video_encode"):
            path = write_video(Path(tmp) / "out.mp4", np.stack(rendered), fps=12)
        with timer(t, "video_decode"):
            read_video(path)
    model_stages = ("text", *STAGES)
    per_repeat = {k: v / repeats for k, v in t.items()}
    model_seconds = sum(per_repeat[k] for k in model_stages)
    result = {"config": config, "frames": frames, "query_decay": query_decay, "device": device, "sampler": sampler,
              "fusion": fusion, "swin": swin, "linears": linears, "streams": streams,
              "threads": torch.get_num_threads(),
              "dtype": str(dtype).removeprefix("torch."), "seconds": per_repeat, "model_seconds": model_seconds,
              "model_fps": frames / model_seconds, "peak_rss_mb": peak_rss_mb(),
              "final_queries": int(logits.shape[1])}
    if flops:  # last, after the timings and peak RSS: counting and profiling slow each op and hold memory
        counts: dict[str, int] = {}
        split: dict[str, dict[str, float]] = {}
        run(FlopCounting(counts), {})
        timing = TimeSplit(split)
        with timing.profiled():
            run(timing, {})
        result.update(flops=counts, split=split, matmul_gflops=matmul_gflops(device, dtype))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--query-decay", type=float, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sampler", default="gather", choices=("gather", "grid_sample"), help="deformable sampler")
    parser.add_argument("--fusion", default="reassociated", choices=("reassociated", "transformers"),
                        help="bi-attention")
    parser.add_argument("--swin", default="fast", choices=("fast", "transformers"), help="Swin forward")
    parser.add_argument("--linears", default="onednn", choices=("onednn", "torch"), help="CPU linear layers")
    parser.add_argument("--streams", default="on", choices=("on", "off"), help="frame streams on a CPU")
    parser.add_argument("--no-flops", action="store_true", help="skip the operation count and time split (two "
                                                                   "passes less)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = time_stages(args.config, args.frames, args.query_decay, args.device, getattr(torch, args.dtype),
                         args.chunk_size, args.repeats, args.sampler, args.fusion, flops=not args.no_flops,
                         swin=args.swin, linears=args.linears, streams=args.streams)
    if "flops" in result:
        print(f"## {args.config}: {args.frames} frames on {args.device} ({args.dtype}), {result['threads']} threads")
        print(flop_table(result["seconds"], result["flops"], result["matmul_gflops"], args.dtype, result["split"]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
