"""The layer benchmark (``python -m adapters.bench``) runs, in float32 and bfloat16, and writes its record."""

from __future__ import annotations

import pytest

from adapters import bench
from experiments.common.records import load_records


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_layer_bench_writes_ratios_for_every_size(tmp_path, capsys, dtype):
    argv = ["--sizes", "64x96", "--tokens", "16", "--r", "8", "--repeats", "2", "--warmup", "1", "--init-repeats", "1",
            "--min-sample-ms", "1", "--dtype", dtype, "--results-dir", str(tmp_path), "--run", "t"]
    assert bench.main(argv) == 0
    (rec,) = load_records(tmp_path, "adapter_bench")
    assert rec["profile"] == "cpu" and rec["config"]["dtype"] == dtype
    (size,) = rec["metrics"]["per_size"]
    assert (size["in"], size["out"], size["r_lora"]) == (64, 96, 5)       # round(8 * 96 / 160) = 5 (LoRA = MiSS params)
    assert size["train_step"]["miss (ours)"]["trainable_params"] == 8 * 96
    assert size["ratios"]["ours_over_peft_miss"] > 0 and size["ratios"]["pissa_init_over_miss_init"] > 0
    assert f"{dtype}, cpu" in capsys.readouterr().out
