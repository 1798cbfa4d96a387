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

# Sampling points per block. On a CPU: large enough to amortise the per-op overhead, small enough that the
# corner tensors stay in cache (on 2 cores: half as many was 10-20% slower, twice as many 40% slower). On a GPU
# blocks only bound the temporaries (about 100 bytes a point), so they are large to keep kernel launches few.
POINTS_PER_BLOCK = 1 << 17
POINTS_PER_BLOCK_ACCELERATOR = 1 << 22
PROFILER_LABEL = "deformable sampling"


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
        with torch.profiler.record_function(PROFILER_LABEL):  # the benchmarks' time split finds it by this name
            return self._sample(value, value_spatial_shapes, level_start_index, sampling_locations,
                                attention_weights)

    def _sample(self, value, value_spatial_shapes, level_start_index, sampling_locations, attention_weights):
        batch, length, heads, channels = value.shape
        _, queries, _, levels, points, _ = sampling_locations.shape
        corners = levels * points * 4
        table = value.float().reshape(-1, channels)  # row (b * S + s) * heads + h
        # 32-bit rows where they fit: the corner rows are the largest temporaries, half the memory traffic.
        index = torch.int32 if table.shape[0] < 2**31 else torch.int64
        sizes = value_spatial_shapes.flip(-1).to(value.device, index)  # (levels, 2) as (w, h)
        starts = level_start_index.to(value.device, index)
        locations = sampling_locations.float().flatten(0, 1)  # (B*Q, heads, levels, points, 2)
        attention = attention_weights.float().flatten(0, 1)
        out = table.new_empty(batch * queries, heads * channels)
        points_per_block = POINTS_PER_BLOCK if value.device.type == "cpu" else POINTS_PER_BLOCK_ACCELERATOR
        block = max(1, points_per_block // (heads * levels * points))
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
    -> rows (the dtype of `sizes`) and weights float, both (R, heads, 4 * levels * points): one bag per
    (row, head).
    """
    heads = locations.shape[1]
    x_index, x_weight = _axis_corners(locations[..., 0], sizes[:, 0])
    y_index, y_weight = _axis_corners(locations[..., 1], sizes[:, 1])
    # (R, heads, 2 y corners, 2 x corners, levels, points): the order inside a bag does not matter,
    # and keeping (levels, points) innermost keeps the broadcasts contiguous.
    weights = (y_weight * attention[:, :, None])[:, :, :, None] * x_weight[:, :, None]
    device = locations.device
    batch_of_row = torch.arange(first, first + locations.shape[0], device=device, dtype=sizes.dtype) // queries
    heads_range = torch.arange(heads, device=device, dtype=sizes.dtype)
    base = (batch_of_row[:, None] * length * heads + heads_range).view(-1, heads, 1, 1, 1)
    y_rows = (starts[:, None] + y_index * sizes[:, 0, None]) * heads + base
    rows = y_rows[:, :, :, None] + (x_index * heads)[:, :, None]
    return rows.flatten(2), weights.flatten(2)


def _axis_corners(coordinate: torch.Tensor, size: torch.Tensor):
    """coordinate (R, heads, levels, points) in [0, 1] along an axis of `size` (levels,) pixels ->
    (index, weight), both (R, heads, 2, levels, points), of the low and the high bilinear corner.
    A corner outside the map gets weight 0 (zero padding) and index 0."""
    size = size[:, None]
    pixel = coordinate * size - 0.5  # align_corners=False
    low = pixel.floor()
    weight = torch.stack((low + 1 - pixel, pixel - low), 2)
    low = low.to(size.dtype)
    index = torch.stack((low, low + 1), 2)
    inside = (index >= 0) & (index < size)
    return index * inside, weight * inside


SAMPLERS = {"gather": DeformableSampling, "grid_sample": MultiScaleDeformableAttention}


def set_deformable_sampler(model: nn.Module, name: str = "gather") -> nn.Module:
    """Use sampler `name` in every deformable attention inside `model`: "gather" (ours, the default) or
    "grid_sample" (transformers' original, kept as the reference the benchmarks and tests compare against)."""
    for module in model.modules():
        if isinstance(module, GroundingDinoMultiscaleDeformableAttention):
            module.attn = SAMPLERS[name]()
    return model
