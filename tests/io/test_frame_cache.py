"""`FrameCache`: the first frames kept within a byte budget, the rest decoded again, on an array clip and a file."""

import numpy as np
import pytest

from referdino_demo.errors import VideoReadError
from referdino_demo.io import iter_video, write_video
from referdino_demo.io.frame_cache import FrameCache
from referdino_demo.io.video_reader import decode_counts

FRAME_MB = 16 * 24 * 3 / 2**20


def clip(count: int = 6) -> np.ndarray:
    """Frame i is filled with the value 10 * i."""
    return np.stack([np.full((16, 24, 3), 10 * i, np.uint8) for i in range(count)])


@pytest.mark.parametrize("budget_frames, kept", [(0, 0), (2.5, 2), (6, 6), (100, 6)])
def test_the_first_frames_are_kept_while_they_fit(budget_frames, kept):
    cache = FrameCache(iter_video(clip()), budget_frames * FRAME_MB)
    assert cache.kept == 0
    frames = [frame for _, _, frame in cache]
    assert [int(f[0, 0, 0]) for f in frames] == [0, 10, 20, 30, 40, 50]
    assert cache.kept == kept and cache.complete == (kept == 6)
    assert [int(f[0, 0, 0]) for _, _, f in cache] == [0, 10, 20, 30, 40, 50]  # the same again, either way
    assert [t for _, t, _ in cache] == pytest.approx(np.arange(6) / 25)


def test_a_file_is_decoded_once_when_it_fits_and_on_demand_beyond(tmp_path):
    path = write_video(tmp_path / "clip.mp4", clip(), fps=12)
    whole = FrameCache(iter_video(path), 6 * FRAME_MB)
    before = decode_counts()
    list(whole), list(whole), whole.frame(4)
    assert (decode_counts() - before).passes == 1
    part = FrameCache(iter_video(path), 2 * FRAME_MB)
    before = decode_counts()
    list(part)
    part.frame(1)  # kept
    assert (decode_counts() - before).passes == 1
    part.frame(4), part.frame(4)  # decoded up to it once, then remembered
    assert (decode_counts() - before).passes == 2
    np.testing.assert_array_equal(part.frame(4), whole.frame(4))
    with pytest.raises(VideoReadError, match="frame 6 does not exist; the clip has 6 frames"):
        part.frame(6)


def test_a_subset_keeps_the_frames_in_memory_renumbered():
    cache = FrameCache(iter_video(clip()), 4 * FRAME_MB)
    list(cache)
    subset = cache.subset([0, 2, 3, 5])
    assert subset.kept == 3 and len(subset) == 4  # positions 0, 2, 3 were kept; 5 was beyond the budget
    assert [int(f[0, 0, 0]) for _, _, f in subset] == [0, 20, 30, 50]
    assert int(subset.frame(1)[0, 0, 0]) == 20
