"""Our adapter layers in Hugging Face PEFT's on-disk format, and back.

For the eight methods PEFT also implements, our layers compute exactly what PEFT's do
(``tests/test_peft_equivalence.py``), so a trained model of ours *is* a PEFT adapter once its tensors
carry PEFT's names and a config states the same hyperparameters. This module holds that
correspondence, in both directions:

=========  ===============================  =====================================================
ours       PEFT config                      tensors (ours -> PEFT, per adapted module ``m``)
=========  ===============================  =====================================================
lora       ``LoraConfig``                   ``adapter_A/B`` -> ``m.lora_A.weight`` / ``m.lora_B.weight``
lora_fa    ``LoraConfig``                   as LoRA (PEFT's LoRA-FA is an optimiser over LoRA layers)
pissa      ``LoraConfig(init=pissa...)``    as LoRA; PEFT recomputes the residual ``W_res`` from the base
dora       ``LoraConfig(use_dora=True)``    as LoRA, ``adapter_magnitude`` -> ``m.lora_magnitude_vector``
miss       ``MissConfig``                   ``adapter_D`` -> ``m.miss_block``
vera       ``VeraConfig``                   ``adapter_lambda_d/b`` -> ``m.vera_lambda_d/b``; the shared
                                            projections -> ``base_model.vera_A/B`` (saved with it)
adalora    ``AdaLoraConfig``                ``adapter_P/E/Q`` -> ``m.lora_B`` / ``m.lora_E`` / ``m.lora_A``
loha       ``LoHaConfig``                   ``adapter_w{1,2}_{a,b}`` -> ``m.hada_w{1,2}_{a,b}``
=========  ===============================  =====================================================

PEFT names a module by its path in the model it wraps, behind ``base_model.model.``; trained modules
outside the adapters (a classifier head) are PEFT's ``modules_to_save``, saved under their own names.
Per-module ranks and alphas go to ``rank_pattern``/``alpha_pattern`` where PEFT has them (LoRA family,
LoHa); any other difference between layers has no PEFT form (``peft_form`` says why).

Our AdaLoRA layer has no rank schedule: it is written as ``init_r = target_r = r`` (nothing to prune),
with ``total_step=1``, a value PEFT requires and only its training schedule reads.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import AdapterError

PEFT_PREFIX = "base_model.model."
LORA_TENSORS = {"adapter_A": "lora_A.weight", "adapter_B": "lora_B.weight"}
# our tensor name (inside one adapter layer) -> PEFT's name (inside the same module)
PEFT_TENSORS: dict[str, dict[str, str]] = {
    "lora": LORA_TENSORS,
    "lora_fa": LORA_TENSORS,
    "pissa": LORA_TENSORS,
    "dora": {**LORA_TENSORS, "adapter_magnitude": "lora_magnitude_vector"},
    "miss": {"adapter_D": "miss_block"},
    "vera": {"adapter_lambda_d": "vera_lambda_d", "adapter_lambda_b": "vera_lambda_b"},
    "adalora": {"adapter_P": "lora_B", "adapter_E": "lora_E", "adapter_Q": "lora_A"},
    "loha": {f"adapter_w{i}_{s}": f"hada_w{i}_{s}" for i in (1, 2) for s in "ab"},
}
# VeRA's projections, shared by all layers: ours live in the first layer's ``adapter_shared``.
VERA_SHARED = {"adapter_shared.adapter_vera_A": "base_model.vera_A", "adapter_shared.adapter_vera_B": "base_model.vera_B"}
# hyperparameters that may differ per module, through PEFT's rank_pattern / alpha_pattern
PATTERNED = {"lora": ("r", "alpha"), "lora_fa": ("r", "alpha"), "pissa": ("r", "alpha"), "dora": ("r", "alpha"),
             "loha": ("r", "alpha")}
MISS_INIT = {"default": True, "bat": "bat", "mini": "mini"}


@dataclass
class Group:
    """Modules built by one ``inject`` call: one method, one set of hyperparameters."""

    method: str
    hyper: dict[str, Any]
    modules: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ ours -> PEFT
def peft_form(groups: Sequence[Group]) -> str | None:
    """``None`` if PEFT has a config for these layers, else the reason it has none."""
    methods = sorted({g.method for g in groups})
    if len(methods) != 1:
        return f"one PEFT adapter holds one method; these layers mix {methods}"
    method = methods[0]
    if method not in PEFT_TENSORS:
        return f"PEFT has no {method} layer"
    free = PATTERNED.get(method, ())
    fixed = {tuple(sorted((k, repr(v)) for k, v in g.hyper.items() if k not in free)) for g in groups}
    if len(fixed) > 1:
        return f"the {method} layers differ in hyperparameters PEFT keeps one value of ({sorted(fixed)[:2]})"
    if method == "vera" and len(groups) > 1:
        return "the VeRA layers come from several inject calls (several projection pairs); PEFT shares one pair"
    return None


def peft_config_for(groups: Sequence[Group], target_modules: list[str], modules_to_save: list[str] | None,
                    base_model_name_or_path: str | None, task_type: str | None):
    """The PEFT config stating the hyperparameters of ``groups`` (which ``peft_form`` accepted)."""
    from .peft_configs import peft_config

    method = groups[0].method
    per_module = {m: g.hyper for g in groups for m in g.modules}
    hyper = dict(groups[0].hyper)
    common = dict(modules_to_save=modules_to_save, base_model_name_or_path=base_model_name_or_path,
                  task_type=task_type)
    if method in PATTERNED:
        hyper["r"], rank_pattern = value_and_pattern({m: h["r"] for m, h in per_module.items()})
        hyper["alpha"], alpha_pattern = value_and_pattern({m: h["alpha"] for m, h in per_module.items()})
        common.update(rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    if method in ("lora", "lora_fa", "pissa", "dora"):
        extra = {"use_rslora": hyper["rslora"]}
        if method == "pissa":
            extra["niter"] = hyper["niter"]
        return peft_config("lora" if method == "lora_fa" else method, target_modules, r=hyper["r"],
                           alpha=hyper["alpha"], dropout=hyper["dropout"], **extra, **common)
    if method == "miss":
        extra = {"mini_r": hyper["mini_r"]} if hyper["variant"] == "mini" else {}
        return peft_config("miss", target_modules, r=hyper["r"], dropout=hyper["dropout"], variant=hyper["variant"],
                           **extra, **common)
    if method == "vera":
        return peft_config("vera", target_modules, r=hyper["r"], dropout=hyper["dropout"], d_initial=hyper["d_initial"],
                           projection_prng_key=hyper["projection_prng_key"], save_projection=True, **common)
    if method == "adalora":
        return peft_config("adalora", target_modules, r=hyper["r"], alpha=hyper["alpha"], dropout=hyper["dropout"],
                           target_r=hyper["r"], total_step=1, **common)
    return peft_config("loha", target_modules, r=hyper["r"], alpha=hyper["alpha"], rank_dropout=hyper["rank_dropout"],
                       module_dropout=hyper["module_dropout"], **common)


def value_and_pattern(values: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The most frequent value, and ``{escaped module path: value}`` for the modules that differ.

    PEFT (and vLLM) read pattern keys as regular expressions matched at the end of a module path.
    """
    counts = Counter(values.values())
    common = max(counts, key=lambda v: (counts[v], v))
    return common, {re.escape(m): v for m, v in sorted(values.items()) if v != common}


