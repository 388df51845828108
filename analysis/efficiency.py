"""Fig. 2 (middle, right), §3.2: initialisation and training-step time against trainable parameters,
peak training-step memory, per layer size -> tables, figures, claims."""

from __future__ import annotations

import math
from typing import Any

from .core import (MISSING, Claim, Col, Figure, Num, Results, Section, Spread, Table, fmt_bytes, fmt_seconds,
                   profile_of, profile_sort_key)
from .registry import builder
from .stats import Comparisons, log_ratios
from .style import color, emphasis, label, legend_entries, marker, ordered

EXPERIMENT = "efficiency"
PAPER_SIZE = "64x64"
TABLE_RANK = 8            # the rank shown in the per-size tables (every profile measures it)
METRICS = {"init_s": "initialisation time", "step_s": "training-step time"}
ByMethod = dict[str, list[dict[str, Any]]]


def collect(results: Results) -> dict[str, dict[str, ByMethod]]:
    """profile -> size name -> method -> records sorted by trainable parameters."""
    out: dict[str, dict[str, ByMethod]] = {}
    for rec in results.records(EXPERIMENT):
        cfg = rec.get("config", {})
        out.setdefault(profile_of(rec), {}).setdefault(cfg.get("size", {}).get("name", "?"), {}).setdefault(
            cfg.get("method"), []).append(rec)
    for sizes in out.values():
        for methods in sizes.values():
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


def size_area(by_size: dict[str, ByMethod], name: str) -> int:
    size = next(iter(by_size[name].values()))[0]["config"]["size"]
    return size["d_out"] * size["k_in"]


def sizes_sorted(by_size: dict[str, ByMethod]) -> list[str]:
    return sorted(by_size, key=lambda name: (size_area(by_size, name), name))


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


def protocol_text(profile: str, recs: list[dict[str, Any]]) -> str:
    """How one profile timed this size: repeats, clock, hardware, memory measure."""
    size = recs[0]["config"]["size"]
    clocks = sorted({r.get("metrics", {}).get("clock", "wall") for r in recs})
    clock_text = " / ".join({"wall": "wall-clock time", "process": "process CPU time (wall time kept in the records)"}
                            .get(c, c) for c in clocks)
    mem_method = next((r["metrics"]["step_memory"].get("method") for r in recs if r.get("metrics", {}).get("step_memory")),
                      None)
    budget = f" within a {size['init_budget_s']:g} s budget" if size.get("init_budget_s") else ""
    return (f"profile {profile}: init {size['init_repeats']} timed runs after {size['init_warmup']} warm-ups{budget}; "
            f"step {size['train_runs']} runs of {size['train_steps']} steps after {size['train_warmup_cycles']}×"
            f"{size['train_warmup_steps']} warm-up steps, batch {size['batch']}; {clock_text}; hardware "
            f"{hardware_text(recs)}; peak memory: {mem_method or MISSING}")


def bytes_cell(value: int | None) -> Num:
    return Num(value, text=fmt_bytes(value) if value is not None else None)


COLUMNS = ["Method", "Profile", "Rank", Col("Trainable", "trainable_params"), Col("Init time", "init_time_s"),
           Col("Train step time", "step_time_s"), Col("Peak step memory", "peak_step_memory_bytes"),
           Col("of which allocated in the step", "step_allocated_bytes"), Col("Paper", "paper")]


