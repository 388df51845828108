"""GSM8K test (1319 problems): PiSSA/MetaMath prompt and answer rules (SPEC §3.6).

Rules:
  ``pissa`` (the paper's column): the text after the last ``"The answer is: "``; the first match of
  ``[\\-+]?\\d*[\\.,/]?\\d+`` in it; a comma inside that match is dropped, ``a/b`` is evaluated; the value is
  rounded to an integer (Python's ``round``) and compared as a float with the gold number. Note that the
  pattern takes at most one separator, so "1,450,000" is read as 1450.
  ``flexible``: the first number after the last "The answer is", else after the last ``####``, else the
  last number of the output; thousands separators, ``$`` and fractions are understood; compared with a
  1e-6 tolerance, without rounding.
Gold: the number after ``####`` in the GSM8K answer, commas removed. Nothing extracted scores wrong.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from fractions import Fraction

from eval.common import MATH_TEMPLATE, TaskSpec, load_hub, read_jsonl, render_math_prompt
from eval.data_files import locate

SPEC = TaskSpec(
    name="gsm8k",
    version="gsm8k-test-pissa-prompt-v1",
    hub_id="openai/gsm8k",
    hub_config="main",
    hub_split="test",
    local_files=("gsm8k/test.jsonl",),
    prompt_template=MATH_TEMPLATE,
    rules=("pissa", "flexible"),
)
RULES = SPEC.rules

_PISSA_NUMBER = re.compile(r"[\-+]?\d*[\.,/]?\d+")
# a number with optional sign, currency sign, thousands groups, decimals and a /denominator
_NUMBER = re.compile(r"(?<![\w.])[-+]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?|[-+]?\.\d+")
_FLEX_ANSWER = re.compile(r"the answer is\s*:?", re.IGNORECASE)


def gold_answer(answer_field: str) -> str:
    """The reference number from a GSM8K ``answer`` ("... #### 1,234" -> "1234")."""
    return answer_field.split("####")[-1].strip().replace(",", "")


def load_examples(data_dir: str | os.PathLike | None = None, *, hub: bool = True) -> list[dict]:
    """The 1319 test problems with prompt and gold; ``hub``: read the hub when no data directory has the file."""
    path = locate(SPEC.local_files[0], data_dir, hub=hub)
    rows = read_jsonl(path) if path else load_hub(SPEC.hub_id, SPEC.hub_config, SPEC.hub_split)
    return [{"id": f"gsm8k/{i}", "question": r["question"], "answer": r["answer"],
             "gold": gold_answer(r["answer"]), "prompt": render_prompt(r["question"])}
            for i, r in enumerate(rows)]


def render_prompt(question: str) -> str:
    return render_math_prompt(question)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        pass
    try:
        unicodedata.numeric(text)
        return True
    except (TypeError, ValueError):
        return False


def _pissa_extract(text: str) -> str | None:
    parts = text.split("The answer is: ")
    if len(parts) < 2:
        return None
    match = _PISSA_NUMBER.search(parts[-1].strip())
    if match is None:
        return None
    found = match.group()
    if "/" in found:
        numerator, denominator = found.split("/")
        if not (_is_number(numerator) and _is_number(denominator)):
            return None
        if denominator == "0":
            return str(round(float(numerator.replace(",", ""))))
        return str(round(float(Fraction(found.replace(",", "")))))
    value = float(found.replace(",", ""))
    if value == float("inf"):
        return None
    return str(round(value))


def _parse_number(token: str) -> float | None:
    token = token.replace("$", "").replace(",", "").replace(" ", "")
    try:
        if "/" in token:
            num, den = token.split("/")
            return float(Fraction(num) / Fraction(den)) if float(den) != 0 else None
        return float(token)
    except (ValueError, ZeroDivisionError):
        return None


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _flexible_extract(text: str) -> str | None:
    answers = list(_FLEX_ANSWER.finditer(text))
    if answers:
        region, first = text[answers[-1].end():], True
    elif "####" in text:
        region, first = text.split("####")[-1], True
    else:
        region, first = text, False
    matches = list(_NUMBER.finditer(region))
    for match in (matches if first else reversed(matches)):
        value = _parse_number(match.group())
        if value is not None and math.isfinite(value):
            return _format_number(value)
    return None


def extract(text: str, rule: str = "pissa") -> str | None:
    """The answer the rule reads from a model output, or None when it finds none."""
    if rule == "pissa":
        return _pissa_extract(text)
    if rule == "flexible":
        return _flexible_extract(text)
    raise ValueError(f"unknown gsm8k rule {rule!r}; expected one of {RULES}")


def is_correct(text: str, gold: str, rule: str = "pissa") -> bool:
    predicted = extract(text, rule)
    if predicted is None:
        return False
    gold_value = float(gold.replace(",", ""))
    if rule == "pissa":
        return float(predicted) == gold_value
    return math.isclose(float(predicted), gold_value, rel_tol=1e-9, abs_tol=1e-6)
