"""A faster forward pass for transformers' `SwinBackbone`, computing what it computes with the same weights.

transformers' Swin block pads its (T, H, W, C) map to whole windows, rolls it (shifted blocks), copies it into
window order, attends, copies it back, rolls back, crops and adds the residual: six full copies per block, and it
builds the shift mask and expands bias + mask to (T * windows, heads, N, N) in every block.
Here the residual stream stays in window order, (T, Hp * Wp, C) with N = ws * ws consecutive rows per window:
LayerNorm, the MLP and residual adds do not care about token order, so each block only permutes the stream into
its own window order (one gather: non-shifted and shifted windows are two fixed permutations of the padded map)
and attends window by window with `F.scaled_dot_product_attention`. The stream keeps a row for every padding
position; as in the official Swin, padding enters attention as zeros after the block's first LayerNorm (so its
keys and values are the projections' biases), and its own outputs are dropped. q, k and v come from one matmul,
the shift mask is built once per input size, and the linear layers run through oneDNN (`layers.linear`), the
MLP's GELU fused into its first matmul.

Same arithmetic as transformers' path (its element-wise work as it does it, its matmuls regrouped), so the results
agree to float rounding; `ReferDinoBackbone.swin_forward = "transformers"` selects the original.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import SwinBackbone

from .layers import linear

# One cached layout per stage and input size: a video keeps its size, so one entry is enough; a new size replaces it.
_LAYOUT_CACHE = "_referdino_layout_cache"


@dataclass(frozen=True)
class _Layout:
    """How one stage's (H, W) map is laid out in windows of `size`, padded to (hp, wp).

    The stream has hp * wp rows in one of two window orders, shift 0 and shift size // 2 (index `s` below):
    order[s]: the padded position (r * wp + c) of each row; padding[s]: the rows that are padding.
    Gathers (`index_select` on rows): entry, into order 0 from the row-major (H * W) map (padding reads row 0:
    its residual never reaches a real token); switch[s], into order s from the other order; exit[s], from order s
    into the row-major map of real positions.
    """

    size: int
    hp: int
    wp: int
    order: tuple[torch.Tensor, torch.Tensor]
    padding: tuple[torch.Tensor, torch.Tensor]
    entry: torch.Tensor
    switch: tuple[torch.Tensor, torch.Tensor]
    exit: tuple[torch.Tensor, torch.Tensor]
    shift_mask: torch.Tensor

    @property
    def windows(self) -> int:
        return (self.hp // self.size) * (self.wp // self.size)


def _layout(height: int, width: int, size: int, device: torch.device) -> _Layout:
    hp, wp = -(-height // size) * size, -(-width // size) * size
    rows = torch.arange(hp, device=device).view(hp // size, 1, size, 1)
    cols = torch.arange(wp, device=device).view(1, wp // size, 1, size)
    order, padding, rank = [], [], []
    for shift in (0, size // 2):
        # torch.roll(x, -shift) puts padded row (i + shift) % hp at row i; windows are then cut from the rolled map.
        r, c = (rows + shift) % hp, (cols + shift) % wp
        order.append((r * wp + c).flatten())  # (hp/ws, wp/ws, ws, ws): window-major, row-major inside
        pad = (r >= height) | (c >= width)
        padding.append(pad.expand(hp // size, wp // size, size, size).flatten().nonzero().flatten())
        rank.append(torch.empty_like(order[-1]).index_copy_(0, order[-1], torch.arange(hp * wp, device=device)))
    r, c = order[0] // wp, order[0] % wp
    entry = torch.where((r < height) & (c < width), r * width + c, 0)
    real = torch.arange(hp * wp, device=device).view(hp, wp)[:height, :width].flatten()
    return _Layout(size, hp, wp, tuple(order), tuple(padding), entry, (rank[1][order[0]], rank[0][order[1]]),
                   (rank[0][real], rank[1][real]), _shift_mask(size, hp, wp, device))


def _cached_layout(stage, height: int, width: int, size: int, device: torch.device) -> _Layout:
    key = (height, width, size, device)
    cached = getattr(stage, _LAYOUT_CACHE, None)
    if cached is None or cached[0] != key:
        with torch.inference_mode(False):  # normal tensors: usable both in and out of inference mode later
            cached = (key, _layout(height, width, size, device))
        setattr(stage, _LAYOUT_CACHE, cached)
    return cached[1]


def _shift_mask(size: int, hp: int, wp: int, device: torch.device) -> torch.Tensor:
    """transformers' (and the official) shifted-window mask: (windows, N, N) float32, -100 between tokens from
    different regions of the rolled map, else 0."""
    shift = size // 2
    h_idx, w_idx = torch.arange(hp, device=device), torch.arange(wp, device=device)
    h_region = (h_idx >= hp - size).long() + (h_idx >= hp - shift).long()
    w_region = (w_idx >= wp - size).long() + (w_idx >= wp - shift).long()
    regions = (h_region[:, None] * 3 + w_region[None, :]).float()  # (hp, wp) of the rolled map
    windows = regions.view(hp // size, size, wp // size, size).transpose(1, 2).reshape(-1, size * size)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _attention_mask(attention, layout: _Layout, shifted: int, dtype: torch.dtype) -> torch.Tensor:
    """Relative position bias (+ shift mask): (1, heads, N, N), or (windows, heads, N, N) when shifted (built per
    call: a small gather, and an add the size of one stage-1 activation at most)."""
    bias = attention.relative_position_bias().to(dtype)  # (1, heads, N, N), as transformers computes it
    return bias + layout.shift_mask.to(dtype).unsqueeze(1) if shifted else bias


def _block(block, stream: torch.Tensor, layout: _Layout, shifted: int) -> torch.Tensor:
    """One Swin block on stream (T, hp * wp, C) already in this block's window order -> the same."""
    frames, rows, channels = stream.shape
    attention = block.attention
    heads = attention.num_attention_heads
    n = layout.size * layout.size
    hidden = block.layernorm_before(stream)
    hidden.index_fill_(1, layout.padding[shifted], 0.0)  # padding enters attention as zeros
    weight = torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight])
    bias = torch.cat([attention.q_proj.bias, attention.k_proj.bias, attention.v_proj.bias])
    qkv = linear(hidden, weight, bias).view(frames, layout.windows, n, 3, heads, -1)
    q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (T, windows, heads, N, d)
    mask = _attention_mask(attention, layout, shifted, stream.dtype)
    if shifted:  # a per-window mask: one call per frame keeps it unexpanded (5-D inputs fall back to the math path)
        outputs = [F.scaled_dot_product_attention(q[t], k[t], v[t], attn_mask=mask, scale=attention.scaling)
                   for t in range(frames)]
        attended = torch.cat([o.transpose(1, 2) for o in outputs])  # (T * windows, N, heads, d)
    else:
        attended = F.scaled_dot_product_attention(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), attn_mask=mask,
                                                  scale=attention.scaling).transpose(1, 2)
    stream = stream + linear(attended.reshape(frames, rows, channels), attention.o_proj.weight, attention.o_proj.bias)
    mlp = block.mlp  # fc1, exact GELU, fc2
    hidden = linear(block.layernorm_after(stream), mlp.fc1.weight, mlp.fc1.bias, "gelu")
    return stream + linear(hidden, mlp.fc2.weight, mlp.fc2.bias)


