"""`ReferDinoModel`: the whole network, as stages the predictor can schedule, plus `forward` for a clip.

Stages, per video and expression:
1. `encode_text` once;
2. per chunk of frames: `backbone` (shareable across expressions), `detect` (encoder, two-stage
   selection, pruned decoder) and `mask_features` (pixel decoder);
3. `QueryTracker` over the frames in order;
4. `refine` over the whole video (temporal decoder, class and box heads);
5. per chunk: `decode_masks`.
Per-frame stages give the same result whatever the chunk size; 3 and 4 see every frame.
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
from .temporal import TemporalDecoder
from .text_encoder import TextEncoder
from .tracker import QueryTracker


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

    @classmethod
    def from_pretrained(cls, source="tiny-random", filename: str | None = None,
                        config: ReferDinoConfig | None = None, sha256: str | None = None,
                        strict: bool = True) -> "ReferDinoModel":
        """See `referdino_demo.checkpoints.loading.from_pretrained`: strict by default; `strict=False` loads the
        keys that fit and records what did not in `model.load_report` (a `LoadReport`)."""
        from ..checkpoints.loading import from_pretrained

        return from_pretrained(source, filename, config, sha256, strict=strict)

    def save_pretrained(self, directory) -> None:
        """Write `config.json` and `model.safetensors` into `directory`."""
        from ..checkpoints.loading import save_pretrained

        save_pretrained(self, directory)

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

    def detect(self, visual: VisualFeatures, text: TextFeatures, trace: Trace | None = None,
               query_decay: float | None = None) -> tuple[FrameQueries, EncoderOutput]:
        """Encoder, two-stage selection and pruned decoder for a chunk of frames."""
        encoder = self.encode(visual, text, trace)
        text_mask = text.mask.expand(visual.num_frames, -1)
        queries, boxes, token_ids = self.query_selection(encoder, text_mask, trace)
        return self.decoder(queries, boxes, token_ids, encoder, text_mask, trace, query_decay), encoder

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

        Frames go through the per-frame stages `chunk_size` at a time; the mask features of every chunk are
        kept (the predictor trades them for a second pass on long videos)."""
        recorder = Trace() if trace else None
        text_features = self.encode_text(text, recorder)
        tracker = QueryTracker(self.config.tracking_alpha)
        tracked, features = [], []
        for start in range(0, pixel_values.shape[0], chunk_size):
            visual = self.backbone(pixel_values[start:start + chunk_size].to(self.device), recorder)
            frames, encoder = self.detect(visual, text_features, recorder)
            chunk, perm = tracker(frames, text_features.mask)
            record(recorder, "tracker.perm", perm)
            tracked.append(chunk)
            features.append(self.mask_features(encoder, visual.stage1))
        video = FrameQueries(*(torch.cat([getattr(c, f) for c in tracked]) for f in
                               ("hs", "reference", "text", "token_ids")))
        record(recorder, "tracker.hs_tracked", video.hs)
        record(recorder, "tracker.ref_tracked", video.reference)
        record(recorder, "tracker.token_ids", video.token_ids)
        queries, logits, boxes = self.refine(video, text_features.mask, recorder)
        masks, start = [], 0
        for chunk_features in features:
            end = start + chunk_features.shape[0]
            masks.append(self.decode_masks(queries[start:end], video.reference[start:end], video.text[start:end],
                                           text_features.mask, chunk_features, recorder))
            start = end
        return ReferDinoOutput(pred_logits=logits, pred_boxes=boxes, pred_masks=torch.cat(masks),
                               token_ids=video.token_ids, trace=recorder.tensors() if recorder else None)
