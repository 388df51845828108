"""One flat CSV per experiment, ``results/<experiment>.csv``: a row per run, for pandas.

Columns: ``profile``, ``run``, ``status``, ``seed``, ``config_hash``, ``trainable_params``, ``wall_time_s``,
``started_at``, ``finished_at``, then the resolved config flattened as ``config.<path>`` and the scalar
metrics as ``metrics.<path>`` (nested keys joined with "."; absolute paths shortened to the repository
folder they lie in, so the file reads the same on every clone). Per-step curves and other lists of metrics
stay in the JSON records; a list in the config (e.g. ``ranks``) is kept as its JSON text. Rows are sorted
by profile (largest scale first) and run, columns by name within each group, so the file is a pure
function of the records.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from experiments.common.records import load_records

from .core import csv_text, profile_of, profile_sort_key, strip_machine_paths, write_text_atomic

LEADING = ("profile", "run", "status", "seed", "config_hash", "trainable_params", "wall_time_s", "started_at",
           "finished_at")
NOT_EXPERIMENTS = ("run_all",)       # folders under results/ that hold no run records


def flatten(value: Any, prefix: str, out: dict[str, Any], keep_lists: bool) -> None:
    """Scalar leaves of ``value`` into ``out`` under dotted keys; lists as JSON text or dropped."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(v, f"{prefix}.{k}", out, keep_lists)
    elif isinstance(value, (list, tuple)):
        if keep_lists:
            out[prefix] = strip_machine_paths(json.dumps(value, sort_keys=True))
    elif value is None or isinstance(value, (str, bool, int, float)):
        if isinstance(value, str) and value in ("nan", "inf", "-inf"):   # how records store non-finite floats
            value = None
        elif isinstance(value, str):
            value = strip_machine_paths(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        out[prefix] = value


def run_row(rec: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"profile": profile_of(rec)}
    for key in LEADING[1:]:
        row[key] = rec.get(key)
    flatten(rec.get("config") or {}, "config", row, keep_lists=True)
    flatten(rec.get("metrics") or {}, "metrics", row, keep_lists=False)
    return row


def experiment_csv(records: list[dict[str, Any]]) -> str:
    rows = sorted((run_row(r) for r in records), key=lambda r: (profile_sort_key(r["profile"]), str(r["run"])))
    keys = {k for r in rows for k in r}
    header = list(LEADING) + sorted(k for k in keys if k.startswith("config.")) + sorted(
        k for k in keys if k.startswith("metrics."))
    return csv_text(header, ([r.get(k) for k in header] for r in rows))


def experiments_on_record(results_dir: Path) -> list[str]:
    root = Path(results_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in NOT_EXPERIMENTS
                  and not p.name.startswith("."))


def write_run_csvs(results_dir: Path) -> list[Path]:
    """Write ``<results_dir>/<experiment>.csv`` for every experiment with records; returns the paths."""
    written = []
    for experiment in experiments_on_record(results_dir):
        records = load_records(results_dir, experiment)
        if not records:
            continue
        path = Path(results_dir) / f"{experiment}.csv"
        write_text_atomic(path, experiment_csv(records))
        written.append(path)
    return written
