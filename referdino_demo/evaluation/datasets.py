"""Readers for the three referring-VOS benchmarks, in the layouts the official ReferDINO scripts read.

Every reader turns a split into `VideoSample`s (id, frames, expressions, ground truth when the split has
it), sorted by video id so that sharding over processes is deterministic. Vocabulary: T frames of one
video, (H, W) the frame size.

Ref-YouTube-VOS (`RefYouTubeVOS`)::

    ROOT/meta_expressions/{split}/meta_expressions.json
        {"videos": {vid: {"expressions": {exp_id: {"exp": str, "obj_id": str}}, "frames": [name, ...]}}}
    ROOT/{split}/JPEGImages/<vid>/<name>.jpg
    ROOT/{split}/Annotations/<vid>/<name>.png   palette ids; only train (or a synthetic set) has them

  `valid` = keys(valid meta) - keys(test meta) when both exist (202 videos, as SOC and ReferDINO).

Ref-DAVIS17 (`RefDavis17`), converted to the same layout by ReferFormer's `convert_davis_to_ytvos.py`;
4 annotators per object, expressions in object-major order, so annotator k of object o is the expression
at position `o * 4 + k` (as the official `inference_davis.py`)::

    ROOT/meta_expressions/valid/meta_expressions.json
    ROOT/valid/JPEGImages/<vid>/<name>.jpg
    ROOT/DAVIS/Annotations_unsupervised/480p/<vid>/<name>.png   scoring only (255 = void)
    ROOT/DAVIS/ImageSets/2017/val.txt

MeViS (`MeViS`)::

    ROOT/{split}/meta_expressions.json
        {"videos": {vid: {"expressions": {exp_id: {"exp": str, "obj_id": [int], "anno_id": [int]}},
                          "frames": [name, ...]}}}
    ROOT/{split}/JPEGImages/<vid>/<name>.jpg
    ROOT/{split}/mask_dict.json   {str(anno_id): [COCO RLE or null per frame]}; train and valid_u only

  The ground truth of an expression is the union of its `anno_id`s' masks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, ReferDinoError, VideoReadError, one_line

BENCHMARKS = ("ytvos", "davis", "mevis")
DEFAULT_SPLITS = {"ytvos": "valid", "davis": "valid", "mevis": "valid_u"}
SPLITS = {"ytvos": ("valid", "test", "train"), "davis": ("valid", "train"), "mevis": ("valid_u", "valid", "train")}
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


class FrameError(DatasetError, VideoReadError):
    """A frame of a benchmark video is missing or cannot be decoded (both a dataset and a video read error)."""


REPLACE_FILE = "restore it from the benchmark download (re-extract the archive), then rerun"


def relative(path: Path, root: Path) -> str:
    """`path` as messages show it: relative to `root` (the data root), so that they name the file without
    the server's absolute paths; just its name when it is elsewhere."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name


def read_image(path: Path, fail: Callable[[str], ReferDinoError], *, pixels: bool = True) -> Image.Image:
    """The image at `path`, pixels loaded (`pixels=False`: only its header is read: mode and size, no pixels).

    Every way a file can be unusable (missing, a folder, empty, not an image, truncated, corrupt) raises
    `fail(reason)`: PIL reports these with many exception types (OSError, SyntaxError, EOFError, ValueError,
    zlib and struct errors, ...), and what the user needs is the file's name, not PIL's traceback.
    """
    if not path.is_file():
        raise fail("is missing" if not path.exists() else "is not a file")
    try:
        with Image.open(path) as image:
            if pixels:
                image.load()
            return image
    except MemoryError:
        raise
    except UnidentifiedImageError as err:  # its message holds the absolute path
        raise fail("is not an image (empty, or not a JPEG/PNG file)") from err
    except Exception as err:  # noqa: BLE001 - see the docstring
        raise fail(f"cannot be read ({one_line(err, 120).replace(str(path), path.name)})") from err


