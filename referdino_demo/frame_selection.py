"""Which frames of a video are segmented, as one value that the app, the notebook panel and the CLI build and
check once, then pass on to the reader and to `ReferDinoPredictor.segment`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import ConfigError
from .io.clip import DEFAULT_ARRAY_FPS, DEFAULT_MAX_DURATION_S, DEFAULT_MAX_PIXELS
from .io.video_reader import VideoFrames, VideoSource, iter_video
from .options import check_option


@dataclass(frozen=True)
class FrameSelection:
    """The frames to read and the limits a video must be within (the rules are in `io/video_reader.py`).

    `stride` keeps every stride-th decoded frame of the time range `[start_s, end_s)` (seconds from the first
    frame); more than `max_frames` frames are subsampled evenly to exactly that many. `max_duration_s` is the
    longest selected time range and `max_pixels` the largest frame (width x height) accepted, None for no limit;
    `fps` is the frame rate of arrays and iterators (files carry their own). Every value is checked when the
    selection is made (`options.OPTIONS`), so a selection that exists is a valid one.
    """

    stride: int = 1
    start_s: float | None = None
    end_s: float | None = None
    max_frames: int | None = None
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    fps: float = DEFAULT_ARRAY_FPS

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, check_option(field.name, getattr(self, field.name)))
        if self.end_s is not None and self.end_s <= (self.start_s or 0.0):
            raise ConfigError(f"end_s must be after start_s, got start_s={self.start_s}, end_s={self.end_s}")

    @classmethod
    def build(cls, selection: "FrameSelection | None" = None, **options) -> "FrameSelection":
        """`selection`, or one made of the keyword arguments (the fields above); both at once is an error."""
        unknown = sorted(set(options) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown frame option {', '.join(unknown)}; the frame options are "
                              f"{', '.join(field.name for field in dataclasses.fields(cls))}")
        if selection is None:
            return cls(**options)
        if options:
            raise ConfigError(f"pass either a FrameSelection or frame options ({', '.join(sorted(options))}), not "
                              "both")
        if not isinstance(selection, cls):
            raise ConfigError(f"selection must be a FrameSelection, got {type(selection).__name__}")
        return selection

    def open(self, video: VideoSource) -> VideoFrames:
        """`video` opened and checked with this selection; frames are decoded only while iterating the result."""
        return iter_video(video, **dataclasses.asdict(self))
