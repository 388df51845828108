"""The evaluation stage's records -> the score cells of Tables 5, 7, 9, and what each evaluation was.

The LLM scripts' evaluation stage (``experiments/common/nlg_eval.py``) writes one record per scored training
run, ``results/<experiment>-eval/<run>.json``, with ``metrics.scores[task][rule]`` in %. ``graded_scores``
(a ``@score_provider`` of ``analysis.nlg``) turns it into the table columns: the paper's rule (PiSSA's) as
GSM8K / Math / HumanEval / Mbpp, the second graders as "GSM8K flexible" / "Math math-verify". A score made
from an earlier training of the run (the run was retrained since) is not shown.
"""

from __future__ import annotations

from typing import Any

from experiments.common.nlg_eval import eval_experiment

from .core import MISSING, Col, Num, Results, Section, Table, profile_of, slug
from .nlg import NLG_EXPERIMENTS, profile_label, score_provider
from .registry import builder

COLUMN_RULE = {"GSM8K": ("gsm8k", "pissa"), "GSM8K flexible": ("gsm8k", "flexible"), "Math": ("math", "pissa"),
               "Math math-verify": ("math", "math_verify"), "HumanEval": ("humaneval", "pissa"),
               "Mbpp": ("mbpp", "pissa")}


TASKS = {"gsm8k": "GSM8K", "math": "MATH", "humaneval": "HumanEval", "mbpp": "MBPP"}


def eval_record(results: Results, experiment: str, training: dict[str, Any]) -> dict[str, Any] | None:
    """The successful eval record of one training run (same run, same profile), if it scores the run's
    current training."""
    rec = next((r for r in results.records(eval_experiment(experiment), profile_of(training))
                if r["run"] == training["run"]), None)
    if rec is None:
        return None
    if rec.get("config", {}).get("fingerprint", {}).get("trained_at") != training.get("finished_at"):
        return None
    return rec


@score_provider
def graded_scores(results: Results, experiment: str, training: dict[str, Any]) -> dict[str, float] | None:
    rec = eval_record(results, experiment, training)
    if rec is None:
        return None
    scores = rec.get("metrics", {}).get("scores", {})
    return {col: scores[task][rule] for col, (task, rule) in COLUMN_RULE.items()
            if isinstance(scores.get(task, {}).get(rule), (int, float))}


COLUMNS = (["experiment", "run", "profile", "scored model", "backend", "max new tokens"]
           + [Col(f"{col} (%)", f"{slug(col)}_pct") for col in COLUMN_RULE]
           + [Col(f"{name} n", f"{task}_n") for task, name in TASKS.items()]
           + ["scored on a subset", Col("generation (s)", "generation_s"), Col("engine job (s)", "engine_job_s"),
              "graded rows"])


def eval_table(results: Results) -> Table:
    rows = []
    for experiment in NLG_EXPERIMENTS:
        for rec in results.records(eval_experiment(experiment)):
            m, cfg = rec.get("metrics", {}), rec.get("config", {})
            engine = m.get("engine") or {}
            sampling = next(iter(m.get("sampling", {}).values()), {})
            scores = m.get("scores", {})
            subset = [TASKS.get(t, t) for t in scores if not m.get("full_test_set", {}).get(t)]
            rows.append([experiment, rec["run"], profile_label(rec.get("profile")),
                         f"{cfg.get('served_as')}: {cfg.get('adapter') or cfg.get('model')}",
                         f"{m.get('backend')} ({engine.get('device', '?')})",
                         Num(sampling.get("max_new_tokens")),
                         *(Num(scores.get(task, {}).get(rule)) for task, rule in COLUMN_RULE.values()),
                         *(Num(m.get("n", {}).get(t) if t in scores else None) for t in TASKS),
                         ", ".join(subset) or ("none" if scores else MISSING),
                         Num(m.get("generation_seconds")), Num(m.get("engine_job_seconds")),
                         m.get("graded") or MISSING])
        for run in results.failed.get(eval_experiment(experiment), []):
            rows.append([experiment, run, "failed", *[None] * (len(COLUMNS) - 3)])
    return Table(
        key="nlg_eval_runs", title="Evaluation of the LLM runs: what was generated and graded",
        columns=COLUMNS, rows=rows,
        caption=("One row per eval record (results/<experiment>-eval/): accuracy in % per task and rule (GSM8K, Math, "
                 "HumanEval, Mbpp: PiSSA's rule, the paper's column; GSM8K flexible and Math math-verify: second "
                 "graders), n graded per task, and the tasks scored on a subset of their test set. "
                 "Engine job: loading the model and generating for every run that shared the engine (LoRA and MiSS "
                 "adapters of one base model share one load), including the worker's imports for the first job. "
                 "cpu-profile rows are a pipeline check: a tiny random model, a few prompts, few new tokens."))


@builder("nlg_eval", "Evaluation of the LLM runs (SPEC §3.6)")
def build(results: Results) -> Section:
    table = eval_table(results)
    n_failed = sum(1 for r in table.rows if r[2] == "failed")
    return Section(
        key="nlg_eval", title="Evaluation of the LLM runs (SPEC §3.6)",
        experiments=tuple(eval_experiment(e) for e in NLG_EXPERIMENTS), tables=[table],
        summary=(f"Generation (vLLM; transformers for RWKV) and grading of every trained LLM run: "
                 f"{len(table.rows) - n_failed} run(s) scored, {n_failed} failed. Each LLM script runs this stage "
                 "after training (`--no-eval` skips it); the scores fill Tables 5, 7 and 9."),
    )