def _stage(stage, spatial: torch.Tensor, height: int, width: int, size: int) -> torch.Tensor:
    """The blocks of a stage on spatial (T, H * W, C) row-major -> the same, after the last block."""
    layout = _cached_layout(stage, height, width, size, spatial.device)
    stream, shifted = spatial.index_select(1, layout.entry), 0
    for index, block in enumerate(stage.blocks):
        if index:
            shifted = index % 2
            stream = stream.index_select(1, layout.switch[shifted])
        stream = _block(block, stream, layout, shifted)
    return stream.index_select(1, layout.exit[shifted])


def _merge(downsample, spatial: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Patch merging: (T, H * W, C) -> (T, ceil(H/2) * ceil(W/2), 2C), 2x2 neighbours concatenated in
    transformers' order (row 0 col 0, row 1 col 0, row 0 col 1, row 1 col 1), LayerNorm, linear."""
    frames, _, channels = spatial.shape
    grid = F.pad(spatial.view(frames, height, width, channels), (0, 0, 0, width % 2, 0, height % 2))
    h2, w2 = grid.shape[1] // 2, grid.shape[2] // 2
    merged = grid.view(frames, h2, 2, w2, 2, channels).permute(0, 1, 3, 4, 2, 5).reshape(frames, h2 * w2, 4 * channels)
    return linear(downsample.norm(merged), downsample.reduction.weight)


def swin_features(swin: SwinBackbone, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """What `swin(pixel_values).feature_maps` returns: pixel_values (T, 3, h, w) -> one map (T, C_i, h_i, w_i) per
    stage, each through its `hidden_states_norms` LayerNorm."""
    model = swin.swin
    spatial, (height, width) = model.embeddings(pixel_values)  # (T, H * W, C) row-major
    size = swin.config.window_size
    maps = []
    for index, stage in enumerate(model.encoder.layers):
        spatial = _stage(stage, spatial, height, width, size)
        norm = swin.hidden_states_norms[f"stage{index + 1}"]
        frames, _, channels = spatial.shape
        maps.append(norm(spatial).view(frames, height, width, channels).permute(0, 3, 1, 2).contiguous())
        if stage.downsample is not None:
            spatial = _merge(stage.downsample, spatial, height, width)
            height, width = (height + 1) // 2, (width + 1) // 2
    return maps
