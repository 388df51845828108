"""The command line every experiment script shares, and the loop over its runs.

An experiment is a list of runs (``plan``) and a function that executes one run into its record
(``execute``). ``experiment_main`` gives every script the same switches, skips runs whose successful
record exists (``--force`` redoes them), isolates failures (a failed run writes a ``failed`` record
and the loop goes on) and exits non-zero if any run failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .profiles import PROFILES, Profile, get_profile
from .records import DEFAULT_RESULTS_DIR, RunRecord, RunTracker, is_done


@dataclass(frozen=True)
class Run:
    name: str                      # unique within the experiment; the record's file name
    config: dict[str, Any]         # the resolved config of this run, saved in its record
    seed: int | None = None


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
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR, help="where records go (default: results/)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="data directory searched first for each data file, before $MISS_DATA_DIR and the "
                        "repository's data/ (see data/README.md)")
    p.add_argument("--force", action="store_true", help="redo runs whose successful record exists")
    p.add_argument("--only", default=None, help="run only the runs whose name matches this glob")
    p.add_argument("--plan", action="store_true", help="print the runs as JSON and exit")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the experiment's profile config (repeatable)")
    return p


def experiment_main(experiment: str, description: str, plan: PlanFn, execute: ExecuteFn,
                    argv: list[str] | None = None,
                    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                    stage: Stage | None = None, check_inputs: CheckInputsFn | None = None) -> int:
    from .config import parse_overrides

    parser = build_parser(description)
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    ctx = Context(
        experiment=experiment,
        profile=get_profile(args.profile),
        results_dir=args.results_dir,
        data_dir=args.data_dir,
        force=args.force,
        overrides=parse_overrides(args.overrides),
        args=args,
    )
    runs = plan(ctx)
    if args.only:
        runs = [r for r in runs if fnmatch.fnmatch(r.name, args.only)]
    if args.plan:
        extra = [{"name": name, "experiment": exp} for exp, name in stage.records(ctx, runs)] if stage else []
        print(json.dumps([{"name": r.name, "seed": r.seed} for r in runs] + extra))
        return 0
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"{experiment}: run names are not unique: {sorted(n for n in names if names.count(n) > 1)}")
    if check_inputs is not None:      # a missing input stops here, before any run, as a usage error
        from eval.data_files import DataFileError

        try:
            check_inputs(ctx, runs)
        except DataFileError as e:
            print(f"[{experiment}] {e}", file=sys.stderr)
            return 2

    failed = skipped = 0
    for i, run in enumerate(runs, 1):
        if not args.force and is_done(ctx.results_dir, experiment, run.name, ctx.profile.name):
            skipped += 1
            continue
        print(f"[{experiment}] run {i}/{len(runs)}: {run.name}", file=sys.stderr, flush=True)
        tracker = RunTracker(ctx.results_dir, experiment, run.name, ctx.profile.name, run.config, run.seed)
        with tracker as record:
            execute(run, record, ctx)
        failed += record.status == "failed"
    print(f"[{experiment}] {len(runs)} runs: {len(runs) - failed - skipped} ran, {skipped} already done, "
          f"{failed} failed", file=sys.stderr)
    if stage is not None:
        failed += stage.run(ctx, runs)
    return 1 if failed else 0
