"""What every table builder shares: the results it reads, the artifacts it returns, and how they render.

A builder (see ``registry``) gets a ``Results`` (the records under ``results/``, read once) and returns a
``Section``: tables, figures and claims. ``__main__`` writes them. Rules kept here so no builder breaks
them: a missing value prints as "—" (``MISSING``), never a made-up number; mean ± std over seeds, never
over profiles (``PROFILE_ORDER``); a number is stated once as a typed cell (``Num``, ``Stat``, ``Spread``)
that renders as text and expands to numeric CSV columns; output is a pure function of the records (no
clock, no machine path: ``strip_machine_paths``); files are written atomically. Claim verdicts come from
``stats``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import os
import re
import statistics
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.common.records import load_records

from .stats import (CONTRADICTED, INCONCLUSIVE, NOT_TESTED, SUPPORTED, TEST_NAME, VERDICTS,  # noqa: F401
                    PairedInterval)

MISSING = "—"


# ---------------------------------------------------------------------------------------------- profiles
# Records of different profiles are never pooled: every table gives each profile its own rows, largest
# scale first. The cpu profile's records are committed; a researcher's small/paper records add rows.
PROFILE_ORDER = ("paper", "small", "cpu")


def profile_sort_key(profile: str | None) -> tuple[int, str]:
    rank = PROFILE_ORDER.index(profile) if profile in PROFILE_ORDER else len(PROFILE_ORDER)
    return rank, profile or ""


def profile_of(record: dict[str, Any]) -> str:
    return record.get("profile") or "?"


def profiles_in(records: Iterable[dict[str, Any]]) -> list[str]:
    """The profiles of ``records``, largest scale first."""
    return sorted({profile_of(r) for r in records}, key=profile_sort_key)


# ---------------------------------------------------------------------------------------------- results
class Results:
    """The successful records of ``results_dir``, per experiment, read on first use."""

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = Path(results_dir)
        self._cache: dict[str, list[dict[str, Any]]] = {}
        self.failed: dict[str, list[str]] = {}

    def records(self, experiment: str, profile: str | None = None) -> list[dict[str, Any]]:
        """Successful records of ``experiment`` (of one profile when given), sorted by profile then run."""
        if experiment not in self._cache:
            all_records = load_records(self.results_dir, experiment) if (self.results_dir / experiment).is_dir() else []
            all_records.sort(key=lambda r: (profile_sort_key(profile_of(r)), str(r.get("run"))))
            self._cache[experiment] = [r for r in all_records if r.get("status") == "success"]
            self.failed[experiment] = [f"{profile_of(r)}/{r['run']}" for r in all_records if r.get("status") != "success"]
        recs = self._cache[experiment]
        return recs if profile is None else [r for r in recs if profile_of(r) == profile]

    def profiles(self, *experiments: str) -> list[str]:
        return profiles_in(r for e in experiments for r in self.records(e))

    def provenance(self, *experiments: str) -> tuple[str, str]:
        """(profiles, latest finish time) of the records of ``experiments``; "—" when there are none."""
        recs = [r for e in experiments for r in self.records(e)]
        profiles = profiles_in(recs)
        finished = max((r.get("finished_at") or "" for r in recs), default="")
        return (", ".join(profiles) if profiles else MISSING), (finished or MISSING)

    def span_s(self, *experiments: str) -> tuple[str, str, float] | None:
        """(first start, last finish, seconds between) of the records of ``experiments``."""
        return _span([r for e in experiments for r in self.records(e)])

    def summary(self, experiment: str, command: str) -> str:
        """One README line: the command, and per profile how many runs and the time they took."""
        if not self.records(experiment):
            return f"No records under results/{experiment} yet: run `{command}`."
        parts = []
        for profile in self.profiles(experiment):
            recs = self.records(experiment, profile)
            total = sum(r.get("wall_time_s") or 0 for r in recs)
            span = _span(recs)
            when = f", {span[2]:.0f} s of wall time ({span[0]} → {span[1]})" if span else ""
            parts.append(f"`{command} --profile {profile}`: {len(recs)} runs{when}; the runs themselves {total:.1f} s")
        return "; ".join(parts) + "."


def _span(recs: list[dict[str, Any]]) -> tuple[str, str, float] | None:
    recs = [r for r in recs if r.get("started_at") and r.get("finished_at")]
    if not recs:
        return None
    start, end = min(r["started_at"] for r in recs), max(r["finished_at"] for r in recs)
    seconds = (_dt.datetime.fromisoformat(end) - _dt.datetime.fromisoformat(start)).total_seconds()
    return start, end, seconds


# ---------------------------------------------------------------------------------------------- text
_ABS_PATH = re.compile(r"(?<![\w.~])/(?:[\w.+@-]+/)*[\w.+@-]+/?")
# Folders of this repository that a path is shown from: "/home/x/miss/runs/glue/a" -> "runs/glue/a".
REPO_FOLDERS = ("runs", "results", "data", "paper_tables")


def strip_machine_paths(text: str) -> str:
    """``text`` with each absolute path made machine-independent: from the repository folder it lies in
    (``runs/...``), else its last component after "…/". Tables must read the same on every clone."""

    def short(match: re.Match) -> str:
        parts = [p for p in match.group(0).split("/") if p]
        for i in range(len(parts) - 1, -1, -1):
            if parts[i] in REPO_FOLDERS:
                return "/".join(parts[i:])
        return "…/" + parts[-1] if parts else match.group(0)

    return _ABS_PATH.sub(short, str(text))


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
        if 10**digits <= abs(value) < 1e6:     # e.g. an interpolated count: 11,012, not 1.101e+04
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1e6 else f"{value:.{digits - 1}e}"
    return str(value)


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


# ---------------------------------------------------------------------------------------------- cells
# A table cell states its number once: it renders as text in Markdown/LaTeX and expands to numeric CSV
# fields. A plain string is a text cell; None or "" is a missing value.
@dataclass(frozen=True)
class Num:
    """One number: ``digits`` significant digits, or ``decimals`` fixed ones; ``text`` overrides how it prints
    (e.g. the paper's "89.9M" for 89.9e6)."""

    value: float | int | None
    digits: int = 4
    text: str | None = None
    decimals: int | None = None

    def render(self) -> str:
        if self.value is None:
            return MISSING
        if self.text is not None:
            return self.text
        return f"{self.value:.{self.decimals}f}" if self.decimals is not None else fmt(self.value, self.digits)

    def fields(self) -> dict[str, Any]:
        return {"": _csv_number(self.value)}


@dataclass(frozen=True)
class Stat:
    """Mean ± std over n values (seeds); the std is left out of the text (and blank in CSV) when n = 1."""

    mean: float | None
    std: float | None
    n: int
    digits: int = 4
    decimals: int | None = None
    show_n: bool = False          # append " (n=5)" to the text

    @classmethod
    def of(cls, values: Iterable[Any], digits: int = 4, decimals: int | None = None, show_n: bool = False) -> "Stat":
        ms = mean_std(values)
        if ms is None:
            return cls(None, None, 0, digits, decimals, show_n)
        return cls(ms[0], ms[1] if ms[2] > 1 else None, ms[2], digits, decimals, show_n)

    def render(self) -> str:
        if self.mean is None:
            return MISSING
        if self.decimals is not None:
            text = f"{self.mean:.{self.decimals}f}" + (f" ± {self.std:.{self.decimals}f}" if self.std is not None else "")
        else:
            text = fmt(self.mean, self.digits) + (f" ± {fmt(self.std, 2)}" if self.std is not None else "")
        return text + (f" (n={self.n})" if self.show_n else "")

    def fields(self) -> dict[str, Any]:
        n = self.n if self.mean is not None else None
        return {"_mean": _csv_number(self.mean), "_std": _csv_number(self.std), "_n": n}


@dataclass(frozen=True)
class Spread:
    """A centre with a range, "c [lo–hi]": median and quartiles of repeated timings by default, or e.g.
    ``names=("median", "min", "max")``; ``show`` formats one value (e.g. ``fmt_seconds``)."""

    center: float | None
    lo: float | None
    hi: float | None
    show: Callable[[Any], str] = fmt
    names: tuple[str, str, str] = ("median", "q1", "q3")

    def render(self) -> str:
        if self.center is None:
            return MISSING
        return f"{self.show(self.center)} [{self.show(self.lo)}–{self.show(self.hi)}]"

    def fields(self) -> dict[str, Any]:
        return {f"_{name}": _csv_number(v) for name, v in zip(self.names, (self.center, self.lo, self.hi))}


Cell = Any   # str | Num | Stat | Spread | None


def _csv_number(value: Any) -> float | int | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def render(cell: Cell) -> str:
    if cell is None or cell == "":
        return MISSING
    return cell.render() if hasattr(cell, "render") else str(cell)


def is_numeric(cell: Cell) -> bool:
    return hasattr(cell, "fields")


@dataclass(frozen=True)
class Col:
    """A column: its title in Markdown/LaTeX and its CSV name (snake_case, unit included: ``init_time_s``)."""

    title: str
    key: str | None = None


def slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower().replace("%", " pct ").replace("±", " ")).strip("_") or "col"


