"""Fig. 1 (§1, SPEC §3.3): gradient norm at initialisation of Full FT, LoRA, PiSSA and MiSS vs rank."""

from __future__ import annotations

from typing import Any

from experiments.common.model_presets import PRESETS

from .core import NOT_TESTED, Claim, Col, Figure, Num, Results, Section, Table, profile_of, profile_sort_key
from .registry import builder
from .stats import decide, log_ratios, paired_interval
from .style import color, emphasis, label, marker, ordered

EXPERIMENT = "gradient_norm"


Key = tuple[str, str, str]    # (profile, preset, task)


def collect(results: Results) -> dict[Key, dict[str, dict[int | None, dict[str, Any]]]]:
    """(profile, preset, task) -> method -> rank (None for Full FT) -> record; profiles are never pooled."""
    out: dict[Key, dict[str, dict[int | None, dict[str, Any]]]] = {}
    for rec in results.records(EXPERIMENT):
        cfg = rec.get("config", {})
        key = (profile_of(rec), cfg.get("preset"), cfg.get("task"))
        out.setdefault(key, {}).setdefault(cfg.get("method"), {})[cfg.get("r")] = rec
    return out


def model_name(preset: str | None) -> str:
    """The paper's name of an LLM preset; any other model (e.g. an encoder) by its own name."""
    return PRESETS[preset].paper_name if preset in PRESETS else str(preset)


def panel_order(key: Key) -> tuple:
    return profile_sort_key(key[0]), str(key[1]), str(key[2])


def norm(rec: dict[str, Any] | None) -> float | None:
    return None if rec is None else rec.get("metrics", {}).get("grad_norm_mean")


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
        name = model_name(key[1])
        ax.set_title(f"{name} (cpu: tiny random stand-in), {key[2]}" if key[0] == "cpu" else f"{name}, {key[2]} "
                     f"({key[0]})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()


def table(data) -> Table:
    rows = []
    for key in sorted(data, key=panel_order):
        by_method = data[key]
        ranks = sorted({r for m in by_method.values() for r in m if r is not None})
        for method in ordered(by_method):
            recs = by_method[method]
            for r in ([None] if method == "full" else ranks):
                rec = recs.get(r)
                if rec is None:
                    continue
                m = rec.get("metrics", {})
                rows.append([model_name(key[1]), key[2], label(method), Num(r), Num(norm(rec)),
                             Num(m.get("grad_norm_std"), 2), Num(m.get("n_batches")), Num(m.get("batch_size")),
                             Num(rec.get("trainable_params")), key[0]])
    return Table(
        key="fig1_gradient_norm", title="Fig. 1: gradient norm at initialisation",
        columns=["Model", "Task", "Method", "Rank", Col("grad norm (mean)", "grad_norm_mean"),
                 Col("std", "grad_norm_std"), Col("batches", "n_batches"), "batch size", "trainable", "profile"],
        rows=rows,
        caption=("L2 norm of the gradient of all trainable parameters, mean response-token loss of one batch, before "
                 "any update; mean (std) over the batches. LoRA alpha = 2r, PiSSA alpha = r. The paper gives no numbers "
                 "(Fig. 1 is a plot) and does not say how many batches. The cpu profile uses a tiny random model."))


def claims(data) -> list[Claim]:
    """Per profile: MiSS over LoRA at each shared (model, task, rank), decided by the exact interval of the
    log ratios. cpu-profile records come from a tiny random model: reported, not decided."""
    text = "MiSS starts with a larger gradient norm than LoRA at the same rank (Fig. 1), hence its faster convergence"
    test = ("MiSS ÷ LoRA initial gradient norm (mean over batches) above 1; one pair per shared (model, task, rank); "
            "small/paper profiles (the cpu profile's tiny random model does not test the claim)")
    out = []
    for profile in sorted({k[0] for k in data}, key=profile_sort_key):
        checks = []
        for key, by_method in sorted(data.items(), key=lambda kv: panel_order(kv[0])):
            if key[0] != profile:
                continue
            for r, rec in sorted(by_method.get("miss", {}).items(), key=lambda kv: kv[0] or 0):
                other = by_method.get("lora", {}).get(r)
                if other is not None and norm(rec) is not None and norm(other) is not None:
                    checks.append((key, r, norm(rec), norm(other)))
        if not checks:
            continue
        iv = paired_interval(log_ratios((a, b) for *_, a, b in checks), log_ratio=True)
        evidence = "; ".join(f"{key[1]} {key[2]} r{r}: MiSS {a:.3g} vs LoRA {b:.3g}" for key, r, a, b in checks[:8])
        decided = decide(iv, "greater")
        if profile == "cpu":
            decided, evidence = NOT_TESTED, evidence + " (profile cpu: a tiny random model does not test the claim)"
        out.append(Claim(f"[{profile}] {text}", test, decided, evidence, [("MiSS ÷ LoRA grad norm", iv)] if iv else []))
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
        summary=f"Fig. 1 (`experiments/gradient_norm.py`): {sum(len(r) for m in data.values() for r in m.values())} "
                "measurement(s).",
        readme_figures=("fig1_gradient_norm",),
    )
