"""Readers for the three referring-VOS benchmarks, in the layouts the official ReferDINO scripts read.

Every reader turns a split into ``VideoSample``s (id, frames, expressions, ground truth when the split has
it), sorted by video id so that sharding over processes is deterministic. Vocabulary: T frames of one
video, (H, W) the frame size.

Ref-YouTube-VOS (``RefYouTubeVOS``)::

    ROOT/meta_expressions/{split}/meta_expressions.json
        {"videos": {vid: {"expressions": {exp_id: {"exp": str, "obj_id": str}}, "frames": [name, ...]}}}
    ROOT/{split}/JPEGImages/<vid>/<name>.jpg
    ROOT/{split}/Annotations/<vid>/<name>.png   palette ids; only train (or a synthetic set) has them

  ``valid`` = keys(valid meta) - keys(test meta) when both exist (202 videos, as SOC and ReferDINO).

Ref-DAVIS17 (``RefDavis17``), converted to the same layout by ReferFormer's ``convert_davis_to_ytvos.py``;
4 annotators per object, expressions in object-major order, so annotator k of object o is the expression
at position ``o * 4 + k`` (as the official ``inference_davis.py``)::

    ROOT/meta_expressions/valid/meta_expressions.json
    ROOT/valid/JPEGImages/<vid>/<name>.jpg
    ROOT/DAVIS/Annotations_unsupervised/480p/<vid>/<name>.png   scoring only (255 = void)
    ROOT/DAVIS/ImageSets/2017/val.txt

MeViS (``MeViS``)::

    ROOT/{split}/meta_expressions.json
        {"videos": {vid: {"expressions": {exp_id: {"exp": str, "obj_id": [int], "anno_id": [int]}},
                          "frames": [name, ...]}}}
    ROOT/{split}/JPEGImages/<vid>/<name>.jpg
    ROOT/{split}/mask_dict.json   {str(anno_id): [COCO RLE or null per frame]}; train and valid_u only

  The ground truth of an expression is the union of its ``anno_id``s' masks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ReferDinoError

BENCHMARKS = ("ytvos", "davis", "mevis")
DEFAULT_SPLITS = {"ytvos": "valid", "davis": "valid", "mevis": "valid_u"}
DAVIS_ANNOTATORS = 4
YTVOS_LAYOUT = ("ROOT/meta_expressions/{split}/meta_expressions.json and ROOT/{split}/JPEGImages/<video>/"
                "<frame>.jpg (the Ref-YouTube-VOS download, unzipped)")
DAVIS_LAYOUT = ("ROOT/meta_expressions/valid/meta_expressions.json, ROOT/valid/JPEGImages/<video>/<frame>.jpg "
                "(ReferFormer's convert_davis_to_ytvos.py output) and, for scoring, ROOT/DAVIS/"
                "Annotations_unsupervised/480p/<video>/*.png with ROOT/DAVIS/ImageSets/2017/val.txt")
MEVIS_LAYOUT = ("ROOT/{split}/meta_expressions.json, ROOT/{split}/JPEGImages/<video>/<frame>.jpg and, for "
                "train/valid_u, ROOT/{split}/mask_dict.json (the MeViS download, unzipped)")


class DatasetError(ReferDinoError):
    """A benchmark folder is missing a file or does not have the expected layout."""


@dataclass(frozen=True)
class Expression:
    """One referring expression of a video.

    obj_ids: the object ids it refers to (Ref-YouTube-VOS/DAVIS: one; MeViS: one or more).
    anno_ids: MeViS only, the keys of its masks in ``mask_dict.json``.
    """

    text: str
    obj_ids: tuple[int, ...] = ()
    anno_ids: tuple[int, ...] = ()


@dataclass
class VideoSample:
    """One video of a split.

    frame_names: (T,) frame names without extension, in order (predictions are named after them).
    frame_paths: (T,) JPEG paths. expressions: exp_id -> Expression, in the meta file's order.
    """

    video_id: str
    frame_names: list[str]
    frame_paths: list[Path]
    expressions: dict[str, Expression]
    _ground_truth: Callable[[str], np.ndarray] | None = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.frame_names)

    @property
    def has_ground_truth(self) -> bool:
        """Whether ``ground_truth(exp_id)`` is available (Ref-DAVIS17 is scored per object instead)."""
        return self._ground_truth is not None

    def load_frames(self, limit: int | None = None) -> list[np.ndarray]:
        """The first ``limit`` (default all) frames as (H, W, 3) uint8 RGB arrays."""
        frames = []
        for path in self.frame_paths[:limit]:
            if not path.is_file():
                raise DatasetError(f"frame {path} of video {self.video_id} is missing; every frame listed in "
                                   "meta_expressions.json needs a JPEG beside the others")
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert("RGB")))
            if frames[-1].shape != frames[0].shape:
                raise DatasetError(f"frame {path} is {frames[-1].shape[:2]}, but the first frame of "
                                   f"{self.video_id} is {frames[0].shape[:2]}; all frames must have one size")
        return frames

    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the first frame, read from the JPEG header."""
        with Image.open(self.frame_paths[0]) as image:
            return image.height, image.width

    def ground_truth(self, exp_id: str) -> np.ndarray:
        """(T, H, W) bool mask of the object(s) that expression ``exp_id`` refers to."""
        if self._ground_truth is None:
            raise DatasetError(f"video {self.video_id} has no ground truth in this split; it is scored by the "
                               "benchmark's server (submit the zip) or, for Ref-DAVIS17, per object")
        if exp_id not in self.expressions:
            raise DatasetError(f"video {self.video_id} has no expression {exp_id!r}; it has "
                               f"{list(self.expressions)}")
        return self._ground_truth(exp_id)


