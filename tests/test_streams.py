"""Children's output reaches the terminal live and the run's log, and progress bars follow the terminal."""

from __future__ import annotations

import sys

from experiments.common import streams


def test_child_output_goes_to_the_terminal_and_the_log(tmp_path, capfd):
    log = tmp_path / "run" / "train.log"
    code = "import sys; print('loss 0.5', flush=True); print('warn', file=sys.stderr, flush=True); sys.exit(3)"
    rc = streams.run_streamed([sys.executable, "-c", code], log, env={}, cwd=tmp_path)
    assert rc == 3
    err = capfd.readouterr().err
    assert "loss 0.5" in err and "warn" in err
    text = log.read_text()
    assert text.startswith(f"\n$ {sys.executable} -c") and "loss 0.5\n" in text and "warn\n" in text
    streams.run_streamed([sys.executable, "-c", "print('second')"], log, env={}, cwd=tmp_path)
    assert "loss 0.5" in log.read_text() and "second" in log.read_text()      # appended, not replaced


def test_progress_bars_follow_the_parents_terminal(monkeypatch):
    monkeypatch.delenv(streams.PROGRESS_ENV, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    quiet = streams.child_env({})
    assert quiet[streams.PROGRESS_ENV] == "0" and quiet["TQDM_DISABLE"] == "1"   # CI log, redirected output: no bars
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert streams.child_env({})[streams.PROGRESS_ENV] == "1" and "TQDM_DISABLE" not in streams.child_env({})
    monkeypatch.setenv(streams.PROGRESS_ENV, "0")                       # a child keeps its parent's decision
    assert not streams.progress_bars_wanted()
