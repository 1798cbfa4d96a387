"""Tests of the DAVIS J&F metrics against the official reference vectors and hand-derived cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from referdino_demo.evaluation import JFScore, boundary_f_measure, j_and_f, region_similarity
from referdino_demo.evaluation.metrics import _bound_pix, _boundary_counts, _dilate_disk, _disk_half_widths

from conftest import SHARED, require_reference

SHARED_JF = SHARED / "jf"
TOL = 1e-6


# --------------------------------------------------------------------------- official reference vectors


def _load_reference():
    """(expected.json, masks.npz) or None when the reference data is missing (see `require_reference`)."""
    if not (SHARED_JF / "expected.json").is_file() or not (SHARED_JF / "masks.npz").is_file():
        return None
    return json.loads((SHARED_JF / "expected.json").read_text()), np.load(SHARED_JF / "masks.npz")


REFERENCE = _load_reference()
CASES = REFERENCE[0]["cases"] if REFERENCE else [None]  # [None]: one test that says what is missing


def _require_reference():
    if REFERENCE is None:
        require_reference(SHARED_JF / "expected.json")
        require_reference(SHARED_JF / "masks.npz")
    return REFERENCE


def _unpack(masks, name: str, which: str) -> np.ndarray:
    t, h, w = (int(v) for v in masks[f"{name}__shape"])
    return np.unpackbits(masks[f"{name}__{which}"], count=t * h * w).reshape(t, h, w).astype(bool)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"] if c else "missing-fixtures")
def test_reference_case(case):
    _, masks = _require_reference()
    name, frames = case["name"], case["frames"]
    pred, gt = _unpack(masks, name, "pred"), _unpack(masks, name, "gt")
    assert pred.shape == gt.shape == (case["T"], case["H"], case["W"])

    # Intermediate counts first: they say where a wrong J or F comes from.
    n_pred, n_gt, m_pred, m_gt, radius = _boundary_counts(pred, gt, 0.008)
    assert radius == case["bound_pix"]
    assert n_pred.tolist() == [f["n_pred_boundary"] for f in frames]
    assert n_gt.tolist() == [f["n_gt_boundary"] for f in frames]
    assert m_pred.tolist() == [f["n_pred_boundary_matched"] for f in frames]
    assert m_gt.tolist() == [f["n_gt_boundary_matched"] for f in frames]

    j, f = region_similarity(pred, gt), boundary_f_measure(pred, gt)
    assert j.dtype == f.dtype == np.float64 and j.shape == f.shape == (case["T"],)
    np.testing.assert_allclose(j, [fr["J"] for fr in frames], rtol=0, atol=TOL)
    np.testing.assert_allclose(f, [fr["F"] for fr in frames], rtol=0, atol=TOL)

    score = j_and_f(pred, gt)
    assert score == pytest.approx((case["J_mean"], case["F_mean"], case["JF"]), abs=TOL)


def test_reference_aggregate():
    expected, masks = _require_reference()
    assert len(expected["cases"]) == expected["aggregate"]["num_cases"]
    scores = [j_and_f(_unpack(masks, c["name"], "pred"), _unpack(masks, c["name"], "gt")) for c in expected["cases"]]
    mean_j, mean_f = np.mean([s.j for s in scores]), np.mean([s.f for s in scores])
    agg = expected["aggregate"]
    assert (mean_j, mean_f, (mean_j + mean_f) / 2) == pytest.approx((agg["J"], agg["F"], agg["JF"]), abs=TOL)


# --------------------------------------------------------------------------- independent cases


def _rect(h, w, rows, cols, t=None):
    m = np.zeros((h, w), bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m if t is None else np.repeat(m[None], t, axis=0)


def test_identical_masks_score_one():
    m = _rect(40, 60, (5, 20), (10, 50), t=3)
    assert region_similarity(m, m).tolist() == [1.0] * 3
    assert boundary_f_measure(m, m).tolist() == [1.0] * 3
    assert tuple(j_and_f(m, m)) == (1.0, 1.0, 1.0)


def test_both_empty_scores_one():
    empty = np.zeros((2, 30, 40), bool)
    assert region_similarity(empty, empty).tolist() == [1.0, 1.0]
    assert boundary_f_measure(empty, empty).tolist() == [1.0, 1.0]


def test_one_empty_scores_zero_both_ways():
    empty, obj = np.zeros((30, 40), bool), _rect(30, 40, (5, 15), (5, 25))
    for pred, gt in ((empty, obj), (obj, empty)):
        assert region_similarity(pred, gt).tolist() == [0.0]
        assert boundary_f_measure(pred, gt).tolist() == [0.0]


def test_full_frame_vs_empty_has_no_boundary_so_f_is_one():
    # Official convention: the empty-boundary rules look at boundary pixels, and the image border is no boundary.
    full, empty = np.ones((30, 40), bool), np.zeros((30, 40), bool)
    assert region_similarity(empty, full).tolist() == [0.0]
    assert boundary_f_measure(empty, full).tolist() == [1.0]


def test_disjoint_masks_j_zero():
    gt, pred = _rect(40, 60, (5, 15), (5, 15)), _rect(40, 60, (25, 35), (40, 55))
    assert region_similarity(pred, gt).tolist() == [0.0]
    assert boundary_f_measure(pred, gt).tolist() == [0.0]  # boundaries far beyond the 1-px radius


def test_hand_computed_iou():
    gt = _rect(6, 6, (0, 2), (0, 2))  # 4 pixels
    pred = _rect(6, 6, (0, 2), (0, 3))  # 6 pixels, containing gt
    other = _rect(6, 6, (1, 4), (1, 4))  # 9 pixels, overlapping gt in the single pixel (1, 1)
    assert region_similarity(pred, gt).tolist() == [4 / 6]
    assert region_similarity(other, gt).tolist() == [1 / 12]  # union = 4 + 9 - 1
    both = region_similarity(np.stack([pred, other]), np.stack([gt, gt]))
    assert both.tolist() == [4 / 6, 1 / 12]


def test_inputs_any_nonzero_is_foreground_and_2d_is_one_frame():
    gt = _rect(20, 30, (3, 12), (4, 20))
    pred = _rect(20, 30, (4, 13), (4, 22))
    expected = j_and_f(pred, gt)
    assert isinstance(expected, JFScore) and len(expected) == 3
    j, f, jf = expected
    assert (j, f, jf) == (expected.j, expected.f, expected.jf) and jf == (j + f) / 2
    assert j_and_f(pred.astype(np.uint8) * 255, gt.astype(np.float32)) == expected
    assert j_and_f(pred[None], gt[None]) == expected
    assert region_similarity(pred, gt).shape == (1,)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 10, 10\).*\(2, 10, 11\)"):
        region_similarity(np.zeros((2, 10, 10)), np.zeros((2, 10, 11)))
    with pytest.raises(ValueError, match=r"\(10, 10\).*\(1, 10, 10\)"):
        boundary_f_measure(np.zeros((10, 10)), np.zeros((1, 10, 10)))
    with pytest.raises(ValueError):
        j_and_f(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError):
        j_and_f(np.zeros((0, 10, 10)), np.zeros((0, 10, 10)))


def test_radius_formula():
    # Rows of the table in the reference note; 132x351 is where a float32 radius would give 4.
    for (h, w), r in {(48, 64): 1, (75, 100): 1, (150, 200): 2, (225, 300): 3, (480, 854): 8,
                      (720, 1280): 12, (1080, 1920): 18, (132, 351): 3}.items():  # fmt: skip
        assert _bound_pix(0.008, h, w) == r
    assert _bound_pix(5, 48, 64) == 5 and _bound_pix(3.0, 48, 64) == 3
    for bad in (2.5, -0.1, float("nan")):
        with pytest.raises(ValueError):
            _bound_pix(bad, 48, 64)


@pytest.mark.parametrize("h, w, radius", [(150, 200, 2), (60, 80, 1)])  # diagonals 250 and 100: 0.008 * diag = 2, 0.8
def test_half_plane_shift_against_radius(h, w, radius):
    # A half-plane "rows >= a" has exactly one boundary row, a - 1 (the border never counts). Shifting the
    # prediction down by k puts the two boundary rows k apart: all matched if k <= radius, none otherwise.
    a = 20
    gt = _rect(h, w, (a, h), (0, w))
    for k in range(radius + 3):
        pred = _rect(h, w, (a + k, h), (0, w))
        assert region_similarity(pred, gt).tolist() == [(h - a - k) / (h - a)]
        assert boundary_f_measure(pred, gt).tolist() == [1.0 if k <= radius else 0.0]
        # A pixel radius passed as bound_th >= 1 moves the threshold.
        assert boundary_f_measure(pred, gt, bound_th=k).tolist() == [1.0]
        assert boundary_f_measure(pred, gt, bound_th=max(k - 1, 0)).tolist() == [1.0 if k == 0 else 0.0]


def test_disk_not_square_neighbourhood():
    # GT: a pixel in the top-left corner -> its only boundary pixel is (0, 0). Prediction: an interior pixel
    # at (3, 3) -> boundary pixels (2, 2), (2, 3), (3, 2), (3, 3), at distances sqrt 8, sqrt 13, sqrt 13, sqrt 18.
    gt, pred = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    gt[0, 0] = pred[3, 3] = True
    # radius 4: 3 of 4 predicted pixels matched, the GT pixel matched -> P = 3/4, R = 1, F = 6/7.
    assert boundary_f_measure(pred, gt, bound_th=4).tolist() == [pytest.approx(6 / 7, abs=1e-15)]
    # radius 3: only (2, 2) matched -> P = 1/4, R = 1, F = 0.4 (a 7x7 square would give F = 1).
    assert boundary_f_measure(pred, gt, bound_th=3).tolist() == [pytest.approx(0.4, abs=1e-15)]
    # radius 2: nothing within 2 -> P = R = 0 -> F = 0.
    assert boundary_f_measure(pred, gt, bound_th=2).tolist() == [0.0]


# --------------------------------------------------------------------------- the disk and its dilation


def _skimage_disk(radius):
    """scikit-image's ``morphology.disk`` (not installed here), transcribed: the footprint the official code uses."""
    grid = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(grid, grid)
    return (x**2 + y**2) <= radius**2


