"""`FrameSelection`: checked once when made, opened as `iter_video` would, built from keywords or given whole."""

import dataclasses

import numpy as np
import pytest

from referdino_demo.errors import ConfigError
from referdino_demo.frame_selection import FrameSelection
from referdino_demo.io import iter_video


@pytest.mark.parametrize("options, message", [
    (dict(stride=0), r"stride \(keep every N-th frame\) must be a whole number >= 1"),
    (dict(max_frames=2.5), r"max_frames \(frame budget\) must be a whole number"),
    (dict(start_s=2.0, end_s=1.0), "end_s must be after start_s"),
    (dict(max_pixels=0), r"max_pixels \(largest frame width x height in pixels\) must be"),
    (dict(max_duration_s=float("nan")), r"max_duration_s \(.*\) must be a number > 0"),
    (dict(fps=True), r"fps \(frame rate of arrays and iterators\) must be"),
])
def test_a_selection_is_checked_when_made(options, message):
    with pytest.raises(ConfigError, match=message):
        FrameSelection(**options)


def test_values_are_normalised_and_the_object_is_frozen():
    selection = FrameSelection(stride="2", start_s=1, max_frames=5.0, max_pixels=None)
    assert (selection.stride, selection.start_s, selection.max_frames, selection.max_pixels) == (2, 1.0, 5, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        selection.stride = 3


def test_open_selects_what_iter_video_selects():
    clip = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(20)])
    options = dict(stride=3, start_s=0.2, end_s=0.7, max_frames=3, fps=20.0)
    opened = FrameSelection(**options).open(clip)
    expected = iter_video(clip, **options)
    assert opened.info == expected.info
    assert [int(f[0, 0, 0]) for _, _, f in opened] == [int(f[0, 0, 0]) for _, _, f in expected] == [4, 7, 10]


def test_build_takes_a_selection_or_keywords_but_not_both():
    selection = FrameSelection(stride=2)
    assert FrameSelection.build(selection) is selection
    assert FrameSelection.build(None, stride=2) == selection
    assert FrameSelection.build() == FrameSelection()
    with pytest.raises(ConfigError, match=r"either a FrameSelection or frame options \(max_frames\), not both"):
        FrameSelection.build(selection, max_frames=3)
    with pytest.raises(ConfigError, match="unknown frame option strides"):
        FrameSelection.build(strides=2)
    with pytest.raises(ConfigError, match="must be a FrameSelection, got dict"):
        FrameSelection.build({"stride": 2})
