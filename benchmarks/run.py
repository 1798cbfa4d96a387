"""The benchmark suite: `python -m benchmarks.run [--quick] [--configs tiny,swin_t,swin_b] [--device cuda]`.

Every measurement runs in its own process (so peak memory is its own) on the same synthetic frames and
random weights, and every table prints ratios against a reference run made in the same invocation, so the
figures stay comparable on a noisy machine. `--quick` runs the tiny config only (what CI runs).
"""

from __future__ import annotations

import argparse

import torch

from .common import run_isolated

STAGES = ("text", "backbone", "encoder", "decoder", "tracker", "pixel_decoder", "temporal_decoder", "mask_decoder",
          "postprocess", "render", "video_encode", "video_decode")


def stage_table(config: str, frames: int, device: str, dtype: str) -> None:
    args = ["--config", config, "--frames", str(frames), "--device", device, "--dtype", dtype]
    pruned = run_isolated("benchmarks.stages", *args)
    unpruned = run_isolated("benchmarks.stages", *args, "--query-decay", "1.0", "--no-flops")
    print(f"\n## {config}: {frames} frames at 360x640 on {device} ({dtype}), stage by stage")
    peak = max(pruned["matmul_gflops"].values())
    print(f"(GFLOP/s: matmul-like operations per second of the pruned run; 'of matmul': against the fastest {dtype} "
          f"2048x2048 matmul here, {peak:.0f} GFLOP/s)")
    print(f"{'stage':18s} {'pruned s':>9s} {'share':>6s} {'GFLOP/s':>8s} {'of matmul':>9s} {'no pruning s':>12s} "
          f"{'ratio':>6s}")
    total = sum(pruned["seconds"].get(s, 0.0) for s in STAGES)
    for stage in STAGES:
        a, b = pruned["seconds"].get(stage), unpruned["seconds"].get(stage)
        if a is None:
            continue
        flops = pruned["flops"].get(stage, 0) / a / 1e9
        rate = f"{flops:8.1f} {flops / peak:9.1%}" if stage in pruned["flops"] else f"{'':18s}"
        print(f"{stage:18s} {a:9.3f} {a / total:6.1%} {rate} {b:12.3f} {b / a:6.2f}")
    print(f"model frames/s: {pruned['model_fps']:.3f} with pruning ({pruned['final_queries']} final queries), "
          f"{unpruned['model_fps']:.3f} without ({unpruned['final_queries']}): "
          f"speed-up {pruned['model_fps'] / unpruned['model_fps']:.2f}x; peak RSS {pruned['peak_rss_mb']:.0f} MiB")


# Each optimisation that replaces transformers' arithmetic with an equivalent, as `benchmarks.stages` flags.
OPTIMISATIONS = {"gather sampler": ["--sampler", "grid_sample"], "re-associated fusion": ["--fusion", "transformers"],
                 "fast Swin": ["--swin", "transformers"], "oneDNN linears": ["--linears", "torch"],
                 "frame streams": ["--streams", "off"]}
CPU_ONLY = ("oneDNN linears", "frame streams")
BEFORE = [*OPTIMISATIONS["fast Swin"], *OPTIMISATIONS["oneDNN linears"],  # the code before the CPU work
          *OPTIMISATIONS["frame streams"]]


def optimisation_table(config: str, frames: int, device: str) -> None:
    """Each optimisation alone and all together, against transformers' original layers."""
    args = ["--config", config, "--frames", str(frames), "--device", device, "--no-flops"]
    # oneDNN linear layers and frame streams exist on the CPU only: elsewhere their rows would repeat "ours"
    optimisations = {name: flags for name, flags in OPTIMISATIONS.items() if device == "cpu" or name not in CPU_ONLY}
    ours = run_isolated("benchmarks.stages", *args)
    runs = {f"without {name}": run_isolated("benchmarks.stages", *args, *flags)
            for name, flags in optimisations.items()}
    if device == "cpu":  # the Swin-B goal of the shared-machines issue (1.5x) is against this row
        runs["before (no fast Swin/oneDNN/streams)"] = run_isolated("benchmarks.stages", *args, *BEFORE)
    runs["without any"] = run_isolated("benchmarks.stages", *args, *sum(optimisations.values(), []))
    print(f"\n## {config}: optimisations, {frames} frames (ratio = that run's time / ours)")
    print(f"{'':36s} {'backbone s':>10s} {'encoder s':>9s} {'decoder s':>9s} {'mask dec s':>10s} {'frames/s':>9s} "
          f"{'ratio':>6s} {'peak MiB':>8s}")
    for name, run in {"ours": ours, **runs}.items():
        seconds = run["seconds"]
        print(f"{name:36s} {seconds['backbone']:10.3f} {seconds['encoder']:9.3f} {seconds['decoder']:9.3f} "
              f"{seconds['mask_decoder']:10.3f} "
              f"{run['model_fps']:9.3f} {ours['model_fps'] / run['model_fps']:6.2f} {run['peak_rss_mb']:8.0f}")


