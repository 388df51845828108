"""SFT data: the Alpaca prompt, response-only labels, truncation, padding, field errors, offline stand-ins,
and the datasets path: the same token ids as the list-based implementation it replaced, and its cache."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
import torch

from experiments.common import sft_data
from experiments.common.sft_data import (
    IGNORE_INDEX,
    PROMPT,
    DataError,
    DataSpec,
    build_dataset,
    dataset_stats,
    gsm8k_as_metamath,
    mbpp_as_codefeedback,
    metamath_answer,
    prepare_tokenizer,
    read_pairs,
    sft_collator,
    tokenize_pairs,
)
from experiments.common.tiny_model import ensure_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, data_dir):
    return ensure_tiny_model(tmp_path_factory.getbasetemp() / "tiny_cache", data_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_dir))


# --------------------------------------------------------------------------- the reference: the code this replaced
def reference_examples(tokenizer, pairs, max_length):
    """The list-based tokenisation ``build_dataset`` used before it went through ``datasets`` (kept as it
    was, one example at a time), which the new path must reproduce token for token."""
    out = []
    for query, response in pairs:
        prompt = PROMPT.format(query=query)
        enc = tokenizer(prompt + response + "\n", return_offsets_mapping=True, add_special_tokens=True)
        n_prompt = 0
        for s, e in enc["offset_mapping"]:
            if s < len(prompt) or (s == e == 0):
                n_prompt += 1
            else:
                break
        ids = list(enc["input_ids"]) + [tokenizer.eos_token_id]
        labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
        out.append({"input_ids": ids[:max_length], "labels": labels[:max_length]})
    return out


def reference_collate(pad_token_id, batch):
    """The collator ``sft_collator`` replaced: right padding, pad id for inputs, -100 for labels."""
    longest = max(len(e["input_ids"]) for e in batch)
    ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@pytest.mark.parametrize("source", ["local:gsm8k-metamath", "local:mbpp-train"])
def test_datasets_path_gives_the_token_ids_and_labels_of_the_list_based_one(tokenizer, data_dir, source, tmp_path):
    pairs = read_pairs(DataSpec(source), data_dir)
    assert len(pairs) == {"local:gsm8k-metamath": 2000, "local:mbpp-train": 374}[source]
    for max_length in (512, 96):        # 96 cuts most examples inside the response, some inside the prompt
        ds = build_dataset(tokenizer, DataSpec(source), data_dir, max_length, cache_dir=tmp_path)
        assert ds.column_names == ["input_ids", "labels"] and len(ds) == len(pairs)
        assert ds[:]["input_ids"] == [e["input_ids"] for e in reference_examples(tokenizer, pairs, max_length)]
        assert ds[:]["labels"] == [e["labels"] for e in reference_examples(tokenizer, pairs, max_length)]
    assert tokenize_pairs(tokenizer, pairs[:50], 512) == reference_examples(tokenizer, pairs[:50], 512)


def test_library_collator_pads_bit_for_bit_like_ours(tokenizer, data_dir, tmp_path):
    ds = build_dataset(tokenizer, DataSpec("local:mbpp-train"), data_dir, 256, cache_dir=tmp_path)
    collate = sft_collator(tokenizer)
    for size in (1, 2, 7, 16):
        batch = [ds[i] for i in range(3, 3 + size * 3, 3)]
        ours, ref = collate(batch), reference_collate(tokenizer.pad_token_id, batch)
        assert set(ours) == set(ref)
        for key in ref:
            assert ours[key].dtype == ref[key].dtype and torch.equal(ours[key], ref[key]), key


def test_prompt_is_spec_alpaca_template():
    assert PROMPT.format(query="Q") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nQ\n\n### Response:")


def test_labels_cover_exactly_response_newline_eos(tokenizer):
    query, response = "What is 2+3?", "2+3 = 5\nThe answer is: 5"
    (ex,) = tokenize_pairs(tokenizer, [(query, response)])
    ids, labels = ex["input_ids"], ex["labels"]
    assert len(ids) == len(labels)
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    n_prompt = labels.index(next(t for t in labels if t != IGNORE_INDEX))
    assert all(t == IGNORE_INDEX for t in labels[:n_prompt])
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.decode(ids[:n_prompt], skip_special_tokens=True) == PROMPT.format(query=query)
    assert tokenizer.decode(labels[n_prompt:]) == response + "\n" + tokenizer.eos_token


def test_right_truncation_at_max_length(tokenizer):
    long = " ".join(["seven"] * 400)
    (ex,) = tokenize_pairs(tokenizer, [("q", long)], max_length=64)
    assert len(ex["input_ids"]) == len(ex["labels"]) == 64
    assert ex["input_ids"][0] == tokenizer.bos_token_id          # cut on the right: the prompt stays
    assert ex["input_ids"][-1] != tokenizer.eos_token_id


def test_pad_is_eos_and_collator_pads_right(tokenizer):
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "right"
    exs = tokenize_pairs(tokenizer, [("a", "b"), ("a longer question here", "a longer answer here too")])
    batch = sft_collator(tokenizer)(exs)
    short = len(exs[0]["input_ids"])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0, :short].all() and not batch["attention_mask"][0, short:].any()
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0, short:] == tokenizer.pad_token_id).all()


def test_metamath_format_of_gsm8k_answers():
    assert metamath_answer("He has 2+3 = <<2+3=5>>5 apples.\n#### 5") == "He has 2+3 = 5 apples.\nThe answer is: 5"


def test_offline_standins(data_dir):
    math = list(gsm8k_as_metamath(data_dir))
    code = list(mbpp_as_codefeedback(data_dir))
    assert len(math) == 2000 and all(r["response"].rsplit("\n", 1)[-1].startswith("The answer is: ") for _, r in math)
    assert all("<<" not in r["response"] for _, r in math)
    assert len(code) == 374                                     # MBPP train split: tasks 601-974, never test
    assert all(r["response"].startswith("```python\n") and "\r" not in r["response"] for _, r in code)


def _write(path, rows):
    suffix = "".join(path.suffixes)
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if suffix.endswith(".gz"):
            with gzip.open(path, "wt") as f:
                f.write(text)
        else:
            path.write_text(text)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json", ".parquet"])
def test_local_files_and_field_mapping(tmp_path, tokenizer, suffix):
    rows = [{"question": f"q{i}", "answer": f"a{i}", "id": i} for i in range(3)]
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / f"data{suffix}", rows)
    pairs = read_pairs(DataSpec(str(folder / f"data{suffix}"), query_field="question", response_field="answer"))
    assert pairs == [("q0", "a0"), ("q1", "a1"), ("q2", "a2")]
    assert read_pairs(DataSpec(str(folder), "question", "answer", max_samples=2)) == pairs[:2]   # a directory
    ds = build_dataset(tokenizer, DataSpec(str(folder), "question", "answer"), cache_dir=tmp_path / "cache")
    assert ds[:] == {k: [e[k] for e in reference_examples(tokenizer, pairs, 512)] for k in ("input_ids", "labels")}


def test_directory_of_files_keeps_their_order_and_max_samples_spans_them(tmp_path, tokenizer):
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / "a.jsonl", [{"query": f"a{i}", "response": "r", "extra": i} for i in range(3)])
    _write(folder / "b.parquet", [{"query": f"b{i}", "response": "r"} for i in range(3)])
    assert [q for q, _ in read_pairs(DataSpec(str(folder), max_samples=5))] == ["a0", "a1", "a2", "b0", "b1"]
    ds = build_dataset(tokenizer, DataSpec(str(folder), max_samples=5), cache_dir=tmp_path / "cache")
    assert len(ds) == 5


GOOD = '{"query": "q", "response": "r"}\n'
BAD_JSONL = [     # file text -> the error (rows count from 0, blank lines hold none, lines from 1)
    (GOOD + '\n{"query": "q2", "answer": "r2"}\n',
     r"bad\.jsonl row 1 \(line 3\): field 'response' is missing \(fields present: \['answer', 'query'\]\)"),
    (GOOD * 2 + '{"query": "  ", "response": "r"}\n', r"bad\.jsonl row 2 \(line 3\): field 'query' is empty"),
    (GOOD + '{"query": "q", "response": 5}\n',
     r"bad\.jsonl row 1 \(line 2\): field 'response' is empty or not text \(5\)"),
    (GOOD + '{"query": q}\n', r"file .*bad\.jsonl: line 2: not valid JSON"),
    (GOOD + "[1, 2]\n", r"file .*bad\.jsonl: line 2: expected a JSON object, got list"),
]


@pytest.mark.parametrize("read", ["read_pairs", "build_dataset"])
def test_bad_rows_name_file_row_and_line(tmp_path, tokenizer, read):
    def load(path, **kw):
        spec = DataSpec(str(path), **kw)
        return read_pairs(spec) if read == "read_pairs" else build_dataset(tokenizer, spec, cache_dir=tmp_path / "c")

    for text, error in BAD_JSONL:
        (tmp_path / "bad.jsonl").write_text(text)
        with pytest.raises(DataError, match=error):
            load(tmp_path / "bad.jsonl")
    _write(tmp_path / "cols.parquet", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"cols\.parquet: field 'query' is missing \(fields present: "
                                        r"\['answer', 'question'\]\); set the field mapping"):
        load(tmp_path / "cols.parquet")
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "nope.jsonl")
    _write(tmp_path / "many.parquet", [{"query": "q", "response": "r"}] * 4 + [{"query": "q", "response": ""}])
    with pytest.raises(DataError, match=r"many\.parquet row 4: field 'response' is empty"):
        load(tmp_path / "many.parquet")
    load(tmp_path / "many.parquet", max_samples=4)                  # the bad row is beyond max_samples


def test_dataset_stats_count_what_the_rows_hold(tokenizer, data_dir, tmp_path):
    ds = build_dataset(tokenizer, DataSpec("local:mbpp-train"), data_dir, 128, cache_dir=tmp_path)
    rows = ds[:]
    targets = [sum(t != IGNORE_INDEX for t in labels) for labels in rows["labels"]]
    assert dataset_stats(ds, chunk=50) == {
        "examples": 374,
        "tokens": sum(map(len, rows["input_ids"])),
        "target_tokens": sum(targets),
        "mean_length": round(sum(map(len, rows["input_ids"])) / 374, 1),
        "max_length": 128,
        "examples_without_target": sum(t == 0 for t in targets),
    }
    assert 0 < dataset_stats(ds)["examples_without_target"] < 374      # 128 tokens cut some inside the prompt


def test_cache_is_reused_and_keyed_by_everything_the_tokens_depend_on(tokenizer, tiny_dir, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"query": f"What is {i} + 1?", "response": f"{i + 1}", "question": f"q{i}", "answer": f"a{i}"}
            for i in range(12)]
    _write(data / "rows.jsonl", rows)
    cache = tmp_path / "cache"
    encoded = []
    real_encode = sft_data.encode_batch
    monkeypatch.setattr(sft_data, "encode_batch",
                        lambda tok, q, r, n: encoded.append(len(q)) or real_encode(tok, q, r, n))

    def build(spec=DataSpec(str(data / "rows.jsonl")), tok=tokenizer, max_length=512) -> bool:
        """Whether this build tokenised (a cache miss)."""
        encoded.clear()
        ds = build_dataset(tok, spec, max_length=max_length, cache_dir=cache)
        assert len(ds) == (spec.max_samples or 12) and ds.cache_files[0]["filename"].startswith(str(cache))
        return bool(encoded)

    assert build() and not build()                                    # the second build reads the cache
    assert len(list(cache.glob("*.arrow"))) == 1 and json.loads(next(cache.glob("*.json")).read_text())["rows"] == 12
    copy = tmp_path / "elsewhere" / "rows.jsonl"                     # same bytes at another path: a hit
    copy.parent.mkdir()
    shutil.copy(data / "rows.jsonl", copy)
    assert not build(DataSpec(str(copy)))
    moved_tok = tmp_path / "tok_copy"                                 # the same tokenizer from another folder: a hit
    shutil.copytree(tiny_dir, moved_tok)
    assert not build(tok=AutoTokenizer.from_pretrained(moved_tok))

    assert build(max_length=16)
    assert build(DataSpec(str(data / "rows.jsonl"), max_samples=5))
    assert build(DataSpec(str(data / "rows.jsonl"), query_field="question"))
    assert build(DataSpec(str(data / "rows.jsonl"), response_field="answer"))
    other = AutoTokenizer.from_pretrained(tiny_dir)
    other.add_tokens(["<extra>"])
    assert build(tok=other)
    _write(copy, rows[:11] + [{**rows[11], "response": "13"}])        # the data's bytes changed
    assert build(DataSpec(str(copy)))
    monkeypatch.setattr(sft_data, "PROMPT", PROMPT.replace("### Response:", "### Answer:"))
    assert build()
    monkeypatch.setattr(sft_data, "PROMPT", PROMPT)
    assert not build(DataSpec(str(data / "rows.jsonl"), max_samples=5))   # every earlier build is still there


def test_slow_tokenizer_masks_the_tokenized_prompt_length():
    class CharTokenizer:        # no offsets, like RWKV's world tokenizer
        is_fast, eos_token_id = False, 0

        def __call__(self, text):
            return {"input_ids": [ord(c) for c in text]}

    (ex,) = tokenize_pairs(CharTokenizer(), [("q", "ans")])
    n = len(PROMPT.format(query="q"))
    assert ex["labels"][:n] == [IGNORE_INDEX] * n and ex["labels"][n:] == [ord(c) for c in "ans\n"] + [0]


def test_benchmark_measures_both_paths_and_they_build_the_same_tokens(tmp_path, capsys):
    """The benchmark's plumbing (three fresh processes), at a size where its numbers mean nothing."""
    assert sft_data.main(["bench", "--rows", "2100", "--max-length", "128", "--workdir", str(tmp_path / "w")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["rows"] == 2100 and out["same_tokens"] is True      # the cycle wraps: rows 2000.. repeat row 0..
    for numbers in (out, out["legacy"]):
        assert numbers["seconds"] > 0 and numbers["peak_rss_mb"] > 0 and numbers["cpu_seconds"] >= 0
    assert out["cached_seconds"] > 0 and set(out["legacy_over_datasets"]) == {"seconds", "cpu_seconds", "peak_rss_mb"}
    assert not (tmp_path / "w").exists()                             # rows and cache are removed afterwards
