"""Instruction data for the math and code SFT runs (SPEC §3.5): loading, the Alpaca prompt, tokenising, caching.

Every example becomes ``PROMPT.format(query=...)`` followed by ``response + "\\n" + EOS``; only the
response tokens (and that newline and EOS) carry a loss, prompt positions get label ``-100``.
Sequences are cut on the right at ``max_length`` (512 in the paper) and padded on the right
(``sft_collator``: transformers' ``DataCollatorForSeq2Seq``, pad = EOS).

Sources (``DataSpec.source``), all read with ``datasets``:
- a Hugging Face hub id (``meta-math/MetaMathQA``);
- a local file or directory of ``.json`` (a list of records, or JSON Lines), ``.jsonl`` or ``.parquet``
  files (``.gz`` allowed);
- ``local:gsm8k-metamath`` / ``local:mbpp-train``: the offline stand-ins of the ``cpu`` profile, built
  from the benchmark files in the data directories (``eval.data_files``: ``--data-dir``, ``$MISS_DATA_DIR``,
  the repository's ``data/``): the GSM8K train sample rewritten into MetaMathQA's answer format, MBPP
  train tasks 601-974 written as CodeFeedback-style instruction/code pairs.

``build_dataset`` tokenises with ``Dataset.map(batched=True)`` straight into an Arrow file in the cache
(``sft_data_cache``: where, and the key) and returns it memory-mapped, so the rows never sit in Python
lists; a later build with the same key (another rank, a resumed run) only maps the file. Several
processes call it inside ``TrainingArguments.main_process_first()``: one per node tokenises, the others
wait and read its file. ``python -m experiments.common.sft_data bench --rows N`` measures it
(``sft_data_bench``).

A missing or empty query/response field raises ``DataError`` naming the file and the row.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.data_files import locate

from .records import write_json_atomic
from .sft_data_cache import cache_key, file_digest, sft_cache_dir, tokenizer_fingerprint

IGNORE_INDEX = -100
PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{query}\n\n### Response:"
)
# Part of the cache key: bump when encode_batch or a stand-in's conversion changes what it produces.
ENCODING_VERSION = 1
GSM8K_TRAIN = "gsm8k/train_sample.jsonl"
MBPP_FULL = "mbpp/mbpp.jsonl"
LOCAL_SOURCE_FILES = {"local:gsm8k-metamath": (GSM8K_TRAIN,), "local:mbpp-train": (MBPP_FULL,)}
LOCAL_SOURCES = tuple(LOCAL_SOURCE_FILES)
MBPP_TRAIN_IDS = range(601, 975)
FIELD_HINT = "set the field mapping (query_field/response_field) if the data names it differently"


class DataError(ValueError):
    """A data row cannot be used; the message names the file (or hub id) and the row."""


@dataclass(frozen=True)
class DataSpec:
    source: str                      # hub id, local path, or one of LOCAL_SOURCES
    query_field: str = "query"
    response_field: str = "response"
    split: str = "train"             # hub split
    max_samples: int | None = None   # first N rows (None: all)


# --------------------------------------------------------------------------- reading rows
def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _data_suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1] if suffixes else ""


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _data_suffix(p) in (".json", ".jsonl", ".parquet"))
        if not files:
            raise DataError(f"directory {path} holds no .json/.jsonl/.parquet files")
        return files
    raise DataError(f"data source {path} does not exist")


def local_source_files(sources: Iterable[str]) -> list[str]:
    """The data files (relative paths for ``eval.data_files``) that the ``local:`` sources among ``sources`` read."""
    return [f for source in sources for f in LOCAL_SOURCE_FILES.get(source, ())]


def _looks_local(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).expanduser().exists()


def _from_hub(spec: DataSpec) -> bool:
    return spec.source not in LOCAL_SOURCES and not _looks_local(spec.source)


@dataclass(frozen=True)
class _Part:
    """One file (or the hub split, or a stand-in) of a source: its rows and how to name one of them."""

    rows: Any                        # datasets.Dataset, all of its columns
    origin: str                      # "file F", "hub dataset X (split S)", "local:gsm8k-metamath"
    jsonl: Path | None               # a JSON Lines file, whose line numbers the messages give too
    start: int                       # index of its first row in the concatenated rows

    def where(self, row: int) -> str:
        return f"{self.origin} row {row}" + (f" (line {_jsonl_line(self.jsonl, row)})" if self.jsonl else "")


@dataclass(frozen=True)
class Rows:
    """The first ``max_samples`` rows of a source as one ``datasets.Dataset`` holding only the query and
    response columns (not yet validated), and the parts they came from, to name a bad row."""

    dataset: Any
    parts: tuple[_Part, ...]

    def locate_row(self, i: int) -> tuple[_Part, int]:
        part = self.parts[bisect.bisect_right([p.start for p in self.parts], i) - 1]
        return part, i - part.start


def load_rows(spec: DataSpec, data_dir: Path | None = None, raw_cache_dir: Path | None = None) -> Rows:
    """Read ``spec``'s rows with ``datasets`` (local files are converted once into Arrow files under
    ``raw_cache_dir``, default ``<sft cache>/raw``; the hub's go to its own cache); a local file that
    cannot be read, or lacks a field altogether, raises ``DataError`` naming it."""
    import datasets

    if spec.source in LOCAL_SOURCES:
        convert = gsm8k_as_metamath if spec.source == "local:gsm8k-metamath" else mbpp_as_codefeedback
        sources = [(datasets.Dataset.from_list([row for _, row in convert(data_dir)]), spec.source, None)]
    elif _looks_local(spec.source):
        raw = raw_cache_dir or sft_cache_dir() / "raw"
        sources = ((_read_local_file(f, raw), f"file {f}", f if _data_suffix(f) == ".jsonl" else None)
                   for f in _local_files(Path(spec.source).expanduser()))
    else:
        sources = [(datasets.load_dataset(spec.source, split=spec.split),
                    f"hub dataset {spec.source} (split {spec.split})", None)]

    fields = [spec.query_field, spec.response_field]
    parts: list[_Part] = []
    kept = []
    n = 0
    for rows, origin, jsonl in sources:
        if spec.max_samples is not None and n >= spec.max_samples:
            break
        missing = [f for f in fields if f not in rows.column_names]
        if missing:
            raise DataError(_missing(origin, missing[0], rows.column_names))
        if spec.max_samples is not None and len(rows) > spec.max_samples - n:
            rows = rows.select(range(spec.max_samples - n))
        if len(rows):
            parts.append(_Part(rows, origin, jsonl, n))
            kept.append(rows.select_columns(fields))
            n += len(rows)
    if not n:
        raise DataError(f"data source {spec.source} yielded no rows")
    try:
        dataset = kept[0] if len(kept) == 1 else datasets.concatenate_datasets(kept)
    except ValueError as e:     # e.g. a field holding text in one file and numbers in another
        raise DataError(f"data source {spec.source}: its files do not agree on the types of {fields} ({e})") from e
    return Rows(dataset, tuple(parts))


def _read_local_file(path: Path, cache_dir: Path):
    """``datasets``' Arrow copy of one file, in a folder named by the file's bytes: datasets itself tells
    copies of local files apart by path and modification time only."""
    import datasets

    builder = "parquet" if _data_suffix(path) == ".parquet" else "json"
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train",
                                     cache_dir=str(cache_dir / file_digest(path)[:32]))
    except Exception as e:      # datasets wraps the reader's error; name the file (and the line, for JSON Lines)
        cause = e.__cause__ or e
        line = _first_bad_jsonl_line(path) if _data_suffix(path) == ".jsonl" else None
        problem = line or f"cannot be read as {builder} ({type(cause).__name__}: {cause})"
        raise DataError(f"file {path}: {problem}") from e


def _first_bad_jsonl_line(path: Path) -> str | None:
    """Where a JSON Lines file stops being a list of objects, or None (called only on a read error)."""
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                return f"line {n}: not valid JSON ({e})"
            if not isinstance(row, dict):
                return f"line {n}: expected a JSON object, got {type(row).__name__}"
    return None


def _jsonl_line(path: Path, record: int) -> int:
    """The line number of a JSON Lines file's ``record``-th row (rows count from 0; blank lines hold none)."""
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                if record == 0:
                    return n
                record -= 1
    raise IndexError(f"{path} has fewer rows than asked for")


