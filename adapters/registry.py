"""Method name -> adapter layer class. A new method is one module plus ``@register("name")``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .base import AdapterError

if TYPE_CHECKING:
    from .base import AdapterLayer

METHODS: dict[str, type["AdapterLayer"]] = {}


def register(name: str):
    """Class decorator that files an ``AdapterLayer`` subclass under ``name``."""

    def wrap(cls):
        if name in METHODS:
            raise ValueError(f"adapter method {name!r} registered twice ({METHODS[name].__name__}, {cls.__name__})")
        METHODS[name] = cls
        return cls

    return wrap


def get_method(name: str) -> type["AdapterLayer"]:
    try:
        return METHODS[name]
    except KeyError:
        raise AdapterError(f"unknown adapter method {name!r}; known: {', '.join(sorted(METHODS))}") from None


def equal_count_ranks(baseline: str, target: str, d_out: int, k_in: int, rank: int) -> set[int]:
    """The ranks of ``baseline`` whose trainable-parameter count equals ``target``'s at ``rank`` on a
    ``d_out x k_in`` layer, or the two that bracket it when no integer rank does (``baseline``'s count must be
    linear in its rank, as LoRA's (d + k)·r is). Used to compare methods at equal parameters (Fig. 2's axis)."""
    count = get_method(target).trainable_count(d_out, k_in, r=rank)
    exact = count / get_method(baseline).trainable_count(d_out, k_in, r=1)
    return {r for r in (math.floor(exact), math.ceil(exact)) if r >= 1}
