"""The encoder's image-text bi-attention, with its image-side projections re-associated.

Grounding DINO's fusion layer projects every image token (about 5,000 a frame at 360x640) to 1,024 channels
three times (queries, values, and back through the output projection), while the text has about 30 tokens.
Each of those projections is linear, so it can be moved to the text side of the product:

    logits_h      = (v Wq_h^T + bq_h) s k_h^T     = v (s Wq_h^T k_h^T) + s bq_h k_h^T
    image out     = sum_h P_h (t_h Wo_h^T) + bo      (t_h: text values, P_h: image->text probabilities)
    text out_h    = Pt_h (v Wv_h^T + bv_h)          = (Pt_h v) Wv_h^T + bv_h   (rows of Pt_h sum to 1)

The image side then costs three (tokens x 256 x heads*L) products instead of three (tokens x 256 x 1024)
ones: the encoder does about 45% fewer multiply-adds. When heads*L is not smaller than the projection width
(very long captions, or small configs) the original order is cheaper and is used instead. Everything else
(the global max subtraction, the +-50000 clamps, the masks, the softmaxes) is transformers' and the official
code's, step for step; results equal theirs to float rounding (checked by the parity tool and
`tests/model/test_fusion.py`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.grounding_dino.modeling_grounding_dino import (
    GroundingDinoBiMultiHeadAttention,
    GroundingDinoFusionLayer,
)


class FusionAttention(GroundingDinoBiMultiHeadAttention):
    """Same parameters (and checkpoint keys) as transformers' `GroundingDinoBiMultiHeadAttention`."""

    def forward(self, vision_features: torch.Tensor, text_features: torch.Tensor,
                vision_attention_mask: torch.Tensor | None = None, text_attention_mask: torch.Tensor | None = None):
        """vision_features (B, N, d); text_features (B, L, d); masks (B, N) and (B, L), True = padding
        -> ((image update (B, N, d), image->text probabilities (B*heads, N, L)),
            (text update (B, L, d), text->image probabilities (B*heads, L, N))), as transformers returns them."""
        batch, tokens, _ = vision_features.shape
        words, heads, head_dim = text_features.shape[1], self.num_heads, self.head_dim
        if heads * words >= self.embed_dim:
            return super().forward(vision_features, text_features, vision_attention_mask, text_attention_mask)

        keys = self.text_proj(text_features).view(batch, words, heads, head_dim)
        query_weight = self.vision_proj.weight.view(heads, head_dim, -1)  # (h, e, d)
        key_weight = torch.einsum("blhe,hed->bdhl", keys, query_weight).flatten(2) * self.scale  # (B, d, h*L)
        key_bias = torch.einsum("blhe,he->bhl", keys, self.vision_proj.bias.view(heads, head_dim)).flatten(1)
        logits = torch.baddbmm((key_bias * self.scale)[:, None, :], vision_features, key_weight)
        logits = logits.view(batch, tokens, heads, words).transpose(1, 2)  # (B, h, N, L)

        logits = logits - logits.max()  # one max over the whole batch, as the official code does
        # Do not increase -50000/50000: half precision has a limited range (the official comment).
        logits = torch.clamp(logits, min=-50000, max=50000)
        text_logits = logits.transpose(2, 3)
        text_logits = torch.clamp(text_logits - text_logits.max(-1, keepdim=True).values, min=-50000, max=50000)
        if vision_attention_mask is not None:
            text_logits = text_logits.masked_fill(vision_attention_mask[:, None, None, :], float("-inf"))
        text_probs = text_logits.softmax(-1)  # (B, h, L, N)
        if text_attention_mask is not None:
            logits = logits.masked_fill(text_attention_mask[:, None, None, :], float("-inf"))
        vision_probs = logits.softmax(-1)  # (B, h, N, L)

        text_values = self.values_text_proj(text_features).view(batch, words, heads, head_dim)
        out_weight = self.out_vision_proj.weight.view(-1, heads, head_dim)  # (d, h, e)
        projected_values = torch.einsum("blhe,dhe->bhld", text_values, out_weight).flatten(1, 2)  # (B, h*L, d)
        vision_out = torch.baddbmm(self.out_vision_proj.bias, vision_probs.transpose(1, 2).flatten(2),
                                   projected_values)

        pooled = torch.bmm(text_probs.flatten(1, 2), vision_features).view(batch, heads, words, -1)  # (B, h, L, d)
        value_weight = self.values_vision_proj.weight.view(heads, head_dim, -1)  # (h, e, d)
        text_values_out = (torch.einsum("bhld,hed->blhe", pooled, value_weight)
                           + self.values_vision_proj.bias.view(heads, head_dim))
        text_out = self.out_text_proj(text_values_out.flatten(2))
        return (vision_out, vision_probs.flatten(0, 1)), (text_out, text_probs.flatten(0, 1))


FUSIONS = {"reassociated": FusionAttention, "transformers": GroundingDinoBiMultiHeadAttention}


def set_fusion_attention(model: nn.Module, name: str = "reassociated") -> nn.Module:
    """Use bi-attention `name` in every fusion layer inside `model`: "reassociated" (ours, the default) or
    "transformers" (the original, kept as the reference the benchmarks and tests compare against). Only
    `forward` differs between the two, so switching the class keeps the very same parameters."""
    kind = FUSIONS[name]
    for module in model.modules():
        if isinstance(module, GroundingDinoFusionLayer):
            module.attn.__class__ = kind
    return model
