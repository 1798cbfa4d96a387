"""The bad-input corpus against the Python API: `ReferDinoPredictor.segment` raises the documented exception type
with a specific message before any model work, valid-but-unusual inputs succeed with the right frame count and
size, and the next request works."""

import re

import numpy as np
import pytest

from .corpus import (EXPRESSION_CASES, HUNDRED, MARKUP, SCRIPTS, SHORT_SIDE, THOUSAND_WORDS, VIDEO_ERRORS,
                    VIDEO_SUCCESSES)
from referdino_demo.errors import ExpressionError, ReferDinoError
from referdino_demo.io import probe_video
from referdino_demo.preprocess.text import MAX_EXPRESSION_CHARS, MAX_EXPRESSIONS
from referdino_demo.render import render_overlay_video


def next_request_works(predictor, videos):
    result = predictor.segment(videos["small"], "the ball", short_side=SHORT_SIDE)
    assert result.num_frames == 2 and result["the ball"].masks().shape == (2, 48, 64)


@pytest.mark.parametrize("case", VIDEO_ERRORS, ids=[c.name for c in VIDEO_ERRORS])
def test_bad_video_raises_its_documented_error_before_any_model_work(predictor, videos, model_calls, case):
    with pytest.raises(case.error, match=case.message) as error:
        predictor.segment(videos[case.name], "the ball", short_side=SHORT_SIDE)
    assert isinstance(error.value, ReferDinoError) and "\n" not in str(error.value)
    assert model_calls == []  # refused before the model ran
    next_request_works(predictor, videos)


@pytest.mark.parametrize("case", VIDEO_SUCCESSES, ids=[c.name for c in VIDEO_SUCCESSES])
def test_unusual_but_valid_video_is_segmented_at_its_size(predictor, videos, case, tmp_path):
    result = predictor.segment(videos[case.name], "the ball", short_side=SHORT_SIDE)
    height, width = case.size
    assert result.num_frames == case.frames and result.frame_size == case.size
    assert result["the ball"].masks().shape == (case.frames, height, width)
    assert len(list(result.iter_frames())) == case.frames
    assert all(frame.shape == (height, width, 3) for frame in result.iter_frames())
    if case.fps is not None:
        assert result.fps == pytest.approx(case.fps, rel=1e-6)
    overlay = render_overlay_video(result, result.iter_frames(), tmp_path / "overlay.mp4")
    probe = probe_video(overlay)
    assert probe.num_frames == case.frames
    assert (probe.height, probe.width) == (height + height % 2, width + width % 2)  # odd sizes padded by one


EXPRESSION_ERRORS = [(name, text, case) for name, text, case in EXPRESSION_CASES if case.error]


@pytest.mark.parametrize("name, text, case", EXPRESSION_ERRORS, ids=[c[0] for c in EXPRESSION_ERRORS])
def test_bad_expressions_raise_expression_error_before_any_model_work(predictor, videos, model_calls, name, text,
                                                                       case):
    with pytest.raises(ExpressionError, match=case.message):
        predictor.segment(videos["small"], text, short_side=SHORT_SIDE)
    assert model_calls == []
    next_request_works(predictor, videos)


def test_a_hundred_expressions_name_the_limit(predictor, videos):
    with pytest.raises(ExpressionError, match=f"more than {MAX_EXPRESSIONS} expressions given; at most {MAX_EXPRESSIONS} per video"):
        predictor.segment(videos["small"], HUNDRED, short_side=SHORT_SIDE)


def test_a_thousand_words_are_cut_to_256_tokens_with_a_note(predictor, videos):
    result = predictor.segment(videos["small"], THOUSAND_WORDS, short_side=SHORT_SIDE)
    assert result.expressions == [THOUSAND_WORDS[:MAX_EXPRESSION_CHARS]] and result[THOUSAND_WORDS].truncated
    assert result[0].masks().shape == (2, 48, 64)
    assert any(note.startswith("expression cut to 256 tokens") for note in result.notes)


def test_other_scripts_emoji_and_markup_are_kept_verbatim(predictor, videos):
    result = predictor.segment(videos["small"], [SCRIPTS, MARKUP], short_side=SHORT_SIDE)
    assert result.expressions == [SCRIPTS, MARKUP]
    assert not any(r.truncated for r in result) and result.notes == []
    assert result[SCRIPTS].masks().shape == (2, 48, 64) and result[MARKUP].masks().shape == (2, 48, 64)


def test_whitespace_controls_are_collapsed_but_other_controls_are_named(predictor, videos):
    result = predictor.segment(videos["small"], ["the\tred \x0b\x1f  ball"], short_side=SHORT_SIDE)
    assert result.expressions == ["the red ball"]
    with pytest.raises(ExpressionError, match=re.escape("(U+007F)")):
        predictor.segment(videos["small"], "the red\x7f ball", short_side=SHORT_SIDE)
    with pytest.raises(ExpressionError, match=re.escape("(U+009B)")):  # a C1 control (8-bit CSI)
        predictor.segment(videos["small"], "the red\x9b ball", short_side=SHORT_SIDE)


def test_emoji_sequences_with_joiners_are_not_control_characters(predictor, videos):
    family = "the family 👨\u200d👩\u200d👧 on the left"  # zero-width joiners are format characters (Cf)
    assert predictor.segment(videos["small"], family, short_side=SHORT_SIDE).expressions == [family]


def test_array_sources_with_odd_sizes_and_one_frame(predictor):
    frames = np.random.default_rng(0).integers(0, 256, (1, 47, 65, 3), dtype=np.uint8)
    result = predictor.segment(frames, "the ball", short_side=SHORT_SIDE)
    assert result.num_frames == 1 and result[0].masks().shape == (1, 47, 65)
