"""MiSS exported as a plain LoRA adapter (SPEC §1 "exact LoRA view") loads in PEFT and gives the same logits.

A tiny random Llama is adapted with MiSS (ours, and PEFT's ``MissConfig``), ``D`` is randomised, the adapter
is written as a PEFT LoRA directory and loaded with ``PeftModel.from_pretrained`` onto an untouched copy of
the same base weights: the logits must equal the MiSS model's to float32 rounding. ``r = 24`` on 64-wide and
160-wide inputs exercises the zero-padding rule (``k_in % r != 0``). Also: the PEFT config builder.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

import adapters  # noqa: E402
from adapters.lora_export import (  # noqa: E402
    LoRAExportError,
    export_miss_as_lora,
    export_miss_peft_model_as_lora,
    peft_miss_lora_factors,
)
from adapters.peft_configs import SUPPORTED, peft_config  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def base_model():
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def input_ids():
    return torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _randomise(params, std=0.05):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * std)


def _load_lora(base_model, out_dir):
    return peft.PeftModel.from_pretrained(copy.deepcopy(base_model), str(out_dir)).eval()


def _check_export_dir(out_dir, expect_r, n_modules):
    cfg = json.loads((out_dir / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == expect_r and cfg["lora_alpha"] == expect_r
    from safetensors.torch import load_file

    keys = set(load_file(out_dir / "adapter_model.safetensors"))
    assert len(keys) == 2 * n_modules
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in keys
    return cfg


@pytest.mark.parametrize("hyper", [dict(r=8), dict(r=24), dict(r=8, variant="mini", mini_r=16)], ids=["r8", "r24_pad", "mini"])
def test_our_miss_exports_to_identical_lora(base_model, input_ids, tmp_path, hyper):
    model = adapters.inject(copy.deepcopy(base_model), "miss", TARGETS, **hyper)
    _randomise(p for p in model.parameters() if p.requires_grad)
    expected = _logits(model, input_ids)
    assert not torch.allclose(expected, _logits(base_model, input_ids), atol=1e-3)  # the adapter does something

    out = export_miss_as_lora(model, tmp_path / "lora", base_model_name_or_path="tiny-llama")
    cfg = _check_export_dir(out, hyper["r"], n_modules=2 * len(TARGETS))
    assert sorted(cfg["target_modules"]) == sorted(TARGETS)
    assert cfg["base_model_name_or_path"] == "tiny-llama"
    torch.testing.assert_close(_logits(_load_lora(base_model, out), input_ids), expected, **TOL)


def test_mixed_ranks_use_rank_pattern(base_model, input_ids, tmp_path):
    model = adapters.inject(copy.deepcopy(base_model), "miss", ["q_proj", "v_proj", "o_proj"], r=8)
    adapters.inject(model, "miss", ["down_proj"], r=24)
    _randomise(l.adapter_D for _, l in adapters.adapter_layers(model))
    out = export_miss_as_lora(model, tmp_path / "lora")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and set(cfg["rank_pattern"].values()) == {24} and cfg["alpha_pattern"] == cfg["rank_pattern"]
    torch.testing.assert_close(_logits(_load_lora(base_model, out), input_ids), _logits(model, input_ids), **TOL)


def test_partial_targets_are_written_as_full_paths(base_model, tmp_path):
    model = adapters.inject(copy.deepcopy(base_model), "miss", ["re:model\\.layers\\.0\\.self_attn\\.q_proj", "v_proj"], r=8)
    cfg = json.loads((export_miss_as_lora(model, tmp_path / "lora") / "adapter_config.json").read_text())
    assert sorted(cfg["target_modules"]) == ["model.layers.0.self_attn.q_proj", "v_proj"]


@pytest.mark.parametrize("kw", [dict(r=8), dict(r=24), dict(r=8, init_weights="mini", mini_r=16)], ids=["r8", "r24_pad", "mini"])
def test_peft_miss_exports_to_identical_lora(base_model, input_ids, tmp_path, kw):
    config = peft.MissConfig(target_modules=TARGETS, task_type="CAUSAL_LM", **kw)
    model = peft.get_peft_model(copy.deepcopy(base_model), config).eval()
    _randomise(p for n, p in model.named_parameters() if "miss_block" in n)
    expected = _logits(model, input_ids)

    out = export_miss_peft_model_as_lora(model, tmp_path / "lora")
    cfg = _check_export_dir(out, kw["r"], n_modules=2 * len(TARGETS))
    assert cfg["task_type"] == "CAUSAL_LM"
    torch.testing.assert_close(_logits(_load_lora(base_model, out), input_ids), expected, **TOL)


def test_peft_factors_match_peft_own_conversion(base_model):
    """PEFT ships an exact MiSS -> LoRA conversion too; ours must give the same factors."""
    from peft.tuners.lora.conversion import convert_to_lora

    model = peft.get_peft_model(copy.deepcopy(base_model), peft.MissConfig(target_modules=TARGETS, r=24))
    _randomise(p for n, p in model.named_parameters() if "miss_block" in n)
    _, theirs = convert_to_lora(model, rank=24)
    ours = peft_miss_lora_factors(model)
    assert len(theirs) == 2 * len(ours)
    for path, (a, b) in ours.items():
        torch.testing.assert_close(a, theirs[f"base_model.model.{path}.lora_A.weight"], rtol=0, atol=0)
        torch.testing.assert_close(b, theirs[f"base_model.model.{path}.lora_B.weight"], rtol=0, atol=0)


def test_bat_has_no_exact_view(base_model, tmp_path):
    ours = adapters.inject(copy.deepcopy(base_model), "miss", TARGETS, r=8, variant="bat")
    with pytest.raises(LoRAExportError, match="bat"):
        export_miss_as_lora(ours, tmp_path / "a")
    theirs = peft.get_peft_model(copy.deepcopy(base_model), peft.MissConfig(target_modules=TARGETS, r=8, init_weights="bat"))
    with pytest.raises(LoRAExportError, match="bat"):
        export_miss_peft_model_as_lora(theirs, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_refuses_what_a_lora_cannot_carry(base_model, tmp_path):
    with pytest.raises(LoRAExportError, match="no adapter layers"):
        export_miss_as_lora(copy.deepcopy(base_model), tmp_path / "x")
    lora = adapters.inject(copy.deepcopy(base_model), "lora", ["q_proj"], r=4)
    with pytest.raises(LoRAExportError, match="lora"):
        export_miss_as_lora(lora, tmp_path / "x")
    head = adapters.inject(copy.deepcopy(base_model), "miss", ["q_proj"], trainable_modules=["lm_head"], r=8)
    with pytest.raises(LoRAExportError, match="lm_head"):
        export_miss_as_lora(head, tmp_path / "x")
    peft_lora = peft.get_peft_model(copy.deepcopy(base_model), peft.LoraConfig(target_modules=["q_proj"], r=4))
    with pytest.raises(LoRAExportError, match="not MISS"):
        export_miss_peft_model_as_lora(peft_lora, tmp_path / "x")
    saved = peft.get_peft_model(copy.deepcopy(base_model),
                                peft.MissConfig(target_modules=["q_proj"], r=8, modules_to_save=["lm_head"]))
    with pytest.raises(LoRAExportError, match="modules_to_save"):
        export_miss_peft_model_as_lora(saved, tmp_path / "x")


# ------------------------------------------------------------------------------------- peft_config
PEFT_CASES = {
    "lora": ({}, peft.LoraConfig),
    "dora": ({}, peft.LoraConfig),
    "pissa": ({"niter": 2}, peft.LoraConfig),
    "miss": ({"variant": "mini", "mini_r": 16}, peft.MissConfig),
    "vera": ({}, peft.VeraConfig),
    "adalora": ({"total_step": 10}, peft.AdaLoraConfig),
    "loha": ({}, peft.LoHaConfig),
}


def test_peft_cases_cover_supported():
    assert set(PEFT_CASES) == set(SUPPORTED)


@pytest.mark.parametrize("method", sorted(PEFT_CASES))
def test_peft_config_builds_and_applies(base_model, input_ids, method):
    extra, cls = PEFT_CASES[method]
    cfg = peft_config(method, ["q_proj", "v_proj"], r=4, modules_to_save=["lm_head"], **extra)
    assert type(cfg) is cls and cfg.modules_to_save == ["lm_head"]
    model = peft.get_peft_model(copy.deepcopy(base_model), cfg)
    assert 0 < model.get_nb_trainable_parameters()[0]
    assert _logits(model, input_ids).shape == (2, 12, 128)


def test_peft_config_maps_method_options():
    assert peft_config("dora", "q_proj", r=4).use_dora is True
    assert peft_config("lora", "q_proj", r=4).lora_alpha == 8
    assert peft_config("pissa", "q_proj", r=4).init_lora_weights == "pissa"
    assert peft_config("pissa", "q_proj", r=4, niter=4).init_lora_weights == "pissa_niter_4"
    assert peft_config("pissa", "q_proj", r=4).lora_alpha == 4
    assert peft_config("miss", "q_proj", r=4).init_weights is True
    assert peft_config("miss", "q_proj", r=4, variant="bat").init_weights == "bat"
    ada = peft_config("adalora", "q_proj", r=6, total_step=100, target_r=2)
    assert (ada.init_r, ada.target_r, ada.total_step) == (6, 2, 100)


@pytest.mark.parametrize("call, match", [
    (lambda: peft_config("bone", "q_proj", r=4), r"'bone'.*lora, dora, pissa, miss, vera, adalora, loha"),
    (lambda: peft_config("adalora", "q_proj", r=4), "total_step"),
    (lambda: peft_config("miss", "q_proj", r=4, alpha=8), "no alpha"),
    (lambda: peft_config("miss", "q_proj", r=4, variant="big"), "variant"),
    (lambda: peft_config("lora", "q_proj", r=4, niter=2), "pissa only"),
    (lambda: peft_config("lora", "q_proj", r=0), "positive integer"),
    (lambda: peft_config("vera", "q_proj", r=4, not_a_field=1), "not_a_field"),
])
def test_peft_config_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------------- vLLM (serving)
_VLLM_GENERATE = r"""
import json, sys
from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest
model, loras = sys.argv[1], json.loads(sys.argv[2])
kw = dict(enable_lora=True, max_lora_rank=32, max_loras=len(loras)) if loras else {}
llm = LLM(model=model, dtype="float32", max_model_len=64, enforce_eager=True, seed=0, **kw)
params = SamplingParams(temperature=0.0, max_tokens=12, logprobs=1)
result = {}
for i, path in enumerate(loras or [None]):
    request = LoRARequest(f"lora{i}", i + 1, path) if path else None
    outs = llm.generate(json.loads(sys.argv[3]), params, lora_request=request, use_tqdm=False)
    result[path or model] = [[(t, o.outputs[0].logprobs[j][t].logprob) for j, t in enumerate(o.outputs[0].token_ids)]
                             for o in outs]
