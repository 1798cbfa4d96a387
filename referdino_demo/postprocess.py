"""The official post-processing: which query is the referred object, and masks at the original size.

Single-target (Ref-YouTube-VOS, Ref-DAVIS, the demo): the query with the highest mean over frames of
sigmoid(logit), one query for the whole video. Multi-target (MeViS): every query whose mean score exceeds a
threshold (0.2 in the official script), top-1 when none does; the final mask is their union.
Masks: the stride-4 logits are resized bilinearly (align_corners=False) straight to the original size,
then thresholded on the sigmoid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_scores(pred_logits: torch.Tensor) -> torch.Tensor:
    """pred_logits (T, Q) -> (Q,) mean over frames of sigmoid(logit)."""
    return pred_logits.sigmoid().mean(0)


def select_query(pred_logits: torch.Tensor) -> int:
    """The official single-target rule: argmax over queries of the mean score."""
    return int(mean_scores(pred_logits).argmax())


def select_queries_above(pred_logits: torch.Tensor, threshold: float = 0.2) -> list[int]:
    """The official MeViS rule: every query with mean score > threshold, else the top-1 query."""
    scores = mean_scores(pred_logits)
    chosen = torch.nonzero(scores > threshold).flatten().tolist()
    return chosen or [int(scores.argmax())]


def upsample_logits(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """mask_logits (T, h4, w4) at stride 4 -> (T, H, W) logits at the original frame size."""
    return F.interpolate(mask_logits[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
