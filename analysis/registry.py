"""Builder registry: one entry per table/figure group; ``python -m analysis`` runs them in order.

A later issue adds its tables with one module that decorates a function::

    @builder("glue", "Table 4: GLUE with RoBERTa-base")
    def build(results: Results) -> Section: ...

and one import line in ``analysis/__init__.py`` (the list of builder modules).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .core import Results, Section


@dataclass(frozen=True)
class Builder:
    key: str
    title: str
    build: Callable[[Results], Section]


BUILDERS: dict[str, Builder] = {}


def builder(key: str, title: str):
    """Register ``fn(results) -> Section`` under ``key`` (unique; kept in registration order)."""

    def wrap(fn: Callable[[Results], Section]) -> Callable[[Results], Section]:
        if key in BUILDERS:
            raise ValueError(f"analysis builder {key!r} registered twice")
        BUILDERS[key] = Builder(key, title, fn)
        return fn

    return wrap
