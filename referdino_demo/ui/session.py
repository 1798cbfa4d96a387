"""What the Gradio app needs that is not UI: the predictor registry, input checks before any model work,
running the model (on ZeroGPU when the `spaces` package is there) and one user's result (`SessionResult`, a
`ResultView` drawing into that user's private folder, `workspace.py`). Settings are in `config.py`.

Nothing here imports gradio, so it can be tested and reused without a browser. The model runs only in
`Backend.segment`; everything `SessionResult` does (threshold, opacity, candidate, frame, expression, effects,
downloads) works from the cached `VideoSegmentation` and the frames decoded while the model ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import html
import logging
import math
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import (ExpressionError, InputLimitError, JobCancelledError, MemoryBudgetError, ModelLoadError,
                      ReferDinoError, VideoReadError, one_line)
from ..example_cache import ExampleCache
from ..frame_selection import FrameSelection
from ..io.video_reader import VideoFrames
from ..result_view import RenderSettings, ResultView
from ..results import PickOutcome, VideoSegmentation
from .config import CONTROLS, AppConfig, RunOptions, canonical_checkpoint, check_choice
from .workspace import SESSION_ENDED, Job, Workspace

log = logging.getLogger(__name__)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
# The folders of an absolute path: "/" not inside a word, URL or relative path, then folder names (no spaces or quotes)
# each followed by "/", up to a last name.
_FOLDERS = re.compile(r"""(?<![\w.~:/\\<-])/(?:[^\s/'"`<>|]+/)+(?=[^\s/'"`<>|])""")


# -- predictors ---------------------------------------------------------------------------------------
class PredictorRegistry:
    """Predictors by checkpoint name, each loaded once (thread-safe) on first use; dtypes share weights."""

    def __init__(self, device: str | None = None, vocab: str | None = None, loader: Callable | None = None,
                 strict: bool = True):
        from ..predictor import ReferDinoPredictor

        self.device, self.vocab, self.strict = device, vocab, strict
        self._loader = loader or ReferDinoPredictor.from_pretrained
        self._predictors: dict[tuple[str, str], object] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, checkpoint: str, dtype: str = "auto"):
        """The predictor for `checkpoint`; raises `CheckpointNotFoundError` (etc.) with what to do.

        One lock per checkpoint: a long download does not hold up users of checkpoints already loaded."""
        from ..predictor import ReferDinoPredictor

        name = canonical_checkpoint(checkpoint)
        dtype = dtype or "auto"
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if (name, "auto") not in self._predictors:
                log.info("loading checkpoint %s", name)
                self._predictors[name, "auto"] = self._load(name)
            if (name, dtype) not in self._predictors:
                base = self._predictors[name, "auto"]
                self._predictors[name, dtype] = ReferDinoPredictor(base.model, base.tokenizer, device=base.device,
                                                                   dtype=dtype, checkpoint=base.checkpoint)
            return self._predictors[name, dtype]

    def loaded(self) -> list[str]:
        return sorted({name for name, _ in self._predictors})

    def _load(self, name: str):
        """The loader's predictor; a failure is reported as a `ReferDinoError` and nothing is cached, so the next
        request tries again."""
        try:
            # strict=False (the app's --non-strict) is passed only when set, so test loaders need not take it
            lenient = {} if self.strict else {"strict": False}
            return self._loader(name, device=self.device, vocab=self.vocab, **lenient)
        except ReferDinoError:
            raise
        except MemoryError:
            raise MemoryBudgetError(f"not enough memory to load checkpoint {name}; choose a smaller checkpoint or "
                                    "run the app on a machine with more memory") from None
        except Exception as err:
            log.exception("loading checkpoint %s failed", name)
            raise ModelLoadError(f"could not load checkpoint {name} ({type(err).__name__}: {one_line(err, 300)}). "
                                 "Try again; if it keeps failing, choose another checkpoint") from err


def gpu_seconds(num_frames: int, num_expressions: int) -> int:
    """ZeroGPU time to ask for: a fixed start plus a share per frame and expression, capped."""
    return int(min(300, 20 + math.ceil(0.25 * num_frames * max(1, num_expressions))))