def _missing(where: str, name: str, present: Iterable[str]) -> str:
    return f"{where}: field {name!r} is missing (fields present: {sorted(present)}); {FIELD_HINT}"


def _text(value: Any, name: str, rows: Rows, i: int) -> str:
    """``value`` of field ``name`` in row ``i`` of ``rows`` when it is non-empty text; else ``DataError``."""
    if isinstance(value, str) and value.strip():
        return value
    part, row = rows.locate_row(i)
    if value is None:          # absent from this row (datasets fills the column with None)
        present = [k for k, v in part.rows[row].items() if v is not None]
        raise DataError(_missing(part.where(row), name, present))
    raise DataError(f"{part.where(row)}: field {name!r} is empty or not text ({value!r:.60})")


def read_pairs(spec: DataSpec, data_dir: Path | None = None) -> list[tuple[str, str]]:
    """``(query, response)`` pairs of ``spec`` in Python lists, validated row by row (for small samples;
    training sets go through ``build_dataset``)."""
    rows = load_rows(spec, data_dir)
    columns = rows.dataset[:]
    return [(_text(q, spec.query_field, rows, i), _text(r, spec.response_field, rows, i))
            for i, (q, r) in enumerate(zip(columns[spec.query_field], columns[spec.response_field]))]


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, row)`` pairs of a JSON Lines benchmark file; ``where`` reads "file F row N (line L)"."""
    with _open_text(path) as f:
        row_no = 0
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"file {path} row {row_no} (line {n})"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e})") from None
            yield where, row
            row_no += 1


def _field(row: Any, name: str, where: str) -> str:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if name not in row:
        raise DataError(_missing(where, name, row))
    value = row[name]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {name!r} is empty or not text ({value!r:.60})")
    return value


# --------------------------------------------------------------------------- offline stand-ins (cpu profile)
_CALC = re.compile(r"<<[^>]*>>")


def metamath_answer(gsm8k_answer: str) -> str:
    """GSM8K solution -> MetaMathQA's format: calculator tags removed, ``#### N`` -> ``The answer is: N``."""
    body, sep, final = gsm8k_answer.rpartition("####")
    if not sep:
        raise ValueError(f"GSM8K answer without '####': {gsm8k_answer[:80]!r}")
    return f"{_CALC.sub('', body).rstrip()}\nThe answer is: {final.strip()}"


