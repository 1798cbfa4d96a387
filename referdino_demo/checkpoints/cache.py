"""The converted copy of an official checkpoint, kept beside it so that later starts skip the conversion.

Loading a released Swin-B `.pth` (1 GB) unpickles it, merges LoRA, renames and splits keys, and first initialises a
model at random that the weights then overwrite. The first load therefore writes the converted weights beside the
source, as `<name>.pth.converted.safetensors`; later loads map that file into memory (safetensors' mmap: nothing is
read until it is used, and the pages are shared with the page cache) and assign its tensors to a model built
without initialisation (`empty_model`), converting nothing.

The cache is one file, written atomically, never trusted blindly. Its metadata holds the source's size and
modification time, a fingerprint of the converter (`convert.py`'s hash), the config, and a CRC-32 of every
tensor's bytes. A cache whose source or converter changed is
converted again; one that cannot be parsed, fails its checksum or does not fit its model exactly is ignored (with
a warning) and rebuilt. A folder that cannot be written only means no cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..errors import one_line
from ..model import ReferDinoConfig, ReferDinoModel
from ..output_files import atomic_write
from . import convert
from .convert import fit_state_dict

log = logging.getLogger(__name__)

SUFFIX = ".converted.safetensors"
FORMAT = "referdino-converted-1"  # changed when the cache's own layout changes


def cache_path(source: str | os.PathLike) -> Path:
    """Where the converted copy of the official checkpoint `source` is kept: beside it (beside the link, for a
    Hugging Face cache entry, so that deleting the entry deletes the copy)."""
    source = Path(source)
    return source.with_name(source.name + SUFFIX)


def _converter_fingerprint() -> str:
    """A hash of the converter's source: a cache made by another conversion is made again."""
    return hashlib.sha256(Path(convert.__file__).read_bytes()).hexdigest()[:16]


def _source_key(info: os.stat_result) -> dict[str, str]:
    return {"format": FORMAT, "source_size": str(info.st_size), "source_mtime_ns": str(info.st_mtime_ns),
            "converter": _converter_fingerprint()}


def _checksum(state: dict[str, torch.Tensor]) -> str:
    """CRC-32 of each tensor's bytes (in key order, CPU threads in parallel: zlib releases the GIL), combined."""
    keys = sorted(state)

    def crc(key: str) -> int:
        return zlib.crc32(state[key].contiguous().reshape(-1).view(torch.uint8).numpy())

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        crcs = list(pool.map(crc, keys))
    return hashlib.sha256(json.dumps(list(zip(keys, crcs))).encode()).hexdigest()[:32]


def empty_model(config: ReferDinoConfig) -> ReferDinoModel:
    """`ReferDinoModel(config)` without weight initialisation, for `load_state_dict(state, assign=True)`.

    Built on the meta device (no memory, no random numbers); the buffers that are not saved in state dicts
    (position ids, Swin's relative position index) are then computed on the CPU by transformers' `_init_weights`,
    which fills exactly those when transformers itself loads on the meta device. Raises `RuntimeError` if a
    buffer is left on the meta device (a module transformers does not fill)."""
    from transformers import PreTrainedModel

    with torch.device("meta"):
        model = ReferDinoModel(config)
    saved = set(model.state_dict())
    for owner in [m for m in model.modules() if isinstance(m, PreTrainedModel)]:
        for module in owner.modules():
            if any(b.is_meta for b in module.buffers(recurse=False)):
                module.to_empty(device="cpu", recurse=False)
                owner._init_weights(module)
    left = [name for name, buffer in model.named_buffers() if buffer.is_meta and name not in saved]
    if left:
        raise RuntimeError(f"buffers {left[:3]} are not saved in state dicts and could not be computed")
    return model


def load_cached(source: Path, info: os.stat_result, config: ReferDinoConfig | None) -> ReferDinoModel | None:
    """The model from `source`'s converted copy (weights memory-mapped), or None when there is no usable copy:
    none, another source or converter (silently), or another `config` than asked; damaged (with a warning)."""
    path = cache_path(source)
    if not os.path.isfile(path):
        return None
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        if any(metadata.get(k) != v for k, v in _source_key(info).items()):
            log.info("%s was made from another version of %s or by another converter: converting again",
                     path.name, source.name)
            return None
        cached_config = ReferDinoConfig.from_dict(json.loads(metadata["config"]))
        if config is not None and config.to_dict() != cached_config.to_dict():
            return None
        state = load_file(str(path))  # memory-mapped
        if _checksum(state) != metadata["checksum"]:
            raise ValueError("its checksum does not match its contents")
        model = empty_model(cached_config)
        expected = model.state_dict()
        fit = fit_state_dict(state, expected)
        if fit.problems:
            raise ValueError(f"it does not fit the model: {fit.describe()}")
        dtypes = [k for k, v in state.items() if v.dtype != expected[k].dtype]
        if dtypes:
            raise ValueError(f"tensors {dtypes[:3]} have another dtype than the model's")
        model.load_state_dict(state, assign=True)
    except Exception as err:  # whatever a damaged file makes safetensors, json or the config raise
        log.warning("ignoring the converted copy %s (%s: %s); converting %s again", path, type(err).__name__,
                    one_line(err, 200), source.name)
        return None
    return model


def save_cached(source: Path, info: os.stat_result, model: ReferDinoModel) -> Path | None:
    """Write `model`'s weights as `source`'s converted copy, atomically; -> its path, or None if the folder cannot
    be written (read-only, disk full: loading still works, just without the cache)."""
    from safetensors.torch import save_file

    path = cache_path(source)
    try:  # a real write, not os.access: root passes that check on read-only folders and file systems
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as err:
        log.info("not caching the converted %s: %s cannot be written (%s)", source.name, path.parent, err.strerror)
        return None
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    metadata = {**_source_key(info), "config": json.dumps(model.config.to_dict()), "checksum": _checksum(state)}
    try:
        with atomic_write(path) as tmp:
            save_file(state, str(tmp), metadata=metadata)
    except Exception as err:  # OSError, or safetensors' own error for a failed write
        log.warning("could not cache the converted %s in %s (%s: %s); the next start converts it again",
                    source.name, path.parent, type(err).__name__, one_line(err, 200))
        return None
    return path
