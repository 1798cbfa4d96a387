"""Read a video (file, array or frame iterator) as RGB uint8 frames, with limits checked before decoding.

Frames are numpy arrays `(H, W, 3)` uint8 RGB in *display* orientation (rotation metadata applied);
`read_video` stacks them into `(T, H, W, 3)`, `iter_video` yields them one at a time so long
videos can be processed in chunks with bounded memory.

Which frames are returned, in this order:

1. `start_s` / `end_s`: frames whose presentation time `t` (seconds from the first frame) satisfies
   `start_s <= t < end_s`. Timestamps, not frame numbers, so variable-frame-rate video is cut correctly.
2. `stride`: every `stride`-th of those *decoded frames* (not seconds).
3. `max_frames` budget: if more than `max_frames` remain, exactly `max_frames` evenly spaced ones
   (positions `floor(k * n / max_frames)`, first frame kept) and `VideoInfo.subsampled_from = n`.

`VideoInfo.fps` is the rate of the returned frames: `source_fps / effective_stride`, so writing them at
that rate keeps the clip's real duration.

A file is first demuxed without decoding (packet timestamps only; the first packets are decoded to learn
the orientation), so a missing, corrupt, truncated, audio-only or over-limit file fails before any heavy
work. Still images (PNG, JPEG, WebP, BMP, ...) are rejected although FFmpeg would read them as 1-frame
videos: in a video demo an uploaded photo is almost always a mistake, and the error says how to pass one
deliberately (as an array with a leading frame axis). Animated GIFs are accepted as videos.

Every file opened and every frame decoded is counted (`decode_counts`), so tests and benchmarks can tell how
often a video is read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Union

import numpy as np

from referdino_demo.errors import ConfigError, VideoReadError
from referdino_demo.io.clip import (DEFAULT_ARRAY_FPS, DEFAULT_MAX_DURATION_S, DEFAULT_MAX_PIXELS, REENCODE,
                                    Frame, VideoFrames, VideoInfo, check_duration, check_pixels,
                                    check_positive_int, make_info, select_frames)
from referdino_demo.io.video_file import open_file

VideoSource = Union[str, os.PathLike, np.ndarray, Iterable[np.ndarray]]


def iter_video(
    source: VideoSource,
    *,
    stride: int = 1,
    start_s: float | None = None,
    end_s: float | None = None,
    max_frames: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    fps: float = DEFAULT_ARRAY_FPS,
) -> VideoFrames:
    """Open `source` and check it; frames are decoded only while iterating the result.

    `source` is a video file path; a `(T, H, W, 3)` uint8 RGB array or a list of `(H, W, 3)` ones; or any
    iterable of `(H, W, 3)` frames (consumed into memory here, up to `end_s`, since its length is needed for
    `VideoInfo` and the budget; pass a file for bounded memory). The selection (`stride`, the time range
    `[start_s, end_s)` in seconds from the first frame, the `max_frames` budget) is described above;
    `max_pixels` is the largest `width * height` and `max_duration_s` the longest selected time range
    accepted (`InputLimitError` above them; None: no limit); `fps` is the frame rate of arrays and iterators
    (files carry their own).

    Raises `VideoReadError` when the source is missing, unreadable, not a video or has no decodable frame,
    `InputLimitError` over the limits, and `ConfigError` for an invalid argument or a time range with no
    frames in it.
    """
    stride = check_positive_int("stride", stride)
    max_frames = None if max_frames is None else check_positive_int("max_frames", max_frames)
    if start_s is not None and not start_s >= 0:
        raise ConfigError(f"start_s must be >= 0 seconds, got {start_s}.")
    if end_s is not None and not end_s > (start_s or 0.0):
        raise ConfigError(f"end_s must be after start_s, got start_s={start_s}, end_s={end_s}.")
    if not fps > 0:
        raise ConfigError(f"fps must be > 0, got {fps}.")
    limits = (max_pixels, max_duration_s)
    if isinstance(source, (str, os.PathLike)):
        frames = open_file(Path(source), stride, start_s, end_s, max_frames, limits)
        _count(opens=1)
        return _counted(frames)
    return _open_frames(source, stride, start_s, end_s, max_frames, limits, fps)


def read_video(source: VideoSource, **kwargs) -> tuple[VideoInfo, np.ndarray]:
    """Read the selected frames of `source` into memory: `(info, frames)` with frames `(T, H, W, 3)`
    uint8 RGB. Keyword arguments and errors are those of `iter_video`."""
    video = iter_video(source, **kwargs)
    info = video.info
    frames = np.empty((info.num_frames, info.height, info.width, 3), np.uint8)
    filled = np.zeros(info.num_frames, bool)
    for index, _, frame in video:
        frames[index] = frame
        filled[index] = True
    if not filled.all():  # only corrupt packets can cause this; the scan counted them as frames
        if not filled.any():
            raise VideoReadError(f"No frame of {Path(info.source).name} could be decoded. Re-encode it: {REENCODE}.")
        frames = frames[filled]
        info = replace(info, num_frames=len(frames), duration_s=len(frames) / info.fps)
    return info, frames


# ---- counting what is read ----


@dataclass(frozen=True)
class DecodeCounts:
    """What this process has read from video files so far: `opens`, files opened (one for the scan of each
    `iter_video` call and one per decode pass); `passes`, decode passes started; `frames`, frames decoded and
    returned. Subtract two readings to count what happened in between."""

    opens: int = 0
    passes: int = 0
    frames: int = 0

    def __sub__(self, other: "DecodeCounts") -> "DecodeCounts":
        return DecodeCounts(self.opens - other.opens, self.passes - other.passes, self.frames - other.frames)


_counts = DecodeCounts()
_counts_lock = threading.Lock()


def decode_counts() -> DecodeCounts:
    """The counts so far (see `DecodeCounts`)."""
    return _counts


def _count(opens: int = 0, passes: int = 0, frames: int = 0) -> None:
    global _counts
    with _counts_lock:
        _counts = DecodeCounts(_counts.opens + opens, _counts.passes + passes, _counts.frames + frames)


def _counted(frames: VideoFrames) -> VideoFrames:
    """`frames`, counting each decode pass and each frame it delivers."""

    def produce() -> Iterator[Frame]:
        _count(opens=1, passes=1)
        for item in frames:
            _count(frames=1)
            yield item
    return VideoFrames(frames.info, frames.source_indices, frames.timestamps_s, produce)


# ---- arrays and iterators ----


def _check_frame(frame, index: int, shape: tuple | None) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise VideoReadError(
            f"Frame {index} has shape {frame.shape}; expected (H, W, 3) RGB. Convert grayscale/RGBA first; "
            f"a single image needs a leading frame axis: image[None]."
        )
    if frame.dtype != np.uint8:
        raise VideoReadError(
            f"Frame {index} has dtype {frame.dtype}; expected uint8 RGB in 0..255. For floats in 0..1 use "
            f"(frames * 255).round().astype(np.uint8)."
        )
    if shape is not None and frame.shape != shape:
        raise VideoReadError(f"Frame {index} has shape {frame.shape} but frame 0 has {shape}; all frames "
                             f"of a video must have the same size.")
    return frame


def _open_frames(source, stride, start_s, end_s, max_frames, limits, fps) -> VideoFrames:
    max_pixels, max_duration_s = limits
    rate = Fraction(fps)
    if isinstance(source, np.ndarray):
        label = "array"
        if source.ndim != 4:
            raise VideoReadError(f"A video array must be (T, H, W, 3) uint8 RGB, got shape {source.shape}. "
                                 f"For a single image use image[None].")
        frames = source
        if len(frames):
            _check_frame(frames[0], 0, None)  # dtype and channels are shared by all frames
    else:
        label = "array" if isinstance(source, (list, tuple)) else "iterator"
        frames = []
        for i, frame in enumerate(source):
            if end_s is not None and i / fps >= end_s:
                break  # later frames are never returned; also ends infinite generators
            frame = _check_frame(frame, i, frames[0].shape if frames else None)
            if not frames:
                check_pixels(frame.shape[1], frame.shape[0], max_pixels, label)
            frames.append(frame)
            if max_duration_s is not None:  # stop early: an endless generator would never finish
                check_duration(len(frames) / fps - (start_s or 0.0) - 1 / fps, max_duration_s, label)
    if len(frames) == 0:
        raise VideoReadError(f"The {label} source has no frames; expected at least one (H, W, 3) frame.")
    height, width = frames[0].shape[:2]
    check_pixels(width, height, max_pixels, label)
    times = np.arange(len(frames)) / fps
    indices, sub_from, eff = select_frames(times, rate, stride, start_s, end_s, max_frames, max_duration_s, label)
    info = make_info(width, height, 0, "rawvideo", label, times, rate, indices, stride, sub_from, eff)

    def produce() -> Iterator[Frame]:
        for pos, i in enumerate(indices):
            yield pos, float(times[i]), np.ascontiguousarray(frames[i])  # validated lazily for arrays
    return VideoFrames(info, indices, times[indices], produce)


__all__ = ["DEFAULT_MAX_DURATION_S", "DEFAULT_MAX_PIXELS", "DecodeCounts", "VideoFrames", "VideoInfo",
           "decode_counts", "iter_video", "read_video"]
