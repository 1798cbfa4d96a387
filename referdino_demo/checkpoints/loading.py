"""Building a `ReferDinoModel` with weights: official `.pth`, our safetensors folder, or `tiny-random`.

Our own format is a folder with `config.json` (a `ReferDinoConfig`) and `model.safetensors`.
Official `.pth` files are read with `torch.load(weights_only=True)`, so a malicious pickle cannot run code.

Every failure is a `CheckpointNotFoundError` or a `CheckpointMismatchError` that says what to do, and the cost
is bounded before anything is built: only regular files are opened, configs (given, saved or inferred from the
weights) pass `ReferDinoConfig.validate` (types and size bounds), and tensors whose storage is smaller than their
declared size are refused before they are used. Loading is strict by default: a checkpoint that does not fit the
model exactly is refused with the keys named; `strict=False` loads what fits and says what did not in
`model.load_report`.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointMismatchError, CheckpointNotFoundError, ConfigError, ReferDinoError, one_line
from ..model import ReferDinoConfig, ReferDinoModel
from .cache import empty_model, load_cached, save_cached
from .convert import SHOWN_KEYS, STRICT_HINT, convert_official_state_dict, first_keys, fit_state_dict
from ..input_files import open_regular, regular_file
from ..hub import RELEASED, TINY_RANDOM, download_checkpoint, split_hub_name

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class LoadReport:
    """What a load left out, set as `model.load_report` by `load_model`.

    ignored: checkpoint keys that were not loaded (no place in the model, wrong shape, inconsistent copies);
    left_initial: model parameters and buffers that kept their initial (random) values. Both are empty after a
    strict load, which refuses any checkpoint that would fill them."""

    ignored: list[str] = field(default_factory=list)
    left_initial: list[str] = field(default_factory=list)
    strict: bool = True

    @property
    def partial(self) -> bool:
        """True when some of the model did not come from the checkpoint (results are not the trained model's)."""
        return bool(self.ignored or self.left_initial)

    def summary(self) -> str:
        """One line for logs and the UI."""
        if not self.partial:
            mode = "strict" if self.strict else "strict=False"
            return f"complete load ({mode}): every parameter came from the checkpoint"
        return (f"partial load (strict=False): {len(self.ignored)} checkpoint keys ignored"
                f"{_listed(self.ignored)}, {len(self.left_initial)} model parameters left at their initial values"
                f"{_listed(self.left_initial)}; results are not those of the trained model")


def _listed(keys: list[str]) -> str:
    return f" ({first_keys(keys)})" if keys else ""


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
    model.load_report = LoadReport()
    return model.eval()


def save_model(model: ReferDinoModel, directory: str | Path) -> Path:
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
    with open_regular(path) as f:  # a FIFO or device would never end
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected.lower():
        raise CheckpointMismatchError(f"{path} has sha256 {actual}, expected {expected}: the file is corrupt or not "
                                      "the one published; delete it and download it again")


def load_model(source: str | Path = TINY_RANDOM, filename: str | None = None,
                    config: ReferDinoConfig | None = None, sha256: str | None = None,
                    strict: bool = True) -> ReferDinoModel:
    """Load a model in eval mode on the CPU; `model.load_report` says what, if anything, was left out.

    source: `"tiny-random"`; a Hub repository (`"liangtm/referdino"`, with `filename` or the default
    checkpoint) or a released file name (`"ryt_swinb.pth"`); a local official `.pth` (a bare state dict or the
    official trainer's file); a folder saved by `save_model`. `config` overrides the configuration inferred
    for an official `.pth`. `sha256`, when given (or known for a released file), is checked before the file is
    read.

    strict (default True): a checkpoint whose keys or shapes do not match the model exactly is refused, naming
    the keys. With `strict=False` the matching keys are loaded, the rest are listed in `model.load_report`
    (`LoadReport`) and the parameters they should have filled keep their initial values.

    Every failure is a `CheckpointNotFoundError` or a `CheckpointMismatchError`, whatever torch, safetensors or
    json say about the file.
    """
    try:
        return _load_model(source, filename, config, sha256, strict)
    except (CheckpointNotFoundError, CheckpointMismatchError):
        raise
    except ReferDinoError as err:  # e.g. a ConfigError about a saved config: still this checkpoint's problem
        raise CheckpointMismatchError(f"checkpoint {_name(source, filename)} could not be loaded: {err}") from err
    except Exception as err:  # whatever a library raises on a damaged or foreign file
        raise CheckpointMismatchError(
            f"checkpoint {_name(source, filename)} could not be loaded ({type(err).__name__}: {one_line(err, 300)}). "
            "It is damaged, unreadable or does not fit its configuration: download or export it again") from err


def _name(source, filename) -> str:
    return f"{source}{'/' + filename if filename else ''}"


def _load_model(source, filename, config, sha256, strict) -> ReferDinoModel:
    if str(source) == TINY_RANDOM:
        return tiny_random_model()
    path = Path(source)
    if not os.path.lexists(path):
        hub = split_hub_name(str(source))
        if hub is None:
            raise CheckpointNotFoundError(
                f"checkpoint {source!s} is neither a local file or folder nor a Hub name; use 'tiny-random', "
                f"a released file ({', '.join(RELEASED)}), 'liangtm/referdino', or a local path")
        repo, default_file = hub
        filename = filename or default_file
        path = download_checkpoint(filename, repo)
    if _is_folder(path):
        return _load_folder(path, strict)
    regular_file(path)  # a FIFO, device or socket is refused here, before anything opens it
    if sha256:
        verify_sha256(path, sha256)
    if path.suffix == ".safetensors" and _is_folder(path.parent) and os.path.lexists(path.parent / CONFIG_NAME):
        return _load_folder(path.parent, strict)
    return load_official(path, config, strict)


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _load_folder(directory: Path, strict: bool = True) -> ReferDinoModel:
    from safetensors import safe_open
    from safetensors.torch import load_file

    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    missing = [p.name for p in (config_path, weights_path) if not os.path.lexists(p)]
    if missing:
        raise CheckpointNotFoundError(f"{directory} should hold {CONFIG_NAME} and {WEIGHTS_NAME} (save_model's "
                                      f"layout); {' and '.join(missing)} missing")
    regular_file(weights_path, "weights file")
    try:
        config = ReferDinoConfig.load(config_path)  # type, size and content checked before anything is built
    except ConfigError as err:
        raise CheckpointMismatchError(f"checkpoint {directory} could not be loaded (ConfigError: {err}). Its "
                                      f"{CONFIG_NAME} is not a usable ReferDINO config: download or export it again "
                                      "(save_model), or fix that field") from err
    model = ReferDinoModel(config)
    state = load_file(str(weights_path))
    fit = fit_state_dict(state, model.state_dict())
    if fit.problems and strict:
        raise CheckpointMismatchError(f"{weights_path} does not fit its {CONFIG_NAME}: {fit.describe()}. {STRICT_HINT}")
    model.load_state_dict(fit.matching, strict=False)
    model.load_report = LoadReport(ignored=sorted(fit.unexpected + fit.mismatched),
                                   left_initial=sorted(fit.missing + fit.mismatched), strict=strict)
    with safe_open(str(weights_path), "pt") as f:
        model.untrained = (f.metadata() or {}).get("untrained") == "True"
    return model.eval()


# -- official .pth ---------------------------------------------------------------------------------------------------
def _trainer_globals() -> list:
    """Python objects besides tensors that training scripts' checkpoints hold and that only carry data:
    `argparse.Namespace` (training arguments) and numpy scalars (e.g. a COCO mAP stored as `best_mAP`).
    `weights_only=True` refuses them by default; they are allowed for one `torch.load` call at a time. Their
    pickled names differ between numpy 1 (`numpy.core`) and 2 (`numpy._core`), hence both names."""
    import argparse

    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = [t for t in vars(getattr(np, "dtypes", np)).values() if isinstance(t, type) and issubclass(t, np.dtype)]
    scalar = core.multiarray.scalar
    return [argparse.Namespace, np.dtype, *dtypes,
            (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]


def _allowing(globals_: list):
    """`torch.serialization.safe_globals` (torch >= 2.5; on 2.4 nothing extra is allowed)."""
    import contextlib

    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return safe_globals(globals_) if safe_globals else contextlib.nullcontext()


def read_official_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The model weights of an official checkpoint, read without unpickling code.

    Accepts the official trainer's file (`{'epoch', 'total_epochs', 'model_state_dict', 'optimizer_state_dict',
    'scheduler_state_dict', 'grad_scaler_state_dict', 'best_loss' | 'best_mAP'}`; only `model_state_dict` is
    used) or a bare state dict. Every tensor's storage is checked to hold its declared size (`check_storage`)."""
    path = Path(path)
    try:
        with open_regular(path) as f, _allowing(_trainer_globals()):
            data = torch.load(f, map_location="cpu", weights_only=True)
    except CheckpointMismatchError:
        raise
    except Exception as err:
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise CheckpointMismatchError(
                f"{path} needs Python objects that could run code when loaded ({', '.join(unsafe[:SHOWN_KEYS])}); "
                "files that need arbitrary code to load are refused on purpose. If you trust it, re-save just its "
                "weights: torch.save({'model_state_dict': torch.load(PATH, weights_only=False)"
                "['model_state_dict']}, 'weights.pth')") from err
        raise CheckpointMismatchError(
            f"{path} cannot be read as a PyTorch checkpoint ({type(err).__name__}: {one_line(err, 200)}). "
            "It may be truncated (download it again) or not a ReferDINO .pth file; files that need arbitrary "
            "code to load are refused on purpose") from err
    state = data.get("model_state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                           for k, v in state.items()):
        found = f"top-level keys {sorted(map(str, data))[:10]}" if isinstance(data, dict) else type(data).__name__
        raise CheckpointMismatchError(f"{path} holds no state dict of tensors ({found}); expected the official "
                                      "{'model_state_dict': ...} layout or a bare state dict")
    if not any(k.startswith("transformer.decoder.") for k in state):
        raise CheckpointMismatchError(f"{path} is not a ReferDINO checkpoint: it has no transformer.decoder.* keys")
    for key, tensor in state.items():
        check_storage(key, tensor, path)
    return state


def _unsafe_globals(path: Path) -> list[str]:
    """The Python objects a checkpoint's pickle needs beyond those allowed ([] if none, or if it cannot be told)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint at all: truncated or foreign
        return []
    allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in _trainer_globals()}
    return [name for name in names if name not in allowed]


def check_storage(key: str, tensor: torch.Tensor, path: Path | str = "the checkpoint") -> None:
    """Refuse a tensor whose elements do not each have their own bytes in its storage.

    `torch.load` rebuilds a tensor from (storage, offset, size, stride) as saved, so a file can declare a
    (10**7, 256) tensor over a one-element storage with zero strides (an expanded view): tiny on disk, but
    every later copy or matmul would materialise it. A tensor is accepted when its strides lay its elements
    out densely without overlap (any dimension order) and its storage holds all of them."""
    if tensor.layout != torch.strided:
        raise CheckpointMismatchError(f"{path}: tensor {key} has layout {tensor.layout}; checkpoints hold dense "
                                      "tensors only")
    if tensor.numel() == 0:
        return
    expected_stride, span = 1, 1
    for stride, size in sorted((st, sz) for st, sz in zip(tensor.stride(), tensor.shape) if sz > 1):
        if stride != expected_stride:
            raise CheckpointMismatchError(
                f"{path}: tensor {key} of shape {tuple(tensor.shape)} has strides {tensor.stride()}, so its elements "
                "overlap or leave gaps in its storage (e.g. an expanded view); a ReferDINO checkpoint stores every "
                "element. The file is damaged or was built to exhaust memory; download it again")
        expected_stride *= size
        span += (size - 1) * stride
    needed = (tensor.storage_offset() + span) * tensor.element_size()
    stored = tensor.untyped_storage().nbytes()
    if stored < needed:
        raise CheckpointMismatchError(
            f"{path}: tensor {key} of shape {tuple(tensor.shape)} declares {needed:,} bytes but its storage holds "
            f"{stored:,}; the file is damaged or was built to exhaust memory; download it again")


def load_official(path: str | Path, config: ReferDinoConfig | None = None, strict: bool = True,
                  cache: bool = True) -> ReferDinoModel:
    """An official `.pth` -> our model (LoRA merged, shared copies dropped; see `convert`).

    cache: use the converted copy kept beside the file, and write one after a complete conversion (`cache.py`:
    later loads skip the conversion and memory-map the weights)."""
    path = Path(path)
    info = regular_file(path)
    if cache and (model := load_cached(path, info, config)) is not None:
        model.load_report = LoadReport(strict=strict)
        model.untrained = False
        return model.eval()
    state = read_official_state_dict(path)
    if config is None:
        config = config_from_official_state_dict(state, path.name)
    else:
        config.validate()  # again: a config can be changed after it was made, and building costs what it says
    model = _model_to_fill(config, strict)
    expected = model.state_dict()
    converted, report = convert_official_state_dict(state, expected, config.lora_alpha, strict=strict)
    del state  # the ignored keys and duplicate copies are freed; the converted tensors keep what they use
    # Strict: every parameter is filled, so the converted tensors become the parameters (no copy).
    converted = {k: v.to(expected[k].dtype) for k, v in converted.items()}
    model.load_state_dict(converted, strict=strict, assign=strict)
    model.load_report = LoadReport(ignored=report.not_loaded(), left_initial=report.left_initial, strict=strict)
    model.untrained = False
    if cache and not model.load_report.partial:
        save_cached(path, info, model)
    return model.eval()


def _model_to_fill(config: ReferDinoConfig, strict: bool) -> ReferDinoModel:
    """The model a conversion fills: without initialisation when every parameter will be loaded (strict)."""
    if strict:
        try:
            return empty_model(config)
        except RuntimeError:  # a buffer transformers cannot compute: initialise as usual
            pass
    return ReferDinoModel(config)


def config_from_official_state_dict(state: dict[str, torch.Tensor], filename: str = "") -> ReferDinoConfig:
    """Infer the variant from the weights: Swin width picks the preset, key counts give the layer counts.

    Head counts are not visible in weight shapes; they come from the preset (as in the released configs).
    The inferred sizes pass `ReferDinoConfig.validate` (bounds included) before anything is built."""
    name = Path(filename).stem or "official"
    embed_dim = _size(state, "backbone.0.patch_embed.proj.weight", 4, 0, filename)
    presets = {96: ReferDinoConfig.swin_t, 128: ReferDinoConfig.swin_b}
    if embed_dim not in presets:
        raise CheckpointMismatchError(f"Swin embed dim {embed_dim} matches no released variant (96 for Swin-T, "
                                      "128 for Swin-B); pass a ReferDinoConfig explicitly")

    def layers(pattern: str) -> int:
        """Highest layer index + 1 (a gap is reported by the converter as missing keys)."""
        return 1 + max((int(m.group(1)) for k in state if (m := re.match(pattern, k))), default=-1)

    sizes = dict(
        encoder_layers=layers(r"transformer\.encoder\.layers\.(\d+)\."),
        decoder_layers=layers(r"transformer\.decoder\.layers\.(\d+)\."),
        temporal_layers=layers(r"temporal_decoder\.\d+\.layer\.(\d+)\."),
        mask_layers=layers(r"mask_decoder\.(\d+)\."),
        num_queries=_size(state, "transformer.tgt_embed.weight", 2, 0, filename),
        ffn_dim=_size(state, "transformer.encoder.layers.0.linear1.weight", 2, 0, filename),
    )
    try:
        return presets[embed_dim](name=name, **sizes)
    except ConfigError as err:
        raise CheckpointMismatchError(
            f"{filename or 'the checkpoint'}: the sizes read from its weights ({sizes}) are not a usable ReferDINO "
            f"configuration: {err}. The file is damaged or not a ReferDINO checkpoint") from err


def _size(state: dict, key: str, ndim: int, dim: int, filename: str) -> int:
    """`state[key].shape[dim]`, after checking that the key exists with `ndim` dimensions."""
    tensor = state.get(key)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != ndim:
        found = "missing" if tensor is None else f"of shape {tuple(getattr(tensor, 'shape', ()))}"
        raise CheckpointMismatchError(f"{filename or 'the checkpoint'}: {key} is {found}, expected a {ndim}-D "
                                      "tensor; the configuration cannot be inferred, pass a ReferDinoConfig")
    return int(tensor.shape[dim])
