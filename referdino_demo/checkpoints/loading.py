"""Building a `ReferDinoModel` with weights: official `.pth`, our safetensors folder, or `tiny-random`.

Our own format is a folder with `config.json` (a `ReferDinoConfig`) and `model.safetensors`.
Official `.pth` files are read with `torch.load(weights_only=True)`, so a malicious pickle cannot run code.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import CheckpointMismatchError, CheckpointNotFoundError, ReferDinoError, one_line
from ..model import ReferDinoConfig, ReferDinoModel
from .convert import convert_official_state_dict
from .hub import HUB_REPO, RELEASED, TINY_RANDOM, download_checkpoint, split_hub_name

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def tiny_random_model(seed: int = 0) -> ReferDinoModel:
    """The seeded, untrained tiny model used by tests and UI development (`untrained` is True)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = ReferDinoModel(ReferDinoConfig.tiny())
    finally:
        torch.random.set_rng_state(generator_state)
    # Shrink the norms that feed the grounding logits (as the parity fixture does) so that random
    # scores spread over (0, 1) instead of saturating at 1 and every query looks the same.
    with torch.no_grad():
        norms = [model.encoder.layers[-1].text_enhancer_layer.layer_norm_after,
                 model.mask_decoder.layers[-1].final_layer_norm]
        norms += [block.decoder.norm3 for block in model.temporal_decoder.layer]
        for norm in norms:
            norm.weight.mul_(0.05)
            norm.bias.mul_(0.05)
    model.untrained = True
    return model.eval()


def save_pretrained(model: ReferDinoModel, directory: str | Path) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory / CONFIG_NAME)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "untrained": str(model.untrained)})
    return directory


def sha256_of(path: str | Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected.lower():
        raise CheckpointMismatchError(f"{path} has sha256 {actual}, expected {expected}: the file is corrupt or not "
                                      "the one published; delete it and download it again")


def from_pretrained(source: str | Path = TINY_RANDOM, filename: str | None = None,
                    config: ReferDinoConfig | None = None, sha256: str | None = None) -> ReferDinoModel:
    """Load a model in eval mode on the CPU.

    source: `"tiny-random"`; a Hub repository (`"liangtm/referdino"`, with `filename` or the default
    checkpoint) or a released file name (`"ryt_swinb.pth"`); a local official `.pth`; a folder saved by
    `save_pretrained`. `config` overrides the configuration inferred for an official `.pth`. `sha256`, when
    given (or known for a released file), is checked before the file is read.

    A damaged or foreign file raises `CheckpointMismatchError`, whatever torch, safetensors or json say about it.
    """
    try:
        from safetensors import SafetensorError
    except ImportError:  # older safetensors
        SafetensorError = OSError  # noqa: N806
    try:
        return _from_pretrained(source, filename, config, sha256)
    except ReferDinoError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, OSError, SafetensorError) as err:
        raise CheckpointMismatchError(
            f"checkpoint {source}{'/' + filename if filename else ''} could not be loaded ({type(err).__name__}: "
            f"{one_line(err, 300)}). It is damaged, unreadable or does not fit its configuration: download or export it again"
        ) from err


def _from_pretrained(source, filename, config, sha256) -> ReferDinoModel:
    if str(source) == TINY_RANDOM:
        return tiny_random_model()
    path = Path(source)
    if not path.exists():
        hub = split_hub_name(str(source))
        if hub is None:
            raise CheckpointNotFoundError(
                f"checkpoint {source!s} is neither a local file or folder nor a Hub name; use 'tiny-random', "
                f"a released file ({', '.join(RELEASED)}), 'liangtm/referdino', or a local path")
        repo, default_file = hub
        filename = filename or default_file
        path = download_checkpoint(filename, repo)
        released = RELEASED.get(filename)
        sha256 = sha256 or (released.sha256 if released and repo == HUB_REPO else None)
    if sha256 and path.is_file():
        verify_sha256(path, sha256)
    if path.is_dir():
        return _load_folder(path)
    if path.suffix == ".safetensors" and (path.parent / CONFIG_NAME).is_file():
        return _load_folder(path.parent)
    return load_official(path, config)


def _load_folder(directory: Path) -> ReferDinoModel:
    from safetensors.torch import load_file

    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointNotFoundError(f"{directory} should hold {CONFIG_NAME} and {WEIGHTS_NAME} (save_pretrained's "
                                      "layout)")
    model = ReferDinoModel(ReferDinoConfig.load(config_path))
    state = load_file(str(weights_path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointMismatchError(f"{weights_path} does not fit its {CONFIG_NAME}: missing {missing[:5]}, "
                                      f"unexpected {unexpected[:5]}")
    from safetensors import safe_open

    with safe_open(str(weights_path), "pt") as f:
        model.untrained = (f.metadata() or {}).get("untrained") == "True"
    return model.eval()


def read_official_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The `model_state_dict` of an official checkpoint (or a bare state dict), read without unpickling code."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointMismatchError(
            f"{path} cannot be read as a PyTorch checkpoint ({type(err).__name__}: {str(err)[:200]}). "
            "It may be truncated (download it again) or not a ReferDINO .pth file; files that need arbitrary "
            "code to load are refused on purpose") from err
    state = data.get("model_state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{path} holds no state dict of tensors (expected the official "
                                      "{'model_state_dict': ...} layout)")
    if not any(k.startswith("transformer.decoder.") for k in state):
        raise CheckpointMismatchError(f"{path} is not a ReferDINO checkpoint: it has no transformer.decoder.* keys")
    return state


def load_official(path: str | Path, config: ReferDinoConfig | None = None) -> ReferDinoModel:
    path = Path(path)
    state = read_official_state_dict(path)
    config = config or config_from_official_state_dict(state, path.name)
    model = ReferDinoModel(config)
    converted, _ = convert_official_state_dict(state, model.state_dict(), config.lora_alpha)
    model.load_state_dict(converted, strict=True)
    model.untrained = False
    return model.eval()


def config_from_official_state_dict(state: dict[str, torch.Tensor], filename: str = "") -> ReferDinoConfig:
    """Infer the variant from the weights: Swin width picks the preset, key counts give the layer counts.

    Head counts are not visible in weight shapes; they come from the preset (as in the released configs)."""
    embed_dim = state["backbone.0.patch_embed.proj.weight"].shape[0]
    presets = {96: ReferDinoConfig.swin_t, 128: ReferDinoConfig.swin_b}
    if embed_dim not in presets:
        raise CheckpointMismatchError(f"Swin embed dim {embed_dim} matches no released variant (96 for Swin-T, "
                                      "128 for Swin-B); pass a ReferDinoConfig explicitly")

    def count(pattern: str) -> int:
        return len({m.group(1) for k in state if (m := re.match(pattern, k))})

    return presets[embed_dim](
        encoder_layers=count(r"transformer\.encoder\.layers\.(\d+)\."),
        decoder_layers=count(r"transformer\.decoder\.layers\.(\d+)\."),
        temporal_layers=count(r"temporal_decoder\.\d+\.layer\.(\d+)\."),
        mask_layers=count(r"mask_decoder\.(\d+)\."),
        num_queries=state["transformer.tgt_embed.weight"].shape[0],
        ffn_dim=state["transformer.encoder.layers.0.linear1.weight"].shape[0],
        name=Path(filename).stem or "official",
    )
