"""The fusion encoder: per layer, vision-text bi-attention, the text enhancer, deformable self-attention.

Reuses transformers' `GroundingDinoEncoderLayer`, which computes what the official encoder layer does
(including the fusion's global-max subtraction and +-50000 clamp), with faster equivalents inside:
`FusionAttention` for the bi-attention, the gather sampler for deformable attention, and oneDNN for the linear
layers (`layers.use_fast_linears`), the FFN's ReLU fused into its first matmul.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.grounding_dino.modeling_grounding_dino import (
    GroundingDinoEncoder,
    GroundingDinoEncoderLayer,
    encode_sinusoidal_position_embedding,
)

from .backbone import VisualFeatures
from .config import ReferDinoConfig
from .fusion import set_fusion_attention
from .layers import grounding_dino_config, use_fast_linears


@dataclass
class EncoderOutput:
    """memory: (T, S, d) flattened multi-scale memory (levels in order, row-major), S = sum h_l * w_l.
    text: (T, L, d) per-frame fused text (the "encoded_text" used by every later stage).
    spatial_shapes: (4, 2) int64 (h_l, w_l); level_start_index: (4,); valid_ratios: (T, 4, 2) (all 1:
    frames are never padded); padding_mask: (T, S) bool, True = padding (all False).
    """

    memory: torch.Tensor
    text: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    valid_ratios: torch.Tensor
    padding_mask: torch.Tensor

    @property
    def spatial_shapes_list(self) -> list[tuple[int, int]]:
        return [tuple(s) for s in self.spatial_shapes.tolist()]

    def level_maps(self, count: int = 3) -> list[torch.Tensor]:
        """The first `count` memory levels as maps (T, d, h_l, w_l): strides 8, 16, 32 for the pixel decoder."""
        sizes = [h * w for h, w in self.spatial_shapes_list]
        levels = self.memory.split(sizes, dim=1)
        return [lvl.transpose(1, 2).unflatten(2, hw) for lvl, hw in zip(levels[:count], self.spatial_shapes_list)]


class ReferDinoEncoder(nn.Module):
    def __init__(self, config: ReferDinoConfig):
        super().__init__()
        hf_config = grounding_dino_config(config)
        self.d_model = config.d_model
        self.level_embed = nn.Parameter(torch.zeros(config.num_feature_levels, config.d_model))
        self.layers = nn.ModuleList(GroundingDinoEncoderLayer(hf_config) for _ in range(config.encoder_layers))
        set_fusion_attention(self, "reassociated")
        use_fast_linears(self)
        for layer in self.layers:
            # The FFN's (T, S, 2048) hidden tensor is the encoder's largest: its ReLU runs inside fc1's matmul
            # instead of as one more pass over it.
            ffn = layer.deformable_layer
            ffn.fc1.activation, ffn.activation_fn = "relu", nn.Identity()

    def forward(self, visual: VisualFeatures, text_features: torch.Tensor, text_mask: torch.Tensor,
                text_self_attention_mask: torch.Tensor, text_position_ids: torch.Tensor) -> EncoderOutput:
        """visual: T frames; text_features (1, L, d); text_mask (1, L) True = real token;
        text_self_attention_mask (1, L, L) True = may attend; text_position_ids (1, L)."""
        num_frames = visual.num_frames
        spatial_shapes_list = [tuple(src.shape[-2:]) for src in visual.sources]
        memory = torch.cat([src.flatten(2).transpose(1, 2) for src in visual.sources], 1)  # (T, S, d)
        positions = torch.cat([pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                               for lvl, pos in enumerate(visual.positions)], 1)
        device = memory.device
        spatial_shapes = torch.as_tensor(spatial_shapes_list, dtype=torch.long, device=device)
        level_start_index = torch.cat((spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.ones(num_frames, len(spatial_shapes_list), 2, dtype=memory.dtype, device=device)
        padding_mask = torch.zeros(memory.shape[:2], dtype=torch.bool, device=device)
        reference_points = GroundingDinoEncoder.get_reference_points(spatial_shapes_list, valid_ratios, device)

        expand = (num_frames, -1, -1)
        text = text_features.expand(*expand)
        text_padding = ~text_mask.expand(num_frames, -1)
        text_blocked = ~text_self_attention_mask.expand(*expand)
        text_position_ids = text_position_ids.expand(num_frames, -1)
        text_positions = encode_sinusoidal_position_embedding(
            text_position_ids[..., None].to(text.dtype), num_pos_feats=self.d_model)
        for layer in self.layers:
            (memory, text), _ = layer(
                vision_features=memory, vision_position_embedding=positions, spatial_shapes=spatial_shapes,
                spatial_shapes_list=spatial_shapes_list, level_start_index=level_start_index,
                key_padding_mask=padding_mask, reference_points=reference_points, text_features=text,
                text_attention_mask=text_padding, text_position_embedding=text_positions,
                text_self_attention_masks=text_blocked, text_position_ids=text_position_ids,
            )
        return EncoderOutput(memory, text, spatial_shapes, level_start_index, valid_ratios, padding_mask)
