"""The memory planner (``--dry-run``) against DeepSpeed's own estimators, the parameter counts, and the
activation memory measured on tiny real models on CPU."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re

import pytest
import torch

from experiments.common.memory_plan import (
    GIB,
    Layout,
    MethodSpec,
    activations_for,
    decoder_dims,
    meta_model_with_method,
    model_states,
    param_stats,
    saved_tensor_bytes,
    zero_settings,
)
from experiments.common.model_presets import get_preset, hf_config, peft_trainable_params, trainable_params
from experiments.common.sft_trainer import LLAMA_TARGETS, SFTConfig, apply_method, deepspeed_config

PAPER_MODELS = ("llama2-7b", "mistral-7b", "llama2-13b")
LAYOUTS = ((1, 1), (1, 8), (2, 8), (8, 8))       # (nodes, GPUs per node)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny models run in a few ms on one thread; two OpenMP threads on a busy shared machine take
    ten times as long (see sft_experiment.launch_command)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def full_ft_stats():
    """Parameter statistics of full fine-tuning of each paper model, in bf16 as DeepSpeed holds it."""
    spec = MethodSpec("full", target_modules=LLAMA_TARGETS)
    return {name: param_stats(meta_model_with_method(hf_config(name), spec, torch.bfloat16, cast_all=True))
            for name in PAPER_MODELS}


@pytest.fixture(scope="module")
def ds_estimators():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.runtime.zero import stage3, stage_1_and_2

    return stage_1_and_2, stage3


def _printed_gpu_gib(estimator, **kwargs) -> float:
    """The per-GPU GiB the ``*_all_cold`` estimator prints for the no-offload option."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        estimator(**kwargs)
    for line in out.getvalue().splitlines():
        if "offload_optimizer=none" in line and "offload_param=OffloadDeviceEnum" not in line:
            if "zero_init=0" not in line:
                return float(re.findall(r"([\d.]+)GB", line)[1])
    raise AssertionError(f"no no-offload line in:\n{out.getvalue()}")


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_full_ft_zero2_model_states_match_deepspeed(name, full_ft_stats, ds_estimators):
    stage12, _ = ds_estimators
    stats = full_ft_stats[name]
    zero = zero_settings(deepspeed_config("zero2"), hf_config(name).hidden_size)
    for nodes, gpus in LAYOUTS:
        ours = model_states(stats, zero, nodes * gpus).model_states
        printed = _printed_gpu_gib(stage12.estimate_zero2_model_states_mem_needs_all_cold, total_params=stats.total,
                                   num_gpus_per_node=gpus, num_nodes=nodes)
        assert abs(ours / GIB - printed) / printed < 0.05, (name, nodes, gpus, ours / GIB, printed)
        # the same formula, to the byte (up to rounding each partition up)
        _, exact = stage12.estimate_zero2_model_states_mem_needs(stats.total, gpus, nodes, cpu_offload=False)
        assert 0 <= ours - exact <= 3, (name, nodes, gpus, ours, exact)


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_full_ft_zero3_model_states_match_deepspeed_plus_the_partition_it_omits(name, full_ft_stats, ds_estimators):
    """DeepSpeed's stage-3 estimator counts 18 bytes per parameter and rank (16-bit and fp32 gradients,
    fp32 weights, moments) and omits the 16-bit weight partition each rank holds (2 bytes); with that
    added back the estimates agree within 5% (to the byte before DeepSpeed's printing rounds)."""
    _, stage3 = ds_estimators
    stats = full_ft_stats[name]
    zero = zero_settings(deepspeed_config("zero3"), hf_config(name).hidden_size)
    for nodes, gpus in LAYOUTS:
        n = nodes * gpus
        s = model_states(stats, zero, n)
        ours = s.model_states + s.gathered_largest_module
        omitted = 2 * stats.total / n
        printed = _printed_gpu_gib(stage3.estimate_zero3_model_states_mem_needs_all_cold, total_params=stats.total,
                                   largest_layer_params=stats.largest_module, num_gpus_per_node=gpus,
                                   num_nodes=nodes)
        assert abs((ours - omitted) / GIB - printed) / printed < 0.05, (name, nodes, gpus, ours / GIB, printed)
        _, exact, _ = stage3.estimate_zero3_model_states_mem_needs(
            stats.total, stats.largest_module, gpus, nodes, cpu_offload=False, cpu_offload_params=False)
        assert abs(ours - omitted - exact) <= 4, (name, nodes, gpus, ours, exact)
        assert 1.05 < ours / exact < 1.12      # what the omission amounts to at these sizes


