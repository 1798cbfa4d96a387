"""Every option of the HTTP API, sent generated bad values: NaN, infinities, None, text, booleans, lists, objects,
values out of range, fractions for whole numbers, unknown choices. Each gives one error in the app's own words, naming
the option, the value and the allowed range (never Gradio's generic error, 'Something went wrong' or a traceback); the
model does not run, nothing is written, and the next request of the same session works. Raw HTTP sends what
`gradio_client` cannot (NaN, infinities); `gradio_client` sends the rest as API users do."""

import math
import re

import pytest

from benchmarks.load import RunCounter
from referdino_demo.ui.config import CONTROLS, DTYPES, AppConfig
from referdino_demo.ui.session import hide_paths

from . import raw_api
from .harness import app_fixture, segment

CONFIG = AppConfig(default_checkpoint="tiny-random", max_frames=16, max_duration_s=6.0, short_side=128)
GRADIO_WORDS = ("Something went wrong", "Traceback", "Value:", "is greater than maximum", "is less than minimum",
                "not in the list of choices", "verbose error reporting")


def bad_numbers(name: str, high: float) -> list:
    """Values control `name` (range up to `high`) must refuse."""
    control = CONTROLS[name]
    step = control.step
    values = [math.nan, math.inf, -math.inf, None, "", "abc", "nan", "1e999", True, False, [], [control.default], {},
              {"value": control.default}, 1e308, -1e308, high + step, high + 1000, control.low - step, "-1e9"]
    if control.low_open:
        values.append(control.low)
    if control.kind is int:
        values += [control.low + 0.5, str(control.low + 0.5)]
    return values


def assert_refused(event, data, name: str, value, range_words: tuple = ()):
    assert event == "error", (name, value, event, data)
    text = (data or {}).get("error") or ""
    assert f"({name})" in text and not any(word in text for word in GRADIO_WORDS), (value, text)
    shown = hide_paths(repr(value))  # a value that looks like a server path is cut to its name like any other
    assert shown[:40] in text, (shown, text)
    assert all(word in text for word in range_words), (range_words, text)


def range_words(name: str, high: float) -> tuple:
    return (f"{CONTROLS[name].low:g}", f"{high:g}")


app = app_fixture(CONFIG)


@pytest.fixture(scope="module")
def video(app, videos):
    return raw_api.upload(app.url, videos["small"])


@pytest.fixture(scope="module")
def runs(app):
    return RunCounter(app.registry.get("tiny-random"))


def result_folders(app, session):
    folder = app.workspace.folder(session)
    return sorted(folder.iterdir()) if folder.exists() else []


SEGMENT_NUMBERS = ["query_decay", "num_candidates", "threshold", "opacity", "stride", "max_frames", "short_side"]


@pytest.mark.parametrize("name", SEGMENT_NUMBERS)
def test_segment_refuses_every_bad_number_before_any_work(app, video, runs, name):
    session = f"segment-{name}"
    high = CONFIG.max_frames if name == "max_frames" else CONTROLS[name].high
    before = runs.total
    for value in bad_numbers(name, high):
        event, data = raw_api.call(app.url, "segment", raw_api.segment_data(video, **{name: value}), session)
        assert_refused(event, data, name, value, range_words(name, high))
    assert runs.total == before and result_folders(app, session) == []  # nothing ran, nothing written
    event, data = raw_api.call(app.url, "segment", raw_api.segment_data(video, **{name: str(CONTROLS[name].high
                                                                                              or 2)}), session)
    assert event == "complete"  # the next request works (numeric text is a number)


@pytest.mark.parametrize("name, choices, bad", [
    ("dtype", DTYPES, ["int8", "AUTO", "", None, 5, ["auto"], {"dtype": "auto"}, True]),
    ("checkpoint", None, ["/etc/passwd", "../../x.pth", "liangtm/other/x.pth", "tiny", "", None, 0, ["tiny-random"]]),
])
def test_segment_refuses_unknown_choices(app, video, runs, name, choices, bad):
    session = f"segment-{name}"
    before = runs.total
    for value in bad:
        event, data = raw_api.call(app.url, "segment", raw_api.segment_data(video, **{name: value}), session)
        assert_refused(event, data, name, value, ("must be one of", *(f"'{c}'" for c in choices or ["tiny-random"])))
    assert runs.total == before and result_folders(app, session) == []
    assert raw_api.call(app.url, "segment", raw_api.segment_data(video), session)[0] == "complete"


@pytest.mark.parametrize("value", [5, 0.5, True, ["the ball"], {"text": "the ball"}])
def test_segment_refuses_expressions_that_are_not_text(app, video, runs, value):
    event, data = raw_api.call(app.url, "segment", raw_api.segment_data(video, expressions=value), "expressions")
    assert event == "error" and "Expressions (expressions) must be text" in data["error"]
    assert repr(value) in data["error"]