def on_gpu(function: Callable, duration: Callable) -> Callable:
    """`spaces.GPU(duration=duration)(function)` when the `spaces` package is importable (a no-op off
    ZeroGPU), else `function` unchanged."""
    try:
        import spaces
    except ImportError:
        return function
    return spaces.GPU(duration=duration)(function)


# -- text for Markdown and toasts -----------------------------------------------------------------------
def as_text(text: str) -> str:
    """User text for Markdown/HTML output: shown literally, never interpreted as markup."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(str(text).split()), quote=False))


def hide_paths(text: str) -> str:
    """`text` with every absolute path cut to its last name ("/tmp/gradio/ab12/clip.mp4" -> "clip.mp4"). The app's
    folders (workspace, uploads, temporary files, the working and home folders) and wherever a checkpoint lives are
    the server's business; a name is all a user needs. A folder whose name has a space is cut from there on."""
    return _FOLDERS.sub("", text)


SHORT = 80  # characters of a user text shown in a label, a menu or a table; the rest is on hover and in the downloads
TOAST = 600  # characters of a message shown in a toast


def shorten(text: str, limit: int = SHORT) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis when longer: the one rule for every long text
    the page shows (expression menus, candidate labels, the summary table, toasts)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def as_short_text(text: str, limit: int = SHORT) -> str:
    """`as_text` of `shorten(text)`; when cut, the full text is the hover title."""
    short = shorten(text, limit)
    if short == " ".join(str(text).split()):
        return as_text(text)
    return f'<span title="{html.escape(" ".join(str(text).split()), quote=True)}">{as_text(short)}</span>'


def message(err: BaseException | str) -> str:
    """An error message for an HTML toast: server paths cut to file names (`hide_paths`), tags shown as text, at
    most `TOAST` characters. The last defence: messages should name files already, but one path in any message
    would show the server's layout."""
    return html.escape(shorten(hide_paths(str(err)), TOAST), quote=False)


