"""Read a video (file, array or frame iterator) as RGB uint8 frames, with limits checked before decoding.

Frames are numpy arrays ``(H, W, 3)`` uint8 RGB in *display* orientation (rotation metadata applied);
``read_video`` stacks them into ``(T, H, W, 3)``, ``iter_video`` yields them one at a time so long
videos can be processed in chunks with bounded memory.

Which frames are returned, in this order:

1. ``start_s`` / ``end_s``: frames whose presentation time ``t`` (seconds from the first frame) satisfies
   ``start_s <= t < end_s``. Timestamps, not frame numbers, so variable-frame-rate video is cut correctly.
2. ``stride``: every ``stride``-th of those *decoded frames* (not seconds).
3. ``max_frames`` budget: if more than ``max_frames`` remain, exactly ``max_frames`` evenly spaced ones
   (positions ``floor(k * n / max_frames)``, first frame kept) and ``VideoInfo.subsampled_from = n``.

``VideoInfo.fps`` is the rate of the returned frames: ``source_fps / effective_stride``, so writing them at
that rate keeps the clip's real duration.

A file is first demuxed without decoding (packet timestamps only; the first packets are decoded to learn
the orientation), so a missing, corrupt, truncated, audio-only or over-limit file fails before any heavy
work. Still images (PNG, JPEG, WebP, BMP, ...) are rejected although FFmpeg would read them as 1-frame
videos: in a video demo an uploaded photo is almost always a mistake, and the error says how to pass one
deliberately (as an array with a leading frame axis). Animated GIFs are accepted as videos.
"""

from __future__ import annotations

import math
import operator
import os
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Union

import av
import numpy as np
from av.sidedata.sidedata import Type as _SideDataType

from referdino_demo.errors import ConfigError, InputLimitError, VideoReadError

DEFAULT_MAX_PIXELS = 3840 * 2160  # 4K UHD: phones record it; larger is rarely intended
DEFAULT_MAX_DURATION_S = 600.0
DEFAULT_ARRAY_FPS = 25.0

VideoSource = Union[str, os.PathLike, np.ndarray, Iterable[np.ndarray]]
Frame = tuple[int, float, np.ndarray]  # (index in returned clip, timestamp_s, (H, W, 3) uint8 RGB)

_REENCODE = "`ffmpeg -i input -c:v libx264 -pix_fmt yuv420p -an output.mp4`"
_MAX_PROBE_DECODE_ERRORS = 100  # give up looking for a first decodable frame after this many bad packets


