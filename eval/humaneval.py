"""HumanEval (164 problems): PiSSA prompt, post-processing and pass@1 (greedy) (SPEC §3.6).

Prompt: "Create a Python script for this problem:\\n" + the task's prompt in the PiSSA code template (every
four spaces become a tab, as in pissa-dataset). Grading: ``eval.code_grading.postprocess`` of the output (rule
``pissa``, the only rule), appended to the task prompt as EvalPlus does for a "completion", then the
tests. Backend ``own``: the original HumanEval ``check(candidate)`` tests in ``eval.sandbox``. Backend
``evalplus``: HumanEval+ base/plus inputs (``eval.plus``), used when its data file is available locally.
"""

from __future__ import annotations

import os

from eval import code_grading, plus, sandbox
from eval.code_grading import Verdict
from eval.common import CODE_TEMPLATE, TaskSpec, load_hub, read_jsonl, render_code_prompt
from eval.data_files import describe, locate

SPEC = TaskSpec(
    name="humaneval",
    version="humaneval-164-pissa-prompt-v1",
    hub_id="openai/openai_humaneval",
    hub_config=None,
    hub_split="test",
    local_files=("humaneval/HumanEval.jsonl.gz",),
    prompt_template=CODE_TEMPLATE,
    rules=("pissa",),
)
RULES = SPEC.rules
INSTRUCTION = "Create a Python script for this problem:\n{prompt}"


def render_prompt(task: dict) -> str:
    return render_code_prompt(INSTRUCTION.format(prompt=task["prompt"]))


def load_tasks(data_dir: str | os.PathLike | None = None, *, evalplus_path: str | os.PathLike | None = None,
               use_evalplus: bool | None = None, hub: bool = True) -> tuple[dict[str, dict], dict]:
    """Tasks by id ("HumanEval/0"...) and a description of the grading backend and data.

    ``use_evalplus``: True requires the HumanEval+ file, False never uses it, None uses it when found.
    """
    plus_file = plus.find_file("humaneval", evalplus_path) if use_evalplus is not False else None
    if use_evalplus and (plus_file is None or not plus_file.is_file()):
        raise FileNotFoundError("HumanEval+ data not found (pass evalplus_path or set HUMANEVAL_OVERRIDE_PATH)")
    if plus_file is not None and plus_file.is_file():
        data = plus.load("humaneval", plus_file)
        return data.tasks, data.describe()
    path = locate(SPEC.local_files[0], data_dir, hub=hub)
    rows = read_jsonl(path) if path else load_hub(SPEC.hub_id, SPEC.hub_config, SPEC.hub_split)
    source = {"backend": "own", "dataset": "HumanEval", "version": "openai/human-eval 164",
              "path": describe(path)["path"] if path else SPEC.hub_id}
    return {row["task_id"]: dict(row) for row in rows}, source


def load_examples(data_dir: str | os.PathLike | None = None, *, hub: bool = True) -> list[dict]:
    """What generation needs: id and model prompt per task."""
    tasks, _ = load_tasks(data_dir, use_evalplus=False, hub=hub)
    return [{"id": task_id, "prompt": render_prompt(task)} for task_id, task in tasks.items()]


def extract(text: str, rule: str = "pissa") -> str | None:
    if rule != "pissa":
        raise ValueError(f"unknown humaneval rule {rule!r}; expected one of {RULES}")
    return code_grading.postprocess(text)


def tests_for(task: dict) -> str:
    return f"{task['test']}\n\ncheck({task['entry_point']})\n"


def check(completion: str, task: dict, *, timeout: float | None = None, postprocess: bool = True,
          limits: sandbox.Limits | None = None) -> Verdict:
    """Grade one completion (raw model output unless ``postprocess=False``) against ``task``."""
    body = code_grading.postprocess(completion) if postprocess else completion
    solution = task["prompt"] + body
    if "base_input" in task:
        return plus.check(solution, task, timeout=timeout, limits=limits)
    return code_grading.run_tests(solution, tests_for(task), timeout=timeout or code_grading.DEFAULT_TIMEOUT,
                                  limits=limits)


def is_correct(text: str, gold: dict, rule: str = "pissa") -> bool:
    """``gold`` is the task dict (its tests are the reference)."""
    extract(text, rule)  # validates the rule
    return check(text, gold).passed
