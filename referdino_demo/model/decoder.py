"""Two-stage query selection and the decoder loop with confidence-aware query pruning (900 -> ... -> 15)."""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoDecoderLayer

from .config import ReferDinoConfig
from .encoder import EncoderOutput
from .layers import MLP, box_sine_embedding, grounding_dino_config, inverse_sigmoid, text_logits
from .outputs import FrameQueries, Trace, record
from .pruning import gather_rows, kept_count, pruning_gate, select_queries


def encoder_proposals(encoder: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """One proposal per memory token: its cell centre with size 0.05 * 2^level, in inverse-sigmoid space.

    -> (proposals (T, S, 4), valid (T, S, 1) bool). Proposals outside (0.01, 0.99) are invalid: +inf.
    """
    memory = encoder.memory
    proposals = []
    for level, (h, w) in enumerate(encoder.spatial_shapes_list):
        ys, xs = torch.meshgrid(torch.linspace(0, h - 1, h, dtype=memory.dtype, device=memory.device),
                                torch.linspace(0, w - 1, w, dtype=memory.dtype, device=memory.device), indexing="ij")
        # Frames are never padded, so the valid size is the full level size.
        scale = torch.tensor([w, h], dtype=memory.dtype, device=memory.device)
        centres = (torch.stack([xs, ys], -1) + 0.5) / scale
        sizes = torch.ones_like(centres) * 0.05 * (2.0**level)
        proposals.append(torch.cat([centres, sizes], -1).view(1, -1, 4))
    proposals = torch.cat(proposals, 1).expand(memory.shape[0], -1, -1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
    proposals = torch.log(proposals / (1 - proposals))
    proposals = proposals.masked_fill(encoder.padding_mask.unsqueeze(-1), float("inf"))
    return proposals.masked_fill(~valid, float("inf")), valid


class TwoStageSelection(nn.Module):
    """Scores every encoder token against the fused text and keeps the top `num_queries` as decoder queries."""

    def __init__(self, config: ReferDinoConfig):
        super().__init__()
        d = config.d_model
        self.num_queries = config.num_queries
        self.enc_output = nn.Linear(d, d)
        self.enc_output_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.enc_out_bbox_embed = MLP(d, d, 4, 3)
        self.tgt_embed = nn.Embedding(config.num_queries, d)

    def forward(self, encoder: EncoderOutput, text_mask: torch.Tensor, trace: Trace | None = None):
        """-> (content queries (T, N, d), reference boxes (T, N, 4) sigmoid, token ids (T, N) into S)."""
        num_tokens = encoder.memory.shape[1]
        if num_tokens < self.num_queries:
            from ..errors import InputLimitError

            raise InputLimitError(
                f"the frames are too small: {num_tokens} encoder tokens for {self.num_queries} queries; "
                "use a larger short side (the official size is 360)")
        proposals, valid = encoder_proposals(encoder)
        memory = encoder.memory.masked_fill(encoder.padding_mask.unsqueeze(-1) | ~valid, 0.0)
        memory = self.enc_output_norm(self.enc_output(memory))
        scores = text_logits(memory, encoder.text, text_mask)  # (T, S)
        top_scores, token_ids = torch.topk(scores, self.num_queries, dim=1)
        boxes_unsigmoid = gather_rows(self.enc_out_bbox_embed(memory) + proposals, token_ids)
        record(trace, "two_stage.logits", scores)
        record(trace, "two_stage.topk_indices", token_ids)
        record(trace, "two_stage.topk_logits", top_scores)
        record(trace, "two_stage.init_ref_unsigmoid", boxes_unsigmoid)
        content = self.tgt_embed.weight.unsqueeze(0).expand(encoder.memory.shape[0], -1, -1)
        return content, boxes_unsigmoid.sigmoid(), token_ids


class ReferDinoDecoder(nn.Module):
    """Six Grounding DINO decoder layers; after each, box refinement and confidence-aware pruning."""

    def __init__(self, config: ReferDinoConfig):
        super().__init__()
        d = config.d_model
        hf_config = grounding_dino_config(config)
        self.d_model = d
        self.query_decay = config.query_decay
        self.eps = config.inverse_sigmoid_eps
        self.layers = nn.ModuleList(GroundingDinoDecoderLayer(hf_config) for _ in range(config.decoder_layers))
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.ref_point_head = MLP(2 * d, d, d, 2)
        self.bbox_embed = MLP(d, d, 4, 3)  # one head shared by every layer (and the final box head)

    def query_position(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes (B, N, 4) -> query position embedding (B, N, d); also used by the mask decoder."""
        return self.ref_point_head(box_sine_embedding(boxes, self.d_model))

    def forward(self, queries: torch.Tensor, boxes: torch.Tensor, token_ids: torch.Tensor, encoder: EncoderOutput,
                text_mask: torch.Tensor, trace: Trace | None = None, query_decay: float | None = None) -> FrameQueries:
        """queries (T, N, d), boxes (T, N, 4) sigmoid, token_ids (T, N) -> the pruned final queries.

        `query_decay` overrides the configured keep ratio for this call (1.0 disables pruning)."""
        query_decay = self.query_decay if query_decay is None else query_decay
        text = encoder.text
        text_bias = torch.zeros(text_mask.shape, dtype=text.dtype, device=text.device)
        text_bias = text_bias.masked_fill(~text_mask, torch.finfo(text.dtype).min)[:, None, None, :]
        vision_valid = ~encoder.padding_mask
        query_ids = torch.arange(queries.shape[1], device=queries.device).expand(queries.shape[0], -1)
        output = queries
        for index, layer in enumerate(self.layers):
            name = f"decoder.layer{index}"
            record(trace, f"{name}.ref_input", boxes)
            # valid_ratios are all 1 (no padding), so the boxes are the layer's reference points as they are.
            output, self_attention, _, _ = layer(
                hidden_states=output, position_embeddings=self.query_position(boxes),
                reference_points=boxes[:, :, None], spatial_shapes=encoder.spatial_shapes,
                spatial_shapes_list=encoder.spatial_shapes_list, level_start_index=encoder.level_start_index,
                vision_encoder_hidden_states=encoder.memory, vision_encoder_attention_mask=vision_valid,
                text_encoder_hidden_states=text, text_encoder_attention_mask=text_bias, output_attentions=True,
            )
            gate = pruning_gate(output, self_attention.mean(1), text, text_mask)
            keep_gate, keep = select_queries(gate, kept_count(output.shape[1], query_decay))
            output, boxes = gather_rows(output, keep), gather_rows(boxes, keep)
            query_ids, token_ids = torch.gather(query_ids, 1, keep), torch.gather(token_ids, 1, keep)
            if trace is not None:
                for key, value in (("gate", gate), ("keep_gate", keep_gate), ("keep_indices", keep),
                                   ("kept_query_ids", query_ids), ("kept_token_ids", token_ids),
                                   ("reference", boxes), ("hs", self.norm(output))):
                    record(trace, f"{name}.{key}", value)
            reference = boxes
            boxes = (self.bbox_embed(output) + inverse_sigmoid(boxes, self.eps)).sigmoid()
        record(trace, "decoder.final_ref_out", boxes)
        return FrameQueries(hs=self.norm(output), reference=reference, text=text, token_ids=token_ids)