@pytest.mark.parametrize("radius", range(19))
def test_disk_rows_equal_skimage_disk(radius):
    half = _disk_half_widths(radius)
    rebuilt = np.array([[abs(dx) <= half[abs(dy)] for dx in range(-radius, radius + 1)]
                        for dy in range(-radius, radius + 1)])  # fmt: skip
    np.testing.assert_array_equal(rebuilt, _skimage_disk(radius))


def test_disk_sizes_quoted_by_the_reference():
    assert [_skimage_disk(r).sum() for r in (1, 2, 8)] == [5, 13, 197]


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 5, 8, 12, 40])
def test_dilation_equals_scipy_dilation_by_disk(radius):
    rng = np.random.default_rng(radius)
    for shape, density in (((37, 53), 0.02), ((30, 64), 0.3), ((1, 9), 0.3), ((9, 1), 0.3)):
        b = rng.random(shape) < density
        b[0, 0] = b[-1, -1] = True  # exercise the image borders
        # scipy's border_value=0 equals cv2.dilate's default border: outside pixels add nothing.
        expected = ndi.binary_dilation(b, structure=_skimage_disk(radius), border_value=0)
        np.testing.assert_array_equal(_dilate_disk(b, radius), expected)


# --------------------------------------------------------------------------- slow re-derivation from the text


