import dataclasses

import numpy as np
import pytest
import torch

from referdino_demo.errors import ConfigError, InputLimitError
from referdino_demo.model import ReferDinoConfig, SwinSettings, TextSettings
from referdino_demo.preprocess.frames import preprocess_frames
from referdino_demo.preprocess.text import caption_for, synthetic_tokenizer, tokenize


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(0)
    return preprocess_frames(rng.integers(0, 255, (5, 72, 128, 3), dtype=np.uint8), 128)


@pytest.fixture(scope="module")
def text():
    return tokenize(caption_for("the red ball"), synthetic_tokenizer())


def test_tiny_model_runs_end_to_end(tiny_model, clip, text):
    out = tiny_model(clip, text)
    q = tiny_model.config.query_counts()[-1]
    assert out.pred_logits.shape == (5, q)
    assert out.pred_boxes.shape == (5, q, 4) and ((out.pred_boxes >= 0) & (out.pred_boxes <= 1)).all()
    assert out.pred_masks.shape == (5, q, 32, 57)  # ceil(128 / 4) x ceil(227 / 4)
    assert torch.isfinite(out.pred_masks).all()


def test_result_does_not_depend_on_the_chunk_size(tiny_model, clip, text):
    whole = tiny_model(clip, text, chunk_size=5)
    for chunk in (1, 2, 3):
        out = tiny_model(clip, text, chunk_size=chunk)
        assert torch.equal(out.token_ids, whole.token_ids)
        # Only float rounding differs: the fusion softmax subtracts a max over the frames of a chunk.
        assert torch.allclose(out.pred_logits, whole.pred_logits, atol=1e-4, rtol=1e-5)
        assert torch.allclose(out.pred_boxes, whole.pred_boxes, atol=1e-5)
        assert torch.allclose(out.pred_masks, whole.pred_masks, atol=1e-3, rtol=1e-5)


def test_query_decay_changes_the_number_of_queries(tiny_model, clip, text):
    features = tiny_model.encode_text(text)
    visual = tiny_model.backbone(clip[:2])
    for decay, expected in ((0.8, 80), (1.0, 300)):
        frames, _ = tiny_model.detect(visual, features, query_decay=decay)
        assert frames.hs.shape[1] == tiny_model.config.replace(query_decay=decay).query_counts()[-1] == expected


def test_too_small_frames_give_a_clear_error(tiny_model, text):
    small = preprocess_frames(np.zeros((1, 16, 16, 3), dtype=np.uint8), 16)
    with pytest.raises(InputLimitError, match="too small"):
        tiny_model(small, text)


def test_config_json_round_trip(tmp_path):
    config = ReferDinoConfig.swin_b(temporal_layers=1)
    config.save(tmp_path / "c.json")
    assert ReferDinoConfig.load(tmp_path / "c.json") == config


@pytest.mark.parametrize("changes, message", [
    (dict(d_model=128), "d_model must be 256"),
    (dict(query_decay=0.0), "query_decay"),
    (dict(num_heads=7), "divisible"),
])
def test_invalid_configs_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        ReferDinoConfig.swin_t(**changes)


def test_presets_describe_the_released_backbones():
    t, b = ReferDinoConfig.swin_t(), ReferDinoConfig.swin_b()
    assert (t.backbone.embed_dim, t.backbone.depths, t.backbone.window_size) == (96, [2, 2, 6, 2], 7)
    assert (b.backbone.embed_dim, b.backbone.depths, b.backbone.window_size) == (128, [2, 2, 18, 2], 12)
    assert (b.num_queries, b.query_decay, b.tracking_alpha, b.temporal_layers) == (900, 0.5, 0.1, 3)
    assert (b.mask_layers, b.mask_points, b.mask_ffn_dim, b.mask_heads) == (3, 16, 1024, 8)


@pytest.mark.parametrize("settings", [ReferDinoConfig, SwinSettings, TextSettings])
def test_every_config_field_is_documented_with_its_type(settings):
    """transformers documents each config field (type, default, meaning) in the class docstring; so do we."""
    undocumented = [f.name for f in dataclasses.fields(settings) if f"\n    {f.name} (`" not in settings.__doc__]
    assert not undocumented
