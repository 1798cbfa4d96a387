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
from ..input_files import read_small_file
from ..options import DEFAULT_QUERY_DECAY

MAX_CONFIG_BYTES = 1 << 20  # a config.json is about 2 KB; reading more is refused


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric field: [low, high], or (low, high] with `low_open`."""

    low: float
    high: float
    low_open: bool = False

    def __contains__(self, value) -> bool:
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low}, {self.high}]"


# Bounds of every numeric field, checked (with the types) before anything is built. The highs are 4-8x the
# largest released value (Swin-B ReferDINO with bert-base-uncased; comments: released -> headroom), so research
# variants still load while a damaged or hostile config cannot ask for a model that takes minutes or gigabytes
# to build. The lows are what the modules need to exist (>= 1 head, layer, point, group). A list field's bound
# applies to each element.
LIMITS: dict[str, Range] = {
    "backbone.embed_dim": Range(1, 512),  # 96 / 128 -> 4x
    "backbone.depths": Range(1, 72),  # per stage, 2-2-6-2 / 2-2-18-2 -> 4x
    "backbone.num_heads": Range(1, 128),  # per stage, 3-6-12-24 / 4-8-16-32 -> 4x
    "backbone.window_size": Range(1, 48),  # 7 / 12 -> 4x
    "backbone.patch_size": Range(1, 32),  # 4 -> 8x
    "backbone.mlp_ratio": Range(1.0, 16.0),  # 4.0 -> 4x
    "backbone.layer_norm_eps": Range(0.0, 0.1, low_open=True),  # 1e-5
    "text.vocab_size": Range(1, 250_000),  # 30522 -> 8x
    "text.hidden_size": Range(1, 4096),  # 768 -> 5x
    "text.num_layers": Range(1, 48),  # 12 -> 4x
    "text.num_heads": Range(1, 64),  # 12 -> 5x
    "text.intermediate_size": Range(1, 16384),  # 3072 -> 5x
    "text.max_position_embeddings": Range(1, 4096),  # 512 -> 8x
    "text.type_vocab_size": Range(1, 16),  # 2 -> 8x
    "text.layer_norm_eps": Range(0.0, 0.1, low_open=True),  # 1e-12
    "d_model": Range(1, 1024),  # 256 -> 4x (and must be 256: see _RULES)
    "num_heads": Range(1, 64),  # 8 -> 8x
    "encoder_layers": Range(1, 48),  # 6 -> 8x
    "decoder_layers": Range(1, 48),  # 6 -> 8x
    "ffn_dim": Range(1, 16384),  # 2048 -> 8x
    "encoder_points": Range(1, 32),  # 4 -> 8x
    "decoder_points": Range(1, 32),  # 4 -> 8x
    "num_feature_levels": Range(1, 16),  # 4 (and must be 4: see _RULES)
    "num_queries": Range(1, 7200),  # 900 -> 8x
    "max_text_len": Range(1, 2048),  # 256 -> 8x
    "position_temperature": Range(1, 100_000),  # 20 (DETR's sine default is 10000)
    "layer_norm_eps": Range(0.0, 0.1, low_open=True),  # 1e-5
    "input_proj_groups": Range(1, 256),  # 32 -> 8x
    "query_decay": Range(0.0, 1.0, low_open=True),  # 0.5; 1.0 disables pruning
    "tracking_alpha": Range(0.0, 1.0),  # 0.1
    "temporal_layers": Range(1, 24),  # 3 (1 for a2d) -> 8x
    "temporal_heads": Range(1, 64),  # 8 -> 8x
    "temporal_ffn_dim": Range(1, 16384),  # 2048 -> 8x
    "mask_layers": Range(1, 24),  # 3 -> 8x
    "mask_heads": Range(1, 64),  # 8 -> 8x
    "mask_points": Range(1, 128),  # 16 -> 8x
    "mask_ffn_dim": Range(1, 8192),  # 1024 -> 8x
    "pixel_decoder_groups": Range(1, 64),  # 8 -> 8x
    "inverse_sigmoid_eps": Range(0.0, 0.5, low_open=True),  # 1e-3
    "lora_alpha": Range(-1e4, 1e4),  # 1 (scaling = alpha / rank)
}
MAX_NAME_LENGTH = 200
# The whole model, estimated from the sizes before building it: about 4x the released Swin-B model
# (SWIN_B_PARAMETERS, 243 M, about 1 GB in float32), so at most about 4 GB of float32 weights.
SWIN_B_PARAMETERS = 242_768_560
MAX_PARAMETERS = 1_000_000_000


@dataclass
class SwinSettings:
    """The Swin Transformer backbone (official `SwinTransformer`; channels double at every stage).

    embed_dim (`int`, default 96): channels of the first stage (Swin-T 96, Swin-B 128).
    depths (`list[int]`, default `[2, 2, 6, 2]`): Swin blocks in each of the four stages.
    num_heads (`list[int]`, default `[3, 6, 12, 24]`): attention heads in each stage.
    window_size (`int`, default 7): side of the attention windows in patches (Swin-B 384: 12).
    patch_size (`int`, default 4): side of the patches the image is cut into (stride of the first stage).
    mlp_ratio (`float`, default 4.0): hidden width of each block's MLP, as a multiple of its channels.
    layer_norm_eps (`float`, default 1e-5): epsilon of the layer norms.
    """

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
    """The BERT text encoder (bert-base-uncased sizes by default).

    vocab_size (`int`, default 30522): tokens in the vocabulary.
    hidden_size (`int`, default 768): width of the token features.
    num_layers (`int`, default 12): transformer layers.
    num_heads (`int`, default 12): attention heads per layer.
    intermediate_size (`int`, default 3072): hidden width of each layer's feed-forward block.
    max_position_embeddings (`int`, default 512): longest token sequence the position table covers.
    type_vocab_size (`int`, default 2): token type ids (segments).
    layer_norm_eps (`float`, default 1e-12): epsilon of the layer norms.
    hidden_act (`str`, default "gelu"): activation of the feed-forward blocks.
    """

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
    """Configuration of a ReferDINO model. The defaults are the released models' values, with a Swin-T backbone;
    `swin_t()`, `swin_b()` and `tiny()` are the presets, `from_official` reads the official arguments.

    Transformer sizes (`d_model`, `num_heads`, `ffn_dim`) follow GroundingDINO: the fusion layers use
    `ffn_dim // 2` channels and `num_heads // 2` heads, as does the text enhancer. Every number is checked against
    `LIMITS` and the cross-field rules when the config is made (`validate`).

    backbone (`SwinSettings`): the image backbone.
    text (`TextSettings`): the BERT text encoder.
    d_model (`int`, default 256): width of the encoder, decoder and query features (the released code needs 256).
    num_heads (`int`, default 8): attention heads of the encoder and decoder.
    encoder_layers (`int`, default 6): deformable encoder layers, each with image-text fusion and text enhancer.
    decoder_layers (`int`, default 6): decoder layers; queries are pruned after each (`query_decay`).
    ffn_dim (`int`, default 2048): hidden width of the encoder and decoder feed-forward blocks.
    encoder_points (`int`, default 4): deformable sampling points per head and level in the encoder.
    decoder_points (`int`, default 4): the same in the decoder's cross-attention.
    num_feature_levels (`int`, default 4): feature maps the encoder attends to (three backbone stages and one
      extra stride-64 level; the released code needs 4).
    num_queries (`int`, default 900): object queries chosen from the encoder's output (two-stage selection).
    max_text_len (`int`, default 256): tokens of the expression kept, [CLS] and [SEP] included.
    position_temperature (`int`, default 20): temperature of the sine position embeddings.
    layer_norm_eps (`float`, default 1e-5): epsilon of the transformer's layer norms.
    input_proj_groups (`int`, default 32): group-norm groups of the projections from the backbone to `d_model`.
    query_decay (`float`, default 0.5): fraction of the queries each decoder layer keeps (ReferDINO's
      confidence-aware pruning: 900, 450, ..., 15); 1.0 turns pruning off.
    tracking_alpha (`float`, default 0.1): how far the tracker's memory of the queries moves towards each frame
      (scaled by each query's grounding score).
    temporal_layers (`int`, default 3): layers of the temporal decoder (1 in the a2d checkpoint).
    temporal_heads (`int`, default 8): attention heads of the temporal decoder.
    temporal_ffn_dim (`int`, default 2048): its feed-forward width (PyTorch's default, fixed in the official code).
    mask_layers (`int`, default 3): layers of the grounding-guided deformable mask decoder.
    mask_heads (`int`, default 8): attention heads of the mask decoder.
    mask_points (`int`, default 16): deformable sampling points per head inside each query's box.
    mask_ffn_dim (`int`, default 1024): feed-forward width of the mask decoder layers.
    pixel_decoder_groups (`int`, default 8): group-norm groups of the stride-4 pixel decoder.
    inverse_sigmoid_eps (`float`, default 1e-3): clamp of `inverse_sigmoid`, as in the official code.
    lora_alpha (`float`, default 1.0): LoRA scaling numerator (scaling = alpha / rank), used when the converter
      merges the released LoRA weights.
    name (`str`, default "custom"): a label shown in descriptions ("swin_t", "swin_b", "tiny").
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
    query_decay: float = DEFAULT_QUERY_DECAY
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
        self.backbone = _settings(SwinSettings, self.backbone, "backbone")
        self.text = _settings(TextSettings, self.text, "text")
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` naming the field, the value and what is allowed, for the first problem found.

        Order matters: every field is checked for its type and bounds (`LIMITS`) before the cross-field rules
        (`_RULES`) divide by any of them, and the parameter estimate comes last, so nothing here can raise
        anything but `ConfigError` and nothing is built."""
        _check_fields(self)
        for ok, message in _RULES:
            if not ok(self):
                raise ConfigError(message(self))
        parameters = self.estimate_parameters()
        if parameters > MAX_PARAMETERS:
            raise ConfigError(
                f"this configuration describes a model of about {parameters / 1e6:,.0f} M parameters, above the "
                f"bound of {MAX_PARAMETERS / 1e6:,.0f} M (about 4x the released Swin-B model's "
                f"{SWIN_B_PARAMETERS / 1e6:.0f} M); lower its sizes or check that this is a ReferDINO config")

    def estimate_parameters(self) -> int:
        """The number of parameters `ReferDinoModel(self)` will have, from the sizes alone (a test checks it
        against built models), so that an oversized config is refused before any module is built."""
        return _estimate_parameters(self)

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
        """The config `to_dict` wrote: every field present, no other, nested settings included."""
        data = _exact_keys(cls, data, "ReferDinoConfig")
        data["backbone"] = SwinSettings(**_exact_keys(SwinSettings, data["backbone"], "backbone"))
        data["text"] = TextSettings(**_exact_keys(TextSettings, data["text"], "text"))
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ReferDinoConfig":
        """Read a `config.json`: a regular file of at most `MAX_CONFIG_BYTES` (a FIFO or device is refused
        without being opened for reading, so it cannot block), holding JSON that `from_dict` accepts."""
        raw = read_small_file(path, MAX_CONFIG_BYTES, ConfigError, what="config file")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as err:  # bad UTF-8, bad JSON, absurd nesting
            raise ConfigError(f"{path} is not a JSON config ({type(err).__name__}: {str(err)[:200]})") from err
        return cls.from_dict(data)

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
        args = _mapping(args, "the official argument dictionary")
        presets = {"swin_T_224_1k": cls.swin_t, "swin_B_384_22k": cls.swin_b}
        name = args.get("backbone", "swin_T_224_1k")
        if not isinstance(name, str) or name not in presets:
            raise ConfigError(f"unsupported official backbone {name!r}; expected one of {sorted(presets)}")
        base = presets[name]()
        backbone = base.backbone
        if swin:
            swin = _mapping(swin, "the Swin settings")
            backbone = SwinSettings(
                embed_dim=_key(swin, "embed_dim", "Swin"), depths=_key(swin, "depths", "Swin"),
                num_heads=_key(swin, "num_heads", "Swin"), window_size=_key(swin, "window_size", "Swin"),
                patch_size=swin.get("patch_size", 4), mlp_ratio=swin.get("mlp_ratio", 4.0),
                layer_norm_eps=swin.get("layer_norm_eps", 1e-5),
            )
        text = base.text
        if bert:
            bert = _mapping(bert, "the BERT settings")
            text = TextSettings(
                vocab_size=_key(bert, "vocab_size", "BERT"), hidden_size=_key(bert, "hidden_size", "BERT"),
                num_layers=_key(bert, "num_hidden_layers", "BERT"), num_heads=_key(bert, "num_attention_heads", "BERT"),
                intermediate_size=_key(bert, "intermediate_size", "BERT"),
                max_position_embeddings=_key(bert, "max_position_embeddings", "BERT"),
                type_vocab_size=bert.get("type_vocab_size", 2), layer_norm_eps=bert.get("layer_norm_eps", 1e-12),
                hidden_act=bert.get("hidden_act", "gelu"),
            )
        seg = _mapping(args.get("SegHead", {}), "SegHead")
        if args.get("pe_temperatureH", 20) != args.get("pe_temperatureW", 20):
            raise ConfigError("pe_temperatureH and pe_temperatureW differ; only equal temperatures are supported")
        if args.get("two_stage_type", "standard") != "standard" or not args.get("embed_init_tgt", True):
            raise ConfigError("only two_stage_type 'standard' with embed_init_tgt true is supported "
                              "(all ReferDINO configs)")
        return cls(
            backbone=backbone, text=text,
            d_model=args.get("hidden_dim", 256), num_heads=args.get("nheads", 8),
            encoder_layers=args.get("enc_layers", 6), decoder_layers=args.get("dec_layers", 6),
            ffn_dim=args.get("dim_feedforward", 2048), encoder_points=args.get("enc_n_points", 4),
            decoder_points=args.get("dec_n_points", 4), num_feature_levels=args.get("num_feature_levels", 4),
            num_queries=args.get("num_queries", 900), max_text_len=args.get("max_text_len", 256),
            position_temperature=args.get("pe_temperatureH", 20),
            query_decay=args.get("query_decay", DEFAULT_QUERY_DECAY), tracking_alpha=args.get("tracking_alpha", 0.1),
            temporal_layers=args.get("temporal_layer", 3), temporal_heads=args.get("nheads", 8),
            mask_layers=seg.get("n_layers", 3), mask_heads=seg.get("n_heads", 8), mask_points=seg.get("n_points", 16),
            name=f"official:{name}",
        )


# -- validation ---------------------------------------------------------------------------------------------------
# The check each field gets, by its annotation (a string: this module uses postponed annotations). A field of
# a new type has no entry on purpose: validation then fails for every config until its check is written.
_KINDS = {"int": "int", "float": "float", "str": "str", "list[int]": "int list", "SwinSettings": "settings",
          "TextSettings": "settings"}


def _check_fields(config: ReferDinoConfig) -> None:
    """Type and bounds of every field of the config and of its nested settings (the table `LIMITS`)."""
    for value, kind, path in ((config.backbone, SwinSettings, "backbone"), (config.text, TextSettings, "text")):
        if not isinstance(value, kind):
            raise ConfigError(f"{path} must be a {kind.__name__}, got {type(value).__name__}")
    for owner, prefix in ((config.backbone, "backbone."), (config.text, "text."), (config, "")):
        for f in dataclasses.fields(owner):
            path, value, kind = prefix + f.name, getattr(owner, f.name), _KINDS[f.type]
            if kind == "int":
                _check_number(path, value, integer=True)
            elif kind == "float":
                _check_number(path, value, integer=False)
            elif kind == "int list":
                _check_stages(path, value)
            elif kind == "str":
                _check_text(path, value)


def _check_number(path: str, value, integer: bool, limit: str | None = None) -> None:
    """`value` is an int (not a bool) or a finite number, within `LIMITS[limit or path]`."""
    bound, shown = LIMITS[limit or path], _shown(value)
    expected = f"expected {'an int' if integer else 'a number'} in {bound}"
    # bool is an int subclass, and True would pass as 1: refuse it by name.
    allowed = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise ConfigError(f"{path} = {shown} has type {type(value).__name__}; {expected}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path} = {shown} is not a finite number; {expected}")
    if value > bound.high:
        raise ConfigError(f"{path} = {shown} is above its bound {bound.high} (about 4-8x the released models' "
                          "value): a model this large would take too long or too much memory to build; "
                          "lower it or check that this is a ReferDINO config")
    if value not in bound:
        raise ConfigError(f"{path} = {shown} is out of range; {expected}")


def _shown(value, limit: int = 40) -> str:
    """repr(value), cut to `limit` characters (a field may hold a 400-digit int or a long list)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_stages(path: str, value) -> None:
    """Swin's per-stage lists: exactly 4 ints (the backbone returns 4 stages), each within the bound."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ConfigError(f"{path} = {_shown(value)} must be a list of 4 ints, one per Swin stage")
    for index, item in enumerate(value):
        _check_number(f"{path}[{index}]", item, integer=True, limit=path)


def _check_text(path: str, value) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"{path} = {_shown(value)} has type {type(value).__name__}; expected a string")
    if len(value) > MAX_NAME_LENGTH:
        raise ConfigError(f"{path} is {len(value)} characters long; at most {MAX_NAME_LENGTH} are allowed")
    if path == "text.hidden_act":
        from transformers.activations import ACT2FN

        if value not in ACT2FN:
            raise ConfigError(f"text.hidden_act = {_shown(value)} is not an activation transformers knows "
                              f"(e.g. 'gelu', the released value)")


def _stage_heads_divide(config: ReferDinoConfig) -> bool:
    swin = config.backbone
    return all(channels % heads == 0 for channels, heads in zip(swin.stage_channels, swin.num_heads))


# Cross-field rules: (holds, message). Each is what a module builder asserts or divides by; they run in order
# once every field has passed `LIMITS`, so the divisors are >= 1 and each rule may rely on the earlier ones.
_RULES = [
    (lambda c: c.d_model == 256,
     lambda c: f"d_model must be 256 (the official sine embeddings hard-code it), got {c.d_model}"),
    (lambda c: c.num_feature_levels == 4,
     lambda c: f"num_feature_levels must be 4 (3 Swin stages + 1 extra), got {c.num_feature_levels}"),
    (lambda c: c.d_model % c.num_heads == 0,
     lambda c: f"d_model {c.d_model} must be divisible by num_heads {c.num_heads} (encoder and decoder attention)"),
    (lambda c: c.num_heads >= 2,
     lambda c: f"num_heads must be >= 2 (the text enhancer and the fusion use num_heads // 2), got {c.num_heads}"),
    (lambda c: c.d_model % (c.num_heads // 2) == 0,
     lambda c: f"d_model {c.d_model} must be divisible by num_heads // 2 = {c.num_heads // 2} (text enhancer)"),
    (lambda c: c.ffn_dim >= 2 and (c.ffn_dim // 2) % (c.num_heads // 2) == 0,
     lambda c: f"ffn_dim // 2 = {c.ffn_dim // 2} must be a positive multiple of num_heads // 2 = "
               f"{c.num_heads // 2} (the fusion layer's width and heads)"),
    (lambda c: c.d_model % c.input_proj_groups == 0,
     lambda c: f"d_model {c.d_model} must be divisible by input_proj_groups {c.input_proj_groups} (GroupNorm)"),
    (lambda c: c.d_model % 16 == 0 and (c.d_model // 16) % c.pixel_decoder_groups == 0,
     lambda c: f"pixel_decoder_groups {c.pixel_decoder_groups} must divide d_model // 16 = {c.d_model // 16} "
               "(the pixel decoder's narrowest GroupNorm)"),
    (lambda c: c.d_model % c.temporal_heads == 0,
     lambda c: f"d_model {c.d_model} must be divisible by temporal_heads {c.temporal_heads}"),
    (lambda c: c.d_model % c.mask_heads == 0,
     lambda c: f"d_model {c.d_model} must be divisible by mask_heads {c.mask_heads}"),
    (lambda c: c.text.hidden_size % c.text.num_heads == 0,
     lambda c: f"text.hidden_size {c.text.hidden_size} must be divisible by text.num_heads {c.text.num_heads}"),
    (lambda c: c.max_text_len <= c.text.max_position_embeddings,
     lambda c: f"max_text_len {c.max_text_len} must be <= text.max_position_embeddings "
               f"{c.text.max_position_embeddings} (BERT has no position beyond)"),
    (_stage_heads_divide,
     lambda c: f"each Swin stage's channels {c.backbone.stage_channels} (backbone.embed_dim * 2**stage) must be "
               f"divisible by its backbone.num_heads {list(c.backbone.num_heads)}"),
]


def _settings(kind: type, value, path: str):
    """`value` as a `kind` (SwinSettings or TextSettings): kept, or built from a dict with known keys only."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(kind)}, key=str)
        if unknown:
            raise ConfigError(f"unknown {path} fields {unknown}; known fields are "
                              f"{[f.name for f in dataclasses.fields(kind)]}")
        return kind(**value)
    if not isinstance(value, kind):
        raise ConfigError(f"{path} must be a {kind.__name__} or a dict of its fields, got {type(value).__name__}")
    return value


def _exact_keys(kind: type, data, path: str) -> dict:
    """A copy of the dict `data`, which must hold every field of the dataclass `kind` and no other."""
    data = _mapping(data, path)
    known = [f.name for f in dataclasses.fields(kind)]
    unknown = sorted(set(data) - set(known), key=str)
    missing = [name for name in known if name not in data]
    if unknown or missing:
        raise ConfigError(f"{path} does not match this version's fields: unknown {unknown}, missing {missing}")
    return dict(data)


def _mapping(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object (dict), got {type(value).__name__}")
    return value


def _key(mapping: dict, key: str, what: str):
    if key not in mapping:
        raise ConfigError(f"the {what} settings lack {key!r}")
    return mapping[key]


# -- size estimate ---------------------------------------------------------------------------------------------------
def _linear(inputs: int, outputs: int, bias: bool = True) -> int:
    return inputs * outputs + (outputs if bias else 0)


def _deformable(d: int, heads: int, levels: int, points: int) -> int:
    """Sampling offsets, attention weights, value and output projections."""
    return (_linear(d, heads * levels * points * 2) + _linear(d, heads * levels * points)
            + 2 * _linear(d, d))


def _estimate_parameters(c: ReferDinoConfig) -> int:
    """Sum of the weights of every module `ReferDinoModel(c)` builds (norms, biases and buffers included
    where they matter; small terms are rounded up), from the sizes alone."""
    d, ffn, swin, text = c.d_model, c.ffn_dim, c.backbone, c.text
    norm = 2 * d
    channels = swin.stage_channels
    backbone = _linear(3 * swin.patch_size**2, swin.embed_dim) + 2 * swin.embed_dim
    for stage, (width, depth, heads) in enumerate(zip(channels, swin.depths, swin.num_heads)):
        hidden = int(width * swin.mlp_ratio)
        block = (4 * width + _linear(width, 3 * width) + _linear(width, width) + _linear(width, hidden)
                 + _linear(hidden, width) + (2 * swin.window_size - 1) ** 2 * heads)
        backbone += depth * block + 2 * width
        if stage < len(channels) - 1:
            backbone += 8 * width + _linear(4 * width, 2 * width, bias=False)  # patch merging
    backbone += sum(_linear(width, d) + norm for width in channels[1:]) + _linear(9 * channels[-1], d) + norm
    h = text.hidden_size
    bert = ((text.vocab_size + text.max_position_embeddings + text.type_vocab_size + 2) * h
            + text.num_layers * (4 * _linear(h, h) + _linear(h, text.intermediate_size)
                                 + _linear(text.intermediate_size, h) + 4 * h)
            + _linear(h, d))
    fusion = 4 * _linear(d, ffn // 2) + 2 * _linear(ffn // 2, d) + 3 * norm
    enhancer = 4 * _linear(d, d) + _linear(d, ffn // 2) + _linear(ffn // 2, d) + 2 * norm
    deformable_layer = (_deformable(d, c.num_heads, c.num_feature_levels, c.encoder_points)
                        + _linear(d, ffn) + _linear(ffn, d) + 2 * norm)
    encoder = c.num_feature_levels * d + c.encoder_layers * (fusion + enhancer + deformable_layer)
    selection = 3 * _linear(d, d) + _linear(d, 4) + norm + c.num_queries * d

    def decoder_layer(heads: int, levels: int, points: int, width: int) -> int:
        return (8 * _linear(d, d) + _deformable(d, heads, levels, points) + _linear(d, width) + _linear(width, d)
                + 4 * norm)

    decoder = (c.decoder_layers * decoder_layer(c.num_heads, c.num_feature_levels, c.decoder_points, ffn)
               + norm + _linear(2 * d, d) + 3 * _linear(d, d) + _linear(d, 4))
    temporal = c.temporal_layers * (12 * _linear(d, d) + _linear(d, c.temporal_ffn_dim)
                                    + _linear(c.temporal_ffn_dim, d) + 5 * norm)
    pixel = sum(_linear(9 * a, b) + 2 * b for a, b in ((d, d), (d, d // 2), (d // 2, d // 4), (d // 4, d // 8),
                                                           (d // 8, d // 16)))
    pixel += _linear(d, d // 2) + _linear(d, d // 4) + _linear(swin.embed_dim, d // 8) + _linear(9 * (d // 16), d)
    mask = c.mask_layers * decoder_layer(c.mask_heads, 1, c.mask_points, c.mask_ffn_dim)
    return backbone + bert + encoder + selection + decoder + temporal + pixel + mask
