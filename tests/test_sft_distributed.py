"""Training across processes and machines, on CPU: ZeRO-3 against ZeRO-2 and one process, and a job of
two "nodes" launched without ssh.

The runs are the cpu profile's math runs of ``nlg_llama2_7b.py`` (tiny Llama; LoRA, DoRA, PiSSA and MiSS
through PEFT, and full fine-tuning; 4 steps at global batch 8, checkpoints every 2 steps), taken from the
script's own plan. One DeepSpeed launch of two CPU processes (gloo) trains each of them under ZeRO-3,
stopped after its step-2 checkpoint and resumed, and again under ZeRO-2; the same runs also train in one
process without DeepSpeed, with one thread like each launched process.

What is determined (as in ``test_sft_trainer.test_deepspeed_two_processes_resume_and_record``): the
global-batch loss and gradient are the same in every layout up to float summation order, so the losses
agree to 1e-5. The weights agree only as a whole: Adam divides each update by the root of that element's
squared gradients, so an element whose gradient is ~0 can move by up to ~lr per step in either run on
summation noise alone. Each element is held to that bound (2 x lr x steps) and the whole difference to
1e-3 of the update the run made (trained minus initial weights).

PiSSA's factors come from an SVD whose singular vectors, where singular values are close, depend on the
float summation order: with two threads instead of one the initial factors differ by 6e-5 (measured),
which is why the one-process runs here use one thread.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from experiments.common.sft_trainer import SFTConfig, apply_method, run_sft
from experiments.common.tiny_model import ensure_tiny_model

REPO = Path(__file__).resolve().parents[1]
METHODS = ("lora", "dora", "pissa", "miss", "full")
SCRIPT_ARGS = ["--profile", "cpu", "--set", "max_steps=4", "--set", "save_steps=2", "--set", "max_samples=64",
               "--no-eval"]
pytestmark = pytest.mark.slow


def _planned_sft_configs(runs_dir: Path, data_dir: Path) -> dict[str, dict]:
    """``{method: SFTConfig fields}`` of the script's math runs, as it plans them (model resolved as it would)."""
    from experiments.nlg_llama2_7b import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([*SCRIPT_ARGS, "--runs", "math-*", "--runs-dir", str(runs_dir), "--data-dir", str(data_dir),
                     "--plan"]) == 0
    model = str(ensure_tiny_model(runs_dir / "_cache", data_dir))
    return {row["config"]["method"]: {**row["config"]["sft"], "model": model}
            for row in json.loads(buf.getvalue()) if "config" in row}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """Every method trained under ZeRO-3 (killed and resumed), ZeRO-2 (one launch of 2 processes for both)
    and in one process (here, meanwhile). Returns ``{layout: {method: output dir}}`` and the configs."""
    from experiments.common.sft_experiment import NLG_PROFILES, launch_command

    root = tmp_path_factory.mktemp("distributed")
    planned = _planned_sft_configs(root / "runs", data_dir)
    assert sorted(planned) == sorted(METHODS)
    layouts = {"zero3": {"deepspeed": "zero3"}, "zero2": {}, "one": {"deepspeed": None}}
    dirs: dict[str, dict[str, Path]] = {}
    files: dict[str, list[str]] = {}
    for layout, change in layouts.items():
        for method, sft in planned.items():
            out = root / layout / method
            path = root / f"{layout}-{method}.json"
            path.write_text(json.dumps({**sft, **change, "output_dir": str(out)}))
            dirs.setdefault(layout, {})[method] = out
            files.setdefault(layout, []).append(str(path))

    argv, env = launch_command(NLG_PROFILES["cpu"], Path("unused"), None, "", cuda=False)
    argv = [*argv[: argv.index("--module")], str(REPO / "tests" / "sft_runs_worker.py"),
            "--killed", *files["zero3"], "--configs", *files["zero2"]]
    log = root / "launch.log"
    with open(log, "w") as f:
        job = subprocess.Popen(argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for path in files["one"]:
                run_sft(SFTConfig.from_json(path))
        finally:
            torch.set_num_threads(threads)
            rc = job.wait(timeout=1200)
    assert rc == 0, log.read_text()[-4000:]
    return {"dirs": dirs, "configs": planned, "root": root}


def _result(out: Path) -> dict:
    return json.loads((out / "train_result.json").read_text())


def _initial_state(sft: dict) -> dict[str, torch.Tensor]:
    """The weights a run starts from: the base model's for full fine-tuning, else the freshly built adapter
    (run_sft seeds before building it, so the same seed builds the same adapter)."""
    from peft.utils import get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from experiments.common.seeding import seed_everything

    cfg = SFTConfig(**sft)
    seed_everything(cfg.seed, deterministic=True)
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
    if cfg.method == "full":
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(apply_method(model, cfg)).items()}


