"""The command line every experiment script shares, and the loop over its runs.

An experiment is a list of runs (``plan``) and a function that executes one run into its record
(``execute``). ``experiment_main`` gives every script the same switches and the same rules:

- a run is identified by its resolved config (``identity.config_hash``); a run whose successful record
  has the same hash is skipped, one whose record was made under another config stops the script before
  anything runs, with the changed keys and their old and new values (``--force`` redoes it);
- a run with an output directory (checkpoints) resumes only what was written under its own hash; a
  directory written under another config is reported the same way, and ``--force`` starts it over;
- a failed run writes a ``failed`` record and the loop goes on; the script exits 1 if any run failed;
- a usage error (an unknown ``--set`` key, a value of the wrong type, a missing input) exits 2 with the
  message and the valid keys, before any run starts;
- in a job of several machines (a script with ``--node-rank``, one launch per node), node 0 keeps the
  records, stamps the output directories and runs the stage; the other nodes only execute the same runs
  (they read node 0's records, on a filesystem all nodes share, to skip the finished ones).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, parse_overrides
from .identity import config_changes, config_hash, describe_changes
from .profiles import PROFILES, Profile, get_profile
from .records import (DEFAULT_RESULTS_DIR, DEFAULT_RUNS_DIR, RunRecord, RunTracker, existing_record, record_path,
                      write_json_atomic)

IDENTITY_FILE = "run_identity.json"


@dataclass(frozen=True)
class Run:
    name: str                      # unique within the experiment; the record's file name
    config: dict[str, Any]         # the resolved config of this run, saved (and hashed) in its record
    seed: int | None = None
    output_dir: Path | None = None  # its checkpoints and outputs, if it keeps any between attempts

    @property
    def config_hash(self) -> str:
        return config_hash(self.config)


@dataclass
class Context:
    """What ``plan`` and ``execute`` get: the parsed switches, resolved."""

    experiment: str
    profile: Profile
    results_dir: Path
    data_dir: Path | None          # --data-dir: searched first for each data file (eval.data_files)
    force: bool
    overrides: dict[str, Any] = field(default_factory=dict)
    args: argparse.Namespace | None = None


PlanFn = Callable[[Context], list[Run]]
ExecuteFn = Callable[[Run, RunRecord, Context], None]
CheckInputsFn = Callable[[Context, list[Run]], None]   # raises eval.data_files.DataFileError for a missing input


@dataclass(frozen=True)
class Stage:
    """A step after the runs, over the same runs (e.g. scoring trained models)."""

    # the (experiment, run) records it will write, so --plan (and run_all's "done?" check) can list them
    records: Callable[[Context, list[Run]], list[tuple[str, str]]]
    run: Callable[[Context, list[Run]], int]        # does the step; returns how many of its records failed


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES), help="scale to run at (default: cpu)")
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR,
                   help="where records go: <results-dir>/<experiment>/<profile>/<run>.json (default: results/)")
    p.add_argument("--runs-dir", type=Path, default=Path(os.environ.get("MISS_RUNS_DIR", DEFAULT_RUNS_DIR)),
                   help="checkpoints, adapters, logs and caches: <runs-dir>/<experiment>/<run>/ (default: runs/, "
                        "or $MISS_RUNS_DIR); large, never committed")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="data directory searched first for each data file, before $MISS_DATA_DIR and the "
                        "repository's data/ (see data/README.md)")
    p.add_argument("--force", action="store_true",
                   help="redo the selected runs even if a record exists, and start their outputs over")
    p.add_argument("--runs", default=None, metavar="GLOB[,GLOB]",
                   help="run only the runs whose name matches one of these globs (see --plan for the names)")
    p.add_argument("--plan", action="store_true",
                   help="print the planned runs (name, seed, config hash, state, resolved config) as JSON and exit")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the experiment's profile config (repeatable; an unknown key lists the "
                        "valid ones)")
    return p


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def select_runs(runs: list[Run], patterns: str | None) -> list[Run]:
    if not patterns:
        return runs
    globs = [g for g in patterns.split(",") if g]
    return [r for r in runs if any(fnmatch.fnmatch(r.name, g) for g in globs)]


def stored_identity(run: Run) -> dict[str, Any] | None:
    """The identity an earlier attempt wrote into the run's output directory, if any."""
    if run.output_dir is None:
        return None
    path = Path(run.output_dir) / IDENTITY_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, json.JSONDecodeError):
        return {"config_hash": None, "config": {}}        # unreadable: treat as written under another config


