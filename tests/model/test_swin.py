"""The fast Swin forward (`model/swin.py`) against transformers' own, and the oneDNN linear layers (`layers.py`)
against torch's: same results on sizes that need padding, shifted windows larger than the map, size changes."""

import pytest
import torch
import torch.nn.functional as F

from referdino_demo.model import ReferDinoConfig
from referdino_demo.model.backbone import ReferDinoBackbone
from referdino_demo.model.layers import FastLinear, linear, use_fast_linears


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    model = ReferDinoBackbone(ReferDinoConfig.tiny()).eval()
    with torch.no_grad():  # non-zero biases and relative position tables, so that a misplaced one shows
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


def _both(backbone, pixels):
    with torch.inference_mode():
        backbone.swin_forward = "transformers"
        reference = backbone(pixels)
        backbone.swin_forward = "fast"
        fast = backbone(pixels)
    return reference, fast


# (h, w): whole windows; padding at every stage; stage maps smaller than a window; a long strip.
@pytest.mark.parametrize("size", [(224, 224), (72, 130), (40, 56), (36, 300)])
def test_fast_swin_matches_transformers(backbone, size):
    pixels = torch.randn(2, 3, *size)
    reference, fast = _both(backbone, pixels)
    assert torch.allclose(reference.stage1, fast.stage1, atol=1e-5, rtol=0)
    for a, b in zip(reference.sources, fast.sources):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=0)


def test_a_new_size_replaces_the_cached_layout(backbone):
    small, large = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 96, 160)
    for pixels in (small, large, small):
        reference, fast = _both(backbone, pixels)
        assert torch.allclose(reference.stage1, fast.stage1, atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation, reference", [("none", lambda y: y), ("relu", F.relu), ("gelu", F.gelu)])
@pytest.mark.parametrize("shape", [(7, 32), (2, 5, 32), (0, 32)])
def test_linear_matches_torch(activation, reference, shape):
    x, weight, bias = torch.randn(shape), torch.randn(48, 32), torch.randn(48)
    with torch.inference_mode():
        out = linear(x, weight, bias, activation)
    assert out.shape == (*shape[:-1], 48)
    assert torch.allclose(out, reference(F.linear(x, weight, bias)), atol=1e-5)


def test_linear_keeps_autograd_and_autocast():
    x = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(3, 8, requires_grad=True)
    linear(x, weight).sum().backward()  # falls back to torch's op, which has a gradient
    assert x.grad is not None and weight.grad is not None
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert linear(x, weight).dtype == torch.bfloat16


def test_use_fast_linears_keeps_parameters_and_keys():
    module = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    before = {k: v for k, v in module.state_dict(keep_vars=True).items()}
    x = torch.randn(3, 4)
    expected = module(x)
    use_fast_linears(module)
    assert all(isinstance(m, FastLinear) for m in (module[0], module[2]))
    after = module.state_dict(keep_vars=True)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    with torch.inference_mode():
        assert torch.allclose(module(x), expected, atol=1e-6)


def test_layouts_made_in_inference_mode_serve_autograd_too():
    torch.manual_seed(0)
    model = ReferDinoBackbone(ReferDinoConfig.tiny())
    pixels = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        model(pixels)
    model(pixels).stage1.sum().backward()  # the cached layout is reused with gradients on
    assert model.swin.swin.embeddings.patch_embeddings.projection.weight.grad is not None


@pytest.mark.parametrize("value, expected", [("0", "False"), ("1", "True"), (None, "True")])
def test_referdino_onednn_0_in_the_environment_turns_the_onednn_layers_off(value, expected):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "REFERDINO_ONEDNN"}
    if value is not None:
        env["REFERDINO_ONEDNN"] = value
    done = subprocess.run([sys.executable, "-c", "from referdino_demo.model import layers; print(layers._enabled)"],
                          env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected
