"""HumanEval and MBPP graders on the real reference solutions, PiSSA's post-processing, the EvalPlus
backend (on a small file in EvalPlus' format) and ``python -m eval.grade`` end to end."""

from __future__ import annotations

import json

import pytest

from eval import code_grading, grade, humaneval, mbpp, plus

JOBS = 2  # the CI machine has two cores

# Reference solutions known not to pass their own tests, with the reason. The data files in use
# (openai/human-eval, and the corrected mbpp.jsonl / sanitized-mbpp.json) have none.
HUMANEVAL_BROKEN: dict[str, str] = {}
MBPP_BROKEN: dict[str, str] = {}


def drop_last_line(solution: str) -> str:
    """The solution without its last non-blank line (often its ``return``)."""
    lines = solution.rstrip().split("\n")
    return "\n".join(lines[:-1]) + "\n"


def _humaneval_case(item: tuple[dict, bool]) -> tuple[str, bool, bool, str]:
    task, truncated = item
    solution = drop_last_line(task["canonical_solution"]) if truncated else task["canonical_solution"]
    verdict = humaneval.check(solution, task, postprocess=False)
    return task["task_id"], truncated, verdict.passed, verdict.reason


def _mbpp_case(task: dict) -> tuple[str, bool, str]:
    verdict = mbpp.check(task["reference"], task, postprocess=False)
    return task["task_id"], verdict.passed, verdict.reason


def test_humaneval_canonical_solutions_pass_and_truncated_ones_fail(data_dir):
    tasks, _ = humaneval.load_tasks(data_dir, use_evalplus=False)
    assert len(tasks) == 164
    results = code_grading.parallel_map(_humaneval_case, [(t, cut) for t in tasks.values() for cut in (False, True)],
                                jobs=JOBS)
    failing = {tid: reason for tid, cut, passed, reason in results if not cut and not passed}
    assert failing.keys() == HUMANEVAL_BROKEN.keys(), failing
    still_passing = [tid for tid, cut, passed, _ in results if cut and passed]
    assert still_passing == []


def test_mbpp_pissa399_reference_solutions_pass(data_dir):
    tasks, source = mbpp.load_tasks(data_dir, use_evalplus=False)
    assert len(tasks) == 399 and source["backend"] == "own"
    results = code_grading.parallel_map(_mbpp_case, list(tasks.values()), jobs=JOBS)
    failing = {tid: reason for tid, passed, reason in results if not passed}
    assert failing.keys() == MBPP_BROKEN.keys(), failing


def test_mbpp_test500_reference_solutions_pass(data_dir):
    tasks, _ = mbpp.load_tasks(data_dir, task_set="test500")
    assert len(tasks) == 500
    results = code_grading.parallel_map(_mbpp_case, list(tasks.values()), jobs=JOBS)
    failing = {tid: reason for tid, passed, reason in results if not passed}
    assert failing.keys() == MBPP_BROKEN.keys(), failing


@pytest.mark.parametrize("raw,expected", [
    ("def f():\n    return 1", "def f():\n    return 1"),
    ("Here you go:\n```python\ndef f():\n    return 1\n```\nThis works because...", "def f():\n    return 1"),
    ("```python\ndef f():\n    return 1\n```\n```python\nprint(f())\n```", "def f():\n    return 1"),
    # no closing fence: PiSSA's script strips before removing the fence marker, so a newline stays
    ("```python\ndef f():\n    return 1", "\ndef f():\n    return 1"),
    ('def f():\n    return 1\n\nif __name__ == "__main__":\n    print(f())', "def f():\n    return 1"),
    ("def f():\n    return 1\n\n# Example usage\nprint(f())", "def f():\n    return 1"),
    ("def f():\n    return 1\nassert f() == 1", "def f():\n    return 1"),
    # the cut is at the first "assert" anywhere, as in PiSSA's script
    ("def f(x):\n    assert x > 0\n    return x", "def f(x):"),
    ("def f():\r\n    return 1\r\n", "def f():\n    return 1\n"),
    ("```\ndef f():\n    return 1\n```", "```\ndef f():\n    return 1\n```"),  # only ```python fences count
])
def test_pissa_postprocessing(raw, expected):
    assert code_grading.postprocess(raw) == expected
    assert humaneval.extract(raw) == mbpp.extract(raw) == expected


def test_check_applies_postprocessing_and_the_task_prompt(data_dir):
    tasks, _ = humaneval.load_tasks(data_dir, use_evalplus=False)
    task = tasks["HumanEval/0"]
    full = task["prompt"] + task["canonical_solution"]
    chatty = f"Sure!\n```python\n{full}\n```\n\n# Example usage\nprint(has_close_elements([1.0], 0.5))\n"
    assert humaneval.check(chatty, task).passed
    assert humaneval.is_correct(chatty, task)
    assert not humaneval.check("I cannot solve this.", task).passed


# ---------------------------------------------------------------------------------------------------
# EvalPlus backend on files in EvalPlus' format (the real ones cannot be downloaded here)

def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def humaneval_plus_file(tmp_path):
    task = {
        "task_id": "HumanEval/2",
        "prompt": 'def truncate_number(number: float) -> float:\n    """Decimal part of a positive float."""\n',
        "entry_point": "truncate_number",
        "canonical_solution": "    return number % 1.0\n",
        "base_input": [[3.5], [1.25]],
        "plus_input": [[123.456], [0.0001]],
        "atol": 0,
        "contract": "",
        "test": "",
    }
    return _write_jsonl(tmp_path / "HumanEvalPlus-v0.1.10.jsonl", [task])


@pytest.fixture()
def mbpp_plus_file(tmp_path):
    task = {
        "task_id": "Mbpp/2",
        "prompt": '"""\nWrite a function to find the shared elements from the given two lists.\n"""\n',
        "entry_point": "similar_elements",
        "canonical_solution": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))\n",
        "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]], [[1, 2, 3, 4], [5, 4, 3, 7]]],
        "plus_input": [[[1, 2], [3, 4]]],
        "atol": 0,
        "contract": "",
        "assertion": "",
    }
    return _write_jsonl(tmp_path / "MbppPlus-v0.1.0.jsonl", [task])


def test_evalplus_backend_base_and_plus(humaneval_plus_file):
    tasks, source = humaneval.load_tasks(None, evalplus_path=humaneval_plus_file)
    assert source["backend"] == "evalplus" and source["version"] == "v0.1.10" and len(source["sha256"]) == 64
    task = tasks["HumanEval/2"]
    good = humaneval.check("    return number - int(number)\n", task, postprocess=False)
    base_only = humaneval.check("    return number % 1.0 if number < 100 else 0.0\n", task, postprocess=False)
    wrong = humaneval.check("    return 0.5\n", task, postprocess=False)
    exits = humaneval.check("    import os\n    os._exit(0)\n", task, postprocess=False)
    assert (good.passed, good.plus) == (True, True)
    assert (base_only.passed, base_only.plus) == (True, False)
    assert (wrong.passed, wrong.plus) == (False, False)
    assert not exits.passed


def test_evalplus_mbpp_uses_the_special_oracles(mbpp_plus_file, data_dir):
    tasks, source = mbpp.load_tasks(data_dir, evalplus_path=mbpp_plus_file)
    assert source["dataset"] == "MbppPlus" and source["version"] == "v0.1.0"
    task = tasks["Mbpp/2"]
    assert mbpp.render_prompt(task).startswith(mbpp.render_prompt({"text": task["text"], "first_test": ""})[:80])
    # any order of the shared elements is right (set comparison oracle of EvalPlus)
    reordered = "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b), reverse=True))\n"
    assert mbpp.check(reordered, task).passed
    assert not mbpp.check("def similar_elements(a, b):\n    return ()\n", task).passed


def test_evalplus_required_but_missing_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HUMANEVAL_OVERRIDE_PATH", raising=False)
    with pytest.raises(FileNotFoundError):
        humaneval.load_tasks(None, use_evalplus=True)
    assert plus.find_file("humaneval") is None


# ---------------------------------------------------------------------------------------------------
# python -m eval.grade

