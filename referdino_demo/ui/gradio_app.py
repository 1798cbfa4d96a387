"""The Gradio app: `build_demo(config, registry) -> gr.Blocks`. Layout and short handlers only; the work is in
`referdino_demo.ui.session` and the package.

API (stable names, for `gradio_client`; endpoints of their own that return plain data, the page's events are
private): `/segment` runs the model and returns the overlay and heatmap videos, frame 0's overlay and heatmap
images (file paths) and a JSON `summary` (`SessionResult.data`); `/rerender` redraws the cached result at a
threshold, opacity, expression, candidate query and frame (same outputs); `/inspect_frame` draws one frame (two
images); `/downloads` writes the export files; `/effect` draws an effect on one expression's object: the frame
(a PNG) and the video (MP4; the cut-out a WebM with alpha). Each refuses a call before `/segment` with `NO_RESULT`.
Export files are written only by `/downloads` (on the page: the Downloads tab) and effect videos only by `/effect`
(on the page: Render video): a slider move redraws the videos and the frames, never the exports. The page's
Downloads and Effects tabs follow the settings only while open.
On the page a refused input shows its message as a warning and leaves the last result as it was (`_in_page`);
API calls get the message as an error.
Anyone can call the API with any values: every handler checks its inputs itself (`config.CONTROLS`, one table) and
answers a bad one with a message naming the option, the range and the value.
"""

import dataclasses
import functools
import gc
import logging
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ..hub import TINY_RANDOM, TRY_UNTRAINED
from ..errors import CheckpointMismatchError, CheckpointNotFoundError, ModelLoadError, ReferDinoError
from ..render.effects import TARGETS, has_target
from ..result_view import EFFECT_NAMES, EXPORTS
from .config import CONTROLS, DTYPES, AppConfig, RunOptions, check_choice, check_number
from .session import (APP_EXPORTS, Backend, EffectChoice, PredictorRegistry, RunInputs, SessionResult, View, as_text,
                      hide_paths, message, shorten)
from .workspace import Workspace

log = logging.getLogger(__name__)

INTRO = """# ReferDINO: referring video object segmentation
Give a video and describe objects in words, one per line; ReferDINO segments each of them in every frame.
The mask threshold, opacity, expression, candidate query and frame redraw the last result at once; changing
the video, expressions, checkpoint or the settings on the left needs **Segment** again. In **Inspect frame**, click
an object on the overlay to show, for the chosen expression, the candidate query whose mask covers it. **Effects**
blurs, fills or cuts out one expression's object on the inspected frame, and over the whole video on request."""
RESULT_VIDEO = dict(autoplay=True, loop=True, buttons=["download"], height=400, interactive=False)
NO_RESULT = "No result yet: upload a video, type an expression and press Segment first."
STALE = "✏️ Inputs changed since the last run: press **Segment** to apply them."
NOTHING_TO_UNDO = "Nothing to undo: no candidate was picked or chosen since this result was made."
TRY_TINY = (f" To try the app without the weights, choose '{TINY_RANDOM}' in the Checkpoint menu (untrained: "
            "random masks).")
# The effects' menu (values: `result_view.EFFECT_NAMES`, which the API takes) and where they apply
EFFECT_CHOICES = [("blur", "blur"), ("pixelate", "pixelate"), ("fill with green", "fill"),
                  ("grey (desaturate)", "desaturate"), ("spotlight: darken the rest", "spotlight"),
                  ("cut out: transparent background", "cutout")]
TARGET_CHOICES = [(f"the {target}", target) for target in TARGETS]
OUT_OF_MEMORY = ("Out of memory: the server could not finish this job. Lower Max frames or the model input short side "
                 "(Advanced), raise the stride, or segment fewer expressions at once.")


# Typing a value into a slider's number box and pressing Enter commits it like leaving the box does: the slider
# fires `release`, the event that redraws (dragging fires it once, at the end, so nothing is drawn twice).
ENTER_COMMITS = """() => {
  document.addEventListener("keydown", (event) => {
    const box = event.target;
    if (event.key === "Enter" && box instanceof HTMLInputElement && box.type === "number"
        && box.closest("#threshold, #opacity, #frame, #feather")) {
      box.blur();
    }
  });
}"""


