"""Trainable-parameter counts of Tables 5, 7 and 9 from the model dimensions alone (meta device, no weights)."""

from __future__ import annotations

import pytest

from experiments.common.model_presets import (
    PAPER_TRAINABLE,
    PRESETS,
    PaperCount,
    matches_printed,
    meta_model,
    printed_match,
    peft_trainable_params,
    stored_config,
    stored_config_name,
    target_linears,
    total_params,
    trainable_params,
    trainable_table,
)


@pytest.mark.parametrize("entry", PAPER_TRAINABLE, ids=lambda e: f"{e.table}-{e.model}-{e.method}-r{e.r}")
def test_paper_counts_reproduce_where_documented(entry):
    """Every printed count either is ours rounded to its printed precision, or is documented (truncated, or
    not given by the dimensions) with the setting, if any, that does give it."""
    ours = trainable_params(entry.model, entry.method, entry.r)
    assert printed_match(ours, entry) == entry.match, (entry, ours)
    if entry.match != "rounds":
        assert entry.note
        if "r" in entry.explained_by:
            alt = trainable_params(entry.model, entry.method, entry.explained_by["r"])
            assert printed_match(alt, entry) in ("rounds", "truncated")


def test_a_count_reproduces_a_print_only_when_it_rounds_to_it():
    def entry(printed):
        return PaperCount("T", "llama2-7b", "lora", 1, printed, "rounds")

    assert printed_match(95_748_096, entry("95.8M")) == "no"           # Mistral DoRA: rounds to 95.7M
    assert printed_match(95_748_096, entry("95.7M")) == "rounds"
    assert printed_match(21_757_952, entry("21.7M")) == "truncated"    # Table 7 r16: rounds to 21.8M
    assert printed_match(174_063_616, entry("174.0M")) == "truncated"
    assert printed_match(89_950_000, entry("90.0M")) == "rounds"       # a half rounds up
    assert printed_match(250_347_520, entry("250M")) == "rounds"
    assert matches_printed(89_948_160, entry("89.9M")) and not matches_printed(21_757_952, entry("21.7M"))
    with pytest.raises(ValueError, match="match must be"):
        PaperCount("T", "llama2-7b", "lora", 1, "1.0M", "yes")


def test_headline_counts_exactly():
    assert trainable_params("llama2-7b", "miss", 64) == 87_031_808      # 87.0M
    assert trainable_params("llama2-7b", "lora", 36) == 89_948_160      # 89.9M
    assert trainable_params("llama2-7b", "dora", 36) == 91_308_032      # 91.3M
    assert [trainable_params("llama2-7b", "miss", r) for r in (16, 32, 64, 128)] == [
        21_757_952, 43_515_904, 87_031_808, 174_063_616]              # Table 7: 21.7/43.5/87.0/174.0M
    assert trainable_params("rwkv7-3b", "miss", 64) == 47_185_920       # Table 9: 47.2M


def test_meta_models_have_the_real_sizes():
    assert total_params("llama2-7b") == 6_738_415_616
    assert total_params("qwen3-4b") == 4_022_468_096
    assert len(target_linears("llama2-13b")) == 40 * 7
    assert len(target_linears("rwkv6-7b")) == 32 * 8


@pytest.mark.parametrize("model,method", [("llama2-7b", "lora"), ("llama2-7b", "dora"), ("llama2-7b", "miss"),
                                          ("mistral-7b", "dora"), ("qwen3-4b", "miss"), ("llama2-13b", "miss")])
def test_formula_counts_equal_peft_counts(model, method):
    assert peft_trainable_params(model, method) == trainable_params(model, method)


def test_rwkv_stored_shapes_match_fla_when_installed():
    pytest.importorskip("fla")
    stored = stored_config("rwkv6-7b")["_target_linears_per_layer"]["shapes"]
    built = [(n.split(".", 3)[3], d, k) for n, d, k in target_linears("rwkv6-7b") if n.startswith("model.layers.0.")]
    assert sorted(map(tuple, stored)) == sorted(built)


def test_table_rows_cover_every_preset_with_paper_numbers():
    rows = trainable_table()
    assert {r["model"] for r in rows} == {p.paper_name for p in PRESETS.values()}
    assert all(r["match"] == "rounds" or r["note"] for r in rows)


def test_qwen3_preset_is_the_authors_checkpoint():
    """The authors' released script fine-tunes Qwen/Qwen3-4B (post-trained), not Qwen3-4B-Base."""
    preset = PRESETS["qwen3-4b"]
    assert preset.hub_id == "Qwen/Qwen3-4B" and preset.small_model == "Qwen/Qwen3-0.6B"
    assert stored_config("qwen3-4b")["_source"].startswith("config.json of Qwen/Qwen3-4B,")


def test_small_stand_ins_have_stored_dimensions():
    """The memory planner builds the small profile's models from stored configs too (their published sizes)."""
    assert stored_config_name("TinyLlama/TinyLlama_v1.1") == "tinyllama-1.1b"
    assert stored_config_name(PRESETS["llama2-7b"].hub_id) == "llama2-7b"
    assert stored_config_name("no/such-model") is None
    assert sum(p.numel() for p in meta_model("tinyllama-1.1b").parameters()) == 1_100_048_384
    assert sum(p.numel() for p in meta_model("qwen3-0.6b").parameters()) == 596_049_920