@dataclass(frozen=True)
class VideoInfo:
    """The returned clip and the source it came from.

    Attributes:
        width, height: display size in pixels of the returned frames (after rotation).
        fps: rate of the returned frames, ``source_fps / effective_stride``; write results at this rate.
        num_frames: number of returned frames ``T``.
        duration_s: ``num_frames / fps``, the playback length of the returned frames.
        rotation: clockwise degrees (0, 90, 180, 270) applied to the coded frames to reach display
            orientation; the legacy ``rotate`` tag convention (a portrait phone video is usually 90).
        codec: decoder name (``"h264"``, ``"vp9"``, ...), ``"rawvideo"`` for arrays and iterators.
        source: the file path, ``"array"`` or ``"iterator"``.
        source_fps: average rate of the source; for variable frame rate ``(frames - 1) / timestamp span``.
        source_num_frames: frames in the whole source (counted from packets, not decoded).
        source_duration_s: duration of the whole source, ``source_num_frames / source_fps``.
        stride: the requested stride.
        effective_stride: average source frames between returned frames: ``stride``, or more after
            subsampling.
        subsampled_from: frames left after start/end/stride when the ``max_frames`` budget cut them to
            ``num_frames``; ``None`` when nothing was cut. See ``summary()`` for a user-facing line.
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
            raise ValueError(
                f"VideoInfo expects width, height, fps > 0 and num_frames >= 0, got "
                f"{self.width}x{self.height}, fps={self.fps}, num_frames={self.num_frames}"
            )

    @property
    def subsampled(self) -> bool:
        """True when the ``max_frames`` budget dropped frames beyond the requested stride."""
        return self.subsampled_from is not None

    def summary(self) -> str:
        """One line for a UI, e.g. ``'640x360, 7.5 fps, 64 frames (8.5 s); long video subsampled ...'``."""
        text = f"{self.width}x{self.height}, {self.fps:.4g} fps, {self.num_frames} frames ({self.duration_s:.1f} s)"
        if self.subsampled:
            text += (
                f"; long video subsampled from {self.subsampled_from} to {self.num_frames} frames "
                f"(every {self.effective_stride:.3g} source frames)"
            )
        return text


class VideoFrames:
    """Lazily decoded frames with their ``VideoInfo``; what ``iter_video`` returns.

    Iterating yields ``(index, timestamp_s, frame)``: ``index`` runs over ``0 .. info.num_frames - 1``
    (position in the returned clip), ``timestamp_s`` is the source presentation time in seconds from the
    first source frame, ``frame`` is ``(H, W, 3)`` uint8 RGB. Each iteration decodes afresh.

    Attributes:
        info: the ``VideoInfo``, known before any frame is decoded.
        source_indices: ``(T,)`` int64, source frame number of each returned frame.
        timestamps_s: ``(T,)`` float64, presentation time of each returned frame.
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
    """Open ``source`` and check it; frames are decoded only while iterating the result.

    Args:
        source: a video file path; a ``(T, H, W, 3)`` uint8 RGB array or a list of ``(H, W, 3)`` ones;
            or any iterable of ``(H, W, 3)`` frames (consumed into memory here, up to ``end_s``, since its
            length is needed for ``VideoInfo`` and the budget; pass a file for bounded memory).
        stride: keep every ``stride``-th decoded frame of the selected time range.
        start_s, end_s: time range ``[start_s, end_s)`` in seconds from the first frame.
        max_frames: frame budget; more frames are subsampled evenly to exactly ``max_frames``.
        max_pixels: largest ``width * height`` accepted (``InputLimitError`` above); ``None``: no limit.
        max_duration_s: longest selected time range accepted; ``None``: no limit.
        fps: frame rate of array and iterator sources (files carry their own).

    Raises:
        VideoReadError: the source is missing, unreadable, not a video, or has no decodable frame.
        InputLimitError: resolution or duration over the limits.
        ConfigError: an invalid argument, or a time range with no frames in it.
    """
    stride = _check_positive_int("stride", stride)
    max_frames = None if max_frames is None else _check_positive_int("max_frames", max_frames)
    if start_s is not None and not start_s >= 0:
        raise ConfigError(f"start_s must be >= 0 seconds, got {start_s}.")
    if end_s is not None and not end_s > (start_s or 0.0):
        raise ConfigError(f"end_s must be after start_s, got start_s={start_s}, end_s={end_s}.")
    if not fps > 0:
        raise ConfigError(f"fps must be > 0, got {fps}.")
    limits = (max_pixels, max_duration_s)
    if isinstance(source, (str, os.PathLike)):
        return _open_file(Path(source), stride, start_s, end_s, max_frames, limits)
    return _open_frames(source, stride, start_s, end_s, max_frames, limits, fps)


def read_video(source: VideoSource, **kwargs) -> tuple[VideoInfo, np.ndarray]:
    """Read the selected frames of ``source`` into memory: ``(info, frames)`` with frames ``(T, H, W, 3)``
    uint8 RGB. Keyword arguments and errors are those of ``iter_video``."""
    video = iter_video(source, **kwargs)
    info = video.info
    frames = np.empty((info.num_frames, info.height, info.width, 3), np.uint8)
    filled = np.zeros(info.num_frames, bool)
    for index, _, frame in video:
        frames[index] = frame
        filled[index] = True
    if not filled.all():  # only corrupt packets can cause this; the scan counted them as frames
        if not filled.any():
            raise VideoReadError(f"No frame of {info.source} could be decoded. Re-encode it: {_REENCODE}.")
        frames = frames[filled]
        info = replace(info, num_frames=len(frames), duration_s=len(frames) / info.fps)
    return info, frames


# ---- selection and limits ------------------------------------------------------------------------


def _check_positive_int(name: str, value) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}.") from None
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}.")
    return value


