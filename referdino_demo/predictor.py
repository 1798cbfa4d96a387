"""`ReferDinoPredictor`: load once, then segment videos with one or more expressions.

The predictor holds only the model, the tokenizer and the device; everything about one video lives in the
returned `VideoSegmentation`, so one predictor serves many users. Memory stays bounded on long videos:
frames are decoded, encoded and decoded to masks in chunks, and only compact per-frame state is kept for the
whole video (the final queries, their boxes and the fused text), which is all the tracker and the temporal
decoder need to see every frame as the official model does. The stride-4 mask features are kept while they
fit `feature_budget_mb` (by default a share of the memory free when the job starts), otherwise recomputed in a
second pass, which runs the backbone and encoder again; both give the same masks (the plan is `memory.py`'s).
The decoded frames are kept for rendering within `frame_cache_mb` (`io.frame_cache`), so drawing the result
does not decode the video again. The model work is `model.schedule.run_schedule`; the predictor feeds it
frames and collects the results.
"""

from __future__ import annotations

import contextlib
import functools
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .hub import TINY_RANDOM
from .errors import ConfigError, InputLimitError, MemoryBudgetError, ReferDinoError, VideoReadError
from .frame_selection import FrameSelection
from .io.clip import REENCODE
from .io.frame_cache import FrameCache
from .io.video_reader import VideoFrames, VideoInfo
from .checkpoints import load_model
from . import memory
from .memory import is_out_of_memory
from .model import ReferDinoModel
from .model.backbone import feature_map_sizes
from .model.schedule import StageHooks, VideoQueries, run_schedule
from .options import DEFAULT_FRAME_CACHE_MB, DEFAULT_MAX_LONG_SIDE, DEFAULT_SHORT_SIDE, check_option, check_options
from .postprocess import choose_candidates, frame_scores
from .preprocess.frames import check_input_size, preprocess_frames, resized_size
from .preprocess.text import (MAX_EXPRESSION_CHARS, caption_for, load_tokenizer, quoted, synthetic_tokenizer, tokenize,
                              validate_expressions)
from .results import ExpressionResult, VideoSegmentation
from .threads import default_budget

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


