"""The GPU smoke script (scripts/gpu_smoke.py) is checked here on CPU, so it works the day a GPU runs it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts" / "gpu_smoke.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_smoke"] = module
    spec.loader.exec_module(module)
    return module


def test_smoke_parts_run_on_cpu_and_missing_packages_are_skipped_not_failed(tmp_path, monkeypatch):
    smoke = _smoke()
    assert smoke.main(["--device", "cpu", "--quick", "--parts", "1,4,5", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    parts = {p["part"].split()[0]: p for p in summary["parts"]}
    assert [parts[k]["status"] for k in ("1", "4", "5")] == ["passed"] * 3
    ours = parts["4"]["details"]
    assert set(ours) == {"miss", "lora"} and all(v["loss_last"] < v["loss_first"] for v in ours.values())
    assert all(max(v["max_abs_logit_diff"].values()) < 1e-4 for v in ours.values())   # PEFT reload and merge

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    assert smoke.main(["--device", "cpu", "--quick", "--parts", "7", "--out", str(tmp_path)]) == 0
    (part,) = json.loads((tmp_path / "summary.json").read_text())["parts"]
    assert part["status"] == "skipped" and "vllm" in part["message"]


def test_asking_for_cuda_without_one_fails_clearly(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    smoke = _smoke()
    assert smoke.main(["--device", "cuda", "--parts", "1", "--out", str(tmp_path)]) == 1
    (part,) = json.loads((tmp_path / "summary.json").read_text())["parts"]
    assert part["status"] == "failed" and "torch.cuda.is_available() is False" in part["message"]


@pytest.mark.gpu
def test_the_whole_smoke_check_passes_on_this_gpu(tmp_path):
    assert _smoke().main(["--device", "cuda", "--out", str(tmp_path)]) == 0
