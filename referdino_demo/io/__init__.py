"""Video input and output: read any video (file, array, iterator) as RGB frames; write browser-playable video.

`read_video` / `iter_video` return frames `(T, H, W, 3)` / `(H, W, 3)` uint8 RGB in display
orientation with a `VideoInfo`; `write_video` / `VideoWriter` write H.264 yuv420p MP4 with
`+faststart`, or with an alpha channel VP9 WebM (ProRes 4444 MOV where VP9 is missing, `alpha_video_suffix`);
`probe_video` reports what a file contains.
"""

from referdino_demo.io.video_reader import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MAX_PIXELS,
    VideoFrames,
    VideoInfo,
    iter_video,
    read_video,
)
from referdino_demo.io.video_writer import (
    DEFAULT_CRF,
    VideoProbe,
    VideoWriter,
    alpha_video_suffix,
    exact_frame_rate,
    probe_video,
    write_video,
)

__all__ = [
    "DEFAULT_CRF",
    "DEFAULT_MAX_DURATION_S",
    "DEFAULT_MAX_PIXELS",
    "VideoFrames",
    "VideoInfo",
    "VideoProbe",
    "VideoWriter",
    "alpha_video_suffix",
    "exact_frame_rate",
    "iter_video",
    "probe_video",
    "read_video",
    "write_video",
]
