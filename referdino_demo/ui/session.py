"""What the Gradio app needs that is not UI: the predictor registry, input checks before any model work,
running the model (on ZeroGPU when the `spaces` package is there) and rendering one user's cached result into
files in that user's private folder (`workspace.py`). Settings are in `config.py`.

Nothing here imports gradio, so it can be tested and reused without a browser. The model runs only in
`Backend.segment`; everything `SessionResult` does (threshold, opacity, candidate, frame, expression) works from
the cached `VideoSegmentation` and the re-decoded frames.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import itertools
import logging
import math
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import (ExpressionError, InputLimitError, JobCancelledError, MemoryBudgetError, ModelLoadError,
                      ReferDinoError, VideoReadError, one_line)
from ..io.video_reader import VideoFrames, iter_video
from ..results import VideoSegmentation
from .config import AppConfig, RunOptions, canonical_checkpoint, check_choice
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

        self.device, self.vocab = device, vocab
        # strict=False (the app's --non-strict) is passed only when set, so test loaders need not take it
        self._options = {} if strict else {"strict": False}
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
            return self._loader(name, device=self.device, vocab=self.vocab, **self._options)
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


def message(err: BaseException | str) -> str:
    """An error message for an HTML toast: server paths cut to file names (`hide_paths`), tags shown as text. The
    last defence: messages should name files already, but one path in any message would show the server's layout."""
    return html.escape(hide_paths(str(err)), quote=False)


# -- running the model ----------------------------------------------------------------------------------
class Backend:
    """Checks inputs, runs the model once per request and wraps the result in a `SessionResult`."""

    def __init__(self, config: AppConfig, registry: PredictorRegistry, workspace: Workspace | None = None):
        self.config, self.registry = config, registry
        self.workspace = workspace or Workspace()
        self._run = on_gpu(self._run_model, self._gpu_duration)
        # At most `concurrency` model runs at once, whatever the caller: Gradio's queue keeps the same limit, but a
        # run whose request was cancelled keeps its thread until it returns.
        self._slots = threading.BoundedSemaphore(max(1, config.concurrency))

    def prepare(self, video: str | None, text: str | None, options: RunOptions) -> tuple[list[str], VideoFrames]:
        """Validate everything a user can get wrong, before loading or running the model."""
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
        kwargs = options.segment_kwargs(self.config)
        frames = iter_video(video, stride=kwargs["stride"], max_frames=kwargs["max_frames"],
                            max_duration_s=kwargs["max_duration_s"], max_pixels=kwargs["max_pixels"])
        return expressions, frames

    def segment(self, video: str | None, text: str | None, options: RunOptions, session: str | None = None,
                progress: Callable | None = None, connected: Callable[[], bool] | None = None) -> "SessionResult":
        """Run the model on one request; the result's files go to a fresh folder of `session`. `connected()` says
        whether the client still waits for the result (checked at every chunk, see `job`)."""
        with self.job(session, connected) as job:
            return self._segment(video, text, options, job, progress)

    def segment_and_render(self, video: str | None, text: str | None, options: RunOptions, view: "View",
                           session: str | None = None, progress: Callable | None = None,
                           connected: Callable[[], bool] | None = None) -> tuple["SessionResult", "Rendered"]:
        """`segment`, then the first render, as one job: if the client goes meanwhile, nothing is left behind."""
        with self.job(session, connected) as job:
            result = self._segment(video, text, options, job, progress)
            if progress is not None:
                progress(0.95, desc="rendering videos and exports")
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

    def _segment(self, video, text, options: RunOptions, job: Job, progress: Callable | None) -> "SessionResult":
        expressions, frames = self.prepare(video, text, options)
        self.registry.get(options.checkpoint, options.dtype)  # download/load outside any GPU time
        with self._slots:
            if job.stopped:
                raise JobCancelledError(SESSION_ENDED)
            segmentation = self._run(options.checkpoint, options.dtype, str(video), expressions,
                                     options.segment_kwargs(self.config), len(frames), progress, job.id)
        # frames: decoded again when rendering; source: what exports record, the upload's name (never its folder)
        segmentation = dataclasses.replace(segmentation, frames=frames, source=Path(video).name)
        return SessionResult(segmentation, self.workspace.new_folder(job.session, job), video=video)

    def _run_model(self, checkpoint: str, dtype: str, video: str, expressions: list[str], kwargs: dict,
                   num_frames: int, progress: Callable | None, job_id: str = "") -> VideoSegmentation:
        """The only model call. Arguments and result are picklable (ZeroGPU runs this in another process). It
        stops at the next progress report (one per chunk) once the job's session has ended or its client has gone."""
        predictor = self.registry.get(checkpoint, dtype)

        def report(fraction: float, text: str) -> None:
            if self.workspace.cancelled(job_id):
                raise JobCancelledError(SESSION_ENDED)
            if progress is not None:
                progress(0.9 * fraction, desc=text)

        segmentation = predictor.segment(video, expressions, progress=report, **kwargs)
        return dataclasses.replace(segmentation, frames=None)

    @staticmethod
    def _gpu_duration(checkpoint, dtype, video, expressions, kwargs, num_frames, progress, job_id="") -> int:
        return gpu_seconds(num_frames, len(expressions))


