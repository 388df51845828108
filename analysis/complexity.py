"""Tables 2 and 3, §4.3: the paper's space / FLOPs / trainable-parameter formulas beside measured counts."""

from __future__ import annotations

from typing import Any

from .core import MISSING, Claim, Col, Num, Results, Section, Table, fmt, profile_sort_key
from .paper_values import TABLE2, TABLE2_SOURCE, TABLE3, TABLE3_SOURCE
from .registry import builder
from .stats import exact_verdict
from .style import label, ordered

EXPERIMENT = "complexity"
HEADLINE = ("4096x4096", 8)        # the (shape, rank) the main tables show; every shape is in the check table
PAPER_ROWS = {row.method: row for row in TABLE2}


Data = dict[tuple[str, int | None], dict[str, dict[str, Any]]]     # (shape, rank) -> method -> metrics


def collect(results: Results) -> dict[str, Data]:
    """profile -> (shape, rank) -> method -> metrics. Full FT (no rank) is filed under every rank of its shape."""
    out: dict[str, Data] = {}
    for profile in results.profiles(EXPERIMENT):
        data: Data = {}
        full: dict[str, dict[str, Any]] = {}
        for rec in results.records(EXPERIMENT, profile):
            cfg = rec.get("config", {})
            if cfg.get("rank") is None:
                full[cfg.get("shape")] = rec.get("metrics", {})
            else:
                data.setdefault((cfg.get("shape"), cfg.get("rank")), {})[cfg.get("method")] = rec.get("metrics", {})
        for (shape, _), methods in data.items():
            if shape in full:
                methods.setdefault("full", full[shape])
        out[profile] = data
    return out


def shape_order(key: tuple[str, int | None]) -> tuple[int, int]:
    d, k = (int(v) for v in key[0].split("x"))
    return d * k, key[1] or 0


def headline(data) -> tuple[str, int] | None:
    if HEADLINE in data:
        return HEADLINE
    candidates = [key for key in data if "miss" in data[key]] or list(data)
    return max(candidates, key=lambda key: (key[1] or 0, key[0])) if candidates else None


def paper_at_shape(metrics: dict[str, Any] | None, key: str) -> Num:
    paper = (metrics or {}).get("paper")
    return Num(paper[key] if paper else None)


def agreement(metrics: dict[str, Any] | None) -> str:
    if not metrics or "paper" not in metrics:
        return MISSING
    flags = metrics.get("flags") or []
    return "agrees" if not flags else "DISAGREES: " + "; ".join(flags)


def table2(by_profile: dict[str, Data]) -> Table:
    profiles = sorted(by_profile, key=profile_sort_key) or [None]
    keys = {p: headline(by_profile[p]) for p in profiles if p is not None}
    methods = {m for p, key in keys.items() if key for m in by_profile[p][key]}
    order = [row.method for row in TABLE2] + [m for m in ordered(methods) if m not in PAPER_ROWS]
    rows = []
    for method in order:
        row = PAPER_ROWS.get(method)
        for profile in profiles:
            key = keys.get(profile)
            m = by_profile[profile][key].get(method) if key else None
            if m is None and profile != profiles[0]:
                continue      # a paper row with no measurement is shown once
            m = m or {}
            rows.append([
                row.label if row else label(method), profile or MISSING,
                row.space.printed if row else MISSING, paper_at_shape(m, "space"), Num(m.get("stored_adapter_elements")),
                row.flops.printed if row else MISSING, paper_at_shape(m, "flops"), Num(m.get("flops_per_token")),
                Num(m.get("flops_per_forward")),
                row.params.printed if row else MISSING, paper_at_shape(m, "params"), Num(m.get("trainable_params")),
                Num(m.get("activation_elements_per_token")),
                agreement(m or None),
            ])
    shown = sorted({k for k in keys.values() if k}, key=shape_order)
    where = ", ".join(f"d×k = {shape}, r = {rank}" for shape, rank in shown) or MISSING
    caption = (f"{TABLE2_SOURCE.table} ({TABLE2_SOURCE.section}) formulas evaluated at {where}, beside measurements "
               "on that layer, one row per profile. Space = stored adapter elements (trainable and frozen); FLOPs = "
               "multiply-accumulates + elementwise ops of the adapter's forward per token (FlopCounterMode, "
               "adapted minus frozen layer), with the per-forward part (dense updates built once per call) apart; "
               "activations = elements the adapter makes autograd save, per token.")
    return Table(key="table2_complexity", title="Table 2: space, FLOPs and trainable parameters, paper vs measured",
                 columns=["Method", "Profile", Col("Space (paper)", "space_paper_formula"),
                          Col("paper at shape", "space_paper"), Col("stored (measured)", "space_measured"),
                          Col("FLOPs (paper)", "flops_paper_formula"), Col("paper at shape", "flops_per_token_paper"),
                          Col("FLOPs/token (measured)", "flops_per_token_measured"),
                          Col("FLOPs/forward (measured)", "flops_per_forward_measured"),
                          Col("TPs (paper)", "params_paper_formula"), Col("paper at shape", "params_paper"),
                          Col("TPs (measured)", "params_measured"),
                          Col("activations/token (measured)", "activation_elements_per_token"),
                          Col("paper vs measured", "agreement")],
                 rows=rows, caption=caption)


