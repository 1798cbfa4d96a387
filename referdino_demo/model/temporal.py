"""The cross-modal temporal decoder: attention over time for each tracked query, driven by the per-frame
sentence feature (the [CLS] token of the fused text). Plain `torch.nn`, as in the official code."""

from __future__ import annotations

import torch
from torch import nn

from .config import ReferDinoConfig


class TemporalBlock(nn.Module):
    def __init__(self, d_model: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)
        self.decoder = nn.TransformerDecoderLayer(d_model, num_heads, dim_feedforward=ffn_dim, dropout=0.0)

    def forward(self, hs: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The weights are never used: not asking for them avoids a (Q, T, T) tensor on long videos.
        hs = self.norm(hs + self.self_attn(hs, hs, hs, need_weights=False)[0])
        return hs, self.decoder(tgt, hs)


class TemporalDecoder(nn.Module):
    def __init__(self, config: ReferDinoConfig):
        super().__init__()
        d = config.d_model
        self.layer = nn.ModuleList(TemporalBlock(d, config.temporal_heads, config.temporal_ffn_dim)
                                   for _ in range(config.temporal_layers))
        self.norm = nn.ModuleList(nn.LayerNorm(d) for _ in range(config.temporal_layers))

    def forward(self, hs: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """hs (T, Q, d) tracked queries of the whole video (sequence = time, batch = the Q tracks);
        sentence (T, d) per-frame sentence feature -> (T, Q, d)."""
        tgt = sentence[:, None, :].expand_as(hs)
        for block, norm in zip(self.layer, self.norm):
            hs, tgt = block(hs, tgt)
            hs = norm(hs + tgt)
        return hs