class EvalDataset:
    """A benchmark split: ``videos`` maps each video id (sorted) to its ``VideoSample``."""

    benchmark = ""

    def __init__(self, root: str | Path, split: str):
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist; expected {self.layout()}")
        self.videos: dict[str, VideoSample] = {}

    def layout(self) -> str:
        raise NotImplementedError

    @property
    def has_ground_truth(self) -> bool:
        """Whether the split is scored locally (every video has ground truth)."""
        return bool(self.videos) and all(v.has_ground_truth for v in self.videos.values())

    @property
    def video_ids(self) -> list[str]:
        return list(self.videos)

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[VideoSample]:
        return iter(self.videos.values())

    def __getitem__(self, video_id: str) -> VideoSample:
        return self.videos[video_id]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, split={self.split!r}, videos={len(self)})"

    # -- helpers shared by the readers ---------------------------------------------------------------
    def _read_json(self, path: Path) -> dict:
        if not path.is_file():
            raise DatasetError(f"{path} is missing; expected {self.layout()}")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DatasetError(f"{path} is not valid JSON ({err}); re-download or re-extract it") from err

    def _meta_videos(self, path: Path) -> dict:
        data = self._read_json(path)
        if not isinstance(data.get("videos"), dict):
            raise DatasetError(f"{path} has no 'videos' object; expected "
                               '{"videos": {video: {"expressions": {...}, "frames": [...]}}}')
        return data["videos"]

    def _frames_dir(self, split_dir: Path) -> Path:
        images = split_dir / "JPEGImages"
        if not images.is_dir():
            raise DatasetError(f"{images} is missing; expected {self.layout()}")
        return images

    def _sample(self, video_id: str, entry: dict, images: Path, source: Path, expressions=None,
                ground_truth=None) -> VideoSample:
        if "frames" not in entry or "expressions" not in entry:
            raise DatasetError(f"video {video_id} in {source} lacks 'frames' or 'expressions'")
        names = [str(name) for name in entry["frames"]]
        if not names:
            raise DatasetError(f"video {video_id} in {source} lists no frames")
        if expressions is None:
            expressions = {str(k): Expression(str(v["exp"]), _ids(v.get("obj_id")))
                           for k, v in entry["expressions"].items()}
        return VideoSample(video_id, names, [images / video_id / f"{name}.jpg" for name in names],
                           expressions, ground_truth)


def _ids(value) -> tuple[int, ...]:
    """obj_id / anno_id fields: a str or int (Ref-YouTube-VOS) or a list (MeViS) -> tuple of ints."""
    if value is None:
        return ()
    values = value if isinstance(value, (list, tuple)) else [value]
    return tuple(int(v) for v in values)


def _read_palette_png(path: Path) -> np.ndarray:
    """(H, W) uint8 label ids of an indexed (palette) PNG, as ``np.array(Image.open(path))``."""
    with Image.open(path) as image:
        return np.array(image)