def table2_check(by_profile: dict[str, Data]) -> Table:
    rows = []
    for profile in sorted(by_profile, key=profile_sort_key):
        data, seen = by_profile[profile], set()
        for (shape, rank) in sorted(data, key=shape_order):
            for method in [row.method for row in TABLE2]:
                m = data[(shape, rank)].get(method)
                if not m or "paper" not in m or (shape, method, m.get("rank")) in seen:
                    continue
                seen.add((shape, method, m.get("rank")))  # Full FT is filed under every rank: show it once
                p = m["paper"]
                rows.append([profile, shape, Num(rank if method != "full" else None), PAPER_ROWS[method].label,
                             Num(p["params"]), Num(m["trainable_params"]), Num(p["space"]),
                             Num(m["stored_adapter_elements"]), Num(p["flops"]), Num(m["flops_per_token"]),
                             Num(m["flops_per_token"] / p["flops"] if p["flops"] else None, 3),
                             "agrees" if not m.get("flags") else "DISAGREES"])
    return Table(key="table2_check", title="Table 2 check at every measured shape and rank (paper / measured)",
                 columns=["Profile", "d×k", "r", "Method", Col("TPs (paper)", "params_paper"),
                          Col("TPs (measured)", "params_measured"), Col("Space (paper)", "space_paper"),
                          Col("Space (measured)", "space_measured"), Col("FLOPs per token (paper)", "flops_per_token_paper"),
                          Col("FLOPs per token (measured)", "flops_per_token_measured"),
                          Col("measured ÷ paper FLOPs", "flops_ratio"), "Verdict"], rows=rows,
                 caption="Disagreement rule: parameters and space must match exactly; FLOPs per token within a "
                         "factor 2 of the paper's expression (O(·) slack).")


