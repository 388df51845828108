"""The ``cpu`` profile's stand-in LLM: a tiny Llama-architecture model (or, for the RWKV scripts, a
tiny RWKV6/RWKV7 of flash-linear-attention) with random weights and a byte-level BPE tokenizer trained
offline on the local training text.

Both are written with ``save_pretrained`` into one directory, so every later stage (the SFT trainer,
merging, the vLLM CPU backend of the evaluation issue) loads them by path exactly as it would load a
hub model. Sizes respect what the vLLM CPU backend can serve: head_dim 32, hidden 128.
The directory is built once and reused (``ensure_tiny_model``); building takes a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from eval.data_files import describe, require
from eval.generate_tiny import random_llama, random_rwkv, train_bpe_tokenizer

from .sft_data import LOCAL_SOURCES, PROMPT, gsm8k_as_metamath, local_source_files, mbpp_as_codefeedback

BUILD_VERSION = 1   # bump when the recipe below changes, so cached copies are rebuilt
CORPUS_FILES = tuple(local_source_files(LOCAL_SOURCES))   # the tokenizer's training text: both stand-ins (_corpus)


@dataclass(frozen=True)
class TinyModelSpec:
    architecture: str = "llama"       # or "rwkv6" / "rwkv7" (flash-linear-attention), of the same sizes
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 352
    num_hidden_layers: int = 2
    num_attention_heads: int = 4      # head_dim = 32 (RWKV: 4 heads of 32 in its time mixing)
    num_key_value_heads: int = 2      # Llama only: grouped-query attention, k/v 128 -> 64 like Mistral/Qwen3
    max_position_embeddings: int = 1024
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def _corpus(data_dir: Path | None) -> list[str]:
    texts = [PROMPT.format(query="")]
    for _, row in gsm8k_as_metamath(data_dir):
        texts += [row["query"], row["response"]]
    for _, row in mbpp_as_codefeedback(data_dir):
        texts += [row["query"], row["response"]]
    return texts


def build_tiny_model(tokenizer, spec: TinyModelSpec):
    if spec.architecture != "llama":
        return random_rwkv(spec.architecture, len(tokenizer), hidden_size=spec.hidden_size,
                           intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_hidden_layers,
                           head_dim=spec.head_dim, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, seed=spec.seed)
    return random_llama(tokenizer, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
                        num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
                        num_key_value_heads=spec.num_key_value_heads,
                        max_position_embeddings=spec.max_position_embeddings, seed=spec.seed)


def ensure_tiny_model(cache_dir: Path, data_dir: Path | None = None, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Directory holding the tiny model and its tokenizer, built on first use (atomically); ``data_dir`` is
    searched first for the corpus files (``eval.data_files``)."""
    corpus = {rel: describe(path) for rel, path in require(CORPUS_FILES, data_dir).items()}
    # the tokenizer is trained on the corpus: other corpus files (another --data-dir) make another model
    digest = hashlib.sha256("".join(corpus[rel]["sha256"] for rel in sorted(corpus)).encode()).hexdigest()[:8]
    key = (f"tiny-{spec.architecture}-v{BUILD_VERSION}-h{spec.hidden_size}-l{spec.num_hidden_layers}"
           f"-v{spec.vocab_size}-s{spec.seed}-c{digest}")
    target = Path(cache_dir) / key
    if (target / "tiny_model.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    try:
        tokenizer = train_bpe_tokenizer(_corpus(data_dir), spec.vocab_size, spec.max_position_embeddings)
        model = build_tiny_model(tokenizer, spec)
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        (tmp / "tiny_model.json").write_text(json.dumps({"spec": asdict(spec), "build_version": BUILD_VERSION,
                                                         "corpus": corpus}, indent=1))
        try:
            os.replace(tmp, target)
        except OSError:   # another process finished first
            if not (target / "tiny_model.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
