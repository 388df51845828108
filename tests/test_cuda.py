"""What only a GPU can check (``gpu`` marker: skipped without CUDA; run by scripts/gpu_smoke.sh).

* our MiSS layer equals PEFT's in bf16 on CUDA, forward and gradients (the CPU equivalence tests are float32);
* flash-linear-attention's RWKV6/RWKV7 with their real Triton kernels on CUDA give the logits our CPU path
  (``experiments.common.fla_cpu``) gives for the same model, in float32;
* the SFT trainer on CUDA trains in bf16 by default and reports the CUDA allocator's peak memory.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.gpu


def test_our_miss_equals_peft_in_bf16_on_cuda():
    import peft

    from adapters.methods.miss import MiSSLinear

    torch.manual_seed(0)
    base = nn.Linear(4096, 1024, bias=False, device="cuda", dtype=torch.bfloat16).requires_grad_(False)
    ours = MiSSLinear(copy.deepcopy(base), r=64)
    holder = nn.Module()
    holder.layer = copy.deepcopy(base)
    theirs = peft.get_peft_model(holder, peft.MissConfig(r=64, target_modules=["layer"]),
                                 autocast_adapter_dtype=False).base_model.model.layer
    with torch.no_grad():
        d = torch.randn(64, 1024, device="cuda", dtype=torch.bfloat16) * 0.02
        ours.adapter_D.copy_(d)
        next(p for n, p in theirs.named_parameters() if p.requires_grad).copy_(d)
    x = torch.randn(8, 256, 4096, device="cuda", dtype=torch.bfloat16)
    y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs, atol=2e-2, rtol=2e-2)
    y_ours.float().square().mean().backward()
    y_theirs.float().square().mean().backward()
    g_theirs = next(p for n, p in theirs.named_parameters() if p.requires_grad).grad
    torch.testing.assert_close(ours.adapter_D.grad.float(), g_theirs.float(), atol=1e-2, rtol=5e-2)


@pytest.mark.parametrize("version", ["rwkv6", "rwkv7"])
def test_fla_triton_kernels_on_cuda_match_our_cpu_path(version, tmp_path):
    pytest.importorskip("fla")
    from experiments.common import fla_cpu
    from eval.generate_tiny import random_rwkv

    model = random_rwkv(version, 512).float()
    ids = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu_logits = model(ids).logits                       # fla_cpu's torch path (installed on import)
        gpu_logits = model.cuda()(ids.cuda()).logits.cpu()   # fla's Triton kernels, untouched on CUDA
    assert fla_cpu is not None
    torch.testing.assert_close(gpu_logits, cpu_logits, atol=2e-3, rtol=2e-3)


def test_sft_on_cuda_trains_in_bf16_and_reports_the_allocator_peak(tmp_path):
    from eval.generate_tiny import build_tiny_llama
    from experiments.common.sft_trainer import SFTConfig, run_sft

    tiny = build_tiny_llama(tmp_path / "tiny")
    res = run_sft(SFTConfig(model=str(tiny), method="miss", r=16, output_dir=str(tmp_path / "run"),
                            data_source="local:gsm8k-metamath", max_samples=32, lr=1e-3, max_steps=4,
                            global_batch=8, per_device_batch=4, deepspeed=None, save_steps=0))
    m = res["metrics"]
    assert m["dtype"] == "bfloat16" and m["device"] == "cuda" and m["train_peak_memory_kind"].startswith("cuda")
    assert res["curves"]["loss"][-1] < res["curves"]["loss"][0]
