"""Tests for referdino_demo/io/video_writer.py: what browsers need (H.264, yuv420p, even size, faststart),
exact frame counts and rates, atomic writes. Inputs are generated in memory or with PyAV in tmp_path. Videos with
alpha: test_alpha_video.py."""

import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from referdino_demo.errors import ConfigError, VideoReadError
from referdino_demo.io import VideoWriter, exact_frame_rate, probe_video, read_video, write_video


def frames_with_ids(n, width=64, height=48):
    """(n, H, W, 3) uint8: frame i is a flat grey 16 + 8 * (i % 30) with a red top-left square."""
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i] = 16 + 8 * (i % 30)
        frames[i, :8, :8] = (255, 0, 0)
    return frames


def ids(frames):
    return [int(round((f[f.shape[0] // 2, f.shape[1] // 2].mean() - 16) / 8)) for f in frames]


def top_level_boxes(path):
    """Types of the top-level MP4 boxes in file order (each box: 4-byte size, 4-byte type)."""
    data, at, boxes = path.read_bytes(), 0, []
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if size == 1:  # 64-bit size follows
            size = struct.unpack(">Q", data[at + 8:at + 16])[0]
        boxes.append(kind.decode("latin-1"))
        if size < 8:
            break
        at += size
    return boxes


def test_browser_playable_h264_with_faststart(tmp_path):
    path = write_video(tmp_path / "out.mp4", frames_with_ids(24), 24)
    probe = probe_video(path)
    assert (probe.codec, probe.pix_fmt) == ("h264", "yuv420p")
    assert (probe.width, probe.height, probe.num_frames, probe.fps) == (64, 48, 24, 24)
    boxes = top_level_boxes(path)
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat")  # index first: playback starts while downloading


@pytest.mark.parametrize("n, fps", [(1, 10), (2, 30), (9, 10), (10, 10), (23, 24), (24, 24), (48, 24)])
def test_exactly_one_output_frame_per_input_frame(tmp_path, n, fps):
    # moviepy drops the last frame for some of these counts (10 @ 10 fps, 24 @ 24 fps)
    path = write_video(tmp_path / "count.mp4", frames_with_ids(n), fps, crf=0)
    info, frames = read_video(path)
    assert probe_video(path).num_frames == n and ids(frames) == [i % 30 for i in range(n)]
    assert info.duration_s == pytest.approx(n / fps)


def test_29_97_is_written_as_30000_over_1001_with_exact_timestamps(tmp_path):
    path = write_video(tmp_path / "ntsc.mp4", frames_with_ids(12), 29.97)
    probe = probe_video(path)
    assert probe.fps == Fraction(30000, 1001)
    steps = np.diff(probe.timestamps_s)
    np.testing.assert_allclose(steps, 1001 / 30000, rtol=0, atol=1e-9)  # constant, exact spacing
    assert probe.num_frames == 12


def test_rate_after_stride_and_subsampling_round_trips(tmp_path):
    source = write_video(tmp_path / "src.mp4", frames_with_ids(30), Fraction(30000, 1001))
    info, frames = read_video(source, stride=2)
    probe = probe_video(write_video(tmp_path / "strided.mp4", frames, info.fps))
    assert probe.fps == Fraction(15000, 1001) and probe.num_frames == 15
    info, frames = read_video(source, max_frames=4)  # 30 -> 4: every 7.5 frames
    probe = probe_video(write_video(tmp_path / "budget.mp4", frames, info.fps))
    assert probe.fps == Fraction(4000, 1001) and probe.num_frames == 4
    assert probe.duration_s == pytest.approx(30 * 1001 / 30000)  # same length as the source


def test_odd_size_is_padded_by_edge_replication(tmp_path):
    smooth = np.zeros((3, 47, 65, 3), np.uint8)  # smooth gradients survive yuv420p nearly unchanged
    y, x = np.mgrid[0:47, 0:65]
    smooth[..., 0], smooth[..., 1], smooth[..., 2] = x * 3, y * 5, 100
    path = write_video(tmp_path / "odd.mp4", smooth, 25, crf=0)
    probe = probe_video(path)
    assert (probe.width, probe.height, probe.pix_fmt) == (66, 48, "yuv420p")
    _, out = read_video(path)
    assert out.shape == (3, 48, 66, 3)
    assert np.abs(out[:, :47, :65].astype(int) - smooth).mean() < 2  # nothing cropped or shifted
    assert np.abs(out[:, :47, 65].astype(int) - smooth[:, :, 64]).mean() < 3  # padded column = last column
    assert np.abs(out[:, 47, :65].astype(int) - smooth[:, 46]).mean() < 3  # padded row = last row


def test_video_writer_context_manager_accepts_a_generator_of_frames(tmp_path):
    with VideoWriter(tmp_path / "stream.mp4", 12.5, (64, 48)) as writer:
        for frame in frames_with_ids(5):
            writer.write(frame)
        assert writer.frames_written == 5 and writer.output_size == (64, 48)
    probe = probe_video(tmp_path / "stream.mp4")
    assert probe.fps == Fraction(25, 2) and probe.num_frames == 5
    path = write_video(tmp_path / "gen.mp4", (f for f in frames_with_ids(3)), 10)
    assert probe_video(path).num_frames == 3


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "result.mp4"
    with pytest.raises(RuntimeError, match="render failed"):
        with VideoWriter(target, 10, (64, 48), preset="ultrafast") as writer:
            for frame in frames_with_ids(60):  # enough for x264 to emit packets: data is on disk
                writer.write(frame)
            partial = [p.name for p in tmp_path.iterdir()]
            assert len(partial) == 1 and partial[0].startswith(".result.mp4.") and partial[0].endswith(".part")
            raise RuntimeError("render failed")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file
    write_video(target, frames_with_ids(2), 10)
    with pytest.raises(ConfigError, match=r"Expected a \(48, 64, 3\) uint8 RGB frame"):
        write_video(target, [frames_with_ids(1)[0], np.zeros((40, 64, 3), np.uint8)], 10)
    assert [p.name for p in tmp_path.iterdir()] == ["result.mp4"]
    assert probe_video(target).num_frames == 2  # the earlier complete file is untouched


def test_mov_without_alpha_is_h264(tmp_path):
    probe = probe_video(write_video(tmp_path / "out.mov", frames_with_ids(3), 10))
    assert (probe.codec, probe.pix_fmt, probe.alpha, probe.num_frames) == ("h264", "yuv420p", False, 3)


def test_success_replaces_an_existing_file(tmp_path):
    target = tmp_path / "result.mp4"
    write_video(target, frames_with_ids(2), 10)
    write_video(target, frames_with_ids(6), 10)
    assert probe_video(target).num_frames == 6 and [p.name for p in tmp_path.iterdir()] == ["result.mp4"]


@pytest.mark.parametrize("call, message", [
    (lambda p: write_video(p / "a.mp4", [], 10), "No frames to write"),
    (lambda p: VideoWriter(p / "a.mp4", 10, (64, 48)).close(), "No frames were written"),
    (lambda p: write_video(p / "a.mp4", frames_with_ids(1).astype(np.float32), 10), "uint8"),
    (lambda p: write_video(p / "a.avi", frames_with_ids(1), 10), r"ending in .mp4, .m4v, .mov or .webm"),
    (lambda p: write_video(p / "a.mp4", frames_with_ids(1), 10, crf=52), "crf must be in 0..51 for libx264"),
    (lambda p: write_video(p / "a.mp4", frames_with_ids(1), 0), "fps must be a finite number > 0"),
    (lambda p: write_video(p / "a.mp4", frames_with_ids(1), float("nan")), "fps must be a finite number"),
    (lambda p: write_video(p / "a.mp4", frames_with_ids(1), float("inf")), "fps must be a finite number"),
])
def test_invalid_writes_raise_and_leave_nothing(tmp_path, call, message):
    with pytest.raises(ConfigError, match=message):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps, rate", [
    (29.97, Fraction(30000, 1001)),
    (30000 / 1001, Fraction(30000, 1001)),
    (23.976, Fraction(24000, 1001)),
    (59.94, Fraction(60000, 1001)),
    (30000 / 1001 / 2, Fraction(15000, 1001)),
    (30000 / 1001 / 4, Fraction(7500, 1001)),
    (12.5, Fraction(25, 2)),
    (20 / 3, Fraction(20, 3)),
    (30, Fraction(30)),
    (25.0, Fraction(25)),
    (np.float32(24.0), Fraction(24)),
    (Fraction(2997, 100), Fraction(2997, 100)),  # an explicit Fraction is taken as meant
])
def test_exact_frame_rate(fps, rate):
    assert exact_frame_rate(fps) == rate


def test_probe_reports_rotation_and_rejects_non_videos(tmp_path):
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(-90)  # PyAV counts counter-clockwise: this is 90 degrees clockwise
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frames_with_ids(1)[0], format="rgb24")))
        container.mux(stream.encode(None))
    probe = probe_video(path)
    assert (probe.rotation, probe.width, probe.height, probe.num_frames) == (90, 64, 48, 1)
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(VideoReadError, match="Cannot open"):
        probe_video(tmp_path / "notes.mp4")
