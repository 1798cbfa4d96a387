"""The `referdino` command end to end with the tiny random model."""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from referdino_demo.cli import main
from referdino_demo.examples import synthetic_clip
from referdino_demo.io import probe_video, write_video
from referdino_demo.io.video_reader import DecodeCounts, decode_counts


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("cli") / "clip.mp4", synthetic_clip("red_ball", 6, (72, 128)), fps=12)


def run(*args):
    return main(["segment", *map(str, args), "--checkpoint", "tiny-random", "--short-side", "128"])


def test_segment_writes_every_export(video, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(video, "-e", "the red ball", "-e", "the blue square", "--out", out,
               "--export", "png,palette,rle,csv,overlay,heatmap") == 0
    printed = capsys.readouterr().out.split()
    names = {"masks.zip", "palette.zip", "masks_rle.json", "scores.csv", "overlay.mp4", "heatmap.mp4"}
    assert {p.rsplit("/", 1)[-1] for p in printed} == names
    probe = probe_video(out / "overlay.mp4")
    assert (probe.codec, probe.pix_fmt, probe.num_frames) == ("h264", "yuv420p", 6)
    with zipfile.ZipFile(out / "masks.zip") as archive:
        assert sum(n.endswith(".png") for n in archive.namelist()) == 12  # 2 expressions x 6 frames
    assert json.loads((out / "masks_rle.json").read_text())
    assert len((out / "scores.csv").read_text().strip().splitlines()) == 1 + 12


def test_one_decode_serves_the_model_and_both_videos(video, tmp_path):
    before = decode_counts()
    assert run(video, "-e", "the red ball", "--out", tmp_path / "out", "--export", "overlay,heatmap") == 0
    assert decode_counts() - before == DecodeCounts(opens=2, passes=1, frames=6)  # one scan, one decode
    before = decode_counts()
    assert run(video, "-e", "the red ball", "--out", tmp_path / "again", "--export", "overlay,heatmap",
               "--frame-cache-mb", "0") == 0
    assert (decode_counts() - before).passes == 3  # no frame kept: each video decodes the clip again


@pytest.mark.parametrize("args, message", [
    (["-e", "   "], "no expression"),
    (["-e", "a dog", "--effect-expression", "2"], "--effect-expression '2' is none of the expressions; give one's "
                                                   "text or index: 0 'a dog'"),
])
def test_user_errors_print_one_line_and_exit_1(video, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert run(video, *args, "--out", out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("referdino: error:") and message in err[0]
    assert not out.exists()  # nothing written before the input was checked


@pytest.mark.parametrize("args, message", [
    (["--export", "gif"], "argument --export: unknown export gif; choose from png,"),
    (["--export", "png,effect:glow"], "unknown export effect:glow; choose from "),
    (["--feather", "-2"], "argument --feather: feather (soft mask edge width in pixels) must be a number >= 0"),
])
def test_bad_export_kinds_and_feathers_are_usage_errors(video, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        run(video, "-e", "a dog", "--out", out, *args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("referdino segment: error:") and message in err[0], err
    assert not out.exists()  # nothing written, the checkpoint not even loaded


def test_effect_videos_and_cutouts(video, tmp_path, capsys):
    from scipy import ndimage

    from referdino_demo.io.video_writer import alpha_video_suffix
    from tests.io.test_alpha_video import decode_rgba

    out = tmp_path / "out"
    assert run(video, "-e", "the red ball", "-e", "the blue square", "--out", out, "--threshold", "0.55",
               "--export", "png,effect:blur,effect:cutout,cutout", "--feather", "2", "--effect-expression", "1") == 0
    cut = out / f"cutout{alpha_video_suffix()}"
    assert {p.rsplit("/", 1)[-1] for p in capsys.readouterr().out.split()} == {
        "masks.zip", "effect_blur.mp4", cut.name, "cutout.zip"}
    assert probe_video(out / "effect_blur.mp4").num_frames == 6
    probe = probe_video(cut)
    assert (probe.num_frames, probe.alpha) == (6, True)
    alpha = decode_rgba(cut)[..., 3].astype(int)  # (T, H, W)
    with zipfile.ZipFile(out / "masks.zip") as archive:  # the second expression's masks, at the same threshold
        folder = sorted({n.split("/")[0] for n in archive.namelist() if n.startswith("01_")})[0]
        masks = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(f"{folder}/{t:05d}.png")))) > 0
                          for t in range(6)])
        cutouts = zipfile.ZipFile(out / "cutout.zip")
        exact = np.stack([np.asarray(Image.open(io.BytesIO(cutouts.read(f"{t:05d}.png"))))[..., 3] for t in range(6)])
    assert masks.any() and not masks.all()
    # feather 2 ramps alpha over the pixel either side of the edge; beyond it alpha is the mask: exactly in the PNGs,
    # within VP9's loss in the video (the random model's ragged masks cost it up to ~40 levels at a few pixels)
    inside = ndimage.binary_erosion(masks, np.ones((1, 5, 5)), border_value=1)
    outside = ndimage.binary_erosion(~masks, np.ones((1, 5, 5)), border_value=1)
    assert (exact[inside] == 255).all() and (exact[outside] == 0).all()
    assert (alpha[inside] >= 192).all() and (alpha[outside] <= 64).all()
    assert np.abs(alpha - exact).mean() < 2


def test_unreadable_video(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    assert run(bad, "-e", "a dog", "--out", tmp_path / "out") == 1
    assert "referdino: error:" in capsys.readouterr().err


def test_module_entry_point_and_usage_errors():
    done = subprocess.run([sys.executable, "-m", "referdino_demo", "segment"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["referdino segment: error: the following arguments are required: video, "
                                        "-e/--expression, --out (see referdino segment --help)"]


def test_a_checkpoint_with_unexplained_keys_needs_non_strict_and_is_marked_partial(video, tmp_path, capsys, vocab):
    from safetensors.torch import load_file, save_file

    from referdino_demo.checkpoints.loading import save_model, tiny_random_model

    folder = tmp_path / "variant"
    save_model(tiny_random_model(), folder)
    state = load_file(str(folder / "model.safetensors"))
    state["head.extra_classifier.weight"] = torch.zeros(3, 4)  # a key of a fine-tuned variant, say
    save_file(state, str(folder / "model.safetensors"))
    args = ["segment", str(video), "-e", "the red ball", "--checkpoint", str(folder), "--vocab", str(vocab),
            "--short-side", "128", "--export", "rle,overlay"]

    assert main([*args, "--out", str(tmp_path / "strict")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "head.extra_classifier.weight" in line and "--non-strict" in line
    assert not (tmp_path / "strict").exists()

    assert main([*args, "--out", str(tmp_path / "partial"), "--non-strict"]) == 0
    err = capsys.readouterr().err
    assert "PARTIAL load" in err and "note: partial load (strict=False): 1 checkpoint keys ignored" in err
    info = json.loads((tmp_path / "partial" / "masks_rle.json").read_text())["info"]
    assert "head.extra_classifier.weight" in info["partial_load"]


def test_videos_keep_the_source_sound_unless_no_audio(tmp_path):
    from tests.io.test_audio import clip_with_tone

    clip = clip_with_tone(tmp_path / "tone.mp4")
    for flags, codec in (([], "aac"), (["--no-audio"], None)):
        out = tmp_path / f"out{len(flags)}"
        assert run(clip, "-e", "the red ball", "--out", out, "--export", "overlay,effect:blur", *flags) == 0
        assert probe_video(out / "overlay.mp4").audio_codec == codec
        assert probe_video(out / "effect_blur.mp4").audio_codec == codec