def chunk_table(config: str, frames: int, device: str) -> None:
    print(f"\n## {config}: chunk size (frames per forward), {frames} frames")
    runs = {c: run_isolated("benchmarks.stages", "--config", config, "--frames", str(frames), "--device", device,
                            "--chunk-size", str(c), "--no-flops") for c in (1, 4, frames)}
    reference = runs[frames]
    for chunk, run in runs.items():
        print(f"chunk {chunk:3d}: {run['model_fps']:.3f} frames/s ({run['model_fps'] / reference['model_fps']:.2f}x "
              f"of chunk {frames}), peak RSS {run['peak_rss_mb']:.0f} MiB")


def dtype_table(config: str, frames: int, device: str) -> None:
    print(f"\n## {config}: dtypes on {device}")
    runs = {d: run_isolated("benchmarks.stages", "--config", config, "--frames", str(frames), "--device", device,
                            "--dtype", d, "--no-flops") for d in ("float32", "bfloat16", "float16")}
    for name, run in runs.items():
        print(f"{name:9s}: {run['model_fps']:.3f} frames/s ({run['model_fps'] / runs['float32']['model_fps']:.2f}x fp32)")


def pipeline_table(config: str, short: int, long: int, device: str, repeats: int = 1) -> None:
    """`repeats`: timed runs (median) of the short clip, which the expression ratios divide by. The memory rows
    use a fixed 256 MB feature budget, so that the long clip takes the bounded-memory second pass."""
    print(f"\n## {config}: the predictor end to end (180x320 clips)")
    base = ["--config", config, "--device", device]
    a = run_isolated("benchmarks.pipeline", *base, "--frames", str(short), "--repeats", str(repeats),
                     "--feature-budget-mb", "256")
    b = run_isolated("benchmarks.pipeline", *base, "--frames", str(long), "--feature-budget-mb", "256")
    print(f"{short} frames: {a['fps']:.2f} frames/s, peak RSS {a['peak_rss_mb']:.0f} MiB; {long} frames: "
          f"{b['fps']:.2f} frames/s, peak RSS {b['peak_rss_mb']:.0f} MiB; memory ratio "
          f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} for {long / short:.0f}x the frames")
    one = a
    for k in (2, 4):
        run = run_isolated("benchmarks.pipeline", *base, "--frames", str(short), "--expressions", str(k),
                           "--repeats", str(repeats), "--feature-budget-mb", "256")
        print(f"{k} expressions: {run['seconds'] / one['seconds']:.2f}x the time of one "
              f"(each alone would be {k:.0f}x)")


def rerender_table(frames: int, device: str) -> None:
    """Decodes and milliseconds of a redraw after Segment (`benchmarks.rerender`), frames kept and not kept."""
    run = run_isolated("benchmarks.rerender", "--frames", str(frames), "--device", device)
    print(f"\n## tiny: redrawing a result of {frames} frames at {run['width']}x{run['height']} (a threshold change)")
    print(f"{'frames kept':>12s} {'decodes: segment':>16s} {'per redraw':>10s} {'overlay ms/frame':>16s} "
          f"{'heatmap ms/frame':>16s}")
    for row in (run["kept"], run["not_kept"]):
        print(f"{row['frames_kept']:>12d} {row['segment_decodes']:16d} {row['rerender_decodes']:10.1f} "
              f"{row['overlay_ms']:16.1f} {row['heatmap_ms']:16.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config only, fewer frames (CI)")
    parser.add_argument("--configs", default="tiny,swin_t,swin_b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    configs = ["tiny"] if args.quick else args.configs.split(",")
    for config in configs:
        frames = 4 if config != "tiny" else (4 if args.quick else 8)
        stage_table(config, frames, args.device, "float32")
        optimisation_table(config, frames, args.device)
        if args.device == "cuda":
            dtype_table(config, frames, args.device)
    chunk_table("tiny", 4 if args.quick else 8, args.device)
    pipeline_table("tiny", 10 if args.quick else 30, 30 if args.quick else 300, args.device, repeats=5)
    rerender_table(8 if args.quick else 24, args.device)
    if "swin_t" in configs:
        pipeline_table("swin_t", 4, 16, args.device)


if __name__ == "__main__":
    main()
