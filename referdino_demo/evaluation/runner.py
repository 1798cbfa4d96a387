"""``evaluate``: run a predictor over a benchmark split, write the predictions, score what can be scored.

Per video: all its expressions go through one ``predictor.segment`` call (the backbone runs once; more than
16 expressions are split into several calls), the official post-processing of the benchmark writes the
PNGs (see ``writers``), then a done-file. A rerun skips videos whose done-file matches the settings and
redoes the others from scratch, so an interrupted run (or a half-written video) resumes cleanly.

After all processes are done (barrier), splits with local ground truth are scored from the files on disk
(``scoring``): each process scores its own videos, rank 0 gathers the rows, prints J, F, J&F and writes
``metrics.json`` and ``metrics_per_expression.csv``. Server-scored splits get ``submission.zip``.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ExpressionError, ReferDinoError
from . import distributed, scoring, writers
from .datasets import EvalDataset, VideoSample, open_dataset

MAX_EXPRESSIONS_PER_CALL = 16  # the predictor's limit per segment call
NAMES = {"ytvos": "Ref-YouTube-VOS", "davis": "Ref-DAVIS17", "mevis": "MeViS"}


@dataclass
class EvaluationResult:
    """What one process did and, when the split was scored, the metrics (fractions in [0, 1]).

    metrics: {"J", "F", "J&F", "count", ...} or None for server-scored splits; rows: per-expression scores
    of all processes; computed / skipped: video ids this process predicted / found complete.
    """

    benchmark: str
    split: str
    out_dir: Path
    metrics: dict | None = None
    rows: list[dict] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    zip_path: Path | None = None

    def summary(self) -> str:
        """One line, numbers in percent as the papers report them."""
        name = f"{NAMES.get(self.benchmark, self.benchmark)} {self.split}"
        if self.metrics is None:
            target = self.zip_path or self.out_dir / writers.PREDICTIONS
            return f"{name}: no local ground truth; submit {target} to the benchmark server"
        m = self.metrics
        unit = "annotator-objects" if self.benchmark == "davis" else "expressions"
        return (f"{name}: J&F {100 * m['J&F']:.2f}  J {100 * m['J']:.2f}  F {100 * m['F']:.2f}  "
                f"({m['count']} {unit})")


def evaluate(predictor, dataset: EvalDataset | str | Path, out_dir: str | Path, *, split: str | None = None,
             benchmark: str | None = None, threshold: float = 0.5, resume: bool = True, rank: int = 0,
             world_size: int = 1, progress: bool = True, obj_threshold: float = 0.2,
             max_frames: int | None = None, short_side: int = 360) -> EvaluationResult:
    """Evaluate ``predictor`` on one benchmark split; every process of a torchrun job calls this.

    predictor: a ``ReferDinoPredictor`` (or any object with its ``segment(frames, expressions, **options)``).
    dataset: an ``EvalDataset`` or a data root (then ``benchmark`` and ``split`` pick the reader).
    threshold: mask probability threshold (0.5 = logits > 0, all official scripts); for Ref-DAVIS17 the
    probability below which an object's soft mask is dropped before the argmax.
    obj_threshold: MeViS multi-target rule, every query whose mean score exceeds it (official 0.2).
    max_frames: only the first N frames of every video are predicted and scored (a quick check; the
    server zips are then incomplete). short_side: model input size (official 360).
    rank, world_size: this process in a torch.distributed group (see ``distributed.init_distributed``).
    """
    if not isinstance(dataset, EvalDataset):
        if benchmark is None:
            raise ReferDinoError("pass benchmark='ytvos', 'davis' or 'mevis' with a data root")
        dataset = open_dataset(benchmark, dataset, split)
    for name, value in (("benchmark", benchmark), ("split", split)):
        if value is not None and value != getattr(dataset, name):
            raise ReferDinoError(f"{name}={value!r} but the dataset is {getattr(dataset, name)!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ReferDinoError(f"threshold must be a probability in [0, 1], got {threshold}")
    if max_frames is not None and max_frames < 1:
        raise ReferDinoError(f"max_frames must be >= 1, got {max_frames}")
    distributed.check_group(world_size)
    benchmark = dataset.benchmark
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"benchmark": benchmark, "split": dataset.split, "threshold": threshold,
                "obj_threshold": obj_threshold if benchmark == "mevis" else None, "max_frames": max_frames,
                "short_side": short_side, "checkpoint": str(getattr(predictor, "checkpoint", ""))}
    result = EvaluationResult(benchmark, dataset.split, out_dir)
    mine = distributed.shard(dataset.video_ids, rank, world_size)
    palette = writers.davis_palette(dataset.root) if benchmark == "davis" else None

    bar = _progress_bar(dataset, mine, max_frames, enabled=progress and rank == 0, world_size=world_size)
    for video_id in mine:
        sample = dataset[video_id]
        frames = min(sample.num_frames, max_frames or sample.num_frames)
        if resume and writers.is_done(benchmark, out_dir, video_id, settings):
            result.skipped.append(video_id)
        else:
            started = time.perf_counter()
            writers.clear_video(benchmark, out_dir, video_id)  # a half-written video is redone from scratch
            outputs = _predict(predictor, sample, frames, benchmark, obj_threshold, short_side)
            files = _write(dataset, out_dir, sample, outputs, benchmark, threshold, obj_threshold, palette, frames)
            writers.mark_done(out_dir, video_id, settings, files, time.perf_counter() - started)
            result.computed.append(video_id)
        if bar is not None:
            bar.set_postfix_str(video_id, refresh=False)
            bar.update(frames)
    if bar is not None:
        bar.close()

    distributed.barrier(world_size)  # every video is written before scoring and zipping
    if dataset.has_ground_truth:
        if benchmark == "davis":
            rows = scoring.score_davis(dataset, mine, out_dir, max_frames)
        else:
            rows = scoring.score_expressions(dataset, mine, out_dir, max_frames)
        result.rows = _merge(distributed.gather(rows, world_size), benchmark)
        result.metrics = scoring.summarize(benchmark, result.rows)
        if rank == 0:
            _write_metrics(result, settings)
    if rank == 0 and (benchmark == "ytvos" or (benchmark == "mevis" and not dataset.has_ground_truth)):
        result.zip_path = writers.write_zip(out_dir, benchmark, dataset.video_ids)
    distributed.barrier(world_size)  # no process returns before the zip and the metrics are written
    if rank == 0:
        print(result.summary(), flush=True)
    return result


def _progress_bar(dataset, video_ids, max_frames, *, enabled, world_size):
    """A tqdm bar over this process's frames (videos differ in length, frames give a fairer ETA)."""
    if not enabled:
        return None
    from tqdm import tqdm

    total = sum(min(dataset[v].num_frames, max_frames or dataset[v].num_frames) for v in video_ids)
    shard = f" (rank 0 of {world_size})" if world_size > 1 else ""
    return tqdm(total=total, unit="frame", desc=f"{NAMES[dataset.benchmark]} {dataset.split}{shard}",
                file=sys.stderr, dynamic_ncols=True)


