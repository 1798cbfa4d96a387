"""Tests for the alpha videos of referdino_demo/io/video_writer.py: RGBA frames written as VP9 WebM (yuva420p) or
ProRes 4444 MOV, decoded back with PyAV (libvpx for VP9, whose alpha FFmpeg's own decoder drops): the alpha
equals what was written within codec error, one output frame per input frame, atomic writes, and the choice of
format where an encoder is missing.
"""

from fractions import Fraction

import av
import numpy as np
import pytest

from referdino_demo.errors import ConfigError, OutputError
from referdino_demo.io import VideoWriter, probe_video, write_video
from referdino_demo.io.video_writer import alpha_video_suffix


def rgba_frames(n, width=64, height=48):
    """(n, H, W, 4) uint8: a colour gradient; alpha a disc moving 2 px per frame with a 6 px linear soft edge,
    and frame i's id in the grey level of the top-left 16 x 16 block (opaque)."""
    yy, xx = np.mgrid[:height, :width]
    frames = np.empty((n, height, width, 4), np.uint8)
    for i in range(n):
        frames[i, ..., 0], frames[i, ..., 1], frames[i, ..., 2] = xx * 255 // width, yy * 255 // height, 90
        edge = 14 - np.hypot(yy - height / 2, xx - 20 - 2 * (i % 10))
        frames[i, ..., 3] = np.round(np.clip(0.5 + edge / 6, 0, 1) * 255)
        frames[i, :16, :16] = (16 + 8 * (i % 30),) * 3 + (255,)
    return frames


def decode_rgba(path):
    """(T, H, W, 4) uint8 frames of `path`, decoded with PyAV; VP9 with libvpx, which keeps the alpha.

    The alpha is read from the decoded alpha plane itself: swscale's yuva -> rgba conversion in PyAV 18's FFmpeg
    garbles the alpha of the last columns when the width is 2 or 4 more than a multiple of 16 (the file is right:
    its alpha plane decodes correctly)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.codec_context.name == "vp9":
            decoder = av.CodecContext.create("libvpx-vp9", "r")
            frames = [f for packet in container.demux(stream) for f in decoder.decode(packet)]
        else:
            frames = list(container.decode(stream))
        return np.stack([np.dstack([f.to_ndarray(format="rgb24"), alpha_plane(f)]) for f in frames])


def alpha_plane(frame):
    """(H, W) uint8 alpha of a yuva420p (8-bit) or yuva444p12le (ProRes 4444 decoded) frame."""
    plane, wide = frame.planes[3], frame.format.name.endswith("12le")
    values = np.frombuffer(bytes(plane), np.uint16 if wide else np.uint8)
    values = values.reshape(plane.height, -1)[:, :plane.width]
    return np.round(values / 4095 * 255).astype(np.uint8) if wide else values


def ids(frames):
    return [int(round((f[:16, :16, 0].mean() - 16) / 8)) for f in frames]


@pytest.mark.parametrize("n, fps", [(1, 10), (2, 30), (10, 10), (24, 24)])
def test_vp9_webm_keeps_alpha_and_every_frame(tmp_path, n, fps):
    frames = rgba_frames(n)
    path = write_video(tmp_path / "cut.webm", frames, fps)
    probe = probe_video(path)
    assert (probe.container, probe.codec, probe.pix_fmt, probe.alpha) == ("matroska,webm", "vp9", "yuva420p", True)
    assert (probe.width, probe.height, probe.num_frames, probe.fps) == (64, 48, n, fps)
    decoded = decode_rgba(path)
    assert decoded.shape == frames.shape and ids(decoded) == list(range(n))
    error = np.abs(decoded[..., 3].astype(int) - frames[..., 3])
    assert error.mean() < 1 and error.max() <= 16  # lossy, but close to the matte everywhere


def test_prores_4444_mov_keeps_alpha_within_one_level(tmp_path):
    frames = rgba_frames(12)
    path = write_video(tmp_path / "cut.mov", frames, Fraction(30000, 1001))
    probe = probe_video(path)
    assert (probe.codec, probe.alpha, probe.num_frames, probe.fps) == ("prores", True, 12, Fraction(30000, 1001))
    decoded = decode_rgba(path)
    assert np.abs(decoded[..., 3].astype(int) - frames[..., 3]).max() <= 1  # 8 -> 10 -> 12 -> 8 bit rounding
    assert np.abs(decoded[..., :3].astype(int) - frames[..., :3]).mean() < 1


def test_odd_sizes_are_padded_and_rgb_webm_has_no_alpha(tmp_path):
    frames = rgba_frames(3, width=65, height=47)
    path = write_video(tmp_path / "odd.webm", frames, 25)
    probe = probe_video(path)
    assert (probe.width, probe.height) == (66, 48)
    decoded = decode_rgba(path)
    assert np.abs(decoded[:, :47, :65, 3].astype(int) - frames[..., 3]).mean() < 1
    np.testing.assert_array_equal(decoded[:, :47, 65, 3], decoded[:, :47, 64, 3])  # padded column = last column
    probe = probe_video(write_video(tmp_path / "rgb.webm", frames[..., :3], 25))
    assert (probe.codec, probe.pix_fmt, probe.alpha, probe.num_frames) == ("vp9", "yuv420p", False, 3)


def test_a_failed_alpha_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="render failed"):
        with VideoWriter(tmp_path / "cut.webm", 10, (64, 48), alpha=True) as writer:
            for frame in rgba_frames(4):
                writer.write(frame)
            raise RuntimeError("render failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("call, error, message", [
    (lambda p: write_video(p / "cut.mp4", rgba_frames(1), 10), ConfigError,
     r"an MP4 \(H.264\) cannot hold an alpha channel; write cut.webm \(VP9 with alpha\) or cut.mov"),
    (lambda p: write_video(p / "cut.webm", rgba_frames(1), 10, crf=64), ConfigError,
     "crf must be in 0..63 for libvpx-vp9, got 64"),
    (lambda p: write_video(p / "cut.mov", rgba_frames(1), 10, crf=20), ConfigError,
     "prores_ks has no crf quality setting"),
    (lambda p: write_video(p / "cut.webm", [rgba_frames(1)[0], np.zeros((48, 64, 3), np.uint8)], 10), ConfigError,
     r"Expected a \(48, 64, 4\) uint8 RGBA frame"),
    (lambda p: write_video(p / "cut.webm", np.zeros((1, 48, 64, 2), np.uint8), 10), ConfigError,
     r"Expected \(T, H, W, 3\) RGB or \(T, H, W, 4\) RGBA frames"),
])
def test_invalid_alpha_writes_raise_and_leave_nothing(tmp_path, call, error, message):
    with pytest.raises(error, match=message):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_alpha_format_falls_back_to_prores_where_vp9_is_missing(tmp_path, monkeypatch):
    assert alpha_video_suffix() == ".webm"
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"libvpx-vp9"})
    assert alpha_video_suffix() == ".mov"
    with pytest.raises(OutputError, match="has no libvpx-vp9 encoder for cut.webm; write cut.mov instead"):
        VideoWriter(tmp_path / "cut.webm", 10, (64, 48), alpha=True)
    monkeypatch.setattr(av, "codecs_available", av.codecs_available - {"prores_ks"})
    with pytest.raises(OutputError, match="neither libvpx-vp9 nor prores_ks"):
        alpha_video_suffix()
    assert list(tmp_path.iterdir()) == []
