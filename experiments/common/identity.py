"""A run is identified by its resolved config: a short hash of everything that changes its result.

Two runs with the same hash compute the same thing, wherever the repository is checked out and however
many threads or processes they use; a finished record, a checkpoint or a set of generated samples is
reused only under the hash it was made with (``runner``). Keys that name places (paths, directories) or
how the work is spread and logged are left out, at any depth of the config.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Keys that never change a result: where files go or come from, how many threads/processes share the
# work, and how often progress is logged or saved. Matched by name at any depth of the config.
NON_IDENTITY_KEYS = frozenset({
    "output_dir", "data_dir", "runs_dir", "results_dir", "cache_dir", "configs_dir",
    "nproc", "num_threads", "threads", "cpu_threads", "torch_threads", "grade_jobs", "launcher",
    "save_steps", "save_total_limit", "logging_steps", "report_to", "progress",
})
HASH_CHARS = 16


def identity_view(config: Any) -> Any:
    """``config`` without the non-identity keys, tuples as lists (what JSON would store)."""
    if isinstance(config, dict):
        return {str(k): identity_view(v) for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    if isinstance(config, (list, tuple)):
        return [identity_view(v) for v in config]
    return config


def config_hash(config: dict[str, Any]) -> str:
    """Hex digest of the canonical JSON of ``identity_view(config)``."""
    canonical = json.dumps(identity_view(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]


def config_changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every identity key that differs ("<absent>" if missing)."""
    old, new = identity_view(old), identity_view(new)
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            where = f"{prefix}.{key}" if prefix else key
            if key not in old or key not in new:
                out.append((where, old.get(key, "<absent>"), new.get(key, "<absent>")))
            else:
                out += config_changes(old[key], new[key], where)
        return out
    return [] if old == new else [(prefix or "<config>", old, new)]


def describe_changes(changes: list[tuple[str, Any, Any]], limit: int = 12) -> str:
    lines = [f"  {key}: {old!r} -> {new!r}" for key, old, new in changes[:limit]]
    if len(changes) > limit:
        lines.append(f"  ... and {len(changes) - limit} more")
    return "\n".join(lines)
