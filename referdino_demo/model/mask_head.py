"""The mask head: an FPN pixel decoder to stride-4 features, and the grounding-guided deformable mask
decoder whose sampling points lie inside each query's box."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoDecoderLayer

from .config import ReferDinoConfig
from .layers import grounding_dino_config


class PixelDecoder(nn.Module):
    """FPN over the encoder memory (strides 32, 16, 8) and Swin stage 1 (stride 4) -> (T, mask_dim, h/4, w/4)."""

    def __init__(self, config: ReferDinoConfig):
        super().__init__()
        d, groups = config.d_model, config.pixel_decoder_groups
        dims = [d, d // 2, d // 4, d // 8, d // 16]
        stage1_channels = config.backbone.embed_dim
        self.lay1, self.gn1 = nn.Conv2d(d, dims[0], 3, padding=1), nn.GroupNorm(groups, dims[0])
        self.lay2, self.gn2 = nn.Conv2d(dims[0], dims[1], 3, padding=1), nn.GroupNorm(groups, dims[1])
        self.lay3, self.gn3 = nn.Conv2d(dims[1], dims[2], 3, padding=1), nn.GroupNorm(groups, dims[2])
        self.lay4, self.gn4 = nn.Conv2d(dims[2], dims[3], 3, padding=1), nn.GroupNorm(groups, dims[3])
        self.lay5, self.gn5 = nn.Conv2d(dims[3], dims[4], 3, padding=1), nn.GroupNorm(groups, dims[4])
        self.adapter1 = nn.Conv2d(d, dims[1], 1)
        self.adapter2 = nn.Conv2d(d, dims[2], 1)
        self.adapter3 = nn.Conv2d(stage1_channels, dims[3], 1)
        self.out_lay = nn.Conv2d(dims[4], d, 3, padding=1)

    def forward(self, memory_s8: torch.Tensor, memory_s16: torch.Tensor, memory_s32: torch.Tensor,
                stage1: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.gn1(self.lay1(memory_s32)))
        x = F.relu(self.gn2(self.lay2(x)))
        for adapter, lay, gn, skip in ((self.adapter1, self.lay3, self.gn3, memory_s16),
                                       (self.adapter2, self.lay4, self.gn4, memory_s8),
                                       (self.adapter3, self.lay5, self.gn5, stage1)):
            skip = adapter(skip)
            x = skip + F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = F.relu(gn(lay(x)))
        return self.out_lay(x)


class MaskDecoder(nn.Module):
    """Deformable decoder layers over the single stride-4 level; each query samples inside its box."""

    def __init__(self, config: ReferDinoConfig):
        super().__init__()
        hf_config = grounding_dino_config(config, mask_head=True)
        self.layers = nn.ModuleList(GroundingDinoDecoderLayer(hf_config) for _ in range(config.mask_layers))

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor, boxes: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """queries, query_pos (B, Q, d); boxes (B, Q, 4) sigmoid cx, cy, w, h; text (B, L, d);
        text_mask (B, L) True = real token; features (B, d, h4, w4)
        -> (mask embeddings (B, Q, d), mask logits (B, Q, h4, w4))."""
        b, d, h, w = features.shape
        memory = features.flatten(2).transpose(1, 2)
        shapes = torch.tensor([[h, w]], dtype=torch.long, device=features.device)
        start = shapes.new_zeros(1)
        valid = torch.ones(b, h * w, dtype=torch.bool, device=features.device)
        text_bias = torch.zeros(text_mask.shape, dtype=text.dtype, device=text.device)
        text_bias = text_bias.masked_fill(~text_mask, torch.finfo(text.dtype).min)[:, None, None, :]
        for layer in self.layers:
            queries = layer(
                hidden_states=queries, position_embeddings=query_pos, reference_points=boxes[:, :, None],
                spatial_shapes=shapes, spatial_shapes_list=[(h, w)], level_start_index=start,
                vision_encoder_hidden_states=memory, vision_encoder_attention_mask=valid,
                text_encoder_hidden_states=text, text_encoder_attention_mask=text_bias,
            )[0]
        return queries, torch.einsum("bqc,bchw->bqhw", queries, features)
