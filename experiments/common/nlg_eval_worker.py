"""The generation worker of the LLM evaluation stage: ``python -m experiments.common.nlg_eval_worker JOBS.json``.

``JOBS.json`` is a list of engine jobs written by ``nlg_eval``; each is one ``eval.generate.generate`` call,
i.e. one engine load: a base model with one or more adapters (``{"adapters": {label: dir}}``), or one merged
model (``{"name": label}``). The jobs run one after another in this process, so on CPU the ~25 s of importing
vLLM and torch is paid once, not per model. After every job ``JOBS.status.json`` is rewritten (atomically)
with ``{job id: {status, labels_failed, error, seconds, summaries}}``; a job missing from it when the process
is gone did not finish (the parent records those runs as failed with this process's log).

An adapter that cannot be served (missing or broken directory) fails alone: it is checked before the engine
starts and left out, so the other adapters of its job are still scored.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .records import write_json_atomic


def status_path(jobs_path: Path) -> Path:
    return jobs_path.with_name(jobs_path.name.removesuffix(".json") + ".status.json")


def _servable(job: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """``(["label=dir", ...], {label: error})``: the job's adapters that prepare_adapter accepts, and the rest."""
    from eval.generate_adapters import AdapterError, prepare_adapter

    ok, failed = [], {}
    for label, path in job.get("adapters", {}).items():
        try:
            prepare_adapter(label, path, job["model"], Path(job["out_dir"]) / "_lora_exports")
            ok.append(f"{label}={path}")
        except (AdapterError, OSError, ValueError) as e:
            failed[label] = f"{type(e).__name__}: {e}"
    return ok, failed


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    from eval.generate import generate

    for module in job.get("import_modules", ()):      # e.g. "fla": registers the RWKV models with transformers
        importlib.import_module(module)
    adapters, failed = _servable(job)
    result: dict[str, Any] = {"labels_failed": failed, "summaries": {}}
    if job.get("adapters") and not adapters:
        raise RuntimeError(f"no adapter of this job can be served: {failed}")
    result["summaries"] = generate(
        job["model"], job["tasks"], job["out_dir"], adapters=adapters, name=job.get("name"),
        backend=job["backend"], data_dir=job.get("data_dir"), hub=job.get("hub", True), limit=job.get("limit"),
        mbpp_task_set=job["mbpp_task_set"], max_new_tokens=job.get("max_new_tokens"), progress=False,
        **job.get("engine", {}))
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m experiments.common.nlg_eval_worker JOBS.json", file=sys.stderr)
        return 2
    jobs_path = Path(argv[0])
    jobs = json.loads(jobs_path.read_text())
    status: dict[str, Any] = {}
    for job in jobs:
        t0 = time.perf_counter()
        print(f"[eval worker] job {job['id']}: {job['model']} "
              f"{sorted(job.get('adapters', {})) or job.get('name')} on {job['tasks']}", file=sys.stderr, flush=True)
        try:
            entry = {"status": "success", **run_job(job)}
        except Exception as e:  # noqa: BLE001 - one job's failure is recorded and the next job runs
            entry = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            print(f"[eval worker] job {job['id']} FAILED: {entry['error']}", file=sys.stderr, flush=True)
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        status[job["id"]] = entry
        write_json_atomic(status_path(jobs_path), status)
        gc.collect()      # drop the finished engine before the next one loads
    return 0


if __name__ == "__main__":
    sys.exit(main())
