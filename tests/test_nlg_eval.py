"""The LLM scripts' evaluation stage (``experiments/common/nlg_eval.py``) and the score cells it fills.

* engine jobs: LoRA and MiSS runs of one base model and task family share one engine; merged models one each;
* on fake training records with real tiny models (transformers backend, fast): a run whose adapter cannot be
  served gets a ``failed`` eval record while the others are scored; a second call redoes only that run; a third
  does nothing; a lost record is rebuilt by grading the kept samples, without generating;
* the score provider on fixed records: mean over seeds, both grading rules, Avg, per-profile rows, a stale score
  (the run was retrained since) hidden, the cpu row labelled as a pipeline check;
* end to end (slow): ``nlg_llama2_7b.py --profile cpu`` trains a MiSS run, scores it with vLLM's CPU build, and
  ``analysis`` puts the scores in Table 5.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import nlg
from analysis.core import INCONCLUSIVE, MISSING, NOT_TESTED, Results
from experiments.common import nlg_eval
from experiments.common.nlg_eval import EvalError, eval_experiment, make_item, plan_jobs, run_eval_stage
from experiments.common.profiles import get_profile
from experiments.common.records import RunRecord, load_record, write_record
from experiments.common.runner import Context, Run

REPO = Path(__file__).resolve().parents[1]
EXP = "nlg_llama2_7b"
TRAINED_AT = "2026-01-01T00:00:00+00:00"


def _training(results: Path, run: str, task: str, method: str, model: str, artifacts: dict, seed: int = 42,
              profile: str = "cpu", finished_at: str = TRAINED_AT) -> Run:
    rec = RunRecord(EXP, run, profile, status="success", seed=seed, finished_at=finished_at,
                    config={"preset": "llama2-7b", "task": task, "method": method, "sft": {"model": model, "r": 4}},
                    metrics={"artifacts": artifacts}, trainable_params=1)
    write_record(results, rec)
    return Run(run, rec.config, seed)


def _ctx(tmp: Path, data_dir: Path, *eval_set: str) -> Context:
    args = argparse.Namespace(runs_dir=tmp / "runs", no_eval=False, eval_set=list(eval_set))
    return Context(experiment=EXP, profile=get_profile("cpu"), results_dir=tmp / "results", data_dir=data_dir,
                   force=False, args=args)


# ---------------------------------------------------------------------------------------------- engine jobs
def test_adapters_of_one_base_share_an_engine_merged_models_do_not(tmp_path):
    settings = nlg_eval.EVAL_PROFILES["cpu"]
    specs = [("math-lora-s42", "math", "lora", {"adapter": "/a/lora"}), ("math-miss-s42", "math", "miss",
             {"adapter": "/a/miss", "lora": "/a/miss_lora"}), ("code-miss-s42", "code", "miss", {"lora": "/c/miss"}),
             ("math-dora-s42", "math", "dora", {"adapter": "/a/dora", "merged": "/m/dora"}),
             ("math-full-s42", "math", "full", {"merged": "/m/full"})]
    items = []
    for name, task, method, arts in specs:
        run = _training(tmp_path, name, task, method, "/base", arts)
        items.append(make_item(run, load_record(tmp_path / EXP / "cpu" / f"{name}.json"), settings, None))
    jobs = plan_jobs(items, settings, tmp_path / "out", None)
    by_labels = {tuple(j["labels"]): j for j in jobs}
    assert set(by_labels) == {("math-lora-s42", "math-miss-s42"), ("code-miss-s42",), ("math-dora-s42",),
                              ("math-full-s42",)}
    math_adapters = by_labels[("math-lora-s42", "math-miss-s42")]
    assert math_adapters["adapters"] == {"math-lora-s42": "/a/lora", "math-miss-s42": "/a/miss_lora"}  # MiSS as LoRA
    assert math_adapters["model"] == "/base" and math_adapters["tasks"] == ["gsm8k", "math"]
    assert by_labels[("code-miss-s42",)]["tasks"] == ["humaneval", "mbpp"]
    assert by_labels[("math-dora-s42",)]["model"] == "/m/dora" and "adapters" not in by_labels[("math-dora-s42",)]
    assert all(j["limit"] == 8 and j["max_new_tokens"] == 32 for j in jobs)

    vera = _training(tmp_path, "math-vera-s42", "math", "vera", "/base", {"adapter": "/a/vera"})
    with pytest.raises(EvalError, match="vera.*adapter"):
        make_item(vera, load_record(tmp_path / EXP / "cpu" / "math-vera-s42.json"), settings, None)


# ---------------------------------------------------------------------------------------------- the stage
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A tiny base model, a trained-looking LoRA adapter on it, and a 'full FT' merged model."""
    import peft
    import torch
    import transformers

    from eval.generate_tiny import build_tiny_llama

    root = tmp_path_factory.mktemp("tiny_runs")
    base = build_tiny_llama(root / "base", vocab_size=300)
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = peft.get_peft_model(model, peft.LoraConfig(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8))
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    lora.save_pretrained(root / "lora" / "adapter")
    shutil.copytree(base, root / "full" / "merged")
    return root


