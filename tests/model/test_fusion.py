"""The re-associated bi-attention against transformers' `GroundingDinoBiMultiHeadAttention`."""

import torch
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoBiMultiHeadAttention

from referdino_demo.model import ReferDinoConfig
from referdino_demo.model.fusion import FusionAttention, set_fusion_attention
from referdino_demo.model.layers import grounding_dino_config
from referdino_demo.preprocess.text import caption_for, synthetic_tokenizer, tokenize


def pair(config=None, seed=0):
    """Transformers' module and ours with the same weights, at the full-size Swin-T sizes by default."""
    hf_config = grounding_dino_config(config or ReferDinoConfig.swin_t())
    torch.manual_seed(seed)
    reference = GroundingDinoBiMultiHeadAttention(hf_config).eval()
    ours = FusionAttention(hf_config).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def assert_as_accurate(ours, reference, exact, factor=3):
    """ours is as close to the float64 result as transformers' float32 result is (up to `factor`)."""
    assert (ours.double() - exact).abs().max() <= factor * (reference.double() - exact).abs().max() + 1e-7


def features(batch=2, tokens=300, words=9, seed=1):
    generator = torch.Generator().manual_seed(seed)
    # layer-normed inputs, as the fusion layer gives them
    return (torch.randn(batch, tokens, 256, generator=generator), torch.randn(batch, words, 256, generator=generator))


def test_same_outputs_as_transformers_to_float_rounding():
    reference, ours = pair()
    vision, text = features()
    text_padding = torch.zeros(2, 9, dtype=torch.bool)
    text_padding[1, 6:] = True  # the second clip's caption is shorter
    vision_padding = torch.zeros(2, 300, dtype=torch.bool)
    vision_padding[0, -20:] = True
    with torch.inference_mode():
        (v_ref, pv_ref), (t_ref, pt_ref) = reference(vision, text, vision_padding, text_padding)
        (v, pv), (t, pt) = ours(vision, text, vision_padding, text_padding)
        (v64, _), (t64, _) = reference.double()(vision.double(), text.double(), vision_padding, text_padding)
    torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(t, t_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pv, pv_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pt, pt_ref, atol=1e-6, rtol=1e-5)
    assert_as_accurate(v, v_ref, v64)
    assert_as_accurate(t, t_ref, t64)


def test_long_captions_keep_the_original_order():
    reference, ours = pair(ReferDinoConfig.tiny())  # projection width 64, 4 heads: 16 words break even
    vision, text = features(tokens=50, words=16)
    with torch.inference_mode():
        (v_ref, _), (t_ref, _) = reference(vision, text)
        (v, _), (t, _) = ours(vision, text)
    assert torch.equal(v, v_ref) and torch.equal(t, t_ref)


def test_large_logits_go_through_the_same_clamp():
    reference, ours = pair()
    with torch.no_grad():  # scale the query projection so logits exceed the +-50000 clamp
        for module in (reference, ours):
            module.vision_proj.weight.mul_(3000)
    vision, text = features(tokens=64)
    with torch.inference_mode():
        (v_ref, pv_ref), (t_ref, _) = reference(vision, text)
        (v, pv), (t, _) = ours(vision, text)
        (v64, pv64), (t64, _) = reference.double()(vision.double(), text.double())
    assert pv_ref.max() == 1 and (pv_ref == 0).any()  # saturated: the clamp was reached
    # logits in the thousands: float32 rounding alone moves probabilities by ~1e-4, for both implementations
    assert_as_accurate(pv, pv_ref, pv64)
    assert_as_accurate(v, v_ref, v64)
    assert_as_accurate(t, t_ref, t64)


def test_model_uses_it_and_matches_transformers_fusion(tiny_model):
    fusions = [layer.fusion_layer.attn for layer in tiny_model.encoder.layers]
    assert len(fusions) == tiny_model.config.encoder_layers
    assert all(type(f) is FusionAttention for f in fusions)
    reference, ours = pair(ReferDinoConfig.tiny())
    assert ours.state_dict().keys() == reference.state_dict().keys()

    torch.manual_seed(0)
    pixels, text = torch.randn(3, 3, 160, 224), tokenize(caption_for("a red ball"), synthetic_tokenizer())
    weights = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    with torch.inference_mode():
        out = tiny_model(pixels, text)
        set_fusion_attention(tiny_model, "transformers")
        try:
            assert all(type(layer.fusion_layer.attn) is GroundingDinoBiMultiHeadAttention
                       for layer in tiny_model.encoder.layers)
            expected = tiny_model(pixels, text)
        finally:
            set_fusion_attention(tiny_model, "reassociated")
    assert all(torch.equal(v, weights[k]) for k, v in tiny_model.state_dict().items())  # same parameters
    torch.testing.assert_close(out.pred_logits, expected.pred_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.pred_masks, expected.pred_masks, atol=1e-4, rtol=1e-4)
