"""Fig. 1 (§1, SPEC §3.3): gradient norm at initialisation of Full FT, LoRA, PiSSA and MiSS vs rank."""

from __future__ import annotations

import statistics
from typing import Any

from experiments.common.model_presets import PRESETS

from .core import NOT_TESTED, Claim, Col, Figure, Num, Results, Section, Table, profile_of, profile_sort_key
from .registry import builder
from .stats import Comparisons, decide, log_ratios, paired_interval
from .style import color, emphasis, label, marker, ordered

EXPERIMENT = "gradient_norm"


Key = tuple[str, str, str]    # (profile, model, task)


def collect(results: Results) -> dict[Key, dict[str, dict[int | None, list[dict[str, Any]]]]]:
    """(profile, model, task) -> method -> rank (None for Full FT) -> records (one per seed); profiles are
    never pooled."""
    out: dict[Key, dict[str, dict[int | None, list[dict[str, Any]]]]] = {}
    for rec in results.records(EXPERIMENT):
        cfg = rec.get("config", {})
        key = (profile_of(rec), model_name(cfg), cfg.get("task"))
        out.setdefault(key, {}).setdefault(cfg.get("method"), {}).setdefault(cfg.get("r"), []).append(rec)
    return out


def model_name(cfg: dict[str, Any]) -> str:
    """The measured model's name: an encoder's own label, an LLM preset by the paper's name for it."""
    if cfg.get("model_label"):
        return str(cfg["model_label"])
    preset = cfg.get("preset")
    return PRESETS[preset].paper_name if preset in PRESETS else str(preset)


def is_encoder(key: Key, data) -> bool:
    return any(r.get("config", {}).get("family") == "encoder"
               for by_rank in data[key].values() for recs in by_rank.values() for r in recs)


def panel_order(key: Key) -> tuple:
    return profile_sort_key(key[0]), str(key[1]), str(key[2])


def norm(recs: list[dict[str, Any]] | None) -> float | None:
    """Mean over the records (seeds) of each record's mean over its batches."""
    values = [v for r in recs or [] if isinstance(v := r.get("metrics", {}).get("grad_norm_mean"), (int, float))]
    return sum(values) / len(values) if values else None


def batch_norms(recs: list[dict[str, Any]]) -> list[float]:
    return [v for r in recs for v in r.get("metrics", {}).get("grad_norms", [])]


def panel_title(key: Key, encoder: bool) -> str:
    profile, model, task = key
    if profile == "cpu":
        return f"{model} (real pretrained), {task}" if encoder else f"{model} (cpu: tiny random stand-in), {task}"
    return f"{model}, {task} ({profile})"