def _stage(tmp_path, data_dir, tiny_runs, broken_miss: bool):
    results = tmp_path / "results"
    miss_lora = tmp_path / "miss" / "lora"
    miss_lora.mkdir(parents=True, exist_ok=True)
    if broken_miss:       # a config without weights: this run's adapter cannot be served
        shutil.copy(tiny_runs / "lora" / "adapter" / "adapter_config.json", miss_lora)
    runs = [_training(results, "math-lora-s42", "math", "lora", str(tiny_runs / "base"),
                      {"adapter": str(tiny_runs / "lora" / "adapter")}),
            _training(results, "math-miss-s42", "math", "miss", str(tiny_runs / "base"),
                      {"adapter": str(tmp_path / "miss" / "adapter"), "lora": str(miss_lora)}),
            _training(results, "code-full-s42", "code", "full", str(tiny_runs / "base"),
                      {"merged": str(tiny_runs / "full" / "merged")})]
    return runs


def _eval_record(tmp_path, run):
    return load_record(tmp_path / "results" / eval_experiment(EXP) / "cpu" / f"{run}.json")


def test_failed_eval_is_recorded_others_scored_and_resume_redoes_only_what_is_missing(tmp_path, data_dir, tiny_runs,
                                                                                      monkeypatch):
    """The worker runs in this process here (transformers backend; the subprocess and vLLM are the slow test's)."""
    from experiments.common import nlg_eval_worker

    runs = _stage(tmp_path, data_dir, tiny_runs, broken_miss=True)
    ctx = _ctx(tmp_path, data_dir, "backend=hf", "limit=2", "max_new_tokens=8")
    launched, crash = [], []

    def launch(jobs_path, env, log):
        launched.append(json.loads(jobs_path.read_text()))
        return 137 if crash else nlg_eval_worker.main([str(jobs_path)])   # 137: killed before any job finished

    monkeypatch.setattr(nlg_eval, "launch_worker", launch)
    assert run_eval_stage(ctx, runs) == 1
    assert len(launched) == 1 and len(launched[0]) == 2        # one worker: the adapter job and the merged model
    lora, miss, full = (_eval_record(tmp_path, r.name) for r in runs)
    assert miss["status"] == "failed" and "cannot be served" in miss["error"] and "miss/lora" in miss["error"]
    for rec, tasks in ((lora, ("gsm8k", "math")), (full, ("humaneval", "mbpp"))):
        m = rec["metrics"]
        assert rec["status"] == "success" and rec["profile"] == "cpu", rec.get("error")
        assert set(m["scores"]) == set(tasks) and m["n"] == {t: 2 for t in tasks}
        assert m["backend"] == "hf" and m["engine"]["backend"] == "hf"
        assert all(Path(m[k]).is_file() for k in ("samples", "meta", "graded", "graded_summary"))
        assert m["sampling"][tasks[0]]["max_new_tokens"] == 8 and m["full_test_set"][tasks[0]] is False
        assert rec["config"]["fingerprint"]["trained_at"] == TRAINED_AT
    assert set(lora["metrics"]["scores"]["gsm8k"]) == {"pissa", "flexible"}
    assert set(lora["metrics"]["scores"]["math"]) == {"pissa", "math_verify"}
    assert lora["metrics"]["task_versions"]["gsm8k"] == ["gsm8k-test-pissa-prompt-v1"]
    assert full["config"]["served_as"] == "merged" and lora["config"]["served_as"] == "adapter"
    before = {r.name: _eval_record(tmp_path, r.name)["finished_at"] for r in runs}

    # the adapter fixed, but the worker dies: that run fails again, naming the exit code; the others are untouched
    shutil.copy(tiny_runs / "lora" / "adapter" / "adapter_model.safetensors", tmp_path / "miss" / "lora")
    launched.clear()
    crash.append(True)
    assert run_eval_stage(ctx, runs) == 1
    assert [j["labels"] for j in launched[0]] == [["math-miss-s42"]]
    assert "exited with code 137" in _eval_record(tmp_path, "math-miss-s42")["error"]
    assert _eval_record(tmp_path, "math-lora-s42")["finished_at"] == before["math-lora-s42"]

    # next call: only that run is generated
    crash.clear()
    launched.clear()
    assert run_eval_stage(ctx, runs) == 0 and [j["labels"] for j in launched[0]] == [["math-miss-s42"]]
    assert _eval_record(tmp_path, "math-miss-s42")["status"] == "success"

    # all done: nothing starts; a lost record is rebuilt from the kept samples without generating
    launched.clear()
    assert run_eval_stage(ctx, runs) == 0 and launched == []
    scores = lora["metrics"]["scores"]
    (tmp_path / "results" / eval_experiment(EXP) / "cpu" / "math-lora-s42.json").unlink()
    assert run_eval_stage(ctx, runs) == 0 and launched == []
    assert _eval_record(tmp_path, "math-lora-s42")["metrics"]["scores"] == scores

    # retrained: the old samples are not reused
    runs[0] = _training(tmp_path / "results", "math-lora-s42", "math", "lora", str(tiny_runs / "base"),
                        {"adapter": str(tiny_runs / "lora" / "adapter")}, finished_at="2026-02-02T00:00:00+00:00")
    assert run_eval_stage(ctx, runs) == 0 and [j["labels"] for j in launched[0]] == [["math-lora-s42"]]
    assert _eval_record(tmp_path, "math-lora-s42")["config"]["fingerprint"]["trained_at"].startswith("2026-02-02")

    # --no-eval: nothing planned, nothing run
    ctx.args.no_eval = True
    assert nlg_eval.planned_records(ctx, runs) == [] and run_eval_stage(ctx, runs) == 0