def peft_target_modules(adapted: Sequence[str], all_names: Sequence[str]) -> list[str]:
    """Short names (``q_proj``) where every module so named is adapted, full paths otherwise.

    PEFT and vLLM match a plain entry against the end of a module's dotted path, so a short name is exact
    only when no unadapted module shares it.
    """
    adapted_set = set(adapted)
    targets = []
    for leaf in sorted({n.rsplit(".", 1)[-1] for n in adapted}):
        same_leaf = [n for n in all_names if n == leaf or n.endswith("." + leaf)]
        if all(n in adapted_set for n in same_leaf):
            targets.append(leaf)
        else:
            targets.extend(sorted(n for n in adapted if n.rsplit(".", 1)[-1] == leaf))
    return targets


def to_peft_key(key: str, method: str) -> str:
    """Our state-dict key of an adapter tensor -> PEFT's saved key."""
    for ours, theirs in VERA_SHARED.items():
        if method == "vera" and key.endswith("." + ours):
            return theirs
    module, _, name = key.rpartition(".")
    peft_name = PEFT_TENSORS[method].get(name)
    if peft_name is None:
        raise AdapterError(f"tensor '{key}' of a {method} layer has no PEFT counterpart")
    return f"{PEFT_PREFIX}{module}.{peft_name}"


# ------------------------------------------------------------------------------------------ PEFT -> ours
def from_peft_key(peft_key: str, method: str, vera_owner: str | None = None) -> str:
    """PEFT's saved key -> our state-dict key (``vera_owner``: the layer that holds VeRA's projections)."""
    for ours, theirs in VERA_SHARED.items():
        if method == "vera" and peft_key == theirs:
            return f"{vera_owner}.{ours}"
    if not peft_key.startswith(PEFT_PREFIX):
        raise AdapterError(f"PEFT tensor '{peft_key}' does not start with '{PEFT_PREFIX}'")
    key = peft_key[len(PEFT_PREFIX):]
    for ours, theirs in PEFT_TENSORS[method].items():
        if key.endswith("." + theirs):
            return f"{key[: -len(theirs)]}{ours}"
    return key          # a modules_to_save tensor: PEFT keeps the model's own name