def test_grade_cli_end_to_end(data_dir, tmp_path, capsys):
    he_tasks, _ = humaneval.load_tasks(data_dir, use_evalplus=False)
    mb_tasks, _ = mbpp.load_tasks(data_dir, use_evalplus=False)
    he0 = he_tasks["HumanEval/0"]
    rows = [
        {"task": "gsm8k", "id": "gsm8k/0", "output": "16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\nThe answer is: 18",
         "finish_reason": "stop"},
        {"task": "math", "id": "math/x", "gold": r"\frac{1}{2}", "output": "The answer is: 0.5", "finish_reason": "stop"},
        {"task": "gsm8k", "id": "gsm8k/1", "output": "#### 3", "finish_reason": "length"},
        {"task": "humaneval", "id": "HumanEval/0", "finish_reason": "stop",
         "output": f"```python\n{he0['prompt']}{he0['canonical_solution']}```\n# Example usage\n"},
        {"task": "math", "id": "math/y", "gold": "3", "output": "no idea", "finish_reason": "length"},
        {"task": "mbpp", "id": "Mbpp/2", "output": mb_tasks["Mbpp/2"]["reference"], "finish_reason": "stop"},
        {"task": "mbpp", "id": "Mbpp/3", "output": "def is_not_prime(n):\n    return True\n", "finish_reason": "stop"},
    ]
    samples = tmp_path / "samples.jsonl"
    _write_jsonl(samples, rows)
    assert grade.main([str(samples), "--data-dir", str(data_dir), "--jobs", "1", "--no-evalplus"]) == 0
    printed = capsys.readouterr().out
    assert "gsm8k: n=2" in printed and "INCOMPLETE" in printed

    graded = [json.loads(line) for line in (tmp_path / "samples.graded.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "samples.graded.summary.json").read_text())
    assert [r["id"] for r in graded] == [r["id"] for r in rows]  # input order kept
    by_id = {r["id"]: r for r in graded}
    assert by_id["gsm8k/0"]["gold"] == "18" and by_id["gsm8k/0"]["correct"] == {"pissa": True, "flexible": True}
    assert by_id["gsm8k/1"]["extracted"] == {"pissa": None, "flexible": "3"}
    assert by_id["math/x"]["correct"] == {"pissa": True, "math_verify": True}
    assert by_id["math/y"]["extracted"] == {"pissa": None, "math_verify": None}
    assert by_id["HumanEval/0"]["verdict"]["passed"] and by_id["HumanEval/0"]["grader"]["backend"] == "own"
    assert by_id["Mbpp/2"]["correct"] == {"pissa": True} and by_id["Mbpp/3"]["correct"] == {"pissa": False}

    tasks = summary["tasks"]
    assert tasks["gsm8k"]["accuracy"] == {"pissa": 0.5, "flexible": 1.0}
    assert tasks["math"]["correct"] == {"pissa": 1, "math_verify": 1}
    assert tasks["humaneval"]["accuracy"] == {"pissa": 1.0}
    assert tasks["mbpp"]["accuracy"] == {"pissa": 0.5} and tasks["mbpp"]["expected_n"] == 399
    assert not tasks["mbpp"]["complete"] and tasks["gsm8k"]["finish_reasons"] == {"stop": 1, "length": 1}
    assert tasks["gsm8k"]["data"]["source"] == "local"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "samples.graded.jsonl", "samples.graded.summary.json", "samples.jsonl"]  # no temp files left


def test_grade_rejects_unknown_tasks_and_ids(data_dir, tmp_path):
    bad_task = _write_jsonl(tmp_path / "a.jsonl", [{"task": "arc", "id": "1", "output": ""}])
    with pytest.raises(ValueError):
        grade.grade_file(bad_task, data_dir=str(data_dir))
    bad_id = _write_jsonl(tmp_path / "b.jsonl", [{"task": "gsm8k", "id": "gsm8k/99999", "output": ""}])
    with pytest.raises(KeyError):
        grade.grade_file(bad_id, data_dir=str(data_dir))
    assert not (tmp_path / "b.graded.jsonl").exists()


def test_rows_built_for_generation_grade_as_expected(data_dir, tmp_path):
    """``sample_row`` (what generation writes) -> ``grade_file``: right answers score, wrong ones do not."""
    from eval.common import sample_row
    from eval.tasks import TASKS

    he_tasks, _ = humaneval.load_tasks(data_dir, use_evalplus=False)
    mb_tasks, _ = mbpp.load_tasks(data_dir, use_evalplus=False)
    right = {
        "gsm8k": lambda ex: f"The answer is: {ex['gold']}",
        "math": lambda ex: f"The answer is: {ex['gold']}",
        "humaneval": lambda ex: f"```python\n{he_tasks[ex['id']]['prompt']}{he_tasks[ex['id']]['canonical_solution']}```",
        "mbpp": lambda ex: f"```python\n{mb_tasks[ex['id']]['reference']}\n```",
    }
    rows = []
    for name, module in TASKS.items():
        for i, ex in enumerate(module.load_examples(data_dir)[:2]):
            output = right[name](ex) if i == 0 else "I am not sure."
            rows.append(sample_row(module.SPEC, ex, output, "stop", model="test"))
    samples = _write_jsonl(tmp_path / "gen.jsonl", rows)
    summary = grade.grade_file(samples, data_dir=str(data_dir), jobs=1, use_evalplus=False)
    for name, info in summary["tasks"].items():
        assert info["n"] == 2 and info["task_versions"] == [TASKS[name].SPEC.version]
        assert all(count == 1 for count in info["correct"].values()), (name, info["correct"])