def size_table(name: str, by_profile: dict[str, ByMethod]) -> Table:
    """One layer size at ``TABLE_RANK``: a row per method and profile."""
    rows = []
    profiles = sorted(by_profile, key=profile_sort_key)
    for method in ordered({m for by_method in by_profile.values() for m in by_method}):
        for profile in profiles:
            recs = by_profile[profile].get(method, [])
            rec = at_rank(recs, None) or at_rank(recs, TABLE_RANK)
            if rec is None:
                continue
            m = rec.get("metrics", {})
            timing = {k: Spread(m.get(k, {}).get("median"), m.get(k, {}).get("q1"), m.get(k, {}).get("q3"),
                                show=fmt_seconds) for k in ("init_s", "step_s")}
            mem = m.get("step_memory", {})
            rows.append([label(method), profile, Num(rec["config"].get("rank")), Num(rec.get("trainable_params")),
                         timing["init_s"], timing["step_s"], bytes_cell(mem.get("peak_bytes")),
                         bytes_cell(mem.get("transient_bytes")), Num(None)])
    first = next(r for by_method in by_profile.values() for rs in by_method.values() for r in rs)
    size = first["config"]["size"]
    where = "the §3.1 MLP, adapter on fc1" if size["model"] == "mlp" else "one Linear"
    protocols = "; ".join(protocol_text(p, [r for rs in by_profile[p].values() for r in rs]) for p in profiles)
    caption = (f"Layer {size['d_out']}×{size['k_in']} ({where}), rank {TABLE_RANK} (Full FT: the whole layer), Adam lr "
               f"1e-3. Median [quartiles] over the timed runs. {protocols}. The paper gives no numbers (Fig. 2 is a "
               "plot).")
    return Table(key=f"efficiency_{name}", title=f"Fig. 2 (middle/right) at {name}: init time, step time, peak memory",
                 columns=COLUMNS, rows=rows, caption=caption)


# ---------------------------------------------------------------------------------------------- MiSS vs LoRA
METRIC_NAMES = {"init_s": "init", "step_s": "step", "memory": "memory"}


def at_params(recs: list[dict[str, Any]], params: int, metric: str) -> tuple[float | None, str]:
    """``metric`` of a method at ``params`` trainable parameters: the measured point with exactly that
    count, else linear interpolation in the count between the two measured points that bracket it
    (LoRA's count, FLOPs and memory grow linearly with its rank); (None, why) when none brackets it."""
    points = [(r.get("trainable_params"), median(r, metric), r["config"].get("rank")) for r in recs]
    points = [p for p in points if p[0] is not None and p[1] is not None]
    for count, value, rank in points:
        if count == params:
            return value, f"measured at r={rank}"
    below = max((p for p in points if p[0] < params), default=None, key=lambda p: p[0])
    above = min((p for p in points if p[0] > params), default=None, key=lambda p: p[0])
    if below is None or above is None:
        return None, "no measured ranks bracket this count"
    w = (params - below[0]) / (above[0] - below[0])
    return below[1] + w * (above[1] - below[1]), f"interpolated between r={below[2]} and r={above[2]}"


def miss_lora_points(by_size: dict[str, ByMethod], metric: str, setting: str) -> list[dict[str, Any]]:
    """MiSS against LoRA at each MiSS point: at the same rank (Table 3's setting) or at the same number of
    trainable parameters (Fig. 2's axis)."""
    out = []
    for size in sizes_sorted(by_size):
        lora = by_size[size].get("lora", [])
        for rec in by_size[size].get("miss", []):
            rank, params = rec["config"].get("rank"), rec.get("trainable_params")
            if setting == "rank":
                other = at_rank(lora, rank)
                value, how = median(other, metric), f"r={rank}"
            else:
                value, how = at_params(lora, params, metric) if params else (None, "")
            mine = median(rec, metric)
            if mine is not None and value is not None:
                out.append({"size": size, "rank": rank, "params": params, "miss": mine, "lora": value, "how": how})
    return out


def comparison_table(by_profile: dict[str, dict[str, ByMethod]]) -> Table:
    rows = []
    for profile in sorted(by_profile, key=profile_sort_key):
        by_size = by_profile[profile]
        for size in sizes_sorted(by_size):
            for rec in by_size[size].get("miss", []):
                rank, params = rec["config"].get("rank"), rec.get("trainable_params")
                lora = by_size[size].get("lora", [])
                same_rank = at_rank(lora, rank)
                row = [profile, size, Num(rank), Num(params), Num(same_rank.get("trainable_params") if same_rank else None)]
                for metric in ("init_s", "step_s", "memory"):
                    a = median(rec, metric)
                    b = median(same_rank, metric)
                    c, how = at_params(lora, params, metric) if params else (None, "")
                    row += [Num(a / b if a and b else None, 3), Num(a / c if a and c else None, 3)]
                row.append(at_params(lora, params, "init_s")[1] if params else MISSING)
                rows.append(row)
    columns = ["Profile", "Size", Col("MiSS rank", "miss_rank"), Col("MiSS trainable", "miss_trainable_params"),
               Col("LoRA trainable at that rank", "lora_trainable_params_same_rank")]
    for metric, text in (("init_s", "init time"), ("step_s", "step time"), ("memory", "peak step memory")):
        columns += [Col(f"MiSS ÷ LoRA {text}, same rank", f"{metric.removesuffix('_s')}_ratio_same_rank"),
                    Col(f"MiSS ÷ LoRA {text}, same parameters", f"{metric.removesuffix('_s')}_ratio_same_params")]
    columns.append(Col("LoRA at MiSS's parameter count", "lora_at_same_params"))
    return Table(
        key="efficiency_miss_vs_lora", title="Fig. 2: MiSS over LoRA at the same rank and at the same trainable parameters",
        columns=columns, rows=rows,
        caption=("Ratios of medians, MiSS ÷ LoRA (below 1: MiSS is cheaper). Same rank: Table 3's setting, where MiSS "
                 "has fewer parameters (d·r vs (d+k)·r), so part of its advantage follows by construction. Same "
                 "parameters: Fig. 2's axis; LoRA measured at the rank whose count equals MiSS's (the experiment adds "
                 "those ranks), else interpolated linearly in the count between the two measured LoRA ranks that "
                 "bracket it (last column)."))


