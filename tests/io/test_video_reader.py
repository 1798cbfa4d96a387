"""Tests for reading videos (referdino_demo/io/video_reader.py, video_file.py, clip.py). Every video is generated
with PyAV in tmp_path."""

import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from referdino_demo.errors import ConfigError, InputLimitError, VideoReadError
from referdino_demo.io import VideoInfo, iter_video, read_video
from referdino_demo.io.video_reader import DecodeCounts, decode_counts
from referdino_demo.io import video_file

_CODEC_OPTIONS = {  # (near) lossless so frame ids and orientation survive compression
    "libx264": {"qp": "0"},
    "libvpx": {"crf": "4", "b:v": "2M"},
    "libvpx-vp9": {"lossless": "1"},
}


def pattern(i, width=64, height=48):
    """(H, W, 3) uint8: R grows left->right, G top->bottom (so every rotation/flip differs), and a centre
    patch whose grey level 16 + 8 * i identifies the frame (the centre stays put under rotation)."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = x * 255 // (width - 1)
    frame[..., 1] = y * 255 // (height - 1)
    frame[..., 2] = 128
    cy, cx = height // 2, width // 2
    frame[cy - 6:cy + 6, cx - 6:cx + 6] = 16 + 8 * i
    return frame


def frame_ids(frames):
    """Frame id of each (H, W, 3) frame, read from its centre patch."""
    out = []
    for frame in frames:
        cy, cx = frame.shape[0] // 2, frame.shape[1] // 2
        out.append(int(round((frame[cy - 3:cy + 3, cx - 3:cx + 3].mean() - 16) / 8)))
    return out


def encode(path, n=30, *, rate=30, size=(64, 48), codec="libx264", pts=None, time_base=None,
           rotation=None, hflip=False, metadata=None, options=None, container_options=None):
    """Write ``n`` pattern frames; ``pts``/``time_base`` give irregular timestamps (VFR)."""
    width, height = size
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate, options={**_CODEC_OPTIONS[codec], **(options or {})})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None or hflip:
            stream.set_display_rotation(rotation or 0, hflip=hflip)  # display matrix side data
        stream.metadata.update(metadata or {})
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def clip30(tmp_path_factory):
    """30 frames, 64x48, 30 fps, H.264 in MP4, keyframe every 5 frames (so seeking really moves)."""
    return encode(tmp_path_factory.mktemp("v") / "clip30.mp4", 30, options={"g": "5"})


# ---- what is read --------------------------------------------------------------------------------


def test_reads_every_frame_of_a_29_97_fps_mp4(tmp_path):
    path = encode(tmp_path / "ntsc.mp4", 12, rate=Fraction(30000, 1001))
    info, frames = read_video(path)
    assert frames.shape == (12, 48, 64, 3) and frames.dtype == np.uint8
    assert frame_ids(frames) == list(range(12))
    assert info.fps == pytest.approx(30000 / 1001, abs=1e-9)  # 29.97 stays 29.97, not 30 or 29
    assert (info.num_frames, info.width, info.height, info.codec) == (12, 64, 48, "h264")
    assert info.duration_s == pytest.approx(12 * 1001 / 30000)
    assert info.source == str(path) and info.rotation == 0 and not info.subsampled
    assert np.abs(frames[0].astype(int) - pattern(0)).mean() < 3  # RGB, not BGR


@pytest.mark.parametrize("codec", ["libvpx", "libvpx-vp9"])
def test_reads_webm_as_browsers_record_it(tmp_path, codec):
    info, frames = read_video(encode(tmp_path / "rec.webm", 20, codec=codec))
    assert info.codec == {"libvpx": "vp8", "libvpx-vp9": "vp9"}[codec]
    assert frame_ids(frames) == list(range(20))
    assert info.fps == pytest.approx(30)  # WebM stores ms timestamps; the container's exact rate is kept


def test_live_webm_without_duration_header(tmp_path):
    # MediaRecorder writes WebM "live": no duration, no cues, millisecond timestamps, often irregular.
    pts = [0, 40, 70, 100, 160, 170, 200, 266, 300, 400, 430, 470]
    path = encode(tmp_path / "webcam.webm", 12, codec="libvpx", pts=pts, time_base=Fraction(1, 1000),
                  options={"g": "5"}, container_options={"live": "1"})
    with av.open(str(path)) as container:
        assert container.duration is None  # nothing to check the duration limit against but the scan
    info, frames = read_video(path, start_s=0.25)
    assert frame_ids(frames) == [7, 8, 9, 10, 11] and info.source_num_frames == 12
    with pytest.raises(InputLimitError, match=r"0\.5 s long, over the limit of 0\.3 s"):
        read_video(path, max_duration_s=0.3)


def test_odd_size_is_kept(tmp_path):
    info, frames = read_video(encode(tmp_path / "odd.webm", 5, size=(65, 47), codec="libvpx-vp9"))
    assert frames.shape == (5, 47, 65, 3) and (info.width, info.height) == (65, 47)
    assert np.abs(frames[2].astype(int) - pattern(2, 65, 47)).mean() < 3


@pytest.mark.parametrize("suffix, codec", [(".mp4", "libx264"), (".webm", "libvpx")])
def test_variable_frame_rate_uses_timestamps(tmp_path, suffix, codec):
    pts = [0, 33, 70, 100, 160, 170, 200, 266, 300, 400]  # ms, irregular
    path = encode(tmp_path / f"vfr{suffix}", 10, pts=pts, time_base=Fraction(1, 1000), codec=codec)
    video = iter_video(path)
    np.testing.assert_allclose(video.timestamps_s, np.array(pts) / 1000, atol=1e-3)
    assert video.info.fps == pytest.approx(9 / 0.4, rel=1e-3)  # average rate: (frames - 1) / span
    info, frames = read_video(path, start_s=0.1, end_s=0.3)  # by time, not by frame number
    assert frame_ids(frames) == [3, 4, 5, 6, 7]
    _, frames = read_video(path, start_s=0.1, end_s=0.3, stride=2)  # stride counts decoded frames
    assert frame_ids(frames) == [3, 5, 7]


# ---- orientation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pyav_degrees, clockwise, expected", [
    (-90, 90, lambda a: np.rot90(a, -1)),  # a portrait phone video
    (90, 270, lambda a: np.rot90(a, 1)),
    (180, 180, lambda a: np.rot90(a, 2)),
])
def test_display_matrix_rotation_is_applied(tmp_path, pyav_degrees, clockwise, expected):
    path = encode(tmp_path / "rot.mp4", 3, rotation=pyav_degrees)  # PyAV: counter-clockwise degrees
    info, frames = read_video(path)
    want = expected(pattern(1))
    assert info.rotation == clockwise
    assert frames.shape[1:] == want.shape and (info.height, info.width) == want.shape[:2]
    assert np.abs(frames[1].astype(int) - want).mean() < 3
    assert frames.flags.c_contiguous


def test_mirrored_display_matrix_is_applied(tmp_path):
    _, frames = read_video(encode(tmp_path / "mirror.mp4", 2, hflip=True))
    assert np.abs(frames[0].astype(int) - pattern(0)[:, ::-1]).mean() < 3


def test_legacy_rotate_tag_is_applied(tmp_path):
    # FFmpeg's MP4 muxer no longer writes a `rotate` tag, but Matroska keeps any tag, so an MKV carries it.
    path = encode(tmp_path / "tagged.mkv", 2, metadata={"rotate": "90"})
    info, frames = read_video(path)
    assert info.rotation == 90 and (info.width, info.height) == (48, 64)
    assert np.abs(frames[0].astype(int) - np.rot90(pattern(0), -1)).mean() < 3


# ---- selection: stride, time range, budget -------------------------------------------------------


@pytest.mark.parametrize("kwargs, ids, fps", [
    ({}, list(range(30)), 30),
    ({"stride": 4}, [0, 4, 8, 12, 16, 20, 24, 28], 7.5),
    ({"start_s": 0.5, "end_s": 0.8}, list(range(15, 24)), 30),  # seeks: keyframes every 5 frames
    ({"start_s": 0.6, "stride": 3}, [18, 21, 24, 27], 10),
    ({"end_s": 0.1}, [0, 1, 2], 30),
])
def test_stride_and_time_range(clip30, kwargs, ids, fps):
    info, frames = read_video(clip30, **kwargs)
    assert frame_ids(frames) == ids
    assert info.num_frames == len(ids) and info.fps == pytest.approx(fps)
    assert info.source_num_frames == 30 and info.source_fps == pytest.approx(30)


def test_max_frames_subsamples_evenly_and_says_so(clip30):
    info, frames = read_video(clip30, stride=2, max_frames=4)  # 15 strided frames -> 4
    assert frame_ids(frames) == [0, 6, 14, 22]
    assert info.num_frames == 4 and info.subsampled and info.subsampled_from == 15
    assert info.effective_stride == pytest.approx(7.5)
    assert info.fps == pytest.approx(4.0)  # 30 / 7.5: playing at this rate keeps the clip's duration
    assert info.duration_s == pytest.approx(1.0)
    assert "subsampled from 15 to 4 frames" in info.summary()


def test_max_frames_above_the_count_changes_nothing(clip30):
    info, frames = read_video(clip30, stride=2, max_frames=15)
    assert frame_ids(frames) == list(range(0, 30, 2))
    assert info.subsampled_from is None and "subsampled" not in info.summary()


def test_iter_video_streams_the_same_frames(clip30):
    video = iter_video(clip30, stride=5)
    assert isinstance(video.info, VideoInfo) and len(video) == 6  # known before decoding
    items = list(video)
    assert [i for i, _, _ in items] == list(range(6))
    assert [t for _, t, _ in items] == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    assert frame_ids(f for _, _, f in items) == [0, 5, 10, 15, 20, 25]
    assert list(video.source_indices) == [0, 5, 10, 15, 20, 25]
    first_two = []
    for i, _, frame in video:  # iterating again decodes again; stopping early is fine
        first_two.append(frame)
        if i == 1:
            break
    assert frame_ids(first_two) == [0, 5]


def test_files_opened_and_frames_decoded_are_counted(clip30):
    before = decode_counts()
    video = iter_video(clip30, stride=5)
    assert decode_counts() - before == DecodeCounts(opens=1)  # the scan: nothing decoded for the caller yet
    list(video)
    next(iter(video))
    assert decode_counts() - before == DecodeCounts(opens=3, passes=2, frames=7)
    before = decode_counts()
    list(iter_video(np.zeros((4, 8, 8, 3), np.uint8)))
    assert decode_counts() == before  # arrays are not decoded


def test_one_frame_video(tmp_path):
    info, frames = read_video(encode(tmp_path / "one.mp4", 1))
    assert frames.shape == (1, 48, 64, 3) and info.num_frames == 1


# ---- arrays and iterators ------------------------------------------------------------------------


def test_array_source():
    array = np.stack([pattern(i) for i in range(10)])
    info, frames = read_video(array, stride=3, fps=12)
    assert frame_ids(frames) == [0, 3, 6, 9]
    assert (info.source, info.codec, info.fps, info.source_fps) == ("array", "rawvideo", 4.0, 12.0)
    assert read_video(array)[0].fps == 25.0  # default rate of arrays


def test_list_and_generator_sources():
    info, frames = read_video([pattern(i) for i in range(4)], max_frames=2)
    assert info.source == "array" and frame_ids(frames) == [0, 2] and info.subsampled_from == 4
    info, frames = read_video(pattern(i) for i in range(6))
    assert info.source == "iterator" and frame_ids(frames) == list(range(6))


def test_endless_generator_stops_at_end_s_or_the_duration_limit():
    def endless():
        i = 0
        while True:
            yield pattern(i % 20)
            i += 1
    info, frames = read_video(endless(), end_s=0.2, fps=25)
    assert frame_ids(frames) == [0, 1, 2, 3, 4]
    with pytest.raises(InputLimitError, match="over the limit of 2 s"):
        read_video(endless(), max_duration_s=2, fps=25)


@pytest.mark.parametrize("source, message", [
    (np.zeros((4, 48, 64, 3), np.float32), "dtype float32; expected uint8"),
    (np.zeros((48, 64, 3), np.uint8), r"image\[None\]"),
    (np.zeros((2, 48, 64, 4), np.uint8), r"expected \(H, W, 3\)"),
    ([], "no frames"),
    ([np.zeros((48, 64, 3), np.uint8), np.zeros((40, 64, 3), np.uint8)], "same size"),
])
def test_bad_arrays_are_explained(source, message):
    with pytest.raises(VideoReadError, match=message):
        read_video(source)


# ---- errors: before heavy work -------------------------------------------------------------------


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(VideoReadError, match="not found"):
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoReadError, match="is not a file"):
        read_video(tmp_path)


def test_text_and_empty_files_named_mp4(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 20)
    with pytest.raises(VideoReadError, match="Cannot open .*notes.mp4.*re-encode it: `ffmpeg"):
        read_video(tmp_path / "notes.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty"):
        read_video(tmp_path / "empty.mp4")


def test_truncated_mp4(tmp_path):
    whole = encode(tmp_path / "whole.mp4", 30).read_bytes()  # index (moov) at the end: lost when cut
    (tmp_path / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(VideoReadError, match="Cannot open .*truncated"):
        read_video(tmp_path / "cut.mp4")
    fast = encode(tmp_path / "fast.mp4", 30, container_options={"movflags": "+faststart"}).read_bytes()
    (tmp_path / "cut_fast.mp4").write_bytes(fast[: len(fast) // 2])  # index first: it survives the cut
    with pytest.raises(VideoReadError, match="looks truncated: its header lists 30 frames but only"):
        read_video(tmp_path / "cut_fast.mp4")


def test_corrupt_frames_are_reported(tmp_path):
    data = bytearray(encode(tmp_path / "good.mp4", 10).read_bytes())
    at = data.find(b"mdat") - 4  # overwrite every coded frame, keep the container intact
    size = struct.unpack(">I", data[at:at + 4])[0]
    data[at + 8:at + size] = bytes(size - 8)
    (tmp_path / "zeroed.mp4").write_bytes(bytes(data))
    with pytest.raises(VideoReadError, match="None of the 10 frames .* could be decoded"):
        read_video(tmp_path / "zeroed.mp4")


def test_audio_only_file(tmp_path):
    path = tmp_path / "speech.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        for i in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(VideoReadError, match=r"no video stream \(streams found: audio\)"):
        read_video(path)


def test_zero_frame_container(tmp_path):
    path = tmp_path / "zero.mp4"
    with av.open(str(path), "w") as container:  # header and trailer, no frame: the muxer drops the track
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    assert path.stat().st_size > 0
    with pytest.raises(VideoReadError, match="no video stream"):
        read_video(path)


@pytest.mark.parametrize("name", ["photo.png", "photo.jpg", "photo_renamed.mp4"])
def test_still_images_are_not_videos(tmp_path, name):
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(pattern(0)).save(path, format="JPEG" if name.endswith(".jpg") else "PNG")
    with pytest.raises(VideoReadError, match=r"still image .* not a video.*\[None\]"):
        read_video(path)


def test_limits_are_checked_before_the_file_is_scanned(clip30, monkeypatch):
    def no_scan(*args):
        raise AssertionError("the file was scanned before a limit was checked")
    monkeypatch.setattr(video_file, "_scan", no_scan)
    with pytest.raises(InputLimitError, match=r"64x48 \(3,072 pixels\), over the limit of 3,000 pixels"):
        read_video(clip30, max_pixels=3000)
    with pytest.raises(InputLimitError, match=r"1\.0 s long, over the limit of 0\.5 s.*start_s/end_s"):
        read_video(clip30, max_duration_s=0.5)


def test_duration_limit_applies_to_the_selected_part(clip30):
    info, _ = read_video(clip30, start_s=0.2, end_s=0.6, max_duration_s=0.5)
    assert info.num_frames == 12


@pytest.mark.parametrize("kwargs, message", [
    ({"stride": 0}, "stride must be >= 1"),
    ({"stride": 1.5}, "stride must be a whole number"),
    ({"max_frames": 0}, "max_frames must be >= 1"),
    ({"start_s": -1}, "start_s must be >= 0"),
    ({"start_s": 0.5, "end_s": 0.5}, "end_s must be after start_s"),
    ({"start_s": 5.0}, "No frames between start_s=5.0"),
])
def test_invalid_arguments(clip30, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        read_video(clip30, **kwargs)
