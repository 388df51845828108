"""MBPP: PiSSA prompt, post-processing and pass@1 (greedy) (SPEC §3.6).

Task sets:
  ``pissa399`` (default): the 399 task ids of MBPP+ v0.1.0 that PiSSA evaluated (``Mbpp/2``...``Mbpp/809``),
  i.e. the 427 sanitized-MBPP tasks without ``EXCLUDED_FROM_PISSA399``. Prompt text = the sanitized
  prompt with a final "." added when it lacks one (as MBPP+ prints it), tests = ``test_imports`` +
  ``test_list`` of sanitized MBPP.
  ``test500``: the standard test split, task ids 11-510 of the full ``mbpp.jsonl``; prompt text = ``text``,
  tests = ``test_setup_code`` + ``test_list``.
Instruction: "{text} Your code should satisfy the following assertion:\\n```python\\n{first test}\\n```" in the
PiSSA code template. Grading: ``eval.code_grading.postprocess`` of the output, then the tests (backend ``own``), or
MBPP+ base/plus inputs (backend ``evalplus``, ``pissa399`` only) when its data file is available.
"""

from __future__ import annotations

import json
import os

from eval import code_grading, plus, sandbox
from eval.code_grading import Verdict
from eval.common import CODE_TEMPLATE, TaskSpec, load_hub, open_text, read_jsonl, render_code_prompt
from eval.data_files import locate

SPEC = TaskSpec(
    name="mbpp",
    version="mbpp-pissa399-mbppplus-v0.1.0-ids-v1",
    hub_id="google-research-datasets/mbpp",
    hub_config="sanitized",
    hub_split="train+validation+test+prompt",
    local_files=("mbpp/sanitized-mbpp.json", "mbpp/mbpp.jsonl"),
    prompt_template=CODE_TEMPLATE,
    rules=("pissa",),
)
RULES = SPEC.rules
TASK_SETS = ("pissa399", "test500")
VERSIONS = {"pissa399": SPEC.version, "test500": "mbpp-test500-pissa-prompt-v1"}
INSTRUCTION = "{text} Your code should satisfy the following assertion:\n```python\n{test}\n```"

# sanitized-MBPP tasks that are not in MBPP+ v0.1.0 (EvalPlus dropped them as ill-posed or broken)
EXCLUDED_FROM_PISSA399 = frozenset({
    163, 228, 246, 248, 291, 304, 307, 393, 399, 401, 408, 411, 417, 434, 443, 444, 452, 464, 584, 617,
    625, 627, 738, 747, 756, 776, 779, 802,
})


def _read_sanitized(data_dir, hub: bool) -> list[dict]:
    path = locate("mbpp/sanitized-mbpp.json", data_dir, hub=hub)
    if path is not None:
        with open_text(path) as fh:
            return json.load(fh)
    rows = []
    for split in ("train", "validation", "test", "prompt"):
        rows.extend(load_hub(SPEC.hub_id, "sanitized", split))
    return sorted(rows, key=lambda r: r["task_id"])


def _read_full(data_dir, hub: bool) -> list[dict]:
    path = locate("mbpp/mbpp.jsonl", data_dir, hub=hub)
    return read_jsonl(path) if path else load_hub(SPEC.hub_id, "full", "test")


def _sanitized_task(row: dict) -> dict:
    text = row["prompt"].strip()
    if not text.endswith("."):
        text += "."
    return {"task_id": f"Mbpp/{row['task_id']}", "text": text, "reference": row["code"],
            "first_test": row["test_list"][0],
            "tests": "\n".join([*row["test_imports"], *row["test_list"]]) + "\n"}


def _full_task(row: dict) -> dict:
    setup = row.get("test_setup_code") or ""
    return {"task_id": f"Mbpp/{row['task_id']}", "text": row["text"], "reference": row["code"],
            "first_test": row["test_list"][0], "tests": "\n".join([setup, *row["test_list"]]) + "\n"}


def load_tasks(data_dir: str | os.PathLike | None = None, *, task_set: str = "pissa399",
               evalplus_path: str | os.PathLike | None = None,
               use_evalplus: bool | None = None, hub: bool = True) -> tuple[dict[str, dict], dict]:
    """Tasks by id ("Mbpp/2"...) and a description of the grading backend and data.

    ``use_evalplus``: True requires the MBPP+ file, False never uses it, None uses it when found
    (``pissa399`` only). The EvalPlus tasks keep their own tests but get our prompt fields.
    """
    if task_set not in TASK_SETS:
        raise ValueError(f"task_set must be one of {TASK_SETS}, got {task_set!r}")
    if task_set == "pissa399":
        rows = [r for r in _read_sanitized(data_dir, hub) if r["task_id"] not in EXCLUDED_FROM_PISSA399]
        tasks = {t["task_id"]: t for t in map(_sanitized_task, rows)}
        source = {"backend": "own", "dataset": "sanitized-MBPP (MBPP+ v0.1.0 ids)", "version": VERSIONS[task_set]}
    else:
        rows = [r for r in _read_full(data_dir, hub) if 11 <= r["task_id"] <= 510]
        tasks = {t["task_id"]: t for t in map(_full_task, rows)}
        source = {"backend": "own", "dataset": "MBPP full, test split 11-510", "version": VERSIONS[task_set]}
    plus_file = None
    if use_evalplus is not False and task_set == "pissa399":
        plus_file = plus.find_file("mbpp", evalplus_path)
    if use_evalplus and (plus_file is None or not plus_file.is_file()):
        raise FileNotFoundError("MBPP+ data not found (pass evalplus_path or set MBPP_OVERRIDE_PATH)")
    if plus_file is not None and plus_file.is_file():
        data = plus.load("mbpp", plus_file)
        for task_id, ptask in data.tasks.items():
            ptask.update({k: v for k, v in tasks.get(task_id, {}).items() if k in ("text", "first_test")})
        return data.tasks, data.describe()
    return tasks, source


def render_prompt(task: dict) -> str:
    return render_code_prompt(INSTRUCTION.format(text=task["text"], test=task["first_test"]))


def load_examples(data_dir: str | os.PathLike | None = None, task_set: str = "pissa399", *,
                  hub: bool = True) -> list[dict]:
    tasks, _ = load_tasks(data_dir, task_set=task_set, use_evalplus=False, hub=hub)
    return [{"id": task_id, "prompt": render_prompt(task)} for task_id, task in tasks.items()]


def extract(text: str, rule: str = "pissa") -> str | None:
    if rule != "pissa":
        raise ValueError(f"unknown mbpp rule {rule!r}; expected one of {RULES}")
    return code_grading.postprocess(text)


def check(completion: str, task: dict, *, timeout: float | None = None, postprocess: bool = True,
          limits: sandbox.Limits | None = None) -> Verdict:
    """Grade one completion (raw model output unless ``postprocess=False``) against ``task``."""
    body = code_grading.postprocess(completion) if postprocess else completion
    if "base_input" in task:
        return plus.check(task["prompt"] + body, task, timeout=timeout, limits=limits)
    return code_grading.run_tests(body, task["tests"], timeout=timeout or code_grading.DEFAULT_TIMEOUT, limits=limits)


def is_correct(text: str, gold: dict, rule: str = "pissa") -> bool:
    """``gold`` is the task dict (its tests are the reference)."""
    extract(text, rule)
    return check(text, gold).passed
