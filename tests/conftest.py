"""Shared test fixtures: the repository's data directory and the GPU skip rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The repository's benchmark files (``data/``, checked against its manifest by the loaders)."""
    from eval.data_files import REPO_DATA_DIR

    return REPO_DATA_DIR


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
