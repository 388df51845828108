"""Tiny random Llama (and RWKV) models and their tokenizers, saved like hub models, for tests, benchmarks
and the ``cpu`` profile.

The pieces, shared by everything that needs a stand-in LLM:
- ``train_bpe_tokenizer(texts, vocab_size)``: a byte-level BPE (GPT-2 style pre-tokenisation) trained
  offline, so any text round-trips through encode/decode; BOS ``<s>`` is prepended to every sequence,
  EOS is ``</s>``, there is no pad token (pad = EOS, SPEC §3.5);
- ``random_llama(tokenizer, ...)``: a ``LlamaForCausalLM`` with seeded random weights, in sizes the vLLM
  CPU backend serves (head_dim 32);
- ``random_rwkv(version, vocab_size, ...)``: flash-linear-attention's RWKV6 or RWKV7 model, likewise
  (it runs on CPU through ``experiments.common.fla_cpu``; transformers generates with it, vLLM cannot).

``build_tiny_llama(out_dir, texts)`` saves the generation tests' model: 2 layers, hidden 128, with the
output head scaled up so greedy decoding has clear margins between the top tokens; float32 rounding
differences between two correct implementations (vLLM vs transformers, LoRA vs merged weights) then do
not flip a greedy pick. The weights are random, so the text is gibberish; what matters is that every
backend sees the same model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from eval.common import ALPACA_HEADER

_BUILTIN_TEXT = [
    ALPACA_HEADER,
    "### Instruction:\n### Response: Let's think step by step. The answer is: 42",
    "Janet has 3 apples and buys 5 more. How many apples does she have? 3 + 5 = 8. The answer is: 8",
    "def add(a, b):\n\treturn a + b\n\nassert add(1, 2) == 3",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) $ % , .",
]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int = 1024):
    """A byte-level BPE tokenizer trained on ``texts`` (see the module docstring)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(list(texts), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                model_max_length=model_max_length)


def random_llama(tokenizer, *, hidden_size: int = 128, intermediate_size: int = 256, num_hidden_layers: int = 2,
                 num_attention_heads: int = 4, num_key_value_heads: int = 2, max_position_embeddings: int = 1024,
                 seed: int = 0):
    """A float32 ``LlamaForCausalLM`` with weights drawn from ``seed`` (the global RNG is left untouched)."""
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads, head_dim=hidden_size // num_attention_heads,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=False, torch_dtype="float32",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return transformers.LlamaForCausalLM(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)


def random_rwkv(version: str, vocab_size: int, *, hidden_size: int = 128, intermediate_size: int = 352,
                num_hidden_layers: int = 2, head_dim: int = 32, bos_token_id: int = 1, eos_token_id: int = 2,
                seed: int = 0):
    """A float32 RWKV6 or RWKV7 model of ``fla`` with weights drawn from ``seed`` (global RNG untouched)."""
    import torch
    import transformers
    from fla.models import RWKV6Config, RWKV7Config

    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                  num_hidden_layers=num_hidden_layers, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                  tie_word_embeddings=False)
    if version == "rwkv6":   # expand_k = expand_v = 1 as in RWKV6-7B: key and value heads of head_dim
        config = RWKV6Config(num_heads=hidden_size // head_dim, expand_k=1.0, expand_v=1.0, **common)
    elif version == "rwkv7":
        config = RWKV7Config(head_dim=head_dim, **common)
    else:
        raise ValueError(f"RWKV version must be rwkv6 or rwkv7, got {version!r}")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
        # fla's init leaves some projections at zero (RWKV7's o_proj and ffn.value, the first layer of the
        # low-rank helpers); no trained checkpoint has them, and with them zero the adapters before them get
        # no gradient (PiSSA, the SVD of a zero matrix, none at all): they are drawn like the other weights
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear) and not module.weight.any():
                    module.weight.normal_(0.0, config.initializer_range)
        return model
    finally:
        torch.random.set_rng_state(generator_state)


def build_tiny_llama(out_dir: str | os.PathLike, texts: Iterable[str] | None = None, *, vocab_size: int = 512,
                     num_hidden_layers: int = 2, intermediate_size: int = 256, max_position_embeddings: int = 1024,
                     seed: int = 0, head_scale: float = 30.0) -> Path:
    """Save a tiny random Llama + byte-level BPE tokenizer into ``out_dir``; returns ``out_dir``."""
    import torch

    tokenizer = train_bpe_tokenizer(list(_BUILTIN_TEXT) + list(texts or []), vocab_size, max_position_embeddings)
    model = random_llama(tokenizer, num_hidden_layers=num_hidden_layers, intermediate_size=intermediate_size,
                         max_position_embeddings=max_position_embeddings, seed=seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
