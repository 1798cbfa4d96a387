"""The converted copy kept beside an official checkpoint (`checkpoints/cache.py`): used on the next load instead of
converting again, with the same weights; made again when the source changes or the copy is damaged; skipped where
the folder cannot be written."""

import json
import logging
import os
import shutil

import pytest
import torch

from referdino_demo.checkpoints import cache, loading
from referdino_demo.checkpoints.loading import load_model
from referdino_demo.model import ReferDinoConfig, ReferDinoModel
from referdino_demo.parity import build_model


@pytest.fixture(scope="module")
def fixture_config(parity_dir):
    meta = json.loads((parity_dir / "config.json").read_text())["model"]
    config = ReferDinoConfig.from_official(meta["GroundingDINO_args"], meta.get("swin"), meta.get("bert"))
    config.lora_alpha = float(meta.get("lora", {}).get("alpha", config.lora_alpha))
    return config


@pytest.fixture(scope="module")
def reference_state(parity_dir):
    """The fixture checkpoint converted the way the parity tool does it (no cache involved)."""
    return build_model(parity_dir)[0].state_dict()


@pytest.fixture
def source(tmp_path, parity_dir):
    path = tmp_path / "official.pth"
    shutil.copyfile(parity_dir / "referdino_tiny_official.pth", path)
    return path


@pytest.fixture
def conversions(monkeypatch):
    """The official .pth files converted while the test runs."""
    calls = []
    original = loading.convert_official_state_dict

    def counted(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(loading, "convert_official_state_dict", counted)
    return calls


def _same_weights(model: ReferDinoModel, reference: dict) -> bool:
    state = model.state_dict()
    return state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in reference)


def test_second_load_uses_the_cache_with_the_same_weights(source, fixture_config, reference_state, conversions):
    first = load_model(source, config=fixture_config)
    assert len(conversions) == 1 and cache.cache_path(source).is_file()
    second = load_model(source, config=fixture_config)
    assert len(conversions) == 1  # nothing converted again
    assert _same_weights(first, reference_state) and _same_weights(second, reference_state)
    assert not second.load_report.partial and not second.untrained and not second.training
    # Every buffer is real, including those state dicts do not hold (Swin's relative position index).
    fresh = dict(ReferDinoModel(fixture_config).named_buffers())
    assert all(torch.equal(b, fresh[n]) for n, b in second.named_buffers() if n not in reference_state)


def test_cached_model_gives_the_same_outputs(source, fixture_config):
    converted = load_model(source, config=fixture_config)
    cached = load_model(source, config=fixture_config)
    pixels = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        a, b = converted.backbone(pixels), cached.backbone(pixels)
    assert all(torch.equal(x, y) for x, y in zip(a.sources, b.sources))


def test_a_changed_source_is_converted_again(source, fixture_config, conversions):
    load_model(source, config=fixture_config)
    stamp = source.stat().st_mtime_ns
    os.utime(source, ns=(stamp + 10**9, stamp + 10**9))  # the file was replaced (a new download)
    load_model(source, config=fixture_config)
    assert len(conversions) == 2
    load_model(source, config=fixture_config)
    assert len(conversions) == 2  # ...and the rebuilt copy is used


def test_another_config_does_not_use_the_copy(source, fixture_config, conversions):
    load_model(source, config=fixture_config)
    other = fixture_config.replace(query_decay=0.7)
    model = load_model(source, config=other)
    assert len(conversions) == 2 and model.config.query_decay == 0.7


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "garbage", "metadata"])
def test_a_damaged_copy_is_ignored_and_rebuilt(source, fixture_config, reference_state, conversions, damage,
                                               caplog):
    load_model(source, config=fixture_config)
    path = cache.cache_path(source)
    data = bytearray(path.read_bytes())
    if damage == "flipped_byte":  # inside the tensor data, after the header: only the checksum can tell
        data[-1000] ^= 0x01
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"\x00" * 64)
    else:  # intact weights under a config that cannot be read
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata()
        save_file(load_file(str(path)), str(path), metadata={**metadata, "config": "{not json"})
        data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="referdino_demo.checkpoints.cache"):
        model = load_model(source, config=fixture_config)
    assert len(conversions) == 2 and _same_weights(model, reference_state)
    assert "ignoring the converted copy" in caplog.text
    load_model(source, config=fixture_config)
    assert len(conversions) == 2  # the rebuilt copy is good


def test_an_unwritable_folder_only_skips_the_cache(source, fixture_config, reference_state, conversions,
                                                   monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache.tempfile, "TemporaryFile", refuse)
    model = load_model(source, config=fixture_config)
    assert _same_weights(model, reference_state) and not cache.cache_path(source).exists()
    assert not list(source.parent.glob(".*part"))  # no temporary file left behind


def test_cache_false_neither_reads_nor_writes(source, fixture_config, conversions):
    loading.load_official(source, fixture_config, cache=False)
    assert not cache.cache_path(source).exists()
