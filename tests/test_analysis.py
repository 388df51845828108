"""``python -m analysis`` on a small fixed results directory: tables render (Markdown, LaTeX and a CSV twin
with numeric columns), missing values print "—", the paper column is there, claims are decided from the
numbers by paired intervals, figures are written, and the same records give the same bytes anywhere."""

from __future__ import annotations

import filecmp
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import paper_values as pv
from analysis.__main__ import main as analysis_main
from analysis.core import (MISSING, NOT_TESTED, SUPPORTED, Claim, Col, Num, Results, Spread, Stat, Table, is_numeric,
                           strip_machine_paths)
from analysis.registry import BUILDERS
from experiments.common.records import RunRecord, write_record

REPO = Path(__file__).resolve().parents[1]
NFL_SEEDS = (43, 44, 45, 46, 47, 48)         # six: the fewest pairs an exact 95% interval can decide on


def _nfl(results, protocol, method, seed, losses, params, profile="cpu", run=None):
    rec = RunRecord("no_free_lunch", run or f"{protocol}-{method}-s{seed}", profile, status="success", seed=seed,
                    config={"protocol": protocol, "method": method, "hyper": {"r": 2}}, trainable_params=params,
                    curves={"valid_loss": losses, "train_loss": losses[1:]},
                    metrics={"min_valid_loss": min(losses), "min_valid_step": losses.index(min(losses)),
                             "initial_valid_loss": losses[0]},
                    wall_time_s=0.1, started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:00:01+00:00")
    write_record(results, rec)


def _eff(results, size, method, rank, params, init, step, mem):
    stats = lambda v: {"median": v, "q1": v * 0.9, "q3": v * 1.1, "min": v * 0.8, "max": v * 1.2, "n": 3}  # noqa: E731
    d = int(size.split("x")[0])
    rec = RunRecord("efficiency", f"{size}-{method}" + (f"-r{rank}" if rank else ""), "cpu", status="success", seed=0,
                    config={"size": {"name": size, "d_out": d, "k_in": d, "model": "mlp", "init_repeats": 3,
                                     "init_warmup": 1, "train_runs": 3, "train_steps": 2, "train_warmup_cycles": 1,
                                     "train_warmup_steps": 2, "batch": 32, "init_budget_s": None},
                            "method": method, "rank": rank},
                    trainable_params=params,
                    metrics={"init_s": stats(init), "step_s": stats(step),
                             "step_memory": {"peak_bytes": mem, "transient_bytes": mem // 2, "method": "test"},
                             "hardware": {"cpu": "test cpu", "device": "cpu", "torch_threads": 1, "cpu_count": 2}},
                    finished_at="2026-01-02T00:00:00+00:00")
    write_record(results, rec)


def _cx(results, method, d, k, r, params, flops, stored, act, flags):
    row = {row.method: row for row in pv.TABLE2}[method]
    metrics = {"d": d, "k": k, "rank": r, "trainable_params": params, "stored_adapter_elements": stored,
               "flops_per_token": flops, "flops_per_forward": 0.0, "activation_elements_per_token": act,
               "measured_at_tokens": {"tokens": [16, 32], "forward": [flops * 16, flops * 32],
                                      "saved": [act * 16, act * 32]},
               "stages_per_token": {"input_transform": (k - r) if method == "miss" else k * r,
                                    "output_projection": d * r, "after": d},
               "adapter_tensors": {"adapter_D": {"shape": [r, d], "trainable": True}},
               "paper": {"label": row.label, "space": row.space(d, k, r), "flops": row.flops(d, k, r),
                         "params": row.params(d, k, r), "space_printed": row.space.printed,
                         "flops_printed": row.flops.printed, "params_printed": row.params.printed},
               "flags": flags}
    write_record(results, RunRecord("complexity", f"{d}x{k}-{method}-r{r}", "cpu", status="success", seed=0,
                                    config={"shape": f"{d}x{k}", "method": method, "rank": r}, metrics=metrics,
                                    trainable_params=params, finished_at="2026-01-03T00:00:00+00:00"))


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    base = tmp_path_factory.mktemp("analysis")
    results, out = base / "results", base / "paper_tables"
    # No Free Lunch: Full FT, LoRA, PiSSA, MiSS, MoS over six seeds (corrected); the rest is missing.
    for i, seed in enumerate(NFL_SEEDS):
        for method, losses in CURVES.items():
            _nfl(results, "corrected", method, seed, [v + 0.004 * i for v in losses], 4160 if method == "full" else 256)
    # Efficiency at 64x64: LoRA, MiSS, PiSSA at ranks 1-64 (MiSS at half LoRA's parameters); Full FT.
    for rank in (1, 2, 4, 8, 16, 32, 64):
        for method, init, step in (("lora", 1e-4, 3e-4), ("miss", 7e-5, 2.8e-4), ("pissa", 6e-4, 3.4e-4)):
            _eff(results, "64x64", method, rank, 64 * rank * (1 if method == "miss" else 2), init * (1 + rank / 64),
                 step, 90_000 + 1000 * rank)
    _eff(results, "64x64", "full", None, 4160, 5e-5, 2.9e-4, 130_000)
    # Complexity at 4096x4096 r8: LoRA and MiSS agree, AdaLoRA disagrees on parameters.
    _cx(results, "lora", 4096, 4096, 8, 65536, 73728, 65536, 4104, [])
    _cx(results, "miss", 4096, 4096, 8, 32768, 40952, 32768, 8, [])
    _cx(results, "adalora", 4096, 4096, 8, 65544, 77824, 65544, 4104, ["params: measured 65544 vs paper 65600"])
    assert analysis_main(["--results-dir", str(results), "--out", str(out)]) == 0
    return out


CURVES = {"full": [0.7, 0.5, 0.4], "lora": [0.7, 0.65, 0.66], "pissa": [0.7, 0.6, 0.62], "miss": [0.7, 0.62, 0.63],
          "mos": [0.7, 0.68, 0.69]}


def test_every_table_renders_in_markdown_and_latex(tables):
    for key in ("nfl_min_val_loss", "efficiency_64x64", "table2_complexity", "table3_decomposition", "table2_check"):
        md, tex = (tables / f"{key}.md").read_text(), (tables / f"{key}.tex").read_text()
        assert md.startswith("# ") and "|---|" in md
        assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "\\begin{tabular}" in tex


def _rows(md: str) -> dict[str, list[str]]:
    lines = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split(" | ")] for line in lines)}


