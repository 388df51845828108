"""Result records, the shared experiment loop, seeding and run_all: the machinery every experiment uses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest
import torch

from experiments import run_all
from experiments.common import records, registry
from experiments.common.config import ConfigError, from_dict, override, parse_overrides
from experiments.common.records import RunTracker, load_record, load_records, write_json_atomic
from experiments.common.runner import Run, experiment_main
from experiments.common.seeding import seed_everything

REQUIRED_FIELDS = {
    "experiment", "run", "profile", "status", "config", "config_hash", "seed", "metrics", "curves",
    "trainable_params", "wall_time_s", "peak_memory_mb", "peak_memory_kind", "runtime", "error", "environment",
    "schema_version",
}


def test_tracker_writes_complete_success_record(tmp_path):
    with RunTracker(tmp_path, "exp", "run-a", "cpu", {"lr": 1e-3}, seed=7) as rec:
        rec.metrics["loss"] = torch.tensor(0.5)
        rec.curves["loss"] = [1.0, float("nan")]
        rec.trainable_params = 256
    data = load_record(tmp_path / "exp" / "cpu" / "run-a.json")
    assert REQUIRED_FIELDS <= set(data)
    assert data["status"] == "success" and data["metrics"]["loss"] == 0.5 and data["curves"]["loss"][1] == "nan"
    env = data["environment"]
    assert env["packages"]["torch"] == torch.__version__
    assert env["hardware"]["cpu_count"] >= 1 and "git_commit" in env
    assert data["wall_time_s"] >= 0 and data["peak_memory_mb"] > 0


def test_tracker_records_failure_and_swallows_it(tmp_path):
    with RunTracker(tmp_path, "exp", "bad", "cpu", {}) as rec:
        raise RuntimeError("boom in row 3")
    data = load_record(tmp_path / "exp" / "cpu" / "bad.json")
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
    (tmp_path / "exp" / "cpu").mkdir(parents=True)
    (tmp_path / "exp" / "cpu" / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"x\.json"):
        load_records(tmp_path)


def _toy_experiment(tmp_path, calls, fail_on=(), output_dirs=False):
    def plan(ctx):
        scale = from_dict(ToyConfig, ctx.overrides, where="toy").scale
        return [Run(f"seed{s}", {"seed": s, "scale": scale, "output_dir": f"/somewhere/{s}"}, seed=s,
                    output_dir=tmp_path / "runs" / f"seed{s}" if output_dirs else None) for s in (1, 2, 3)]

    def execute(run, rec, ctx):
        calls.append(run.name)
        if run.name in fail_on:
            raise ValueError(f"bad {run.name}")
        if run.output_dir:
            (run.output_dir / "checkpoint").write_text(str(run.config["scale"]))
        rec.metrics["value"] = run.seed * run.config["scale"]

    def main(*extra):
        return experiment_main("toy", "toy experiment", plan, execute,
                               argv=["--results-dir", str(tmp_path / "results"), *extra])
    return main


@dataclass(frozen=True)
class ToyConfig:
    scale: int = 1


def test_runner_isolates_failures_skips_done_and_forces(tmp_path):
    calls: list[str] = []
    main = _toy_experiment(tmp_path, calls, fail_on={"seed2"})
    assert main() == 1                      # one failure -> non-zero exit, but all three ran
    assert calls == ["seed1", "seed2", "seed3"]
    statuses = {r["run"]: r["status"] for r in load_records(tmp_path / "results", "toy")}
    assert statuses == {"seed1": "success", "seed2": "failed", "seed3": "success"}

    calls.clear()
    main()                                   # resume: only the failed run is retried
    assert calls == ["seed2"]
    calls.clear()
    main("--force", "--set", "scale=10")     # --force redoes everything, overrides reach the runs
    assert calls == ["seed1", "seed2", "seed3"]
    assert load_record(tmp_path / "results" / "toy" / "cpu" / "seed3.json")["metrics"]["value"] == 30
    calls.clear()
    main("--runs", "seed1,seed3", "--force")  # --runs selects runs by glob
    assert calls == ["seed1", "seed3"]


def test_a_changed_config_is_neither_skipped_nor_resumed(tmp_path, capsys):
    calls: list[str] = []
    main = _toy_experiment(tmp_path, calls, output_dirs=True)
    assert main() == 0 and calls == ["seed1", "seed2", "seed3"]
    before = {r["run"]: r["config_hash"] for r in load_records(tmp_path / "results", "toy")}
    calls.clear()
    assert main("--set", "scale=5") == 2 and calls == []            # refused before any run
    err = capsys.readouterr().err
    assert "seed1" in err and "scale: 1 -> 5" in err and "--force" in err
    # an interrupted run (checkpoint, no record) written under another config is not resumed silently
    (tmp_path / "results" / "toy" / "cpu" / "seed2.json").unlink()
    assert main("--set", "scale=5", "--runs", "seed2") == 2 and calls == []
    assert "scale: 1 -> 5" in capsys.readouterr().err
    assert main("--set", "scale=5", "--force") == 0 and calls == ["seed1", "seed2", "seed3"]
    after = {r["run"]: r["config_hash"] for r in load_records(tmp_path / "results", "toy")}
    assert all(before[k] != after[k] for k in before)
    assert (tmp_path / "runs" / "seed2" / "checkpoint").read_text() == "5"
    calls.clear()
    assert main("--set", "scale=5") == 0 and calls == []              # same config again: done


def test_the_config_hash_ignores_paths_and_thread_counts():
    from experiments.common.identity import config_changes, config_hash

    a = {"lr": 1e-3, "sft": {"output_dir": "/a/runs/x", "data_dir": "/a/data", "nproc": 2, "r": 8}}
    b = {"lr": 1e-3, "sft": {"output_dir": "/b/runs/x", "data_dir": None, "nproc": 8, "r": 8}}
    assert config_hash(a) == config_hash(b)
    c = {**a, "sft": {**a["sft"], "r": 16}}
    assert config_hash(c) != config_hash(a)
    assert config_changes(a, c) == [("sft.r", 8, 16)]
    assert config_hash({"m": ("lora", "miss")}) == config_hash({"m": ["lora", "miss"]})   # as JSON stores it


@pytest.mark.parametrize("bad, message", [
    (["--set", "scael=2"], r"unknown key\(s\) \['scael'\].*valid keys: scale"),
    (["--set", "scale=abc"], r"scale expects int, got 'abc'"),
    (["--set", "scale"], r"is not KEY=VALUE"),
])
def test_bad_set_is_a_usage_error_not_a_traceback(tmp_path, capsys, bad, message):
    main = _toy_experiment(tmp_path, [])
    with pytest.raises(SystemExit) as exit_info:
        main(*bad)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err


def test_records_of_another_profile_live_beside_and_are_not_done(tmp_path):
    calls: list[str] = []
    main = _toy_experiment(tmp_path, calls)
    assert main() == 0 and calls == ["seed1", "seed2", "seed3"]          # cpu, the default profile
    calls.clear()
    assert main("--profile", "small") == 0 and calls == ["seed1", "seed2", "seed3"]   # cpu records don't count
    recs = load_records(tmp_path / "results", "toy")
    assert sorted(r["profile"] for r in recs) == ["cpu"] * 3 + ["small"] * 3           # nothing erased
    calls.clear()
    assert main("--profile", "small") == 0 and calls == []


def test_plan_shows_resolved_config_hash_and_state(tmp_path, capsys):
    main = _toy_experiment(tmp_path, [])
    assert main("--plan", "--set", "scale=3") == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["name"] for r in rows] == ["seed1", "seed2", "seed3"]
    assert rows[0]["config"]["scale"] == 3 and rows[0]["state"] == "todo" and len(rows[0]["config_hash"]) == 16


def test_config_helpers_reject_unknown_keys_and_bad_values():
    @dataclass(frozen=True)
    class Cfg:
        steps: int = 10
        lr: float = 1e-3
        methods: tuple[str, ...] | None = None
        name: str | None = None

    assert override(Cfg(), steps=5).steps == 5
    assert override(Cfg(), lr=1).lr == 1.0 and isinstance(override(Cfg(), lr=1).lr, float)
    assert override(Cfg(), methods="miss").methods == ("miss",) and override(Cfg(), methods=["a", "b"]).methods == ("a", "b")
    assert override(Cfg(), name=7).name == "7" and override(Cfg(), name=None).name is None
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stpes'\]"):
        from_dict(Cfg, {"stpes": 3}, where="no_free_lunch cpu")
    with pytest.raises(ConfigError, match=r"steps expects int, got 2.5"):
        override(Cfg(), steps=2.5)
    with pytest.raises(ConfigError, match=r"steps expects int, got True"):
        override(Cfg(), steps=True)
    assert parse_overrides(["steps=3", "lr=1e-4", "methods=lora,miss", "flag=true", "r=none"]) == {
        "steps": 3, "lr": 1e-4, "methods": ("lora", "miss"), "flag": True, "r": None}


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
    assert load_record(results / "fine" / "cpu" / "only.json")["status"] == "success"
    # second pass: the finished experiment is skipped, the failed one retried
    run_all.main(["--results-dir", str(results), "--no-analysis"])
    out = capsys.readouterr().out
    assert "| fine | success (done earlier) |" in out and "| broken | failed (exit 1) |" in out
    summary = json.loads((results / "run_all" / "summary-cpu.json").read_text())
    assert [r["experiment"] for r in summary["experiments"]] == ["broken", "fine"]


def test_every_registered_experiment_is_a_runnable_command():
    for exp in registry.EXPERIMENTS:
        out = subprocess.run([sys.executable, *exp.command, "--help"], cwd=records.REPO_ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{exp.name}: {out.stderr[-2000:]}"
        assert "--profile" in out.stdout


@pytest.mark.parametrize("profile", ["cpu", "paper"])
def test_planned_config_hashes_do_not_depend_on_where_things_live(tmp_path, capsys, profile):
    """A run's identity is its config, not the checkout's location, its results/runs folders or the data
    folder: the committed records stay 'done' in any clone, and a researcher's own folders change nothing."""
    import importlib

    def plan(exp, where: str) -> dict[str, str]:
        module = importlib.import_module(exp.command[0].removesuffix(".py").replace("/", "."))
        argv = ["--plan", "--profile", profile, "--results-dir", str(tmp_path / where / "results"),
                "--runs-dir", str(tmp_path / where / "runs"), "--data-dir", str(tmp_path / where / "data")]
        assert module.main(argv) == 0, exp.name
        rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        return {r["name"]: r["config_hash"] for r in rows if r.get("experiment", exp.name) == exp.name}

    for exp in registry.EXPERIMENTS:
        if profile not in exp.profiles:
            continue
        a, b = plan(exp, "a"), plan(exp, "b")
        assert a == b, exp.name


def test_a_record_is_judged_by_its_config_under_todays_identity_rule(tmp_path):
    """A record whose stored hash predates a key's exclusion from the identity (here a path) is still done;
    a record whose config differs in a key that matters is not."""
    from experiments.common.identity import config_hash
    from experiments.common.records import RunRecord, is_done, write_record

    write_record(tmp_path, RunRecord("toy", "a", "cpu", status="success", config_hash="made-under-an-older-rule",
                                     config={"lr": 1e-3, "configs_dir": "/elsewhere/experiments/configs"}))
    assert is_done(tmp_path, "toy", "cpu", "a", config_hash({"lr": 1e-3, "configs_dir": "/here/experiments/configs"}))
    assert not is_done(tmp_path, "toy", "cpu", "a", config_hash({"lr": 2e-3, "configs_dir": "/elsewhere/experiments/configs"}))
