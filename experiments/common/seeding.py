"""Seeding that makes a CPU run bit-for-bit repeatable (same machine, same thread count)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels.

    Returns a CPU ``torch.Generator`` seeded the same way, for code that wants its own stream
    (data sampling) independent of how many random numbers the model init drew.
    On CUDA, bit-for-bit repeatability also needs ``CUBLAS_WORKSPACE_CONFIG`` set before the first
    cuBLAS call; it is set here if absent. Float reductions still depend on the thread count, so a
    CPU run repeats exactly only with the same ``torch.get_num_threads()``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen
