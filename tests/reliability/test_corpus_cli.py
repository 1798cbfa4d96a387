"""The bad-input corpus against the CLI: `referdino segment` exits 1 with one readable line on stderr and writes
nothing for every bad input; valid-but-unusual inputs exit 0 with complete files of the right frame count and size."""

import json
import re

import pytest

from .corpus import EXPRESSION_CASES, HUNDRED, SHORT_SIDE, THOUSAND_WORDS, VIDEO_ERRORS, VIDEO_SUCCESSES
from referdino_demo.cli import main
from referdino_demo.io import probe_video
from referdino_demo.preprocess.text import MAX_EXPRESSION_CHARS


def run(video, expressions, out, *extra):
    args = ["segment", str(video), "--out", str(out), "--checkpoint", "tiny-random", "--short-side", str(SHORT_SIDE),
            "--export", "rle,overlay", *extra]
    for expression in expressions:
        args += ["-e", expression]
    return main(args)


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in lines if not line.startswith("model: ")]  # printed once the checkpoint loaded
    assert len(lines) == 1, lines
    assert lines[0].startswith("referdino: error: ")
    return lines[0]


def assert_outputs(out, frames: int, size: tuple[int, int]):
    rle = json.loads((out / "masks_rle.json").read_text(encoding="utf-8"))
    assert rle["info"]["num_frames"] == frames
    assert {tuple(a["segmentation"]["size"]) for a in rle["annotations"]} == {size}
    probe = probe_video(out / "overlay.mp4")
    assert probe.num_frames == frames and (probe.height, probe.width) == (size[0] + size[0] % 2, size[1] + size[1] % 2)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no half-written temporary files


@pytest.mark.parametrize("case", VIDEO_ERRORS, ids=[c.name for c in VIDEO_ERRORS])
def test_bad_video_exits_1_with_one_line_and_writes_nothing(videos, tmp_path, capsys, case):
    out = tmp_path / "out"
    assert run(videos[case.name], ["the ball"], out) == 1
    assert re.search(case.message, one_error_line(capsys))
    assert not out.exists()
    assert run(videos["small"], ["the ball"], out) == 0  # the next run works
    assert_outputs(out, 2, (48, 64))


@pytest.mark.parametrize("case", VIDEO_SUCCESSES, ids=[c.name for c in VIDEO_SUCCESSES])
def test_unusual_but_valid_video_exits_0_with_outputs_at_its_size(videos, tmp_path, capsys, case):
    out = tmp_path / "out"
    assert run(videos[case.name], ["the ball"], out) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(p.rsplit("/", 1)[-1] for p in printed) == ["masks_rle.json", "overlay.mp4"]
    assert_outputs(out, case.frames, case.size)


CLI_EXPRESSIONS = [  # the CLI takes one -e per expression
    ("empty", [""], "no expression given"),
    ("whitespace", [" \n\t ", "\u3000"], "no expression given"),
    ("emoji_only", ["🐶🚗"], "has no letters or digits"),
    ("control_characters", ["the red\x00 ball \x1b[31m"], r"control characters \(U\+0000, U\+001B\)"),
    ("a_hundred", HUNDRED, "more than 16 expressions given; at most 16"),
]
assert {c[0] for c in CLI_EXPRESSIONS} == {name for name, _, case in EXPRESSION_CASES if case.error}


@pytest.mark.parametrize("name, expressions, message", CLI_EXPRESSIONS, ids=[c[0] for c in CLI_EXPRESSIONS])
def test_bad_expressions_exit_1_with_one_line(videos, tmp_path, capsys, name, expressions, message):
    out = tmp_path / "out"
    assert run(videos["small"], expressions, out) == 1
    line = one_error_line(capsys)
    assert re.search(message, line) and "\x00" not in line and "\x1b" not in line  # controls shown escaped
    assert not out.exists()


def test_long_and_unusual_expressions_succeed_with_a_note(videos, tmp_path, capsys):
    from .corpus import MARKUP, SCRIPTS

    out = tmp_path / "out"
    assert run(videos["small"], [THOUSAND_WORDS, SCRIPTS, MARKUP], out) == 0
    err = capsys.readouterr().err
    assert "note: expression cut to 256 tokens" in err
    rle = json.loads((out / "masks_rle.json").read_text(encoding="utf-8"))
    assert [e["expression"] for e in rle["expressions"]] == [THOUSAND_WORDS[:MAX_EXPRESSION_CHARS], SCRIPTS, MARKUP]
    assert_outputs(out, 2, (48, 64))
