"""Rebuild the benchmark files of data/ from the Hugging Face hub, in the same layout.

    python scripts/fetch_data.py --out DIR                     # every file data/ holds (except the MNLI sample)
    python scripts/fetch_data.py --out DIR --only gsm8k math --check
    python scripts/fetch_data.py --out DIR --only glue --full-glue   # + MNLI and QNLI train, MNLI dev_matched
    python experiments/glue.py --profile small --set source=local --data-dir DIR

For anyone who wants to check the repository's copies, or needs the full GLUE training sets that are too
large to store (MNLI, QNLI). Files are read with ``datasets.load_dataset`` and written to ``--out`` (never over
the repository's ``data/`` unless asked), each atomically, with ``DIR/MANIFEST.sha256`` listing them, so the
loaders check them when DIR is given as ``--data-dir``. ``--check`` then compares each written file with the
repository's copy row by row and field by field (contents, not bytes; a file whose rows agree but come in
another order is reported as such) and exits 1 on any difference.

Layout: JSON rows keep the repository files' field names and order; GLUE files follow GLUE's TSV layout
(same columns and header as ``download_glue_data.py`` wrote), where the columns the hub does not carry
(CoLA's source codes, MRPC's sentence ids, STS-B's genre/file/year, MNLI's parses and ids) are left empty;
the loaders do not read them. Not on the hub, so not written: the PTB-tokenised MNLI sample
(``glue/MNLI/dev_matched_textfooler_sample1000.tsv``); ``--full-glue`` writes the real ``dev_matched.tsv``.

The hub is probed before anything is downloaded: without network (or with ``HF_HUB_OFFLINE=1``) the script
stops at once with exit status 2 and says so. It has NOT been run against the live hub: the machine it was
written on has no network. The transformations were tested offline, with ``datasets.load_dataset`` replaced by
in-memory datasets in the hub's schemas (``tests/test_fetch_data.py``); hub ids, configs and splits are the
documented ones, but a first live run should be read with ``--check``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.data_files import MANIFEST, REPO_DATA_DIR, read_manifest, write_manifest  # noqa: E402

GROUPS = ("gsm8k", "math", "humaneval", "mbpp", "glue", "pissa_eval")
GSM8K_TRAIN_ROWS, GSM8K_SAMPLE = 7473, 2000
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")      # EleutherAI/hendrycks_math configs, in MATH's (alphabetical) order
MBPP_SPLITS = ("train", "test", "validation", "prompt")
ENTAILMENT2 = ("entailment", "not_entailment")
MNLI_LABELS = ("entailment", "neutral", "contradiction")


class HubUnreachable(RuntimeError):
    """The hub cannot be reached; nothing was downloaded or written."""


class HubSchemaError(ValueError):
    """A hub dataset's rows lack a field the layout needs; the message names the dataset, row and field."""


# ---------------------------------------------------------------------------------------------- reading the hub
def hub_rows(hub_id: str, config: str | None = None, split: str = "test", **kwargs: Any) -> list[dict[str, Any]]:
    import datasets

    args = (hub_id, config) if config else (hub_id,)
    return [dict(row) for row in datasets.load_dataset(*args, split=split, **kwargs)]


