"""One call from a method name to the Hugging Face PEFT config that trains it (the LLM trainer's path).

    cfg = peft_config("miss", ["q_proj", "v_proj"], r=64)
    model = peft.get_peft_model(model, cfg)

The arguments mean the same for every method: ``r`` is the rank (MiSS: the shard size, AdaLoRA: the
initial rank), ``alpha`` the LoRA-style scale numerator, ``dropout`` the method's dropout. ``alpha=None``
picks the method's convention in the paper's setup (SPEC §3.5, Tables 10/11):

========  =====================================  =====================================================
method    PEFT config                            alpha when None / method-specific keywords
========  =====================================  =====================================================
lora      ``LoraConfig``                         ``2 r``
dora      ``LoraConfig(use_dora=True)``          ``2 r``
pissa     ``LoraConfig(init_lora_weights=...)``  ``r``; ``niter=k`` -> ``"pissa_niter_k"`` (fast SVD)
miss      ``MissConfig``                         no alpha; ``variant`` default/bat/mini, ``mini_r``
vera      ``VeraConfig``                         no alpha
adalora   ``AdaLoraConfig(init_r=r)``            PEFT's default; ``total_step`` required, ``target_r``
                                                 (default ``r``: no pruning unless set lower)
loha      ``LoHaConfig``                         ``r``; no input dropout, pass ``rank_dropout=`` /
                                                 ``module_dropout=`` instead
========  =====================================  =====================================================

Any other keyword goes to the config class unchanged (``task_type``, ``layers_to_transform``, ...); a
keyword the class does not know raises ``ValueError`` listing the ones it does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

SUPPORTED = ("lora", "dora", "pissa", "miss", "vera", "adalora", "loha")
MISS_VARIANTS = {"default": True, "bat": "bat", "mini": "mini"}


def peft_config(
    method: str,
    target_modules: str | Sequence[str],
    r: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    modules_to_save: Sequence[str] | None = None,
    **extra: Any,
):
    """The PEFT config for ``method`` on ``target_modules`` at rank ``r`` (see the module docstring)."""
    import peft

    if method not in SUPPORTED:
        raise ValueError(f"unknown PEFT method {method!r}; supported: {', '.join(SUPPORTED)}")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise ValueError(f"{method}: rank r must be a positive integer, got {r!r}")
    common: dict[str, Any] = {
        "target_modules": target_modules if isinstance(target_modules, str) else list(target_modules),
        "modules_to_save": list(modules_to_save) if modules_to_save is not None else None,
    }

    if method in ("lora", "dora", "pissa"):
        niter = extra.pop("niter", None)
        if niter is not None and method != "pissa":
            raise ValueError(f"{method}: 'niter' applies to pissa only")
        if method == "pissa":
            if niter is not None and (not isinstance(niter, int) or niter < 0):
                raise ValueError(f"pissa: niter must be a non-negative integer or None, got {niter!r}")
            extra.setdefault("init_lora_weights", "pissa" if niter is None else f"pissa_niter_{niter}")
        if method == "dora":
            extra["use_dora"] = True
        default_alpha = r if method == "pissa" else 2 * r
        return _build(peft.LoraConfig, method, r=r, lora_alpha=default_alpha if alpha is None else alpha,
                      lora_dropout=dropout, **common, **extra)

    if method == "miss":
        _no_alpha(method, alpha)
        variant = extra.pop("variant", "default")
        if variant not in MISS_VARIANTS:
            raise ValueError(f"miss: variant must be one of {sorted(MISS_VARIANTS)}, got {variant!r}")
        if variant == "mini" and "mini_r" not in extra:
            raise ValueError("miss: variant 'mini' needs mini_r (D is r x mini_r, tiled over the output)")
        return _build(peft.MissConfig, method, r=r, miss_dropout=dropout, init_weights=MISS_VARIANTS[variant],
                      **common, **extra)

    if method == "vera":
        _no_alpha(method, alpha)
        return _build(peft.VeraConfig, method, r=r, vera_dropout=dropout, **common, **extra)

    if method == "adalora":
        if extra.get("total_step") is None:
            raise ValueError("adalora: total_step (the number of training steps) is required by its rank schedule")
        extra.setdefault("target_r", r)
        if alpha is not None:
            extra["lora_alpha"] = alpha
        return _build(peft.AdaLoraConfig, method, init_r=r, lora_dropout=dropout, **common, **extra)

    # loha
    if dropout:
        raise ValueError("loha has no input dropout; pass rank_dropout= or module_dropout= instead")
    return _build(peft.LoHaConfig, method, r=r, alpha=r if alpha is None else alpha, **common, **extra)


def _no_alpha(method: str, alpha: float | None) -> None:
    if alpha is not None:
        raise ValueError(f"{method} has no alpha/scaling hyperparameter; leave alpha=None")


def _build(cls, method: str, **kwargs: Any):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"{method}: {cls.__name__} has no field(s) {unknown}; it accepts {sorted(known)}")
    return cls(**kwargs)
