"""Memory planning for one `segment` call: the free memory, an upper-side estimate of what the job needs, and
the plan that fits it in the job's budget (keep the mask features for one pass or compute them twice, keep the
decoded frames for rendering or decode them again), or a refusal naming what to lower.

Vocabulary as in the predictor: T selected frames, (H, W) their size, (h, w) the model input size.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch

from .errors import MemoryBudgetError
from .io.clip import VideoInfo
from .model.config import ReferDinoConfig
from .options import DEFAULT_FRAME_CACHE_MB, DEFAULT_SHORT_SIDE
from .preprocess.frames import resized_size

# Activation bytes per model-input pixel of one frame in flight: a fixed part (encoder, decoder and mask head, all at
# d_model 256) plus a small part growing with the Swin width. Calibrated on the CPU against the peak RSS growth of
# `segment` (8-frame chunks at 360x640: tiny 0.65 GB, Swin-T 0.91 GB, Swin-B 1.04 GB; at 180x320: tiny 0.23 GB;
# the estimates are 1.3 to 1.9x those); `MEMORY_SAFETY` covers allocator slack and other devices.
MEMORY_BYTES_PER_PIXEL_BASE = 400
MEMORY_BYTES_PER_PIXEL_PER_EMBED = 2
MEMORY_SAFETY = 1.25
# "auto" feature budget: this share of the memory free when a job starts, and never less than the fixed
# default of earlier versions. A second pass costs up to 1.8x the time (Swin-T, CPU), so it is worth memory.
FEATURE_SHARE_OF_FREE_MEMORY = 0.25
MIN_FEATURE_BUDGET_MB = 1024.0
# "auto" memory budget: refuse a job whose estimate (an upper-side one) would not fit in the memory free now, with
# some left for the rest of the process, rather than let the kernel kill the process mid-job.
AUTO_BUDGET_SHARE = 0.9


def available_memory_mb(device: torch.device) -> float | None:
    """Memory free for new tensors on `device`: free CUDA memory, or the kernel's MemAvailable on Linux;
    None where it cannot be read (other systems, MPS)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**20
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            return None
    return None


def feature_budget_mb(requested: float | str, device: torch.device) -> float:
    """`requested` in MB, or for "auto" a share of the memory free now (at least `MIN_FEATURE_BUDGET_MB`)."""
    if requested != "auto":
        return float(requested)
    free = available_memory_mb(device)
    return max(MIN_FEATURE_BUDGET_MB, FEATURE_SHARE_OF_FREE_MEMORY * free if free else 0.0)


def memory_budget_mb(requested: float | str | None, device: torch.device) -> float | None:
    """`requested` in MB; for "auto" `AUTO_BUDGET_SHARE` of the memory free now (None where unknown)."""
    if requested != "auto":
        return requested
    free = available_memory_mb(device)
    return AUTO_BUDGET_SHARE * free if free else None