def groups_from_peft(config: dict[str, Any], tensors: dict[str, Any]) -> tuple[list[Group], list[str]]:
    """Our layers (``Group``s) and trained non-adapter tensors for a PEFT adapter directory's config and
    tensors. The adapted modules are read from the tensor names, per-module ranks from their shapes."""
    from peft.utils.other import get_pattern_key

    peft_type = str(config.get("peft_type", "")).upper()
    method = _method_of(config, peft_type)
    unsupported = [k for k in ("fan_in_fan_out", "lora_bias", "layer_replication", "use_qalora",
                               "trainable_token_indices", "target_parameters") if config.get(k)]
    if config.get("bias", "none") != "none":
        unsupported.append(f"bias={config['bias']!r}")
    if unsupported:
        raise AdapterError(f"PEFT {peft_type} adapter with {unsupported}: our layers have no such option")
    marker = {"lora": "lora_A.weight", "lora_fa": "lora_A.weight", "pissa": "lora_A.weight", "dora": "lora_A.weight",
              "miss": "miss_block", "vera": "vera_lambda_b", "adalora": "lora_E", "loha": "hada_w1_a"}[method]
    shapes = {k[len(PEFT_PREFIX): -len(marker) - 1]: tuple(v.shape) for k, v in tensors.items()
              if k.startswith(PEFT_PREFIX) and k.endswith("." + marker)}
    if not shapes:
        raise AdapterError(f"PEFT {peft_type} adapter holds no '{marker}' tensor: nothing to load")

    def pattern(name: str, module: str, default: Any) -> Any:
        patterns = config.get(name) or {}
        return patterns.get(get_pattern_key(list(patterns), module), default)

    groups: dict[str, Group] = {}
    for module, shape in sorted(shapes.items()):
        if method in ("lora", "lora_fa", "pissa", "dora"):
            hyper = {"r": shape[0], "alpha": float(pattern("alpha_pattern", module, config["lora_alpha"])),
                     "dropout": config.get("lora_dropout", 0.0), "rslora": bool(config.get("use_rslora"))}
            if method == "pissa":
                init = config["init_lora_weights"]
                hyper["niter"] = int(init.rsplit("_", 1)[1]) if init.startswith("pissa_niter_") else None
        elif method == "miss":
            init = config.get("init_weights", True)
            variant = {True: "default", "bat": "bat", "mini": "mini"}[init]
            hyper = {"r": config["r"], "variant": variant, "mini_r": config.get("mini_r") if variant == "mini" else None,
                     "dropout": config.get("miss_dropout", 0.0)}
        elif method == "vera":
            hyper = {"r": config["r"], "d_initial": config.get("d_initial", 0.1),
                     "projection_prng_key": config.get("projection_prng_key", 0), "dropout": config.get("vera_dropout", 0.0)}
        elif method == "adalora":
            alpha = config.get("lora_alpha", 8)
            hyper = {"r": shape[0], "alpha": float(alpha), "dropout": config.get("lora_dropout", 0.0)}
        else:   # loha
            hyper = {"r": shape[1], "alpha": float(pattern("alpha_pattern", module, config.get("alpha", 8))),
                     "rank_dropout": config.get("rank_dropout", 0.0), "module_dropout": config.get("module_dropout", 0.0)}
        key = repr(sorted(hyper.items()))
        groups.setdefault(key, Group(method, hyper)).modules.append(module)
    adapter_keys = {to_peft_key(f"{m}.{ours}", method) for m in shapes for ours in PEFT_TENSORS[method]}
    others = sorted(k[len(PEFT_PREFIX):] for k in tensors if k not in adapter_keys and k.startswith(PEFT_PREFIX))
    if method == "vera" and len(groups) > 1:
        raise AdapterError("PEFT VeRA adapter whose layers differ in hyperparameters; VeRA shares one setting")
    return list(groups.values()), others


def _method_of(config: dict[str, Any], peft_type: str) -> str:
    if peft_type == "LORA":
        init = config.get("init_lora_weights", True)
        if config.get("use_dora"):
            return "dora"
        if isinstance(init, str) and init.startswith("pissa"):
            return "pissa"
        if init in (True, False, "gaussian"):
            return "lora"
        raise AdapterError(f"PEFT LoRA with init_lora_weights={init!r}: its adapter is relative to base weights our "
                           "layers cannot rebuild (supported: default/gaussian LoRA, PiSSA, DoRA)")
    known = {"MISS": "miss", "VERA": "vera", "ADALORA": "adalora", "LOHA": "loha"}
    if peft_type not in known:
        raise AdapterError(f"PEFT adapter type {peft_type or '<none>'!r} has no counterpart among our layers; "
                           f"supported: LORA, {', '.join(known)}")
    return known[peft_type]
