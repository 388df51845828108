"""The sandbox for model-written code: basic behaviour and a suite of hostile completions.

Every hostile completion is graded through the real harness (``eval.code_grading.execute``) as a solution of a
one-line task (``add(2, 3) == 5``); each must be scored as a failure, finish within its timeout plus one
second, and leave the repository, the home directory and the test's canary files unchanged. The
destructive attacks run only after a harmless probe showed that the sandbox really isolates on this
machine, so a broken sandbox fails the suite instead of deleting the checkout.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from eval import code_grading, sandbox

REPO = Path(__file__).resolve().parents[1]
HOME = Path.home()
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
GOOD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return 0\n"
ISOLATING = ("root-ns", "user-ns")  # modes in which the whole filesystem but the workdir is read-only


@pytest.fixture(scope="module")
def mode() -> str:
    return sandbox.isolation().mode


def test_root_gets_an_isolating_mode(mode):
    if os.geteuid() != 0:
        pytest.skip("not root")
    assert mode in ("root-ns", "root-setuid"), sandbox.isolation().notes


def test_forcing_an_unisolated_mode_as_root_is_refused(monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("not root")
    monkeypatch.setattr(sandbox, "_ISOLATION", None)
    monkeypatch.setenv("MISS_SANDBOX_MODE", "plain")
    monkeypatch.delenv("MISS_SANDBOX_ALLOW_UNSAFE", raising=False)
    with pytest.raises(sandbox.SandboxUnavailable):
        sandbox.isolation()
    monkeypatch.setenv("MISS_SANDBOX_MODE", "no-such-mode")
    with pytest.raises(ValueError):
        sandbox.isolation()


def test_runs_a_program_and_returns_its_output():
    res = sandbox.run("import sys; print('hi'); print('err', file=sys.stderr); sys.exit(3)", timeout=10)
    assert (res.returncode, res.stdout, res.stderr.strip(), res.timed_out) == (3, "hi\n", "err", False)


def test_clean_env_fresh_workdir_and_stdin(monkeypatch):
    monkeypatch.setenv("MISS_SECRET_TOKEN", "do-not-leak")
    prog = ("import os, sys, json\n"
            "print(json.dumps([sorted(os.listdir('.')), 'MISS_SECRET_TOKEN' in os.environ, sys.stdin.read()]))\n"
            "open('left-behind.txt', 'w').write('x')\n")
    first = sandbox.run(prog, timeout=10, stdin="hello")
    second = sandbox.run(prog, timeout=10, stdin="again")
    assert first.stdout.strip() == '[["main.py"], false, "hello"]'
    assert second.stdout.strip() == '[["main.py"], false, "again"]'  # nothing left from the first run


def test_harness_passes_a_correct_solution_and_fails_a_wrong_one():
    ok, _ = code_grading.execute(GOOD, TESTS, timeout=10)
    bad, _ = code_grading.execute(WRONG, TESTS, timeout=10)
    broken, _ = code_grading.execute("def add(a, b):\n    return a +\n", TESTS, timeout=10)
    assert ok.passed and ok.reason == "passed"
    assert not bad.passed and "AssertionError" in bad.reason
    assert not broken.passed and "SyntaxError" in broken.reason


def test_unclosed_string_in_the_solution_cannot_swallow_the_tests():
    verdict, _ = code_grading.execute(WRONG + 'x = """\n', TESTS, timeout=10)
    assert not verdict.passed


# ---------------------------------------------------------------------------------------------------
# Hostile completions

def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outside_tmp() -> str:
    return "/var/tmp" if os.path.isdir("/var/tmp") and os.access("/var/tmp", os.W_OK) else tempfile.gettempdir()