def read_annotation(path: Path, root: Path, video_id: str, size: tuple[int, int] | None) -> Image.Image:
    """A ground-truth PNG of `video_id`: an indexed (palette) image of object ids, `size` (H, W) when given
    (the frame size); anything else raises a DatasetError naming the file relative to `root`."""
    def fail(reason: str) -> DatasetError:
        return DatasetError(f"annotation {relative(path, root)} of video {video_id} {reason}; {REPLACE_FILE}")

    image = read_image(path, fail)
    if image.mode != "P":
        raise fail(f"is a mode {image.mode} image, not an indexed (palette) PNG of object ids")
    if size is not None and (image.height, image.width) != tuple(size):
        raise fail(f"is {image.height}x{image.width} (HxW) but the video's frames are {size[0]}x{size[1]}")
    return image


@dataclass(frozen=True)
class Expression:
    """One referring expression of a video.

    obj_ids: the object ids it refers to (Ref-YouTube-VOS/DAVIS: one; MeViS: one or more).
    anno_ids: MeViS only, the keys of its masks in `mask_dict.json`.
    """

    text: str
    obj_ids: tuple[int, ...] = ()
    anno_ids: tuple[int, ...] = ()


@dataclass
class VideoSample:
    """One video of a split.

    frame_names: (T,) frame names without extension, in order (predictions are named after them).
    frame_paths: (T,) JPEG paths. expressions: exp_id -> Expression, in the meta file's order.
    root: the data root, which messages name files relative to.
    """

    video_id: str
    frame_names: list[str]
    frame_paths: list[Path]
    expressions: dict[str, Expression]
    _ground_truth: Callable[[str], np.ndarray] | None = field(default=None, repr=False)
    root: Path = field(default=Path(), repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.frame_names)

    @property
    def has_ground_truth(self) -> bool:
        """Whether `ground_truth(exp_id)` is available (Ref-DAVIS17 is scored per object instead)."""
        return self._ground_truth is not None

    def load_frames(self, limit: int | None = None) -> list[np.ndarray]:
        """The first `limit` (default all) frames as (H, W, 3) uint8 RGB arrays."""
        return [np.asarray(image.convert("RGB")) for image in self._frames(limit, pixels=True)]

    def check_frames(self, limit: int | None = None) -> tuple[int, int]:
        """Read the headers of the first `limit` frames (cheap: no decoding); returns their (H, W)."""
        return [image.size for image in self._frames(limit, pixels=False)][0][::-1]

    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the first frame, read from the JPEG header."""
        return self.check_frames(1)

    def _frames(self, limit: int | None, *, pixels: bool) -> Iterator[Image.Image]:
        """The first `limit` frames as PIL images, one at a time; a missing or damaged frame, or one whose size
        differs from the first frame's, raises a FrameError naming it."""
        first = None  # (H, W) of the first frame
        for path in self.frame_paths[:limit]:
            image = read_image(path, lambda reason, path=path: self._frame_error(path, reason), pixels=pixels)
            first = first or (image.height, image.width)
            if (image.height, image.width) != first:
                raise self._frame_error(path, f"is {image.height}x{image.width} (HxW) but the video's first frame "
                                              f"is {first[0]}x{first[1]} (a video's frames share one size)")
            yield image

    def _frame_error(self, path: Path, reason: str) -> FrameError:
        folder = path.parent
        if not path.exists() and (not folder.is_dir() or not any(folder.iterdir())):  # say why: no frames at all
            state = "empty" if folder.is_dir() else "missing"
            reason = f"is missing: the folder {relative(folder, self.root)} is {state}"
        return FrameError(f"frame {relative(path, self.root)} of video {self.video_id} {reason}; {REPLACE_FILE}")

    def ground_truth(self, exp_id: str) -> np.ndarray:
        """(T, H, W) bool mask of the object(s) that expression `exp_id` refers to."""
        if self._ground_truth is None:
            raise DatasetError(f"video {self.video_id} has no ground truth in this split; it is scored by the "
                               "benchmark's server (submit the zip) or, for Ref-DAVIS17, per object")
        if exp_id not in self.expressions:
            raise DatasetError(f"video {self.video_id} has no expression {exp_id!r}; it has "
                               f"{list(self.expressions)}")
        return self._ground_truth(exp_id)


