"""A hand-made result whose candidates' masks are known, for the app's and the browser's picking and effects tests."""

import numpy as np

from referdino_demo.results import ExpressionResult, VideoSegmentation

KNOWN_SIZE = (64, 96)  # frame height, width
PICKED = "the red ball moving to the left"  # the first expression of the red_ball example


def known_segmentation(num_frames: int = 4):
    """A hand-made result for the red_ball example: for its first expression, candidate 0 covers the top-left
    quarter, candidate 1 the top-right quarter and none the bottom half; the second expression covers nothing."""
    h4, w4 = KNOWN_SIZE[0] // 4, KNOWN_SIZE[1] // 4
    logits = np.full((2, num_frames, h4, w4), -8.0, np.float16)
    logits[0, :, :h4 // 2, :w4 // 2] = 8.0
    logits[1, :, :h4 // 2, w4 // 2:] = 8.0
    scores = np.tile(np.array([0.9, 0.4], np.float32), (num_frames, 1))
    boxes = np.full((num_frames, 2, 4), 0.5, np.float32)

    def result(expression, candidates, candidate_logits):
        return ExpressionResult(expression, KNOWN_SIZE, scores, boxes, np.array(candidates), candidate_logits)

    results = {PICKED: result(PICKED, [0, 1], logits),
               "the blue square": result("the blue square", [0], np.full((1, num_frames, h4, w4), -8.0, np.float16))}
    return VideoSegmentation(results, KNOWN_SIZE, 8.0, np.arange(num_frames), checkpoint="hand-made")
