"""The LLM sections of ``python -m analysis``: Tables 5/7/9 layouts with the trainable column, scores from a
registered provider, Fig. 1 / Fig. 5 and their claims, the trainer benchmark."""

from __future__ import annotations

import pytest

from analysis import fig1, nlg, trainer_bench
from analysis.core import INCONCLUSIVE, MISSING, NOT_TESTED, SUPPORTED, Results
from experiments.common.records import RunRecord, write_record


def _nlg(results, experiment, task, method, seed, profile, losses, r=None):
    curves = {"step": list(range(1, len(losses) + 1)), "loss": losses,
              "tokens_seen": [1000 * i for i in range(1, len(losses) + 1)],
              "wall_time_s": [0.5 * i for i in range(1, len(losses) + 1)]}
    metrics = {"steps": len(losses), "loss_first_k_mean": losses[0], "loss_last_k_mean": losses[-1], "world_size": 2,
               "per_device_batch": 2, "gradient_accumulation": 2, "global_batch": 8, "zero_stage": 2,
               "tokens_seen": 1000 * len(losses), "tokens_per_s": 2000.0, "train_peak_memory_mb": 800.0,
               "paper_model_trainable_params": 1}
    name = f"{task}-{method}" + (f"-r{r}" if r else "") + f"-s{seed}"
    write_record(results, RunRecord(experiment, name, profile, status="success", seed=seed,
                                    config={"task": task, "method": method, "sft": {"r": r}},
                                    metrics=metrics, curves=curves, trainable_params=100))


@pytest.fixture
def results(tmp_path):
    for seed in (42, 43):
        _nlg(tmp_path, "nlg_llama2_7b", "math", "lora", seed, "small", [2.0, 1.5, 1.2, 1.1])
        _nlg(tmp_path, "nlg_llama2_7b", "math", "miss", seed, "small", [2.0, 1.3, 1.0, 0.9])
        _nlg(tmp_path, "nlg_llama2_7b", "code", "miss", seed, "small", [2.0, 1.3, 1.0, 0.9])
    _nlg(tmp_path, "rank_ablation", "math", "miss", 42, "cpu", [2.0, 1.9], r=16)
    for method, r, g in (("full", None, 3.0), ("lora", 32, 0.5), ("miss", 32, 2.0), ("pissa", 32, 1.0)):
        write_record(tmp_path, RunRecord("gradient_norm", f"llama2-7b-math-{method}" + (f"-r{r}" if r else ""), "small",
                                         status="success", config={"preset": "llama2-7b", "task": "math",
                                                                   "method": method, "r": r},
                                         metrics={"grad_norm_mean": g, "grad_norm_std": 0.1, "n_batches": 8,
                                                  "batch_size": 4}, trainable_params=10))
    for variant, tps, step, mem in (("ours-lora", 1000.0, 0.2, 800.0), ("plain-lora", 1010.0, None, 790.0),
                                    ("ours-miss", 1100.0, 0.18, 780.0)):
        write_record(tmp_path, RunRecord("trainer_bench", f"{variant}-rep0", "cpu", status="success",
                                         config={"variant": variant},
                                         metrics={"tokens_per_s": tps, "step_time_median_s": step, "peak_memory_mb": mem,
                                                  "peak_memory_kind": "process_peak_rss", "device": "cpu"},
                                         trainable_params=5))
    return Results(tmp_path)


@pytest.fixture
def provider():
    def scores(results, experiment, record):
        run = record["run"]
        if experiment == "nlg_llama2_7b" and run.startswith("math-miss"):
            return {"GSM8K": 48.0 if run.endswith("42") else 50.0, "Math": 8.0}
        if experiment == "nlg_llama2_7b" and run.startswith("code-miss"):
            return {"HumanEval": 20.0, "Mbpp": 40.0}
        return None

    nlg.score_provider(scores)
    yield
    nlg.SCORE_PROVIDERS.remove(scores)


def _row(table, *first):
    return next(r for r in table.rows if tuple(r[:len(first)]) == first)


def test_table5_trainable_column_and_scores(results, provider):
    t = nlg.table5(results)
    miss = _row(t, "Llama2-7B", "MiSS")
    assert miss[2:4] == ["87.0M", "87.0M"]
    assert miss[4:6] == ["49.00 ± 1.41", "48.16"] and miss[6] == MISSING and miss[7] == "8.00 ± 0.00"  # 6: flexible
    assert miss[14] == f"{(49 + 8 + 20 + 40) / 4:.2f}" and miss[15] == "29.30" and miss[16] == "small: stand-in model"
    lora = _row(t, "Llama2-7B", "LoRA")
    assert lora[4] == MISSING and lora[14] == MISSING          # no scores: dashes, never a made-up number
    assert _row(t, "Mistral-7B", "MiSS")[2] == "88.1M †"       # the printed 87.0M is not reproduced
    assert _row(t, "RWKV6-7B", "MiSS")[10] == MISSING          # no code columns for RWKV6
    t.to_latex()