def table3(by_profile: dict[str, Data]) -> Table:
    lora, miss = TABLE3["lora"], TABLE3["miss"]
    rows, shown = [], []
    for profile in sorted(by_profile, key=profile_sort_key) or [None]:
        key = headline(by_profile[profile]) if profile else None
        methods = by_profile[profile].get(key, {}) if key else {}
        shape, rank = key if key else ("—", None)
        d, k = (int(v) for v in shape.split("x")) if key else (None, None)
        if key:
            shown.append(f"{shape}, r = {rank} ({profile})")

        def paper(formula) -> Num:
            return Num(formula(d, k, rank) if key else None)

        def measured(method: str, *path: str) -> Num:
            value: Any = methods.get(method)
            for p in path:
                value = value.get(p) if isinstance(value, dict) else None
            return Num(value)

        def shapes(method: str) -> str:
            tensors = (methods.get(method) or {}).get("adapter_tensors")
            if not tensors:
                return MISSING
            return ", ".join(f"{n.replace('adapter_', '')} {'×'.join(map(str, t['shape']))}" for n, t in tensors.items())

        where = profile or MISSING
        rows += [
            ["Structure", where, lora["structure"], Num(None), shapes("lora"), miss["structure"], Num(None), shapes("miss")],
            ["CStep 2 (output projection), per token", where, lora["cstep2"][0], paper(lora["cstep2"][1]),
             measured("lora", "stages_per_token", "output_projection"), miss["cstep2"][0], paper(miss["cstep2"][1]),
             measured("miss", "stages_per_token", "output_projection")],
            ["CStep 1 (input transform), per token", where, lora["cstep1"][0], paper(lora["cstep1"][1]),
             measured("lora", "stages_per_token", "input_transform"), miss["cstep1"][0], paper(miss["cstep1"][1]),
             measured("miss", "stages_per_token", "input_transform")],
            ["Parameter count", where, lora["params"].printed, paper(lora["params"]), measured("lora", "trainable_params"),
             miss["params"].printed, paper(miss["params"]), measured("miss", "trainable_params")],
            ["Total FLOPs per token", where, lora["total_flops"].printed, paper(lora["total_flops"]),
             measured("lora", "flops_per_token"), miss["total_flops"].printed, paper(miss["total_flops"]),
             measured("miss", "flops_per_token")],
            ["Activations saved per token", where, MISSING, Num(None), measured("lora", "activation_elements_per_token"),
             MISSING, Num(None), measured("miss", "activation_elements_per_token")],
        ]
    caption = (f"{TABLE3_SOURCE.table} ({TABLE3_SOURCE.section}) at d×k = {'; '.join(shown) or MISSING}. Measured "
               "stages: the ops of ΔW x before its last matmul (input transform) and that matmul (output projection), in "
               "multiply-accumulates / additions per token; the total also counts the scaling and the residual add.")
    return Table(key="table3_decomposition", title="Table 3: computational decomposition of MiSSe vs LoRA",
                 columns=["Metric", "Profile", Col("LoRA (paper)", "lora_paper_formula"), Col("paper at shape", "lora_paper"),
                          Col("LoRA (measured)", "lora_measured"), Col("MiSSe (paper)", "miss_paper_formula"),
                          Col("paper at shape", "miss_paper"), Col("MiSSe (measured)", "miss_measured")],
                 rows=rows, caption=caption)


# ---------------------------------------------------------------------------------------------- MiSS vs LoRA
COMPARED = {"flops_per_token": "FLOPs/token", "activation_elements_per_token": "activations/token",
            "train_flops_per_token": "training FLOPs/token"}


def lora_at_params(data: Data, shape: str, params: int, key: str) -> tuple[float | None, str]:
    """LoRA's ``key`` at ``params`` trainable parameters on ``shape``: the measured rank with that count, else
    linear interpolation in the count between the two measured ranks that bracket it (exact for these counts,
    which are affine in LoRA's rank)."""
    points = sorted((m["trainable_params"], m.get(key), m["rank"]) for (s, _), methods in data.items() if s == shape
                    for name, m in methods.items() if name == "lora" and m.get(key) is not None)
    for count, value, rank in points:
        if count == params:
            return value, f"measured at r={rank}"
    below = [p for p in points if p[0] < params]
    above = [p for p in points if p[0] > params]
    if not below or not above:
        return None, "no measured ranks bracket this count"
    (c0, v0, r0), (c1, v1, r1) = below[-1], above[0]
    return v0 + (params - c0) / (c1 - c0) * (v1 - v0), f"interpolated between r={r0} and r={r1}"


def miss_lora_pairs(data: Data, key: str, setting: str) -> list[tuple[str, float, float, str]]:
    """(where, MiSS, LoRA, how) at each MiSS point: LoRA at the same rank or at MiSS's parameter count."""
    out = []
    for (shape, rank), methods in sorted(data.items(), key=lambda kv: shape_order(kv[0])):
        miss = methods.get("miss")
        if miss is None or miss.get(key) is None:
            continue
        if setting == "rank":
            lora = methods.get("lora")
            value, how = (lora.get(key), f"r={rank}") if lora else (None, "")
        else:
            value, how = lora_at_params(data, shape, miss["trainable_params"], key)
        if value is not None:
            out.append((f"{shape} r={rank}", miss[key], value, how))
    return out


