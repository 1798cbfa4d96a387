"""Tests for picking a candidate with a click (referdino_demo/results.py: `ExpressionResult.candidate_at`, `pick`,
`rank`, `VideoSegmentation.pick`, `with_candidate`).

The results are built by hand with known candidate masks: logits are constant over regions of the stride-4 grid,
so the masks at the original size are known away from the region borders (bilinear upsampling blends only the
stride-4 cells next to a border).
"""

import numpy as np
import pytest

from referdino_demo.errors import ConfigError, NoCandidateAtPointError, UnknownExpressionError
from referdino_demo.results import ExpressionResult, PickOutcome, VideoSegmentation

H4, W4 = 8, 12  # stride-4 grid
SIZE = (4 * H4, 4 * W4)  # (H, W) = (32, 48)
QUERIES = np.array([2, 0, 3])  # rank -> query: ranks and queries differ on purpose


def make_result(logits, expression="the dog", candidates=QUERIES):
    """ExpressionResult with candidate_logits `logits` (K, T, H4, W4) and 4 queries."""
    logits = np.asarray(logits, np.float16)
    k, t = logits.shape[:2]
    scores = np.tile(np.linspace(0.9, 0.1, 4, dtype=np.float32), (t, 1))  # (T, Q=4)
    return ExpressionResult(expression, SIZE, scores, np.zeros((t, 4, 4), np.float32), np.asarray(candidates), logits)


