"""Small pieces shared by several parts of the model, and the transformers configs built from ours."""

from __future__ import annotations

import torch
from transformers import GroundingDinoConfig
from transformers.models.grounding_dino.modeling_grounding_dino import (
    GroundingDinoMLPPredictionHead as MLP,
    encode_sinusoidal_position_embedding,
)

from .config import ReferDinoConfig

__all__ = ["MLP", "box_sine_embedding", "grounding_dino_config", "inverse_sigmoid", "text_logits"]


def grounding_dino_config(config: ReferDinoConfig, mask_head: bool = False) -> GroundingDinoConfig:
    """The transformers config that sizes the Grounding DINO layers we reuse.

    With `mask_head`, the decoder-layer fields describe the mask decoder instead: one level, 16 points,
    FFN 1024 (the official mask head is the same layer class built with those sizes).
    """
    decoder = dict(decoder_attention_heads=config.num_heads, decoder_n_points=config.decoder_points,
                   decoder_ffn_dim=config.ffn_dim, num_feature_levels=config.num_feature_levels)
    if mask_head:
        decoder = dict(decoder_attention_heads=config.mask_heads, decoder_n_points=config.mask_points,
                       decoder_ffn_dim=config.mask_ffn_dim, num_feature_levels=1)
    return GroundingDinoConfig(
        d_model=config.d_model, encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.num_heads, encoder_ffn_dim=config.ffn_dim,
        encoder_n_points=config.encoder_points, num_queries=config.num_queries, max_text_len=config.max_text_len,
        positional_embedding_temperature=config.position_temperature, layer_norm_eps=config.layer_norm_eps,
        # Inference only: every dropout and drop-path is off, as in the official eval mode.
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, fusion_dropout=0.0, fusion_droppath=0.0,
        text_enhancer_dropout=0.0, activation_function="relu", **decoder,
    )


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """GroundingDINO's `inverse_sigmoid` (eps 1e-3, not transformers' 1e-5): log(x / (1 - x)), clamped."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def text_logits(queries: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """Grounding score of each query: the max over real text tokens of <query, token>.

    queries (B, N, d), text (B, L, d), text_mask (B, L) bool True = real token -> (B, N).
    Special tokens count, as in the official `ContrastiveEmbed` followed by a max.
    """
    logits = queries @ text.transpose(-1, -2)
    return logits.masked_fill(~text_mask[:, None, :], float("-inf")).max(-1).values


def box_sine_embedding(boxes: torch.Tensor, d_model: int) -> torch.Tensor:
    """Sine embedding of (cx, cy, w, h) boxes (..., 4) -> (..., 2 * d_model), ordered y, x, w, h."""
    return encode_sinusoidal_position_embedding(boxes, num_pos_feats=d_model // 2)
