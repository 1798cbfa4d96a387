"""`ReferDinoModel`: the whole network as stages, plus `forward` for a clip.

The stages: `encode_text` once per expression; per chunk of frames `backbone` (shareable across expressions),
`encode` and `decode_queries` (together `detect`) and `mask_features`; `refine` over the whole video;
`decode_masks` per chunk. Their order, the tracker between them and the chunking live in `schedule.run_schedule`,
which `forward`, the predictor, the explainer and the benchmarks share.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..preprocess.text import TextInputs
from .backbone import ReferDinoBackbone, VisualFeatures
from .config import ReferDinoConfig
from .decoder import ReferDinoDecoder, TwoStageSelection
from .deformable import set_deformable_sampler
from .encoder import EncoderOutput, ReferDinoEncoder
from .layers import inverse_sigmoid, text_logits
from .mask_head import MaskDecoder, PixelDecoder
from .outputs import FrameQueries, ReferDinoOutput, Trace, record
from .schedule import StageHooks, run_schedule
from .temporal import TemporalDecoder
from .text_encoder import TextEncoder


@dataclass
class TextFeatures:
    """features (1, L, d) projected BERT output; mask (1, L) True = real token; inputs: the tokenization."""

    features: torch.Tensor
    mask: torch.Tensor
    inputs: TextInputs


class ReferDinoModel(nn.Module):
    def __init__(self, config: ReferDinoConfig):
        super().__init__()
        self.config = config
        self.untrained = True  # False once real weights are loaded; the UI labels untrained results
        self.backbone = ReferDinoBackbone(config)
        self.text_encoder = TextEncoder(config)
        self.encoder = ReferDinoEncoder(config)
        self.query_selection = TwoStageSelection(config)
        self.decoder = ReferDinoDecoder(config)
        self.temporal_decoder = TemporalDecoder(config)
        self.pixel_decoder = PixelDecoder(config)
        self.mask_decoder = MaskDecoder(config)
        set_deformable_sampler(self, "gather")

    @property
    def device(self) -> torch.device:
        return self.query_selection.tgt_embed.weight.device

    # -- stages ----------------------------------------------------------------------------------------
    def encode_text(self, text: TextInputs, trace: Trace | None = None) -> TextFeatures:
        text = text.to(self.device)
        hidden, features = self.text_encoder(text)
        record(trace, "text.bert_last_hidden_state", hidden, per_frame=False)
        record(trace, "text.features", features, per_frame=False)
        return TextFeatures(features, text.attention_mask, text)

    def encode(self, visual: VisualFeatures, text: TextFeatures, trace: Trace | None = None) -> EncoderOutput:
        """The fusion encoder for a chunk of frames: multi-scale memory and per-frame fused text."""
        inputs = text.inputs
        encoder = self.encoder(visual, text.features, text.mask, inputs.self_attention_mask, inputs.position_ids)
        if trace is not None:
            record(trace, "encoder.memory", encoder.memory)
            record(trace, "encoder.text_fused", encoder.text)
            record(trace, "encoder.valid_ratios", encoder.valid_ratios)
            record(trace, "encoder.spatial_shapes", encoder.spatial_shapes, per_frame=False)
            record(trace, "encoder.level_start_index", encoder.level_start_index, per_frame=False)
        return encoder

    def decode_queries(self, encoder: EncoderOutput, text: TextFeatures, trace: Trace | None = None,
                       query_decay: float | None = None) -> FrameQueries:
        """Two-stage selection and pruned decoder for a chunk of frames (t of them) -> final queries (t, Q, d)."""
        text_mask = text.mask.expand(encoder.memory.shape[0], -1)
        queries, boxes, token_ids = self.query_selection(encoder, text_mask, trace)
        return self.decoder(queries, boxes, token_ids, encoder, text_mask, trace, query_decay)

    def detect(self, visual: VisualFeatures, text: TextFeatures, trace: Trace | None = None,
               query_decay: float | None = None) -> tuple[FrameQueries, EncoderOutput]:
        """`encode` then `decode_queries`: encoder, two-stage selection and pruned decoder for a chunk of frames."""
        encoder = self.encode(visual, text, trace)
        return self.decode_queries(encoder, text, trace, query_decay), encoder

    def mask_features(self, encoder: EncoderOutput, stage1: torch.Tensor) -> torch.Tensor:
        """-> stride-4 mask features (T, d, h/4, w/4)."""
        memory_s8, memory_s16, memory_s32 = encoder.level_maps(3)
        return self.pixel_decoder(memory_s8, memory_s16, memory_s32, stage1)

    def refine(self, tracked: FrameQueries, text_mask: torch.Tensor,
               trace: Trace | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Temporal decoder and heads over the whole video.

        tracked: all T frames, tracked; text_mask (1, L) -> (queries (T, Q, d), logits (T, Q), boxes (T, Q, 4))."""
        sentence = tracked.text[:, 0]  # the [CLS] token of each frame's fused text
        hs = self.temporal_decoder(tracked.hs, sentence)
        logits = text_logits(hs, tracked.text, text_mask.expand(hs.shape[0], -1))
        boxes = (self.decoder.bbox_embed(hs) + inverse_sigmoid(tracked.reference, self.config.inverse_sigmoid_eps))
        record(trace, "temporal.sentence_feature", sentence)
        record(trace, "temporal.hs", hs)
        return hs, logits, boxes.sigmoid()

    def decode_masks(self, queries: torch.Tensor, reference: torch.Tensor, text: torch.Tensor,
                     text_mask: torch.Tensor, features: torch.Tensor, trace: Trace | None = None) -> torch.Tensor:
        """queries (T, Q, d) from `refine`; reference (T, Q, 4) tracked boxes; text (T, L, d); text_mask (1, L);
        features (T, d, h4, w4) -> mask logits (T, Q, h4, w4)."""
        query_pos = self.decoder.query_position(reference)
        embed, masks = self.mask_decoder(queries, query_pos, reference, text,
                                         text_mask.expand(queries.shape[0], -1), features)
        record(trace, "mask.query_pos", query_pos)
        record(trace, "mask.embed", embed)
        record(trace, "mask.features_ch0_15", features[:, :16])
        return masks

    # -- whole clip ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, pixel_values: torch.Tensor, text: TextInputs, chunk_size: int = 36,
                trace: bool = False) -> ReferDinoOutput:
        """pixel_values (T, 3, h, w) normalised frames of one video; text: one tokenized expression.

        `run_schedule` with every chunk's mask features kept (the predictor trades them for a second pass on long
        videos); trace=True records the intermediate tensors the parity tool compares."""
        recorder = Trace() if trace else None
        text_features = self.encode_text(text, recorder)
        hooks = StageHooks(recorder)

        def chunks():
            return (pixel_values[start:start + chunk_size].to(self.device)
                    for start in range(0, pixel_values.shape[0], chunk_size))

        video, = run_schedule(self, chunks, [text_features], hooks=hooks)
        return ReferDinoOutput(pred_logits=video.logits, pred_boxes=video.boxes, pred_masks=hooks.masks(0),
                               token_ids=video.tracked.token_ids, trace=recorder.tensors() if recorder else None)