class RefYouTubeVOS(EvalDataset):
    """Ref-YouTube-VOS (layout in the module docstring); ``split`` is valid, test or train."""

    benchmark = "ytvos"

    def __init__(self, root: str | Path, split: str = "valid"):
        super().__init__(root, split)
        meta_dir = self.root / "meta_expressions"
        meta_path = meta_dir / split / "meta_expressions.json"
        videos = self._meta_videos(meta_path)
        test_path = meta_dir / "test" / "meta_expressions.json"
        if split == "valid" and test_path.is_file():  # the test videos are also listed in the valid meta
            videos = {k: v for k, v in videos.items() if k not in self._meta_videos(test_path)}
        split_dir = self.root / split
        images = self._frames_dir(split_dir)
        annotations = split_dir / "Annotations"
        for video_id in sorted(videos):
            sample = self._sample(video_id, videos[video_id], images, meta_path)
            gt_dir = annotations / video_id
            expressions_have_ids = all(e.obj_ids for e in sample.expressions.values())
            if expressions_have_ids and gt_dir.is_dir() and all((gt_dir / f"{n}.png").is_file()
                                                                 for n in sample.frame_names):
                sample._ground_truth = _ytvos_ground_truth(sample, gt_dir)
            self.videos[video_id] = sample

    def layout(self) -> str:
        return YTVOS_LAYOUT.replace("{split}", self.split)


def _ytvos_ground_truth(sample: VideoSample, gt_dir: Path) -> Callable[[str], np.ndarray]:
    def load(exp_id: str) -> np.ndarray:
        labels = np.stack([_read_palette_png(gt_dir / f"{name}.png") for name in sample.frame_names])
        return np.isin(labels, sample.expressions[exp_id].obj_ids)  # (T, H, W) bool
    return load


@dataclass
class DavisObjects:
    """Ground truth of one DAVIS sequence as the official unsupervised evaluation reads it.

    masks: (N, T, H, W) bool, object n + 1 of the first frame's labels; void: (T, H, W) bool (label 255);
    frame_ids: (T,) PNG names without extension, the names predictions must have.
    """

    masks: np.ndarray
    void: np.ndarray
    frame_ids: list[str]


class RefDavis17(EvalDataset):
    """Ref-DAVIS17 in the converted layout, scored against the original DAVIS tree (``davis_root``, default
    ``ROOT/DAVIS``) with the DAVIS 2017 unsupervised protocol when that tree is present."""

    benchmark = "davis"

    def __init__(self, root: str | Path, split: str = "valid", davis_root: str | Path | None = None):
        super().__init__(root, split)
        meta_path = self.root / "meta_expressions" / split / "meta_expressions.json"
        videos = self._meta_videos(meta_path)
        images = self._frames_dir(self.root / split)
        for video_id in sorted(videos):
            self.videos[video_id] = self._sample(video_id, videos[video_id], images, meta_path)
        self.davis_root = Path(davis_root) if davis_root is not None else self.root / "DAVIS"
        self.sequences = self._davis_sequences()

    def layout(self) -> str:
        return DAVIS_LAYOUT

    def _davis_sequences(self) -> list[str] | None:
        """Sequences of DAVIS ``ImageSets/2017/val.txt``, or None when the DAVIS tree is absent."""
        if not self.davis_root.is_dir():
            return None
        listing = self.davis_root / "ImageSets" / "2017" / "val.txt"
        annotations = self.davis_root / "Annotations_unsupervised" / "480p"
        for required in (listing, annotations):
            if not required.exists():
                raise DatasetError(f"{required} is missing although {self.davis_root} exists; the DAVIS 2017 "
                                   f"tree must contain ImageSets/2017/val.txt and Annotations_unsupervised/480p "
                                   "(download the DAVIS 2017 unsupervised annotations)")
        return [line.strip() for line in listing.read_text().splitlines() if line.strip()]

    @property
    def has_ground_truth(self) -> bool:
        return self.sequences is not None

    def annotator_expressions(self, video_id: str) -> list[list[str]]:
        """For each of the 4 annotators, its exp_ids ordered by object: ``[[o0_a0, o1_a0, ...], ...]``.

        As the official script: object o, annotator k is the expression at position ``o * 4 + k``; a
        trailing incomplete group of fewer than 4 is ignored, as there.
        """
        exp_ids = list(self.videos[video_id].expressions)
        num_objects = len(exp_ids) // DAVIS_ANNOTATORS
        return [[exp_ids[o * DAVIS_ANNOTATORS + k] for o in range(num_objects)] for k in range(DAVIS_ANNOTATORS)]

    def objects(self, video_id: str) -> DavisObjects:
        """The DAVIS unsupervised ground truth of ``video_id`` (``davis2017.davis.DAVIS.get_all_masks``)."""
        if self.sequences is None:
            raise DatasetError(f"no DAVIS tree at {self.davis_root}; Ref-DAVIS17 is scored against the "
                               f"original DAVIS 2017 annotations, expected {DAVIS_LAYOUT}")
        folder = self.davis_root / "Annotations_unsupervised" / "480p" / video_id
        paths = sorted(folder.glob("*.png"))
        if not paths:
            raise DatasetError(f"no annotation PNGs in {folder}; expected {DAVIS_LAYOUT}")
        labels = np.stack([_read_palette_png(p) for p in paths])
        void = labels == 255
        labels = np.where(void, 0, labels)
        num_objects = int(labels[0].max())  # the first frame defines the objects, as the official code
        masks = labels[None] == np.arange(1, num_objects + 1)[:, None, None, None]
        return DavisObjects(masks, void, [p.stem for p in paths])