def run_state(ctx: Context, run: Run) -> tuple[str, list[tuple[str, Any, Any]]]:
    """``done``, ``todo`` or ``changed`` (with the changes) for one planned run."""
    rec = existing_record(ctx.results_dir, ctx.experiment, ctx.profile.name, run.name)
    # The stored config is hashed again under today's identity rule (``identity``), so a record stays valid
    # when a key is found not to change results (e.g. a path) and is left out of the identity later.
    if rec is not None and rec["status"] == "success":
        if config_hash(rec.get("config", {})) == run.config_hash:
            return "done", []
        return "changed", config_changes(rec.get("config", {}), run.config)
    ident = stored_identity(run)
    if ident is not None and config_hash(ident.get("config", {})) != run.config_hash:
        return "changed", config_changes(ident.get("config", {}), run.config)
    return "todo", []


def prepare_output_dir(run: Run, force: bool) -> None:
    """Start the run's output directory over when forced, and stamp it with the run's identity."""
    if run.output_dir is None:
        return
    out = Path(run.output_dir)
    if force and out.exists():
        shutil.rmtree(out)
    write_json_atomic(out / IDENTITY_FILE, {"config_hash": run.config_hash, "config": run.config})


def experiment_main(experiment: str, description: str, plan: PlanFn, execute: ExecuteFn,
                    argv: list[str] | None = None,
                    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                    stage: Stage | None = None,
                    dry_run: Callable[[Context, list[Run]], int] | None = None,
                    check_inputs: CheckInputsFn | None = None) -> int:
    """``dry_run``: what ``--dry-run`` does with the planned runs instead of running them (its exit code);
    ``check_inputs``: raises ``eval.data_files.DataFileError`` for a missing or damaged input file."""
    parser = build_parser(description)
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        ctx = Context(
            experiment=experiment,
            profile=get_profile(args.profile),
            results_dir=args.results_dir,
            data_dir=args.data_dir,
            force=args.force,
            overrides=parse_overrides(args.overrides),
            args=args,
        )
        runs = select_runs(plan(ctx), args.runs)
        stage_records = stage.records(ctx, runs) if stage else []     # validates the stage's settings too
    except ConfigError as e:
        parser.error(str(e))            # exits 2 with the usage line and the message
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"{experiment}: run names are not unique: {sorted(n for n in names if names.count(n) > 1)}")
    states = {r.name: run_state(ctx, r) for r in runs}

    if args.plan:
        rows = [{"name": r.name, "experiment": experiment, "seed": r.seed, "config_hash": r.config_hash,
                 "state": states[r.name][0], "config": r.config} for r in runs]
        extra = [{"name": name, "experiment": exp} for exp, name in stage_records]
        print(json.dumps(rows + extra, default=str))
        return 0
    if dry_run is not None and args.dry_run:
        return dry_run(ctx, runs)
    if check_inputs is not None:      # a missing input stops here, before any run, as a usage error
        from eval.data_files import DataFileError

        try:
            check_inputs(ctx, runs)
        except DataFileError as e:
            print(f"[{experiment}] {e}", file=sys.stderr)
            return 2
    changed = {name: changes for name, (state, changes) in states.items() if state == "changed"}
    if changed and not args.force:
        for name, changes in changed.items():
            print(f"[{experiment}] {name}: its record or checkpoints were made under another config "
                  f"({len(changes)} change(s)):\n{describe_changes(changes)}", file=sys.stderr)
        print(f"[{experiment}] {len(changed)} run(s) changed config; nothing was run. Re-run with --force to redo "
              f"them (their earlier records and checkpoints are replaced), or restore the old settings.",
              file=sys.stderr)
        return 2

    # On a multi-node launch only node 0 writes records and stamps output directories; the other nodes
    # (node_rank > 0, see sft_experiment's --nnodes) train the same runs and read node 0's records.
    follower = getattr(args, "node_rank", 0) > 0
    todo = [r for r in runs if args.force or states[r.name][0] != "done"]
    skipped = len(runs) - len(todo)
    if skipped:
        print(f"[{experiment}] {skipped} of {len(runs)} runs done earlier (same config): skipped", file=sys.stderr)
    failed = 0
    t0 = time.perf_counter()
    for i, run in enumerate(todo, 1):
        elapsed = time.perf_counter() - t0
        eta = f" | ETA {_duration(elapsed / (i - 1) * (len(todo) - i + 1))}" if i > 1 else ""
        print(f"[{experiment}] run {i}/{len(todo)} {run.name} | elapsed {_duration(elapsed)}{eta} | record "
              f"{record_path(ctx.results_dir, experiment, ctx.profile.name, run.name)}", file=sys.stderr, flush=True)
        tracker = RunTracker(ctx.results_dir, experiment, run.name, ctx.profile.name, run.config, run.seed,
                             write=not follower)
        with tracker as record:
            if not follower:
                prepare_output_dir(run, args.force)
            execute(run, record, ctx)
        failed += record.status == "failed"
    print(f"[{experiment}] {len(runs)} runs: {len(todo) - failed} ran, {skipped} already done, {failed} failed "
          f"({_duration(time.perf_counter() - t0)})", file=sys.stderr)
    if stage is not None and not follower:
        failed += stage.run(ctx, runs)
    return 1 if failed else 0
