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


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Tokenised data and other caches of the code under test go to the session's temporary folder, not
    to the repository's runs/_cache (subprocesses inherit it)."""
    import os

    from experiments.common.sft_data_cache import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.getbasetemp() / "miss_cache")
    yield
    if before is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = before
