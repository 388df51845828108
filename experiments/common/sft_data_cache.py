"""Where tokenised SFT data is cached, and the key that says which cached copy a run may reuse.

A run's training set is tokenised once and written as an Arrow file that every rank and every later launch
(a resume, another seed, another method on the same model and data) memory-maps instead of tokenising again:

    $MISS_CACHE_DIR/sft_data/<key>.arrow     the tokenised rows (input_ids, labels)
    $MISS_CACHE_DIR/sft_data/<key>.json      what the key was made of, for a person reading the folder
    $MISS_CACHE_DIR/sft_data/raw/<sha256>/   datasets' Arrow copy of each local JSON/Parquet file it read

``$MISS_CACHE_DIR`` defaults to ``<runs-dir>/_cache`` (``$MISS_RUNS_DIR`` or the repository's ``runs/``,
which git ignores); the experiment scripts point it at the ``--runs-dir`` they were given. Deleting the
folder only costs the next run its tokenising time.

The key hashes everything the token ids and labels depend on, and nothing else: the tokenizer's content
(its serialised vocabulary, merges, normaliser and special-token rules, not the path it was loaded from),
the prompt template, the encoding version, the maximum length, the field names, ``max_samples``, and the
data: the SHA-256 of each local file's bytes, or a hub dataset's id, split and ``datasets`` fingerprint
(which names the revision it resolved to).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

from .records import DEFAULT_RUNS_DIR

CACHE_ENV = "MISS_CACHE_DIR"


def cache_root() -> Path:
    """``$MISS_CACHE_DIR``, else ``<runs-dir>/_cache`` of the default runs directory."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("MISS_RUNS_DIR", DEFAULT_RUNS_DIR)) / "_cache"


def sft_cache_dir() -> Path:
    return cache_root() / "sft_data"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of what decides how ``tokenizer`` encodes text: a fast tokenizer's full serialisation
    (``tokenizer.json``: vocabulary, merges, normaliser, pre-tokeniser, the post-processor that adds BOS),
    a slow one's vocabulary and class source; plus its special tokens and the library versions."""
    import tokenizers
    import transformers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        content = backend.to_str()
    else:
        try:
            code = inspect.getsource(type(tokenizer))
        except (OSError, TypeError):        # a class without a source file: its name must do
            code = f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}"
        content = json.dumps([sorted(tokenizer.get_vocab().items()), code])
    identity = {
        "class": type(tokenizer).__name__,
        "content": hashlib.sha256(content.encode()).hexdigest(),
        "special_tokens": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "eos_token_id": tokenizer.eos_token_id,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    """A short hex key of ``parts`` (JSON-serialisable)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