def assert_same_training(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], initial: dict[str, torch.Tensor],
                         lr: float, steps: int, what: str) -> tuple[float, float]:
    """Per element within 2 x lr x steps, as a whole within 1e-3 of the update; returns both measures."""
    assert a.keys() == b.keys(), f"{what}: tensors differ: {sorted(set(a) ^ set(b))[:5]}"
    keys = sorted(a)
    diff = torch.cat([(a[k].float() - b[k].float()).flatten() for k in keys])
    update = torch.cat([(b[k].float() - initial[k].float()).flatten() for k in keys])
    worst, ratio = diff.abs().max().item(), (diff.norm() / update.norm()).item()
    assert update.norm() > 0, f"{what}: nothing trained"
    assert worst <= 2 * lr * steps, f"{what}: an element differs by {worst:.2e} > 2 lr steps = {2 * lr * steps:.1e}"
    assert ratio <= 1e-3, f"{what}: |difference| / |update| = {ratio:.2e}"
    return worst, ratio


def _miss_initial(saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MiSS's initial tensors: its block (the LoRA export's B = D^T) is zero, the export's A is fixed."""
    return {k: (v if "lora_A" in k else torch.zeros_like(v)) for k, v in saved.items()}


def _weights(out: Path, method: str) -> dict[str, torch.Tensor]:
    return load_file(out / ("merged/model.safetensors" if method == "full" else "adapter/adapter_model.safetensors"))


@pytest.mark.parametrize("method", METHODS)
def test_zero3_trains_resumes_and_saves_what_zero2_and_one_process_do(runs, method):
    sft = runs["configs"][method]
    z3, z2, one = (runs["dirs"][layout][method] for layout in ("zero3", "zero2", "one"))
    r3, r2, r1 = _result(z3), _result(z2), _result(one)
    assert (r3["metrics"]["zero_stage"], r3["metrics"]["world_size"], r3["metrics"]["resumed_from"]) == (3, 2, "checkpoint-2")
    assert (r2["metrics"]["zero_stage"], r2["metrics"]["world_size"]) == (2, 2)
    assert r3["metrics"]["trainable_params"] == r1["metrics"]["trainable_params"]     # counted whole, not per shard
    assert r3["curves"]["step"] == [1, 2, 3, 4]
    for other in (r2, r1):
        torch.testing.assert_close(r3["curves"]["loss"], other["curves"]["loss"], atol=1e-5, rtol=0)

    lr, steps = sft["lr"], sft["max_steps"]
    initial = _initial_state(sft)
    measured = {}
    for name, other in (("zero2", z2), ("one process", one)):
        measured[name] = assert_same_training(_weights(z3, method), _weights(other, method), initial, lr, steps,
                                              f"{method} ZeRO-3 vs {name}")
    if method == "miss":     # the exact LoRA export, gathered and rebuilt on rank 0 under ZeRO-3
        a, b = (load_file(d / "lora" / "adapter_model.safetensors") for d in (z3, one))
        lora_a = [k for k in a if "lora_A" in k]
        assert all(torch.equal(a[k], b[k]) for k in lora_a)         # MiSS's fixed 0/1 selection
        measured["lora export"] = assert_same_training(a, b, _miss_initial(b), lr, steps, "miss LoRA export")
    if method in ("dora", "pissa"):   # the merged model, which is what gets evaluated
        base = load_file(Path(sft["model"]) / "model.safetensors")
        measured["merged"] = assert_same_training(_weights(z3, "full"), _weights(one, "full"), base, lr, steps,
                                                  f"{method} merged")
    print(f"{method}: max |element difference|, |difference| / |update|: "
          + ", ".join(f"{k} {w:.1e} {r:.1e}" for k, (w, r) in measured.items()))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FAKE_SRUN = """#!/usr/bin/env bash
# srun stand-in: start the command once per node of the job, all on this machine
while [[ $1 == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i "$@" & pids+=($!); done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
exit $rc
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
# scontrol stand-in: `scontrol show hostnames LIST` -> the job's hosts, node 0 first
for ((i = 0; i < SLURM_NNODES; i++)); do echo 127.0.0.1; done
"""


