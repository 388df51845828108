"""The SFT trainer on the tiny model: batch arithmetic, resume, saved outputs, DeepSpeed with two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from experiments.common.sft_trainer import (
    SFTConfig,
    SimulatedFailure,
    fail_after_checkpoint,
    gradient_accumulation,
    load_trained_peft,
    run_sft,
)
from experiments.common.tiny_model import ensure_tiny_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANKS = {"lora": 8, "dora": 8, "pissa": 8, "miss": 16, "vera": 16, "full": None}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    return ensure_tiny_model(tmp_path_factory.getbasetemp() / "tiny_cache", data_dir)


def _cfg(tiny, data_dir, out, method, **kw) -> SFTConfig:
    base = dict(model=str(tiny), method=method, r=RANKS[method], output_dir=str(out), data_source="local:gsm8k-metamath",
                data_dir=str(data_dir), max_samples=48, lr=1e-3, max_steps=2, global_batch=4, per_device_batch=2,
                deepspeed=None, save_steps=2)
    return SFTConfig(**{**base, **kw})


def _logits(model, tokenizer):
    batch = tokenizer(["Below is an instruction. What is 7 times 6?"], return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_global_batch_is_checked():
    assert gradient_accumulation(64, 8, 4) == 2
    assert gradient_accumulation(64, 1, 4) == 16
    with pytest.raises(ValueError, match=r"global batch 64 is not devices \(3\) x per-device batch \(4\)"):
        gradient_accumulation(64, 3, 4)


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        SFTConfig(model="m", method="nope", r=4, output_dir=str(tmp_path), data_source="x")
    with pytest.raises(ValueError, match="needs a positive integer rank"):
        SFTConfig(model="m", method="lora", output_dir=str(tmp_path), data_source="x")
    # refused before any model is loaded or step is trained, not when the adapter is saved at the end
    with pytest.raises(ValueError, match="deepspeed: vera cannot train with ZeRO-3"):
        run_sft(SFTConfig(model="m", method="vera", r=4, output_dir=str(tmp_path), data_source="x", deepspeed="zero3"))


def test_resumed_run_ends_with_identical_adapter(tiny, data_dir, tmp_path):
    cfg = dict(max_steps=6, save_steps=2)
    whole = run_sft(_cfg(tiny, data_dir, tmp_path / "whole", "miss", **cfg))
    killed = _cfg(tiny, data_dir, tmp_path / "killed", "miss", **cfg)
    with pytest.raises(SimulatedFailure):
        run_sft(killed, callbacks=[fail_after_checkpoint(4)])
    resumed = run_sft(killed)

    a = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a)                       # it did train
    assert resumed["metrics"]["resumed_from"] == "checkpoint-4"
    assert resumed["curves"]["step"] == list(range(1, 7)) == whole["curves"]["step"]
    assert resumed["curves"]["loss"] == whole["curves"]["loss"]
    times, tokens = resumed["curves"]["wall_time_s"], resumed["curves"]["tokens_seen"]
    assert times == sorted(times) and tokens == sorted(tokens) and tokens[-1] == whole["curves"]["tokens_seen"][-1]


@pytest.mark.parametrize("method", ["dora", "pissa", "miss", "full", "vera"])
def test_saved_outputs_reproduce_the_trained_model(tiny, data_dir, tmp_path, method):
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = run_sft(_cfg(tiny, data_dir, tmp_path, method))
    tok = AutoTokenizer.from_pretrained(tiny)
    base_logits = _logits(AutoModelForCausalLM.from_pretrained(tiny), tok)
    arts = res["artifacts"]
    assert res["metrics"]["trainable_params"] > 0 and len(res["curves"]["loss"]) == 2

    if method in ("dora", "pissa"):
        merged = _logits(AutoModelForCausalLM.from_pretrained(arts["merged"]), tok)
        reloaded = _logits(load_trained_peft(str(tiny), arts["adapter"], torch.float32), tok)
        torch.testing.assert_close(merged, reloaded, atol=2e-4, rtol=1e-4)
        assert not torch.allclose(merged, base_logits)
    elif method == "miss":
        assert set(arts) == {"adapter", "lora"}
        as_lora = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), arts["lora"])
        as_miss = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), arts["adapter"])
        assert as_lora.peft_config["default"].peft_type == peft.PeftType.LORA
        torch.testing.assert_close(_logits(as_lora, tok), _logits(as_miss, tok), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(_logits(as_miss, tok), base_logits)
    elif method == "full":
        assert set(arts) == {"merged"}
        assert res["metrics"]["trainable_params"] == res["metrics"]["total_params"]
        assert not torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(arts["merged"]), tok), base_logits)
    else:   # trained with our layers (adapters.inject): saved in PEFT's format, read by PEFT and by ours
        import adapters

        ours = adapters.load_pretrained(AutoModelForCausalLM.from_pretrained(tiny), arts["adapter"])
        theirs = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), arts["adapter"])
        assert theirs.peft_config["default"].peft_type == peft.PeftType.VERA
        torch.testing.assert_close(_logits(ours, tok), _logits(theirs, tok), atol=1e-6, rtol=1e-5)
        assert not torch.allclose(_logits(ours, tok), base_logits)


@pytest.mark.slow
def test_deepspeed_two_processes_resume_and_record(tiny, data_dir, tmp_path):
    """The cpu profile's real path: the script launches 2 processes with DeepSpeed ZeRO-2 (gloo). A run
    killed after its step-2 checkpoint resumes and ends where one uninterrupted process ends.

    What is determined: the global-batch loss and gradient are the same in both, up to float summation
    order (which differs between machines and world sizes). The losses therefore agree to 1e-5. The
    adapters agree only as a whole: Adam divides each update by the root of that element's squared
    gradients, so an element whose gradient is ~0 can move by up to ~lr per step in either run on
    summation noise alone (seen: one element of 22,528 off by 2.3e-5). So each element is held to the
    Adam bound (2 x lr x steps) and the whole adapter difference to 1e-3 of the update it made."""
    def script(fail_after: int | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "MISS_DATA_DIR": str(data_dir), "MISS_CACHE_DIR": str(tmp_path / "cache")}
        if fail_after:
            env["MISS_SFT_FAIL_AFTER_STEP"] = str(fail_after)
        argv = [sys.executable, "experiments/nlg_llama2_7b.py", "--profile", "cpu", "--runs", "math-miss-s42",
                "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                "--set", "max_steps=4", "--set", "save_steps=2", "--set", "max_samples=64", "--no-eval"]
        return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    record = tmp_path / "results" / "nlg_llama2_7b" / "cpu" / "math-miss-s42.json"
    killed = script(fail_after=2)
    assert killed.returncode != 0
    rec_killed = json.loads(record.read_text())
    assert rec_killed["status"] == "failed" and "simulated failure" in rec_killed["error"]
    resumed = script()
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    rec = json.loads(record.read_text())
    m = rec["metrics"]
    assert rec["status"] == "success" and m["resumed_from"] == "checkpoint-2"
    assert (m["world_size"], m["zero_stage"], m["gradient_accumulation"], m["global_batch"]) == (2, 2, 2, 8)
    assert rec["curves"]["step"] == [1, 2, 3, 4] and rec["curves"]["tokens_seen"] == sorted(rec["curves"]["tokens_seen"])
    assert m["paper_model_trainable_params"] == 87_031_808 and rec["trainable_params"] == m["trainable_params"]
    out = tmp_path / "runs" / "nlg_llama2_7b" / "math-miss-s42"
    assert (out / "lora" / "adapter_model.safetensors").exists()
    # One process tokenised the data (rank 0 of the first launch, inside main_process_first); the other
    # rank waited and read its file, and so did both ranks of the resumed launch.
    log = (out / "train.log").read_text()
    assert log.count("rows tokenised into") == 1 and log.count("rows read from the cache") == 3, log[-3000:]

    sft = {**rec["config"]["sft"], "model": rec["runtime"]["model"]}     # the tiny model this machine built
    one = run_sft(SFTConfig(**{**sft, "output_dir": str(tmp_path / "one-process"), "deepspeed": None}))
    torch.testing.assert_close(rec["curves"]["loss"], one["curves"]["loss"], atol=1e-5, rtol=0)
    a = load_file(out / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "one-process" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    steps, lr = 4, sft["lr"]
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a])
    update = torch.cat([a[k].flatten() for k in a])        # MiSS's D starts at zero: the weights are the update
    assert diff.abs().max() <= 2 * lr * steps
    assert diff.norm() <= 1e-3 * update.norm(), (diff.norm(), update.norm())


def test_launch_commands(tmp_path):
    from experiments.common.sft_experiment import NLG_PROFILES, launch_command

    cfg = tmp_path / "run.json"
    s = NLG_PROFILES["paper"]
    argv, env = launch_command(s, cfg, None, "", cuda=True)
    assert argv[0].endswith("deepspeed") and "--num_gpus" not in argv       # every visible GPU
    assert argv[-4:] == ["--module", "experiments.common.sft_trainer", "--config", str(cfg)]
    argv, _ = launch_command(s, cfg, "/etc/hosts.ds", "--num_nodes 2 --master_addr node1", cuda=True)
    assert argv[1:3] == ["--hostfile", "/etc/hosts.ds"] and "--num_nodes" in argv and "--master_addr" in argv
    argv, env = launch_command(NLG_PROFILES["cpu"], cfg, None, "", cuda=False)
    assert argv[1:3] == ["--num_gpus", "2"] and env["DS_ACCELERATOR"] == "cpu" and env["LOCAL_SIZE"] == "2"
    import dataclasses

    argv, _ = launch_command(dataclasses.replace(s, launcher="torchrun", nproc=8), cfg, None, "", cuda=True)
    assert argv[1:4] == ["-m", "torch.distributed.run", "--nproc_per_node=8"]
    argv, _ = launch_command(dataclasses.replace(s, launcher="python"), cfg, None, "", cuda=True)
    assert argv[1:] == ["-m", "experiments.common.sft_trainer", "--config", str(cfg)]


def test_report_to_tensorboard_writes_events_and_unknown_or_missing_integrations_are_refused(tiny, data_dir, tmp_path,
                                                                                             monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    run_sft(_cfg(tiny, data_dir, tmp_path / "run", "lora", report_to=("tensorboard",), save_steps=0))
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="report_to: 'tensorbord' is not one of"):
        _cfg(tiny, data_dir, tmp_path / "x", "lora", report_to=("tensorbord",))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match="report_to=wandb needs the wandb package"):
        _cfg(tiny, data_dir, tmp_path / "x", "lora", report_to=("wandb",))


def test_multi_node_launch_commands():
    """One launch per node, no ssh: what each node's launcher is told (the run itself: test_sft_distributed)."""
    import dataclasses

    from experiments.common.sft_experiment import NLG_PROFILES, Nodes, launch_command

    s, cfg = NLG_PROFILES["paper"], "run.json"
    node1 = Nodes(2, 1, "10.0.0.1", 29555)
    argv, _ = launch_command(s, cfg, "hosts", "", cuda=True, nodes=node1)
    assert argv[1:12] == ["--hostfile", "hosts", "--no_ssh", "--node_rank", "1", "--num_nodes", "2",
                          "--master_addr", "10.0.0.1", "--master_port", "29555"]
    assert argv[12:] == ["--module", "experiments.common.sft_trainer", "--config", cfg]
    argv, _ = launch_command(dataclasses.replace(s, launcher="torchrun", nproc=8), cfg, None, "", cuda=True, nodes=node1)
    assert argv[3:8] == ["--nproc_per_node=8", "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1",
                         "--master_port=29555"]
    with pytest.raises(ValueError, match="needs the job's hostfile"):
        launch_command(s, cfg, None, "", cuda=True, nodes=node1)
    with pytest.raises(ValueError, match="launcher=python runs one process"):
        launch_command(dataclasses.replace(s, launcher="python"), cfg, None, "", cuda=True, nodes=node1)
    with pytest.raises(ValueError, match=r"--node-rank 2 must be in 0..1"):
        Nodes(2, 2, "10.0.0.1")
    with pytest.raises(ValueError, match="needs --master-addr"):
        Nodes(2, 0)