def _check_pixels(width: int, height: int, max_pixels: int | None, source: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise InputLimitError(
            f"Video {source} is {width}x{height} ({width * height:,} pixels), over the limit of "
            f"{max_pixels:,} pixels. Downscale it first, e.g. `ffmpeg -i input -vf scale=-2:720 "
            f"-c:v libx264 -pix_fmt yuv420p output.mp4`, or raise max_pixels."
        )


def _check_duration(seconds: float, max_duration_s: float | None, source: str) -> None:
    if max_duration_s is not None and seconds > max_duration_s + 1e-3:
        raise InputLimitError(
            f"The selected part of {source} is {seconds:.1f} s long, over the limit of {max_duration_s:g} s. "
            f"Select a shorter part with start_s/end_s, or trim it first: "
            f"`ffmpeg -ss 0 -t {max_duration_s:g} -i input -c copy trimmed.mp4`."
        )


def _select(times: np.ndarray, fps: Fraction, stride: int, start_s, end_s, max_frames, max_duration_s,
            source: str) -> tuple[np.ndarray, int | None, Fraction]:
    """Indices of the returned frames in ``times`` ``(N,)``, frames before the budget cut (or None) and
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
    _check_duration(times[in_range[-1]] - times[in_range[0]] + 1 / float(fps), max_duration_s, source)
    picked = in_range[::stride]
    n = len(picked)
    if max_frames is None or n <= max_frames:
        return picked, None, Fraction(stride)
    return picked[(np.arange(max_frames) * n) // max_frames], n, Fraction(stride * n, max_frames)


def _make_info(width, height, rotation, codec, source, times, fps: Fraction, indices, stride,
               subsampled_from, eff_stride: Fraction) -> VideoInfo:
    out_fps = float(fps / eff_stride)
    return VideoInfo(
        width=width, height=height, fps=out_fps, num_frames=len(indices),
        duration_s=len(indices) / out_fps, rotation=rotation, codec=codec, source=source,
        source_fps=float(fps), source_num_frames=len(times), source_duration_s=len(times) / float(fps),
        stride=stride, effective_stride=float(eff_stride), subsampled_from=subsampled_from,
    )


# ---- arrays and iterators ------------------------------------------------------------------------


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
                _check_pixels(frame.shape[1], frame.shape[0], max_pixels, label)
            frames.append(frame)
            if max_duration_s is not None:  # stop early: an endless generator would never finish
                _check_duration(len(frames) / fps - (start_s or 0.0) - 1 / fps, max_duration_s, label)
    if len(frames) == 0:
        raise VideoReadError(f"The {label} source has no frames; expected at least one (H, W, 3) frame.")
    height, width = frames[0].shape[:2]
    _check_pixels(width, height, max_pixels, label)
    times = np.arange(len(frames)) / fps
    indices, sub_from, eff = _select(times, rate, stride, start_s, end_s, max_frames, max_duration_s, label)
    info = _make_info(width, height, 0, "rawvideo", label, times, rate, indices, stride, sub_from, eff)

    def produce() -> Iterator[Frame]:
        for pos, i in enumerate(indices):
            yield pos, float(times[i]), np.ascontiguousarray(frames[i])  # validated lazily for arrays
    return VideoFrames(info, indices, times[indices], produce)


# ---- files ---------------------------------------------------------------------------------------


def _open_container(path: Path) -> av.container.InputContainer:
    """Open ``path`` with PyAV, raising ``VideoReadError`` unless it is a file with a video stream."""
    if not path.exists():
        raise VideoReadError(f"Video file not found: {path} (current folder: {Path.cwd()}). Check the path.")
    if not path.is_file():
        raise VideoReadError(f"{path} is not a file; pass the path of one video file (MP4, WebM, MOV, MKV).")
    if path.stat().st_size == 0:
        raise VideoReadError(f"Video file {path} is empty (0 bytes); the upload or copy probably failed.")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise VideoReadError(
            f"Cannot open {path} as a video ({reason}). Expected a video file such as MP4, WebM, MOV or MKV; "
            f"this one is corrupt, truncated (an MP4 cut before its index) or not a video. "
            f"If it plays in a video player, re-encode it: {_REENCODE}."
        ) from err
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):  # FFmpeg's still-image demuxers (png_pipe, jpeg_pipe...)
        container.close()
        raise VideoReadError(
            f"{path} is a still image ({fmt.removesuffix('_pipe')}), not a video. Provide a video file, or to "
            f"segment one image pass it as a 1-frame array: np.asarray(PIL.Image.open(path).convert('RGB'))[None]."
        )
    if not container.streams.video:
        found = ", ".join(s.type for s in container.streams) or "none"
        container.close()
        raise VideoReadError(f"{path} has no video stream (streams found: {found}). An audio-only or empty "
                             f"file cannot be segmented; provide a video file.")
    return container


def _orientation(frame: av.VideoFrame, metadata: dict) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """Clockwise rotation and the numpy transform to display orientation, as FFmpeg's autorotate does it
    (``fftools``: transpose/hflip/vflip chosen from the display matrix signs)."""
    side = frame.side_data.get(_SideDataType.DISPLAYMATRIX)
    m = struct.unpack("=9i", bytes(side)) if side is not None else None
    if m is not None and not (math.hypot(m[1], m[4]) and math.hypot(m[0], m[3])):
        m = None  # degenerate (all-zero) matrix: ignore it
    if m is not None:  # clockwise angle, as FFmpeg's av_display_rotation_get (which returns its negative)
        theta = math.degrees(math.atan2(m[1] / math.hypot(m[1], m[4]), m[0] / math.hypot(m[0], m[3])))
    else:  # legacy tag (clockwise), e.g. MKV 'ROTATE' or files from old muxers
        tag = {k.lower(): v for k, v in metadata.items()}.get("rotate", "0")
        try:
            theta = float(tag)
        except ValueError:
            theta = 0.0
    theta = round(theta) % 360
    quarter = (round(theta / 90) % 4) * 90
    if abs((theta - quarter + 180) % 360 - 180) > 2:
        warnings.warn(f"Rotation {theta} degrees is not a multiple of 90; using {quarter}.", stacklevel=3)
    ops: list[Callable[[np.ndarray], np.ndarray]] = []
    if quarter == 90:
        ops.append((lambda a: a.transpose(1, 0, 2)) if m and m[3] > 0 else (lambda a: np.rot90(a, -1)))
    elif quarter == 270:
        ops.append((lambda a: np.rot90(a, -1)[::-1]) if m and m[3] < 0 else (lambda a: np.rot90(a, 1)))
    elif quarter == 180:
        if m is None or m[0] < 0:
            ops.append(lambda a: a[:, ::-1])
        if m is None or m[4] < 0:
            ops.append(lambda a: a[::-1])
    elif m and m[4] < 0:
        ops.append(lambda a: a[::-1])

    def orient(array: np.ndarray) -> np.ndarray:
        for op in ops:
            array = op(array)
        return np.ascontiguousarray(array)  # downstream (torch.from_numpy) rejects negative strides
    return quarter, orient


@dataclass
class _Scan:
    """What one demux pass (no full decode) tells about a file."""

    pts: list[int] | None  # sorted presentation timestamps (stream time base); None if missing/duplicated
    times: np.ndarray  # (N,) seconds from the first frame
    fps: Fraction
    first: av.VideoFrame


def _scan(container, path: Path) -> _Scan:
    stream = container.streams.video[0]
    pts: list = []
    first, errors = None, 0
    try:
        for packet in container.demux(stream):
            if packet.size and not packet.is_discard:  # the final empty packet only flushes the decoder
                pts.append(packet.pts)
            if first is None and errors < _MAX_PROBE_DECODE_ERRORS:
                try:
                    frames = packet.decode()
                    first = frames[0] if frames else None
                except av.error.FFmpegError:
                    errors += 1
    except av.error.FFmpegError as err:
        raise VideoReadError(f"{path} could not be read past frame {len(pts)} ({err}); it is corrupt or "
                             f"truncated. Upload it again or re-encode it: {_REENCODE}.") from err
    if stream.frames and len(pts) < stream.frames:
        raise VideoReadError(
            f"{path} looks truncated: its header lists {stream.frames} frames but only {len(pts)} are in the "
            f"file ({path.stat().st_size:,} bytes). Upload or copy it again completely."
        )
    if not pts:
        raise VideoReadError(f"{path} has a video stream but no frames. Provide a video with at least one frame.")
    if first is None:
        raise VideoReadError(f"None of the {len(pts)} frames of {path} could be decoded (codec "
                             f"{stream.codec_context.name}); it is corrupt. Re-encode it: {_REENCODE}.")
    tb = stream.time_base
    if None in pts or len(set(pts)) < len(pts) or tb is None:
        rate = stream.average_rate or stream.guessed_rate or Fraction(DEFAULT_ARRAY_FPS)
        return _Scan(None, np.arange(len(pts)) / float(rate), Fraction(rate), first)
    pts.sort()
    span = (pts[-1] - pts[0]) * tb
    rate = stream.average_rate
    if span > 0:
        measured = (len(pts) - 1) / span
        # The container's own rate is exact (30000/1001) where timestamps are rounded (WebM: ms); keep it
        # unless the timestamps disagree (VFR, where it is often just a nominal value).
        if not rate or abs(rate - measured) > measured / 100:
            rate = measured
    rate = Fraction(rate or stream.guessed_rate or Fraction(DEFAULT_ARRAY_FPS))
    times = np.array([float((p - pts[0]) * tb) for p in pts])
    return _Scan(pts, times, rate, first)


def _open_file(path, stride, start_s, end_s, max_frames, limits) -> VideoFrames:
    max_pixels, max_duration_s = limits
    source = str(path)
    with _open_container(path) as container:
        stream = container.streams.video[0]
        _check_pixels(stream.codec_context.width, stream.codec_context.height, max_pixels, source)
        if container.duration and max_duration_s is not None:  # header duration: fail before demuxing
            whole = container.duration / av.time_base  # all streams, so leave slack; exact check after scan
            span = min(end_s or whole, whole) - (start_s or 0.0)
            if span > max_duration_s * 1.01 + 0.1:
                _check_duration(span, max_duration_s, source)
        scan = _scan(container, path)
        codec = stream.codec_context.name
        rotation, orient = _orientation(scan.first, dict(stream.metadata))
    coded = (scan.first.width, scan.first.height)
    _check_pixels(*coded, max_pixels, source)
    width, height = coded[::-1] if rotation in (90, 270) else coded
    indices, sub_from, eff = _select(scan.times, scan.fps, stride, start_s, end_s, max_frames, max_duration_s,
                                     source)
    info = _make_info(width, height, rotation, codec, source, scan.times, scan.fps, indices, stride,
                      sub_from, eff)

    def produce() -> Iterator[Frame]:
        yield from _decode(path, scan, indices, coded, orient)
    return VideoFrames(info, indices, scan.times[indices], produce)


def _decode(path: Path, scan: _Scan, indices: np.ndarray, coded: tuple[int, int],
            orient: Callable[[np.ndarray], np.ndarray]) -> Iterator[Frame]:
    """Decode ``path`` and yield the frames at ``indices`` (sorted source frame numbers)."""
    index_of = {p: i for i, p in enumerate(scan.pts)} if scan.pts is not None else None
    errors, pos, last = 0, 0, -1
    with _open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if index_of is not None and indices[0] > 0:  # skip to the keyframe before start_s
            container.seek(scan.pts[indices[0]], stream=stream, backward=True)
            last = None  # unknown until a frame with a known pts arrives
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                errors += 1  # a corrupt packet: skip it, keep the rest of the video
                continue
            for frame in frames:
                i = index_of.get(frame.pts) if index_of is not None else None
                if i is None:
                    if last is None:
                        continue
                    i = last + 1
                last = i
                while pos < len(indices) and indices[pos] < i:
                    pos += 1  # a wanted frame was lost to a corrupt packet
                if pos == len(indices):
                    break
                if indices[pos] == i:
                    # width/height: rescale if the stream changes size midway (browser WebM can)
                    rgb = frame.to_ndarray(format="rgb24", width=coded[0], height=coded[1])
                    yield pos, float(scan.times[i]), orient(rgb)
                    pos += 1
            if pos == len(indices):
                break
    if errors:
        warnings.warn(f"{errors} corrupt packet(s) of {path} could not be decoded and were skipped.",
                      stacklevel=2)


__all__ = ["DEFAULT_MAX_DURATION_S", "DEFAULT_MAX_PIXELS", "VideoFrames", "VideoInfo", "iter_video",
           "read_video"]
