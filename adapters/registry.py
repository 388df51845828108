"""Method name -> adapter layer class. A new method is one module plus ``@register("name")``."""

from __future__ import annotations

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