def probe_hub(timeout: float = 10.0) -> None:
    """Raise ``HubUnreachable`` unless the hub answers (one small metadata request)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise HubUnreachable(f"{var} is set: this script downloads from the Hugging Face hub")
    from huggingface_hub import HfApi, constants

    try:
        HfApi().dataset_info("openai/gsm8k", timeout=timeout)
    except Exception as e:  # noqa: BLE001 - whatever the transport says, the hub is not usable from here
        raise HubUnreachable(f"cannot reach the Hugging Face hub at {constants.ENDPOINT} "
                             f"({type(e).__name__}: {e})") from None


def pick(rows: Sequence[dict], fields: Sequence[str], where: str) -> list[dict[str, Any]]:
    """Each row restricted to ``fields``, in that order; a missing field is a ``HubSchemaError``."""
    out = []
    for i, row in enumerate(rows):
        missing = [f for f in fields if f not in row]
        if missing:
            raise HubSchemaError(f"{where} row {i}: no field(s) {missing} (fields: {sorted(row)})")
        out.append({f: row[f] for f in fields})
    return out


# ---------------------------------------------------------------------------------------------- file formats
def jsonl_text(rows: Sequence[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def json_text(rows: Sequence[dict]) -> str:
    return json.dumps(list(rows), ensure_ascii=False)


@dataclass(frozen=True)
class TsvLayout:
    """One GLUE TSV: its columns in order, whether it has a header row, the columns the hub carries (what
    ``--check`` compares; the others stay empty) and how a hub row gives them."""

    columns: tuple[str, ...]
    header: bool
    filled: tuple[str, ...]
    fill: Callable[[dict[str, Any]], tuple[str, ...]]     # the values of ``filled``, in that order
    numeric: tuple[str, ...] = ()                          # compared as numbers (GLUE writes "4", "3.8", "5.000")

    def comparable(self, row: dict[str, str]) -> dict[str, Any]:
        """The filled columns of a row as ``--check`` compares them."""
        return {c: round(float(row[c]), 3) if c in self.numeric and row.get(c) else row.get(c) for c in self.filled}


def tsv_text(rows: Sequence[dict], layout: TsvLayout, where: str) -> str:
    lines = ["\t".join(layout.columns)] if layout.header else []
    for i, row in enumerate(rows):
        try:
            values = dict(zip(layout.filled, layout.fill(row), strict=True))
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise HubSchemaError(f"{where} row {i}: cannot fill {list(layout.filled)} ({type(e).__name__}: {e}; "
                                 f"fields: {sorted(row)})") from None
        for column, value in values.items():
            if "\t" in value or "\n" in value or "\r" in value:
                raise HubSchemaError(f"{where} row {i}: column {column!r} holds a tab or line break")
        lines.append("\t".join(values.get(c, "") for c in layout.columns))
    return "".join(line + "\n" for line in lines)


def read_tsv(path: Path, layout: TsvLayout) -> list[dict[str, str]]:
    """Rows of a GLUE TSV as dicts by column name (``csv.QUOTE_NONE``: GLUE's stray quotes are text)."""
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    if layout.header:
        rows = rows[1:]
    return [dict(zip(layout.columns, r)) for r in rows]


def read_rows(path: Path, layout: TsvLayout | None = None) -> list[dict[str, Any]]:
    """Rows of a data file of any of the layouts here (JSONL, JSON list, GLUE TSV; ``.gz`` or not)."""
    if layout is not None:
        return read_tsv(path, layout)
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as f:
        if ".jsonl" in path.suffixes:
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


# ---------------------------------------------------------------------------------------------- the files
GSM8K_FIELDS = ("question", "answer")
MATH_FIELDS = ("problem", "level", "type", "solution")
MATH500_FIELDS = ("problem", "solution", "answer", "subject", "level", "unique_id")
HUMANEVAL_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
MBPP_FIELDS = ("text", "code", "task_id", "test_setup_code", "test_list", "challenge_test_list")
SANITIZED_FIELDS = ("source_file", "task_id", "prompt", "code", "test_imports", "test_list")
PISSA_FIELDS = ("instruction", "input", "output", "type")


def gsm8k_train_sample(rows: Sequence[dict]) -> list[dict]:
    """The repository's sample: train rows ``sorted(random.Random(0).sample(range(7473), 2000))``."""
    if len(rows) != GSM8K_TRAIN_ROWS:
        raise HubSchemaError(f"openai/gsm8k main train has {len(rows)} rows, not {GSM8K_TRAIN_ROWS}: the sample "
                             "would not be the repository's")
    keep = sorted(random.Random(0).sample(range(GSM8K_TRAIN_ROWS), GSM8K_SAMPLE))
    return [rows[i] for i in keep]


def mbpp_all(config: str) -> list[dict]:
    rows = [row for split in MBPP_SPLITS for row in hub_rows("google-research-datasets/mbpp", config, split)]
    return sorted(rows, key=lambda r: r["task_id"])


_PAIR = ("index", "sentence1", "sentence2", "label")
GLUE_LAYOUTS: dict[str, TsvLayout] = {
    "SST-2": TsvLayout(("sentence", "label"), True, ("sentence", "label"),
                       lambda r: (r["sentence"], str(r["label"]))),
    "CoLA": TsvLayout(("source", "label", "original_label", "sentence"), False, ("label", "sentence"),
                      lambda r: (str(r["label"]), r["sentence"])),
    "MRPC": TsvLayout(("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), True,
                      ("Quality", "#1 String", "#2 String"),
                      lambda r: (str(r["label"]), r["sentence1"], r["sentence2"])),
    "QNLI": TsvLayout(("index", "question", "sentence", "label"), True, ("index", "question", "sentence", "label"),
                      lambda r: (str(r["idx"]), r["question"], r["sentence"], ENTAILMENT2[r["label"]])),
    "RTE": TsvLayout(_PAIR, True, _PAIR,
                     lambda r: (str(r["idx"]), r["sentence1"], r["sentence2"], ENTAILMENT2[r["label"]])),
    "STS-B": TsvLayout(("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                        "sentence2", "score"), True, ("index", "sentence1", "sentence2", "score"),
                       lambda r: (str(r["idx"]), r["sentence1"], r["sentence2"], f"{round(float(r['label']), 3):g}"),
                       numeric=("score",)),
}
_MNLI_COLUMNS = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                 "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
_MNLI_FILLED = ("index", "sentence1", "sentence2", "gold_label")


def _mnli(r: dict) -> tuple[str, ...]:
    return str(r["idx"]), r["premise"], r["hypothesis"], MNLI_LABELS[r["label"]]


MNLI_TRAIN = TsvLayout((*_MNLI_COLUMNS, "label1", "gold_label"), True, _MNLI_FILLED, _mnli)
MNLI_DEV = TsvLayout((*_MNLI_COLUMNS, "label1", "label2", "label3", "label4", "label5", "gold_label"), True,
                     _MNLI_FILLED, _mnli)


@dataclass(frozen=True)
class Target:
    """One file of the layout: where it goes, how its text is built from the hub, how its rows are read back."""

    path: str
    build: Callable[[], str]
    layout: TsvLayout | None = None     # GLUE TSVs; None: JSON rows (every field compared)
    full_glue: bool = False             # written only with --full-glue

    @property
    def group(self) -> str:
        return self.path.split("/", 1)[0]


def _glue(folder: str, file: str, config: str, split: str, layout: TsvLayout | None = None,
          full_glue: bool = False) -> Target:
    layout = layout or GLUE_LAYOUTS[folder]
    where = f"nyu-mll/glue {config} {split}"
    return Target(f"glue/{folder}/{file}", lambda: tsv_text(hub_rows("nyu-mll/glue", config, split), layout, where),
                  layout, full_glue)


def _pissa(file: str) -> list[dict]:
    rows = hub_rows("fxmeng/pissa-dataset", split="test", data_files={"test": file})
    return pick(rows, PISSA_FIELDS, f"fxmeng/pissa-dataset {file}")


TARGETS: tuple[Target, ...] = (
    Target("gsm8k/test.jsonl", lambda: jsonl_text(pick(hub_rows("openai/gsm8k", "main", "test"), GSM8K_FIELDS,
                                                       "openai/gsm8k main test"))),
    Target("gsm8k/train_sample.jsonl", lambda: jsonl_text(gsm8k_train_sample(
        pick(hub_rows("openai/gsm8k", "main", "train"), GSM8K_FIELDS, "openai/gsm8k main train")))),
    Target("math/test.jsonl.gz", lambda: jsonl_text(
        [row for subject in MATH_SUBJECTS
         for row in pick(hub_rows("EleutherAI/hendrycks_math", subject, "test"), MATH_FIELDS,
                         f"EleutherAI/hendrycks_math {subject} test")])),
    Target("math/math500.jsonl", lambda: jsonl_text(pick(hub_rows("HuggingFaceH4/MATH-500", split="test"),
                                                         MATH500_FIELDS, "HuggingFaceH4/MATH-500 test"))),
    Target("humaneval/HumanEval.jsonl.gz", lambda: jsonl_text(pick(hub_rows("openai/openai_humaneval", split="test"),
                                                                   HUMANEVAL_FIELDS, "openai/openai_humaneval test"))),
    Target("mbpp/mbpp.jsonl", lambda: jsonl_text(pick(mbpp_all("full"), MBPP_FIELDS,
                                                      "google-research-datasets/mbpp full"))),
    Target("mbpp/sanitized-mbpp.json", lambda: json_text(pick(mbpp_all("sanitized"), SANITIZED_FIELDS,
                                                              "google-research-datasets/mbpp sanitized"))),
    _glue("SST-2", "dev.tsv", "sst2", "validation"),
    _glue("SST-2", "train.tsv.gz", "sst2", "train"),
    _glue("CoLA", "dev.tsv", "cola", "validation"),
    _glue("CoLA", "train.tsv", "cola", "train"),
    _glue("MRPC", "dev.tsv", "mrpc", "validation"),
    _glue("MRPC", "train.tsv", "mrpc", "train"),
    _glue("QNLI", "dev.tsv", "qnli", "validation"),
    _glue("QNLI", "train.tsv", "qnli", "train", full_glue=True),
    _glue("RTE", "dev.tsv", "rte", "validation"),
    _glue("RTE", "train.tsv", "rte", "train"),
    _glue("STS-B", "dev.tsv", "stsb", "validation"),
    _glue("STS-B", "train.tsv", "stsb", "train"),
    _glue("MNLI", "dev_matched.tsv", "mnli", "validation_matched", MNLI_DEV, full_glue=True),
    _glue("MNLI", "train.tsv", "mnli", "train", MNLI_TRAIN, full_glue=True),
    Target("pissa_eval/metamath_test.json.gz", lambda: json_text(_pissa("metamath/test.json"))),
    Target("pissa_eval/python_test.json", lambda: json_text(_pissa("python/test.json"))),
)
NOT_ON_HUB = ("glue/MNLI/dev_matched_textfooler_sample1000.tsv",)


# ---------------------------------------------------------------------------------------------- writing, checking
def write_file(out: Path, relative: str, text: str) -> Path:
    """``out/relative`` written atomically; ``.gz`` files gzipped without name or time (as ``gzip -n``)."""
    path = out / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def compare(ours: Sequence[dict], theirs: Sequence[dict], fields: Sequence[str] | None, limit: int = 5) -> list[str]:
    """Differences between two files' rows: count, then the first ``limit`` (row, field) mismatches; a file
    whose rows agree as a multiset but not in order says so instead. ``fields`` None: every field."""
    def keys(a: dict, b: dict) -> list[str]:
        return list(fields) if fields is not None else list(dict.fromkeys([*a, *b]))

    problems = [] if len(ours) == len(theirs) else [f"{len(ours)} rows here, {len(theirs)} from the hub"]
    for i, (a, b) in enumerate(zip(ours, theirs)):
        for k in keys(a, b):
            if a.get(k) != b.get(k):
                problems.append(f"row {i} field {k!r}: here {str(a.get(k))[:80]!r}, hub {str(b.get(k))[:80]!r}")
    if problems and len(ours) == len(theirs):
        def canon(rows: Sequence[dict]) -> list[str]:
            return sorted(json.dumps({k: r.get(k) for k in keys(r, r)}, sort_keys=True) for r in rows)
        if canon(ours) == canon(theirs):
            return [f"the same {len(ours)} rows in another order (first at {problems[0].split(':')[0]})"]
    return problems[:limit] + ([f"... {len(problems) - limit} more"] if len(problems) > limit else [])


def check_file(target: Target, fetched: Path, repo_dir: Path = REPO_DATA_DIR) -> list[str] | None:
    """Differences between ``fetched`` and the repository's copy of the same file; None when it has none."""
    ours = repo_dir / target.path
    if not ours.is_file():
        return None
    if target.layout is None:
        return compare(read_rows(ours), read_rows(fetched), None)
    here, hub = ([target.layout.comparable(r) for r in read_rows(path, target.layout)] for path in (ours, fetched))
    return compare(here, hub, target.layout.filled)


def select(only: Sequence[str] | None, full_glue: bool) -> list[Target]:
    groups = set(only or GROUPS)
    return [t for t in TARGETS if t.group in groups and (full_glue or not t.full_glue)]


def fetch(out: Path, targets: Sequence[Target], check: bool, log=print) -> int:
    """Write ``targets`` under ``out`` and its manifest; with ``check``, the number of files that differ."""
    written = []
    differing = 0
    for target in targets:
        path = write_file(out, target.path, target.build())
        written.append(target.path)
        line = f"{target.path}: {len(read_rows(path, target.layout))} rows"
        if check:
            problems = check_file(target, path)
            if problems is None:
                line += "; the repository has no copy to compare"
            elif problems:
                differing += 1
                line += "; DIFFERS from the repository's copy:\n    " + "\n    ".join(problems)
            else:
                line += "; same rows as the repository's copy"
        log(line)
    listed = read_manifest(out / MANIFEST) if (out / MANIFEST).is_file() else {}
    write_manifest(out, [f for f in [*listed, *written] if (out / f).is_file()])
    return differing


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/fetch_data.py", description=__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 done, 1 --check found differences, 2 hub unreachable or usage.")
    p.add_argument("--out", type=Path, required=True, help="folder to write the data/ layout into")
    p.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP",
                   help=f"only these groups (default: all of {', '.join(GROUPS)})")
    p.add_argument("--full-glue", action="store_true",
                   help="also the GLUE files data/ does not store: MNLI train and dev_matched, QNLI train")
    p.add_argument("--check", action="store_true",
                   help="compare each written file with the repository's copy, row by row and field by field")
    p.add_argument("--replace-repo-data", action="store_true",
                   help="allow --out to be the repository's data/ (overwrites the committed copies)")
    args = p.parse_args(argv)
    out = args.out.expanduser().resolve()
    if out == REPO_DATA_DIR.resolve() and not args.replace_repo_data:
        print(f"fetch_data: --out {out} is the repository's data/; pass --replace-repo-data to overwrite it",
              file=sys.stderr)
        return 2
    try:
        probe_hub()
    except HubUnreachable as e:
        print(f"fetch_data: {e}. Nothing was written. This script needs network access to the hub; the "
              "repository's data/ already holds every file the cpu profile and the tests read.", file=sys.stderr)
        return 2
    skipped = [f for f in NOT_ON_HUB if f.split("/", 1)[0] in (args.only or GROUPS)]
    if skipped:
        print(f"fetch_data: not on the hub, not written: {', '.join(skipped)}", file=sys.stderr)
    try:
        differing = fetch(out, select(args.only, args.full_glue), args.check)
    except HubSchemaError as e:
        print(f"fetch_data: {e}. Stopped; the files written before it are not in {out / MANIFEST}.", file=sys.stderr)
        return 2
    print(f"wrote {out} (and {out / MANIFEST})")
    if differing:
        print(f"fetch_data: {differing} file(s) differ from the repository's copies", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
