"""No module of the repository shadows a standard-library module.

Running a file directly (``python eval/grade.py``) puts its folder first on ``sys.path``; a sibling named
like a standard module (``eval/math.py`` once was) then replaces that module for every library the script
imports, which ends in a circular-import error far from the cause.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _repo_modules() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return [REPO_ROOT / p for p in tracked.stdout.split()]


def test_no_module_is_named_like_a_standard_module():
    modules = _repo_modules()
    assert any(p.name == "grade.py" for p in modules)       # the listing itself works
    shadowing = sorted(str(p.relative_to(REPO_ROOT)) for p in modules if p.stem in sys.stdlib_module_names)
    assert shadowing == []


@pytest.mark.parametrize("script", ["eval/grade.py", "eval/generate.py"])
def test_eval_scripts_run_directly(script):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, script, "--help"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