class EvalDataset:
    """A benchmark split: `videos` maps each video id (sorted) to its `VideoSample`."""

    benchmark = ""

    def __init__(self, root: str | Path, split: str):
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            state = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise DatasetError(f"dataset folder {self.root} {state}; expected {self.layout()}")
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

    def check(self, video_ids: list[str], max_frames: int | None = None) -> None:
        """Refuse, before any model work, a video whose files would stop a run: every frame it reads (the first
        `max_frames`) must be an image of one size (headers only: decoding every frame is left to the run,
        after this) and, where the split is scored here, its ground truth must decode and fit those frames."""
        for video_id in video_ids:
            sample = self[video_id]
            self._check_ground_truth(sample, sample.check_frames(max_frames))

    def _check_ground_truth(self, sample: VideoSample, size: tuple[int, int]) -> None:
        """Raise unless `sample`'s ground truth (if the split has it) fits frames of `size` (H, W)."""

    # -- helpers shared by the readers ---------------------------------------------------------------
    def _read_json(self, path: Path):
        if not path.is_file():
            raise DatasetError(f"{path} is {'not a file' if path.exists() else 'missing'}; expected {self.layout()}")
        shown = relative(path, self.root)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DatasetError(f"{shown} is not valid JSON ({one_line(err, 80)}); {REPLACE_FILE}") from err
        except OSError as err:
            raise DatasetError(f"{shown} cannot be read ({err.strerror or err}); check its permissions") from err

    def _meta_error(self, source: Path, problem: str) -> DatasetError:
        return DatasetError(f"{relative(source, self.root)}: {problem}; expected {META_FORMAT}; {REPLACE_FILE}")

    def _meta_videos(self, path: Path) -> dict:
        data = self._read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
            raise self._meta_error(path, "no 'videos' object")
        return data["videos"]

    def _frames_dir(self, split_dir: Path) -> Path:
        images = split_dir / "JPEGImages"
        if not images.is_dir():
            raise DatasetError(f"{images} is missing; expected {self.layout()}")
        return images

    def _sample(self, video_id: str, entry, images: Path, source: Path) -> VideoSample:
        """Video `video_id` of the meta file `source`; a malformed entry raises a DatasetError naming it."""
        video = f"video {video_id!r}"
        self._name(video_id, video, source)
        if not (isinstance(entry, dict) and isinstance(entry.get("frames"), list)
                and isinstance(entry.get("expressions"), dict)):
            raise self._meta_error(source, f"{video} needs a 'frames' list and an 'expressions' object")
        names = [self._name(name, f"a frame name of {video}", source) for name in entry["frames"]]
        if not names or len(set(names)) != len(names):
            raise self._meta_error(source, f"{video} lists {'no frames' if not names else 'a frame twice'}")
        expressions = {}
        for exp_id, value in entry["expressions"].items():
            where = f"expression {exp_id!r} of {video}"
            self._name(exp_id, where, source)
            if not isinstance(value, dict) or not isinstance(value.get("exp"), str):
                raise self._meta_error(source, f"{where} has no 'exp' text")
            try:
                expressions[exp_id] = Expression(value["exp"], _ids(value.get("obj_id")), _ids(value.get("anno_id")))
            except (TypeError, ValueError) as err:
                raise self._meta_error(source, f"{where}: obj_id/anno_id must be whole numbers ({err})") from err
        return VideoSample(video_id, names, [images / video_id / f"{name}.jpg" for name in names], expressions,
                           root=self.root)

    def _name(self, value, what: str, source: Path) -> str:
        """`value` as a file name: video ids, expression ids and frame names name the prediction files, so
        one that could leave its folder ('..', 'a/b') is refused."""
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
        if not text or text in (".", "..") or any(c in text for c in "/\\\0"):
            raise self._meta_error(source, f"{what}: {value!r} is not a plain file name")
        return text