def test_nfl_table_has_mean_std_missing_dashes_and_the_paper_column(tables):
    md = (tables / "nfl_min_val_loss.md").read_text()
    rows = _rows(md)
    header = rows["Method"]
    assert "Paper rank (Tab. 12)" in header and "Paper min val. loss" in header
    lora = rows["LoRA"]
    assert lora[header.index("Paper rank (Tab. 12)")] == "2" and lora[header.index("Profile")] == "cpu"
    expected = Stat.of([0.65 + 0.004 * i for i in range(6)], decimals=4).render()
    assert lora[header.index("Min val. loss, corrected")] == expected == "0.6600 ± 0.0075"
    # VeRA has no results: every measured cell is a dash, the paper's rank is still there
    vera = rows["VeRA"]
    assert vera[header.index("Min val. loss, corrected")] == MISSING and vera[header.index("Paper rank (Tab. 12)")] == "64"
    assert rows["MiSS"][header.index("Params reported by released script")] == "1,024"
    assert rows["Full FT"][header.index("Gap to Full FT (paired), corrected")] == MISSING
    assert rows["LoRA"][header.index("Min val. loss, as released")] == MISSING


def test_claims_are_computed_from_the_results(tables):
    claims = (tables / "claims_no_free_lunch.md").read_text()
    # PiSSA (0.60) below the adapters' median, MoS (0.68) above it, at each of six seeds: supported, and the
    # verdict names its test, n and interval; as_released has no data
    assert "✅ **supported**: [cpu, corrected] SVD-based methods such as PiSSA" in claims
    assert "✅ **supported**: [cpu, corrected] Efficiency-focused techniques like MoS" in claims
    assert "exact Wilcoxon signed-rank, Hodges–Lehmann 95% interval (paired): PiSSA − adapters' median: n = 6" in claims
    assert "⬜ **not tested**: [cpu, as_released]" in claims
    eff = (tables / "claims_efficiency.md").read_text()
    assert "✅ **supported**: [cpu] MiSS initialises faster than PiSSA" in eff and "MiSS ÷ PiSSA init: n = 7" in eff
    assert "⬜ **not tested**: [cpu] PiSSA's SVD initialisation dominates" in eff     # no realistic size measured
    # MiSS vs LoRA both at the same rank (7 points) and at the same parameters (LoRA r/2: 6 points)
    assert "(Table 3's setting).\n  - test" in eff and "MiSS ÷ LoRA init: n = 7" in eff and "MiSS ÷ LoRA init: n = 6" in eff
    cx = (tables / "claims_complexity.md").read_text()
    assert "❌ **contradicted**: [cpu] Table 2's TPs column" in cx and "AdaLoRA at 4096x4096 r=8" in cx
    assert "✅ **supported**: [cpu] MiSSe costs fewer FLOPs than LoRA" in cx and "no sampling noise" in cx
    for name in ("no_free_lunch", "efficiency", "complexity"):
        text = (tables / f"claims_{name}.md").read_text()
        assert "supported 3/5" not in text and "not supported" not in text
        # every decided verdict shows what decided it
        for block in text.split("\n- ")[1:]:
            if "**supported**" in block or "**contradicted**" in block:
                assert "decided by: " in block and ("95% interval [" in block or "deterministic counts at n =" in block)


