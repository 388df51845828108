"""The trainer benchmark (``experiments/trainer_bench.py``): our SFT trainer vs a plain HF Trainer + PEFT
script, and MiSS vs LoRA time per step and peak memory."""

from __future__ import annotations

import statistics
from typing import Any

from .core import MISSING, Claim, Results, Section, Table, fmt, verdict
from .registry import builder

EXPERIMENT = "trainer_bench"
VARIANT_TEXT = {"ours-lora": "our trainer, LoRA r36", "plain-lora": "plain HF Trainer + PEFT, LoRA r36",
                "ours-miss": "our trainer, MiSS r64"}


def collect(results: Results) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for rec in results.records(EXPERIMENT):
        out.setdefault(rec["config"]["variant"], []).append(rec)
    return out


def med(recs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r["metrics"].get(key) for r in recs if isinstance(r["metrics"].get(key), (int, float))]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(data) -> Table:
    rows = []
    for variant in ("ours-lora", "plain-lora", "ours-miss"):
        recs = data.get(variant, [])
        if not recs:
            continue
        m = recs[0]["metrics"]
        rows.append([VARIANT_TEXT[variant], str(len(recs)), fmt(med(recs, "tokens_per_s")),
                     fmt(med(recs, "step_time_median_s")), fmt(med(recs, "peak_memory_mb")),
                     m.get("peak_memory_kind") or MISSING, fmt(recs[0].get("trainable_params")), m.get("device", "?")])
    ours, plain = med(data.get("ours-lora", []), "tokens_per_s"), med(data.get("plain-lora", []), "tokens_per_s")
    lora_t, miss_t = (med(data.get(v, []), "step_time_median_s") for v in ("ours-lora", "ours-miss"))
    lora_m, miss_m = (med(data.get(v, []), "peak_memory_mb") for v in ("ours-lora", "ours-miss"))
    notes = [f"ours / plain tokens/s: {fmt(ratio(ours, plain), 3)} (goal ≥ 0.97)",
             f"MiSS / LoRA time per step: {fmt(ratio(miss_t, lora_t), 3)}; peak memory: {fmt(ratio(miss_m, lora_m), 3)}"]
    return Table(
        key="trainer_bench", title="Trainer benchmark: our trainer vs plain HF Trainer + PEFT; MiSS vs LoRA",
        columns=["variant", "repeats", "tokens/s", "time/step (s)", "peak memory (MB)", "memory measure", "trainable",
                 "device"],
        rows=rows, notes=notes,
        caption=("Medians over repeats, each in its own process, variants interleaved. Same model, data, batch "
                 "(4 x 2 accumulation), steps, one process, no DeepSpeed. tokens/s: non-padding tokens / train_runtime."))


def claims(data) -> list[Claim]:
    text = "MiSS trains with less time per step and less memory than LoRA (§1, §5.3)"
    test = "median step time and peak CUDA memory of MiSS r64 vs LoRA r36 through the same trainer; GPU runs only"
    lora, miss = data.get("ours-lora", []), data.get("ours-miss", [])
    if not lora or not miss:
        return [Claim(text, test, verdict(None), "no benchmark records")]
    t, m = ratio(med(miss, "step_time_median_s"), med(lora, "step_time_median_s")), ratio(
        med(miss, "peak_memory_mb"), med(lora, "peak_memory_mb"))
    gpu = all(r["metrics"].get("device") == "cuda" for r in lora + miss)
    evidence = f"MiSS/LoRA time per step {fmt(t, 3)}, peak memory {fmt(m, 3)} on {'GPU' if gpu else 'CPU'}"
    if not gpu:
        evidence += " (CPU: a tiny model's step is dominated by overheads and peak RSS by the libraries)"
    decided = (t is not None and m is not None and t < 1 and m < 1) if gpu else None
    return [Claim(text, test, verdict(decided), evidence)]


@builder("trainer_bench", "Trainer benchmark")
def build(results: Results) -> Section:
    data = collect(results)
    return Section(key="trainer_bench", title="Trainer benchmark", experiments=(EXPERIMENT,), tables=[table(data)],
                   claims=claims(data),
                   summary="Trainer benchmark (`python experiments/trainer_bench.py`, run by hand on a quiet machine).")
