"""Turn the records under results/ into paper_tables/: every table as Markdown, LaTeX and CSV, the figures as
PNG, the claims with their verdicts, and one flat CSV per experiment in results/<experiment>.csv.

The output is a pure function of the records: running it again on the same records, anywhere, writes the
same bytes (tests/test_analysis.py). Each section is one builder module of this package (``registry``)."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from experiments.common.records import DEFAULT_RESULTS_DIR, REPO_ROOT

from . import BUILDER_MODULES  # noqa: F401  (registers the builders)
from .core import TEST_NAME, Results, Section, strip_machine_paths, write_figure_atomic, write_text_atomic
from .registry import BUILDERS
from .run_csv import write_run_csvs

DEFAULT_OUT = REPO_ROOT / "paper_tables"
CLAIMS_RULES = (
    "Each claim of the paper that an experiment tests, with its verdict: ✅ supported, ❌ contradicted, ❔ "
    "inconclusive, ⬜ not tested (no data, or only a pipeline check that cannot test it). How a verdict is decided "
    "(`analysis/stats.py`, one helper for every claim): the claim is read as a comparison of paired measurements, "
    "paired by seed (same seed, same data), by measured point (same layer size and rank) or by step (same batch); "
    f"their differences (log ratios for times and memory) get a {TEST_NAME} interval: the exact Wilcoxon "
    "signed-rank test (its null distribution enumerated, no bootstrap, no normal approximation), inverted into the "
    "Hodges–Lehmann confidence interval for the centre of the differences. The claim is *supported* only when the "
    "interval lies wholly on the claimed side of 0 (or of the margin the claim states, e.g. a ratio of 3 for 'within "
    "3×'), *contradicted* when it lies wholly on the other side, and *inconclusive* when it contains it. With 5 or "
    "fewer pairs no exact two-sided test reaches 95% (its smallest p-value is 1/16 at n = 5), so the interval is "
    "unbounded and the verdict inconclusive: 6 pairs is the least that can decide. Claims about deterministic counts "
    "(parameters, FLOPs) are checked exactly at every measured point instead, and say so. Each verdict names its "
    "test, n and interval.")


def write_section(section: Section, out: Path, results: Results) -> list[tuple[str, str, str, str]]:
    """Write a section's files; returns index lines (link, what, profile, results from)."""
    profile, when = results.provenance(*section.experiments)
    lines = []
    for fig in section.figures:
        write_figure_atomic(out / f"{fig.key}.png", fig)
        lines.append((f"[{fig.key}.png]({fig.key}.png)", fig.title, profile, when))
    for table in section.tables:
        write_text_atomic(out / f"{table.key}.md", table.to_markdown(heading="#"))
        write_text_atomic(out / f"{table.key}.tex", table.to_latex())
        write_text_atomic(out / f"{table.key}.csv", table.to_csv())
        lines.append((f"[{table.key}.md]({table.key}.md), [.tex]({table.key}.tex), [.csv]({table.key}.csv)",
                      table.title, profile, when))
    if section.claims:
        write_text_atomic(out / f"claims_{section.key}.md", section.claims_markdown())
        lines.append((f"[claims_{section.key}.md](claims_{section.key}.md)", f"Claims: {section.title}", profile, when))
    return lines


