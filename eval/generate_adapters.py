"""Adapters for ``eval.generate``: what each ``--adapter NAME=DIR`` is and the LoRA directory that serves it.

Served on top of the base model (vLLM ``enable_lora`` / PEFT ``PeftModel``), without merging:

* a PEFT **LoRA** directory (``peft_type: LORA``), as is;
* **MiSS**: either its exact LoRA export (``adapters.lora_export``; the LLM trainer writes it to ``lora/``),
  which is a LoRA directory, or a PEFT ``MissConfig`` directory (the trainer's ``adapter/``), which is
  exported here with ``export_miss_peft_model_as_lora`` into ``<out-dir>/_lora_exports/`` (once; reused
  while the adapter's weights are unchanged). The export reads only the adapter's weights and the base
  model's config: the base model is built on the ``meta`` device, so no base weights are loaded.

Scored from their merged models instead (pass the merged directory as ``--model``): **DoRA** (vLLM has no
DoRA), **PiSSA** (its adapter is relative to the residual base weights, not to the base model), **full FT**,
and MiSS ``bat`` (no exact low-rank view). Such directories are refused here with that advice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

# the ranks vLLM's LoRAConfig accepts for max_lora_rank (vllm.config.lora.MaxLoRARanks)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterError(ValueError):
    """An ``--adapter`` directory that cannot be served as LoRA; the message says what to do instead."""


@dataclasses.dataclass(frozen=True)
class Adapter:
    name: str
    path: Path  # as given on the command line
    kind: str  # "lora" or "miss" (PEFT MissConfig directory, served through its exact LoRA export)
    served_path: Path  # a PEFT LoRA directory
    rank: int  # the largest rank in the served LoRA (r and every rank_pattern value)
    sha256: str  # of the given directory's weight file: identifies the adapter in result metadata
    base_model: str | None  # base_model_name_or_path of the adapter config

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "kind": self.kind, "served_path": str(self.served_path),
                "rank": self.rank, "sha256": self.sha256, "base_model_name_or_path": self.base_model}


def parse_adapter_arg(text: str) -> tuple[str, Path]:
    """``"name=dir"`` -> ``(name, Path(dir))``; a bare ``dir`` is named after its directory."""
    name, sep, path = text.partition("=")
    if not sep:
        name, path = Path(text).name, text
    name = name.strip()
    if not name or not path:
        raise AdapterError(f"--adapter {text!r}: expected NAME=DIR")
    if not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise AdapterError(f"--adapter name {name!r}: use letters, digits, '-', '_' and '.' (it names output files)")
    return name, Path(path)


def _weights_file(path: Path) -> Path:
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise AdapterError(f"{path}: no {' or '.join(WEIGHT_FILES)}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lora_rank(config: dict) -> int:
    """The largest rank a PEFT LoRA config holds (``r`` and the ``rank_pattern`` values)."""
    return max([int(config["r"]), *(int(v) for v in (config.get("rank_pattern") or {}).values())])


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise AdapterError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank ({VLLM_LORA_RANKS[-1]}); "
                       "score the merged model instead")


def _check_lora_config(path: Path, config: dict) -> None:
    if config.get("use_dora"):
        raise AdapterError(f"{path}: a DoRA adapter; vLLM serves no DoRA. Score its merged model "
                           "(the trainer's merged/ directory) with --model instead")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(("pissa", "olora", "corda", "eva", "loftq")):
        raise AdapterError(f"{path}: init_lora_weights={init!r}: this adapter is relative to modified base weights "
                           "(PiSSA keeps the residual in the base). Score its merged model with --model instead")
    if config.get("modules_to_save"):
        raise AdapterError(f"{path}: modules_to_save={config['modules_to_save']} (whole trained modules) cannot be "
                           "served as LoRA; score the merged model")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{path}: bias={config['bias']!r} (trained biases) cannot be served as LoRA; "
                           "score the merged model")
    for key in ("layers_pattern", "layer_replication"):
        if config.get(key):
            raise AdapterError(f"{path}: {key} is not supported by vLLM's LoRA; score the merged model")


def prepare_adapter(name: str, path: str | os.PathLike, base_model: str, export_root: str | os.PathLike) -> Adapter:
    """Inspect ``path`` and return the LoRA directory that serves it (exporting a PEFT MiSS adapter)."""
    path = Path(path)
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        if (path / "adapter.safetensors").is_file():
            raise AdapterError(
                f"{path}: an adapters-package checkpoint (adapter.safetensors), not a PEFT directory. For MiSS, serve "
                "its exact LoRA export (adapters.lora_export.export_miss_as_lora; the trainer writes it to lora/); "
                "for other methods score the merged model with --model")
        raise AdapterError(f"{path}: no adapter_config.json (expected a PEFT adapter directory)")
    config = json.loads(config_file.read_text())
    sha = _sha256(_weights_file(path))
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type == "LORA":
        _check_lora_config(path, config)
        return Adapter(name, path, "lora", path, lora_rank(config), sha, config.get("base_model_name_or_path"))
    if peft_type == "MISS":
        if config.get("init_weights") == "bat":
            raise AdapterError(f"{path}: MiSS 'bat' depends on W0 and has no exact LoRA view; score the merged "
                               "model (merge_and_unload) with --model instead")
        served = Path(export_root) / f"{name}-{sha[:16]}"
        if not (served / "adapter_config.json").is_file():
            export_peft_miss_dir(path, base_model, served)
        lora_config = json.loads((served / "adapter_config.json").read_text())
        return Adapter(name, path, "miss", served, lora_rank(lora_config), sha, config.get("base_model_name_or_path"))
    raise AdapterError(f"{path}: peft_type {config.get('peft_type')!r}; served as LoRA: LORA and MISS. Score other "
                       "methods from their merged model with --model")


def export_peft_miss_dir(adapter_dir: Path, base_model: str, out_dir: Path) -> Path:
    """Write the exact LoRA view of a saved PEFT MiSS adapter, without loading the base model's weights.

    The base model is instantiated on the ``meta`` device (shapes only), PEFT wraps it, the saved MiSS
    blocks are assigned in as real tensors, and ``export_miss_peft_model_as_lora`` writes the factors.
    The directory appears atomically (temporary sibling, then rename).
    """
    import peft
    import torch
    from peft.utils import load_peft_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from adapters.lora_export import export_miss_peft_model_as_lora

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_model))
    with warnings.catch_warnings():  # PEFT's own load is a no-op on meta parameters; they are assigned below
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        model = peft.PeftModel.from_pretrained(skeleton, str(adapter_dir), adapter_name="default")
    state = load_peft_weights(str(adapter_dir), device="cpu")
    renamed = {key.replace(".miss_block", ".miss_block.default"): value for key, value in state.items()}
    result = model.load_state_dict(renamed, strict=False, assign=True)
    if result.unexpected_keys:
        raise AdapterError(f"{adapter_dir}: weights that match no MiSS layer of {base_model}: {result.unexpected_keys[:4]}")
    still_meta = [n for n, p in model.named_parameters() if "miss_block" in n and p.is_meta]
    if still_meta:
        raise AdapterError(f"{adapter_dir}: no saved weights for {still_meta[:4]}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        export_miss_peft_model_as_lora(model, tmp)
        (tmp / "exported_from.json").write_text(json.dumps(
            {"adapter": str(adapter_dir), "base_model": base_model, "by": "eval.generate_adapters"}, indent=1) + "\n")
        os.replace(tmp, out_dir)
    except OSError:
        if not (out_dir / "adapter_config.json").is_file():  # not a concurrent export that won the rename
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
