"""One segmentation as every front end shows it: `ResultView`, shared by the app, the notebook panel and the CLI.

A view holds the `VideoSegmentation`, the user's candidate choice per expression, the decoded frames (kept in
memory within a byte budget, `io.frame_cache`) and memoised renders: frame images, the overlay, heatmap and effect
videos and the exports, each keyed by the settings it depends on, so that a change redraws only what it changes and
nothing is decoded again while the frames fit. Files are written only when asked for, by the one export table
`EXPORTS` (kind -> file name and writer); the renderers (`render/`) and exporters (`export/`) do the drawing.
They are imported when first used, so that the CLI reads this table without loading them.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError, OutputError, ReferDinoError
from .io.frame_cache import FrameCache
from .io.video_writer import alpha_video_suffix
from .options import DEFAULT_FRAME_CACHE_MB, check_option

if TYPE_CHECKING:
    from .render.effects import Effect
    from .results import PickOutcome, VideoSegmentation

FRAME_RENDERS_KEPT = 8  # frame images memoised (a scrubber goes back and forth over a few frames)


@dataclass(frozen=True)
class RenderSettings:
    """What a drawing depends on besides the result: the mask `threshold`, the MeViS rule `multi_target` (None:
    the shown query only), the `opacity` of the overlay and heatmap (None: each renderer's default), the
    `expression` (text or index) the heatmap shows (None: the first), the `effect_expression` whose object the
    effects and cut-outs show (None: the first) and their soft edge width `feather` in pixels (None: each effect's
    default), and whether the overlay, heatmap and effect videos keep the source's sound, `audio` (see `io/audio.py`:
    the sound of the time the processed frames cover; a source without any gives silent videos). Checked when made
    (`options.OPTIONS`)."""

    threshold: float = 0.5
    multi_target: float | None = None
    opacity: float | None = None
    expression: str | int | None = None
    effect_expression: str | int | None = None
    feather: float | None = None
    audio: bool = True

    def __post_init__(self) -> None:
        for name in ("threshold", "multi_target", "opacity", "feather"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else check_option(name, value))
        if not isinstance(self.audio, bool):
            raise ConfigError(f"audio must be True or False, got {self.audio!r}")

    def key(self, names: tuple[str, ...]) -> tuple:
        return tuple(getattr(self, name) for name in names)

    def opacity_option(self) -> dict:
        """`opacity=` for a renderer, or nothing for its default."""
        return {} if self.opacity is None else {"opacity": self.opacity}

    def mask_options(self) -> dict:
        """`threshold=` and `multi_target=` for an exporter or renderer of masks."""
        return {"threshold": self.threshold, "multi_target": self.multi_target}

    def feather_option(self) -> dict:
        """`feather=` for an effect or the cut-out export, or nothing for its default."""
        return {} if self.feather is None else {"feather": self.feather}

    def audio_option(self, view: "ResultView") -> dict:
        """`audio=` for a video renderer: the sound of `view`'s frames, or None without `audio`."""
        from .io.audio import AudioTrack

        return {"audio": AudioTrack.of(view.frames) if self.audio else None}


@dataclass(frozen=True)
class Export:
    """One kind of file a result is exported as: its file name (the same in every front end), a label for
    buttons and lists, the `RenderSettings` fields it depends on, and its writer `write(view, path, settings)`;
    None for an effect video, which `ResultView.effect_video` draws (so that it and `write("effect:NAME")` share
    one memo)."""

    file_name: str
    label: str
    depends: tuple[str, ...]
    write: Callable[["ResultView", Path, RenderSettings], Path] | None


def _png(view: "ResultView", path: Path, settings: RenderSettings) -> Path:
    from .export import export_png_zip

    return export_png_zip(view.segmentation, path, **settings.mask_options())


def _palette(view: "ResultView", path: Path, settings: RenderSettings) -> Path:
    from .export import export_palette_zip

    return export_palette_zip(view.segmentation, path, **settings.mask_options())


def _rle(view: "ResultView", path: Path, settings: RenderSettings) -> Path:
    from .export import export_coco_rle

    return export_coco_rle(view.segmentation, path, **settings.mask_options())


def _csv(view: "ResultView", path: Path, settings: RenderSettings) -> Path:
    from .export import export_csv

    return export_csv(view.segmentation, path, **settings.mask_options())


