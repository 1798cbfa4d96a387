"""Swin backbone returning all four stages, the input projections and the sine position embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import SwinBackbone, SwinConfig
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoSinePositionEmbedding

from .config import ReferDinoConfig
from .layers import grounding_dino_config, use_fast_linears
from .outputs import Trace, record
from .swin import swin_features


def feature_map_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(h_l, w_l) of the 4 levels for a height x width input: Swin's patch embedding (4x) and patch merging (2x),
    both padding odd sizes, give strides 8, 16, 32; the extra level is a stride-2 3x3 convolution with padding 1."""
    h, w = -(-height // 4), -(-width // 4)
    sizes = []
    for _ in range(3):
        h, w = -(-h // 2), -(-w // 2)
        sizes.append((h, w))
    sizes.append(((h - 1) // 2 + 1, (w - 1) // 2 + 1))
    return sizes


@dataclass
class VisualFeatures:
    """Backbone output for a chunk of T frames of one video.

    stage1: (T, C1, h/4, w/4) Swin stage 1 after its own LayerNorm (`norm0`), for the mask head only.
    sources: 4 maps (T, d_model, h_l, w_l) at strides 8, 16, 32, 64 (input projections of stages 2-4
      plus the extra stride-2 level).
    positions: 4 sine position embeddings of the same shapes.
    """

    stage1: torch.Tensor
    sources: list[torch.Tensor]
    positions: list[torch.Tensor]

    @property
    def num_frames(self) -> int:
        return self.stage1.shape[0]

    @classmethod
    def cat(cls, parts: list["VisualFeatures"]) -> "VisualFeatures":
        """Consecutive parts of a chunk -> one `VisualFeatures` over all their frames; a single part as it is."""
        if len(parts) == 1:
            return parts[0]
        return cls(torch.cat([part.stage1 for part in parts]),
                   [torch.cat(maps) for maps in zip(*(part.sources for part in parts))],
                   [torch.cat(maps) for maps in zip(*(part.positions for part in parts))])

    def frames(self, start: int, end: int) -> "VisualFeatures":
        """The features of frames [start, end)."""
        return VisualFeatures(self.stage1[start:end], [s[start:end] for s in self.sources],
                              [p[start:end] for p in self.positions])


class ReferDinoBackbone(nn.Module):
    """Swin (transformers' `SwinBackbone` modules, so the weights keep its names) with the input projections.

    swin_forward: "fast" (default) runs the Swin through `swin.swin_features`, "transformers" through transformers'
    own forward (the reference the benchmarks and tests compare against); both compute the same."""

    swin_forward = "fast"

    def __init__(self, config: ReferDinoConfig):
        super().__init__()
        swin = config.backbone
        self.swin = SwinBackbone(SwinConfig(
            embed_dim=swin.embed_dim, depths=swin.depths, num_heads=swin.num_heads, window_size=swin.window_size,
            patch_size=swin.patch_size, mlp_ratio=swin.mlp_ratio, layer_norm_eps=swin.layer_norm_eps,
            qkv_bias=True, hidden_act="gelu", use_absolute_embeddings=False, drop_path_rate=0.0,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            out_features=["stage1", "stage2", "stage3", "stage4"],
        ))
        # The official backbone has no final norm; transformers' SwinModel keeps an unused one.
        self.swin.swin.layernorm = nn.Identity()
        channels = swin.stage_channels
        d, groups = config.d_model, config.input_proj_groups
        projections = [nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(groups, d)) for c in channels[1:]]
        projections.append(nn.Sequential(nn.Conv2d(channels[-1], d, kernel_size=3, stride=2, padding=1),
                                          nn.GroupNorm(groups, d)))
        self.input_proj = nn.ModuleList(projections)
        self.position_embedding = GroundingDinoSinePositionEmbedding(grounding_dino_config(config))
        use_fast_linears(self)

    def forward(self, pixel_values: torch.Tensor, trace: Trace | None = None) -> VisualFeatures:
        """pixel_values (T, 3, h, w), normalised, no padding -> `VisualFeatures`."""
        if self.swin_forward == "transformers":
            stages = self.swin(pixel_values).feature_maps
        else:
            stages = swin_features(self.swin, pixel_values)
        for index, stage in enumerate(stages, start=1):
            record(trace, f"backbone.stage{index}", stage)
        stage1, stage2, stage3, stage4 = stages
        sources = [proj(x) for proj, x in zip(self.input_proj, (stage2, stage3, stage4, stage4))]
        positions = []
        for source in sources:
            valid = torch.ones(source.shape[0], *source.shape[-2:], dtype=torch.long, device=source.device)
            positions.append(self.position_embedding(source, valid).to(source.dtype))
        return VisualFeatures(stage1, sources, positions)
