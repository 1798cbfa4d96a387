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
