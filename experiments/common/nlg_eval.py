"""The evaluation stage of the LLM scripts (SPEC §3.6): generate with every trained run, grade, record.

After its training runs, every LLM script (``experiments/nlg_*.py``, ``experiments/rank_ablation.py``)
scores them, unless called with ``--no-eval``; calling the script again does only what is missing.

* math runs -> GSM8K and MATH; code runs -> HumanEval and MBPP (greedy, the PiSSA prompts; ``eval/``);
* LoRA (its ``adapter/``) and MiSS (its exact LoRA export, ``lora/``) are served as LoRA on their base
  model, and every such run of one base model and task family shares one engine load; DoRA, PiSSA and
  full FT are scored from their merged model (``merged/``), one engine load each;
* generation runs in a worker process (``nlg_eval_worker``: ``eval.generate``, vLLM where installed, its
  CPU build without a GPU) and writes ``<runs-dir>/<experiment>/_eval/<run>.jsonl`` + ``.meta.json``;
  grading (``eval.grade``) writes ``<run>.graded.jsonl`` and ``<run>.graded.summary.json`` beside them;
* one record per scored run, ``results/<experiment>-eval/<run>.json`` (``records.RunTracker``, atomic):
  accuracy per task and rule, n, backend and engine, sampling, task versions, the paths of the files.

Resume: a run whose eval record succeeded for the same training record and eval settings is skipped;
complete samples are graded without generating again; an interrupted generation continues where it
stopped. A retrained run, or other eval settings, start that run's samples over. A run that fails (its
adapter cannot be served, its engine or its grading fails) gets a ``failed`` record and the others go on.

Profiles (``--eval-set KEY=VALUE`` overrides any field of ``EvalSettings``):

=======  =====================================================================================
cpu      the first 8 examples of each task, 32 new tokens, all engines in one worker process,
         eager mode, 1 GiB KV cache, one thread (~30 s of imports, then ~5 s per engine load and
         ~5 s per adapter here): a pipeline check of a tiny random model, not a score
small    the full test sets, 1024 new tokens, one engine per worker process (the GPU is freed
         between models)
paper    as small
=======  =====================================================================================
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import override, parse_overrides
from .nlg_eval_worker import status_path
from .records import REPO_ROOT, RunTracker, successful_record, write_json_atomic
from .runner import Context, Run, Stage
from .streams import run_streamed

EVAL_TASKS = {"math": ("gsm8k", "math"), "code": ("humaneval", "mbpp")}   # training task -> benchmarks
ADAPTER_ARTIFACT = {"lora": "adapter", "miss": "lora"}    # served as a LoRA on the base model; the rest merged
EVAL_SUFFIX = "-eval"
LABEL_FILES = (".jsonl", ".meta.json", ".graded.jsonl", ".graded.summary.json", ".source.json")


@dataclass(frozen=True)
class EvalSettings:
    purpose: str                         # what the scores mean; shown with them
    limit: int | None = None             # first N examples of each task; None: the whole test set
    max_new_tokens: int | None = None    # None: the task spec's 1024 (SPEC §3.6)
    backend: str = "auto"                # eval.generate: auto (vLLM when installed) | vllm | hf
    engines_per_process: int = 1         # engine loads per worker process; 0: all in one
    enforce_eager: bool = False          # vLLM: skip compilation / CUDA graphs (faster start)
    kv_cache_gb: float | None = None     # vLLM: fixed KV cache size (CPU default 4 GiB)
    dtype: str = "auto"
    hf_batch_size: int = 16              # the transformers backend's batch
    mbpp_task_set: str = "pissa399"
    grade_jobs: int = 4                  # sandbox processes for the code tasks
    cpu_threads: int | None = None       # without a GPU: OpenMP threads of the engine, unbound from cores


EVAL_PROFILES: dict[str, EvalSettings] = {
    # one unbound thread: on a shared 2-core machine, vLLM's threads pinned to busy cores wait on each other
    # and generation slowed 3-5x (measured: 16 prompts x 32 tokens with a LoRA, 5.6 s vs 16-30 s)
    "cpu": EvalSettings(purpose="pipeline check (tiny random model, first 8 examples per task, 32 new tokens)",
                        limit=8, max_new_tokens=32, engines_per_process=0, enforce_eager=True, kv_cache_gb=1.0,
                        grade_jobs=2, cpu_threads=1),
    "small": EvalSettings(purpose="trend (a ~1B stand-in model, full test sets)"),
    "paper": EvalSettings(purpose="the paper's protocol (full test sets, greedy, 1024 new tokens)"),
}


class EvalError(RuntimeError):
    """One run's evaluation cannot be done; the message names the run, the file and what to do."""


