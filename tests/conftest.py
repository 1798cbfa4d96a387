"""Shared fixtures: the read-only reference data beside the repository, and a tiny random model."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the reference data folder {SHARED} is missing; it must sit beside the repository")
    return SHARED


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
