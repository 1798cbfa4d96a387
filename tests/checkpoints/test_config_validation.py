"""Config validation: every field's type and bounds, the cross-field rules the builders rely on, and the size
estimate, all refused with `ConfigError` (or `CheckpointMismatchError` from a checkpoint) before anything is built."""

import dataclasses
import json
import math
import random
import time

import pytest
import torch

from referdino_demo.checkpoints.loading import load_model
from referdino_demo.errors import CheckpointMismatchError, ConfigError
from referdino_demo.model import ReferDinoConfig, ReferDinoModel
from referdino_demo.model.config import LIMITS, MAX_PARAMETERS, SwinSettings, TextSettings

BASE = ReferDinoConfig.tiny().to_dict()


def _fields(kind, annotation):
    return [f.name for f in dataclasses.fields(kind) if f.type == annotation]


# (path into the config dict, kind): every numeric field, nested ones and list elements included.
NUMERIC = ([(name, "int") for name in _fields(ReferDinoConfig, "int")]
           + [(name, "float") for name in _fields(ReferDinoConfig, "float")]
           + [(f"backbone.{name}", "int") for name in _fields(SwinSettings, "int")]
           + [(f"backbone.{name}", "float") for name in _fields(SwinSettings, "float")]
           + [(f"backbone.{name}[{i}]", "int") for name in _fields(SwinSettings, "list[int]") for i in range(4)]
           + [(f"text.{name}", "int") for name in _fields(TextSettings, "int")]
           + [(f"text.{name}", "float") for name in _fields(TextSettings, "float")])
BAD_FOR_BOTH = [True, False, "8", None, float("nan"), float("inf"), -float("inf"), [8]]
BAD_FOR_INT = BAD_FOR_BOTH + [0, -1, 2.5, 8.0]


def _limit(path: str):
    return LIMITS[path.split("[")[0]]


def _with(path: str, value) -> dict:
    """A copy of BASE with the field at `path` ('a', 'a.b' or 'a.b[i]') set to `value`."""
    data = json.loads(json.dumps(BASE))
    *parents, last = path.replace("[", ".").replace("]", "").split(".")
    target = data
    for part in parents:
        target = target[part]
    target[int(last) if last.isdigit() else last] = value
    return data


def _bad_values(path: str, kind: str) -> list:
    bound = _limit(path)
    step = 1 if kind == "int" else 1e-3
    values = list(BAD_FOR_INT if kind == "int" else BAD_FOR_BOTH)
    values += [bound.high + step, bound.high * 1000 + step, 10**9 if kind == "int" else 1e300, 10**400]
    values.append(bound.low if bound.low_open else bound.low - step)
    return values


def test_every_numeric_field_has_a_bound():
    assert len(NUMERIC) > 40
    assert all(path.split("[")[0] in LIMITS for path, _ in NUMERIC)


@pytest.mark.parametrize("path, kind", NUMERIC, ids=[p for p, _ in NUMERIC])
def test_bad_values_are_refused_fast_naming_the_field(path, kind):
    field_name = path.split("[")[0]
    start = time.perf_counter()
    for value in _bad_values(path, kind):
        with pytest.raises(ConfigError) as err:
            ReferDinoConfig.from_dict(_with(path, value))
        message = str(err.value)
        assert path in message or field_name in message, message
        finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
        if finite and not isinstance(value, bool) and value > _limit(path).high:
            assert str(_limit(path).high) in message and "bound" in message, message
    assert time.perf_counter() - start < 5  # a generous sanity bound: nothing is built


def test_the_upper_bounds_allow_the_released_models_with_headroom():
    for preset in (ReferDinoConfig.swin_t(), ReferDinoConfig.swin_b(), ReferDinoConfig.swin_b(temporal_layers=1)):
        doubled = preset.replace(encoder_layers=12, decoder_layers=12, ffn_dim=4096, num_queries=1800,
                                 temporal_layers=6, mask_layers=6)
        assert doubled.estimate_parameters() < MAX_PARAMETERS


@pytest.mark.parametrize("changes, message", [
    (dict(num_heads=3), "divisible by num_heads"),
    (dict(num_heads=1), "num_heads must be >= 2"),
    (dict(ffn_dim=3), "ffn_dim // 2"),
    (dict(d_model=128), "d_model must be 256"),
    (dict(num_feature_levels=3), "num_feature_levels must be 4"),
    (dict(input_proj_groups=3), "input_proj_groups"),
    (dict(pixel_decoder_groups=3), "pixel_decoder_groups"),
    (dict(temporal_heads=3), "temporal_heads"),
    (dict(mask_heads=5), "mask_heads"),
    (dict(max_text_len=1024), "max_position_embeddings"),
    (dict(text=dict(hidden_size=32, num_layers=2, num_heads=3, intermediate_size=64)), "text.num_heads"),
    (dict(backbone=dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[3, 2, 4, 8])), "backbone.num_heads"),
    (dict(backbone=dict(embed_dim=16, depths=[1, 1, 2], num_heads=[1, 2, 4, 8])), "list of 4 ints"),
    (dict(backbone=dict(embed_dim=16, depths=(1, 1, 2, 1, 1), num_heads=[1, 2, 4, 8])), "list of 4 ints"),
    (dict(backbone=dict(embed_dim=16, depths="1112", num_heads=[1, 2, 4, 8])), "list of 4 ints"),
    (dict(text=dict(hidden_act="no-such-activation")), "hidden_act"),
    (dict(name=["x"]), "name"),
    (dict(name="x" * 1000), "name"),
    (dict(backbone=5), "backbone must be"),
    (dict(text="bert"), "text must be"),
    (dict(backbone=dict(embed_dim=16, unknown=1)), "unknown backbone fields"),
    (dict(backbone=dict(embed_dim=512, depths=[72] * 4, num_heads=[128] * 4)), "M parameters"),
])
def test_inconsistent_configs_name_the_rule(changes, message):
    with pytest.raises(ConfigError, match=message):
        ReferDinoConfig.tiny(**changes)


