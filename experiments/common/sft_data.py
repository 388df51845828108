"""Instruction data for the math and code SFT runs (SPEC §3.5): loading, the Alpaca prompt, tokenising.

Every example becomes ``PROMPT.format(query=...)`` followed by ``response + "\\n" + EOS``; only the
response tokens (and that newline and EOS) carry a loss, prompt positions get label ``-100``.
Sequences are cut on the right at ``max_length`` (512 in the paper) and padded on the right.

Sources (``DataSpec.source``):
- a Hugging Face hub id (``meta-math/MetaMathQA``), read with ``datasets.load_dataset``;
- a local file or directory of ``.json`` (a list), ``.jsonl`` or ``.parquet`` files (``.gz`` allowed);
- ``local:gsm8k-metamath`` / ``local:mbpp-train``: the offline stand-ins of the ``cpu`` profile, built
  from the benchmark files in the data directories (``eval.data_files``: ``--data-dir``, ``$MISS_DATA_DIR``,
  the repository's ``data/``): the GSM8K train sample rewritten into MetaMathQA's answer format, MBPP
  train tasks 601-974 written as CodeFeedback-style instruction/code pairs.

A missing or empty query/response field raises ``DataError`` naming the file and the row.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eval.data_files import locate

IGNORE_INDEX = -100
PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{query}\n\n### Response:"
)
GSM8K_TRAIN = "gsm8k/train_sample.jsonl"
MBPP_FULL = "mbpp/mbpp.jsonl"
LOCAL_SOURCE_FILES = {"local:gsm8k-metamath": (GSM8K_TRAIN,), "local:mbpp-train": (MBPP_FULL,)}
LOCAL_SOURCES = tuple(LOCAL_SOURCE_FILES)
MBPP_TRAIN_IDS = range(601, 975)


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


def _rows_of_file(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, row)`` pairs of one local file; ``where`` reads "file F row N" (rows count from 0)."""
    kind = _data_suffix(path)
    if kind == ".jsonl":
        with _open_text(path) as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"file {path} row {i} (line {i + 1}): not valid JSON ({e})") from None
                yield f"file {path} row {i} (line {i + 1})", row
    elif kind == ".json":
        with _open_text(path) as f:
            data = json.load(f)
        if isinstance(data, dict):   # {"train": [...]} or a single column-oriented table is not supported
            raise DataError(f"file {path}: expected a JSON list of records, got an object with keys {sorted(data)[:5]}")
        for i, row in enumerate(data):
            yield f"file {path} row {i}", row
    elif kind == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"file {path} row {i}", row
    else:
        raise DataError(f"file {path}: unsupported data file type {kind!r} (use .json, .jsonl or .parquet, optionally .gz)")


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _data_suffix(p) in (".json", ".jsonl", ".parquet"))
        if not files:
            raise DataError(f"directory {path} holds no .json/.jsonl/.parquet files")
        return files
    raise DataError(f"data source {path} does not exist")


def _hub_rows(spec: DataSpec) -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets

    ds = datasets.load_dataset(spec.source, split=spec.split)
    for i, row in enumerate(ds):
        yield f"hub dataset {spec.source} (split {spec.split}) row {i}", row


def local_source_files(sources: Iterable[str]) -> list[str]:
    """The data files (relative paths for ``eval.data_files``) that the ``local:`` sources among ``sources`` read."""
    return [f for source in sources for f in LOCAL_SOURCE_FILES.get(source, ())]


def _looks_local(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).expanduser().exists()


def read_pairs(spec: DataSpec, data_dir: Path | None = None) -> list[tuple[str, str]]:
    """``(query, response)`` pairs of ``spec``, validated row by row (``data_dir``: searched first for the
    files of the ``local:`` sources)."""
    if spec.source in LOCAL_SOURCES:
        rows: Iterator[tuple[str, dict[str, Any]]] = (
            gsm8k_as_metamath(data_dir) if spec.source == "local:gsm8k-metamath" else mbpp_as_codefeedback(data_dir)
        )
    elif _looks_local(spec.source):
        rows = (item for f in _local_files(Path(spec.source).expanduser()) for item in _rows_of_file(f))
    else:
        rows = _hub_rows(spec)

    pairs = []
    for where, row in rows:
        if spec.max_samples is not None and len(pairs) >= spec.max_samples:
            break
        pairs.append((_field(row, spec.query_field, where), _field(row, spec.response_field, where)))
    if not pairs:
        raise DataError(f"data source {spec.source} yielded no rows")
    return pairs


