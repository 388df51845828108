"""Run untrusted, model-written Python in a separate, limited process.

``run(program, timeout=...)`` writes ``program`` to a fresh working directory, starts
``python -I -B main.py`` there in a new session (its own process group) with a clean environment, and
returns its exit status and (size-capped) output. The caller decides what counts as success; the code
graders (``eval.code_grading``) require a secret marker printed after the last test, never the exit code alone.

How strongly the program is isolated depends on what the operating system allows. ``isolation()``
probes once per process and picks the strongest mode that works (``MISS_SANDBOX_MODE`` forces one):

``root-ns`` (running as root with namespace support, e.g. CI as root on a VM or a privileged container)
    * new mount, network, PID, IPC and UTS namespaces;
    * every mount read-only (recursively); a fresh size-capped tmpfs on ``/tmp`` holds the working
      directory, which is the only writable place; ``/root`` and ``$HOME`` are replaced by empty tmpfs
      (the interpreter's own prefixes are re-exposed read-only when they live there), so the grader's
      home directory, the repository and every other file cannot be changed or deleted, even paths with
      mode 0777;
    * no network: only a down loopback interface exists, so no connection can be made, not even to
      127.0.0.1 of the host;
    * runs under a fresh unprivileged uid/gid (a random id with no passwd entry), no supplementary
      groups, ``no_new_privs`` (setuid binaries give nothing back): it cannot signal the grader or any
      other process (and in its PID namespace it cannot even name them);
    * it is PID 1 of its namespace: when it ends or is killed, the kernel kills every process it left
      behind, including ones that called ``setsid``; processes of the run's uid are also killed after
      every run;
    * rlimits: address space, CPU seconds, processes (``RLIMIT_NPROC``, counted for the run's own uid),
      file size, open files, no core files; wall-clock timeout; output capped; on overrun the whole
      process group is killed with SIGKILL.
``root-setuid`` (root, but namespaces are refused, e.g. a default Docker seccomp profile)
    * the same fresh uid, ``no_new_privs``, rlimits, timeout, output cap and kill-by-group plus
      kill-by-uid after the run, so files and processes of root and of other users are safe;
    * NOT guaranteed: network access is not blocked; the program can read world-readable files and write
      in world-writable directories (``/tmp``, ``/var/tmp``, ``/dev/shm``; top-level entries it creates
      there are removed after the run); the interpreter must be readable by other users (otherwise the
      probe fails and this mode is not used).
``user-ns`` (a normal user where unprivileged user namespaces are enabled)
    * the mount/network/PID/IPC isolation of ``root-ns`` inside a user namespace: read-only filesystem
      except the tmpfs working directory, home hidden, no network, PID 1 of its own namespace (so it
      cannot signal the grader); capabilities are dropped at exec because the uid inside is not 0;
    * NOT guaranteed: it runs under the caller's own uid, so a process that clears its parent-death
      signal and leaves the process group can outlive the run until its CPU limit ends it.
``plain`` (a normal user without user namespaces)
    * only rlimits, a new session and process-group kill, a temporary working directory and a clean
      environment. The program runs as the calling user: it CAN delete or change anything that user
      can, reach the network and signal the grader. Use a container or VM for untrusted code.

As root, a mode weaker than ``root-setuid`` is refused (``SandboxUnavailable``) unless
``MISS_SANDBOX_ALLOW_UNSAFE=1``, because running model output as root without isolation is not an
option a grader should take silently.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import pwd
import random
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["Limits", "RunResult", "Isolation", "SandboxUnavailable", "run", "isolation"]

MODES = ("root-ns", "root-setuid", "user-ns", "plain")
WORKDIR_IN_NS = "/tmp/sandbox"  # the working directory's path inside the mount namespace


class SandboxUnavailable(RuntimeError):
    """No sandbox mode that is acceptable for the current user works on this machine."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of one run. ``cpu_s=None`` means ``ceil(timeout) + 1``."""

    memory_mb: int = 2048  # RLIMIT_AS
    cpu_s: int | None = None  # RLIMIT_CPU (soft; the hard limit is one second more)
    nproc: int = 64  # RLIMIT_NPROC (processes + threads of the run's uid)
    fsize_mb: int = 16  # RLIMIT_FSIZE: largest file the program may write
    nofile: int = 256  # RLIMIT_NOFILE
    output_bytes: int = 1_000_000  # stdout + stderr kept; more kills the run
    tmpfs_mb: int = 64  # size of the writable /tmp in the namespace modes