def gsm8k_as_metamath(data_dir: Path | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    for where, row in _jsonl_rows(locate(GSM8K_TRAIN, data_dir)):
        yield where, {"query": _field(row, "question", where), "response": metamath_answer(_field(row, "answer", where))}


def mbpp_instruction(text: str, first_test: str) -> str:
    """The MBPP instruction of the PiSSA evaluation prompts (SPEC §3.6), reused for training."""
    return f"{text} Your code should satisfy the following assertion:\n```python\n{first_test}\n```"


def mbpp_as_codefeedback(data_dir: Path | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """MBPP train tasks (601-974) as instruction -> fenced Python code, never the 11-510 test tasks."""
    for where, row in _jsonl_rows(locate(MBPP_FULL, data_dir)):
        if row.get("task_id") not in MBPP_TRAIN_IDS:
            continue
        code = _field(row, "code", where).replace("\r\n", "\n").strip()
        query = mbpp_instruction(_field(row, "text", where).strip(), row["test_list"][0])
        yield where, {"query": query, "response": f"```python\n{code}\n```"}


# --------------------------------------------------------------------------- tokenising
def prepare_tokenizer(tokenizer):
    """Right padding; pad = EOS when the tokenizer has no pad token (SPEC §3.5)."""
    if tokenizer.eos_token is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no EOS token; the SFT target needs one")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def encode_batch(tokenizer, queries: Sequence[str], responses: Sequence[str],
                 max_length: int = 512) -> dict[str, list[list[int]]]:
    """Tokenise ``prompt + response + "\\n"``, append EOS, mask the prompt, cut at ``max_length``.

    With a fast tokenizer the prompt/response boundary is found with character offsets, so it is exact
    whatever the tokenizer merges across it (a token that straddles it counts as prompt). A slow
    tokenizer (RWKV's world tokenizer) has no offsets: the prompt is then the first
    ``len(tokenize(prompt))`` tokens, the rule of the PiSSA/MiSS training scripts.
    """
    prompts = [PROMPT.format(query=q) for q in queries]
    texts = [p + r + "\n" for p, r in zip(prompts, responses)]
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=True)
        ids_of_text = enc["input_ids"]
        prompt_lengths = [_prompt_tokens(offsets, len(p)) for offsets, p in zip(enc["offset_mapping"], prompts)]
    else:
        ids_of_text = [tokenizer(t)["input_ids"] for t in texts]
        prompt_lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    eos = tokenizer.eos_token_id
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    for ids, n_prompt in zip(ids_of_text, prompt_lengths):
        ids = list(ids) + [eos]
        n_prompt = min(n_prompt, len(ids))
        out["input_ids"].append(ids[:max_length])
        out["labels"].append(([IGNORE_INDEX] * n_prompt + ids[n_prompt:])[:max_length])
    return out


