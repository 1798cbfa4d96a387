"""A ten-minute video (tiny resolution, 15,000 frames) through the Python API, the CLI and the app: accepted within the
duration limit and subsampled to the frame budget with a note, refused with the limit's numbers when over it (before
any frame is decoded), and refused by the memory budget when nothing bounds the frame count."""

import json
import time

import pytest

from .corpus import SHORT_SIDE, make_ten_minute_video
from .harness import App, segment
from referdino_demo.cli import main
from referdino_demo.errors import InputLimitError, MemoryBudgetError
from referdino_demo.ui.config import AppConfig
from referdino_demo.ui.session import PredictorRegistry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ten_minutes(tmp_path_factory):
    return make_ten_minute_video(tmp_path_factory.mktemp("long") / "ten_minutes.mp4", fps=25)


def test_api_subsamples_ten_minutes_to_the_frame_budget(predictor, ten_minutes):
    result = predictor.segment(ten_minutes, "the ball", short_side=SHORT_SIDE, max_frames=12)
    assert result.num_frames == 12 and result.frame_size == (32, 32)
    assert result.fps == pytest.approx(12 / 600)  # 12 frames spread over the whole ten minutes
    assert list(result.frame_indices) == [k * 15000 // 12 for k in range(12)]
    assert any("subsampled from 15000 to 12 frames" in note for note in result.notes)


def test_api_duration_limit_and_memory_budget(predictor, ten_minutes, model_calls):
    started = time.perf_counter()
    with pytest.raises(InputLimitError, match=r"600\.0 s long, over the limit of 120 s.*start_s/end_s"):
        predictor.segment(ten_minutes, "the ball", short_side=SHORT_SIDE, max_duration_s=120)
    assert time.perf_counter() - started < 2  # from the header, before any frame is decoded
    with pytest.raises(MemoryBudgetError, match=r"15000 frames of 32x32, model input 128x128, 1 expression\), over "
                                                r"the memory budget of 4,096 MB"):
        predictor.segment(ten_minutes, "the ball", short_side=SHORT_SIDE, memory_budget_mb=4096)
    assert model_calls == []
    part = predictor.segment(ten_minutes, "the ball", short_side=SHORT_SIDE, start_s=300, end_s=301)
    assert part.num_frames == 25 and part.frame_indices[0] == 7500  # a one-second part, cut by time


def test_cli_ten_minutes_with_a_frame_budget(ten_minutes, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(ten_minutes), "-e", "the ball", "--out", str(out), "--checkpoint", "tiny-random",
                 "--short-side", str(SHORT_SIDE), "--max-frames", "8", "--export", "rle"]) == 0
    assert "note: 32x32, 0.01333 fps, 8 frames (600.0 s); long video subsampled from 15000 to 8 frames" in \
        capsys.readouterr().err
    assert json.loads((out / "masks_rle.json").read_text(encoding="utf-8"))["info"]["num_frames"] == 8


def test_app_refuses_ten_minutes_over_its_limit_and_subsamples_within_it(gradio_dir, ten_minutes, tmp_path):
    for limit, expected in ((120.0, None), (600.0, 16)):
        app = App(AppConfig(default_checkpoint="tiny-random", max_frames=16, max_duration_s=limit,
                            short_side=SHORT_SIDE), PredictorRegistry(), gradio_dir)
        client = app.client(tmp_path)
        try:
            if expected is None:
                with pytest.raises(Exception, match=r"600\.0 s long, over the limit of 120 s"):
                    segment(client, ten_minutes, "the ball")
            else:
                out = segment(client, ten_minutes, "the ball")
                assert f"**{expected} frames**" in out["info"]
                assert "subsampled from 15000 to 16 frames" in out["info"]
        finally:
            client.close()
            app.close()
