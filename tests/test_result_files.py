"""Saving a segmentation and reading it back: every field equal, damage refused."""

import numpy as np
import pytest

from referdino_demo.result_files import ResultFileError, load_segmentation, save_segmentation
from referdino_demo.results import ExpressionResult, VideoSegmentation


def _segmentation(rng) -> VideoSegmentation:
    t, q, k = 5, 7, 3
    results = {}
    for text in ("the red ball", "a dog ☃"):
        candidates = rng.permutation(q)[:k].astype(np.int64)
        results[text] = ExpressionResult(text, (24, 40), rng.random((t, q), np.float32),
                                         rng.random((t, q, 4), np.float32), candidates,
                                         rng.normal(size=(k, t, 6, 10)).astype(np.float16),
                                         query=int(candidates[1]), truncated=text == "a dog ☃")
    return VideoSegmentation(results, (24, 40), 12.5, np.array([0, 2, 4, 6, 8]), source="clip.mp4",
                             checkpoint="tiny-random", untrained=True, notes=["subsampled"],
                             timings={"total_s": 1.5})


def test_a_saved_segmentation_reads_back_equal(tmp_path):
    original = _segmentation(np.random.default_rng(0))
    loaded = load_segmentation(save_segmentation(original, tmp_path / "r.npz"))
    for name in ("frame_size", "fps", "source", "checkpoint", "untrained", "partial_load", "notes", "timings"):
        assert getattr(loaded, name) == getattr(original, name), name
    assert isinstance(loaded.frame_size, tuple)
    np.testing.assert_array_equal(loaded.frame_indices, original.frame_indices)
    assert loaded.expressions == original.expressions
    for before, after in zip(original, loaded):
        assert (after.query, after.truncated, after.frame_size) == (before.query, before.truncated, before.frame_size)
        for name in ("scores", "boxes", "candidates", "candidate_logits"):
            assert getattr(after, name).dtype == getattr(before, name).dtype
            np.testing.assert_array_equal(getattr(after, name), getattr(before, name))
        np.testing.assert_array_equal(after.masks(0.4), before.masks(0.4))


@pytest.mark.parametrize("damage", ["truncate", "not_a_zip", "wrong_shape"])
def test_a_damaged_file_raises_result_file_error(tmp_path, damage):
    path = save_segmentation(_segmentation(np.random.default_rng(1)), tmp_path / "r.npz")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "not_a_zip":
        path.write_bytes(b"hello")
    else:
        with np.load(path) as data:
            arrays = dict(data)
        arrays["0/boxes"] = arrays["0/boxes"][:, :3]
        np.savez(path, **arrays)
    with pytest.raises(ResultFileError, match="delete it"):
        load_segmentation(path)


def test_an_example_result_is_computed_once_and_then_read_from_disk(tmp_path, monkeypatch):
    from referdino_demo import example_cache
    from referdino_demo.example_cache import ExampleCache

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"stand-in for a clip")
    calls = []

    def compute():
        calls.append(1)
        return _segmentation(np.random.default_rng(2))

    first = ExampleCache(tmp_path / "cache").get("tiny-random", clip, ["the red ball"], {"short_side": 160}, compute)
    again = ExampleCache(tmp_path / "cache").get("tiny-random", clip, ["the red ball"], {"short_side": 160}, compute)
    assert len(calls) == 1  # a new cache object (a restarted app) reads the file
    np.testing.assert_array_equal(again[0].candidate_logits, first[0].candidate_logits)
    ExampleCache(tmp_path / "cache").get("other-checkpoint", clip, ["the red ball"], {"short_side": 160}, compute)
    ExampleCache(tmp_path / "cache").get("tiny-random", clip, ["the red ball"], {"short_side": 200}, compute)
    assert len(calls) == 3  # another checkpoint or setting is another result
    monkeypatch.setattr(example_cache, "__version__", "99.0")
    ExampleCache(tmp_path / "cache").get("tiny-random", clip, ["the red ball"], {"short_side": 160}, compute)
    assert len(calls) == 4  # kept across restarts, not across package versions


def test_a_damaged_example_result_is_computed_again_and_an_unwritable_cache_still_answers(tmp_path):
    from referdino_demo.example_cache import ExampleCache

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"stand-in")
    cache = ExampleCache(tmp_path / "cache")
    compute = lambda: _segmentation(np.random.default_rng(3))  # noqa: E731
    cache.get("tiny-random", clip, ["a"], {}, compute)
    path = cache.path("tiny-random", clip, ["a"], {})
    path.write_bytes(b"damaged")
    assert cache.get("tiny-random", clip, ["a"], {}, compute).num_frames == 5
    assert load_segmentation(path).num_frames == 5  # written again

    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    assert ExampleCache(blocked / "examples").get("tiny-random", clip, ["a"], {}, compute).num_frames == 5