@dataclasses.dataclass(frozen=True)
class RunResult:
    returncode: int | None  # negative: killed by that signal
    stdout: str
    stderr: str
    timed_out: bool
    output_overflow: bool  # the run printed more than Limits.output_bytes and was killed
    duration: float
    mode: str
    uid: int | None  # the uid the program ran as (root modes); None when it kept the caller's


@dataclasses.dataclass(frozen=True)
class Isolation:
    mode: str
    python: str
    notes: str  # why stronger modes were not used


# ---------------------------------------------------------------------------------------------------
# Linux system-call glue (resolved once in the parent: the child of fork must not load libraries).

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MS_REC, _MS_PRIVATE = 16384, 1 << 18
# mount API syscalls added in Linux 5.2/5.12 share one number on every architecture
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC, _AT_RECURSIVE = 1, 0o2000000, 0x8000
_MOVE_MOUNT_F_EMPTY_PATH, _AT_FDCWD = 4, -100
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID = 0x1, 0x2
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
try:
    _libc.syscall.restype = ctypes.c_long
    _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    _libc.unshare.argtypes = [ctypes.c_int]
    _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
except AttributeError:  # not Linux: only the "plain" mode can work, and its probe says so
    pass
_HAS_PRCTL = hasattr(_libc, "prctl")


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), target.encode(), enc(fstype), flags, enc(data)), f"mount {target}")


def _clone_tree(path: str) -> int:
    flags = _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_RECURSIVE
    return _check(_libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, path.encode(), flags), f"open_tree {path}")


def _attach_tree(fd: int, path: str) -> None:
    _check(_libc.syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, path.encode(), _MOVE_MOUNT_F_EMPTY_PATH),
           f"move_mount {path}")


def _all_read_only() -> None:
    attr = _MountAttr(_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID, 0, 0, 0)
    _check(_libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, b"/", _AT_RECURSIVE, ctypes.byref(attr),
                         ctypes.sizeof(attr)), "mount_setattr /")


# ---------------------------------------------------------------------------------------------------
# What the child does between fork and exec.

@dataclasses.dataclass(frozen=True)
class _Plan:
    mode: str
    uid: int | None
    gid: int | None
    limits: Limits
    cpu_s: int
    files: tuple[tuple[str, bytes], ...]  # written by the child (namespace modes)
    hidden: tuple[str, ...]  # directories replaced by an empty tmpfs
    exposed: tuple[str, ...]  # interpreter paths under hidden dirs, mounted back read-only
    host_uid: int
    host_gid: int
    max_fd: int


def _set_limits(plan: _Plan) -> None:
    lim = plan.limits
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (lim.memory_mb * mb, lim.memory_mb * mb))
    resource.setrlimit(resource.RLIMIT_CPU, (plan.cpu_s, plan.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim.fsize_mb * mb, lim.fsize_mb * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim.nofile, lim.nofile))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim.nproc, lim.nproc))