def _without_advice(err: BaseException) -> str:
    """A checkpoint error's message without the package's general advice (`hub.TRY_UNTRAINED`): the app gives its
    own (`TRY_TINY`: choose tiny-random in the menu), so that the advice is given once."""
    return message(str(err).replace(TRY_UNTRAINED, "").rstrip())


def _user_errors(handler):
    """Errors a user can cause become a `gr.Error` with the package's message; anything else is logged."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except (CheckpointNotFoundError, CheckpointMismatchError, ModelLoadError) as err:
            raise gr.Error(_without_advice(err) + TRY_TINY, print_exception=False) from None
        except ReferDinoError as err:
            raise gr.Error(message(err), print_exception=False) from None
        except Exception as err:
            from ..memory import is_out_of_memory

            out_of_memory = is_out_of_memory(err)
            if not out_of_memory:
                log.exception("%s failed", handler.__name__)
                raise gr.Error(f"Something went wrong ({type(err).__name__}); the server log has the details. Try "
                               "again, or a shorter clip.", print_exception=False) from None
            log.warning("%s ran out of memory: %s", handler.__name__, err)
        gc.collect()  # outside the except block: the failed call's traceback (and its arrays) is gone
        raise gr.Error(OUT_OF_MEMORY, print_exception=False)

    return wrapper


def _in_page(outputs: int):
    """The page's version of a handler: a refused call (`gr.Error`) shows its message as a warning and leaves every
    one of its `outputs` as it was (`gr.skip()`), instead of Gradio's error badge on each output until the next run.
    The API endpoints raise instead, so that a client gets an error."""

    def decorate(handler):
        @functools.wraps(handler)
        def wrapper(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except gr.Error as err:
                gr.Warning(str(err.message))
                return gr.skip() if outputs == 1 else tuple(gr.skip() for _ in range(outputs))

        return wrapper

    return decorate


def _require(state) -> SessionResult:
    if state is None:
        raise gr.Error(NO_RESULT, print_exception=False)
    return state


def _view(result: SessionResult, threshold, opacity=CONTROLS["opacity"].default, expression=None, frame=0) -> View:
    """The checked view inputs: numbers in their controls' ranges, an expression and a frame of `result`."""
    return View(check_number("threshold", threshold), check_number("opacity", opacity), result.expression(expression),
                check_number("frame", frame, high=result.segmentation.num_frames - 1))


def _effect_choice(result: SessionResult, effect, target, feather, expression) -> EffectChoice:
    """The checked Effects tab inputs: an effect and a target of the menus, a feather in its control's range and an
    expression of `result` (its object is the one drawn)."""
    return EffectChoice(check_choice("effect", "Effect", effect, list(EFFECT_NAMES)),
                        check_choice("target", "Apply to", target, list(TARGETS)), check_number("feather", feather),
                        result.expression(expression))


def _video_path(video) -> str | None:
    """The path of a `gr.Video` input left unprocessed (`preprocess=False`): Gradio has checked that it is an upload
    and passes its file data as a dict."""
    return video.get("path") if isinstance(video, dict) else video


def _client_connected() -> Callable[[], bool]:
    """For the event being handled: whether its client is still there. Gradio marks a running event dead (`alive`)
    when the client's event stream closes (a tab closed, a raw HTTP client that hung up) and drops it from the running
    jobs when the client cancels it, but the handler's thread runs on; the model asks this at every chunk. Gradio
    has no public call for it (`gr.Request.is_disconnected()` concerns the join request, answered long ago), so this
    reads the queue's running jobs; outside the queue (or should Gradio change) it always says yes."""
    from gradio.context import LocalContext

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    jobs = getattr(getattr(blocks, "_queue", None), "active_jobs", None)

    def running():
        return next((event for events in list(jobs or ()) for event in events or ()
                     if getattr(event, "_id", None) == event_id), None)

    event = running() if event_id else None
    if event is None or not hasattr(event, "alive"):
        return lambda: True
    return lambda: event.alive and running() is event


