"""The predictor with the tiny random model on synthetic clips made here."""

import functools

import numpy as np
import pytest

from referdino_demo.errors import ConfigError, ExpressionError, MemoryBudgetError, VideoReadError
from referdino_demo.frame_selection import FrameSelection
from referdino_demo.io import iter_video
from referdino_demo.io.video_reader import DecodeCounts, decode_counts
from referdino_demo.predictor import ReferDinoPredictor, validate_expressions
from referdino_demo.preprocess.text import caption_for, tokenize

SHORT = 128  # the model input's short side: small enough for a CPU test, large enough for 300 queries


@pytest.fixture(scope="module")
def predictor():
    return ReferDinoPredictor.from_pretrained("tiny-random")


@pytest.fixture(scope="module")
def clip():
    """A square moving across a gradient: 9 frames of 72x128."""
    frames = np.zeros((9, 72, 128, 3), np.uint8)
    frames[..., 0] = np.linspace(0, 255, 128, dtype=np.uint8)
    for t in range(9):
        frames[t, 20:40, 10 + 10 * t:30 + 10 * t] = (255, 40, 40)
    return frames


@pytest.fixture(scope="module")
def both(predictor, clip):
    return predictor.segment(clip, ["the red square", "the background"], short_side=SHORT, chunk_size=4)


def test_result_shapes(both, predictor):
    result = both["the red square"]
    q = predictor.model.config.query_counts()[-1]
    assert both.expressions == ["the red square", "the background"] and both.num_frames == 9
    assert result.scores.shape == (9, q) and result.boxes.shape == (9, q, 4)
    assert result.candidate_logits.shape == (5, 9, 32, 57) and result.candidate_logits.dtype == np.float16
    assert result.masks().shape == (9, 72, 128) and result.masks().dtype == bool
    assert result.untrained and both.untrained


def test_official_rule_picks_the_best_mean_score(both):
    result = both[0]
    assert result.query == int(result.mean_scores.argmax()) == int(result.candidates[0])
    assert list(result.mean_scores[result.candidates]) == sorted(result.mean_scores[result.candidates], reverse=True)


def test_chunked_equals_unchunked(predictor, clip, both):
    whole = predictor.segment(clip, ["the red square", "the background"], short_side=SHORT, chunk_size=9)
    for a, b in zip(whole, both):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_array_equal(a.candidates, b.candidates)
        np.testing.assert_allclose(a.candidate_logits.astype(np.float32), b.candidate_logits.astype(np.float32),
                                   atol=0.02, rtol=0.01)  # float16 storage of float-rounding differences


def test_recomputing_mask_features_equals_keeping_them(predictor, clip, both):
    recomputed = predictor.segment(clip, ["the red square", "the background"], short_side=SHORT, chunk_size=4,
                                   feature_budget_mb=0)
    assert recomputed.timings["mask_feature_passes"] == 2 and both.timings["mask_feature_passes"] == 1
    for a, b in zip(recomputed, both):
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.candidate_logits, b.candidate_logits)


def test_auto_feature_budget_is_a_share_of_free_memory(predictor, monkeypatch):
    from referdino_demo import memory

    assert memory.available_memory_mb(predictor.device) > 0  # this machine's MemAvailable
    monkeypatch.setattr(memory, "available_memory_mb", lambda device: 100_000.0)
    assert memory.feature_budget_mb("auto", predictor.device) == 25_000
    monkeypatch.setattr(memory, "available_memory_mb", lambda device: 1_000.0)
    assert memory.feature_budget_mb("auto", predictor.device) == 1024  # never below the former fixed default
    monkeypatch.setattr(memory, "available_memory_mb", lambda device: None)
    assert memory.feature_budget_mb("auto", predictor.device) == 1024
    assert memory.feature_budget_mb(300, predictor.device) == 300


def test_memory_budget_chooses_a_second_pass_over_refusing(predictor, clip):
    """A job whose kept features would break its memory budget computes them twice instead."""
    info = iter_video(clip).info
    tokens = tokenize(caption_for("the red square"), predictor.tokenizer).input_ids.shape[1]
    settings = dict(short_side=SHORT, chunk_size=4, text_tokens=tokens)
    keeping = predictor.estimate_memory_mb(info, 1, feature_budget_mb=10_000, **settings)
    twice = predictor.estimate_memory_mb(info, 1, feature_budget_mb=0, **settings)
    assert twice < keeping
    run = functools.partial(predictor.segment, clip, "the red square", short_side=SHORT, chunk_size=4)
    assert run(memory_budget_mb=(twice + keeping) / 2).timings["mask_feature_passes"] == 2
    assert run(memory_budget_mb=keeping + 1).timings["mask_feature_passes"] == 1
    with pytest.raises(MemoryBudgetError):
        run(memory_budget_mb=twice - 1)