def draw(fig, data) -> None:
    panels = sorted(data, key=panel_order)
    if not panels:
        ax = fig.subplots(1, 1)
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
        return
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, key in zip(axes, panels):
        by_method = data[key]
        ranks = sorted({r for m in by_method.values() for r in m if r is not None})
        for method in ordered(by_method):
            recs = by_method[method]
            if method == "full" and None in recs:
                ax.axhline(norm(recs[None]), color=color(method), linestyle="--", label=label(method))
                continue
            xs = [r for r in ranks if r in recs and norm(recs[r]) is not None]
            ax.plot(xs, [norm(recs[r]) for r in xs], color=color(method), marker=marker(method), label=label(method),
                    **emphasis(method))
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.set_xlabel("rank r")
        ax.set_ylabel("initial gradient norm")
        ax.set_title(panel_title(key, is_encoder(key, data)), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()


def table(data) -> Table:
    rows = []
    for key in sorted(data, key=panel_order):
        by_method = data[key]
        ranks = sorted({r for m in by_method.values() for r in m if r is not None})
        for method in ordered(by_method):
            recs_by_rank = by_method[method]
            for r in ([None] if method == "full" else ranks):
                recs = recs_by_rank.get(r)
                if not recs:
                    continue
                norms = batch_norms(recs)
                m = recs[0].get("metrics", {})
                rows.append([key[1], key[2], label(method), Num(r), Num(norm(recs)),
                             Num(statistics.stdev(norms) if len(norms) > 1 else None, 2), Num(len(recs)),
                             Num(m.get("n_batches")), Num(m.get("batch_size")), Num(recs[0].get("trainable_params")),
                             key[0]])
    return Table(
        key="fig1_gradient_norm", title="Fig. 1: gradient norm at initialisation",
        columns=["Model", "Task", "Method", "Rank", Col("grad norm (mean)", "grad_norm_mean"),
                 Col("std", "grad_norm_std"), Col("seeds", "n_seeds"), Col("batches per seed", "n_batches"),
                 "batch size", "trainable", "profile"],
        rows=rows,
        caption=("L2 norm of the gradient of all trainable parameters (adapters; the head's is recorded apart) for "
                 "one batch before any update; mean and std over seeds × batches (the LLMs: response-token loss; "
                 "MiniLM-L6: the classification loss on real GLUE training batches, adapters on every Linear of its "
                 "6 blocks). LoRA alpha = 2r, PiSSA alpha = r. The paper gives no numbers (Fig. 1 is a plot) and "
                 "does not say how many batches. At the cpu profile the Llama rows are a tiny random model (a "
                 "pipeline check); MiniLM-L6 is the real pretrained encoder."))


def encoder_claim(profile: str, keys: list[Key], data, text: str) -> Claim:
    """Per rank, one log ratio MiSS ÷ LoRA per (task, seed): the same seed draws the same batches for both, so
    each pair shares its data. Every rank's interval must lie above 1."""
    tally, parts = Comparisons(), []
    model = keys[0][1]
    for r in sorted({r for k in keys for r in data[k].get("miss", {}) if r is not None}):
        ratios = []
        for key in keys:
            lora = {rec.get("seed"): rec for rec in data[key].get("lora", {}).get(r, [])}
            for rec in data[key].get("miss", {}).get(r, []):
                other = lora.get(rec.get("seed"))
                if other is not None:
                    ratios += log_ratios([(norm([rec]), norm([other]))])
        if tally.add(f"{model} r{r}: MiSS ÷ LoRA grad norm", ratios, "greater", log_ratio=True):
            parts.append(f"r{r}: MiSS {norm([x for k in keys for x in data[k]['miss'][r]]):.3g} vs LoRA "
                         f"{norm([x for k in keys for x in data[k].get('lora', {}).get(r, [])]) or float('nan'):.3g}")
    tasks = ", ".join(sorted(str(k[2]) for k in keys))
    test = (f"Per rank, MiSS ÷ LoRA initial gradient norm above 1; one pair per (task, seed) on {tasks}, each the "
            "mean over the seed's batches")
    return Claim(f"[{profile}, {model}, real pretrained] {text}", test, tally.verdict,
                 "mean norms over tasks, seeds and batches: " + "; ".join(parts), tally.intervals)


def claims(data) -> list[Claim]:
    """Per profile: MiSS over LoRA. A pretrained encoder (MiniLM-L6 at cpu) by rank over (task, seed) pairs;
    LLMs over the shared (model, task, rank) points, whose cpu records come from a tiny random model and are
    reported, not decided."""
    text = "MiSS starts with a larger gradient norm than LoRA at the same rank (Fig. 1), hence its faster convergence"
    test = ("MiSS ÷ LoRA initial gradient norm (mean over batches) above 1; one pair per shared (model, task, rank); "
            "small/paper profiles (the cpu profile's tiny random model does not test the claim)")
    out = []
    for profile in sorted({k[0] for k in data}, key=profile_sort_key):
        keys = sorted((k for k in data if k[0] == profile), key=panel_order)
        for model in sorted({k[1] for k in keys if is_encoder(k, data)}):
            out.append(encoder_claim(profile, [k for k in keys if k[1] == model], data, text))
        checks = []
        for key in keys:
            if is_encoder(key, data):
                continue
            by_method = data[key]
            for r, recs in sorted(by_method.get("miss", {}).items(), key=lambda kv: kv[0] or 0):
                a, b = norm(recs), norm(by_method.get("lora", {}).get(r))
                if a is not None and b is not None:
                    checks.append((key, r, a, b))
        if not checks:
            continue
        iv = paired_interval(log_ratios((a, b) for *_, a, b in checks), log_ratio=True)
        evidence = "; ".join(f"{key[1]} {key[2]} r{r}: MiSS {a:.3g} vs LoRA {b:.3g}" for key, r, a, b in checks[:8])
        decided = decide(iv, "greater")
        if profile == "cpu":
            decided, evidence = NOT_TESTED, evidence + " (profile cpu: a tiny random model does not test the claim)"
        scope = f"{profile}, tiny random stand-in" if profile == "cpu" else profile
        out.append(Claim(f"[{scope}] {text}", test, decided, evidence, [("MiSS ÷ LoRA grad norm", iv)] if iv else []))
    return out or [Claim(text, test, NOT_TESTED, "no MiSS/LoRA pairs recorded")]


@builder("fig1", "Fig. 1: gradient norm at initialisation")
def build(results: Results) -> Section:
    data = collect(results)
    panels = max(1, len(data))
    return Section(
        key="fig1", title="Fig. 1: gradient norm at initialisation", experiments=(EXPERIMENT,),
        tables=[table(data)],
        figures=[Figure("fig1_gradient_norm", "Fig. 1: initial gradient norm vs rank (Full FT dashed)",
                        lambda fig: draw(fig, data), size=(4.2 * panels, 3.6))],
        claims=claims(data),
        summary=f"Fig. 1 (`experiments/gradient_norm.py`): "
                f"{sum(len(recs) for m in data.values() for r in m.values() for recs in r.values())} measurement(s).",
        readme_figures=("fig1_gradient_norm",),
    )
