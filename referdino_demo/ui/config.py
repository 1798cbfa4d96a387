"""Settings of the app: one `AppConfig` per app instance, one `RunOptions` per model run."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..hub import DEFAULT_CHECKPOINT, HUB_REPO, RELEASED, TINY_RANDOM
from ..errors import ConfigError
from ..example_cache import default_cache_folder
from ..frame_selection import FrameSelection
from ..io.video_reader import DEFAULT_MAX_PIXELS
from ..options import (DEFAULT_FRAME_CACHE_MB, DEFAULT_QUERY_DECAY, DEFAULT_SHORT_SIDE, QUERY_DECAY_HELP,
                       QUERY_DECAY_LABEL)

DTYPES = ("auto", "float32", "bfloat16", "float16")
LOCAL = "local:"  # menu values of local checkpoint files: "local:" + file name (the page never shows server paths)


@dataclass(frozen=True)
class Control:
    """A number the app's user sets: the range the app accepts is the range its slider offers (`high` None: set per
    app, e.g. max_frames, or per result, e.g. frame). `low_open`: the low end is excluded (the slider starts a step
    above it)."""

    label: str
    kind: type  # int or float
    low: float
    high: float | None
    step: float = 1
    default: float = 0
    low_open: bool = False
    info: str | None = None


# The single table of the app's numeric inputs: the sliders are built from it and every handler checks its inputs
# against it (`check_number`), whatever sent them (the page or an HTTP client).
CONTROLS = {
    "query_decay": Control(f"{QUERY_DECAY_LABEL} (query_decay)", float, 0, 1, 0.05, DEFAULT_QUERY_DECAY,
                           low_open=True, info=QUERY_DECAY_HELP),
    "num_candidates": Control("Candidate queries to keep", int, 1, 10, 1, 5,
                              info="the best queries by mean score; the first is the official choice"),
    "threshold": Control("Mask threshold", float, 0.01, 0.99, 0.01, 0.5),
    "opacity": Control("Overlay / heatmap opacity", float, 0, 1, 0.05, 0.5),
    "stride": Control("Stride: keep every N-th frame", int, 1, 10, 1, 1),
    "max_frames": Control("Max frames", int, 1, None, info="longer clips are subsampled evenly to this many frames"),
    "short_side": Control("Model input short side (px)", int, 128, 720, 8, DEFAULT_SHORT_SIDE),
    "feather": Control("Soft edge in pixels (feather)", float, 0, 32, 1, 4.0,
                       info="how far the effect fades in across the object's edge; 0: a hard edge"),
    "frame": Control("Frame", int, 0, None),
    "candidate": Control("Candidate query", int, 0, None),
    "example": Control("Example", int, 0, None),
}


def check_number(name: str, value, high: float | None = None) -> int | float:
    """`value` of control `name` as its kind, if it is a finite number (or numeric text) in the control's range
    (`high` overrides its top); else `ConfigError` naming the control, the range and the value."""
    control = CONTROLS[name]
    high = control.high if high is None else high
    number = _as_number(value, control.kind)
    above = number is not None and (number > control.low if control.low_open else number >= control.low)
    if not (above and number <= high):
        kind = "a whole number" if control.kind is int else "a number"
        bounds = (f"greater than {control.low:g} and at most {high:g}" if control.low_open
                  else f"from {control.low:g} to {high:g}")
        raise ConfigError(f"{_named(control.label, name)} must be {kind} {bounds}, got {_shown(value)}")
    return number


def check_choice(name: str, label: str, value, choices: list[str]) -> str:
    """`value` if it is one of the texts `choices`, else `ConfigError` naming the option, the choices and the value."""
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(map(repr, choices))
        raise ConfigError(f"{_named(label, name)} must be one of {listed}, got {_shown(value)}")
    return value


def _named(label: str, name: str) -> str:
    """'Mask threshold (threshold)': what the page shows and what the API calls it."""
    return label if f"({name})" in label else f"{label} ({name})"


def _as_number(value, kind: type) -> int | float | None:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _is_local(name: str) -> bool:
    """A checkpoint given as a file or folder on this machine (not a Hub name)."""
    path = Path(name).expanduser()
    return path.is_absolute() or name.startswith((".", "~")) or path.exists()


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
    job (`ReferDinoPredictor.estimate_memory_mb`), None for no budget; concurrency: model runs at the same time;
    frame_cache_mb: decoded frames each result keeps in memory for redrawing (beyond it they are decoded again);
    example_cache: where the examples' results are kept, one file per checkpoint and settings (`ExampleCache`).
    """

    default_checkpoint: str = f"{HUB_REPO}/{DEFAULT_CHECKPOINT}"
    extra_checkpoints: tuple[str, ...] = ()
    max_frames: int = 96
    max_duration_s: float = 120.0
    max_upload_mb: float = 200.0
    max_expressions: int = 8
    short_side: int = DEFAULT_SHORT_SIDE
    concurrency: int = 1
    examples_dir: Path | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    memory_budget_mb: float | None = 8192.0
    frame_cache_mb: float = DEFAULT_FRAME_CACHE_MB
    example_cache: Path = field(default_factory=lambda: default_cache_folder() / "examples")

    @property
    def max_upload_bytes(self) -> int:
        """For `launch(max_file_size=...)`."""
        return int(self.max_upload_mb * 2**20)

    def checkpoint_menu(self) -> dict[str, tuple[str, str]]:
        """{menu value: (label, checkpoint)}: released files, tiny-random, then custom ones. A local file is listed by
        its name only ("local:ryt_swinb.pth"): the page's config is public and must not show the server's folders."""
        menu = {f"{HUB_REPO}/{name}": (f"{name} ({c.trained_on})", f"{HUB_REPO}/{name}")
                for name, c in RELEASED.items()}
        menu[TINY_RANDOM] = ("tiny-random (untrained weights: tries the interface, masks are random)", TINY_RANDOM)
        for name in (self.default_checkpoint, *self.extra_checkpoints):
            name = canonical_checkpoint(name)
            if name in [checkpoint for _, checkpoint in menu.values()]:
                continue
            if not _is_local(name):
                menu[name] = (f"{name} (custom)", name)
                continue
            file_name = Path(name).name or "checkpoint"
            value, copy = LOCAL + file_name, 1
            while value in menu:
                copy += 1
                value = f"{LOCAL}{file_name} ({copy})"
            menu[value] = (f"{value.removeprefix(LOCAL)} (local file)", name)
        return menu

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the checkpoint menu."""
        return [(label, value) for value, (label, _) in self.checkpoint_menu().items()]

    def checkpoint_choice(self, checkpoint: str) -> str:
        """The menu value of `checkpoint` (a name or local path of the menu)."""
        name = canonical_checkpoint(checkpoint)
        return next(value for value, (_, known) in self.checkpoint_menu().items() if known == name)

    def checkpoint_for(self, choice) -> str:
        """The checkpoint (Hub name or local path) of a menu value; anything else is refused (`ConfigError`): an HTTP
        client can load only what the menu offers."""
        menu = self.checkpoint_menu()
        return menu[check_choice("checkpoint", "Checkpoint", choice, list(menu))][1]

    def check_number(self, name: str, value) -> int | float:
        """`check_number` with this app's limits (max_frames up to `self.max_frames`)."""
        return check_number(name, value, high=self.max_frames if name == "max_frames" else None)

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
    query_decay: float = DEFAULT_QUERY_DECAY
    num_candidates: int = 5
    stride: int = 1
    max_frames: int = 96
    short_side: int = DEFAULT_SHORT_SIDE

    def selection(self, config: AppConfig) -> FrameSelection:
        """The frames to segment: these choices within the app's limits."""
        return FrameSelection(stride=int(self.stride), max_frames=min(int(self.max_frames), config.max_frames),
                              max_duration_s=config.max_duration_s, max_pixels=config.max_pixels)

    def model_settings(self, config: AppConfig) -> dict:
        """The other keyword arguments of `ReferDinoPredictor.segment`."""
        return dict(short_side=int(self.short_side), query_decay=float(self.query_decay),
                    num_candidates=int(self.num_candidates), memory_budget_mb=config.memory_budget_mb,
                    frame_cache_mb=config.frame_cache_mb)


def environment_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
