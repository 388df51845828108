"""Tables 5, 7 and 9 and Fig. 5 (§5.1, §5.2, Appendix A): the LLM fine-tuning runs.

The trainable-parameter column is computed from the model dimensions (``experiments.common.model_presets``)
and is filled whatever has run. The benchmark scores come from the evaluation stage: a module that
grades the runs registers a provider with ``@score_provider``; a provider gets ``(results, experiment,
record)`` for one training run's record (its ``run`` and ``profile`` name it) and returns ``{"GSM8K": %, "Math": %,
"HumanEval": %, "Mbpp": %}`` (any subset; the paper's grading rule) plus the second rule's columns
``"GSM8K flexible"`` and ``"Math math-verify"``, or None. Without one, the score columns print "—". Math runs
give GSM8K and Math, code runs HumanEval and Mbpp; seeds are averaged. Records of different profiles are
never averaged together: each profile gets its own row, and cpu-profile rows are labelled as the pipeline
check they are (a tiny random model on a few prompts).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from experiments.common.model_presets import PAPER_TRAINABLE, PRESETS, get_preset, printed_match, trainable_params

from .core import (MISSING, NOT_TESTED, Claim, Col, Figure, Num, Results, Section, Stat, Table, mean_std,
                   profile_of, profile_sort_key, slug)
from .paper_values import TABLE5, TABLE7, TABLE9
from .registry import builder
from .stats import Comparisons
from .style import color, emphasis, label, ordered

RANK_EXPERIMENT = "rank_ablation"
SCORE_COLUMNS = ("GSM8K", "Math", "HumanEval", "Mbpp")             # the paper's grading rule (PiSSA's)
SECOND_RULE = {"GSM8K": "GSM8K flexible", "Math": "Math math-verify"}   # shown beside the paper's rule
TASK_OF = {"GSM8K": "math", "Math": "math", "HumanEval": "code", "Mbpp": "code", "GSM8K flexible": "math",
           "Math math-verify": "math"}
PROFILE_LABEL = {"paper": "paper", "small": "small: stand-in model", "cpu": "cpu: pipeline check"}
DECIDING_PROFILES = ("small", "paper")    # scores that test the paper's claims; cpu scores only test the pipeline
ScoreProvider = Callable[[Results, str, dict[str, Any]], "dict[str, float] | None"]
SCORE_PROVIDERS: list[ScoreProvider] = []


def score_provider(fn: ScoreProvider) -> ScoreProvider:
    """Register a function giving the benchmark scores (in %) of one training run."""
    SCORE_PROVIDERS.append(fn)
    return fn


def run_scores(results: Results, experiment: str, record: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for provider in SCORE_PROVIDERS:
        for k, v in (provider(results, experiment, record) or {}).items():
            out.setdefault(k, v)
    return out


# ---------------------------------------------------------------------------------------------- helpers
def millions(n: int | None, printed: str | None = None) -> str:
    """Parameters in millions, with the printed precision of the paper's cell when given."""
    if n is None:
        return MISSING
    decimals = len(printed.rstrip("M").partition(".")[2]) if printed else 1
    return f"{n / 1e6:.{decimals}f}M"


def paper_count(model: str, method: str, r: int | None = None):
    for e in PAPER_TRAINABLE:
        if e.model == model and e.method == method and (r is None or e.r == r):
            return e
    return None


def trainable_cells(model: str, method: str, r: int | None = None) -> tuple[Num, Num]:
    """(ours, paper) for the Trainable column: ours rounded at the paper's precision, marked "(paper truncates)"
    where the print is ours truncated and † where the dimensions do not give the print at all."""
    preset = get_preset(model)
    r = r or preset.rank_alpha(method)[0]
    ours = trainable_params(model, method, r)
    entry = paper_count(model, method, r)
    if entry is None:
        return Num(ours, text=millions(ours)), Num(None)
    mark = {"rounds": "", "truncated": " (paper truncates)", "no": " †"}[printed_match(ours, entry)]
    return Num(ours, text=millions(ours, entry.printed) + mark), Num(entry.value, text=entry.printed)


