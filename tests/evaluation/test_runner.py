"""Tests of evaluation/runner.py (with writers, scoring, distributed, cli): synthetic benchmark folders in each
layout, evaluated end to end with a perfect fake predictor (J = F = 1) and with the tiny random model."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from referdino_demo.evaluation import boundary_f_measure, region_similarity
from referdino_demo.evaluation.cli import add_evaluate_parser, main
from referdino_demo.evaluation.datasets import open_dataset
from referdino_demo.evaluation.distributed import context_from_env, shard
from referdino_demo.evaluation.runner import evaluate
from referdino_demo.evaluation.scoring import match_davis_objects
from referdino_demo.evaluation.synthetic import make_synthetic
from referdino_demo.predictor import ReferDinoPredictor

from eval_fakes import PerfectPredictor, Spy  # beside this file (pytest puts the test folder on sys.path)

REPO = Path(__file__).resolve().parents[2]
KINDS = ["ytvos", "mevis", "davis"]  # not `benchmark`: pytest-benchmark owns that fixture name


@pytest.fixture(scope="module")
def tiny():
    return ReferDinoPredictor.from_pretrained("tiny-random")


def _synthetic(kind, root, **options):
    options.setdefault("frames", 3)
    if kind == "davis":
        options.setdefault("objects", 1)
    return make_synthetic(kind, root / "data", **options)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


# --------------------------------------------------------------------------- the metric path, independently


@pytest.mark.parametrize("kind", KINDS)
def test_perfect_predictions_score_one(tmp_path, kind):
    synthetic = _synthetic(kind, tmp_path, objects=2)
    predictor = PerfectPredictor(synthetic)
    result = evaluate(predictor, synthetic.root, tmp_path / "out", benchmark=kind, progress=False)
    assert (result.metrics["J"], result.metrics["F"], result.metrics["J&F"]) == (1.0, 1.0, 1.0)
    rows = _csv(tmp_path / "out/metrics_per_expression.csv")
    expected_rows = len(synthetic.masks) if kind != "davis" else 2 * 2 * 4  # davis: videos x objects x annotators
    assert len(rows) == expected_rows and {r["J&F"] for r in rows} == {"1.000000"}
    assert json.loads((tmp_path / "out/metrics.json").read_text())["J&F"] == 1.0
    assert sorted(predictor.calls) == sorted(synthetic.first_frames)  # one segment call per video
    if kind == "davis":  # the matching also found which expression each ground-truth object is
        assert result.metrics["annotators"].keys() == {"anno_0", "anno_1", "anno_2", "anno_3"}
        assert all(r["exp_id"] == str((2 - int(r["object"])) * 4 + int(r["annotator"])) for r in rows)


def test_davis_void_is_ignored_and_objects_are_matched():
    gt = np.zeros((2, 2, 20, 30), bool)
    gt[0, :, 2:8, 3:12], gt[1, :, 10:18, 15:28] = True, True
    void = np.zeros((2, 20, 30), bool)
    void[:, 5:7, :] = True  # crosses object 1
    pred = np.zeros((2, 20, 30), np.uint8)
    pred[gt[1]], pred[gt[0]] = 3, 1  # object 1 predicted as id 3, id 2 an empty proposal
    pairs = {(p, n): (j.mean(), f.mean()) for p, n, j, f in match_davis_objects(gt & ~void, void, pred)}
    assert pairs == {(2, 1): (1.0, 1.0), (0, 0): (1.0, 1.0)}
    # without the void mask the same prediction is imperfect: the void band is not part of the ground truth
    assert region_similarity(pred == 1, gt[0] & ~void).mean() < 1
    # an empty prediction is zero-padded to the number of objects and scores 0
    empty = match_davis_objects(gt, void, np.zeros((2, 20, 30), np.uint8))
    assert [(p, n, j.mean()) for p, n, j, _ in empty] == [(0, 0, 0.0), (1, 1, 0.0)]


def _official_f_with_void(pred, gt, void, bound_th=0.008):
    """davis2017 f_measure with a void mask, written from its description with scipy's dilation."""
    def bmap(seg):
        e, s, se = (np.zeros_like(seg) for _ in range(3))
        e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
        b = (seg ^ e) | (seg ^ s) | (seg ^ se)
        b[-1, :], b[:, -1] = seg[-1, :] ^ e[-1, :], seg[:, -1] ^ s[:, -1]
        b[-1, -1] = False
        return b
    radius = math.ceil(bound_th * np.linalg.norm(pred.shape))
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = yy ** 2 + xx ** 2 <= radius ** 2
    bp, bg = bmap(pred & ~void), bmap(gt & ~void)
    n_p, n_g = bp.sum(), bg.sum()
    if n_p == 0 or n_g == 0:
        return float(n_p == n_g)
    precision = (bp & ndi.binary_dilation(bg, disk)).sum() / n_p
    recall = (bg & ndi.binary_dilation(bp, disk)).sum() / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("seed", range(4))
