"""Settings of the app: one `AppConfig` per app instance, one `RunOptions` per model run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..checkpoints.hub import DEFAULT_CHECKPOINT, HUB_REPO, RELEASED, TINY_RANDOM
from ..io.video_reader import DEFAULT_MAX_PIXELS

DTYPES = ("auto", "float32", "bfloat16", "float16")


def canonical_checkpoint(name: str) -> str:
    """One spelling per checkpoint: 'ryt_swinb.pth' and 'liangtm/referdino/ryt_swinb.pth' are the same."""
    name = str(name).strip()
    if name in RELEASED:
        return f"{HUB_REPO}/{name}"
    if name == HUB_REPO:
        return f"{HUB_REPO}/{DEFAULT_CHECKPOINT}"
    return name


@dataclass(frozen=True)
class AppConfig:
    """Settings of one app instance (command line / environment); per-run choices are `RunOptions`.

    max_frames: frame budget (longer clips are subsampled to it) and the largest value the UI offers.
    max_duration_s: longest clip accepted; max_upload_mb: largest upload (also `launch(max_file_size=)`);
    max_pixels: largest frame (width x height) accepted; memory_budget_mb: largest estimated peak memory of one
    job (`ReferDinoPredictor.estimate_memory_mb`), None for no budget; concurrency: model runs at the same time.
    """

    default_checkpoint: str = f"{HUB_REPO}/{DEFAULT_CHECKPOINT}"
    extra_checkpoints: tuple[str, ...] = ()
    max_frames: int = 96
    max_duration_s: float = 120.0
    max_upload_mb: float = 200.0
    max_expressions: int = 8
    short_side: int = 360
    concurrency: int = 1
    examples_dir: Path | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    memory_budget_mb: float | None = 8192.0

    @property
    def max_upload_bytes(self) -> int:
        """For `launch(max_file_size=...)`."""
        return int(self.max_upload_mb * 2**20)

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the checkpoint menu: released files, tiny-random, then custom names."""
        choices = [(f"{name} ({c.trained_on})", f"{HUB_REPO}/{name}") for name, c in RELEASED.items()]
        choices.append(("tiny-random (untrained weights: tries the interface, masks are random)", TINY_RANDOM))
        for name in (self.default_checkpoint, *self.extra_checkpoints):
            name = canonical_checkpoint(name)
            if name not in [value for _, value in choices]:
                choices.append((f"{name} (custom)", name))
        return choices

    def examples(self) -> list[list[str]]:
        """[video path, expressions one per line] for every committed example clip."""
        from ..examples import SCENES

        if self.examples_dir is None:
            return []
        return [[str(self.examples_dir / f"{scene}.mp4"), "\n".join(texts)] for scene, texts in SCENES.items()
                if (self.examples_dir / f"{scene}.mp4").is_file()]


@dataclass(frozen=True)
class RunOptions:
    """The choices that need a model run (any change means pressing Segment again)."""

    checkpoint: str
    dtype: str = "auto"
    query_decay: float = 0.5
    num_candidates: int = 5
    stride: int = 1
    max_frames: int = 96
    short_side: int = 360

    def segment_kwargs(self, config: AppConfig) -> dict:
        return dict(stride=int(self.stride), max_frames=min(int(self.max_frames), config.max_frames),
                    short_side=int(self.short_side), query_decay=float(self.query_decay),
                    num_candidates=int(self.num_candidates), max_duration_s=config.max_duration_s,
                    max_pixels=config.max_pixels, memory_budget_mb=config.memory_budget_mb)


def environment_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
