"""Confidence-aware query pruning, exactly as the official decoder computes it (not as the paper words it).

After every decoder layer each query gets a gate: the mean of two softmaxes over the queries, one of its
grounding score against the fused text (on the layer output before the decoder's LayerNorm), one of the
self-attention it receives from the other queries (head-averaged weights, diagonal zeroed, column sum).
The `ceil(query_decay * N)` queries with the highest gates are kept, in descending gate order.
"""

from __future__ import annotations

import math

import torch

from .layers import text_logits


def pruning_gate(output: torch.Tensor, self_attention: torch.Tensor, text: torch.Tensor,
                 text_mask: torch.Tensor) -> torch.Tensor:
    """output (B, N, d) layer output before the decoder norm; self_attention (B, N, N) head-averaged weights
    [row = query, column = key]; text (B, L, d); text_mask (B, L) True = real token -> gate (B, N)."""
    grounding = text_logits(output, text, text_mask).softmax(-1)
    off_diagonal = 1 - torch.eye(self_attention.shape[-1], dtype=self_attention.dtype, device=self_attention.device)
    received = (self_attention * off_diagonal).sum(1).softmax(-1)
    return (grounding + received) / 2


def kept_count(num_queries: int, query_decay: float) -> int:
    return math.ceil(num_queries * query_decay)


def select_queries(gate: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (gate values (B, keep) descending, indices (B, keep) into the layer's input order)."""
    return torch.topk(gate, keep, dim=1)


def gather_rows(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """x (B, N, ...) indexed along N by indices (B, K) -> (B, K, ...)."""
    index = indices.view(*indices.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, index)