def test_figures_and_readme_index(tables):
    for png in ("fig2.png", "nfl_curves_protocols.png", "efficiency_64x64.png"):
        data = (tables / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    readme = (tables / "README.md").read_text()
    assert "![" in readme and "(fig2.png)" in readme
    assert "Minimum validation loss" in readme or "minimum validation loss" in readme
    index = [line for line in readme.splitlines() if line.startswith("| [")]
    assert len(index) >= 10 and all(line.count(" | ") == 3 for line in index)
    # sections fed by the fixture's records say which profile made them and when; sections of other
    # experiments (no records here) say "—" rather than inventing a profile
    synthetic = ("nfl_", "efficiency_", "fig2", "table2_", "table3_", "claims_no_free", "claims_eff", "claims_comp")
    fed = [line for line in index if line.startswith(tuple(f"| [{name}" for name in synthetic))]
    assert len(fed) == 13 and all(" | cpu | 2026-" in line for line in fed)
    assert all(line.endswith(" | — | — |") for line in index if line not in fed)
    assert "## Claims" in readme and "Hodges–Lehmann" in readme and "6 pairs is the least" in readme


def test_table2_shows_the_paper_formulas_beside_measurement(tables):
    rows = _rows((tables / "table2_complexity.md").read_text())
    header = rows["Method"]
    assert rows["LoRA"][header.index("Profile")] == "cpu"
    assert rows["LoRA"][header.index("TPs (paper)")] == "(d+k)·r"
    assert rows["LoRA"][header.index("TPs (measured)")] == "65,536"
    assert rows["AdaLoRA"][-1].startswith("DISAGREES")
    assert rows["LoHA"][header.index("TPs (measured)")] == MISSING                # paper row, no measurement
    assert rows["FT"][header.index("Space (paper)")] == "O(d×k)"


def test_empty_results_still_render_with_dashes(tmp_path):
    out = tmp_path / "out"
    assert analysis_main(["--results-dir", str(tmp_path / "none"), "--out", str(out)]) == 0
    md = (out / "nfl_min_val_loss.md").read_text()
    assert MISSING in md and "Paper rank (Tab. 12)" in md
    assert "not tested" in (out / "claims_complexity.md").read_text()
    assert (out / "fig2.png").exists() and (out / "README.md").exists()


def test_table_and_claim_primitives():
    with pytest.raises(ValueError, match="cells"):
        Table("t", "T", ["a", "b"], [["1"]])
    t = Table("t", "T & more", ["a_b", "c"], [["1 ± 2", None]])
    assert t.rows == [["1 ± 2", MISSING]]
    assert r"T \& more" in t.to_latex() and r"a\_b" in t.to_latex() and "$\\pm$" in t.to_latex()
    with pytest.raises(ValueError):
        Claim("x", "y", "maybe")
    with pytest.raises(ValueError, match="needs the intervals"):
        Claim("x", "y", SUPPORTED)                  # no verdict without what decided it
    assert Claim("x", "y", NOT_TESTED).verdict == NOT_TESTED and SUPPORTED == "supported"
    assert Stat.of([]).render() == MISSING and Stat.of([1.0]).render() == "1"


def test_cells_state_numbers_once_and_expand_to_numeric_csv_columns():
    t = Table("t", "T", ["Method", Col("Loss", "min_val_loss"), Col("Init time", "init_time_s"), "paper", "paper"],
              [["LoRA", Stat.of([0.65, 0.67], decimals=4), Spread(1e-3, 9e-4, 2e-3), Num(89.9e6, text="89.9M"),
                "n/a"],
               ["MiSS", None, Spread(None, None, None), Num(None), Num(1.5)]])
    assert t.rows[0][1:4] == ["0.6600 ± 0.0141", "0.001 [0.0009–0.002]", "89.9M"]
    header, rows = t.csv_header_and_rows()
    assert header == ["method", "min_val_loss_mean", "min_val_loss_std", "min_val_loss_n", "init_time_s_median",
                      "init_time_s_q1", "init_time_s_q3", "init_time_s_paper", "init_time_s_paper_paper",
                      "init_time_s_paper_paper_text"]
    assert rows[0][:4] == ["LoRA", 0.66, pytest.approx(0.0141421356), 2] and rows[0][7] == 89.9e6
    assert rows[0][8:] == [None, "n/a"] and rows[1][1:8] == [None] * 7 and rows[1][8] == 1.5
    with pytest.raises(ValueError, match="two columns"):
        Table("t", "T", [Col("a", "x"), Col("b", "x")], [])


def test_machine_paths_are_shortened_to_the_repository_folder():
    text = "adapter /home/u/miss/runs/nlg/math-lora-s42/adapter failed; log: /tmp/x/run.log; MiSS/LoRA 1/2"
    assert strip_machine_paths(text) == ("adapter runs/nlg/math-lora-s42/adapter failed; log: …/run.log; "
                                         "MiSS/LoRA 1/2")
    table = Table("t", "T", ["data"], [["/srv/clone/data/glue/SST-2/train.tsv.gz (random 48)"]], caption=text)
    assert table.rows == [["data/glue/SST-2/train.tsv.gz (random 48)"]] and "/home" not in table.to_markdown()


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".md", ".tex", ".csv"))