def equal_params_table(by_profile: dict[str, Data]) -> Table:
    rows = []
    for profile in sorted(by_profile, key=profile_sort_key):
        data = by_profile[profile]
        for (shape, rank), methods in sorted(data.items(), key=lambda kv: shape_order(kv[0])):
            miss = methods.get("miss")
            if miss is None:
                continue
            lora = methods.get("lora") or {}
            row = [profile, shape, Num(rank), Num(miss["trainable_params"]), Num(lora.get("trainable_params"))]
            how = MISSING
            for key in COMPARED:
                same_params, how_key = lora_at_params(data, shape, miss["trainable_params"], key)
                how = how_key if same_params is not None else how
                row += [Num(miss.get(key)), Num(lora.get(key)), Num(same_params)]
            rows.append(row + [how])
    columns = ["Profile", "d×k", Col("MiSS rank", "miss_rank"), Col("MiSS TPs", "miss_params"),
               Col("LoRA TPs, same rank", "lora_params_same_rank")]
    for key, text in COMPARED.items():
        columns += [Col(f"MiSS {text}", f"miss_{key}"), Col(f"LoRA {text}, same rank", f"lora_{key}_same_rank"),
                    Col(f"LoRA {text}, same TPs", f"lora_{key}_same_params")]
    columns.append(Col("LoRA at MiSS's TPs", "lora_at_same_params"))
    return Table(key="table3_miss_vs_lora", title="Tables 2-3: MiSS vs LoRA at the same rank and at the same trainable "
                 "parameters", columns=columns, rows=rows,
                 caption=("Measured counts per token. Same rank: Table 3's setting (MiSS has d·r parameters, LoRA "
                          "(d+k)·r). Same TPs: Fig. 2's axis; LoRA at the rank whose count equals MiSS's (measured "
                          "where such a rank exists), else interpolated linearly in the count between the two "
                          "measured LoRA ranks that bracket it, which is exact here since LoRA's counts are affine "
                          "in its rank."))


def _every(data: Data, method: str, ref: str, test) -> tuple[str, int, list[str]]:
    """(verdict, points, evidence) of ``test(metrics of method, metrics of ref)`` at every shared (shape, rank):
    these are deterministic counts, so the claim holds or fails exactly."""
    results, evidence = [], []
    for (shape, rank), methods in sorted(data.items(), key=lambda kv: shape_order(kv[0])):
        a, b = methods.get(method), methods.get(ref)
        if a is None or b is None:
            continue
        ok, text = test(a, b)
        results.append(ok)
        evidence.append(f"{shape} r={rank}: {text}")
    return exact_verdict(results), len(results), evidence


def exact_claim(text: str, test: str, outcome: tuple[str, int, list[str]], shown: int = 3) -> Claim:
    verdict, points, evidence = outcome
    more = f" (+{len(evidence) - shown} more)" if len(evidence) > shown else ""
    return Claim(text, test, verdict, "; ".join(evidence[:shown]) + more if evidence else "no results",
                 exact_points=points or None)


SETTINGS = (("rank", "at the same rank (Table 3's setting)"), ("params", "at the same trainable parameters (Fig. 2's axis)"))


def miss_below_lora(data: Data, key: str, unit: str, text: str, test: str) -> list[Claim]:
    """"MiSS's ``key`` is below LoRA's", once at the same rank and once at the same trainable parameters."""
    claims = []
    for setting, words in SETTINGS:
        pairs = miss_lora_pairs(data, key, setting)
        outcome = (exact_verdict(a < b for _, a, b, _ in pairs), len(pairs),
                   [f"{w}: {fmt(a)} vs {fmt(b)}{unit} ({how})" for w, a, b, how in pairs])
        claims.append(exact_claim(f"{text}, {words}.", f"{test} {words}, at every shape and MiSS rank.", outcome))
    return claims


