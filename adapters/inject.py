"""Put adapters into any PyTorch model, and the model-level operations around them.

``inject`` replaces every matching ``nn.Linear`` by the method's ``AdapterLayer`` and freezes all
other parameters; ``merge``/``unmerge``/``trainable_parameters``/``adapter_state_dict`` then work on
the whole model. Tensors that belong to adapters are recognised by ``ADAPTER_PREFIX`` alone.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .base import ADAPTER_PREFIX, AdapterError, AdapterLayer
from .registry import get_method


def _matches(name: str, patterns: Sequence[str]) -> bool:
    """PEFT's convention: a plain string matches a module whose dotted name ends with it (at a dot);
    a string starting with ``re:`` is a regular expression matched against the full name."""
    for p in patterns:
        if p.startswith("re:"):
            if re.fullmatch(p[3:], name):
                return True
        elif name == p or name.endswith("." + p):
            return True
    return False


def _hyper_defaults(cls: type[AdapterLayer]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {n: p.default for n, p in params.items() if n not in ("self", "base_layer", "module_name", "shared")}


def _check_hyper(cls: type[AdapterLayer], hyper: dict[str, Any]) -> None:
    accepted = _hyper_defaults(cls)
    unknown = sorted(set(hyper) - set(accepted))
    if unknown:
        raise AdapterError(f"method '{cls.method}' has no hyperparameter(s) {unknown}; it takes {sorted(accepted)}")


def find_targets(model: nn.Module, target_modules: str | Sequence[str]) -> list[tuple[str, nn.Linear]]:
    patterns = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(n, patterns)]


def inject(
    model: nn.Module,
    method: str,
    target_modules: str | Sequence[str],
    trainable_modules: Sequence[str] = (),
    **hyper: Any,
) -> nn.Module:
    """Wrap every ``nn.Linear`` of ``model`` matching ``target_modules`` with ``method``'s adapter.

    All parameters are frozen except the adapters' own and those of modules matching
    ``trainable_modules`` (e.g. a classifier head). Every target is validated before the model is
    changed, so a bad hyperparameter leaves the model as it was. Returns ``model`` (changed in place).
    """
    cls = get_method(method)
    _check_hyper(cls, hyper)
    targets = find_targets(model, target_modules)
    if not targets:
        linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise AdapterError(
            f"target_modules={target_modules!r} matches no nn.Linear in {type(model).__name__}; "
            f"its Linear modules are {linear_names[:12]}{' ...' if len(linear_names) > 12 else ''}"
        )
    for name, layer in targets:
        cls.validate(name, layer.out_features, layer.in_features, **hyper)

    # Adapters from an earlier inject call keep their state, so methods or ranks can be mixed per module.
    for pname, p in model.named_parameters():
        if not _is_adapter_key(pname):
            p.requires_grad_(False)
    shared = cls.shared_state(targets, **hyper)
    for i, (name, layer) in enumerate(targets):
        extra = {"shared": shared} if shared is not None else {}
        wrapped = cls(layer, module_name=name, **extra, **hyper)
        # Every hyperparameter, defaults included, so save_pretrained can rebuild the layer exactly.
        wrapped.hyper = {**_hyper_defaults(cls), **hyper}
        if shared is not None and i == 0:
            # One layer owns the shared tensors (one copy in state dicts, moved once by .to());
            # the others hold plain references (AdapterLayer.bind_shared).
            wrapped.bind_shared(shared, owned=True)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapped)
    if trainable_modules:
        for name, module in model.named_modules():
            if _matches(name, trainable_modules):
                for p in module.parameters():
                    p.requires_grad_(True)
    return model


def adapter_layers(model: nn.Module) -> Iterable[tuple[str, AdapterLayer]]:
    return ((n, m) for n, m in model.named_modules() if isinstance(m, AdapterLayer))


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter's update into its frozen weight (forward then costs what the base costs)."""
    for _, layer in adapter_layers(model):
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    for _, layer in adapter_layers(model):
        layer.unmerge()
    return model


def unload(model: nn.Module, merge: bool = True) -> nn.Module:
    """Put the plain ``nn.Linear`` layers back (with the updates folded in when ``merge``), so the
    model can be saved and served as an ordinary checkpoint. Shared adapter tensors go with them."""
    for name, layer in list(adapter_layers(model)):
        if merge:
            layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.base_layer)
    return model


def trainable_parameters(model: nn.Module) -> int:
    """Number of distinct trainable parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _is_adapter_key(key: str) -> bool:
    """A tensor belongs to an adapter if any component of its dotted name carries the prefix
    (``layer.adapter_A``, ``layer.adapter_shared.adapter_vera_A``)."""
    return any(part.startswith(ADAPTER_PREFIX) for part in key.split("."))


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every adapter tensor (trainable or frozen, e.g. VeRA's random projections), nothing else."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if _is_adapter_key(k)}


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load tensors saved by ``adapter_state_dict``; missing or unexpected adapter keys are an error."""
    expected = {k for k in model.state_dict() if _is_adapter_key(k)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise AdapterError(f"adapter state dict does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=False)


def save_adapter(model: nn.Module, path: str) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in adapter_state_dict(model).items()}, path)


def load_adapter(model: nn.Module, path: str) -> None:
    from safetensors.torch import load_file

    load_adapter_state_dict(model, load_file(path))
