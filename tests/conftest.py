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
