"""Small pieces shared by several parts of the model, and the transformers configs built from ours."""

from __future__ import annotations

import functools
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GroundingDinoConfig
from transformers.models.grounding_dino.modeling_grounding_dino import (
    GroundingDinoMLPPredictionHead as MLP,
    encode_sinusoidal_position_embedding,
)

from .config import ReferDinoConfig

__all__ = ["MLP", "FastLinear", "box_sine_embedding", "grounding_dino_config", "inverse_sigmoid", "linear",
           "set_onednn", "text_logits", "use_fast_linears"]


def grounding_dino_config(config: ReferDinoConfig, mask_head: bool = False) -> GroundingDinoConfig:
    """The transformers config that sizes the Grounding DINO layers we reuse.

    With `mask_head`, the decoder-layer fields describe the mask decoder instead: one level, 16 points,
    FFN 1024 (the official mask head is the same layer class built with those sizes).
    """
    decoder = dict(decoder_attention_heads=config.num_heads, decoder_n_points=config.decoder_points,
                   decoder_ffn_dim=config.ffn_dim, num_feature_levels=config.num_feature_levels)
    if mask_head:
        decoder = dict(decoder_attention_heads=config.mask_heads, decoder_n_points=config.mask_points,
                       decoder_ffn_dim=config.mask_ffn_dim, num_feature_levels=1)
    return GroundingDinoConfig(
        d_model=config.d_model, encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.num_heads, encoder_ffn_dim=config.ffn_dim,
        encoder_n_points=config.encoder_points, num_queries=config.num_queries, max_text_len=config.max_text_len,
        positional_embedding_temperature=config.position_temperature, layer_norm_eps=config.layer_norm_eps,
        # Inference only: every dropout and drop-path is off, as in the official eval mode.
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, fusion_dropout=0.0, fusion_droppath=0.0,
        text_enhancer_dropout=0.0, activation_function="relu", **decoder,
    )


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """GroundingDINO's `inverse_sigmoid` (eps 1e-3, not transformers' 1e-5): log(x / (1 - x)), clamped."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def text_logits(queries: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """Grounding score of each query: the max over real text tokens of <query, token>.

    queries (B, N, d), text (B, L, d), text_mask (B, L) bool True = real token -> (B, N).
    Special tokens count, as in the official `ContrastiveEmbed` followed by a max.
    """
    logits = queries @ text.transpose(-1, -2)
    return logits.masked_fill(~text_mask[:, None, :], float("-inf")).max(-1).values


def box_sine_embedding(boxes: torch.Tensor, d_model: int) -> torch.Tensor:
    """Sine embedding of (cx, cy, w, h) boxes (..., 4) -> (..., 2 * d_model), ordered y, x, w, h."""
    return encode_sinusoidal_position_embedding(boxes, num_pos_feats=d_model // 2)


# -- linear layers through oneDNN -------------------------------------------------------------------------------------
# torch's fp32 CPU matmul is MKL's sgemm, which runs its AVX2 code on AMD CPUs even when they have AVX-512; oneDNN
# (also inside torch, used by its compiler for fused linear layers) picks AVX-512 by the CPU's features: on a Zen 5,
# 2.0-2.5x MKL's speed for every size the model uses. Results differ from MKL's by float rounding only.
def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           activation: str = "none") -> torch.Tensor:
    """`F.linear(x, weight, bias)` followed by `activation` ("none", "relu" or "gelu", the exact erf GELU).

    x (..., in), weight (out, in), bias (out,) -> (..., out). On a CPU in float32 without autograd or autocast,
    runs as one oneDNN call with the activation fused; otherwise (or if oneDNN is unavailable) as torch's ops."""
    if _onednn_applies(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], _ALGORITHM[activation])
    out = F.linear(x, weight, bias)
    return F.gelu(out) if activation == "gelu" else F.relu(out) if activation == "relu" else out


ONEDNN_ENV = "REFERDINO_ONEDNN"
_ALGORITHM = {"none": "", "relu": "", "gelu": "none"}  # oneDNN's GELU "algorithm": "none" = erf, "tanh" = approx.


# oneDNN keeps resident memory for each new input shape (Swin-B: about 40 MB per new clip size, 8 sizes measured;
# torch's layers level off after the second): a server seeing many clip sizes may prefer torch's layers,
# REFERDINO_ONEDNN=0, at the cost of the speed.
_enabled = os.environ.get(ONEDNN_ENV, "1") != "0"


def set_onednn(enabled: bool) -> None:
    """Let `linear` use oneDNN (the default; `REFERDINO_ONEDNN=0` in the environment makes the default off) or always
    torch's ops (the reference the benchmarks compare with)."""
    global _enabled
    _enabled = enabled


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (_enabled and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not torch.is_autocast_enabled("cpu") and _onednn_available())


@functools.cache
def _onednn_available() -> bool:
    """Whether this torch build runs oneDNN linear layers (x86 and most ARM builds); warns once if not."""
    try:
        x, weight = torch.ones(2, 3), torch.ones(4, 3)
        ok = torch.allclose(torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], ""), x @ weight.T)
    except (AttributeError, RuntimeError, NotImplementedError):
        ok = False
    if not ok:
        warnings.warn("oneDNN linear layers are unavailable in this torch build: linear layers run through torch's "
                      "default matmul (up to 2x slower on AMD CPUs); results are the same", stacklevel=3)
    return ok


class FastLinear(nn.Linear):
    """`nn.Linear` computed by `linear` (oneDNN where it applies); same parameters, same state dict keys.

    activation: "none", or "relu" / "gelu" applied by this layer, fused into its matmul (the model then drops its
    own activation module)."""

    activation = "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.activation)


def use_fast_linears(module: nn.Module) -> nn.Module:
    """Make every plain `nn.Linear` inside `module` a `FastLinear`, in place (the parameters stay the same
    objects); subclasses of `nn.Linear` with their own forward are left alone. -> `module`."""
    for child in module.modules():
        if type(child) is nn.Linear:
            child.__class__ = FastLinear
    return module
