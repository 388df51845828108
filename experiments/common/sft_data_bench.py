"""Time and memory of building the SFT training set at paper scale, offline.

    python -m experiments.common.sft_data bench --rows 400000

writes ``--rows`` rows (the local GSM8K train sample in MetaMathQA's format, repeated) to one JSON Lines
file, then builds it with the tiny model's tokenizer three times, each in a fresh process so that each
peak is its own:

- ``datasets``: ``build_dataset`` into an empty cache (JSON -> Arrow, tokenise with ``Dataset.map``);
- ``cached``: the same call again, as a resumed run or another rank makes it (the cache is read);
- ``legacy``: the list-based path ``build_dataset`` replaced: every row read into Python lists, tokenised
  into lists of ints held in memory, no cache (``--skip-legacy`` leaves it out).

It prints one JSON line: ``rows``, ``seconds``, ``cpu_seconds``, ``rows_per_s``, ``peak_rss_mb`` of the
first build; ``cached_seconds``, ``cached_cpu_seconds``, ``cached_peak_rss_mb``; the ``legacy`` numbers;
and the ratios; ``same_tokens`` says the variants' token ids and labels were compared (SHA-256, after the
timing) and are equal, else it fails. ``peak_rss_mb`` is the peak resident memory during the call above the
process's resident memory just before it (interpreter, libraries and tokenizer loaded): Linux's VmHWM, reset
before the call; pages of the memory-mapped Arrow files count while they are resident.
On a shared machine wall time depends on the load; CPU time much less.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .sft_data import DataSpec, _field, _jsonl_rows, build_dataset, gsm8k_as_metamath, prepare_tokenizer, tokenize_pairs
from .sft_data_cache import cache_root

VARIANTS = ("datasets", "cached", "legacy")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=400_000, help="rows to build (default 400000: MetaMathQA's 395k)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--skip-legacy", action="store_true", help="do not measure the list-based path")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the rows and the cache are written, removed afterwards (default: a new folder "
                        "under $MISS_CACHE_DIR)")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.child:
        print(json.dumps(_measure(args.child, args.workdir, args.tokenizer, args.max_length)))
        return 0
    from eval.data_files import REPO_DATA_DIR

    from .tiny_model import ensure_tiny_model

    tokenizer = ensure_tiny_model(cache_root(), REPO_DATA_DIR)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sft_data_bench.", dir=root))
    try:
        _write_rows(work / "rows.jsonl", args.rows)
        variants = VARIANTS[:2] if args.skip_legacy else VARIANTS
        m = {v: _child(v, work, tokenizer, args.max_length) for v in variants}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first, cached = m["datasets"], m["cached"]
    if len({v["sha256"] for v in m.values()}) != 1:
        raise RuntimeError(f"the variants built different token ids: {({k: v['sha256'] for k, v in m.items()})}")
    out = {"rows": args.rows, "max_length": args.max_length, "tokenizer": "tiny (byte-level BPE, 2048)",
           **{k: first[k] for k in ("seconds", "cpu_seconds", "rows_per_s", "peak_rss_mb")},
           **{f"cached_{k}": cached[k] for k in ("seconds", "cpu_seconds", "peak_rss_mb")},
           "cached_speedup": round(first["seconds"] / cached["seconds"], 1), "same_tokens": True}
    if "legacy" in m:
        legacy = m["legacy"]
        out["legacy"] = {k: legacy[k] for k in ("seconds", "cpu_seconds", "rows_per_s", "peak_rss_mb")}
        out["legacy_over_datasets"] = {"seconds": round(legacy["seconds"] / first["seconds"], 2),
                                       "cpu_seconds": round(legacy["cpu_seconds"] / first["cpu_seconds"], 2),
                                       "peak_rss_mb": round(legacy["peak_rss_mb"] / max(first["peak_rss_mb"], 1), 1)}
    print(json.dumps(out))
    return 0


def _write_rows(path: Path, n: int) -> None:
    """``n`` rows cycling through the GSM8K train sample as MetaMathQA rows (query, response)."""
    from eval.data_files import REPO_DATA_DIR

    lines = [json.dumps(row) + "\n" for _, row in gsm8k_as_metamath(REPO_DATA_DIR)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n, len(lines)):
            f.writelines(lines[:n - start])


def _child(variant: str, work: Path, tokenizer: Path, max_length: int) -> dict:
    argv = [sys.executable, "-m", "experiments.common.sft_data", "bench", "--child", variant, "--workdir", str(work),
            "--tokenizer", str(tokenizer), "--max-length", str(max_length)]
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"bench variant {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(variant: str, work: Path, tokenizer_path: str, max_length: int) -> dict:
    from transformers import AutoTokenizer

    importlib.import_module("datasets")     # in the baseline of every variant, as in a training process

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tokenizer_path))
    rows_file = work / "rows.jsonl"
    base_mb = _reset_peak_rss()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    if variant == "legacy":
        built = _legacy_build(tokenizer, rows_file, max_length)
    else:
        built = build_dataset(tokenizer, DataSpec(str(rows_file)), max_length=max_length, cache_dir=work / "cache")
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    peak = _peak_rss_mb() - base_mb
    return {"rows": len(built), "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 2),
            "rows_per_s": round(len(built) / seconds), "peak_rss_mb": round(peak, 1), "sha256": _digest(built)}


def _digest(built, chunk: int = 10_000) -> str:
    """SHA-256 of the token ids and labels, the same for a list of examples and a ``datasets.Dataset``
    holding the same rows (computed after the timing)."""
    import numpy as np
    import pyarrow.compute as pc

    h = hashlib.sha256()
    for start in range(0, len(built), chunk):
        if isinstance(built, list):
            part = built[start:start + chunk]
            columns = {k: [e[k] for e in part] for k in ("input_ids", "labels")}
            arrays = [(np.array([len(x) for x in v], np.int32), np.array([t for x in v for t in x], np.int32))
                      for v in columns.values()]
        else:
            table = built.with_format("arrow")[start:start + chunk]
            arrays = [(pc.list_value_length(table[k]).to_numpy().astype(np.int32),
                       pc.list_flatten(table[k]).to_numpy().astype(np.int32)) for k in ("input_ids", "labels")]
        for lengths, values in arrays:
            h.update(lengths.tobytes())
            h.update(values.tobytes())
    return h.hexdigest()


def _legacy_build(tokenizer, path: Path, max_length: int) -> list[dict[str, list[int]]]:
    """The path before ``build_dataset`` used ``datasets``: rows -> a list of (query, response) -> a list of
    token-id lists, all in Python objects, on every rank and every launch."""
    pairs = [(_field(row, "query", where), _field(row, "response", where)) for where, row in _jsonl_rows(path)]
    return tokenize_pairs(tokenizer, pairs, max_length)


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS and return that RSS in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as e:        # not Linux >= 4.0: a peak from before the call would count
        raise RuntimeError("the benchmark needs Linux's /proc/self/clear_refs to measure the peak of one call") from e
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    return _status_mb("VmHWM")