# ---------------------------------------------------------------------------------------------- the tables
def _scored(results: Path, run: str, task: str, method: str, seed: int, scores: dict, profile: str = "small",
            trained_at: str = TRAINED_AT, r: int | None = None, experiment: str = EXP) -> None:
    write_record(results, RunRecord(experiment, run, profile, status="success", seed=seed, finished_at=trained_at,
                                    config={"task": task, "method": method, "sft": {"r": r}}, trainable_params=1))
    write_record(results, RunRecord(eval_experiment(experiment), run, profile, status="success", seed=seed,
                                    config={"fingerprint": {"trained_at": TRAINED_AT}},
                                    metrics={"scores": scores, "n": {t: 10 for t in scores}}))


def test_score_provider_fills_tables_5_and_7(tmp_path):
    res = tmp_path
    for seed, g in ((42, 48.0), (43, 50.0)):
        _scored(res, f"math-miss-s{seed}", "math", "miss", seed,
                {"gsm8k": {"pissa": g, "flexible": g + 2}, "math": {"pissa": 8.0, "math_verify": 9.0 + seed - 42}})
        _scored(res, f"code-miss-s{seed}", "code", "miss", seed,
                {"humaneval": {"pissa": 20.0}, "mbpp": {"pissa": 40.0}})
    for method, g in (("lora", 40.0), ("dora", 41.0), ("pissa", 42.0)):
        _scored(res, f"math-{method}-s42", "math", method, 42, {"gsm8k": {"pissa": g, "flexible": g},
                                                              "math": {"pissa": 5.0, "math_verify": 5.0}})
        _scored(res, f"code-{method}-s42", "code", method, 42, {"humaneval": {"pissa": 10.0}, "mbpp": {"pissa": 30.0}})
    _scored(res, "math-miss-cpu-s1", "math", "miss", 1, {"gsm8k": {"pissa": 0.0, "flexible": 12.5},
                                                         "math": {"pissa": 0.0, "math_verify": 0.0}}, profile="cpu")
    _scored(res, "math-lora-s44", "math", "lora", 44, {"gsm8k": {"pissa": 99.0, "flexible": 99.0}},
            trained_at="2026-03-03T00:00:00+00:00")                # retrained after scoring: the score is stale
    for r, g in ((16, 45.0), (32, 46.0), (64, 48.0), (128, 53.0)):
        _scored(res, f"math-miss-r{r}-s42", "math", "miss", 42, {"gsm8k": {"pissa": g, "flexible": g},
                                                                 "math": {"pissa": r / 10, "math_verify": r / 10}},
                r=r, experiment="rank_ablation")
    results = Results(res)

    t = nlg.table5(results)
    col = {c: i for i, c in enumerate(t.columns) if c != "paper"}
    miss = next(row for row in t.rows if row[:2] == ["Llama2-7B", "MiSS"] and row[-1] == "small: stand-in model")
    assert miss[col["GSM8K"]] == "49.00 ± 1.41" and miss[col["GSM8K"] + 1] == "48.16"     # ours, then the paper's
    assert miss[col["GSM8K flexible"]] == "51.00 ± 1.41"
    assert miss[col["Math"]] == "8.00 ± 0.00" and miss[col["Math math-verify"]] == "9.50 ± 0.71"
    assert miss[col["HumanEval"]] == "20.00 ± 0.00" and miss[col["Mbpp"]] == "40.00 ± 0.00"
    assert miss[col["Avg"]] == f"{(49 + 8 + 20 + 40) / 4:.2f}" and miss[col["Avg"] + 1] == "29.30"
    lora = next(row for row in t.rows if row[:2] == ["Llama2-7B", "LoRA"])
    assert lora[col["GSM8K"]] == "40.00"                       # the stale seed-44 score is not averaged in
    cpu = next(row for row in t.rows if row[:2] == ["Llama2-7B", "MiSS"] and row[-1] == "cpu: pipeline check")
    assert cpu[col["GSM8K"]] == "0.00" and cpu[col["GSM8K flexible"]] == "12.50" and cpu[col["Avg"]] == MISSING
    assert next(row for row in t.rows if row[:2] == ["Mistral-7B", "MiSS"])[col["GSM8K"]] == MISSING

    t7 = nlg.table7(results)
    r16 = next(row for row in t7.rows if row[0] == "16")
    assert r16[3:9] == ["45.00", "45.90", "45.00", "1.60", "3.77", "1.60"] and r16[-1] == "small: stand-in model"

    (c5,) = nlg.table5_claims(results)       # one seed shared per pair: reported, but it cannot decide at 95%
    assert c5.verdict == INCONCLUSIVE and "PiSSA 21.75, MiSS 29.25" in c5.evidence and "n = 1" in c5.basis()
    (c7,) = nlg.table7_claims(results)
    assert c7.verdict == INCONCLUSIVE and "r16 45.00 → r32 46.00" in c7.evidence


