"""The order of the model's stages over a video, written once: `ReferDinoModel.forward`, the predictor, the
explainer and the stage benchmark all run `run_schedule`, and see its progress through `StageHooks`.

1. Per chunk of frames: the backbone once (shared by every expression); per expression the encoder, the two-stage
   selection and pruned decoder, and the tracker (its memory carries over chunks); the stride-4 mask features when
   they are kept.
2. Per expression, over the whole video: `refine` (temporal decoder, class and box heads).
3. Per chunk: the mask decoder, from the kept mask features or from features computed again (backbone, encoder
   and pixel decoder, no decoder), which needs a second read of the frames.
Per-frame stages give the same result whatever the chunk size; the tracker and `refine` see every frame. On a
CPU, each per-frame stage runs on parts of the chunk at once, one frame stream per thread (`streams.FrameStreams`).
Vocabulary: T frames of the video, t of a chunk, Q final queries, L text tokens, (h, w) model input.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import VideoReadError
from .backbone import VisualFeatures
from .outputs import FrameQueries, Trace, record
from .streams import FrameStreams
from .tracker import QueryTracker

if TYPE_CHECKING:
    from .encoder import EncoderOutput
    from .modeling import ReferDinoModel, TextFeatures

# The names `StageHooks.stage` is called with, in schedule order.
STAGES = ("backbone", "encoder", "decoder", "tracker", "pixel_decoder", "temporal_decoder", "mask_decoder")


@dataclass
class ChunkStages:
    """Step 1's outputs for one chunk and one expression.

    visual_parts: the chunk's backbone features (shared by the expressions), one per frame stream, in frame order;
    detected: the decoder's queries in pruning order (hs (t, Q, d), reference (t, Q, 4), text (t, L, d), token_ids
    (t, Q)); tracked: the same permuted into tracker slots; perm: (t, Q) int64, perm[i, s] = the query of frame i
    (pruning order) put into slot s; feature_parts: (t_i, d, h/4, w/4) mask features per stream, None unless kept.
    """

    visual_parts: list[VisualFeatures]
    detected: FrameQueries
    tracked: FrameQueries
    perm: torch.Tensor
    feature_parts: list[torch.Tensor] | None

    @property
    def visual(self) -> VisualFeatures:
        """The backbone features of the whole chunk."""
        return VisualFeatures.cat(self.visual_parts)

    @property
    def features(self) -> torch.Tensor | None:
        """The mask features of the whole chunk, (t, d, h/4, w/4), if kept."""
        return None if self.feature_parts is None else _joined(self.feature_parts)


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

    # False keeps every stage in the calling thread (no `FrameStreams`), as hooks that watch that thread need (a
    # torch dispatch mode, the profiler); a trace does too.
    frame_streams = True

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
                 hooks: StageHooks | None = None, streams: int | None = None) -> list[VideoQueries]:
    """Run every stage of `model` over a video for each expression; the mask logits go to `hooks.chunk_masks`.

    chunks: returns an iterator over the video's normalised pixels, (t, 3, h, w) chunks on the model's device, in
    order; called once, and again only when `keep_features` is False. texts: `model.encode_text` of each
    expression. query_decay overrides the pruning keep ratio. keep_features: keep every chunk's mask features
    from step 1 (memory) rather than compute them again in step 3 (time); both give the same masks.
    autocast: a context for the model calls (reduced precision). streams: the frame streams on a CPU
    (`streams.FrameStreams`), sharing the calling thread's torch threads; default one per thread.
    -> one `VideoQueries` per expression.
    """
    hooks = hooks or StageHooks()
    allowed = hooks.frame_streams and hooks.trace is None
    trackers = [QueryTracker(model.config.tracking_alpha) for _ in texts]
    tracked: list[list[FrameQueries]] = [[] for _ in texts]
    kept, end = [], 0  # kept: per chunk, the mask feature parts of each expression
    for pixels in chunks():
        parallel = FrameStreams.for_device(model.device, allowed, streams)  # per chunk: the thread budget may change
        with autocast():
            kept.append(_detect_chunk(model, parallel.split(pixels), texts, trackers, tracked, query_decay,
                                      keep_features, hooks, parallel))
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
        parallel = FrameStreams.for_device(model.device, allowed, streams)
        with autocast():
            features = (chunk if keep_features
                        else _features_again(model, parallel.split(chunk), texts, hooks, parallel))
            for index, (text, video) in enumerate(zip(texts, videos)):
                with hooks.stage("mask_decoder"):
                    masks = _decode_masks(model, video, text.mask, features[index], start, parallel, hooks.trace)
                hooks.chunk_masks(index, start, masks)
        start += masks.shape[0]
        hooks.frames_decoded(start)
    return videos


def _detect_chunk(model: ReferDinoModel, pixels: list[torch.Tensor], texts: Sequence[TextFeatures],
                  trackers: list[QueryTracker], tracked: list[list[FrameQueries]], query_decay: float | None,
                  keep_features: bool, hooks: StageHooks, streams: FrameStreams) -> list[list[torch.Tensor]]:
    """Step 1 on a chunk's pixels, split into parts (t_i, 3, h, w) run as `streams`: appends each expression's
    tracked chunk to `tracked`; -> the kept mask feature parts of each expression (empty unless `keep_features`)."""
    trace = hooks.trace
    with hooks.stage("backbone"):
        visual = streams.map(lambda part: model.backbone(part, trace), pixels)
    kept = []
    for index, text in enumerate(texts):
        with hooks.stage("encoder"):
            encoders = streams.map(lambda part: model.encode(part, text, trace), visual)
        with hooks.stage("decoder"):
            detected = FrameQueries.cat(streams.map(
                lambda encoder: model.decode_queries(encoder, text, trace, query_decay), encoders))
        with hooks.stage("tracker"):
            chunk, perm = trackers[index](detected, text.mask)
        tracked[index].append(chunk)
        for name, value in (("perm", perm), ("hs_tracked", chunk.hs), ("ref_tracked", chunk.reference),
                            ("token_ids", chunk.token_ids)):
            record(trace, f"tracker.{name}", value)
        features = None
        if keep_features:
            with hooks.stage("pixel_decoder"):
                features = _mask_feature_parts(model, encoders, visual, streams)
            kept.append(features)
        hooks.chunk_detected(index, ChunkStages(visual, detected, chunk, perm, features))
    return kept


def _features_again(model: ReferDinoModel, pixels: list[torch.Tensor], texts: Sequence[TextFeatures],
                    hooks: StageHooks, streams: FrameStreams) -> list[list[torch.Tensor]]:
    """The mask feature parts of each expression for a chunk's pixel parts (t_i, 3, h, w), without the decoder (no
    trace)."""
    with hooks.stage("backbone"):
        visual = streams.map(model.backbone, pixels)
    features = []
    for text in texts:
        with hooks.stage("encoder"):
            encoders = streams.map(lambda part: model.encode(part, text), visual)
        with hooks.stage("pixel_decoder"):
            features.append(_mask_feature_parts(model, encoders, visual, streams))
    return features


def _mask_feature_parts(model: ReferDinoModel, encoders: list[EncoderOutput], visual: list[VisualFeatures],
                        streams: FrameStreams) -> list[torch.Tensor]:
    """The stride-4 mask features (t_i, d, h/4, w/4) of each part, from its encoder output and backbone features."""
    return streams.map(lambda encoder, part: model.mask_features(encoder, part.stage1), encoders, visual)


def _decode_masks(model: ReferDinoModel, video: VideoQueries, text_mask: torch.Tensor, features: list[torch.Tensor],
                  start: int, streams: FrameStreams, trace: Trace | None) -> torch.Tensor:
    """Mask logits (t, Q, h/4, w/4) of frames start .. start + t - 1, from their mask feature parts (t_i, d, h/4,
    w/4), each part in its own stream."""
    starts = itertools.accumulate((part.shape[0] for part in features[:-1]), initial=start)

    def decode(first: int, part: torch.Tensor) -> torch.Tensor:
        frames = slice(first, first + part.shape[0])
        return model.decode_masks(video.queries[frames], video.tracked.reference[frames], video.tracked.text[frames],
                                  text_mask, part, trace)

    return _joined(streams.map(decode, starts, features))


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts of a chunk (t_i, ...) as one tensor (t, ...); a single part as it is."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)