# -- running the model ----------------------------------------------------------------------------------
class Backend:
    """Checks inputs, runs the model once per request and wraps the result in a `SessionResult`."""

    def __init__(self, config: AppConfig, registry: PredictorRegistry, workspace: Workspace | None = None):
        self.config, self.registry = config, registry
        self.workspace = workspace or Workspace()
        run = self._run_model
        self._run = on_gpu(run, self._gpu_duration)
        # Without ZeroGPU the model runs in this process and hands over the frames it decoded; on ZeroGPU it runs in
        # another one, so it gets the path (its arguments and result must pickle) and the frames are decoded here again.
        self._in_process = self._run is run
        # At most `concurrency` model runs at once, whatever the caller: Gradio's queue keeps the same limit, but a
        # run whose request was cancelled keeps its thread until it returns.
        self._slots = threading.BoundedSemaphore(max(1, config.concurrency))
        self.examples = ExampleCache(config.example_cache)

    def prepare(self, video: str | None, text: str | None,
                options: RunOptions) -> tuple[list[str], FrameSelection, VideoFrames]:
        """Validate everything a user can get wrong, before loading or running the model: the expressions, the
        frame selection and the video opened with it."""
        from ..predictor import validate_expressions

        if not video:
            raise VideoReadError("No video given: upload a clip, record one with the webcam, or click an example.")
        if text is not None and not isinstance(text, str):
            raise ExpressionError(f"Expressions (expressions) must be text, one expression per line; got "
                                  f"{type(text).__name__} {one_line(repr(text), 60)}")
        if not Path(video).exists():
            raise VideoReadError("The uploaded video is no longer on the server (uploads are kept about an hour); "
                                 "upload it again.")
        size_mb = Path(video).stat().st_size / 2**20 if Path(video).is_file() else 0.0
        if size_mb > self.config.max_upload_mb:
            raise InputLimitError(
                f"The video is {size_mb:.1f} MB, over this app's upload limit of {self.config.max_upload_mb:g} MB. "
                "Trim or downscale it first, e.g. `ffmpeg -i input -t 20 -vf scale=-2:720 -c:v libx264 "
                "-pix_fmt yuv420p output.mp4`.")
        expressions = validate_expressions(text or "", limit=self.config.max_expressions)
        selection = options.selection(self.config)
        return expressions, selection, selection.open(video)

    def segment(self, video: str | None, text: str | None, options: RunOptions, session: str | None = None,
                progress: Callable | None = None, connected: Callable[[], bool] | None = None) -> "SessionResult":
        """Run the model on one request; the result's files go to a fresh folder of `session`. `connected()` says
        whether the client still waits for the result (checked at every chunk, see `job`)."""
        with self.job(session, connected) as job:
            return self._segment(video, text, options, job, progress)

    def segment_and_render(self, video: str | None, text: str | None, options: RunOptions, view: "View",
                           session: str | None = None, progress: Callable | None = None,
                           connected: Callable[[], bool] | None = None,
                           cache: bool = False) -> tuple["SessionResult", "Rendered"]:
        """`segment`, then the first render, as one job: if the client goes meanwhile, nothing is left behind.
        `cache`: an example clip, whose result comes from the example cache when it was computed before with this
        checkpoint and these settings (no model run), else the model runs once and it is kept."""
        with self.job(session, connected) as job:
            result = self._segment(video, text, options, job, progress, cache)
            if progress is not None:
                progress(0.95, desc="rendering the videos")
            return result, result.render(view)

    @contextlib.contextmanager
    def job(self, session: str | None, connected: Callable[[], bool] | None = None) -> Iterator[Job]:
        """Scope of one request. When its session ends or its client goes (`connected()` false) before it is done,
        it raises `JobCancelledError` (whatever failed meanwhile because the files went away) and its folders are
        deleted. The model checks this at every chunk."""
        job = self.workspace.start_job(session, connected)
        stopped = False
        try:
            yield job
            stopped = job.stopped
        except JobCancelledError:
            stopped = True
        except Exception:
            if not job.stopped:
                raise
            stopped = True
        finally:
            self.workspace.finish_job(job)
        if stopped:
            log.info("the client left during a job; stopped it and deleted its files")
            raise JobCancelledError(SESSION_ENDED)

    def _segment(self, video, text, options: RunOptions, job: Job, progress: Callable | None,
                 cache: bool = False) -> "SessionResult":
        """The result of one request; `cache`: an example, taken from `examples` when computed before (else
        computed and kept there)."""
        expressions, selection, frames = self.prepare(video, text, options)

        def compute() -> VideoSegmentation:
            return self._compute(video, expressions, selection, frames, options, job, progress)

        if cache:
            segmentation = self.examples.get(options.checkpoint, video, expressions,
                                             self._cache_key(options, selection), compute)
        else:
            segmentation = compute()
        # source: what exports record, the upload's name (never its folder); frames: decoded again for drawing when
        # the model ran elsewhere or the result came from the example cache
        kept = segmentation.frames
        segmentation = dataclasses.replace(segmentation, frames=frames if kept is None else kept,
                                           source=Path(video).name)
        view = ResultView(segmentation, self.workspace.new_folder(job.session, job), versioned=True,
                          frame_cache_mb=self.config.frame_cache_mb)
        return SessionResult(view, video=video, inputs=RunInputs.of(video, text, options))

    def _compute(self, video, expressions: list[str], selection: FrameSelection, frames: VideoFrames,
                 options: RunOptions, job: Job, progress: Callable | None) -> VideoSegmentation:
        self.registry.get(options.checkpoint, options.dtype)  # download/load outside any GPU time
        settings = options.model_settings(self.config)
        source = (frames, None) if self._in_process else (str(video), selection)
        if not self._in_process:
            settings["frame_cache_mb"] = 0.0  # the frames could not come back anyway
        with self._slots:
            if job.stopped:
                raise JobCancelledError(SESSION_ENDED)
            return self._run(options.checkpoint, options.dtype, *source, expressions, settings, len(frames), progress,
                             job.id)

    def warm_examples(self, options: RunOptions) -> None:
        """Compute the examples' results missing from the cache (one at a time, for a start-up thread); a failure
        is logged, and that example is computed on first use instead."""
        for video, text in self.config.examples():
            try:
                expressions, selection, frames = self.prepare(video, text, options)
                with self.job(None) as job:
                    self.examples.get(options.checkpoint, video, expressions, self._cache_key(options, selection),
                                      lambda: self._compute(video, expressions, selection, frames, options, job, None))
            except Exception as err:  # noqa: BLE001 - a background warm-up must not stop the app
                log.warning("could not compute the example %s in advance: %s", Path(video).name, err)

    def _cache_key(self, options: RunOptions, selection: FrameSelection) -> dict:
        """What an example's result depends on besides the package, checkpoint, clip and expressions; a checkpoint
        loaded leniently (`--non-strict`) may compute differently, so it is another result."""
        return dict(dtype=options.dtype, query_decay=float(options.query_decay),
                    num_candidates=int(options.num_candidates), short_side=int(options.short_side),
                    stride=int(selection.stride), max_frames=selection.max_frames, strict=self.registry.strict)

    def _run_model(self, checkpoint: str, dtype: str, video, selection: FrameSelection | None,
                   expressions: list[str], settings: dict, num_frames: int, progress: Callable | None,
                   job_id: str = "") -> VideoSegmentation:
        """The only model call. On ZeroGPU its arguments and result are picklable (it runs in another process):
        `video` is then a path with its `selection`, and the result comes without frames; here `video` is the opened
        frames and the result keeps those it decoded. It stops at the next progress report (one per chunk) once
        the job's session has ended or its client has gone."""
        predictor = self.registry.get(checkpoint, dtype)

        def report(fraction: float, text: str) -> None:
            if self.workspace.cancelled(job_id):
                raise JobCancelledError(SESSION_ENDED)
            if progress is not None:
                progress(0.9 * fraction, desc=text)

        segmentation = predictor.segment(video, expressions, selection=selection, progress=report, **settings)
        return segmentation if self._in_process else dataclasses.replace(segmentation, frames=None)

    @staticmethod
    def _gpu_duration(checkpoint, dtype, video, selection, expressions, settings, num_frames, progress,
                      job_id="") -> int:
        return gpu_seconds(num_frames, len(expressions))


