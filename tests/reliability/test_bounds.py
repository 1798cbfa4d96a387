"""Every request is bounded and checked before model work: option values, model input size, the memory budget, and
frames that the decoder skips. Cases are generated per option and per kind, so the mechanism is tested, not a value;
`model_calls` proves that a refusal came before the model ran."""

from __future__ import annotations

import json
import math
import random

import av
import numpy as np
import pytest

from referdino_demo import memory
from referdino_demo import predictor as predictor_module
from referdino_demo.cli import main
from referdino_demo.errors import ConfigError, InputLimitError, MemoryBudgetError
from referdino_demo.io import iter_video
from referdino_demo.options import OPTIONS, check_option
from referdino_demo.preprocess.frames import check_input_size, preprocess_frames, resized_size

from .corpus import SHORT_SIDE, encode



def bad_values(name: str) -> list:
    """Values outside an option's range or of the wrong kind, generated from its table entry."""
    spec = OPTIONS[name]
    values = [math.nan, math.inf, -math.inf, "abc", "", True, [1], spec.low - 1, spec.high * 10 + 1]
    if spec.low_open:
        values.append(spec.low)
    if spec.kind is int:
        values.append(spec.low + 0.5)
    if not spec.optional:
        values.append(None)
    return values


SEGMENT_OPTIONS = ["stride", "max_frames", "start_s", "end_s", "fps", "max_duration_s", "max_pixels", "short_side",
                   "query_decay", "num_candidates", "multi_target", "chunk_size", "feature_budget_mb",
                   "memory_budget_mb", "frame_cache_mb"]


def test_the_option_table_accepts_its_range_and_nothing_else():
    for name, spec in OPTIONS.items():
        for value in bad_values(name):
            with pytest.raises(ConfigError, match=name):
                check_option(name, value)
        inside = [spec.high] + ([] if spec.low_open else [spec.low])
        for value in inside:
            if math.isfinite(value):
                assert check_option(name, value) == value
                assert check_option(name, str(value)) == value  # HTTP clients and the CLI send text


@pytest.mark.parametrize("name", SEGMENT_OPTIONS)
def test_segment_refuses_bad_options_before_the_model_runs(predictor, model_calls, name):
    video = np.zeros((3, 32, 48, 3), np.uint8)
    for value in bad_values(name):
        with pytest.raises(ConfigError, match=name):
            predictor.segment(video, "a dog", **{"short_side": SHORT_SIDE, name: value})
    assert model_calls == []


@pytest.mark.parametrize("device", ["gpu0", "cuda:99", "", "tpu", "cuda" if not predictor_module.torch.cuda.is_available()
                                    else "cuda:1000"])
def test_unknown_or_absent_devices_are_config_errors(device):
    with pytest.raises(ConfigError, match="device"):
        predictor_module.pick_device(device)


def test_model_input_long_side_is_capped_by_aspect_ratio():
    rng = random.Random(0)
    for _ in range(500):
        height, width = rng.randint(1, 20000), rng.randint(1, 20000)
        short_side, cap = rng.choice([32, 160, 360, 720]), rng.choice([640, 1920, 4000])
        long_side = max(resized_size(height, width, short_side))
        if long_side > cap:
            with pytest.raises(InputLimitError, match=f"cap of {cap} px"):
                check_input_size(height, width, short_side, cap, "clip.mp4")
        else:
            check_input_size(height, width, short_side, cap, "clip.mp4")
    frames = np.zeros((1, 9, 50, 3), np.uint8)  # 5.6:1 -> 1999 px at short side 360
    assert max(preprocess_frames(frames, 360).shape[-2:]) > 1920
    with pytest.raises(InputLimitError):
        check_input_size(9, 50, 360, 1920, "strip")


def test_a_thin_strip_is_refused_before_the_model_runs(predictor, model_calls):
    strip = np.zeros((2, 16, 4000, 3), np.uint8)  # few pixels, but 90000x360 at the official short side
    with pytest.raises(InputLimitError, match="long side"):
        predictor.segment(strip, "a dog", short_side=360)
    assert model_calls == []


def test_the_default_memory_budget_follows_free_memory(predictor, model_calls, monkeypatch):
    video = np.zeros((4, 32, 48, 3), np.uint8)
    needed = predictor.estimate_memory_mb(iter_video(video).info, 1, short_side=SHORT_SIDE, frame_cache_mb=0)
    monkeypatch.setattr(memory, "available_memory_mb", lambda device: needed / 2)
    with pytest.raises(MemoryBudgetError, match="memory budget"):
        predictor.segment(video, "a dog", short_side=SHORT_SIDE)
    assert model_calls == []
    assert predictor.segment(video, "a dog", short_side=SHORT_SIDE, memory_budget_mb=None).num_frames == 4
    monkeypatch.setattr(memory, "available_memory_mb", lambda device: None)  # unknown: no budget
    assert predictor.segment(video, "a dog", short_side=SHORT_SIDE).num_frames == 4