def eval_experiment(experiment: str) -> str:
    """The results/ folder of an experiment's eval records."""
    return experiment + EVAL_SUFFIX


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-eval", action="store_true",
                   help="train only; by default every trained run is then scored (generation + grading)")
    p.add_argument("--eval-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the profile's EvalSettings, e.g. limit=50 (repeatable)")


def enabled(ctx: Context) -> bool:
    return not getattr(ctx.args, "no_eval", False)


def eval_settings(ctx: Context) -> EvalSettings:
    base = EVAL_PROFILES[ctx.profile.name]
    changes = parse_overrides(getattr(ctx.args, "eval_set", None) or [])
    return override(base, where=f"--eval-set for profile {ctx.profile.name}", **changes) if changes else base


# ---------------------------------------------------------------------------------------------- what to score
@dataclass
class EvalItem:
    """One training run to score: how it is served and what it is scored on."""

    run: Run
    training: dict[str, Any]             # its training record
    kind: str                            # "adapter" (LoRA on ``model``) or "merged" (``model`` is the merged one)
    model: str
    adapter: str | None
    tasks: tuple[str, ...]
    backend: str
    import_modules: tuple[str, ...] = ()
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.run.name


def serving(training: dict[str, Any]) -> tuple[str, str, str | None]:
    """``(kind, model, adapter dir)`` for a training record, from the outputs its run saved."""
    cfg, arts = training["config"], training.get("metrics", {}).get("artifacts") or {}
    # the model the run actually loaded (e.g. the tiny model built on this machine), else the planned one
    method, base = cfg["method"], training.get("runtime", {}).get("model") or cfg["sft"]["model"]
    if method in ADAPTER_ARTIFACT and ADAPTER_ARTIFACT[method] in arts:
        return "adapter", base, arts[ADAPTER_ARTIFACT[method]]
    if "merged" in arts:
        return "merged", arts["merged"], None
    raise EvalError(f"{training['experiment']}/{training['run']}: method {method!r} saved nothing an engine can "
                    f"serve (artifacts: {sorted(arts) or 'none'}); LoRA needs adapter/, MiSS lora/, others merged/")


def data_fingerprint(tasks: tuple[str, ...], data_dir: Path | None, hub: bool) -> dict[str, Any]:
    """Each benchmark's data by content (sha256 per file, or the hub dataset), not by where it lies."""
    from eval.common import data_source
    from eval.tasks import TASKS

    out: dict[str, Any] = {}
    for task in tasks:
        source = data_source(TASKS[task].SPEC, data_dir, hub=hub)
        out[task] = ({rel: f["sha256"] for rel, f in source["files"].items()} if source["source"] == "local"
                     else {"hub": source["hub_id"]})
    return out


def make_item(run: Run, training: dict[str, Any], settings: EvalSettings, data_dir: Path | None,
              hub: bool = True) -> EvalItem:
    from eval.tasks import TASKS

    kind, model, adapter = serving(training)
    task = training["config"]["task"]
    if task not in EVAL_TASKS:
        raise EvalError(f"{training['experiment']}/{training['run']}: no benchmarks for training task {task!r}")
    tasks = EVAL_TASKS[task]
    imports = tuple(training["config"]["sft"].get("import_modules") or ())
    # vLLM has no RWKV (flash-linear-attention) models: those are generated with transformers
    backend = "hf" if imports else settings.backend
    # What the scores depend on: the trained run (its config and when it finished) and how it is scored.
    # No paths: a clone elsewhere with the same records has the same fingerprint.
    fingerprint = {"training_config_hash": training.get("config_hash"), "trained_at": training.get("finished_at"),
                   "kind": kind, "tasks": list(tasks), "task_versions": {t: TASKS[t].SPEC.version for t in tasks},
                   "limit": settings.limit, "max_new_tokens": settings.max_new_tokens,
                   "mbpp_task_set": settings.mbpp_task_set, "backend": backend, "dtype": settings.dtype,
                   "data": data_fingerprint(tasks, data_dir, hub)}
    return EvalItem(run, training, kind, model, adapter, tasks, backend, imports, fingerprint)


