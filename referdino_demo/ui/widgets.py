"""`ReferDinoPanel`: the demo as ipywidgets, for Jupyter and Colab (core widgets only, so Colab renders them).

One line in a notebook::

    from referdino_demo.ui.widgets import ReferDinoPanel
    ReferDinoPanel.from_pretrained("tiny-random")     # or "liangtm/referdino"; the panel displays itself

The panel lays out widgets and calls the package: `ReferDinoPredictor.segment` on Run, then a `ResultView` of
the result (the one the app and the CLI use) for the video, frames, heatmap, score plot and export files. The
frames decoded while the model ran stay in memory (within `frame_cache_mb`), so the threshold slider, the frame
scrubber, the heatmap choice and the effects redraw without a model call and without decoding the video again;
the pruning keep ratio (query_decay) and the expressions take effect on the next Run. Files are written only by the
export buttons and the effect's "render video" button, into `output_dir/<video name>/` under the names every front
end uses. Errors are shown as one line in the messages area.

Picking: an image widget reports no clicks, so the Inspect tab takes the point as x and y (pixels of the original
frame) and "pick candidate here" shows the candidate query of the heatmap's expression that covers it
(`ResultView.pick`); "undo" takes the last pick back. Saved notebooks shown without a widget manager (nbconvert,
GitHub) get a static HTML copy: the description and, after a run, the current overlay frame.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import re
from pathlib import Path

import ipywidgets as w
import numpy as np
from PIL import Image

from ..errors import ReferDinoError
from ..frame_selection import FrameSelection
from ..options import DEFAULT_FRAME_CACHE_MB, DEFAULT_SHORT_SIDE, QUERY_DECAY_HELP, QUERY_DECAY_LABEL
from ..predictor import ReferDinoPredictor
from ..render.effects import EFFECTS, TARGETS, has_target
from ..result_view import EXPORTS, RenderSettings, ResultView
from ..results import VideoSegmentation
from .session import EffectChoice

logger = logging.getLogger(__name__)


def png_bytes(image) -> bytes:
    """(H, W, 3) uint8 RGB or (H, W, 4) RGBA array, or a matplotlib Figure -> PNG bytes."""
    buffer = io.BytesIO()
    if isinstance(image, np.ndarray):
        Image.fromarray(image).save(buffer, format="png")
    else:
        image.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _file_line(path: Path) -> str:
    """HTML: a download link (Jupyter serves files under its root, the working folder) and the full path."""
    full = path.resolve()
    try:
        name = f'<a href="{html.escape(full.relative_to(Path.cwd()).as_posix())}" download target="_blank">' \
               f"{html.escape(path.name)}</a>"
    except ValueError:  # outside the working folder: no link Jupyter could serve, the path only
        name = html.escape(path.name)
    return f"<div>{name} &nbsp;<code>{html.escape(str(full))}</code></div>"


def _stem(source: str | None) -> str:
    """The folder name of a video's files: its file name without suffix, in safe characters."""
    stem = Path(source).stem if source else "video"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "video"


