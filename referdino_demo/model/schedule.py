"""The order of the model's stages over a video, written once: `ReferDinoModel.forward`, the predictor, the
explainer and the stage benchmark all run `run_schedule`, and see its progress through `StageHooks`.

1. Per chunk of frames: the backbone once (shared by every expression); per expression the encoder, the two-stage
   selection and pruned decoder, and the tracker (its memory carries over chunks); the stride-4 mask features when
   they are kept.
2. Per expression, over the whole video: `refine` (temporal decoder, class and box heads).
3. Per chunk: the mask decoder, from the kept mask features or from features computed again (backbone, encoder
   and pixel decoder, no decoder), which needs a second read of the frames.
Per-frame stages give the same result whatever the chunk size; the tracker and `refine` see every frame.
Vocabulary: T frames of the video, t of a chunk, Q final queries, L text tokens, (h, w) model input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import VideoReadError
from .backbone import VisualFeatures
from .outputs import FrameQueries, Trace, record
from .tracker import QueryTracker

if TYPE_CHECKING:
    from .modeling import ReferDinoModel, TextFeatures

# The names `StageHooks.stage` is called with, in schedule order.
STAGES = ("backbone", "encoder", "decoder", "tracker", "pixel_decoder", "temporal_decoder", "mask_decoder")


@dataclass
class ChunkStages:
    """Step 1's outputs for one chunk and one expression.

    visual: the chunk's backbone features (shared by the expressions); detected: the decoder's queries in pruning
    order (hs (t, Q, d), reference (t, Q, 4), text (t, L, d), token_ids (t, Q)); tracked: the same permuted into
    tracker slots; perm: (t, Q) int64, perm[i, s] = the query of frame i (pruning order) put into slot s;
    features: (t, d, h/4, w/4) mask features, None unless they are kept.
    """

    visual: VisualFeatures
    detected: FrameQueries
    tracked: FrameQueries
    perm: torch.Tensor
    features: torch.Tensor | None


@dataclass
class VideoQueries:
    """Step 2's outputs for one expression over the whole video.

    tracked: every frame's tracked queries (hs (T, Q, d), reference (T, Q, 4) boxes, text (T, L, d) fused text,
    token_ids (T, Q)); queries: (T, Q, d) after the temporal decoder; logits: (T, Q) grounding logits;
    boxes: (T, Q, 4) sigmoid cx, cy, w, h.
    """

    tracked: FrameQueries
    queries: torch.Tensor
    logits: torch.Tensor
    boxes: torch.Tensor


class StageHooks:
    """What `run_schedule` reports as it goes. This base keeps every mask logit chunk (`masks`) and does nothing
    else; subclasses time stages, trace, report progress or keep intermediates. `expression` is an index into
    the schedule's `texts`; `end` counts the frames done so far.

    trace: handed to the model's stages of steps 1-3 (not to recomputed features, which would record twice); one
    expression per traced run.
    """

    def __init__(self, trace: Trace | None = None):
        self.trace = trace
        self.mask_chunks: dict[int, list[torch.Tensor]] = {}

    def stage(self, name: str) -> contextlib.AbstractContextManager:
        """Entered around each call of a model stage (`STAGES`); a timer's place."""
        return contextlib.nullcontext()

    def chunk_detected(self, expression: int, chunk: ChunkStages) -> None:
        """Step 1 finished a chunk for one expression."""

    def frames_detected(self, end: int) -> None:
        """Step 1 finished a chunk for every expression."""

    def video_refined(self, expression: int, video: VideoQueries) -> None:
        """Step 2 finished an expression, before any of its masks is decoded."""

    def chunk_masks(self, expression: int, start: int, logits: torch.Tensor) -> None:
        """Mask logits (t, Q, h/4, w/4) of frames start .. start + t - 1; kept here, override to keep less."""
        self.mask_chunks.setdefault(expression, []).append(logits)

    def frames_decoded(self, end: int) -> None:
        """Step 3 finished a chunk for every expression."""

    def masks(self, expression: int) -> torch.Tensor:
        """The kept mask logits of an expression, (T, Q, h/4, w/4)."""
        return torch.cat(self.mask_chunks[expression])


