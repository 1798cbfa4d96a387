"""Look inside ReferDINO on one short clip: every stage's tensors, the cost of query pruning, the tracker's
slot permutations and the mask decoder's sampling points (used by `notebooks/how_it_works.ipynb`).

Vocabulary as elsewhere: T frames, Q final queries, L text tokens, d model width, (h4, w4) the stride-4
mask size. Everything runs in float32 without autocast, one chunk, so the numbers are easy to follow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .model import ReferDinoModel
from .model.backbone import VisualFeatures
from .model.modeling import TextFeatures
from .model.outputs import FrameQueries
from .model.schedule import ChunkStages, StageHooks, run_schedule
from .options import DEFAULT_SHORT_SIDE
from .postprocess import frame_scores, select_query
from .preprocess.frames import preprocess_frames
from .preprocess.text import caption_for, tokenize

__all__ = ["ClipStages", "SamplingPoints", "mask_sampling_points", "run_stages", "time_detect"]


@dataclass
class ClipStages:
    """The stages of one expression over one clip (all frames in one chunk).

    visual: backbone features; text: the encoded expression (features (1, L, d), mask (1, L));
    detected: per-frame decoder output in pruning order (hs (T, Q, d), reference (T, Q, 4), text (T, L, d));
    tracked: the same permuted into tracker slots; perms: (T, Q) int64, perms[t, i] = the query of frame t
      (pruning order) put into slot i; queries: (T, Q, d) after the temporal decoder; logits: (T, Q);
    boxes: (T, Q, 4) sigmoid cx, cy, w, h; features: (T, d, h4, w4) mask features;
    mask_logits: (T, Q, h4, w4).
    """

    visual: VisualFeatures
    text: TextFeatures
    detected: FrameQueries
    tracked: FrameQueries
    perms: torch.Tensor
    queries: torch.Tensor
    logits: torch.Tensor
    boxes: torch.Tensor
    features: torch.Tensor
    mask_logits: torch.Tensor

    @property
    def best_query(self) -> int:
        """The official single-target choice: the slot with the best mean score over the clip."""
        return select_query(frame_scores(self.logits))


class _KeepChunk(StageHooks):
    """Keeps step 1's outputs of the (single) chunk, besides the mask logits."""

    chunk: ChunkStages

    def chunk_detected(self, expression: int, chunk: ChunkStages) -> None:
        self.chunk = chunk


@torch.inference_mode()
def run_stages(predictor, frames: np.ndarray, expression: str, *, short_side: int = DEFAULT_SHORT_SIDE,
               query_decay: float | None = None) -> ClipStages:
    """Run every stage of `predictor.model` (`run_schedule`, one chunk) on frames (T, H, W, 3) uint8 RGB for one
    expression."""
    model: ReferDinoModel = predictor.model
    pixels = preprocess_frames(np.asarray(frames), short_side).to(predictor.device)
    text = model.encode_text(tokenize(caption_for(expression), predictor.tokenizer, model.config.max_text_len))
    hooks = _KeepChunk()
    video, = run_schedule(model, lambda: iter([pixels]), [text], query_decay=query_decay, hooks=hooks)
    chunk = hooks.chunk
    return ClipStages(chunk.visual, text, chunk.detected, video.tracked, chunk.perm, video.queries, video.logits,
                      video.boxes, chunk.features, hooks.masks(0))


@torch.inference_mode()
def time_detect(model: ReferDinoModel, visual: VisualFeatures, text: TextFeatures, query_decay: float,
                repeats: int = 3) -> float:
    """Best-of-`repeats` seconds of `model.detect` (encoder, query selection, pruned decoder) on the same
    backbone features, after one warm-up call."""
    def sync():
        if visual.stage1.device.type == "cuda":
            torch.cuda.synchronize(visual.stage1.device)

    model.detect(visual, text, query_decay=query_decay)
    sync()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model.detect(visual, text, query_decay=query_decay)
        sync()
        best = min(best, time.perf_counter() - started)
    return best


@dataclass
class SamplingPoints:
    """Where the first mask-decoder layer's deformable attention samples the stride-4 features.

    locations: (T, Q, heads, points, 2) normalised (x, y) in [0, 1] of the frame (points may fall outside);
    weights: (T, Q, heads, points) their attention weights (softmax over the points of each head).
    """

    locations: np.ndarray
    weights: np.ndarray

    def pixels(self, frame_size: tuple[int, int]) -> np.ndarray:
        """locations in pixels (x, y) of a frame of size (H, W)."""
        height, width = frame_size
        return self.locations * np.array([width, height], np.float32)


@torch.inference_mode()
def mask_sampling_points(model: ReferDinoModel, queries: torch.Tensor, reference: torch.Tensor, text: torch.Tensor,
                         text_mask: torch.Tensor) -> SamplingPoints:
    """The sampling points of the first mask-decoder layer, for the inputs of `model.decode_masks`.

    queries (T, Q, d) from `refine`; reference (T, Q, 4) tracked boxes (sigmoid cx, cy, w, h); text (T, L, d)
    fused text; text_mask (1, L) True = real token.

    Mirrors transformers' `GroundingDinoDecoderLayer.forward` up to its deformable cross-attention (self-
    attention, then text cross-attention, each with a residual and LayerNorm), then
    `GroundingDinoMultiscaleDeformableAttention.forward` for 4-d reference boxes:
    location = box centre + offset / n_points * (w, h) * 0.5, with the offsets a linear map of
    (hidden state + query position). The single feature level is squeezed out.
    """
    layer = model.mask_decoder.layers[0]
    attention = layer.encoder_attn
    query_pos = model.decoder.query_position(reference)
    text_bias = torch.zeros(text_mask.shape, dtype=text.dtype, device=text.device)
    text_bias = text_bias.masked_fill(~text_mask, torch.finfo(text.dtype).min)[:, None, None, :]
    text_bias = text_bias.expand(queries.shape[0], -1, -1, -1)

    hidden = queries
    with_pos = hidden + query_pos
    update, _ = layer.self_attn(queries=with_pos, keys=with_pos, values=hidden, attention_mask=None,
                                output_attentions=True)
    hidden = layer.self_attn_layer_norm(hidden + update)
    update, _ = layer.encoder_attn_text(queries=hidden + query_pos, keys=text, values=text,
                                        attention_mask=text_bias, output_attentions=True)
    hidden = layer.encoder_attn_text_layer_norm(hidden + update)

    x = hidden + query_pos
    t, q, _ = x.shape
    heads, levels, points = attention.n_heads, attention.n_levels, attention.n_points
    offsets = attention.sampling_offsets(x).view(t, q, heads, levels, points, 2)
    weights = attention.attention_weights(x).view(t, q, heads, levels * points).softmax(-1)
    boxes = reference[:, :, None, None, None, :]  # (T, Q, 1, 1, 1, 4): one level
    locations = boxes[..., :2] + offsets / points * boxes[..., 2:] * 0.5  # (T, Q, heads, levels, points, 2)
    return SamplingPoints(locations[:, :, :, 0].float().cpu().numpy(),
                          weights.view(t, q, heads, levels, points)[:, :, :, 0].float().cpu().numpy())
