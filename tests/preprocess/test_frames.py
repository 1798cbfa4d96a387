import numpy as np
import pytest
import torch

from referdino_demo.preprocess.frames import preprocess_frames, resized_size


@pytest.mark.parametrize("size, short, expected", [
    ((72, 128), 192, (192, 341)),  # 192 * 128 / 72 = 341.3 -> 341 (truncated, as torchvision does)
    ((1080, 1920), 360, (360, 640)),
    ((1920, 1080), 360, (640, 360)),
    ((100, 100), 360, (360, 360)),
])
def test_short_side_resize(size, short, expected):
    assert resized_size(*size, short) == expected


def test_preprocessing_matches_the_official_fixture(parity_dir):
    from safetensors.torch import load_file

    expected = load_file(str(parity_dir / "inputs.safetensors"))["pixel_values"][0]
    ours = preprocess_frames(np.load(parity_dir / "frames.npy"), 192)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() <= 1e-3


def test_normalisation_of_a_flat_frame():
    frames = np.full((1, 8, 8, 3), 255, dtype=np.uint8)
    out = preprocess_frames(frames, 8)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(out[0, :, 0, 0], expected)


def test_wrong_frame_layout_is_refused():
    with pytest.raises(ValueError, match="expected uint8 frames"):
        preprocess_frames(np.zeros((4, 8, 8), dtype=np.uint8))
