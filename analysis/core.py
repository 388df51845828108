"""What every table builder shares: the results it reads, the artifacts it returns, and how they render.

A builder (see ``registry``) gets a ``Results`` (the records under ``results/``, read once) and returns a
``Section``: tables, figures and claims. ``__main__`` writes them. Rules kept here so no builder breaks
them: a missing value prints as "—" (``MISSING``), never a made-up number; mean ± std over seeds; files
are written atomically.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import statistics
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.common.records import load_records

MISSING = "—"
SUPPORTED, NOT_SUPPORTED, NOT_TESTED = "supported", "not supported", "not tested"


# ---------------------------------------------------------------------------------------------- results
class Results:
    """The successful records of ``results_dir``, per experiment, read on first use."""

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = Path(results_dir)
        self._cache: dict[str, list[dict[str, Any]]] = {}
        self.failed: dict[str, list[str]] = {}

    def records(self, experiment: str) -> list[dict[str, Any]]:
        if experiment not in self._cache:
            all_records = load_records(self.results_dir, experiment) if (self.results_dir / experiment).is_dir() else []
            self._cache[experiment] = [r for r in all_records if r.get("status") == "success"]
            self.failed[experiment] = [r["run"] for r in all_records if r.get("status") != "success"]
        return self._cache[experiment]

    def provenance(self, *experiments: str) -> tuple[str, str]:
        """(profiles, latest finish time) of the records of ``experiments``; "—" when there are none."""
        recs = [r for e in experiments for r in self.records(e)]
        profiles = sorted({r.get("profile") or "?" for r in recs})
        finished = max((r.get("finished_at") or "" for r in recs), default="")
        return (", ".join(profiles) if profiles else MISSING), (finished or MISSING)


    def span_s(self, *experiments: str) -> tuple[str, str, float] | None:
        """(first start, last finish, seconds between) of the records of ``experiments``."""
        recs = [r for e in experiments for r in self.records(e) if r.get("started_at") and r.get("finished_at")]
        if not recs:
            return None
        start, end = min(r["started_at"] for r in recs), max(r["finished_at"] for r in recs)
        seconds = (_dt.datetime.fromisoformat(end) - _dt.datetime.fromisoformat(start)).total_seconds()
        return start, end, seconds

    def summary(self, experiment: str, command: str) -> str:
        """One README line: the command, how many runs, and the time they took here."""
        recs = self.records(experiment)
        if not recs:
            return f"No records under results/{experiment} yet: run `{command}`."
        profiles, _ = self.provenance(experiment)
        total = sum(r.get("wall_time_s") or 0 for r in recs)
        span = self.span_s(experiment)
        when = f", {span[2]:.0f} s of wall time ({span[0]} → {span[1]})" if span else ""
        return f"`{command} --profile {profiles}`: {len(recs)} runs{when}; the runs themselves {total:.1f} s."


# ---------------------------------------------------------------------------------------------- numbers
def finite(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def mean_std(values: Iterable[Any]) -> tuple[float, float, int] | None:
    vals = finite(values)
    if not vals:
        return None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def fmt(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (integers in full, with thin separators); "—" if missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.{digits}g}" if abs(value) < 1e6 else f"{value:.{digits - 1}e}"
    return str(value)


def fmt_mean_std(values: Iterable[Any], digits: int = 4, decimals: int | None = None) -> str:
    """"mean ± std" over seeds (std of one value: "mean" alone); "—" when there is no value."""
    ms = mean_std(values)
    if ms is None:
        return MISSING
    mean, std, n = ms
    if decimals is not None:
        return f"{mean:.{decimals}f}" + (f" ± {std:.{decimals}f}" if n > 1 else "")
    return fmt(mean, digits) + (f" ± {fmt(std, 2)}" if n > 1 else "")


def fmt_seconds(value: float | None) -> str:
    """Seconds in the unit that keeps three significant digits (µs, ms, s)."""
    if value is None or not math.isfinite(value):
        return MISSING
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(value) >= scale or unit == "µs":
            return f"{value / scale:.3g} {unit}"
    return MISSING


def fmt_bytes(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{int(value)} B"


# ---------------------------------------------------------------------------------------------- artifacts
@dataclass
class Table:
    key: str                      # file stem under paper_tables/
    title: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""             # what the numbers are: protocol, units, seeds, hardware
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.key}: row {i} has {len(row)} cells for {len(self.columns)} columns")
        self.rows = [[MISSING if c is None or c == "" else str(c) for c in row] for row in self.rows]

    def to_markdown(self, heading: str = "###") -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [f"{heading} {self.title}", ""]
        if self.caption:
            lines += [self.caption, ""]
        lines.append("| " + " | ".join(cell(c) for c in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        spec = "l" + "r" * (len(self.columns) - 1)
        lines = [
            "% generated by `python -m analysis`; do not edit",
            "\\begin{table}[t]", "\\centering", "\\small",
            f"\\caption{{{latex_escape(self.title)}{('. ' + latex_escape(self.caption)) if self.caption else ''}}}",
            f"\\label{{tab:{self.key}}}",
            f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
            " & ".join(latex_escape(c) for c in self.columns) + " \\\\", "\\midrule",
        ]
        lines += [" & ".join(latex_escape(c) for c in row) + " \\\\" for row in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        if self.notes:
            lines.append("\\par\\footnotesize " + " ".join(latex_escape(n) for n in self.notes))
        lines.append("\\end{table}")
        return "\n".join(lines) + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---", "±": r"$\pm$",
          "×": r"$\times$", "·": r"$\cdot$", "≤": r"$\le$", "≥": r"$\ge$", "µ": r"$\mu$", "²": r"$^2$",
          "Δ": r"$\Delta$", "→": r"$\to$", "≈": r"$\approx$", "π": r"$\pi$", "–": "--", "§": r"\S{}",
          "'": "'", "⁻": r"$^-$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


@dataclass
class Figure:
    key: str                      # file stem (PNG) under paper_tables/
    title: str
    draw: Callable[[Any], None]   # draw(matplotlib Figure) -> None; called only when written
    size: tuple[float, float] = (12.0, 3.8)


@dataclass
class Claim:
    text: str                     # the paper's claim, quoted or paraphrased with its place
    test: str                     # how the results decide it
    verdict: str                  # supported / not supported / not tested
    evidence: str = ""            # the numbers that decided it

    def __post_init__(self) -> None:
        if self.verdict not in (SUPPORTED, NOT_SUPPORTED, NOT_TESTED):
            raise ValueError(f"claim verdict must be one of supported / not supported / not tested, got {self.verdict!r}")

    def to_markdown(self) -> str:
        mark = {SUPPORTED: "✅", NOT_SUPPORTED: "❌", NOT_TESTED: "⬜"}[self.verdict]
        out = f"- {mark} **{self.verdict}**: {self.text}\n  - test: {self.test}\n"
        if self.evidence:
            out += f"  - evidence: {self.evidence}\n"
        return out


def verdict(condition: bool | None) -> str:
    return NOT_TESTED if condition is None else (SUPPORTED if condition else NOT_SUPPORTED)


@dataclass
class Section:
    key: str                      # builder key; claims go to claims_<key>.md
    title: str
    experiments: tuple[str, ...]  # results/<experiment> folders it reads
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    summary: str = ""             # one paragraph for the README (command, runtime, ...)
    readme_tables: tuple[str, ...] = ()   # table keys shown in full in the README
    readme_figures: tuple[str, ...] = ()  # figure keys embedded in the README

    def claims_markdown(self) -> str:
        if not self.claims:
            return ""
        return f"### Claims: {self.title}\n\n" + "".join(c.to_markdown() for c in self.claims)


# ---------------------------------------------------------------------------------------------- writing
def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_figure_atomic(path: Path, figure: Figure) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=figure.size)
    try:
        figure.draw(fig)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=130, bbox_inches="tight")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        plt.close(fig)


def group_by(records: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(key(r), []).append(r)
    return out
