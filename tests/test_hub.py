"""Getting files from the Hub: the cache first, and offline an answer within seconds that says what to do."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from referdino_demo import hub
from referdino_demo.errors import CheckpointNotFoundError


@pytest.fixture
def downloads(monkeypatch):
    """`hf_hub_download` calls, answered from an empty cache (and never reaching a network)."""
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, local_files_only=False):
        calls.append(local_files_only)
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    return calls


def _unreachable(*args, **kwargs):
    raise OSError("Network is unreachable")


def _never_answers(*args, **kwargs):
    time.sleep(30)
    raise TimeoutError("timed out")  # what a connect to a host that never answers raises in the end


def test_offline_the_checkpoint_is_refused_at_once_with_what_to_do(downloads, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _unreachable)
    started = time.perf_counter()
    with pytest.raises(CheckpointNotFoundError) as error:
        hub.download_checkpoint("ryt_swinb.pth")
    assert time.perf_counter() - started < 3
    assert downloads == [True]  # the cache was asked; the network was not tried
    message = str(error.value)
    assert "cannot be reached" in message and hub.hub_url(hub.HUB_REPO, "ryt_swinb.pth") in message
    assert "--random-weights" in message and hub.TINY_RANDOM in message and "REFERDINO_SMOKE=1" in message


def test_a_hub_that_never_answers_is_given_up_after_the_probe_timeout(downloads, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _never_answers)
    started = time.perf_counter()
    with pytest.raises(CheckpointNotFoundError, match="did not answer within"):
        hub.download_checkpoint("ryt_swinb.pth")
    assert time.perf_counter() - started < hub.PROBE_TIMEOUT_S + 5  # not the 30 s the connection would take


def test_hf_hub_offline_skips_the_probe(downloads, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed although offline"))
    with pytest.raises(CheckpointNotFoundError, match="HF_HUB_OFFLINE"):
        hub.download_checkpoint()


def test_a_reachable_hub_is_asked_for_the_file(downloads, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: socket.socket())
    with pytest.raises(CheckpointNotFoundError, match="LocalEntryNotFoundError"):
        hub.download_checkpoint("ryt_swinb.pth")
    assert downloads == [True, False]


def test_a_cached_file_needs_no_network(monkeypatch, tmp_path):
    import huggingface_hub

    cached = tmp_path / "ryt_swinb.pth"
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename, local_files_only: str(cached)
                        if local_files_only else pytest.fail("went to the network"))
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed for a cached file"))
    assert hub.download_checkpoint("ryt_swinb.pth") == cached


def test_the_cli_offline_answers_in_one_line_within_seconds(tmp_path):
    """The real command in a fresh process, with an empty Hugging Face cache and an endpoint that cannot resolve."""
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "https://hub.invalid",
           "PYTHONPATH": str(Path(hub.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "referdino_demo", "download"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()  # no "Retrying in 8s" lines: the Hub was not asked five times
    assert len(lines) == 1 and "cannot be reached" in lines[0] and "--random-weights" in lines[0]
