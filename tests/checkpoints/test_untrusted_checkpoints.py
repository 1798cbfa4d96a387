"""Checkpoint files built to hurt: special files instead of regular ones, tensors whose declared size is far
larger than their storage, layer counts and sizes far above the bounds, LoRA pairs whose product would be huge,
pickles that need more than weights. Each is refused by its type or numbers, quickly, naming what is wrong."""

import json
import os
import socket
import threading
import time

import pytest
import torch

from referdino_demo.checkpoints.convert import convert_official_state_dict
from referdino_demo.checkpoints.loading import check_storage, config_from_official_state_dict, load_model, save_model
from referdino_demo.errors import CheckpointMismatchError, CheckpointNotFoundError

SWIN_T_STEM = torch.zeros(96, 3, 4, 4)


def _load_in_thread(*args, timeout: float = 60, unblock=(), **kwargs):
    """load_model(*args) in a thread: its exception, or a test failure (not a hang) if it blocks.

    `unblock`: FIFOs to open for writing if the load blocks, so that the thread ends after the failure."""
    result = {}

    def target():
        try:
            load_model(*args, **kwargs)
            result["error"] = None
        except BaseException as err:  # noqa: BLE001 - handed to the test
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        for fifo in unblock:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the reader sees EOF
            except OSError:
                pass
        pytest.fail(f"loading {args} blocked for {timeout} s")
    return result["error"]


@pytest.fixture(scope="module")
def swin_t_manifest(parity_dir):
    """The released Swin-T checkpoint's keys and shapes, as meta tensors (no memory)."""
    data = json.loads((parity_dir / "manifests" / "coco_swint.json").read_text())
    return {k: torch.empty(v["shape"], dtype=getattr(torch, v["dtype"]), device="meta")
            for k, v in data["keys"].items()}


@pytest.fixture
def saved(tmp_path, tiny_model):
    return save_model(tiny_model, tmp_path / "saved") or tmp_path / "saved"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("where", ["checkpoint.pth", "config.json", "model.safetensors", "weights.safetensors"])
def test_a_fifo_is_refused_without_blocking(tmp_path, saved, where):
    if where == "checkpoint.pth":
        fifo = tmp_path / where
        source = fifo
    elif where == "weights.safetensors":  # a .safetensors path beside a config.json
        fifo = saved / where
        source = fifo
    else:
        fifo = saved / where
        fifo.unlink()
        source = saved
    os.mkfifo(fifo)
    error = _load_in_thread(source, unblock=[fifo])
    assert isinstance(error, CheckpointMismatchError), error
    assert "named pipe (FIFO)" in str(error) and str(fifo) in str(error)


