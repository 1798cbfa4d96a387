"""The explainer helpers: stage tensors, pruning timing, tracker perms and the mask decoder's sampling points."""

import numpy as np
import pytest
import torch

from referdino_demo.examples import synthetic_clip
from referdino_demo.explain import mask_sampling_points, run_stages, time_detect
from referdino_demo.predictor import ReferDinoPredictor

SHORT = 128


@pytest.fixture(scope="module")
def predictor():
    return ReferDinoPredictor.from_pretrained("tiny-random")


@pytest.fixture(scope="module")
def frames():
    return synthetic_clip("red_ball", num_frames=3, size=(72, 128))


@pytest.fixture(scope="module")
def stages(predictor, frames):
    return run_stages(predictor, frames, "the red ball", short_side=SHORT)


def test_stages_match_the_predictor(predictor, frames, stages):
    """One chunk through the stages gives the predictor's scores and best query's mask logits."""
    seg = predictor.segment(frames, "the red ball", short_side=SHORT)[0]
    np.testing.assert_allclose(stages.logits.sigmoid().numpy(), seg.scores, atol=1e-4)
    assert stages.best_query == seg.query
    np.testing.assert_allclose(stages.mask_logits[:, seg.query].numpy(), seg.logits.astype(np.float32),
                               atol=0.02, rtol=0.01)


def test_tracker_perms_are_permutations(stages, predictor):
    q = predictor.model.config.query_counts()[-1]
    assert stages.perms.shape == (3, q)
    assert torch.equal(stages.perms[0], torch.arange(q))  # frame 0 defines the slots
    for t, perm in enumerate(stages.perms):
        assert sorted(perm.tolist()) == list(range(q))
        torch.testing.assert_close(stages.tracked.hs[t], stages.detected.hs[t][perm])
        torch.testing.assert_close(stages.tracked.reference[t], stages.detected.reference[t][perm])


def test_sampling_points_equal_what_the_deformable_attention_computes(predictor, stages):
    model = predictor.model
    attention = model.mask_decoder.layers[0].encoder_attn
    captured = {}

    def capture(module, args):
        # MultiScaleDeformableAttention(value, shapes, shapes_list, level_start, locations, weights, im2col)
        captured["locations"], captured["weights"] = args[4].clone(), args[5].clone()

    handle = attention.attn.register_forward_pre_hook(capture)
    try:
        with torch.inference_mode():
            model.decode_masks(stages.queries, stages.tracked.reference, stages.tracked.text, stages.text.mask,
                               stages.features)
    finally:
        handle.remove()

    points = mask_sampling_points(model, stages.queries, stages.tracked.reference, stages.tracked.text,
                                  stages.text.mask)
    t, q = stages.queries.shape[:2]
    heads, n_points = attention.n_heads, attention.n_points
    assert points.locations.shape == (t, q, heads, n_points, 2) == (3, q, 8, 16, 2)
    assert points.weights.shape == (t, q, heads, n_points)
    assert captured["locations"].shape == (t, q, heads, 1, n_points, 2)
    np.testing.assert_allclose(points.locations, captured["locations"][:, :, :, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(points.weights, captured["weights"][:, :, :, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(points.weights.sum(-1), 1.0, atol=1e-5)
    # The offsets are scaled by each box: every point of query i lies around its box centre.
    centre = stages.tracked.reference[..., :2].numpy()[:, :, None, None]
    assert not np.allclose(points.locations, centre)
    assert points.pixels((72, 128)).max() > 1.0


def test_time_detect_and_query_counts(predictor, stages):
    config = predictor.model.config
    assert config.replace(query_decay=0.5).query_counts() == [300, 150, 75, 38, 19, 10, 5]
    assert config.replace(query_decay=1.0).query_counts() == [300] * 7
    seconds = time_detect(predictor.model, stages.visual, stages.text, 1.0, repeats=1)
    assert 0 < seconds < 60
    unpruned = run_stages(predictor, synthetic_clip("red_ball", 1, (72, 128)), "the red ball", short_side=SHORT,
                          query_decay=1.0)
    assert unpruned.queries.shape[1] == 300