# -- out-of-memory handling ----------------------------------------------------------------------------------
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
        memory.free_memory()  # outside the except block: no traceback of the failed call is left to keep them alive
        try:
            count = len(validate_expressions(expressions))
        except ReferDinoError:
            count = 0
        max_frames = getattr(kwargs.get("selection"), "max_frames", kwargs.get("max_frames"))
        raise MemoryBudgetError(
            f"out of memory on {self.device.type.upper()} ({kind}) while segmenting {count} expression"
            f"{'s' if count != 1 else ''} (short side {kwargs.get('short_side', DEFAULT_SHORT_SIDE)} px, max frames "
            f"{max_frames or 'all'}); the job's memory was freed. Lower the number of frames (max "
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
    def segment(self, video, expressions: str | Sequence[str], *, selection: FrameSelection | None = None,
                short_side: int = DEFAULT_SHORT_SIDE, max_long_side: int | None = DEFAULT_MAX_LONG_SIDE,
                query_decay: float | None = None, num_candidates: int = 5, multi_target: float | None = None,
                chunk_size: int = 8, feature_budget_mb: float | str = "auto",
                memory_budget_mb: float | str | None = "auto", frame_cache_mb: float = DEFAULT_FRAME_CACHE_MB,
                progress: Progress | None = None, **frame_options) -> VideoSegmentation:
        """Segment every expression in a video.

        `video` is a path, an array (T, H, W, 3) uint8 RGB, an iterable of (H, W, 3) frames, or a `VideoFrames`
        already opened with a selection (`FrameSelection.open`). `expressions`: one string, a list, or lines of
        text.

        Which frames: `selection`, a `FrameSelection`; or its fields as keyword arguments (`stride`, `start_s`,
        `end_s`, `max_frames`, `max_duration_s`, `max_pixels`, `fps`), which make the same object; not both.

        The model: `short_side` is the model input size (360 as in the official scripts); `max_long_side` caps
        the resized long side (None: no cap); `query_decay` overrides the pruning keep ratio; `num_candidates`
        queries keep their masks, best mean score first, and with `multi_target=s` every query whose mean score
        exceeds s keeps its mask too.

        The run: `chunk_size` frames go through the model at once; `feature_budget_mb` keeps the mask features of
        the whole video up to this size, else they are computed again in a second pass ("auto": a quarter of the
        free memory, at least 1024 MB); `memory_budget_mb` refuses (`MemoryBudgetError`) a job whose
        `estimate_memory_mb` is larger ("auto": 90% of the memory free when the job starts, no budget where that
        cannot be read; None: no budget); `frame_cache_mb` keeps the decoded frames up to this size in the result
        (`VideoSegmentation.frames`), so rendering does not decode the video again. `progress(fraction, message)`
        is called as frames are processed.

        Every option is checked (`options.OPTIONS`) and the input refused before any model work; running out of
        memory anyway raises `MemoryBudgetError` after freeing what the job held. Frames that the scan counted but
        the decoder could not deliver (corrupt packets) are left out, with a note.
        """
        started = time.perf_counter()
        expressions = validate_expressions(expressions)
        checked = check_options(short_side=short_side, query_decay=query_decay, num_candidates=num_candidates,
                                multi_target=multi_target, chunk_size=chunk_size, feature_budget_mb=feature_budget_mb,
                                memory_budget_mb=memory_budget_mb, frame_cache_mb=frame_cache_mb)
        max_long_side = None if max_long_side is None else check_option("max_long_side", max_long_side)
        short_side, query_decay, num_candidates, multi_target, chunk_size = (checked[k] for k in (
            "short_side", "query_decay", "num_candidates", "multi_target", "chunk_size"))
        frames = _open(video, selection, frame_options)
        self._check_input_size(frames.info, short_side, max_long_side)
        texts = [tokenize(caption_for(e), self.tokenizer, self.model.config.max_text_len) for e in expressions]
        plan = memory.plan_memory(
            self.model.config, self.device, frames.info, len(expressions), short_side=short_side,
            chunk_size=chunk_size, num_candidates=num_candidates, text_tokens=max(t.input_ids.shape[1] for t in texts),
            feature_budget=checked["feature_budget_mb"], memory_budget=checked["memory_budget_mb"],
            frame_cache_mb=checked["frame_cache_mb"])
        truncated = [text.truncated or len(e) >= MAX_EXPRESSION_CHARS for e, text in zip(expressions, texts)]
        total = len(frames)
        source = _PixelSource(FrameCache(frames, plan.frame_cache_mb), short_side, chunk_size, self.device)
        with self._threads() as (refresh, streams):
            hooks = _SegmentHooks(progress, total, num_candidates, multi_target, refresh)
            videos = run_schedule(self.model, source, [self.model.encode_text(text) for text in texts],
                                  query_decay=query_decay, keep_features=plan.keep_features,
                                  autocast=self._autocast, hooks=hooks, streams=streams)
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
            frame_indices=np.asarray(frames.source_indices), source=_file_source(video, info),
            checkpoint=self.checkpoint, untrained=self.untrained, partial_load=self.partial_load, notes=notes,
            frames=frames, timings={"total_s": time.perf_counter() - started,
                                    "mask_feature_passes": 1 if plan.keep_features else 2})

    def estimate_memory_mb(self, info: VideoInfo, num_expressions: int, *, short_side: int = DEFAULT_SHORT_SIDE,
                           chunk_size: int = 8, feature_budget_mb: float | str = "auto", num_candidates: int = 5,
                           text_tokens: int | None = None, frame_cache_mb: float = DEFAULT_FRAME_CACHE_MB) -> float:
        """Estimated peak memory (MB) a `segment` call with these settings adds on top of the loaded model
        (`memory.estimate_memory_mb` for this model and device); `info` describes the selected frames, as
        `FrameSelection.open` reports them before decoding."""
        features = memory.feature_budget_mb(feature_budget_mb, self.device)
        return memory.estimate_memory_mb(self.model.config, info, num_expressions, short_side=short_side,
                                         chunk_size=chunk_size, features_mb=features, num_candidates=num_candidates,
                                         text_tokens=text_tokens, frame_cache_mb=frame_cache_mb)

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

    @contextlib.contextmanager
    def _threads(self) -> Iterator[tuple[Callable[[], object], int | None]]:
        """On a CPU, run the body as one job of the process's `ThreadBudget` (concurrent `segment` calls share the
        CPUs instead of each starting a thread per core) and yield the job's `refresh`, for the hooks to follow
        later arrivals and departures between chunks, and the frame streams: one per CPU of the budget, whatever
        the job's share. Stream threads do not spin, so two jobs' streams over-subscribing 2 cores gave 1.1x the
        throughput of one stream each, whose cores idle whenever their job waits (`benchmarks.neighbour`'s jobs
        table). Elsewhere a no-op."""
        if self.device.type != "cpu":
            yield (lambda: None), None
            return
        with default_budget().job() as job:
            yield job.refresh, job.budget.total

    def _autocast(self):
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)


