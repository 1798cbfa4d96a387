"""Results of a segmentation, as numpy arrays on the CPU, independent of the model.

Everything a user changes after the run (mask threshold, which candidate query, single- or multi-target
rule, colours) is an argument here or of the renderers, so it never re-runs the model. Vocabulary: T
processed frames, Q output queries of the model, K kept candidates, (H, W) original frame size, (h4, w4) the
stride-4 mask size of the model input.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from . import postprocess
from .errors import ConfigError, NoCandidateAtPointError, ReferDinoError, UnknownExpressionError
from .preprocess.text import clean_expression


@dataclass(frozen=True)
class PickOutcome:
    """Which kept candidate a click picked, as plain values a UI can store (e.g. `previous_rank` to undo it).

    frame, x, y: the processed frame and the pixel (column, row) clicked. rank: the chosen candidate's position in
    `candidates` (0 = the official choice); query: its query index; previous_rank: the rank shown before.
    probability: the chosen mask's probability at the pixel. tied_ranks: the ranks whose mask logit there equals
    the chosen one's, the chosen first (just `(rank,)` without a tie). message: one sentence for the user.
    """

    expression: str
    frame: int
    x: int
    y: int
    rank: int
    query: int
    previous_rank: int
    probability: float
    tied_ranks: tuple[int, ...]
    message: str


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

    def boxes_xyxy(self, query: int | None = None, frames: slice | list[int] | None = None) -> np.ndarray:
        """(T, 4) float32 boxes of a query (default: the shown one) in pixels of the original frame (with `frames`,
        only those frames')."""
        frames = slice(None) if frames is None else frames
        cx, cy, w, h = np.moveaxis(self.boxes[frames, self.query if query is None else query], -1, 0)
        height, width = self.frame_size
        return np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                         (cy + h / 2) * height], -1).astype(np.float32)

    # -- choices ---------------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        """Position of the shown query in `candidates` (0 = the official choice): the value to store for a choice."""
        return self._slot(self.query)

    def with_candidate(self, rank: int) -> "ExpressionResult":
        """The same result showing the `rank`-th candidate (0 = the official choice)."""
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < len(self.candidates):
            raise ConfigError(f"candidate {rank!r} does not exist; there are {len(self.candidates)} (0 to "
                              f"{len(self.candidates) - 1})")
        return dataclasses.replace(self, query=int(self.candidates[rank]))

    def candidate_at(self, frame: int, x: float, y: float, threshold: float = 0.5) -> PickOutcome:
        """Which kept candidate a click at pixel (`x`, `y`) of processed frame `frame` picks.

        `x` is the column in [0, W), `y` the row in [0, H), in pixels of the original frame (fractions are cut to
        the pixel they fall in). The candidates whose own `mask(frame, threshold)` covers that pixel compete; the
        one with the highest mask logit there wins, and a tie goes to the better-ranked candidate (the message says
        so). Raises `NoCandidateAtPointError` when no candidate covers the pixel, `ConfigError` for a frame or point
        outside the video.
        """
        row, col = self._pixel(frame, x, y)
        cut = postprocess.threshold_logit(threshold)
        logits = self.upsampled_logits([frame], self.candidates.tolist())[:, 0, row, col]  # (K,)
        where = f"({col}, {row}) in frame {frame}"
        covering = np.flatnonzero(logits > cut)  # ranks, best first
        if not len(covering):
            best = float(postprocess.probabilities(logits.max()))
            raise NoCandidateAtPointError(
                f"no kept candidate of {self.expression!r} covers {where} at threshold {threshold:g}: the "
                f"{len(self.candidates)} kept candidates' highest probability there is {best:.2f}. Click inside a "
                f"mask, lower the threshold, or keep more candidates (num_candidates, now {len(self.candidates)}) "
                f"on the next run")
        tied = covering[logits[covering] == logits[covering].max()]
        rank, previous = int(tied[0]), self.rank
        probability = float(postprocess.probabilities(logits[rank]))
        if len(tied) > 1:
            message = (f"candidates {', '.join(map(str, tied))} cover {where} equally (probability "
                       f"{probability:.2f}); chose candidate {rank}, the better-ranked one")
        elif len(covering) > 1:
            message = (f"candidate {rank} covers {where} best of the {len(covering)} candidates covering it "
                       f"(probability {probability:.2f})")
        else:
            message = f"only candidate {rank} covers {where} (probability {probability:.2f})"
        message += "; it is already shown" if rank == previous else f"; showing it instead of candidate {previous}"
        return PickOutcome(self.expression, int(frame), col, row, rank, int(self.candidates[rank]), previous,
                           probability, tuple(int(r) for r in tied), message)

    def pick(self, frame: int, x: float, y: float, threshold: float = 0.5) -> "ExpressionResult":
        """The same result showing the candidate a click at (`x`, `y`) of `frame` picks (see `candidate_at`)."""
        return self.with_candidate(self.candidate_at(frame, x, y, threshold).rank)

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

    def to_detections(self, frame: int, threshold: float = 0.5, multi_target: float | None = None,
                      mask: np.ndarray | None = None, class_id: int = 0):
        """One frame as a `supervision.Detections` with one detection: the `mask(frame, threshold, multi_target)`
        (or the given `(H, W)` `mask` of that frame, already computed), the shown query's xyxy pixel box and score,
        `class_id` (the palette index) and `data["expression"]`."""
        import supervision as sv

        mask = self.mask(frame, threshold, multi_target) if mask is None else np.asarray(mask, bool)
        return sv.Detections(xyxy=self.boxes_xyxy(frames=[frame]), mask=mask[None],
                             confidence=np.array([self.frame_scores[frame]], np.float32),
                             class_id=np.array([class_id]), data={"expression": np.array([self.expression], object)})

    def _pixel(self, frame: int, x: float, y: float) -> tuple[int, int]:
        """(row, column) of the pixel that (`x`, `y`) falls in, after checking the frame and the point."""
        height, width = self.frame_size
        if isinstance(frame, bool) or not isinstance(frame, numbers.Integral) or not 0 <= frame < self.num_frames:
            raise ConfigError(f"frame must be a processed frame index in 0..{self.num_frames - 1}, got {frame!r}")
        for name, value, size in (("x", x, width), ("y", y, height)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < size:
                raise ConfigError(f"{name} must be in [0, {size}) pixels of the {width}x{height} frame, got {value!r}")
        return math.floor(y), math.floor(x)

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

    def to_detections(self, frame: int, threshold: float = 0.5, multi_target: float | None = None,
                      masks: np.ndarray | None = None):
        """Processed frame `frame` as a `supervision.Detections` with one detection per expression, in order:
        class_id is the expression's index (its palette colour). `masks` `(E, H, W)` bool: the frame's masks when
        already computed (a video renderer's chunk), else computed at `threshold` / `multi_target`."""
        import supervision as sv

        return sv.Detections.merge([
            result.to_detections(frame, threshold, multi_target, None if masks is None else masks[e], class_id=e)
            for e, result in enumerate(self)])

    def iter_frames(self) -> Iterator[np.ndarray]:
        """The processed frames (H, W, 3) uint8 RGB again, in order (decoded afresh for files)."""
        if self.frames is None:
            raise ReferDinoError("this segmentation keeps no frames; pass the frames to the renderer yourself")
        return (frame for _, _, frame in self.frames)

    def __getitem__(self, key: str | int) -> ExpressionResult:
        return self.results[self._key(key)]

    def with_candidate(self, expression: str | int, rank: int) -> "VideoSegmentation":
        """The same segmentation with `expression` (text or index) showing its `rank`-th candidate."""
        key = self._key(expression)
        return dataclasses.replace(self, results={**self.results, key: self.results[key].with_candidate(rank)})

    def pick(self, expression: str | int, frame: int, x: float, y: float,
             threshold: float = 0.5) -> "VideoSegmentation":
        """The same segmentation with `expression` showing the candidate a click at pixel (`x`, `y`) of processed
        frame `frame` picks; `self[expression].candidate_at(...)` gives the choice and a message to show."""
        return self.with_candidate(expression, self[expression].candidate_at(frame, x, y, threshold).rank)

    def _key(self, key: str | int) -> str:
        """The `results` key of an expression given by index or by text (cleaned as `segment` named it)."""
        names = list(self.results)
        if isinstance(key, numbers.Integral):
            if not -len(names) <= key < len(names):
                raise UnknownExpressionError(f"no expression {key}; there are {len(names)}: {names}")
            return names[int(key)]
        key = clean_expression(key) if isinstance(key, str) else key
        if key not in self.results:
            raise UnknownExpressionError(f"no result for {key!r}; expressions: {names}")
        return key

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