def test_tables_are_a_pure_function_of_the_records(tables, tmp_path):
    """A second run on a copy of the records, from another directory, into another folder, in a fresh
    interpreter with another hash seed, writes the same bytes (tables and the per-experiment CSVs)."""
    results = tables.parent / "results"
    copy = tmp_path / "elsewhere" / "results"
    shutil.copytree(results, copy)
    out = tmp_path / "other" / "tables"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, "-m", "analysis", "--results-dir", str(copy), "--out", str(out),
                           "--sections", "no_free_lunch,efficiency,complexity"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    names = _outputs(out)
    assert "nfl_min_val_loss.csv" in names and "README.md" in names and len(names) > 15
    differ = [n for n in names if n != "README.md" and not filecmp.cmp(tables / n, out / n, shallow=False)]
    assert differ == []
    for csv in ("no_free_lunch.csv", "efficiency.csv", "complexity.csv"):
        assert filecmp.cmp(results / csv, copy / csv, shallow=False), csv
    readme = (out / "README.md").read_text()
    assert str(tmp_path) not in readme and str(REPO) not in readme


def test_every_csv_loads_with_numeric_columns(tables):
    results = Results(tables.parent / "results")
    for b in BUILDERS.values():
        for table in b.build(results).tables:
            frame = pd.read_csv(tables / f"{table.key}.csv")
            header, _ = table.csv_header_and_rows()
            assert list(frame.columns) == header and len(frame) == len(table.rows)
            assert not frame.astype(str).apply(lambda c: c.str.contains("±")).any().any(), table.key
            if not table.rows:
                continue
            for j, key in enumerate(table.csv_keys):
                if any(is_numeric(row[j]) for row in table.cells):
                    numeric = [c for c in header if c.startswith(key) and not c.endswith("_text")
                               and c[len(key):] in ("", "_mean", "_std", "_n", "_median", "_q1", "_q3", "_min", "_max")]
                    for c in numeric:
                        assert pd.api.types.is_numeric_dtype(frame[c]), (table.key, c, frame[c].tolist())
    nfl = pd.read_csv(tables / "nfl_min_val_loss.csv")
    lora = nfl[(nfl["method"] == "LoRA") & (nfl["profile"] == "cpu")].iloc[0]
    assert lora["min_val_loss_corrected_mean"] == pytest.approx(0.66) and lora["min_val_loss_corrected_n"] == 6
    assert lora["paper_rank"] == 2 and lora["trainable_params_corrected"] == 256
    # one flat CSV per experiment: a row per run, its config and scalar metrics, no curves
    runs = pd.read_csv(tables.parent / "results" / "no_free_lunch.csv")
    assert len(runs) == 6 * len(CURVES) and list(runs.columns[:5]) == ["profile", "run", "status", "seed", "config_hash"]
    assert pd.api.types.is_numeric_dtype(runs["metrics.min_valid_loss"]) and runs["seed"].dtype.kind == "i"
    assert "config.method" in runs.columns and not any(c.startswith("curves") for c in runs.columns)


