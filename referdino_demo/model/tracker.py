"""The memory-augmented tracker: aligns each frame's final queries with a running memory of the video.

Frame 0 defines the slots. For every later frame, the Hungarian assignment on the cosine cost
`1 - cos(memory, queries)` permutes the frame's queries (and their boxes) into the slots; then the memory
moves towards the frame by `tracking_alpha * c`, where c is each query's grounding score, min-max
normalised over the queries of the frame.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from .layers import text_logits
from .outputs import FrameQueries


def match_to_memory(memory: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """memory (Q, d), queries (Q, d) -> perm (Q,) int64: perm[i] = the query assigned to memory slot i."""
    queries = queries / queries.norm(dim=1)[:, None]
    memory = memory / memory.norm(dim=1)[:, None]
    cost = (1 - queries @ memory.T).T  # (slots, queries)
    _, columns = linear_sum_assignment(cost.float().cpu().numpy())
    return torch.as_tensor(columns, dtype=torch.long, device=queries.device)


class QueryTracker:
    """Carries the tracker memory across chunks of frames, so chunking does not change the result."""

    def __init__(self, alpha: float):
        self.alpha = alpha
        self.memory: torch.Tensor | None = None

    def __call__(self, frames: FrameQueries, text_mask: torch.Tensor) -> tuple[FrameQueries, torch.Tensor]:
        """Track a chunk of consecutive frames. text_mask (1, L) True = real token.

        -> (the frames with queries, boxes and token ids permuted into slots, perm (T, Q))."""
        hs, reference, token_ids, perms = [], [], [], []
        for t in range(frames.hs.shape[0]):
            queries = frames.hs[t]
            if self.memory is None:
                perm = torch.arange(queries.shape[0], device=queries.device)
                self.memory = queries
            else:
                perm = match_to_memory(self.memory, queries)
                queries = queries[perm]
                score = text_logits(queries[None], frames.text[t][None], text_mask)[0]
                spread = score.max() - score.min()
                # The official code divides by zero when all scores are equal (then crashes in the
                # assignment on NaN costs); we leave the memory unchanged instead.
                confidence = ((score - score.min()) / spread if spread > 0 else torch.zeros_like(score))[:, None]
                self.memory = (1 - self.alpha * confidence) * self.memory + self.alpha * confidence * queries
            hs.append(queries)
            reference.append(frames.reference[t][perm])
            token_ids.append(frames.token_ids[t][perm])
            perms.append(perm)
        tracked = FrameQueries(torch.stack(hs), torch.stack(reference), frames.text, torch.stack(token_ids))
        return tracked, torch.stack(perms)
