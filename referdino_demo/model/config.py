"""`ReferDinoConfig`: every hyper-parameter the model uses, with presets for the released variants.

Field names follow the official GroundingDINO/ReferDINO arguments where one exists (see
`ReferDinoConfig.from_official`), so a checkpoint variant is described by data, never by code.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError


@dataclass
class SwinSettings:
    """The Swin Transformer backbone (official `SwinTransformer`; channels double at every stage)."""

    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5

    @property
    def stage_channels(self) -> list[int]:
        return [self.embed_dim * 2**i for i in range(len(self.depths))]


@dataclass
class TextSettings:
    """The BERT text encoder (bert-base-uncased sizes by default)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"


@dataclass
class ReferDinoConfig:
    """Configuration of a ReferDINO model.

    Transformer sizes (`d_model`, `num_heads`, `ffn_dim`) follow GroundingDINO: the fusion layers use
    `ffn_dim // 2` channels and `num_heads // 2` heads, as does the text enhancer.
    """

    backbone: SwinSettings = field(default_factory=SwinSettings)
    text: TextSettings = field(default_factory=TextSettings)
    d_model: int = 256
    num_heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    ffn_dim: int = 2048
    encoder_points: int = 4
    decoder_points: int = 4
    num_feature_levels: int = 4
    num_queries: int = 900
    max_text_len: int = 256
    position_temperature: int = 20
    layer_norm_eps: float = 1e-5
    input_proj_groups: int = 32
    # ReferDINO additions.
    query_decay: float = 0.5
    tracking_alpha: float = 0.1
    temporal_layers: int = 3
    temporal_heads: int = 8
    temporal_ffn_dim: int = 2048  # the PyTorch default of nn.TransformerDecoderLayer, fixed in the official code
    mask_layers: int = 3
    mask_heads: int = 8
    mask_points: int = 16
    mask_ffn_dim: int = 1024  # DeformableTransformerDecoderLayer's default, not the config's ffn_dim
    pixel_decoder_groups: int = 8
    inverse_sigmoid_eps: float = 1e-3
    # LoRA as released (merged into the weights by the converter; scaling = lora_alpha / rank).
    lora_alpha: float = 1.0
    name: str = "custom"

    def __post_init__(self) -> None:
        if isinstance(self.backbone, dict):
            self.backbone = SwinSettings(**self.backbone)
        if isinstance(self.text, dict):
            self.text = TextSettings(**self.text)
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` naming the fields of any inconsistent pair."""
        checks = [
            (self.d_model == 256, f"d_model must be 256 (the official sine embeddings hard-code it), got {self.d_model}"),
            (self.d_model % self.num_heads == 0, f"d_model {self.d_model} must be divisible by num_heads {self.num_heads}"),
            ((self.ffn_dim // 2) % (self.num_heads // 2) == 0,
             f"ffn_dim // 2 = {self.ffn_dim // 2} must be divisible by num_heads // 2 = {self.num_heads // 2}"),
            (0.0 < self.query_decay <= 1.0, f"query_decay must be in (0, 1], got {self.query_decay}"),
            (self.num_queries >= 1, f"num_queries must be >= 1, got {self.num_queries}"),
            (len(self.backbone.depths) == len(self.backbone.num_heads) == 4,
             f"Swin needs 4 stages, got depths {self.backbone.depths} and num_heads {self.backbone.num_heads}"),
            (self.num_feature_levels == 4, f"num_feature_levels must be 4 (3 Swin stages + 1 extra), got {self.num_feature_levels}"),
            (self.temporal_layers >= 1, f"temporal_layers must be >= 1, got {self.temporal_layers}"),
            (0.0 <= self.tracking_alpha <= 1.0, f"tracking_alpha must be in [0, 1], got {self.tracking_alpha}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def query_counts(self) -> list[int]:
        """Queries entering each decoder layer, then the final count: [900, 450, 225, 113, 57, 29, 15] at 0.5."""
        counts = [self.num_queries]
        for _ in range(self.decoder_layers):
            counts.append(math.ceil(counts[-1] * self.query_decay))
        return counts

    def replace(self, **changes) -> "ReferDinoConfig":
        """A copy with some fields changed (e.g. `query_decay`, `tracking_alpha`)."""
        return dataclasses.replace(self, **changes)

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ReferDinoConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ReferDinoConfig fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ReferDinoConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    # -- presets --------------------------------------------------------------------------------------
    @classmethod
    def swin_t(cls, **changes) -> "ReferDinoConfig":
        """The released Swin-T variant (`swin_T_224_1k`, e.g. `coco_swint.pth`)."""
        return cls(**{"backbone": SwinSettings(96, [2, 2, 6, 2], [3, 6, 12, 24], 7), "name": "swin_t", **changes})

    @classmethod
    def swin_b(cls, **changes) -> "ReferDinoConfig":
        """The released Swin-B variant (`swin_B_384_22k`: ryt/mevis/coco checkpoints; a2d uses temporal_layers=1)."""
        return cls(**{"backbone": SwinSettings(128, [2, 2, 18, 2], [4, 8, 16, 32], 12), "name": "swin_b", **changes})

    @classmethod
    def tiny(cls, **changes) -> "ReferDinoConfig":
        """A small random-weight model for tests and UI development (seconds on a CPU)."""
        values = dict(
            backbone=SwinSettings(16, [1, 1, 2, 1], [1, 2, 4, 8], 7),
            text=TextSettings(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
            encoder_layers=2, ffn_dim=128, num_queries=300, temporal_layers=1, temporal_ffn_dim=256,
            mask_layers=1, mask_ffn_dim=256, name="tiny",
        )
        values.update(changes)
        return cls(**values)

    @classmethod
    def from_official(cls, args: dict, swin: dict | None = None, bert: dict | None = None) -> "ReferDinoConfig":
        """Map the official GroundingDINO argument dictionary (a ReferDINO yaml) to a config.

        `swin` and `bert` override the backbone and text sizes (the official code derives Swin from the
        `backbone` preset name and BERT from `text_encoder_type`); without them the named preset is used.
        """
        presets = {"swin_T_224_1k": cls.swin_t, "swin_B_384_22k": cls.swin_b}
        name = args.get("backbone", "swin_T_224_1k")
        if name not in presets:
            raise ConfigError(f"unsupported official backbone {name!r}; expected one of {sorted(presets)}")
        base = presets[name]()
        backbone = base.backbone
        if swin:
            backbone = SwinSettings(
                embed_dim=swin["embed_dim"], depths=list(swin["depths"]), num_heads=list(swin["num_heads"]),
                window_size=swin["window_size"], patch_size=swin.get("patch_size", 4),
                mlp_ratio=swin.get("mlp_ratio", 4.0), layer_norm_eps=swin.get("layer_norm_eps", 1e-5),
            )
        text = base.text
        if bert:
            text = TextSettings(
                vocab_size=bert["vocab_size"], hidden_size=bert["hidden_size"], num_layers=bert["num_hidden_layers"],
                num_heads=bert["num_attention_heads"], intermediate_size=bert["intermediate_size"],
                max_position_embeddings=bert["max_position_embeddings"], type_vocab_size=bert.get("type_vocab_size", 2),
                layer_norm_eps=bert.get("layer_norm_eps", 1e-12), hidden_act=bert.get("hidden_act", "gelu"),
            )
        seg = args.get("SegHead", {})
        if args.get("pe_temperatureH", 20) != args.get("pe_temperatureW", 20):
            raise ConfigError("pe_temperatureH and pe_temperatureW differ; only equal temperatures are supported")
        if args.get("two_stage_type", "standard") != "standard" or not args.get("embed_init_tgt", True):
            raise ConfigError("only two_stage_type 'standard' with embed_init_tgt true is supported (all ReferDINO configs)")
        return cls(
            backbone=backbone, text=text,
            d_model=args.get("hidden_dim", 256), num_heads=args.get("nheads", 8),
            encoder_layers=args.get("enc_layers", 6), decoder_layers=args.get("dec_layers", 6),
            ffn_dim=args.get("dim_feedforward", 2048), encoder_points=args.get("enc_n_points", 4),
            decoder_points=args.get("dec_n_points", 4), num_feature_levels=args.get("num_feature_levels", 4),
            num_queries=args.get("num_queries", 900), max_text_len=args.get("max_text_len", 256),
            position_temperature=args.get("pe_temperatureH", 20),
            query_decay=args.get("query_decay", 0.5), tracking_alpha=args.get("tracking_alpha", 0.1),
            temporal_layers=args.get("temporal_layer", 3), temporal_heads=args.get("nheads", 8),
            mask_layers=seg.get("n_layers", 3), mask_heads=seg.get("n_heads", 8), mask_points=seg.get("n_points", 16),
            name=f"official:{name}",
        )

