"""Write RGB frames as a video that browsers, Colab and Gradio play, and RGBA frames as a video that keeps their
alpha, with PyAV's bundled FFmpeg (no ffmpeg binary needed). The container follows the file name:

- `.mp4`, `.m4v`, `.mov`: H.264 yuv420p with `+faststart` (index before the media data, so playback starts
  before the download ends);
- `.webm`: VP9, yuv420p, or yuva420p with alpha (Chromium plays it with transparency);
- `.mov` with alpha: ProRes 4444, yuva444p10le (the editors' format; the fallback where VP9 is missing, see
  `alpha_video_suffix`).

Every file has one output frame per input frame at an exact rational rate. 4:2:0 needs even dimensions, so an odd
last column/row is *padded* by repeating the edge pixels (nothing is cropped away); the output is then one pixel
wider/taller than the input. With `audio` (an `io.audio.AudioTrack`) a file also carries the source's sound over
the time its frames cover (see `io/audio.py`: AAC or MP3 in MP4 and MOV, Opus or Vorbis in WebM).

The file is written under a hidden temporary name in the same folder and renamed on success, so a failed
or interrupted write never leaves a half-written file under the requested name.

`probe_video` reports what a file really contains (codec, pix_fmt, alpha, decoded frame count, exact fps).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from referdino_demo.errors import ConfigError, OutputError
from referdino_demo.io.audio import AudioTrack, add_audio
from referdino_demo.io.video_file import open_container, orientation

DEFAULT_CRF = 23  # x264's default: visually good, small files
# x264 speed preset: every redraw in the app re-encodes its videos. At 854x480, "veryfast" encoded 5.1 ms a frame
# against "medium"'s 14.4 (3x), with a file no larger at the same crf on the example clip.
DEFAULT_PRESET = "veryfast"
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".webm": "webm"}


@dataclass(frozen=True)
class _Codec:
    """An encoder and its settings; `max_crf` None: the codec has no quality scale to set."""

    encoder: str
    pix_fmt: str
    max_crf: int | None = None
    default_crf: int | None = None
    options: dict[str, str] = field(default_factory=dict)
    threads: int = 0  # 0: FFmpeg's choice


_H264 = _Codec("libx264", "yuv420p", 51, DEFAULT_CRF)
# b=0: constant quality; "good" at cpu-used 5 keeps the alpha plane within a few levels of the input on hard
# edges, where "realtime" rings by up to a quarter of the range
_VP9 = dict(max_crf=63, default_crf=30, options={"b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"})
# one thread: prores_ks' slice threads corrupt the alpha of the first pixels of some slices (FFmpeg in PyAV 18)
_PRORES_4444 = _Codec("prores_ks", "yuva444p10le", options={"profile": "4444", "alpha_bits": "16"}, threads=1)
_CODECS = {  # (container, alpha) -> codec
    ("mp4", False): _H264,
    ("mov", False): _H264,
    ("mov", True): _PRORES_4444,
    ("webm", False): _Codec("libvpx-vp9", "yuv420p", **_VP9),
    ("webm", True): _Codec("libvpx-vp9", "yuva420p", **_VP9),
}


def alpha_video_suffix() -> str:
    """The file suffix for a video with alpha that this PyAV can write: `.webm` (VP9), else `.mov` (ProRes 4444).

    Raises `OutputError` when its FFmpeg has neither encoder."""
    for suffix, codec in ((".webm", _CODECS["webm", True]), (".mov", _CODECS["mov", True])):
        if codec.encoder in av.codecs_available:
            return suffix
    raise OutputError("this PyAV's FFmpeg has neither libvpx-vp9 nor prores_ks, so it cannot write a video with "
                      "alpha; install the PyAV wheel from PyPI (`pip install av`), which bundles both")


def exact_frame_rate(fps: float | Fraction) -> Fraction:
    """`fps` as the exact rational rate to encode at.

    Ints, and Fractions with a denominator up to 1001, are kept as they are. Floats near an NTSC rate
    (`n * 1000 / 1001`, relative error under 2e-5) map to it: 29.97 and 29.97002997 -> 30000/1001,
    23.976 -> 24000/1001, 14.985 -> 15000/1001. Other floats go through `limit_denominator(1001)`
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
    """Context manager writing frames of one size to a video, one `write` per frame.

    Example::

        with VideoWriter("out.mp4", info.fps, (info.width, info.height)) as writer:
            for frame in frames:
                writer.write(frame)

    `path` ends in `.mp4`, `.m4v`, `.mov` or `.webm` (see the module docstring for the codec of each); its folder
    must exist, and an existing file is replaced on success. `fps` is the frame rate (see `exact_frame_rate`);
    `size` the `(width, height)` of the frames to be written, before even-size padding. With `alpha` the frames
    are `(H, W, 4)` uint8 RGBA and the alpha is kept (`.webm`: VP9, `.mov`: ProRes 4444; an MP4 cannot hold
    it), otherwise `(H, W, 3)` uint8 RGB. `crf` is the quality, lower is better and larger: 0..51 for H.264
    (default 23), 0..63 for VP9 (default 30); ProRes 4444 has none. `preset` is x264's speed/size trade-off
    (`"ultrafast"` .. `"veryslow"`); other codecs ignore it. `audio`: the source's sound to play along, from
    `audio.start_s` for as long as the frames written last (see `io/audio.py`); None, or a source without
    readable audio, gives a video without sound.

    After construction, `rate` is the exact `Fraction` frame rate (the stream time base is `1 / rate`),
    `output_size` the `(width, height)` in the file, rounded up to even numbers, and `frames_written` counts the
    frames written so far; `has_audio` says whether the file gets an audio stream.
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, size: tuple[int, int], *,
                 alpha: bool = False, crf: int | None = None, preset: str = DEFAULT_PRESET,
                 audio: AudioTrack | None = None):
        self.path = Path(path)
        fmt = _FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"VideoWriter writes H.264 MP4 or VP9 WebM; expected a path ending in .mp4, .m4v, "
                              f".mov or .webm, got {self.path.name!r}")
        codec = _CODECS.get((fmt, alpha))
        if codec is None:
            raise ConfigError(f"an MP4 (H.264) cannot hold an alpha channel; write {self.path.stem}.webm (VP9 with "
                              f"alpha) or {self.path.stem}.mov (ProRes 4444)")
        if codec.encoder not in av.codecs_available:
            raise OutputError(f"this PyAV's FFmpeg has no {codec.encoder} encoder for {self.path.name}; write "
                              f"{self.path.stem}{alpha_video_suffix() if alpha else '.mp4'} instead")
        width, height = (int(v) for v in size)
        if width <= 0 or height <= 0:
            raise ConfigError(f"size must be (width, height) > 0, got {size}")
        if crf is not None and codec.max_crf is None:
            raise ConfigError(f"{codec.encoder} has no crf quality setting; leave crf unset for {self.path.name}")
        crf = codec.default_crf if crf is None else crf
        if codec.max_crf is not None and not 0 <= crf <= codec.max_crf:
            raise ConfigError(f"crf must be in 0..{codec.max_crf} for {codec.encoder}, got {crf}")
        self.rate = exact_frame_rate(fps)
        self.size = (width, height)
        self.alpha = alpha
        self.output_size = (width + width % 2, height + height % 2)
        self.frames_written = 0
        self._audio = None
        options = dict(codec.options)
        if codec.max_crf is not None:
            options["crf"] = str(crf)
        if codec is _H264:
            options["preset"] = preset
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.part")
        self._container = av.open(str(self._tmp), "w", format=fmt,
                                  options={} if fmt == "webm" else {"movflags": "+faststart"})
        try:
            self._stream = self._container.add_stream(codec.encoder, rate=self.rate, options=options)
            self._stream.width, self._stream.height = self.output_size
            self._stream.pix_fmt = codec.pix_fmt
            self._stream.codec_context.time_base = 1 / self.rate  # pts = frame number, exact
            self._stream.codec_context.thread_count = codec.threads
            self._audio = None if audio is None else add_audio(self._container, fmt, audio)
        except Exception:
            self.abort()
            raise

    def write(self, frame: np.ndarray) -> None:
        """Encode one `(H, W, 3)` uint8 RGB frame, or `(H, W, 4)` RGBA with `alpha`, of the `size` given at
        construction."""
        if self._container is None:
            raise OutputError(f"VideoWriter for {self.path} is closed")
        frame = np.asarray(frame)
        channels = 4 if self.alpha else 3
        expected = (self.size[1], self.size[0], channels)
        if frame.shape != expected or frame.dtype != np.uint8:
            raise ConfigError(f"Expected a {expected} uint8 {'RGBA' if self.alpha else 'RGB'} frame "
                              f"(size={self.size} as (width, height)), got {frame.shape} {frame.dtype}")
        pad = ((0, self.output_size[1] - self.size[1]), (0, self.output_size[0] - self.size[0]), (0, 0))
        if any(p[1] for p in pad):
            frame = np.pad(frame, pad, mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgba" if self.alpha else "rgb24")
        video_frame.pts = self.frames_written
        video_frame.time_base = 1 / self.rate
        self._container.mux(self._stream.encode(video_frame))
        self.frames_written += 1
        if self._audio is not None:  # the sound of the frames so far, so that the muxer interleaves the two
            self._audio.write(float(self.frames_written / self.rate))

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def close(self) -> Path:
        """Flush the encoder, finish the file and move it to `path`; returns `path`."""
        if self._container is None:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise ConfigError(f"No frames were written to {self.path}; a video needs at least one frame")
        try:
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.finish(float(self.frames_written / self.rate))
            self._container.close()
        except Exception:
            self.abort()
            raise
        self._container = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary file; `path` is left untouched."""
        container, self._container = self._container, None
        if self._audio is not None:
            self._audio.close()
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
                *, crf: int | None = None, preset: str = DEFAULT_PRESET) -> Path:
    """Write `frames` to the video `path` at `fps` (see `VideoWriter`); returns the path.

    `frames` is a `(T, H, W, C)` uint8 array or an iterable of `(H, W, C)` frames: C = 3 for RGB, C = 4 for RGBA,
    whose alpha is kept (`.webm` or `.mov`)."""
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ConfigError(f"No frames to write to {path}; a video needs at least one frame")
    first = np.asarray(first)
    if first.ndim != 3 or first.shape[2] not in (3, 4):
        raise ConfigError(f"Expected (T, H, W, 3) RGB or (T, H, W, 4) RGBA frames, or (H, W, 3|4) items, got an "
                          f"item of shape {first.shape}")
    with VideoWriter(path, fps, (first.shape[1], first.shape[0]), alpha=first.shape[2] == 4, crf=crf,
                     preset=preset) as writer:
        writer.write(first)
        for frame in iterator:
            writer.write(frame)
    return Path(path)