def _rendered_outputs(result, rendered) -> tuple:
    """Values for: overlay, heatmap, plot, candidate, frame overlay, frame heatmap, info. Every file is in the
    result's own folder, so Gradio serves it from there (no copy is left behind when the session ends)."""
    frame_overlay, frame_heatmap = (str(p) for p in rendered.frame_files)
    return (str(rendered.overlay_video), str(rendered.heatmap_video), rendered.plot,
            gr.update(choices=rendered.candidates, value=rendered.candidate), frame_overlay, frame_heatmap,
            result.summary())


def _api_outputs(result: SessionResult, rendered, view: View) -> tuple:
    """Values for the API's: overlay video, heatmap video, frame overlay, frame heatmap (file paths), summary."""
    return (str(rendered.overlay_video), str(rendered.heatmap_video), *(str(p) for p in rendered.frame_files),
            result.data(dataclasses.replace(view, expression=rendered.expression)))


class _Handlers:
    def __init__(self, backend: Backend):
        self.backend = backend

    def _options(self, checkpoint, query_decay, num_candidates, stride, max_frames, short_side, dtype) -> RunOptions:
        config = self.backend.config
        numbers = dict(query_decay=query_decay, num_candidates=num_candidates, stride=stride, max_frames=max_frames,
                       short_side=short_side)
        return RunOptions(config.checkpoint_for(checkpoint), check_choice("dtype", "Precision", dtype, list(DTYPES)),
                          **{name: config.check_number(name, value) for name, value in numbers.items()})

    def _segment(self, video, expressions, checkpoint, query_decay, num_candidates, threshold, opacity, stride,
                 max_frames, short_side, dtype, state, request, progress, example: bool = False):
        """The new result and its first drawing (the previous result closed), for the page and the API."""
        options = self._options(checkpoint, query_decay, num_candidates, stride, max_frames, short_side, dtype)
        view = View(check_number("threshold", threshold), check_number("opacity", opacity))
        result, rendered = self.backend.segment_and_render(
            _video_path(video), expressions, options, view, getattr(request, "session_hash", None), progress,
            _client_connected(), cache=example)
        for note in result.segmentation.notes:
            gr.Warning(message(note))
        if state is not None:
            state.close()
        return result, rendered, view

    def _page_outputs(self, result: SessionResult, rendered) -> tuple:
        """Values for: state, the rendered outputs, expression menu, effect's expression menu, frame slider, stale
        note."""
        expressions = dict(choices=result.expression_choices(), value=result.segmentation.expressions[0])
        # one update each: Gradio consumes an update as it applies it
        return (result, *_rendered_outputs(result, rendered), gr.update(**expressions), gr.update(**expressions),
                gr.update(maximum=max(result.segmentation.num_frames - 1, 1), value=0), "")

    @_in_page(12)
    @_user_errors
    def segment(self, video, expressions, checkpoint, query_decay, num_candidates, threshold, opacity, stride,
                max_frames, short_side, dtype, state, request: gr.Request, progress=gr.Progress()):
        result, rendered, _ = self._segment(video, expressions, checkpoint, query_decay, num_candidates, threshold,
                                            opacity, stride, max_frames, short_side, dtype, state, request, progress)
        return self._page_outputs(result, rendered)

    @_user_errors
    def segment_api(self, video, expressions, checkpoint, query_decay, num_candidates, threshold, opacity, stride,
                    max_frames, short_side, dtype, state, request: gr.Request, progress=gr.Progress()):
        result, rendered, view = self._segment(video, expressions, checkpoint, query_decay, num_candidates,
                                               threshold, opacity, stride, max_frames, short_side, dtype, state,
                                               request, progress)
        return (result, *_api_outputs(result, rendered, view))

    @_in_page(14)
    @_user_errors
    def example(self, index, checkpoint, query_decay, num_candidates, threshold, opacity, stride, max_frames,
                short_side, dtype, state, request: gr.Request, progress=gr.Progress()):
        """An example clicked: its clip and expressions in the inputs, and its result, from the example cache when
        it was computed before (`Backend.segment_and_render` with `cache`)."""
        examples = self.backend.config.examples()
        video, text = examples[check_number("example", index, high=len(examples) - 1)]
        result, rendered, _ = self._segment(video, text, checkpoint, query_decay, num_candidates, threshold, opacity,
                                            stride, max_frames, short_side, dtype, state, request, progress,
                                            example=True)
        return (video, text, *self._page_outputs(result, rendered))

    def _rerender(self, state, threshold, opacity, expression, candidate, frame):
        result = _require(state)
        view = _view(result, threshold, opacity, expression, frame)
        if candidate is not None and candidate != "":  # None: keep the expression's candidate
            ranks = len(result.segmentation[view.expression].candidates)
            result.choose(view.expression, check_number("candidate", candidate, high=ranks - 1))
        return result, result.render(view), view

    @_in_page(7)
    @_user_errors
    def rerender(self, state, threshold, opacity, expression, candidate, frame):
        result, rendered, _ = self._rerender(state, threshold, opacity, expression, candidate, frame)
        return _rendered_outputs(result, rendered)

    @_user_errors
    def rerender_api(self, state, threshold, opacity, expression, candidate, frame):
        return _api_outputs(*self._rerender(state, threshold, opacity, expression, candidate, frame))

    def show_expression(self, state, threshold, opacity, expression, frame):
        return self.rerender(state, threshold, opacity, expression, None, frame)

    @_in_page(7)
    @_user_errors
    def pick(self, state, threshold, opacity, expression, frame, event: gr.SelectData):
        """A click on the frame's overlay image (`event.index`: the pixel, in the image's own pixels, which are the
        frame's): the chosen expression shows the candidate whose mask covers it (`SessionResult.pick`), and
        everything is redrawn, without the model. A click that no candidate covers changes nothing (a warning)."""
        result = _require(state)
        view = _view(result, threshold, opacity, expression, frame)
        point = getattr(event, "index", None)
        if not (isinstance(point, (list, tuple)) and len(point) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)):
            raise gr.Error(f"a click must give a pixel [x, y]; got {message(repr(point))}", print_exception=False)
        outcome = result.pick(view, *point)
        gr.Info(message(outcome.message))
        return _rendered_outputs(result, result.render(view))

    @_in_page(7)
    @_user_errors
    def undo(self, state, threshold, opacity, expression, frame):
        """Undo pick: the candidate shown before the last pick (or choice in the menu), redrawn; with nothing to
        undo, a message and nothing changes."""
        result = _require(state)
        view = _view(result, threshold, opacity, expression, frame)
        if not result.undo():
            gr.Info(NOTHING_TO_UNDO)
            return tuple(gr.skip() for _ in range(7))
        return _rendered_outputs(result, result.render(view))

    @_user_errors
    def inspect_frame_api(self, state, frame, threshold, opacity, expression):
        result = _require(state)
        return tuple(str(p) for p in result.inspect(_view(result, threshold, opacity, expression, frame)))

    @_in_page(2)
    def inspect_frame(self, state, frame, threshold, opacity, expression):
        return self.inspect_frame_api(state, frame, threshold, opacity, expression)

    @_user_errors
    def downloads_api(self, state, threshold, opacity, expression):
        """The export files at these settings."""
        result = _require(state)
        return [str(p) for p in result.downloads(_view(result, threshold, opacity, expression, 0))]

    @_in_page(2)
    @_user_errors
    def downloads(self, state, threshold, opacity, expression):
        """The Downloads tab opened (or an API call): its files at these settings (none before a result), and the
        tab marked open, so that its files follow the settings (`refresh_downloads`)."""
        if state is None:
            return [], True
        return [str(p) for p in state.downloads(_view(state, threshold, opacity, expression, 0))], True

    def refresh_downloads(self, state, threshold, opacity, expression, downloads_open):
        """After a new result or a redraw: the files at the new settings while the Downloads tab is open, else none
        (the old ones no longer match)."""
        return self.downloads(state, threshold, opacity, expression)[0] if downloads_open else []

    def _effect(self, state, threshold, expression, frame, effect, target, feather):
        """The result, the view (threshold and frame) and the effect, checked."""
        result = _require(state)
        return (result, _view(result, threshold, frame=frame),
                _effect_choice(result, effect, target, feather, expression))

    @_user_errors
    def effect_api(self, state, threshold, expression, frame, effect, target, feather):
        """`effect` (a name of `EFFECT_NAMES`) on `expression`'s object: frame `frame` (a PNG) and the video."""
        result, view, choice = self._effect(state, threshold, expression, frame, effect, target, feather)
        return str(result.effect_frame(view, choice)), str(result.effect_video(view, choice))

    @_in_page(3)
    @_user_errors
    def effects(self, state, threshold, expression, frame, effect, target, feather):
        """The Effects tab opened: the effect on the inspected frame, the video rendered last if it still shows
        these settings (else none: Render video draws it), and the tab marked open, so that both follow the settings
        (`refresh_effect`). Nothing before a result."""
        if state is None:
            return None, None, True
        result, view, choice = self._effect(state, threshold, expression, frame, effect, target, feather)
        video = result.shown_effect_video(view, choice)
        return str(result.effect_frame(view, choice)), None if video is None else str(video), True

    def refresh_effect(self, state, threshold, expression, frame, effect, target, feather, effects_open):
        """After a new result, a redraw or a change of the effect: `effects` while the Effects tab is open, else
        nothing (it redraws when opened)."""
        if not effects_open:
            return gr.skip(), gr.skip()
        return self.effects(state, threshold, expression, frame, effect, target, feather)[:2]

    @_in_page(1)
    @_user_errors
    def render_effect(self, state, threshold, expression, frame, effect, target, feather):
        """Render video: the effect over the whole clip (drawn again only if its settings changed)."""
        result, view, choice = self._effect(state, threshold, expression, frame, effect, target, feather)
        return str(result.effect_video(view, choice))

    def load_model(self, checkpoint):
        try:
            predictor = self.backend.registry.get(self.backend.config.checkpoint_for(checkpoint))
        except Exception as err:
            if not isinstance(err, ReferDinoError):
                log.exception("loading %s failed", checkpoint)
            return f"⚠️ **Could not load the checkpoint.** {_without_advice(err)}\n\n**{TRY_TINY.strip()}**"
        status = f"**Model:** {as_text(hide_paths(predictor.describe()))}"
        if predictor.untrained:
            status = f"⚠️ **Untrained random weights** (development mode): masks are random. {status}"
        return status

    def mark_stale(self, state, video, expressions, checkpoint, query_decay, num_candidates, stride, max_frames,
                   short_side, dtype):
        """The stale note when the run inputs differ from those the shown result came from (`RunInputs`): filling in
        an example's clip and expressions, or typing a change and taking it back, shows none."""
        if state is None:
            return ""
        try:
            options = self._options(checkpoint, query_decay, num_candidates, stride, max_frames, short_side, dtype)
        except ReferDinoError:  # a value no run would accept differs from the result's
            return STALE
        return "" if RunInputs.of(_video_path(video), expressions, options) == state.inputs else STALE

    def warm_examples(self) -> None:
        """Compute the examples' results for the default checkpoint and settings, so that a click shows them at
        once (for a start-up thread)."""
        config = self.backend.config
        options = RunOptions(config.checkpoint_for(config.checkpoint_choice(config.default_checkpoint)),
                             query_decay=CONTROLS["query_decay"].default,
                             num_candidates=int(CONTROLS["num_candidates"].default), max_frames=config.max_frames,
                             short_side=config.short_side)
        self.backend.warm_examples(options)

    def end_session(self, request: gr.Request):
        self.backend.workspace.remove(getattr(request, "session_hash", None))


