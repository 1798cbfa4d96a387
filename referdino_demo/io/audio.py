"""The source's sound in a rendered video: the audio of the file the frames were read from, over the time the
rendered frames cover, muxed beside the video by `VideoWriter` (its `audio` argument, an `AudioTrack`).

Which part: a rendered video plays at the rate of the processed frames, `source fps / effective stride`
(`io/video_reader.py`), so it lasts as long as the stretch of source time its frames cover, whatever the stride.
It carries the source's audio from the time of the first processed frame for as long as the video plays
(`frames written / fps`): the sound a viewer heard at that moment of the source, at normal speed. With a stride
on a constant-rate source each frame shows exactly when its sound plays; where the `max_frames` budget picked
unevenly spaced frames, each is within one source frame of it (on a variable-rate source, within what its rate
varies).

How: the packets are copied unchanged when the container takes the source's codec in a form browsers play (AAC or
MP3 into MP4/MOV, Opus or Vorbis into WebM). A copy keeps the packets that start inside that stretch, each at its
own time, so the sound stays in sync but starts up to one packet late and ends within one packet of the video's
end (AAC: 1024 samples, 21 ms at 48 kHz; Opus: 20 ms). Any other codec is decoded, cut to the sample and encoded:
AAC for MP4 and MOV, Opus at 48 kHz for WebM, at most two channels (more are mixed down to stereo).

A source without audio, or whose audio cannot be read, gives a video without audio: logged, never an error. The
video frames are the same either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .clip import VideoFrames
from .frame_cache import FrameCache

log = logging.getLogger(__name__)

# container -> the audio codecs copied into it (browsers play them there), and the encoder for any other
_COPIED = {"mp4": {"aac", "mp3"}, "mov": {"aac", "mp3"}, "webm": {"opus", "vorbis"}}
_ENCODER = {"mp4": "aac", "mov": "aac", "webm": "libopus"}
_WARM_UP_S = 0.1  # decoded before the start and thrown away: AAC's first frame after a cut needs the one before


@dataclass(frozen=True)
class AudioTrack:
    """The audio of the video file `path` from `start_s` seconds after its first video frame on."""

    path: Path
    start_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, frames: VideoFrames | FrameCache | None) -> AudioTrack | None:
        """The audio that goes with the processed frames `frames`: that of the file a `VideoFrames` (or the
        `FrameCache` of one) was read from, from its first frame's time; None for frames of an array or iterator."""
        frames = frames.source if isinstance(frames, FrameCache) else frames
        if not isinstance(frames, VideoFrames) or not len(frames) or frames.info.source in ("array", "iterator"):
            return None
        return cls(frames.info.source, float(frames.timestamps_s[0]))


def add_audio(container: av.container.OutputContainer, fmt: str, track: AudioTrack) -> SourceAudio | None:
    """A new audio stream of `container` (an FFmpeg format of `_COPIED`, nothing written yet) for `track`, or None
    when its file has no audio that can be read (logged)."""
    try:
        source = av.open(str(track.path))
    except (av.error.FFmpegError, OSError) as err:
        log.info("rendering without audio: cannot open %s (%s)", track.path.name, err)
        return None
    try:
        return SourceAudio(source, container, fmt, track.start_s)
    except (LookupError, av.error.FFmpegError, ValueError) as err:
        source.close()
        log.info("rendering without audio: %s %s", track.path.name, err)
        return None


