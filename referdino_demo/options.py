"""The range of every user-set number, in one table, checked the same way by the Python API, the CLI and the app.

A value is refused with `ConfigError` (one line: the option, the value seen, the range allowed) before any model
work. Numeric strings are accepted (HTTP clients and the CLI send text); NaN, infinities, booleans and anything
else are refused.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import ConfigError

DEFAULT_SHORT_SIDE = 360  # model input short side, as in the official inference scripts
DEFAULT_QUERY_DECAY = 0.5  # the pruning keep ratio per decoder layer (official `query_decay`): 900 -> 450 -> ... -> 15
# The one name of `query_decay` in every front end (app, notebook panel, CLI help).
QUERY_DECAY_LABEL = "Pruning keep ratio"
QUERY_DECAY_HELP = ("share of the queries each decoder layer keeps (the official query_decay); lower is faster, "
                    "1 keeps all")
DEFAULT_FRAME_CACHE_MB = 512.0  # decoded frames kept in memory for rendering; longer videos are decoded again
# Cap on the resized long side (the official code has none): 16:9 at short side 360 is 640, 5.3:1 reaches 1920.
# Without it a 16000x16 strip (few pixels) becomes a 360000x360 model input.
DEFAULT_MAX_LONG_SIDE = 1920


@dataclass(frozen=True)
class OptionRange:
    """A number's kind and closed range [low, high]; `low_open` makes the low end excluded."""

    kind: type  # int or float
    low: float
    high: float
    low_open: bool = False
    what: str = ""  # a few words for the message
    optional: bool = False  # None is accepted (and means: not set)
    keywords: tuple[str, ...] = ()  # words accepted as they are, e.g. "auto"

    def describe(self) -> str:
        low = f"{'>' if self.low_open else '>='} {_number(self.low)}"
        kind = "a whole number" if self.kind is int else "a number"
        text = f"{kind} {low} and <= {_number(self.high)}" if math.isfinite(self.high) else f"{kind} {low}"
        others = ["None"] * self.optional + [repr(k) for k in self.keywords]
        return f"{text} (or {' or '.join(others)})" if others else text


OPTIONS: dict[str, OptionRange] = {
    "stride": OptionRange(int, 1, 10**6, what="keep every N-th frame"),
    "max_frames": OptionRange(int, 1, 10**6, what="frame budget", optional=True),
    "start_s": OptionRange(float, 0, 10**7, what="start time in seconds", optional=True),
    "end_s": OptionRange(float, 0, 10**7, low_open=True, what="end time in seconds", optional=True),
    "fps": OptionRange(float, 0, 1000, low_open=True, what="frame rate of arrays and iterators"),
    "max_duration_s": OptionRange(float, 0, 10**7, low_open=True, what="longest selected time range in seconds",
                                  optional=True),
    "max_pixels": OptionRange(int, 1, 10**12, what="largest frame width x height in pixels", optional=True),
    # Swin downsamples 32x: below 32 px the last stage has no pixel left.
    "short_side": OptionRange(int, 32, 4096, what="model input short side in pixels"),
    "max_long_side": OptionRange(int, 32, 16384, what="cap on the model input long side in pixels"),
    "query_decay": OptionRange(float, 0, 1, low_open=True, what="pruning keep ratio per decoder layer",
                               optional=True),
    "num_candidates": OptionRange(int, 1, 1000, what="candidate queries kept per expression"),
    "multi_target": OptionRange(float, 0, 1, what="score above which every query joins the mask", optional=True),
    "threshold": OptionRange(float, 0, 1, what="mask probability threshold"),
    "opacity": OptionRange(float, 0, 1, what="overlay opacity"),
    "chunk_size": OptionRange(int, 1, 4096, what="frames per model chunk"),
    "feature_budget_mb": OptionRange(float, 0, math.inf, what="memory for kept mask features in MB",
                                     keywords=("auto",)),
    "memory_budget_mb": OptionRange(float, 0, math.inf, low_open=True, what="memory budget per job in MB",
                                    optional=True, keywords=("auto",)),
    "frame_cache_mb": OptionRange(float, 0, math.inf, what="memory for decoded frames kept for rendering in MB"),
    "feather": OptionRange(float, 0, 10**4, what="soft mask edge width in pixels", optional=True),
}


def check_option(name: str, value):
    """`value` as the option's kind (int or float) if it is in range (None and keywords as they are where the
    option allows them), else `ConfigError` naming the option, the value and the range."""
    spec = OPTIONS[name]
    if (value is None and spec.optional) or (isinstance(value, str) and value in spec.keywords):
        return value
    number = _as_number(value, spec.kind)
    if number is None or not _in_range(number, spec):
        label = f"{name} ({spec.what})" if spec.what else name
        raise ConfigError(f"{label} must be {spec.describe()}, got {_shown(value)}")
    return number


def check_options(**values) -> dict:
    """`check_option` on each keyword argument -> the checked values by name."""
    return {name: check_option(name, value) for name, value in values.items()}


def option_type(name: str, check=None):
    """An argparse `type=` for the option (or for any `check(text)` raising `ConfigError`, named `name`): the same
    check, reported by argparse as a usage error."""
    import argparse

    check = check or (lambda text: check_option(name, text))

    def parse(text: str):
        try:
            return check(text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def _as_number(value, kind: type):
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, numbers.Real):
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    if kind is int:
        return int(value) if value.is_integer() else None
    return value


def _in_range(number: float, spec: OptionRange) -> bool:
    above = number > spec.low if spec.low_open else number >= spec.low
    return above and number <= spec.high


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"
