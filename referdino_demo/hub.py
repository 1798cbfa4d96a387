"""What comes from the Hugging Face Hub (through huggingface_hub's cache): the checkpoints and the tokenizer.

The official release lives in the model repository `liangtm/referdino`, one `.pth` file per variant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointNotFoundError

HUB_REPO = "liangtm/referdino"
DEFAULT_CHECKPOINT = "ryt_mevis_swinb.pth"
TINY_RANDOM = "tiny-random"
CHECKPOINT_ENV = "REFERDINO_CHECKPOINT"  # the default checkpoint of the app and the CLI, when set


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

    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except Exception as err:  # offline, not cached, unknown file, no permission: the same advice applies
        raise CheckpointNotFoundError(
            f"could not get {filename} from the Hugging Face repository {repo} ({type(err).__name__}: {err}). "
            f"Download it from {hub_url(repo, filename)} and pass its path (e.g. --checkpoint "
            f"/path/to/{filename}), or connect to the internet and retry; files already downloaded are reused "
            "from the Hugging Face cache (HF_HOME)") from err


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

    try:
        return BertTokenizer.from_pretrained(repo)
    except Exception as err:
        raise CheckpointNotFoundError(
            f"could not load the {repo} tokenizer from the Hugging Face Hub or its cache ({type(err).__name__}). "
            f"Connect to the internet once, or download {hub_url(repo, 'vocab.txt')} and pass it as "
            "vocab=PATH (CLI: --vocab PATH)") from err
