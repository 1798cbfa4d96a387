"""Tests for referdino_demo/export/: PNG and DAVIS-palette zips, COCO RLE JSON, CSV.

Results are built directly as ExpressionResult objects whose stride-4 logits are at the frame size, so
upsampling is the identity and the expected masks are known: a disc of radius 8 per expression moving
4 px per frame, logit = 0.75 * (8 - distance to the centre), so the 0.5-threshold mask is "distance < 8".
A second kept query (mean score 0.3) is a fixed square, used by the multi-target rule.
"""

import csv
import io
import json
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from referdino_demo.errors import ReferDinoError
from referdino_demo.export import (
    COLUMNS,
    DAVIS_PALETTE,
    decode_rle,
    encode_rle,
    export_coco_rle,
    export_csv,
    export_palette_zip,
    export_png_zip,
    expression_folders,
    mask_bbox,
)
from referdino_demo.results import ExpressionResult, VideoSegmentation

SIZE, FRAMES, STRIDE, FPS = (47, 65), 5, 2, 29.97 / 2
RADIUS, SLOPE = 8, 0.75
SQUARE = (slice(38, 45), slice(2, 10))  # the second query's mask


def disc(t, k, radius=RADIUS):
    yy, xx = np.mgrid[:SIZE[0], :SIZE[1]]
    return np.hypot(yy - (20 + 4 * k), xx - (14 + 4 * t + 12 * k)) < radius


def make_result(text, k, strength=None):
    """Expression k: query 0 is the moving disc; `strength` (T,) scales its logits (default: a slope)."""
    yy, xx = np.mgrid[:SIZE[0], :SIZE[1]]
    shown = []
    for t in range(FRAMES):
        r = np.hypot(yy - (20 + 4 * k), xx - (14 + 4 * t + 12 * k))
        shown.append(SLOPE * (RADIUS - r) if strength is None else np.where(r < RADIUS, strength[t], -5.0))
    square = np.full(SIZE, -6.0)
    square[SQUARE] = 6.0
    logits = np.stack([shown, [square] * FRAMES]).astype(np.float16)  # (K=2, T, H, W)
    scores = np.stack([np.linspace(0.9, 0.7, FRAMES) - 0.1 * k, np.full(FRAMES, 0.3)], 1).astype(np.float32)
    boxes = np.zeros((FRAMES, 2, 4), np.float32)
    boxes[:, 0] = [0.25 + 0.05 * k, 0.5, 0.2, 0.3]  # cx, cy, w, h (normalised)
    return ExpressionResult(text, SIZE, scores, boxes, np.array([0, 1]), logits)


def make_segmentation(texts=("the red car", "a dog 🐕")):
    return VideoSegmentation(results={text: make_result(text, k) for k, text in enumerate(texts)}, frame_size=SIZE,
                             fps=FPS, frame_indices=np.arange(FRAMES) * STRIDE, checkpoint="tiny-random")


@pytest.fixture(scope="module")
def segmentation():
    return make_segmentation()


