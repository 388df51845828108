"""The synthetic experiments (Fig. 2, Tables 2-3) at a small budget: record schema, parameter counts, which
parameters each protocol trains, repeatability, and the measurement helpers."""

from __future__ import annotations

import json

import pytest
import torch

from adapters.registry import equal_count_ranks
from experiments import complexity, efficiency
from experiments import no_free_lunch as nfl
from experiments.common import registry
from experiments.common.records import load_records

RECORD_FIELDS = {"experiment", "run", "profile", "status", "config", "seed", "metrics", "curves", "trainable_params",
                 "wall_time_s", "environment", "schema_version"}
# Trainable parameters of the adapter on the 64x64 fc1 at the paper's ranks (SPEC §3.1; Full FT: W and b).
EXPECTED_NFL_PARAMS = {"full": 4160, "lora": 256, "vera": 128, "miss": 256, "pissa": 256, "dora": 192,
                       "prolora": 192, "adalora": 258, "mos": 256, "mora": 256, "miss_expand": 256}
FC2 = 64 * 64 + 64
TINY = ["--set", "base_steps=20", "--set", "adapt_steps=6", "--seeds", "0"]


@pytest.fixture(scope="module")
def nfl_records(tmp_path_factory):
    out = tmp_path_factory.mktemp("nfl")
    assert nfl.main(["--results-dir", str(out), *TINY]) == 0
    return {r["run"]: r for r in load_records(out, "no_free_lunch")}


def test_nfl_every_method_and_protocol_has_a_complete_record(nfl_records):
    scaled = {m.name for m in nfl.METHODS if m.authors}         # the sensitivity protocol reruns only these
    assert scaled == {"lora", "pissa", "dora", "prolora", "adalora", "mos"}
    assert set(nfl_records) == ({f"{p}-{m}-s43" for p in nfl.AUTHORS_PROTOCOLS for m in EXPECTED_NFL_PARAMS}
                                | {f"library_defaults-{m}-s43" for m in scaled})
    for rec in nfl_records.values():
        assert RECORD_FIELDS <= set(rec) and rec["status"] == "success" and rec["seed"] == 43
        assert len(rec["curves"]["valid_loss"]) == 7 and len(rec["curves"]["train_loss"]) == 6
        m = rec["metrics"]
        # the minimum over steps 1..N: the loss before adaptation (step 0) is not part of it
        assert m["min_valid_loss"] == min(rec["curves"]["valid_loss"][1:]) and m["min_valid_step"] >= 1
        assert rec["curves"]["valid_loss"][m["min_valid_step"]] == m["min_valid_loss"]
        assert m["initial_valid_loss"] == rec["curves"]["valid_loss"][0]
        assert rec["config"]["hyper"] and rec["config"]["seed"] == 43


# The scale of every low-rank baseline under the authors' protocols (their script: scale 1) and under
# our classes' defaults (the sensitivity protocol), as the layers compute it.
AUTHORS_SCALE = {"lora": 1.0, "pissa": 1.0, "dora": 1.0, "prolora": 1.0, "mos": 1.0}
DEFAULT_SCALE = {"lora": 8.0, "pissa": 4.0, "dora": 16.0, "prolora": 8.0, "mos": 2.0}


@pytest.mark.parametrize("method", sorted(AUTHORS_SCALE))
def test_nfl_baselines_run_at_the_authors_scale_1_and_defaults_only_in_the_sensitivity_protocol(method):
    from adapters import adapter_layers

    cfg = nfl.NFLConfig(base_steps=2, adapt_steps=1, extra_seeds=0)
    spec = nfl.METHOD_BY_NAME[method]
    for protocol, expected in (("corrected", AUTHORS_SCALE), ("as_released", AUTHORS_SCALE),
                               ("library_defaults", DEFAULT_SCALE)):
        (_, layer), = adapter_layers(nfl.adapt(cfg, spec, protocol, 43)["model"])
        assert layer.scaling == pytest.approx(expected[method]), (method, protocol)
    adalora = nfl.adapt(cfg, nfl.METHOD_BY_NAME["adalora"], "corrected", 43)["model"]
    (_, layer), = adapter_layers(adalora)
    assert layer.scaling / layer.ranknum == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("method", sorted(EXPECTED_NFL_PARAMS))