def test_a_tight_memory_budget_gives_up_the_kept_frames_before_the_kept_features(predictor, clip, tmp_path):
    from referdino_demo.io import write_video

    video = write_video(tmp_path / "clip.mp4", clip, fps=10)
    info = iter_video(video).info
    tokens = tokenize(caption_for("the red square"), predictor.tokenizer).input_ids.shape[1]
    settings = dict(short_side=SHORT, chunk_size=4, text_tokens=tokens, feature_budget_mb=10_000)
    everything = predictor.estimate_memory_mb(info, 1, **settings)
    without_frames = predictor.estimate_memory_mb(info, 1, **settings, frame_cache_mb=0)
    frames_mb = 9 * 72 * 128 * 3 / 2**20
    assert everything - without_frames == pytest.approx(1.25 * frames_mb)  # the estimate's safety factor
    run = functools.partial(predictor.segment, video, "the red square", short_side=SHORT, chunk_size=4,
                            feature_budget_mb=10_000)
    kept = run(memory_budget_mb=everything + 0.01)
    assert kept.frames.complete and kept.timings["mask_feature_passes"] == 1
    lean = run(memory_budget_mb=(everything + without_frames) / 2)
    assert lean.frames.kept == 0 and lean.timings["mask_feature_passes"] == 1


def test_several_expressions_equal_each_alone(predictor, clip, both):
    for expression in both.expressions:
        alone = predictor.segment(clip, expression, short_side=SHORT, chunk_size=4)[0]
        np.testing.assert_array_equal(alone.scores, both[expression].scores)
        np.testing.assert_array_equal(alone.candidate_logits, both[expression].candidate_logits)


def test_model_calls_are_counted(predictor, clip, model_calls):
    predictor.segment(clip[:2], "a dog", short_side=SHORT)
    assert "backbone" in model_calls and "mask_decoder" in model_calls


def test_threshold_and_candidate_changes_do_not_call_the_model(both, model_calls):
    calls = model_calls
    result = both[0]
    low, high = result.masks(0.2), result.masks(0.8)
    assert low.sum() >= high.sum() and not np.array_equal(low, high)
    other = result.with_candidate(1)
    assert other.query != result.query and not np.array_equal(other.masks(), result.masks())
    assert result.masks(multi_target=0.0).sum() >= result.masks().sum()
    assert calls == []


def test_generator_and_file_sources(predictor, clip, tmp_path):
    from referdino_demo.io import write_video

    from_generator = predictor.segment((f for f in clip), "the red square", short_side=SHORT, fps=10)
    assert from_generator.num_frames == 9 and from_generator.fps == 10
    path = write_video(tmp_path / "clip.mp4", clip, fps=10)
    from_file = predictor.segment(path, "the red square", short_side=SHORT, stride=2)
    assert from_file.num_frames == 5 and from_file.fps == pytest.approx(5)
    assert len(list(from_file.iter_frames())) == 5


def test_frame_options_make_one_selection_given_either_way(predictor, clip, tmp_path):
    from referdino_demo.io import write_video

    video = write_video(tmp_path / "clip.mp4", clip, fps=10)
    selection = FrameSelection(stride=2, start_s=0.1, max_frames=3)
    by_object = predictor.segment(video, "the red square", short_side=SHORT, selection=selection)
    by_keywords = predictor.segment(video, "the red square", short_side=SHORT, stride=2, start_s=0.1, max_frames=3)
    opened = predictor.segment(selection.open(video), "the red square", short_side=SHORT)
    for result in (by_object, by_keywords, opened):
        # frames 1, 3, 5, 7 cut to 3 at positions floor(k * 4 / 3) = 0, 1, 2
        np.testing.assert_array_equal(result.frame_indices, [1, 3, 5])
        np.testing.assert_array_equal(result[0].scores, by_object[0].scores)
    assert by_object.source == by_keywords.source == opened.source == str(video)
    with pytest.raises(ConfigError, match="not both"):
        predictor.segment(video, "the red square", selection=selection, stride=2)
    with pytest.raises(ConfigError, match="opened with a frame selection already"):
        predictor.segment(selection.open(video), "the red square", stride=2)
    with pytest.raises(ConfigError, match="unknown frame option strid; the frame options are stride"):
        predictor.segment(video, "the red square", strid=2)


def test_the_decoded_frames_are_kept_for_drawing_within_their_budget(predictor, clip, tmp_path):
    from referdino_demo.io import write_video

    video = write_video(tmp_path / "clip.mp4", clip, fps=10)
    before = decode_counts()
    kept = predictor.segment(video, "the red square", short_side=SHORT)
    assert decode_counts() - before == DecodeCounts(opens=2, passes=1, frames=9)  # the scan, then one decode
    before = decode_counts()
    frames = list(kept.iter_frames())
    assert decode_counts() == before and len(frames) == 9  # drawing decodes nothing
    np.testing.assert_array_equal(frames[4], next(f for i, _, f in iter_video(video) if i == 4))
    four = 4 * 72 * 128 * 3 / 2**20  # room for four frames
    partly = predictor.segment(video, "the red square", short_side=SHORT, frame_cache_mb=four)
    assert partly.frames.kept == 4 and not partly.frames.complete
    before = decode_counts()
    assert len(list(partly.iter_frames())) == 9 and (decode_counts() - before).passes == 1  # decoded again
    before = decode_counts()
    assert partly.frames.frame(3) is partly.frames.frame(3) and decode_counts() == before  # kept
    np.testing.assert_array_equal(partly.frames.frame(6), frames[6])
    assert (decode_counts() - before).passes == 1  # beyond the budget: decoded on demand