def test_a_paper_profile_record_adds_a_row_beside_the_cpu_one(tables, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(tables.parent / "results", results)
    _nfl(results, "corrected", "lora", 43, [0.7, 0.55, 0.56], 256, profile="paper", run="corrected-lora-s43-paper")
    out = tmp_path / "out"
    assert analysis_main(["--results-dir", str(results), "--out", str(out), "--sections", "no_free_lunch"]) == 0
    lines = [line for line in (out / "nfl_min_val_loss.md").read_text().splitlines() if line.startswith("| LoRA |")]
    assert [line.split(" | ")[1] for line in lines] == ["paper", "cpu"]     # largest scale first, never pooled
    before = next(line for line in (tables / "nfl_min_val_loss.md").read_text().splitlines()
                  if line.startswith("| LoRA |"))
    assert lines[1] == before and "| 0.5500 |" in lines[0]
    claims = (out / "claims_no_free_lunch.md").read_text()
    assert "[paper, corrected]" in claims and "[cpu, corrected]" in claims


def test_builders_are_registered_in_order():
    assert list(BUILDERS)[:4] == ["no_free_lunch", "efficiency", "fig2", "complexity"]


def test_paper_values_are_consistent_with_the_paper():
    # Table 4 and Table 5 print averages of their own entries
    for row in pv.TABLE4.values():
        assert statistics.fmean(row[t][0] for t in pv.TABLE4_TASKS) == pytest.approx(row["Avg"], abs=0.01)
    mismatched = set()
    for key, row in pv.TABLE5.items():
        vals = [row[c] for c in ("GSM8K", "Math", "HumanEval", "Mbpp") if row[c] is not None]
        if abs(statistics.fmean(vals) - row["Avg"]) > 0.011:
            mismatched.add(key)
    assert mismatched == pv.TABLE5_AVG_MISMATCH  # the paper's own arithmetic slips, typed in as printed
    assert len(pv.TABLE5) == 19 and pv.TABLE5[("Qwen3-4B", "miss")]["Math"] == 34.82
    assert [pv.TABLE7[r]["GSM8K"] for r in (16, 32, 64, 128)] == [45.90, 46.18, 48.16, 53.49]
    assert len(pv.TABLE8) == 26 and pv.TABLE8[2].peft_type == "MiSS" and pv.TABLE8[2].test_accuracy == 0.5080
    assert pv.TABLE9["miss"]["GSM8K"] == 58.22 and pv.TABLE9["miss"]["Math"] is None
    assert pv.TABLE6["miss"]["image_avg"] == 88.02 and pv.TABLE6["vera"]["video"]["HMDB"] == 66.77
    assert pv.TABLE12_RANKS["miss"] == 4 and pv.TABLE12["adapt_epochs"] == 100
    # Table 2 formulas at the §3.1 layer: LoRA r2 and MiSS r4 both 256 parameters, VeRA r64 128
    rows = {row.method: row for row in pv.TABLE2}
    assert rows["lora"].params(64, 64, 2) == rows["miss"].params(64, 64, 4) == 256
    assert rows["vera"].params(64, 64, 64) == 128 and rows["adalora"].params(64, 64, 2) == 256 + 4
    assert pv.TABLE3["miss"]["total_flops"](4096, 4096, 8) == 4096 + 8 * 4096


def test_lora_at_miss_parameter_count_is_measured_or_interpolated():
    from analysis import complexity, efficiency

    def lora(rank):      # 4096 x 11008: LoRA (d + k) r parameters, FLOPs per token affine in r
        return {"trainable_params": 15104 * rank, "rank": rank, "flops_per_token": 15104 * rank + 4096.0}

    data = {("4096x11008", r): {"lora": lora(r)} for r in (2, 3, 8)}
    value, how = complexity.lora_at_params(data, "4096x11008", 32768, "flops_per_token")
    assert value == pytest.approx(32768 + 4096) and how == "interpolated between r=2 and r=3"    # exact: affine
    assert complexity.lora_at_params(data, "4096x11008", 15104 * 8, "flops_per_token") == (15104 * 8 + 4096.0,
                                                                                           "measured at r=8")
    assert complexity.lora_at_params(data, "4096x11008", 1000, "flops_per_token")[0] is None     # no bracket

    recs = [{"trainable_params": 128 * r, "config": {"rank": r}, "metrics": {"step_s": {"median": 1e-3 * r}}}
            for r in (1, 2, 4)]
    assert efficiency.at_params(recs, 256, "step_s") == (2e-3, "measured at r=2")
    assert efficiency.at_params(recs, 384, "step_s") == (pytest.approx(3e-3), "interpolated between r=2 and r=4")
