"""The bad-input corpus: every file is generated here, into a temporary folder (nothing large is committed).

`make_videos(folder)` writes every video case and returns {name: path}; `VIDEO_CASES` says what each one must give:
a documented exception type and a message pattern, or a success with a known frame count and frame size (H, W).
`EXPRESSION_CASES` does the same for expressions and `make_checkpoints(folder)` for checkpoint files. The Python API,
CLI and app tests all read these tables, so the three surfaces are checked against the same expectations.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from referdino_demo.errors import (CheckpointMismatchError, CheckpointNotFoundError, ExpressionError, InputLimitError,
                                   VideoReadError)

SHORT_SIDE = 128  # the tiny model's smallest comfortable input (300 queries need enough encoder tokens)


# -- frames and encoders ------------------------------------------------------------------------------------------
def pattern(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a gradient (every rotation differs) and a centre patch whose grey level is 16 + 8 i."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = x * 255 // max(width - 1, 1)
    frame[..., 1] = y * 255 // max(height - 1, 1)
    frame[..., 2] = 128
    cy, cx, r = height // 2, width // 2, max(1, min(height, width) // 8)
    frame[cy - r:cy + r, cx - r:cx + r] = 16 + 8 * (i % 28)
    return frame


_OPTIONS = {"libx264": {"preset": "ultrafast"}, "libvpx": {"crf": "10", "b:v": "1M"}}


def encode(path: Path, n: int, *, rate=12, size=(64, 48), codec="libx264", pts=None, time_base=None, rotation=None,
           container_options=None, frame=None, options=None) -> Path:
    """Write `n` frames (`frame(i)` or `pattern`) at `rate`; `pts`/`time_base` give irregular timestamps (VFR)."""
    width, height = size
    make = frame or (lambda i: pattern(i, width, height))
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate, options={**_OPTIONS[codec], **(options or {})})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)  # PyAV: counter-clockwise degrees, as a display matrix
        for i in range(n):
            picture = av.VideoFrame.from_ndarray(make(i), format="rgb24")
            if pts is not None:
                picture.pts, picture.time_base = pts[i], time_base
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return path


def _zero_frame(path: Path) -> Path:
    with av.open(str(path), "w") as container:  # header and trailer only: the muxer drops the empty track
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        for i in range(5):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 16000, i * 1024
            container.mux(stream.encode(samples))
        container.mux(stream.encode(None))
    return path


def _corrupt(path: Path) -> Path:
    """A complete MP4 whose coded frames are all zeros: the container opens, no frame decodes."""
    data = bytearray(encode(path.with_name("intact.mp4"), 10).read_bytes())
    at = data.find(b"mdat") - 4
    size = struct.unpack(">I", data[at:at + 4])[0]
    data[at + 8:at + size] = bytes(size - 8)
    path.write_bytes(bytes(data))
    return path


def _truncated(path: Path, faststart: bool) -> Path:
    whole = encode(path.with_name(f"whole-{path.name}"), 30,
                   container_options={"movflags": "+faststart"} if faststart else None).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _still_image(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(pattern(0)).save(path, format="PNG")  # named .mp4: the content decides
    return path


def make_videos(folder: Path) -> dict[str, Path]:
    """Every fast video case, written into `folder` (well under a megabyte in all)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    webcam_pts = [0, 40, 70, 100, 160, 170, 200, 266, 300, 400, 430, 470]  # ms, irregular, as MediaRecorder writes
    return {
        "corrupt": _corrupt(folder / "corrupt.mp4"),
        "truncated": _truncated(folder / "truncated.mp4", faststart=False),
        "truncated_faststart": _truncated(folder / "truncated_faststart.mp4", faststart=True),
        "zero_frames": _zero_frame(folder / "zero_frames.mp4"),
        "empty_file": empty,
        "still_image": _still_image(folder / "photo.mp4"),
        "text_file": text,
        "audio_only": _audio_only(folder / "speech.mp4"),
        "8k": encode(folder / "8k.mp4", 1, size=(7680, 4320), frame=lambda i: np.zeros((4320, 7680, 3), np.uint8)),
        "one_frame": encode(folder / "one_frame.mp4", 1),
        "odd_size": encode(folder / "odd_size.mkv", 3, size=(65, 47), codec="libvpx"),  # x264 needs even sizes
        "ntsc": encode(folder / "ntsc.mp4", 5, rate=Fraction(30000, 1001)),
        "webcam_vfr": encode(folder / "webcam.webm", 12, codec="libvpx", pts=webcam_pts, time_base=Fraction(1, 1000),
                             container_options={"live": "1"}),
        "rotated": encode(folder / "portrait.mp4", 3, rotation=-90),  # a phone held upright: 90 degrees clockwise
        "small": encode(folder / "small.mp4", 2),  # the request that must still work after each failure
    }


def make_ten_minute_video(path: Path, fps: int = 10) -> Path:
    """600 s at 32x32 (6,000 frames, about 1 MB): long, but tiny."""
    still = [pattern(i, 32, 32) for i in range(28)]
    return encode(path, 600 * fps, rate=fps, size=(32, 32), frame=lambda i: still[i % 28],
                  options={"g": "250"})


@dataclass(frozen=True)
class Case:
    """What an input must give: `error` (a type) and `message` (a regex), or `frames` and `size` (H, W) on success."""

    name: str
    error: type | None = None
    message: str = ""
    frames: int | None = None
    size: tuple[int, int] | None = None
    fps: float | None = None