def test_score_claims_are_not_tested_on_cpu_scores_alone(tmp_path):
    for method in ("lora", "dora", "pissa", "miss"):
        _scored(tmp_path, f"math-{method}-s42", "math", method, 42, {"gsm8k": {"pissa": 1.0}, "math": {"pissa": 1.0}},
                profile="cpu")
        _scored(tmp_path, f"code-{method}-s42", "code", method, 42,
                {"humaneval": {"pissa": 1.0}, "mbpp": {"pissa": 1.0}}, profile="cpu")
    (claim,) = nlg.table5_claims(Results(tmp_path))
    assert claim.verdict == NOT_TESTED and "pipeline check" in claim.evidence


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_cpu_profile_trains_scores_with_vllm_and_fills_table5(tmp_path, data_dir, capsys):
    pytest.importorskip("vllm")
    from experiments.common.sft_experiment import nlg_main

    args = ["--profile", "cpu", "--task", "math", "--method", "miss", "--results-dir", str(tmp_path / "results"),
            "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir), "--set", "launcher=python",
            "--set", "nproc=1", "--set", "max_steps=2", "--set", "max_samples=32", "--eval-set", "limit=3"]
    assert nlg_main("nlg_llama2_7b", "llama2-7b", "", [*args, "--plan"]) == 0    # what run_all checks as "done"
    plan = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert {"name": "math-miss-s42", "experiment": "nlg_llama2_7b-eval"} in plan
    proc = subprocess.run([sys.executable, "experiments/nlg_llama2_7b.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]

    rec = load_record(tmp_path / "results" / "nlg_llama2_7b-eval" / "cpu" / "math-miss-s42.json")
    m = rec["metrics"]
    assert rec["status"] == "success" and rec["config"]["served_as"] == "adapter"
    assert rec["runtime"]["adapter"].endswith("math-miss-s42/lora")          # MiSS through its exact LoRA export
    assert m["backend"] == "vllm" and m["engine"]["device"] == "cpu" and m["engine"]["engine_args"]["enable_lora"]
    assert m["n"] == {"gsm8k": 3, "math": 3} and m["sampling"]["gsm8k"]["max_new_tokens"] == 32
    assert set(m["scores"]["gsm8k"]) == {"pissa", "flexible"} and set(m["scores"]["math"]) == {"pissa", "math_verify"}
    assert "pipeline check" in m["purpose"]
    graded = [json.loads(line) for line in Path(m["graded"]).read_text().splitlines()]
    assert len(graded) == 6 and all({"extracted", "correct", "output"} <= set(g) for g in graded)

    t = nlg.table5(Results(tmp_path / "results"))
    col = {c: i for i, c in enumerate(t.columns) if c != "paper"}
    row = next(r for r in t.rows if r[:2] == ["Llama2-7B", "MiSS"])
    assert row[-1] == "cpu: pipeline check"
    assert row[col["GSM8K"]] == f"{m['scores']['gsm8k']['pissa']:.2f}"
    assert row[col["Math math-verify"]] == f"{m['scores']['math']['math_verify']:.2f}"
