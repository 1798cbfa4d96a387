"""Reading video files with PyAV: a demux-only scan (packet timestamps; the first frames decoded for the
orientation), so that missing, corrupt, truncated, audio-only, still-image or over-limit files fail before any
heavy work; then decoding only the selected frames, in display orientation."""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.sidedata.sidedata import Type as _SideDataType

from referdino_demo.errors import VideoReadError
from referdino_demo.io.clip import (DEFAULT_ARRAY_FPS, REENCODE, Frame, VideoFrames, check_duration, check_pixels,
                                    make_info, select_frames)

_MAX_PROBE_DECODE_ERRORS = 100  # give up looking for a first decodable frame after this many bad packets



def open_container(path: Path) -> av.container.InputContainer:
    """Open `path` with PyAV, raising `VideoReadError` unless it is a file with a video stream."""
    if not path.exists():
        raise VideoReadError(f"Video file not found: {path.name}. Check the path.")
    if not path.is_file():
        raise VideoReadError(f"{path.name} is not a file; pass the path of one video file (MP4, WebM, MOV, MKV).")
    if path.stat().st_size == 0:
        raise VideoReadError(f"Video file {path.name} is empty (0 bytes); the upload or copy probably failed.")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise VideoReadError(
            f"Cannot open {path.name} as a video ({reason}). Expected a video file such as MP4, WebM, MOV or MKV; "
            f"this one is corrupt, truncated (an MP4 cut before its index) or not a video. "
            f"If it plays in a video player, re-encode it: {REENCODE}."
        ) from err
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):  # FFmpeg's still-image demuxers (png_pipe, jpeg_pipe...)
        container.close()
        raise VideoReadError(
            f"{path.name} is a still image ({fmt.removesuffix('_pipe')}), not a video. Provide a video file, or to "
            f"segment one image pass it as a 1-frame array: np.asarray(PIL.Image.open(path).convert('RGB'))[None]."
        )
    if not container.streams.video:
        found = ", ".join(s.type for s in container.streams) or "none"
        container.close()
        raise VideoReadError(f"{path.name} has no video stream (streams found: {found}). An audio-only or empty "
                             f"file cannot be segmented; provide a video file.")
    return container


def orientation(frame: av.VideoFrame, metadata: dict) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """Clockwise rotation and the numpy transform to display orientation, as FFmpeg's autorotate does it
    (`fftools`: transpose/hflip/vflip chosen from the display matrix signs)."""
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
        raise VideoReadError(f"{path.name} could not be read past frame {len(pts)} ({err}); it is corrupt or "
                             f"truncated. Upload it again or re-encode it: {REENCODE}.") from err
    if stream.frames and len(pts) < stream.frames:
        raise VideoReadError(
            f"{path.name} looks truncated: its header lists {stream.frames} frames but only {len(pts)} are in the "
            f"file ({path.stat().st_size:,} bytes). Upload or copy it again completely."
        )
    if not pts:
        raise VideoReadError(f"{path.name} has a video stream but no frames. Provide a video with at least one frame.")
    if first is None:
        raise VideoReadError(f"None of the {len(pts)} frames of {path.name} could be decoded (codec "
                             f"{stream.codec_context.name}); it is corrupt. Re-encode it: {REENCODE}.")
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


def open_file(path, stride, start_s, end_s, max_frames, limits) -> VideoFrames:
    max_pixels, max_duration_s = limits
    source = path.name  # messages name the file, never the folder it is in (a server path in the app)
    with open_container(path) as container:
        stream = container.streams.video[0]
        check_pixels(stream.codec_context.width, stream.codec_context.height, max_pixels, source)
        if container.duration and max_duration_s is not None:  # header duration: fail before demuxing
            whole = container.duration / av.time_base  # all streams, so leave slack; exact check after scan
            span = min(end_s or whole, whole) - (start_s or 0.0)
            if span > max_duration_s * 1.01 + 0.1:
                check_duration(span, max_duration_s, source)
        scan = _scan(container, path)
        codec = stream.codec_context.name
        rotation, orient = orientation(scan.first, dict(stream.metadata))
    coded = (scan.first.width, scan.first.height)
    check_pixels(*coded, max_pixels, source)
    width, height = coded[::-1] if rotation in (90, 270) else coded
    indices, sub_from, eff = select_frames(scan.times, scan.fps, stride, start_s, end_s, max_frames, max_duration_s,
                                     source)
    info = make_info(width, height, rotation, codec, str(path), scan.times, scan.fps, indices, stride,
                      sub_from, eff)

    def produce() -> Iterator[Frame]:
        yield from _decode(path, scan, indices, coded, orient)
    return VideoFrames(info, indices, scan.times[indices], produce)


def _decode(path: Path, scan: _Scan, indices: np.ndarray, coded: tuple[int, int],
            orient: Callable[[np.ndarray], np.ndarray]) -> Iterator[Frame]:
    """Decode `path` and yield the frames at `indices` (sorted source frame numbers)."""
    index_of = {p: i for i, p in enumerate(scan.pts)} if scan.pts is not None else None
    errors, pos, last = 0, 0, -1
    with open_container(path) as container:
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
        warnings.warn(f"{errors} corrupt packet(s) of {path.name} could not be decoded and were skipped.",
                      stacklevel=2)
