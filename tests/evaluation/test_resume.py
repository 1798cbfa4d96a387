"""Tests of resume: a video is reused only when its done-file was written with the same prediction settings
(``writers.PREDICTION_SETTINGS``, compared by ``writers.changed_settings``); changing any one of them redoes
exactly the videos done with the old value, and one line says how many and what changed."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from referdino_demo.evaluation.cli import main
from referdino_demo.evaluation.datasets import open_dataset
from referdino_demo.evaluation.runner import checkpoint_id, evaluate, prediction_settings
from referdino_demo.evaluation.synthetic import make_synthetic
from referdino_demo.evaluation.writers import PREDICTION_SETTINGS, changed_settings
from referdino_demo.predictor import ReferDinoPredictor

from eval_fakes import PerfectPredictor  # beside this file (pytest puts the test folder on sys.path)


class Vocabulary:
    """The part of a tokenizer the resume check reads."""

    do_lower_case = True

    def __init__(self, *words: str):
        self.words = words

    def get_vocab(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.words)}


class Model(PerfectPredictor):
    """A perfect predictor with the attributes of a ReferDinoPredictor that decide its predictions."""

    def __init__(self, synthetic, **attributes):
        super().__init__(synthetic)
        self.checkpoint, self.device, self.dtype = "mevis_swinb.pth", torch.device("cpu"), torch.float32
        self.tokenizer = Vocabulary("[PAD]", "the", "box")
        vars(self).update(attributes)


PREDICTOR_ATTRIBUTES = ("checkpoint", "tokenizer", "device", "dtype")
# One change of each prediction setting (benchmark aside: another benchmark reads other files). A setting
# added to PREDICTION_SETTINGS without a case here fails test_every_prediction_setting_has_a_case.
CHANGES = {
    "split": {"split": "train"},
    "checkpoint": {"checkpoint": "ryt_swinb.pth"},
    "vocabulary": {"tokenizer": Vocabulary("[PAD]", "the", "boxes")},
    "device": {"device": torch.device("cuda", 0)},
    "dtype": {"dtype": torch.bfloat16},
    "short_side": {"short_side": 320},
    "query_decay": {"query_decay": 0.8},
    "max_frames": {"max_frames": 2},
    "threshold": {"threshold": 0.7},
    "obj_threshold": {"obj_threshold": 0.5},
}


@pytest.fixture(scope="module")
def mevis(tmp_path_factory):
    synthetic = make_synthetic("mevis", tmp_path_factory.mktemp("mevis") / "data", videos=3, frames=3)
    shutil.copytree(synthetic.root / "valid_u", synthetic.root / "train")  # the same videos in another split
    return synthetic


def _evaluate(synthetic, out, options: dict, videos: list[str] | None = None):
    """evaluate() with ``options`` (evaluate's own, a split, or predictor attributes) on ``videos`` (default
    all); returns (result, the videos the model was run on)."""
    options = {"progress": False, **options}
    model = Model(synthetic, **{k: options.pop(k) for k in PREDICTOR_ATTRIBUTES if k in options})
    dataset = open_dataset("mevis", synthetic.root, options.pop("split", "valid_u"))
    if videos is not None:  # a run interrupted after these videos
        dataset.videos = {v: dataset.videos[v] for v in videos}
    return evaluate(model, dataset, out, **options), model.calls


def test_every_prediction_setting_has_a_case():
    assert set(CHANGES) | {"benchmark"} == set(PREDICTION_SETTINGS)


@pytest.mark.parametrize("name", list(CHANGES))
def test_a_changed_setting_redoes_exactly_the_videos_done_with_the_old_one(tmp_path, capsys, mevis, name):
    out, videos = tmp_path / "out", sorted(mevis.first_frames)
    first, second, third = videos
    assert _evaluate(mevis, out, {})[1] == videos
    # The new setting on the second video only (a run interrupted after it): the other two keep the old one.
    result, calls = _evaluate(mevis, out, CHANGES[name], [second])
    assert calls == [second] and result.redone == [second]
    capsys.readouterr()

    result, calls = _evaluate(mevis, out, CHANGES[name])
    assert sorted(calls) == [first, third] and result.computed == [first, third] and result.skipped == [second]
    assert result.redone == [first, third] and result.metrics["J&F"] == 1.0
    line = [line for line in capsys.readouterr().err.splitlines() if line.startswith("resume:")]
    assert len(line) == 1 and line[0].startswith(
        f"resume: 2 of 3 videos were predicted with other settings and are redone ({name} ")
    assert not [other for other in PREDICTION_SETTINGS if other != name and f"({other} " in line[0]]
    assert json.loads((out / f".done/{first}.json").read_text())["settings"] == \
        json.loads((out / f".done/{second}.json").read_text())["settings"]

    assert _evaluate(mevis, out, CHANGES[name])[1] == []  # all done with the new setting now
    assert "resume:" not in capsys.readouterr().err


def test_what_does_not_change_predictions_does_not_redo(tmp_path, mevis):
    out = tmp_path / "out"
    assert len(_evaluate(mevis, out, {"device": torch.device("cuda", 0)})[1]) == 3
    # Another GPU of the same kind (with another number of processes a video lands on another one), progress.
    result, calls = _evaluate(mevis, out, {"device": "cuda:1", "progress": True})
    assert calls == [] and result.redone == [] and len(result.skipped) == 3


def test_several_changed_settings_are_listed_in_one_line(tmp_path, capsys, mevis):
    out = tmp_path / "out"
    _evaluate(mevis, out, {})
    capsys.readouterr()
    _evaluate(mevis, out, {"dtype": torch.float16, "threshold": 0.6})
    assert 'redone (dtype "float32" -> "float16"; threshold 0.5 -> 0.6)' in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"settings": 3}', b'{"files": 4}',
                                     b'{"settings": {}, "files": 4}'])
def test_an_unreadable_done_file_redoes_its_video(tmp_path, mevis, content):
    out, video = tmp_path / "out", sorted(mevis.first_frames)[0]
    _evaluate(mevis, out, {})
    (out / f".done/{video}.json").write_bytes(content)
    result, calls = _evaluate(mevis, out, {})
    assert calls == [video] and result.computed == [video]


def test_changed_settings_is_the_one_comparison():
    settings = dict.fromkeys(PREDICTION_SETTINGS, 1) | {"split": ("a", "b"), "other": "ignored"}
    recorded = json.loads(json.dumps(settings)) | {"other": "different", "seconds": 9}
    assert changed_settings(recorded, settings) == {}  # as JSON stores it; fields outside the list do not count
    assert changed_settings(recorded | {"dtype": "float16"}, settings) == {"dtype": ("float16", 1)}
    del recorded["query_decay"]  # a done-file of an older version: a missing field counts as None
    assert changed_settings(recorded, settings) == {"query_decay": (None, 1)}
    assert changed_settings(recorded, settings | {"query_decay": None}) == {}


def test_checkpoint_identity(tmp_path):
    assert checkpoint_id("tiny-random") == "tiny-random"
    assert checkpoint_id("liangtm/referdino/mevis_swinb.pth") == "liangtm/referdino/mevis_swinb.pth"
    path = tmp_path / "a" / "ckpt.pth"
    path.parent.mkdir()
    path.write_bytes(b"weights of epoch 1")
    first = checkpoint_id(str(path))
    assert first.startswith("ckpt.pth sha256:")
    copy = tmp_path / "b" / "ckpt.pth"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    assert checkpoint_id(str(copy)) == first  # the same weights elsewhere (another machine's copy)
    path.write_bytes(b"weights of epoch 2")  # retrained in place: same name and size
    assert checkpoint_id(str(path)) != first
    assert checkpoint_id(str(tmp_path / "a")).startswith("a sha256:")  # a folder saved by save_pretrained


def test_settings_of_the_real_predictor(tmp_path):
    synthetic = make_synthetic("mevis", tmp_path / "data", videos=1, frames=2)
    predictor = ReferDinoPredictor.from_pretrained("tiny-random")
    settings = prediction_settings(predictor, open_dataset("mevis", synthetic.root), threshold=0.5,
                                   obj_threshold=0.2, max_frames=None, short_side=360, query_decay=None)
    assert tuple(settings) == PREDICTION_SETTINGS
    assert (settings["checkpoint"], settings["device"], settings["dtype"]) == ("tiny-random", "cpu", "float32")
    assert settings["vocabulary"].startswith("sha256:")


def test_cli_resume_redoes_videos_predicted_with_another_dtype(tmp_path, capsys, monkeypatch):
    runs = []
    segment = ReferDinoPredictor.segment
    monkeypatch.setattr(ReferDinoPredictor, "segment", lambda self, *a, **k: runs.append(1) or segment(self, *a, **k))
    synthetic = make_synthetic("ytvos", tmp_path / "data", videos=1, frames=2)
    argv = ["--benchmark", "ytvos", "--data-root", str(synthetic.root), "--out", str(tmp_path / "out"),
            "--checkpoint", "tiny-random", "--short-side", "128", "--max-frames", "1", "--no-progress"]
    assert main([*argv, "--dtype", "float32"]) == 0 and len(runs) == 1
    assert main([*argv, "--dtype", "float32"]) == 0 and len(runs) == 1  # resumed: nothing to redo
    assert "resume:" not in capsys.readouterr().err
    assert main([*argv, "--dtype", "bfloat16"]) == 0 and len(runs) == 2
    assert ('resume: 1 of 1 videos were predicted with other settings and are redone (dtype "float32" -> '
            '"bfloat16")') in capsys.readouterr().err
    done = json.loads(next((tmp_path / "out/.done").glob("*.json")).read_text())
    assert done["settings"]["dtype"] == "bfloat16"
