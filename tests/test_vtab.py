"""experiments/vtab.py (Table 6) and analysis/vtab.py: ViT-B/16 parameter counts (MiSS = half of LoRA), the
VTAB-1K file-list reader, a small pipeline-check run of every method, seeds, and the table."""

from __future__ import annotations

import json

import pytest
import torch

from experiments import vtab
from experiments.common.classification import apply_method, parameter_counts
from experiments.common.records import load_records

SMALL = ["--profile", "cpu", "--set", "seeds=0", "--set", "epochs=6", "--set", "synthetic_train=160",
         "--set", "synthetic_test=120"]


def test_vit_b16_counts_miss_is_half_of_lora():
    from transformers import ViTConfig, ViTForImageClassification

    counts = {}
    for name in ("lora", "dora", "vera", "miss"):
        with torch.device("meta"):
            model = ViTForImageClassification(ViTConfig(num_labels=10))  # ViTConfig() is ViT-B/16 at 224
        base = sum(p.numel() for p in model.parameters())
        apply_method(model, vtab.METHOD_BY_NAME[name], vtab.TARGETS, vtab.HEAD_MODULES)
        counts[name] = parameter_counts(model, base)["adapter_params"]
    assert counts == {"lora": 294_912, "dora": 294_912 + 24 * 768, "vera": 24 * (768 + 256), "miss": 147_456}
    assert base == 85_806_346


@pytest.mark.parametrize("line, message", [
    ("images/a.png", r"test\.txt:2: expected '<image path> <integer label>'"),
    ("images/a.png 9", r"test\.txt:2: label 9 outside 0\.\.3"),
])
def test_file_list_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "test.txt"
    path.write_text(f"images/b.png 1\n{line}\n")
    with pytest.raises(vtab.VtabDataError, match=message):
        vtab.read_file_list(path, 4)


def test_missing_vtab_folder_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vtab-1k/eurosat/train800val200\.txt"):
        vtab.task_folder(vtab.TASK_BY_NAME["eurosat"], vtab.VtabConfig(), tmp_path, tmp_path)


def test_pipeline_check_runs_every_method(tmp_path, tmp_path_factory):
    from analysis.core import Results
    from analysis.vtab import build

    runs = tmp_path_factory.mktemp("runs")
    assert vtab.main([*SMALL, "--results-dir", str(tmp_path), "--runs-dir", str(runs)]) == 0
    recs = {r["config"]["method"]: r for r in load_records(tmp_path, "vtab")}
    assert set(recs) == {"full", "vera", "lora", "dora", "miss"}
    m = {k: r["metrics"] for k, r in recs.items()}
    assert m["miss"]["adapter_params"] * 2 == m["lora"]["adapter_params"] == m["lora"]["formula_adapter_params"]
    assert recs["full"]["trainable_params"] == m["full"]["base_params"]
    for method, r in recs.items():
        assert r["metrics"]["pipeline_check"] and r["metrics"]["n_test"] == 120
        assert r["metrics"]["accuracy"] > 40.0, (method, r["metrics"]["accuracy"])   # 4 balanced classes: chance 25
    section = build(Results(tmp_path))
    miss = next(row for row in section.tables[0].rows if row[0] == "MiSS")
    assert miss[1] == "cpu" and miss[2] == "—" and miss[3] == "92.14" and "not reproduced" in miss
    assert section.claims[0].verdict == "not tested" and "0.500" in section.claims[0].evidence


def test_seeds_differ_and_repeat(tmp_path):
    tiny = ["--profile", "cpu", "--set", "methods=lora", "--set", "epochs=1", "--set", "synthetic_train=64",
            "--set", "synthetic_test=32"]
    for name, seeds in (("a", "seeds=0,1"), ("b", "seeds=0")):
        vtab.main([*tiny, "--results-dir", str(tmp_path / name), "--runs-dir", str(tmp_path / name / "runs"),
                   "--set", seeds])
    load = lambda d, s: json.loads((tmp_path / d / "vtab" / "cpu" / f"synthetic-lora-s{s}.json").read_text())  # noqa: E731
    a0, a1, b0 = load("a", 0), load("a", 1), load("b", 0)
    assert a0["curves"]["train_loss"] == b0["curves"]["train_loss"] and a0["metrics"]["accuracy"] == b0["metrics"]["accuracy"]
    assert a0["curves"]["train_loss"] != a1["curves"]["train_loss"]
