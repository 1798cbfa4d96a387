"""`ReferDinoPredictor`: load once, then segment videos with one or more expressions.

The predictor holds only the model, the tokenizer and the device; everything about one video lives in the
returned `VideoSegmentation`, so one predictor serves many users. Memory stays bounded on long videos:
frames are decoded, encoded and decoded to masks in chunks, and only compact per-frame state is kept for the
whole video (the final queries, their boxes and the fused text), which is all the tracker and the temporal
decoder need to see every frame as the official model does. The stride-4 mask features are kept while they
fit `feature_budget_mb` (by default a share of the memory free when the job starts), otherwise recomputed in a
second pass, which runs the backbone and encoder again; both give the same masks. The model work is
`model.schedule.run_schedule`; the predictor feeds it frames, budgets its memory and collects the results.
"""

from __future__ import annotations

import functools
import gc
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .hub import TINY_RANDOM
from .errors import ConfigError, InputLimitError, MemoryBudgetError, ReferDinoError, VideoReadError
from .io.clip import REENCODE
from .io.video_reader import VideoFrames, VideoInfo, iter_video
from .checkpoints import load_model
from .model import ReferDinoModel
from .model.backbone import feature_map_sizes
from .model.schedule import StageHooks, VideoQueries, run_schedule
from .options import DEFAULT_MAX_LONG_SIDE, DEFAULT_SHORT_SIDE, check_option, check_options
from .postprocess import choose_candidates, frame_scores
from .preprocess.frames import check_input_size, preprocess_frames, resized_size
from .preprocess.text import (MAX_EXPRESSION_CHARS, caption_for, load_tokenizer, quoted, synthetic_tokenizer, tokenize,
                              validate_expressions)
from .results import ExpressionResult, VideoSegmentation

Progress = Callable[[float, str], None]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device if this machine has it, else `ConfigError`; by default CUDA, then Apple MPS, then
    the CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps (or leave it unset for the "
                          "best available)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device} was asked for, but this PyTorch build or machine has no CUDA GPU; use "
                          "cpu, or install a CUDA build of PyTorch on a GPU machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                          "GPU(s), numbered from 0")
    if device.type == "mps" and not _mps_available():
        raise ConfigError("device mps was asked for, but Apple MPS is not available here; use cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device} is not supported; use cpu, cuda or mps")
    return device


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """fp32 on the CPU; bf16 autocast on GPUs that support it, else fp16."""
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}
        if dtype not in names and dtype != "auto":
            raise ConfigError(f"unknown dtype {dtype!r}; use one of {sorted(names)} or 'auto'")
        dtype = names.get(dtype)
    if dtype is not None:
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ConfigError(f"unsupported dtype {dtype!r}; use float32, bfloat16 or float16")
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# -- memory estimate and out-of-memory handling ---------------------------------------------------------------
# Activation bytes per model-input pixel of one frame in flight: a fixed part (encoder, decoder and mask head, all at
# d_model 256) plus a small part growing with the Swin width. Calibrated on the CPU against the peak RSS growth of
# `segment` (8-frame chunks at 360x640: tiny 0.65 GB, Swin-T 0.91 GB, Swin-B 1.04 GB; at 180x320: tiny 0.23 GB;
# the estimates are 1.3 to 1.9x those); `_MEMORY_SAFETY` covers allocator slack and other devices.
_MEMORY_BYTES_PER_PIXEL_BASE = 400
_MEMORY_BYTES_PER_PIXEL_PER_EMBED = 2
_MEMORY_SAFETY = 1.25
# "auto" feature budget: this share of the memory free when a job starts, and never less than the fixed
# default of earlier versions. A second pass costs up to 1.8x the time (Swin-T, CPU), so it is worth memory.
_FEATURE_SHARE_OF_FREE_MEMORY = 0.25
_MIN_FEATURE_BUDGET_MB = 1024.0
# "auto" memory budget: refuse a job whose estimate (an upper-side one) would not fit in the memory free now, with
# some left for the rest of the process, rather than let the kernel kill the process mid-job.
_AUTO_BUDGET_SHARE = 0.9


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


@dataclass
class _Sized:
    """The `info` attribute `_feature_mb` reads, for an estimate made before any frame is decoded."""

    info: VideoInfo


