"""Tests of evaluation/datasets.py: the three benchmark layouts, built as tiny synthetic folders in tmp_path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from referdino_demo.errors import ReferDinoError
from referdino_demo.evaluation.datasets import (DatasetError, MeViS, RefDavis17, RefYouTubeVOS, decode_rle,
                                                open_dataset)
from referdino_demo.evaluation.synthetic import make_synthetic


def coco_rle_reference(mask: np.ndarray) -> dict:
    """pycocotools' encoder (maskApi.c rleEncode + rleToString), written out independently of the package."""
    flat = np.asarray(mask, bool).flatten(order="F")
    counts, value, run = [], False, 0
    for pixel in flat:
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    text = []
    for i, x in enumerate(counts):
        x = x - counts[i - 2] if i > 2 else x
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            text.append(chr(c + 48 + (0x20 if more else 0)))
    return {"size": list(mask.shape), "counts": "".join(text)}


# --------------------------------------------------------------------------- Ref-YouTube-VOS


def test_ytvos_valid_is_valid_minus_test(tmp_path):
    synthetic = make_synthetic("ytvos", tmp_path, videos=3, frames=3)
    meta = json.loads((tmp_path / "meta_expressions/valid/meta_expressions.json").read_text())
    test_only = sorted(meta["videos"])[1]
    test_meta = tmp_path / "meta_expressions/test/meta_expressions.json"
    test_meta.parent.mkdir(parents=True)
    test_meta.write_text(json.dumps({"videos": {test_only: meta["videos"][test_only]}}))

    dataset = RefYouTubeVOS(tmp_path, "valid")
    assert dataset.video_ids == sorted(set(meta["videos"]) - {test_only})
    sample = dataset[dataset.video_ids[0]]
    assert sample.frame_names == ["00000", "00005", "00010"]
    assert sample.frame_paths[1] == tmp_path / "valid/JPEGImages" / sample.video_id / "00005.jpg"
    assert sample.expressions["1"].text == synthetic.texts[(sample.video_id, "1")]
    assert sample.expressions["1"].obj_ids == (2,)
    frames = sample.load_frames()
    assert len(frames) == 3 and frames[0].shape == (72, 128, 3) and frames[0].dtype == np.uint8
    assert len(sample.load_frames(limit=2)) == 2
    assert dataset.has_ground_truth
    for exp_id in sample.expressions:
        np.testing.assert_array_equal(sample.ground_truth(exp_id), synthetic.masks[(sample.video_id, exp_id)])


def test_ytvos_without_annotations_is_server_scored(tmp_path):
    make_synthetic("ytvos", tmp_path, videos=1, frames=2)
    shutil.rmtree(tmp_path / "valid/Annotations")
    dataset = open_dataset("ytvos", tmp_path)
    assert not dataset.has_ground_truth
    with pytest.raises(DatasetError, match="no ground truth.*server"):
        dataset[dataset.video_ids[0]].ground_truth("0")


# --------------------------------------------------------------------------- MeViS


def test_mevis_ground_truth_is_union_of_anno_ids(tmp_path):
    synthetic = make_synthetic("mevis", tmp_path, videos=2, frames=3)
    dataset = MeViS(tmp_path, "valid_u")
    assert dataset.has_ground_truth and len(dataset) == 2
    for sample in dataset:
        assert sample.expressions["1"].anno_ids == (sample.expressions["0"].anno_ids[0] + 1,
                                                    sample.expressions["0"].anno_ids[0] + 2)
        for exp_id in ("0", "1"):
            np.testing.assert_array_equal(sample.ground_truth(exp_id), synthetic.masks[(sample.video_id, exp_id)])
    two_objects = dataset[dataset.video_ids[0]].ground_truth("1")
    one_object = dataset[dataset.video_ids[0]].ground_truth("0")
    assert two_objects.sum() > one_object.sum() > 0


def test_mevis_null_rle_means_absent(tmp_path):
    synthetic = make_synthetic("mevis", tmp_path, videos=1, frames=3)
    path = tmp_path / "valid_u/mask_dict.json"
    masks = json.loads(path.read_text())
    leaving = decode_rle(masks["1"][2])  # anno_id 1: the first object of expression "1"
    masks["1"][2] = None  # ... is absent in the last frame
    path.write_text(json.dumps(masks))
    sample = next(iter(MeViS(tmp_path, "valid_u")))
    truth, gt = synthetic.masks[(sample.video_id, "1")], sample.ground_truth("1")
    assert leaving.any()
    np.testing.assert_array_equal(gt[:2], truth[:2])
    np.testing.assert_array_equal(gt[2], truth[2] & ~leaving)


