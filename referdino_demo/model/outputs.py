"""Output containers of the model, with shapes. T frames, Q output queries, L text tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch


class Trace:
    """Collects named intermediate tensors (for the parity tool and debugging); chunks are concatenated.

    A module given `trace=None` records nothing and pays nothing.
    """

    def __init__(self) -> None:
        self._parts: dict[str, list[torch.Tensor]] = {}
        self._static: dict[str, torch.Tensor] = {}

    def add(self, name: str, tensor: torch.Tensor, per_frame: bool = True) -> None:
        tensor = tensor.detach().float().cpu() if tensor.is_floating_point() else tensor.detach().cpu()
        if per_frame:
            self._parts.setdefault(name, []).append(tensor)
        else:
            self._static.setdefault(name, tensor)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {name: torch.cat(parts) for name, parts in self._parts.items()}
        out.update(self._static)
        return out


def record(trace: Trace | None, name: str, tensor: torch.Tensor, per_frame: bool = True) -> None:
    if trace is not None:
        trace.add(name, tensor, per_frame)


@dataclass
class FrameQueries:
    """Per-frame result of the spatial stages for a chunk of frames (before tracking).

    hs: (T, Q, d) final decoder queries after the decoder LayerNorm, in pruning order;
    reference: (T, Q, 4) their input boxes of the last decoder layer (sigmoid cx, cy, w, h);
    text: (T, L, d) fused text of each frame; token_ids: (T, Q) int64 encoder token each query came from.
    """

    hs: torch.Tensor
    reference: torch.Tensor
    text: torch.Tensor
    token_ids: torch.Tensor

    @classmethod
    def cat(cls, chunks: Sequence["FrameQueries"]) -> "FrameQueries":
        """Consecutive chunks of frames -> one `FrameQueries` over all their frames."""
        return cls(*(torch.cat([getattr(chunk, field.name) for chunk in chunks]) for field in fields(cls)))


@dataclass
class ReferDinoOutput:
    """The model's output for one video and one expression (the official `infer()` outputs, batch removed).

    pred_logits: (T, Q) grounding logits (sigmoid gives the per-frame score of each query);
    pred_boxes: (T, Q, 4) normalised cx, cy, w, h; pred_masks: (T, Q, h/4, w/4) mask logits at stride 4 of
    the model input; token_ids: (T, Q) encoder token of each (tracked) query; trace: intermediate tensors
    when requested.
    """

    pred_logits: torch.Tensor
    pred_boxes: torch.Tensor
    pred_masks: torch.Tensor
    token_ids: torch.Tensor
    trace: dict[str, torch.Tensor] | None = None
