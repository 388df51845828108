"""RWKV6/RWKV7 through flash-linear-attention in the SFT trainer (Table 5's RWKV6 rows, Table 9).

GPU only: fla's RWKV kernels are Triton kernels with no CPU driver (checked with flash-linear-attention
0.6.0: the models build on CPU, the forward pass fails with "0 active drivers"). Needs
``pip install flash-linear-attention``; skipped without it or without CUDA.
"""

from __future__ import annotations

import pytest

from experiments.common.model_presets import RWKV6_TARGETS, RWKV7_TARGETS
from experiments.common.sft_trainer import SFTConfig, run_sft
from experiments.common.tiny_model import ensure_tiny_model

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("version,method", [("rwkv6", "lora"), ("rwkv6", "miss"), ("rwkv7", "miss"),
                                            ("rwkv7", "pissa")])
def test_tiny_rwkv_trains_with_the_paper_targets(version, method, tmp_path, tmp_path_factory, data_dir):
    pytest.importorskip("fla")
    from fla.models import RWKV6Config, RWKV7Config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tiny = ensure_tiny_model(tmp_path_factory.getbasetemp() / "tiny_cache", data_dir)
    tok = AutoTokenizer.from_pretrained(tiny)
    if version == "rwkv6":
        cfg = RWKV6Config(hidden_size=256, num_hidden_layers=2, num_heads=4, expand_k=1.0, expand_v=1.0,
                          vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    else:
        cfg = RWKV7Config(hidden_size=256, num_hidden_layers=2, head_dim=64, vocab_size=len(tok),
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model_dir = tmp_path / "model"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    res = run_sft(SFTConfig(
        model=str(model_dir), method=method, r=32, output_dir=str(tmp_path / "out"), data_source="local:gsm8k-metamath",
        data_dir=str(data_dir), max_samples=32, lr=1e-3, max_steps=4, global_batch=4, per_device_batch=2,
        deepspeed=None, save_steps=2, import_modules=("fla",),
        target_modules=RWKV6_TARGETS if version == "rwkv6" else RWKV7_TARGETS))
    assert res["metrics"]["steps"] == 4 and res["metrics"]["trainable_params"] > 0
    assert res["metrics"]["loss_fell"]
