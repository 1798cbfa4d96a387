"""Score prediction files on disk against local ground truth, as the official scorers do.

Scoring reads the PNGs back (not the in-memory masks), so a resumed run scores exactly what would be
submitted, skipped videos included.

* Ref-YouTube-VOS with local masks and MeViS `valid_u` (`eval_mevis.py`): per expression, J and F are the
  means over all frames of `db_eval_iou` / `db_eval_boundary`; a missing prediction folder scores 0.
  Reported J, F are means over expressions, J&F = (J + F) / 2.
* Ref-DAVIS17 (`eval_davis.py` = davis2017-evaluation, task `unsupervised`): per annotator and sequence,
  every predicted object id is scored against every ground-truth object with the void mask (label 255); up
  to 20 proposals; Hungarian matching on (mean J + mean F) / 2; objects of all sequences pooled. The
  reported numbers average the 4 annotators.

Rows (one per expression, or per annotator and ground-truth object for DAVIS) are plain dicts so they can be
gathered across processes and written to CSV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..errors import ReferDinoError
from .datasets import EvalDataset, RefDavis17, read_image, relative
from .metrics import boundary_f_measure, region_similarity
from .writers import DONE, PREDICTIONS

MAX_PROPOSALS = 20  # davis2017-evaluation refuses more predicted objects per sequence


def _read_png(path: Path, out_dir: Path, video_id: str) -> np.ndarray:
    """(H, W) array of a prediction PNG: gray values or palette ids (an RGB PNG is reduced to 'any channel
    set'); a missing or damaged one raises an error naming it (relative to the output folder)."""
    def fail(reason: str) -> ReferDinoError:
        return ReferDinoError(f"prediction {relative(path, out_dir)} {reason}; delete {DONE}/{video_id}.json in "
                              f"the output folder and rerun the evaluation (with resume) to redo video {video_id}")

    array = np.array(read_image(path, fail))
    return array.any(-1).astype(np.uint8) if array.ndim == 3 else array


def _jf_rows(j: np.ndarray, f: np.ndarray) -> dict:
    jm, fm = float(np.mean(j)), float(np.mean(f))
    return {"J": jm, "F": fm, "J&F": (jm + fm) / 2, "frames": int(len(j))}


def score_expressions(dataset: EvalDataset, video_ids: list[str], out_dir: Path,
                      max_frames: int | None = None) -> list[dict]:
    """Per-expression J, F (Ref-YouTube-VOS / MeViS style) of `video_ids` from `OUT/Annotations`."""
    rows = []
    root = Path(out_dir) / PREDICTIONS
    for video_id in video_ids:
        sample = dataset[video_id]
        names = sample.frame_names[:max_frames]
        for exp_id, expression in sample.expressions.items():
            gt = sample.ground_truth(exp_id)[:len(names)]  # (T, H, W) bool
            folder = root / video_id / exp_id
            row = {"video": video_id, "exp_id": exp_id, "expression": expression.text}
            if not folder.is_dir():  # as eval_mevis.py: a missing prediction scores 0
                rows.append({**row, "J": 0.0, "F": 0.0, "J&F": 0.0, "frames": len(names), "missing": True})
                continue
            pred = np.stack([_read_png(folder / f"{name}.png", out_dir, video_id) for name in names])
            if pred.shape != gt.shape:
                raise ReferDinoError(f"prediction {relative(folder, out_dir)} is {pred.shape} (T, H, W) but the "
                                     f"ground truth is {gt.shape}; predictions must have the original frame size")
            rows.append({**row, **_jf_rows(region_similarity(pred, gt), boundary_f_measure(pred, gt)),
                         "missing": False})
    return rows


def match_davis_objects(gt_masks: np.ndarray, void: np.ndarray, pred_ids: np.ndarray):
    """The davis2017-evaluation unsupervised matching of one sequence.

    gt_masks: (N, T, H, W) bool; void: (T, H, W) bool; pred_ids: (T, H, W) int, 0 background, 1..P objects.
    Returns `[(proposal index p, gt index n, J (T,), F (T,))]`, one per matched pair: predicted objects
    (`1..max(pred_ids)`, zero-padded to N) are matched to ground-truth objects by the Hungarian algorithm
    maximising (mean J + mean F) / 2.
    """
    num_pred = int(pred_ids.max()) if pred_ids.size else 0
    if num_pred > MAX_PROPOSALS:
        raise ReferDinoError(f"{num_pred} predicted objects in one sequence; the DAVIS unsupervised protocol "
                             f"allows at most {MAX_PROPOSALS}")
    pred = pred_ids[None] == np.arange(1, max(num_pred, len(gt_masks)) + 1)[:, None, None, None]
    frames = gt_masks.shape[1]
    j = np.zeros((len(pred), len(gt_masks), frames))
    f = np.zeros_like(j)
    for n, gt in enumerate(gt_masks):
        for p, mask in enumerate(pred):
            j[p, n] = region_similarity(mask, gt, void)
            f[p, n] = boundary_f_measure(mask, gt, void=void)
    rows, cols = linear_sum_assignment(-(j.mean(2) + f.mean(2)) / 2)
    return [(int(p), int(n), j[p, n], f[p, n]) for p, n in zip(rows, cols)]


def score_davis(dataset: RefDavis17, video_ids: list[str], out_dir: Path, max_frames: int | None = None) -> list[dict]:
    """Per annotator and ground-truth object J, F of `video_ids` in the DAVIS `val` list, reading
    `OUT/Annotations/anno_{k}/<video>/<frame>.png`."""
    rows = []
    root = Path(out_dir) / PREDICTIONS
    for video_id in video_ids:
        if video_id not in dataset.sequences:
            continue  # scored only if DAVIS ImageSets/2017/val.txt lists it, as the official scorer
        objects = dataset.objects(video_id)
        frame_ids = objects.frame_ids[:max_frames]
        gt, void = objects.masks[:, :len(frame_ids)], objects.void[:len(frame_ids)]
        for k, exp_ids in enumerate(dataset.annotator_expressions(video_id)):
            folder = root / f"anno_{k}" / video_id
            pred = np.stack([_read_png(folder / f"{frame}.png", out_dir, video_id) for frame in frame_ids])
            if pred.shape != void.shape:
                raise ReferDinoError(f"predictions in {relative(folder, out_dir)} are {pred.shape} (T, H, W) but "
                                     f"the DAVIS annotations are {void.shape}; use the 480p frames")
            for p, n, j, f in match_davis_objects(gt, void, pred):
                exp_id = exp_ids[p] if p < len(exp_ids) else ""
                text = dataset[video_id].expressions[exp_id].text if exp_id else ""
                rows.append({"annotator": k, "video": video_id, "object": n + 1, "proposal": p + 1,
                             "exp_id": exp_id, "expression": text, **_jf_rows(j, f)})
    return rows


def summarize(benchmark: str, rows: list[dict]) -> dict:
    """J, F, J&F (fractions in [0, 1]) from per-expression rows; Ref-DAVIS17 also per annotator.

    Ref-YouTube-VOS / MeViS: means over expressions. Ref-DAVIS17: per annotator the mean over all
    ground-truth objects of all sequences, then the mean over the annotators.
    """
    if not rows:
        raise ReferDinoError("nothing was scored: no video of the split has ground truth to compare with")
    if benchmark != "davis":
        j, f = float(np.mean([r["J"] for r in rows])), float(np.mean([r["F"] for r in rows]))
        return {"J": j, "F": f, "J&F": (j + f) / 2, "count": len(rows),
                "missing": sum(bool(r.get("missing")) for r in rows)}
    annotators = {}
    for k in sorted({r["annotator"] for r in rows}):
        j = float(np.mean([r["J"] for r in rows if r["annotator"] == k]))
        f = float(np.mean([r["F"] for r in rows if r["annotator"] == k]))
        annotators[f"anno_{k}"] = {"J": j, "F": f, "J&F": (j + f) / 2}
    means = {key: float(np.mean([a[key] for a in annotators.values()])) for key in ("J", "F", "J&F")}
    return {**means, "count": len(rows), "annotators": annotators}
