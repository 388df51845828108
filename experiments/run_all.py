"""Run every registered experiment for one profile, each in its own process, then the analysis.

    python -m experiments.run_all --profile cpu [--force] [--only a,b]

A failed experiment is reported and the next one runs; finished runs are skipped inside each script
(``--force`` redoes them). The LLM scripts score their runs after training (generation + grading, their
eval stage), so an experiment counts as done when its training and eval records have succeeded. Ends with
a summary table and exits non-zero if anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments.common.profiles import PROFILES
from experiments.common.records import DEFAULT_RESULTS_DIR, REPO_ROOT, is_done, now_iso, write_json_atomic
from experiments.common.registry import EXPERIMENTS, Experiment
from experiments.common.streams import child_env


def _child_env() -> dict[str, str]:
    """Scripts run as ``python experiments/x.py`` import the repository's packages from its root; progress
    bars are drawn only if a person watches this terminal (``streams``)."""
    path = os.environ.get("PYTHONPATH")
    return child_env({**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT)})


def _planned_runs(exp: Experiment, common: list[str]) -> list[dict] | None:
    """Every record the script would write (its runs with their config hash, and e.g. their eval records)."""
    out = subprocess.run([sys.executable, *exp.command, *common, "--plan"], cwd=REPO_ROOT,
                         capture_output=True, text=True, env=_child_env())
    if out.returncode != 0:
        return None
    try:
        rows = json.loads(out.stdout.strip().splitlines()[-1])
        return [{"experiment": r.get("experiment", exp.name), "name": r["name"], "config_hash": r.get("config_hash")}
                for r in rows]
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        return None


def run_experiment(exp: Experiment, profile: str, results_dir: Path, force: bool, extra: list[str]) -> dict:
    common = ["--profile", profile, "--results-dir", str(results_dir), *extra]
    planned = _planned_runs(exp, common)
    runs = sum(r["experiment"] == exp.name for r in planned) if planned else None
    if not force and planned and all(is_done(results_dir, r["experiment"], profile, r["name"], r["config_hash"])
                                     for r in planned):
        return {"experiment": exp.name, "status": "success (done earlier)", "runs": runs, "time_s": 0.0}
    t0 = time.perf_counter()
    print(f"\n=== {exp.name}: {exp.reproduces} ===", flush=True)
    rc = subprocess.run([sys.executable, *exp.command, *common, *(["--force"] if force else [])], cwd=REPO_ROOT,
                        env=_child_env()).returncode
    return {"experiment": exp.name, "status": "success" if rc == 0 else f"failed (exit {rc})",
            "runs": runs, "time_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES), help="scale to run at (default: cpu)")
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR,
                   help="where records go (default: results/); the analysis reads the same folder")
    p.add_argument("--force", action="store_true",
                   help="redo runs that already have a successful record (and runs whose config changed)")
    p.add_argument("--only", default=None, metavar="EXPERIMENT[,EXPERIMENT]",
                   help="run only these experiments (names as in experiments/common/registry.py); to select runs "
                        "inside one experiment, run its script with --runs GLOB")
    p.add_argument("--data-dir", type=Path, default=None, help="searched first for every data file, before $MISS_DATA_DIR and the repository's data/ "
                        "(passed to every experiment)")
    p.add_argument("--no-analysis", action="store_true", help="skip `python -m analysis` at the end")
    args = p.parse_args(argv)

    selected = [e for e in EXPERIMENTS if args.profile in e.profiles]
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {e.name for e in EXPERIMENTS}
        if unknown:
            p.error(f"--only names unknown experiment(s) {sorted(unknown)}")
        selected = [e for e in selected if e.name in wanted]
    extra = ["--data-dir", str(args.data_dir)] if args.data_dir else []

    t0 = time.perf_counter()
    rows = [run_experiment(e, args.profile, args.results_dir, args.force, extra) for e in selected]
    summary_path = args.results_dir / "run_all" / f"summary-{args.profile}.json"

    finished_at = now_iso()    # kept on the rewrite after the analysis, which the tables' README does not show

    def write_summary() -> float:
        total = round(time.perf_counter() - t0, 1)
        write_json_atomic(summary_path, {"profile": args.profile, "written_at": finished_at, "total_time_s": total,
                                         "experiments": rows})
        return total

    # The summary is written before the analysis too, so the tables' README reports this run, not the last one.
    total = write_summary()
    if not args.no_analysis and (REPO_ROOT / "analysis" / "__main__.py").exists():
        print("\n=== analysis: results/ -> paper_tables/ ===", flush=True)
        t_analysis = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", "analysis", "--results-dir", str(args.results_dir)], cwd=REPO_ROOT).returncode
        rows.append({"experiment": "analysis", "status": "success" if rc == 0 else f"failed (exit {rc})", "runs": None,
                     "time_s": round(time.perf_counter() - t_analysis, 1)})
        total = write_summary()

    print(f"\n## run_all summary (profile {args.profile}, {total} s)\n")
    print("| experiment | status | runs | time (s) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['experiment']} | {r['status']} | {r['runs'] if r['runs'] is not None else '—'} | "
              f"{r['time_s'] if r['time_s'] is not None else '—'} |")
    return 1 if any(r["status"].startswith("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