@dataclass(frozen=True)
class VideoProbe:
    """What a video file contains, by decoding it.

    `container` is the demuxer name (`"mov,mp4,m4a,3gp,3g2,mj2"`, `"matroska,webm"`); `codec` and `pix_fmt`
    are those of the first video stream as decoded (`"h264"`, `"yuv420p"`; `"vp9"`, `"yuva420p"` for VP9 with
    alpha), and `alpha` says whether the decoded frames have an alpha channel. `width` and `height` are the coded
    size (before rotation); `fps` is the stream's average frame rate, exact (`Fraction(30000, 1001)`), `time_base`
    the stream time base. `num_frames` counts the frames actually decoded, `duration_s` is `num_frames / fps`,
    `rotation` the clockwise display rotation in degrees (see `VideoInfo.rotation`), and `timestamps_s` the
    `(num_frames,)` presentation time of each decoded frame, from the first one. `audio_codec` is the codec of the
    first audio stream (`"aac"`, `"opus"`), None without one.
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
    alpha: bool = False
    audio_codec: str | None = None


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Decode every frame of `path` and report codec, pix_fmt, alpha, size, exact fps, the frame count and the
    audio codec.

    Raises `VideoReadError` like `read_video` for missing, unreadable or non-video files."""
    path = Path(path)
    with open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        pts, rotation, pix_fmt = [], 0, stream.codec_context.pix_fmt
        for frame in iter_decoded(container, stream):
            if not pts:
                rotation, _ = orientation(frame, dict(stream.metadata))
                pix_fmt = frame.format.name
            pts.append(frame.pts)
        fps = stream.average_rate or stream.guessed_rate
        tb = stream.time_base
        first = pts[0] if pts else 0
        return VideoProbe(
            path=str(path), container=container.format.name, codec=stream.codec_context.name,
            pix_fmt=pix_fmt, width=stream.codec_context.width,
            height=stream.codec_context.height, fps=Fraction(fps), time_base=Fraction(tb),
            num_frames=len(pts), duration_s=len(pts) / float(fps) if fps else 0.0, rotation=rotation,
            timestamps_s=tuple(float((p - first) * tb) for p in pts if p is not None),
            alpha=bool(pix_fmt) and any(c.is_alpha for c in av.VideoFormat(pix_fmt).components),
            audio_codec=container.streams.audio[0].codec.canonical_name if container.streams.audio else None,
        )


def iter_decoded(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
    """Decode `stream` of `container`, alpha included: FFmpeg's own VP9 decoder drops the alpha that WebM stores
    beside each frame (`alpha_mode` 1), libvpx's keeps it (yuva420p frames)."""
    if stream.codec_context.name == "vp9" and stream.metadata.get("alpha_mode") == "1" \
            and "libvpx-vp9" in av.codecs_available:
        decoder = av.CodecContext.create("libvpx-vp9", "r")
        return (frame for packet in container.demux(stream) for frame in decoder.decode(packet))
    return container.decode(stream)


__all__ = ["DEFAULT_CRF", "VideoProbe", "VideoWriter", "alpha_video_suffix", "exact_frame_rate", "iter_decoded",
           "probe_video", "write_video"]
