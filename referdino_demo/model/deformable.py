"""Multi-scale deformable sampling as one weighted gather.

transformers' pure-PyTorch `MultiScaleDeformableAttention` (the same as the official CPU fallback) calls
`grid_sample` per level, stacks the samples into a (B*heads, C, Q, levels*points) tensor, then multiplies
and sums it; on a CPU the stack and the product cost three times the sampling. Here each point's four
bilinear corners get the point's attention weight folded in, and `F.embedding_bag` sums weight x value row
over all corners of a query in one fused pass, so the samples are never materialised. Points are processed
in blocks so the corner tensors stay small. Same arithmetic (bilinear, zero padding, align_corners=False);
it matches a float64 evaluation as closely as the grid_sample path does. Pure PyTorch on every device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.grounding_dino.modeling_grounding_dino import (
    GroundingDinoMultiscaleDeformableAttention,
    MultiScaleDeformableAttention,
)

# Sampling points per block: large enough to amortise the per-op overhead, small enough that the
# (points, 4) corner tensors stay in cache (measured on 2 CPU cores; 4x more was 25% slower).
POINTS_PER_BLOCK = 1 << 17


class DeformableSampling(nn.Module):
    """Drop-in for transformers' `MultiScaleDeformableAttention` (same forward signature, same result)."""

    def forward(self, value: torch.Tensor, value_spatial_shapes: torch.Tensor,
                value_spatial_shapes_list: list[tuple[int, int]], level_start_index: torch.Tensor,
                sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                im2col_step: int | None = None) -> torch.Tensor:
        """value (B, S, heads, C), S = sum h_l * w_l; sampling_locations (B, Q, heads, levels, points, 2) as
        (x, y) in [0, 1]; attention_weights (B, Q, heads, levels, points) -> (B, Q, heads * C).

        Computed in float32 (the official fp16 CUDA op upcasts too) and returned in value's dtype.
        """
        batch, length, heads, channels = value.shape
        _, queries, _, levels, points, _ = sampling_locations.shape
        corners = levels * points * 4
        table = value.float().reshape(-1, channels)  # row (b * S + s) * heads + h
        sizes = value_spatial_shapes.flip(-1).to(value.device)  # (levels, 2) as (w, h)
        starts = level_start_index.to(value.device)
        locations = sampling_locations.float().flatten(0, 1)  # (B*Q, heads, levels, points, 2)
        attention = attention_weights.float().flatten(0, 1)
        out = table.new_empty(batch * queries, heads * channels)
        block = max(1, POINTS_PER_BLOCK // (heads * levels * points))
        for first in range(0, batch * queries, block):
            part = slice(first, first + block)
            rows, weights = _corner_rows_and_weights(locations[part], attention[part], sizes, starts,
                                                     first, queries, length)
            out[part] = F.embedding_bag(rows.view(-1, corners), table, per_sample_weights=weights.view(-1, corners),
                                        mode="sum").view(-1, heads * channels)
        return out.view(batch, queries, heads * channels).to(value.dtype)


def _corner_rows_and_weights(locations: torch.Tensor, attention: torch.Tensor, sizes: torch.Tensor,
                             starts: torch.Tensor, first: int, queries: int, length: int):
    """Table rows and weights of the 4 bilinear corners of each sampling point.

    locations (R, heads, levels, points, 2) for flattened (batch, query) rows first..first+R; attention
    (R, heads, levels, points); sizes (levels, 2) as (w, h); starts (levels,) first memory index per level
    -> rows int64 and weights float, both (R, heads, levels, points, 4) ordered y0x0, y0x1, y1x0, y1x1.
    A corner outside its map gets weight 0 (zero padding) and a clamped, valid row.
    """
    heads = locations.shape[1]
    limit = sizes[:, None, :]  # (levels, 1, 2): broadcast over points
    # grid_sample's own unnormalisation of the grid 2 * loc - 1 (align_corners=False), to stay bit-close.
    pixel = ((2 * locations - 1 + 1) * limit.to(locations.dtype) - 1) / 2
    low = pixel.floor()
    # grid_sample's weights: (low + 1 - x) for the low corner, (x - low) for the high one.
    low_weight, high_weight = low + 1 - pixel, pixel - low
    low = low.long()
    low_weight = low_weight * ((low >= 0) & (low < limit))
    high_weight = high_weight * ((low >= -1) & (low < limit - 1))
    low_index = torch.minimum(low.clamp(min=0), limit - 1)
    high_index = torch.minimum((low + 1).clamp(min=0), limit - 1)

    x_weights = torch.stack((low_weight[..., 0], high_weight[..., 0]), -1)
    y_weights = torch.stack((low_weight[..., 1], high_weight[..., 1]), -1) * attention[..., None]
    weights = y_weights[..., :, None] * x_weights[..., None, :]

    device = locations.device
    batch_of_row = torch.arange(first, first + locations.shape[0], device=device) // queries
    base = (batch_of_row.view(-1, 1, 1, 1, 1) * length * heads
            + torch.arange(heads, device=device).view(1, -1, 1, 1, 1))
    width = sizes[:, 0, None, None]  # (levels, 1, 1)
    x_rows = torch.stack((low_index[..., 0], high_index[..., 0]), -1) * heads
    y_rows = (starts[:, None, None] + torch.stack((low_index[..., 1], high_index[..., 1]), -1) * width) * heads
    rows = (y_rows + base)[..., :, None] + x_rows[..., None, :]
    return rows.flatten(-2), weights.flatten(-2)


SAMPLERS = {"gather": DeformableSampling, "grid_sample": MultiScaleDeformableAttention}


def set_deformable_sampler(model: nn.Module, name: str = "gather") -> nn.Module:
    """Use sampler `name` in every deformable attention inside `model`: "gather" (ours, the default) or
    "grid_sample" (transformers' original, kept as the reference the benchmarks and tests compare against)."""
    for module in model.modules():
        if isinstance(module, GroundingDinoMultiscaleDeformableAttention):
            module.attn = SAMPLERS[name]()
    return model