def _open(video, selection: FrameSelection | None, frame_options: dict) -> VideoFrames:
    """The selected frames of `video` (see `segment`); a `VideoFrames` was opened with its selection already."""
    if isinstance(video, VideoFrames):
        if selection is not None or frame_options:
            raise ConfigError("these frames were opened with a frame selection already; pass the video itself with "
                              "the selection, or the opened frames without one")
        return video
    return FrameSelection.build(selection, **frame_options).open(video)


def _file_source(video, info: VideoInfo) -> str | None:
    """The path a result was read from (as given, or as opened), None for arrays and iterators."""
    if isinstance(video, (str, Path)):
        return str(video)
    return info.source if isinstance(video, VideoFrames) and info.source not in ("array", "iterator") else None


class _PixelSource:
    """The clip's frames as `run_schedule` reads them: normalised pixel chunks (t, 3, h, w) on the device.

    The first read records the positions the decoder delivered (`decoded`): corrupt packets can lose frames that the
    scan counted (none at all is a `VideoReadError`); from then on `frames` is only the delivered ones, for a second
    read (recomputed mask features) and for the result.
    """

    def __init__(self, frames: FrameCache, short_side: int, chunk_size: int, device: torch.device):
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

    def __init__(self, progress: Progress | None, total: int, num_candidates: int, multi_target: float | None,
                 refresh: Callable[[], object] = lambda: None):
        super().__init__()
        self.refresh = refresh  # the thread budget's: between chunks, the job takes its current share of the CPUs
        self.report = progress or (lambda fraction, message: None)
        self.total, self.detected = total, 0
        self.num_candidates, self.multi_target = num_candidates, multi_target
        self.scores: dict[int, torch.Tensor] = {}  # (T, Q) per expression
        self.chosen: dict[int, list[int]] = {}
        self.logits: dict[int, list[np.ndarray]] = {}  # per expression, (K, t, h/4, w/4) per chunk

    def frames_detected(self, end: int) -> None:
        self.refresh()
        self.detected = end
        self.report(0.7 * end / self.total, f"encoded {end}/{self.total} frames")

    def video_refined(self, expression: int, video: VideoQueries) -> None:
        self.scores[expression] = frame_scores(video.logits)
        self.chosen[expression] = choose_candidates(self.scores[expression], self.num_candidates, self.multi_target)

    def chunk_masks(self, expression: int, start: int, logits: torch.Tensor) -> None:
        chosen = logits[:, self.chosen[expression]].transpose(0, 1)
        self.logits.setdefault(expression, []).append(chosen.float().cpu().numpy().astype(np.float16))

    def frames_decoded(self, end: int) -> None:
        self.refresh()
        self.report(0.7 + 0.3 * end / self.detected, f"decoded masks of {end}/{self.detected} frames")