META_FORMAT = '{"videos": {video: {"expressions": {exp_id: {"exp": text, ...}}, "frames": [name, ...]}}}'


def _ids(value) -> tuple[int, ...]:
    """obj_id / anno_id fields: a str or int (Ref-YouTube-VOS) or a list (MeViS) -> tuple of ints."""
    if value is None:
        return ()
    values = value if isinstance(value, (list, tuple)) else [value]
    return tuple(int(v) for v in values)


class RefYouTubeVOS(EvalDataset):
    """Ref-YouTube-VOS (layout in the module docstring); `split` is valid, test or train."""

    benchmark = "ytvos"

    def __init__(self, root: str | Path, split: str = "valid"):
        super().__init__(root, split)
        meta_dir = self.root / "meta_expressions"
        meta_path = meta_dir / split / "meta_expressions.json"
        videos = self._meta_videos(meta_path)
        test_path = meta_dir / "test" / "meta_expressions.json"
        if split == "valid" and test_path.is_file():  # the test videos are also listed in the valid meta
            videos = {k: v for k, v in videos.items() if k not in self._meta_videos(test_path)}
        images = self._frames_dir(self.root / split)
        for video_id in sorted(videos):
            sample = self._sample(video_id, videos[video_id], images, meta_path)
            # A video with an annotation folder is scored here: a missing or damaged PNG in it is an error
            # (`check`), not a silent switch of the whole split to server scoring.
            if self._annotations(video_id).is_dir() and all(e.obj_ids for e in sample.expressions.values()):
                sample._ground_truth = self._ground_truth_of(sample)
            self.videos[video_id] = sample

    def layout(self) -> str:
        return YTVOS_LAYOUT.replace("{split}", self.split)

    def _annotations(self, video_id: str) -> Path:
        return self.root / self.split / "Annotations" / video_id

    def _check_ground_truth(self, sample: VideoSample, size: tuple[int, int]) -> None:
        if sample.has_ground_truth:
            for name in sample.frame_names:
                read_annotation(self._annotations(sample.video_id) / f"{name}.png", self.root, sample.video_id, size)

    def _ground_truth_of(self, sample: VideoSample) -> Callable[[str], np.ndarray]:
        def load(exp_id: str) -> np.ndarray:
            folder, size = self._annotations(sample.video_id), sample.frame_size()
            labels = np.stack([np.array(read_annotation(folder / f"{name}.png", self.root, sample.video_id, size))
                               for name in sample.frame_names])
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
    """Ref-DAVIS17 in the converted layout, scored against the original DAVIS tree (`davis_root`, default
    `ROOT/DAVIS`) with the DAVIS 2017 unsupervised protocol when that tree is present."""

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
        """Sequences of DAVIS `ImageSets/2017/val.txt`, or None when the DAVIS tree is absent."""
        if not self.davis_root.is_dir():
            return None
        listing = self.davis_root / "ImageSets" / "2017" / "val.txt"
        annotations = self.davis_root / "Annotations_unsupervised" / "480p"
        for required in (listing, annotations):
            if not required.exists():
                raise DatasetError(f"{required} is missing although {self.davis_root} exists; the DAVIS 2017 "
                                   f"tree must contain ImageSets/2017/val.txt and Annotations_unsupervised/480p "
                                   "(download the DAVIS 2017 unsupervised annotations)")
        try:
            text = listing.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DatasetError(f"{relative(listing, self.davis_root.parent)} cannot be read "
                               f"({one_line(err, 80)}); {REPLACE_FILE}") from err
        return [line.strip() for line in text.splitlines() if line.strip()]

    @property
    def has_ground_truth(self) -> bool:
        return self.sequences is not None

    def annotator_expressions(self, video_id: str) -> list[list[str]]:
        """For each of the 4 annotators, its exp_ids ordered by object: `[[o0_a0, o1_a0, ...], ...]`.

        As the official script: object o, annotator k is the expression at position `o * 4 + k`; a
        trailing incomplete group of fewer than 4 is ignored, as there.
        """
        exp_ids = list(self.videos[video_id].expressions)
        num_objects = len(exp_ids) // DAVIS_ANNOTATORS
        return [[exp_ids[o * DAVIS_ANNOTATORS + k] for o in range(num_objects)] for k in range(DAVIS_ANNOTATORS)]

    def _annotation_paths(self, video_id: str) -> list[Path]:
        """The DAVIS unsupervised annotation PNGs of `video_id`, sorted (frame order)."""
        if self.sequences is None:
            raise DatasetError(f"no DAVIS tree at {self.davis_root}; Ref-DAVIS17 is scored against the "
                               f"original DAVIS 2017 annotations, expected {DAVIS_LAYOUT}")
        folder = self.davis_root / "Annotations_unsupervised" / "480p" / video_id
        paths = sorted(folder.glob("*.png"))
        if not paths:
            raise DatasetError(f"no annotation PNGs in {relative(folder, self.davis_root.parent)}; expected "
                               f"{DAVIS_LAYOUT}")
        return paths

    def _check_ground_truth(self, sample: VideoSample, size: tuple[int, int]) -> None:
        if self.sequences is not None and sample.video_id in self.sequences:
            for path in self._annotation_paths(sample.video_id):
                read_annotation(path, self.davis_root.parent, sample.video_id, size)

    def objects(self, video_id: str) -> DavisObjects:
        """The DAVIS unsupervised ground truth of `video_id` (`davis2017.davis.DAVIS.get_all_masks`)."""
        paths = self._annotation_paths(video_id)
        size = self[video_id].frame_size()
        labels = np.stack([np.array(read_annotation(p, self.davis_root.parent, video_id, size)) for p in paths])
        void = labels == 255
        labels = np.where(void, 0, labels)
        num_objects = int(labels[0].max())  # the first frame defines the objects, as the official code
        masks = labels[None] == np.arange(1, num_objects + 1)[:, None, None, None]
        return DavisObjects(masks, void, [p.stem for p in paths])


