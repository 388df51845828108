"""Shared test fixtures: the offline data directory and the GPU skip rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline benchmark files (``../shared/data`` beside the checkout, or ``$MISS_DATA_DIR``)."""
    path = Path(os.environ.get("MISS_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"offline data directory {path} not found (set MISS_DATA_DIR)")
    return path


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