# -- one user's result ------------------------------------------------------------------------------------
APP_EXPORTS = ("png", "rle", "csv", "overlay", "heatmap")  # the Downloads tab's files (`result_view.EXPORTS`)


@dataclass(frozen=True)
class View:
    """What the user looks at: none of it needs the model."""

    threshold: float = 0.5
    opacity: float = 0.5
    expression: str | None = None
    frame: int = 0

    @property
    def settings(self) -> RenderSettings:
        return RenderSettings(self.threshold, opacity=self.opacity, expression=self.expression)


@dataclass(frozen=True)
class EffectChoice:
    """What an Effects tab (the app's, the notebook panel's) shows: the effect `name` (`result_view.EFFECT_NAMES`) on the `target` (background or
    object, where the effect takes one: `render.effects.has_target`) with a soft edge of `feather` pixels, on the object of
    `expression` (None: the first)."""

    name: str = "blur"
    target: str = "background"
    feather: float = CONTROLS["feather"].default
    expression: str | None = None

    def renderer(self):
        """The renderer of `render.effects` that draws it."""
        from ..render.effects import has_target, make_effect

        target = {"target": self.target} if has_target(self.name) else {}
        return make_effect(self.name, feather=self.feather, **target)


@dataclass
class Rendered:
    overlay_video: Path
    heatmap_video: Path
    plot: object  # matplotlib Figure
    frame_files: tuple[Path, Path]  # the frame's overlay and heatmap as PNG files in the result's folder
    expression: str
    candidates: list[tuple[str, int]]
    candidate: int


