"""Fig. 1 (§1, SPEC §3.3): gradient norm at initialisation of Full FT, LoRA, PiSSA and MiSS vs rank."""

from __future__ import annotations

from typing import Any

from experiments.common.model_presets import get_preset

from .core import MISSING, NOT_TESTED, Claim, Figure, Results, Section, Table, fmt, verdict
from .registry import builder
from .style import color, emphasis, label, marker, ordered

EXPERIMENT = "gradient_norm"


def collect(results: Results) -> dict[tuple[str, str], dict[str, dict[int | None, dict[str, Any]]]]:
    """(preset, task) -> method -> rank (None for Full FT) -> record."""
    out: dict[tuple[str, str], dict[str, dict[int | None, dict[str, Any]]]] = {}
    for rec in results.records(EXPERIMENT):
        cfg = rec.get("config", {})
        out.setdefault((cfg.get("preset"), cfg.get("task")), {}).setdefault(cfg.get("method"), {})[cfg.get("r")] = rec
    return out


def norm(rec: dict[str, Any] | None) -> float | None:
    return None if rec is None else rec.get("metrics", {}).get("grad_norm_mean")


def draw(fig, data) -> None:
    panels = sorted(data)
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
        cpu = any(rec.get("profile") == "cpu" for recs in by_method.values() for rec in recs.values())
        name = get_preset(key[0]).paper_name if key[0] else "?"
        ax.set_title(f"{name} (cpu: tiny random stand-in), {key[1]}" if cpu else f"{name}, {key[1]}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()


def table(data) -> Table:
    rows = []
    for key in sorted(data):
        by_method = data[key]
        ranks = sorted({r for m in by_method.values() for r in m if r is not None})
        for method in ordered(by_method):
            recs = by_method[method]
            for r in ([None] if method == "full" else ranks):
                rec = recs.get(r)
                if rec is None:
                    continue
                m = rec.get("metrics", {})
                rows.append([get_preset(key[0]).paper_name, key[1], label(method), MISSING if r is None else str(r),
                             fmt(norm(rec)), fmt(m.get("grad_norm_std"), 2), fmt(m.get("n_batches")),
                             fmt(m.get("batch_size")), fmt(rec.get("trainable_params")), rec.get("profile") or MISSING])
    return Table(
        key="fig1_gradient_norm", title="Fig. 1: gradient norm at initialisation",
        columns=["Model", "Task", "Method", "Rank", "grad norm (mean)", "std", "batches", "batch size", "trainable",
                 "profile"],
        rows=rows,
        caption=("L2 norm of the gradient of all trainable parameters, mean response-token loss of one batch, before "
                 "any update; mean (std) over the batches. LoRA alpha = 2r, PiSSA alpha = r. The paper gives no numbers "
                 "(Fig. 1 is a plot) and does not say how many batches. The cpu profile uses a tiny random model."))


def claims(data) -> list[Claim]:
    text = "MiSS starts with a larger gradient norm than LoRA at the same rank (Fig. 1), hence its faster convergence"
    test = "grad norm (mean over batches) of MiSS > LoRA at every shared (model, task, rank); small/paper profiles only"
    checks, profiles = [], set()
    for key, by_method in data.items():
        for r, rec in by_method.get("miss", {}).items():
            other = by_method.get("lora", {}).get(r)
            if other is None or norm(rec) is None or norm(other) is None:
                continue
            profiles |= {rec.get("profile"), other.get("profile")}
            checks.append((key, r, norm(rec), norm(other)))
    if not checks:
        return [Claim(text, test, NOT_TESTED, "no MiSS/LoRA pairs recorded")]
    evidence = "; ".join(f"{key[0]} {key[1]} r{r}: MiSS {a:.3g} vs LoRA {b:.3g}" for key, r, a, b in sorted(checks)[:8])
    cpu_only = profiles <= {"cpu"}
    decided = None if cpu_only else all(a > b for *_, a, b in checks)
    evidence += " (profile cpu: a tiny random model does not test the claim)" if cpu_only else ""
    return [Claim(text, test, verdict(decided), evidence)]


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