def feature_mb(config: ReferDinoConfig, info: VideoInfo, short_side: int) -> float:
    """Megabytes of stride-4 mask features per frame and expression."""
    h, w = resized_size(info.height, info.width, short_side)
    return config.d_model * -(-h // 4) * -(-w // 4) * 4 / 2**20


def frames_mb(info: VideoInfo) -> float:
    """Megabytes of all T decoded frames, (H, W, 3) uint8 each."""
    return info.num_frames * info.height * info.width * 3 / 2**20


def estimate_memory_mb(config: ReferDinoConfig, info: VideoInfo, num_expressions: int, *,
                       short_side: int = DEFAULT_SHORT_SIDE, chunk_size: int = 8, features_mb: float = 0.0,
                       num_candidates: int = 5, text_tokens: int | None = None,
                       frame_cache_mb: float = DEFAULT_FRAME_CACHE_MB) -> float:
    """Estimated peak memory (MB) a `segment` call adds on top of the loaded model, from the selected frames
    (`info`: count and size, known before decoding), the model input size and the number of expressions.

    An upper-side estimate (see `MEMORY_*`): one chunk's decoded frames and activations, the mask features kept
    for the second pass when they fit `features_mb`, the decoded frames kept for rendering up to
    `frame_cache_mb`, the per-frame queries and fused text kept for the whole video, the temporal decoder's
    attention over all frames (it grows with T squared: thousands of frames need tens of GB) and the candidates'
    mask logits returned. `text_tokens`: the longest expression's token count (default: the model's maximum).
    """
    frames, expressions = max(info.num_frames, 1), max(num_expressions, 1)
    chunk = min(chunk_size, frames)
    h, w = resized_size(info.height, info.width, short_side)
    pixels, stride4 = h * w, -(-h // 4) * -(-w // 4)
    decoded = chunk * info.height * info.width * 3 * 2 + chunk * 3 * pixels * 4 * 2  # uint8 list + stack; float
    per_pixel = MEMORY_BYTES_PER_PIXEL_BASE + MEMORY_BYTES_PER_PIXEL_PER_EMBED * config.backbone.embed_dim
    activations = chunk * pixels * per_pixel
    feature = feature_mb(config, info, short_side) * 2**20  # one frame and expression, bytes
    keep = feature / 2**20 * expressions * frames <= features_mb
    features = feature * expressions * (frames if keep else chunk)
    kept_frames = min(frame_cache_mb, frames_mb(info)) * 2**20
    queries = config.query_counts()[-1]
    tokens = min(text_tokens or config.max_text_len, config.max_text_len)
    state = frames * expressions * (queries + tokens) * config.d_model * 4 * 2  # kept + refined
    logits = frames * expressions * queries * 4 * 3 + frames * expressions * num_candidates * stride4 * (2 + 4)
    # the temporal decoder attends over all T frames at once: per-head (T, T) weights for each final query
    temporal = queries * config.temporal_heads * frames**2 * 4 * 3
    total = decoded + activations + features + kept_frames + state + logits + temporal
    return MEMORY_SAFETY * total / 2**20


@dataclass(frozen=True)
class MemoryPlan:
    """How one `segment` call uses memory: `keep_features`, the mask features of every frame kept (one pass)
    rather than computed again in a second pass; `frame_cache_mb`, the decoded frames kept for rendering."""

    keep_features: bool
    frame_cache_mb: float


def plan_memory(config: ReferDinoConfig, device: torch.device, info: VideoInfo, num_expressions: int, *,
                short_side: int, chunk_size: int, num_candidates: int, text_tokens: int | None,
                feature_budget: float | str = "auto", memory_budget: float | str | None = "auto",
                frame_cache_mb: float = DEFAULT_FRAME_CACHE_MB) -> MemoryPlan:
    """The plan for a job (see `MemoryPlan`): the mask features are kept while they fit `feature_budget` ("auto":
    `feature_budget_mb`), the decoded frames up to `frame_cache_mb`. When that breaks `memory_budget` ("auto":
    `memory_budget_mb`; None: no budget), the frames are given up first (decoding again is cheap), then the kept
    features (a second pass costs model time); `MemoryBudgetError` when even the leanest plan does not fit."""
    features = feature_budget_mb(feature_budget, device)
    budget = memory_budget_mb(memory_budget, device)
    settings = dict(short_side=short_side, chunk_size=chunk_size, num_candidates=num_candidates,
                    text_tokens=text_tokens)
    plans = [(features, frame_cache_mb), (features, 0.0), (0.0, 0.0)]  # leaner and leaner
    for kept_features, cache in plans if budget is not None else plans[:1]:
        estimate = estimate_memory_mb(config, info, num_expressions, features_mb=kept_features, frame_cache_mb=cache,
                                      **settings)
        if budget is None or estimate <= budget:
            keep = feature_mb(config, info, short_side) * num_expressions * info.num_frames <= kept_features
            return MemoryPlan(keep, cache)
    h, w = resized_size(info.height, info.width, short_side)
    plural = "s" if num_expressions != 1 else ""
    raise MemoryBudgetError(
        f"this job needs an estimated {estimate:,.0f} MB ({info.num_frames} frames of {info.width}x{info.height}, "
        f"model input {w}x{h}, {num_expressions} expression{plural}), over the memory budget of {budget:,.0f} MB. "
        f"Lower the number of frames (max frames, or a larger stride), the model input short side (now "
        f"{short_side} px) or the number of expressions")


def is_out_of_memory(err: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError (CUDA), or the RuntimeError torch's CPU and MPS allocators raise."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def free_memory() -> None:
    """Give back what a failed job held: collect its garbage and empty the CUDA cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
