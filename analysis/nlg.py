"""Tables 5, 7 and 9 and Fig. 5 (§5.1, §5.2, Appendix A): the LLM fine-tuning runs.

The trainable-parameter column is computed from the model dimensions (``experiments.common.model_presets``)
and is filled whatever has run. The benchmark scores come from the evaluation stage: a module that
grades the runs registers a provider with ``@score_provider``; a provider gets ``(results, experiment,
run)`` for one training run (``results/<experiment>/<run>.json``) and returns ``{"GSM8K": %, "Math": %,
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

from experiments.common.model_presets import (PAPER_TRAINABLE, PRESETS, get_preset, matches_printed,
                                              trainable_params)

from .core import (MISSING, NOT_TESTED, Claim, Figure, Results, Section, Table, fmt, fmt_mean_std, mean_std,
                   verdict)
from .paper_values import TABLE5, TABLE7, TABLE9
from .registry import builder
from .style import color, emphasis, label, ordered

RANK_EXPERIMENT = "rank_ablation"
SCORE_COLUMNS = ("GSM8K", "Math", "HumanEval", "Mbpp")             # the paper's grading rule (PiSSA's)
SECOND_RULE = {"GSM8K": "GSM8K flexible", "Math": "Math math-verify"}   # shown beside the paper's rule
TASK_OF = {"GSM8K": "math", "Math": "math", "HumanEval": "code", "Mbpp": "code", "GSM8K flexible": "math",
           "Math math-verify": "math"}
PROFILE_LABEL = {"paper": "paper", "small": "small: stand-in model", "cpu": "cpu: pipeline check"}
PROFILE_ORDER = ("paper", "small", "cpu")
DECIDING_PROFILES = ("small", "paper")    # scores that test the paper's claims; cpu scores only test the pipeline
ScoreProvider = Callable[[Results, str, str], "dict[str, float] | None"]
SCORE_PROVIDERS: list[ScoreProvider] = []


def score_provider(fn: ScoreProvider) -> ScoreProvider:
    """Register a function giving the benchmark scores (in %) of one training run."""
    SCORE_PROVIDERS.append(fn)
    return fn


def run_scores(results: Results, experiment: str, run: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for provider in SCORE_PROVIDERS:
        for k, v in (provider(results, experiment, run) or {}).items():
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


def trainable_cells(model: str, method: str, r: int | None = None) -> tuple[str, str]:
    """(ours, paper) for the Trainable column; ours is flagged with † where it differs from the print."""
    preset = get_preset(model)
    r = r or preset.rank_alpha(method)[0]
    ours = trainable_params(model, method, r)
    entry = paper_count(model, method, r)
    if entry is None:
        return millions(ours), MISSING
    mark = "" if matches_printed(ours, entry) else " †"
    return millions(ours, entry.printed) + mark, entry.printed


def records_by(results: Results, experiment: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(task, method) -> records (every seed)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in results.records(experiment):
        cfg = rec.get("config", {})
        out.setdefault((cfg.get("task"), cfg.get("method")), []).append(rec)
    return out


def score_cell(results: Results, experiment: str, recs: list[dict[str, Any]], column: str) -> str:
    values = [run_scores(results, experiment, r["run"]).get(column) for r in recs]
    return fmt_mean_std(values, decimals=2)


def mean_score(results: Results, experiment: str, recs: list[dict[str, Any]], column: str) -> float | None:
    ms = mean_std(run_scores(results, experiment, r["run"]).get(column) for r in recs)
    return ms[0] if ms else None


def paper_cell(value: Any) -> str:
    return MISSING if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))


def profiles_of(recs: list[dict[str, Any]]) -> set[str]:
    return {r.get("profile") or "?" for r in recs}


def profile_rows(*rec_lists: list[dict[str, Any]]) -> list[str | None]:
    """The profiles with records among ``rec_lists``, paper first; ``[None]`` (one empty row) when none."""
    found = {r.get("profile") or "?" for recs in rec_lists for r in recs}
    rank = {p: i for i, p in enumerate(PROFILE_ORDER)}
    return sorted(found, key=lambda p: (rank.get(p, len(rank)), p)) or [None]


def of_profile(recs: list[dict[str, Any]], profile: str | None) -> list[dict[str, Any]]:
    return [r for r in recs if (r.get("profile") or "?") == profile]


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
    out["Avg"] = (MISSING if avg is None else f"{avg:.2f}", avg)
    return out


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
    columns = ["Model", "Method", "Trainable", "paper"]
    for col in SCORE_COLUMNS:
        columns += [col, "paper"] + ([SECOND_RULE[col]] if col in SECOND_RULE else [])
    columns += ["Avg", "paper", "profile"]
    return Table(
        key="table5_nlg", title="Table 5: LLM fine-tuning on math (GSM8K, MATH) and code (HumanEval, MBPP)",
        columns=columns, rows=rows,
        caption=("Scores in % (mean ± std over seeds) from the evaluation stage (results/<experiment>-eval/); \"—\" "
                 "until the runs are graded. GSM8K, Math, HumanEval, Mbpp: PiSSA's grading rule, the paper's column; "
                 "GSM8K flexible (\"The answer is\", else ####, else the last number) and Math math-verify (symbolic "
                 "equivalence) are second graders. Code: pass@1, greedy, the original tests. One row per profile: "
                 "'cpu: pipeline check' rows score a tiny random Llama on a few prompts with few new tokens and show "
                 "only that training, generation (vLLM CPU) and grading connect, not the paper's numbers. "
                 "Trainable: computed from each model's dimensions at the paper's ranks (Table 10/11); † marks a "
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
            rows.append([str(r), ours_t, paper_t,
                         score_cell(results, RANK_EXPERIMENT, recs, "GSM8K"), paper_cell(paper.get("GSM8K")),
                         score_cell(results, RANK_EXPERIMENT, recs, "GSM8K flexible"),
                         score_cell(results, RANK_EXPERIMENT, recs, "Math"), paper_cell(paper.get("Math")),
                         score_cell(results, RANK_EXPERIMENT, recs, "Math math-verify"),
                         fmt_mean_std([x.get("metrics", {}).get("loss_last_k_mean") for x in recs], digits=4),
                         profile_label(profile)])
    return Table(
        key="table7_rank", title="Table 7: MiSS rank on Llama2-7B (math)",
        columns=["Rank", "Trainable", "paper", "GSM8K", "paper", "GSM8K flexible", "Math", "paper",
                 "Math math-verify", "final train loss", "profile"],
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
            ours_t, paper_t = "0M", paper["trainable"]
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
        columns=["Method", "Trainable", "paper", "GSM8K", "paper", "GSM8K flexible", "profile"], rows=rows,
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
            note += f" (r={alt}: {millions(trainable_params(e.model, e.method, alt), e.printed)})"
        rows.append([e.table, get_preset(e.model).paper_name, label(e.method), str(e.r), f"{ours:,}",
                     millions(ours, e.printed), e.printed, "yes" if matches_printed(ours, e) else "no", note or ""])
    return Table(
        key="nlg_trainable_params", title="Trainable parameters of Tables 5, 7 and 9, from the model dimensions",
        columns=["Table", "Model", "Method", "r", "ours (exact)", "ours", "paper", "reproduced", "note"], rows=rows,
        caption=("Models built on the meta device from stored configs (no weights); every adapted Linear "
                 "(q,k,v,o,gate,up,down; RWKV: its projections) counted with the method's formula, checked "
                 "against PEFT. 'reproduced': within one unit of the paper's last printed digit."))


# ---------------------------------------------------------------------------------------------- runs
NLG_EXPERIMENTS = tuple(dict.fromkeys(p.experiment for p in PRESETS.values())) + (RANK_EXPERIMENT,)


def training_table(results: Results) -> Table:
    rows = []
    for experiment in NLG_EXPERIMENTS:
        for rec in results.records(experiment):
            m = rec.get("metrics", {})
            batch = (f"{m.get('world_size')}×{m.get('per_device_batch')}×{m.get('gradient_accumulation')}"
                     f"={m.get('global_batch')}") if m.get("global_batch") else MISSING
            rows.append([experiment, rec["run"], rec.get("profile") or MISSING, fmt(m.get("steps")), batch,
                         f"ZeRO-{m['zero_stage']}" if m.get("zero_stage") else "none", fmt(m.get("tokens_seen")),
                         f"{fmt(m.get('loss_first_k_mean'))} → {fmt(m.get('loss_last_k_mean'))}",
                         fmt(m.get("tokens_per_s")), fmt(m.get("train_peak_memory_mb")), fmt(rec.get("trainable_params")),
                         fmt(m.get("paper_model_trainable_params"))])
    return Table(
        key="nlg_training_runs", title="LLM fine-tuning runs: what trained, how fast, whether the loss fell",
        columns=["experiment", "run", "profile", "steps", "devices×batch×accum", "DeepSpeed", "tokens",
                 "loss (first → last)", "tokens/s", "peak memory (MB)", "trainable here", "trainable on paper model"],
        rows=rows,
        caption=("Loss: mean of the first and of the last few logged steps (response tokens only). Peak memory: CUDA "
                 "max allocated on GPU, peak RSS of the process on CPU (max over ranks). The cpu profile trains a tiny "
                 "random Llama (hidden 128, 2 layers): it shows the pipeline works, not the paper's numbers."))


# ---------------------------------------------------------------------------------------------- Fig. 5
def fig5_records(results: Results) -> dict[str, list[dict[str, Any]]]:
    by = records_by(results, "nlg_llama2_7b")
    return {m: by.get(("math", m), []) for m in ("lora", "miss") if by.get(("math", m))}


def _curve(rec: dict[str, Any], x: str) -> tuple[list[float], list[float]]:
    c = rec.get("curves", {})
    pairs = [(a, b) for a, b in zip(c.get(x, []), c.get("loss", [])) if isinstance(a, (int, float))
             and isinstance(b, (int, float))]
    return [a for a, _ in pairs], [b for _, b in pairs]


def draw_fig5(fig, curves: dict[str, list[dict[str, Any]]]) -> None:
    axes = fig.subplots(1, 2)
    for ax, (x, xlabel, title) in zip(axes, (("tokens_seen", "tokens seen", "(a) loss vs tokens"),
                                             ("wall_time_s", "training time (s)", "(b) loss vs time"))):
        for method in ordered(curves):
            for i, rec in enumerate(curves[method]):
                xs, ys = _curve(rec, x)
                ax.plot(xs, ys, color=color(method), label=label(method) if i == 0 else None, alpha=0.9, **emphasis(method))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if not curves:
            ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(frameon=False)
    fig.tight_layout()


def mean_loss_over_common_range(recs: list[dict[str, Any]], x: str, lo: float, hi: float) -> float | None:
    """Mean training loss over the x-range [lo, hi] (step-wise: each logged loss holds until the next log)."""
    values = []
    for rec in recs:
        xs, ys = _curve(rec, x)
        inside = [y for a, y in zip(xs, ys) if lo <= a <= hi]
        if inside:
            values.append(statistics.fmean(inside))
    return statistics.fmean(values) if values else None


def fig5_claims(curves: dict[str, list[dict[str, Any]]]) -> list[Claim]:
    text = "MiSS's training loss falls faster than LoRA's, per token and per second of training (Fig. 5, §5.1)"
    test = ("mean training loss over the second half of the token (time) range both runs cover, LoRA vs MiSS, "
            "Llama2-7B on MetaMathQA; decided on small/paper-profile runs only")
    if set(curves) != {"lora", "miss"}:
        return [Claim(text, test, NOT_TESTED, "no LoRA and MiSS math runs of nlg_llama2_7b")]
    parts, outcomes = [], []
    for x, unit in (("tokens_seen", "tokens"), ("wall_time_s", "s")):
        ends = [max(_curve(r, x)[0], default=0) for m in curves for r in curves[m]]
        hi = min(ends)
        lo = hi / 2
        lora, miss = (mean_loss_over_common_range(curves[m], x, lo, hi) for m in ("lora", "miss"))
        if lora is None or miss is None:
            outcomes.append(None)
            continue
        outcomes.append(miss < lora)
        parts.append(f"{x} {fmt(lo)}–{fmt(hi)} {unit}: MiSS {miss:.4f} vs LoRA {lora:.4f}")
    profiles = {r.get("profile") for m in curves for r in curves[m]}
    decided = None if None in outcomes or profiles <= {"cpu"} else all(outcomes)
    evidence = "; ".join(parts) + f" (profile {', '.join(sorted(p or '?' for p in profiles))}"
    evidence += "; the cpu profile's tiny random model does not test the claim)" if profiles <= {"cpu"} else ")"
    return [Claim(text, test, verdict(decided), evidence)]


# ---------------------------------------------------------------------------------------------- score claims
def table5_claims(results: Results) -> list[Claim]:
    text = "MiSS has the best average score of LoRA, DoRA, PiSSA and MiSS on each model of Table 5 (§5.1)"
    test = ("Avg (the paper-rule columns, mean over seeds) of every method of a model, per profile; decided on "
            "small/paper-profile eval records where all the model's methods are scored")
    outcomes, parts, cpu_only = [], [], False
    for name, preset in PRESETS.items():
        if preset.table != "Table 5":
            continue
        by = records_by(results, preset.experiment)
        for profile in DECIDING_PROFILES + ("cpu",):
            avgs = {m: method_scores(results, preset.experiment, by, m, profile,
                                     TABLE5.get((preset.paper_name, m), {}))["Avg"][1] for m in preset.methods}
            if None in avgs.values():
                continue
            if profile == "cpu":
                cpu_only = True
                continue
            best_other = max((m for m in avgs if m != "miss"), key=avgs.get)
            outcomes.append(avgs["miss"] >= avgs[best_other])
            parts.append(f"{preset.paper_name} ({profile}): MiSS {avgs['miss']:.2f} vs {label(best_other)} "
                         f"{avgs[best_other]:.2f}")
    if not outcomes:
        why = ("only cpu-profile scores (a pipeline check on a tiny random model) exist" if cpu_only
               else "no model has every method scored")
        return [Claim(text, test, NOT_TESTED, why)]
    return [Claim(text, test, verdict(all(outcomes)), "; ".join(parts))]


def table7_claims(results: Results) -> list[Claim]:
    text = "GSM8K and MATH accuracy rise with MiSS's rank from r=16 to r=128 (Table 7, §5.2)"
    test = "mean score over seeds at each rank never falls from one rank to the next; small/paper-profile records"
    by_rank: dict[int, list[dict[str, Any]]] = {}
    for rec in results.records(RANK_EXPERIMENT):
        by_rank.setdefault(rec["config"]["sft"]["r"], []).append(rec)
    ranks = sorted(TABLE7)
    outcomes, parts = [], []
    for profile in DECIDING_PROFILES:
        for col in ("GSM8K", "Math"):
            means = [mean_score(results, RANK_EXPERIMENT, of_profile(by_rank.get(r, []), profile), col) for r in ranks]
            if None in means:
                continue
            outcomes.append(all(a <= b for a, b in zip(means, means[1:])))
            parts.append(f"{col} ({profile}): " + " → ".join(f"r{r} {m:.2f}" for r, m in zip(ranks, means)))
    if not outcomes:
        return [Claim(text, test, NOT_TESTED, "no small/paper-profile scores at every rank (cpu-profile scores are a "
                      "pipeline check)")]
    return [Claim(text, test, verdict(all(outcomes)), "; ".join(parts))]


@builder("nlg", "Tables 5, 7, 9 and Fig. 5: LLM fine-tuning")
def build(results: Results) -> Section:
    curves = fig5_records(results)
    recs = [r for e in NLG_EXPERIMENTS for r in results.records(e)]
    profiles = sorted({r.get("profile") or "?" for r in recs})
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
