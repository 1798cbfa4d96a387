"""`evaluate`: run a predictor over a benchmark split, write the predictions, score what can be scored.

Per video: all its expressions go through one `predictor.segment` call (the backbone runs once; more than
16 expressions are split into several calls), the official post-processing of the benchmark writes the
PNGs (see `writers`), then a done-file. A rerun skips videos whose done-file matches the settings and
redoes the others from scratch, so an interrupted run (or a half-written video) resumes cleanly; videos done
with other prediction settings (`writers.PREDICTION_SETTINGS`) are redone, and one line says so.

After all processes are done (barrier), splits with local ground truth are scored from the files on disk
(`scoring`): each process scores its own videos, rank 0 gathers the rows, prints J, F, J&F and writes
`metrics.json` and `metrics_per_expression.csv`. Server-scored splits get `submission.zip`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, ExpressionError, ReferDinoError
from ..output_files import atomic_write, check_output_folder, output_errors
from ..options import DEFAULT_SHORT_SIDE, check_option, check_options
from . import distributed, scoring, writers
from .datasets import EvalDataset, VideoSample, open_dataset

MAX_EXPRESSIONS_PER_CALL = 16  # the predictor's limit per segment call
NAMES = {"ytvos": "Ref-YouTube-VOS", "davis": "Ref-DAVIS17", "mevis": "MeViS"}


@dataclass
class EvaluationResult:
    """What one process did and, when the split was scored, the metrics (fractions in [0, 1]).

    metrics: {"J", "F", "J&F", "count", ...} or None for server-scored splits; rows: per-expression scores
    of all processes; computed / skipped: video ids this process predicted / found complete; redone: those of
    `computed` done before with other prediction settings.
    """

    benchmark: str
    split: str
    out_dir: Path
    metrics: dict | None = None
    rows: list[dict] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redone: list[str] = field(default_factory=list)
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
             max_frames: int | None = None, short_side: int = DEFAULT_SHORT_SIDE, query_decay: float | None = None,
             ) -> EvaluationResult:
    """Evaluate `predictor` on one benchmark split; every process of a torchrun job calls this.

    predictor: a `ReferDinoPredictor` (or any object with its `segment(frames, expressions, **options)`),
    or a function returning one, called once the options and input files are checked (so that a bad input is
    refused before a checkpoint loads).
    dataset: an `EvalDataset` or a data root (then `benchmark` and `split` pick the reader).
    threshold: mask probability threshold (0.5 = logits > 0, all official scripts); for Ref-DAVIS17 the
    probability below which an object's soft mask is dropped before the argmax.
    obj_threshold: MeViS multi-target rule, every query whose mean score exceeds it (official 0.2).
    max_frames: only the first N frames of every video are predicted and scored (a quick check; the
    server zips are then incomplete). short_side: model input size (official 360). query_decay: the pruning
    keep ratio per decoder layer (None: the checkpoint's).
    rank, world_size: this process in a torch.distributed group (see `distributed.init_distributed`).

    Refusals (`ReferDinoError`) come before any model work where the input allows it: the options, the
    layout and meta files, every frame header and all ground truth before the predictor is loaded, then every
    frame to predict is decoded once before the first prediction.
    """
    threshold, max_frames, short_side, query_decay = check_options(
        threshold=threshold, max_frames=max_frames, short_side=short_side, query_decay=query_decay).values()
    obj_threshold = check_option("multi_target", obj_threshold)  # the same rule as the predictor's multi_target
    if not isinstance(dataset, EvalDataset):
        if benchmark is None:
            raise ConfigError("pass benchmark='ytvos', 'davis' or 'mevis' with a data root")
        dataset = open_dataset(benchmark, dataset, split)
    for name, value in (("benchmark", benchmark), ("split", split)):
        if value is not None and value != getattr(dataset, name):
            raise ConfigError(f"{name}={value!r} but the dataset is {getattr(dataset, name)!r}")
    distributed.check_group(world_size)
    benchmark = dataset.benchmark
    out_dir = Path(out_dir)
    check_output_folder(out_dir)  # created only once every input is checked: a refused run leaves nothing
    mine = distributed.shard(dataset.video_ids, rank, world_size)
    _agree(world_size, lambda: dataset.check(mine, max_frames))
    palette = writers.davis_palette(dataset.root) if benchmark == "davis" else None

    if not hasattr(predictor, "segment"):
        predictor = predictor()
    settings = prediction_settings(predictor, dataset, threshold=threshold, obj_threshold=obj_threshold,
                                   max_frames=max_frames, short_side=short_side, query_decay=query_decay)
    result = EvaluationResult(benchmark, dataset.split, out_dir)
    todo, changed = _plan(benchmark, out_dir, mine, settings, resume)
    pending = set(todo)
    result.skipped, result.redone = [v for v in mine if v not in pending], sorted(changed)
    line = _redo_line(distributed.gather(changed, world_size), len(dataset))
    if line and rank == 0:
        print(line, file=sys.stderr, flush=True)
    # Decode every frame to predict before the first prediction: a frame damaged deep inside is refused now, not
    # hours in (under torchrun the other processes would wait for this one at the barrier). Costs a few % of a run.
    _agree(world_size, lambda: _decode_frames(dataset, todo, max_frames))

    bar = _progress_bar(dataset, mine, max_frames, enabled=progress and rank == 0, world_size=world_size)
    with output_errors(out_dir):  # a full disk or lost permissions: one line, not a traceback
        out_dir.mkdir(parents=True, exist_ok=True)
        for video_id in mine:
            sample = dataset[video_id]
            frames = min(sample.num_frames, max_frames or sample.num_frames)
            if video_id in pending:
                _redo_video(predictor, dataset, sample, out_dir, settings, palette, frames)
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
            with output_errors(out_dir):
                _write_metrics(result, settings)
    if rank == 0 and (benchmark == "ytvos" or (benchmark == "mevis" and not dataset.has_ground_truth)):
        with output_errors(out_dir):
            result.zip_path = writers.write_zip(out_dir, benchmark, dataset.video_ids)
    distributed.barrier(world_size)  # no process returns before the zip and the metrics are written
    if rank == 0:
        print(result.summary(), flush=True)
    return result


# -- checks before any work ------------------------------------------------------------------------------
def _agree(world_size: int, check: Callable[[], object]) -> None:
    """Run `check` in every process and raise a refusal in all of them when any refused: a process stopping
    alone would leave the others waiting for it at the next barrier (for hours)."""
    try:
        check()
        error = None
    except ReferDinoError as err:
        error = err
    errors = [e for e in distributed.gather(error, world_size) if e is not None]
    if errors:
        raise error or errors[0]


def _decode_frames(dataset: EvalDataset, video_ids: list[str], max_frames: int | None) -> None:
    for video_id in video_ids:  # one video's frames in memory at a time
        dataset[video_id].load_frames(max_frames)


# -- resume ----------------------------------------------------------------------------------------------
def prediction_settings(predictor, dataset: EvalDataset, *, threshold: float, obj_threshold: float,
                        max_frames: int | None, short_side: int, query_decay: float | None) -> dict:
    """The values that decide a video's prediction files, keyed as `writers.PREDICTION_SETTINGS`: recorded
    in every done-file (and metrics.json) and compared on resume. The run itself reads its options from here.

    The device counts by type: CPU and GPU numerics differ, cuda:0 and cuda:1 do not (and which GPU a video
    lands on changes with the number of processes). The dtype is the resolved one ("auto" -> bfloat16 ...).
    """
    device, dtype = getattr(predictor, "device", None), getattr(predictor, "dtype", None)
    settings = {"benchmark": dataset.benchmark, "split": dataset.split,
                "checkpoint": checkpoint_id(str(getattr(predictor, "checkpoint", ""))),
                "vocabulary": vocabulary_id(getattr(predictor, "tokenizer", None)),
                "device": None if device is None else str(device).split(":")[0],
                "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
                "short_side": short_side, "query_decay": query_decay, "max_frames": max_frames,
                "threshold": threshold, "obj_threshold": obj_threshold if dataset.benchmark == "mevis" else None}
    assert tuple(settings) == writers.PREDICTION_SETTINGS  # one list of the fields that matter
    return settings


def checkpoint_id(name: str) -> str:
    """What identifies a checkpoint's weights: a Hub name or 'tiny-random' names fixed weights; a local file
    or folder is named plus a digest of its content (a retrained file under the same name is noticed; hashing
    takes about a second per GB, once per process)."""
    path = Path(name)
    if not name or not path.exists():
        return name
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return f"{path.name} sha256:{_digest(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))}"


@functools.lru_cache(maxsize=8)
def _digest(files: tuple) -> str:
    """sha256 of the files' bytes; cached by (path, size, modification time): several runs in one process."""
    digest = hashlib.sha256()
    for path, _, _ in files:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def vocabulary_id(tokenizer) -> str | None:
    """A digest of the tokenizer's vocabulary and casing (another vocab.txt tokenizes, so predicts, differently)."""
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return None
    text = json.dumps([sorted(tokenizer.get_vocab().items()), getattr(tokenizer, "do_lower_case", None)])
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _plan(benchmark: str, out_dir: Path, video_ids: list[str], settings: dict,
          resume: bool) -> tuple[list[str], dict[str, dict]]:
    """(videos to predict, {video: changed settings} of those done before with other settings)."""
    todo, changed = [], {}
    for video_id in video_ids:
        complete, changes = writers.resume_state(benchmark, out_dir, video_id, settings) if resume else (False, {})
        if not complete:
            todo.append(video_id)
        if changes:
            changed[video_id] = changes
    return todo, changed


def _redo_line(per_rank: list[dict[str, dict]], total: int) -> str | None:
    """One line for the log: how many videos are redone because their settings changed, and which changed."""
    changed = {video: changes for part in per_rank for video, changes in part.items()}
    if not changed:
        return None
    seen: dict[str, tuple[set, object]] = {}
    for changes in changed.values():
        for name, (old, new) in changes.items():
            seen.setdefault(name, (set(), new))[0].add(json.dumps(old))
    details = "; ".join(f"{name} {' / '.join(sorted(seen[name][0]))} -> {json.dumps(seen[name][1])}"
                        for name in writers.PREDICTION_SETTINGS if name in seen)
    return (f"resume: {len(changed)} of {total} videos were predicted with other settings and are redone "
            f"({details})")


# -- one video -------------------------------------------------------------------------------------------
def _redo_video(predictor, dataset, sample: VideoSample, out_dir: Path, settings: dict, palette,
                frames: int) -> None:
    """Predict and write one video from scratch, its done-file last. A video that fails half-way (a refused
    input, out of memory, Ctrl-C) is removed again: nothing half-written stays behind."""
    started = time.perf_counter()
    writers.clear_video(settings["benchmark"], out_dir, sample.video_id)
    try:
        outputs = _predict(predictor, sample, frames, settings)
        files = _write(dataset, out_dir, sample, outputs, settings, palette, frames)
        writers.mark_done(out_dir, sample.video_id, settings, files, time.perf_counter() - started)
    except BaseException:
        writers.clear_video(settings["benchmark"], out_dir, sample.video_id)
        raise


def _progress_bar(dataset, video_ids, max_frames, *, enabled, world_size):
    """A tqdm bar over this process's frames (videos differ in length, frames give a fairer ETA)."""
    if not enabled:
        return None
    from tqdm import tqdm

    total = sum(min(dataset[v].num_frames, max_frames or dataset[v].num_frames) for v in video_ids)
    shard = f" (rank 0 of {world_size})" if world_size > 1 else ""
    return tqdm(total=total, unit="frame", desc=f"{NAMES[dataset.benchmark]} {dataset.split}{shard}",
                file=sys.stderr, dynamic_ncols=True)


def _predict(predictor, sample: VideoSample, num_frames: int, settings: dict) -> dict:
    """exp_id -> ExpressionResult (None when the expression has no readable word), all expressions of the
    video through as few `segment` calls as the predictor's 16-expression limit allows."""
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
        # As the official scripts: none of the demo's caps on frame size, duration or elongation.
        options = {"short_side": settings["short_side"], "query_decay": settings["query_decay"], "max_pixels": None,
                   "max_duration_s": None, "max_long_side": None}
        if settings["obj_threshold"] is not None:  # MeViS: keep the masks of every query above the threshold
            options["multi_target"] = settings["obj_threshold"]
        for start in range(0, len(unique), MAX_EXPRESSIONS_PER_CALL):
            segmentation = predictor.segment(frames, unique[start:start + MAX_EXPRESSIONS_PER_CALL], **options)
            by_text.update({text: segmentation[text] for text in unique[start:start + MAX_EXPRESSIONS_PER_CALL]})
    return {exp_id: None if text is None else by_text[text] for exp_id, text in texts.items()}


def _write(dataset, out_dir, sample, outputs, settings, palette, frames) -> int:
    threshold = settings["threshold"]
    if settings["benchmark"] == "davis":
        groups = dataset.annotator_expressions(sample.video_id)
        return writers.write_davis(out_dir, sample, groups, outputs, threshold, palette, frames)
    return sum(writers.write_binary(out_dir, sample, exp_id, outputs[exp_id], threshold, settings["obj_threshold"],
                                    frames) for exp_id in sample.expressions)


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
    """`metrics.json` (summary + settings) and `metrics_per_expression.csv`, each replaced atomically."""
    summary = {"benchmark": result.benchmark, "split": result.split, **result.metrics, "settings": settings}
    with atomic_write(result.out_dir / "metrics_per_expression.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=list(result.rows[0]))
            writer.writeheader()
            for row in result.rows:
                writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
    with atomic_write(result.out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
