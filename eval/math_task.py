"""MATH test (5000 problems, Hendrycks et al. 2021): PiSSA/MetaMath prompt and answer rules (SPEC §3.6).

Rules:
  ``pissa`` (the paper's column): the text after the last ``"The answer is: "``, cut at the first
  ``".\\n"``, stripped, one trailing ``"."`` removed; equal to the gold after Hendrycks' ``strip_string``
  normalisation on both sides (no symbolic equivalence). As in the reference code, a normalisation step
  that fails (e.g. two ``\\text{ `` units, ``a/b`` with a non-integer part) makes the comparison fall back to
  raw string equality.
  ``math_verify``: the same extracted text (or, when the output has no "The answer is: ", the content of
  its last ``\\boxed{}``), parsed and compared symbolically with the gold by the ``math-verify`` package.
Gold: the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) of the reference solution, nested
braces included. Nothing extracted scores wrong.
"""

from __future__ import annotations

import os
import threading

from eval.common import MATH_TEMPLATE, TaskSpec, load_hub, read_jsonl, render_math_prompt
from eval.data_files import locate

SPEC = TaskSpec(
    name="math",
    version="math-test5000-pissa-prompt-v1",
    # the original hendrycks/competition_math is gone from the hub; this copy has the same fields
    # (problem, level, type, solution) in one config per subject
    hub_id="EleutherAI/hendrycks_math",
    hub_config=None,
    hub_split="test",
    local_files=("math/test.jsonl.gz",),
    prompt_template=MATH_TEMPLATE,
    rules=("pissa", "math_verify"),
)
RULES = SPEC.rules
HUB_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                "number_theory", "prealgebra", "precalculus")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (else ``\\fbox{...}``), braces balanced; or None.

    ``\\boxed 5$`` (argument without braces) gives the text up to the next ``$``.
    """
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
    if start < 0:
        return None
    rest = text[start:]
    if rest.startswith("\\boxed "):
        return rest[len("\\boxed "):].split("$")[0].strip() or None
    open_at = rest.find("{")
    if open_at < 0:
        return None
    depth = 0
    for i in range(open_at, len(rest)):
        if rest[i] == "{":
            depth += 1
        elif rest[i] == "}":
            depth -= 1
            if depth == 0:
                return rest[open_at + 1:i]
    return None


def load_examples(data_dir: str | os.PathLike | None = None, *, hub: bool = True) -> list[dict]:
    """The 5000 test problems with prompt and gold; ``hub``: read the hub when no data directory has the file."""
    path = locate(SPEC.local_files[0], data_dir, hub=hub)
    if path is not None:
        rows = read_jsonl(path)
    else:
        rows = [row for subject in HUB_SUBJECTS for row in load_hub(SPEC.hub_id, subject, SPEC.hub_split)]
    return [{"id": f"math/{i}", "problem": r["problem"], "level": r.get("level"), "type": r.get("type"),
             "solution": r["solution"], "gold": last_boxed(r["solution"]), "prompt": render_prompt(r["problem"])}
            for i, r in enumerate(rows)]


def render_prompt(problem: str) -> str:
    return render_math_prompt(problem)


# ---------------------------------------------------------------------------------------------------
# Hendrycks MATH normalisation (the steps of ``strip_string`` in the MATH paper's code, in order).

class _NormalisationError(Exception):
    """A step met input it was not written for; the caller then compares raw strings."""


def _drop_units(s: str) -> str:
    # "\text{ " only introduces units in MATH answers; more than one occurrence is not handled
    if "\\text{ " not in s:
        return s
    pieces = s.split("\\text{ ")
    if len(pieces) != 2:
        raise _NormalisationError("more than one '\\text{ '")
    return pieces[0]


def _brace_sqrt(s: str) -> str:
    # \sqrt3 -> \sqrt{3}; only the single following character is taken
    if "\\sqrt" not in s:
        return s
    head, *tails = s.split("\\sqrt")
    out = [head]
    for tail in tails:
        if not tail:
            raise _NormalisationError("\\sqrt at the end")
        out.append("\\sqrt" + (tail if tail[0] == "{" else "{" + tail[0] + "}" + tail[1:]))
    return "".join(out)


def _brace_fracs(s: str) -> str:
    # \frac12 -> \frac{1}{2}, \frac1{72} -> \frac{1}{72}; \frac{72}1 stays as it is
    head, *tails = s.split("\\frac")
    out = [head]
    for tail in tails:
        if not tail:
            raise _NormalisationError("\\frac at the end")
        if tail[0] == "{":
            out.append("\\frac" + tail)
            continue
        if len(tail) < 2:
            return s  # the reference gives up on the whole string here
        first, second = tail[0], tail[1]
        if second == "{":
            out.append("\\frac{" + first + "}" + tail[1:])
        else:
            out.append("\\frac{" + first + "}{" + second + "}" + tail[2:])
    return "".join(out)


def _slash_to_frac(s: str) -> str:
    # "3/4" -> \frac{3}{4}, only for two plain integers written exactly so
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError as exc:
        # the reference lets this error escape its handler (it catches AssertionError only)
        raise _NormalisationError("non-integer a/b") from exc
    if s != f"{a}/{b}":
        return s
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def strip_string(s: str) -> str:
    """Hendrycks' answer normalisation. Raises ``_NormalisationError`` where the reference raises."""
    s = s.replace("\n", "")
    s = s.replace("\\!", "")
    s = s.replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    s = _drop_units(s)
    s = s.replace("\\%", "")
    # leading-dot decimals: " .5" / "{.5" / ".5" get their zero
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    # a short "x = " / "k=" prefix goes
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _brace_sqrt(s)
    s = s.replace(" ", "")
    s = _brace_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _slash_to_frac(s)


def is_equiv(a: str | None, b: str | None) -> bool:
    """The PiSSA/Hendrycks equality: normalised strings equal; raw equality when normalising fails."""
    if a is None or b is None:
        return a is None and b is None
    try:
        return strip_string(a) == strip_string(b)
    except (_NormalisationError, IndexError):
        return a == b


# ---------------------------------------------------------------------------------------------------

def _pissa_extract(text: str) -> str | None:
    parts = text.split("The answer is: ")
    if len(parts) < 2:
        return None
    answer = parts[-1].split(".\n")[0].strip()
    if answer.endswith("."):
        answer = answer[:-1]
    answer = answer.strip()
    return answer or None


def extract(text: str, rule: str = "pissa") -> str | None:
    """The answer the rule reads from a model output, or None when it finds none."""
    if rule == "pissa":
        return _pissa_extract(text)
    if rule == "math_verify":
        found = _pissa_extract(text)
        return found if found is not None else last_boxed(text)
    raise ValueError(f"unknown math rule {rule!r}; expected one of {RULES}")


def _math_verify_equal(gold: str, predicted: str) -> bool:
    from math_verify import parse, verify

    # math-verify times out with SIGALRM, which only the main thread may use; elsewhere it would fail
    # every comparison, so there it runs without a time limit
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=limit)
        pred_parsed = parse("\\boxed{" + predicted + "}", parsing_timeout=limit)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=limit))
    except Exception:  # noqa: BLE001 - a parser failure is a wrong answer, not a crash
        return False


def is_correct(text: str, gold: str, rule: str = "pissa") -> bool:
    predicted = extract(text, rule)
    if predicted is None or gold is None:
        return False
    if rule == "pissa":
        return is_equiv(predicted, gold)
    return _math_verify_equal(gold, predicted)
