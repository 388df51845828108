"""The ``cpu`` profile's stand-in LLM: a tiny Llama-architecture model with random weights and a
byte-level BPE tokenizer trained offline on the local training text.

Both are written with ``save_pretrained`` into one directory, so every later stage (the SFT trainer,
merging, the vLLM CPU backend of the evaluation issue) loads them by path exactly as it would load a
hub model. Sizes respect what the vLLM CPU backend can serve: head_dim 32, hidden 128.
The directory is built once and reused (``ensure_tiny_model``); building takes a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .sft_data import PROMPT, gsm8k_as_metamath, mbpp_as_codefeedback

BUILD_VERSION = 1   # bump when the recipe below changes, so cached copies are rebuilt


@dataclass(frozen=True)
class TinyLlamaSpec:
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 352
    num_hidden_layers: int = 2
    num_attention_heads: int = 4      # head_dim = 32
    num_key_value_heads: int = 2      # grouped-query attention: k/v are 128 -> 64, like Mistral/Qwen3
    max_position_embeddings: int = 1024
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _corpus(data_dir: Path) -> list[str]:
    texts = [PROMPT.format(query="")]
    for _, row in gsm8k_as_metamath(data_dir):
        texts += [row["query"], row["response"]]
    for _, row in mbpp_as_codefeedback(data_dir):
        texts += [row["query"], row["response"]]
    return texts


def train_tokenizer(data_dir: Path, vocab_size: int):
    """Byte-level BPE (GPT-2 style pre-tokenisation) trained on the local SFT text; BOS ``<s>`` is
    prepended to every sequence, EOS is ``</s>``, and there is no pad token (pad = EOS, SPEC §3.5)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(data_dir), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", model_max_length=1024)


def build_tiny_model(tokenizer, spec: TinyLlamaSpec):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    return LlamaForCausalLM(config)


def ensure_tiny_model(cache_dir: Path, data_dir: Path, spec: TinyLlamaSpec = TinyLlamaSpec()) -> Path:
    """Directory holding the tiny model and its tokenizer, built on first use (atomically)."""
    key = f"tiny-llama-v{BUILD_VERSION}-h{spec.hidden_size}-l{spec.num_hidden_layers}-v{spec.vocab_size}-s{spec.seed}"
    target = Path(cache_dir) / key
    if (target / "tiny_model.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    try:
        tokenizer = train_tokenizer(Path(data_dir), spec.vocab_size)
        model = build_tiny_model(tokenizer, spec)
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        (tmp / "tiny_model.json").write_text(json.dumps({"spec": asdict(spec), "build_version": BUILD_VERSION,
                                                         "data_dir": str(data_dir)}, indent=1))
        try:
            os.replace(tmp, target)
        except OSError:   # another process finished first
            if not (target / "tiny_model.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