class MeViS(EvalDataset):
    """MeViS (layout in the module docstring); ``split`` is valid_u (local ground truth), valid or train."""

    benchmark = "mevis"

    def __init__(self, root: str | Path, split: str = "valid_u"):
        super().__init__(root, split)
        split_dir = self.root / split
        meta_path = split_dir / "meta_expressions.json"
        videos = self._meta_videos(meta_path)
        images = self._frames_dir(split_dir)
        mask_path = split_dir / "mask_dict.json"
        self._mask_path = mask_path if mask_path.is_file() else None
        self._mask_dict: dict | None = None
        for video_id in sorted(videos):
            entry = videos[video_id]
            expressions = {str(k): Expression(str(v["exp"]), _ids(v.get("obj_id")), _ids(v.get("anno_id")))
                           for k, v in entry.get("expressions", {}).items()}
            sample = self._sample(video_id, entry, images, meta_path, expressions)
            if self._mask_path is not None:
                sample._ground_truth = self._ground_truth_of(sample)
            self.videos[video_id] = sample

    def layout(self) -> str:
        return MEVIS_LAYOUT.replace("{split}", self.split)

    def mask_dict(self) -> dict:
        """``mask_dict.json``, read on first use (hundreds of MB for train)."""
        if self._mask_dict is None:
            if self._mask_path is None:
                raise DatasetError(f"{self.root / self.split / 'mask_dict.json'} is missing: split "
                                   f"{self.split!r} has no local ground truth (MeViS 'valid' is scored by the "
                                   "server; use 'valid_u' to score locally)")
            self._mask_dict = self._read_json(self._mask_path)
        return self._mask_dict

    def _ground_truth_of(self, sample: VideoSample) -> Callable[[str], np.ndarray]:
        def load(exp_id: str) -> np.ndarray:
            masks = self.mask_dict()
            height, width = sample.frame_size()
            gt = np.zeros((sample.num_frames, height, width), bool)
            for anno_id in sample.expressions[exp_id].anno_ids:
                if str(anno_id) not in masks:
                    raise DatasetError(f"anno_id {anno_id} of {sample.video_id}/{exp_id} is not in "
                                       f"{self._mask_path}; the meta file and mask_dict.json do not match")
                for t, rle in enumerate(masks[str(anno_id)][:sample.num_frames]):
                    if rle is not None:  # null: the object is absent in this frame
                        gt[t] |= decode_rle(rle)
            return gt
        return load


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE ``{"size": [H, W], "counts": str | list[int]}`` -> (H, W) bool mask."""
    from ..export.rle import decode_rle as decode  # the package's decoder (supervision, COCO compatible)

    return np.asarray(decode(rle), dtype=bool)


READERS = {"ytvos": RefYouTubeVOS, "davis": RefDavis17, "mevis": MeViS}


def open_dataset(benchmark: str, root: str | Path, split: str | None = None,
                 davis_root: str | Path | None = None) -> EvalDataset:
    """The reader of ``benchmark`` ("ytvos", "davis" or "mevis") on ``root``; ``split`` defaults to the split
    the paper reports (valid, valid, valid_u); ``davis_root``: Ref-DAVIS17's DAVIS tree (default ROOT/DAVIS)."""
    if benchmark not in READERS:
        raise DatasetError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    if benchmark == "davis":
        return RefDavis17(root, split or DEFAULT_SPLITS[benchmark], davis_root)
    return READERS[benchmark](root, split or DEFAULT_SPLITS[benchmark])