def _slow_boundary(mask):
    """Boundary pixels written from the reference prose, one pixel at a time."""
    h, w = mask.shape
    at = lambda y, x: bool(mask[y, x]) if y < h and x < w else False  # noqa: E731
    points = []
    for y in range(h):
        for x in range(w):
            m = at(y, x)
            if y == h - 1 and x == w - 1:
                continue
            if y == h - 1:
                edge = m != at(y, x + 1)
            elif x == w - 1:
                edge = m != at(y + 1, x)
            else:
                edge = m != at(y, x + 1) or m != at(y + 1, x) or m != at(y + 1, x + 1)
            if edge:
                points.append((y, x))
    return np.array(points, dtype=float).reshape(-1, 2)


def _slow_f(pred, gt, bound_th=0.008):
    h, w = pred.shape
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.sqrt(h * h + w * w))
    bp, bg = _slow_boundary(pred), _slow_boundary(gt)
    if len(bp) and len(bg):
        dist = np.sqrt(((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1))  # all pairs, Euclidean
        precision = float((dist.min(axis=1) <= radius).sum()) / len(bp)
        recall = float((dist.min(axis=0) <= radius).sum()) / len(bg)
    else:  # the table of empty-boundary rules
        precision, recall = (1.0 if len(bp) == 0 else 0.0), (1.0 if len(bg) == 0 else 0.0)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _random_masks(rng, shape, kind):
    if kind == "noise":
        return rng.random(shape) < 0.5
    if kind == "sparse":
        return rng.random(shape) < 0.03
    smooth = ndi.gaussian_filter(rng.standard_normal(shape), sigma=3)  # blobby shapes
    return smooth > np.quantile(smooth, rng.uniform(0.5, 0.9))


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_f_matches_slow_reference(seed):
    rng = np.random.default_rng(100 + seed)
    shape = (int(rng.integers(8, 40)), int(rng.integers(8, 60)))
    for kind in ("noise", "sparse", "blobs"):
        gt = _random_masks(rng, shape, kind)
        # The prediction: a perturbed copy (shifted, with flipped pixels) so that some boundary pixels match.
        pred = np.roll(gt, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1)) ^ (rng.random(shape) < 0.05)
        for bound_th in (0.008, 0.05, 2, 5):
            got = boundary_f_measure(pred, gt, bound_th=bound_th)
            assert got == pytest.approx([_slow_f(pred, gt, bound_th)], abs=1e-12)