print("RESULT " + json.dumps(result))
"""
VLLM_PROMPTS = ["the quick brown", "one two three", "a b c d"]


def _vllm_generate(model_dir, lora_dirs=()):
    """Greedy tokens and their logprobs from vLLM, in a fresh process (one engine per process)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _VLLM_GENERATE, str(model_dir), json.dumps([str(d) for d in lora_dirs]),
         json.dumps(VLLM_PROMPTS)],
        capture_output=True, text=True, env=env, timeout=400)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"vLLM failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _tiny_llama_with_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = ["the quick brown fox jumps over the lazy dog", "one two three four five six seven eight nine ten",
              " ".join("abcdefghijklmnopqrstuvwxyz")] * 10
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=128, tie_word_embeddings=False,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # sharpen the random model's next-token distribution so greedy picks have clear margins
        model.lm_head.weight.mul_(30)
    return model, fast


@pytest.mark.slow
def test_vllm_serves_the_export_like_the_merged_model(tmp_path):
    """vLLM with the exported LoRA == vLLM on the merged MiSS weights (tokens, and logprobs to 1e-3).

    Two adapters in one engine: MiSS r=8 on every projection, and a mixed one (attention r=8, MLP r=24,
    so ``rank_pattern`` and the padding rule on 128- and 256-wide inputs go through vLLM's loader).
    """
    pytest.importorskip("vllm")
    base, tokenizer = _tiny_llama_with_tokenizer()
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    specs = {"uniform": [(TARGETS, 8)], "mixed": [(TARGETS[:4], 8), (TARGETS[4:], 24)]}
    g = torch.Generator().manual_seed(5)
    ids = tokenizer(VLLM_PROMPTS[0], return_tensors="pt").input_ids
    for name, spec in specs.items():
        model = copy.deepcopy(base)
        for targets, r in spec:
            adapters.inject(model, "miss", targets, r=r)
        with torch.no_grad():
            for _, layer in adapters.adapter_layers(model):
                layer.adapter_D.copy_(torch.randn(layer.adapter_D.shape, generator=g) * 0.02)
        export_miss_as_lora(model, tmp_path / f"lora_{name}", base_model_name_or_path=str(tmp_path / "base"))
        adapters.merge(model)
        for path, layer in list(adapters.adapter_layers(model)):
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent), child, layer.base_layer)
        assert not torch.allclose(_logits(model, ids), _logits(base, ids), atol=1e-2)
        model.save_pretrained(tmp_path / f"merged_{name}")
        tokenizer.save_pretrained(tmp_path / f"merged_{name}")

    served = _vllm_generate(tmp_path / "base", [tmp_path / f"lora_{n}" for n in specs])
    for name in specs:
        merged = _vllm_generate(tmp_path / f"merged_{name}")[str(tmp_path / f"merged_{name}")]
        lora = served[str(tmp_path / f"lora_{name}")]
        assert [[t for t, _ in seq] for seq in lora] == [[t for t, _ in seq] for seq in merged], name
        for seq_l, seq_m in zip(lora, merged):
            torch.testing.assert_close(torch.tensor([lp for _, lp in seq_l]), torch.tensor([lp for _, lp in seq_m]),
                                       rtol=0, atol=1e-3)
