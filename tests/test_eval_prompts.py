"""Our rendered prompts equal PiSSA's evaluation instructions byte for byte, for every row.

Reference: ``data/pissa_eval/`` (the test split of ``fxmeng/pissa-dataset``: metamath/test.json for GSM8K +
MATH, python/test.json for HumanEval + MBPP), read through ``eval.data_files`` like every benchmark file.
"""

from __future__ import annotations

import collections
import json

import pytest

from eval import gsm8k, humaneval, mbpp
from eval import math_task
from eval.common import open_text
from eval.data_files import locate


def _by_type(relative: str, data_dir) -> dict[str, list[dict]]:
    with open_text(locate(relative, data_dir)) as fh:
        rows = json.load(fh)
    by_type = collections.defaultdict(list)
    for row in rows:
        by_type[row["type"]].append(row)
    return by_type


@pytest.fixture(scope="module")
def pissa_math(data_dir):
    return _by_type("pissa_eval/metamath_test.json.gz", data_dir)


@pytest.fixture(scope="module")
def pissa_code(data_dir):
    return _by_type("pissa_eval/python_test.json", data_dir)


def test_gsm8k_prompts_and_golds_match_pissa_in_order(data_dir, pissa_math):
    ours = gsm8k.load_examples(data_dir)
    theirs = pissa_math["gsm8k"]
    assert len(ours) == len(theirs) == 1319
    assert [ex["prompt"] for ex in ours] == [row["instruction"] for row in theirs]
    assert [ex["gold"] for ex in ours] == [row["output"] for row in theirs]


def test_math_prompts_and_golds_match_pissa(data_dir, pissa_math):
    ours = math_task.load_examples(data_dir)
    theirs = pissa_math["math"]
    assert len(ours) == len(theirs) == 5000
    # PiSSA's file lists the same 5000 problems in another order
    assert collections.Counter(ex["prompt"] for ex in ours) == collections.Counter(r["instruction"] for r in theirs)
    gold_by_prompt = {row["instruction"]: row["output"] for row in theirs}
    assert all(gold_by_prompt[ex["prompt"]] == ex["gold"] for ex in ours)


def test_humaneval_prompts_match_pissa_in_order(data_dir, pissa_code):
    tasks, source = humaneval.load_tasks(data_dir, use_evalplus=False)
    theirs = pissa_code["humaneval"]
    assert source["backend"] == "own"
    assert [row["output"] for row in theirs] == list(tasks) and len(tasks) == 164
    assert [humaneval.render_prompt(task) for task in tasks.values()] == [row["instruction"] for row in theirs]
    assert [ex["prompt"] for ex in humaneval.load_examples(data_dir)] == [row["instruction"] for row in theirs]


def test_mbpp_default_is_pissas_399_tasks_with_their_prompts(data_dir, pissa_code):
    tasks, _ = mbpp.load_tasks(data_dir, use_evalplus=False)
    theirs = pissa_code["mbpp"]
    assert len(tasks) == len(theirs) == 399
    assert list(tasks) == [row["output"] for row in theirs]
    assert [mbpp.render_prompt(task) for task in tasks.values()] == [row["instruction"] for row in theirs]


def test_mbpp_test500_is_the_standard_split(data_dir):
    examples = mbpp.load_examples(data_dir, task_set="test500")
    assert [ex["id"] for ex in examples] == [f"Mbpp/{i}" for i in range(11, 511)]
    first = examples[0]["prompt"]
    assert first.startswith(mbpp.render_prompt({"text": "", "first_test": ""})[:100])
    assert "Your code should satisfy the following assertion:\n```python\nassert " in first


@pytest.mark.parametrize("module", [gsm8k, math_task, humaneval, mbpp])
def test_task_specs_are_greedy_1024_tokens_and_versioned(module):
    spec = module.SPEC
    assert spec.max_new_tokens == 1024
    assert (spec.temperature, spec.top_p, spec.n_samples) == (0.0, 1.0, 1)
    assert spec.version and spec.rules[0] == "pissa"
    assert spec.stop == ()  # PiSSA generated until EOS or the token limit
    assert module.RULES == spec.rules
