"""The trainer benchmark (``experiments/trainer_bench.py``): our SFT trainer vs a plain HF Trainer + PEFT
script, and MiSS vs LoRA time per step and peak memory."""

from __future__ import annotations

import statistics
from typing import Any

from .core import MISSING, NOT_TESTED, Claim, Col, Num, Results, Section, Table, fmt, profile_of, profile_sort_key
from .registry import builder
from .stats import Comparisons, log_ratios

EXPERIMENT = "trainer_bench"
VARIANT_TEXT = {"ours-lora": "our trainer, LoRA r36", "plain-lora": "plain HF Trainer + PEFT, LoRA r36",
                "ours-miss": "our trainer, MiSS r64"}


def collect(results: Results) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """profile -> variant -> records (one per repeat); profiles are never pooled."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for rec in results.records(EXPERIMENT):
        out.setdefault(profile_of(rec), {}).setdefault(rec["config"]["variant"], []).append(rec)
    return out


def med(recs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r["metrics"].get(key) for r in recs if isinstance(r["metrics"].get(key), (int, float))]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(by_profile) -> Table:
    rows, notes = [], []
    for profile in sorted(by_profile, key=profile_sort_key):
        data = by_profile[profile]
        for variant in ("ours-lora", "plain-lora", "ours-miss"):
            recs = data.get(variant, [])
            if not recs:
                continue
            m = recs[0]["metrics"]
            rows.append([VARIANT_TEXT[variant], profile, Num(len(recs)), Num(med(recs, "tokens_per_s")),
                         Num(med(recs, "step_time_median_s")), Num(med(recs, "peak_memory_mb")),
                         m.get("peak_memory_kind") or MISSING, Num(recs[0].get("trainable_params")), m.get("device", "?")])
        ours, plain = med(data.get("ours-lora", []), "tokens_per_s"), med(data.get("plain-lora", []), "tokens_per_s")
        lora_t, miss_t = (med(data.get(v, []), "step_time_median_s") for v in ("ours-lora", "ours-miss"))
        lora_m, miss_m = (med(data.get(v, []), "peak_memory_mb") for v in ("ours-lora", "ours-miss"))
        notes += [f"{profile}: ours / plain tokens/s: {fmt(ratio(ours, plain), 3)} (goal ≥ 0.97)",
                  f"{profile}: MiSS / LoRA time per step: {fmt(ratio(miss_t, lora_t), 3)}; peak memory: "
                  f"{fmt(ratio(miss_m, lora_m), 3)}"]
    return Table(
        key="trainer_bench", title="Trainer benchmark: our trainer vs plain HF Trainer + PEFT; MiSS vs LoRA",
        columns=["variant", "profile", "repeats", Col("tokens/s", "tokens_per_s_median"),
                 Col("time/step (s)", "step_time_s_median"), Col("peak memory (MB)", "peak_memory_mb_median"),
                 "memory measure", "trainable", "device"],
        rows=rows, notes=notes,
        caption=("Medians over repeats, each in its own process, variants interleaved. Same model, data, batch "
                 "(4 x 2 accumulation), steps, one process, no DeepSpeed. tokens/s: non-padding tokens / train_runtime."))


def claims(by_profile) -> list[Claim]:
    text = "MiSS trains with less time per step and less memory than LoRA (§1, §5.3)"
    test = ("MiSS r64 ÷ LoRA r36 step time and peak CUDA memory through the same trainer below 1, paired by repeat "
            "(the variants run interleaved); GPU runs only")
    out = []
    for profile in sorted(by_profile, key=profile_sort_key):
        data = by_profile[profile]
        lora = {r["config"].get("rep"): r for r in data.get("ours-lora", [])}
        miss = {r["config"].get("rep"): r for r in data.get("ours-miss", [])}
        if not lora or not miss:
            continue
        tally, parts = Comparisons(), []
        for key, what in (("step_time_median_s", "time per step"), ("peak_memory_mb", "peak memory")):
            tally.add(f"MiSS ÷ LoRA {what}", log_ratios((miss[k]["metrics"].get(key), lora[k]["metrics"].get(key))
                                                        for k in sorted(miss, key=str) if k in lora),
                      "less", log_ratio=True)
            parts.append(f"{what} {fmt(ratio(med(list(miss.values()), key), med(list(lora.values()), key)), 3)}")
        gpu = all(r["metrics"].get("device") == "cuda" for r in [*lora.values(), *miss.values()])
        evidence = f"medians, MiSS/LoRA: {', '.join(parts)} on {'GPU' if gpu else 'CPU'}"
        verdict = tally.verdict
        if not gpu:
            verdict = NOT_TESTED
            evidence += " (CPU: a tiny model's step is dominated by overheads and peak RSS by the libraries)"
        out.append(Claim(f"[{profile}] {text}", test, verdict, evidence, tally.intervals))
    return out or [Claim(text, test, NOT_TESTED, "no benchmark records")]


@builder("trainer_bench", "Trainer benchmark")
def build(results: Results) -> Section:
    data = collect(results)
    return Section(key="trainer_bench", title="Trainer benchmark", experiments=(EXPERIMENT,), tables=[table(data)],
                   claims=claims(data),
                   summary="Trainer benchmark (`python experiments/trainer_bench.py`, run by hand on a quiet machine).")