# ---------------------------------------------------------------------------------------------- artifacts
@dataclass
class Table:
    key: str                      # file stem under paper_tables/
    title: str
    columns: list[Any]            # titles (str) or ``Col``s
    rows: list[list[Cell]]
    caption: str = ""             # what the numbers are: protocol, units, seeds, hardware
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.key}: row {i} has {len(row)} cells for {len(self.columns)} columns")
        cols = [c if isinstance(c, Col) else Col(str(c)) for c in self.columns]
        keys: list[str] = []
        for c in cols:
            key = c.key or slug(c.title)
            if key == "paper" and keys:    # "paper" is the paper's value of the column before it
                key = f"{keys[-1]}_paper"
            if key in keys:
                raise ValueError(f"table {self.key}: two columns are named {key!r} in CSV")
            keys.append(key)
        self.csv_keys = keys
        self.columns = [c.title for c in cols]
        # text from the records (a data file, an adapter folder) must not carry this machine's paths
        self.cells = [[c if is_numeric(c) or c is None else strip_machine_paths(c) for c in row] for row in self.rows]
        self.rows = [[render(c) for c in row] for row in self.cells]
        self.caption = strip_machine_paths(self.caption)
        self.notes = [strip_machine_paths(n) for n in self.notes]

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

    def csv_header_and_rows(self) -> tuple[list[str], list[list[Any]]]:
        """Each column expands to the fields of its cells: a number to one column, mean ± std to
        ``_mean``/``_std``/``_n``, quartiles to ``_median``/``_q1``/``_q3``; text beside numbers goes to
        ``_text``, so numeric columns hold numbers only."""
        suffixes: list[list[str]] = []
        for j in range(len(self.columns)):
            column = [row[j] for row in self.cells]
            numeric = [c for c in column if is_numeric(c)]
            found: list[str] = []
            for c in numeric:
                found += [s for s in c.fields() if s not in found]
            has_text = any(not is_numeric(c) and render(c) != MISSING for c in column)
            if has_text or not found:
                found.append("_text" if numeric else "")
            suffixes.append(found)
        header = [self.csv_keys[j] + s for j, sufs in enumerate(suffixes) for s in sufs]
        rows = []
        for row in self.cells:
            out: list[Any] = []
            for cell, sufs in zip(row, suffixes):
                if is_numeric(cell):
                    values = cell.fields()
                    out += [values.get(s) for s in sufs]
                else:
                    text = None if render(cell) == MISSING else render(cell)
                    slot = "_text" if "_text" in sufs else ""
                    out += [text if s == slot else None for s in sufs]
            rows.append(out)
        return header, rows

    def to_csv(self) -> str:
        header, rows = self.csv_header_and_rows()
        return csv_text(header, rows)

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
    """A claim of the paper and its verdict (``stats``: supported / contradicted / inconclusive / not tested).

    A supported or contradicted verdict must show what decided it: ``intervals`` (label, exact paired
    interval) for measurements with noise, or ``exact_points`` (how many points a deterministic count was
    compared at) for counts, which have none."""

    text: str                     # the paper's claim, quoted or paraphrased with its place
    test: str                     # how the results decide it
    verdict: str
    evidence: str = ""            # the numbers behind it
    intervals: Sequence[tuple[str, PairedInterval]] = ()
    exact_points: int | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        if self.verdict in (SUPPORTED, CONTRADICTED) and not self.intervals and not self.exact_points:
            raise ValueError(f"claim {self.text!r}: a {self.verdict} verdict needs the intervals or exact counts "
                             "that decided it")

    def basis(self) -> str:
        if self.intervals:
            return f"{TEST_NAME} (paired): " + "; ".join(f"{label}: {iv.text()}" for label, iv in self.intervals)
        if self.exact_points:
            return (f"exact comparison of deterministic counts at n = {self.exact_points} measured point(s) (no "
                    "sampling noise, so no interval)")
        return ""

    def to_markdown(self) -> str:
        mark = {SUPPORTED: "✅", CONTRADICTED: "❌", INCONCLUSIVE: "❔", NOT_TESTED: "⬜"}[self.verdict]
        out = f"- {mark} **{self.verdict}**: {self.text}\n  - test: {self.test}\n"
        if self.basis():
            out += f"  - decided by: {self.basis()}\n"
        if self.evidence:
            out += f"  - evidence: {strip_machine_paths(self.evidence)}\n"
        return out


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
def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV with Unix line ends; floats in Python's shortest round-trip form, missing values empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


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
