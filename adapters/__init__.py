"""Adapter layers for the MiSS paper and its baselines, usable in any PyTorch model.

    from adapters import inject, merge, trainable_parameters
    inject(model, "miss", ["q_proj", "v_proj"], r=64)
    ...train...
    adapters.save_pretrained(model, "out/")         # PEFT's format where PEFT has the method, ours otherwise
    adapters.load_pretrained(base_model, "out/")    # either format, and PEFT's own adapter directories

Every method lives in its own module and files itself in ``METHODS`` on import.
"""

from . import methods  # noqa: F401  (registers every method)
from .base import ADAPTER_PREFIX, AdapterError, AdapterLayer
from .inject import (
    adapter_layers,
    adapter_state_dict,
    find_targets,
    inject,
    load_adapter,
    load_adapter_state_dict,
    merge,
    save_adapter,
    trainable_parameters,
    unload,
    unmerge,
)
from .pretrained import load_pretrained, save_pretrained
from .registry import METHODS, get_method

__all__ = [
    "ADAPTER_PREFIX", "AdapterError", "AdapterLayer", "METHODS", "adapter_layers", "adapter_state_dict",
    "find_targets", "get_method", "inject", "load_adapter", "load_adapter_state_dict", "load_pretrained", "merge",
    "save_adapter", "save_pretrained", "trainable_parameters", "unload", "unmerge",
]
