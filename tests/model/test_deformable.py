"""The gather-based deformable sampler against transformers' grid_sample implementation (the official
CPU fallback's arithmetic)."""

import pytest
import torch
from transformers.models.grounding_dino.modeling_grounding_dino import MultiScaleDeformableAttention

from referdino_demo.model import deformable
from referdino_demo.model.deformable import DeformableSampling, set_deformable_sampler

SHAPES = [(9, 13), (5, 7), (1, 4), (3, 1)]  # odd sizes and single rows/columns


def inputs(batch=2, queries=37, heads=4, channels=8, points=3, shapes=SHAPES, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    length = sum(h * w for h, w in shapes)
    value = torch.randn(batch, length, heads, channels, generator=generator)
    # Mostly inside, some points up to half a map outside: exercises zero padding on every side.
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=generator) * 2 - 0.5
    locations[0, 0, 0, :, 0] = torch.tensor([0.0, 1.0])  # exactly on the borders
    locations[0, 1, 0, :, 0] = torch.tensor([-3.0, 7.0])  # far outside
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=generator)
    spatial = torch.tensor(shapes)
    starts = torch.cat([spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]])
    return (value.to(dtype), spatial, shapes, starts, locations.to(dtype), weights.to(dtype), 64)


def test_matches_grid_sample_as_closely_as_grid_sample_matches_float64():
    args = inputs()
    exact = MultiScaleDeformableAttention()(*(a.double() if torch.is_tensor(a) and a.is_floating_point() else a
                                              for a in args))
    ours, reference = DeformableSampling()(*args), MultiScaleDeformableAttention()(*args)
    assert ours.shape == reference.shape == (2, 37, 32)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert (ours.double() - exact).abs().max() <= 2 * (reference.double() - exact).abs().max() + 1e-6


def test_points_outside_every_map_sample_zero():
    value, spatial, shapes, starts, locations, weights, step = inputs()
    outside = torch.full_like(locations, 1.5)
    assert DeformableSampling()(value, spatial, shapes, starts, outside, weights, step).abs().max() == 0


def test_blocks_do_not_change_the_result(monkeypatch):
    args = inputs(queries=50)
    whole = DeformableSampling()(*args)
    monkeypatch.setattr(deformable, "POINTS_PER_BLOCK", 7 * 4 * 4 * 3)  # 7 rows a block: blocks straddle frames
    assert torch.equal(DeformableSampling()(*args), whole)


def test_half_precision_inputs_are_sampled_in_float32():
    args = inputs(dtype=torch.bfloat16)
    out = DeformableSampling()(*args)
    assert out.dtype == torch.bfloat16
    as_float = DeformableSampling()(*(a.float() if torch.is_tensor(a) and a.is_floating_point() else a
                                      for a in args))
    assert torch.equal(out, as_float.to(torch.bfloat16))


def test_model_uses_the_gather_sampler_and_matches_grid_sample(tiny_model):
    samplers = [m for m in tiny_model.modules() if isinstance(m, (DeformableSampling, MultiScaleDeformableAttention))]
    # encoder, decoder and mask decoder layers each hold one sampler
    config = tiny_model.config
    assert len(samplers) == config.encoder_layers + config.decoder_layers + config.mask_layers
    assert all(isinstance(m, DeformableSampling) for m in samplers)

    from referdino_demo.preprocess.text import caption_for, synthetic_tokenizer, tokenize

    torch.manual_seed(0)
    pixels, text = torch.randn(3, 3, 160, 224), tokenize(caption_for("a red ball"), synthetic_tokenizer())
    with torch.inference_mode():
        ours = tiny_model(pixels, text)
        set_deformable_sampler(tiny_model, "grid_sample")
        try:
            reference = tiny_model(pixels, text)
        finally:
            set_deformable_sampler(tiny_model, "gather")
    torch.testing.assert_close(ours.pred_logits, reference.pred_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.pred_masks, reference.pred_masks, atol=1e-4, rtol=1e-4)


def test_unknown_sampler_is_refused(tiny_model):
    with pytest.raises(KeyError):
        set_deformable_sampler(tiny_model, "cuda-kernel")


def test_gradients_match_grid_sample():
    args = list(inputs(queries=20))
    grads = []
    for sampler in (DeformableSampling(), MultiScaleDeformableAttention()):
        value, locations, weights = (args[i].detach().requires_grad_(True) for i in (0, 4, 5))
        sampler(value, *args[1:4], locations, weights, args[6]).square().sum().backward()
        grads.append((value.grad, locations.grad, weights.grad))
    for ours, reference in zip(*grads):
        assert ours.abs().max() > 0
        torch.testing.assert_close(ours, reference, atol=2e-4, rtol=1e-4)