def read_zip(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def png(data):
    return Image.open(io.BytesIO(data))


def test_the_synthetic_masks_are_the_discs(segmentation):
    for k, result in enumerate(segmentation):
        np.testing.assert_array_equal(result.masks(0.5), [disc(t, k) for t in range(FRAMES)])


# -- PNG zip ---------------------------------------------------------------------------------------------
def test_png_zip_reads_back_as_the_masks(tmp_path, segmentation):
    path = export_png_zip(segmentation, tmp_path / "masks.zip", threshold=0.5)
    assert path == tmp_path / "masks.zip"
    files = read_zip(path)
    folders = json.loads(files["expressions.json"])
    assert folders == {"00_the-red-car": "the red car", "01_a-dog": "a dog 🐕"}
    info = json.loads(files["info.json"])
    assert info["frame_indices"] == [0, 2, 4, 6, 8] and info["threshold"] == 0.5
    for folder, result in zip(folders, segmentation, strict=True):
        expected = result.masks(0.5)
        for t in range(FRAMES):
            image = png(files[f"{folder}/{t:05d}.png"])
            assert image.mode == "L" and image.size == (SIZE[1], SIZE[0])
            pixels = np.asarray(image)
            assert set(np.unique(pixels)) <= {0, 255}
            np.testing.assert_array_equal(pixels == 255, expected[t])
    assert len(files) == 2 + 2 * FRAMES
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_png_zip_follows_threshold_and_multi_target(tmp_path, segmentation):
    def areas(**options):
        files = read_zip(export_png_zip(segmentation, tmp_path / "m.zip", **options))
        return np.array([(np.asarray(png(files[f"00_the-red-car/{t:05d}.png"])) > 0).sum() for t in range(FRAMES)])

    default, strict = areas(threshold=0.5), areas(threshold=0.9)
    assert (strict < default).all()
    np.testing.assert_array_equal(strict, segmentation[0].masks(0.9).sum((1, 2)))
    union = areas(threshold=0.5, multi_target=0.2)  # disc + the 0.3-score square query
    np.testing.assert_array_equal(union, default + disc(0, 0)[SQUARE].size)


def test_expression_folders_are_safe_and_unique():
    seg = make_segmentation(("The Red Car!", "The Red Car?", "漢字", "../etc/passwd", "Crème brûlée  " * 9))
    folders = expression_folders(seg)
    assert len(set(folders)) == len(folders)
    assert all(re.fullmatch(r"\d{2}_[a-z0-9-]{1,48}", folder) for folder in folders)
    assert folders[:4] == ["00_the-red-car", "01_the-red-car", "02_expression", "03_etc-passwd"]
    assert folders[4].startswith("04_creme-brulee-creme")


# -- palette zip -----------------------------------------------------------------------------------------
def test_palette_pngs_hold_davis_ids_and_overlaps_go_to_the_more_probable_expression(tmp_path):
    # the two discs overlap; in frame 0 expression 1 is more confident there, in frame 1 expression 0 is
    strong = np.array([2.0, 8.0, 2.0, 2.0, 2.0])
    weak = np.array([6.0, 1.0, 6.0, 6.0, 6.0])
    seg = VideoSegmentation(results={"left": make_result("left", 0, strong), "right": make_result("right", 1, weak)},
                            frame_size=SIZE, fps=FPS, frame_indices=np.arange(FRAMES))
    files = read_zip(export_palette_zip(seg, tmp_path / "palette.zip"))
    assert json.loads(files["expressions.json"]) == {"1": "left", "2": "right"}
    assert DAVIS_PALETTE[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
    for t in range(FRAMES):
        image = png(files[f"{t:05d}.png"])
        assert image.mode == "P" and image.getpalette()[:12] == DAVIS_PALETTE[:12]
        ids = np.asarray(image)
        left, right = disc(t, 0), disc(t, 1)
        assert (left & right).any()
        assert (ids[~left & ~right] == 0).all()
        assert (ids[left & ~right] == 1).all() and (ids[right & ~left] == 2).all()
        assert (ids[left & right] == (1 if strong[t] > weak[t] else 2)).all()


def test_palette_zip_threshold_changes_the_ids(tmp_path, segmentation):
    def labelled(threshold):
        files = read_zip(export_palette_zip(segmentation, tmp_path / "p.zip", threshold=threshold))
        return sum(int((np.asarray(png(files[f"{t:05d}.png"])) > 0).sum()) for t in range(FRAMES))

    assert labelled(0.9) < labelled(0.5) < labelled(0.1)


# -- RLE -------------------------------------------------------------------------------------------------
def test_compressed_rle_of_a_hand_worked_example():
    # H=4, W=10 mask whose column-major (Fortran) pixel order is 5 zeros, 20 ones, 3 zeros, 12 ones, so the
    # run counts are [5, 20, 3, 12]. COCO's string: from the 4th count on, store x - counts[i - 2]; then emit
    # 5-bit groups, low first, each + 48, with 0x20 set while more groups follow (sign bit 0x10 ends it):
    #   5  -> '5' (53);   20 -> group 20 has 0x10 set so another follows: 20|0x20 = 52 -> 'd', then 0 -> '0';
    #   3  -> '3' (51);   12 - 20 = -8 -> -8 & 31 = 24, rest -8 >> 5 = -1 with 0x10 set: done -> 24 + 48 = 'H'.
    mask = np.r_[np.zeros(5), np.ones(20), np.zeros(3), np.ones(12)].astype(bool).reshape(10, 4).T
    rle = encode_rle(mask)
    assert rle == {"size": [4, 10], "counts": "5d03H"}
    np.testing.assert_array_equal(decode_rle(rle), mask)
    # an empty 3x4 mask is one run of 12 zeros: '<' (12 + 48 = 60); a full one [0, 12]: '0<'
    assert encode_rle(np.zeros((3, 4), bool))["counts"] == "<"
    assert encode_rle(np.ones((3, 4), bool))["counts"] == "0<"


def test_rle_round_trips_random_masks():
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (7, 3), (47, 65), (120, 90)]:
        for density in (0.0, 0.1, 0.5, 1.0):
            mask = rng.random(shape) < density
            np.testing.assert_array_equal(decode_rle(encode_rle(mask)), mask)


def test_mask_bbox_is_coco_xywh():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    assert mask_bbox(mask) == [3, 2, 6, 3]
    assert mask_bbox(np.zeros((10, 12), bool)) == [0, 0, 0, 0]


def test_coco_rle_json_decodes_to_the_masks(tmp_path, segmentation):
    path = export_coco_rle(segmentation, tmp_path / "masks.json", threshold=0.5)
    data = json.loads(path.read_text(encoding="utf-8"))
    info = data["info"]
    assert info["format"] == "referdino-demo/coco-rle" and info["fps"] == FPS
    assert (info["width"], info["height"], info["num_frames"]) == (65, 47, FRAMES)
    assert info["checkpoint"] == "tiny-random" and info["untrained"] is False
    assert [e["expression"] for e in data["expressions"]] == ["the red car", "a dog 🐕"]
    annotations = data["annotations"]
    assert len(annotations) == FRAMES * 2
    assert [(a["frame_index"], a["expression_index"]) for a in annotations[:3]] == [(0, 0), (0, 1), (1, 0)]
    for a in annotations:
        t, k = a["frame_index"], a["expression_index"]
        expected = disc(t, k)
        assert a["segmentation"]["size"] == [47, 65]
        np.testing.assert_array_equal(decode_rle(a["segmentation"]), expected)
        assert a["area"] == expected.sum() and a["bbox"] == mask_bbox(expected)
        assert a["source_frame_index"] == STRIDE * t and a["expression"] == segmentation.expressions[k]
        assert a["score"] == pytest.approx(segmentation[k].frame_scores[t], abs=1e-6)
    # the disc of expression 0 in frame 0 is centred at (x 14, y 20) with radius 8: x 7..21, y 13..27
    assert annotations[0]["bbox"] == [7, 13, 15, 15]


def test_coco_rle_follows_the_threshold(tmp_path, segmentation):
    def total_area(threshold):
        data = json.loads(export_coco_rle(segmentation, tmp_path / "r.json", threshold=threshold).read_text())
        return sum(a["area"] for a in data["annotations"])

    assert total_area(0.9) < total_area(0.5) < total_area(0.1)


# -- CSV -------------------------------------------------------------------------------------------------
def test_csv_rows_and_values(tmp_path, segmentation):
    path = export_csv(segmentation, tmp_path / "frames.csv", threshold=0.5)
    with open(path, encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert len(rows) == FRAMES * 2
    for i, row in enumerate(rows):
        t, k = divmod(i, 2)
        result = segmentation[k]
        assert (int(row["frame_index"]), int(row["source_frame_index"])) == (t, STRIDE * t)
        assert float(row["time_s"]) == pytest.approx(t / FPS, abs=1e-6)
        assert row["expression"] == result.expression and int(row["expression_index"]) == k
        assert float(row["score"]) == pytest.approx(result.frame_scores[t], abs=1e-6)
        assert int(row["mask_area_px"]) == disc(t, k).sum()
        assert float(row["mask_area_fraction"]) == pytest.approx(disc(t, k).sum() / (47 * 65), abs=1e-6)
        box = [float(row[c]) for c in ("box_x1", "box_y1", "box_x2", "box_y2")]
        np.testing.assert_allclose(box, result.boxes_xyxy()[t], atol=1e-3)
    # expression 0's box: cx 0.25, cy 0.5, w 0.2, h 0.3 of 65x47 -> x 9.75..22.75, y 16.45..30.55
    np.testing.assert_allclose([float(rows[0][c]) for c in ("box_x1", "box_y1", "box_x2", "box_y2")],
                               [9.75, 16.45, 22.75, 30.55], atol=1e-3)


def test_csv_follows_the_threshold(tmp_path, segmentation):
    def areas(threshold):
        with open(export_csv(segmentation, tmp_path / "t.csv", threshold=threshold), encoding="utf-8") as file:
            return [int(row["mask_area_px"]) for row in csv.DictReader(file)]

    assert all(a < b for a, b in zip(areas(0.9), areas(0.5), strict=True))


@pytest.mark.parametrize("export, name", [(export_png_zip, "m.zip"), (export_palette_zip, "p.zip"),
                                          (export_coco_rle, "r.json"), (export_csv, "t.csv")])
def test_exports_do_not_depend_on_the_chunk_size(tmp_path, segmentation, export, name):
    def content(chunk):
        path = export(segmentation, tmp_path / name, threshold=0.5, chunk=chunk)
        return read_zip(path) if name.endswith(".zip") else path.read_bytes()

    assert content(2) == content(16)


# -- atomic writes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("export, name", [(export_png_zip, "m.zip"), (export_palette_zip, "p.zip"),
                                          (export_coco_rle, "r.json"), (export_csv, "t.csv")])
def test_a_failed_export_leaves_no_file_and_keeps_an_older_one(tmp_path, segmentation, export, name):
    path = tmp_path / name
    with pytest.raises(ReferDinoError, match="threshold must be between 0 and 1"):
        export(segmentation, path, threshold=1.5)
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"older export")
    with pytest.raises(ReferDinoError):
        export(segmentation, path, threshold=-0.1)
    assert path.read_bytes() == b"older export" and list(tmp_path.iterdir()) == [path]
    assert export(segmentation, path) == path and path.read_bytes() != b"older export"