def halves(num_frames=3):
    """Rank 0 covers the left half (logit 4), rank 1 the right half (logit 6), rank 2 nothing (logit -6)."""
    logits = np.full((3, num_frames, H4, W4), -6.0)
    logits[0, :, :, : W4 // 2] = 4.0
    logits[1, :, :, W4 // 2:] = 6.0
    return logits


def test_a_click_picks_the_candidate_whose_mask_covers_the_point():
    result = make_result(halves())
    left, right = (5, 16), (40, 16)  # (x, y), 3 stride-4 cells from the middle
    assert result.rank == 0 and result.candidate_at(1, *left).rank == 0
    outcome = result.candidate_at(1, *right)
    assert outcome == PickOutcome("the dog", 1, 40, 16, 1, 0, 0, pytest.approx(1 / (1 + np.exp(-6))), (1,),
                                  outcome.message)
    assert outcome.message == ("only candidate 1 covers (40, 16) in frame 1 (probability 1.00); showing it instead "
                               "of candidate 0")
    picked = result.pick(1, *right)
    assert (picked.query, picked.rank) == (0, 1)
    expected = np.zeros(SIZE, bool)
    expected[:, SIZE[1] // 2:] = True
    np.testing.assert_array_equal(picked.mask(1), expected)  # the right half is now shown
    assert result.query == 2  # the original result is unchanged
    assert picked.candidate_at(2, *right).message.endswith("it is already shown")


def test_where_masks_overlap_the_highest_logit_wins_whatever_the_rank():
    logits = halves()
    logits[0, :, :, :] = 4.0  # rank 0 now covers everything, with a lower logit than rank 1
    outcome = make_result(logits).candidate_at(0, 40, 16)
    assert (outcome.rank, outcome.tied_ranks) == (1, (1,))
    assert "best of the 2 candidates covering it" in outcome.message
    assert make_result(logits).candidate_at(0, 5, 16).rank == 0  # only rank 0 covers the left half


def test_a_tie_picks_the_better_ranked_candidate_and_says_so():
    logits = halves()
    logits[2] = logits[1]  # ranks 1 and 2 are the same mask
    outcome = make_result(logits).with_candidate(2).candidate_at(0, 40, 16)
    assert (outcome.rank, outcome.query, outcome.tied_ranks, outcome.previous_rank) == (1, 0, (1, 2), 2)
    assert outcome.message == ("candidates 1, 2 cover (40, 16) in frame 0 equally (probability 1.00); chose "
                               "candidate 1, the better-ranked one; showing it instead of candidate 2")


def test_a_click_on_no_mask_says_so_and_suggests_more_candidates():
    logits = halves()
    logits[:, :, : H4 // 2] = -3.0  # nothing in the top half
    with pytest.raises(NoCandidateAtPointError) as err:
        make_result(logits).candidate_at(0, 40, 4)
    message = str(err.value)
    assert "no kept candidate of 'the dog' covers (40, 4) in frame 0 at threshold 0.5" in message
    assert f"highest probability there is {1 / (1 + np.exp(3)):.2f}" in message
    assert "keep more candidates (num_candidates, now 3) on the next run" in message


@pytest.mark.parametrize("threshold, rank", [
    (0.0, 1),  # every candidate covers every pixel: the highest logit there (rank 1's -1) wins
    (0.2, 1),  # p = sigmoid(-1) = 0.27 > 0.2
    (0.5, None),  # nobody: sigmoid(-1) < 0.5
])
def test_the_threshold_decides_which_masks_cover_the_point(threshold, rank):
    logits = np.full((3, 1, H4, W4), -6.0)
    logits[1] = -1.0
    result = make_result(logits)
    if rank is None:
        with pytest.raises(NoCandidateAtPointError, match="at threshold 0.5"):
            result.candidate_at(0, 20, 20, threshold)
    else:
        assert result.candidate_at(0, 20, 20, threshold).rank == rank


def test_threshold_one_covers_nothing_and_a_bad_threshold_is_refused():
    with pytest.raises(NoCandidateAtPointError, match="at threshold 1"):
        make_result(halves()).candidate_at(0, 40, 16, 1.0)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        make_result(halves()).candidate_at(0, 40, 16, 1.5)


def test_the_picked_mask_always_covers_the_clicked_pixel():
    """On smooth random logits at stride 4, at every pixel: a pick succeeds exactly where some candidate's own mask
    covers the pixel, and the picked result's mask covers it, with the highest upsampled logit there."""
    rng = np.random.default_rng(0)
    coarse = rng.normal(0, 3, (3, 2, H4 // 2, W4 // 2))
    result = make_result(coarse.repeat(2, 2).repeat(2, 3))  # (3, 2, H4, W4) blocks of 2 x 2 cells
    masks = np.stack([result.with_candidate(k).mask(1, 0.6) for k in range(3)])  # (K, H, W)
    logits = result.upsampled_logits([1], QUERIES.tolist())[:, 0]  # (K, H, W)
    for y in range(0, SIZE[0], 3):
        for x in range(0, SIZE[1], 3):
            if not masks[:, y, x].any():
                with pytest.raises(NoCandidateAtPointError):
                    result.candidate_at(1, x, y, 0.6)
                continue
            picked = result.pick(1, x + 0.5, y + 0.99, 0.6)  # fractions fall in pixel (x, y)
            assert picked.mask(1, 0.6)[y, x]
            assert logits[picked.rank, y, x] == logits[masks[:, y, x], y, x].max()


def test_the_frame_matters_on_a_long_video():
    logits = halves(300)
    logits[:, 150:] = logits[:, 150:, :, ::-1]  # from frame 150 the candidates swap sides
    result = make_result(logits)
    assert [result.candidate_at(t, 40, 16).rank for t in (0, 149, 150, 299)] == [1, 1, 0, 0]


@pytest.mark.parametrize("frame, x, y, message", [
    (-1, 5, 5, r"frame must be a processed frame index in 0\.\.2, got -1"),
    (3, 5, 5, r"frame must be a processed frame index in 0\.\.2, got 3"),
    (1.0, 5, 5, r"frame must be a processed frame index in 0\.\.2, got 1\.0"),
    (0, -0.5, 5, r"x must be in \[0, 48\) pixels of the 48x32 frame, got -0\.5"),
    (0, 48, 5, r"x must be in \[0, 48\) pixels of the 48x32 frame, got 48"),
    (0, 5, 32, r"y must be in \[0, 32\) pixels of the 48x32 frame, got 32"),
    (0, float("nan"), 5, r"x must be in \[0, 48\)"),
    (0, 5, True, r"y must be in \[0, 32\)"),
    (0, "5", 5, r"x must be in \[0, 48\)"),
])
def test_points_and_frames_outside_the_video_are_refused(frame, x, y, message):
    with pytest.raises(ConfigError, match=message):
        make_result(halves()).candidate_at(frame, x, y)


def test_numpy_numbers_are_accepted():
    outcome = make_result(halves()).candidate_at(np.int64(2), np.float32(40.2), np.int32(16))
    assert (outcome.frame, outcome.x, outcome.y, outcome.rank) == (2, 40, 16, 1)


def test_a_segmentation_picks_per_expression_and_keeps_the_others():
    other = halves()[::-1].copy()  # "a cat": rank 0 covers nothing, rank 1 the right half, rank 2 the left half
    segmentation = VideoSegmentation({"the dog": make_result(halves()), "a cat": make_result(other, "a cat")},
                                     SIZE, 10.0, np.arange(3))
    picked = segmentation.pick("a cat", 0, 5, 16)
    assert [r.rank for r in picked] == [0, 2] and [r.rank for r in segmentation] == [0, 0]
    assert segmentation["a cat"].candidate_at(0, 5, 16).rank == 2
    assert picked.pick(" the  dog ", 0, 40, 16)["the dog"].rank == 1  # the text is cleaned as `segment` cleans it
    restored = picked.with_candidate(1, 0)  # undo: the previous rank, a plain int
    assert [r.rank for r in restored] == [0, 0]
    assert picked.frame_size == SIZE and picked.fps == 10.0
    with pytest.raises(UnknownExpressionError, match="no expression 2; there are 2"):
        segmentation.with_candidate(2, 0)
    with pytest.raises(ConfigError, match="candidate 3 does not exist; there are 3"):
        segmentation.with_candidate("a cat", 3)
