"""GSM8K as Hugging Face PEFT's ``method_comparison/MetaMathQA`` benchmark scores it (SPEC §3.9, Table 8).

Different from the PiSSA rules of ``eval/gsm8k.py`` (the Table 5 column): prompt, extraction and comparison
follow the PEFT benchmark, so our Table 8 numbers mean what the paper's do.

- Prompt: ``"Question: {query} Think step by step.\\nAnswer:"`` (no Alpaca header, no priming).
- Extraction: strip the text and trailing ``.!?``; take the first delimiter of ``"The answer is: "``,
  ``"The answer is "``, ``"The final answer is: "``, ``"The final answer is "``, ``"#### "`` that occurs
  anywhere in it, and the text after its last occurrence; keep the first line; strip `` .!?$%``.
- Comparison: both sides read as decimals (``a/b`` divided) and compared as floats; an extraction that is
  not a number only matches a non-numeric gold verbatim (GSM8K golds are all numeric). No delimiter,
  nothing extracted: wrong.
"""

from __future__ import annotations

from decimal import Decimal, DivisionByZero, InvalidOperation

QUERY_TEMPLATE = "Question: {query} Think step by step.\nAnswer:"
DELIMITERS = ("The answer is: ", "The answer is ", "The final answer is: ", "The final answer is ", "#### ")
VERSION = "gsm8k-peft-metamathqa-v1"


def render_prompt(question: str) -> str:
    return QUERY_TEMPLATE.format(query=question)


def extract(text: str) -> str | None:
    """The answer text after the benchmark's delimiter, or None when no delimiter occurs."""
    text = text.strip().rstrip(".!?")
    delimiter = next((d for d in DELIMITERS if d in text), None)
    if delimiter is None:
        return None
    answer = text.rpartition(delimiter)[2].strip().split("\n", 1)[0]
    return answer.strip(" .!?$%")


def to_number(text: str | None) -> float | None:
    """``"13"``, ``"65.33"``, ``"20/14"`` -> float; anything else (or a zero denominator) -> None."""
    if text is None:
        return None
    try:
        text = text.strip()
        if "/" in text:
            parts = text.split("/")
            if len(parts) != 2:
                return None
            num, den = Decimal(parts[0].strip()), Decimal(parts[1].strip())
            return None if den == 0 else float(num / den)
        return float(Decimal(text))
    except (DivisionByZero, InvalidOperation, ValueError):
        return None


def is_correct(output: str, gold: str) -> bool:
    """Whether ``output`` answers ``gold`` (a bare number like GSM8K's ``####`` value, or a full solution)."""
    gold_text = extract(gold) if any(d in gold for d in DELIMITERS) else gold.strip()
    predicted = extract(output)
    if predicted is None or gold_text is None:
        return False
    p, g = to_number(predicted), to_number(gold_text)
    if g is not None:
        return p is not None and p == g
    return predicted == gold_text