def run_all_summaries(results_dir: Path) -> list[str]:
    """The run_all summaries on record, one line per profile: when run_all wrote it (its ``written_at``)
    and what each experiment took. run_all writes its summary before it calls the analysis and adds the
    analysis's own time afterwards; that row is left out, so the line reads the same before and after."""
    out = []
    for path in sorted((results_dir / "run_all").glob("summary-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        rows = [e for e in data.get("experiments", []) if e.get("experiment") != "analysis"]
        parts = ", ".join(f"{e['experiment']} {e['time_s']} s" if not str(e.get("status")).startswith("skipped")
                          else f"{e['experiment']} skipped (done earlier)"
                          for e in rows if e.get("time_s") is not None)
        total = sum(e.get("time_s") or 0 for e in rows)
        written = data.get("written_at") or "at an unrecorded time"
        out.append(f"- last `python -m experiments.run_all --profile {data.get('profile')}` on record (written "
                   f"{written}): its experiments took {total:.1f} s ({parts}).")
    return out


def readme(sections: list[Section], index: list[tuple[str, str, str, str]], errors: list[str], results: Results,
           results_dir: Path, run_csvs: list[str]) -> str:
    tables = {t.key: t for s in sections for t in s.tables}
    lines = ["# Paper tables and figures", "",
             "Generated by `python -m analysis` from the records under `results/` (a pure function of them: the "
             "same records give the same bytes); regenerated on every run, never edited by hand. Missing values "
             "print as \"—\". Every table has a CSV twin with numeric columns (mean, std and n apart, units in "
             "the header), and each experiment's runs are in one flat CSV: "
             + (", ".join(f"`results/{name}`" for name in run_csvs) or "none yet") + ".", ""]
    for s in sections:
        for key in s.readme_figures:
            fig = next(f for f in s.figures if f.key == key)
            lines += [f"## {fig.title}", "", f"![{fig.title}]({key}.png)", ""]
    for s in sections:
        for key in s.readme_tables:
            if key in tables:
                lines += [tables[key].to_markdown(heading="##"), ""]
    lines += ["## How these results were produced", "",
              "Everything: `bash run_all.sh --profile cpu` (or `small`, `paper`), which runs each experiment and "
              "then this analysis. One experiment: its command below, then `python -m analysis`.", ""]
    lines += [f"- {s.summary}" for s in sections if s.summary]
    experiments = sorted({e for s in sections for e in s.experiments})
    span = results.span_s(*experiments)
    if span:
        # The records may come from several sessions (resumed runs), so the span alone can overstate the cost.
        runs_total = sum(r.get("wall_time_s") or 0 for e in experiments for r in results.records(e))
        lines.append(f"- All of the above: the runs themselves took {runs_total:.0f} s; their records span "
                     f"{span[2]:.0f} s of wall clock ({span[0]} → {span[1]}), which includes any pauses between "
                     "sessions.")
    lines += run_all_summaries(results_dir)
    failed = {e: runs for e, runs in results.failed.items() if runs}
    for experiment, runs in sorted(failed.items()):
        lines.append(f"- {experiment}: {len(runs)} failed run(s) left out: {', '.join(runs[:8])}")
    lines += ["", "## Index", "", "| file | what | profile | results from |", "|---|---|---|---|"]
    lines += [f"| {link} | {what} | {profile} | {when} |" for link, what, profile, when in index]
    if errors:
        lines += ["", "## Builders that failed", ""] + [f"- {strip_machine_paths(e)}" for e in errors]
    lines += ["", "## Claims", "", CLAIMS_RULES, ""]
    lines += [s.claims_markdown() for s in sections if s.claims]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR,
                   help="the records to read (default: results/ of the repository); the per-experiment CSVs "
                        "are written there too")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the tables go (default: paper_tables/)")
    p.add_argument("--sections", default=None, metavar="SECTION[,SECTION]",
                   help=f"rebuild only these sections (default: all of {', '.join(BUILDERS)})")
    args = p.parse_args(argv)

    results = Results(args.results_dir)
    wanted = set(args.sections.split(",")) if args.sections else set(BUILDERS)
    unknown = wanted - set(BUILDERS)
    if unknown:
        p.error(f"--sections: unknown section(s) {sorted(unknown)}; known: {', '.join(BUILDERS)}")
    sections, index, errors = [], [], []
    for key, b in BUILDERS.items():
        if key not in wanted:
            continue
        try:
            section = b.build(results)
            index += write_section(section, args.out, results)
            sections.append(section)
        except Exception as e:  # one broken builder must not hide the other tables
            errors.append(f"{key}: {type(e).__name__}: {e}")
            traceback.print_exc()
    run_csvs = [p.name for p in write_run_csvs(args.results_dir)]
    write_text_atomic(args.out / "README.md", readme(sections, index, errors, results, args.results_dir, run_csvs))
    print(f"analysis: {len(sections)} section(s), {len(index)} file(s) -> {args.out}"
          + (f"; {len(errors)} builder(s) failed" if errors else ""), file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