@pytest.fixture(scope="module")
def result_session(app, video):
    """A session with a result: 2 frames, 5 candidates per expression."""
    event, _ = raw_api.call(app.url, "segment", raw_api.segment_data(video), "with-result")
    assert event == "complete"
    return "with-result"


VIEW = {"threshold": 0.5, "opacity": 0.5, "expression": None, "candidate": 0, "frame": 0}
VIEW_HIGH = {"threshold": None, "opacity": None, "candidate": 4, "frame": 1}  # None: the control's own


@pytest.mark.parametrize("api, inputs, name", [
    ("rerender", raw_api.RERENDER_INPUTS, "threshold"), ("rerender", raw_api.RERENDER_INPUTS, "opacity"),
    ("rerender", raw_api.RERENDER_INPUTS, "candidate"), ("rerender", raw_api.RERENDER_INPUTS, "frame"),
    ("inspect_frame", raw_api.INSPECT_INPUTS, "frame"), ("inspect_frame", raw_api.INSPECT_INPUTS, "threshold"),
    ("inspect_frame", raw_api.INSPECT_INPUTS, "opacity"),
])
def test_redrawing_refuses_every_bad_number_and_the_next_request_works(app, runs, result_session, api, inputs, name):
    high = VIEW_HIGH[name] if VIEW_HIGH[name] is not None else CONTROLS[name].high
    before, folders = runs.total, result_folders(app, result_session)
    values = bad_numbers(name, high)
    if name == "candidate":  # no value (None, or an empty box: "") keeps the expression's candidate
        values.remove(None)
        values.remove("")
    for value in values:
        event, data = raw_api.call(app.url, api, [{**VIEW, name: value}[n] for n in inputs], result_session)
        assert_refused(event, data, name, value, range_words(name, high))
        assert raw_api.call(app.url, api, [VIEW[n] for n in inputs], result_session)[0] == "complete"
    assert runs.total == before  # redrawing never runs the model
    assert len(result_folders(app, result_session)) == len(folders)  # still the one result


@pytest.mark.parametrize("api, inputs", [("rerender", raw_api.RERENDER_INPUTS),
                                         ("inspect_frame", raw_api.INSPECT_INPUTS)])
def test_redrawing_refuses_an_expression_the_result_does_not_have(app, result_session, api, inputs):
    for value in ["the box", "THE BALL", 0, True, ["the ball"], {"expression": "the ball"}]:
        event, data = raw_api.call(app.url, api, [{**VIEW, "expression": value}[n] for n in inputs], result_session)
        assert_refused(event, data, "expression", value, ("must be one of 'the ball'",))
    assert raw_api.call(app.url, api, [{**VIEW, "expression": "the ball"}[n] for n in inputs],
                        result_session)[0] == "complete"


# -- the same through gradio_client, as most API users call it ------------------------------------------------------
@pytest.mark.parametrize("name, value", [("threshold", "abc"), ("threshold", None), ("opacity", 2),
                                         ("query_decay", 0), ("query_decay", 1.5), ("num_candidates", 0),
                                         ("stride", 2.5), ("max_frames", 17), ("short_side", 4096),
                                         ("dtype", "int8"), ("checkpoint", "/etc/passwd")])
def test_gradio_client_gets_the_same_messages(client, videos, name, value):
    with pytest.raises(Exception) as error:
        segment(client, videos["small"], "the ball", **{name: value})
    text = str(error.value)
    assert re.search(rf"\({name}\) must be .*got {re.escape(hide_paths(repr(value)))}", text), text
    assert not any(word in text for word in GRADIO_WORDS)
    assert "**2 frames**" in segment(client, videos["small"], "the ball")["info"]  # the next request works


def test_gradio_client_redraw_messages(client, videos):
    segment(client, videos["small"], "the ball")
    for kwargs, expected in [(dict(candidate=9), r"Candidate query \(candidate\) must be a whole number from 0 to 4, "
                                                 r"got 9"),
                             (dict(frame=-1), r"Frame \(frame\) must be a whole number from 0 to 1, got -1"),
                             (dict(expression="nope"), r"Expression \(expression\) must be one of 'the ball', got "
                                                       r"'nope'")]:
        view = {"threshold": 0.5, "opacity": 0.5, "expression": "the ball", "candidate": 0, "frame": 0, **kwargs}
        with pytest.raises(Exception, match=expected):
            client.predict(**view, api_name="/rerender")
        client.predict(threshold=0.5, opacity=0.5, expression="the ball", candidate=0, frame=0, api_name="/rerender")