def is_out_of_memory(err: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError (CUDA), or the RuntimeError torch's CPU and MPS allocators raise."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _out_of_memory_explained(segment):
    """Turn running out of memory inside `segment` (`is_out_of_memory`) into `MemoryBudgetError`, after dropping
    every frame of the failed call (their tensors) and emptying the CUDA cache, so the process can serve the next
    job. (The kernel's OOM killer, when the system overcommits memory, cannot be caught: the budget check is what
    prevents that.)"""

    @functools.wraps(segment)
    def wrapper(self, video, expressions, **kwargs):
        try:
            return segment(self, video, expressions, **kwargs)
        except (MemoryError, RuntimeError) as err:
            if not is_out_of_memory(err):
                raise
            kind = type(err).__name__
            traceback.clear_frames(err.__traceback__)  # the failed call's locals hold its tensors
        _free_memory()  # outside the except block: no traceback of the failed call is left to keep them alive
        try:
            count = len(validate_expressions(expressions))
        except ReferDinoError:
            count = 0
        raise MemoryBudgetError(
            f"out of memory on {self.device.type.upper()} ({kind}) while segmenting {count} expression"
            f"{'s' if count != 1 else ''} (short side {kwargs.get('short_side', DEFAULT_SHORT_SIDE)} px, max frames "
            f"{kwargs.get('max_frames') or 'all'}); the job's memory was freed. Lower the number of frames (max "
            "frames, or a larger stride), the model input short side or the number of expressions")

    return wrapper


class ReferDinoPredictor:
    def __init__(self, model: ReferDinoModel, tokenizer, *, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, checkpoint: str = ""):
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.checkpoint = checkpoint

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path = TINY_RANDOM, filename: str | None = None, *,
                        device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                        vocab: str | Path | None = None, strict: bool = True) -> "ReferDinoPredictor":
        """checkpoint: 'tiny-random', a Hub name ('liangtm/referdino', 'ryt_swinb.pth'), a local `.pth` or a
        folder saved by `save_pretrained`. vocab: a local bert-base-uncased `vocab.txt` (else the Hub cache;
        'tiny-random' falls back to a built-in vocabulary: its weights are random anyway). strict=False loads a
        checkpoint with keys the converter cannot explain: what fits is loaded, the rest listed in
        `model.load_report`, and every result says it came from a partial load."""
        pick_dtype(pick_device(device), dtype)  # a wrong device or dtype fails before the weights load
        # A local vocabulary is checked before the weights load; the Hub's is fetched after, so that a bad
        # checkpoint is not reported only after waiting for the network.
        tokenizer = load_tokenizer(vocab) if vocab is not None else None
        model = load_model(checkpoint, filename, strict=strict)
        if tokenizer is None:
            tokenizer = synthetic_tokenizer() if str(checkpoint) == TINY_RANDOM else load_tokenizer()
        name = str(checkpoint) if filename is None else f"{checkpoint}/{filename}"
        return cls(model, tokenizer, device=device, dtype=dtype, checkpoint=name)

    @property
    def untrained(self) -> bool:
        return bool(getattr(self.model, "untrained", False))

    @property
    def partial_load(self) -> str | None:
        """What a `strict=False` load left out (one line), or None when every weight came from the checkpoint."""
        report = getattr(self.model, "load_report", None)
        return report.summary() if report is not None and report.partial else None

    def describe(self) -> str:
        """One line for a UI: checkpoint, device and dtype."""
        name = self.checkpoint or self.model.config.name
        label = " (UNTRAINED random weights)" if self.untrained else (" (PARTIAL load, strict=False)" if
                                                                     self.partial_load else "")
        return f"{name}{label} on {self.device.type.upper()} ({str(self.dtype).removeprefix('torch.')})"

    @_out_of_memory_explained
    @torch.inference_mode()
    def segment(self, video, expressions: str | Sequence[str], *, stride: int = 1, start_s: float | None = None,
                end_s: float | None = None, max_frames: int | None = None, short_side: int = DEFAULT_SHORT_SIDE,
                max_long_side: int | None = DEFAULT_MAX_LONG_SIDE, query_decay: float | None = None,
                num_candidates: int = 5, multi_target: float | None = None, chunk_size: int = 8,
                feature_budget_mb: float | str = "auto", progress: Progress | None = None, fps: float = 25.0,
                memory_budget_mb: float | str | None = "auto", **video_limits) -> VideoSegmentation:
        """Segment every expression in a video.

        video: a path, an array (T, H, W, 3) uint8 RGB, or an iterable of (H, W, 3) frames (`fps` applies).
        expressions: one string, a list, or lines of text. stride/start_s/end_s/max_frames select frames
        (`video_limits`: max_pixels, max_duration_s of `iter_video`); short_side is the model input size (360
        as in the official scripts); max_long_side caps the resized long side (None: no cap). query_decay
        overrides the pruning keep ratio. num_candidates: how many queries keep their masks, best mean score first;
        with multi_target=s every query whose mean score exceeds s keeps its mask too. progress(fraction, message)
        is called as frames are processed.
        feature_budget_mb: keep the mask features of the whole video up to this size, else compute them again in a
        second pass; "auto": a quarter of the free memory (at least 1024 MB), within `memory_budget_mb`.
        memory_budget_mb: refuse (`MemoryBudgetError`) a job whose `estimate_memory_mb` is larger; "auto": 90% of
        the memory free when the job starts (no budget where that cannot be read); None: no budget.
        Every option is checked (`options.OPTIONS`) and the input refused before any model work; running out of
        memory anyway raises `MemoryBudgetError` after freeing what the job held. Frames that the scan counted but
        the decoder could not deliver (corrupt packets) are left out, with a note.
        """
        started = time.perf_counter()
        expressions = validate_expressions(expressions)
        checked = check_options(stride=stride, start_s=start_s, end_s=end_s, max_frames=max_frames, fps=fps,
                                short_side=short_side, query_decay=query_decay, num_candidates=num_candidates,
                                multi_target=multi_target, chunk_size=chunk_size, feature_budget_mb=feature_budget_mb,
                                memory_budget_mb=memory_budget_mb)
        max_long_side = None if max_long_side is None else check_option("max_long_side", max_long_side)
        short_side, query_decay, num_candidates, multi_target, chunk_size = (checked[k] for k in (
            "short_side", "query_decay", "num_candidates", "multi_target", "chunk_size"))
        frames = iter_video(video, stride=checked["stride"], start_s=checked["start_s"], end_s=checked["end_s"],
                            max_frames=checked["max_frames"], fps=checked["fps"], **video_limits)
        self._check_input_size(frames.info, short_side, max_long_side)
        texts = [tokenize(caption_for(e), self.tokenizer, self.model.config.max_text_len) for e in expressions]
        settings = dict(short_side=short_side, chunk_size=chunk_size, num_candidates=num_candidates,
                        text_tokens=max(t.input_ids.shape[1] for t in texts))
        feature_budget_mb = self._feature_budget(checked["feature_budget_mb"])
        memory_budget_mb = self._memory_budget(checked["memory_budget_mb"])
        if memory_budget_mb is not None:
            keeping = self.estimate_memory_mb(frames.info, len(expressions), feature_budget_mb=feature_budget_mb,
                                              **settings)
            if keeping > memory_budget_mb:
                feature_budget_mb = 0.0  # keeping the features would break the budget: compute them twice
            self.check_memory_budget(frames.info, len(expressions), memory_budget_mb,
                                     feature_budget_mb=feature_budget_mb, **settings)
        truncated = [text.truncated or len(e) >= MAX_EXPRESSION_CHARS for e, text in zip(expressions, texts)]
        total = len(frames)
        keep_features = self._feature_mb(frames, short_side) * len(texts) * total <= feature_budget_mb
        source = _PixelSource(frames, short_side, chunk_size, self.device)
        hooks = _SegmentHooks(progress, total, num_candidates, multi_target)
        videos = run_schedule(self.model, source, [self.model.encode_text(text) for text in texts],
                              query_decay=query_decay, keep_features=keep_features, autocast=self._autocast,
                              hooks=hooks)
        notes = [frames.info.summary()] if frames.info.subsampled else []
        notes += [self.partial_load] if self.partial_load else []
        if len(source.decoded) < total:  # corrupt packets: the result has the frames that were really decoded
            notes.append(f"{total - len(source.decoded)} of {total} frames could not be decoded (corrupt data) and "
                         "were left out")
        frames = source.frames

        info = frames.info
        results = {}
        for index, (expression, refined) in enumerate(zip(expressions, videos)):
            results[expression] = ExpressionResult(
                expression=expression, frame_size=(info.height, info.width),
                scores=hooks.scores[index].cpu().numpy(), boxes=refined.boxes.float().cpu().numpy(),
                candidates=np.asarray(hooks.chosen[index], dtype=np.int64),
                candidate_logits=np.concatenate(hooks.logits[index], axis=1), truncated=truncated[index],
                untrained=self.untrained)
        notes += [f"expression cut to {self.model.config.max_text_len} tokens or {MAX_EXPRESSION_CHARS} characters: "
                  f"{quoted(expression)}" for expression, cut in zip(expressions, truncated) if cut]
        return VideoSegmentation(
            results=results, frame_size=(info.height, info.width), fps=info.fps,
            frame_indices=np.asarray(frames.source_indices),
            source=str(video) if isinstance(video, (str, Path)) else None, checkpoint=self.checkpoint,
            untrained=self.untrained, partial_load=self.partial_load, notes=notes, frames=frames,
            timings={"total_s": time.perf_counter() - started, "mask_feature_passes": 1 if keep_features else 2})

    # -- memory budget ---------------------------------------------------------------------------------
    def estimate_memory_mb(self, info: VideoInfo, num_expressions: int, *, short_side: int = DEFAULT_SHORT_SIDE,
                           chunk_size: int = 8, feature_budget_mb: float | str = "auto", num_candidates: int = 5,
                           text_tokens: int | None = None) -> float:
        """Estimated peak memory (MB) a `segment` call adds on top of the loaded model, from the selected frames
        (`info`: count and size, as `iter_video` reports them before decoding), the model input size and the
        number of expressions. An upper-side estimate (see `_MEMORY_*`): one chunk's decoded frames and
        activations, the mask features kept for the second pass, the per-frame queries and fused text kept for the
        whole video, the temporal decoder's attention over all frames (it grows with T squared: thousands of frames
        need tens of GB) and the candidates' mask logits returned. text_tokens: the longest expression's token count
        (default: the model's maximum)."""
        config = self.model.config
        frames, expressions = max(info.num_frames, 1), max(num_expressions, 1)
        chunk = min(chunk_size, frames)
        h, w = resized_size(info.height, info.width, short_side)
        pixels, stride4 = h * w, -(-h // 4) * -(-w // 4)
        decoded = chunk * info.height * info.width * 3 * 2 + chunk * 3 * pixels * 4 * 2  # uint8 list + stack; float
        per_pixel = _MEMORY_BYTES_PER_PIXEL_BASE + _MEMORY_BYTES_PER_PIXEL_PER_EMBED * config.backbone.embed_dim
        activations = chunk * pixels * per_pixel
        feature = self._feature_mb(_Sized(info), short_side) * 2**20  # one frame and expression, bytes
        keep = feature / 2**20 * expressions * frames <= self._feature_budget(feature_budget_mb)
        features = feature * expressions * (frames if keep else chunk)
        queries = config.query_counts()[-1]
        tokens = min(text_tokens or config.max_text_len, config.max_text_len)
        state = frames * expressions * (queries + tokens) * config.d_model * 4 * 2  # kept + refined
        logits = frames * expressions * queries * 4 * 3 + frames * expressions * num_candidates * stride4 * (2 + 4)
        # the temporal decoder attends over all T frames at once: per-head (T, T) weights for each final query
        temporal = queries * config.temporal_heads * frames**2 * 4 * 3
        total = decoded + activations + features + state + logits + temporal
        return _MEMORY_SAFETY * total / 2**20

    def check_memory_budget(self, info: VideoInfo, num_expressions: int, budget_mb: float, *,
                            short_side: int = DEFAULT_SHORT_SIDE, **settings) -> float:
        """Raise `MemoryBudgetError` naming the numbers and what to lower when `estimate_memory_mb` is over
        `budget_mb`; else return the estimate."""
        needed = self.estimate_memory_mb(info, num_expressions, short_side=short_side, **settings)
        if needed > budget_mb:
            h, w = resized_size(info.height, info.width, short_side)
            raise MemoryBudgetError(
                f"this job needs an estimated {needed:,.0f} MB ({info.num_frames} frames of "
                f"{info.width}x{info.height}, model input {w}x{h}, {num_expressions} "
                f"expression{'s' if num_expressions != 1 else ''}), over the "
                f"memory budget of {budget_mb:,.0f} MB. Lower the number of frames (max frames, or a larger stride), "
                f"the model input short side (now {short_side} px) or the number of expressions")
        return needed

    # -- internals -------------------------------------------------------------------------------------
    def _check_input_size(self, info: VideoInfo, short_side: int, max_long_side: int | None) -> None:
        """`InputLimitError` for a model input too long (`check_input_size`) or too small to give the two-stage
        selection one encoder token per query."""
        check_input_size(info.height, info.width, short_side, max_long_side, Path(info.source).name)
        h, w = resized_size(info.height, info.width, short_side)
        tokens = sum(a * b for a, b in feature_map_sizes(h, w))
        if tokens < self.model.config.num_queries:
            raise InputLimitError(f"the frames are too small: a {w}x{h} model input gives {tokens} encoder tokens, "
                                  f"fewer than the model's {self.model.config.num_queries} queries; use a larger "
                                  f"short side (now {short_side}; the official size is {DEFAULT_SHORT_SIDE})")

    def _feature_budget(self, requested: float | str) -> float:
        """`requested` in MB, or for "auto" a share of the memory free now (at least `_MIN_FEATURE_BUDGET_MB`)."""
        if requested != "auto":
            return float(requested)
        free = available_memory_mb(self.device)
        return max(_MIN_FEATURE_BUDGET_MB, _FEATURE_SHARE_OF_FREE_MEMORY * free if free else 0.0)

    def _memory_budget(self, requested: float | str | None) -> float | None:
        """`requested` in MB; for "auto" `_AUTO_BUDGET_SHARE` of the memory free now (None where unknown)."""
        if requested != "auto":
            return requested
        free = available_memory_mb(self.device)
        return _AUTO_BUDGET_SHARE * free if free else None

    def _autocast(self):
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    def _feature_mb(self, frames: "VideoFrames | _Sized", short_side: int) -> float:
        """Megabytes of stride-4 mask features per frame and expression."""
        h, w = resized_size(frames.info.height, frames.info.width, short_side)
        return self.model.config.d_model * -(-h // 4) * -(-w // 4) * 4 / 2**20


class _PixelSource:
    """The clip's frames as `run_schedule` reads them: normalised pixel chunks (t, 3, h, w) on the device.

    The first read records the positions the decoder delivered (`decoded`): corrupt packets can lose frames that the
    scan counted (none at all is a `VideoReadError`); from then on `frames` is only the delivered ones, for a second
    read (recomputed mask features) and for the result.
    """

    def __init__(self, frames: VideoFrames, short_side: int, chunk_size: int, device: torch.device):
        self.frames, self.short_side, self.chunk_size, self.device = frames, short_side, chunk_size, device
        self.decoded: list[int] | None = None

    def __call__(self) -> Iterator[torch.Tensor]:
        decoded, buffer = [], []
        for position, _, frame in self.frames:
            decoded.append(position)
            buffer.append(frame)
            if len(buffer) == self.chunk_size:
                yield self._pixels(buffer)
                buffer = []
        if buffer:
            yield self._pixels(buffer)
        if self.decoded is None:
            if not decoded:
                raise VideoReadError(f"none of the {len(self.frames)} selected frames of "
                                     f"{Path(self.frames.info.source).name} could be decoded; it is corrupt. "
                                     f"Re-encode it: {REENCODE}")
            if len(decoded) < len(self.frames):
                self.frames = self.frames.subset(decoded)
            self.decoded = decoded

    def _pixels(self, frames: list[np.ndarray]) -> torch.Tensor:
        return preprocess_frames(np.stack(frames), self.short_side).to(self.device)


class _SegmentHooks(StageHooks):
    """One `segment` call's view of the schedule: progress (70% for step 1, 30% for the masks), the official
    scores and candidate choice of each expression, and only the candidates' mask logits, as float16 on the CPU."""

    def __init__(self, progress: Progress | None, total: int, num_candidates: int, multi_target: float | None):
        super().__init__()
        self.report = progress or (lambda fraction, message: None)
        self.total, self.detected = total, 0
        self.num_candidates, self.multi_target = num_candidates, multi_target
        self.scores: dict[int, torch.Tensor] = {}  # (T, Q) per expression
        self.chosen: dict[int, list[int]] = {}
        self.logits: dict[int, list[np.ndarray]] = {}  # per expression, (K, t, h/4, w/4) per chunk

    def frames_detected(self, end: int) -> None:
        self.detected = end
        self.report(0.7 * end / self.total, f"encoded {end}/{self.total} frames")

    def video_refined(self, expression: int, video: VideoQueries) -> None:
        self.scores[expression] = frame_scores(video.logits)
        self.chosen[expression] = choose_candidates(self.scores[expression], self.num_candidates, self.multi_target)

    def chunk_masks(self, expression: int, start: int, logits: torch.Tensor) -> None:
        chosen = logits[:, self.chosen[expression]].transpose(0, 1)
        self.logits.setdefault(expression, []).append(chosen.float().cpu().numpy().astype(np.float16))

    def frames_decoded(self, end: int) -> None:
        self.report(0.7 + 0.3 * end / self.detected, f"decoded masks of {end}/{self.detected} frames")
