"""Prediction files in the layouts the benchmark servers and scorers read, written atomically per file.

All predictions go under `OUT/Annotations`::

    ytvos   Annotations/<video>/<exp_id>/<frame>.png     mode L, 0 / 255 (top-1 query, sigmoid > threshold)
    mevis   Annotations/<video>/<exp_id>/<frame>.png     mode L, 0 / 255 (union of queries above obj_threshold)
    davis   Annotations/anno_{k}/<video>/{t:05d}.png     mode P, DAVIS palette, 0 background, object o -> o + 1

A video is complete when its done-file `OUT/.done/<video>.json` exists; it is written last and records the
settings that decide the predictions (`PREDICTION_SETTINGS`) and the number of files, so a run with other
settings or a video with missing files is redone.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ReferDinoError
from ..postprocess import probabilities
from ..output_files import atomic_write
from ..export.masks import DAVIS_PALETTE
from .datasets import DAVIS_ANNOTATORS, DatasetError, VideoSample, read_image, relative

PREDICTIONS = "Annotations"
DONE = ".done"
CHUNK = 16  # frames upsampled at once: bounds memory on long, large videos
# Everything that changes the prediction files of a video. A done-file records them; on resume a video done
# with another value of any of them is redone (`resume_state`). Nothing else decides "same settings".
PREDICTION_SETTINGS = ("benchmark", "split", "checkpoint", "vocabulary", "device", "dtype", "short_side",
                       "query_decay", "max_frames", "threshold", "obj_threshold")


def save_png(path: Path, array: np.ndarray, palette: list[int] | None = None) -> None:
    """Write (H, W) uint8 `array` as a PNG (mode P with `palette`, else L), atomically: an interrupted run
    never leaves a truncated PNG."""
    image = Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette)  # mode L -> P, the pixel values (ids) unchanged
    with atomic_write(path) as tmp:
        image.save(tmp, format="PNG")


def video_dirs(benchmark: str, out_dir: Path, video_id: str) -> list[Path]:
    """The folders holding one video's predictions."""
    root = Path(out_dir) / PREDICTIONS
    if benchmark == "davis":
        return [root / f"anno_{k}" / video_id for k in range(DAVIS_ANNOTATORS)]
    return [root / video_id]


def clear_video(benchmark: str, out_dir: Path, video_id: str) -> None:
    """Remove a video's done-file first, then its (possibly half-written) predictions."""
    done_path(out_dir, video_id).unlink(missing_ok=True)
    for folder in video_dirs(benchmark, out_dir, video_id):
        shutil.rmtree(folder, ignore_errors=True)


def write_binary(out_dir: Path, sample: VideoSample, exp_id: str, result, threshold: float,
                 multi_target: float | None, num_frames: int) -> int:
    """0/255 PNGs of one expression for the first `num_frames` frames; `result` is an
    `ExpressionResult` (or None for an expression the model cannot read: empty masks). Returns the count."""
    folder = Path(out_dir) / PREDICTIONS / sample.video_id / exp_id
    folder.mkdir(parents=True, exist_ok=True)
    names = sample.frame_names[:num_frames]
    for start, masks in _mask_chunks(sample, result, threshold, multi_target, num_frames):  # (t, H, W) bool
        for offset, mask in enumerate(masks):
            save_png(folder / f"{names[start + offset]}.png", mask.astype(np.uint8) * 255)
    return len(names)


def _mask_chunks(sample, result, threshold, multi_target, num_frames) -> Iterator[tuple[int, np.ndarray]]:
    if result is None:
        height, width = sample.frame_size()
        for start in range(0, num_frames, CHUNK):
            yield start, np.zeros((min(CHUNK, num_frames - start), height, width), bool)
        return
    if result.num_frames != num_frames:
        raise ReferDinoError(f"the prediction of {sample.video_id} has {result.num_frames} frames, expected "
                             f"{num_frames}: the predictor must return one mask per input frame")
    yield from result.iter_masks(threshold, multi_target, chunk=CHUNK)