def run_schedule(model: ReferDinoModel, chunks: Callable[[], Iterator[torch.Tensor]], texts: Sequence[TextFeatures],
                 *, query_decay: float | None = None, keep_features: bool = True,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 hooks: StageHooks | None = None) -> list[VideoQueries]:
    """Run every stage of `model` over a video for each expression; the mask logits go to `hooks.chunk_masks`.

    chunks: returns an iterator over the video's normalised pixels, (t, 3, h, w) chunks on the model's device, in
    order; called once, and again only when `keep_features` is False. texts: `model.encode_text` of each
    expression. query_decay overrides the pruning keep ratio. keep_features: keep every chunk's mask features
    from step 1 (memory) rather than compute them again in step 3 (time); both give the same masks.
    autocast: a context for the model calls (reduced precision). -> one `VideoQueries` per expression.
    """
    hooks = hooks or StageHooks()
    trackers = [QueryTracker(model.config.tracking_alpha) for _ in texts]
    tracked: list[list[FrameQueries]] = [[] for _ in texts]
    kept, end = [], 0  # kept: per chunk, the mask features of each expression
    for pixels in chunks():
        with autocast():
            kept.append(_detect_chunk(model, pixels, texts, trackers, tracked, query_decay, keep_features, hooks))
        end += pixels.shape[0]
        hooks.frames_detected(end)
    if end == 0:
        raise VideoReadError("the video gave no frames to segment")

    videos = []
    for index, text in enumerate(texts):
        video = FrameQueries.cat(tracked[index])
        with autocast(), hooks.stage("temporal_decoder"):
            video = VideoQueries(video, *model.refine(video, text.mask, hooks.trace))
        hooks.video_refined(index, video)
        videos.append(video)

    start = 0
    for chunk in (kept if keep_features else chunks()):
        with autocast():
            features = chunk if keep_features else _features_again(model, chunk, texts, hooks)
            for index, (text, video) in enumerate(zip(texts, videos)):
                end = start + features[index].shape[0]
                part = slice(start, end)
                with hooks.stage("mask_decoder"):
                    masks = model.decode_masks(video.queries[part], video.tracked.reference[part],
                                               video.tracked.text[part], text.mask, features[index], hooks.trace)
                hooks.chunk_masks(index, start, masks)
        start = end
        hooks.frames_decoded(end)
    return videos


def _detect_chunk(model: ReferDinoModel, pixels: torch.Tensor, texts: Sequence[TextFeatures],
                  trackers: list[QueryTracker], tracked: list[list[FrameQueries]], query_decay: float | None,
                  keep_features: bool, hooks: StageHooks) -> list[torch.Tensor]:
    """Step 1 on pixels (t, 3, h, w): appends each expression's tracked chunk to `tracked`; -> the kept mask
    features of each expression (empty unless `keep_features`)."""
    trace = hooks.trace
    with hooks.stage("backbone"):
        visual = model.backbone(pixels, trace)
    kept = []
    for index, text in enumerate(texts):
        with hooks.stage("encoder"):
            encoder = model.encode(visual, text, trace)
        with hooks.stage("decoder"):
            detected = model.decode_queries(encoder, text, trace, query_decay)
        with hooks.stage("tracker"):
            chunk, perm = trackers[index](detected, text.mask)
        tracked[index].append(chunk)
        for name, value in (("perm", perm), ("hs_tracked", chunk.hs), ("ref_tracked", chunk.reference),
                            ("token_ids", chunk.token_ids)):
            record(trace, f"tracker.{name}", value)
        features = None
        if keep_features:
            with hooks.stage("pixel_decoder"):
                features = model.mask_features(encoder, visual.stage1)
            kept.append(features)
        hooks.chunk_detected(index, ChunkStages(visual, detected, chunk, perm, features))
    return kept


def _features_again(model: ReferDinoModel, pixels: torch.Tensor, texts: Sequence[TextFeatures],
                    hooks: StageHooks) -> list[torch.Tensor]:
    """The mask features of each expression for pixels (t, 3, h, w), without the decoder (no trace)."""
    with hooks.stage("backbone"):
        visual = model.backbone(pixels)
    features = []
    for text in texts:
        with hooks.stage("encoder"):
            encoder = model.encode(visual, text)
        with hooks.stage("pixel_decoder"):
            features.append(model.mask_features(encoder, visual.stage1))
    return features