def records_by(results: Results, experiment: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(task, method) -> records (every seed)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in results.records(experiment):
        cfg = rec.get("config", {})
        out.setdefault((cfg.get("task"), cfg.get("method")), []).append(rec)
    return out


def score_cell(results: Results, experiment: str, recs: list[dict[str, Any]], column: str) -> Stat:
    return Stat.of([run_scores(results, experiment, r).get(column) for r in recs], decimals=2)


def mean_score(results: Results, experiment: str, recs: list[dict[str, Any]], column: str) -> float | None:
    ms = mean_std(run_scores(results, experiment, r).get(column) for r in recs)
    return ms[0] if ms else None


def seed_scores(results: Results, experiment: str, recs: list[dict[str, Any]], column: str) -> dict[Any, float]:
    """seed -> score of ``column`` (for paired comparisons: the same seed and data)."""
    out = {}
    for r in recs:
        value = run_scores(results, experiment, r).get(column)
        if isinstance(value, (int, float)):
            out[r.get("seed")] = value
    return out


def paper_cell(value: Any) -> Num:
    return Num(value, decimals=2 if isinstance(value, float) else None)


def profile_rows(*rec_lists: list[dict[str, Any]]) -> list[str | None]:
    """The profiles with records among ``rec_lists``, paper first; ``[None]`` (one empty row) when none."""
    found = {profile_of(r) for recs in rec_lists for r in recs}
    return sorted(found, key=profile_sort_key) or [None]


def of_profile(recs: list[dict[str, Any]], profile: str | None) -> list[dict[str, Any]]:
    return [r for r in recs if profile_of(r) == profile]


def profile_label(profile: str | None) -> str:
    return MISSING if profile is None else PROFILE_LABEL.get(profile, profile)


def method_scores(results: Results, experiment: str, by: dict, method: str, profile: str | None,
                  paper: dict[str, Any]) -> dict[str, Any]:
    """Cells and means of one (model, method, profile) row: ``{column: (cell, mean)}`` plus ``"Avg"``.

    Avg is the mean of the paper-rule columns the paper reports for that model, only when all are there."""
    out: dict[str, Any] = {}
    for col in (*SCORE_COLUMNS, *SECOND_RULE.values()):
        recs = of_profile(by.get((TASK_OF[col], method), []), profile)
        out[col] = (score_cell(results, experiment, recs, col), mean_score(results, experiment, recs, col))
    means = [out[col][1] for col in SCORE_COLUMNS if paper.get(col) is not None]
    avg = statistics.fmean(means) if means and None not in means else None
    out["Avg"] = (Num(avg, decimals=2), avg)
    return out


def seed_averages(results: Results, experiment: str, by: dict, method: str, profile: str | None,
                  paper: dict[str, Any]) -> dict[Any, float]:
    """seed -> Avg of the paper-rule columns the paper reports, for seeds scored on all of them."""
    per_col = [seed_scores(results, experiment, of_profile(by.get((TASK_OF[col], method), []), profile), col)
               for col in SCORE_COLUMNS if paper.get(col) is not None]
    seeds = set.intersection(*(set(c) for c in per_col)) if per_col else set()
    return {s: statistics.fmean(c[s] for c in per_col) for s in sorted(seeds, key=str)}


# ---------------------------------------------------------------------------------------------- Table 5
def table5(results: Results) -> Table:
    rows, profiles = [], set()
    for name, preset in PRESETS.items():
        if preset.table != "Table 5":
            continue
        by = records_by(results, preset.experiment)
        for method in preset.methods:
            ours_t, paper_t = trainable_cells(name, method)
            paper = TABLE5.get((preset.paper_name, method), {})
            for profile in profile_rows(by.get(("math", method), []), by.get(("code", method), [])):
                profiles |= {profile} - {None}
                s = method_scores(results, preset.experiment, by, method, profile, paper)
                cells = [preset.paper_name, label(method), ours_t, paper_t]
                for col in SCORE_COLUMNS:
                    cells += [s[col][0], paper_cell(paper.get(col))]
                    if col in SECOND_RULE:
                        cells.append(s[SECOND_RULE[col]][0])
                rows.append(cells + [s["Avg"][0], paper_cell(paper.get("Avg")), profile_label(profile)])
    columns = ["Model", "Method", Col("Trainable", "trainable_params"), "paper"]
    for col in SCORE_COLUMNS:
        columns += [Col(col, f"{slug(col)}_pct"), "paper"] + (
            [Col(SECOND_RULE[col], f"{slug(SECOND_RULE[col])}_pct")] if col in SECOND_RULE else [])
    columns += [Col("Avg", "avg_pct"), "paper", "profile"]
    return Table(
        key="table5_nlg", title="Table 5: LLM fine-tuning on math (GSM8K, MATH) and code (HumanEval, MBPP)",
        columns=columns, rows=rows,
        caption=("Scores in % (mean ± std over seeds) from the evaluation stage (results/<experiment>-eval/); \"—\" "
                 "until the runs are graded. GSM8K, Math, HumanEval, Mbpp: PiSSA's grading rule, the paper's column; "
                 "GSM8K flexible (\"The answer is\", else ####, else the last number) and Math math-verify (symbolic "
                 "equivalence) are second graders. Code: pass@1, greedy, the original tests. One row per profile: "
                 "'cpu: pipeline check' rows score a tiny random Llama on a few prompts with few new tokens and show "
                 "only that training, generation (vLLM CPU) and grading connect, not the paper's numbers. "
                 "Trainable: computed from each model's dimensions at the paper's ranks (Table 10/11), rounded at the "
                 "paper's precision; '(paper truncates)' where the print is our count truncated; † marks a "
                 "count the dimensions do not reproduce (see the trainable-parameter table). "
                 f"Training records from profile(s): {', '.join(sorted(profiles)) or MISSING}."),
        notes=["RWKV6-7B: the paper reports math only and no DoRA row.",
               "Avg is the mean of the paper-rule columns the paper reports for that model (math only for RWKV6)."],
    )


# ---------------------------------------------------------------------------------------------- Table 7
def table7(results: Results) -> Table:
    by_rank: dict[int, list[dict[str, Any]]] = {}
    for rec in results.records(RANK_EXPERIMENT):
        by_rank.setdefault(rec["config"]["sft"]["r"], []).append(rec)
    rows = []
    for r in sorted(set(TABLE7) | set(by_rank)):
        ours_t, paper_t = trainable_cells("llama2-7b", "miss", r)
        paper = TABLE7.get(r, {})
        for profile in profile_rows(by_rank.get(r, [])):
            recs = of_profile(by_rank.get(r, []), profile)
            rows.append([Num(r), ours_t, paper_t,
                         score_cell(results, RANK_EXPERIMENT, recs, "GSM8K"), paper_cell(paper.get("GSM8K")),
                         score_cell(results, RANK_EXPERIMENT, recs, "GSM8K flexible"),
                         score_cell(results, RANK_EXPERIMENT, recs, "Math"), paper_cell(paper.get("Math")),
                         score_cell(results, RANK_EXPERIMENT, recs, "Math math-verify"),
                         Stat.of([x.get("metrics", {}).get("loss_last_k_mean") for x in recs], digits=4),
                         profile_label(profile)])
    return Table(
        key="table7_rank", title="Table 7: MiSS rank on Llama2-7B (math)",
        columns=["Rank", Col("Trainable", "trainable_params"), "paper", Col("GSM8K", "gsm8k_pct"), "paper",
                 Col("GSM8K flexible", "gsm8k_flexible_pct"), Col("Math", "math_pct"), "paper",
                 Col("Math math-verify", "math_math_verify_pct"), "final train loss", "profile"],
        rows=rows,
        caption=("Trainable from Llama2-7B's dimensions (the paper truncates: 21.76M prints as 21.7M). Scores in % "
                 "from the evaluation stage (GSM8K, Math: PiSSA's rule, the paper's column; flexible and math-verify: "
                 "second graders). Final train loss: mean of the last logged losses of the run. 'cpu: pipeline check' "
                 "rows: a tiny random model, not Llama2-7B, scored on a few prompts."))


# ---------------------------------------------------------------------------------------------- Table 9
def table9(results: Results) -> Table:
    preset = get_preset("rwkv7-3b")
    by = records_by(results, preset.experiment)
    rows = []
    for method in ("base", *preset.methods):
        paper = TABLE9[method]
        if method == "base":
            ours_t, paper_t = Num(0, text="0M"), Num(0, text=paper["trainable"])
            recs = []
        else:
            ours_t, paper_t = trainable_cells("rwkv7-3b", method)
            recs = by.get(("math", method), [])
        for profile in profile_rows(recs):
            mine = of_profile(recs, profile)
            rows.append([paper["label"], ours_t, paper_t, score_cell(results, preset.experiment, mine, "GSM8K"),
                         paper_cell(paper["GSM8K"]), score_cell(results, preset.experiment, mine, "GSM8K flexible"),
                         profile_label(profile)])
    return Table(
        key="table9_rwkv7", title="Table 9: RWKV7-3B (GSM8K)",
        columns=["Method", Col("Trainable", "trainable_params"), "paper", Col("GSM8K", "gsm8k_pct"), "paper",
                 Col("GSM8K flexible", "gsm8k_flexible_pct"), "profile"], rows=rows,
        caption=("RWKV7-3B through flash-linear-attention (its Triton kernels on GPU; the cpu rows are a tiny random "
                 "RWKV7 run through experiments/common/fla_cpu.py). The paper prints only "
                 "GSM8K (PiSSA's rule; flexible: the second grader). † marks a count the dimensions do not "
                 "reproduce at Table 10's r36: 47.2M is LoRA at r32. The base model is not scored by the evaluation "
                 "stage."))


# ---------------------------------------------------------------------------------------------- trainable
def trainable_table() -> Table:
    rows = []
    for e in PAPER_TRAINABLE:
        ours = trainable_params(e.model, e.method, e.r)
        alt = e.explained_by.get("r")
        note = e.note
        if alt:
            alt_count = trainable_params(e.model, e.method, alt)
            how = {"rounds": "rounds to", "truncated": "truncates to", "no": "does not give"}[printed_match(alt_count, e)]
            note += f" (r={alt}: {alt_count:,}, which {how} {e.printed})"
        rows.append([e.table, get_preset(e.model).paper_name, label(e.method), Num(e.r), Num(ours),
                     Num(round(ours / 1e6, 2), text=millions(ours, e.printed)), Num(e.value, text=e.printed),
                     {"rounds": "yes", "truncated": "truncated", "no": "no"}[printed_match(ours, e)], note or ""])
    return Table(
        key="nlg_trainable_params", title="Trainable parameters of Tables 5, 7 and 9, from the model dimensions",
        columns=["Table", "Model", "Method", "r", Col("ours (exact)", "trainable_params"),
                 Col("ours", "trainable_params_millions"), Col("paper", "paper_trainable_params"), "reproduced",
                 "note"], rows=rows,
        caption=("Models built on the meta device from stored configs (no weights); every adapted Linear "
                 "(q,k,v,o,gate,up,down; RWKV: its projections) counted with the method's formula, checked "
                 "against PEFT. 'reproduced': yes when our count rounds to the printed one at its printed precision "
                 "(95,748,096 does not reproduce 95.8M); 'truncated' when the print is our count truncated, not "
                 "rounded (21,757,952 printed as 21.7M); no otherwise."))


# ---------------------------------------------------------------------------------------------- runs
NLG_EXPERIMENTS = tuple(dict.fromkeys(p.experiment for p in PRESETS.values())) + (RANK_EXPERIMENT,)


def training_table(results: Results) -> Table:
    rows = []
    for experiment in NLG_EXPERIMENTS:
        for rec in results.records(experiment):
            m = rec.get("metrics", {})
            batch = (f"{m.get('world_size')}×{m.get('per_device_batch')}×{m.get('gradient_accumulation')}"
                     f"={m.get('global_batch')}") if m.get("global_batch") else MISSING
            rows.append([experiment, rec["run"], profile_of(rec), Num(m.get("steps")), batch,
                         f"ZeRO-{m['zero_stage']}" if m.get("zero_stage") else "none", Num(m.get("tokens_seen")),
                         Num(m.get("loss_first_k_mean")), Num(m.get("loss_last_k_mean")),
                         Num(m.get("tokens_per_s")), Num(m.get("train_peak_memory_mb")), Num(rec.get("trainable_params")),
                         Num(m.get("paper_model_trainable_params"))])
    return Table(
        key="nlg_training_runs", title="LLM fine-tuning runs: what trained, how fast, whether the loss fell",
        columns=["experiment", "run", "profile", "steps", "devices×batch×accum", "DeepSpeed", "tokens",
                 Col("loss (first)", "loss_first"), Col("loss (last)", "loss_last"), "tokens/s",
                 Col("peak memory (MB)", "peak_memory_mb"), Col("trainable here", "trainable_params"),
                 Col("trainable on paper model", "paper_model_trainable_params")],
        rows=rows,
        caption=("Loss: mean of the first and of the last few logged steps (response tokens only). Peak memory: CUDA "
                 "max allocated on GPU, peak RSS of the process on CPU (max over ranks). The cpu profile trains a tiny "
                 "random Llama (hidden 128, 2 layers): it shows the pipeline works, not the paper's numbers."))


# ---------------------------------------------------------------------------------------------- Fig. 5
def fig5_records(results: Results) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """profile -> method -> the math runs of LoRA and MiSS on Llama2-7B (every seed)."""
    by = records_by(results, "nlg_llama2_7b")
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for method in ("lora", "miss"):
        for rec in by.get(("math", method), []):
            out.setdefault(profile_of(rec), {}).setdefault(method, []).append(rec)
    return out


def _curve(rec: dict[str, Any], x: str) -> tuple[list[float], list[float]]:
    c = rec.get("curves", {})
    pairs = [(a, b) for a, b in zip(c.get(x, []), c.get("loss", [])) if isinstance(a, (int, float))
             and isinstance(b, (int, float))]
    return [a for a, _ in pairs], [b for _, b in pairs]


def draw_fig5(fig, by_profile: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    profile = min(by_profile, key=profile_sort_key, default=None)      # one profile, never pooled
    curves = by_profile.get(profile, {})
    axes = fig.subplots(1, 2)
    for ax, (x, xlabel, title) in zip(axes, (("tokens_seen", "tokens seen", "(a) loss vs tokens"),
                                             ("wall_time_s", "training time (s)", "(b) loss vs time"))):
        for method in ordered(curves):
            for i, rec in enumerate(curves[method]):
                xs, ys = _curve(rec, x)
                ax.plot(xs, ys, color=color(method), label=label(method) if i == 0 else None, alpha=0.9, **emphasis(method))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss")
        ax.set_title(f"{title}, profile {profile}" if profile else title)
        ax.grid(alpha=0.3)
        if not curves:
            ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(frameon=False)
    fig.tight_layout()


def mean_loss_in_range(rec: dict[str, Any], x: str, lo: float, hi: float) -> float | None:
    """Mean training loss of one run over the x-range [lo, hi]."""
    xs, ys = _curve(rec, x)
    inside = [y for a, y in zip(xs, ys) if lo <= a <= hi]
    return statistics.fmean(inside) if inside else None


def fig5_claims(by_profile: dict[str, dict[str, list[dict[str, Any]]]]) -> list[Claim]:
    text = "MiSS's training loss falls faster than LoRA's, per token and per second of training (Fig. 5, §5.1)"
    test = ("per seed, the mean training loss over the second half of the token (time) range every run covers, "
            "MiSS − LoRA below 0, Llama2-7B on MetaMathQA; decided on small/paper-profile runs only")
    out = []
    for profile in sorted(by_profile, key=profile_sort_key):
        curves = by_profile[profile]
        if set(curves) != {"lora", "miss"}:
            continue
        tally, parts = Comparisons(), []
        for x, unit in (("tokens_seen", "tokens"), ("wall_time_s", "s")):
            hi = min(max(_curve(r, x)[0], default=0) for m in curves for r in curves[m])
            lo = hi / 2
            per_seed = {m: {r.get("seed"): mean_loss_in_range(r, x, lo, hi) for r in curves[m]} for m in curves}
            diffs = [per_seed["miss"][s] - per_seed["lora"][s] for s in per_seed["miss"]
                     if per_seed["miss"][s] is not None and per_seed["lora"].get(s) is not None]
            tally.add(f"MiSS − LoRA loss per {unit}", diffs, "less")
            parts.append(f"{x} {lo:.4g}–{hi:.4g} {unit}: MiSS − LoRA per seed " +
                         ", ".join(f"{d:+.4f}" for d in diffs))
        verdict, evidence = tally.verdict, "; ".join(parts)
        if profile not in DECIDING_PROFILES:
            verdict, evidence = NOT_TESTED, evidence + f" (profile {profile}: a tiny random model does not test the claim)"
        out.append(Claim(f"[{profile}] {text}", test, verdict, evidence, tally.intervals))
    return out or [Claim(text, test, NOT_TESTED, "no LoRA and MiSS math runs of nlg_llama2_7b")]


# ---------------------------------------------------------------------------------------------- score claims
def table5_claims(results: Results) -> list[Claim]:
    text = "MiSS has the best average score of LoRA, DoRA, PiSSA and MiSS on each model of Table 5 (§5.1)"
    test = ("per model, seed by seed, MiSS's Avg (the paper-rule columns the paper reports) minus each other "
            "method's is above 0; decided on small/paper-profile eval records where every method of the model is scored")
    tally, parts, cpu_only = Comparisons(), [], False
    for name, preset in PRESETS.items():
        if preset.table != "Table 5":
            continue
        by = records_by(results, preset.experiment)
        for profile in DECIDING_PROFILES + ("cpu",):
            avgs = {m: seed_averages(results, preset.experiment, by, m, profile, TABLE5.get((preset.paper_name, m), {}))
                    for m in preset.methods}
            if not all(avgs.values()):
                continue
            if profile not in DECIDING_PROFILES:
                cpu_only = True
                continue
            for other in preset.methods:
                if other == "miss":
                    continue
                tally.add(f"{preset.paper_name} ({profile}) MiSS − {label(other)} Avg",
                          [avgs["miss"][s] - avgs[other][s] for s in avgs["miss"] if s in avgs[other]], "greater")
            parts.append(f"{preset.paper_name} ({profile}): mean Avg " + ", ".join(
                f"{label(m)} {statistics.fmean(v.values()):.2f}" for m, v in avgs.items()))
    if not tally.intervals:
        why = ("only cpu-profile scores (a pipeline check on a tiny random model) exist" if cpu_only
               else "no model has every method scored")
        return [Claim(text, test, NOT_TESTED, why)]
    return [Claim(text, test, tally.verdict, "; ".join(parts), tally.intervals)]


def table7_claims(results: Results) -> list[Claim]:
    text = "GSM8K and MATH accuracy rise with MiSS's rank from r=16 to r=128 (Table 7, §5.2)"
    test = ("seed by seed, the score at r=128 minus the score at r=16 is above 0 (GSM8K and Math); the means at "
            "every rank are shown; small/paper-profile records")
    by_rank: dict[int, list[dict[str, Any]]] = {}
    for rec in results.records(RANK_EXPERIMENT):
        by_rank.setdefault(rec["config"]["sft"]["r"], []).append(rec)
    ranks = sorted(TABLE7)
    tally, parts = Comparisons(), []
    for profile in DECIDING_PROFILES:
        for col in ("GSM8K", "Math"):
            per_rank = {r: seed_scores(results, RANK_EXPERIMENT, of_profile(by_rank.get(r, []), profile), col)
                        for r in ranks}
            if not all(per_rank.values()):
                continue
            low, high = per_rank[ranks[0]], per_rank[ranks[-1]]
            tally.add(f"{col} ({profile}) r{ranks[-1]} − r{ranks[0]}", [high[s] - low[s] for s in high if s in low],
                      "greater")
            parts.append(f"{col} ({profile}): " + " → ".join(
                f"r{r} {statistics.fmean(v.values()):.2f}" for r, v in per_rank.items()))
    if not tally.intervals:
        return [Claim(text, test, NOT_TESTED, "no small/paper-profile scores at every rank (cpu-profile scores are a "
                      "pipeline check)")]
    return [Claim(text, test, tally.verdict, "; ".join(parts), tally.intervals)]


@builder("nlg", "Tables 5, 7, 9 and Fig. 5: LLM fine-tuning")
def build(results: Results) -> Section:
    curves = fig5_records(results)
    recs = [r for e in NLG_EXPERIMENTS for r in results.records(e)]
    profiles = results.profiles(*NLG_EXPERIMENTS)
    summary = (f"LLM fine-tuning (`experiments/nlg_*.py`, `experiments/rank_ablation.py`): {len(recs)} training "
               f"run(s) recorded (profile {', '.join(profiles) or MISSING}); trainable-parameter counts computed "
               "from the model dimensions; scores come from the evaluation stage (results/<experiment>-eval/).")
    return Section(
        key="nlg", title="Tables 5, 7, 9 and Fig. 5: LLM fine-tuning",
        experiments=NLG_EXPERIMENTS,
        tables=[table5(results), table7(results), table9(results), trainable_table(), training_table(results)],
        figures=[Figure("fig5_loss_curves", "Fig. 5: training loss of LoRA and MiSS (Llama2-7B, MetaMathQA) vs tokens "
                        "and vs time", lambda fig: draw_fig5(fig, curves), size=(11.0, 4.0))],
        claims=fig5_claims(curves) + table5_claims(results) + table7_claims(results), summary=summary,
        readme_tables=("table5_nlg", "nlg_trainable_params"), readme_figures=("fig5_loss_curves",),
    )
