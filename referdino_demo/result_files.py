"""A `VideoSegmentation` saved to one `.npz` file and read back exactly: what the app's example cache keeps on
disk, so that a clicked example shows its result without running the model.

Layout: one JSON header (`__header__`, the plain fields of the segmentation and of each expression's result) and
the arrays, named `{e}/{field}` for expression `e` (scores, boxes, candidates, candidate_logits) and
`frame_indices`. The frames are not saved: they are decoded again from the source. Reading uses
`allow_pickle=False`, and the dataclasses check every shape again, so a damaged file raises `ResultFileError`
instead of giving a wrong result.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from .errors import ReferDinoError
from .output_files import atomic_write
from .results import ExpressionResult, VideoSegmentation

FORMAT = "referdino-demo/segmentation"
VERSION = 1
_NOT_SAVED = {"results", "frames"}  # results: saved per expression; frames: decoded again from the source


class ResultFileError(ReferDinoError):
    """A saved segmentation cannot be read: damaged, from another version, or not such a file."""


def save_segmentation(segmentation: VideoSegmentation, path: str | os.PathLike) -> Path:
    """Write `segmentation` (without its frames) to the `.npz` file `path`, atomically."""
    header = {"format": FORMAT, "version": VERSION, "segmentation": {}, "results": []}
    arrays: dict[str, np.ndarray] = {}
    for item in dataclasses.fields(segmentation):
        if item.name not in _NOT_SAVED:
            _put(header["segmentation"], arrays, item.name, getattr(segmentation, item.name), item.name)
    for e, result in enumerate(segmentation):
        fields = {}
        for item in dataclasses.fields(result):
            _put(fields, arrays, item.name, getattr(result, item.name), f"{e}/{item.name}")
        header["results"].append(fields)
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)
    with atomic_write(path) as tmp, open(tmp, "wb") as file:
        np.savez(file, **arrays)
    return Path(path)


def load_segmentation(path: str | os.PathLike) -> VideoSegmentation:
    """The segmentation `save_segmentation` wrote (its `frames` are None); `ResultFileError` if it cannot be."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(data["__header__"].tobytes().decode("utf-8"))
            if header.get("format") != FORMAT or header.get("version") != VERSION:
                raise ResultFileError(f"{path} is not a version {VERSION} saved segmentation")
            results = {}
            for fields in header["results"]:
                result = ExpressionResult(**_take(fields, data))
                results[result.expression] = result
            return VideoSegmentation(results=results, **_take(header["segmentation"], data))
    except ResultFileError:
        raise
    except Exception as err:  # a truncated zip, a missing array, a wrong shape: the file cannot be trusted
        raise ResultFileError(f"cannot read the saved segmentation {path} ({type(err).__name__}: {err}); delete "
                              "it and compute the result again") from err


def _put(fields: dict, arrays: dict, name: str, value, key: str) -> None:
    """A field goes to the arrays (named `key`) when it is an array, else into the JSON header."""
    if isinstance(value, np.ndarray):
        arrays[key] = value
        fields[name] = {"array": key}
    elif isinstance(value, tuple):  # JSON has no tuples: frame_size must come back as one
        fields[name] = {"tuple": list(value)}
    else:
        fields[name] = {"value": value}


def _take(fields: dict, data) -> dict:
    values = {}
    for name, stored in fields.items():
        (kind, value), = stored.items()
        values[name] = data[value] if kind == "array" else tuple(value) if kind == "tuple" else value
    return values