@pytest.mark.parametrize("data, message", [
    ({**BASE, "extra_field": 1}, "unknown"),
    ({k: v for k, v in BASE.items() if k != "ffn_dim"}, r"missing \['ffn_dim'\]"),
    ({**BASE, "backbone": {k: v for k, v in BASE["backbone"].items() if k != "window_size"}}, "window_size"),
    ({**BASE, "text": {**BASE["text"], "pooler": True}}, "pooler"),
    ({**BASE, "text": "bert-base-uncased"}, "must be a JSON object"),
    ([BASE], "must be a JSON object"),
    ("config", "must be a JSON object"),
])
def test_from_dict_requires_exactly_the_known_fields(data, message):
    with pytest.raises(ConfigError, match=message):
        ReferDinoConfig.from_dict(data)


def test_config_files_are_checked(tmp_path):
    good = tmp_path / "good.json"
    ReferDinoConfig.tiny().save(good)
    assert ReferDinoConfig.load(good) == ReferDinoConfig.tiny()
    cases = {"nan.json": json.dumps(_with("query_decay", "NaN")).replace('"NaN"', "NaN"),
             "deep.json": "[" * 100_000 + "]" * 100_000, "latin1.json": b"\xff\xfe{", "big.json": " " * (2 << 20)}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ConfigError):
            ReferDinoConfig.load(path)
    with pytest.raises(ConfigError, match="folder"):
        ReferDinoConfig.load(tmp_path)


def test_a_bad_saved_config_is_a_checkpoint_error_before_anything_is_built(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")  # never read: the config is refused first
    monkeypatch.setattr(ReferDinoModel, "__init__", lambda *a, **k: pytest.fail("a model was built"))
    for path, value in [("ffn_dim", 10**7), ("encoder_layers", 10**5), ("num_heads", 0), ("backbone.depths[2]", True),
                        ("d_model", 256.5), ("tracking_alpha", float("inf")), ("text.num_heads", 5)]:
        (folder / "config.json").write_text(json.dumps(_with(path, value)))
        start = time.perf_counter()
        field_name = path.split("[")[0]
        with pytest.raises(CheckpointMismatchError, match=rf"could not be loaded \(ConfigError: .*{field_name}"):
            load_model(folder)
        assert time.perf_counter() - start < 2


def test_from_official_refuses_malformed_arguments():
    for args, swin in [([], None), ({"backbone": ["swin"]}, None), ({"SegHead": 3}, None),
                       ({}, {"embed_dim": 96}), ({"nheads": "8"}, None), ({"enc_layers": 6.0}, None)]:
        with pytest.raises(ConfigError):
            ReferDinoConfig.from_official(args, swin)


def _random_valid_config(rng: random.Random) -> ReferDinoConfig:
    """Small configs spanning the edges the rules allow (1 point, 2 heads, odd FFN widths...)."""
    embed = rng.choice([4, 8, 16])
    return ReferDinoConfig(
        backbone=SwinSettings(embed, [rng.randint(1, 2) for _ in range(4)], [rng.choice([1, 2, 4]) for _ in range(4)],
                              rng.randint(1, 8), rng.randint(1, 4), rng.choice([1.0, 2.5, 4.0])),
        text=TextSettings(vocab_size=rng.randint(1, 500), hidden_size=rng.choice([8, 12, 16]),
                          num_layers=rng.randint(1, 2), num_heads=rng.choice([1, 2, 4]),
                          intermediate_size=rng.randint(1, 64),
                          max_position_embeddings=rng.randint(256, 600), type_vocab_size=rng.randint(1, 3),
                          hidden_act=rng.choice(["gelu", "relu"])),
        num_heads=rng.choice([2, 4, 8, 16]), encoder_layers=rng.randint(1, 2), decoder_layers=rng.randint(1, 3),
        ffn_dim=rng.choice([32, 48, 64, 130]), encoder_points=rng.randint(1, 4), decoder_points=rng.randint(1, 4),
        num_queries=rng.randint(1, 50), temporal_layers=rng.randint(1, 2), temporal_heads=rng.choice([1, 2, 8]),
        temporal_ffn_dim=rng.randint(1, 64), mask_layers=rng.randint(1, 2), mask_heads=rng.choice([1, 4, 8]),
        mask_points=rng.randint(1, 4), mask_ffn_dim=rng.randint(1, 64), input_proj_groups=rng.choice([1, 8, 32]),
        pixel_decoder_groups=rng.choice([1, 2, 16]), query_decay=rng.choice([0.1, 0.5, 1.0]),
    )


def test_valid_configs_build_and_the_estimate_is_exact():
    """Whatever passes validation builds (the rules cover what the builders assert), and the parameter
    estimate the size bound uses equals the built model's count."""
    rng = random.Random(0)
    configs = [ReferDinoConfig.tiny(), ReferDinoConfig.swin_t(), ReferDinoConfig.swin_b()]
    configs += [c for c in (_try(_random_valid_config, rng) for _ in range(60)) if c is not None][:12]
    assert len(configs) >= 10
    for config in configs:
        with torch.device("meta"):
            model = ReferDinoModel(config)
        assert config.estimate_parameters() == sum(p.numel() for p in model.parameters()), config


def _try(make, rng):
    try:
        return make(rng)
    except ConfigError:  # the rules refused a random combination: fine, it is not used
        return None