def ratio_claim(groups: dict[str, list[tuple[str, float | None, float | None]]], limit: float, text: str,
                test: str, evidence_extra: str = "") -> Claim:
    """``a / b <= limit`` for every group of paired points ``(where, a, b)`` (e.g. init and step times), each
    group decided by the exact interval of its log ratios."""
    tally, shown = Comparisons(), []
    for name, points in groups.items():
        tally.add(name, log_ratios((a, b) for _, a, b in points), "less", math.log(limit), log_ratio=True)
        shown += [f"{w} {a / b:.2f}×" for w, a, b in points if a and b and a > 0 and b > 0]
    evidence = (f"per point: {', '.join(shown)}" if shown else "no matched measurements") + evidence_extra
    return Claim(text, test, tally.verdict, evidence, tally.intervals)


def shared_rank_points(by_size: dict[str, ByMethod], method: str, ref: str, metric: str):
    out = []
    for size in sizes_sorted(by_size):
        for rec in by_size[size].get(method, []):
            rank = rec["config"].get("rank")
            out.append((f"{size} r={rank} {METRIC_NAMES[metric]}", median(rec, metric),
                        median(at_rank(by_size[size].get(ref, []), rank), metric)))
    return out


def claims_for(by_size: dict[str, ByMethod], profile: str) -> list[Claim]:
    tag = f"[{profile}]" if profile else "[no records]"
    sizes = sizes_sorted(by_size) if by_size else []
    realistic = [s for s in sizes if s != PAPER_SIZE]
    points_note = " Points: every measured (layer size, rank); each point's value is the ratio of medians."
    claims = [ratio_claim({"MiSS ÷ PiSSA init": shared_rank_points(by_size, "miss", "pissa", "init_s")}, 1.0,
                          f"{tag} MiSS initialises faster than PiSSA, whose SVD 'significantly hampers its overall "
                          "speed' (§3.2).", "MiSS ÷ PiSSA median init time below 1 at the same rank." + points_note)]

    dominated, over_lora = [], []
    for size in realistic:
        for rec in by_size[size].get("pissa", []):
            rank = rec["config"].get("rank")
            others = {m: median(at_rank(recs, rank), "init_s") for m, recs in by_size[size].items() if m != "pissa"}
            others = {m: v for m, v in others.items() if v is not None}
            if others:
                slowest = max(others, key=others.get)
                dominated.append((f"{size} r={rank} (vs {label(slowest)})", median(rec, "init_s"), others[slowest]))
            over_lora.append((f"{size} r={rank}", median(rec, "init_s"), others.get("lora")))
    tally = Comparisons()
    tally.add("PiSSA ÷ slowest other init", log_ratios((a, b) for _, a, b in dominated), "greater", log_ratio=True)
    tally.add("PiSSA ÷ LoRA init", log_ratios((a, b) for _, a, b in over_lora), "greater", math.log(10), log_ratio=True)
    evidence = "; ".join(f"{w}: PiSSA {fmt_seconds(a)} vs {fmt_seconds(b)}" for w, a, b in dominated)
    claims.append(Claim(f"{tag} PiSSA's SVD initialisation dominates: at realistic sizes it is by far the slowest to "
                        "set up (§3.2).",
                        "At every size above 64×64, PiSSA's median init time over the slowest other method's at the "
                        "same rank is above 1, and over LoRA's above 10.",
                        tally.verdict, evidence or "no realistic-size results", tally.intervals))

    for method in ("vera", "adalora"):
        # "efficient" as the paper contrasts it with PiSSA's SVD: the same order of magnitude as LoRA
        groups = {f"{label(method)} ÷ LoRA {METRIC_NAMES[m]}": shared_rank_points(by_size, method, "lora", m)
                  for m in ("init_s", "step_s")}
        claims.append(ratio_claim(groups, 3.0, f"{tag} {label(method)} offers efficient initialisation and computation "
                                  "(§3.2).", f"{label(method)} ÷ LoRA median init and step times below 3 (the same "
                                  "order of magnitude) at the same rank." + points_note))

    for setting, words in (("rank", "at the same rank (Table 3's setting)"),
                           ("params", "at the same trainable parameters (Fig. 2's axis)")):
        groups = {f"MiSS ÷ LoRA {METRIC_NAMES[m]}": [(f"{p['size']} r={p['rank']} {METRIC_NAMES[m]}", p["miss"],
                                                       p["lora"]) for p in miss_lora_points(by_size, m, setting)]
                  for m in ("init_s", "step_s")}
        claims.append(ratio_claim(groups, 1.1, f"{tag} MiSS shows 'rapid, scalable performance across both "
                                  f"initialization and training stages' (§3.2), {words}.",
                                  f"MiSS ÷ LoRA median init and step times below 1.1 {words}." + points_note))
        groups = {"MiSS ÷ LoRA memory": [(f"{p['size']} r={p['rank']}", p["miss"], p["lora"])
                                         for p in miss_lora_points(by_size, "memory", setting)]}
        claims.append(ratio_claim(groups, 1.0, f"{tag} MiSS's efficient form lowers memory use relative to LoRA (§4.2 "
                                  f"'Resource Savings'), {words}.",
                                  f"MiSS ÷ LoRA peak training-step memory below 1 {words}." + points_note))
    return claims