def _build_namespace(plan: _Plan) -> None:
    """Mount namespace: everything read-only, tmpfs /tmp with the workdir, hidden homes."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    _all_read_only()
    clones = [(path, _clone_tree(path)) for path in plan.exposed]
    tmp_opts = f"size={plan.limits.tmpfs_mb}m,mode=1777"
    _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, tmp_opts)
    for hidden in plan.hidden:
        _mount("tmpfs", hidden, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=755")
    for path, fd in clones:
        os.makedirs(path, exist_ok=True)
        _attach_tree(fd, path)
        os.close(fd)
    owner = (plan.uid, plan.gid) if plan.uid is not None else (plan.host_uid, plan.host_gid)
    os.mkdir(WORKDIR_IN_NS, 0o700)
    for name, data in plan.files:
        path = os.path.join(WORKDIR_IN_NS, name)
        with open(path, "wb") as fh:
            fh.write(data)
        if plan.uid is not None:
            os.chown(path, *owner)
    if plan.uid is not None:
        os.chown(WORKDIR_IN_NS, *owner)


def _become_pid1(max_fd: int) -> None:
    """Fork: the parent stays outside the new PID namespace, waits and relays the exit status.

    It closes every descriptor first, so that the output pipes and subprocess' exec-error pipe end
    when the program's side ends, and returns nothing to the grader but the status.
    """
    pid = os.fork()
    if pid == 0:
        return
    try:
        os.closerange(0, max_fd)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
    finally:
        os._exit(255)


def _write_id_maps(host_uid: int, host_gid: int) -> None:
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{host_uid} {host_uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{host_gid} {host_gid} 1")


def _child_setup(plan: _Plan) -> None:
    namespaces = _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS
    if plan.mode == "root-ns":
        _check(_libc.unshare(namespaces), "unshare")
        _build_namespace(plan)
        _become_pid1(plan.max_fd)
    elif plan.mode == "user-ns":
        _check(_libc.unshare(namespaces | _CLONE_NEWUSER), "unshare")
        _write_id_maps(plan.host_uid, plan.host_gid)
        _build_namespace(plan)
        _become_pid1(plan.max_fd)
    if plan.mode in ("root-ns", "user-ns"):
        # a /proc that lists only this namespace's processes
        _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    _set_limits(plan)
    if plan.uid is not None:
        os.setgroups([])
        os.setgid(plan.gid)
        os.setuid(plan.uid)
    if _HAS_PRCTL:
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        # after the uid change, which clears it: die with the process that waits for us
        _check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    os.umask(0o077)
    if plan.mode in ("root-ns", "user-ns"):
        os.chdir(WORKDIR_IN_NS)


# ---------------------------------------------------------------------------------------------------
# The parent side.

_UID_LOCK = threading.Lock()
_UID_RANGE = (200_000, 400_000)
_uid_next = random.SystemRandom().randrange(*_UID_RANGE)


def _fresh_uid() -> int:
    """An id no account uses; runs in one process never share one (concurrent runs stay apart)."""
    global _uid_next
    with _UID_LOCK:
        while True:
            uid = _uid_next
            _uid_next = _UID_RANGE[0] + (_uid_next + 7919 - _UID_RANGE[0]) % (_UID_RANGE[1] - _UID_RANGE[0])
            try:
                pwd.getpwuid(uid)
            except KeyError:
                return uid


def _python() -> str:
    return os.environ.get("MISS_SANDBOX_PYTHON") or sys.executable


def _interpreter_paths(python: str) -> list[str]:
    """Directories the interpreter needs: its prefix(es) (of a virtual environment and of the base)."""
    paths = set()
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        paths |= {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    for exe in (os.path.abspath(python), os.path.realpath(python)):
        bin_dir = os.path.dirname(exe)
        paths.add(os.path.realpath(os.path.dirname(bin_dir)) if os.path.basename(bin_dir) == "bin" else bin_dir)
    return sorted(paths)


def _own_process_count() -> int:
    """Processes and threads of the caller's uid: RLIMIT_NPROC counts them too when the uid is shared."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            info = os.stat(f"/proc/{entry}")
            if info.st_uid == uid:
                count += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return count


def _hidden_dirs() -> list[str]:
    dirs = {"/root"}
    home = os.environ.get("HOME") or os.path.expanduser("~")
    if home and os.path.isdir(home) and os.path.realpath(home) not in ("/", "/tmp"):
        dirs.add(os.path.realpath(home))
    return sorted(d for d in dirs if os.path.isdir(d))