def test_tables_7_9_and_trainable(results):
    t7 = nlg.table7(results)
    assert [r[0] for r in t7.rows] == ["16", "32", "64", "128"]
    assert _row(t7, "16")[1:3] == ["21.8M (paper truncates)", "21.7M"] and _row(t7, "16")[-1] == "cpu: pipeline check"
    t9 = nlg.table9(results)
    assert _row(t9, "MiSS")[1:3] == ["47.2M", "47.2M"] and _row(t9, "LoRA")[1] == "53.1M †"
    tt = nlg.trainable_table()
    assert any(r[1] == "Llama2-13B" and r[2] == "MiSS" and r[7] == "no" and "r=120: 255,590,400, which truncates "
               "to 255M" in r[8] for r in tt.rows)
    reproduced = {(r[1], r[2], r[3]): r[7] for r in tt.rows}
    assert reproduced[("Mistral-7B", "DoRA", "36")] == "no"          # 95,748,096 rounds to 95.7M, not 95.8M
    assert reproduced[("Llama2-7B", "MiSS", "16")] == "truncated" and reproduced[("Llama2-7B", "MiSS", "64")] == "yes"


def test_fig5_claim_decided_on_small_profile(results, tmp_path):
    (claim,) = nlg.fig5_claims(nlg.fig5_records(results))
    assert claim.verdict == INCONCLUSIVE and "n = 2" in claim.basis()         # two seeds cannot decide at 95%
    for seed in range(44, 48):                                                # six seeds can
        _nlg(tmp_path, "nlg_llama2_7b", "math", "lora", seed, "small", [2.0, 1.5, 1.2, 1.1])
        _nlg(tmp_path, "nlg_llama2_7b", "math", "miss", seed, "small", [2.0, 1.3, 1.0, 0.9])
    (claim,) = nlg.fig5_claims(nlg.fig5_records(Results(tmp_path)))
    assert claim.verdict == SUPPORTED and "n = 6" in claim.basis() and "MiSS − LoRA" in claim.evidence


def test_fig1_and_bench(results):
    data = fig1.collect(results)
    assert fig1.claims(data)[0].verdict == INCONCLUSIVE and "n = 1" in fig1.claims(data)[0].basis()   # one rank
    assert [r[2] for r in fig1.table(data).rows] == ["Full FT", "LoRA", "PiSSA", "MiSS"]
    bench = trainer_bench.table(trainer_bench.collect(results))
    assert "0.99" in bench.notes[0] and "0.9" in bench.notes[1]
    assert trainer_bench.claims(trainer_bench.collect(results))[0].verdict == NOT_TESTED   # CPU only


def test_sections_write(results, tmp_path):
    from analysis.__main__ import write_section

    out = tmp_path / "tables"
    for build in (nlg.build, fig1.build, trainer_bench.build):
        write_section(build(results), out, results)
    assert (out / "fig5_loss_curves.png").stat().st_size > 0 and (out / "fig1_gradient_norm.png").stat().st_size > 0
    assert (out / "table5_nlg.md").read_text().count("|") > 100


def _encoder_norm(results, task, method, r, seed, norms):
    name = f"minilm-l6-{task}-{method}" + (f"-r{r}" if r else "") + f"-s{seed}"
    write_record(results, RunRecord("gradient_norm", name, "cpu", status="success", seed=seed,
                                    config={"family": "encoder", "model_label": "MiniLM-L6", "task": task,
                                            "method": method, "r": r, "seed": seed},
                                    metrics={"grad_norm_mean": sum(norms) / len(norms), "grad_norms": norms,
                                             "n_batches": len(norms), "batch_size": 16}, trainable_params=10))


@pytest.mark.parametrize("miss_scale, seeds, expected", [
    (3.0, (0, 1, 2), SUPPORTED),       # 2 tasks x 3 seeds = 6 pairs per rank, all above 1
    (0.5, (0, 1, 2), "contradicted"),
    (3.0, (0, 1), INCONCLUSIVE),       # 4 pairs: too few for any exact 95% interval
])
def test_fig1_encoder_claim_pairs_tasks_and_seeds_per_rank(tmp_path, miss_scale, seeds, expected):
    for task in ("cola", "sst2"):
        for seed in seeds:
            for r in (8, 16):
                lora = [0.2 + 0.01 * seed, 0.3, 0.25 + 0.02 * r / 8]
                _encoder_norm(tmp_path, task, "lora", r, seed, lora)
                _encoder_norm(tmp_path, task, "miss", r, seed, [miss_scale * (x + 0.001 * seed) for x in lora])
            _encoder_norm(tmp_path, task, "full", None, seed, [1.0, 1.1])
    data = fig1.collect(Results(tmp_path))
    claim = next(c for c in fig1.claims(data) if "MiniLM-L6" in c.text)
    assert claim.verdict == expected
    assert [label for label, _ in claim.intervals] == ["MiniLM-L6 r8: MiSS ÷ LoRA grad norm",
                                                       "MiniLM-L6 r16: MiSS ÷ LoRA grad norm"]
    assert all(iv.n == 2 * len(seeds) for _, iv in claim.intervals)
    rows = fig1.table(data).rows
    assert {row[6] for row in rows} == {str(len(seeds))}                                       # seeds per cell
    assert fig1.panel_title(("cpu", "MiniLM-L6", "cola"), fig1.is_encoder(("cpu", "MiniLM-L6", "cola"), data)) \
        == "MiniLM-L6 (real pretrained), cola"