def test_devices_sockets_and_folders_are_refused_by_type(tmp_path, saved):
    if os.path.exists("/dev/zero"):  # reading it would never end
        with pytest.raises(CheckpointMismatchError, match="character device, not a regular file"):
            load_model("/dev/zero")
    sock_path = tmp_path / "s.pth"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(CheckpointMismatchError, match="socket, not a regular file"):
            load_model(sock_path)
    for name in ("config.json", "model.safetensors"):
        (saved / name).rename(saved / (name + ".bak"))
        (saved / name).mkdir()
        with pytest.raises(CheckpointMismatchError, match=f"{name} is a folder, not a regular file"):
            load_model(saved)
        (saved / name).rmdir()
        (saved / (name + ".bak")).rename(saved / name)
    (saved / "config.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match="config.json missing"):
        load_model(saved)


def test_an_oversized_config_json_is_not_read_whole(saved):
    with open(saved / "config.json", "a") as f:
        f.write(" " * (2 << 20))
    with pytest.raises(CheckpointMismatchError, match="larger than 1,048,576 bytes"):
        load_model(saved)


def test_a_zero_stride_tensor_is_refused_before_it_is_used(tmp_path):
    huge = torch.zeros(1).expand(10**7, 256)  # 10 GB declared, 4 bytes stored
    path = tmp_path / "expanded.pth"
    torch.save({"model_state_dict": {"backbone.0.patch_embed.proj.weight": SWIN_T_STEM,
                                     "transformer.decoder.layers.0.linear1.weight": huge}}, path)
    assert path.stat().st_size < 100_000  # what the file costs on disk
    start = time.perf_counter()
    with pytest.raises(CheckpointMismatchError, match=r"transformer\.decoder\.layers\.0\.linear1\.weight .*overlap"):
        load_model(path)
    assert time.perf_counter() - start < 10


def test_storage_check():
    base = torch.arange(24.0)
    for fine in (base.view(4, 6), base.view(4, 6).t(), base[6:].view(3, 6), base.view(2, 3, 4).permute(2, 0, 1),
                 torch.zeros(0, 5), torch.tensor(3.0), base.view(24, 1)):
        check_storage("ok", fine)
    for bad in (torch.zeros(1).expand(8, 3), base.as_strided((4, 6), (1, 1)), base.as_strided((2, 2), (1, 0)),
                base.view(4, 6)[:, ::2]):
        with pytest.raises(CheckpointMismatchError, match="key"):
            check_storage("key", bad)
    short = torch.empty(0)
    short.set_(torch.zeros(10).untyped_storage(), 4, (6,), (1,))
    check_storage("fits", short)  # elements 4..9 of a 10-element storage


@pytest.mark.parametrize("key, shape, field", [
    ("transformer.tgt_embed.weight", (10**7, 256), "num_queries"),
    ("transformer.encoder.layers.0.linear1.weight", (10**7, 256), "ffn_dim"),
    ("transformer.encoder.layers.99999.linear1.weight", (8, 8), "encoder_layers"),
    ("temporal_decoder.0.layer.100000.norm.weight", (256,), "temporal_layers"),
    ("mask_decoder.70.norm1.weight", (256,), "mask_layers"),
])
def test_inferred_sizes_are_bounded_before_building(key, shape, field, swin_t_manifest):
    state = {**swin_t_manifest, key: torch.empty(shape, device="meta")}
    assert config_from_official_state_dict(swin_t_manifest).name == "official"  # the unmodified keys are fine
    start = time.perf_counter()
    with pytest.raises(CheckpointMismatchError, match=rf"{field} = \d+ is above its bound"):
        config_from_official_state_dict(state, "big.pth")
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("missing", ["backbone.0.patch_embed.proj.weight", "transformer.tgt_embed.weight"])
def test_inference_names_a_missing_or_malformed_key(missing):
    state = {"backbone.0.patch_embed.proj.weight": SWIN_T_STEM, "transformer.tgt_embed.weight": torch.zeros(9, 4),
             "transformer.encoder.layers.0.linear1.weight": torch.zeros(8, 4)}
    for value in (None, torch.zeros(3)):
        broken = dict(state)
        broken.pop(missing) if value is None else broken.update({missing: value})
        with pytest.raises(CheckpointMismatchError, match=rf"{missing} is (missing|of shape)"):
            config_from_official_state_dict(broken)


def test_a_lora_pair_that_does_not_fit_its_weight_is_refused_before_the_product():
    base = "transformer.decoder.layers.0.linear1"
    expected = {"decoder.layers.0.fc1.weight": torch.zeros(8, 4)}
    wide = {base + ".weight": torch.zeros(8, 4), base + ".lora_A": torch.zeros(1, 10**5),
            base + ".lora_B": torch.zeros(10**5, 1)}  # the product would be 10**10 elements
    zero_rank = {base + ".weight": torch.zeros(8, 4), base + ".lora_A": torch.zeros(0, 4),
                 base + ".lora_B": torch.zeros(8, 0)}
    for state in (wide, zero_rank):
        with pytest.raises(CheckpointMismatchError, match="do not fit .*rank >= 1"):
            convert_official_state_dict(state, expected)
        converted, report = convert_official_state_dict(state, expected, strict=False)
        assert sorted(report.unusable) == [base + ".lora_A", base + ".lora_B"]
        assert set(converted) == {"decoder.layers.0.fc1.weight"}  # the base weight, unmerged


class _Unsafe:
    def __reduce__(self):
        return os.system, ("true",)


def test_a_pickle_needing_code_is_refused_and_the_objects_named(tmp_path):
    path = tmp_path / "custom.pth"
    torch.save({"model_state_dict": {"transformer.decoder.norm.weight": torch.ones(2)}, "args": _Unsafe()}, path)
    with pytest.raises(CheckpointMismatchError, match=r"refused on purpose") as err:
        load_model(path)
    assert "system" in str(err.value) and "model_state_dict" in str(err.value)
