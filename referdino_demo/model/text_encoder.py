"""BERT with sub-sentence masks and position ids, then the projection to d_model (`feat_map`)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from ..preprocess.text import TextInputs
from .config import ReferDinoConfig


class TextEncoder(nn.Module):
    def __init__(self, config: ReferDinoConfig):
        super().__init__()
        t = config.text
        self.bert = BertModel(BertConfig(
            vocab_size=t.vocab_size, hidden_size=t.hidden_size, num_hidden_layers=t.num_layers,
            num_attention_heads=t.num_heads, intermediate_size=t.intermediate_size,
            max_position_embeddings=t.max_position_embeddings, type_vocab_size=t.type_vocab_size,
            layer_norm_eps=t.layer_norm_eps, hidden_act=t.hidden_act,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        ), add_pooling_layer=False)  # the official pooler exists but is never used
        self.feat_map = nn.Linear(t.hidden_size, config.d_model)

    def forward(self, text: TextInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (BERT last hidden state (1, L, hidden), projected features (1, L, d_model))."""
        hidden = self.bert(
            input_ids=text.input_ids, attention_mask=text.self_attention_mask[:, None],
            token_type_ids=text.token_type_ids, position_ids=text.position_ids,
        ).last_hidden_state
        return hidden, self.feat_map(hidden)
