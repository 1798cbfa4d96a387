"""What comes from the Hugging Face Hub (through huggingface_hub's cache): the checkpoints and the tokenizer.

The official release lives in the model repository `liangtm/referdino`, one `.pth` file per variant.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from .errors import CheckpointNotFoundError, one_line

T = TypeVar("T")

HUB_REPO = "liangtm/referdino"
DEFAULT_CHECKPOINT = "ryt_mevis_swinb.pth"
TINY_RANDOM = "tiny-random"
CHECKPOINT_ENV = "REFERDINO_CHECKPOINT"  # the default checkpoint of the app and the CLI, when set
PROBE_TIMEOUT_S = 2.0  # offline, every entry point answers within about this long
TRY_UNTRAINED = (f"To try everything without the weights, use the untrained model: the app's --random-weights, the "
                 f"CLI's --checkpoint {TINY_RANDOM}, ReferDinoPredictor.from_pretrained('{TINY_RANDOM}'), or "
                 "REFERDINO_SMOKE=1 for the notebooks (its masks are random).")


def default_checkpoint() -> str:
    """$REFERDINO_CHECKPOINT, else the released demo checkpoint on the Hub."""
    return os.environ.get(CHECKPOINT_ENV, f"{HUB_REPO}/{DEFAULT_CHECKPOINT}")


@dataclass(frozen=True)
class ReleasedCheckpoint:
    filename: str
    backbone: str  # "swin_t" or "swin_b"
    trained_on: str
    temporal_layers: int = 3


RELEASED = {c.filename: c for c in [
    ReleasedCheckpoint("ryt_mevis_swinb.pth", "swin_b", "RefCOCO, Ref-YouTube-VOS, MeViS (the demo checkpoint)"),
    ReleasedCheckpoint("ryt_swinb.pth", "swin_b", "RefCOCO, Ref-YouTube-VOS"),
    ReleasedCheckpoint("mevis_swinb.pth", "swin_b", "MeViS"),
    ReleasedCheckpoint("coco_swinb.pth", "swin_b", "RefCOCO/+/g (image pretraining; temporal decoder untrained)"),
    ReleasedCheckpoint("a2d_swinb.pth", "swin_b", "RefCOCO, A2D-Sentences", temporal_layers=1),
    ReleasedCheckpoint("coco_swint.pth", "swin_t", "RefCOCO/+/g (image pretraining; temporal decoder untrained)"),
]}


def hub_url(repo: str, filename: str) -> str:
    return f"https://huggingface.co/{repo}/resolve/main/{filename}"


def download_checkpoint(filename: str = DEFAULT_CHECKPOINT, repo: str = HUB_REPO) -> Path:
    """The local path of `filename` from `repo`, downloading it into the Hugging Face cache on first use."""
    from huggingface_hub import hf_hub_download

    def fetch(cached_only: bool) -> Path:
        return Path(hf_hub_download(repo_id=repo, filename=filename, local_files_only=cached_only))

    advice = (f"Download {hub_url(repo, filename)} and pass its path (e.g. --checkpoint /path/to/{filename}); files "
              f"already downloaded are reused from the Hugging Face cache (HF_HOME). {TRY_UNTRAINED}")
    return _cached_or_fetched(fetch, f"{filename} from the Hugging Face repository {repo}", advice)


def _cached_or_fetched(fetch: Callable[[bool], T], what: str, advice: str) -> T:
    """`fetch(True)` (the cache only), else `fetch(False)` (the network) when the Hub answers at all.

    huggingface_hub retries an unreachable Hub for about 25 s before it gives up; offline, the user is told at once
    instead, with `advice` (what to download, how to try the untrained model)."""
    try:
        return fetch(True)
    except Exception:  # not in the cache (or the cache is unreadable): the network decides
        pass
    reachable, why = hub_reachable()
    if not reachable:
        raise CheckpointNotFoundError(f"could not get {what}: it is not in the cache and {why}. {advice}")
    try:
        return fetch(False)
    except Exception as err:  # unknown file, no permission, connection lost: the same advice applies
        raise CheckpointNotFoundError(f"could not get {what} ({type(err).__name__}: {one_line(err, 300)}). "
                                      f"{advice}") from err


def hub_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(True, "") when a connection to the Hub's host opens within `timeout_s`, else (False, why).

    HF_HUB_OFFLINE=1 answers no at once; behind a proxy (HTTPS_PROXY) the Hub is not probed, the proxy decides. The
    name lookup runs in a thread because `getaddrinfo` has no timeout of its own."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False, "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True, ""
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    outcome: list[str] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append("")
        except OSError as err:
            outcome.append(f"{host} cannot be reached ({type(err).__name__}: {one_line(err, 120)})")

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout_s)
    why = outcome[0] if outcome else f"{host} did not answer within {timeout_s:g} s"
    return not why, why


def split_hub_name(name: str) -> tuple[str, str] | None:
    """'liangtm/referdino' or 'liangtm/referdino/ryt_swinb.pth' or 'ryt_swinb.pth' -> (repo, filename)."""
    if name in RELEASED:
        return HUB_REPO, name
    parts = name.split("/")
    if len(parts) == 2 and not Path(name).exists():
        return name, DEFAULT_CHECKPOINT
    if len(parts) == 3 and parts[2].endswith((".pth", ".safetensors")) and not Path(name).exists():
        return "/".join(parts[:2]), parts[2]
    return None


def load_hub_tokenizer(repo: str):
    """bert-base-uncased's tokenizer from the Hub cache (downloaded on first use)."""
    from transformers import BertTokenizer

    advice = (f"Connect to the internet once, or download {hub_url(repo, 'vocab.txt')} and pass it as vocab=PATH "
              f"(CLI: --vocab PATH). {TRY_UNTRAINED}")
    return _cached_or_fetched(lambda cached_only: BertTokenizer.from_pretrained(repo, local_files_only=cached_only),
                              f"the {repo} tokenizer", advice)