class World:
    """What must survive: the repository, the home directory and canary files outside the workdir."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(6)
        # outside /tmp, which the namespace modes replace by their own tmpfs: here only read-only
        # mounts and permissions protect the canaries
        self.canary_dir = Path(tempfile.mkdtemp(prefix="miss-sandbox-canary-", dir=_outside_tmp()))
        self.canary_dir.chmod(0o755)
        self.canary = self.canary_dir / "keep.txt"
        self.canary.write_text("canary\n")
        self.open_dir = self.canary_dir / "world-writable"  # only read-only mounts protect this one
        self.open_dir.mkdir()
        self.open_dir.chmod(0o777)
        self.open_canary = self.open_dir / "keep.txt"
        self.open_canary.write_text("open canary\n")
        self.open_canary.chmod(0o666)
        self.home_canary = HOME / f".miss-sandbox-canary-{self.token}"
        self.home_canary.write_text("home canary\n")
        self.tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                                      check=True).stdout.split()
        self.snapshot = self._take()

    def _take(self) -> dict:
        owned = sorted(REPO.glob("eval/*.py")) + [REPO / "pyproject.toml", REPO / "tests" / "conftest.py"]
        return {
            "tracked_present": [p for p in self.tracked if (REPO / p).exists()],
            "repo_top": sorted(os.listdir(REPO)),
            "owned": {str(p): _digest(p) for p in owned if p.exists()},
            "home_top": sorted(os.listdir(HOME)),
            "canaries": {str(p): _digest(p) for p in (self.canary, self.open_canary, self.home_canary)},
            "canary_dirs": sorted(os.listdir(self.canary_dir)) + sorted(os.listdir(self.open_dir)),
        }

    def assert_unchanged(self) -> None:
        now = self._take()
        before = self.snapshot
        # others may add files to the checkout meanwhile; nothing that was there may go or change
        assert set(before["tracked_present"]) <= set(now["tracked_present"])
        assert set(before["repo_top"]) <= set(now["repo_top"])
        assert before["owned"] == now["owned"]
        assert set(before["home_top"]) <= set(now["home_top"])
        assert before["canaries"] == now["canaries"]
        assert before["canary_dirs"] == now["canary_dirs"]
        stray = [p for base in (REPO, HOME, Path("/tmp"), Path("/var/tmp")) if base.is_dir()
                 for p in os.listdir(base) if self.token in p and not p.startswith(".miss-sandbox-canary-")]
        assert not stray, stray

    def close(self) -> None:
        shutil.rmtree(self.canary_dir, ignore_errors=True)
        self.home_canary.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def world():
    w = World()
    yield w
    w.assert_unchanged()
    w.close()


@pytest.fixture(scope="module")
def safe_to_attack(mode, world):
    """Refuse the destructive attacks unless a harmless probe shows the sandbox isolates here."""
    probe = f"""