def _predict(predictor, sample: VideoSample, num_frames: int, benchmark: str, obj_threshold: float,
             short_side: int) -> dict:
    """exp_id -> ExpressionResult (None when the expression has no readable word), all expressions of the
    video through as few ``segment`` calls as the predictor's 16-expression limit allows."""
    from ..predictor import validate_expressions

    texts = {}
    for exp_id, expression in sample.expressions.items():
        try:
            texts[exp_id] = validate_expressions([expression.text])[0]
        except ExpressionError as err:
            warnings.warn(f"{sample.video_id}/{exp_id}: {err}; writing empty masks", stacklevel=2)
            texts[exp_id] = None
    unique = list(dict.fromkeys(t for t in texts.values() if t is not None))
    by_text = {}
    if unique:
        frames = sample.load_frames(num_frames)
        options = {"short_side": short_side, "max_pixels": None, "max_duration_s": None}
        if benchmark == "mevis":
            options["multi_target"] = obj_threshold  # keep the masks of every query above the threshold
        for start in range(0, len(unique), MAX_EXPRESSIONS_PER_CALL):
            segmentation = predictor.segment(frames, unique[start:start + MAX_EXPRESSIONS_PER_CALL], **options)
            by_text.update({text: segmentation[text] for text in unique[start:start + MAX_EXPRESSIONS_PER_CALL]})
    return {exp_id: None if text is None else by_text[text] for exp_id, text in texts.items()}


def _write(dataset, out_dir, sample, outputs, benchmark, threshold, obj_threshold, palette, frames) -> int:
    if benchmark == "davis":
        groups = dataset.annotator_expressions(sample.video_id)
        return writers.write_davis(out_dir, sample, groups, outputs, threshold, palette, frames)
    multi_target = obj_threshold if benchmark == "mevis" else None
    return sum(writers.write_binary(out_dir, sample, exp_id, outputs[exp_id], threshold, multi_target, frames)
               for exp_id in sample.expressions)


def _merge(per_rank: list[list[dict]], benchmark: str) -> list[dict]:
    """All processes' rows in a fixed order (independent of the number of processes)."""
    rows = [row for part in per_rank for row in part]
    if benchmark == "davis":
        return sorted(rows, key=lambda r: (r["annotator"], r["video"], r["object"]))
    return sorted(rows, key=lambda r: (r["video"], _natural(r["exp_id"])))


def _natural(exp_id: str) -> tuple:
    """Sort key putting "2" before "10" (expression ids are numbers in all three benchmarks)."""
    return (0, int(exp_id), "") if exp_id.isdigit() else (1, 0, exp_id)


def _write_metrics(result: EvaluationResult, settings: dict) -> None:
    """``metrics.json`` (summary + settings) and ``metrics_per_expression.csv``, each replaced atomically."""
    out = result.out_dir
    columns = list(result.rows[0])
    tmp = out / ".metrics_per_expression.csv.part"
    with open(tmp, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
    os.replace(tmp, out / "metrics_per_expression.csv")
    tmp = out / ".metrics.json.part"
    tmp.write_text(json.dumps({"benchmark": result.benchmark, "split": result.split, **result.metrics,
                               "settings": settings}, indent=2), encoding="utf-8")
    os.replace(tmp, out / "metrics.json")
