"""Export a trained MiSS adapter as a plain rank-``r`` LoRA adapter (PEFT's on-disk format).

MiSS's efficient form has an exact LoRA view (SPEC §1): with the frozen 0/1 selection ``A`` (``r x k_in``,
``A[j, i] = 1`` iff ``i % r == j``) and ``B = D^T`` (``d_out x r``), ``B A`` equals MiSS's dense update,
including the zero-padding rule for ``k_in % r != 0``. Written with ``lora_alpha = r`` (scaling 1), the
directory loads with ``peft.PeftModel.from_pretrained(base, out_dir)`` and with any LoRA runtime that reads
PEFT adapters (vLLM, ``enable_lora=True``), so a MiSS model can be served without merging and without
MiSS support in the server. The export is exact, not an approximation: no SVD is involved.

Two entry points, one per place MiSS is trained:

* ``export_miss_as_lora`` for a model holding this package's ``MiSSLinear`` layers (``adapters.inject``);
* ``export_miss_peft_model_as_lora`` for a ``peft.PeftModel`` built from a ``MissConfig`` (the LLM trainer).

The exported factors describe the update relative to the *original* base weights: load the directory onto
the unmodified base model. MiSS ``bat`` depends on ``W0`` and has no exact low-rank view, so it is refused,
as are other adapter methods and trained non-adapter modules (a LoRA directory would silently drop them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import ADAPTER_PREFIX
from .inject import adapter_layers
from .methods.miss import MiSSLinear, selection_matrix
from .peft_format import PEFT_PREFIX, peft_target_modules, value_and_pattern

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"


class LoRAExportError(ValueError):
    """The model cannot be written as an exact LoRA adapter; the message names the module and why."""


# ---------------------------------------------------------------------------------------------- our layers
def miss_lora_factors(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module path: (A, B)}`` for every MiSS layer of ``model``; refuses anything not exactly exportable."""
    layers = list(adapter_layers(model))
    if not layers:
        raise LoRAExportError(f"{type(model).__name__} holds no adapter layers; inject MiSS first (adapters.inject)")
    others = sorted({f"{name} ({layer.method})" for name, layer in layers if not isinstance(layer, MiSSLinear)})
    if others:
        raise LoRAExportError(f"only MiSS layers can be exported as LoRA by this function; found other adapters: {others[:8]}")
    bat = [name for name, layer in layers if layer.variant == "bat"]
    if bat:
        raise LoRAExportError(
            f"MiSS variant 'bat' (modules {bat[:4]}{' ...' if len(bat) > 4 else ''}) depends on the frozen weight "
            "W0 and has no exact low-rank LoRA view; merge it into the base weights instead (adapters.merge)")
    _refuse_trained_base(model)
    factors = {}
    with torch.no_grad():
        for name, layer in layers:
            a, b = layer.lora_factors()
            factors[name] = (a.detach(), b.detach())
    return factors


def _refuse_trained_base(model: nn.Module) -> None:
    """A LoRA directory carries only the adapters; trainable base tensors (a head) would be lost."""
    trainable = [n for n, p in model.named_parameters()
                 if p.requires_grad and not n.rsplit(".", 1)[-1].startswith(ADAPTER_PREFIX)]
    if trainable:
        raise LoRAExportError(
            f"parameters outside the MiSS adapters are trainable ({trainable[:4]}{' ...' if len(trainable) > 4 else ''}); "
            "a LoRA export carries only the adapter updates and would drop them. Save those modules separately, "
            "or freeze them (requires_grad_(False)) if they were not trained")


