"""Results of a segmentation, as numpy arrays on the CPU, independent of the model.

Everything a user changes after the run (mask threshold, which candidate query, single- or multi-target
rule, colours) is an argument here or of the renderers, so it never re-runs the model. Vocabulary: T
processed frames, Q output queries of the model, K kept candidates, (H, W) original frame size, (h4, w4) the
stride-4 mask size of the model input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from . import postprocess
from .errors import ConfigError, ReferDinoError, UnknownExpressionError
from .preprocess.text import clean_expression


@dataclass
class ExpressionResult:
    """One expression over one video.

    scores: (T, Q) float32, per-frame sigmoid score of every query (the official `sigmoid(pred_logits)`).
    boxes: (T, Q, 4) float32, normalised (cx, cy, w, h) of every query.
    candidates: (K,) int64, the queries whose stride-4 mask logits are kept, best mean score first; the
      first one is the official single-target choice.
    candidate_logits: (K, T, h4, w4) float16 mask logits of those queries.
    query: the query shown (by default the official choice, `candidates[0]`).
    """

    expression: str
    frame_size: tuple[int, int]
    scores: np.ndarray
    boxes: np.ndarray
    candidates: np.ndarray
    candidate_logits: np.ndarray
    query: int | None = None
    truncated: bool = False
    untrained: bool = False

    def __post_init__(self) -> None:
        t, q = self.scores.shape
        if self.boxes.shape != (t, q, 4):
            raise ConfigError(f"boxes must be (T, Q, 4) = {(t, q, 4)}, got {self.boxes.shape}")
        if self.candidate_logits.shape[:2] != (len(self.candidates), t):
            raise ConfigError(f"candidate_logits must be (K, T, h4, w4) with K={len(self.candidates)}, T={t}; "
                             f"got {self.candidate_logits.shape}")
        if self.query is None:
            self.query = int(self.candidates[0])
        if self.query not in self.candidates:
            raise ConfigError(f"query {self.query} has no kept mask logits; kept queries: {self.candidates.tolist()}")

    # -- numbers ---------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self.scores.shape[0]

    @property
    def mean_scores(self) -> np.ndarray:
        """(Q,) mean over frames of each query's score: the official ranking."""
        return postprocess.mean_scores(self.scores).numpy()

    @property
    def frame_scores(self) -> np.ndarray:
        """(T,) score of the shown query in each frame."""
        return self.scores[:, self.query]

    @property
    def logits(self) -> np.ndarray:
        """(T, h4, w4) float16 stride-4 mask logits of the shown query."""
        return self.candidate_logits[self._slot(self.query)]

    @property
    def probabilities(self) -> np.ndarray:
        """(T, h4, w4) float16 stride-4 mask probabilities of the shown query."""
        return postprocess.probabilities(self.logits).astype(np.float16)

    def boxes_xyxy(self, query: int | None = None) -> np.ndarray:
        """(T, 4) float32 boxes of a query (default: the shown one) in pixels of the original frame."""
        cx, cy, w, h = np.moveaxis(self.boxes[:, self.query if query is None else query], -1, 0)
        height, width = self.frame_size
        return np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                         (cy + h / 2) * height], -1).astype(np.float32)

    # -- choices ---------------------------------------------------------------------------------------
    def with_candidate(self, rank: int) -> "ExpressionResult":
        """The same result showing the `rank`-th candidate (0 = the official choice)."""
        if not 0 <= rank < len(self.candidates):
            raise ReferDinoError(f"candidate {rank} does not exist; there are {len(self.candidates)} (0 to "
                                 f"{len(self.candidates) - 1})")
        return dataclasses.replace(self, query=int(self.candidates[rank]))

    def queries_above(self, score: float = 0.2) -> list[int]:
        """The official multi-target rule (MeViS): kept queries with mean score > `score`, else the best one."""
        return postprocess.queries_above(self.scores, score, among=self.candidates.tolist())

    # -- masks -----------------------------------------------------------------------------------------
    def upsampled_logits(self, frames: slice | list[int] | None = None, queries: list[int] | None = None) -> np.ndarray:
        """(len(queries), t, H, W) float32 logits at the original size (bilinear, as the official code)."""
        queries = [self.query] if queries is None else queries
        frames = slice(None) if frames is None else frames
        stacked = torch.from_numpy(np.stack([self.candidate_logits[self._slot(q)][frames] for q in queries]))
        k, t = stacked.shape[:2]
        return postprocess.upsample_logits(stacked.flatten(0, 1), self.frame_size).view(k, t, *self.frame_size).numpy()

    def masks(self, threshold: float = 0.5, multi_target: float | None = None) -> np.ndarray:
        """(T, H, W) bool masks: probability > threshold for the shown query, or with `multi_target=s` the
        union over `queries_above(s)`."""
        return np.concatenate([m for _, m in self.iter_masks(threshold, multi_target)]) if self.num_frames else \
            np.zeros((0, *self.frame_size), bool)

    def iter_masks(self, threshold: float = 0.5, multi_target: float | None = None,
                   chunk: int = 16) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first frame index, (t, H, W) bool masks) chunk by chunk, bounding memory on long videos."""
        queries = None if multi_target is None else self.queries_above(multi_target)
        postprocess.threshold_logit(threshold)  # a bad threshold fails before any work
        for start in range(0, self.num_frames, chunk):
            logits = self.upsampled_logits(slice(start, start + chunk), queries)
            yield start, postprocess.above_threshold(logits, threshold).any(0)

    def mask(self, frame: int, threshold: float = 0.5, multi_target: float | None = None) -> np.ndarray:
        """(H, W) bool mask of one frame."""
        queries = None if multi_target is None else self.queries_above(multi_target)
        return postprocess.above_threshold(self.upsampled_logits([frame], queries), threshold).any(0)[0]

    def to_detections(self, frame: int, threshold: float = 0.5):
        """One frame as a `supervision.Detections` (one detection: mask, xyxy box, confidence)."""
        import supervision as sv

        mask = self.mask(frame, threshold)
        return sv.Detections(xyxy=self.boxes_xyxy()[frame][None], mask=mask[None],
                             confidence=np.array([self.frame_scores[frame]], np.float32),
                             class_id=np.array([0]), data={"expression": np.array([self.expression])})

    def _slot(self, query: int) -> int:
        slots = np.nonzero(self.candidates == query)[0]
        if not len(slots):
            raise ReferDinoError(f"query {query} has no kept mask; kept queries: {self.candidates.tolist()}")
        return int(slots[0])


@dataclass
class VideoSegmentation:
    """Every expression's result for one video, with what is needed to draw them on its frames.

    frame_indices: (T,) index of each processed frame in the decoded source; fps: frames per second of the
    processed frames (source fps / stride); source: the path read, or None for arrays and iterators.
    """

    results: dict[str, ExpressionResult]
    frame_size: tuple[int, int]
    fps: float
    frame_indices: np.ndarray
    source: str | None = None
    checkpoint: str = ""
    untrained: bool = False
    partial_load: str | None = None  # what a strict=False checkpoint load left out; None: a complete load
    notes: list[str] = field(default_factory=list)  # e.g. "subsampled 900 frames to 300"
    timings: dict[str, float] = field(default_factory=dict)
    frames: object | None = field(default=None, repr=False)  # re-iterable (index, time_s, frame), e.g. VideoFrames

    def iter_frames(self) -> Iterator[np.ndarray]:
        """The processed frames (H, W, 3) uint8 RGB again, in order (decoded afresh for files)."""
        if self.frames is None:
            raise ReferDinoError("this segmentation keeps no frames; pass the frames to the renderer yourself")
        return (frame for _, _, frame in self.frames)

    def __getitem__(self, key: str | int) -> ExpressionResult:
        if isinstance(key, int):
            return list(self.results.values())[key]
        key = clean_expression(key) if isinstance(key, str) else key  # as `segment` named it
        if key not in self.results:
            raise UnknownExpressionError(f"no result for {key!r}; expressions: {list(self.results)}")
        return self.results[key]

    def __iter__(self) -> Iterator[ExpressionResult]:
        return iter(self.results.values())

    def __len__(self) -> int:
        return len(self.results)

    @property
    def expressions(self) -> list[str]:
        return list(self.results)

    def export_info(self) -> dict:
        """What exports record about the run. Files are named without their folders: an export from a server
        never shows where the server keeps its uploads or checkpoints."""
        height, width = self.frame_size
        return {"fps": self.fps, "width": width, "height": height, "num_frames": self.num_frames,
                "source": _file_name(self.source), "checkpoint": _file_name(self.checkpoint),
                "untrained": self.untrained, "partial_load": self.partial_load,
                "frame_indices": [int(i) for i in self.frame_indices]}

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)


def _file_name(name: str | None) -> str | None:
    """A local path cut to its file name; Hub names ('liangtm/referdino/ryt_swinb.pth') and labels unchanged."""
    if not name:
        return name
    path = Path(name)
    return path.name if path.is_absolute() or path.exists() else name
