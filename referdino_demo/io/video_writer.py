"""Write RGB frames as an MP4 that browsers, Colab and Gradio play: H.264 (libx264 bundled with PyAV, no
ffmpeg binary needed), yuv420p, even width and height, ``+faststart`` (index before the media data, so
playback starts before the download ends), one output frame per input frame at an exact rational rate.

Odd sizes: yuv420p needs even dimensions, so an odd last column/row is *padded* by repeating the edge
pixels (nothing is cropped away); the output is then one pixel wider/taller than the input.

The file is written under a hidden temporary name in the same folder and renamed on success, so a failed
or interrupted write never leaves a half-written file under the requested name.

``probe_video`` reports what a file really contains (codec, pix_fmt, decoded frame count, exact fps).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from referdino_demo.errors import ConfigError, OutputError
from referdino_demo.io.video_file import open_container, orientation

DEFAULT_CRF = 23  # x264's default: visually good, small files
DEFAULT_PRESET = "medium"
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}


def exact_frame_rate(fps: float | Fraction) -> Fraction:
    """``fps`` as the exact rational rate to encode at.

    Ints, and Fractions with a denominator up to 1001, are kept as they are. Floats near an NTSC rate
    (``n * 1000 / 1001``, relative error under 2e-5) map to it: 29.97 and 29.97002997 -> 30000/1001,
    23.976 -> 24000/1001, 14.985 -> 15000/1001. Other floats go through ``limit_denominator(1001)``
    (12.5 -> 25/2, 6.666... -> 20/3).
    """
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction, np.integer, np.floating)):
        raise ConfigError(f"fps must be a number, got {type(fps).__name__}")
    if not (math.isfinite(float(fps)) and fps > 0):
        raise ConfigError(f"fps must be a finite number > 0, got {fps}")
    exact = isinstance(fps, (int, Fraction, np.integer))
    rate = Fraction(int(fps)) if isinstance(fps, np.integer) else Fraction(fps if exact else float(fps))
    if rate.denominator == 1 or (exact and rate.denominator <= 1001):
        return rate
    ntsc = round(float(rate) * 1.001)
    if abs(float(rate) - ntsc / 1.001) <= 2e-5 * float(rate):
        return Fraction(ntsc * 1000, 1001)
    return rate.limit_denominator(1001)


class VideoWriter:
    """Context manager writing ``(H, W, 3)`` uint8 RGB frames to an H.264 MP4, one ``write`` per frame.

    Example::

        with VideoWriter("out.mp4", info.fps, (info.width, info.height)) as writer:
            for frame in frames:
                writer.write(frame)

    Args:
        path: destination ``.mp4`` (or ``.m4v``/``.mov``); its folder must exist. Replaced on success.
        fps: frame rate, see ``exact_frame_rate``.
        size: ``(width, height)`` of the frames to be written (before even-size padding).
        crf: x264 quality, 0 (lossless) .. 51; lower is better and larger.
        preset: x264 speed/size trade-off (``"ultrafast"`` .. ``"veryslow"``).

    Attributes:
        rate: the exact ``Fraction`` frame rate; the stream time base is ``1 / rate``.
        output_size: ``(width, height)`` in the file, rounded up to even numbers.
        frames_written: number of frames written so far.
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, size: tuple[int, int], *,
                 crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET):
        self.path = Path(path)
        fmt = _FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"VideoWriter writes H.264 MP4; expected a path ending in .mp4, .m4v or .mov, "
                             f"got {self.path.name!r}")
        width, height = (int(v) for v in size)
        if width <= 0 or height <= 0:
            raise ConfigError(f"size must be (width, height) > 0, got {size}")
        if not 0 <= crf <= 51:
            raise ConfigError(f"crf must be in 0..51, got {crf}")
        self.rate = exact_frame_rate(fps)
        self.size = (width, height)
        self.output_size = (width + width % 2, height + height % 2)
        self.frames_written = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.part")
        self._container = av.open(str(self._tmp), "w", format=fmt, options={"movflags": "+faststart"})
        try:
            self._stream = self._container.add_stream(
                "libx264", rate=self.rate, options={"crf": str(crf), "preset": preset})
            self._stream.width, self._stream.height = self.output_size
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = 1 / self.rate  # pts = frame number, exact
        except Exception:
            self.abort()
            raise

    def write(self, frame: np.ndarray) -> None:
        """Encode one ``(H, W, 3)`` uint8 RGB frame of the ``size`` given at construction."""
        if self._container is None:
            raise OutputError(f"VideoWriter for {self.path} is closed")
        frame = np.asarray(frame)
        expected = (self.size[1], self.size[0], 3)
        if frame.shape != expected or frame.dtype != np.uint8:
            raise ConfigError(f"Expected a {expected} uint8 RGB frame (size={self.size} as (width, height)), "
                             f"got {frame.shape} {frame.dtype}")
        pad = ((0, self.output_size[1] - self.size[1]), (0, self.output_size[0] - self.size[0]), (0, 0))
        if any(p[1] for p in pad):
            frame = np.pad(frame, pad, mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.frames_written
        video_frame.time_base = 1 / self.rate
        self._container.mux(self._stream.encode(video_frame))
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, finish the file and move it to ``path``; returns ``path``."""
        if self._container is None:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise ConfigError(f"No frames were written to {self.path}; a video needs at least one frame")
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
        except Exception:
            self.abort()
            raise
        self._container = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary file; ``path`` is left untouched."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away anyway
                pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: float | Fraction,
                *, crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET) -> Path:
    """Write ``frames`` — a ``(T, H, W, 3)`` uint8 RGB array or an iterable of ``(H, W, 3)`` frames — to
    an H.264 MP4 at ``fps`` (see ``VideoWriter``). Returns the path."""
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ConfigError(f"No frames to write to {path}; a video needs at least one frame")
    first = np.asarray(first)
    if first.ndim != 3:
        raise ConfigError(f"Expected (T, H, W, 3) frames or (H, W, 3) items, got an item of shape {first.shape}")
    with VideoWriter(path, fps, (first.shape[1], first.shape[0]), crf=crf, preset=preset) as writer:
        writer.write(first)
        for frame in iterator:
            writer.write(frame)
    return Path(path)


@dataclass(frozen=True)
class VideoProbe:
    """What a video file contains, by decoding it.

    Attributes:
        path: the file.
        container: demuxer name (``"mov,mp4,m4a,3gp,3g2,mj2"``, ``"matroska,webm"``).
        codec, pix_fmt: of the first video stream (``"h264"``, ``"yuv420p"``).
        width, height: coded size (before rotation).
        fps: the stream's average frame rate, exact (``Fraction(30000, 1001)``).
        time_base: the stream time base.
        num_frames: frames actually decoded.
        duration_s: ``num_frames / fps``.
        rotation: clockwise display rotation in degrees (see ``VideoInfo.rotation``).
        timestamps_s: ``(num_frames,)`` presentation time of each decoded frame, from the first one.
    """

    path: str
    container: str
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    num_frames: int
    duration_s: float
    rotation: int
    timestamps_s: tuple[float, ...]


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Decode every frame of ``path`` and report codec, pix_fmt, size, exact fps and the frame count.

    Raises ``VideoReadError`` like ``read_video`` for missing, unreadable or non-video files."""
    path = Path(path)
    with open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        pts, rotation = [], 0
        for frame in container.decode(stream):
            if not pts:
                rotation, _ = orientation(frame, dict(stream.metadata))
            pts.append(frame.pts)
        fps = stream.average_rate or stream.guessed_rate
        tb = stream.time_base
        first = pts[0] if pts else 0
        return VideoProbe(
            path=str(path), container=container.format.name, codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt, width=stream.codec_context.width,
            height=stream.codec_context.height, fps=Fraction(fps), time_base=Fraction(tb),
            num_frames=len(pts), duration_s=len(pts) / float(fps) if fps else 0.0, rotation=rotation,
            timestamps_s=tuple(float((p - first) * tb) for p in pts if p is not None),
        )


__all__ = ["DEFAULT_CRF", "VideoProbe", "VideoWriter", "exact_frame_rate", "probe_video", "write_video"]