def _field(row: Any, name: str, where: str) -> str:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if name not in row:
        raise DataError(f"{where}: field {name!r} is missing (fields present: {sorted(row)}); "
                        f"set the field mapping (query_field/response_field) if the data names it differently")
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
    for where, row in _rows_of_file(locate(GSM8K_TRAIN, data_dir)):
        yield where, {"query": _field(row, "question", where), "response": metamath_answer(_field(row, "answer", where))}


def mbpp_instruction(text: str, first_test: str) -> str:
    """The MBPP instruction of the PiSSA evaluation prompts (SPEC §3.6), reused for training."""
    return f"{text} Your code should satisfy the following assertion:\n```python\n{first_test}\n```"


def mbpp_as_codefeedback(data_dir: Path | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """MBPP train tasks (601-974) as instruction -> fenced Python code, never the 11-510 test tasks."""
    for where, row in _rows_of_file(locate(MBPP_FULL, data_dir)):
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


def tokenize_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int = 512,
                   chunk: int = 1000) -> list[dict[str, list[int]]]:
    """Tokenise ``prompt + response + "\\n"``, append EOS, and mask the prompt.

    With a fast tokenizer the prompt/response boundary is found with character offsets, so it is exact
    whatever the tokenizer merges across it (a token that straddles it counts as prompt). A slow
    tokenizer (RWKV's world tokenizer) has no offsets: the prompt is then the first
    ``len(tokenize(prompt))`` tokens, the rule of the PiSSA/MiSS training scripts.
    """
    if not getattr(tokenizer, "is_fast", False):
        return _tokenize_pairs_slow(tokenizer, pairs, max_length)
    eos = tokenizer.eos_token_id
    out = []
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        prompts = [PROMPT.format(query=q) for q, _ in part]
        texts = [p + r + "\n" for p, (_, r) in zip(prompts, part)]
        enc = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=True)
        for prompt, ids, offsets in zip(prompts, enc["input_ids"], enc["offset_mapping"]):
            n_prompt = _prompt_tokens(offsets, len(prompt))
            ids = list(ids) + [eos]
            labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
            out.append({"input_ids": ids[:max_length], "labels": labels[:max_length]})
    return out


def _tokenize_pairs_slow(tokenizer, pairs, max_length: int) -> list[dict[str, list[int]]]:
    out = []
    for q, r in pairs:
        prompt = PROMPT.format(query=q)
        ids = list(tokenizer(prompt + r + "\n")["input_ids"]) + [tokenizer.eos_token_id]
        n_prompt = min(len(tokenizer(prompt)["input_ids"]), len(ids))
        labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
        out.append({"input_ids": ids[:max_length], "labels": labels[:max_length]})
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


class SFTDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[dict[str, list[int]]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]

    def stats(self) -> dict[str, Any]:
        lengths = [len(e["input_ids"]) for e in self.examples]
        targets = [sum(1 for t in e["labels"] if t != IGNORE_INDEX) for e in self.examples]
        return {
            "examples": len(lengths),
            "tokens": sum(lengths),
            "target_tokens": sum(targets),
            "mean_length": round(sum(lengths) / max(len(lengths), 1), 1),
            "max_length": max(lengths, default=0),
            "examples_without_target": sum(1 for t in targets if t == 0),
        }


@dataclass
class SFTCollator:
    """Pad a batch on the right to its longest sequence: ``pad_token_id`` for inputs, -100 for labels."""

    pad_token_id: int

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        longest = max(len(e["input_ids"]) for e in batch)
        ids = torch.full((len(batch), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for i, e in enumerate(batch):
            n = len(e["input_ids"])
            ids[i, :n] = torch.tensor(e["input_ids"])
            labels[i, :n] = torch.tensor(e["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def build_dataset(tokenizer, spec: DataSpec, data_dir: Path | None = None, max_length: int = 512) -> SFTDataset:
    return SFTDataset(tokenize_pairs(prepare_tokenizer(tokenizer), read_pairs(spec, data_dir), max_length))
