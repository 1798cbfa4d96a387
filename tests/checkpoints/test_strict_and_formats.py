"""Strict loading (the default) and its one override, `strict=False` with `model.load_report`; the official
trainer's checkpoint layout."""

import argparse
import json
import math

import numpy as np
import pytest
import torch

from referdino_demo.checkpoints.loading import LoadReport, load_model, save_model
from referdino_demo.errors import CheckpointMismatchError


def _same_weights(model, reference, skip=()) -> list[str]:
    """Keys whose tensors differ between the two models, `skip` excepted."""
    ours, theirs = model.state_dict(), reference.state_dict()
    return [k for k in theirs if k not in skip and not torch.equal(ours[k], theirs[k])]


def test_the_official_trainers_file_loads(tmp_path, official_state, fixture_model):
    """The layout of the official Trainer.save_checkpoint, with real optimizer, scheduler and scaler states,
    plus the Python objects such files hold beyond tensors (a numpy mAP, argparse arguments)."""
    head = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-4, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[3, 5], gamma=0.1)
    head(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    scaler = torch.amp.GradScaler("cpu")
    path = tmp_path / "checkpoint_05.pth.tar"
    torch.save({"epoch": 5, "total_epochs": 6, "model_state_dict": official_state,
                "optimizer_state_dict": optimizer.state_dict(), "scheduler_state_dict": scheduler.state_dict(),
                "grad_scaler_state_dict": scaler.state_dict(), "best_loss": math.inf, "best_mAP": np.float64(0.41),
                "args": argparse.Namespace(lr=1e-4, lr_drop=[3, 5], version="swint", nested={"a": [1, 2.5]})}, path)
    model = load_model(path, config=fixture_model.config)
    assert _same_weights(model, fixture_model) == []
    assert not model.untrained and model.load_report == LoadReport([], [], strict=True)


@pytest.fixture(scope="module")
def damaged_official(tmp_path_factory, official_state):
    """The fixture checkpoint with a key no model has, a key of the wrong shape and a key missing."""
    state = dict(official_state)
    state["transformer.extra_head.weight"] = torch.zeros(2)
    state["feat_map.bias"] = torch.zeros(3)
    del state["pixel_decoder.out_lay.bias"]
    path = tmp_path_factory.mktemp("damaged") / "damaged.pth"
    torch.save({"model_state_dict": state}, path)
    return path


def test_strict_refuses_naming_the_keys_and_the_override(damaged_official, fixture_model):
    with pytest.raises(CheckpointMismatchError) as err:
        load_model(damaged_official, config=fixture_model.config)
    message = str(err.value)
    for part in ("1 checkpoint keys have no place in the model: transformer.extra_head.weight",
                 "1 model parameters are not in the checkpoint: pixel_decoder.out_lay.bias",
                 "text_encoder.feat_map.bias: checkpoint (3,) vs model (256,)", "pass strict=False"):
        assert part in message, message


def test_strict_false_loads_what_fits_and_reports_the_rest(damaged_official, fixture_model):
    model = load_model(damaged_official, config=fixture_model.config, strict=False)
    report = model.load_report
    assert report.partial and not report.strict
    assert report.ignored == ["feat_map.bias", "transformer.extra_head.weight"]
    assert report.left_initial == ["pixel_decoder.out_lay.bias", "text_encoder.feat_map.bias"]
    assert "2 checkpoint keys ignored" in report.summary() and "2 model parameters left" in report.summary()
    assert _same_weights(model, fixture_model, skip=report.left_initial) == []
    # A part whose keys all matched computes what the reference computes; one left at initial values does not.
    hs, sentence = torch.randn(3, 5, 256), torch.randn(3, 256)
    with torch.no_grad():
        assert torch.equal(model.temporal_decoder(hs, sentence), fixture_model.temporal_decoder(hs, sentence))
        features = [torch.randn(1, 256, s, s) for s in (8, 4, 2)] + [torch.randn(1, 16, 16, 16)]
        assert not torch.equal(model.pixel_decoder(*features), fixture_model.pixel_decoder(*features))


@pytest.fixture
def mismatched_folder(tmp_path, tiny_model):
    folder = tmp_path / "mismatched"
    save_model(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["num_queries"] *= 2  # weights for 300 queries, a config for 600
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_folder_that_does_not_fit_its_config_is_refused_then_loaded_partially(mismatched_folder, tiny_model):
    with pytest.raises(CheckpointMismatchError, match=r"does not fit its config\.json: 1 shapes differ .*"
                                                      r"query_selection\.tgt_embed\.weight: checkpoint \(300, 256\) "
                                                      r"vs model \(600, 256\).*strict=False"):
        load_model(mismatched_folder)
    model = load_model(mismatched_folder, strict=False)
    assert model.load_report.ignored == model.load_report.left_initial == ["query_selection.tgt_embed.weight"]
    assert model.load_report.partial and "1 checkpoint keys ignored" in model.load_report.summary()
    assert _same_weights(model, tiny_model, skip=["query_selection.tgt_embed.weight"]) == []


def test_strict_loads_record_an_empty_report(tmp_path, tiny_model):
    save_model(tiny_model, tmp_path / "m")
    for model in (load_model("tiny-random"), load_model(tmp_path / "m"),
                  load_model(tmp_path / "m", strict=False)):
        assert model.load_report.ignored == model.load_report.left_initial == []
        assert not model.load_report.partial and model.load_report.summary().startswith("complete load")


def test_load_report_summary_is_one_line_and_short():
    report = LoadReport([f"k{i}" for i in range(40)], ["p"], strict=False)
    summary = report.summary()
    assert "\n" not in summary and "k4" in summary and "k5" not in summary and "35 more" in summary
    assert "40 checkpoint keys ignored" in summary and "1 model parameters left" in summary