def test_mevis_valid_has_no_local_ground_truth(tmp_path):
    make_synthetic("mevis", tmp_path, videos=1, frames=2)
    shutil.move(tmp_path / "valid_u", tmp_path / "valid")
    (tmp_path / "valid/mask_dict.json").unlink()
    dataset = open_dataset("mevis", tmp_path, "valid")
    assert not dataset.has_ground_truth
    with pytest.raises(DatasetError, match="valid_u"):
        dataset.mask_dict()


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (72, 128)])
def test_decode_rle_reads_coco_compressed_strings(shape):
    rng = np.random.default_rng(shape[1])
    for mask in (rng.random(shape) > 0.6, np.zeros(shape, bool), np.ones(shape, bool)):
        np.testing.assert_array_equal(decode_rle(coco_rle_reference(mask)), mask)


def test_decode_rle_known_string():
    # pycocotools.mask.encode of a 3x4 mask with pixels (0,1), (1,1), (2,3) set (Fortran-order runs 3, 2, 6, 1;
    # from the 4th on, each run is stored minus the run two before)
    mask = np.zeros((3, 4), bool)
    mask[[0, 1, 2], [1, 1, 3]] = True
    assert coco_rle_reference(mask)["counts"] == "326O"  # the 4th run is stored as 1 - 2 = -1
    np.testing.assert_array_equal(decode_rle({"size": [3, 4], "counts": "326O"}), mask)


# --------------------------------------------------------------------------- Ref-DAVIS17


def test_davis_annotators_and_unsupervised_ground_truth(tmp_path):
    synthetic = make_synthetic("davis", tmp_path, videos=2, frames=3)
    dataset = RefDavis17(tmp_path)
    assert dataset.has_ground_truth and dataset.sequences == dataset.video_ids
    video_id = dataset.video_ids[0]
    # object-major meta: expression o * 4 + k is object o seen by annotator k
    assert dataset.annotator_expressions(video_id) == [["0", "4"], ["1", "5"], ["2", "6"], ["3", "7"]]
    objects = dataset.objects(video_id)
    assert objects.masks.shape == (2, 3, 72, 128) and objects.void.shape == (3, 72, 128)
    assert objects.frame_ids == ["00000", "00001", "00002"]
    assert objects.void[:, :, 64:68].all() and objects.void.sum() == 3 * 72 * 4
    # the DAVIS ids run in reverse object order; void pixels are no object's
    truth = synthetic.masks[(video_id, "0")]
    np.testing.assert_array_equal(objects.masks[1], truth & ~objects.void)


def test_davis_without_davis_tree_is_not_scored(tmp_path):
    make_synthetic("davis", tmp_path, videos=1, frames=2)
    shutil.rmtree(tmp_path / "DAVIS")
    dataset = RefDavis17(tmp_path)
    assert not dataset.has_ground_truth
    with pytest.raises(DatasetError, match="Annotations_unsupervised"):
        dataset.objects(dataset.video_ids[0])


# --------------------------------------------------------------------------- errors


def _remove(tmp_path, relative):
    target = tmp_path / relative
    shutil.rmtree(target) if target.is_dir() else target.unlink()


@pytest.mark.parametrize("kind, missing, message", [
    ("ytvos", "meta_expressions/valid/meta_expressions.json", r"meta_expressions\.json is missing; expected ROOT/"),
    ("ytvos", "valid/JPEGImages", r"JPEGImages is missing; expected .*Ref-YouTube-VOS"),
    ("mevis", "valid_u/meta_expressions.json", r"valid_u/meta_expressions\.json is missing; expected .*MeViS"),
    ("davis", "DAVIS/ImageSets/2017/val.txt", r"val\.txt is missing .*DAVIS 2017"),
    ("davis", "meta_expressions", r"meta_expressions\.json is missing; expected .*convert_davis_to_ytvos"),
])
def test_missing_files_name_the_file_and_layout(tmp_path, kind, missing, message):
    # (`kind`, not `benchmark`: pytest-benchmark owns that fixture name)
    make_synthetic(kind, tmp_path, videos=1, frames=2)
    _remove(tmp_path, missing)
    with pytest.raises(DatasetError, match=message) as info:
        open_dataset(kind, tmp_path)
    assert isinstance(info.value, ReferDinoError) and str(tmp_path) in str(info.value)


def test_other_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown benchmark 'refcoco'; choose one of ytvos, davis, mevis"):
        open_dataset("refcoco", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset("mevis", tmp_path / "nowhere")
    make_synthetic("mevis", tmp_path, videos=1, frames=2)
    (tmp_path / "valid_u/meta_expressions.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        open_dataset("mevis", tmp_path)


def test_missing_frame_is_reported_on_load(tmp_path):
    make_synthetic("ytvos", tmp_path, videos=1, frames=2)
    sample = next(iter(open_dataset("ytvos", tmp_path)))
    sample.frame_paths[1].unlink()
    with pytest.raises(DatasetError, match=r"frame .*00005\.jpg of video .* is missing"):
        sample.load_frames()