def claims_for(data: Data, profile: str) -> list[Claim]:
    tag = f"[{profile}]" if profile else "[no records]"
    claims = miss_below_lora(data, "flops_per_token", "", f"{tag} MiSSe costs fewer FLOPs than LoRA: O(k + dr) vs "
                             "O((d + k) r) per token (Tables 2-3)", "Measured forward FLOPs per token of MiSS below "
                             "LoRA's")

    for method in ("lora_fa", "adalora", "vera"):
        outcome = _every(data, method, "lora", lambda a, b: (
            a["flops_per_token"] >= 0.95 * b["flops_per_token"]
            and a["trainable_params"] <= b["trainable_params"] + a["rank"],
            f"TPs {fmt(a['trainable_params'])} vs {fmt(b['trainable_params'])}, FLOPs {fmt(a['flops_per_token'])} vs "
            f"{fmt(b['flops_per_token'])}"))
        claims.append(exact_claim(f"{tag} {label(method)} cuts trainable parameters but not FLOPs, since it keeps "
                                  "LoRA's sequential B(Ax) (§4.3).",
                                  f"{label(method)}'s TPs are at most LoRA's (+r) while its forward FLOPs per token are "
                                  "at least 95% of LoRA's, at every shape and rank.", outcome))

    def loha_test(a, b):
        fa, fb = a["measured_at_tokens"]["forward"][-1], b["measured_at_tokens"]["forward"][-1]
        sa, sb = a["measured_at_tokens"]["saved"][-1], b["measured_at_tokens"]["saved"][-1]
        return fa > fb and sa > sb, f"forward ops {fmt(fa)} vs {fmt(fb)}, saved elements {fmt(sa)} vs {fmt(sb)}"

    claims.append(exact_claim(f"{tag} LoHa's actual memory and compute exceed LoRA's despite comparable parameter "
                              "counts (§4.3).",
                              "At the larger measured token count, LoHa's forward ops and saved activations both exceed "
                              "LoRA's at every shape and rank.", _every(data, "loha", "lora", loha_test)))

    for column, word in (("params", "TPs"), ("space", "Space complexity"), ("flops/token", "FLOPs")):
        flagged, checked = [], 0
        for (shape, rank), methods in data.items():
            for method, m in methods.items():
                if "paper" not in m:
                    continue
                checked += 1
                for flag in m.get("flags") or []:
                    if flag.startswith(column):
                        flagged.append(f"{m['paper']['label']} at {shape} r={rank}: {flag}")
        flagged = sorted(set(flagged))
        evidence = (("; ".join(flagged[:6]) + (f" (+{len(flagged) - 6} more)" if len(flagged) > 6 else ""))
                    if flagged else f"{checked} rows checked, none disagrees")
        claims.append(Claim(f"{tag} Table 2's {word} column describes the methods as implemented.",
                            "Every measured row agrees with the paper's expression (parameters and space exactly, "
                            "FLOPs per token within 2×).",
                            exact_verdict([not flagged] if checked else []), evidence, exact_points=checked or None))

    def stage_test(a, b):
        k = a["k"]
        miss_in = a["stages_per_token"]["input_transform"]
        lora_in = b["stages_per_token"]["input_transform"]
        expected = b["k"] * b["rank"]
        return (miss_in <= k and abs(lora_in - expected) <= 0.1 * expected,
                f"MiSS block sum {fmt(miss_in)} (k={k}), LoRA Ax {fmt(lora_in)} (kr={expected})")

    claims.append(exact_claim(f"{tag} MiSSe's input transform is a block sum of O(k) per token where LoRA needs an "
                              "O(kr) matmul (Table 3, CStep 1).",
                              "Measured input-transform cost per token: MiSS at most k, LoRA within 10% of k·r, at "
                              "every shape and rank.", _every(data, "miss", "lora", stage_test)))

    claims += miss_below_lora(data, "activation_elements_per_token", " elements/token", f"{tag} MiSSe needs less "
                              "activation memory than LoRA (§4.2 'Resource Savings')", "Elements saved for backward per "
                              "token: MiSS below LoRA")
    return claims


def summary_text(results: Results) -> str:
    return results.summary(EXPERIMENT, "python experiments/complexity.py")


@builder("complexity", "Tables 2-3: complexity of adapters")
def build(results: Results) -> Section:
    by_profile = collect(results)
    claims = [c for p in sorted(by_profile, key=profile_sort_key) for c in claims_for(by_profile[p], p)]
    return Section(key="complexity", title="Tables 2-3: space, FLOPs and parameters", experiments=(EXPERIMENT,),
                   tables=[table2(by_profile), table3(by_profile), table2_check(by_profile),
                           equal_params_table(by_profile)],
                   claims=claims or claims_for({}, ""), summary=summary_text(results))
