"""Shared fixtures: the read-only reference data beside the repository, and a tiny random model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("REFERDINO_SHARED") or REPO.parent / "shared")


def require_reference(path: Path = SHARED) -> Path:
    """`path` in the reference data: outputs of the official ReferDINO code on random weights (`parity/`), DAVIS
    J&F values (`jf/`) and the official key manifests. They live beside the repository (`../shared`) in the
    project's workspace, not in git. Without them these tests are skipped, saying so; under CI=true, where they must
    be, their absence fails."""
    if path.exists():
        return path
    reason = (f"reference data missing: {path} (official-code outputs kept in the project's workspace, not in git: "
              f"put that folder at {REPO.parent / 'shared'} or set REFERDINO_SHARED to it)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_reference()


@pytest.fixture(scope="session")
def parity_dir(shared_dir) -> Path:
    return shared_dir / "parity"


@pytest.fixture(scope="session")
def vocab(parity_dir) -> Path:
    return parity_dir / "vocab.txt"


@pytest.fixture(scope="session")
def tiny_model():
    from referdino_demo.checkpoints.loading import tiny_random_model

    return tiny_random_model()


@pytest.fixture
def model_calls(predictor):
    """Names of the model's parts that ran while the test held this list (the module's `predictor`)."""
    calls = []
    handles = [module.register_forward_pre_hook(lambda m, a, _n=name: calls.append(_n))
               for name, module in predictor.model.named_children()]
    yield calls
    for handle in handles:
        handle.remove()


@pytest.fixture(scope="module")
def official_state(parity_dir):
    """The parity fixture's checkpoint in the official release format (a state dict of tensors)."""
    import torch

    return torch.load(parity_dir / "referdino_tiny_official.pth", map_location="cpu", weights_only=True)[
        "model_state_dict"]


@pytest.fixture(scope="module")
def fixture_model(parity_dir):
    """The model of the parity fixture's official hyper-parameters, with its weights."""
    from referdino_demo.parity import build_model

    return build_model(parity_dir)[0]