def corrupt_packets(path, positions):
    """Zero the bytes of the packets at `positions` (demux order) of an intact file: the container still opens
    and counts them, the decoder fails on them."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    data = bytearray(path.read_bytes())
    for index in positions:
        start, size = packets[index]
        data[start:start + size] = bytes(size)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("lost", [[15], [1, 2, 29], [8, 9, 10, 11]])
def test_frames_the_decoder_skips_are_left_out_with_a_note(predictor, tmp_path, lost):
    video = corrupt_packets(encode(tmp_path / "clip.mp4", 30), lost)
    with pytest.warns(UserWarning, match="corrupt"):
        segmentation = predictor.segment(video, "a dog", short_side=SHORT_SIDE, chunk_size=4)
    decoded = segmentation.num_frames
    assert 0 < decoded < 30
    assert segmentation["a dog"].candidate_logits.shape[1] == decoded
    assert len(list(segmentation.iter_frames())) == decoded
    assert any("could not be decoded" in note for note in segmentation.notes)
    # the second pass (features recomputed) decodes the same frames
    again = predictor.segment(video, "a dog", short_side=SHORT_SIDE, chunk_size=4, feature_budget_mb=0)
    assert again.num_frames == decoded and np.array_equal(again.frame_indices, segmentation.frame_indices)


def test_cli_exports_exactly_the_decoded_frames(tmp_path, capsys):
    video = corrupt_packets(encode(tmp_path / "clip.mp4", 30), [15])
    with pytest.warns(UserWarning, match="corrupt"):
        code = main(["segment", str(video), "-e", "a dog", "--out", str(tmp_path / "out"), "--checkpoint",
                     "tiny-random", "--short-side", str(SHORT_SIDE), "--export", "rle,csv,overlay"])
    assert code == 0, capsys.readouterr().err
    assert "could not be decoded" in capsys.readouterr().err
    rle = json.loads((tmp_path / "out" / "masks_rle.json").read_text())
    assert rle["info"]["num_frames"] == 29 == len(rle["info"]["frame_indices"])
    assert 15 not in rle["info"]["frame_indices"]


# -- the CLI: every mistake is one line, before the checkpoint loads, and nothing is written --------------------

def cli_error(capsys, args: list[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("referdino") and "error:" in err[0], err
    return code, err[0]


CLI_FLAGS = {"--stride": "stride", "--start": "start_s", "--end": "end_s", "--max-frames": "max_frames",
             "--short-side": "short_side", "--max-long-side": "max_long_side", "--threshold": "threshold",
             "--multi-target": "multi_target", "--query-decay": "query_decay",
             "--memory-budget-mb": "memory_budget_mb"}


@pytest.mark.parametrize("flag", CLI_FLAGS)
def test_cli_refuses_bad_numbers_in_one_line_and_writes_nothing(videos, tmp_path, capsys, flag):
    out = tmp_path / "out"
    for value in bad_values(CLI_FLAGS[flag]):
        if value is None or isinstance(value, list):
            continue  # not expressible on a command line
        code, line = cli_error(capsys, ["segment", str(videos["small"]), "-e", "a dog", "--out", str(out),
                                        "--checkpoint", "tiny-random", f"{flag}={value}"])
        assert code == 2 and CLI_FLAGS[flag] in line
    assert not out.exists()


@pytest.mark.parametrize("case", ["out_is_a_file", "out_inside_a_file", "device_gpu0", "device_absent",
                                  "vocab_missing", "vocab_not_bert", "vocab_fifo", "expression_not_utf8",
                                  "strip_video"])
def test_cli_refuses_bad_settings_before_the_checkpoint_loads(videos, tmp_path, capsys, case, monkeypatch):
    import os

    def load_nothing(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the input was checked")

    monkeypatch.setattr(predictor_module.ReferDinoPredictor, "from_pretrained", load_nothing)
    (tmp_path / "file").write_text("x")
    (tmp_path / "vocab.txt").write_text("hello\nworld\n")
    os.mkfifo(tmp_path / "fifo")
    strip = tmp_path / "strip.mp4"
    encode(strip, 2, size=(1280, 16))
    out, video, extra = tmp_path / "out", videos["small"], []
    expression = "a dog"
    if case == "out_is_a_file":
        out = tmp_path / "file"
    elif case == "out_inside_a_file":
        out = tmp_path / "file" / "sub"
    elif case == "device_gpu0":
        extra = ["--device", "gpu0"]
    elif case == "device_absent":
        extra = ["--device", "cuda:1000"]
    elif case.startswith("vocab"):
        extra = ["--vocab", str(tmp_path / {"vocab_missing": "nope.txt", "vocab_not_bert": "vocab.txt",
                                            "vocab_fifo": "fifo"}[case])]
        monkeypatch.undo()  # the vocabulary is read by from_pretrained, before the weights
        monkeypatch.setattr(predictor_module, "load_model", load_nothing)
    elif case == "expression_not_utf8":
        expression = b"a d\xffg".decode("utf-8", "surrogateescape")  # how Python passes a non-UTF-8 argument
    elif case == "strip_video":
        video = strip
    code, line = cli_error(capsys, ["segment", str(video), "-e", expression, "--out", str(out), "--checkpoint",
                                    "tiny-random", *extra])
    assert code == 1, line
    assert not (tmp_path / "out").exists()
    assert str(tmp_path) not in line or case.startswith("out")  # file names, not server folders