@dataclass(frozen=True)
class RunInputs:
    """The inputs a result came from, to tell whether the page's inputs still match it: the video by its content
    (`video_digest`: a clip filled into the page comes back as Gradio's copy, at another path), the expressions as
    typed and the checked `RunOptions`."""

    video: str | None
    expressions: str
    options: RunOptions

    @classmethod
    def of(cls, video: str | Path | None, expressions: str | None, options: RunOptions) -> "RunInputs":
        return cls(video_digest(video), expressions or "", options)


def video_digest(video: str | Path | None) -> str | None:
    """The SHA-256 of the file `video` (None for none; its path when it is not a file), remembered by path, size and
    modification time, so that typing in another input does not read the video again."""
    if not video:
        return None
    try:
        stat = Path(video).stat()
    except OSError:
        return str(video)
    return _digest(str(video), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as file:
        return f"{size}:{hashlib.file_digest(file, 'sha256').hexdigest()}"


class SessionResult:
    """One user's result: a versioned `ResultView` drawing into the result's own folder (served from there, deleted
    with it), the upload it came from, the inputs it came from (`inputs`, a `RunInputs` the app sets) and what the
    page shows besides the drawings (candidate labels, summary)."""

    def __init__(self, view: ResultView, video: str | Path | None = None, inputs: RunInputs | None = None):
        """video: the file segmented, decoded again for drawing when its frames did not fit in memory."""
        self.view, self.video, self.inputs = view, video, inputs

    @property
    def segmentation(self) -> VideoSegmentation:
        """The segmentation as the model made it (`view.segmentation` shows the chosen candidates)."""
        return self.view.original

    def expression(self, expression: str | None) -> str:
        """`expression` checked against the result's expressions (`ConfigError` naming them); None: the first."""
        if expression is None or expression == "":
            return self.view.expression()
        return check_choice("expression", "Expression", expression, self.view.expressions)

    def choose(self, expression: str | None, rank: int | None) -> None:
        if rank is not None:
            self.view.choose(self.expression(expression), int(rank))

    def pick(self, view: View, x: float, y: float) -> PickOutcome:
        """Show, for `view.expression`, the kept candidate whose mask covers pixel (`x`, `y`) of frame `view.frame`
        at `view.threshold` (`ResultView.pick`; its `message` is for the user). Raises `NoCandidateAtPointError`
        when none covers it, and then nothing changes."""
        return self.view.pick(self.expression(view.expression), int(view.frame), x, y, view.threshold)

    def undo(self) -> bool:
        """Take back the last candidate change (a pick or a choice in the menu); False when there is none."""
        return self.view.undo()

    def candidates(self, expression: str) -> list[tuple[str, int]]:
        result = self.segmentation[expression]
        labels = []
        for rank, query in enumerate(result.candidates):
            label = f"#{rank}: query {int(query)}, mean score {result.mean_scores[query]:.3f}"
            labels.append((label + (" (official choice)" if rank == 0 else ""), rank))
        return labels

    def expression_choices(self) -> list[tuple[str, str]]:
        """(label, expression) pairs for the expression menu: labels cut to `SHORT` characters."""
        return [(shorten(name), name) for name in self.segmentation.expressions]

    def data(self, view: View) -> dict:
        """The result as plain data for API clients: what was processed, each expression's shown candidate and its
        candidates (full texts), the view drawn and the page's summary text (`summary`)."""
        seg = self.view.segmentation
        height, width = seg.frame_size
        expressions = []
        for result in seg:
            original = self.segmentation[result.expression]
            expressions.append(dict(
                expression=result.expression, query=int(result.query), candidate=self.view.choice(result.expression),
                mean_score=float(result.mean_scores[result.query]),
                candidates=[dict(rank=rank, query=int(query), mean_score=float(original.mean_scores[query]))
                            for rank, query in enumerate(original.candidates)]))
        return dict(source=seg.source, checkpoint=hide_paths(seg.checkpoint), untrained=bool(seg.untrained),
                    num_frames=seg.num_frames, width=width, height=height, fps=float(seg.fps),
                    seconds=float(seg.timings.get("total_s", 0.0)), notes=[hide_paths(n) for n in seg.notes],
                    view=dict(threshold=view.threshold, opacity=view.opacity,
                              expression=self.expression(view.expression), frame=int(view.frame)),
                    expressions=expressions, text=self.summary())

    def render(self, view: View) -> Rendered:
        """The videos, the frame images and the plot at `view` (each drawn again only if its settings changed)."""
        self._check_source()
        expression = self.expression(view.expression)
        settings = dataclasses.replace(view.settings, expression=expression)
        return Rendered(self.view.overlay_video(settings), self.view.heatmap_video(settings), self.view.plot(),
                        self.inspect(view), expression, self.candidates(expression), self.view.choice(expression))

    def inspect(self, view: View) -> tuple[Path, Path]:
        """Frame `view.frame` with every expression's overlay, and with the chosen expression's heatmap, as PNG
        files."""
        self._check_source()
        settings = dataclasses.replace(view.settings, expression=self.expression(view.expression))
        return tuple(self.view.frame_file(kind, int(view.frame), settings) for kind in ("overlay", "heatmap"))

    def downloads(self, view: View) -> list[Path]:
        """The Downloads tab's files at `view`: written now unless they exist at these settings already."""
        self._check_source()
        settings = dataclasses.replace(view.settings, expression=self.expression(view.expression))
        return self.view.export(APP_EXPORTS, settings)

    def effect_frame(self, view: View, effect: EffectChoice) -> Path:
        """Frame `view.frame` with `effect` at `view.threshold` (`ResultView.effect_frame_file`) as a PNG in the
        result's folder, RGBA for the cut-out."""
        self._check_source()
        return self.view.effect_frame_file(int(view.frame), effect.renderer(), view.settings, effect.expression)

    def effect_video(self, view: View, effect: EffectChoice) -> Path:
        """`effect` over every processed frame at `view.threshold` (`ResultView.effect_video`, drawn unless drawn
        before): an H.264 MP4, for the cut-out a VP9 WebM with alpha (`.mov` where this FFmpeg has no VP9)."""
        self._check_source()
        return self.view.effect_video(effect.renderer(), view.settings, effect.expression)

    def shown_effect_video(self, view: View, effect: EffectChoice) -> Path | None:
        """The `effect_video` drawn before at exactly these settings and candidates, else None (nothing is drawn):
        what the page may keep showing."""
        return self.view.effect_video(effect.renderer(), view.settings, effect.expression, draw=False)

    def summary(self) -> str:
        """Markdown: what was processed, notes, and each expression's shown query (user text escaped)."""
        seg = self.view.segmentation
        height, width = seg.frame_size
        lines = []
        if seg.untrained:
            lines.append("⚠️ **UNTRAINED WEIGHTS**: this result comes from random weights (development mode); "
                         "the masks mean nothing.\n")
        seconds = seg.timings.get("total_s", 0.0)
        lines.append(f"**{seg.num_frames} frames** ({width}×{height}, {seg.fps:.3g} fps) segmented in {seconds:.1f} s "
                     f"with {as_text(hide_paths(seg.checkpoint))}.")
        lines += [f"- note: {as_short_text(hide_paths(note), TOAST)}" for note in seg.notes]
        lines.append("\n| | expression | query | mean score |\n|---|---|---|---|")
        for index, result in enumerate(seg):
            lines.append(f"| {_swatch(index)} | {as_short_text(result.expression)} | {result.query} | "
                         f"{result.mean_scores[result.query]:.3f} |")
        return "\n".join(lines)

    def close(self) -> None:
        shutil.rmtree(self.view.folder, ignore_errors=True)

    def _check_source(self) -> None:
        """Frames that are not all in memory are decoded again from the upload, which Gradio deletes after an hour."""
        frames = self.view.frames
        if frames is not None and not frames.complete and self.video is not None and not Path(self.video).is_file():
            raise VideoReadError("The video of this result is no longer on the server (uploads are kept about an "
                                 "hour); upload it again and press Segment.")


def _swatch(index: int) -> str:
    from ..render import hex_color

    return f'<span style="color:{hex_color(index)}">■</span>'
