"""Result records, the shared experiment loop, seeding and run_all: the machinery every experiment uses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from experiments import run_all
from experiments.common import records, registry
from experiments.common.config import from_dict, override, parse_overrides
from experiments.common.records import RunTracker, load_record, load_records, write_json_atomic
from experiments.common.runner import Run, experiment_main
from experiments.common.seeding import seed_everything

REQUIRED_FIELDS = {
    "experiment", "run", "profile", "status", "config", "seed", "metrics", "curves", "trainable_params",
    "wall_time_s", "peak_memory_mb", "peak_memory_kind", "error", "environment", "schema_version",
}


def test_tracker_writes_complete_success_record(tmp_path):
    with RunTracker(tmp_path, "exp", "run-a", "cpu", {"lr": 1e-3}, seed=7) as rec:
        rec.metrics["loss"] = torch.tensor(0.5)
        rec.curves["loss"] = [1.0, float("nan")]
        rec.trainable_params = 256
    data = load_record(tmp_path / "exp" / "run-a.json")
    assert REQUIRED_FIELDS <= set(data)
    assert data["status"] == "success" and data["metrics"]["loss"] == 0.5 and data["curves"]["loss"][1] == "nan"
    env = data["environment"]
    assert env["packages"]["torch"] == torch.__version__
    assert env["hardware"]["cpu_count"] >= 1 and "git_commit" in env
    assert data["wall_time_s"] >= 0 and data["peak_memory_mb"] > 0


def test_tracker_records_failure_and_swallows_it(tmp_path):
    with RunTracker(tmp_path, "exp", "bad", "cpu", {}) as rec:
        raise RuntimeError("boom in row 3")
    data = load_record(tmp_path / "exp" / "bad.json")
    assert rec.status == data["status"] == "failed"
    assert "RuntimeError: boom in row 3" == data["error"] and "Traceback" in data["traceback"]


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_load_record_names_the_broken_file(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"x\.json"):
        load_records(tmp_path)


def _toy_experiment(tmp_path, calls, fail_on=()):
    def plan(ctx):
        return [Run(f"seed{s}", {"seed": s, "scale": ctx.overrides.get("scale", 1)}, seed=s) for s in (1, 2, 3)]

    def execute(run, rec, ctx):
        calls.append(run.name)
        if run.name in fail_on:
            raise ValueError(f"bad {run.name}")
        rec.metrics["value"] = run.seed * run.config["scale"]

    def main(*extra):
        return experiment_main("toy", "toy experiment", plan, execute,
                               argv=["--results-dir", str(tmp_path), *extra])
    return main


def test_runner_isolates_failures_skips_done_and_forces(tmp_path):
    calls: list[str] = []
    main = _toy_experiment(tmp_path, calls, fail_on={"seed2"})
    assert main() == 1                      # one failure -> non-zero exit, but all three ran
    assert calls == ["seed1", "seed2", "seed3"]
    statuses = {r["run"]: r["status"] for r in load_records(tmp_path, "toy")}
    assert statuses == {"seed1": "success", "seed2": "failed", "seed3": "success"}

    calls.clear()
    main()                                   # resume: only the failed run is retried
    assert calls == ["seed2"]
    calls.clear()
    main("--force", "--set", "scale=10")     # --force redoes everything, overrides reach the runs
    assert calls == ["seed1", "seed2", "seed3"]
    assert load_record(tmp_path / "toy" / "seed3.json")["metrics"]["value"] == 30


def test_a_record_of_another_profile_is_not_done_and_is_kept(tmp_path):
    calls: list[str] = []
    main = _toy_experiment(tmp_path, calls)
    assert main() == 0 and calls == ["seed1", "seed2", "seed3"]          # cpu, the default profile
    calls.clear()
    assert main("--profile", "small") == 0 and calls == ["seed1", "seed2", "seed3"]   # cpu records don't count
    assert {r["profile"] for r in load_records(tmp_path, "toy")} == {"small"}
    kept = load_record(tmp_path / "toy" / "other_profiles" / "cpu" / "seed1.json")
    assert kept["profile"] == "cpu" and kept["status"] == "success"
    calls.clear()
    assert main("--profile", "small") == 0 and calls == []


def test_config_helpers_reject_unknown_keys():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Cfg:
        steps: int = 10
        lr: float = 1e-3

    assert override(Cfg(), steps=5).steps == 5
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['stpes'\]"):
        from_dict(Cfg, {"stpes": 3}, where="no_free_lunch cpu")
    assert parse_overrides(["steps=3", "lr=1e-4", "methods=lora,miss", "flag=true"]) == {
        "steps": 3, "lr": 1e-4, "methods": ("lora", "miss"), "flag": True}


def _train_few_steps(seed: int) -> torch.Tensor:
    seed_everything(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 16), torch.randn(64, 1)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(torch.nn.functional.dropout(x, 0.1)), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_seed_everything_makes_cpu_training_bit_for_bit_repeatable():
    a, b, c = _train_few_steps(3), _train_few_steps(3), _train_few_steps(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_run_all_keeps_going_after_a_failure_and_summarises(tmp_path, monkeypatch, capsys):
    script = tmp_path / "exp_script.py"
    script.write_text(textwrap.dedent("""
        import sys
        from experiments.common.runner import Run, experiment_main
        name = sys.argv.pop(1)
        def plan(ctx):
            return [Run("only", {})]
        def execute(run, rec, ctx):
            if name == "broken":
                raise RuntimeError("deliberate")
            rec.metrics["ok"] = 1
        sys.exit(experiment_main(name, "test", plan, execute))
    """))
    fake = tuple(registry.Experiment(n, (str(script), n), "test") for n in ("broken", "fine"))
    monkeypatch.setattr(run_all, "EXPERIMENTS", fake)
    results = tmp_path / "results"
    assert run_all.main(["--results-dir", str(results), "--no-analysis"]) == 1
    out = capsys.readouterr().out
    assert "| broken | failed (exit 1) |" in out and "| fine | success |" in out
    assert load_record(results / "fine" / "only.json")["status"] == "success"
    # second pass: the finished experiment is skipped, the failed one retried
    run_all.main(["--results-dir", str(results), "--no-analysis"])
    out = capsys.readouterr().out
    assert "| fine | skipped (done) |" in out and "| broken | failed (exit 1) |" in out
    summary = json.loads((results / "run_all" / "summary-cpu.json").read_text())
    assert [r["experiment"] for r in summary["experiments"]] == ["broken", "fine"]


def test_every_registered_experiment_is_a_runnable_command():
    for exp in registry.EXPERIMENTS:
        out = subprocess.run([sys.executable, *exp.command, "--help"], cwd=records.REPO_ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{exp.name}: {out.stderr[-2000:]}"
        assert "--profile" in out.stdout
