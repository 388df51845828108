"""Child processes whose output reaches the terminal as it comes and is kept in a log file too.

Training and generation run in launched children (DeepSpeed, the vLLM worker). Their output goes to the
terminal live, so a user sees the loss and the progress bars, and is appended to the run's log, so a
failure can be read afterwards. Bytes are passed on as they arrive (not lines): progress bars redraw with
carriage returns.

Progress bars are drawn only when the parent's terminal is a TTY (a person watching); in CI logs and
redirected output they would be thousands of redraws, so children are told via ``MISS_PROGRESS_BARS``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROGRESS_ENV = "MISS_PROGRESS_BARS"


def progress_bars_wanted() -> bool:
    """In a child: the parent's choice; in a process started by hand: whether stderr is a terminal."""
    value = os.environ.get(PROGRESS_ENV)
    return sys.stderr.isatty() if value is None else value == "1"


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the progress-bar decision of this process passed on; without bars, tqdm (which
    transformers, datasets and the hub client draw theirs with) is switched off through its environment."""
    if progress_bars_wanted():
        return {**env, PROGRESS_ENV: "1"}
    return {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **env, PROGRESS_ENV: "0"}


def run_streamed(argv: list[str], log: Path, *, env: dict[str, str], cwd: Path) -> int:
    """Run ``argv``; its stdout and stderr go to this process's stderr and are appended to ``log``."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    out = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
    with open(log, "ab") as f:
        f.write(f"\n$ {' '.join(argv)}\n".encode())
        f.flush()
        sys.stderr.flush()
        proc = subprocess.Popen(argv, cwd=cwd, env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 1 << 16):
            f.write(chunk)
            f.flush()
            if out is not None:
                out.write(chunk)
                out.flush()
            else:                       # a replaced sys.stderr (e.g. under pytest's capture) takes text
                sys.stderr.write(chunk.decode(errors="replace"))
        proc.stdout.close()
        return proc.wait()