def test_metrics_with_void_match_the_official_definition(seed):
    rng = np.random.default_rng(seed)
    gt = ndi.binary_opening(rng.random((3, 40, 50)) > 0.45, np.ones((1, 3, 3)))
    pred = ndi.binary_dilation(gt, np.ones((1, 2, 2))) ^ (rng.random(gt.shape) > 0.97)
    void = np.zeros_like(gt)
    void[:, rng.integers(0, 30):, rng.integers(0, 40):] = rng.random() > 0.2
    expected_j = [1.0 if not ((p | g) & ~v).any() else ((p & g) & ~v).sum() / ((p | g) & ~v).sum()
                  for p, g, v in zip(pred, gt, void)]
    np.testing.assert_allclose(region_similarity(pred, gt, void), expected_j, rtol=0, atol=1e-12)
    expected_f = [_official_f_with_void(p, g, v) for p, g, v in zip(pred, gt, void)]
    np.testing.assert_allclose(boundary_f_measure(pred, gt, void=void), expected_f, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- end to end with the tiny model


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_random_end_to_end_layouts(tmp_path, tiny, kind):
    synthetic = _synthetic(kind, tmp_path)
    dataset = open_dataset(kind, synthetic.root)
    out = tmp_path / "out"
    result = evaluate(tiny, dataset, out, split=dataset.split, benchmark=kind, threshold=0.5, short_side=128,
                      progress=True)
    assert sorted(result.computed) == dataset.video_ids and not result.skipped
    assert all(0.0 <= result.metrics[k] <= 1.0 for k in ("J", "F", "J&F"))
    assert result.metrics["J&F"] == pytest.approx((result.metrics["J"] + result.metrics["F"]) / 2)
    for sample in dataset:
        if kind == "davis":  # palette PNGs per annotator, ids 0 (background) .. number of objects
            for k in range(4):
                for t in range(sample.num_frames):
                    with Image.open(out / f"Annotations/anno_{k}/{sample.video_id}/{t:05d}.png") as image:
                        assert image.mode == "P" and image.size == (128, 72)
                        assert np.array(image).max() <= len(sample.expressions) // 4
        else:  # 0/255 grayscale PNGs named after the frames
            for exp_id in sample.expressions:
                for name in sample.frame_names:
                    with Image.open(out / f"Annotations/{sample.video_id}/{exp_id}/{name}.png") as image:
                        assert image.mode == "L" and image.size == (128, 72)
                        assert set(np.unique(np.array(image))) <= {0, 255}
        assert (out / f".done/{sample.video_id}.json").is_file()
    if kind == "ytvos":  # the server zip holds Annotations/<video>/<exp>/<frame>.png
        names = zipfile.ZipFile(result.zip_path).namelist()
        assert result.zip_path == out / "submission.zip"
        assert sorted(names) == sorted(f"Annotations/{p}" for p in _snapshot(out / "Annotations"))
    else:
        assert result.zip_path is None and not (out / "submission.zip").exists()
    assert "J&F" in result.summary()


def test_mevis_valid_is_zipped_for_the_server(tmp_path):
    synthetic = _synthetic("mevis", tmp_path)
    (synthetic.root / "valid_u").rename(synthetic.root / "valid")
    (synthetic.root / "valid/mask_dict.json").unlink()
    result = evaluate(PerfectPredictor(synthetic), synthetic.root, tmp_path / "out", benchmark="mevis",
                      split="valid", progress=False)
    assert result.metrics is None and not (tmp_path / "out/metrics.json").exists()
    names = zipfile.ZipFile(tmp_path / "out/submission.zip").namelist()  # <video>/<exp>/<frame>.png at the root
    assert sorted(names) == sorted(_snapshot(tmp_path / "out/Annotations")) and len(names) == 2 * 2 * 3
    assert "submit" in result.summary()


# --------------------------------------------------------------------------- resume


def test_interrupted_run_resumes_only_unfinished_video(tmp_path, tiny):
    synthetic = _synthetic("ytvos", tmp_path)
    out = tmp_path / "out"
    spy = Spy(tiny)
    first, second = open_dataset("ytvos", synthetic.root).video_ids

    # "Interrupted" after the first video: a run over a subset of the split.
    subset = open_dataset("ytvos", synthetic.root)
    subset.videos = {first: subset.videos[first]}
    evaluate(spy, subset, out, short_side=128, progress=False)
    assert spy.calls == 1

    full = open_dataset("ytvos", synthetic.root)
    result = evaluate(spy, full, out, short_side=128, progress=False)
    assert spy.calls == 2 and result.computed == [second] and result.skipped == [first]
    files, metrics = _snapshot(out), result.metrics

    # Half-written second video: done-file gone, a PNG missing, a stale temporary file left behind.
    (out / f".done/{second}.json").unlink()
    (out / f"Annotations/{second}/1/00005.png").unlink()
    (out / f"Annotations/{second}/1/.00010.png.1234.part").write_bytes(b"partial")
    result = evaluate(spy, full, out, short_side=128, progress=False)
    assert spy.calls == 3 and result.computed == [second] and result.skipped == [first]
    assert _snapshot(out) == files and result.metrics == metrics
    assert not list(out.rglob("*.part"))

    # Complete: nothing is recomputed; a missing file behind a done-file is noticed; --no-resume redoes all.
    assert evaluate(spy, full, out, short_side=128, progress=False).computed == [] and spy.calls == 3
    (out / f"Annotations/{first}/0/00000.png").unlink()
    assert evaluate(spy, full, out, short_side=128, progress=False).computed == [first] and spy.calls == 4
    assert evaluate(spy, full, out, short_side=128, progress=False, resume=False).computed == [first, second]


def test_changed_settings_redo_completed_videos(tmp_path):
    synthetic = _synthetic("mevis", tmp_path)
    predictor = PerfectPredictor(synthetic)
    evaluate(predictor, synthetic.root, tmp_path / "out", benchmark="mevis", progress=False)
    result = evaluate(predictor, synthetic.root, tmp_path / "out", benchmark="mevis", threshold=0.7, progress=False)
    assert len(result.computed) == 2 and len(predictor.calls) == 4
    result = evaluate(predictor, synthetic.root, tmp_path / "out", benchmark="mevis", max_frames=2, progress=False)
    assert result.metrics["J&F"] == 1.0 and len(list((tmp_path / "out/Annotations").rglob("*.png"))) == 2 * 2 * 2


# --------------------------------------------------------------------------- scale-out and CLI


def test_sharding_and_env():
    ids = ["b", "a", "d", "c", "e"]
    assert [shard(ids, r, 2) for r in range(2)] == [["a", "c", "e"], ["b", "d"]]
    assert sorted(sum((shard(ids, r, 3) for r in range(3)), [])) == sorted(ids)
    env = context_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.is_main) == (3, 4, 1, False)
    assert context_from_env({}).world_size == 1


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_two_gloo_processes_give_the_same_numbers_as_one(tmp_path):
    synthetic = make_synthetic("mevis", tmp_path / "data", videos=4, frames=3)
    options = ["-m", "referdino_demo.evaluation", "--benchmark", "mevis", "--data-root", str(synthetic.root),
               "--checkpoint", "tiny-random", "--short-side", "128", "--device", "cpu", "--no-progress"]
    # --standalone: torchrun picks a free port for the rendezvous itself.
    two = _run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *options,
                "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    assert "over 2 process(es)" in two.stderr and two.stdout.count("MeViS valid_u: J&F") == 1  # rank 0 prints
    one = _run([*options, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    assert (tmp_path / "two/metrics_per_expression.csv").read_text() == \
        (tmp_path / "one/metrics_per_expression.csv").read_text()
    metrics = [json.loads((tmp_path / f"{name}/metrics.json").read_text()) for name in ("two", "one")]
    assert metrics[0] == metrics[1]
    assert len(_csv(tmp_path / "two/metrics_per_expression.csv")) == 8
    assert _snapshot(tmp_path / "two/Annotations") == _snapshot(tmp_path / "one/Annotations")


def test_evaluate_subcommand(tmp_path, capsys):
    synthetic = _synthetic("ytvos", tmp_path, videos=1, frames=2)
    parser = argparse.ArgumentParser(prog="referdino")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", "--benchmark", "ytvos", "--data-root", str(synthetic.root), "--out",
                              str(tmp_path / "out"), "--checkpoint", "tiny-random", "--short-side", "128",
                              "--max-frames", "1", "--no-progress"])
    assert args.handler(args) == 0
    assert "Ref-YouTube-VOS valid: J&F" in capsys.readouterr().out
    assert len(list((tmp_path / "out/Annotations").rglob("*.png"))) == 2  # 2 expressions x 1 frame
    assert (tmp_path / "out/submission.zip").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = main(["--benchmark", "mevis", "--data-root", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
                 "--checkpoint", "tiny-random"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("referdino evaluate: error: dataset folder") and "\n" not in err