def plan_jobs(items: list[EvalItem], settings: EvalSettings, out_dir: Path, data_dir: Path | None,
              hub: bool = True) -> list[dict]:
    """Engine jobs for the worker: adapters sharing base model, benchmarks and backend share one job."""
    groups: dict[tuple, list[EvalItem]] = {}
    for item in items:
        key = (item.model, item.tasks, item.backend, item.import_modules) if item.kind == "adapter" else (item.label,)
        groups.setdefault(key, []).append(item)
    jobs = []
    for i, members in enumerate(sorted(groups.values(), key=lambda g: (g[0].kind, g[0].model, g[0].label))):
        first = members[0]
        job: dict[str, Any] = {
            "id": f"job{i}", "model": first.model, "tasks": list(first.tasks), "out_dir": str(out_dir),
            "labels": [m.label for m in members], "backend": first.backend,
            "import_modules": list(first.import_modules), "data_dir": str(data_dir) if data_dir else None, "hub": hub,
            "limit": settings.limit, "max_new_tokens": settings.max_new_tokens,
            "mbpp_task_set": settings.mbpp_task_set,
            "engine": {"enforce_eager": settings.enforce_eager, "kv_cache_gb": settings.kv_cache_gb,
                       "dtype": settings.dtype, "batch_size": settings.hf_batch_size}}
        if first.kind == "adapter":
            job["adapters"] = {m.label: m.adapter for m in members}
        else:
            job["name"] = first.label
        jobs.append(job)
    return jobs


# ---------------------------------------------------------------------------------------------- files
def label_path(out_dir: Path, label: str, suffix: str) -> Path:
    return out_dir / f"{label}{suffix}"


def reconcile(out_dir: Path, item: EvalItem) -> None:
    """Keep a run's earlier samples only if they were made from the same training and settings."""
    source = label_path(out_dir, item.label, ".source.json")
    if source.exists():
        try:
            if json.loads(source.read_text()) == item.fingerprint:
                return
        except json.JSONDecodeError:
            pass
    for suffix in LABEL_FILES:
        label_path(out_dir, item.label, suffix).unlink(missing_ok=True)
    write_json_atomic(source, item.fingerprint)


def read_meta(out_dir: Path, label: str) -> dict[str, Any] | None:
    path = label_path(out_dir, label, ".meta.json")
    return json.loads(path.read_text()) if path.exists() else None


def samples_complete(meta: dict[str, Any] | None, tasks: tuple[str, ...]) -> bool:
    if not meta or meta.get("status") != "complete":
        return False
    info = meta.get("tasks", {})
    return all(t in info and info[t]["n_written"] >= info[t]["n_examples"] for t in tasks)


def is_scored(results_dir: Path, experiment: str, profile: str, item: EvalItem) -> bool:
    rec = successful_record(results_dir, eval_experiment(experiment), profile, item.label)
    return rec is not None and rec.get("config", {}).get("fingerprint") == item.fingerprint


# ---------------------------------------------------------------------------------------------- the worker
def worker_env(ctx: Context, settings: EvalSettings) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    if not ctx.profile.hub_access:      # the cpu profile reads nothing from the hub: fail fast instead of retrying
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
    if settings.cpu_threads and ctx.profile.device == "cpu":
        env.setdefault("OMP_NUM_THREADS", str(settings.cpu_threads))
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    return env


def launch_worker(jobs_path: Path, env: dict[str, str], log: Path) -> int:
    """The worker process on ``jobs_path``, its output appended to ``log``; returns its exit code."""
    argv = [sys.executable, "-m", "experiments.common.nlg_eval_worker", str(jobs_path)]
    print(f"[eval] generation log {log}", file=sys.stderr, flush=True)
    return run_streamed(argv, log, env=env, cwd=REPO_ROOT)