class MeViS(EvalDataset):
    """MeViS (layout in the module docstring); `split` is valid_u (local ground truth), valid or train."""

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
            sample = self._sample(video_id, videos[video_id], images, meta_path)
            if self._mask_path is not None:
                sample._ground_truth = self._ground_truth_of(sample)
            self.videos[video_id] = sample

    def layout(self) -> str:
        return MEVIS_LAYOUT.replace("{split}", self.split)

    def mask_dict(self) -> dict:
        """`mask_dict.json`, read on first use (hundreds of MB for train)."""
        if self._mask_dict is None:
            if self._mask_path is None:
                raise DatasetError(f"{self.root / self.split / 'mask_dict.json'} is missing: split "
                                   f"{self.split!r} has no local ground truth (MeViS 'valid' is scored by the "
                                   "server; use 'valid_u' to score locally)")
            masks = self._read_json(self._mask_path)
            if not isinstance(masks, dict):
                raise DatasetError(f"{relative(self._mask_path, self.root)} is not a JSON object; expected "
                                   f"{{anno_id: [COCO RLE or null per frame]}}; {REPLACE_FILE}")
            self._mask_dict = masks
        return self._mask_dict

    def _check_ground_truth(self, sample: VideoSample, size: tuple[int, int]) -> None:
        if sample.has_ground_truth:
            for exp_id, expression in sample.expressions.items():
                if not expression.anno_ids:
                    raise self._meta_error(self.root / self.split / "meta_expressions.json",
                                           f"expression {exp_id!r} of video {sample.video_id!r} has no anno_id")
                for anno_id in expression.anno_ids:
                    for _ in self._object_masks(sample, exp_id, anno_id, size):
                        pass

    def _object_masks(self, sample: VideoSample, exp_id: str, anno_id: int,
                      size: tuple[int, int]) -> Iterator[tuple[int, np.ndarray]]:
        """(t, (H, W) bool mask) for each frame where object `anno_id` (of `exp_id`) is present; its
        `mask_dict.json` entry must be a list of one COCO RLE of the frame `size` (or null) per frame,
        else a DatasetError names the entry and frame."""
        where = f"anno_id {anno_id} ({sample.video_id}/{exp_id}) in {relative(self._mask_path, self.root)}"
        rles = self.mask_dict().get(str(anno_id))
        if rles is None:
            raise DatasetError(f"{where} is missing: the meta file and mask_dict.json do not match; {REPLACE_FILE}")
        if not isinstance(rles, list) or len(rles) < sample.num_frames:
            raise DatasetError(f"{where} is not a list of {sample.num_frames} masks (one COCO RLE or null per "
                               f"frame); {REPLACE_FILE}")
        for t, rle in enumerate(rles[:sample.num_frames]):
            if rle is None:  # null: the object is absent in this frame
                continue
            if not (isinstance(rle, dict) and isinstance(rle.get("counts"), (str, list))
                    and rle.get("size") == list(size)):
                raise DatasetError(f"{where}, frame {t}: {one_line(repr(rle), 60)} is not null or a COCO RLE "
                                   f'{{"size": [{size[0]}, {size[1]}], "counts": ...}} of the frame size; '
                                   f"{REPLACE_FILE}")
            try:
                mask = decode_rle(rle)
            except (ValueError, TypeError, IndexError, KeyError, OverflowError) as err:
                raise DatasetError(f"{where}, frame {t}: the RLE cannot be decoded ({one_line(err, 80)}); "
                                   f"{REPLACE_FILE}") from err
            if mask.shape != tuple(size):  # counts that do not add up to H * W
                raise DatasetError(f"{where}, frame {t}: the RLE decodes to {mask.shape}, not its size {size}; "
                                   f"{REPLACE_FILE}")
            yield t, mask

    def _ground_truth_of(self, sample: VideoSample) -> Callable[[str], np.ndarray]:
        def load(exp_id: str) -> np.ndarray:
            height, width = size = sample.frame_size()
            gt = np.zeros((sample.num_frames, height, width), bool)
            for anno_id in sample.expressions[exp_id].anno_ids:
                for t, mask in self._object_masks(sample, exp_id, anno_id, size):
                    gt[t] |= mask
            return gt
        return load


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE `{"size": [H, W], "counts": str | list[int]}` -> (H, W) bool mask."""
    from ..export.rle import decode_rle as decode  # the package's decoder (supervision, COCO compatible)

    return np.asarray(decode(rle), dtype=bool)


READERS = {"ytvos": RefYouTubeVOS, "davis": RefDavis17, "mevis": MeViS}


def open_dataset(benchmark: str, root: str | Path, split: str | None = None,
                 davis_root: str | Path | None = None) -> EvalDataset:
    """The reader of `benchmark` ("ytvos", "davis" or "mevis") on `root`; `split` defaults to the split
    the paper reports (valid, valid, valid_u); `davis_root`: Ref-DAVIS17's DAVIS tree (default ROOT/DAVIS)."""
    if benchmark not in READERS:
        raise DatasetError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    split = split or DEFAULT_SPLITS[benchmark]
    if split not in SPLITS[benchmark]:
        raise ConfigError(f"unknown split {split!r} for {benchmark}; choose one of {', '.join(SPLITS[benchmark])}")
    if benchmark == "davis":
        return RefDavis17(root, split, davis_root)
    return READERS[benchmark](root, split)
