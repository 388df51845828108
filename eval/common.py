"""What the evaluation tasks share: the task spec, the PiSSA prompt templates, data loading, JSONL I/O.

The per-sample JSONL joins generation and grading (DESIGN.md, convention 7). Generation writes one row
per test sample with at least::

    {"task": "gsm8k", "id": "gsm8k/17", "prompt": "...", "output": "<raw model text>",
     "finish_reason": "stop" | "length", "gold": "<reference answer; math tasks>",
     "task_version": "<TaskSpec.version>"}

(extra keys such as model, adapter or seed are kept as they are). ``python -m eval.grade`` adds
``extracted`` (rule -> extracted answer or null), ``correct`` (rule -> bool) and, for code tasks,
``verdict`` ({passed, reason, duration, plus}) and ``grader`` (backend and dataset version). A row whose
``gold`` is missing gets it from the task's data by ``id``.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from eval.data_files import describe, locate

# The Alpaca template of PiSSA's evaluation files (SPEC §3.5/3.6). Math prompts are primed with
# "Let's think step by step."; code prompts have three newlines before "### Instruction:" and every
# run of four spaces in them is a tab (both as in pissa-dataset/python/test.json).
ALPACA_HEADER = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
MATH_TEMPLATE = ALPACA_HEADER + "\n\n### Instruction:\n{instruction}\n\n### Response: Let's think step by step."
CODE_TEMPLATE = ALPACA_HEADER + "\n\n\n### Instruction:\n{instruction}\n\n### Response:"


def render_math_prompt(question: str) -> str:
    return MATH_TEMPLATE.format(instruction=question)


def render_code_prompt(instruction: str) -> str:
    return CODE_TEMPLATE.format(instruction=instruction).replace("    ", "\t")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """How one benchmark is generated and graded; ``version`` is stored in every graded result."""

    name: str
    version: str
    hub_id: str  # where the data comes from when no local data directory is given
    hub_config: str | None
    hub_split: str
    local_files: tuple[str, ...]  # paths relative to a data directory laid out like the repository's data/
    prompt_template: str
    rules: tuple[str, ...]  # grading rules; the first is the paper's column
    stop: tuple[str, ...] = ()  # PiSSA generated with no stop strings: EOS or the token limit ends a sample
    max_new_tokens: int = 1024
    temperature: float = 0.0  # greedy
    top_p: float = 1.0
    n_samples: int = 1

    def sampling(self) -> dict[str, Any]:
        """Generation settings as plain data (for vLLM SamplingParams or transformers generate)."""
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "stop": list(self.stop), "n": self.n_samples}


def sample_row(spec: TaskSpec, example: dict, output: str, finish_reason: str | None, **extra: Any) -> dict:
    """The generation JSONL row for one sample (``example`` from the task's ``load_examples``)."""
    row = {"task": spec.name, "id": example["id"], "prompt": example["prompt"], "output": output,
           "finish_reason": finish_reason, "task_version": spec.version}
    if example.get("gold") is not None:
        row["gold"] = example["gold"]
    row.update(extra)
    return row


def open_text(path: str | os.PathLike) -> Any:
    path = str(path)
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return list(iter_jsonl(path))


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """The rows of a JSONL file (``.gz`` too); a line that is not JSON is a ``ValueError`` naming file and line."""
    with open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def load_hub(hub_id: str, config: str | None, split: str) -> list[dict]:
    """Rows of a Hugging Face hub dataset (needs network or a warm hub cache)."""
    from datasets import load_dataset

    ds = load_dataset(hub_id, config, split=split) if config else load_dataset(hub_id, split=split)
    return [dict(row) for row in ds]


def data_source(spec: TaskSpec, data_dir: str | os.PathLike | None = None, *, hub: bool = True) -> dict[str, Any]:
    """Where a task's data came from, recorded next to every score: each local file the task's loaders
    resolve (``eval.data_files``; path and sha256), or the hub dataset when none is found and ``hub``."""
    found = {rel: locate(rel, data_dir, hub=hub) for rel in spec.local_files}
    files = {rel: describe(path) for rel, path in found.items() if path is not None}
    if not files:
        return {"source": "hub", "hub_id": spec.hub_id, "config": spec.hub_config, "split": spec.hub_split}
    return {"source": "local", "files": files}
