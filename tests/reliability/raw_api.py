"""A raw HTTP client of the app's API, as `curl` or any script would use it: uploads, `/gradio_api/call/<api>` requests
with any JSON values (NaN and infinities included, which `gradio_client` refuses to send), the event stream read to its
end, and requests whose client hangs up mid-job."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

SEGMENT_INPUTS = ("video", "expressions", "checkpoint", "query_decay", "num_candidates", "threshold", "opacity",
                  "stride", "max_frames", "short_side", "dtype")
RERENDER_INPUTS = ("threshold", "opacity", "expression", "candidate", "frame")
INSPECT_INPUTS = ("frame", "threshold", "opacity", "expression")


def upload(url: str, path: Path, name: str | None = None) -> dict:
    """Upload `path` (as `name`); the file data an API call sends for it."""
    with open(path, "rb") as file:
        response = httpx.post(f"{url}gradio_api/upload", files={"files": (name or path.name, file, "video/mp4")})
    response.raise_for_status()
    return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}


def segment_data(video, expressions="the ball", **changes) -> list:
    """The inputs of /segment in order: the app's defaults for the tiny model, with `changes`."""
    values = dict(video=video, expressions=expressions, checkpoint="tiny-random", query_decay=0.5, num_candidates=5,
                  threshold=0.5, opacity=0.5, stride=1, max_frames=16, short_side=128, dtype="auto")
    return [{**values, **changes}[name] for name in SEGMENT_INPUTS]


def start(url: str, api: str, data: list, session: str | None = None) -> str:
    """POST /gradio_api/call/<api>; the event id. `session`: the session hash (state is kept per session)."""
    body = {"data": data, **({"session_hash": session} if session else {})}
    response = httpx.post(f"{url}gradio_api/call/{api}", content=json.dumps(body),  # allows NaN and Infinity
                          headers={"Content-Type": "application/json"}, timeout=30)
    response.raise_for_status()
    return response.json()["event_id"]


def result(url: str, api: str, event_id: str, timeout: float = 120) -> tuple[str, object]:
    """The final (event, data) of the event stream: ("complete", outputs) or ("error", message or None)."""
    event = data = None
    with httpx.stream("GET", f"{url}gradio_api/call/{api}/{event_id}", timeout=timeout) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event in ("complete", "error"):
                data = json.loads(line.removeprefix("data: "))
                break
    return event, data


def call(url: str, api: str, data: list, session: str | None = None) -> tuple[str, object]:
    return result(url, api, start(url, api, data, session))


def queue_join(url: str, fn_index: int, data: list, session: str, trigger_id: int | None = None) -> str:
    """POST /gradio_api/queue/join, as the page does (any event, private ones too); the event id. Its messages come
    on `queue_messages(url, session)`."""
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": trigger_id}
    response = httpx.post(f"{url}gradio_api/queue/join", content=json.dumps(body),
                          headers={"Content-Type": "application/json"}, timeout=30)
    response.raise_for_status()
    return response.json()["event_id"]


def queue_result(url: str, session: str, timeout: float = 120) -> dict:
    """The `process_completed` message of the session's event stream (/gradio_api/queue/data)."""
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session},
                      timeout=timeout) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                message = json.loads(line.removeprefix("data: "))
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the event stream ended without a result")


def fn_index(demo, name: str) -> int:
    """The index of the event whose handler is `name` (how the page calls an event)."""
    return next(index for index, fn in demo.fns.items() if fn.name == name)
