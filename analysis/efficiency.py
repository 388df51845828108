"""Fig. 2 (middle, right), §3.2: initialisation and training-step time against trainable parameters,
peak training-step memory, per layer size -> tables, figures, claims."""

from __future__ import annotations

import math
from typing import Any

from .core import (MISSING, Claim, Figure, Results, Section, Table, fmt, fmt_bytes, fmt_seconds, verdict)
from .registry import builder
from .style import color, emphasis, label, legend_entries, marker, ordered

EXPERIMENT = "efficiency"
PAPER_SIZE = "64x64"
TABLE_RANK = 8            # the rank shown in the per-size tables (every profile measures it)
METRICS = {"init_s": "initialisation time", "step_s": "training-step time"}


def collect(results: Results) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """size name -> method -> records sorted by trainable parameters."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for rec in results.records(EXPERIMENT):
        cfg = rec.get("config", {})
        out.setdefault(cfg.get("size", {}).get("name", "?"), {}).setdefault(cfg.get("method"), []).append(rec)
    for methods in out.values():
        for recs in methods.values():
            recs.sort(key=lambda r: (r.get("trainable_params") or 0, r["config"].get("rank") or 0))
    return out


def median(rec: dict[str, Any] | None, metric: str) -> float | None:
    if rec is None:
        return None
    if metric == "memory":
        return rec.get("metrics", {}).get("step_memory", {}).get("peak_bytes")
    return rec.get("metrics", {}).get(metric, {}).get("median")


def at_rank(recs: list[dict[str, Any]], rank: int | None) -> dict[str, Any] | None:
    for r in recs:
        if r["config"].get("rank") == rank:
            return r
    return None


def sizes_sorted(data) -> list[str]:
    def area(name: str) -> int:
        recs = next(iter(data[name].values()))
        size = recs[0]["config"]["size"]
        return size["d_out"] * size["k_in"]

    return sorted(data, key=area)


def draw_metric(ax, by_method: dict[str, list[dict[str, Any]]], metric: str, title: str) -> None:
    """Median (IQR bars) of ``metric`` against trainable parameters, one line per method, log-log."""
    if not by_method:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        return
    for method in ordered(by_method):
        xs, ys, lo, hi = [], [], [], []
        for rec in by_method[method]:
            if metric == "memory":
                value = median(rec, "memory")
                q1 = q3 = value
            else:
                stats = rec.get("metrics", {}).get(metric, {})
                value, q1, q3 = stats.get("median"), stats.get("q1"), stats.get("q3")
            if value is None or rec.get("trainable_params") is None:
                continue
            xs.append(rec["trainable_params"])
            ys.append(value)
            lo.append(value - (q1 if q1 is not None else value))
            hi.append((q3 if q3 is not None else value) - value)
        if not xs:
            continue
        ax.errorbar(xs, ys, yerr=[lo, hi], color=color(method), marker=marker(method), markersize=4,
                    label=label(method), capsize=2, **emphasis(method))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel({"init_s": "init time (s)", "step_s": "train step time (s)", "memory": "peak step memory (bytes)"}
                  [metric])
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")


def hardware_text(recs: list[dict[str, Any]]) -> str:
    if not recs:
        return MISSING
    hw = recs[0].get("metrics", {}).get("hardware", {})
    parts = [hw.get("gpu") or hw.get("cpu") or "?", f"device {hw.get('device', '?')}"]
    threads = sorted({r.get("metrics", {}).get("hardware", {}).get("torch_threads") for r in recs} - {None})
    if threads and hw.get("device", "cpu") == "cpu":
        parts.append(f"torch threads {'/'.join(map(str, threads))} of {hw.get('cpu_count', '?')} cores")
    return ", ".join(parts)


def size_table(name: str, by_method: dict[str, list[dict[str, Any]]]) -> Table:
    recs = [r for rs in by_method.values() for r in rs]
    size = recs[0]["config"]["size"]
    rows = []
    for method in ordered(by_method):
        rec = at_rank(by_method[method], None) or at_rank(by_method[method], TABLE_RANK)
        if rec is None:
            continue
        m = rec.get("metrics", {})

        def timing(metric: str) -> str:
            stats = m.get(metric, {})
            if stats.get("median") is None:
                return MISSING
            return f"{fmt_seconds(stats['median'])} [{fmt_seconds(stats.get('q1'))}–{fmt_seconds(stats.get('q3'))}]"

        mem = m.get("step_memory", {})
        rows.append([label(method), MISSING if rec["config"].get("rank") is None else str(rec["config"]["rank"]),
                     fmt(rec.get("trainable_params")), timing("init_s"), timing("step_s"),
                     fmt_bytes(mem.get("peak_bytes")), fmt_bytes(mem.get("transient_bytes")), MISSING])
    clocks = sorted({r.get("metrics", {}).get("clock", "wall") for r in recs})
    clock_text = " / ".join({"wall": "wall-clock time", "process": "process CPU time (wall time kept in the records)"}
                            .get(c, c) for c in clocks)
    mem_method = next((r["metrics"]["step_memory"].get("method") for r in recs if r.get("metrics", {}).get("step_memory")),
                      None)
    where = "the §3.1 MLP, adapter on fc1" if size["model"] == "mlp" else "one Linear"
    budget = f" within a {size['init_budget_s']:g} s budget" if size.get("init_budget_s") else ""
    caption = (f"Layer {size['d_out']}×{size['k_in']} ({where}), "
               f"rank {TABLE_RANK} (Full FT: the whole layer). Init: {size['init_repeats']} timed runs after "
               f"{size['init_warmup']} warm-ups{budget}; "
               f"step: {size['train_runs']} runs of {size['train_steps']} steps after {size['train_warmup_cycles']}×"
               f"{size['train_warmup_steps']} warm-up steps, Adam lr 1e-3, batch {size['batch']}. Median [quartiles] of "
               f"{clock_text}. "
               f"Hardware: {hardware_text(recs)}. Peak memory: {mem_method or MISSING}. The paper gives no numbers "
               f"(Fig. 2 is a plot).")
    return Table(key=f"efficiency_{name}", title=f"Fig. 2 (middle/right) at {name}: init time, step time, peak memory",
                 columns=["Method", "Rank", "Trainable", "Init time", "Train step time", "Peak step memory",
                          "of which allocated in the step", "Paper"],
                 rows=rows, caption=caption)


def ratio_claim(data, method: str, ref: str, metrics: tuple[str, ...], limit: float, sizes: list[str]):
    """(holds?, evidence) for "``method`` costs at most ``limit`` × ``ref``": per size and metric, the
    geometric mean over the shared ranks of median(method) / median(ref) must be <= ``limit``. Averaging
    over ranks keeps one noisy microsecond-scale point from deciding a claim."""

    names = {"init_s": "init", "step_s": "step", "memory": "memory"}
    verdicts, parts = [], []
    for size in sizes:
        by_method = data.get(size, {})
        for metric in metrics:
            logs = []
            for rec in by_method.get(method, []):
                a = median(rec, metric)
                b = median(at_rank(by_method.get(ref, []), rec["config"].get("rank")), metric)
                if a and b and a > 0 and b > 0:
                    logs.append(math.log(a / b))
            if logs:
                ratio = math.exp(sum(logs) / len(logs))
                verdicts.append(ratio <= limit)
                parts.append(f"{size} {names[metric]} {ratio:.2f}× ({len(logs)} ranks)")
    if not verdicts:
        return None, f"no matched {label(method)}/{label(ref)} measurements"
    return all(verdicts), f"{label(method)} / {label(ref)}, geometric mean over ranks: " + ", ".join(parts)


def claims_for(data) -> list[Claim]:
    sizes = sizes_sorted(data) if data else []
    realistic = [s for s in sizes if s != PAPER_SIZE]
    claims = []

    ok, ev = ratio_claim(data, "miss", "pissa", ("init_s",), 1.0, sizes)
    claims.append(Claim("MiSS initialises faster than PiSSA, whose SVD 'significantly hampers its overall speed' (§3.2).",
                        "MiSS's median init time is below PiSSA's at every size (geometric mean over ranks).",
                        verdict(ok), ev))

    checks, evidence = [], []
    for size in realistic:
        by_method = data[size]
        for rec in by_method.get("pissa", []):
            rank = rec["config"].get("rank")
            others = {m: median(at_rank(recs, rank), "init_s") for m, recs in by_method.items() if m != "pissa"}
            others = {m: v for m, v in others.items() if v is not None}
            lora = others.get("lora")
            pissa = median(rec, "init_s")
            if not others or pissa is None:
                continue
            slowest_other = max(others, key=others.get)
            checks.append(pissa > others[slowest_other] and (lora is None or pissa >= 10 * lora))
            evidence.append(f"{size} r={rank}: PiSSA {fmt_seconds(pissa)} vs next {label(slowest_other)} "
                            f"{fmt_seconds(others[slowest_other])}" + (f", LoRA {fmt_seconds(lora)}" if lora else ""))
    claims.append(Claim("PiSSA's SVD initialisation dominates: at realistic sizes it is by far the slowest to set up "
                        "(§3.2).",
                        "At every size above 64×64, PiSSA's median init time is the largest of all methods at each "
                        "rank and at least 10× LoRA's.",
                        verdict(all(checks) if checks else None), "; ".join(evidence) or "no realistic-size results"))

    for method in ("vera", "adalora"):
        # "efficient" as the paper contrasts it with PiSSA's SVD: the same order of magnitude as LoRA
        ok, ev = ratio_claim(data, method, "lora", ("init_s", "step_s"), 3.0, sizes)
        claims.append(Claim(f"{label(method)} offers efficient initialisation and computation (§3.2).",
                            f"{label(method)}'s median init and step times are within 3× of LoRA's (the same order "
                            "of magnitude) at the same rank (geometric mean over ranks), at every size.",
                            verdict(ok), ev))

    ok, ev = ratio_claim(data, "miss", "lora", ("init_s", "step_s"), 1.1, sizes)
    claims.append(Claim("MiSS shows 'rapid, scalable performance across both initialization and training stages' (§3.2).",
                        "MiSS's median init and step times are at most 1.1× LoRA's at the same rank (geometric mean "
                        "over ranks; 10% slack for timing noise), at every size.", verdict(ok), ev))

    ok, ev = ratio_claim(data, "miss", "lora", ("memory",), 1.0, sizes)
    claims.append(Claim("MiSS's efficient form lowers memory use relative to LoRA (§4.2 'Resource Savings').",
                        "MiSS's peak training-step memory is at most LoRA's at the same rank (geometric mean over "
                        "ranks), at every size.",
                        verdict(ok), ev))
    return claims


def summary_text(results: Results) -> str:
    return results.summary(EXPERIMENT, "python experiments/efficiency.py")


@builder("efficiency", "Fig. 2 (middle, right): efficiency of adapters")
def build(results: Results) -> Section:
    data = collect(results)
    figures = []
    for name in sizes_sorted(data) if data else []:
        def draw(fig, by_method=data[name], name=name) -> None:
            axes = fig.subplots(1, 3)
            draw_metric(axes[0], by_method, "init_s", f"init time ({name})")
            draw_metric(axes[1], by_method, "step_s", f"train step time ({name})")
            draw_metric(axes[2], by_method, "memory", f"peak step memory ({name})")
            handles, labels = legend_entries(axes)
            if handles:
                fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
            fig.tight_layout()

        figures.append(Figure(f"efficiency_{name}", f"Init time, step time and peak memory vs trainable parameters, {name}",
                              draw, size=(15.0, 4.2)))
    tables = [size_table(name, data[name]) for name in (sizes_sorted(data) if data else [])]
    if not tables:
        tables = [Table(key=f"efficiency_{PAPER_SIZE}", title=f"Fig. 2 (middle/right) at {PAPER_SIZE}",
                        columns=["Method", "Rank", "Trainable", "Init time", "Train step time", "Peak step memory",
                                 "of which allocated in the step", "Paper"], rows=[], caption="No results yet.")]
    return Section(key="efficiency", title="Fig. 2 (middle, right): efficiency of adapters", experiments=(EXPERIMENT,),
                   tables=tables, figures=figures, claims=claims_for(data), summary=summary_text(results))
