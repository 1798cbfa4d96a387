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
        offsets = _row_offsets(level_start_index.to(value.device, index), batch, queries, length, heads)
        locations = sampling_locations.float().flatten(0, 1)  # (B*Q, heads, levels, points, 2)
        attention = attention_weights.float().flatten(0, 1)
        out = table.new_empty(batch * queries, heads * channels)
        points_per_block = POINTS_PER_BLOCK if value.device.type == "cpu" else POINTS_PER_BLOCK_ACCELERATOR
        block = max(1, points_per_block // (heads * levels * points))
        for first in range(0, batch * queries, block):
            part = slice(first, first + block)
            rows, weights = _corner_rows_and_weights(locations[part], attention[part], sizes, offsets[part])
            out[part] = F.embedding_bag(rows.view(-1, corners), table, per_sample_weights=weights.view(-1, corners),
                                        mode="sum").view(-1, heads * channels)
        return out.view(batch, queries, heads * channels).to(value.dtype)


def _row_offsets(starts: torch.Tensor, batch: int, queries: int, length: int, heads: int) -> torch.Tensor:
    """The table row of pixel (0, 0) of each level, for each flattened (batch, query) row and head:
    (b * S + starts[level]) * heads + head. starts (levels,) -> (batch * queries, heads, levels). Made once per
    call: a block of points only slices it."""
    batch_offset = torch.arange(batch, device=starts.device, dtype=starts.dtype) * (length * heads)
    head_offset = torch.arange(heads, device=starts.device, dtype=starts.dtype)
    offsets = batch_offset[:, None, None] + head_offset[:, None] + starts * heads  # (batch, heads, levels)
    return offsets.repeat_interleave(queries, 0)


def _corner_rows_and_weights(locations: torch.Tensor, attention: torch.Tensor, sizes: torch.Tensor,
                             offsets: torch.Tensor):
    """Table rows and weights of the 4 bilinear corners of each sampling point.

    locations (R, heads, levels, points, 2) and attention (R, heads, levels, points) of R flattened (batch,
    query) rows; sizes (levels, 2) as (w, h); offsets (R, heads, levels) from `_row_offsets` -> rows (the dtype
    of `sizes`) and weights float, both (R, heads, 4 * levels * points): one bag per (row, head).
    """
    heads = locations.shape[1]
    x_rows, x_weight = _axis_corners(locations[..., 0], sizes[:, 0], heads)
    y_rows, y_weight = _axis_corners(locations[..., 1], sizes[:, 1], sizes[:, 0, None] * heads)
    # (R, heads, 2 y corners, 2 x corners, levels, points): the order inside a bag does not matter,
    # and keeping (levels, points) innermost keeps the broadcasts contiguous.
    weights = (y_weight * attention[:, :, None])[:, :, :, None] * x_weight[:, :, None]
    y_rows += offsets[:, :, None, :, None]
    rows = y_rows[:, :, :, None] + x_rows[:, :, None]
    return rows.flatten(2), weights.flatten(2)


def _axis_corners(coordinate: torch.Tensor, size: torch.Tensor, step: torch.Tensor | int):
    """coordinate (R, heads, levels, points) in [0, 1] along an axis of `size` (levels,) pixels, a pixel being
    `step` (levels,) table rows apart -> (row step, weight), both (R, heads, 2, levels, points), of the low and
    the high bilinear corner. A corner outside the map gets weight 0 (zero padding) and the nearest pixel's row.

    Each elementwise op is one parallel region on a CPU, which a shared machine makes expensive (an idle thread
    must be woken for it): 13 ops, formerly 17. The rows, which carry no gradient, are written in place."""
    size = size[:, None]
    pixel = coordinate * size - 0.5  # align_corners=False
    low = pixel.floor()
    weight = torch.stack((low + 1 - pixel, pixel - low), 2)
    index = size.new_empty(weight.shape)
    index[:, :, 0] = low.detach()
    torch.add(index[:, :, 0], 1, out=index[:, :, 1])
    nearest = torch.clamp(index, min=torch.zeros_like(size), max=size - 1)
    weight.masked_fill_(nearest != index, 0)  # not mul_ by the mask: casting it is one more pass
    return nearest * step, weight


SAMPLERS = {"gather": DeformableSampling, "grid_sample": MultiScaleDeformableAttention}


def set_deformable_sampler(model: nn.Module, name: str = "gather") -> nn.Module:
    """Use sampler `name` in every deformable attention inside `model`: "gather" (ours, the default) or
    "grid_sample" (transformers' original, kept as the reference the benchmarks and tests compare against)."""
    for module in model.modules():
        if isinstance(module, GroundingDinoMultiscaleDeformableAttention):
            module.attn = SAMPLERS[name]()
    return model