import os
found = []
for d in {[str(REPO), str(HOME)]!r}:
    path = os.path.join(d, "probe-{world.token}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        continue
    os.close(fd)
    os.unlink(path)
    found.append(d)
print("writable:", found, "uid:", os.getuid(), "ppid:", os.getppid())
"""
    res = sandbox.run(probe, timeout=10)
    assert res.returncode == 0, res.stderr
    if "writable: []" not in res.stdout:
        pytest.fail(f"sandbox mode {mode} let a probe write outside its workdir: {res.stdout.strip()}")
    if mode not in ISOLATING:
        pytest.skip(f"mode {mode}: the filesystem is not read-only, destructive attacks are not run")
    return True


def _attack(body: str, *, timeout: float = 5.0, limits: sandbox.Limits | None = None):
    """Run ``body`` (module-level code of the solution) followed by a wrong ``add``."""
    start = time.monotonic()
    verdict, res = code_grading.execute(body + "\n" + WRONG, TESTS, timeout=timeout, limits=limits)
    elapsed = time.monotonic() - start
    assert not verdict.passed, verdict
    assert elapsed <= timeout + 1.0, elapsed
    return verdict, res


def _processes_of(uid: int | None, grace: float = 1.0) -> list[int]:
    """Live (non-zombie) processes of ``uid``, after giving SIGKILLed ones ``grace`` seconds to go."""
    if uid is None:
        return []
    deadline = time.monotonic() + grace
    while True:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = dict(line.split(":", 1) for line in Path("/proc", entry, "status").read_text().splitlines()
                              if ":" in line)
            except OSError:
                continue
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                found.append(int(entry))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_infinite_loop_times_out():
    verdict, res = _attack("while True:\n    pass", timeout=2.0)
    assert res.timed_out and verdict.reason == "timeout"


def test_fork_loop_is_capped_and_cleaned_up(mode):
    body = """
import os, time
children = 0
for _ in range(3000):
    try:
        pid = os.fork()
    except OSError:
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children += 1
print("forked", children)
"""
    verdict, res = _attack(body, timeout=5.0, limits=sandbox.Limits(nproc=32))
    forked = int(res.stdout.split("forked")[1].split()[0]) if "forked" in res.stdout else 0
    assert forked < 32
    assert _processes_of(res.uid) == []


def test_memory_hog_hits_the_limit():
    limit_mb = 512
    body = f"""
blocks = []
for _ in range({4 * limit_mb // 100}):
    blocks.append(bytearray(100 * 1024 * 1024))
"""
    verdict, _ = _attack(body, timeout=10.0, limits=sandbox.Limits(memory_mb=limit_mb))
    assert "MemoryError" in verdict.reason


def test_deleting_the_repository_and_home_fails(safe_to_attack, world):
    body = f"""
import shutil
for target in ({str(REPO)!r}, {str(HOME)!r}):
    try:
        shutil.rmtree(target)
    except OSError as exc:
        print("rmtree refused:", target, type(exc).__name__)
"""
    _, res = _attack(body)
    assert res.stdout.count("rmtree refused") == 2
    world.assert_unchanged()


def test_removing_canaries_outside_the_workdir_fails(safe_to_attack, world):
    body = f"""
import os
for target in ({str(world.canary)!r}, {str(world.open_canary)!r}, {str(world.home_canary)!r}):
    try:
        os.remove(target)
    except OSError as exc:
        print("remove refused:", type(exc).__name__)
"""
    _attack(body)
    world.assert_unchanged()


def test_writing_outside_the_workdir_fails(safe_to_attack, world):
    targets = [REPO / f"pwned-{world.token}", HOME / f"pwned-{world.token}", world.open_dir / f"pwned-{world.token}",
               world.canary, world.open_canary, Path("/var/tmp") / f"pwned-{world.token}"]
    body = f"""
for target in {[str(t) for t in targets]!r}:
    try:
        with open(target, "a") as fh:
            fh.write("pwned")
    except OSError as exc:
        print("write refused:", type(exc).__name__)
# /tmp inside the sandbox is its own small tmpfs: writing there is allowed and vanishes with the run
with open("/tmp/pwned-{world.token}", "w") as fh:
    fh.write("gone after the run")
"""
    _, res = _attack(body)
    assert res.stdout.count("write refused") == len(targets)
    world.assert_unchanged()


def test_no_network_even_to_localhost(mode):
    if mode not in ISOLATING:
        pytest.xfail(f"mode {mode} does not isolate the network")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)
            conn.sendall(b"5")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    solution = f"""
import socket
def add(a, b):
    with socket.create_connection(("127.0.0.1", {port}), timeout=2) as s:
        return int(s.recv(8)) if (a, b) == (2, 3) else a + b
"""
    try:
        verdict, res = code_grading.execute(solution, TESTS, timeout=5.0)
    finally:
        stop.set()
        thread.join(2)
        server.close()
    assert not verdict.passed
    assert "OSError" in verdict.reason or "Error" in verdict.reason
    assert accepted == []


def test_killing_the_parent_fails_and_the_grader_survives(mode):
    grader_pid = os.getpid()
    body = f"""
import os, signal
for pid in (os.getppid(), {grader_pid}):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError as exc:
        print("kill refused:", pid, type(exc).__name__)
"""
    if mode in ("root-ns", "user-ns", "root-setuid"):
        # every process the program may signal belongs to the run itself
        body += "\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
    _attack(body)
    assert os.getpid() == grader_pid  # still here
    verdict, _ = code_grading.execute(GOOD, TESTS, timeout=10)
    assert verdict.passed  # and the grader still works


@pytest.mark.parametrize("exit_call", ["import sys; sys.exit(0)", "import os; os._exit(0)",
                                       "raise SystemExit(0)"])
def test_exiting_before_the_asserts_fails(exit_call):
    verdict, res = _attack(exit_call)
    assert res.returncode == 0  # the exit status alone would have said "passed"
    assert verdict.reason.startswith("no success marker")


def test_monkey_patching_builtins_and_the_harness_fails():
    body = """
import atexit, builtins, os, sys
builtins.AssertionError = type("AssertionError", (Exception,), {})
builtins.print = lambda *a, **k: None
main = sys.modules["__main__"]
for name in list(vars(main)):
    if "miss" in name:
        setattr(main, name, lambda *a, **k: os.write(1, b"\\npassed\\n"))
sys.excepthook = lambda *a: None
atexit.register(lambda: (os.write(1, b"\\nOK\\n"), os._exit(0)))
os.write = lambda fd, data: len(data)
"""
    verdict, res = _attack(body)
    assert not verdict.passed


def test_printing_a_gigabyte_is_cut_off():
    body = "import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * (1 << 20))"
    verdict, res = _attack(body, timeout=10.0)
    assert res.output_overflow and verdict.reason == "output limit"
    assert len(res.stdout) <= sandbox.Limits().output_bytes


def test_a_child_that_outlives_the_test_is_killed(mode):
    body = """
import ctypes, os, time
if os.fork() == 0:
    os.setsid()
    ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)  # clear the parent-death signal
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
time.sleep(0.2)
"""
    _, res = _attack(body, timeout=5.0)
    if res.uid is None:
        pytest.xfail(f"mode {mode} runs under the caller's uid; escaped processes cannot be told apart")
    assert _processes_of(res.uid) == []


def test_suite_left_everything_unchanged(world):
    world.assert_unchanged()


# ---------------------------------------------------------------------------------------------------
# As a normal user (root only: runs the sandbox as ``nobody`` with an interpreter that user can read)

def _python_for_nobody() -> str | None:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if not os.path.exists(candidate):
            continue
        probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info >= (3, 10)"],
                               user=65534, group=65534, extra_groups=[], capture_output=True, cwd="/")
        if probe.returncode == 0:
            return candidate
    return None


_AS_NOBODY = """
import sys
sys.path.insert(0, REPO)
from eval import sandbox
attack = (
    "import os, shutil, signal\\n"
    "try:\\n"
    "    shutil.rmtree(OWNED)\\n"
    "except OSError as exc:\\n"
    "    print('rmtree refused', type(exc).__name__, flush=True)\\n"
    "try:\\n"
    "    os.kill(os.getppid(), signal.SIGKILL)\\n"
    "except OSError:\\n"
    "    pass\\n"
).replace("OWNED", repr(OWNED))
res = sandbox.run(attack, timeout=5)
print(sandbox.isolation().mode, res.returncode, res.stdout.strip().replace(chr(10), " | "))
"""


def test_as_a_normal_user_files_and_grader_are_protected():
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the nobody user")
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no interpreter readable by nobody")
    for parent in REPO.parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            pytest.skip(f"{parent} is not traversable by nobody")
    base = Path(tempfile.mkdtemp(prefix="miss-sandbox-nobody-", dir=_outside_tmp()))
    try:
        base.chmod(0o755)
        owned = base / "owned"  # belongs to nobody: only the sandbox stands between it and the attack
        owned.mkdir()
        (owned / "keep.txt").write_text("mine\n")
        for p in (owned, owned / "keep.txt"):
            os.chown(p, 65534, 65534)
        script = base / "as_nobody.py"
        script.write_text(f"REPO = {str(REPO)!r}\nOWNED = {str(owned)!r}\n" + _AS_NOBODY)
        script.chmod(0o644)
        out = subprocess.run([python, str(script)], user=65534, group=65534, extra_groups=[], cwd="/",
                             env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr  # the grader (running as nobody) was not killed
        mode = out.stdout.split()[0]
        if mode != "user-ns":
            pytest.xfail(f"no user namespaces here (mode {mode}): a normal user's files are not protected")
        assert "rmtree refused" in out.stdout, out.stdout
        assert (owned / "keep.txt").read_text() == "mine\n"
    finally:
        shutil.rmtree(base, ignore_errors=True)