def _prompt_tokens(offsets: Sequence[tuple[int, int]], cut: int) -> int:
    """Number of leading tokens that belong to the prompt: every token starting before ``cut``
    (special tokens such as BOS have the empty span (0, 0) and count as prompt)."""
    n = 0
    for s, e in offsets:
        if s < cut or (s == e == 0):
            n += 1
        else:
            break
    return n


def tokenize_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int = 512,
                   chunk: int = 1000) -> list[dict[str, list[int]]]:
    """``encode_batch`` over ``(query, response)`` pairs, as one ``{"input_ids", "labels"}`` dict per pair."""
    out = []
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        enc = encode_batch(tokenizer, [q for q, _ in part], [r for _, r in part], max_length)
        out += [{"input_ids": ids, "labels": labels} for ids, labels in zip(enc["input_ids"], enc["labels"])]
    return out


# --------------------------------------------------------------------------- the cached dataset
def build_dataset(tokenizer, spec: DataSpec, data_dir: Path | None = None, max_length: int = 512,
                  cache_dir: Path | None = None):
    """The tokenised rows of ``spec`` as a memory-mapped ``datasets.Dataset`` with columns ``input_ids``
    and ``labels`` (int32): read from ``cache_dir`` (default ``sft_data_cache.sft_cache_dir()``) when the
    same build was made before, else tokenised with ``Dataset.map`` into it."""
    import datasets

    tokenizer = prepare_tokenizer(tokenizer)
    cache_dir = Path(cache_dir) if cache_dir is not None else sft_cache_dir()
    # A hub dataset is opened first: its fingerprint (the revision it resolved to) is part of the key.
    rows = load_rows(spec, data_dir, cache_dir / "raw") if _from_hub(spec) else None
    identity = {
        "encoding": ENCODING_VERSION,
        "template": PROMPT,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        "query_field": spec.query_field,
        "response_field": spec.response_field,
        "max_samples": spec.max_samples,
        "data": _data_identity(spec, data_dir, rows),
    }
    key = cache_key(identity)
    path = cache_dir / f"{key}.arrow"
    if path.exists():
        dataset = datasets.Dataset.from_file(str(path))
        print(f"[sft_data] {spec.source}: {len(dataset)} rows read from the cache {path}", file=sys.stderr, flush=True)
        return dataset

    t0 = time.perf_counter()
    rows = rows or load_rows(spec, data_dir, cache_dir / "raw")

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list[list[int]]]:
        queries = [_text(v, spec.query_field, rows, i) for v, i in zip(batch[spec.query_field], indices)]
        responses = [_text(v, spec.response_field, rows, i) for v, i in zip(batch[spec.response_field], indices)]
        return encode_batch(tokenizer, queries, responses, max_length)

    features = datasets.Features({name: datasets.List(datasets.Value("int32")) for name in ("input_ids", "labels")})
    dataset = rows.dataset.map(encode, batched=True, with_indices=True, remove_columns=rows.dataset.column_names,
                               features=features, cache_file_name=str(path), new_fingerprint=key,
                               load_from_cache_file=False, desc=f"Tokenising {spec.source}")
    seconds = round(time.perf_counter() - t0, 2)
    write_json_atomic(path.with_suffix(".json"), {**identity, "source": spec.source, "rows": len(dataset),
                                                  "build_seconds": seconds})
    print(f"[sft_data] {spec.source}: {len(dataset)} rows tokenised into {path} in {seconds} s", file=sys.stderr,
          flush=True)
    return dataset