def test_nfl_parameter_counts_match_spec(nfl_records, method):
    corrected, released = nfl_records[f"corrected-{method}-s43"], nfl_records[f"as_released-{method}-s43"]
    expected = EXPECTED_NFL_PARAMS[method]
    assert corrected["trainable_params"] == corrected["metrics"]["adapter_trainable_params"] == expected
    assert corrected["metrics"]["formula_params"] == expected
    # as released, fc2 trains too (for Full FT: the whole model); the sensitivity protocol changes only scales
    assert released["trainable_params"] == expected + FC2
    if f"library_defaults-{method}-s43" in nfl_records:
        assert nfl_records[f"library_defaults-{method}-s43"]["trainable_params"] == expected


def test_nfl_corrected_trains_only_the_adapter_and_as_released_trains_fc2(nfl_records):
    for name, rec in nfl_records.items():
        tensors = rec["metrics"]["trainable_tensors"]
        fc1 = [t for t in tensors if t.startswith("fc1.")]
        assert fc1 and all(t.rsplit(".", 1)[-1].startswith("adapter_") or t.startswith("fc1.base_layer.")
                           for t in fc1), name
        has_fc2 = {"fc2.weight", "fc2.bias"} <= set(tensors)
        assert has_fc2 == name.startswith("as_released"), name
        assert len(tensors) == len(fc1) + 2 * has_fc2


def test_nfl_frozen_weights_do_not_move():
    cfg = nfl.NFLConfig(base_steps=10, adapt_steps=5, extra_seeds=0)
    base, _, _ = nfl.base_model(cfg, 43)
    spec = nfl.METHOD_BY_NAME["lora"]
    corrected = nfl.adapt(cfg, spec, "corrected", 43)["model"]
    released = nfl.adapt(cfg, spec, "as_released", 43)["model"]
    assert torch.equal(corrected.fc2.weight, base.fc2.weight)
    assert torch.equal(corrected.fc1.base_layer.weight, base.fc1.weight)
    assert not torch.equal(released.fc2.weight, base.fc2.weight)
    assert torch.equal(released.fc1.base_layer.weight, base.fc1.weight)


def test_nfl_same_seed_gives_identical_curves(tmp_path):
    args = ["--set", "base_steps=15", "--set", "adapt_steps=8", "--seeds", "1", "--set", "methods=lora,miss,pissa"]
    assert nfl.main(["--results-dir", str(tmp_path / "a"), *args]) == 0
    nfl._BASE_CACHE.clear()  # the second run base-trains again from scratch
    assert nfl.main(["--results-dir", str(tmp_path / "b"), *args]) == 0
    a = {r["run"]: r["curves"] for r in load_records(tmp_path / "a", "no_free_lunch")}
    b = {r["run"]: r["curves"] for r in load_records(tmp_path / "b", "no_free_lunch")}
    assert len(a) == 2 * (2 * 3 + 2) and a == b     # seeds x (authors' protocols x methods + scaled methods)
    # another seed gives other data and so other curves
    assert a["corrected-lora-s43"]["valid_loss"] != a["corrected-lora-s44"]["valid_loss"]


def test_nfl_data_follow_the_protocol():
    cfg = nfl.NFLConfig()
    gen = torch.Generator().manual_seed(43)
    split = nfl.make_split(cfg, nfl.adapt_target, gen, "cpu")
    assert split.x_train.shape == (50, 64) and split.x_valid.shape == (100, 64)
    assert split.x_train.min() >= -1 and split.x_train.max() <= 1
    assert torch.equal(split.y_valid, nfl.adapt_target(split.x_valid))  # validation is noise-free
    noise = split.y_train - nfl.adapt_target(split.x_train)
    assert 0.03 < noise.std().item() < 0.07


