"""Untrusted files: checkpoints (pickles) through the Python API, the CLI and the app; the app's file routes; uploads.

A malicious pickle must not run (each check first proves that unpickling this file does run its payload); a known
sha256 is checked before a file is read; Gradio 6's file routes serve the app's outputs and nothing else (absolute
paths, `..` segments, URL-encoded and double-encoded variants, a file of the repository, a loopback URL); uploads over
the limit are refused by the server and leave nothing behind.
"""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
import torch

from . import raw_api
from .corpus import CHECKPOINT_CASES, SHORT_SIDE
from .harness import App, leftover_files, segment
from referdino_demo.cli import main
from referdino_demo.errors import CheckpointMismatchError
from referdino_demo.predictor import ReferDinoPredictor
from referdino_demo.ui.config import AppConfig
from referdino_demo.ui.session import PredictorRegistry

REPO = Path(__file__).resolve().parents[2]
CASES = {c.name: c for c in CHECKPOINT_CASES}


def assert_payload_can_run_but_did_not(checkpoints):
    """The malicious file really carries a payload (plain unpickling runs it), and nothing has run it so far."""
    marker = checkpoints["marker"]
    assert not marker.exists(), "the malicious checkpoint's payload ran"
    torch.load(checkpoints["malicious"], weights_only=False)  # what an unsafe loader would do
    assert marker.exists()
    marker.unlink()


# -- Python API -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=[c.name for c in CHECKPOINT_CASES])
def test_bad_checkpoint_raises_its_documented_error(checkpoints, case, videos):
    with pytest.raises(case.error, match=case.message) as error:
        ReferDinoPredictor.from_pretrained(checkpoints[case.name])
    assert "\n" not in str(error.value)
    assert not checkpoints["marker"].exists()
    predictor = ReferDinoPredictor.from_pretrained("tiny-random")  # the next load works
    assert predictor.segment(videos["small"], "the ball", short_side=SHORT_SIDE).num_frames == 2


def test_the_malicious_pickle_is_refused_without_running(checkpoints):
    with pytest.raises(CheckpointMismatchError, match="refused on purpose"):
        ReferDinoPredictor.from_pretrained(checkpoints["malicious"])
    assert_payload_can_run_but_did_not(checkpoints)


def test_a_given_sha256_is_checked_before_the_file_is_read(checkpoints, monkeypatch):
    from referdino_demo.checkpoints import loading
    from referdino_demo.checkpoints.loading import load_model, sha256_of

    path = checkpoints["other_model"]
    monkeypatch.setattr(loading, "download_checkpoint", lambda filename, repo: path)  # "downloaded" from the Hub
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a) or real_load(*a, **k))
    with pytest.raises(CheckpointMismatchError, match=f"has sha256 {sha256_of(path)}, expected {'ab' * 32}"):
        load_model("ryt_swinb.pth", sha256="ab" * 32)
    assert reads == []  # refused before torch.load saw it
    with pytest.raises(CheckpointMismatchError, match="no state dict of tensors|not a ReferDINO"):  # checksum passed
        load_model("ryt_swinb.pth", sha256=sha256_of(path))
    assert len(reads) == 1


