"""The official post-processing, in one place: which queries are the referred object, and masks at the original size.

Scores: `sigmoid(pred_logits)`, computed once (`frame_scores`); everything else ranks the (T, Q) scores.
Single-target (Ref-YouTube-VOS, Ref-DAVIS, the demo): the query with the highest mean score over frames, one query
for the whole video. Multi-target (MeViS): every query whose mean score exceeds a threshold (0.2 in the official
script), the top-1 when none does; the final mask is their union.
Masks: the stride-4 logits are resized bilinearly (align_corners=False) straight to the original size, then
thresholded. The threshold is compared in logit space everywhere (`above_threshold`): sigmoid(x) > t <=> x > logit(t),
so masks, contours and exports agree to the pixel and no sigmoid of a whole video is computed for them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError


def frame_scores(pred_logits: torch.Tensor) -> torch.Tensor:
    """pred_logits (T, Q) -> (T, Q) per-frame scores, the official `sigmoid(pred_logits)`."""
    return pred_logits.float().sigmoid()


def mean_scores(scores: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(T, Q) per-frame scores -> (Q,) mean over frames: the official ranking."""
    return torch.as_tensor(scores).float().mean(0)


def rank_queries(scores: torch.Tensor | np.ndarray) -> list[int]:
    """Queries by mean score, best first; ties keep the lower index first, as the official `argmax` does."""
    return torch.sort(mean_scores(scores), descending=True, stable=True).indices.tolist()


def select_query(scores: torch.Tensor | np.ndarray) -> int:
    """The official single-target choice: the query with the best mean score."""
    return rank_queries(scores)[0]


def queries_above(scores: torch.Tensor | np.ndarray, threshold: float, among: list[int] | None = None) -> list[int]:
    """The official multi-target rule: the queries (of `among`, default all) whose mean score exceeds `threshold`,
    best first; the best one alone when none does."""
    means = mean_scores(scores)
    ranked = [q for q in rank_queries(scores) if among is None or q in among]
    return [q for q in ranked if means[q] > threshold] or ranked[:1]


def choose_candidates(scores: torch.Tensor | np.ndarray, count: int, multi_target: float | None = None) -> list[int]:
    """The queries whose masks are kept: the best `count` by mean score (the official choice first), plus every
    query above `multi_target` when it is given."""
    ranked = rank_queries(scores)
    chosen = ranked[:count]
    if multi_target is not None:
        means = mean_scores(scores)
        chosen += [q for q in ranked[count:] if means[q] > multi_target]
    return chosen


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Mask logits -> float32 probabilities, without the overflow warnings of `1 / (1 + exp(-x))`."""
    return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, np.float32)))).astype(np.float32)


def threshold_logit(threshold: float) -> float:
    """logit(threshold), the cut in logit space; -inf for 0 and +inf for 1 (all and no pixels)."""
    if not 0.0 <= threshold <= 1.0:  # also refuses NaN
        raise ConfigError(f"the mask threshold must be between 0 and 1, got {threshold}")
    if threshold <= 0.0:
        return -math.inf
    if threshold >= 1.0:
        return math.inf
    return math.log(threshold / (1 - threshold))


def above_threshold(logits: np.ndarray, threshold: float) -> np.ndarray:
    """Mask logits (any shape) -> bool, True where the probability is above `threshold`."""
    return np.asarray(logits) > threshold_logit(threshold)


def upsample_logits(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """mask_logits (T, h4, w4) at stride 4 -> (T, H, W) logits at the original frame size."""
    return F.interpolate(mask_logits[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
