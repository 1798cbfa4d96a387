"""Official ReferDINO checkpoint (`.pth`, LoRA unmerged) -> our state dict.

Every official key is accounted for: it is renamed to one of our parameters, merged into one (LoRA
`lora_A`/`lora_B`), split into several (fused q/k/v projections), or on `IGNORED` with its reason. Anything
else, and any parameter of ours left unfilled, is a `CheckpointMismatchError` naming the keys (strict, the
default); with `strict=False` such keys are left out and listed in the report instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..errors import CheckpointMismatchError

SHOWN_KEYS = 5  # keys named in a message, before "and N more"
# The one documented override, named in every strict refusal. (The CLI and app offer it under their own flag.)
STRICT_HINT = ("To load only the keys that fit instead (the rest of the model keeps its initial random values, "
               "model.load_report lists both and results are marked partial), pass strict=False (command line and app: "
               "--non-strict)")

# Official keys that carry nothing our model needs, with the reason.
IGNORED = [
    (r"^backbone\.0\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index$",
     "buffer: recomputed from the window size"),
    (r"^backbone\.0\.layers\.\d+\.blocks\.\d+\.attn_mask$", "buffer: recomputed from the input size"),
    (r"^bert\.pooler\.", "BERT's pooler is never used by ReferDINO"),
    (r"^bert\.embeddings\.position_ids$", "buffer: BERT gets explicit sub-sentence position ids"),
]

# The official model registers some modules under several names; the checkpoint holds every copy.
# (alias pattern, canonical replacement): the alias must equal the canonical key and is then dropped.
ALIASES = [
    (r"^bbox_embed\.\d+\.(.*)$", r"transformer.decoder.bbox_embed.0.\1"),
    (r"^transformer\.decoder\.bbox_embed\.([1-9]\d*)\.(.*)$", r"transformer.decoder.bbox_embed.0.\2"),
    (r"^ref_point_head\.(.*)$", r"transformer.decoder.ref_point_head.\1"),
]

_DECODER_LAYER = [  # official DeformableTransformerDecoderLayer -> transformers GroundingDinoDecoderLayer
    (r"cross_attn\.", "encoder_attn."), (r"norm1\.", "encoder_attn_layer_norm."),
    (r"ca_text\.out_proj\.", "encoder_attn_text.out_proj."), (r"catext_norm\.", "encoder_attn_text_layer_norm."),
    (r"norm2\.", "self_attn_layer_norm."), (r"linear1\.", "fc1."), (r"linear2\.", "fc2."),
    (r"norm3\.", "final_layer_norm."),
]
_SWIN_BLOCK = [
    (r"norm1\.", "layernorm_before."), (r"norm2\.", "layernorm_after."),
    (r"attn\.relative_position_bias_table$", "attention.relative_position_bias.relative_position_bias_table"),
    (r"attn\.proj\.", "attention.o_proj."), (r"mlp\.", "mlp."),
]
# (official prefix pattern, our prefix, renames applied to the rest of the key)
_PREFIXES = [
    (r"backbone\.0\.patch_embed\.proj\.", "backbone.swin.swin.embeddings.patch_embeddings.projection.", []),
    (r"backbone\.0\.patch_embed\.norm\.", "backbone.swin.swin.embeddings.norm.", []),
    (r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.", r"backbone.swin.swin.encoder.layers.\1.blocks.\2.", _SWIN_BLOCK),
    (r"backbone\.0\.layers\.(\d+)\.downsample\.", r"backbone.swin.swin.encoder.layers.\1.downsample.", []),
    (r"backbone\.0\.norm(\d)\.", None, []),  # norm{i} -> stage{i+1}, see _rename
    (r"input_proj\.", "backbone.input_proj.", []),
    (r"bert\.", "text_encoder.bert.", []),
    (r"feat_map\.", "text_encoder.feat_map.", []),
    (r"transformer\.level_embed$", "encoder.level_embed", []),
    (r"transformer\.encoder\.layers\.(\d+)\.", r"encoder.layers.\1.deformable_layer.",
     [(r"norm1\.", "self_attn_layer_norm."), (r"linear1\.", "fc1."), (r"linear2\.", "fc2."),
      (r"norm2\.", "final_layer_norm.")]),
    (r"transformer\.encoder\.text_layers\.(\d+)\.", r"encoder.layers.\1.text_enhancer_layer.",
     [(r"linear1\.", "fc1."), (r"linear2\.", "fc2."), (r"norm1\.", "layer_norm_before."),
      (r"norm2\.", "layer_norm_after.")]),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.", r"encoder.layers.\1.fusion_layer.",
     [(r"gamma_v$", "vision_param"), (r"gamma_l$", "text_param"), (r"layer_norm_v\.", "layer_norm_vision."),
      (r"layer_norm_l\.", "layer_norm_text."), (r"attn\.v_proj\.", "attn.vision_proj."),
      (r"attn\.l_proj\.", "attn.text_proj."), (r"attn\.values_v_proj\.", "attn.values_vision_proj."),
      (r"attn\.values_l_proj\.", "attn.values_text_proj."), (r"attn\.out_v_proj\.", "attn.out_vision_proj."),
      (r"attn\.out_l_proj\.", "attn.out_text_proj.")]),
    (r"transformer\.tgt_embed\.", "query_selection.tgt_embed.", []),
    (r"transformer\.enc_output\.", "query_selection.enc_output.", []),
    (r"transformer\.enc_output_norm\.", "query_selection.enc_output_norm.", []),
    (r"transformer\.enc_out_bbox_embed\.", "query_selection.enc_out_bbox_embed.", []),
    (r"transformer\.decoder\.layers\.(\d+)\.", r"decoder.layers.\1.", _DECODER_LAYER),
    (r"transformer\.decoder\.norm\.", "decoder.norm.", []),
    (r"transformer\.decoder\.ref_point_head\.", "decoder.ref_point_head.", []),
    (r"transformer\.decoder\.bbox_embed\.0\.", "decoder.bbox_embed.", []),
    (r"pixel_decoder\.", "pixel_decoder.", []),
    (r"mask_decoder\.(\d+)\.", r"mask_decoder.layers.\1.", _DECODER_LAYER),
    (r"temporal_decoder\.\d+\.", "temporal_decoder.", []),  # plain torch.nn: the same names
]
# Fused projections split into three along dim 0: (official suffix, our names for q, k, v).
_FUSED = [
    (r"attn\.qkv\.(weight|bias)$", ("attention.q_proj", "attention.k_proj", "attention.v_proj")),
    (r"ca_text\.in_proj_(weight|bias)$", ("encoder_attn_text.query", "encoder_attn_text.key",
                                          "encoder_attn_text.value")),
    (r"self_attn\.in_proj_(weight|bias)$", ("self_attn.query", "self_attn.key", "self_attn.value")),
]


@dataclass
class ConversionReport:
    """What the converter did with every official key."""

    loaded: dict[str, list[str]] = field(default_factory=dict)  # official key -> our keys
    merged_lora: list[str] = field(default_factory=list)  # official weight keys that had LoRA merged in
    aliases: dict[str, str] = field(default_factory=dict)  # dropped duplicate -> the key it duplicates
    ignored: dict[str, str] = field(default_factory=dict)  # official key -> reason (nothing we need)
    # strict=False only: what could not be used.
    unusable: dict[str, str] = field(default_factory=dict)  # official key -> why it was not loaded
    left_initial: list[str] = field(default_factory=list)  # our keys that no checkpoint key filled

    def not_loaded(self) -> list[str]:
        """Official keys that carried weights we did not load (empty after a strict conversion)."""
        return sorted(self.unusable)


@dataclass
class StateFit:
    """How a state dict (in our key names) fits a model's: what can be loaded and what cannot."""

    matching: dict[str, torch.Tensor]  # in both, same shape
    unexpected: list[str]  # not in the model
    missing: list[str]  # in the model, not in the state dict
    mismatched: list[str]  # in both, shapes differ
    shapes: dict[str, str]  # mismatched key -> "checkpoint (..) vs model (..)"

    @property
    def problems(self) -> bool:
        return bool(self.unexpected or self.missing or self.mismatched)

    def describe(self, unexpected_label: str = "keys") -> str:
        """The problems, each with its count and first keys; '' if there are none."""
        parts = []
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} {unexpected_label} are not model parameters: "
                         f"{first_keys(self.unexpected)}")
        if self.missing:
            parts.append(f"{len(self.missing)} model parameters are not in the checkpoint: {first_keys(self.missing)}")
        if self.mismatched:
            shown = [f"{k}: {self.shapes[k]}" for k in self.mismatched]
            parts.append(f"{len(self.mismatched)} shapes differ (is the config the right variant?): "
                         f"{first_keys(shown)}")
        return "; ".join(parts)