# -- one user's result ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    """What the user looks at: none of it needs the model."""

    threshold: float = 0.5
    opacity: float = 0.5
    expression: str | None = None
    frame: int = 0


@dataclass
class Rendered:
    overlay_video: Path
    heatmap_video: Path
    plot: object  # matplotlib Figure
    frame_overlay: np.ndarray
    frame_heatmap: np.ndarray
    downloads: list[Path]
    expression: str
    candidates: list[tuple[str, int]]
    candidate: int
    frame_files: tuple[Path, Path] | None = None  # the two frame images as PNG files in the result's folder


class SessionResult:
    """A cached `VideoSegmentation` plus the user's candidate choices, rendered into `folder` on demand.

    Products (videos, exports, plot) are memoised by the settings they depend on; older files are deleted
    once a newer render of the same kind exists, so the folder stays small.
    """

    KEEP = 2  # renders kept per kind: the newest and the one the browser may still be fetching

    def __init__(self, segmentation: VideoSegmentation, folder: Path, video: str | Path | None = None):
        """video: the file segmented, decoded again to render (default: `segmentation.source`)."""
        self.segmentation, self.folder = segmentation, Path(folder)
        self.video = video if video is not None else segmentation.source
        self.choices: dict[str, int] = {}
        self._lock = threading.RLock()
        self._products: dict[str, list[tuple[tuple, object, Path]]] = {}
        self._serial = itertools.count()
        self._frame_cache: tuple[int, np.ndarray] | None = None

    # choices
    def view(self) -> VideoSegmentation:
        """The segmentation showing each expression's chosen candidate query."""
        results = {e: r.with_candidate(self.choices.get(e, 0)) for e, r in self.segmentation.results.items()}
        return dataclasses.replace(self.segmentation, results=results)

    def expression(self, expression: str | None) -> str:
        names = self.segmentation.expressions
        if expression is None or expression == "":
            return names[0]
        return check_choice("expression", "Expression", expression, names)

    def choose(self, expression: str | None, rank: int | None) -> None:
        expression = self.expression(expression)
        if rank is not None:
            self.segmentation[expression].with_candidate(int(rank))  # raises for a rank that does not exist
            self.choices[expression] = int(rank)

    def candidates(self, expression: str) -> list[tuple[str, int]]:
        result = self.segmentation[expression]
        labels = []
        for rank, query in enumerate(result.candidates):
            label = f"#{rank}: query {int(query)}, mean score {result.mean_scores[query]:.3f}"
            labels.append((label + (" (official choice)" if rank == 0 else ""), rank))
        return labels

    # rendering
    def render(self, view: View) -> Rendered:
        with self._lock:
            self._check_source()
            expression = self.expression(view.expression)
            overlay, heatmap = self.overlay_video(view), self.heatmap_video(view)
            frame_overlay, frame_heatmap = self.inspect(view)
            files = self.frame_files(view, (frame_overlay, frame_heatmap))
            return Rendered(overlay, heatmap, self.plot(), frame_overlay, frame_heatmap, self.exports(view.threshold),
                            expression, self.candidates(expression), self.choices.get(expression, 0), files)

    def overlay_video(self, view: View) -> Path:
        from ..render import render_overlay_video

        seg = self.view()
        key = (view.threshold, view.opacity, self._key())
        return self._product("overlay", key, lambda folder: render_overlay_video(
            seg, seg.iter_frames(), folder / "overlay.mp4", threshold=view.threshold, opacity=view.opacity))

    def heatmap_video(self, view: View) -> Path:
        from ..render import render_heatmap_video

        seg, expression = self.view(), self.expression(view.expression)
        key = (expression, view.threshold, view.opacity, self._key())
        return self._product("heatmap", key, lambda folder: render_heatmap_video(
            seg, seg.iter_frames(), folder / "heatmap.mp4", expression=expression, threshold=view.threshold,
            opacity=view.opacity))

    def exports(self, threshold: float) -> list[Path]:
        from ..export import export_coco_rle, export_csv, export_png_zip

        seg = self.view()
        return self._product("exports", (threshold, self._key()), lambda folder: [
            export_png_zip(seg, folder / "masks.zip", threshold=threshold),
            export_coco_rle(seg, folder / "masks_rle.json", threshold=threshold),
            export_csv(seg, folder / "scores.csv", threshold=threshold)])

    def plot(self):
        from ..render import plot_scores

        return self._product("plot", self._key(), lambda folder: plot_scores(self.view()))

    def inspect(self, view: View) -> tuple[np.ndarray, np.ndarray]:
        """Frame `view.frame` with every expression's overlay, and with the chosen expression's heatmap."""
        from ..render import render_frame, render_heatmap_frame

        with self._lock:
            seg, index = self.view(), int(view.frame)
            if not 0 <= index < seg.num_frames:
                raise ReferDinoError(f"frame {index} does not exist; this result has {seg.num_frames} processed "
                                     f"frames (0 to {seg.num_frames - 1})")
            self._check_source()
            frame = self.frame(index)
            return (render_frame(seg, frame, index, view.threshold, opacity=view.opacity),
                    render_heatmap_frame(seg, frame, index, expression=self.expression(view.expression),
                                         threshold=view.threshold, opacity=view.opacity))

    def frame_files(self, view: View, images: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[Path, Path]:
        """`inspect(view)` as two PNG files in this result's folder (served from there, deleted with it)."""
        from PIL import Image

        def save(folder: Path) -> tuple[Path, Path]:
            pictures = images if images is not None else self.inspect(view)
            paths = (folder / "frame_overlay.png", folder / "frame_heatmap.png")
            for picture, path in zip(pictures, paths):
                Image.fromarray(picture).save(path)
            return paths

        expression = self.expression(view.expression)
        return self._product("frame", (int(view.frame), view.threshold, view.opacity, expression, self._key()), save)

    def frame(self, index: int) -> np.ndarray:
        """Processed frame `index`, decoded again from the source (the last one asked for is cached)."""
        if self._frame_cache is None or self._frame_cache[0] != index:
            for position, frame in enumerate(self.segmentation.iter_frames()):
                if position == index:
                    self._frame_cache = (index, frame)
                    break
            else:
                raise VideoReadError(f"frame {index} could not be decoded again from {self.video}")
        return self._frame_cache[1]

    def summary(self) -> str:
        """Markdown: what was processed, notes, and each expression's shown query (user text escaped)."""
        seg = self.view()
        height, width = seg.frame_size
        lines = []
        if seg.untrained:
            lines.append("⚠️ **UNTRAINED WEIGHTS**: this result comes from random weights (development mode); "
                         "the masks mean nothing.\n")
        seconds = seg.timings.get("total_s", 0.0)
        lines.append(f"**{seg.num_frames} frames** ({width}×{height}, {seg.fps:.3g} fps) segmented in {seconds:.1f} s "
                     f"with {as_text(hide_paths(seg.checkpoint))}.")
        lines += [f"- note: {as_text(hide_paths(note))}" for note in seg.notes]
        lines.append("\n| | expression | query | mean score |\n|---|---|---|---|")
        for index, result in enumerate(seg):
            lines.append(f"| {_swatch(index)} | {as_text(result.expression)} | {result.query} | "
                         f"{result.mean_scores[result.query]:.3f} |")
        return "\n".join(lines)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # internals
    def _check_source(self) -> None:
        if self.video is not None and not Path(self.video).is_file():
            raise VideoReadError("The video of this result is no longer on the server (uploads are kept about an "
                                 "hour); upload it again and press Segment.")

    def _key(self) -> tuple:
        return tuple(sorted(self.choices.items()))

    def _product(self, kind: str, key: tuple, make: Callable[[Path], object]):
        """`make(folder)` in a fresh folder, memoised by `key`; older products of `kind` are deleted."""
        with self._lock:
            cached = self._products.setdefault(kind, [])
            for old_key, value, folder in cached:
                if old_key == key and folder.is_dir() and _files_exist(value):  # files may have been cleaned up
                    return value
            cached[:] = [entry for entry in cached if entry[0] != key]
            folder = self.folder / f"{next(self._serial):05d}-{kind}"
            folder.mkdir(parents=True)
            try:
                value = make(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            cached.append((key, value, folder))
            while len(cached) > self.KEEP:
                shutil.rmtree(cached.pop(0)[2], ignore_errors=True)
            return value


def _files_exist(value) -> bool:
    if isinstance(value, Path):
        return value.is_file()
    if isinstance(value, (list, tuple)):
        return all(_files_exist(item) for item in value)
    return True


def _swatch(index: int) -> str:
    from ..render import hex_color

    return f'<span style="color:{hex_color(index)}">■</span>'