def test_frame_budget_subsamples_and_says_so(predictor, clip):
    result = predictor.segment(clip, "the red square", short_side=SHORT, max_frames=4)
    assert result.num_frames == 4 and any("subsampled" in note for note in result.notes)


@pytest.mark.parametrize("expressions, message", [
    ("", "no expression"), ([" ", "\t"], "no expression"), (["..."], "empty"),
    ([f"object {i}" for i in range(40)], "at most"), ([3], "strings"),
])
def test_bad_expressions_are_refused_before_any_work(predictor, clip, expressions, message, model_calls):
    with pytest.raises(ExpressionError, match=message):
        predictor.segment(clip, expressions, short_side=SHORT)
    assert model_calls == []


def test_unreadable_video_is_refused(predictor, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(VideoReadError):
        predictor.segment(bad, "a dog", short_side=SHORT)


def test_expression_cleaning():
    assert validate_expressions("a dog\n\n  the  cat \na dog") == ["a dog", "the cat"]


def test_reduced_precision_path_runs_and_stays_within_bf16_error(predictor, clip):
    """The bf16 autocast path GPUs take, run here under CPU autocast. Random weights make the final choice
    chaotic (near-tied scores, tracker slots that swap), so closeness is checked on the encoder's output."""
    import torch

    from referdino_demo.model.deformable import DeformableSampling
    from referdino_demo.preprocess.frames import preprocess_frames

    half = ReferDinoPredictor(predictor.model, predictor.tokenizer, device="cpu", dtype="bfloat16")
    assert "bfloat16" in half.describe()
    result = half.segment(clip, ["the red square"], short_side=SHORT, chunk_size=4)[0]
    assert np.isfinite(result.scores).all() and result.masks().shape == (9, 72, 128)

    model, seen = predictor.model, []
    text = model.encode_text(tokenize(caption_for("the red square"), predictor.tokenizer))
    pixels = preprocess_frames(clip[:2], SHORT)
    hook = next(m for m in model.modules() if isinstance(m, DeformableSampling)).register_forward_pre_hook(
        lambda module, args: seen.append(args[0].dtype))

    def encode():
        with torch.inference_mode():
            visual = model.backbone(pixels)
            return model.encoder(visual, text.features, text.mask, text.inputs.self_attention_mask,
                                 text.inputs.position_ids)

    try:
        reference = encode()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = encode()
    finally:
        hook.remove()
    assert seen == [torch.float32, torch.bfloat16]  # the sampler was given bf16 values (and upcasts them)
    for a, b in ((reduced.memory, reference.memory), (reduced.text, reference.text)):
        assert (a.float() - b).norm() / b.norm() < 0.03  # bf16 has 8 bits of mantissa: ~0.4% a rounding


def test_segment_runs_as_one_job_of_the_process_thread_budget(predictor, clip, monkeypatch):
    """Concurrent calls share the CPUs: beside another job of a 2-thread budget the model runs on 1 thread, alone
    on both, and the caller's thread count is restored afterwards. Either way the per-frame stages run as one frame
    stream per CPU of the budget, of one thread each."""
    import threading

    import torch

    from referdino_demo import predictor as predictor_module
    from referdino_demo.threads import ThreadBudget

    budget = ThreadBudget(2)
    monkeypatch.setattr(predictor_module, "default_budget", lambda: budget)
    seen, backbone = [], []  # (threads, jobs running) in the calling thread; (threads, frames) of each backbone call
    hooks = [predictor.model.text_encoder.register_forward_hook(
                 lambda *args: seen.append((torch.get_num_threads(), budget.running))),
             predictor.model.backbone.register_forward_hook(
                 lambda module, inputs, output: backbone.append((torch.get_num_threads(), inputs[0].shape[0])))]
    held, release = threading.Event(), threading.Event()

    def other_job():
        with budget.job():
            held.set()
            release.wait(60)

    before = torch.get_num_threads()
    other = threading.Thread(target=other_job)
    other.start()
    try:
        held.wait(60)
        predictor.segment(clip[:2], "the red square", short_side=SHORT)
        shared, shared_backbone = seen[:], backbone[:]
    finally:
        release.set()
        other.join()
    seen.clear()
    backbone.clear()
    predictor.segment(clip[:2], "the red square", short_side=SHORT)
    for hook in hooks:
        hook.remove()
    assert shared == [(1, 2)] and shared_backbone == [(1, 1), (1, 1)]
    assert seen == [(2, 1)] and backbone == [(1, 1), (1, 1)]
    assert torch.get_num_threads() == before and budget.running == 0