def _overlay(view: "ResultView", path: Path, settings: RenderSettings) -> Path:
    from .render import render_overlay_video

    return render_overlay_video(view.segmentation, view.iter_frames(), path, **settings.mask_options(),
                                **settings.opacity_option(), **settings.audio_option(view))


def _heatmap(view: "ResultView", path: Path, settings: RenderSettings) -> Path:
    from .render import render_heatmap_video

    return render_heatmap_video(view.segmentation, view.iter_frames(), path, expression=settings.expression,
                                threshold=settings.threshold, **settings.opacity_option(),
                                **settings.audio_option(view))


def _cutout(view: "ResultView", path: Path, settings: RenderSettings) -> Path:
    from .export import export_cutout_zip

    return export_cutout_zip(view.segmentation, view.iter_frames(), path, expression=settings.effect_expression,
                             **settings.mask_options(), **settings.feather_option())


def _effect_export(name: str) -> Export:
    """The export `effect:NAME`: the effect's video, with `settings.feather` (else the effect's defaults), drawn by
    `ResultView.effect_video`."""
    depends = (*EFFECT_VIDEO, "feather")
    if name == "cutout":
        return Export(f"cutout{_alpha_suffix()}", f"cut-out video ({_alpha_suffix()[1:]}, alpha)", depends, None)
    return Export(f"effect_{name}.mp4", f"{name} video (mp4)", depends, None)


def _alpha_suffix() -> str:
    """`alpha_video_suffix()`; where this FFmpeg cannot write alpha at all, `.webm`, whose writer then says so."""
    try:
        return alpha_video_suffix()
    except OutputError:
        return ".webm"


MASKS = ("threshold", "multi_target")
OVERLAY = (*MASKS, "opacity")  # what an overlay drawing depends on; its video also on "audio"
HEATMAP = ("threshold", "opacity", "expression")
EFFECT_MASKS = (*MASKS, "effect_expression")  # what an effect drawing depends on besides the renderer
EFFECT_DEPENDS = (*EFFECT_MASKS, "feather")
EFFECT_VIDEO = (*EFFECT_MASKS, "audio")  # what an effect video depends on besides the renderer
# The keys of `render.effects.EFFECTS`, named here so that this table loads without the renderers (a test checks
# that the two agree). Effect NAME is the export kind `effect:NAME`.
EFFECT_NAMES = ("blur", "pixelate", "fill", "desaturate", "spotlight", "cutout")
EXPORTS: dict[str, Export] = {
    "png": Export("masks.zip", "PNG masks (zip)", MASKS, _png),
    "palette": Export("palette.zip", "palette PNGs (zip)", MASKS, _palette),
    "rle": Export("masks_rle.json", "COCO RLE (json)", MASKS, _rle),
    "csv": Export("scores.csv", "scores (csv)", MASKS, _csv),
    "overlay": Export("overlay.mp4", "overlay video (mp4)", (*OVERLAY, "audio"), _overlay),
    "heatmap": Export("heatmap.mp4", "heatmap video (mp4)", (*HEATMAP, "audio"), _heatmap),
    "cutout": Export("cutout.zip", "cut-out RGBA PNGs (zip)", EFFECT_DEPENDS, _cutout),
    **{f"effect:{name}": _effect_export(name) for name in EFFECT_NAMES},
}


def check_exports(kinds) -> list[str]:
    """`kinds` as a list if each is a kind of `EXPORTS`, else `ConfigError` listing the kinds."""
    kinds = list(kinds)
    unknown = sorted(set(kinds) - set(EXPORTS))
    if unknown:
        raise ConfigError(f"unknown export {', '.join(unknown)}; choose from {','.join(EXPORTS)}")
    return kinds