def _data_identity(spec: DataSpec, data_dir: Path | None, rows: Rows | None) -> dict[str, Any]:
    """What the rows are, for the cache key: the files' bytes, or the hub dataset's revision."""
    if spec.source in LOCAL_SOURCES:
        return {"stand_in": spec.source,
                "sha256": [file_digest(locate(f, data_dir)) for f in LOCAL_SOURCE_FILES[spec.source]]}
    if rows is not None:
        return {"hub": spec.source, "split": spec.split, "fingerprint": rows.parts[0].rows._fingerprint}
    return {"sha256": [file_digest(f) for f in _local_files(Path(spec.source).expanduser())]}


def dataset_stats(dataset, chunk: int = 10_000) -> dict[str, Any]:
    """Example and token counts of a ``build_dataset`` result, read a chunk at a time from its Arrow file."""
    import numpy as np
    import pyarrow.compute as pc

    examples = tokens = targets = without_target = longest = 0
    for batch in dataset.with_format("arrow").iter(batch_size=chunk):
        lengths = pc.list_value_length(batch["input_ids"]).to_numpy()
        is_target = pc.not_equal(pc.list_flatten(batch["labels"]), IGNORE_INDEX).to_numpy(zero_copy_only=False)
        seen = np.concatenate([[0], np.cumsum(is_target)])      # targets among the first k tokens of the chunk
        ends = np.cumsum(lengths)
        per_row = seen[ends] - seen[ends - lengths]
        examples += len(lengths)
        tokens += int(lengths.sum())
        targets += int(is_target.sum())
        without_target += int((per_row == 0).sum())
        longest = max(longest, int(lengths.max(initial=0)))
    return {
        "examples": examples,
        "tokens": tokens,
        "target_tokens": targets,
        "mean_length": round(tokens / max(examples, 1), 1),
        "max_length": longest,
        "examples_without_target": without_target,
    }


def sft_collator(tokenizer):
    """Pad a batch on the right to its longest sequence: pad id for inputs, -100 for labels, mask 0
    (transformers' ``DataCollatorForSeq2Seq``, which pads per ``tokenizer.padding_side``: right, from
    ``prepare_tokenizer``)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(prepare_tokenizer(tokenizer), padding="longest", label_pad_token_id=IGNORE_INDEX,
                                  return_tensors="pt")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.common.sft_data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    from .sft_data_bench import add_arguments, run

    add_arguments(sub.add_parser("bench", help="time and memory of build_dataset at N rows, beside the list-based path"))
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
