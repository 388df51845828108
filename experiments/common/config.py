"""Frozen, validated configs: unknown keys fail loudly, the resolved config is saved with each result."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``values``; an unknown key raises ``ValueError`` naming it."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    return cls(**values)


def override(cfg: T, where: str = "config", **changes: Any) -> T:
    """``dataclasses.replace`` that names the config and the key when a key does not exist."""
    return from_dict(type(cfg), {**dataclasses.asdict(cfg), **changes}, where)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["steps=10", "lr=1e-3", "methods=lora,miss"]`` -> typed dict (int, float, bool, list, str)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} is not KEY=VALUE")
        key, raw = pair.split("=", 1)
        out[key] = _parse_value(raw)
    return out


def _parse_value(raw: str) -> Any:
    if "," in raw:
        return tuple(_parse_value(v) for v in raw.split(",") if v)
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw
