"""J&F metrics for video object segmentation, computed exactly as the official DAVIS 2017 code does.

Reproduces `db_eval_iou` and `db_eval_boundary` / `f_measure` / `_seg2bmap` from
davisvideochallenge/davis2017-evaluation (commit ac7c43f, `davis2017/metrics.py`; MeViS ships a
byte-identical copy), without OpenCV or scikit-image. Results are bit-identical to the official code on
the public reference vectors in `shared/jf/`. An optional void mask (pixels to ignore) is supported as in the
official code: MeViS never passes one, the DAVIS unsupervised task (Ref-DAVIS17) passes label 255 as void.

Shapes and inputs
    `pred` and `gt` are arrays of shape (T, H, W) (a clip) or (H, W) (one frame, treated as T = 1).
    Any non-zero value is foreground (the official code casts to bool), so 0/1, 0/255 and bool all work.
    Per-frame functions return float64 arrays of shape (T,). Both metrics are symmetric in pred and gt.

Conventions (all from the official code)
    J (region similarity) = |pred & gt| / |pred | gt| per frame; 1.0 when the union is empty.

    F (contour accuracy), per frame:
    * Boundary map (`_seg2bmap`): a pixel is boundary when it differs from its right, lower or
      lower-right neighbour (outside the image reads as background); on the last row only the right
      neighbour counts, on the last column only the lower one, and the bottom-right pixel never counts.
      The map is therefore asymmetric (outside the object on its top/left sides, inside on its
      bottom/right sides) and the image border never forms a boundary: a full-frame mask has none.
    * Matching radius: `bound_pix = bound_th` if `bound_th >= 1` else
      `ceil(bound_th * sqrt(H**2 + W**2))` in float64 (8 px at 480x854 for the default 0.008).
    * A boundary pixel is matched when a boundary pixel of the other mask lies within the disk
      dy**2 + dx**2 <= bound_pix**2 (skimage `disk` + `cv2.dilate`, pixels outside the image add
      nothing). Matching is many-to-one, not a bipartite assignment.
    * precision = matched pred / n pred, recall = matched gt / n gt, where a ratio whose boundary map is
      empty is 1 (so only-one-empty gives F = 0 and both-empty gives F = 1). This is decided on *boundary*
      pixels: a full-frame GT vs an empty prediction scores J = 0 but F = 1.
    * F = 2PR / (P + R), and 0 when P + R = 0.

    Void (`void`, same shape, non-zero = ignore): J counts only non-void pixels (union empty -> 1); F first
    sets void pixels of both masks to background (so a boundary appears where an object meets void) and keeps
    the radius of the full frame size.

    `j_and_f` averages J and F over all frames (frames where both masks are empty count as 1, nothing is
    skipped) and returns `JFScore(j, f, jf)` with `jf = (j + f) / 2`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError

__all__ = ["JFScore", "region_similarity", "boundary_f_measure", "j_and_f"]


class JFScore(NamedTuple):
    """Mean J, mean F and their mean over the frames of one clip. A tuple, so `j, f, jf = score` works."""

    j: float
    f: float
    jf: float


def _as_void(void, shape: tuple[int, ...]) -> np.ndarray | None:
    """Validate an optional void mask against the masks' (T, H, W) stack shape; boolean (T, H, W) or None."""
    if void is None:
        return None
    void = np.asarray(void)
    if void.shape != shape and void.shape != shape[1:]:
        raise ConfigError(f"the void mask must have the masks' shape {shape}, got {void.shape}")
    void = void if void.dtype == bool else void != 0
    return void if void.ndim == 3 else void[None]


def _as_stacks(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    """Validate `pred`/`gt` and return them as boolean (T, H, W) stacks."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ConfigError(f"pred and gt must have the same shape, got pred {pred.shape} and gt {gt.shape}")
    if pred.ndim not in (2, 3):
        raise ConfigError(f"masks must have shape (T, H, W) or (H, W), got {pred.shape}")
    if pred.shape[-1] == 0 or pred.shape[-2] == 0:
        raise ConfigError(f"frames must be at least 1x1 pixel, got masks of shape {pred.shape}")
    # `!= 0` equals the official `astype(bool)` (any non-zero, NaN included, is foreground).
    pred, gt = (a if a.dtype == bool else a != 0 for a in (pred, gt))
    return (pred[None], gt[None]) if pred.ndim == 2 else (pred, gt)


def region_similarity(pred, gt, void=None) -> np.ndarray:
    """Per-frame J (mask IoU) of (T, H, W) or (H, W) masks; float64 array of shape (T,), 1.0 where both are empty.

    void: optional mask of the same shape; its pixels are left out of the intersection and the union.
    """
    pred, gt = _as_stacks(pred, gt)
    void = _as_void(void, pred.shape)
    inter, union = pred & gt, pred | gt
    if void is not None:
        inter, union = inter & ~void, union & ~void
    inter = np.count_nonzero(inter, axis=(1, 2))
    union = np.count_nonzero(union, axis=(1, 2))
    # int / int in float64, as in db_eval_iou; an empty union means both masks are empty: a perfect frame.
    return np.divide(inter, union, out=np.ones(len(union)), where=union > 0)


def _bound_pix(bound_th: float, height: int, width: int) -> int:
    """Matching radius in pixels, exactly as `f_measure` computes it (float64: see module docstring)."""
    if not (math.isfinite(bound_th) and bound_th >= 0):
        raise ConfigError(f"bound_th must be a finite number >= 0, got {bound_th!r}")
    if bound_th >= 1:
        # A fractional pixel radius >= 1 makes skimage build an even-sized, off-centre disk; refuse it
        # rather than imitate that accident.
        if bound_th != int(bound_th):
            raise ConfigError(f"bound_th >= 1 is a radius in pixels and must be a whole number, got {bound_th!r}")
        return int(bound_th)
    # sqrt of the exact integer H^2 + W^2 is what np.linalg.norm((H, W)) returns, bit for bit.
    return math.ceil(bound_th * math.sqrt(height * height + width * width))


def _seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Boundary map of boolean masks of shape (..., H, W), step for step as the official `_seg2bmap`."""
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[..., :, :-1] = seg[..., :, 1:]  # right neighbour
    s[..., :-1, :] = seg[..., 1:, :]  # lower neighbour
    se[..., :-1, :-1] = seg[..., 1:, 1:]  # lower-right neighbour
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    # Same overrides in the same order as the official code (they overlap at the corner pixel).
    b[..., -1, :] = seg[..., -1, :] ^ e[..., -1, :]
    b[..., :, -1] = seg[..., :, -1] ^ s[..., :, -1]
    b[..., -1, -1] = False
    return b


def _disk_half_widths(radius: int) -> list[int]:
    """Half-width of each row |dy| = 0..radius of the disk dy^2 + dx^2 <= radius^2 (skimage `disk`)."""
    return [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]


def _dilate_disk(b: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a 2-D map by the disk of `radius`; pixels outside the image add nothing.

    The disk is the union of its rows, so the dilation is the OR over dy of the map widened horizontally by
    the row's half-width and shifted by dy. Walking dy from the edge of the disk to its centre only ever
    widens, one pixel per step; this costs ~4 * radius whole-frame ORs instead of ~radius^2 shifts.
    """
    height, width = b.shape
    out = np.zeros_like(b)
    row = b.copy()  # b widened by `w` pixels on each side
    w = 0
    half_widths = _disk_half_widths(radius)
    for dy in range(min(radius, height - 1), -1, -1):  # shifts of >= H rows fall outside the image
        while w < min(half_widths[dy], width - 1):
            widened = row.copy()
            widened[:, 1:] |= row[:, :-1]
            widened[:, :-1] |= row[:, 1:]
            row, w = widened, w + 1
        if dy == 0:
            out |= row
        else:
            out[dy:] |= row[:-dy]
            out[:-dy] |= row[dy:]
    return out


def _boundary_counts(pred: np.ndarray, gt: np.ndarray, bound_th: float, void: np.ndarray | None = None):
    """Per-frame boundary-pixel counts of boolean (T, H, W) stacks (`void`: boolean (T, H, W) or None).

    Returns `(n_pred, n_gt, matched_pred, matched_gt)`, int64 arrays of shape (T,), and the radius.
    """
    radius = _bound_pix(bound_th, *pred.shape[1:])
    if void is not None:  # f_measure: `mask * logical_not(void)` before _seg2bmap; radius from the full frame
        pred, gt = pred & ~void, gt & ~void
    counts = np.zeros((4, len(pred)), dtype=np.int64)
    # One frame at a time: a frame's maps stay in cache, which makes the ORs several times faster than on
    # the whole stack.
    for t, (p, g) in enumerate(zip(pred, gt)):
        bp, bg = _seg2bmap(p), _seg2bmap(g)
        counts[:, t] = (
            np.count_nonzero(bp),
            np.count_nonzero(bg),
            np.count_nonzero(bp & _dilate_disk(bg, radius)),
            np.count_nonzero(bg & _dilate_disk(bp, radius)),
        )
    return *counts, radius


def boundary_f_measure(pred, gt, bound_th: float = 0.008, void=None) -> np.ndarray:
    """Per-frame boundary F-measure of (T, H, W) or (H, W) masks; float64 array of shape (T,).

    `bound_th` < 1 is a fraction of the frame diagonal, >= 1 a whole number of pixels (see module docstring).
    void: optional mask of the same shape; its pixels count as background in both masks.
    """
    pred, gt = _as_stacks(pred, gt)
    void = _as_void(void, pred.shape)
    n_pred, n_gt, matched_pred, matched_gt, _ = _boundary_counts(pred, gt, bound_th, void)
    # An empty boundary map gets ratio 1; the other map's matched count is then 0, which reproduces the
    # official table: (P, R) = (1, 0), (0, 1) or (1, 1).
    precision = np.divide(matched_pred, n_pred, out=np.ones(len(n_pred)), where=n_pred > 0)
    recall = np.divide(matched_gt, n_gt, out=np.ones(len(n_gt)), where=n_gt > 0)
    total = precision + recall
    # (2 * P) * R / (P + R), the official evaluation order.
    return np.divide(2 * precision * recall, total, out=np.zeros(len(total)), where=total > 0)


def j_and_f(pred, gt, bound_th: float = 0.008, void=None) -> JFScore:
    """Mean J, mean F over all T frames of (T, H, W) or (H, W) masks, and J&F = (J + F) / 2, as a `JFScore`.

    void: optional mask of the same shape, pixels to ignore (the DAVIS unsupervised task's label 255).
    """
    pred, gt = _as_stacks(pred, gt)
    if len(pred) == 0:
        raise ConfigError(f"cannot average J and F over zero frames (masks of shape {pred.shape})")
    j = float(region_similarity(pred, gt, void).mean())  # np.mean, as the MeViS script (pairwise summation)
    f = float(boundary_f_measure(pred, gt, bound_th, void).mean())
    return JFScore(j, f, (j + f) / 2)
