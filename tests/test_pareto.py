"""The PEFT Pareto benchmark (Table 8, Fig. 4): the front, the benchmark's answer rule, a short run of three
methods through PEFT into complete records (then resumed), and a method PEFT rejects recorded as failed
while the others go on."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from analysis.pareto import pareto_front, side_by_side_ratio
from eval import gsm8k_peft
from experiments.common.records import load_records

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs" / "pareto"
SHORT = ["--set", "max_steps=3", "--set", "eval_steps=3", "--set", "test_size=2", "--set", "max_new_tokens=4",
         "--set", "batch_size_eval=2", "--set", "side_by_side_steps=0"]


def test_pareto_front_on_fixed_points():
    # (cost, accuracy): lower cost and higher accuracy are better
    points = [(1.0, 0.2), (2.0, 0.5), (2.0, 0.4), (3.0, 0.5), (4.0, 0.9), (0.5, 0.1), (5.0, 0.8), (None, 1.0),
              (2.0, 0.5)]
    # (2,0.4) loses to (2,0.5); (3,0.5) to (2,0.5); (5,0.8) to (4,0.9); the second (2,0.5) is a duplicate;
    # a point without a cost never counts
    assert pareto_front(points) == [5, 0, 1, 4]
    assert pareto_front([(1.0, 0.0), (2.0, 0.0), (0.5, 0.0)]) == [2]     # tied accuracy: the cheapest only
    assert pareto_front([]) == []


def test_side_by_side_ratio_is_the_exact_paired_interval_of_step_ratios():
    def side(miss, lora):
        return {"metrics": {"device": "cpu"}, "curves": {"step_cpu_time_s/miss": miss, "step_cpu_time_s/lora": lora}}

    iv, clock = side_by_side_ratio(side([0.9, 1.8, 0.45, 0.9, 0.09, 2.7], [1.0, 2.0, 0.5, 1.0, 0.1, 3.0]))
    assert clock == "CPU time" and iv.log_ratio and iv.n == 6     # every pair is 0.9: a point interval
    assert iv.lo == pytest.approx(iv.hi) == pytest.approx(iv.estimate) and iv.text().count("0.9×") == 3
    iv, _ = side_by_side_ratio(side([1.0, 1.2, 0.8, 1.1, 0.9, 1.05], [1.0] * 6))
    assert iv.lo < 0 < iv.hi                                       # log ratios straddle 0: no advantage
    assert side_by_side_ratio(None) is None


def test_peft_benchmark_answer_rule():
    assert gsm8k_peft.extract("so 3 + 4 = 7.\nThe answer is: 7") == "7"
    assert gsm8k_peft.is_correct("blah The answer is: 18.", "18")
    assert gsm8k_peft.is_correct("#### 1/2", "0.5")
    assert gsm8k_peft.is_correct("The answer is $72!", "72")
    assert not gsm8k_peft.is_correct("The answer is: 71", "72")
    assert not gsm8k_peft.is_correct("72", "72")                         # no delimiter: nothing extracted
    assert gsm8k_peft.is_correct("Natalia sold 48 clips.\n#### 72", "Natalia ... #### 72")
    assert gsm8k_peft.render_prompt("Q?") == "Question: Q? Think step by step.\nAnswer:"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pareto_runs")      # shared: the tiny model is built once


def _run(args, results, runs_dir, data_dir):
    from experiments import pareto

    return pareto.main(["--profile", "cpu", "--results-dir", str(results), "--runs-dir", str(runs_dir),
                        "--data-dir", str(data_dir), *SHORT, *args])


def test_three_methods_write_complete_records_and_resume(tmp_path, runs_dir, data_dir):
    results = tmp_path / "results"
    assert _run(["--method", "miss,lora,prompt_tuning"], results, runs_dir, data_dir) == 0
    recs = {r["run"]: r for r in load_records(results, "pareto")}
    assert set(recs) == {"miss", "lora", "prompt_tuning"}
    for name, rec in recs.items():
        assert rec["status"] == "success", rec.get("error")
        m = rec["metrics"]
        assert 0 < m["train_time_s"] < m["total_time_s"]
        assert m["test_n"] == 2 and 0.0 <= m["test_accuracy"] <= 1.0
        assert math.isfinite(m["train_loss"]) and len(rec["curves"]["loss"]) == 3
        mem = m["memory"]
        assert mem["kind"] == "cpu_rss" and mem["max_bytes"] > 0
        assert mem["max_bytes"] >= mem["p99_bytes"] >= 0 and mem["avg_bytes"] is not None
        assert rec["trainable_params"] == m["trainable_params"] > 0
        assert m["accuracy_is_pipeline_check"] is True
        peak = m["cpu_step_tensor_peak"]
        assert peak["peak_bytes"] == peak["resident_bytes"] + peak["transient_bytes"] and peak["transient_bytes"] > 0
        samples = [json.loads(line) for line in Path(m["samples_file"]).read_text().splitlines()]
        assert len(samples) == 2 and all("output" in s and "correct" in s for s in samples)
    # PEFT's counts on the tiny Llama (2 layers; q 128->128, v 128->64): MiSS r64 = 64 x d_out per layer,
    # LoRA r32 = 32 x (d_in + d_out), prompt tuning = 20 virtual tokens (cpu override) x hidden 128
    assert recs["miss"]["trainable_params"] == 2 * 64 * (128 + 64)
    assert recs["lora"]["trainable_params"] == 2 * 32 * ((128 + 128) + (128 + 64))
    assert recs["prompt_tuning"]["trainable_params"] == 20 * 128
    assert recs["miss"]["metrics"]["paper_row"] == "MiSS"
    resident = {n: recs[n]["metrics"]["cpu_step_tensor_peak"]["resident_bytes"] for n in ("miss", "lora")}
    # fp32 weights + Adam's two moments, plus Adam's 4-byte step counter per tensor (LoRA: A and B on q and v in
    # 2 layers = 8 tensors, MiSS: 4)
    assert resident["lora"] - resident["miss"] == 3 * 4 * (28672 - 24576) + 4 * (8 - 4)

    # the analysis reads them: Table 8 rows in the paper's layout, our number beside the paper's
    from analysis.core import Results
    from analysis.pareto import build

    section = build(Results(results))
    table8 = section.tables[0]
    miss_row = next(r for r in table8.rows if r[0] == "MiSS")
    assert miss_row[1] == "cpu" and miss_row[2] == "miss" and miss_row[4] == "1,867"
    assert [c.verdict for c in section.claims][2] == "not tested"    # a pipeline check decides no front claim

    finished = {n: r["finished_at"] for n, r in recs.items()}
    assert _run(["--method", "miss,lora,prompt_tuning"], results, runs_dir, data_dir) == 0   # all done: skipped
    assert {r["run"]: r["finished_at"] for r in load_records(results, "pareto")} == finished


def test_a_failing_method_is_recorded_and_the_others_go_on(tmp_path, runs_dir, data_dir):
    configs = tmp_path / "configs"
    configs.mkdir()
    for name in ("lora", "miss"):
        shutil.copy(CONFIGS / f"{name}.json", configs)
    # VB-LoRA vectors of length 256 cannot tile the tiny model's 128/64-wide projections: PEFT refuses
    broken = json.loads((CONFIGS / "vblora.json").read_text())
    broken.pop("profiles")
    (configs / "vblora.json").write_text(json.dumps(broken))
    results = tmp_path / "results"
    rc = _run(["--configs-dir", str(configs), "--method", "lora,vblora,miss"], results, runs_dir, data_dir)
    assert rc == 1
    recs = {r["run"]: r for r in load_records(results, "pareto")}
    assert recs["lora"]["status"] == "success" and recs["miss"]["status"] == "success"
    assert recs["vblora"]["status"] == "failed"
    assert "256" in recs["vblora"]["error"] and "vector_length" in recs["vblora"]["metrics"]["child_traceback"]

    from analysis.core import Results
    from analysis.pareto import build

    section = build(Results(results))
    assert any("vblora: failed" in row[2] for row in section.tables[0].rows)
