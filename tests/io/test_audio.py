"""The source's sound in rendered videos (referdino_demo/io/audio.py): which part of it (the time the processed
frames cover), copied or encoded per container, its timing and tone, and silent videos where there is no sound
to keep or it is switched off. Sources are made with PyAV in tmp_path: a synthetic clip with a tone that changes
pitch each second, so that the pitch tells which second of the source a rendered video plays."""

from fractions import Fraction

import av
import numpy as np
import pytest

from referdino_demo.errors import ConfigError
from referdino_demo.examples import synthetic_clip, synthetic_masks
from referdino_demo.frame_selection import FrameSelection
from referdino_demo.io import VideoWriter, probe_video, read_video, write_video
from referdino_demo.io.audio import AudioTrack
from referdino_demo.io.video_writer import alpha_video_suffix
from referdino_demo.result_view import RenderSettings, ResultView
from referdino_demo.results import ExpressionResult, VideoSegmentation

FPS, FRAMES, SIZE = 12, 24, (48, 80)  # two seconds
TONES = (440.0, 880.0)  # Hz, one per second of the source
BALL = list(synthetic_masks("red_ball", 1, SIZE))[0]
PACKET_S = 0.025  # one audio packet or frame (AAC 1024 samples at 44.1 kHz: 23 ms; Opus: 20 ms)


def clip_with_tone(path, codec="aac", rate=48000, layout="mono"):
    """The synthetic clip (H.264, or VP9 in a WebM) at `FPS` with a `TONES` tone encoded by `codec`."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libvpx-vp9" if path.suffix == ".webm" else "libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = SIZE[1], SIZE[0], "yuv420p"
        audio = out.add_stream(codec, rate=rate, layout=layout)
        for t, frame in enumerate(synthetic_clip("red_ball", FRAMES, SIZE)):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = t, Fraction(1, FPS)
            out.mux(video.encode(picture))
        times = np.arange(FRAMES // FPS * rate) / rate
        tone = 0.5 * np.sin(2 * np.pi * np.array(TONES)[times.astype(int)] * times).astype(np.float32)
        channels = av.AudioLayout(layout).nb_channels
        for start in range(0, len(tone), 1000):
            sound = av.AudioFrame.from_ndarray(np.tile(tone[start:start + 1000], (channels, 1)), format="fltp",
                                               layout=layout)
            sound.sample_rate, sound.pts, sound.time_base = rate, start, Fraction(1, rate)
            out.mux(audio.encode(sound))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return path


def sound(path) -> tuple[np.ndarray, int, float]:
    """The first channel of `path`'s audio, decoded: `(samples, rate, start_s)` with `start_s` its first time."""
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
    samples = np.concatenate([frame.to_ndarray()[0].reshape(-1)[:frame.samples] for frame in frames])
    return samples, frames[0].sample_rate, float(frames[0].pts * frames[0].time_base)