class ReferDinoPanel:
    """Widgets over a `ReferDinoPredictor`: choose a video and expressions, run, inspect, export.

    output_dir: where uploads and, one folder per video, the overlay video and exports are written. short_side,
    stride, max_frames: the defaults of the model input size and frame selection (stride and max frames are also
    widgets). frame_cache_mb: decoded frames kept in memory for redrawing (beyond it they are decoded again).
    """

    def __init__(self, predictor: ReferDinoPredictor, *, output_dir: str | os.PathLike = "referdino_outputs",
                 short_side: int = DEFAULT_SHORT_SIDE, stride: int = 1, max_frames: int | None = None,
                 frame_cache_mb: float = DEFAULT_FRAME_CACHE_MB):
        self.predictor = predictor
        self.output_dir = Path(output_dir)
        self.short_side, self.frame_cache_mb = short_side, frame_cache_mb
        self.view: ResultView | None = None
        self._quiet = False
        self._build(stride, max_frames)

    @property
    def segmentation(self) -> VideoSegmentation | None:
        """The last result, as the model made it."""
        return None if self.view is None else self.view.original

    @classmethod
    def from_pretrained(cls, checkpoint: str | os.PathLike = "tiny-random", filename: str | None = None, *,
                        device=None, dtype=None, vocab=None, **panel_options) -> "ReferDinoPanel":
        """Load a predictor (see `ReferDinoPredictor.from_pretrained`) and build a panel over it."""
        predictor = ReferDinoPredictor.from_pretrained(checkpoint, filename, device=device, dtype=dtype, vocab=vocab)
        return cls(predictor, **panel_options)

    # -- layout ----------------------------------------------------------------------------------------
    def _build(self, stride: int, max_frames: int | None) -> None:
        wide = w.Layout(width="98%")
        style = {"description_width": "130px"}
        self.header = w.HTML(f"<b>ReferDINO</b> &middot; {html.escape(self.predictor.describe())}")
        self.upload = w.FileUpload(accept="video/*,.mp4,.webm,.mov,.mkv,.avi", multiple=False,
                                   description="Upload video")
        self.path = w.Text(description="or video path", placeholder="/path/to/video.mp4", layout=wide, style=style)
        self.expressions = w.Textarea(description="expressions", placeholder="one expression per line",
                                      layout=w.Layout(width="98%", height="80px"), style=style)
        self.query_decay = w.FloatSlider(value=self.predictor.model.config.query_decay, min=0.05, max=1.0, step=0.05,
                                         description=QUERY_DECAY_LABEL, continuous_update=False, style=style,
                                         tooltip=f"{QUERY_DECAY_HELP}; applied on the next Run")
        self.threshold = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, description="mask threshold",
                                       continuous_update=False, style=style)
        self.stride = w.BoundedIntText(value=stride, min=1, max=100, description="frame stride", style=style)
        self.max_frames = w.BoundedIntText(value=max_frames or 0, min=0, max=100_000, style=style,
                                           description="max frames", tooltip="0 = every selected frame")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="progress", style=style)
        self.status = w.Label()
        self.messages = w.Output(layout=w.Layout(max_height="160px", overflow="auto"))
        self.video = w.Video(format="mp4", autoplay=False, loop=True, controls=True, layout=w.Layout(width="480px"))
        self.frame = w.IntSlider(value=0, min=0, max=0, description="frame", disabled=True, style=style)
        self.heatmap_expression = w.Dropdown(description="heatmap of", options=[], style=style)
        self.overlay_image = w.Image(format="png", layout=w.Layout(width="420px"))
        self.heatmap_image = w.Image(format="png", layout=w.Layout(width="420px"))
        self.plot = w.Image(format="png", layout=w.Layout(width="640px"))
        self.export_buttons = {kind: w.Button(description=export.label, icon="download", tooltip=export.file_name)
                               for kind, export in EXPORTS.items()}
        self.exports = w.HTML()
        # picking (Inspect tab) and effects (Effects tab)
        self.pick_x = w.BoundedIntText(value=0, min=0, max=0, description="x", layout=w.Layout(width="150px"))
        self.pick_y = w.BoundedIntText(value=0, min=0, max=0, description="y", layout=w.Layout(width="150px"))
        self.pick_button = w.Button(description="pick candidate here", icon="crosshairs",
                                    tooltip="show the candidate of the heatmap's expression that covers (x, y)")
        self.undo_button = w.Button(description="undo", icon="undo", tooltip="take the last pick back")
        self.effect = w.Dropdown(description="effect", options=list(EFFECTS), style=style)
        self.feather = w.FloatSlider(value=4.0, min=0.0, max=32.0, step=1.0, description="feather (px)",
                                     continuous_update=False, style=style)
        self.target = w.ToggleButtons(options=TARGETS, description="apply to", style=style)
        self.effect_expression = w.Dropdown(description="object", options=[], style=style)
        self.effect_image = w.Image(format="png", layout=w.Layout(width="420px"))
        self.effect_button = w.Button(description="render video", icon="film")
        self.effect_video = w.Video(format="mp4", autoplay=False, loop=True, controls=True,
                                    layout=w.Layout(width="480px"))

        self.upload.observe(self._on_upload, names="value")
        self.run_button.on_click(self._on_run)
        self.query_decay.observe(self._on_query_decay, names="value")
        self.threshold.observe(self._on_threshold, names="value")
        self.frame.observe(lambda _: self._show_frame(), names="value")
        self.heatmap_expression.observe(lambda _: self._show_frame(), names="value")
        for kind, button in self.export_buttons.items():
            button.on_click(lambda _, kind=kind: self._on_export(kind))
        self.pick_button.on_click(lambda _: self._guard(self._pick))
        self.undo_button.on_click(lambda _: self._guard(self._undo))
        # spotlight and cut-out keep the object: "apply to" does not apply to them, with or without a result
        self.effect.observe(lambda change: setattr(self.target, "disabled", not has_target(change["new"])),
                            names="value")
        for control in (self.effect, self.feather, self.target, self.effect_expression):
            control.observe(lambda _: self._guard(self._show_effect), names="value")
        self.effect_button.on_click(lambda _: self._guard(self._render_effect))
        self._set_result_enabled(False)

        inputs = w.VBox([w.HBox([self.upload]), self.path, self.expressions,
                         w.HBox([self.query_decay, self.threshold]), w.HBox([self.stride, self.max_frames]),
                         w.HBox([self.run_button, self.progress, self.status]), self.messages])
        inspect = w.VBox([w.HBox([self.frame, self.heatmap_expression]),
                          w.HBox([self.overlay_image, self.heatmap_image]),
                          w.HBox([self.pick_x, self.pick_y, self.pick_button, self.undo_button])])
        effects = w.VBox([w.HBox([self.effect, self.effect_expression]), w.HBox([self.feather, self.target]),
                          w.HBox([self.effect_image, w.VBox([self.effect_button, self.effect_video])])])
        export = w.VBox([w.HBox(list(self.export_buttons.values()), layout=w.Layout(flex_flow="row wrap")),
                         self.exports])
        results = w.Tab(children=[self.video, inspect, effects, self.plot, export])
        for index, title in enumerate(("Overlay video", "Inspect frame", "Effects", "Scores", "Export")):
            results.set_title(index, title)
        self.widget = w.VBox([self.header, inputs, results])

    # -- display ---------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        """The widget view, and a static HTML copy for renderers without widgets (nbconvert, GitHub)."""
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        return {**bundle, "text/html": self.static_html()}

    def static_html(self) -> str:
        """The panel as static HTML: what it is and, after a run, the expressions and the current overlay frame."""
        parts = [f"<p>{self.header.value}: the ReferDINO notebook panel (interactive in Jupyter and Colab; this is a "
                 f"static copy).</p>"]
        if self.view is not None:
            index = self.frame.value
            image = base64.b64encode(png_bytes(self.view.overlay_frame(index, self._settings()))).decode("ascii")
            shown = ", ".join(html.escape(text) for text in self.view.expressions)
            parts += [f"<p>{html.escape(_stem(self.view.original.source))}, frame {index} of "
                      f"{self.view.num_frames}: {shown}</p>",
                      f'<img src="data:image/png;base64,{image}" alt="overlay of frame {index}" '
                      f'style="max-width: 480px">']
        return "\n".join(parts)

    def show(self) -> None:
        from IPython.display import display

        display(self.widget)

    # -- events ----------------------------------------------------------------------------------------
    def _on_upload(self, change) -> None:
        """Save the uploaded file into `output_dir/uploads` and put its path in the path box."""
        if not change["new"]:
            return
        # ipywidgets 8: a tuple of {name, content, ...}; 7 (Colab's default): {name: {metadata, content}}
        new = change["new"]
        item = new[0] if isinstance(new, (tuple, list)) else next(iter(new.values()))
        name = Path(item["name"] if "name" in item else item["metadata"]["name"]).name
        content = bytes(item["content"])
        target = self.output_dir / "uploads" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        self.path.value = str(target)
        self._say(f"uploaded {name} ({len(content) / 2**20:.1f} MB)")

    def _on_run(self, _=None) -> None:
        self.messages.outputs = ()
        self.run_button.disabled = True
        try:
            self._guard(self._run)
        finally:
            self.run_button.disabled = False

    def _run(self) -> None:
        if not self.path.value.strip():
            raise ReferDinoError("no video chosen: upload one or type the path of a video file")
        self.progress.value = 0.0
        selection = FrameSelection(stride=self.stride.value, max_frames=self.max_frames.value or None)
        segmentation = self.predictor.segment(
            self.path.value.strip(), self.expressions.value, selection=selection, short_side=self.short_side,
            query_decay=self.query_decay.value, frame_cache_mb=self.frame_cache_mb, progress=self._on_progress)
        self._set_result(segmentation)
        for note in segmentation.notes:
            self._say(note)
        if segmentation.untrained:
            self._say("these are UNTRAINED random weights: the masks are meaningless (a UI and pipeline check)")
        self._say(f"segmented {segmentation.num_frames} frames x {len(segmentation)} expressions in "
                  f"{segmentation.timings.get('total_s', 0):.1f} s")

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.value = fraction
        self.status.value = message

    def _on_query_decay(self, change) -> None:
        if self.segmentation is not None:
            self._say(f"{QUERY_DECAY_LABEL.lower()} {change['new']:g}: press Run to apply it")

    def _on_threshold(self, _=None) -> None:
        if self.segmentation is not None:
            self._guard(self._render)

    def _on_export(self, kind: str) -> None:
        self._guard(lambda: self._export(kind))

    # -- drawing the cached result ---------------------------------------------------------------------
    def _set_result(self, segmentation: VideoSegmentation) -> None:
        self.view = ResultView(segmentation, self.output_dir / _stem(segmentation.source),
                               frame_cache_mb=self.frame_cache_mb)
        self.exports.value = ""
        self._quiet = True  # no frame rendering while the scrubber and the dropdown change
        try:
            self.frame.value = 0
            self.frame.max = segmentation.num_frames - 1
            self.heatmap_expression.options = segmentation.expressions
            self.heatmap_expression.value = segmentation.expressions[0]
            self.effect_expression.options = segmentation.expressions
            self.effect_expression.value = segmentation.expressions[0]
            height, width = segmentation.frame_size
            self.pick_x.max, self.pick_y.max = width - 1, height - 1
        finally:
            self._quiet = False
        self._set_result_enabled(True)
        self.plot.value = png_bytes(self.view.plot())
        self.progress.value = 1.0
        self.status.value = "done"
        self._render()

    def _settings(self) -> RenderSettings:
        return RenderSettings(self.threshold.value, expression=self.heatmap_expression.value,
                              effect_expression=self.effect_expression.value or None, feather=self.feather.value)

    def _render(self) -> None:
        """The overlay video at the current threshold, then the current frame."""
        self.video.value = self.view.overlay_video(self._settings()).read_bytes()
        self._show_frame()

    def _show_frame(self) -> None:
        if self.view is None or self._quiet:
            return
        index, settings = self.frame.value, self._settings()
        self.overlay_image.value = png_bytes(self.view.overlay_frame(index, settings))
        self.heatmap_image.value = png_bytes(self.view.heatmap_frame(index, settings))
        self._show_effect()

    def _effect(self):
        """The chosen effect's renderer."""
        return EffectChoice(self.effect.value, self.target.value, self.feather.value).renderer()

    def _show_effect(self) -> None:
        """The chosen effect on the current frame (the preview of the Effects tab)."""
        if self.view is None or self._quiet:
            return
        self.effect_image.value = png_bytes(self.view.effect_frame(self.frame.value, self._effect(), self._settings()))

    def _render_effect(self) -> None:
        if self.view is None:
            raise ReferDinoError("nothing to render yet: press Run first")
        path = self.view.effect_video(self._effect(), self._settings())
        self.effect_video.format = path.suffix[1:]
        self.effect_video.value = path.read_bytes()
        self._say(f"wrote {path}")

    def _pick(self) -> None:
        if self.view is None:
            raise ReferDinoError("nothing to pick from yet: press Run first")
        outcome = self.view.pick(self.heatmap_expression.value, self.frame.value, self.pick_x.value,
                                 self.pick_y.value, self.threshold.value)
        self._say(outcome.message)
        self._redraw_choice()

    def _undo(self) -> None:
        if self.view is None or not self.view.undo():
            self._say("nothing to undo")
            return
        self._say("took the last pick back")
        self._redraw_choice()

    def _redraw_choice(self) -> None:
        """Everything a candidate choice changes: the overlay video, the frames, the effect and the score plot."""
        self.plot.value = png_bytes(self.view.plot())
        self._render()

    def _export(self, kind: str) -> None:
        if self.view is None:
            raise ReferDinoError("nothing to export yet: press Run first")
        path = self.view.write(kind, self._settings())
        self.exports.value += _file_line(path)
        self._say(f"wrote {path}")

    def _set_result_enabled(self, enabled: bool) -> None:
        for widget in (self.frame, self.heatmap_expression, *self.export_buttons.values(), self.pick_button,
                       self.undo_button, self.effect_button):
            widget.disabled = not enabled

    def _guard(self, action) -> None:
        """Run an action; show a ReferDinoError as one line, anything else as one line plus a logged traceback."""
        try:
            action()
        except ReferDinoError as err:
            self._say(f"Error: {err}", error=True)
        except Exception as err:  # noqa: BLE001 - the UI must survive; the traceback goes to the log
            logger.exception("ReferDinoPanel: unexpected error")
            self._say(f"Unexpected error ({type(err).__name__}): {err}", error=True)

    def _say(self, text: str, error: bool = False) -> None:
        if error:
            self.messages.append_stderr(text + "\n")
            self.status.value = "error"
        else:
            self.messages.append_stdout(text + "\n")
