"""One call to save a model's adapters to a directory, one call to load them back, whatever the method.

    fmt = adapters.save_pretrained(model, "out/")       # "peft" or "adapters"
    model = adapters.load_pretrained(base_model, "out/")

The writer picks the format:

* **PEFT's** (``adapter_config.json`` + ``adapter_model.safetensors``) whenever PEFT has the layers
  (``peft_format.peft_form``: one of LoRA, LoRA-FA, PiSSA, DoRA, MiSS, VeRA, AdaLoRA, LoHa over the whole
  model, hyperparameters PEFT can state). ``peft.PeftModel.from_pretrained(base, "out/")`` then gives
  the same logits as ``model``, and every tool that reads PEFT adapters reads it.
* **Ours** otherwise (ProLoRA, MoS, MoRA, MiSS-expand, full, mixed methods): ``adapter.safetensors``,
  every adapter tensor under its name in ``model``.

Both carry ``adapter_meta.json``: each layer's method and every hyperparameter (defaults included), so
``load_pretrained`` rebuilds exactly the layers that were saved (LoRA-FA's frozen ``A``, PiSSA's
``niter``), then loads the tensors. ``load_pretrained`` also reads adapter directories written by PEFT
itself (no ``adapter_meta.json``; e.g. the LLM trainer's ``adapter/``): the layers then come from the
PEFT config and the tensor shapes.

Modules trained besides the adapters (parameters that require grad outside them, e.g. a classifier
head from ``inject(..., trainable_modules=["classifier"])``) are saved too: as PEFT's
``modules_to_save``, or as tensors of ours.

Load onto the *original* base model: PiSSA's residual ``W_res`` is recomputed from it, as PEFT does
(with ``niter``, seed torch as before the original ``inject``: that SVD is randomised).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import AdapterError
from .inject import _is_adapter_key, adapter_layers, adapter_state_dict, inject, load_adapter_state_dict
from .peft_format import (
    PEFT_PREFIX,
    Group,
    from_peft_key,
    groups_from_peft,
    peft_config_for,
    peft_form,
    peft_target_modules,
    to_peft_key,
)

META_FILE = "adapter_meta.json"
OWN_WEIGHTS = "adapter.safetensors"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
FORMAT_VERSION = 1


def layer_groups(model: nn.Module) -> list[Group]:
    """The model's adapter layers as ``inject`` calls would build them again: layers of one method
    and hyperparameters form one group, except that layers sharing tensors (VeRA, MoS) stay with the
    layers they share them with."""
    groups: dict[tuple, Group] = {}
    for name, layer in adapter_layers(model):
        if layer.hyper is None:
            raise AdapterError(f"module '{name}' ({layer.method}) was not built by adapters.inject, so its "
                               "hyperparameters are unknown; build it with inject to save it")
        shared = getattr(layer, "adapter_shared", None)
        key = (layer.method, json.dumps(layer.hyper, sort_keys=True), id(shared) if shared is not None else None)
        groups.setdefault(key, Group(layer.method, dict(layer.hyper))).modules.append(name)
    if not groups:
        raise AdapterError(f"{type(model).__name__} holds no adapter layers (adapters.inject adds them)")
    return list(groups.values())


def trained_base_tensors(model: nn.Module) -> list[str]:
    """Names of trainable parameters outside the adapters (a head, an embedding that trains)."""
    return sorted(n for n, p in model.named_parameters() if p.requires_grad and not _is_adapter_key(n))


def save_pretrained(model: nn.Module, save_dir: str | os.PathLike, *, base_model_name_or_path: str | None = None,
                    task_type: str | None = None) -> str:
    """Write the adapters of ``model`` (and any other trained module) to ``save_dir``; returns the format.

    ``model`` is the model ``inject`` changed (e.g. a ``LlamaForCausalLM``); PEFT names modules by their
    path in it. ``base_model_name_or_path`` (default: the model's ``name_or_path``) and ``task_type``
    (e.g. ``"CAUSAL_LM"``, for PEFT's auto classes) go into the PEFT config.
    """
    from safetensors.torch import save_file

    out = Path(save_dir)
    groups = layer_groups(model)
    trained = trained_base_tensors(model)
    modules_to_save = sorted({n.rpartition(".")[0] for n in trained})
    reason = peft_form(groups) or _modules_to_save_problem(model, modules_to_save)
    fmt = "adapters" if reason else "peft"
    if base_model_name_or_path is None:
        base_model_name_or_path = getattr(model, "name_or_path", None) or None
    state = adapter_state_dict(model)
    params = dict(model.named_parameters())
    out.mkdir(parents=True, exist_ok=True)
    for stale in (PEFT_CONFIG, PEFT_WEIGHTS, OWN_WEIGHTS):      # another format's files must not be read later
        (out / stale).unlink(missing_ok=True)
    if fmt == "peft":
        method = groups[0].method
        tensors = {to_peft_key(k, method): v for k, v in state.items()}
        for module in modules_to_save:
            for k, v in model.get_submodule(module).state_dict().items():
                tensors[f"{PEFT_PREFIX}{module}.{k}"] = v.detach()
        all_names = [n for n, _ in model.named_modules()]
        config = peft_config_for(groups, peft_target_modules([m for g in groups for m in g.modules], all_names),
                                 modules_to_save or None, base_model_name_or_path, task_type)
        _save_tensors(save_file, tensors, out / PEFT_WEIGHTS)
        config.save_pretrained(str(out))
    else:
        tensors = {**state, **{n: params[n].detach() for n in trained}}
        _save_tensors(save_file, tensors, out / OWN_WEIGHTS)
    meta = {"format": fmt, "format_version": FORMAT_VERSION, "why_not_peft": reason,
            "base_model_name_or_path": base_model_name_or_path, "layers": [asdict(g) for g in groups],
            "trained_base_tensors": trained}
    tmp = out / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / META_FILE)
    return fmt


def _save_tensors(save_file, tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def _modules_to_save_problem(model: nn.Module, modules: list[str]) -> str | None:
    """Why PEFT's ``modules_to_save`` cannot carry these trained modules, or ``None``."""
    for module in modules:
        if not module:
            return "parameters of the root module train; PEFT's modules_to_save names submodules"
        if any(True for _ in adapter_layers(model.get_submodule(module))):
            return f"trained module '{module}' contains adapter layers; PEFT would save it whole"
    return None


def load_pretrained(model: nn.Module, save_dir: str | os.PathLike, *, is_trainable: bool = False) -> nn.Module:
    """Put the adapters saved in ``save_dir`` into ``model`` (the original base model), changed in place.

    Reads both formats of ``save_pretrained`` and PEFT adapter directories. ``is_trainable`` (as in
    PEFT): leave the adapters (and saved trained modules) trainable; by default everything is frozen and
    the model is put in eval mode.
    """
    from safetensors.torch import load_file

    src = Path(save_dir)
    meta_file, config_file = src / META_FILE, src / PEFT_CONFIG
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("format_version") != FORMAT_VERSION or meta.get("format") not in ("peft", "adapters"):
            raise AdapterError(f"{meta_file}: format {meta.get('format')!r} version {meta.get('format_version')!r}; "
                               f"this code reads version {FORMAT_VERSION}")
        fmt = meta["format"]
        groups = [Group(**g) for g in meta["layers"]]
        tensors = load_file(str(_weights_file(src, PEFT_WEIGHTS if fmt == "peft" else OWN_WEIGHTS)))
        trained = list(meta["trained_base_tensors"])
    elif config_file.is_file():
        fmt = "peft"
        tensors = load_file(str(_weights_file(src, PEFT_WEIGHTS)))
        groups, trained = groups_from_peft(json.loads(config_file.read_text()), tensors)
    else:
        raise AdapterError(f"{src}: no {META_FILE} (adapters.save_pretrained) or {PEFT_CONFIG} (PEFT): not an "
                           "adapter directory")

    _check_targets(model, groups, src)
    for g in groups:
        inject(model, g.method, ["re:" + re.escape(m) for m in g.modules], **g.hyper)
    if fmt == "peft":
        method = groups[0].method
        owners = [n for n, layer in adapter_layers(model) if "adapter_shared" in layer._modules]
        tensors = {from_peft_key(k, method, owners[0] if owners else None): v for k, v in tensors.items()}
    adapter = {k: v for k, v in tensors.items() if _is_adapter_key(k)}
    load_adapter_state_dict(model, adapter)
    base = {k: v for k, v in tensors.items() if not _is_adapter_key(k)}
    own = model.state_dict()
    unknown = sorted(set(base) - set(own))
    if unknown:
        raise AdapterError(f"{src}: trained tensors {unknown[:5]} are not in {type(model).__name__}")
    model.load_state_dict(base, strict=False)
    for name, p in model.named_parameters():
        p.requires_grad_(is_trainable and (p.requires_grad or name in trained or name in base))
    if not is_trainable:
        model.eval()        # as PEFT does: the new layers' dropout is off for inference
    return model


def _weights_file(src: Path, name: str) -> Path:
    path = src / name
    if not path.is_file():
        raise AdapterError(f"{src}: {name} is missing")
    return path


def _check_targets(model: nn.Module, groups: list[Group], src: Path) -> None:
    """Every saved module must be a plain ``nn.Linear`` of ``model``, checked before the model changes."""
    bad = []
    for g in groups:
        for m in g.modules:
            try:
                module: Any = model.get_submodule(m)
            except AttributeError:
                bad.append(f"{m} (absent)")
                continue
            if not isinstance(module, nn.Linear):
                bad.append(f"{m} ({type(module).__name__})")
    if bad:
        raise AdapterError(f"{src}: the saved adapters target modules that are not plain nn.Linear layers of "
                           f"{type(model).__name__}: {bad[:6]}{' ...' if len(bad) > 6 else ''} (another base model, "
                           "or adapters already injected?)")