# -- CLI --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=[c.name for c in CHECKPOINT_CASES])
def test_cli_bad_checkpoint_exits_1_with_one_line(checkpoints, videos, tmp_path, capsys, case):
    out = tmp_path / "out"
    code = main(["segment", str(videos["small"]), "-e", "the ball", "--out", str(out), "--checkpoint",
                 str(checkpoints[case.name]), "--short-side", str(SHORT_SIDE)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("referdino: error: ")
    assert re.search(case.message, lines[0])
    assert not out.exists() and not checkpoints["marker"].exists()


def test_cli_process_refuses_the_malicious_pickle_with_one_line(checkpoints, videos, tmp_path):
    done = subprocess.run([sys.executable, "-m", "referdino_demo", "segment", str(videos["small"]), "-e", "a dog",
                           "--out", str(tmp_path / "out"), "--checkpoint", str(checkpoints["malicious"])],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and done.stdout == ""
    assert len(lines) == 1 and re.match(r"referdino: error: .*malicious\.pth needs Python objects that could run "
                                        r"code .*refused on purpose",
                                        lines[0])
    assert_payload_can_run_but_did_not(checkpoints)


# -- the app ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app(gradio_dir, checkpoints):
    names = tuple(str(checkpoints[c.name]) for c in CHECKPOINT_CASES)
    config = AppConfig(default_checkpoint="tiny-random", extra_checkpoints=names, max_frames=16, max_duration_s=6.0,
                       max_upload_mb=2.0, short_side=SHORT_SIDE)
    app = App(config, PredictorRegistry(), gradio_dir)
    yield app
    app.close()


def menu_value(app, path) -> str:
    """The checkpoint menu's value of a local file: its name (the page shows no server path)."""
    value = app.config.checkpoint_choice(str(path))
    assert value == f"local:{Path(path).name}"
    return value


@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=[c.name for c in CHECKPOINT_CASES])
def test_app_bad_checkpoint_gives_its_message_and_the_next_request_works(app, client, checkpoints, videos, case):
    with pytest.raises(Exception, match=case.message) as error:
        segment(client, videos["small"], "the ball", checkpoint=menu_value(app, checkpoints[case.name]))
    assert "tiny-random" in str(error.value) and "Something went wrong" not in str(error.value)
    assert str(checkpoints["marker"].parent) not in str(error.value)  # the file's name, not where it is
    assert not re.search(r"(^|[\s'\"(=])/\w[^\s/]*/", str(error.value))  # no absolute path at all
    assert not checkpoints["marker"].exists()
    out = segment(client, videos["small"], "the ball", checkpoint="tiny-random")
    assert "**2 frames**" in out["info"]
    assert app.registry.loaded() == ["tiny-random"]  # nothing half-loaded was kept


def test_app_refused_the_malicious_pickle_without_running_it(app, client, checkpoints, videos):
    with pytest.raises(Exception, match="refused on purpose"):
        segment(client, videos["small"], "the ball", checkpoint=menu_value(app, checkpoints["malicious"]))
    assert_payload_can_run_but_did_not(checkpoints)


def test_app_loads_only_the_checkpoints_of_its_menu(app, client, checkpoints, videos):
    """A client cannot name a server path (or any Hub file) as the checkpoint: only the menu's values are loaded."""
    for name in (str(checkpoints["malicious"]), "/etc/passwd", "../../app.py", "someone/else/model.pth"):
        with pytest.raises(Exception, match=r"Checkpoint \(checkpoint\) must be one of .*'tiny-random'"):
            segment(client, videos["small"], "the ball", checkpoint=name)
    assert_payload_can_run_but_did_not(checkpoints)
    assert app.registry.loaded() in ([], ["tiny-random"])


def raw_get(url: str, raw_path: str) -> int:
    """Status of GET `raw_path`, sent byte for byte (an HTTP library would normalise `..` and `%2e` first)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(f"GET {raw_path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        status = connection.recv(64).split(b"\r\n", 1)[0]
    return int(status.split()[1])


@pytest.fixture(scope="module")
def served(app, client, videos) -> Path:
    """A file the app really serves: the overlay of a result, in the session's folder in Gradio's upload folder."""
    segment(client, videos["small"], "the ball")
    overlays = sorted(app.workspace.root.rglob("overlay.mp4"))
    assert overlays
    return overlays[-1]


def test_file_route_serves_outputs(app, served):
    assert raw_get(app.url, f"/gradio_api/file={served}") == 200
    assert raw_get(app.url, f"/gradio_api/file={quote(str(served))}") == 200
    assert httpx.get(f"{app.url}gradio_api/file={served}").content == served.read_bytes()


def test_file_route_serves_nothing_else(app, served, gradio_dir):
    outside = [
        "/etc/passwd",
        "../../../../../../etc/passwd",
        f"{gradio_dir}/../../../../../../etc/passwd",  # starts inside the upload folder, then climbs out
        f"{served.parent}/../../../../../../../../etc/passwd",
        str(REPO / "app.py"),  # exists, in the working directory, but is not an output
        "app.py",
        "pyproject.toml",
        str(REPO / "referdino_demo" / "ui" / "session.py"),
        "/proc/self/environ",
        f"{served}/../../../../../../../../../etc/passwd",
    ]
    variants = []
    for path in outside:
        variants += [path, quote(path, safe=""), quote(path, safe="").replace("%2E", "%2e"),
                     quote(quote(path, safe=""), safe=""), path.replace("../", "..%2F").replace("/..", "%2F..")]
    variants += ["%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "..%252f..%252f..%252fetc%252fpasswd",
                 "....//....//....//etc/passwd", "/etc/passwd%00.mp4", "file:///etc/passwd"]
    for prefix in ("/gradio_api/file=", "/gradio_api/file/"):
        for variant in variants:
            status = raw_get(app.url, prefix + variant)
            assert status in (400, 403, 404), (prefix + variant, status)
    loopback = quote(f"{app.url}gradio_api/file={served}", safe="")  # the server fetching from itself (SSRF)
    assert raw_get(app.url, f"/gradio_api/file={loopback}") != 200


def test_inputs_must_be_uploads_not_server_paths(app, videos):
    for path in ("/etc/passwd", str(REPO / "examples" / "red_ball.mp4")):
        video = {"path": path, "meta": {"_type": "gradio.FileData"}}
        assert raw_api.call(app.url, "segment", raw_api.segment_data(video))[0] == "error"
    assert raw_api.call(app.url, "segment", raw_api.segment_data(raw_api.upload(app.url, videos["small"])))[0] == \
        "complete"  # the same request with an upload works


def test_file_urls_do_not_reveal_the_session_id(app, client, served):
    assert app.workspace.served and client.session_hash not in str(served)
    assert served.is_relative_to(app.workspace.folder(client.session_hash))


def test_uploads_over_the_limit_are_refused_and_leave_nothing(app, gradio_dir, tmp_path, client, videos):
    before = set(leftover_files(gradio_dir))
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(3 * 2**20))  # 3 MB > 2 MB
    with open(big, "rb") as file:
        response = httpx.post(f"{app.url}gradio_api/upload", files={"files": ("big.mp4", file, "video/mp4")})
    assert response.status_code == 413
    time.sleep(0.2)
    assert set(leftover_files(gradio_dir)) == before
    assert "**2 frames**" in segment(client, videos["small"], "the ball")["info"]  # the next request works


def test_app_entry_point_passes_the_limits_to_gradio(monkeypatch):
    """`python app.py` wiring: upload limit, queue size, the model event's concurrency and the memory budget."""
    import importlib.util

    import gradio as gr

    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(launch=kw, demo=self))
    monkeypatch.setenv("REFERDINO_MAX_UPLOAD_MB", "5")
    monkeypatch.setenv("REFERDINO_MEMORY_BUDGET_MB", "1234")
    spec = importlib.util.spec_from_file_location("referdino_app", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--random-weights", "--concurrency", "3", "--queue-size", "7", "--max-pixels", "1000000"])
    assert seen["launch"]["max_file_size"] == 5 * 2**20
    demo = seen["demo"]
    segment_fn = next(fn for fn in demo.fns.values() if fn.api_name == "segment")
    assert segment_fn.concurrency_limit == 3 and demo._queue.max_size == 7
    backend = segment_fn.fn.__self__.backend
    assert backend.config.memory_budget_mb == 1234 and backend.config.max_pixels == 1_000_000
    assert backend.workspace.served and backend._slots._value == 3
    demo.close()
