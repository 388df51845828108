"""EvalPlus data (HumanEval+ / MBPP+) graded in our sandbox.

The ``evalplus`` package downloads its data files from GitHub releases, which is impossible offline, so
this module uses them only when a local copy exists: an explicit path, ``HUMANEVAL_OVERRIDE_PATH`` /
``MBPP_OVERRIDE_PATH`` (the package's own override variables) or the package cache
(``~/.cache/evalplus/HumanEvalPlus-v0.1.10.jsonl``, ``MbppPlus-v0.1.0.jsonl``). PiSSA's MBPP column used
MBPP+ v0.1.0 (399 tasks); evalplus >= 0.3 defaults to v0.2.0 (378 tasks), so the version is recorded.

Grading follows EvalPlus' differential testing: the expected outputs come from the dataset's canonical
solution (run in this process, as ``evalplus`` itself does; it is the benchmark's reference code), then the
candidate runs every ``base_input`` ("base", the paper's column) and every ``plus_input`` ("plus") inside
``eval.sandbox`` and each output is compared as EvalPlus compares it (exact match; ``np.allclose`` with the
task's ``atol`` or 1e-6 for float outputs; the package's special oracles for a few tasks). Unlike EvalPlus
there is one wall-clock limit per task, not one per input.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import secrets
from pathlib import Path
from eval import sandbox
from eval.code_grading import Verdict
from eval.common import iter_jsonl
from eval.data_files import sha256_file

FILE_STEMS = {"humaneval": "HumanEvalPlus", "mbpp": "MbppPlus"}
OVERRIDE_ENV = {"humaneval": "HUMANEVAL_OVERRIDE_PATH", "mbpp": "MBPP_OVERRIDE_PATH"}
PISSA_VERSIONS = {"humaneval": "v0.1.10", "mbpp": "v0.1.0"}
_VERSION_RE = re.compile(r"(v\d+\.\d+\.\d+)")


@dataclasses.dataclass
class PlusData:
    dataset: str  # "humaneval" | "mbpp"
    path: str
    version: str  # from the file name ("unknown" when it carries none)
    sha256: str
    tasks: dict[str, dict]

    def describe(self) -> dict[str, str]:
        return {"backend": "evalplus", "dataset": FILE_STEMS[self.dataset], "version": self.version,
                "path": self.path, "sha256": self.sha256}


def find_file(dataset: str, path: str | os.PathLike | None = None, version: str | None = None) -> Path | None:
    """The EvalPlus data file to use, or None when there is no local copy."""
    if path:
        return Path(path)
    env = os.environ.get(OVERRIDE_ENV[dataset])
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evalplus"
    stem = FILE_STEMS[dataset]
    for suffix in (".jsonl", ".jsonl.gz"):
        candidate = cache / f"{stem}-{version or PISSA_VERSIONS[dataset]}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def load(dataset: str, path: str | os.PathLike) -> PlusData:
    tasks = {}
    for task in iter_jsonl(path):
        if dataset == "mbpp":
            from evalplus.data.mbpp import mbpp_deserialize_inputs

            task["base_input"] = mbpp_deserialize_inputs(task["task_id"], task["base_input"])
            task["plus_input"] = mbpp_deserialize_inputs(task["task_id"], task["plus_input"])
        task["_plus_dataset"] = dataset
        tasks[task["task_id"]] = task
    match = _VERSION_RE.search(Path(path).name)
    return PlusData(dataset, str(path), match.group(1) if match else "unknown", sha256_file(path), tasks)


_EXPECTED: dict[tuple[str, str], dict[str, list]] = {}


def expected_outputs(task: dict) -> dict[str, list]:
    """Outputs of the canonical solution on the base and plus inputs (memoised per task)."""
    key = (task["_plus_dataset"], task["task_id"])
    if key not in _EXPECTED:
        from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
        from evalplus.gen.util import trusted_exec

        not_none = task["_plus_dataset"] == "mbpp" and task["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS
        code = task["prompt"] + task["canonical_solution"]
        result = {}
        for part in ("base", "plus"):
            outputs, times = trusted_exec(code, task[f"{part}_input"], task["entry_point"],
                                          record_time=True, output_not_none=not_none)
            result[part], result[f"{part}_time"] = outputs, times
        _EXPECTED[key] = result
    return _EXPECTED[key]


_HARNESS = '''\
import copy as _copy, os as _os, pickle as _pickle, sys as _sys


def _miss_harness():
    nonce = _sys.stdin.readline().strip()
    _sys.stdin.close()
    with open("data.pkl", "rb") as fh:
        data = _pickle.load(fh)
    _os.remove("data.pkl")
    import numpy as np
    from evalplus.eval._special_oracle import (MBPP_OUTPUT_NOT_NONE_TASKS, MBPP_OUTPUT_SET_EQ_TASKS,
                                               _digit_distance_nums, _poly, _surface_Area)
    write, deepcopy, allclose, ndarray = _os.write, _copy.deepcopy, np.allclose, np.ndarray
    write(1, ("\\n%s ready 1\\n" % nonce).encode())

    def is_floats(x):
        if isinstance(x, float):
            return True
        if isinstance(x, (list, tuple)) and x:
            return all(isinstance(i, float) for i in x)
        if isinstance(x, ndarray):
            return x.dtype == np.float64 or x.dtype == np.float32
        return False

    def one(fn, inp, exp, atol):
        dataset, entry = data["dataset"], data["entry_point"]
        out = fn(*deepcopy(inp))
        exact = out == exp
        if dataset == "mbpp":
            if entry == "are_equivalent":
                exact = True
            elif entry == "sum_div":
                exact = exact or out == 0
            elif entry == "surface_Area":
                exact = exact or abs(out - _surface_Area(*inp)) <= atol
            elif entry == "digit_distance_nums":
                exact = exact or out == _digit_distance_nums(*inp)
            elif entry in MBPP_OUTPUT_SET_EQ_TASKS:
                exact = set(out) == set(exp)
            elif entry in MBPP_OUTPUT_NOT_NONE_TASKS:
                exact = out == exp if isinstance(out, bool) else exp == (out is not None)
        if dataset == "humaneval" and entry == "find_zero":
            return abs(_poly(*inp, out)) <= atol, atol
        if atol == 0 and is_floats(exp):
            atol = 1e-6
        if not exact and atol != 0:
            if type(out) != type(exp):
                return False, atol
            if isinstance(exp, (list, tuple)) and len(out) != len(exp):
                return False, atol
            return bool(allclose(out, exp, rtol=1e-07, atol=atol)), atol
        return bool(exact), atol

    def part(fn, name):
        atol = data["atol"]
        for inp, exp in zip(data[name + "_input"], data[name]):
            try:
                ok, atol = one(fn, inp, exp, atol)
            except BaseException:
                ok = False
            if not ok:
                return False
        return True

    def finish(ns):
        fn = ns[data["entry_point"]]
        base = part(fn, "base")
        write(1, ("\\n%s base %d\\n" % (nonce, base)).encode())
        plus = base and part(fn, "plus")
        write(1, ("\\n%s plus %d\\n" % (nonce, plus)).encode())

    return finish


_miss_finish = _miss_harness()
del _miss_harness
_miss_ns = {{"__name__": "__solution__", "__builtins__": __builtins__}}
exec(compile({solution!r}, "solution.py", "exec"), _miss_ns)
_miss_finish(_miss_ns)
'''


def time_limit(task: dict) -> float:
    """EvalPlus' budget: max(1 s, 4 x the reference time) per input, at most 60 s; +3 s start-up."""
    expected = expected_outputs(task)
    per_input = [max(1.0, 4.0 * t) for t in expected["base_time"] + expected["plus_time"]]
    return min(60.0, sum(per_input)) + 3.0


