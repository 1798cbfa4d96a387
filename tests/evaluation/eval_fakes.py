"""Fake predictors shared by the evaluation tests (not a test module: imported by them)."""

from __future__ import annotations

import numpy as np

from referdino_demo.results import ExpressionResult, VideoSegmentation


class PerfectPredictor:
    """Returns the synthetic truth as mask logits of +-10 at the frame size (the bilinear resize to the same
    size is the identity), so every official post-processing rule recovers the truth exactly."""

    checkpoint = "perfect"

    def __init__(self, synthetic):
        self.synthetic = synthetic
        self.truth = {(video, synthetic.texts[(video, exp)]): mask for (video, exp), mask in synthetic.masks.items()}
        self.calls: list[str] = []

    def segment(self, video, expressions, **options):
        frames = list(video)
        video_id = next(v for v, first in self.synthetic.first_frames.items() if np.array_equal(first, frames[0]))
        self.calls.append(video_id)
        results = {}
        for text in expressions:
            mask = self.truth[(video_id, text)][:len(frames)]  # (T, H, W)
            t = len(mask)
            results[text] = ExpressionResult(
                expression=text, frame_size=mask.shape[1:], scores=np.full((t, 1), 0.9, np.float32),
                boxes=np.zeros((t, 1, 4), np.float32), candidates=np.array([0]),
                candidate_logits=np.where(mask, 10.0, -10.0).astype(np.float16)[None])
        return VideoSegmentation(results=results, frame_size=mask.shape[1:], fps=25.0, frame_indices=np.arange(t))


class Spy:
    """Counts the videos a predictor is asked to segment."""

    def __init__(self, predictor):
        self.predictor, self.calls = predictor, 0
        self.checkpoint = predictor.checkpoint

    def segment(self, video, expressions, **options):
        self.calls += 1
        return self.predictor.segment(video, expressions, **options)