def test_two_nodes_without_ssh_train_as_one_job(runs, data_dir):
    """scripts/slurm_nlg.sbatch under a stand-in srun: two launches of the experiment script, one per "node",
    each starting DeepSpeed with --no_ssh, one process each, node ranks 0 and 1, meeting at node 0's port:
    one job of world size 2, with the adapter the 2-process single-node run (ZeRO-2) saves."""
    root = runs["root"] / "two-nodes"
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    runs_dir, results = runs["root"] / "runs", root / "results"      # runs_dir: the planned configs' own
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
           "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node[0-1]", "SLURM_SUBMIT_DIR": str(REPO),
           "MASTER_PORT": str(_free_port()), "MISS_DATA_DIR": str(data_dir)}
    argv = ["bash", "scripts/slurm_nlg.sbatch", "experiments/nlg_llama2_7b.py", *SCRIPT_ARGS, "--set", "nproc=1",
            "--runs", "math-miss-s42", "--runs-dir", str(runs_dir), "--results-dir", str(results)]
    job = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]

    records = list(results.rglob("*.json"))
    assert [p.name for p in records] == ["math-miss-s42.json"], "only node 0 keeps records"
    rec = json.loads(records[0].read_text())
    m = rec["metrics"]
    assert rec["status"] == "success" and (m["world_size"], m["zero_stage"], m["gradient_accumulation"]) == (2, 2, 2)
    assert "--no_ssh" in rec["runtime"]["launch"] and rec["runtime"]["launch"][rec["runtime"]["launch"].index("--node_rank") + 1] == "0"
    out = runs_dir / "nlg_llama2_7b" / "math-miss-s42"
    follower_log = (runs_dir / "nlg_llama2_7b" / "_node1" / "math-miss-s42" / "train.log").read_text()
    assert "--node_rank 1" in follower_log
    # both nodes wrote into the one output directory: each rank's optimiser shard of the last checkpoint
    shards = sorted(p.name for p in (out / "checkpoints" / "checkpoint-4").rglob("*optim_states.pt"))
    assert len(shards) == 2 and any("rank_1" in s for s in shards), shards

    sft = runs["configs"]["miss"]
    single_node = runs["dirs"]["zero2"]["miss"]
    torch.testing.assert_close(rec["curves"]["loss"], _result(single_node)["curves"]["loss"], atol=1e-5, rtol=0)
    lr, steps = sft["lr"], sft["max_steps"]
    for sub in ("adapter", "lora"):
        a, b = (load_file(d / sub / "adapter_model.safetensors") for d in (out, single_node))
        worst, ratio = assert_same_training(a, b, _miss_initial(b), lr, steps, f"two nodes vs one node, {sub}")
        print(f"two nodes vs one node, {sub}: max |element difference| {worst:.1e}, |difference| / |update| {ratio:.1e}")