def _slider(name: str, **changes) -> gr.Slider:
    """The slider of control `name`: the range it offers is the range the handlers accept (`config.CONTROLS`)."""
    control = CONTROLS[name]
    low = control.low + control.step if control.low_open else control.low
    return gr.Slider(**{**dict(minimum=low, maximum=control.high, value=control.default, step=control.step,
                               label=control.label, info=control.info), **changes})


def default_workspace(config: AppConfig) -> Workspace:
    """Per-session folders inside Gradio's upload folder (`GRADIO_TEMP_DIR`): Gradio serves results from there
    without copying them."""
    from gradio.utils import get_upload_folder

    return Workspace(parent=get_upload_folder(), served=True)


def _example_samples(config: AppConfig) -> list[list[str]]:
    """The examples table's rows: the clip's name (never the server's path: the page's config is public) and its
    expressions one per line (HTML, each cut to `SHORT` characters)."""
    import html

    return [[Path(video).name, "<br>".join(html.escape(shorten(line)) for line in text.splitlines())]
            for video, text in config.examples()]


def build_demo(config: AppConfig | None = None, registry: PredictorRegistry | None = None,
               workspace: Workspace | None = None, warm_examples: bool = False) -> gr.Blocks:
    """The app's page. Nothing is loaded here: predictors load on first use (page load or Segment).

    registry: shared predictors (default: a new one); workspace: where per-session files go (default: a new folder
    inside Gradio's upload folder, served from there, removed at exit); warm_examples: compute the examples' results
    for the default checkpoint in a background thread now (`config.example_cache` keeps them), instead of on the
    first click."""
    config = config or AppConfig()
    workspace = workspace or default_workspace(config)
    handlers = _Handlers(Backend(config, registry or PredictorRegistry(), workspace))
    if warm_examples and config.examples():
        import threading

        threading.Thread(target=handlers.warm_examples, name="warm-examples", daemon=True).start()
    # Every 30 minutes Gradio deletes the uploads and served files older than an hour: the only deletion of uploads,
    # which users may share (see workspace.py); a session's own results go when it ends.
    with gr.Blocks(title="ReferDINO video segmentation", delete_cache=(1800, 3600)) as demo:
        state = gr.State(None, delete_callback=lambda result: result is not None and result.close())
        downloads_open, effects_open = gr.State(False), gr.State(False)  # whether those tabs are open
        gr.Markdown(INTRO)
        model_status = gr.Markdown("Model: loading…", elem_id="model-status")
        with gr.Row():
            with gr.Column(scale=5):
                video = gr.Video(label="Video", sources=["upload", "webcam"], elem_id="input-video")
                expressions = gr.Textbox(label="Expressions (one per line)", lines=3, elem_id="expressions",
                                         placeholder="the red ball moving to the left\nthe blue square")
                checkpoint = gr.Dropdown(config.checkpoint_choices(), label="Checkpoint",
                                         value=config.checkpoint_choice(config.default_checkpoint))
                query_decay = _slider("query_decay")
                num_candidates = _slider("num_candidates")
                with gr.Accordion("Advanced", open=False):
                    stride = _slider("stride")
                    max_frames = _slider("max_frames", maximum=max(2, config.max_frames), value=config.max_frames)
                    short_side = _slider("short_side", value=config.short_side)
                    dtype = gr.Dropdown(list(DTYPES), value="auto", label="Precision")
                run = gr.Button("Segment", variant="primary", elem_id="segment-button")
                # names only: the page's config is public (gr.Examples would list server paths); HTML samples show
                # the expressions one per line
                examples = gr.Dataset(components=["textbox", "html"], headers=["Video", "Expressions"],
                                      samples=_example_samples(config), label="Examples (synthetic clips)", type="index",
                                      elem_id="examples", visible=bool(config.examples()))
            with gr.Column(scale=7):
                stale = gr.Markdown(elem_id="stale")
                with gr.Row():
                    threshold = _slider("threshold", elem_id="threshold")
                    opacity = _slider("opacity", elem_id="opacity")
                with gr.Row():
                    expression = gr.Dropdown([], label="Expression (heatmap, candidates)", interactive=True)
                    candidate = gr.Dropdown([], label="Candidate query", interactive=True, elem_id="candidate")
                with gr.Tabs():
                    with gr.Tab("Overlay") as overlay_tab:
                        overlay = gr.Video(label="Overlay", elem_id="overlay-video", **RESULT_VIDEO)
                    with gr.Tab("Heatmap") as heatmap_tab:
                        heatmap = gr.Video(label="Confidence heatmap", elem_id="heatmap-video", **RESULT_VIDEO)
                    with gr.Tab("Inspect frame") as inspect_tab:
                        frame = _slider("frame", maximum=1, elem_id="frame")
                        with gr.Row():
                            frame_overlay = gr.Image(label="Overlay", format="png", interactive=False,
                                                     elem_id="frame-overlay")
                            frame_heatmap = gr.Image(label="Heatmap", format="png", interactive=False,
                                                     elem_id="frame-heatmap")
                        undo = gr.Button("Undo pick", size="sm", elem_id="undo-pick")
                    with gr.Tab("Effects", elem_id="effects-tab") as effects_tab:
                        with gr.Row():
                            effect = gr.Dropdown(EFFECT_CHOICES, value="blur", label="Effect", elem_id="effect")
                            effect_target = gr.Radio(TARGET_CHOICES, value="background", label="Apply to",
                                                     elem_id="effect-target")
                            effect_expression = gr.Dropdown([], label="Object of the expression", interactive=True,
                                                            elem_id="effect-expression")
                        feather = _slider("feather", elem_id="feather")
                        with gr.Row():
                            effect_frame = gr.Image(label="Inspected frame with the effect", format="png",
                                                    interactive=False, elem_id="effect-frame")
                            effect_video = gr.Video(label="Effect video", elem_id="effect-video", **RESULT_VIDEO)
                        render_effect = gr.Button("Render video", size="sm", elem_id="render-effect")
                    with gr.Tab("Downloads", elem_id="downloads-tab") as downloads_tab:
                        downloads = gr.File(label=", ".join(EXPORTS[kind].label for kind in APP_EXPORTS),
                                            file_count="multiple", interactive=False, elem_id="downloads")
                plot = gr.Plot(label="Score per frame", format="png", elem_id="score-plot")
                info = gr.Markdown(elem_id="result-info")
        # The API's own inputs and outputs (never shown): plain values, named by their labels
        with gr.Group(visible=False):
            api_expression = gr.Textbox("", label="expression")  # empty: the first expression
            api_candidate = gr.Number(None, label="candidate", precision=0)
            api_files = [gr.File(label=label) for label in ("overlay_video", "heatmap_video", "frame_overlay",
                                                            "frame_heatmap")]
            api_summary = gr.JSON(label="summary")
            api_downloads = gr.File(label="downloads", file_count="multiple")
            api_effect_files = [gr.File(label=label) for label in ("effect_frame", "effect_video")]
            api_segment, api_rerender, api_inspect, api_exports, api_effect = (gr.Button(visible=False)
                                                                               for _ in range(5))

        rendered = [overlay, heatmap, plot, candidate, frame_overlay, frame_heatmap, info]
        view = [threshold, opacity, expression]
        run_settings = [checkpoint, query_decay, num_candidates, *view[:2], stride, max_frames, short_side, dtype]
        page_outputs = [state, *rendered, expression, effect_expression, frame, stale]
        effect_inputs = [state, threshold, effect_expression, frame, effect, effect_target, feather]
        refresh = dict(fn=handlers.refresh_downloads, inputs=[state, *view, downloads_open], outputs=downloads,
                       api_visibility="private", show_progress="minimal", preprocess=False)
        refresh_effect = dict(fn=handlers.refresh_effect, inputs=[*effect_inputs, effects_open],
                              outputs=[effect_frame, effect_video], api_visibility="private", show_progress="minimal",
                              trigger_mode="always_last", preprocess=False)

        def follow(event) -> None:
            """After a new result or a redraw: the tabs that draw on demand follow it while open."""
            event.success(**refresh).success(**refresh_effect)

        # preprocess=False: the values reach the handlers as sent, and the handlers check them (Gradio's own checks
        # would answer an HTTP client with Gradio's generic messages). Gradio still checks that a video is an upload.
        model = dict(concurrency_id="model", concurrency_limit=config.concurrency, preprocess=False)
        follow(run.click(handlers.segment, [video, expressions, *run_settings, state], page_outputs,
                         api_name="page_segment", api_visibility="private", **model))
        follow(examples.click(handlers.example, [examples, *run_settings, state], [video, expressions, *page_outputs],
                              api_visibility="private", **model))
        follow(gr.on([threshold.release, opacity.release, candidate.input], handlers.rerender,
                     [state, *view, candidate, frame], rendered, api_name="page_rerender", api_visibility="private",
                     trigger_mode="always_last", preprocess=False))
        follow(expression.input(handlers.show_expression, [state, *view, frame], rendered, api_visibility="private",
                                trigger_mode="always_last", preprocess=False))
        downloads_tab.select(handlers.downloads, [state, *view], [downloads, downloads_open],
                             api_name="page_downloads", api_visibility="private", preprocess=False)
        effects_tab.select(handlers.effects, effect_inputs, [effect_frame, effect_video, effects_open],
                           api_visibility="private", preprocess=False)
        tabs = (overlay_tab, heatmap_tab, inspect_tab, effects_tab, downloads_tab)
        for is_open, tab in ((downloads_open, downloads_tab), (effects_open, effects_tab)):
            gr.on([other.select for other in tabs if other is not tab], lambda: False, None, is_open,
                  api_visibility="private", queue=False, show_progress="hidden")
        gr.on([effect.input, effect_target.input, effect_expression.input, feather.release], **refresh_effect)
        effect.input(lambda name: gr.update(interactive=has_target(name)), effect, effect_target,
                     api_visibility="private", queue=False, show_progress="hidden")
        render_effect.click(handlers.render_effect, effect_inputs, effect_video, api_visibility="private",
                            preprocess=False)
        frame.release(handlers.inspect_frame, [state, frame, *view], [frame_overlay, frame_heatmap],
                      api_name="page_inspect_frame", api_visibility="private", trigger_mode="always_last", show_progress="minimal",
                      preprocess=False)
        follow(frame_overlay.select(handlers.pick, [state, *view, frame], rendered, api_visibility="private",
                                    trigger_mode="always_last", preprocess=False))
        follow(undo.click(handlers.undo, [state, *view, frame], rendered, api_visibility="private", preprocess=False))
        # the API
        api_view = [threshold, opacity, api_expression]
        api_segment.click(handlers.segment_api, [video, expressions, *run_settings, state],
                          [state, *api_files, api_summary], api_name="segment", **model)
        api_rerender.click(handlers.rerender_api, [state, *api_view, api_candidate, frame], [*api_files, api_summary],
                           api_name="rerender", preprocess=False)
        api_inspect.click(handlers.inspect_frame_api, [state, frame, *api_view], api_files[2:],
                          api_name="inspect_frame", preprocess=False)
        api_exports.click(handlers.downloads_api, [state, *api_view], api_downloads, api_name="downloads",
                          preprocess=False)
        api_effect.click(handlers.effect_api, [state, threshold, api_expression, frame, effect, effect_target, feather],
                         api_effect_files, api_name="effect", preprocess=False)

        gr.on([demo.load, checkpoint.change], handlers.load_model, checkpoint, model_status,
              api_visibility="private", show_progress="minimal", preprocess=False)
        demo.load(None, js=ENTER_COMMITS, api_visibility="private")
        gr.on([c.change for c in (video, expressions, checkpoint, query_decay, num_candidates, stride, max_frames,
                                  short_side, dtype)],
              handlers.mark_stale, [state, video, expressions, checkpoint, query_decay, num_candidates, stride,
                                    max_frames, short_side, dtype], stale, api_visibility="private", queue=False,
              show_progress="hidden", preprocess=False)
        demo.unload(handlers.end_session)
    return demo
