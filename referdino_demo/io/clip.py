"""What reading a video returns (`VideoInfo`, `VideoFrames`), and the frame selection and limits shared by
every kind of source (files in `video_file.py`, arrays and iterators in `video_reader.py`)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from referdino_demo.errors import ConfigError, InputLimitError, VideoReadError

DEFAULT_MAX_PIXELS = 3840 * 2160  # 4K UHD: phones record it; larger is rarely intended
DEFAULT_MAX_DURATION_S = 600.0
DEFAULT_ARRAY_FPS = 25.0  # the rate of arrays and iterators, and of files whose timestamps give none
Frame = tuple[int, float, np.ndarray]  # (index in returned clip, timestamp_s, (H, W, 3) uint8 RGB)
REENCODE = "`ffmpeg -i input -c:v libx264 -pix_fmt yuv420p -an output.mp4`"


@dataclass(frozen=True)
class VideoInfo:
    """The returned clip and the source it came from.

    Attributes:
        width, height: display size in pixels of the returned frames (after rotation).
        fps: rate of the returned frames, `source_fps / effective_stride`; write results at this rate.
        num_frames: number of returned frames `T`.
        duration_s: `num_frames / fps`, the playback length of the returned frames.
        rotation: clockwise degrees (0, 90, 180, 270) applied to the coded frames to reach display
            orientation; the legacy `rotate` tag convention (a portrait phone video is usually 90).
        codec: decoder name (`"h264"`, `"vp9"`, ...), `"rawvideo"` for arrays and iterators.
        source: the file path, `"array"` or `"iterator"`.
        source_fps: average rate of the source; for variable frame rate `(frames - 1) / timestamp span`.
        source_num_frames: frames in the whole source (counted from packets, not decoded).
        source_duration_s: duration of the whole source, `source_num_frames / source_fps`.
        stride: the requested stride.
        effective_stride: average source frames between returned frames: `stride`, or more after
            subsampling.
        subsampled_from: frames left after start/end/stride when the `max_frames` budget cut them to
            `num_frames`; `None` when nothing was cut. See `summary()` for a user-facing line.
    """

    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float
    rotation: int
    codec: str
    source: str
    source_fps: float
    source_num_frames: int
    source_duration_s: float
    stride: int = 1
    effective_stride: float = 1.0
    subsampled_from: int | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.fps <= 0 or self.num_frames < 0:
            raise ConfigError(
                f"VideoInfo expects width, height, fps > 0 and num_frames >= 0, got "
                f"{self.width}x{self.height}, fps={self.fps}, num_frames={self.num_frames}"
            )

    @property
    def subsampled(self) -> bool:
        """True when the `max_frames` budget dropped frames beyond the requested stride."""
        return self.subsampled_from is not None

    def summary(self) -> str:
        """One line for a UI, e.g. `'640x360, 7.5 fps, 64 frames (8.5 s); long video subsampled ...'`."""
        text = f"{self.width}x{self.height}, {self.fps:.4g} fps, {self.num_frames} frames ({self.duration_s:.1f} s)"
        if self.subsampled:
            text += (
                f"; long video subsampled from {self.subsampled_from} to {self.num_frames} frames "
                f"(every {self.effective_stride:.3g} source frames)"
            )
        return text


class VideoFrames:
    """Lazily decoded frames with their `VideoInfo`; what `iter_video` returns.

    Iterating yields `(index, timestamp_s, frame)`: `index` runs over `0 .. info.num_frames - 1`
    (position in the returned clip), `timestamp_s` is the source presentation time in seconds from the
    first source frame, `frame` is `(H, W, 3)` uint8 RGB. Each iteration decodes afresh.

    Attributes:
        info: the `VideoInfo`, known before any frame is decoded.
        source_indices: `(T,)` int64, source frame number of each returned frame.
        timestamps_s: `(T,)` float64, presentation time of each returned frame.
    """

    def __init__(self, info: VideoInfo, source_indices: np.ndarray, timestamps_s: np.ndarray,
                 produce: Callable[[], Iterator[Frame]]):
        self.info = info
        self.source_indices = source_indices
        self.timestamps_s = timestamps_s
        self._produce = produce

    def __iter__(self) -> Iterator[Frame]:
        return self._produce()

    def __len__(self) -> int:
        return self.info.num_frames

    def subset(self, positions: Sequence[int]) -> "VideoFrames":
        """Only the frames at `positions` (ascending), renumbered `0 .. len(positions) - 1`: the clip a decode
        really delivered when corrupt packets lost some frames that the scan counted. Iterating raises
        `VideoReadError` if a later decode does not deliver all of them again."""
        positions = np.asarray(positions, dtype=np.int64)
        number = {int(p): k for k, p in enumerate(positions)}
        info = replace(self.info, num_frames=len(positions), duration_s=len(positions) / self.info.fps)

        def produce() -> Iterator[Frame]:
            delivered = 0
            for position, time_s, frame in self:
                if position in number:
                    yield number[position], time_s, frame
                    delivered += 1
            if delivered < len(positions):
                raise VideoReadError(f"{Path(self.info.source).name} gave {delivered} frames when decoded again, "
                                     f"{len(positions)} the first time; the file changed or is damaged. Upload it "
                                     f"again or re-encode it: {REENCODE}.")
        return VideoFrames(info, self.source_indices[positions], self.timestamps_s[positions], produce)


# ---- selection and limits ----


def check_positive_int(name: str, value) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}.") from None
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}.")
    return value


def check_pixels(width: int, height: int, max_pixels: int | None, source: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise InputLimitError(
            f"Video {source} is {width}x{height} ({width * height:,} pixels), over the limit of "
            f"{max_pixels:,} pixels. Downscale it first, e.g. `ffmpeg -i input -vf scale=-2:720 "
            f"-c:v libx264 -pix_fmt yuv420p output.mp4`, or raise max_pixels."
        )


def check_duration(seconds: float, max_duration_s: float | None, source: str) -> None:
    if max_duration_s is not None and seconds > max_duration_s + 1e-3:
        raise InputLimitError(
            f"The selected part of {source} is {seconds:.1f} s long, over the limit of {max_duration_s:g} s. "
            f"Select a shorter part with start_s/end_s, or trim it first: "
            f"`ffmpeg -ss 0 -t {max_duration_s:g} -i input -c copy trimmed.mp4`."
        )


def select_frames(times: np.ndarray, fps: Fraction, stride: int, start_s, end_s, max_frames, max_duration_s,
            source: str) -> tuple[np.ndarray, int | None, Fraction]:
    """Indices of the returned frames in `times` `(N,)`, frames before the budget cut (or None) and
    the effective stride."""
    keep = np.ones(len(times), bool)
    if start_s is not None:
        keep &= times >= start_s - 1e-6  # tolerate float rounding of timestamps
    if end_s is not None:
        keep &= times < end_s - 1e-6
    in_range = np.flatnonzero(keep)
    if len(in_range) == 0:
        raise ConfigError(
            f"No frames between start_s={start_s} and end_s={end_s}: {source} has {len(times)} frames "
            f"from 0 to {times[-1]:.3f} s. Choose a range inside the video."
        )
    check_duration(times[in_range[-1]] - times[in_range[0]] + 1 / float(fps), max_duration_s, source)
    picked = in_range[::stride]
    n = len(picked)
    if max_frames is None or n <= max_frames:
        return picked, None, Fraction(stride)
    return picked[(np.arange(max_frames) * n) // max_frames], n, Fraction(stride * n, max_frames)


def make_info(width, height, rotation, codec, source, times, fps: Fraction, indices, stride,
               subsampled_from, eff_stride: Fraction) -> VideoInfo:
    out_fps = float(fps / eff_stride)
    return VideoInfo(
        width=width, height=height, fps=out_fps, num_frames=len(indices),
        duration_s=len(indices) / out_fps, rotation=rotation, codec=codec, source=source,
        source_fps=float(fps), source_num_frames=len(times), source_duration_s=len(times) / float(fps),
        stride=stride, effective_stride=float(eff_stride), subsampled_from=subsampled_from,
    )