def run_worker(jobs: list[dict], out_dir: Path, index: int, env: dict[str, str]) -> dict[str, dict]:
    """Run ``jobs`` in one worker process; a job it did not finish is reported failed with the log's tail."""
    jobs_path = out_dir / f"jobs-{index}.json"
    write_json_atomic(jobs_path, jobs)
    status_file = status_path(jobs_path)
    status_file.unlink(missing_ok=True)
    log = out_dir / "worker.log"
    rc = launch_worker(jobs_path, env, log)
    status = json.loads(status_file.read_text()) if status_file.exists() else {}
    missing = [j for j in jobs if j["id"] not in status]
    if missing:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:]) if log.exists() else ""
        for job in missing:
            status[job["id"]] = {"status": "failed", "error": f"the generation worker exited with code {rc} before "
                                 f"finishing this job (log: {log}); last lines:\n{tail}"}
    return status


# ---------------------------------------------------------------------------------------------- grading + record
def grade(out_dir: Path, item: EvalItem, meta: dict[str, Any], settings: EvalSettings,
          data_dir: Path | None, hub: bool = True) -> dict[str, Any]:
    """The graded summary of a run's samples; an existing one made after the samples is reused."""
    from eval.grade import grade_file

    samples = label_path(out_dir, item.label, ".jsonl")
    summary_path = label_path(out_dir, item.label, ".graded.summary.json")
    if summary_path.exists() and summary_path.stat().st_mtime >= samples.stat().st_mtime:
        summary = json.loads(summary_path.read_text())
        if all(summary["tasks"].get(t, {}).get("n") == meta["tasks"][t]["n_written"] for t in item.tasks):
            return summary
    return grade_file(samples, out=label_path(out_dir, item.label, ".graded.jsonl"), summary_path=summary_path,
                      data_dir=str(data_dir) if data_dir else None, hub=hub, jobs=settings.grade_jobs,
                      mbpp_task_set=settings.mbpp_task_set)


def eval_metrics(out_dir: Path, item: EvalItem, meta: dict[str, Any], summary: dict[str, Any],
                 settings: EvalSettings, job: dict[str, Any] | None) -> dict[str, Any]:
    tasks = summary["tasks"]
    sessions = meta.get("sessions", [])
    return {
        "scores": {t: {rule: None if a is None else round(100 * a, 4) for rule, a in s["accuracy"].items()}
                   for t, s in tasks.items()},                               # % per task and rule (first: paper's)
        "accuracy": {t: s["accuracy"] for t, s in tasks.items()},
        "correct": {t: s["correct"] for t, s in tasks.items()},
        "n": {t: s["n"] for t, s in tasks.items()},
        "full_test_set": {t: s["complete"] for t, s in tasks.items()},
        "task_versions": {t: s["task_versions"] for t, s in tasks.items()},
        "code_grader": {t: s["grader"] for t, s in tasks.items() if "grader" in s},
        "finish_reasons": {t: s["finish_reasons"] for t, s in tasks.items()},
        "sampling": {t: meta["tasks"][t]["sampling"] for t in item.tasks},
        "purpose": settings.purpose,
        "backend": meta.get("backend"),
        "backend_reason": meta.get("backend_reason"),
        "engine": meta.get("engine"),
        "generation_seconds": round(sum(s.get("generation_seconds") or 0 for s in sessions), 3),
        "output_tokens_per_s": sessions[-1].get("output_tokens_per_s") if sessions else None,
        "engine_job_seconds": job.get("seconds") if job else None,     # load + generation, shared by the job's runs
        "engine_job_runs": job.get("labels") if job else None,
        "grading_seconds": summary.get("grading_seconds"),
        "samples": str(label_path(out_dir, item.label, ".jsonl")),
        "meta": str(label_path(out_dir, item.label, ".meta.json")),
        "graded": summary.get("graded"),
        "graded_summary": str(label_path(out_dir, item.label, ".graded.summary.json")),
    }