def write_davis(out_dir: Path, sample: VideoSample, groups: list[list[str]], results: dict, threshold: float,
                palette: list[int], num_frames: int) -> int:
    """Per annotator k, the official Ref-DAVIS17 rule, written as palette PNGs `anno_{k}/<video>/%05d.png`.

    groups[k]: annotator k's exp_ids ordered by object. For each frame: the soft top-1 probabilities
    (O, H, W) of its objects, values < `threshold` set to 0, a constant 0.1 background channel in front,
    argmax over the O + 1 channels -> (H, W) ids, 0 = background, object o -> o + 1. Returns the count.
    """
    height, width = sample.frame_size()
    count = 0
    for k, exp_ids in enumerate(groups):
        folder = Path(out_dir) / PREDICTIONS / f"anno_{k}" / sample.video_id
        folder.mkdir(parents=True, exist_ok=True)
        for start in range(0, num_frames, CHUNK):
            frames = slice(start, min(start + CHUNK, num_frames))
            t = frames.stop - frames.start
            probs = np.zeros((len(exp_ids), t, height, width), np.float32)  # (O, t, H, W)
            for o, exp_id in enumerate(exp_ids):
                if results.get(exp_id) is not None:
                    probs[o] = probabilities(results[exp_id].upsampled_logits(frames)[0])
            probs[probs < threshold] = 0
            stacked = np.concatenate([np.full((1, t, height, width), 0.1, np.float32), probs])
            labels = stacked.argmax(0).astype(np.uint8)  # (t, H, W)
            for offset, frame in enumerate(labels):
                save_png(folder / f"{start + offset:05d}.png", frame, palette)
                count += 1
    return count


def davis_palette(dataset_root: Path) -> list[int]:
    """The palette of `valid/Annotations/blackswan/00000.png` as the official script, else the standard
    DAVIS (PASCAL VOC) palette."""
    source = Path(dataset_root) / "valid" / "Annotations" / "blackswan" / "00000.png"
    if source.is_file():
        image = read_image(source, lambda reason: DatasetError(
            f"{relative(source, dataset_root)} (the palette of the predictions) {reason}; restore it or delete it "
            "(the standard DAVIS palette is then used)"))
        if image.mode == "P" and image.getpalette():
            return image.getpalette()
    return list(DAVIS_PALETTE)


# -- done-files ------------------------------------------------------------------------------------------
def done_path(out_dir: Path, video_id: str) -> Path:
    return Path(out_dir) / DONE / f"{video_id}.json"


def count_files(benchmark: str, out_dir: Path, video_id: str) -> int:
    """PNG files present for a video (hidden temporary files excluded)."""
    return sum(1 for folder in video_dirs(benchmark, out_dir, video_id) if folder.is_dir()
               for path in folder.rglob("*.png") if not path.name.startswith("."))


def changed_settings(recorded: dict, settings: dict) -> dict[str, tuple]:
    """`{name: (recorded value, current value)}` for each of `PREDICTION_SETTINGS` that differs: the one
    test of "same settings". Compared as JSON stores them (tuples are lists); a field missing from an older
    done-file counts as None."""
    current = json.loads(json.dumps(settings))
    return {name: (recorded.get(name), current.get(name)) for name in PREDICTION_SETTINGS
            if recorded.get(name) != current.get(name)}


def resume_state(benchmark: str, out_dir: Path, video_id: str, settings: dict) -> tuple[bool, dict[str, tuple]]:
    """(complete, changed) of a video: complete when its done-file exists, was written with the same
    prediction settings and all its files are there; changed: `changed_settings` against the done-file's
    (empty when there is none). An unreadable done-file counts as absent: the video is redone."""
    try:
        record = json.loads(done_path(out_dir, video_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, {}
    recorded = record.get("settings") if isinstance(record, dict) else None
    if not isinstance(recorded, dict):
        return False, {}
    changed = changed_settings(recorded, settings)
    return not changed and record.get("files") == count_files(benchmark, out_dir, video_id), changed


def mark_done(out_dir: Path, video_id: str, settings: dict, files: int, seconds: float) -> None:
    """Write the done-file (atomically): the last step of a video."""
    path = done_path(out_dir, video_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"video": video_id, "settings": settings, "files": files, "seconds": round(seconds, 3)}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(record), encoding="utf-8")


# -- submission zip --------------------------------------------------------------------------------------
def write_zip(out_dir: Path, benchmark: str, video_ids: list[str], name: str = "submission.zip") -> Path:
    """The zip a server takes: Ref-YouTube-VOS `Annotations/<video>/<exp>/<frame>.png`; MeViS
    `<video>/<exp>/<frame>.png` at the root (as the MeViS tools' `cd Annotations && zip -r`).
    Written under a temporary name and renamed."""
    out_dir = Path(out_dir)
    missing = [v for v in video_ids if not done_path(out_dir, v).is_file()]
    if missing:  # e.g. several machines writing to folders that are not shared
        raise ReferDinoError(f"cannot zip: {len(missing)} video(s) have no predictions in {out_dir} (first: "
                             f"{missing[0]}); with several machines, --out must be on a filesystem they share")
    root = out_dir / PREDICTIONS
    prefix = f"{PREDICTIONS}/" if benchmark == "ytvos" else ""
    with atomic_write(out_dir / name) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for video_id in sorted(video_ids):
            for file in sorted((root / video_id).rglob("*.png")):
                if not file.name.startswith("."):
                    archive.write(file, prefix + file.relative_to(root).as_posix())
    return out_dir / name
