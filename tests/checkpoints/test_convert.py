import json

import pytest
import torch

from referdino_demo.checkpoints.convert import convert_official_state_dict
from referdino_demo.checkpoints.loading import config_from_official_state_dict, load_official, tiny_random_model
from referdino_demo.errors import CheckpointMismatchError
from referdino_demo.model import ReferDinoModel


from conftest import SHARED, require_reference

MANIFESTS = sorted((SHARED / "parity" / "manifests").glob("*.json"))


def test_the_manifests_are_there():
    folder = require_reference(SHARED / "parity" / "manifests")
    assert len(MANIFESTS) >= 3, f"expected the official key manifests in {folder}"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.stem for m in MANIFESTS])
def test_full_size_manifests_convert_with_every_key_explained(manifest):
    data = json.loads(manifest.read_text())
    official = {k: torch.empty(v["shape"], dtype=getattr(torch, v["dtype"]), device="meta")
                for k, v in data["keys"].items()}
    config = config_from_official_state_dict(official, manifest.stem)
    assert config.temporal_layers == data["groundingdino_args"]["temporal_layer"]
    with torch.device("meta"):
        model = ReferDinoModel(config)
    converted, report = convert_official_state_dict(official, model.state_dict())
    accounted = set(report.loaded) | set(report.aliases) | set(report.ignored)
    accounted |= {k.replace(".weight", suffix) for k in report.merged_lora for suffix in (".lora_A", ".lora_B")}
    assert accounted == set(official)  # every checkpoint key is loaded, merged, an alias, or ignored
    assert set(converted) == set(model.state_dict())  # every parameter is filled, shapes checked inside


def test_lora_is_merged(official_state, fixture_model):
    base = "transformer.decoder.layers.0.linear1"
    merged = official_state[base + ".weight"] + official_state[base + ".lora_B"] @ official_state[base + ".lora_A"] / 32
    assert torch.allclose(fixture_model.decoder.layers[0].fc1.weight, merged)


def _mutated(official_state, change):
    state = dict(official_state)
    change(state)
    return state


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"transformer.extra_head.weight": torch.zeros(2)}), "no place in the model"),
    (lambda s: s.pop("pixel_decoder.out_lay.bias"), "not in the checkpoint"),
    (lambda s: s.update({"feat_map.bias": torch.zeros(3)}), "shapes differ"),
    (lambda s: s.update({"bbox_embed.0.layers.0.bias": torch.ones(256)}), "should hold the same shared module"),
    (lambda s: s.pop("transformer.decoder.layers.0.linear1.lora_B"), "LoRA key"),
])
def test_bad_checkpoints_name_the_keys(official_state, fixture_model, change, message):
    with pytest.raises(CheckpointMismatchError, match=message):
        convert_official_state_dict(_mutated(official_state, change), fixture_model.state_dict())


def test_another_models_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"conv.weight": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointMismatchError, match="not a ReferDINO checkpoint|no state dict"):
        load_official(path)


def test_truncated_checkpoint_is_refused(tmp_path, parity_dir):
    path = tmp_path / "cut.pth"
    path.write_bytes((parity_dir / "referdino_tiny_official.pth").read_bytes()[:100_000])
    with pytest.raises(CheckpointMismatchError, match="truncated"):
        load_official(path)


class _Payload:
    def __reduce__(self):
        import os

        return os.system, ("touch " + str(_Payload.marker),)


def test_a_malicious_pickle_does_not_run(tmp_path):
    _Payload.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": _Payload()}, path)
    with pytest.raises(CheckpointMismatchError):
        load_official(path)
    assert not _Payload.marker.exists()


def test_wrong_swin_width_is_explained(official_state):
    with pytest.raises(CheckpointMismatchError, match="matches no released variant"):
        config_from_official_state_dict(official_state)


def test_tiny_random_is_seeded_and_marked_untrained():
    a, b = tiny_random_model(), tiny_random_model()
    assert a.untrained and all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