def first_keys(keys: list[str]) -> str:
    """'a, b, c, d, e and 7 more': the first few keys, and how many are not shown."""
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def fit_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> StateFit:
    """Compare `state` with `expected` (a model's state dict) by key and shape; nothing is copied."""
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    common = sorted(set(state) & set(expected))
    shapes = {k: f"checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in common if state[k].shape != expected[k].shape}
    return StateFit({k: state[k] for k in common if k not in shapes}, unexpected, missing, sorted(shapes), shapes)


def _temporal_aliases(keys) -> dict[str, str]:
    """The official model stores one temporal decoder under `temporal_decoder.0..N-1`; keep the last index."""
    indices = {int(m.group(1)) for k in keys if (m := re.match(r"^temporal_decoder\.(\d+)\.", k))}
    if not indices:
        return {}
    last = max(indices)
    return {k: re.sub(r"^temporal_decoder\.\d+\.", f"temporal_decoder.{last}.", k) for k in keys
            if (m := re.match(r"^temporal_decoder\.(\d+)\.", k)) and int(m.group(1)) != last}


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal tensors; meta tensors (a key manifest without weights) can only be compared by shape."""
    if a.shape != b.shape:
        return False
    return a.is_meta or b.is_meta or torch.equal(a, b)


def _merge_lora(state: dict[str, torch.Tensor], lora_alpha: float, report: ConversionReport, strict: bool) -> None:
    """W_eff = W + (lora_B @ lora_A) * lora_alpha / rank, in place; the lora_* keys are consumed.

    Shapes are checked first: W (out, in), lora_A (rank, in), lora_B (out, rank), rank >= 1, so the product is
    never larger than W (a file cannot make it allocate more than its own size) and the scaling never divides
    by zero. An unusable pair is an error, or with `strict=False` left out (W loads unmerged) and reported."""
    for key_a in [k for k in state if k.endswith(".lora_A")]:
        base = key_a[: -len(".lora_A")]
        key_b, key_w = base + ".lora_B", base + ".weight"
        problem = _lora_problem(state, key_a, key_b, key_w)
        if problem:
            if strict:
                raise CheckpointMismatchError(f"{problem}. {STRICT_HINT}")
            for key in (key_a, key_b):
                if key in state:
                    report.unusable[key] = problem
                    del state[key]
            continue
        lora_a, lora_b = state.pop(key_a), state.pop(key_b)
        weight = state[key_w]
        scaling = lora_alpha / lora_a.shape[0]
        state[key_w] = (weight.float() + (lora_b.float() @ lora_a.float()) * scaling).to(weight.dtype)
        report.merged_lora.append(key_w)
    stray = sorted(k for k in state if k.endswith(".lora_B"))
    if stray and strict:
        raise CheckpointMismatchError(f"{len(stray)} LoRA keys without their lora_A: {first_keys(stray)}. "
                                      f"{STRICT_HINT}")
    for key in stray:
        report.unusable[key] = "lora_B without its lora_A"
        del state[key]


def _lora_problem(state: dict, key_a: str, key_b: str, key_w: str) -> str | None:
    if key_b not in state or key_w not in state:
        return f"LoRA key {key_a} has no matching {key_b} or {key_w}"
    a, b, w = state[key_a], state[key_b], state[key_w]
    if not (w.dim() == a.dim() == b.dim() == 2 and a.shape[0] >= 1 and a.shape[0] == b.shape[1]
            and a.shape[1] == w.shape[1] and b.shape[0] == w.shape[0]):
        return (f"LoRA keys {key_a} {tuple(a.shape)} and {key_b} {tuple(b.shape)} do not fit {key_w} "
                f"{tuple(w.shape)} (expected (rank, in), (out, rank) and (out, in) with rank >= 1)")
    return None


def _rename(key: str) -> str | None:
    for pattern, target, inner in _PREFIXES:
        match = re.match(pattern, key)
        if not match:
            continue
        if target is None:  # backbone.0.norm{i}: the stage output norms, norm0 being ReferDINO's stage-1 norm
            return f"backbone.swin.hidden_states_norms.stage{int(match.group(1)) + 1}." + key[match.end():]
        rest = key[match.end():]
        for inner_pattern, inner_target in inner:
            if re.match(inner_pattern, rest):
                rest = re.sub(inner_pattern, inner_target, rest, count=1)
                break
        return match.expand(target) + rest
    return None


def convert_official_state_dict(official: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                                lora_alpha: float = 1.0, strict: bool = True
                                ) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Convert an official `model_state_dict` to our keys and check it against `expected` (our state dict).

    strict: raise `CheckpointMismatchError` listing unexplained keys, unfilled parameters and shape mismatches.
    With `strict=False`, return only what fits (same names and shapes); the report's `unusable` lists the
    official keys left out and `left_initial` our keys nothing filled."""
    report = ConversionReport()
    state = {k.removeprefix("module."): v for k, v in official.items()}
    for key in list(state):
        for pattern, reason in IGNORED:
            if re.search(pattern, key):
                report.ignored[key] = reason
                del state[key]
                break
    _drop_aliases(state, report, strict)
    _merge_lora(state, lora_alpha, report, strict)

    converted: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}  # our key -> the official key it came from
    unexplained = []
    for key, value in state.items():
        targets = _split_fused(key, value, expected) or ([(name, value)] if (name := _rename(key)) else None)
        if not targets:
            unexplained.append(key)
            continue
        for name, tensor in targets:
            converted[name] = tensor
            sources[name] = key
        report.loaded[key] = [name for name, _ in targets]
    fit = fit_state_dict(converted, expected)
    if strict:
        _check(fit, sorted(unexplained))
        return converted, report
    for key in unexplained:
        report.unusable[key] = "no place in the model"
    for name in fit.unexpected + fit.mismatched:
        report.unusable[sources[name]] = fit.shapes.get(name, f"converts to {name}, not a model parameter")
        report.loaded.pop(sources[name], None)
    report.left_initial = sorted(fit.missing + fit.mismatched)
    return fit.matching, report


