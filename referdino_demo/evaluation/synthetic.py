"""Tiny synthetic benchmark folders in each official layout, for tests and for a smoke run of the evaluation.

Each video shows a few coloured rectangles drifting over a noisy background; each expression names one
rectangle (MeViS: some name two, whose union is the ground truth). `make_synthetic` writes the folder and
returns the true masks, so a perfect predictor can be built from them (J = F = 1).

    from referdino_demo.evaluation.synthetic import make_synthetic
    make_synthetic("mevis", "/tmp/mevis_mini")        # then: referdino evaluate --benchmark mevis \\
                                                       #   --data-root /tmp/mevis_mini --checkpoint tiny-random ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError
from .datasets import DAVIS_ANNOTATORS

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 70, 230), "yellow": (230, 210, 40)}
DAVIS_WORDS = ("the {} box", "a {} rectangle", "{} block moving right", "the {} shape")


@dataclass
class SyntheticSet:
    """What `make_synthetic` wrote.

    masks: (video id, exp_id) -> (T, H, W) bool, the true extent of the referred object(s) (for Ref-DAVIS17
    some of it is void, label 255, in the DAVIS annotations); texts: (video id, exp_id) -> expression;
    first_frames: video id -> (H, W, 3) uint8, the decoded first JPEG (identifies a video given its frames).
    """

    benchmark: str
    root: Path
    split: str
    masks: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    texts: dict[tuple[str, str], str] = field(default_factory=dict)
    first_frames: dict[str, np.ndarray] = field(default_factory=dict)


def _objects(rng, num_objects: int, frames: int, size: tuple[int, int]) -> np.ndarray:
    """(O, T, H, W) bool, non-overlapping rectangles (one horizontal band each) drifting right."""
    height, width = size
    band = height // num_objects
    masks = np.zeros((num_objects, frames, height, width), bool)
    for o in range(num_objects):
        h, w = int(rng.integers(band // 2, band - 2)), int(rng.integers(width // 6, width // 3))
        y, x = o * band + 1 + int(rng.integers(0, band - h - 1)), int(rng.integers(0, width // 3))
        for t in range(frames):
            masks[o, t, y:y + h, x + 3 * t:x + 3 * t + w] = True
    return masks


def _render(rng, masks: np.ndarray, colours: list[str]) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of the objects over noise."""
    frames = rng.integers(60, 120, size=(*masks.shape[1:], 3), dtype=np.uint8)
    for o, colour in enumerate(colours):
        frames[masks[o]] = COLOURS[colour]
    return frames


def _save_frames(folder: Path, names: list[str], frames: np.ndarray) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in zip(names, frames):
        Image.fromarray(frame).save(folder / f"{name}.jpg", quality=95)
    with Image.open(folder / f"{names[0]}.jpg") as image:
        return np.asarray(image.convert("RGB"))


def _save_labels(folder: Path, names: list[str], labels: np.ndarray) -> None:
    from .writers import davis_palette

    folder.mkdir(parents=True, exist_ok=True)
    palette = davis_palette(Path("/nonexistent"))
    for name, frame in zip(names, labels):
        image = Image.fromarray(frame.astype(np.uint8))
        image.putpalette(palette)
        image.save(folder / f"{name}.png")


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def make_synthetic(benchmark: str, root: str | Path, *, videos: int = 2, frames: int = 4, objects: int = 2,
                   size: tuple[int, int] = (72, 128), seed: int = 0) -> SyntheticSet:
    """Write a synthetic `benchmark` ("ytvos", "davis", "mevis") folder at `root` with local ground truth
    (Ref-YouTube-VOS: `{split}/Annotations`; Ref-DAVIS17: the DAVIS tree; MeViS: `mask_dict.json`).

    videos x frames frames of `size` (H, W); `objects` per video (1 to 3) for Ref-YouTube-VOS (one
    expression each) and Ref-DAVIS17 (four each); MeViS videos always have 3 objects and 2 expressions.
    """
    if not 1 <= objects <= 3:
        raise ConfigError(f"objects must be 1 to 3, got {objects}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    split = {"ytvos": "valid", "davis": "valid", "mevis": "valid_u"}[benchmark]
    result = SyntheticSet(benchmark, root, split)
    meta, mask_dict = {}, {}
    for v in range(videos):
        video_id = f"{'abcdefgh'[v % 8]}{v:03d}clip"
        num_objects = objects if benchmark != "mevis" else 3
        colours = list(COLOURS)[v % 2:v % 2 + num_objects]
        masks = _objects(rng, num_objects, frames, size)
        step = 5 if benchmark == "ytvos" else 1  # Ref-YouTube-VOS lists every 5th frame: 00000, 00005, ...
        names = [f"{step * t:05d}" for t in range(frames)]
        first = _save_frames(root / split / "JPEGImages" / video_id, names, _render(rng, masks, colours))
        result.first_frames[video_id] = first
        expressions = _expressions(benchmark, colours, masks, mask_dict, result, video_id)
        meta[video_id] = {"expressions": expressions, "frames": names}
        if benchmark == "ytvos":
            labels = sum((o + 1) * masks[o].astype(np.uint8) for o in range(num_objects))
            _save_labels(root / split / "Annotations" / video_id, names, labels)
        elif benchmark == "davis":  # unsupervised ids in reverse object order, and a void band
            labels = sum((num_objects - o) * masks[o].astype(np.uint8) for o in range(num_objects))
            labels[:, :, size[1] // 2:size[1] // 2 + 4] = 255
            _save_labels(root / "DAVIS" / "Annotations_unsupervised" / "480p" / video_id, names, labels)
    if benchmark == "mevis":
        _write_json(root / split / "meta_expressions.json", {"videos": meta})
        _write_json(root / split / "mask_dict.json", mask_dict)
    else:
        _write_json(root / "meta_expressions" / split / "meta_expressions.json", {"videos": meta})
    if benchmark == "davis":
        listing = root / "DAVIS" / "ImageSets" / "2017" / "val.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{v}\n" for v in meta))
    return result


def _expressions(benchmark, colours, masks, mask_dict, result, video_id) -> dict:
    """The meta file's expressions of one video; records the true masks and texts in `result`."""
    expressions = {}

    def add(exp_id: str, text: str, objects: list[int], entry: dict) -> None:
        expressions[exp_id] = {"exp": text, **entry}
        result.masks[(video_id, exp_id)] = masks[objects].any(0)
        result.texts[(video_id, exp_id)] = text

    if benchmark == "ytvos":
        for o, colour in enumerate(colours):
            add(str(o), f"the {colour} box", [o], {"obj_id": str(o + 1)})
    elif benchmark == "davis":  # object-major, 4 annotators per object
        for o, colour in enumerate(colours):
            for k in range(DAVIS_ANNOTATORS):
                add(str(o * DAVIS_ANNOTATORS + k), DAVIS_WORDS[k].format(colour), [o], {"obj_id": str(o + 1)})
    else:
        from ..export.rle import encode_rle

        base = len(mask_dict)
        for o in range(masks.shape[0]):  # one anno_id per object; null where it is absent
            mask_dict[str(base + o)] = [encode_rle(m) if m.any() else None for m in masks[o]]
        add("0", f"the {colours[0]} box", [0], {"obj_id": [0], "anno_id": [base]})
        add("1", f"the {colours[1]} and {colours[2]} boxes", [1, 2],
            {"obj_id": [1, 2], "anno_id": [base + 1, base + 2]})
    return expressions