VIDEO_CASES = [
    Case("corrupt", VideoReadError, r"None of the 10 frames .* could be decoded .*Re-encode it"),
    Case("truncated", VideoReadError, r"Cannot open .* truncated"),
    Case("truncated_faststart", VideoReadError, r"looks truncated: its header lists 30 frames but only"),
    Case("zero_frames", VideoReadError, r"no video stream"),
    Case("empty_file", VideoReadError, r"is empty \(0 bytes\)"),
    Case("still_image", VideoReadError, r"is a still image \(png\), not a video"),
    Case("text_file", VideoReadError, r"Cannot open .* as a video"),
    Case("audio_only", VideoReadError, r"no video stream \(streams found: audio\)"),
    Case("8k", InputLimitError, r"7680x4320 \(33,177,600 pixels\), over the limit of 8,294,400 pixels"),
    Case("one_frame", frames=1, size=(48, 64)),
    Case("odd_size", frames=3, size=(47, 65)),
    Case("ntsc", frames=5, size=(48, 64), fps=30000 / 1001),
    Case("webcam_vfr", frames=12, size=(48, 64), fps=11 / 0.47),
    Case("rotated", frames=3, size=(64, 48)),
]
VIDEO_ERRORS = [c for c in VIDEO_CASES if c.error]
VIDEO_SUCCESSES = [c for c in VIDEO_CASES if not c.error]

THOUSAND_WORDS = " ".join(["the", "red", "ball", "rolling", "left"] * 200)
HUNDRED = [f"object number {i}" for i in range(100)]
MARKUP = "<script>alert(1)</script> the <b>red</b> ball <img src=x onerror=alert(2)>"
SCRIPTS = "the dog 🐶 and 🚗 · красная машина · 赤い車 · السيارة الحمراء · लाल गाड़ी"

EXPRESSION_CASES = [  # (name, expressions, Case); the expressions are lines of one text box in the app
    ("empty", "", Case("empty", ExpressionError, "no expression given")),
    ("whitespace", " \n\t \u3000 \n", Case("whitespace", ExpressionError, "no expression given")),
    ("emoji_only", "🐶🚗", Case("emoji_only", ExpressionError, "has no letters or digits")),
    ("control_characters", "the red\x00 ball \x1b[31m", Case("control_characters", ExpressionError,
                                                            r"control characters \(U\+0000, U\+001B\)")),
    ("a_hundred", "\n".join(HUNDRED), Case("a_hundred", ExpressionError, r"more than 16 expressions given; at most 16")),
    ("thousand_words", THOUSAND_WORDS, Case("thousand_words", frames=2, size=(48, 64))),
    ("scripts_and_emoji", SCRIPTS, Case("scripts_and_emoji", frames=2, size=(48, 64))),
    ("markup", MARKUP, Case("markup", frames=2, size=(48, 64))),
]


# -- checkpoints ---------------------------------------------------------------------------------------------------
class Payload:
    """Unpickling this runs `touch MARKER`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def make_checkpoints(folder: Path, tiny_model) -> dict[str, Path]:
    """missing, truncated (.pth and safetensors), another model's, a mismatched config, a malicious pickle."""
    import json
    import shutil

    from referdino_demo.checkpoints.loading import save_model

    folder.mkdir(parents=True, exist_ok=True)
    official = {"model_state_dict": {"transformer.decoder.layers.0.linear1.weight": torch.zeros(64, 32),
                                     "backbone.0.patch_embed.proj.weight": torch.zeros(96, 3, 4, 4)}}
    torch.save(official, folder / "whole.pth")
    data = (folder / "whole.pth").read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    torch.save({"model": {"conv.weight": torch.zeros(3, 3)}}, folder / "other_model.pth")
    saved = save_model(tiny_model, folder / "saved")
    shutil.copytree(saved, folder / "mismatched")
    config = json.loads((saved / "config.json").read_text())
    config["num_queries"] *= 2  # weights for 300 queries, a config for 600
    (folder / "mismatched" / "config.json").write_text(json.dumps(config))
    shutil.copytree(saved, folder / "truncated_safetensors")
    weights = folder / "truncated_safetensors" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    marker = folder / "PAYLOAD-RAN"
    torch.save({"model_state_dict": Payload(marker)}, folder / "malicious.pth")
    return {"missing": folder / "no-such-file.pth", "truncated": folder / "truncated.pth",
            "other_model": folder / "other_model.pth", "mismatched_config": folder / "mismatched",
            "truncated_safetensors": folder / "truncated_safetensors", "malicious": folder / "malicious.pth",
            "marker": marker}


CHECKPOINT_CASES = [
    Case("missing", CheckpointNotFoundError, r"is neither a local file or folder nor a Hub name"),
    Case("truncated", CheckpointMismatchError, r"cannot be read as a PyTorch checkpoint .*truncated"),
    Case("other_model", CheckpointMismatchError, r"no state dict of tensors|not a ReferDINO checkpoint"),
    Case("mismatched_config", CheckpointMismatchError,
         r"does not fit its config\.json: .*query_selection\.tgt_embed\.weight.*strict=False"),
    Case("truncated_safetensors", CheckpointMismatchError, r"could not be loaded \(SafetensorError"),
    Case("malicious", CheckpointMismatchError, r"refused on purpose"),
]
