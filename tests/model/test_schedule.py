"""The stage schedule that `forward`, the predictor, the explainer and the benchmarks share."""

import numpy as np
import pytest
import torch

from referdino_demo.errors import VideoReadError
from referdino_demo.model.outputs import FrameQueries
from referdino_demo.model.schedule import STAGES, StageHooks, run_schedule
from referdino_demo.preprocess.frames import preprocess_frames
from referdino_demo.preprocess.text import caption_for, synthetic_tokenizer, tokenize


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(1)
    return preprocess_frames(rng.integers(0, 255, (3, 72, 128, 3), dtype=np.uint8), 128)


@pytest.fixture(scope="module")
def texts(tiny_model):
    tokenizer = synthetic_tokenizer()
    return [tiny_model.encode_text(tokenize(caption_for(e), tokenizer)) for e in ("the red ball", "the sky")]


def chunks_of(pixels, size):
    return lambda: (pixels[start:start + size] for start in range(0, pixels.shape[0], size))


@torch.inference_mode()
def run(model, pixels, texts, keep_features=True, hooks=None):
    hooks = hooks or StageHooks()
    videos = run_schedule(model, chunks_of(pixels, 2), texts, keep_features=keep_features, hooks=hooks)
    return [(video.logits, video.boxes, hooks.masks(index)) for index, video in enumerate(videos)]


class Events(StageHooks):
    def __init__(self):
        super().__init__()
        self.events = []

    def stage(self, name):
        self.events.append(name)
        return super().stage(name)

    def frames_detected(self, end):
        self.events.append(("detected", end))

    def video_refined(self, expression, video):
        self.events.append(("refined", expression))

    def frames_decoded(self, end):
        self.events.append(("decoded", end))


def test_stages_run_in_schedule_order(tiny_model, pixels, texts):
    """Backbone once per chunk for all expressions; refine after every chunk; recomputed features without the
    decoder."""
    hooks = Events()
    run(tiny_model, pixels, texts, keep_features=False, hooks=hooks)
    detect = ["backbone", *["encoder", "decoder", "tracker"] * 2]
    again = ["backbone", *["encoder", "pixel_decoder"] * 2, *["mask_decoder"] * 2]
    assert hooks.events == [*detect, ("detected", 2), *detect, ("detected", 3),
                            "temporal_decoder", ("refined", 0), "temporal_decoder", ("refined", 1),
                            *again, ("decoded", 2), *again, ("decoded", 3)]
    assert {event for event in hooks.events if isinstance(event, str)} == set(STAGES)


def test_recomputed_features_and_each_expression_alone_give_identical_results(tiny_model, pixels, texts):
    both = run(tiny_model, pixels, texts)
    for kept, recomputed in zip(both, run(tiny_model, pixels, texts, keep_features=False)):
        assert all(torch.equal(a, b) for a, b in zip(kept, recomputed))
    for index, text in enumerate(texts):
        alone, = run(tiny_model, pixels, [text])
        assert all(torch.equal(a, b) for a, b in zip(alone, both[index]))
    assert both[0][2].shape == (3, tiny_model.config.query_counts()[-1], 32, 57)


def test_forward_is_the_schedule(tiny_model, pixels, texts):
    out = tiny_model(pixels, texts[0].inputs, chunk_size=2)
    logits, boxes, masks = run(tiny_model, pixels, texts[:1])[0]
    assert torch.equal(out.pred_logits, logits) and torch.equal(out.pred_boxes, boxes)
    assert torch.equal(out.pred_masks, masks)


def test_an_empty_source_is_an_error(tiny_model, texts):
    with pytest.raises(VideoReadError, match="no frames"):
        run_schedule(tiny_model, lambda: iter([]), texts)


def test_frame_queries_cat_joins_chunks_in_order():
    parts = [FrameQueries(torch.full((t, 2, 4), float(t)), torch.rand(t, 2, 4), torch.rand(t, 3, 4),
                          torch.arange(2).repeat(t, 1)) for t in (1, 2)]
    video = FrameQueries.cat(parts)
    assert video.hs.shape == (3, 2, 4) and torch.equal(video.text, torch.cat([p.text for p in parts]))
    assert video.hs[:, 0, 0].tolist() == [1.0, 2.0, 2.0]
