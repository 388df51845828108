"""RWKV6/RWKV7 of flash-linear-attention in the SFT trainer (Table 5's RWKV6 rows, Table 9), on CPU.

The cpu profile's tiny random RWKV models (``tiny_model``; fla's Triton ops replaced on CPU by
``experiments.common.fla_cpu``): forward, backward and transformers' ``generate``, then short PEFT
trainings through ``run_sft`` on the paper's RWKV target modules.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("fla")

from adapters import get_method  # noqa: E402
from experiments.common.model_presets import RWKV6_TARGETS, RWKV7_TARGETS, _matches  # noqa: E402
from experiments.common.sft_trainer import SFTConfig, run_sft  # noqa: E402
from experiments.common.tiny_model import TinyModelSpec, ensure_tiny_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:According to Bo")
TARGETS = {"rwkv6": RWKV6_TARGETS, "rwkv7": RWKV7_TARGETS}


@pytest.fixture(scope="module")
def tiny_rwkv(tmp_path_factory, data_dir):
    cache = tmp_path_factory.getbasetemp() / "tiny_cache"
    return {v: ensure_tiny_model(cache, data_dir, TinyModelSpec(architecture=v)) for v in TARGETS}


@pytest.mark.parametrize("version", ["rwkv6", "rwkv7"])
def test_tiny_rwkv_runs_forward_backward_and_generate_on_cpu(version, tiny_rwkv):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import experiments.common.fla_cpu  # noqa: F401

    tok = AutoTokenizer.from_pretrained(tiny_rwkv[version])
    model = AutoModelForCausalLM.from_pretrained(tiny_rwkv[version])
    assert model.config.model_type == version and model.config.hidden_size // 4 == 32   # head_dim 32
    assert all(m.weight.any() for m in model.modules() if isinstance(m, torch.nn.Linear))   # like a trained model
    batch = tok(["Janet has 3 apples and buys 5 more."], return_tensors="pt")
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.lm_head.weight.grad.abs().sum() > 0
    model.eval()
    generated = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert generated.shape == (1, batch["input_ids"].shape[1] + 6)
    with torch.no_grad():   # greedy decoding with the recurrent cache picks what one full pass ranks first
        logits = model(generated).logits[0, batch["input_ids"].shape[1] - 1:-1]
    assert torch.equal(logits.argmax(-1), generated[0, batch["input_ids"].shape[1]:])
    tok.pad_token, tok.padding_side = tok.eos_token, "left"     # as the transformers eval backend batches
    both = tok(["def add(a, b):", "Janet has 3 apples and buys 5 more."], return_tensors="pt", padding=True)
    batched = model.generate(**both, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert torch.equal(batched[1, both["input_ids"].shape[1]:], generated[0, batch["input_ids"].shape[1]:])


@pytest.mark.parametrize("version,method", [("rwkv6", "lora"), ("rwkv6", "miss"), ("rwkv7", "lora"),
                                            ("rwkv7", "miss"), ("rwkv7", "pissa")])
def test_tiny_rwkv_trains_with_the_paper_targets(version, method, tiny_rwkv, tmp_path, data_dir):
    res = run_sft(SFTConfig(
        model=str(tiny_rwkv[version]), method=method, r=16, output_dir=str(tmp_path / "out"),
        data_source="local:gsm8k-metamath", data_dir=str(data_dir), max_samples=32, lr=1e-3, max_steps=4,
        global_batch=4, per_device_batch=2, deepspeed=None, save_steps=2,
        import_modules=("experiments.common.fla_cpu",), target_modules=TARGETS[version]))
    m = res["metrics"]
    assert m["steps"] == 4 and m["loss_fell"]
    assert m["trainable_params"] == _adapted_count(tiny_rwkv[version], TARGETS[version], method, r=16)


def _adapted_count(model_dir, targets, method, r):
    """The method's closed-form count over the model's ``nn.Linear`` layers that the targets name (SPEC §2)."""
    from torch import nn
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    linears = [m for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, targets)]
    assert len(linears) == len(targets) * model.config.num_hidden_layers   # each target once per block
    return sum(get_method(method).trainable_count(m.out_features, m.in_features, r=r) for m in linears)