def summary_text(results: Results) -> str:
    return results.summary(EXPERIMENT, "python experiments/efficiency.py")


@builder("efficiency", "Fig. 2 (middle, right): efficiency of adapters")
def build(results: Results) -> Section:
    by_profile = collect(results)
    shown = next(iter(sorted(by_profile, key=profile_sort_key)), None)     # figures: largest-scale profile
    figures = []
    for name in sizes_sorted(by_profile.get(shown, {})):
        def draw(fig, by_method=by_profile[shown][name], name=name) -> None:
            axes = fig.subplots(1, 3)
            draw_metric(axes[0], by_method, "init_s", f"init time ({name}, {shown})")
            draw_metric(axes[1], by_method, "step_s", f"train step time ({name}, {shown})")
            draw_metric(axes[2], by_method, "memory", f"peak step memory ({name}, {shown})")
            handles, labels = legend_entries(axes)
            if handles:
                fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
            fig.tight_layout()

        figures.append(Figure(f"efficiency_{name}", f"Init time, step time and peak memory vs trainable parameters, "
                              f"{name}", draw, size=(15.0, 4.2)))
    names = sorted({n for by_size in by_profile.values() for n in by_size},
                   key=lambda n: next(size_area(by_size, n) for by_size in by_profile.values() if n in by_size))
    tables = [size_table(n, {p: by_size[n] for p, by_size in by_profile.items() if n in by_size}) for n in names]
    if not tables:
        tables = [Table(key=f"efficiency_{PAPER_SIZE}", title=f"Fig. 2 (middle/right) at {PAPER_SIZE}",
                        columns=COLUMNS, rows=[], caption="No results yet.")]
    claims = [c for p in sorted(by_profile, key=profile_sort_key) for c in claims_for(by_profile[p], p)]
    return Section(key="efficiency", title="Fig. 2 (middle, right): efficiency of adapters", experiments=(EXPERIMENT,),
                   tables=tables + [comparison_table(by_profile)], figures=figures,
                   claims=claims or claims_for({}, ""), summary=summary_text(results))