def export_miss_as_lora(
    model: nn.Module,
    out_dir: str | Path,
    base_model_name_or_path: str | None = None,
    *,
    task_type: str | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the MiSS adapters of ``model`` (``adapters.inject(model, "miss", ...)``) as a PEFT LoRA directory.

    Module paths are ``model``'s own, so ``model`` must be the Hugging Face model itself (e.g. a
    ``LlamaForCausalLM``), not a wrapper around it. ``base_model_name_or_path`` defaults to the model's
    ``name_or_path``. ``dtype`` casts the factors (default: the dtype of ``D``; ``A`` is 0/1, exact in any
    float dtype). ``task_type`` (e.g. ``"CAUSAL_LM"``) is written to the config for PEFT's auto classes.
    """
    if base_model_name_or_path is None:
        base_model_name_or_path = getattr(model, "name_or_path", None) or None
    return _write_lora_dir(Path(out_dir), miss_lora_factors(model), _module_names(model),
                           base_model_name_or_path, task_type, dtype)


# ---------------------------------------------------------------------------------------------- PEFT layers
def peft_miss_lora_factors(peft_model: nn.Module, adapter_name: str = "default") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module path in the base model: (A, B)}`` for every PEFT ``MissLinear`` holding ``adapter_name``."""
    from peft.tuners.miss.layer import MissLayer
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import PeftType

    config = getattr(peft_model, "peft_config", {}).get(adapter_name)
    if config is None:
        raise LoRAExportError(f"{type(peft_model).__name__} has no PEFT adapter named {adapter_name!r}")
    if config.peft_type != PeftType.MISS:
        raise LoRAExportError(f"adapter {adapter_name!r} is {config.peft_type}, not MISS; this exports MiSS only")
    if config.bias != "none":
        raise LoRAExportError(f"MissConfig(bias={config.bias!r}) trains biases, which a LoRA adapter cannot carry")
    if getattr(config, "modules_to_save", None):
        raise LoRAExportError(
            f"MissConfig(modules_to_save={config.modules_to_save}) trains whole modules besides MiSS; a LoRA export "
            "carries only the adapter updates and would drop them")

    factors = {}
    for name, module in peft_model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        if not isinstance(module, MissLayer):
            raise LoRAExportError(f"module '{name}' is a {type(module).__name__}, not a MiSS layer")
        if adapter_name not in module.miss_block:
            continue
        path = name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
        if module.miss_fn == "bat":
            raise LoRAExportError(
                f"module '{path}': MiSS init_weights='bat' depends on the frozen weight W0 and has no exact "
                "low-rank LoRA view; merge it instead (merge_and_unload)")
        block = module.miss_block[adapter_name].detach()
        if module.miss_fn == "mini":
            block = block.repeat(1, module.out_features // module.miss_mini_r[adapter_name])
        r = block.shape[0]
        factors[path] = (selection_matrix(r, module.in_features, block.dtype, block.device), block.t().contiguous())
    if not factors:
        raise LoRAExportError(f"no MiSS layer holds adapter {adapter_name!r}")
    return factors


def export_miss_peft_model_as_lora(
    peft_model: nn.Module,
    out_dir: str | Path,
    adapter_name: str = "default",
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write adapter ``adapter_name`` of a ``PeftModel`` built from ``MissConfig`` as a PEFT LoRA directory.

    The same exact factorisation as ``export_miss_as_lora``, read from PEFT's ``miss_block`` (``r x d_out``;
    ``mini`` is tiled over the output first). ``base_model_name_or_path`` and ``task_type`` come from the
    ``MissConfig``.
    """
    config = getattr(peft_model, "peft_config", {}).get(adapter_name)
    factors = peft_miss_lora_factors(peft_model, adapter_name)
    names = [n for n, _ in peft_model.get_base_model().named_modules()]
    task_type = getattr(config, "task_type", None)
    return _write_lora_dir(Path(out_dir), factors, names, config.base_model_name_or_path,
                           str(task_type.value if hasattr(task_type, "value") else task_type) if task_type else None,
                           dtype)


# ---------------------------------------------------------------------------------------------- writing
def _module_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules()]


def _write_lora_dir(
    out_dir: Path,
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
    all_names: list[str],
    base_model_name_or_path: str | None,
    task_type: str | None,
    dtype: torch.dtype | None,
) -> Path:
    from peft import LoraConfig
    from safetensors.torch import save_file

    # The most frequent rank is the config's r; the others go to rank_pattern with alpha = rank (scaling 1).
    r, pattern = value_and_pattern({name: a.shape[0] for name, (a, _) in factors.items()})
    config = LoraConfig(
        r=r,
        lora_alpha=r,
        target_modules=peft_target_modules(list(factors), all_names),
        rank_pattern=pattern,
        alpha_pattern=dict(pattern),
        lora_dropout=0.0,
        bias="none",
        base_model_name_or_path=base_model_name_or_path,
        task_type=task_type,
    )
    tensors = {}
    for name, (a, b) in factors.items():
        dt = dtype or b.dtype
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = a.to(dt).cpu().contiguous()
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = b.to(dt).cpu().contiguous()

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    config.save_pretrained(str(out_dir))
    return out_dir