@pytest.mark.parametrize("method", ["lora", "dora", "pissa", "miss"])
def test_adapter_states_carry_only_the_adapter_parameters(method):
    """Gradients and optimizer state scale with the adapter's count (the formula of model_presets and
    PEFT's own count on a meta model); every weight is held in 16 bit under DeepSpeed."""
    preset = get_preset("llama2-7b")
    r, alpha = preset.rank_alpha(method)
    n_adapter = trainable_params("llama2-7b", method, r)
    assert n_adapter == peft_trainable_params("llama2-7b", method, r)
    base_total = param_stats(meta_model_with_method(hf_config("llama2-7b"), MethodSpec("full"), torch.bfloat16,
                                                    cast_all=True)).total
    spec = MethodSpec(method, r, alpha, LLAMA_TARGETS)

    ds = param_stats(meta_model_with_method(hf_config("llama2-7b"), spec, torch.bfloat16, cast_all=True))
    assert ds.trainable == n_adapter and ds.total == base_total + n_adapter
    s = model_states(ds, zero_settings(deepspeed_config("zero2"), 4096), 8)
    assert s.weights == 2 * ds.total
    assert (s.gradients, s.gradients_fp32_at_step, s.optimizer) == (-(-2 * n_adapter // 8), -(-4 * n_adapter // 8),
                                                                     -(-12 * n_adapter // 8))
    # Without DeepSpeed PEFT keeps the adapter in fp32: fp32 gradients and AdamW moments, no master copy.
    plain = param_stats(meta_model_with_method(hf_config("llama2-7b"), spec, torch.bfloat16, cast_all=False))
    s = model_states(plain, None, 1)
    assert (s.weights, s.gradients, s.optimizer) == (2 * base_total + 4 * n_adapter, 4 * n_adapter, 8 * n_adapter)


# --------------------------------------------------------------------------- activations, measured
TINY = dict(vocab_size=500, hidden_size=128, intermediate_size=352, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=256)
BATCH, SEQ = 3, 40


def _tiny_config(arch: str):
    import transformers

    if arch == "llama":             # grouped-query attention, as Mistral-7B / Qwen3 / the cpu profile's model
        return transformers.LlamaConfig(**TINY)
    if arch == "llama-mha":         # as Llama2-7B/13B
        return transformers.LlamaConfig(**{**TINY, "num_key_value_heads": 4})
    return transformers.Qwen3Config(**TINY, tie_word_embeddings=True)     # q/k norms, tied embeddings


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, TINY["vocab_size"], (BATCH, SEQ), generator=g)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, 30:] = 0                      # right padding, as the SFT collator pads
    mask[2, 20:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :5] = -100                  # prompt tokens
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _real_and_meta(arch: str, method: str, checkpointing: bool):
    cfg = _tiny_config(arch)
    r = None if method == "full" else 8
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    model = apply_method(AutoModelForCausalLM.from_config(cfg),
                         SFTConfig(model="-", method=method, output_dir="-", data_source="-", r=r))
    model.config.use_cache = False
    if checkpointing:    # as the SFT trainer does
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method != "full":
            model.enable_input_require_grads()
    model.train()
    meta = meta_model_with_method(cfg, MethodSpec(method, r, None, LLAMA_TARGETS), torch.float32, cast_all=False)
    return model, activations_for(meta, decoder_dims(meta), BATCH, SEQ, torch.float32, checkpointing)


class LiveStorages(torch.utils._python_dispatch.TorchDispatchMode):
    """Every storage an op creates while the mode is on, and the live total at each op: the memory the
    model actually holds, including what a checkpointed layer's closure keeps (which autograd's saved-tensor
    hooks do not see)."""

    def __init__(self, exclude) -> None:
        super().__init__()
        from torch.multiprocessing.reductions import StorageWeakRef

        self._ref = StorageWeakRef
        self.skip = {t.untyped_storage()._cdata for t in exclude}
        self.storages: dict[int, tuple] = {}
        self.born: dict[int, int] = {}          # storage -> index of the trace entry where it appeared
        self.trace: list[dict[int, int]] | None = None

    def live(self) -> dict[int, int]:
        for k in [k for k, (ref, _) in self.storages.items() if ref.expired()]:
            del self.storages[k]
        return {k: n for k, (_, n) in self.storages.items() if k not in self.skip}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                old = self.storages.get(st._cdata)
                if old is None or old[0].expired():     # a freed storage's address can be reused
                    self.storages[st._cdata] = (self._ref(st), st.nbytes())
                    self.born[st._cdata] = len(self.trace) if self.trace is not None else -1
        if self.trace is not None:
            self.trace.append(self.live())
        return out


# A PEFT method of each kind (LoRA's input-keeping, DoRA's output-keeping, MiSS's sum-then-matmul), full
# fine-tuning, and our own layers with shared state (VeRA, MoS), a full-weight rebuild (LoHa), ProLoRA.
METHODS = ("full", "lora", "dora", "pissa", "miss", "vera", "mos", "loha", "prolora")
TOLERANCE = 0.01     # measured here: equal to the byte, with and without checkpointing


@pytest.mark.parametrize("arch", ["llama", "llama-mha", "qwen3"])
@pytest.mark.parametrize("method", METHODS)
def test_saved_activations_match_the_formula(arch, method):
    """Without checkpointing: the bytes autograd keeps after one forward (saved-tensor hooks, parameters
    and buffers excluded) equal the formula; the live-memory count agrees, less the input ids it did not
    allocate; and the backward pass peaks 8TV above them (the loss's fp32 gradients)."""
    model, est = _real_and_meta(arch, method, checkpointing=False)
    batch = _batch()
    state = [*model.parameters(), *model.buffers()]
    loss, saved = saved_tensor_bytes(lambda: model(**batch).loss, exclude=state)
    assert abs(sum(saved.values()) - est.saved) <= TOLERANCE * est.saved, (sum(saved.values()), est.saved, est.terms)
    del loss

    with LiveStorages(state) as mode:
        loss = model(**batch).loss
        after_forward = sum(mode.live().values()) - loss.untyped_storage().nbytes()
        mode.trace = []
        loss.backward()
    ids = 8 * BATCH * SEQ if method == "full" else 0        # saved by the embedding, allocated by the caller
    assert abs(after_forward + ids - est.saved) <= TOLERANCE * est.saved
    # parameter gradients are model state: leave each out from the op that created it on
    grads = {k: mode.born[k] for k in (p.grad.untyped_storage()._cdata for p in model.parameters()
                                        if p.grad is not None)}
    peak = max(sum(n for k, n in live.items() if grads.get(k, len(mode.trace)) > i)
               for i, live in enumerate(mode.trace))
    assert abs(peak - after_forward - est.working) <= TOLERANCE * est.working, (peak - after_forward, est.working)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("method", ["full", "lora", "dora", "miss", "vera"])
def test_checkpointed_activations_match_the_formula(arch, method):
    """With gradient checkpointing: the memory still live after the forward pass (each layer's input, the
    shared mask, position ids and RoPE tables, the loss's log-softmax) equals the formula."""
    model, est = _real_and_meta(arch, method, checkpointing=True)
    batch = _batch()
    with LiveStorages([*model.parameters(), *model.buffers()]) as mode:
        loss = model(**batch).loss
        after_forward = sum(mode.live().values()) - loss.untyped_storage().nbytes()
    assert abs(after_forward - est.saved) <= TOLERANCE * est.saved, (after_forward, est.saved, est.terms)


# --------------------------------------------------------------------------- the command line
def _dry_run(main, argv, capsys) -> tuple[int, str, list[dict]]:
    rc = main(argv)
    out = capsys.readouterr().out
    return rc, out, json.loads(out.strip().splitlines()[-1])


def test_dry_run_refuses_full_fine_tuning_of_llama2_13b_on_one_gpu(tmp_path, capsys):
    from experiments.common.sft_experiment import nlg_main

    rc, out, rows = _dry_run(lambda a: nlg_main("nlg_llama2_13b", "llama2-13b", "", a),
                             ["--profile", "paper", "--method", "full", "--dry-run", "--set", "nproc=1",
                              "--runs-dir", str(tmp_path / "runs")], capsys)
    assert rc == 1 and "DOES NOT FIT" in out
    assert rows and all(r["fits"] is False and r["world_size"] == 1 for r in rows)
    assert all(r["params_trainable"] == r["params_total"] == 13_015_864_320 for r in rows)
    assert all(r["command"].split()[-4:-2] == ["--module", "experiments.common.sft_trainer"] for r in rows)
    assert not (tmp_path / "runs").exists()              # a dry run writes nothing


def test_dry_run_prints_every_planned_mistral_run(tmp_path, capsys):
    from experiments.common.sft_experiment import nlg_main

    def main(argv):
        return nlg_main("nlg_mistral", "mistral-7b", "", argv + ["--runs-dir", str(tmp_path)])

    main(["--profile", "paper", "--plan"])
    planned = [r["name"] for r in json.loads(capsys.readouterr().out) if r["experiment"] == "nlg_mistral"]
    rc, out, rows = _dry_run(main, ["--profile", "paper", "--dry-run", "--set", "nproc=8"], capsys)
    assert [r["run"] for r in rows] == planned and len(planned) == 16       # math, code x 4 methods x 2 seeds
    assert rc == 0 and all(r["fits"] for r in rows)
    for row in rows:
        assert f"[nlg_mistral] {row['run']}: " in out
        assert row["params_trainable"] == trainable_params("mistral-7b", row["method"])
        b = row["bytes"]
        assert b["peak"] == b["weights"] + b["gradients"] + b["optimizer"] + b["buffers"] + max(
            b["activations"] + b["activations_working"], b["gradients_fp32_at_step"])
        assert "--num_gpus 8" in row["command"]


def test_launch_layout_reads_the_launch_settings(tmp_path, monkeypatch):
    from experiments.common.sft_experiment import NLG_PROFILES, launch_layout

    paper = NLG_PROFILES["paper"]
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\nnode1 slots=8\nnode2 slots=8\n")
    assert launch_layout(paper, str(hostfile), "") == Layout(2, 8)
    assert launch_layout(paper, str(hostfile), "--num_nodes 1 --num_gpus 4") == Layout(1, 4)
    hostfile.write_text("node1 slots=8\nnode2 slots=4\n")
    with pytest.raises(ValueError, match="different slot counts"):
        launch_layout(paper, str(hostfile), "")
    torchrun = dataclasses.replace(paper, launcher="torchrun", nproc=4)
    assert launch_layout(torchrun, None, "--nnodes 2") == Layout(2, 4)
    python = dataclasses.replace(paper, launcher="python")
    assert launch_layout(python, None, "") == Layout(1, 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assumed = launch_layout(paper, None, "")
    assert assumed.world_size == 8 and "nproc" in assumed.assumed


def test_gradient_norm_dry_run_has_no_optimizer_state(capsys):
    from experiments import gradient_norm

    rc, out, rows = _dry_run(gradient_norm.main, ["--profile", "paper", "--dry-run", "--task", "math",
                                                  "--method", "full,miss"], capsys)
    assert rc == 0 and len(rows) == 2 * (1 + 4)          # Llama2-7B and Qwen3-4B: full, MiSS at 4 ranks
    assert all(r["bytes"]["optimizer"] == 0 and r["world_size"] == 1 for r in rows)
    full = next(r for r in rows if r["run"] == "llama2-7b-math-full")
    assert full["bytes"]["gradients"] == full["bytes"]["weights"] == 2 * 6_738_415_616
    assert all(r["command"].endswith(f"--runs {r['run']}") for r in rows)


def test_dry_run_refuses_what_the_launch_would_refuse(tmp_path, capsys):
    """VeRA under ZeRO-3 (our own layers: the trainer refuses it) and a global batch the devices cannot split."""
    from experiments.common.sft_experiment import nlg_main

    def main(*extra):
        return _dry_run(lambda a: nlg_main("nlg_mistral", "mistral-7b", "", a),
                        ["--profile", "paper", "--dry-run", "--task", "math", "--seed", "42", "--runs-dir",
                         str(tmp_path), *extra], capsys)

    rc, out, rows = main("--method", "vera,lora", "--set", "r=16", "--set", "deepspeed=zero3", "--set", "nproc=8")
    assert rc == 1 and [r["fits"] for r in rows] == [False, True]
    assert "vera cannot train with ZeRO-3" in rows[0]["error"] and rows[1]["zero_stage"] == 3
    rc, out, rows = main("--method", "lora", "--set", "nproc=3")
    assert rc == 1 and "global batch 64 is not devices (3)" in rows[0]["error"]