class SourceAudio:
    """A source's audio stream being muxed into an output beside its video: `write(until_s)` as the video
    advances, `finish(end_s)` when it ends (the output's times, in seconds from its first frame)."""

    def __init__(self, source: av.container.InputContainer, container: av.container.OutputContainer, fmt: str,
                 start_s: float):
        if not source.streams.audio:
            raise LookupError("has no audio stream")
        self._source = source
        stream = source.streams.audio[0]
        video = source.streams.video[0] if source.streams.video else None
        first = float(video.start_time * video.time_base) if video and video.start_time is not None else 0.0
        self._start = first + start_s  # the output's time 0 in the source's time
        self._copy = stream.codec.canonical_name in _COPIED[fmt]
        self._items = self._packets(stream) if self._copy else self._frames(stream)
        self._next = next(self._items, None)  # a stream that gives nothing is left out, not added empty
        if self._next is None:
            raise LookupError("has no audio after the first processed frame")
        if self._copy:
            self.stream = container.add_stream_from_template(stream)
        else:
            encoder = _ENCODER[fmt]
            rate = stream.sample_rate if stream.sample_rate in av.Codec(encoder, "w").audio_rates else 48000
            layout = stream.layout.name if stream.channels <= 2 else "stereo"
            self.stream = container.add_stream(encoder, rate=rate, layout=layout)

    def write(self, until_s: float) -> None:
        """Mux the sound that ends by `until_s`."""
        self._mux(lambda start, end: end <= until_s, until_s=None)

    def finish(self, end_s: float) -> None:
        """Mux the rest of the sound up to `end_s` (decoded sound cut there), flush the encoder, close the source."""
        try:
            self._mux(lambda start, end: start < end_s, until_s=end_s, flush=not self._copy)
        finally:
            self.close()

    def close(self) -> None:
        self._next = None
        self._source.close()

    def _mux(self, wanted: Callable[[float, float], bool], until_s: float | None, flush: bool = False) -> None:
        """Mux the items that are `wanted(start, end)`, in order, decoded ones cut at `until_s`; then with `flush`
        what the encoder holds."""
        try:
            while self._next is not None and wanted(self._next[0], self._next[1]):
                start, end, item = self._next
                if self._copy:
                    item.stream = self.stream
                    self.stream.container.mux(item)
                elif (frame := _cut(item, start, end, until_s)) is not None:
                    self.stream.container.mux(self.stream.encode(frame))
                self._next = next(self._items, None)
            if flush:
                self.stream.container.mux(self.stream.encode(None))
        except av.error.FFmpegError as err:  # damaged audio: the video goes on, its sound stops here
            log.info("the audio of %s stops early: %s", Path(self._source.name).name, err)
            self._next = None

    def _packets(self, stream: av.AudioStream) -> Iterator[tuple[float, float, av.Packet]]:
        """(start, end, packet) in output seconds, the packets starting from the output's time 0 on, their
        timestamps moved to it."""
        shift, last = round(self._start / stream.time_base), None
        for packet in self._source.demux(stream):
            if packet.pts is None or not packet.size or (last is not None and packet.pts <= last):
                continue  # the demuxer's closing empty packet, or one out of order that a muxer refuses
            last = packet.pts
            start = float(packet.pts * stream.time_base) - self._start
            if start >= 0:
                packet.pts = packet.dts = packet.pts - shift  # audio has no reordering: dts = pts
                yield start, start + float((packet.duration or 0) * stream.time_base), packet

    def _frames(self, stream: av.AudioStream) -> Iterator[tuple[float, float, av.AudioFrame]]:
        """(start, end, frame) in output seconds, the decoded frames that end after the output's time 0."""
        for packet in self._source.demux(stream):
            if packet.pts is not None and float((packet.pts + (packet.duration or 0)) * stream.time_base) < \
                    self._start - _WARM_UP_S:
                continue  # long before the start: not even decoded
            try:
                frames = packet.decode()
            except av.error.FFmpegError as err:
                log.debug("skipped an audio packet of %s that does not decode: %s", Path(self._source.name).name,
                          err)
                continue
            for frame in frames:
                if frame.pts is not None:
                    start = float(frame.pts * frame.time_base) - self._start
                    end = start + frame.samples / frame.sample_rate
                    if end > 0:
                        yield start, end, frame


def _cut(frame: av.AudioFrame, start: float, end: float, until_s: float | None) -> av.AudioFrame | None:
    """The samples of `frame` (from `start` to `end` output seconds) in `[0, until_s)`, timed in output samples;
    None when none is."""
    rate = frame.sample_rate
    first = max(0, round(-start * rate))
    last = frame.samples if until_s is None or end <= until_s else round((until_s - start) * rate)
    if last <= first:
        return None
    if (first, last) != (0, frame.samples):
        channels = 1 if frame.format.is_planar else frame.layout.nb_channels  # packed: samples interleaved
        array = frame.to_ndarray()[:, first * channels:last * channels]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(array), format=frame.format.name,
                                           layout=frame.layout.name)
        frame.sample_rate = rate
    frame.pts = round(start * rate) + first
    frame.time_base = Fraction(1, rate)
    return frame


__all__ = ["AudioTrack", "SourceAudio", "add_audio"]