def alias_keys(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """The keys of `state` that are copies of a shared module, each with the canonical key it duplicates."""
    aliases = _temporal_aliases(state)
    for key in state:
        for pattern, canonical in ALIASES:
            if re.match(pattern, key):
                aliases[key] = re.sub(pattern, canonical, key)
    return aliases


def _drop_aliases(state: dict[str, torch.Tensor], report: ConversionReport, strict: bool) -> None:
    """Drop the duplicate copies of shared modules after checking that they equal the canonical key."""
    for alias, canonical in alias_keys(state).items():
        problem = None
        if canonical not in state:
            problem = f"checkpoint key {alias} duplicates {canonical}, which is missing"
        elif not _same_tensor(state[alias], state[canonical]):
            problem = (f"checkpoint keys {alias} and {canonical} should hold the same shared module but differ; "
                       "the file was not saved by the official ReferDINO code")
        if problem and strict:
            raise CheckpointMismatchError(f"{problem}. {STRICT_HINT}")
        if problem:
            report.unusable[alias] = problem
        else:
            report.aliases[alias] = canonical
        del state[alias]


def _split_fused(key: str, value: torch.Tensor, expected: dict) -> list[tuple[str, torch.Tensor]] | None:
    """Split a fused q/k/v projection when our module has separate ones (nn.MultiheadAttention keeps it)."""
    for suffix, names in _FUSED:
        match = re.search(suffix, key)
        if match:
            prefix = _rename(key[: match.start()] + "__fused__")
            if prefix is None:
                return None
            prefix = prefix[: -len("__fused__")]
            parts = [(f"{prefix}{name}.{match.group(1)}", part) for name, part in zip(names, value.chunk(3, dim=0))]
            return parts if all(name in expected for name, _ in parts) else None
    return None


def _check(fit: StateFit, unexplained: list[str]) -> None:
    """Strict: refuse any key the converter cannot place and any difference from the model, naming the keys."""
    problems = []
    if unexplained:
        problems.append(f"{len(unexplained)} checkpoint keys have no place in the model: {first_keys(unexplained)}")
    if fit.problems:
        problems.append(fit.describe(unexpected_label="converted keys"))
    if problems:
        raise CheckpointMismatchError("the checkpoint does not fit this ReferDINO model: " + "; ".join(problems)
                                      + f". {STRICT_HINT}")
