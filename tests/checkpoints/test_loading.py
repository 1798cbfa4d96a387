import pytest
import torch

from referdino_demo.hub import split_hub_name
from referdino_demo.checkpoints.loading import load_model, save_model
from referdino_demo.errors import CheckpointNotFoundError


def test_save_and_load_round_trip(tmp_path, tiny_model):
    save_model(tiny_model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config == tiny_model.config and loaded.untrained
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


@pytest.mark.parametrize("name, expected", [
    ("liangtm/referdino", ("liangtm/referdino", "ryt_mevis_swinb.pth")),
    ("liangtm/referdino/ryt_swinb.pth", ("liangtm/referdino", "ryt_swinb.pth")),
    ("a2d_swinb.pth", ("liangtm/referdino", "a2d_swinb.pth")),
    ("not-a-hub-name.bin", None),
])
def test_hub_names(name, expected):
    assert split_hub_name(name) == expected


def test_offline_and_not_cached_says_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(CheckpointNotFoundError) as err:
        load_model("liangtm/referdino", "ryt_swinb.pth")
    message = str(err.value)
    assert "https://huggingface.co/liangtm/referdino/resolve/main/ryt_swinb.pth" in message and "--checkpoint" in message


def test_unknown_source_is_explained():
    with pytest.raises(CheckpointNotFoundError, match="tiny-random"):
        load_model("/no/such/file.pth")


def test_sha256_is_checked_when_known(parity_dir, tmp_path):
    import json

    from referdino_demo.checkpoints.loading import sha256_of
    from referdino_demo.errors import CheckpointMismatchError

    path = parity_dir / "referdino_tiny_official.pth"
    published = json.loads((parity_dir / "config.json").read_text())["checkpoint"]["sha256"]
    assert sha256_of(path) == published  # independent: the fixture records the file's checksum
    copy = tmp_path / "tampered.pth"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointMismatchError, match="sha256"):
        load_model(copy, sha256=published)


@pytest.mark.parametrize("damage", ["config_not_json", "config_wrong_field", "weights_cut"])
def test_damaged_folder_is_a_checkpoint_error_not_a_library_traceback(tmp_path, tiny_model, damage):
    from referdino_demo.errors import CheckpointMismatchError

    folder = tmp_path / "m"
    save_model(tiny_model, folder)
    if damage == "config_not_json":
        (folder / "config.json").write_text("{not json")
    elif damage == "config_wrong_field":
        (folder / "config.json").write_text('{"d_model": "wide"}')
    else:
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointMismatchError, match="could not be loaded .* download or export it again"):
        load_model(folder)