def test_nfl_config_rejects_unknown_methods_and_keys(capsys):
    with pytest.raises(ValueError, match="unknown method"):
        nfl.NFLConfig(methods=("lora", "nope"))
    with pytest.raises(SystemExit) as exit_info:           # a usage error: exit 2, the valid keys listed
        nfl.main(["--plan", "--set", "adapt_stepz=3"])
    assert exit_info.value.code == 2
    assert "unknown key(s) ['adapt_stepz']" in capsys.readouterr().err


def test_nfl_plan_lists_seeds_protocols_and_methods(capsys):
    assert nfl.main(["--plan", "--seeds", "2", "--set", "methods=lora,miss"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in runs][:2] == ["corrected-lora-s43", "corrected-miss-s43"]
    assert len(runs) == 3 * (2 * 2 + 1) and {r["seed"] for r in runs} == {43, 44, 45}   # MiSS has no scale


TINY_SIZE = efficiency.LayerSize("64x64", 64, 64, "mlp", ranks=(2, 4), init_warmup=1, init_repeats=3,
                                 train_warmup_cycles=1, train_warmup_steps=2, train_runs=3, train_steps=2, threads=1,
                                 clock="process")


def test_efficiency_records_times_params_and_memory(tmp_path, monkeypatch):
    tiny = efficiency.EfficiencyConfig(sizes=(TINY_SIZE,), methods=("full", "lora", "miss", "pissa", "vera",
                                                                     "miss_expand"))
    monkeypatch.setitem(efficiency.SCALE, "cpu", tiny)
    assert efficiency.main(["--results-dir", str(tmp_path)]) == 0
    recs = {r["run"]: r for r in load_records(tmp_path, "efficiency")}
    # LoRA also at r1, MiSS r2's count (equal parameters: Fig. 2's axis); r2 is MiSS r4's
    assert set(recs) == {"64x64-full", "64x64-lora-r1"} | {
        f"64x64-{m}-r{r}" for m in ("lora", "miss", "pissa", "vera", "miss_expand") for r in (2, 4)}
    assert recs["64x64-miss-r4"]["trainable_params"] == 256 and recs["64x64-lora-r2"]["trainable_params"] == 256
    assert recs["64x64-miss-r2"]["trainable_params"] == recs["64x64-lora-r1"]["trainable_params"] == 128
    assert recs["64x64-miss_expand-r4"]["metrics"]["hyper"] == {"shards": 4}
    assert recs["64x64-vera-r4"]["trainable_params"] == 68
    for rec in recs.values():
        m = rec["metrics"]
        assert RECORD_FIELDS <= set(rec) and rec["status"] == "success"
        assert {len(v) for v in rec["curves"].values()} == {3}
        assert set(rec["curves"]) == {"init_wall_s", "init_process_s", "step_wall_s", "step_process_s"}
        assert m["clock"] == "process" and m["init_wall_s"]["n"] == 3
        assert 0 < m["init_s"]["q1"] <= m["init_s"]["median"] <= m["init_s"]["q3"]
        assert rec["trainable_params"] == m["formula_params"]
        mem = m["step_memory"]
        assert mem["peak_bytes"] == mem["resident_bytes"] + mem["transient_bytes"] and mem["transient_bytes"] > 0
        assert m["hardware"]["torch_threads"] == 1
    # Adam state doubles what trains, so Full FT's resident bytes exceed LoRA's
    assert recs["64x64-full"]["metrics"]["step_memory"]["resident_bytes"] > \
        recs["64x64-lora-r2"]["metrics"]["step_memory"]["resident_bytes"]


def test_efficiency_init_budget_keeps_one_timed_run():
    size = efficiency.LayerSize("64x64", 64, 64, "mlp", ranks=(2,), init_warmup=3, init_repeats=5,
                                train_warmup_cycles=0, train_warmup_steps=0, train_runs=1, train_steps=1,
                                init_budget_s=0.0)
    base, target = efficiency.build_model(size, "cpu")
    times, model = efficiency.time_init(base, target, "lora", {"r": 2}, size, "cpu")
    assert len(times["wall"]) == len(times["process"]) == 1 and model is not None


def test_efficiency_plan_skips_ranks_a_method_rejects(capsys):
    assert efficiency.main(["--plan", "--runs", "64x64-*"]) == 0
    names = {r["name"] for r in json.loads(capsys.readouterr().out)}
    assert "64x64-full" in names and "64x64-lora-r64" in names and "64x64-miss-r1" in names
    assert not any(n.startswith("64x64-full-r") for n in names)


@pytest.fixture(scope="module")
def complexity_records(tmp_path_factory):
    out = tmp_path_factory.mktemp("cx")
    assert complexity.main(["--results-dir", str(out), "--set", "shapes=64x64,48x80", "--set", "ranks=8"]) == 0
    return {r["run"]: r["metrics"] for r in load_records(out, "complexity")}


def test_complexity_counts_against_formulas(complexity_records):
    lora, miss = complexity_records["64x64-lora-r8"], complexity_records["64x64-miss-r8"]
    assert lora["trainable_params"] == 1024 and miss["trainable_params"] == 512
    assert lora["flags"] == [] and miss["flags"] == []
    # LoRA: kr + rd MACs, the scaling and the residual add; MiSS: k - r adds, rd MACs, the add
    assert lora["flops_per_token"] == pytest.approx(64 * 8 + 8 * 64 + 64 + 64)
    assert miss["flops_per_token"] == pytest.approx((64 - 8) + 8 * 64 + 64)
    assert miss["stages_per_token"]["input_transform"] == pytest.approx(64 - 8)
    assert lora["stages_per_token"]["input_transform"] == pytest.approx(64 * 8)
    assert miss["activation_elements_per_token"] == pytest.approx(8)            # S only
    assert lora["activation_elements_per_token"] == pytest.approx(64 + 8)       # x and A x
    assert complexity_records["64x64-full"]["flags"] == []


def test_complexity_measures_lora_at_miss_parameter_counts(complexity_records):
    # 64x64: MiSS r8 has 512 parameters = LoRA r4; 48x80 (d = 48, k = 80): MiSS r8 384 = LoRA r3
    assert complexity_records["64x64-lora-r4"]["trainable_params"] == complexity_records["64x64-miss-r8"][
        "trainable_params"] == 512
    assert complexity_records["48x80-lora-r3"]["trainable_params"] == complexity_records["48x80-miss-r8"][
        "trainable_params"] == 384
    assert not any(name.startswith("64x64-pissa-r4") for name in complexity_records)     # LoRA only


def test_equal_count_ranks_bracket_a_count_no_rank_gives():
    assert equal_count_ranks("lora", "miss", 64, 64, 8) == {4}
    assert equal_count_ranks("lora", "miss", 4096, 11008, 8) == {2, 3}        # 32,768 between 30,208 and 45,312
    assert equal_count_ranks("lora", "miss", 64, 64, 1) == {1}                 # 0.5: only r1 is a rank


def test_complexity_flags_where_the_paper_disagrees(complexity_records):
    adalora = complexity_records["64x64-adalora-r8"]
    assert any(f.startswith("params") for f in adalora["flags"])                 # r^2 vs r singular values
    loha = complexity_records["64x64-loha-r8"]
    assert loha["flops_per_forward"] > 0                                        # builds ΔW every forward
    rect = complexity_records["48x80-lora-r8"]                                  # d != k: orientation
    assert rect["trainable_params"] == (48 + 80) * 8 and rect["paper"]["params"] == (48 + 80) * 8
    vera = complexity_records["48x80-vera-r8"]
    assert vera["stored_adapter_elements"] == vera["paper"]["space"] == (48 + 80) * 8 + 8 + 48


def test_all_three_experiments_are_registered_in_every_profile():
    names = {e.name: e for e in registry.EXPERIMENTS}
    for name in ("no_free_lunch", "efficiency", "complexity"):
        assert set(names[name].profiles) == {"cpu", "small", "paper"}
