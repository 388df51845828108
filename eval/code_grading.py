"""Shared machinery of the code tasks: PiSSA's post-processing, the test harness and ``Verdict``.

A completion is judged by running ``solution + tests`` in ``eval.sandbox``. The harness reads a random
nonce from stdin before any task code runs, compiles the solution and the tests separately (a broken
solution cannot swallow the tests) and prints the nonce only after the last test returned. A run passes
only when that nonce comes back, the exit status is 0 and nothing overran; so ``sys.exit(0)`` or
``os._exit(0)`` before the asserts, a patched ``print``/``sys.exit``/excepthook or a killed harness all
fail. (Code in the same interpreter could still dig the nonce out of memory on purpose; the marker is a
guard against programs that stop early, not a proof against an adversary who targets this harness.)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from eval import sandbox

DEFAULT_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # "passed", "timeout", "output limit", "no success marker (...)", "AssertionError: ..."
    duration: float
    plus: bool | None = None  # EvalPlus "plus" tests, when that backend ran them

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def postprocess(completion: str) -> str:
    """PiSSA's clean-up of a code completion (SPEC §3.6, pissa utils/code_process.py).

    From the first ```` ```python ```` fence (if any) to the next ``\\n```` ``; then cut at
    ``if __name__ == "__main__":``, at ``# Example usage`` and at the first ``assert``, stripping each time.
    """
    code = completion.replace("\r", "")
    if "```python" in code:
        code = code[code.index("```python"):].strip().replace("```python", "")
        if "\n```" in code:
            code = code[:code.index("\n```")].strip()
    # the reference tests for '__name__ == "__main__"' and cuts at the whole 'if' line (it crashes when
    # only the former is there; we then leave the code as it is)
    main_guard = 'if __name__ == "__main__":'
    if main_guard in code:
        code = code[:code.index(main_guard)].strip()
    for marker in ("# Example usage", "assert"):
        if marker in code:
            code = code[:code.index(marker)].strip()
    return code


_HARNESS = '''\
import os as _os, sys as _sys


def _miss_harness():
    nonce = _sys.stdin.readline().strip()
    _sys.stdin.close()
    write = _os.write

    def finished():
        write(1, ("\\n" + nonce + "\\n").encode())

    return finished


_miss_finished = _miss_harness()
del _miss_harness
_miss_ns = {{"__name__": "__solution__", "__builtins__": __builtins__}}
exec(compile({solution!r}, "solution.py", "exec"), _miss_ns)
exec(compile({tests!r}, "tests.py", "exec"), _miss_ns)
_miss_finished()
'''


def build_program(solution: str, tests: str) -> str:
    """The program the sandbox runs: harness + solution + tests, both kept as string constants."""
    return _HARNESS.format(solution=solution, tests=tests)


def _failure_reason(res: sandbox.RunResult, nonce_seen: bool) -> str:
    if res.timed_out:
        return "timeout"
    if res.output_overflow:
        return "output limit"
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    if res.returncode != 0:
        if lines:
            return lines[-1][:300]
        return f"exit status {res.returncode}"
    if not nonce_seen:
        return "no success marker (the program ended before all tests ran)"
    return "unknown"


def execute(solution: str, tests: str, *, timeout: float = DEFAULT_TIMEOUT,
            limits: sandbox.Limits | None = None) -> tuple[Verdict, sandbox.RunResult]:
    """Run ``tests`` against ``solution`` in the sandbox; pass = success marker + exit status 0."""
    nonce = secrets.token_hex(16)
    res = sandbox.run(build_program(solution, tests), timeout=timeout, stdin=nonce + "\n", limits=limits)
    nonce_seen = any(line.strip() == nonce for line in res.stdout.splitlines())
    passed = nonce_seen and res.returncode == 0 and not res.timed_out and not res.output_overflow
    verdict = Verdict(passed, "passed" if passed else _failure_reason(res, nonce_seen), round(res.duration, 4))
    return verdict, res


def run_tests(solution: str, tests: str, *, timeout: float = DEFAULT_TIMEOUT,
              limits: sandbox.Limits | None = None) -> Verdict:
    """``execute`` without the raw run result."""
    return execute(solution, tests, timeout=timeout, limits=limits)[0]


def parallel_map(fn: Callable[..., Any], items: Sequence[Any], jobs: int = 1) -> list[Any]:
    """``[fn(x) for x in items]`` over ``jobs`` worker processes (``fn`` must be picklable).

    Processes, not threads: the sandbox forks with a ``preexec_fn``, which is only safe in a process
    whose other threads hold no locks.
    """
    if jobs <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    ctx = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return list(pool.map(fn, items, chunksize=max(1, len(items) // (jobs * 8))))
