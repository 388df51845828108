"""Grade a generation JSONL (never regenerates): ``python -m eval.grade SAMPLES.jsonl [options]``.

Reads the rows ``eval.generate`` writes (see ``eval.common`` for the row format), adds to each
``extracted`` / ``correct`` per rule (and ``verdict`` / ``grader`` for code), and writes the graded rows
and a summary (accuracy per task and rule, with the task versions, data sources and code backend) with
write-to-temp-then-rename, so an interrupted run leaves no half-written file.

    python -m eval.grade runs/x/samples.jsonl --jobs 2
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

from eval import code_grading, humaneval, mbpp
from eval.common import atomic_write_json, atomic_write_jsonl, data_source, read_jsonl
from eval.data_files import DataFileError
from eval.tasks import ANSWER_TASKS, CODE_TASKS, TASKS


def _gold_lookup(task: str, data_dir: str | None, hub: bool) -> dict[str, str]:
    return {ex["id"]: ex["gold"] for ex in TASKS[task].load_examples(data_dir, hub=hub)}


def grade_answer_rows(task: str, rows: list[dict], data_dir: str | None, *, hub: bool = True) -> list[dict]:
    module = ANSWER_TASKS[task]
    golds: dict[str, str] | None = None
    graded = []
    for row in rows:
        gold = None if row.get("gold") is None else str(row["gold"])
        if gold is None:
            golds = golds if golds is not None else _gold_lookup(task, data_dir, hub)
            if row["id"] not in golds:
                raise KeyError(f"{task}: id {row['id']!r} is not in the dataset")
            gold = golds[row["id"]]
        output = row.get("output") or ""
        extracted = {rule: module.extract(output, rule) for rule in module.RULES}
        correct = {rule: extracted[rule] is not None and module.is_correct(output, gold, rule) for rule in module.RULES}
        graded.append({**row, "gold": gold, "extracted": extracted, "correct": correct})
    return graded


def _check_one(task: str, item: tuple[str, dict], timeout: float | None) -> dict:
    output, spec = item
    return CODE_TASKS[task].check(output, spec, timeout=timeout).to_dict()


def grade_code_rows(task: str, rows: list[dict], tasks: dict[str, dict], source: dict, *,
                    jobs: int, timeout: float | None) -> list[dict]:
    module = CODE_TASKS[task]
    missing = sorted({row["id"] for row in rows} - tasks.keys())
    if missing:
        raise KeyError(f"{task}: ids not in the dataset ({source.get('dataset')}): {missing[:5]}")
    items = [(row.get("output") or "", tasks[row["id"]]) for row in rows]
    verdicts = code_grading.parallel_map(functools.partial(_check_one, task, timeout=timeout), items, jobs=jobs)
    graded = []
    for row, verdict in zip(rows, verdicts):
        extracted = module.extract(row.get("output") or "")
        graded.append({**row, "extracted": {"pissa": extracted}, "correct": {"pissa": verdict["passed"]},
                       "verdict": verdict, "grader": source})
    return graded


def summarise(task: str, graded: list[dict], *, expected_n: int | None, extra: dict[str, Any]) -> dict:
    rules = TASKS[task].RULES
    n = len(graded)
    summary: dict[str, Any] = {
        "n": n,
        "expected_n": expected_n,
        "complete": expected_n is None or n == expected_n,
        "accuracy": {rule: (sum(r["correct"][rule] for r in graded) / n if n else None) for rule in rules},
        "correct": {rule: sum(r["correct"][rule] for r in graded) for rule in rules},
        "extracted": {rule: sum(r["extracted"][rule] is not None for r in graded) for rule in rules},
        "finish_reasons": dict(collections.Counter(r.get("finish_reason") for r in graded)),
        "task_versions": sorted({str(r.get("task_version")) for r in graded}),
        "grader_version": TASKS[task].SPEC.version,
        **extra,
    }
    if task in CODE_TASKS and any(r["verdict"].get("plus") is not None for r in graded):
        summary["accuracy_plus"] = sum(bool(r["verdict"].get("plus")) for r in graded) / n if n else None
    return summary


def grade_file(samples: str | os.PathLike, *, out: str | os.PathLike | None = None,
               summary_path: str | os.PathLike | None = None, data_dir: str | None = None, hub: bool = True,
               jobs: int = 1,
               timeout: float | None = None, mbpp_task_set: str = "pissa399",
               evalplus_humaneval: str | None = None, evalplus_mbpp: str | None = None,
               use_evalplus: bool | None = None) -> dict:
    samples = Path(samples)
    rows = read_jsonl(samples)
    by_task: dict[str, list[dict]] = collections.defaultdict(list)
    for row in rows:
        if row.get("task") not in TASKS:
            raise ValueError(f"row {row.get('id')!r}: unknown task {row.get('task')!r} (known: {sorted(TASKS)})")
        by_task[row["task"]].append(row)

    started = time.time()
    graded_by_task: dict[str, list[dict]] = {}
    summary: dict[str, Any] = {"samples": str(samples), "tasks": {}}
    for task, task_rows in by_task.items():
        if task in ANSWER_TASKS:
            graded = grade_answer_rows(task, task_rows, data_dir, hub=hub)
            spec = ANSWER_TASKS[task].SPEC
            expected = {"gsm8k": 1319, "math": 5000}[task]
            extra = {"data": data_source(spec, data_dir, hub=hub)}
        else:
            if task == "humaneval":
                tasks, source = humaneval.load_tasks(data_dir, evalplus_path=evalplus_humaneval,
                                                     use_evalplus=use_evalplus, hub=hub)
            else:
                tasks, source = mbpp.load_tasks(data_dir, task_set=mbpp_task_set, evalplus_path=evalplus_mbpp,
                                                use_evalplus=use_evalplus, hub=hub)
            graded = grade_code_rows(task, task_rows, tasks, source, jobs=jobs, timeout=timeout)
            expected = len(tasks)
            extra = {"grader": source, "data": data_source(CODE_TASKS[task].SPEC, data_dir, hub=hub)}
        graded_by_task[task] = graded
        summary["tasks"][task] = summarise(task, graded, expected_n=expected, extra=extra)
    summary["grading_seconds"] = round(time.time() - started, 2)

    graded_for = {}
    for task, task_rows in by_task.items():
        graded_for.update({id(row): g for row, g in zip(task_rows, graded_by_task[task])})
    graded_rows = [graded_for[id(row)] for row in rows]  # input order
    out = Path(out) if out else samples.with_name(samples.name.removesuffix(".jsonl") + ".graded.jsonl")
    summary_path = Path(summary_path) if summary_path else out.with_name(
        out.name.removesuffix(".jsonl") + ".summary.json")
    atomic_write_jsonl(out, graded_rows)
    summary["graded"] = str(out)
    atomic_write_json(summary_path, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("samples", help="generation JSONL (one row per sample)")
    parser.add_argument("--out", help="graded JSONL (default: SAMPLES.graded.jsonl)")
    parser.add_argument("--summary", help="summary JSON (default: SAMPLES.graded.summary.json)")
    parser.add_argument("--data-dir", help="data directory searched first for each benchmark file, before "
                                           "$MISS_DATA_DIR, the repository's data/ and the hub (see data/README.md)")
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="sandbox processes")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per program (default 10)")
    parser.add_argument("--mbpp-task-set", choices=mbpp.TASK_SETS, default="pissa399")
    parser.add_argument("--evalplus-humaneval", help="HumanEvalPlus-*.jsonl[.gz] to grade with")
    parser.add_argument("--evalplus-mbpp", help="MbppPlus-*.jsonl[.gz] to grade with")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--evalplus", dest="use_evalplus", action="store_const", const=True,
                       help="require the EvalPlus data files")
    group.add_argument("--no-evalplus", dest="use_evalplus", action="store_const", const=False,
                       help="grade code with the original tests even when EvalPlus data is present")
    args = parser.parse_args(argv)
    try:
        summary = grade_file(args.samples, out=args.out, summary_path=args.summary, data_dir=args.data_dir,
                             jobs=args.jobs, timeout=args.timeout, mbpp_task_set=args.mbpp_task_set,
                             evalplus_humaneval=args.evalplus_humaneval, evalplus_mbpp=args.evalplus_mbpp,
                             use_evalplus=args.use_evalplus)
    except DataFileError as e:
        print(f"eval.grade: error: {e}", file=sys.stderr)
        return 2
    for task, info in summary["tasks"].items():
        scores = ", ".join(f"{rule} {acc:.4f}" for rule, acc in info["accuracy"].items() if acc is not None)
        flag = "" if info["complete"] else f" (INCOMPLETE: {info['n']}/{info['expected_n']})"
        print(f"{task}: n={info['n']} {scores}{flag}")
    print(f"graded rows: {summary['graded']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