def _exposed(python: str, hidden: list[str]) -> list[str]:
    covers = ["/tmp", *hidden]
    inside = [p for p in _interpreter_paths(python)
              if any(p == h or p.startswith(h.rstrip("/") + "/") for h in covers) and p not in covers]
    # keep only outermost paths; a path equal to a hidden dir itself cannot be re-exposed
    inside.sort(key=len)
    out: list[str] = []
    for p in inside:
        if not any(p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def _clean_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": "/tmp" if workdir == WORKDIR_IN_NS else workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _reap_uid(uid: int) -> None:
    """Kill every process running as ``uid`` (kill(-1) from a process that has only that uid)."""

    def become_and_kill() -> None:
        os.setgid(uid)
        os.setuid(uid)
        for _ in range(3):
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                break

    true = shutil.which("true") or "/bin/true"
    subprocess.run([true], preexec_fn=become_and_kill, stdin=subprocess.DEVNULL,  # noqa: PLW1509
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _remove_stray_files(uid: int) -> None:
    """root-setuid mode: top-level entries the run created in world-writable directories."""
    for base in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def _max_fd() -> int:
    try:
        return max(256, min(int(os.sysconf("SC_OPEN_MAX")), 1 << 20))
    except (ValueError, OSError):
        return 65536


def _leader_exited(pid: int) -> bool:
    """True once the direct child has exited; does not reap it, so its pid (= pgid) stays ours."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _execute(program: str, timeout: float, stdin: bytes, files: Mapping[str, bytes], limits: Limits,
             mode: str, python: str) -> RunResult:
    if len(stdin) >= 65536:
        raise ValueError("stdin larger than a pipe buffer is not supported")
    root_mode = mode in ("root-ns", "root-setuid")
    uid = _fresh_uid() if root_mode else None
    all_files = (("main.py", program.encode()),) + tuple(
        (name, data if isinstance(data, bytes) else data.encode()) for name, data in files.items())
    for name, _ in all_files:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"file names must be plain names, got {name!r}")
    cpu_s = limits.cpu_s if limits.cpu_s is not None else int(timeout) + 2
    if uid is None and os.path.isdir("/proc"):
        # the run shares the caller's uid, whose other processes count against the same limit
        limits = dataclasses.replace(limits, nproc=limits.nproc + _own_process_count())
    hidden = _hidden_dirs()
    plan_kw = dict(mode=mode, uid=uid, gid=uid, limits=limits, cpu_s=cpu_s, hidden=(), exposed=(),
                   host_uid=os.getuid(), host_gid=os.getgid(), max_fd=_max_fd(), files=())
    host_workdir = None
    if mode in ("root-ns", "user-ns"):
        plan_kw.update(files=all_files, hidden=tuple(hidden), exposed=tuple(_exposed(python, hidden)))
        workdir = WORKDIR_IN_NS
    else:
        host_workdir = tempfile.mkdtemp(prefix="miss-sandbox-")
        for name, data in all_files:
            Path(host_workdir, name).write_bytes(data)
        if uid is not None:
            for name, _ in all_files:
                os.chown(os.path.join(host_workdir, name), uid, uid)
            os.chown(host_workdir, uid, uid)
        os.chmod(host_workdir, 0o700)
        workdir = host_workdir
    plan = _Plan(**plan_kw)

    start = time.monotonic()
    deadline = start + timeout
    timed_out = overflow = False
    out, err = bytearray(), bytearray()
    try:
        proc = subprocess.Popen(  # noqa: PLW1509 - preexec_fn is the point here
            [python, "-I", "-B", "main.py"], cwd=host_workdir or "/", env=_clean_env(workdir),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=lambda: _child_setup(plan), close_fds=True)
        try:
            try:
                if stdin:
                    proc.stdin.write(stdin)
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            sel = selectors.DefaultSelector()
            for stream, buf in ((proc.stdout, out), (proc.stderr, err)):
                os.set_blocking(stream.fileno(), False)
                sel.register(stream, selectors.EVENT_READ, buf)
            exited_at = None
            while sel.get_map():
                now = time.monotonic()
                if now >= deadline:
                    timed_out = True
                    break
                if exited_at is None and _leader_exited(proc.pid):
                    # the program is done: whatever it left in its group goes now
                    exited_at = now
                    _killpg(proc.pid)
                if exited_at is not None and now - exited_at > 0.5:
                    break
                for key, _ in sel.select(timeout=min(0.05, max(0.0, deadline - now))):
                    try:
                        chunk = os.read(key.fileobj.fileno(), 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    key.data.extend(chunk)
                    if len(out) + len(err) > limits.output_bytes:
                        overflow = True
                        break
                if overflow:
                    break
            sel.close()
            # the output ended; give the direct child (the PID-1 relay in namespace modes) time to exit
            while not (timed_out or overflow) and not _leader_exited(proc.pid):
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
                time.sleep(0.002)
        finally:
            _killpg(proc.pid)
            if uid is not None:
                _reap_uid(uid)
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                stream.close()
    finally:
        if host_workdir is not None:
            shutil.rmtree(host_workdir, ignore_errors=True)
        if uid is not None and mode == "root-setuid":
            _remove_stray_files(uid)
    duration = time.monotonic() - start
    cap = limits.output_bytes
    return RunResult(
        returncode=proc.returncode,
        stdout=bytes(out[:cap]).decode("utf-8", "replace"),
        stderr=bytes(err[:cap]).decode("utf-8", "replace"),
        timed_out=timed_out, output_overflow=overflow, duration=duration, mode=mode, uid=uid)


# ---------------------------------------------------------------------------------------------------
# Mode selection.

_ISOLATION: Isolation | None = None
_ISOLATION_LOCK = threading.Lock()


def _probe(mode: str, python: str) -> str | None:
    """None when ``mode`` works here, else why not."""
    check = "import os, sys; print('ok', os.getuid(), os.getpid())"
    try:
        res = _execute(check, 20.0, b"", {}, Limits(), mode, python)
    except (OSError, subprocess.SubprocessError, ValueError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if res.returncode != 0 or not res.stdout.startswith("ok"):
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        return f"exit {res.returncode}: {tail}"
    return None


def isolation() -> Isolation:
    """The mode ``run`` uses on this machine (probed on first use, then cached)."""
    global _ISOLATION
    with _ISOLATION_LOCK:
        if _ISOLATION is not None:
            return _ISOLATION
        python = _python()
        forced = os.environ.get("MISS_SANDBOX_MODE")
        unsafe_ok = os.environ.get("MISS_SANDBOX_ALLOW_UNSAFE") == "1"
        if forced:
            if forced not in MODES:
                raise ValueError(f"MISS_SANDBOX_MODE must be one of {MODES}, got {forced!r}")
            if forced in ("plain", "user-ns") and os.geteuid() == 0 and not unsafe_ok:
                raise SandboxUnavailable(f"MISS_SANDBOX_MODE={forced} as root runs model code as root; "
                                         "set MISS_SANDBOX_ALLOW_UNSAFE=1 to accept that")
            candidates = [forced]
        elif os.geteuid() == 0:
            candidates = ["root-ns", "root-setuid"]
        else:
            candidates = ["user-ns", "plain"]
        notes = []
        for mode in candidates:
            why = _probe(mode, python)
            if why is None:
                _ISOLATION = Isolation(mode, python, "; ".join(notes))
                return _ISOLATION
            notes.append(f"{mode} unavailable ({why})")
        if not forced and os.geteuid() == 0 and unsafe_ok and _probe("plain", python) is None:
            notes.append("running as root WITHOUT isolation (MISS_SANDBOX_ALLOW_UNSAFE=1)")
            _ISOLATION = Isolation("plain", python, "; ".join(notes))
            return _ISOLATION
        raise SandboxUnavailable("; ".join(notes) or "no sandbox mode works")


def run(program: str, timeout: float = 10.0, *, stdin: bytes | str = b"",
        files: Mapping[str, bytes | str] | None = None, limits: Limits | None = None) -> RunResult:
    """Run ``program`` (Python source) in the sandbox; ``timeout`` is wall-clock seconds.

    ``stdin`` is fed to the program (under 64 KiB); ``files`` are extra files placed next to it in the
    working directory. Never raises for anything the program does; raises ``SandboxUnavailable`` when
    no acceptable isolation works on this machine. The set-up runs between fork and exec
    (``preexec_fn``), so call this from a process whose other threads hold no locks: run sandboxes in
    parallel with processes (``eval.code_grading.parallel_map``), not threads.
    """
    iso = isolation()
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return _execute(program, float(timeout), data, dict(files or {}), limits or Limits(), iso.mode, iso.python)


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(
        prog="python -m eval.sandbox",
        description="Print which isolation this machine gives model-written code (namespaces, read-only root, "
                    "unprivileged uid, or only resource limits) and run one program in it as a check.",
    ).parse_args(argv)
    iso = isolation()
    print(f"mode: {iso.mode}\npython: {iso.python}\n{iso.notes}")
    res = run("import os; print(os.getuid(), os.getcwd())", timeout=5)
    print(res)
    return 0 if res.returncode == 0 and not res.timed_out else 1


if __name__ == "__main__":
    sys.exit(main())