def check(solution: str, task: dict, *, timeout: float | None = None,
          limits: sandbox.Limits | None = None) -> Verdict:
    """Grade a full solution (prompt + post-processed completion) on an EvalPlus task."""
    expected = expected_outputs(task)
    data = {"dataset": task["_plus_dataset"], "entry_point": task["entry_point"], "atol": task.get("atol", 0),
            "base_input": task["base_input"], "plus_input": task["plus_input"],
            "base": expected["base"], "plus": expected["plus"]}
    nonce = secrets.token_hex(16)
    program = _HARNESS.format(solution=solution)
    res = sandbox.run(program, timeout=timeout or time_limit(task), stdin=nonce + "\n",
                      files={"data.pkl": pickle.dumps(data)}, limits=limits)
    marks = dict(line.split()[1:] for line in res.stdout.splitlines()
                 if line.startswith(nonce + " ") and len(line.split()) == 3)
    if "ready" not in marks and not res.timed_out and "Error" in res.stderr:
        # the harness itself could not start (e.g. numpy or evalplus missing for the sandbox's
        # interpreter): an environment problem, not a wrong completion
        raise RuntimeError(f"EvalPlus harness failed before the solution ran: {res.stderr.strip()[-500:]}")
    base = marks.get("base") == "1"
    plus = marks.get("plus") == "1"  # a run that died during the plus inputs fails them
    if base:
        reason = "passed"
    elif res.timed_out:
        reason = "timeout"
    elif res.output_overflow:
        reason = "output limit"
    elif "base" in marks:
        reason = "wrong output on a base input"
    else:
        lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1][:300] if lines else "no success marker (the program ended before all tests ran)"
    return Verdict(base, reason, round(res.duration, 4), plus=plus)