class ResultView:
    """A `VideoSegmentation` as the user sees it, redrawn without the model.

    `folder` receives the files (videos, exports, frame images); `versioned` puts each file in a fresh
    subfolder and keeps the `KEEP` newest of a kind (a browser may still be fetching the one before; the app),
    otherwise files are written at `folder / file name` and replaced when the settings change (the CLI and the
    notebook panel). The frames are `segmentation.frames`, kept within `frame_cache_mb` unless the predictor kept
    them already. Thread-safe: one drawing at a time.
    """

    KEEP = 2

    def __init__(self, segmentation: VideoSegmentation, folder: str | os.PathLike | None = None, *,
                 versioned: bool = False, frame_cache_mb: float = DEFAULT_FRAME_CACHE_MB):
        self.original = segmentation
        self.folder = None if folder is None else Path(folder)
        self.versioned = versioned
        frames = segmentation.frames
        self.frames = frames if frames is None or isinstance(frames, FrameCache) else FrameCache(
            frames, check_option("frame_cache_mb", frame_cache_mb))
        self._choices: dict[str, int] = {}
        self._history: list[tuple[str, int]] = []
        self._shown: tuple[tuple, VideoSegmentation] | None = None
        self._images: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._files: dict[str, list[tuple[tuple, Path]]] = {}
        self._plot: tuple[tuple, object] | None = None
        self._serial = itertools.count()
        self._lock = threading.RLock()

    # -- expressions and candidate choices ---------------------------------------------------------------
    @property
    def expressions(self) -> list[str]:
        return self.original.expressions

    @property
    def num_frames(self) -> int:
        return self.original.num_frames

    def expression(self, expression: str | int | None = None) -> str:
        """The expression named by text or index (None: the first); `UnknownExpressionError` otherwise."""
        if expression is None or expression == "":
            return self.expressions[0]
        return self.original[expression].expression

    def choice(self, expression: str | int | None = None) -> int:
        """The candidate rank shown for `expression` (0: the official choice)."""
        return self._choices.get(self.expression(expression), 0)

    def choose(self, expression: str | int | None, rank: int) -> None:
        """Show the `rank`-th candidate query of `expression` (0: the official choice); `undo` takes it back."""
        name, rank = self.expression(expression), int(rank)
        self.original[name].with_candidate(rank)  # raises for a rank that does not exist
        with self._lock:
            if rank != self.choice(name):  # a redraw sends the shown choice again: nothing to undo
                self._history.append((name, self.choice(name)))
                self._choices[name] = rank

    def pick(self, expression: str | int | None, frame: int, x: float, y: float,
             threshold: float = 0.5) -> "PickOutcome":
        """Show the candidate a click at pixel (`x`, `y`) of processed frame `frame` picks
        (`ExpressionResult.candidate_at`, whose outcome carries the message for the user); `undo` takes it back."""
        name = self.expression(expression)
        outcome = self.segmentation[name].candidate_at(frame, x, y, threshold)
        self.choose(name, outcome.rank)
        return outcome

    def undo(self) -> bool:
        """Take back the last `choose`; False when there is none."""
        with self._lock:
            if not self._history:
                return False
            name, rank = self._history.pop()
            self._choices[name] = rank
            return True

    @property
    def segmentation(self) -> VideoSegmentation:
        """The segmentation showing each expression's chosen candidate, with this view's frames."""
        with self._lock:
            key = self._key()
            if self._shown is None or self._shown[0] != key:
                results = {name: result.with_candidate(self._choices.get(name, 0))
                           for name, result in self.original.results.items()}
                self._shown = (key, dataclasses.replace(self.original, results=results, frames=self.frames))
            return self._shown[1]

    # -- frames -------------------------------------------------------------------------------------------
    def frame(self, index: int) -> np.ndarray:
        """Processed frame `index` (H, W, 3) uint8 RGB: from memory, or decoded again when it did not fit."""
        if not 0 <= index < self.num_frames:
            raise ConfigError(f"frame {index} does not exist; this result has {self.num_frames} processed frames "
                              f"(0 to {self.num_frames - 1})")
        return self._frames().frame(index)

    def iter_frames(self) -> Iterator[np.ndarray]:
        """The processed frames in order (from memory while they fit)."""
        return (frame for _, _, frame in self._frames())

    # -- drawings -----------------------------------------------------------------------------------------
    def overlay_frame(self, index: int, settings: RenderSettings = RenderSettings()) -> np.ndarray:
        """Frame `index` with every expression's mask, (H, W, 3) uint8 RGB, memoised."""
        from .render import render_frame

        key = ("overlay", index, *settings.key(OVERLAY))
        return self._image(key, lambda: render_frame(self.segmentation, self.frame(index), index,
                                                     **settings.mask_options(), **settings.opacity_option()))

    def heatmap_frame(self, index: int, settings: RenderSettings = RenderSettings()) -> np.ndarray:
        """Frame `index` with `settings.expression`'s probability heatmap, (H, W, 3) uint8 RGB, memoised."""
        from .render import render_heatmap_frame

        settings = self._resolved(settings)
        key = ("heatmap", index, *settings.key(HEATMAP))
        return self._image(key, lambda: render_heatmap_frame(
            self.segmentation, self.frame(index), index, expression=settings.expression,
            threshold=settings.threshold, **settings.opacity_option()))

    def frame_file(self, kind: str, index: int, settings: RenderSettings = RenderSettings()) -> Path:
        """`overlay_frame` or `heatmap_frame` (`kind`) as a PNG file in this view's folder, memoised."""
        from PIL import Image

        draws = {"overlay": (self.overlay_frame, OVERLAY), "heatmap": (self.heatmap_frame, HEATMAP)}
        if kind not in draws:
            raise ConfigError(f"frame images are 'overlay' or 'heatmap', got {kind!r}")
        draw, depends = draws[kind]
        settings = self._resolved(settings)
        key = (index, *settings.key(depends))
        return self._file(f"frame_{kind}", f"frame_{kind}.png", key,
                          lambda path: Image.fromarray(draw(index, settings)).save(path))

    def overlay_video(self, settings: RenderSettings = RenderSettings()) -> Path:
        """The overlay MP4 (the "overlay" export), memoised."""
        return self.write("overlay", settings)

    def heatmap_video(self, settings: RenderSettings = RenderSettings()) -> Path:
        """The heatmap MP4 of `settings.expression` (the "heatmap" export), memoised."""
        return self.write("heatmap", settings)

    def effect_frame(self, index: int, effect: "Effect | str", settings: RenderSettings = RenderSettings(),
                     expression: str | int | None = None) -> np.ndarray:
        """Frame `index` with `effect` on one object's mask: `(H, W, 3)` uint8 RGB, `(H, W, 4)` RGBA for the
        cut-out; memoised.

        `effect` is a renderer of `render.effects` or a name of its `EFFECTS` (made with `settings.feather`, else
        the effect's defaults). The object is `expression`'s (text or index; None: `settings.effect_expression`,
        whose None is the first expression) at `settings.threshold` and `settings.multi_target`."""
        from .render.effects import render_effect_frame

        effect, settings = self._effect(effect, settings, expression)
        key = ("effect", index, effect.key(), *settings.key(EFFECT_MASKS))
        return self._image(key, lambda: render_effect_frame(
            self.segmentation, self.frame(index), index, effect, expression=settings.effect_expression,
            **settings.mask_options()))

    def effect_frame_file(self, index: int, effect: "Effect | str", settings: RenderSettings = RenderSettings(),
                          expression: str | int | None = None) -> Path:
        """`effect_frame` as a PNG file in this view's folder (RGBA for the cut-out), memoised."""
        from PIL import Image

        effect, settings = self._effect(effect, settings, expression)
        key = (index, effect.key(), *settings.key(EFFECT_MASKS))
        return self._file("frame_effect", "effect_frame.png", key,
                          lambda path: Image.fromarray(self.effect_frame(index, effect, settings)).save(path))

    def effect_video(self, effect: "Effect | str", settings: RenderSettings = RenderSettings(),
                     expression: str | int | None = None, *, draw: bool = True) -> Path | None:
        """`effect` over every processed frame, as `effect_frame` draws it, in the file of the export
        `effect:NAME` (`effect_NAME.mp4`; the cut-out: `cutout.webm` with alpha, or `.mov` where VP9 is missing,
        see `io.video_writer.alpha_video_suffix`), with the source's sound unless `settings.audio` is off; memoised
        by what it draws (`write("effect:NAME")` comes here too, so an equal effect is drawn once). With
        `draw=False`, only the memoised file, or None where this effect was not drawn at these settings."""
        from .render.effects import render_effect_video

        effect, settings = self._effect(effect, settings, expression)
        kind = f"effect:{effect.name}"
        return self._file(kind, EXPORTS[kind].file_name, (effect.key(), *settings.key(EFFECT_VIDEO)),
                          (lambda path: render_effect_video(
                              self.segmentation, self.iter_frames(), path, effect,
                              expression=settings.effect_expression, **settings.mask_options(),
                              **settings.audio_option(self))) if draw else None)

    def plot(self):
        """The score plot (a matplotlib Figure) of the shown candidates, memoised."""
        from .render import plot_scores

        with self._lock:
            key = self._key()
            if self._plot is None or self._plot[0] != key:
                self._plot = (key, plot_scores(self.segmentation))
            return self._plot[1]

    # -- files --------------------------------------------------------------------------------------------
    def write(self, kind: str, settings: RenderSettings = RenderSettings()) -> Path:
        """The export `kind` of `EXPORTS` at `settings`, written into the folder unless it is there already."""
        export = EXPORTS[check_exports([kind])[0]]
        if export.write is None:  # an effect video: one memo with `effect_video`
            return self.effect_video(kind.removeprefix("effect:"), settings)
        settings = self._resolved(settings)
        return self._file(kind, export.file_name, settings.key(export.depends),
                          lambda path: export.write(self, path, settings))

    def export(self, kinds, settings: RenderSettings = RenderSettings()) -> list[Path]:
        """`write` for each of `kinds` (checked first, so a bad kind writes nothing)."""
        return [self.write(kind, settings) for kind in check_exports(kinds)]

    # -- internals ----------------------------------------------------------------------------------------
    def _key(self) -> tuple:
        """The candidate choices, as memo keys use them (rank 0 is no choice)."""
        return tuple(sorted((name, rank) for name, rank in self._choices.items() if rank))

    def _frames(self) -> FrameCache:
        if self.frames is None:
            raise ReferDinoError("this segmentation keeps no frames, so it cannot be drawn; segment a video "
                                 "again, or give the frames to the renderers yourself")
        return self.frames

    def _resolved(self, settings: RenderSettings) -> RenderSettings:
        """`settings` naming its expressions by text, so that one expression has one memo key."""
        return dataclasses.replace(settings, expression=self.expression(settings.expression),
                                   effect_expression=self.expression(settings.effect_expression))

    def _effect(self, effect: "Effect | str", settings: RenderSettings,
                expression: str | int | None) -> tuple["Effect", RenderSettings]:
        """The renderer `effect` names (or is) and `settings` showing `expression`'s object, resolved."""
        from .render.effects import make_effect

        if isinstance(effect, str):
            effect = make_effect(effect, **settings.feather_option())
        elif not (hasattr(effect, "render_frame") and hasattr(effect, "key")):
            raise ConfigError(f"effect must be a renderer of render.effects or one of {', '.join(EFFECT_NAMES)}, "
                              f"got {effect!r}")
        if expression is not None:
            settings = dataclasses.replace(settings, effect_expression=expression)
        return effect, self._resolved(settings)

    def _image(self, key: tuple, draw: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            key = (*key, self._key())
            if key in self._images:
                self._images.move_to_end(key)
            else:
                self._images[key] = draw()
                while len(self._images) > FRAME_RENDERS_KEPT:
                    self._images.popitem(last=False)
            return self._images[key]

    def _file(self, kind: str, name: str, key: tuple, write: Callable[[Path], object] | None) -> Path | None:
        """The file `name` of `kind` for `key`, made by `write(path)` unless it exists (files may have been
        cleaned up meanwhile; without `write`, None then). A failed write leaves no file (the writers are atomic)
        and no folder."""
        with self._lock:
            key = (*key, self._key())
            made = self._files.setdefault(kind, [])
            for old_key, path in made:
                if old_key == key and path.is_file():
                    return path
            if write is None:
                return None
            if self.folder is None:
                raise ConfigError("this view has no folder to write files into; make it with ResultView(segmentation,"
                                  " folder)")
            folder = self.folder / f"{next(self._serial):05d}-{kind.replace(':', '-')}" if self.versioned \
                else self.folder
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            try:
                write(path)
            except BaseException:
                if self.versioned:
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            made[:] = [(old_key, old) for old_key, old in made if old_key != key and old != path]
            made.append((key, path))
            while self.versioned and len(made) > self.KEEP:
                shutil.rmtree(made.pop(0)[1].parent, ignore_errors=True)
            return path
