"""`ReferDinoPredictor`: load once, then segment videos with one or more expressions.

The predictor holds only the model, the tokenizer and the device; everything about one video lives in the
returned `VideoSegmentation`, so one predictor serves many users. Memory stays bounded on long videos:
frames are decoded, encoded and decoded to masks in chunks, and only compact per-frame state is kept for the
whole video (the final queries, their boxes and the fused text), which is all the tracker and the temporal
decoder need to see every frame as the official model does. The stride-4 mask features are kept while they
fit `feature_budget_mb`, otherwise recomputed in a second pass; both give the same masks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoints.hub import TINY_RANDOM
from .errors import ExpressionError
from .io.video_reader import VideoFrames, iter_video
from .model import ReferDinoModel
from .model.modeling import TextFeatures
from .model.outputs import FrameQueries
from .model.tracker import QueryTracker
from .preprocess.frames import DEFAULT_SHORT_SIDE, preprocess_frames
from .preprocess.text import caption_for, load_tokenizer, synthetic_tokenizer, tokenize
from .results import ExpressionResult, VideoSegmentation

Progress = Callable[[float, str], None]
MAX_EXPRESSIONS = 16


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, else CUDA, then Apple MPS, then the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """fp32 on the CPU; bf16 autocast on GPUs that support it, else fp16."""
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}
        if dtype not in names and dtype != "auto":
            raise ExpressionError(f"unknown dtype {dtype!r}; use one of {sorted(names)} or 'auto'")
        dtype = names.get(dtype)
    if dtype is not None:
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def validate_expressions(expressions: str | Sequence[str], limit: int = MAX_EXPRESSIONS) -> list[str]:
    """One expression or a list of them (one per line is the UI convention) -> cleaned, unique, non-empty."""
    if isinstance(expressions, str):
        expressions = expressions.splitlines()
    cleaned = []
    for expression in expressions:
        if not isinstance(expression, str):
            raise ExpressionError(f"expressions must be strings, got {type(expression).__name__}")
        text = " ".join(expression.split())
        if text and text not in cleaned:
            cleaned.append(text)
    if not cleaned:
        raise ExpressionError("no expression given: type what to segment, e.g. 'the dog jumping over the fence'")
    if len(cleaned) > limit:
        raise ExpressionError(f"{len(cleaned)} expressions given; at most {limit} per video. Split them over "
                              "several runs")
    for text in cleaned:
        caption_for(text)  # raises on expressions with nothing but punctuation
    return cleaned


@dataclass
class _Track:
    """Per-expression state carried over the whole video: the compact per-frame queries, tracked."""

    expression: str
    text: TextFeatures
    truncated: bool
    tracker: QueryTracker
    chunks: list[FrameQueries]

    def video(self) -> FrameQueries:
        return FrameQueries(*(torch.cat([getattr(c, f) for c in self.chunks]) for f in
                              ("hs", "reference", "text", "token_ids")))


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
                        vocab: str | Path | None = None) -> "ReferDinoPredictor":
        """checkpoint: 'tiny-random', a Hub name ('liangtm/referdino', 'ryt_swinb.pth'), a local `.pth` or a
        folder saved by `save_pretrained`. vocab: a local bert-base-uncased `vocab.txt` (else the Hub cache;
        'tiny-random' falls back to a built-in vocabulary: its weights are random anyway)."""
        model = ReferDinoModel.from_pretrained(checkpoint, filename)
        if vocab is None and str(checkpoint) == TINY_RANDOM:
            tokenizer = synthetic_tokenizer()
        else:
            tokenizer = load_tokenizer(vocab)
        name = str(checkpoint) if filename is None else f"{checkpoint}/{filename}"
        return cls(model, tokenizer, device=device, dtype=dtype, checkpoint=name)

    @property
    def untrained(self) -> bool:
        return bool(getattr(self.model, "untrained", False))

    def describe(self) -> str:
        """One line for a UI: checkpoint, device and dtype."""
        name = self.checkpoint or self.model.config.name
        label = " (UNTRAINED random weights)" if self.untrained else ""
        return f"{name}{label} on {self.device.type.upper()} ({str(self.dtype).removeprefix('torch.')})"

    @torch.inference_mode()
    def segment(self, video, expressions: str | Sequence[str], *, stride: int = 1, start_s: float | None = None,
                end_s: float | None = None, max_frames: int | None = None, short_side: int = DEFAULT_SHORT_SIDE,
                query_decay: float | None = None, num_candidates: int = 5, multi_target: float | None = None,
                chunk_size: int = 8, feature_budget_mb: float = 1024, progress: Progress | None = None,
                fps: float = 25.0, **video_limits) -> VideoSegmentation:
        """Segment every expression in a video.

        video: a path, an array (T, H, W, 3) uint8 RGB, or an iterable of (H, W, 3) frames (`fps` applies).
        expressions: one string, a list, or lines of text. stride/start_s/end_s/max_frames select frames
        (`video_limits`: max_pixels, max_duration_s of `iter_video`); short_side is the model input size (360
        as in the official scripts). query_decay overrides the pruning keep ratio. num_candidates: how many
        queries keep their masks, best mean score first; with multi_target=s every query whose mean score
        exceeds s keeps its mask too. progress(fraction, message) is called as frames are processed.
        Errors in the input are raised before any model work.
        """
        started = time.perf_counter()
        expressions = validate_expressions(expressions)
        if chunk_size < 1 or num_candidates < 1:
            raise ExpressionError(f"chunk_size and num_candidates must be >= 1, got {chunk_size} and {num_candidates}")
        frames = iter_video(video, stride=stride, start_s=start_s, end_s=end_s, max_frames=max_frames, fps=fps,
                            **video_limits)
        report = progress or (lambda fraction, message: None)
        tracks = []
        for expression in expressions:
            text = tokenize(caption_for(expression), self.tokenizer, self.model.config.max_text_len)
            tracks.append(_Track(expression, self.model.encode_text(text), text.truncated,
                                 QueryTracker(self.model.config.tracking_alpha), []))
        total = len(frames)
        keep_features = self._feature_mb(frames, short_side) * len(tracks) * total <= feature_budget_mb

        # Pass 1: per chunk, the backbone once, then each expression's encoder, decoder and tracker.
        kept = []
        for done, pixels in self._pixel_chunks(frames, short_side, chunk_size):
            features = self._detect(pixels, tracks, query_decay, keep_features)
            if keep_features:
                kept.append(features)
            report(0.7 * done / total, f"encoded {done}/{total} frames")

        # The temporal decoder sees the whole video; then choose which queries keep their masks.
        refined = []
        for track in tracks:
            video_queries = track.video()
            with self._autocast():
                queries, logits, boxes = self.model.refine(video_queries, track.text.mask)
            chosen = self._candidates(logits.float(), num_candidates, multi_target)
            refined.append((video_queries, queries, logits.float(), boxes.float(), chosen))

        # Pass 2: mask logits per chunk, from kept features or features recomputed from the frames.
        if keep_features:
            feature_chunks = iter(kept)
        else:
            feature_chunks = (self._recompute_features(pixels, tracks)
                              for _, pixels in self._pixel_chunks(frames, short_side, chunk_size))
        logits_per_track: list[list[np.ndarray]] = [[] for _ in tracks]
        start = 0
        for features in feature_chunks:
            end = start + features[0].shape[0]
            for index, track in enumerate(tracks):
                video_queries, queries, _, _, chosen = refined[index]
                with self._autocast():
                    masks = self.model.decode_masks(queries[start:end], video_queries.reference[start:end],
                                                    video_queries.text[start:end], track.text.mask, features[index])
                logits_per_track[index].append(masks[:, chosen].transpose(0, 1).float().cpu().numpy().astype(np.float16))
            start = end
            report(0.7 + 0.3 * end / total, f"decoded masks of {end}/{total} frames")

        info = frames.info
        results = {}
        for index, track in enumerate(tracks):
            _, _, logits, boxes, chosen = refined[index]
            results[track.expression] = ExpressionResult(
                expression=track.expression, frame_size=(info.height, info.width),
                scores=logits.sigmoid().cpu().numpy(), boxes=boxes.cpu().numpy(),
                candidates=np.asarray(chosen, dtype=np.int64),
                candidate_logits=np.concatenate(logits_per_track[index], axis=1),
                truncated=track.truncated, untrained=self.untrained)
        notes = [info.summary()] if info.subsampled else []
        notes += [f"expression cut to {self.model.config.max_text_len} tokens: {t.expression!r}"
                  for t in tracks if t.truncated]
        return VideoSegmentation(
            results=results, frame_size=(info.height, info.width), fps=info.fps,
            frame_indices=np.asarray(frames.source_indices),
            source=str(video) if isinstance(video, (str, Path)) else None, checkpoint=self.checkpoint,
            untrained=self.untrained, notes=notes, frames=frames,
            timings={"total_s": time.perf_counter() - started, "mask_feature_passes": 1 if keep_features else 2})

    # -- internals -------------------------------------------------------------------------------------
    def _autocast(self):
        enabled = self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    def _pixel_chunks(self, frames: VideoFrames, short_side: int, chunk_size: int):
        """Yield (frames done so far, normalised pixels (t, 3, h, w) on the device) chunk by chunk."""
        buffer, done = [], 0
        for _, _, frame in frames:
            buffer.append(frame)
            if len(buffer) == chunk_size:
                done += len(buffer)
                yield done, preprocess_frames(np.stack(buffer), short_side).to(self.device)
                buffer = []
        if buffer:
            done += len(buffer)
            yield done, preprocess_frames(np.stack(buffer), short_side).to(self.device)

    def _detect(self, pixels: torch.Tensor, tracks: list[_Track], query_decay: float | None,
                mask_features: bool) -> list[torch.Tensor]:
        """Backbone once, then each expression's detection and tracking; optionally its mask features."""
        features = []
        with self._autocast():
            visual = self.model.backbone(pixels)
            for item in tracks:
                detected, encoder = self.model.detect(visual, item.text, query_decay=query_decay)
                tracked, _ = item.tracker(detected, item.text.mask)
                item.chunks.append(tracked)
                if mask_features:
                    features.append(self.model.mask_features(encoder, visual.stage1))
        return features

    def _recompute_features(self, pixels: torch.Tensor, tracks: list[_Track]) -> list[torch.Tensor]:
        """Mask features again for the second pass: backbone and encoder only (no decoder needed)."""
        with self._autocast():
            visual = self.model.backbone(pixels)
            return [self.model.mask_features(self.model.encode(visual, item.text), visual.stage1) for item in tracks]

    def _feature_mb(self, frames: VideoFrames, short_side: int) -> float:
        """Megabytes of stride-4 mask features per frame and expression."""
        from .preprocess.frames import resized_size

        h, w = resized_size(frames.info.height, frames.info.width, short_side)
        return self.model.config.d_model * -(-h // 4) * -(-w // 4) * 4 / 2**20

    @staticmethod
    def _candidates(logits: torch.Tensor, count: int, multi_target: float | None) -> list[int]:
        """The best `count` queries by mean score (official rule first), plus those above `multi_target`."""
        scores = logits.sigmoid().mean(0)
        order = scores.argsort(descending=True).tolist()
        chosen = order[:count]
        if multi_target is not None:
            chosen += [q for q in order[count:] if scores[q] > multi_target]
        return chosen
