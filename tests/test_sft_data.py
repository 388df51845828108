"""SFT data: the Alpaca prompt, response-only labels, truncation, padding, field errors, offline stand-ins."""

from __future__ import annotations

import gzip
import json

import pytest

from experiments.common.sft_data import (
    IGNORE_INDEX,
    PROMPT,
    DataError,
    DataSpec,
    SFTCollator,
    build_dataset,
    gsm8k_as_metamath,
    mbpp_as_codefeedback,
    metamath_answer,
    prepare_tokenizer,
    read_pairs,
    tokenize_pairs,
)
from experiments.common.tiny_model import ensure_tiny_model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, data_dir):
    from transformers import AutoTokenizer

    path = ensure_tiny_model(tmp_path_factory.getbasetemp() / "tiny_cache", data_dir)
    return prepare_tokenizer(AutoTokenizer.from_pretrained(path))


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
    batch = SFTCollator(tokenizer.pad_token_id)(exs)
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


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json", ".parquet"])
def test_local_files_and_field_mapping(tmp_path, suffix):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(3)]
    path = tmp_path / f"data{suffix}"
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
    pairs = read_pairs(DataSpec(str(path), query_field="question", response_field="answer"))
    assert pairs == [("q0", "a0"), ("q1", "a1"), ("q2", "a2")]
    assert read_pairs(DataSpec(str(tmp_path), "question", "answer", max_samples=2)) == pairs[:2]   # a directory


def test_missing_or_empty_field_names_file_and_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "q", "response": "r"}\n{"query": "q2", "answer": "r2"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl row 1 \(line 2\): field 'response' is missing.*answer"):
        read_pairs(DataSpec(str(path)))
    path.write_text('{"query": "q", "response": "r"}\n{"query": "q", "response": "r"}\n{"query": "  ", "response": "r"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl row 2 \(line 3\): field 'query' is empty"):
        read_pairs(DataSpec(str(path)))
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(DataSpec(str(tmp_path / "nope.jsonl")))


def test_build_dataset_stats(tokenizer, data_dir):
    ds = build_dataset(tokenizer, DataSpec("local:mbpp-train", max_samples=20), data_dir)
    s = ds.stats()
    assert s["examples"] == 20 and 0 < s["target_tokens"] < s["tokens"] and s["max_length"] <= 512


def test_slow_tokenizer_masks_the_tokenized_prompt_length():
    class CharTokenizer:        # no offsets, like RWKV's world tokenizer
        is_fast, eos_token_id = False, 0

        def __call__(self, text):
            return {"input_ids": [ord(c) for c in text]}

    (ex,) = tokenize_pairs(CharTokenizer(), [("q", "ans")])
    n = len(PROMPT.format(query="q"))
    assert ex["labels"][:n] == [IGNORE_INDEX] * n and ex["labels"][n:] == [ord(c) for c in "ans\n"] + [0]