def record_eval(ctx: Context, settings: EvalSettings, out_dir: Path, item: EvalItem,
                job: dict[str, Any] | None) -> bool:
    """Grade one run and write its eval record; True when it failed."""
    cfg = item.training["config"]
    config = {"training_experiment": ctx.experiment, "training_run": item.label, "task": cfg["task"],
              "method": cfg["method"], "r": cfg["sft"].get("r"), "preset": cfg.get("preset"),
              "served_as": item.kind, "eval_tasks": list(item.tasks),
              "settings": asdict(settings), "fingerprint": item.fingerprint}
    tracker = RunTracker(ctx.results_dir, eval_experiment(ctx.experiment), item.label, ctx.profile.name, config,
                         item.run.seed)
    with tracker as record:
        record.runtime.update(model=item.model, adapter=item.adapter)
        if job is not None and job["status"] != "success":
            raise EvalError(f"generation failed: {job.get('error')}")
        if job is not None and item.label in job.get("labels_failed", {}):
            raise EvalError(f"adapter {item.adapter} cannot be served: {job['labels_failed'][item.label]}")
        meta = read_meta(out_dir, item.label)
        if not samples_complete(meta, item.tasks):
            raise EvalError(f"{label_path(out_dir, item.label, '.jsonl')}: generation did not complete "
                            f"(meta status {meta.get('status') if meta else 'missing'})")
        summary = grade(out_dir, item, meta, settings, ctx.data_dir, ctx.profile.hub_access)
        record.metrics.update(eval_metrics(out_dir, item, meta, summary, settings, job))
    return record.status == "failed"


# ---------------------------------------------------------------------------------------------- the stage
def _failed_record(ctx: Context, run: Run, error: Exception) -> None:
    with RunTracker(ctx.results_dir, eval_experiment(ctx.experiment), run.name, ctx.profile.name,
                    {"training_experiment": ctx.experiment, "training_run": run.name}, run.seed):
        raise error


def run_eval_stage(ctx: Context, runs: list[Run]) -> int:
    """Score the successful training runs among ``runs``; returns how many evaluations failed."""
    if not enabled(ctx) or not runs:
        return 0
    settings = eval_settings(ctx)
    out_dir = Path(ctx.args.runs_dir) / ctx.experiment / "_eval"
    t0 = time.perf_counter()
    failed = 0
    todo: list[EvalItem] = []
    for run in runs:
        training = successful_record(ctx.results_dir, ctx.experiment, ctx.profile.name, run.name)
        if training is None:
            continue                                   # nothing trained to score; the training record says why
        try:
            item = make_item(run, training, settings, ctx.data_dir, ctx.profile.hub_access)
        except (EvalError, KeyError) as e:
            _failed_record(ctx, run, e)
            failed += 1
            continue
        if not is_scored(ctx.results_dir, ctx.experiment, ctx.profile.name, item):
            todo.append(item)
    if not todo:
        return failed
    print(f"[{ctx.experiment}] eval: scoring {len(todo)} run(s) ({settings.purpose}) -> "
          f"results/{eval_experiment(ctx.experiment)}/", file=sys.stderr, flush=True)

    for item in todo:
        reconcile(out_dir, item)
    generate = [i for i in todo if not samples_complete(read_meta(out_dir, i.label), i.tasks)]
    jobs = plan_jobs(generate, settings, out_dir, ctx.data_dir, ctx.profile.hub_access)
    per = settings.engines_per_process or max(1, len(jobs))
    status: dict[str, dict] = {}
    env = worker_env(ctx, settings)
    for index, start in enumerate(range(0, len(jobs), per)):
        batch = jobs[start:start + per]
        print(f"[{ctx.experiment}] eval: worker {index + 1}: {len(batch)} engine load(s) for "
              f"{sum(len(j['labels']) for j in batch)} run(s)", file=sys.stderr, flush=True)
        status.update(run_worker(batch, out_dir, index, env))
    job_of = {label: {**status[j["id"]], "labels": j["labels"]} for j in jobs for label in j["labels"]}

    for item in todo:
        failed += record_eval(ctx, settings, out_dir, item, job_of.get(item.label))
    print(f"[{ctx.experiment}] eval: {len(todo)} run(s) scored in {time.perf_counter() - t0:.1f} s "
          f"({len(jobs)} engine load(s)), {failed} failed", file=sys.stderr, flush=True)
    return failed


def planned_records(ctx: Context, runs: list[Run]) -> list[tuple[str, str]]:
    if not enabled(ctx):
        return []
    eval_settings(ctx)          # a bad --eval-set is a usage error before training, not after it
    return [(eval_experiment(ctx.experiment), r.name) for r in runs]


EVAL_STAGE = Stage(records=planned_records, run=run_eval_stage)