def pitch(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency of `samples` in Hz."""
    return float(np.argmax(np.abs(np.fft.rfft(samples)))) * rate / len(samples)


def packets(path) -> set[bytes]:
    with av.open(str(path)) as container:
        return {bytes(packet) for packet in container.demux(audio=0) if packet.size}


@pytest.fixture(scope="module")
def aac_clip(tmp_path_factory):
    return clip_with_tone(tmp_path_factory.mktemp("source") / "tone.mp4")


def known_view(frames, folder) -> ResultView:
    """A view of the ball's true mask over `frames` (a `VideoFrames` of a file), as a segmentation of them."""
    index = frames.source_indices
    logits = np.where(synthetic_masks("red_ball", FRAMES, SIZE)[BALL][index], 6.0, -6.0)[None].astype(np.float16)
    result = ExpressionResult(BALL, SIZE, np.full((len(index), 1), 0.9, np.float32),
                              np.zeros((len(index), 1, 4), np.float32), np.array([0]), logits)
    return ResultView(VideoSegmentation({BALL: result}, SIZE, frames.info.fps, index, frames=frames), folder)


def test_an_overlay_video_keeps_the_sound_of_its_frames(aac_clip, tmp_path):
    path = known_view(FrameSelection().open(aac_clip), tmp_path).overlay_video()
    probe = probe_video(path)
    assert (probe.num_frames, probe.audio_codec) == (FRAMES, "aac")
    samples, rate, start = sound(path)
    assert start == pytest.approx(0, abs=PACKET_S)
    assert start + len(samples) / rate == pytest.approx(FRAMES / FPS, abs=PACKET_S)
    assert [pitch(samples[second * rate:(second + 1) * rate], rate) for second in (0, 1)] == \
        pytest.approx(TONES, abs=2)
    assert packets(path) <= packets(aac_clip)  # AAC into MP4: the packets copied as they are


def test_a_selection_keeps_the_sound_of_the_time_its_frames_cover(aac_clip, tmp_path):
    """The second second, every other frame: 6 frames at 6 fps play that second at its own speed, with its tone."""
    frames = FrameSelection(start_s=1.0, stride=2).open(aac_clip)
    path = known_view(frames, tmp_path).effect_video("blur")
    assert (frames.info.fps, probe_video(path).num_frames) == (6, 6)
    samples, rate, start = sound(path)
    assert start + len(samples) / rate == pytest.approx(1.0, abs=PACKET_S)
    assert pitch(samples, rate) == pytest.approx(TONES[1], abs=2)


def test_the_cutout_video_gets_sound_its_container_takes(aac_clip, tmp_path):
    path = known_view(FrameSelection().open(aac_clip), tmp_path).effect_video("cutout")
    probe = probe_video(path)
    assert (probe.num_frames, probe.alpha) == (FRAMES, True)
    assert probe.audio_codec == ("opus" if alpha_video_suffix() == ".webm" else "aac")
    samples, rate, start = sound(path)
    assert start + len(samples) / rate == pytest.approx(FRAMES / FPS, abs=PACKET_S)
    assert pitch(samples[rate:], rate) == pytest.approx(TONES[1], abs=2)


def test_no_sound_to_keep_or_sound_switched_off_gives_a_silent_video(aac_clip, tmp_path):
    silent_clip = write_video(tmp_path / "silent.mp4", synthetic_clip("red_ball", FRAMES, SIZE), FPS)
    assert probe_video(known_view(FrameSelection().open(silent_clip), tmp_path / "a").overlay_video()).audio_codec \
        is None
    view = known_view(FrameSelection().open(aac_clip), tmp_path / "b")
    for audio in (False, True, False):  # the switch is part of the memo key: each change is drawn again
        assert probe_video(view.overlay_video(RenderSettings(audio=audio))).audio_codec == ("aac" if audio else None)
    with pytest.raises(ConfigError, match="audio must be True or False"):
        RenderSettings(audio="yes")


@pytest.mark.parametrize("source, codec, rate, layout, suffix, expected, copied", [
    ("tone.mp4", "aac", 48000, "mono", ".webm", "opus", False),
    ("tone.webm", "libopus", 48000, "stereo", ".webm", "opus", True),
    ("tone.mkv", "pcm_s16le", 44100, "5.1", ".mov", "aac", False),  # six channels mixed down to two
])
def test_copied_or_encoded_the_sound_covers_exactly_the_frames(tmp_path, source, codec, rate, layout, suffix,
                                                               expected, copied):
    source = clip_with_tone(tmp_path / source, codec, rate, layout)
    frames = np.stack([np.full((*SIZE, 3), 10 * t, np.uint8) for t in range(9)])
    with VideoWriter(tmp_path / f"out{suffix}", FPS, SIZE[::-1], audio=AudioTrack(source, 0.5)) as writer:
        for frame in frames:
            writer.write(frame)
    path = writer.path
    assert writer.has_audio and probe_video(path).audio_codec == expected
    assert (packets(path) <= packets(source)) == copied
    samples, rate, start = sound(path)
    assert start == pytest.approx(0, abs=PACKET_S if copied else 1e-9)  # encoded sound is cut to the sample
    assert start + len(samples) / rate == pytest.approx(9 / FPS, abs=PACKET_S)  # 0.5 s to 1.25 s of the source
    assert sorted(round(pitch(part, rate), -1) for part in (samples[:rate // 2], samples[-rate // 4:])) == \
        list(TONES)
    np.testing.assert_array_equal(read_video(path)[1], read_video(write_video(tmp_path / f"mute{suffix}",
                                                                              frames, FPS))[1])


def test_sound_that_cannot_be_read_gives_a_silent_video(aac_clip, tmp_path):
    (tmp_path / "notes.txt").write_text("not a video")
    for track in (AudioTrack(tmp_path / "missing.mp4"), AudioTrack(tmp_path / "notes.txt"),
                  AudioTrack(aac_clip, 5.0)):  # after the sound's end
        with VideoWriter(tmp_path / "out.mp4", FPS, SIZE[::-1], audio=track) as writer:
            writer.write(np.zeros((*SIZE, 3), np.uint8))
        assert not writer.has_audio
        assert (probe_video(writer.path).num_frames, probe_video(writer.path).audio_codec) == (1, None)
