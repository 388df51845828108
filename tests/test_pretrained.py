"""``adapters.save_pretrained`` / ``load_pretrained``: trained layers of ours, saved, loaded back.

Every method PEFT also has is written in PEFT's format, and ``peft.PeftModel.from_pretrained`` on the
untouched base model must give the logits our trained model gives; ``load_pretrained`` must too, from
our file and from the directory PEFT writes when it saves what it loaded. The methods PEFT lacks go
through our format and ``load_pretrained``. A small random Llama (non-square projections: grouped-query
k/v, MLP) is trained a few Adam steps first, so every adapter tensor holds trained, non-zero values.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

import adapters  # noqa: E402
from adapters.pretrained import META_FILE, OWN_WEIGHTS, PEFT_CONFIG, PEFT_WEIGHTS  # noqa: E402

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
# Logits are O(0.1-1); the loaded models run the same float32 arithmetic in another order at most
# (PEFT's layer code, PiSSA's residual recomputed from the same SVD).
TOL = {"atol": 1e-6, "rtol": 1e-5}

# id -> list of (method, targets, hyperparameters) inject calls, and the expected format
PEFT_CASES = {
    "lora": [("lora", ATTN + MLP, dict(r=4, alpha=8.0, dropout=0.1))],
    "lora-ranks-and-head": [("lora", ATTN, dict(r=4, alpha=8.0)), ("lora", MLP, dict(r=2, alpha=8.0))],
    "lora_fa": [("lora_fa", ATTN + MLP, dict(r=4, alpha=16.0))],
    "pissa": [("pissa", ATTN + MLP, dict(r=4, alpha=4.0))],
    "dora": [("dora", ATTN + MLP, dict(r=4, alpha=8.0, rslora=True))],
    "miss": [("miss", ATTN + MLP, dict(r=8, dropout=0.1))],
    "miss-padded": [("miss", ATTN + MLP, dict(r=12))],          # in_features 32 and 48 are not multiples of 12
    "miss-mini": [("miss", ATTN + MLP, dict(r=8, variant="mini", mini_r=8))],
    "miss-bat": [("miss", ATTN + MLP, dict(r=8, variant="bat"))],
    "vera": [("vera", ATTN + MLP, dict(r=16, projection_prng_key=3))],
    "adalora": [("adalora", ATTN + MLP, dict(r=4, alpha=8.0))],
    "loha": [("loha", ATTN + MLP, dict(r=4, alpha=6.0))],
}
OWN_CASES = {
    "prolora": [("prolora", ATTN + MLP, dict(r=4, unshared_rank=1, sharing_ratio=2))],
    "mos": [("mos", ATTN + MLP, dict(r=4))],
    "mora": [("mora", ATTN + MLP, dict(r=8))],
    "miss_expand": [("miss_expand", ATTN + MLP, dict(shards=4))],
    "full": [("full", ["q_proj", "down_proj"], {})],
    "mixed": [("lora", ATTN, dict(r=4)), ("miss", MLP, dict(r=8))],
}


@pytest.fixture(scope="module")
def base():
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(5)
    return transformers.LlamaForCausalLM(cfg).eval()


def _fresh(base):
    return copy.deepcopy(base)


def _trained(base, calls, trainable_modules=()):
    model = _fresh(base)
    for i, (method, targets, hyper) in enumerate(calls):
        adapters.inject(model, method, targets, trainable_modules=trainable_modules if i == len(calls) - 1 else (), **hyper)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        ids = torch.randint(0, 96, (2, 12), generator=gen)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def _logits(model):
    ids = torch.arange(40).reshape(2, 20) % 96
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("case", sorted(PEFT_CASES))
def test_peft_methods_load_in_peft_with_identical_logits(base, tmp_path, case):
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    head = ["lm_head"] if case == "lora-ranks-and-head" else []
    model = _trained(base, PEFT_CASES[case], trainable_modules=head)
    expected = _logits(model)
    assert not torch.allclose(expected, _logits(base)), "training should have changed the model"

    assert adapters.save_pretrained(model, tmp_path / "ours", task_type="CAUSAL_LM") == "peft"
    assert {p.name for p in (tmp_path / "ours").iterdir()} == {PEFT_CONFIG, PEFT_WEIGHTS, META_FILE}
    theirs = peft.PeftModel.from_pretrained(_fresh(base), str(tmp_path / "ours")).eval()
    torch.testing.assert_close(_logits(theirs), expected, **TOL)
    saved = load_file(str(tmp_path / "ours" / PEFT_WEIGHTS))
    assert set(saved) == set(get_peft_model_state_dict(theirs)), "PEFT would ignore or miss some tensors"
    config = json.loads((tmp_path / "ours" / PEFT_CONFIG).read_text())
    if case == "lora-ranks-and-head":
        assert config["rank_pattern"] and config["modules_to_save"] == ["lm_head"]

    # ours again, from our file (exact layers from adapter_meta.json) and from the directory PEFT writes
    mine = adapters.load_pretrained(_fresh(base), tmp_path / "ours")
    torch.testing.assert_close(_logits(mine), expected, **TOL)
    assert not any(p.requires_grad for p in mine.parameters())
    theirs.save_pretrained(str(tmp_path / "peft-wrote"))
    from_peft = adapters.load_pretrained(_fresh(base), tmp_path / "peft-wrote", is_trainable=True)
    torch.testing.assert_close(_logits(from_peft.eval()), expected, **TOL)
    frozen_a = sum(layer.adapter_A.numel() for _, layer in adapters.adapter_layers(model)) if case == "lora_fa" else 0
    # PEFT's directory has no LoRA-FA: it comes back as the LoRA it computes, A trainable
    assert adapters.trainable_parameters(from_peft) == adapters.trainable_parameters(model) + frozen_a


@pytest.mark.parametrize("case", sorted(OWN_CASES))
def test_other_methods_round_trip_in_our_format(base, tmp_path, case):
    model = _trained(base, OWN_CASES[case])
    expected = _logits(model)
    assert adapters.save_pretrained(model, tmp_path) == "adapters"
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["why_not_peft"] and not (tmp_path / PEFT_CONFIG).exists() and (tmp_path / OWN_WEIGHTS).exists()
    loaded = adapters.load_pretrained(_fresh(base), tmp_path, is_trainable=True)
    torch.testing.assert_close(_logits(loaded.eval()), expected, **TOL)
    assert adapters.trainable_parameters(loaded) == adapters.trainable_parameters(model)


def test_switching_format_removes_the_other_formats_files(base, tmp_path):
    adapters.save_pretrained(_trained(base, PEFT_CASES["miss"]), tmp_path)
    adapters.save_pretrained(_trained(base, OWN_CASES["mixed"]), tmp_path)
    assert not (tmp_path / PEFT_CONFIG).exists(), "a stale PEFT config would let PEFT load the old adapter"


def test_bad_inputs_are_refused_before_the_model_changes(base, tmp_path):
    model = _trained(base, PEFT_CASES["lora"])
    adapters.save_pretrained(model, tmp_path)
    with pytest.raises(adapters.AdapterError, match="not plain nn.Linear layers"):
        adapters.load_pretrained(model, tmp_path)               # already injected
    with pytest.raises(adapters.AdapterError, match="not an adapter directory"):
        adapters.load_pretrained(_fresh(base), tmp_path / "nowhere")
    layer = adapters.get_method("lora")(torch.nn.Linear(4, 4), r=2)
    with pytest.raises(adapters.AdapterError, match="not built by adapters.inject"):
        adapters.save_pretrained(torch.nn.Sequential(layer), tmp_path / "x")
