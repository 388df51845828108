"""The evaluation tasks by name: ``TASKS["gsm8k"].load_examples(data_dir)``, ``.SPEC``, ``.extract``..."""

from __future__ import annotations

from types import ModuleType

from eval import gsm8k, humaneval, mbpp
from eval import math_task

ANSWER_TASKS: dict[str, ModuleType] = {"gsm8k": gsm8k, "math": math_task}
CODE_TASKS: dict[str, ModuleType] = {"humaneval": humaneval, "mbpp": mbpp}
TASKS: dict[str, ModuleType] = {**ANSWER_TASKS, **CODE_TASKS}


def get(name: str) -> ModuleType:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None
